//! XEP-0198 Stream Management: stanza acknowledgements and session
//! resumption.
//!
//! While a resumable session's connection is alive, its `Connection` owns
//! the state (counters, the queue of stanzas the client has not yet
//! acknowledged). When the connection is lost, the state moves to a
//! hibernation task that keeps the session bound and keeps collecting what
//! the router sends it; a new connection that resumes takes the state back
//! through the session's takeover channel, whether it is held by that task
//! or by an old connection the server still believes alive. When
//! hibernation times out, every unacknowledged or queued message goes back
//! through the router (to another resource or offline storage), stamped
//! with the time it first arrived: nothing is dropped.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jid::BareJid;
use minidom::Element;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::hooks::Event;
use crate::server::Server;
use crate::session::{Outbound, Session};
use crate::stanza;

/// How the resuming connection asks the current holder for the state.
pub type TakeoverRequest = oneshot::Sender<Detached>;

/// Counters and the unacknowledged queue of one managed stream.
#[derive(Debug)]
pub struct SmState {
    /// Set when the client asked for resumption.
    pub resume_id: Option<String>,
    /// Stanzas received from the client and handled (our `h`).
    pub handled_in: u32,
    /// What the client acknowledged of ours.
    pub acked_out: u32,
    /// Sent and not yet acknowledged, oldest first, with the time each
    /// first reached the session (for the delay stamp if it is requeued).
    pub unacked: VecDeque<(Element, String)>,
    /// When our last `<r/>` went out without an answer yet.
    pub ack_requested: Option<Instant>,
    /// Seconds the session may hibernate.
    pub hibernation: Duration,
    /// Stanzas sent up to this count were already announced to the
    /// account's push services (no second notification for them).
    pub notified_through: u32,
}

impl SmState {
    pub fn new(hibernation: Duration) -> Self {
        Self {
            resume_id: None,
            handled_in: 0,
            acked_out: 0,
            unacked: VecDeque::new(),
            ack_requested: None,
            hibernation,
            notified_through: 0,
        }
    }

    /// Records a stanza written to the client.
    pub fn sent(&mut self, stanza: Element, stamp: String) {
        self.unacked.push_back((stanza, stamp));
    }

    /// Count of stanzas sent so far.
    pub fn sent_count(&self) -> u32 {
        self.acked_out.wrapping_add(self.unacked.len() as u32)
    }

    /// Unacknowledged stanzas not yet announced to push services; marks
    /// them announced.
    pub fn take_unnotified(&mut self) -> Vec<Element> {
        // Counters wrap at 2^32; a negative distance means the client has
        // acknowledged past what was announced.
        let already = (self.notified_through.wrapping_sub(self.acked_out) as i32).max(0) as usize;
        let fresh: Vec<Element> = self
            .unacked
            .iter()
            .skip(already)
            .map(|(el, _)| el.clone())
            .collect();
        self.notified_through = self.sent_count();
        fresh
    }

    /// Applies the client's `h`; false when it acknowledges more than was
    /// sent (XEP-0198 §4: an `undefined-condition` stream error).
    pub fn acknowledge(&mut self, h: u32) -> bool {
        let newly = h.wrapping_sub(self.acked_out) as usize;
        if newly > self.unacked.len() {
            return false;
        }
        self.unacked.drain(..newly);
        self.acked_out = h;
        self.ack_requested = None;
        true
    }
}

/// A session with no connection: everything needed to resume it.
pub struct Detached {
    pub session: Arc<Session>,
    pub outbox: mpsc::Receiver<Outbound>,
    pub sm: SmState,
    /// Stanzas that reached the connection but were never written (held
    /// back by CSI, or arrived while hibernating): sent first on resume.
    pub pending: Vec<(Element, String)>,
    pub takeover: mpsc::Receiver<TakeoverRequest>,
}

/// The resumable sessions, by resumption id.
#[derive(Default)]
pub struct ResumableSessions {
    by_id: Mutex<HashMap<String, (BareJid, mpsc::Sender<TakeoverRequest>)>>,
}

impl ResumableSessions {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, (BareJid, mpsc::Sender<TakeoverRequest>)>> {
        self.by_id.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a session; returns its resumption id and the receiver its
    /// holder must listen on.
    pub fn register(&self, owner: BareJid) -> (String, mpsc::Receiver<TakeoverRequest>) {
        let id = stanza::random_hex(16);
        let (tx, rx) = mpsc::channel(1);
        self.map().insert(id.clone(), (owner, tx));
        (id, rx)
    }

    pub fn forget(&self, id: &str) {
        self.map().remove(id);
    }

    pub fn count(&self) -> usize {
        self.map().len()
    }

