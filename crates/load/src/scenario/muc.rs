//! `muc`: XEP-0045 fan-out. K users log in, check that the room's service
//! answers disco#info with the MUC feature, join one room (the first joiner
//! creates it and accepts the default configuration if the service locks
//! new rooms, §10.1.2), then the first `--senders` occupants post
//! groupchat messages at `--rate` each; every occupant, the sender
//! included (§7.4: the room reflects the message), should receive each one.
//!
//! Against a server without a MUC service this fails early, saying what
//! the service answered (or that it did not answer).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use super::traffic::{self, Plan};
use crate::cli::MucArgs;
use crate::client::{ClientError, Conn, Step, Target, iq_response, stanza_error_condition};
use crate::report::Report;
use crate::run::Run;
use crate::xml::{Elem, escape};

const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const NS_MUC: &str = "http://jabber.org/protocol/muc";
const NS_MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";

pub async fn run(run: &Run, args: &MucArgs, report: &mut Report) -> anyhow::Result<()> {
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        anyhow::bail!("--rate must be positive");
    }
    let Some((_, service)) = args
        .room
        .split_once('@')
        .filter(|(n, s)| !n.is_empty() && !s.is_empty())
    else {
        anyhow::bail!("--room {}: expected room@service", args.room);
    };
    let occupants = args.occupants.unwrap_or(run.users.len() as u64);
    if occupants == 0 || occupants > run.users.len() as u64 {
        anyhow::bail!("--occupants must be between 1 and --users ({})", run.users.len());
    }
    let phase = run.login_all(occupants).await;
    report.login = super::login_report(&phase);
    let mut conns: Vec<(usize, Conn)> = phase
        .conns
        .into_iter()
        .enumerate()
        .filter_map(|(i, c)| c.map(|c| (i, c)))
        .collect();
    if conns.is_empty() {
        anyhow::bail!(
            "no occupant could log in: {}",
            crate::report::reasons(&report.login.failures)
        );
    }
    let target = run.target.clone();

    // Is there a MUC service at all? (XEP-0045 §6.1)
    {
        let (_, first) = &mut conns[0];
        check_service(first, &target, service).await?;
    }

    // The first joiner may create the room; the others join after it.
    let room = args.room.clone();
    {
        let (i, first) = &mut conns[0];
        let nick = run.users[*i].node.clone();
        join(first, &target, &room, &nick).await?;
    }
    let slots = Arc::new(Semaphore::new(run.common.concurrency));
    let mut joins = Vec::new();
    for (i, mut conn) in conns.drain(1..) {
        let (target, room, slots) = (target.clone(), room.clone(), slots.clone());
        let nick = run.users[i].node.clone();
        joins.push(tokio::spawn(async move {
            // Invariant: the semaphore is never closed.
            let _permit = slots.acquire_owned().await.expect("semaphore open");
            let r = join(&mut conn, &target, &room, &nick).await;
            (i, conn, r)
        }));
    }
    let mut joined: Vec<(usize, Conn)> = conns;
    let mut join_failures = std::collections::BTreeMap::<String, u64>::new();
    for j in joins {
        match j.await {
            Ok((i, conn, Ok(()))) => joined.push((i, conn)),
            Ok((_, _, Err(e))) => *join_failures.entry(e.to_string()).or_default() += 1,
            Err(e) => *join_failures.entry(format!("join task: {e}")).or_default() += 1,
        }
    }
    if !join_failures.is_empty() {
        eprintln!(
            "warning: {} occupants could not join: {}",
            join_failures.values().sum::<u64>(),
            crate::report::reasons(&join_failures)
        );
    }

    let fan_out = joined.len() as u64;
    let senders = args.senders.min(fan_out);
    let sessions: Vec<_> = joined
        .into_iter()
        .enumerate()
        .map(|(p, (i, c))| (i, c, (p as u64) < senders))
        .collect();
    let room_attr = escape(&args.room).into_owned();
    let make: traffic::MakeStanza = Arc::new(move |_, seq, body| {
        format!("<message to='{room_attr}' type='groupchat' id='g{seq}'><body>{body}</body></message>")
    });
    let plan = Plan {
        rate: args.rate,
        send_for: run.duration(),
        drain: Duration::from_secs_f64(args.drain.max(0.0)),
        fan_out,
    };
    let (muc, server) = traffic::drive(run, sessions, make, plan).await;
    let delivered = muc.delivered;
    report.muc = Some(muc);
    report.server = server;
    if delivered == 0 {
        anyhow::bail!("no groupchat message came back from {}", args.room);
    }
    Ok(())
}

