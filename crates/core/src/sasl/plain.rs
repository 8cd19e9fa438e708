//! The PLAIN mechanism (RFC 4616): one message carrying the identities
//! and the password in clear, so the caller must only offer it over TLS
//! (RFC 6120 §6.4.1 leaves that to policy; `encryption-required` otherwise).
//!
//! Checking the password and the authorization identity is the caller's
//! job; this module only takes the message apart.

use std::fmt;

use super::SaslError;

/// RFC 4616 §2 asks servers to accept at least 255 octets of identity;
/// the same bound keeps a peer from making us hold arbitrary input.
const MAX_ID_LEN: usize = 255;
/// Passwords get more room: pass phrases and generated secrets run long.
const MAX_PASSWORD_LEN: usize = 1024;

/// The three fields of a PLAIN message.
#[derive(Clone, PartialEq, Eq)]
pub struct PlainCredentials {
    /// The identity to act as, when the client asked for one other than
    /// its own; an empty field is `None`.
    pub authzid: Option<String>,
    /// The identity whose password this is (the account's localpart).
    pub authcid: String,
    pub password: String,
}

// Written by hand so that logging the credentials never logs the password.
impl fmt::Debug for PlainCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlainCredentials")
            .field("authzid", &self.authzid)
            .field("authcid", &self.authcid)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Parses `[authzid] NUL authcid NUL passwd` (RFC 4616 §2). Any deviation
/// (wrong number of fields, empty authcid or password, invalid UTF-8, an
/// over-long field) is `MalformedRequest`, so a malformed message is never
/// reported as a wrong password.
pub fn parse(message: &[u8]) -> Result<PlainCredentials, SaslError> {
    let mut fields = message.split(|&b| b == 0);
    let (Some(authzid), Some(authcid), Some(password), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(SaslError::MalformedRequest(
            "PLAIN message must have exactly three NUL-separated fields",
        ));
    };

    if authcid.is_empty() {
        return Err(SaslError::MalformedRequest("empty authcid"));
    }
    if password.is_empty() {
        return Err(SaslError::MalformedRequest("empty password"));
    }
    if authzid.len() > MAX_ID_LEN || authcid.len() > MAX_ID_LEN {
        return Err(SaslError::MalformedRequest("identity too long"));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(SaslError::MalformedRequest("password too long"));
    }

    let utf8 = |field: &[u8]| {
        String::from_utf8(field.to_vec()).map_err(|_| SaslError::MalformedRequest("PLAIN field is not UTF-8"))
    };
    let authzid = if authzid.is_empty() {
        None
    } else {
        Some(utf8(authzid)?)
    };
    Ok(PlainCredentials {
        authzid,
        authcid: utf8(authcid)?,
        password: utf8(password)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn malformed(message: &[u8]) -> bool {
        matches!(parse(message), Err(SaslError::MalformedRequest(_)))
    }

    #[test]
    fn without_authzid() {
        let creds = parse(b"\0juliet\0r0m30myr0m30").unwrap();
        assert_eq!(creds.authzid, None);
        assert_eq!(creds.authcid, "juliet");
        assert_eq!(creds.password, "r0m30myr0m30");
    }

    #[test]
    fn with_authzid() {
        let creds = parse(b"juliet@example.com\0juliet\0secret").unwrap();
        assert_eq!(creds.authzid.as_deref(), Some("juliet@example.com"));
        assert_eq!(creds.authcid, "juliet");
        assert_eq!(creds.password, "secret");
    }

    #[test]
    fn utf8_fields() {
        let creds = parse("\0ноам\0пароль ✓".as_bytes()).unwrap();
        assert_eq!(creds.authcid, "ноам");
        assert_eq!(creds.password, "пароль ✓");
    }

    #[test]
    fn wrong_field_count() {
        assert!(malformed(b""));
        assert!(malformed(b"juliet"));
        assert!(malformed(b"juliet\0secret"));
        assert!(malformed(b"\0juliet\0sec\0ret"));
    }

    #[test]
    fn empty_fields() {
        assert!(malformed(b"\0juliet\0"));
        assert!(malformed(b"\0\0secret"));
        assert!(malformed(b"\0\0"));
    }

    #[test]
    fn invalid_utf8() {
        assert!(malformed(b"\0jul\xffiet\0secret"));
        assert!(malformed(b"\0juliet\0\xc3"));
        assert!(malformed(b"\xfe\0juliet\0secret"));
    }

    #[test]
    fn length_limits() {
        let id = "a".repeat(MAX_ID_LEN);
        let password = "p".repeat(MAX_PASSWORD_LEN);
        assert!(parse(format!("{id}\0{id}\0{password}").as_bytes()).is_ok());
        assert!(malformed(format!("\0{id}a\0secret").as_bytes()));
        assert!(malformed(format!("{id}a\0juliet\0secret").as_bytes()));
        assert!(malformed(format!("\0juliet\0{password}p").as_bytes()));
    }

    #[test]
    fn debug_hides_password() {
        let creds = parse(b"\0juliet\0r0m30myr0m30").unwrap();
        let debug = format!("{creds:?}");
        assert!(debug.contains("juliet"));
        assert!(!debug.contains("r0m30myr0m30"), "{debug}");
    }
}
