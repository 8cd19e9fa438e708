//! `chat`: every user logs in, then each sends `--rate` messages per second
//! to random other online users (to their bound full JIDs, so the
//! server's delivery is one-to-one) for `--duration` seconds.

use std::sync::Arc;

use rand::Rng as _;

use super::traffic::{self, Plan};
use crate::cli::ChatArgs;
use crate::report::Report;
use crate::run::Run;
use crate::xml::escape;

pub async fn run(run: &Run, args: &ChatArgs, report: &mut Report) -> anyhow::Result<()> {
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        anyhow::bail!("--rate must be positive");
    }
    let phase = run.login_all(run.users.len() as u64).await;
    report.login = super::login_report(&phase);
    let sessions: Vec<_> = phase
        .conns
        .into_iter()
        .enumerate()
        .filter_map(|(i, c)| c.map(|c| (i, c, true)))
        .collect();
    if sessions.len() < 2 {
        anyhow::bail!(
            "chat needs at least 2 logged-in users, got {}: {}",
            sessions.len(),
            crate::report::reasons(&report.login.failures)
        );
    }
    // Escaped once: every message goes to one of these.
    let jids: Arc<Vec<String>> = Arc::new(
        sessions
            .iter()
            .map(|(_, c, _)| escape(&c.jid).into_owned())
            .collect(),
    );
    // Session position by user index, to skip the sender when drawing.
    let mut position = vec![usize::MAX; run.users.len()];
    for (p, (i, _, _)) in sessions.iter().enumerate() {
        position[*i] = p;
    }
    let make: traffic::MakeStanza = Arc::new(move |i, seq, body| {
        let me = position[i];
        let mut to = rand::thread_rng().gen_range(0..jids.len() - 1);
        if to >= me {
            to += 1;
        }
        format!(
            "<message to='{}' type='chat' id='m{seq}'><body>{body}</body></message>",
            jids[to]
        )
    });
    let plan = Plan {
        rate: args.rate,
        send_for: run.duration(),
        drain: std::time::Duration::from_secs_f64(args.drain.max(0.0)),
        fan_out: 1,
    };
    let (chat, server) = traffic::drive(run, sessions, make, plan).await;
    let delivered = chat.delivered;
    report.chat = Some(chat);
    report.server = server;
    if delivered == 0 {
        anyhow::bail!("no message was delivered");
    }
    Ok(())
}