/// disco#info on the service must list the MUC feature.
async fn check_service(conn: &mut Conn, target: &Target, service: &str) -> anyhow::Result<()> {
    let id = conn.id("disco");
    conn.send(
        Step::Session,
        &format!(
            "<iq type='get' to='{}' id='{id}'><query xmlns='{NS_DISCO_INFO}'/></iq>",
            escape(service)
        ),
    )
    .await?;
    let limit = target.step_timeout.min(Duration::from_secs(10));
    let features = conn
        .expect(Step::Session, limit, |el| {
            iq_response(el, &id, Step::Session).map(|r| {
                r.map(|el| {
                    el.child("query")
                        .map(|q| {
                            q.children()
                                .filter(|c| c.name() == "feature")
                                .filter_map(|c| c.attr("var").map(|v| v.into_owned()))
                                .collect::<Vec<_>>()
                        })
                        .unwrap_or_default()
                })
            })
        })
        .await;
    match features {
        Ok(f) if f.iter().any(|v| v == NS_MUC) => Ok(()),
        Ok(_) => anyhow::bail!(
            "{service} answers disco#info but is not a XEP-0045 MUC service (no {NS_MUC} feature)"
        ),
        Err(ClientError::StanzaError(_, cond)) => anyhow::bail!(
            "{service} is not a MUC service on this server: disco#info answered <{cond}/> \
             (does the server host XEP-0045 at {service}?)"
        ),
        Err(ClientError::Timeout(..)) => anyhow::bail!(
            "{service} did not answer disco#info within {limit:?}: the server has no MUC service there"
        ),
        Err(e) => Err(e.into()),
    }
}

/// Enters the room (XEP-0045 §7.2) and waits for our own presence back;
/// unlocks a newly created room with the default configuration (§10.1.2).
async fn join(conn: &mut Conn, target: &Target, room: &str, nick: &str) -> Result<(), ClientError> {
    let occupant = format!("{room}/{nick}");
    conn.send(
        Step::Session,
        &format!(
            "<presence to='{}'><x xmlns='{NS_MUC}'><history maxstanzas='0'/></x></presence>",
            escape(&occupant)
        ),
    )
    .await?;
    let created = conn
        .expect(Step::Session, target.step_timeout, |el| {
            self_presence(el, &occupant)
        })
        .await?;
    if created {
        let id = conn.id("cfg");
        conn.send(
            Step::Session,
            &format!(
                "<iq type='set' to='{}' id='{id}'><query xmlns='{NS_MUC_OWNER}'>\
                 <x xmlns='jabber:x:data' type='submit'/></query></iq>",
                escape(room)
            ),
        )
        .await?;
        conn.expect(Step::Session, target.step_timeout, |el| {
            iq_response(el, &id, Step::Session).map(|r| r.map(|_| ()))
        })
        .await?;
    }
    Ok(())
}

/// Our own presence from the room: status 110 (§7.2.2), or any presence
/// from our occupant JID. Returns whether the room was just created (201).
fn self_presence(el: &Elem<'_>, occupant: &str) -> Option<Result<bool, ClientError>> {
    if el.name() != "presence" {
        return None;
    }
    let from = el.attr("from")?;
    let ours = from.eq_ignore_ascii_case(occupant);
    // An error may come from the occupant JID or from the bare room.
    let from_room = from
        .to_ascii_lowercase()
        .starts_with(&occupant[..occupant.rfind('/').unwrap_or(occupant.len())].to_ascii_lowercase());
    if from_room && el.attr("type").as_deref() == Some("error") {
        return Some(Err(ClientError::StanzaError(
            Step::Session,
            stanza_error_condition(el),
        )));
    }
    let codes: Vec<String> = el
        .children()
        .filter(|c| c.name() == "x")
        .flat_map(|x| x.children().filter(|c| c.name() == "status").collect::<Vec<_>>())
        .filter_map(|s| s.attr("code").map(|c| c.into_owned()))
        .collect();
    if ours || codes.iter().any(|c| c == "110") {
        return Some(Ok(codes.iter().any(|c| c == "201")));
    }
    None
}
