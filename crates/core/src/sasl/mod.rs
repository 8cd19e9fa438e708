//! Server side of SASL (RFC 4422) as XMPP uses it on client-to-server
//! streams (RFC 6120 §6).
//!
//! This module only does the mechanism arithmetic: decoding the payloads of
//! `<auth/>` and `<response/>`, running PLAIN (RFC 4616) and the SCRAM
//! family (RFC 5802, RFC 7677, with RFC 9266 channel binding), and naming
//! the `<failure/>` condition. Stream handling, account look-up and the
//! check of the authorization identity against the stream's JID belong to
//! the caller.

pub mod oauthbearer;
pub mod plain;
pub mod scram;

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::storage::ScramHash;

/// Channel-binding type of RFC 9266 (TLS 1.3 exporter).
pub const TLS_EXPORTER: &str = "tls-exporter";
/// Channel-binding type of RFC 5929 §4 (hash of the server certificate).
pub const TLS_SERVER_END_POINT: &str = "tls-server-end-point";

/// A SASL mechanism the server implements, by its IANA-registered name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    Plain,
    ScramSha1,
    ScramSha1Plus,
    ScramSha256,
    ScramSha256Plus,
    /// RFC 7628: an OAuth 2.0 access token (offered by `http_oauth2`).
    OAuthBearer,
}

impl Mechanism {
    /// Every mechanism, strongest first: the order to advertise them in.
    pub const ALL: [Mechanism; 6] = [
        Mechanism::ScramSha256Plus,
        Mechanism::ScramSha1Plus,
        Mechanism::ScramSha256,
        Mechanism::ScramSha1,
        Mechanism::OAuthBearer,
        Mechanism::Plain,
    ];

    /// The name used in `<mechanism/>` and in `<auth mechanism='…'/>`.
    pub fn name(&self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha1 => "SCRAM-SHA-1",
            Mechanism::ScramSha1Plus => "SCRAM-SHA-1-PLUS",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha256Plus => "SCRAM-SHA-256-PLUS",
            Mechanism::OAuthBearer => "OAUTHBEARER",
        }
    }

    /// The mechanism named `name`, matched exactly: registered SASL names
    /// are upper case (RFC 4422 §3.1) and a client must send them as
    /// advertised.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The hash of a SCRAM mechanism; `None` for the others.
    pub fn hash(&self) -> Option<ScramHash> {
        match self {
            Mechanism::Plain | Mechanism::OAuthBearer => None,
            Mechanism::ScramSha1 | Mechanism::ScramSha1Plus => Some(ScramHash::Sha1),
            Mechanism::ScramSha256 | Mechanism::ScramSha256Plus => Some(ScramHash::Sha256),
        }
    }

    /// True for the `-PLUS` variants, which require channel binding.
    pub fn is_plus(&self) -> bool {
        matches!(self, Mechanism::ScramSha1Plus | Mechanism::ScramSha256Plus)
    }

    /// True for the SCRAM family, run by [`scram::ScramServer`].
    pub fn is_scram(&self) -> bool {
        self.hash().is_some()
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why an exchange failed, one variant per `<failure/>` condition of
/// RFC 6120 §6.5. The `Display` text is for logs; the peer only sees
/// [`SaslError::condition`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    /// The payload is not base64 or does not follow the mechanism's syntax;
    /// the string says what was wrong, for the log.
    #[error("malformed request: {0}")]
    MalformedRequest(&'static str),
    /// Wrong credentials, or a check (nonce, channel binding) failed.
    #[error("not authorized")]
    NotAuthorized,
    /// The authorization identity is not one the user may act as.
    #[error("invalid authorization identity")]
    InvalidAuthzid,
    /// The mechanism may only be used over TLS.
    #[error("encryption required")]
    EncryptionRequired,
    /// The client named a mechanism that was not offered.
    #[error("invalid mechanism")]
    InvalidMechanism,
    /// The client sent `<abort/>`.
    #[error("aborted by the client")]
    Aborted,
    /// The server could not check the credentials right now (backend down).
    #[error("temporary authentication failure")]
    TemporaryAuthFailure,
    #[error("account disabled")]
    AccountDisabled,
    #[error("credentials expired")]
    CredentialsExpired,
    /// Policy forbids this mechanism for this account or stream.
    #[error("mechanism too weak")]
    MechanismTooWeak,
}

impl SaslError {
    /// The name of the child element of `<failure/>` (RFC 6120 §6.5).
    pub fn condition(&self) -> &'static str {
        match self {
            SaslError::MalformedRequest(_) => "malformed-request",
            SaslError::NotAuthorized => "not-authorized",
            SaslError::InvalidAuthzid => "invalid-authzid",
            SaslError::EncryptionRequired => "encryption-required",
            SaslError::InvalidMechanism => "invalid-mechanism",
            SaslError::Aborted => "aborted",
            SaslError::TemporaryAuthFailure => "temporary-auth-failure",
            SaslError::AccountDisabled => "account-disabled",
            SaslError::CredentialsExpired => "credentials-expired",
            SaslError::MechanismTooWeak => "mechanism-too-weak",
        }
    }
}

/// Channel-binding data of the current TLS connection, filled in by the
/// TLS layer; a field is `None` when that type is not available (no TLS,
/// or tls-exporter on a TLS 1.2 session without extended master secret,
/// which RFC 9266 §3 forbids).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ChannelBindings {
    /// RFC 9266: 32 bytes exported with label "EXPORTER-Channel-Binding"
    /// and no context.
    pub tls_exporter: Option<Vec<u8>>,
    /// RFC 5929 §4: hash of the server's certificate (SHA-256 unless its
    /// signature uses a stronger hash).
    pub tls_server_end_point: Option<Vec<u8>>,
}

