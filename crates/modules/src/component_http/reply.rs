//! Turning the web app's answer into what the XMPP sender sees.

use jackdaw_core::jid::Jid;
use jackdaw_core::minidom::Element;
use jackdaw_core::server::Server;
use jackdaw_core::stanza::{self, ErrorType, StanzaError};
use jackdaw_core::stream::ns;
use tracing::warn;

use super::error_for_status;

pub enum Outcome {
    Answer {
        status: u16,
        json_type: bool,
        body: String,
    },
    /// No answer: connection refused, timeout, broken body.
    Failed(String),
}

fn is_iq_request(el: &Element) -> bool {
    el.name() == "iq" && matches!(el.attr("type"), Some("get" | "set"))
}

pub async fn act(server: &Server, domain: &str, original: &Element, outcome: Outcome) {
    // Never answer an error: two bots could bounce errors forever.
    let silent = stanza::is_error(original);
    match outcome {
        Outcome::Failed(detail) => {
            warn!(component = domain, error = %detail, "component_http web app did not answer");
            if !silent {
                server.bounce(
                    original,
                    StanzaError::new(ErrorType::Wait, "remote-server-timeout"),
                );
            }
        }
        Outcome::Answer {
            status: 200,
            json_type: true,
            body,
        } => {
            if silent {
                return;
            }
            match build_reply(domain, original, &body) {
                Ok(Some(reply)) => server.route(reply, None).await,
                Ok(None) if is_iq_request(original) => {
                    server.bounce(original, StanzaError::service_unavailable())
                }
                Ok(None) => {}
                Err(e) => {
                    warn!(component = domain, error = %e, "component_http web app answered unusable JSON");
                    server.bounce(original, StanzaError::internal_server_error());
                }
            }
        }
        Outcome::Answer {
            status: 200..=299, ..
        } => {
            // No reply wanted; an IQ still needs one (RFC 6120 §8.2.3).
            if !silent && is_iq_request(original) {
                server.bounce(original, StanzaError::service_unavailable());
            }
        }
        Outcome::Answer { status, .. } => {
            if !silent {
                server.bounce(original, error_for_status(status));
            }
        }
    }
}

/// A `from` the component may use: in its domain, else the JID the
/// original stanza was addressed to.
fn own_from(candidate: Option<&str>, domain: &str, original: &Element) -> String {
    match candidate.and_then(|c| Jid::new(c).ok()) {
        Some(j) if j.domain().as_str() == domain => j.to_string(),
        _ => original.attr("to").unwrap_or(domain).to_string(),
    }
}

/// The reply described by the web app's JSON, or None for "no reply".
pub fn build_reply(domain: &str, original: &Element, body: &str) -> Result<Option<Element>, String> {
    let json: serde_json::Value = serde_json::from_str(body).map_err(|e| e.to_string())?;
    let obj = json.as_object().ok_or("not a JSON object")?;
    let text = |k: &str| obj.get(k).and_then(|v| v.as_str());
    if let Some(xml) = text("stanza") {
        // Parsed inside a jabber:client wrapper so an unqualified stanza
        // gets the right namespace.
        let wrapped = format!("<w xmlns='{}'>{xml}</w>", ns::CLIENT);
        let wrapper: Element = wrapped.parse().map_err(|e| format!("stanza is not XML: {e}"))?;
        let mut el = wrapper.children().next().cloned().ok_or("stanza is empty")?;
        if el.ns() != ns::CLIENT || !matches!(el.name(), "message" | "presence" | "iq") {
            return Err("stanza is not a message, presence or iq".into());
        }
        let from = own_from(el.attr("from"), domain, original);
        stanza::set_attr(&mut el, "from", from);
        if el.attr("to").is_none() {
            stanza::set_attr(&mut el, "to", original.attr("from").unwrap_or_default());
        }
        return Ok(Some(el));
    }
    let kind = text("kind").unwrap_or("message");
    if !matches!(kind, "message" | "presence" | "iq") {
        return Err(format!("kind {kind:?} is not message, presence or iq"));
    }
    let to = text("to")
        .or(original.attr("from"))
        .unwrap_or_default()
        .to_string();
    let from = own_from(text("from"), domain, original);
    let default_type = match kind {
        "message" => Some("chat"),
        "iq" => Some("result"),
        _ => None,
    };
    let mut el = stanza::new_stanza(kind, &[("to", &to), ("from", &from)]);
    if let Some(t) = text("type").or(default_type) {
        stanza::set_attr(&mut el, "type", t);
    }
    if kind == "iq" {
        let id = text("id").or(original.attr("id")).unwrap_or("component-http");
        stanza::set_attr(&mut el, "id", id);
    }
    match text("body") {
        Some(b) if kind == "message" => {
            let mut body_el = Element::bare("body", ns::CLIENT);
            body_el.append_text(b);
            el.append_child(body_el);
        }
        None if kind == "message" => return Ok(None),
        _ => {}
    }
    Ok(Some(el))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn original() -> Element {
        stanza::new_stanza(
            "message",
            &[
                ("from", "alice@example/phone"),
                ("to", "bot.example"),
                ("type", "chat"),
            ],
        )
    }

    #[test]
    fn body_reply_swaps_addresses() {
        let r = build_reply("bot.example", &original(), r#"{"body": "hi"}"#)
            .unwrap()
            .unwrap();
        assert_eq!(r.attr("to"), Some("alice@example/phone"));
        assert_eq!(r.attr("from"), Some("bot.example"));
        assert_eq!(r.attr("type"), Some("chat"));
        assert_eq!(r.get_child("body", ns::CLIENT).unwrap().text(), "hi");
    }

    #[test]
    fn stanza_reply_gets_a_from_in_the_domain() {
        let r = build_reply(
            "bot.example",
            &original(),
            r#"{"stanza": "<message to='bob@example' from='evil@example'><body>x</body></message>"}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.attr("from"), Some("bot.example"));
        assert_eq!(r.attr("to"), Some("bob@example"));
        assert_eq!(r.ns(), ns::CLIENT);
    }

    #[test]
    fn custom_fields_are_used() {
        let r = build_reply(
            "bot.example",
            &original(),
            r#"{"to": "carol@example", "from": "helper@bot.example", "type": "normal", "body": "x"}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.attr("to"), Some("carol@example"));
        assert_eq!(r.attr("from"), Some("helper@bot.example"));
        assert_eq!(r.attr("type"), Some("normal"));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(build_reply("bot.example", &original(), "nope").is_err());
        assert!(build_reply("bot.example", &original(), r#"{"kind": "banana"}"#).is_err());
    }
}
