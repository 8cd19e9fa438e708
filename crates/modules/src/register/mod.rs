//! XEP-0077 In-Band Registration: account creation before login when the
//! host has `allow_registration = true`, and for logged-in users password
//! change and account removal. Both go through the host's Authenticator, so
//! an HTTP backend gets them as register/set_password/remove_user calls.

use std::sync::Arc;

use async_trait::async_trait;
use jackdaw_core::auth::AuthError;
use jackdaw_core::hooks::{IqHandler, IqRequest, IqType};
use jackdaw_core::jid::BareJid;
use jackdaw_core::minidom::Element;
use jackdaw_core::server::Server;
use jackdaw_core::stanza::{ErrorType, StanzaError};
use jackdaw_core::stream::{StreamError, ns};
use tracing::{info, warn};

use crate::ModuleContext;

pub const OPTIONS: &[&str] = &[];

pub fn init(ctx: &mut ModuleContext<'_>) -> Result<(), String> {
    let handler = Arc::new(Register {
        allow_registration: ctx.host.allow_registration,
    });
    ctx.hooks.on_iq(ns::REGISTER, IqType::Get, handler.clone());
    ctx.hooks.on_iq(ns::REGISTER, IqType::Set, handler);
    ctx.hooks.add_feature(ns::REGISTER);
    Ok(())
}

struct Register {
    allow_registration: bool,
}

fn field(el: &Element, name: &str) -> Option<String> {
    el.get_child(name, ns::REGISTER).map(|c| c.text())
}

fn text_el(name: &str, text: &str) -> Element {
    let mut el = Element::bare(name, ns::REGISTER);
    el.append_text(text);
    el
}

fn auth_error(e: AuthError) -> StanzaError {
    match e {
        AuthError::Conflict => StanzaError::conflict(),
        AuthError::NotSupported => StanzaError::feature_not_implemented(),
        AuthError::NoSuchUser => StanzaError::item_not_found(),
        AuthError::Unavailable(detail) => {
            warn!(error = %detail, "authentication backend unavailable for registration");
            StanzaError::internal_server_error()
        }
    }
}

#[async_trait]
impl IqHandler for Register {
    async fn handle(&self, server: &Server, req: IqRequest<'_>) -> Result<Option<Element>, StanzaError> {
        let Some(host) = server.host(req.host) else {
            return Err(StanzaError::service_unavailable());
        };
        let auth = host.auth.clone();
        let is_get = req.iq.attr("type") == Some("get");
        match req.from {
            None => {
                if !self.allow_registration {
                    return Err(StanzaError::service_unavailable());
                }
                if is_get {
                    let mut q = Element::bare("query", ns::REGISTER);
                    q.append_child(text_el("instructions", "Choose a username and password."));
                    q.append_child(Element::bare("username", ns::REGISTER));
                    q.append_child(Element::bare("password", ns::REGISTER));
                    return Ok(Some(q));
                }
                let (Some(user), Some(password)) =
                    (field(req.payload, "username"), field(req.payload, "password"))
                else {
                    return Err(StanzaError::bad_request());
                };
                let node = BareJid::new(&format!("{user}@{}", req.host))
                    .ok()
                    .and_then(|j| j.node().map(|n| n.as_str().to_string()))
                    .ok_or_else(StanzaError::jid_malformed)?;
                if password.is_empty() {
                    return Err(StanzaError::new(ErrorType::Modify, "not-acceptable"));
                }
                auth.create_user(req.host, &node, &password)
                    .await
                    .map_err(auth_error)?;
                info!(user = %node, host = req.host, "account registered in-band");
                Ok(None)
            }
            Some(from) if req.is_to_host() || req.is_to_own_account() => {
                let owner = from.to_bare();
                let node = owner.node().map(|n| n.as_str().to_string()).unwrap_or_default();
                if is_get {
                    let mut q = Element::bare("query", ns::REGISTER);
                    q.append_child(Element::bare("registered", ns::REGISTER));
                    q.append_child(text_el("username", &node));
                    q.append_child(Element::bare("password", ns::REGISTER));
                    return Ok(Some(q));
                }
                if req.payload.get_child("remove", ns::REGISTER).is_some() {
                    auth.delete_user(req.host, &node).await.map_err(auth_error)?;
                    info!(user = %node, host = req.host, "account removed in-band");
                    // XEP-0077 §3.2: the account's sessions end.
                    for s in server.sessions.resources(&owner) {
                        s.close(StreamError::NotAuthorized);
                    }
                    return Ok(None);
                }
                let Some(password) = field(req.payload, "password").filter(|p| !p.is_empty()) else {
                    return Err(StanzaError::bad_request());
                };
                if field(req.payload, "username").is_some_and(|u| !u.eq_ignore_ascii_case(&node)) {
                    return Err(StanzaError::not_allowed());
                }
                auth.set_password(req.host, &node, &password)
                    .await
                    .map_err(auth_error)?;
                info!(user = %node, host = req.host, "password changed in-band");
                Ok(None)
            }
            Some(_) => Err(StanzaError::forbidden()),
        }
    }
}
