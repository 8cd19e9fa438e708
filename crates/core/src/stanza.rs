//! Helpers over the stanza model: a stanza is a `minidom::Element` in the
//! `jabber:client` namespace, parsed once by the stream layer. Errors are
//! data (`StanzaError`), turned into XML once when replying.

use jid::Jid;
use minidom::Element;

use crate::stream::ns;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StanzaKind {
    Message,
    Presence,
    Iq,
}

impl StanzaKind {
    pub fn of(el: &Element) -> Option<Self> {
        if el.ns() != ns::CLIENT {
            return None;
        }
        match el.name() {
            "message" => Some(StanzaKind::Message),
            "presence" => Some(StanzaKind::Presence),
            "iq" => Some(StanzaKind::Iq),
            _ => None,
        }
    }
}

/// RFC 6120 §8.3.2 error types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    Auth,
    Cancel,
    Continue,
    Modify,
    Wait,
}

impl ErrorType {
    fn as_str(self) -> &'static str {
        match self {
            ErrorType::Auth => "auth",
            ErrorType::Cancel => "cancel",
            ErrorType::Continue => "continue",
            ErrorType::Modify => "modify",
            ErrorType::Wait => "wait",
        }
    }
}

/// A stanza error (RFC 6120 §8.3): a defined condition with its type and an
/// optional human-readable text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StanzaError {
    pub kind: ErrorType,
    pub condition: &'static str,
    pub text: Option<String>,
    /// An application-specific condition (RFC 6120 §8.3.2), such as
    /// XEP-0191's `<blocked/>`, as `(name, namespace)`.
    pub app_condition: Option<(&'static str, &'static str)>,
}

impl StanzaError {
    pub fn new(kind: ErrorType, condition: &'static str) -> Self {
        Self {
            kind,
            condition,
            text: None,
            app_condition: None,
        }
    }
    pub fn with_app_condition(mut self, name: &'static str, ns: &'static str) -> Self {
        self.app_condition = Some((name, ns));
        self
    }
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }
    pub fn service_unavailable() -> Self {
        Self::new(ErrorType::Cancel, "service-unavailable")
    }
    pub fn feature_not_implemented() -> Self {
        Self::new(ErrorType::Cancel, "feature-not-implemented")
    }
    pub fn bad_request() -> Self {
        Self::new(ErrorType::Modify, "bad-request")
    }
    pub fn not_allowed() -> Self {
        Self::new(ErrorType::Cancel, "not-allowed")
    }
    pub fn forbidden() -> Self {
        Self::new(ErrorType::Auth, "forbidden")
    }
    pub fn item_not_found() -> Self {
        Self::new(ErrorType::Cancel, "item-not-found")
    }
    pub fn conflict() -> Self {
        Self::new(ErrorType::Cancel, "conflict")
    }
    pub fn not_authorized() -> Self {
        Self::new(ErrorType::Auth, "not-authorized")
    }
    pub fn internal_server_error() -> Self {
        // RFC 6120 §8.3.3.6: type cancel.
        Self::new(ErrorType::Cancel, "internal-server-error")
    }
    pub fn resource_constraint() -> Self {
        Self::new(ErrorType::Wait, "resource-constraint")
    }
    pub fn remote_server_not_found() -> Self {
        Self::new(ErrorType::Cancel, "remote-server-not-found")
    }
    pub fn jid_malformed() -> Self {
        Self::new(ErrorType::Modify, "jid-malformed")
    }

    pub fn to_element(&self) -> Element {
        let mut err = Element::builder("error", ns::CLIENT)
            .append(Element::bare(self.condition, ns::STANZAS_ERR))
            .build();
        set_attr(&mut err, "type", self.kind.as_str());
        if let Some(text) = &self.text {
            let mut t = Element::bare("text", ns::STANZAS_ERR);
            t.append_text(text.clone());
            err.append_child(t);
        }
        if let Some((name, ns)) = self.app_condition {
            err.append_child(Element::bare(name, ns));
        }
        err
    }
}

pub fn stanza_type(el: &Element) -> Option<&str> {
    el.attr("type")
}

pub fn to_jid(el: &Element) -> Option<Jid> {
    el.attr("to").and_then(|s| Jid::new(s).ok())
}

pub fn from_jid(el: &Element) -> Option<Jid> {
    el.attr("from").and_then(|s| Jid::new(s).ok())
}

pub fn set_attr(el: &mut Element, name: &str, value: impl Into<String>) {
    if let Ok(name) = rxml::NcName::try_from(name) {
        el.set_attr(rxml::Namespace::none().clone(), name, value.into());
    }
}

pub fn remove_attr(el: &mut Element, name: &str) {
    if let Ok(name) = rxml::NcName::try_from(name) {
        el.attrs_mut().remove(rxml::Namespace::none(), &name);
    }
}

