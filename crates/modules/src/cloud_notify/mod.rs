//! XEP-0357 Push Notifications, as Prosody's mod_cloud_notify (same name and
//! options): a phone registers its app server (`<enable/>`), and when a
//! message cannot reach it (the account is offline, its XEP-0198 session
//! hibernates, or acks are overdue) the server publishes a summary to that
//! app server, which wakes the device. Privacy by default: no body and no
//! sender unless the operator allows them. Registrations persist; an app
//! server that keeps failing loses its registration after
//! `push_max_errors`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use jackdaw_core::hooks::{Event, EventKind, Handled, Hook, IqHandler, IqRequest, IqType};
use jackdaw_core::jid::{BareJid, Jid};
use jackdaw_core::minidom::Element;
use jackdaw_core::server::Server;
use jackdaw_core::session::Session;
use jackdaw_core::stanza::{self, StanzaError};
use jackdaw_core::storage::{PushRegistration, PushStore};
use jackdaw_core::stream::{self, ns};
use serde::Deserialize;
use tracing::{debug, error, info, warn};

use crate::ModuleContext;

pub const NS_PUSH: &str = "urn:xmpp:push:0";
const NS_SUMMARY: &str = "urn:xmpp:push:summary";
const NS_PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const NS_PUBLISH_OPTIONS: &str = "http://jabber.org/protocol/pubsub#publish-options";
/// How long an app server may take to answer a notification.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);

pub const OPTIONS: &[&str] = &[
    "push_notification_important_body",
    "push_max_errors",
    "push_max_devices",
    "push_max_hibernation_timeout",
    "push_notification_with_body",
    "push_notification_with_sender",
];

#[derive(Debug, Clone, Deserialize)]
struct Config {
    /// Body sent for an important message when the real one is not.
    #[serde(default = "default_important_body")]
    push_notification_important_body: String,
    #[serde(default = "default_max_errors")]
    push_max_errors: u32,
    #[serde(default = "default_max_devices")]
    push_max_devices: usize,
    /// Seconds a push-enabled session may hibernate while nothing arrives.
    #[serde(default = "default_max_hibernation")]
    push_max_hibernation_timeout: u64,
    #[serde(default)]
    push_notification_with_body: bool,
    #[serde(default)]
    push_notification_with_sender: bool,
}

fn default_important_body() -> String {
    "New Message!".into()
}
fn default_max_errors() -> u32 {
    16
}
fn default_max_devices() -> usize {
    5
}
fn default_max_hibernation() -> u64 {
    259_200
}

pub fn init(ctx: &mut ModuleContext<'_>) -> Result<(), String> {
    let config: Config = ctx.host.module_config()?;
    if config.push_max_devices == 0 || config.push_max_errors == 0 {
        return Err("push_max_devices and push_max_errors must be at least 1".into());
    }
    let push = Arc::new(CloudNotify(Arc::new(Shared {
        store: ctx.stores.push.clone(),
        config,
        by_session: Mutex::new(HashMap::new()),
        notified: Mutex::new(Default::default()),
    })));
    ctx.hooks.add_account_feature(NS_PUSH);
    ctx.hooks.on_iq(NS_PUSH, IqType::Set, push.clone());
    // Before offline storage takes the message (which returns Handled::Yes).
    ctx.hooks.on(EventKind::MessageOffline, 10, push.clone());
    for kind in [
        EventKind::Hibernating,
        EventKind::QueuedWhileHibernating,
        EventKind::AckDelayed,
        EventKind::NotifyPing,
        EventKind::SessionClosed,
    ] {
        ctx.hooks.on(kind, 0, push.clone());
    }
    Ok(())
}

struct CloudNotify(Arc<Shared>);

struct Shared {
    store: Arc<dyn PushStore>,
    config: Config,
    /// The registration each live session enabled (its device).
    by_session: Mutex<HashMap<u64, Device>>,
    /// (device, stanza) pairs already notified, oldest first, so a stanza
    /// is announced to a device once (business rule), whatever the path.
    notified: Mutex<Notified>,
}

/// One registered device of an account.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Device {
    owner: String,
    service: String,
    node: String,
}

impl Device {
    fn of(owner: &BareJid, reg: &PushRegistration) -> Self {
        Self {
            owner: owner.to_string(),
            service: reg.service.clone(),
            node: reg.node.clone(),
        }
    }
}

/// (device, stanza) pairs remembered against duplicate notifications.
const NOTIFIED_MEMORY: usize = 10_000;

/// The remembered pairs, and their order for forgetting the oldest.
type Notified = (HashSet<(Device, String)>, VecDeque<(Device, String)>);

