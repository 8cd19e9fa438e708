//! XEP-0160 offline messages: a message for an account with no available
//! resource is stored durably, stamped with a XEP-0203 delay, and delivered
//! at the next initial presence. Option `offline_max_messages` bounds each
//! user's store; past it senders get `resource-constraint`.
//!
//! A message can be routed to storage at the very moment its recipient
//! comes online, and its write can land after that login's flush read the
//! store. So a store is followed by a check for an available resource (and
//! a flush to it), and flushes of one account take turns, so none delivers
//! what another is delivering.

use std::hash::BuildHasher;
use std::sync::Arc;

use async_trait::async_trait;
use jackdaw_core::hooks::{Event, EventKind, Handled, Hook};
use jackdaw_core::jid::BareJid;
use jackdaw_core::minidom::Element;
use jackdaw_core::server::Server;
use jackdaw_core::session::Session;
use jackdaw_core::stanza::{self, StanzaError};
use jackdaw_core::storage::{OfflineStore, StorageError};
use jackdaw_core::stream::{self, ns};
use serde::Deserialize;
use tracing::{error, info};

use crate::ModuleContext;

pub const OPTIONS: &[&str] = &["offline_max_messages"];

#[derive(Deserialize)]
struct Config {
    #[serde(default = "default_max")]
    offline_max_messages: usize,
}

fn default_max() -> usize {
    1000
}

pub fn init(ctx: &mut ModuleContext<'_>) -> Result<(), String> {
    let config: Config = ctx.host.module_config()?;
    let hook = Arc::new(Offline {
        store: ctx.stores.offline.clone(),
        quota: config.offline_max_messages,
        flush_turns: std::array::from_fn(|_| tokio::sync::Mutex::new(())),
        hasher: std::collections::hash_map::RandomState::new(),
    });
    ctx.hooks.on(EventKind::MessageOffline, 0, hook.clone());
    ctx.hooks.on(EventKind::InitialPresence, 0, hook);
    ctx.hooks.add_feature("msgoffline");
    Ok(())
}

/// Flushes of accounts that hash alike take turns; flushes are short and
/// happen at login, so a few dozen locks are plenty.
const FLUSH_LOCKS: usize = 64;

struct Offline {
    store: Arc<dyn OfflineStore>,
    quota: usize,
    flush_turns: [tokio::sync::Mutex<()>; FLUSH_LOCKS],
    hasher: std::collections::hash_map::RandomState,
}

impl Offline {
    /// Sends the account's stored messages to `session` and removes what
    /// reached its queue.
    async fn flush(&self, session: &Arc<Session>) {
        let bare = session.bare();
        let _turn = self.turn(&bare).lock().await;
        let host = bare.domain().as_str();
        let user = bare.node().map(|n| n.as_str()).unwrap_or_default();
        let messages = match self.store.list(host, user).await {
            Ok(m) => m,
            Err(e) => {
                error!(error = %e, "cannot read offline messages");
                return;
            }
        };
        let mut delivered_up_to = None;
        for m in messages {
            let Ok(mut el) = m.stanza.parse::<Element>() else {
                error!(id = m.id, "unreadable offline message skipped");
                delivered_up_to = Some(m.id);
                continue;
            };
            if el.ns() != ns::CLIENT {
                continue;
            }
            stanza::set_attr(&mut el, "to", session.jid.to_string());
            // Only what reached the session's queue is removed.
            if !session.send(el) {
                break;
            }
            delivered_up_to = Some(m.id);
        }
        if let Some(id) = delivered_up_to
            && let Err(e) = self.store.remove_up_to(host, user, id).await
        {
            error!(error = %e, "cannot remove delivered offline messages");
        }
    }

    fn turn(&self, account: &BareJid) -> &tokio::sync::Mutex<()> {
        &self.flush_turns[self.hasher.hash_one(account) as usize % FLUSH_LOCKS]
    }
}

/// Chat states alone are not worth keeping (XEP-0085 §5.5).
fn worth_storing(msg: &Element) -> bool {
    msg.children()
        .any(|c| c.ns() != "http://jabber.org/protocol/chatstates")
}

#[async_trait]
impl Hook for Offline {
    async fn handle(&self, server: &Server, event: &Event<'_>) -> Handled {
        match event {
            Event::MessageOffline { to, stanza } => {
                if !worth_storing(stanza) {
                    return Handled::Yes;
                }
                let host = to.domain().as_str();
                let user = to.node().map(|n| n.as_str()).unwrap_or_default();
                let mut stored = (*stanza).clone();
                // A message requeued from an ended session already carries
                // the time it first arrived.
                if !stored.has_child("delay", ns::DELAY) {
                    stored.append_child({
                        let mut d = stanza::delay(host, &stanza::now_stamp());
                        d.append_text("Offline Storage");
                        d
                    });
                }
                match self
                    .store
                    .push(host, user, &stream::serialize(&stored), self.quota)
                    .await
                {
                    Ok(()) => {
                        // The recipient may have come online meanwhile (a
                        // negative priority takes no bare-JID messages).
                        let online = server
                            .available_resources(to)
                            .into_iter()
                            .find(|s| s.priority() >= 0);
                        if let Some(session) = online {
                            self.flush(&session).await;
                        }
                    }
                    Err(StorageError::QuotaExceeded) => {
                        info!(to = %to, "offline storage full, message refused");
                        server.bounce(
                            stanza,
                            StanzaError::resource_constraint()
                                .with_text("The recipient's offline storage is full"),
                        );
                    }
                    Err(e) => {
                        error!(error = %e, "cannot store offline message");
                        server.bounce(stanza, StanzaError::internal_server_error());
                    }
                }
                Handled::Yes
            }
            Event::InitialPresence { session } => {
                self.flush(session).await;
                Handled::No
            }
            _ => Handled::No,
        }
    }
}