impl ChannelBindings {
    /// Names of the available types, preferred first, for XEP-0440's
    /// `<sasl-channel-binding/>` and for deciding whether to offer `-PLUS`.
    pub fn types(&self) -> Vec<&'static str> {
        let mut types = Vec::new();
        if self.tls_exporter.is_some() {
            types.push(TLS_EXPORTER);
        }
        if self.tls_server_end_point.is_some() {
            types.push(TLS_SERVER_END_POINT);
        }
        types
    }

    /// The data for the type named `cb_name`, if available.
    pub fn get(&self, cb_name: &str) -> Option<&[u8]> {
        match cb_name {
            TLS_EXPORTER => self.tls_exporter.as_deref(),
            TLS_SERVER_END_POINT => self.tls_server_end_point.as_deref(),
            _ => None,
        }
    }

    /// True when no type is available, so `-PLUS` must not be offered.
    pub fn is_empty(&self) -> bool {
        self.tls_exporter.is_none() && self.tls_server_end_point.is_none()
    }
}

// The exporter output is keying material of the session: show only which
// types are present.
impl fmt::Debug for ChannelBindings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelBindings")
            .field("types", &self.types())
            .finish()
    }
}

/// Decodes the character data of `<auth/>` or `<response/>`
/// (RFC 6120 §6.4.2): no data or a lone `=` is an empty response, and
/// whitespace a client or an XML pretty-printer put in is ignored.
pub fn decode_base64(payload: &str) -> Result<Vec<u8>, SaslError> {
    let compact: String = payload.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if compact.is_empty() || compact == "=" {
        return Ok(Vec::new());
    }
    STANDARD
        .decode(compact)
        .map_err(|_| SaslError::MalformedRequest("invalid base64"))
}

/// Encodes the data of `<challenge/>` or `<success/>`: an empty challenge
/// is sent as `=` (RFC 6120 §6.4.3), and `<success/>` with no additional
/// data should be sent empty by the caller, not through this function.
pub fn encode_base64(data: &[u8]) -> String {
    if data.is_empty() {
        "=".to_owned()
    } else {
        STANDARD.encode(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mechanism_names_round_trip() {
        for m in Mechanism::ALL {
            assert_eq!(Mechanism::from_name(m.name()), Some(m));
        }
        assert_eq!(Mechanism::from_name("scram-sha-1"), None);
        assert_eq!(Mechanism::from_name("DIGEST-MD5"), None);
        assert_eq!(Mechanism::ScramSha256Plus.name(), "SCRAM-SHA-256-PLUS");
    }

    #[test]
    fn mechanism_properties() {
        assert_eq!(Mechanism::Plain.hash(), None);
        assert!(!Mechanism::Plain.is_scram());
        assert_eq!(Mechanism::ScramSha1Plus.hash(), Some(ScramHash::Sha1));
        assert_eq!(Mechanism::ScramSha256.hash(), Some(ScramHash::Sha256));
        assert!(Mechanism::ScramSha1Plus.is_plus());
        assert!(!Mechanism::ScramSha256.is_plus());
    }

    #[test]
    fn error_conditions() {
        assert_eq!(SaslError::MalformedRequest("x").condition(), "malformed-request");
        assert_eq!(SaslError::NotAuthorized.condition(), "not-authorized");
        assert_eq!(SaslError::InvalidAuthzid.condition(), "invalid-authzid");
        assert_eq!(
            SaslError::TemporaryAuthFailure.condition(),
            "temporary-auth-failure"
        );
        assert_eq!(SaslError::MechanismTooWeak.condition(), "mechanism-too-weak");
    }

    #[test]
    fn channel_binding_types() {
        assert!(ChannelBindings::default().types().is_empty());
        assert!(ChannelBindings::default().is_empty());
        let cb = ChannelBindings {
            tls_exporter: Some(vec![1; 32]),
            tls_server_end_point: Some(vec![2; 32]),
        };
        assert_eq!(cb.types(), vec![TLS_EXPORTER, TLS_SERVER_END_POINT]);
        assert_eq!(cb.get(TLS_SERVER_END_POINT), Some(&[2u8; 32][..]));
        assert_eq!(cb.get("tls-unique"), None);
        let debug = format!("{cb:?}");
        assert!(!debug.contains("1, 1"), "{debug}");
    }

    #[test]
    fn base64_payloads() {
        assert_eq!(decode_base64("").unwrap(), b"");
        assert_eq!(decode_base64("=").unwrap(), b"");
        assert_eq!(decode_base64(" = ").unwrap(), b"");
        assert_eq!(decode_base64("AHVzZXIAcGVuY2ls").unwrap(), b"\0user\0pencil");
        assert_eq!(
            decode_base64("AHVz\n  ZXIA\tcGVu Y2ls").unwrap(),
            b"\0user\0pencil"
        );
        assert!(matches!(
            decode_base64("not base64!"),
            Err(SaslError::MalformedRequest(_))
        ));
        assert!(matches!(
            decode_base64("AHVzZXIAcGVuY2l"),
            Err(SaslError::MalformedRequest(_))
        ));
        assert_eq!(encode_base64(b""), "=");
        assert_eq!(encode_base64(b"n,,"), "biws");
    }
}