/// What identifies a stanza across its paths (queue, offline storage):
/// its archive id, else its sender and id.
fn stanza_key(stanza: &Element) -> Option<String> {
    let message = carbon_inner(stanza).unwrap_or(stanza);
    if let Some(sid) = message
        .get_child("stanza-id", ns::STANZA_ID)
        .and_then(|s| s.attr("id"))
    {
        return Some(format!("sid:{sid}"));
    }
    let id = message.attr("id")?;
    Some(format!("id:{}:{id}", message.attr("from").unwrap_or_default()))
}

/// The message a `<received/>` carbon carries (XEP-0280).
fn carbon_inner(stanza: &Element) -> Option<&Element> {
    stanza
        .get_child("received", ns::CARBONS)?
        .get_child("forwarded", ns::FORWARD)?
        .get_child("message", ns::CLIENT)
}

/// Worth waking a device for: a message someone wrote (or encrypted),
/// also when it comes as a received carbon; sent carbons are the user's
/// own words and are not.
fn is_important(stanza: &Element) -> bool {
    if stanza.name() != "message" || stanza::is_error(stanza) {
        return false;
    }
    let message = match carbon_inner(stanza) {
        Some(inner) => inner,
        None if stanza.has_child("sent", ns::CARBONS) => return false,
        None => stanza,
    };
    message.attr("type") != Some("headline")
        && (message.has_child("body", ns::CLIENT) || message.children().any(|c| c.name() == "encrypted"))
}

fn field(var: &str, value: &str) -> Element {
    let mut f = Element::bare("field", ns::DATA_FORMS);
    stanza::set_attr(&mut f, "var", var);
    let mut v = Element::bare("value", ns::DATA_FORMS);
    v.append_text(value);
    f.append_child(v);
    f
}

