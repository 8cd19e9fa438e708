//! The XML stream layer (RFC 6120 §4): parsing with limits, stream headers
//! and stream errors. It knows nothing of routing or storage.

pub mod parser;

pub use parser::{Limits, StreamEvent, StreamHeader, StreamParser};

/// Namespaces used on the wire.
pub mod ns {
    pub const STREAM: &str = "http://etherx.jabber.org/streams";
    pub const CLIENT: &str = "jabber:client";
    pub const SERVER: &str = "jabber:server";
    pub const XML: &str = "http://www.w3.org/XML/1998/namespace";
    pub const STREAMS_ERR: &str = "urn:ietf:params:xml:ns:xmpp-streams";
    pub const STANZAS_ERR: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
    pub const TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
    pub const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
    pub const BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
    pub const SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
    pub const SASL_CB: &str = "urn:xmpp:sasl-cb:0";
    pub const ROSTER: &str = "jabber:iq:roster";
    pub const ROSTER_VER: &str = "urn:xmpp:features:rosterver";
    pub const PRE_APPROVAL: &str = "urn:xmpp:features:pre-approval";
    pub const REGISTER: &str = "jabber:iq:register";
    pub const REGISTER_FEATURE: &str = "http://jabber.org/features/iq-register";
    pub const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
    pub const DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
    pub const PING: &str = "urn:xmpp:ping";
    pub const VERSION: &str = "jabber:iq:version";
    pub const DELAY: &str = "urn:xmpp:delay";
    pub const DATA_FORMS: &str = "jabber:x:data";
    pub const CARBONS: &str = "urn:xmpp:carbons:2";
    pub const FORWARD: &str = "urn:xmpp:forward:0";
    pub const HINTS: &str = "urn:xmpp:hints";
    pub const MAM: &str = "urn:xmpp:mam:2";
    pub const RSM: &str = "http://jabber.org/protocol/rsm";
    pub const STANZA_ID: &str = "urn:xmpp:sid:0";
    pub const CSI: &str = "urn:xmpp:csi:0";
    pub const SM: &str = "urn:xmpp:sm:3";
}

/// A stream-level error (RFC 6120 §4.9.3). Each variant is one defined
/// condition; the string is for the log (and the optional `<text/>`), never
/// a secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StreamError {
    #[error("not-well-formed: {0}")]
    NotWellFormed(String),
    #[error("restricted-xml: {0}")]
    RestrictedXml(String),
    #[error("invalid-namespace: {0}")]
    InvalidNamespace(String),
    #[error("host-unknown: {0}")]
    HostUnknown(String),
    #[error("policy-violation: {0}")]
    PolicyViolation(String),
    #[error("connection-timeout")]
    ConnectionTimeout,
    #[error("conflict: replaced by a new session")]
    Conflict,
    #[error("system-shutdown")]
    SystemShutdown,
    #[error("not-authorized")]
    NotAuthorized,
    #[error("unsupported-stanza-type: {0}")]
    UnsupportedStanzaType(String),
    #[error("unsupported-version")]
    UnsupportedVersion,
    #[error("invalid-from")]
    InvalidFrom,
    #[error("bad-format: {0}")]
    BadFormat(String),
    #[error("resource-constraint: {0}")]
    ResourceConstraint(String),
    #[error("see-other-host: {0}")]
    SeeOtherHost(String),
    #[error("internal-server-error: {0}")]
    InternalServerError(String),
    #[error("reset")]
    Reset,
    #[error("undefined-condition: {0}")]
    UndefinedCondition(String),
}

impl StreamError {
    pub fn condition(&self) -> &'static str {
        match self {
            StreamError::NotWellFormed(_) => "not-well-formed",
            StreamError::RestrictedXml(_) => "restricted-xml",
            StreamError::InvalidNamespace(_) => "invalid-namespace",
            StreamError::HostUnknown(_) => "host-unknown",
            StreamError::PolicyViolation(_) => "policy-violation",
            StreamError::ConnectionTimeout => "connection-timeout",
            StreamError::Conflict => "conflict",
            StreamError::SystemShutdown => "system-shutdown",
            StreamError::NotAuthorized => "not-authorized",
            StreamError::UnsupportedStanzaType(_) => "unsupported-stanza-type",
            StreamError::UnsupportedVersion => "unsupported-version",
            StreamError::InvalidFrom => "invalid-from",
            StreamError::BadFormat(_) => "bad-format",
            StreamError::ResourceConstraint(_) => "resource-constraint",
            StreamError::SeeOtherHost(_) => "see-other-host",
            StreamError::InternalServerError(_) => "internal-server-error",
            StreamError::Reset => "reset",
            StreamError::UndefinedCondition(_) => "undefined-condition",
        }
    }

    /// The `<stream:error>` element, ready to write. Only conditions whose
    /// text helps the user (limits) carry one.
    pub fn to_xml(&self) -> String {
        let body = match self {
            StreamError::SeeOtherHost(host) => {
                format!(
                    "<see-other-host xmlns='{}'>{}</see-other-host>",
                    ns::STREAMS_ERR,
                    escape(host)
                )
            }
            _ => format!("<{} xmlns='{}'/>", self.condition(), ns::STREAMS_ERR),
        };
        let text = match self {
            StreamError::PolicyViolation(t)
            | StreamError::ResourceConstraint(t)
            | StreamError::UndefinedCondition(t) => {
                format!("<text xmlns='{}'>{}</text>", ns::STREAMS_ERR, escape(t))
            }
            StreamError::Conflict => format!(
                "<text xmlns='{}'>Replaced by new connection</text>",
                ns::STREAMS_ERR
            ),
            _ => String::new(),
        };
        format!("<stream:error>{body}{text}</stream:error>")
    }
}

/// Escapes text or an attribute value for XML.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// The opening `<stream:stream>` a server sends in reply (RFC 6120 §4.7).
pub fn response_header(default_ns: &str, from: &str, to: Option<&str>, id: &str) -> String {
    let to = to.map(|t| format!(" to='{}'", escape(t))).unwrap_or_default();
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='{default_ns}' xmlns:stream='{}' \
         from='{}'{to} id='{id}' version='1.0' xml:lang='en'>",
        ns::STREAM,
        escape(from)
    )
}

/// Serialises a stanza for the wire.
pub fn serialize(el: &minidom::Element) -> String {
    let mut buf = Vec::with_capacity(256);
    // Writing into a Vec cannot fail; an element built by the parser or by
    // our own code only holds valid names.
    if el.write_to(&mut buf).is_err() {
        return String::new();
    }
    String::from_utf8(buf).unwrap_or_default()
}