/// `bytes` random bytes as lowercase hex: stream ids, session and
/// resumption ids, ids of server-originated IQs.
pub fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Removes every child named `name` in namespace `ns`.
pub fn remove_children(el: &mut Element, name: &str, ns: &str) {
    while el.remove_child(name, ns).is_some() {}
}

/// Removes every child for which `unwanted` is true (minidom removes by
/// name only), keeping text and order.
pub fn remove_children_where(el: &mut Element, unwanted: impl Fn(&Element) -> bool) {
    if !el.children().any(&unwanted) {
        return;
    }
    let mut kept = Element::bare(el.name(), el.ns());
    *kept.attrs_mut() = el.attrs().clone();
    for node in el.nodes() {
        match node {
            minidom::Node::Element(child) if unwanted(child) => {}
            minidom::Node::Element(child) => {
                kept.append_child(child.clone());
            }
            minidom::Node::Text(t) => kept.append_text(t.clone()),
        }
    }
    *el = kept;
}

/// Builds a stanza of `kind` with the given attributes.
pub fn new_stanza(name: &str, attrs: &[(&str, &str)]) -> Element {
    let mut el = Element::bare(name, ns::CLIENT);
    for (k, v) in attrs {
        set_attr(&mut el, k, *v);
    }
    el
}

/// True for stanzas to which no error may be returned (RFC 6120 §8.3.1).
pub fn is_error(el: &Element) -> bool {
    stanza_type(el) == Some("error")
}

/// The error reply to `stanza` (from/to swapped, same id), or None when
/// the stanza is itself an error.
pub fn error_reply(stanza: &Element, err: &StanzaError) -> Option<Element> {
    if is_error(stanza) {
        return None;
    }
    let mut reply = Element::bare(stanza.name(), ns::CLIENT);
    if let Some(id) = stanza.attr("id") {
        set_attr(&mut reply, "id", id);
    }
    if let Some(from) = stanza.attr("from") {
        set_attr(&mut reply, "to", from);
    }
    if let Some(to) = stanza.attr("to") {
        set_attr(&mut reply, "from", to);
    }
    set_attr(&mut reply, "type", "error");
    // Messages keep their payload so the sender can tell which one failed.
    if stanza.name() == "message" {
        for child in stanza.children() {
            reply.append_child(child.clone());
        }
    }
    reply.append_child(err.to_element());
    Some(reply)
}

/// An IQ result for `iq`, carrying `payload` when given.
pub fn iq_result(iq: &Element, payload: Option<Element>) -> Element {
    let mut reply = Element::bare("iq", ns::CLIENT);
    set_attr(&mut reply, "type", "result");
    if let Some(id) = iq.attr("id") {
        set_attr(&mut reply, "id", id);
    }
    if let Some(from) = iq.attr("from") {
        set_attr(&mut reply, "to", from);
    }
    if let Some(to) = iq.attr("to") {
        set_attr(&mut reply, "from", to);
    }
    if let Some(p) = payload {
        reply.append_child(p);
    }
    reply
}

/// The single payload child of an IQ get/set.
pub fn iq_payload(iq: &Element) -> Option<&Element> {
    iq.children().next()
}

/// A XEP-0203 delay element.
pub fn delay(from: &str, stamp: &str) -> Element {
    let mut d = Element::bare("delay", ns::DELAY);
    set_attr(&mut d, "from", from);
    set_attr(&mut d, "stamp", stamp);
    d
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Current UTC time as an XEP-0082 timestamp.
pub fn now_stamp() -> String {
    format_stamp(now_secs())
}

/// Formats seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_stamp(secs: u64) -> String {
    let days = secs / 86400;
    let rem = secs % 86400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil-from-days (Howard Hinnant's algorithm), to avoid a date crate
    // for one format.
    let z = days as i64 + 719468;
    let era = z.div_euclid(146097);
    let doe = z.rem_euclid(146097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if mo <= 2 { y + 1 } else { y };
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps() {
        assert_eq!(format_stamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_stamp(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(format_stamp(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn error_reply_swaps_addresses_and_never_answers_errors() {
        let iq = new_stanza(
            "iq",
            &[("type", "get"), ("id", "x"), ("from", "a@b/c"), ("to", "b")],
        );
        let reply = error_reply(&iq, &StanzaError::service_unavailable()).unwrap();
        assert_eq!(reply.attr("to"), Some("a@b/c"));
        assert_eq!(reply.attr("from"), Some("b"));
        assert_eq!(reply.attr("type"), Some("error"));
        assert!(
            reply
                .get_child("error", ns::CLIENT)
                .unwrap()
                .has_child("service-unavailable", ns::STANZAS_ERR)
        );
        assert!(error_reply(&reply, &StanzaError::bad_request()).is_none());
    }
}