impl Shared {
    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Device>> {
        self.by_session.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The summary form (XEP-0357 §5), body and sender only as allowed.
    fn summary(&self, stanza: Option<&Element>) -> Element {
        let mut x = Element::bare("x", ns::DATA_FORMS);
        stanza::set_attr(&mut x, "type", "submit");
        x.append_child(field("FORM_TYPE", NS_SUMMARY));
        x.append_child(field("message-count", "1"));
        if let Some(m) = stanza {
            let m = carbon_inner(m).unwrap_or(m);
            if self.config.push_notification_with_sender
                && let Some(from) = m.attr("from")
            {
                x.append_child(field("last-message-sender", from));
            }
            let body = m.get_child("body", ns::CLIENT).map(|b| b.text());
            let shown = match body {
                Some(b) if self.config.push_notification_with_body => Some(b),
                _ if is_important(m) && !self.config.push_notification_important_body.is_empty() => {
                    Some(self.config.push_notification_important_body.clone())
                }
                _ => None,
            };
            if let Some(text) = shown {
                x.append_child(field("last-message-body", &text));
            }
        }
        x
    }

    /// The publish IQ for one registration.
    fn publish(&self, owner: &BareJid, reg: &PushRegistration, stanza: Option<&Element>) -> Element {
        let mut notification = Element::bare("notification", NS_PUSH);
        notification.append_child(self.summary(stanza));
        let mut item = Element::bare("item", NS_PUBSUB);
        item.append_child(notification);
        let mut publish = Element::bare("publish", NS_PUBSUB);
        stanza::set_attr(&mut publish, "node", reg.node.as_str());
        publish.append_child(item);
        let mut pubsub = Element::bare("pubsub", NS_PUBSUB);
        pubsub.append_child(publish);
        if let Ok(options) = reg.options.parse::<Element>() {
            let mut publish_options = Element::bare("publish-options", NS_PUBSUB);
            publish_options.append_child(options);
            pubsub.append_child(publish_options);
        }
        let mut iq = stanza::new_stanza(
            "iq",
            &[("type", "set"), ("from", owner.as_str()), ("to", &reg.service)],
        );
        iq.append_child(pubsub);
        iq
    }

    /// Notifies the given registrations in the background; errors are
    /// counted per registration.
    fn notify(
        self: &Arc<Self>,
        server: &Server,
        owner: &BareJid,
        regs: Vec<PushRegistration>,
        stanza: Option<&Element>,
    ) {
        let Some(server) = server.arc() else { return };
        let key = stanza.and_then(stanza_key);
        for reg in regs {
            if let Some(key) = &key
                && !self.first_notification(Device::of(owner, &reg), key.clone())
            {
                continue;
            }
            let iq = self.publish(owner, &reg, stanza);
            let (me, server, owner) = (self.clone(), server.clone(), owner.clone());
            tokio::spawn(async move { me.deliver(&server, &owner, reg, iq).await });
        }
    }

    /// Records that `device` is told about the stanza `key`; false if it
    /// already was.
    fn first_notification(&self, device: Device, key: String) -> bool {
        let mut notified = self.notified.lock().unwrap_or_else(|e| e.into_inner());
        let (seen, order) = &mut *notified;
        let entry = (device, key);
        if !seen.insert(entry.clone()) {
            return false;
        }
        order.push_back(entry);
        while order.len() > NOTIFIED_MEMORY {
            if let Some(old) = order.pop_front() {
                seen.remove(&old);
            }
        }
        true
    }

    async fn deliver(&self, server: &Server, owner: &BareJid, reg: PushRegistration, iq: Element) {
        debug!(owner = %owner, service = %reg.service, "sending push notification");
        match server.request_iq(iq, PUBLISH_TIMEOUT).await {
            Some(answer) if answer.attr("type") == Some("result") => {
                if reg.errors > 0
                    && let Err(e) = self
                        .store
                        .clear_errors(owner.as_str(), &reg.service, &reg.node)
                        .await
                {
                    error!(error = %e, "cannot reset push error count");
                }
            }
            Some(answer) => {
                let temporary =
                    answer.get_child("error", ns::CLIENT).and_then(|e| e.attr("type")) == Some("wait");
                if temporary {
                    debug!(owner = %owner, service = %reg.service, "push service busy (wait)");
                    return;
                }
                self.count_error(owner, &reg).await;
            }
            None => debug!(owner = %owner, service = %reg.service, "push service did not answer"),
        }
    }

    async fn count_error(&self, owner: &BareJid, reg: &PushRegistration) {
        match self
            .store
            .record_error(owner.as_str(), &reg.service, &reg.node)
            .await
        {
            Ok(n) if n >= self.config.push_max_errors => {
                info!(owner = %owner, service = %reg.service, errors = n, "push registration disabled after push_max_errors errors");
                if let Err(e) = self
                    .store
                    .unregister(owner.as_str(), &reg.service, Some(&reg.node))
                    .await
                {
                    error!(error = %e, "cannot remove a failing push registration");
                }
                let gone = Device::of(owner, reg);
                self.sessions().retain(|_, d| *d != gone);
            }
            Ok(n) => {
                warn!(owner = %owner, service = %reg.service, errors = n, "push service returned an error")
            }
            Err(e) => error!(error = %e, "cannot count a push error"),
        }
    }

    async fn registrations(&self, owner: &BareJid) -> Vec<PushRegistration> {
        match self.store.registrations(owner.as_str()).await {
            Ok(r) => r,
            Err(e) => {
                error!(error = %e, "cannot read push registrations");
                Vec::new()
            }
        }
    }

    /// The registration the session enabled, if any.
    async fn of_session(&self, session: &Session) -> Vec<PushRegistration> {
        let Some(Device { service, node, .. }) = self.sessions().get(&session.id).cloned() else {
            return Vec::new();
        };
        self.registrations(&session.bare())
            .await
            .into_iter()
            .filter(|r| r.service == service && r.node == node)
            .collect()
    }
}

#[async_trait]
impl IqHandler for CloudNotify {
    async fn handle(&self, _: &Server, req: IqRequest<'_>) -> Result<Option<Element>, StanzaError> {
        let this = &self.0;
        let (Some(session), true) = (req.session, req.is_to_own_account() || req.is_to_host()) else {
            return Err(StanzaError::not_allowed());
        };
        let owner = session.bare();
        let service = req
            .payload
            .attr("jid")
            .and_then(|j| Jid::new(j).ok())
            .ok_or_else(|| StanzaError::bad_request().with_text("'jid' (the app server) is required"))?
            .to_string();
        let node = req.payload.attr("node").map(str::to_string);
        let failed = |e: jackdaw_core::storage::StorageError| {
            error!(error = %e, "push registration storage failed");
            StanzaError::internal_server_error()
        };
        match req.payload.name() {
            "enable" => {
                let node = node
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| StanzaError::bad_request().with_text("'node' is required"))?;
                let options = match req.payload.get_child("x", ns::DATA_FORMS) {
                    Some(x) => {
                        let form_type = x
                            .children()
                            .find(|f| f.attr("var") == Some("FORM_TYPE"))
                            .and_then(|f| f.get_child("value", ns::DATA_FORMS))
                            .map(|v| v.text());
                        if form_type.as_deref() != Some(NS_PUBLISH_OPTIONS) {
                            return Err(StanzaError::bad_request()
                                .with_text("publish options must be a pubsub#publish-options form"));
                        }
                        stream::serialize(x)
                    }
                    None => String::new(),
                };
                let reg = PushRegistration {
                    service: service.clone(),
                    node: node.clone(),
                    options,
                    errors: 0,
                };
                let evicted = this
                    .store
                    .register(owner.as_str(), &reg, this.config.push_max_devices)
                    .await
                    .map_err(failed)?;
                for old in evicted {
                    info!(owner = %owner, service = %old.service, "oldest push registration removed (push_max_devices)");
                    let gone = Device::of(&owner, &old);
                    this.sessions().retain(|_, d| *d != gone);
                }
                this.sessions().insert(
                    session.id,
                    Device {
                        owner: owner.to_string(),
                        service,
                        node,
                    },
                );
                session.set_hibernation_extension(this.config.push_max_hibernation_timeout);
                Ok(None)
            }
            "disable" => {
                this.store
                    .unregister(owner.as_str(), &service, node.as_deref())
                    .await
                    .map_err(failed)?;
                let mut sessions = this.sessions();
                sessions.retain(|_, d| {
                    !(d.owner == owner.as_str()
                        && d.service == service
                        && node.as_ref().is_none_or(|node| *node == d.node))
                });
                if !sessions.contains_key(&session.id) {
                    session.set_hibernation_extension(0);
                }
                Ok(None)
            }
            _ => Err(StanzaError::bad_request()),
        }
    }
}