    /// Takes a session's state for `owner` (only the account that created
    /// it may resume it). `None`: unknown id, another account, or its
    /// holder did not answer in time.
    pub async fn take(&self, id: &str, owner: &BareJid) -> Option<Detached> {
        let sender = {
            let map = self.map();
            let (bare, tx) = map.get(id)?;
            if bare != owner {
                warn!(owner = %owner, "resumption attempt for another account's session refused");
                return None;
            }
            tx.clone()
        };
        let (reply, answer) = oneshot::channel();
        sender.send(reply).await.ok()?;
        tokio::time::timeout(Duration::from_secs(10), answer)
            .await
            .ok()?
            .ok()
    }
}

/// Keeps a detached session bound until it is resumed or its time is up.
pub async fn hibernate(server: Arc<Server>, mut state: Detached) {
    let id = state.sm.resume_id.clone().unwrap_or_default();
    // With push enabled the session may wait longer, until something
    // arrives for it; from then on the usual time applies.
    let extension = Duration::from_secs(state.session.hibernation_extension());
    let mut deadline = Instant::now() + state.sm.hibernation.max(extension);
    let host = server.host(state.session.jid.domain().as_str());
    if let Some(host) = host {
        let queued = state.sm.take_unnotified();
        host.hooks
            .fire(
                &server,
                &Event::Hibernating {
                    session: &state.session,
                    queued: &queued,
                },
            )
            .await;
    }
    let max_queue = server.config.global.smacks_max_queue_size;
    info!(jid = %state.session.jid, seconds = state.sm.hibernation.as_secs(), "session hibernating");
    loop {
        tokio::select! {
            out = state.outbox.recv() => match out {
                Some(Outbound::Stanza(el)) => {
                    if let Some(host) = host {
                        host.hooks
                            .fire(&server, &Event::QueuedWhileHibernating { session: &state.session, stanza: &el })
                            .await;
                    }
                    if el.name() == "message" {
                        deadline = deadline.min(Instant::now() + state.sm.hibernation);
                    }
                    state.pending.push((el, stanza::now_stamp()));
                    if state.pending.len() + state.sm.unacked.len() > max_queue {
                        info!(jid = %state.session.jid, "hibernation queue full (smacks_max_queue_size): session ended");
                        break;
                    }
                }
                // Replaced by a new login of the same resource, or closed.
                Some(Outbound::Close(_)) | None => break,
            },
            request = state.takeover.recv() => match request {
                Some(reply) => match reply.send(state) {
                    Ok(()) => {
                        debug!("hibernated session taken over");
                        return;
                    }
                    // The resuming connection gave up: keep hibernating.
                    Err(back) => state = back,
                },
                None => break,
            },
            _ = tokio::time::sleep_until(deadline) => {
                info!(jid = %state.session.jid, "hibernation timed out (smacks_hibernation_time)");
                break;
            }
            _ = server.shutdown.cancelled() => break,
        }
    }
    server.resumable.forget(&id);
    end_detached(&server, state).await;
}

/// Ends a session that has no connection: unregisters it (contacts see it
/// go offline) and hands every message it still holds back to the router.
pub async fn end_detached(server: &Server, mut state: Detached) {
    super::end_session(server, &state.session).await;
    state.outbox.close();
    let mut undelivered: Vec<(Element, String)> = state.sm.unacked.drain(..).collect();
    undelivered.append(&mut state.pending);
    while let Ok(out) = state.outbox.try_recv() {
        if let Outbound::Stanza(el) = out {
            undelivered.push((el, stanza::now_stamp()));
        }
    }
    for (el, stamp) in undelivered {
        super::requeue_message(server, &state.session.jid, el, Some(&stamp)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(n: u32) -> Element {
        format!("<message xmlns='jabber:client' id='{n}'/>")
            .parse()
            .unwrap()
    }

    #[test]
    fn acks_drop_what_they_cover_and_wrap() {
        let mut sm = SmState::new(Duration::from_secs(1));
        for n in 0..5 {
            sm.sent(el(n), String::new());
        }
        assert!(sm.acknowledge(2));
        assert_eq!(sm.unacked.len(), 3);
        assert_eq!(sm.unacked[0].0.attr("id"), Some("2"));
        assert!(sm.acknowledge(2), "a repeated ack is harmless");
        assert!(!sm.acknowledge(9), "more than was sent");
        let mut announced = SmState::new(Duration::from_secs(1));
        for n in 0..3 {
            announced.sent(el(n), String::new());
        }
        assert_eq!(announced.take_unnotified().len(), 3);
        assert!(announced.take_unnotified().is_empty(), "announced once");
        announced.sent(el(3), String::new());
        assert!(announced.acknowledge(2));
        assert_eq!(announced.take_unnotified().len(), 1, "only the new one");
        let mut wrapping = SmState::new(Duration::from_secs(1));
        wrapping.acked_out = u32::MAX;
        wrapping.sent(el(1), String::new());
        wrapping.sent(el(2), String::new());
        assert!(wrapping.acknowledge(0));
        assert_eq!(wrapping.unacked.len(), 1);
    }
}