#[async_trait]
impl Hook for CloudNotify {
    async fn handle(&self, server: &Server, event: &Event<'_>) -> Handled {
        let this = &self.0;
        match event {
            Event::MessageOffline { to, stanza }
                if is_important(stanza) || stanza.has_child("store", ns::HINTS) =>
            {
                let regs = this.registrations(to).await;
                this.notify(server, to, regs, Some(stanza));
            }
            Event::Hibernating { session, queued }
            | Event::AckDelayed {
                session,
                unacked: queued,
            } => {
                if let Some(last) = queued.iter().rev().find(|s| is_important(s)) {
                    let regs = this.of_session(session).await;
                    this.notify(server, &session.bare(), regs, Some(last));
                }
            }
            Event::QueuedWhileHibernating { session, stanza } if is_important(stanza) => {
                let regs = this.of_session(session).await;
                this.notify(server, &session.bare(), regs, Some(stanza));
            }
            Event::NotifyPing { account } => {
                let regs = this.registrations(account).await;
                this.notify(server, account, regs, None);
            }
            Event::SessionClosed { session } => {
                this.sessions().remove(&session.id);
            }
            _ => {}
        }
        Handled::No
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(with_body: bool, with_sender: bool) -> Shared {
        struct NoStore;
        #[async_trait]
        impl PushStore for NoStore {
            async fn register(
                &self,
                _: &str,
                _: &PushRegistration,
                _: usize,
            ) -> jackdaw_core::storage::StorageResult<Vec<PushRegistration>> {
                Ok(Vec::new())
            }
            async fn unregister(
                &self,
                _: &str,
                _: &str,
                _: Option<&str>,
            ) -> jackdaw_core::storage::StorageResult<usize> {
                Ok(0)
            }
            async fn registrations(
                &self,
                _: &str,
            ) -> jackdaw_core::storage::StorageResult<Vec<PushRegistration>> {
                Ok(Vec::new())
            }
            async fn record_error(
                &self,
                _: &str,
                _: &str,
                _: &str,
            ) -> jackdaw_core::storage::StorageResult<u32> {
                Ok(0)
            }
            async fn clear_errors(
                &self,
                _: &str,
                _: &str,
                _: &str,
            ) -> jackdaw_core::storage::StorageResult<()> {
                Ok(())
            }
        }
        Shared {
            store: Arc::new(NoStore),
            config: Config {
                push_notification_important_body: default_important_body(),
                push_max_errors: 16,
                push_max_devices: 5,
                push_max_hibernation_timeout: 259_200,
                push_notification_with_body: with_body,
                push_notification_with_sender: with_sender,
            },
            by_session: Mutex::new(HashMap::new()),
            notified: Mutex::new(Default::default()),
        }
    }

    fn values(x: &Element) -> HashMap<String, String> {
        x.children()
            .filter_map(|f| {
                Some((
                    f.attr("var")?.to_string(),
                    f.get_child("value", ns::DATA_FORMS)?.text(),
                ))
            })
            .collect()
    }

    #[test]
    fn summary_is_private_by_default() {
        let m: Element =
            "<message xmlns='jabber:client' from='juliet@x/balcony'><body>Wherefore?</body></message>"
                .parse()
                .unwrap();
        let private = values(&module(false, false).summary(Some(&m)));
        assert_eq!(
            private.get("last-message-body").map(String::as_str),
            Some("New Message!")
        );
        assert!(!private.contains_key("last-message-sender"));
        assert_eq!(private.get("FORM_TYPE").map(String::as_str), Some(NS_SUMMARY));
        let open = values(&module(true, true).summary(Some(&m)));
        assert_eq!(
            open.get("last-message-body").map(String::as_str),
            Some("Wherefore?")
        );
        assert_eq!(
            open.get("last-message-sender").map(String::as_str),
            Some("juliet@x/balcony")
        );
    }
}
