//! The OAUTHBEARER mechanism (RFC 7628): the client sends an OAuth access
//! token in one message; on failure the server answers with a JSON error
//! challenge, the client acknowledges it with a lone `%x01`, and only then
//! does `<failure/>` follow (§3.2.2).
//!
//! Checking the token is the caller's job (a `TokenVerifier`); this module
//! takes the message apart and builds the error challenge.

use std::fmt;

use super::SaslError;

/// The separator of RFC 7628 §3.1 (`kvsep`).
const KVSEP: u8 = 0x01;
/// A token longer than this is not one we issued.
const MAX_MESSAGE_LEN: usize = 8192;

/// The parts of a client's initial response.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerCredentials {
    /// The `a=` field of the GS2 header, unescaped; `None` when empty.
    pub authzid: Option<String>,
    pub token: String,
}

// Written by hand so that logging the credentials never logs the token.
impl fmt::Debug for BearerCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerCredentials")
            .field("authzid", &self.authzid)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// Parses `gs2-header %x01 *(key=value %x01) %x01` (RFC 7628 §3.1).
/// Channel binding is not offered with this mechanism, so the GS2 flag
/// must be `n` or `y`.
pub fn parse(message: &[u8]) -> Result<BearerCredentials, SaslError> {
    if message.len() > MAX_MESSAGE_LEN {
        return Err(SaslError::MalformedRequest("message too long"));
    }
    let text = std::str::from_utf8(message).map_err(|_| SaslError::MalformedRequest("not UTF-8"))?;
    let (gs2, rest) = text
        .split_once(KVSEP as char)
        .ok_or(SaslError::MalformedRequest("no key/value part"))?;
    let mut header = gs2.splitn(3, ',');
    match header.next() {
        Some("n") | Some("y") => {}
        Some(flag) if flag.starts_with("p=") => {
            return Err(SaslError::MalformedRequest("channel binding is not supported"));
        }
        _ => return Err(SaslError::MalformedRequest("bad GS2 header")),
    }
    let authzid = match header.next() {
        Some("") => None,
        Some(a) => Some(unescape_saslname(
            a.strip_prefix("a=")
                .ok_or(SaslError::MalformedRequest("bad authzid"))?,
        )?),
        None => return Err(SaslError::MalformedRequest("bad GS2 header")),
    };
    if header.next() != Some("") {
        return Err(SaslError::MalformedRequest("bad GS2 header"));
    }
    // Each pair ends with a separator and the list with one more: the
    // message ends in two.
    let pairs = rest
        .strip_suffix("\x01\x01")
        .ok_or(SaslError::MalformedRequest("unterminated key/value part"))?;
    let mut token = None;
    for pair in pairs.split(KVSEP as char).filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or(SaslError::MalformedRequest("bad key/value pair"))?;
        if key == "auth" {
            let (scheme, credentials) = value
                .split_once(' ')
                .ok_or(SaslError::MalformedRequest("bad auth value"))?;
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err(SaslError::MalformedRequest("auth scheme is not Bearer"));
            }
            token = Some(credentials.trim().to_string());
        }
    }
    match token {
        Some(token) if !token.is_empty() => Ok(BearerCredentials { authzid, token }),
        _ => Err(SaslError::MalformedRequest("no bearer token")),
    }
}

/// `=2C` and `=3D` back to `,` and `=` (RFC 5801 §4).
fn unescape_saslname(s: &str) -> Result<String, SaslError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(SaslError::MalformedRequest("bad escape in authzid")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The JSON of the server's error challenge (RFC 7628 §3.2.2).
pub fn error_challenge(status: &str, scope: &str, openid_configuration: Option<&str>) -> Vec<u8> {
    let mut json = format!(
        "{{\"status\":\"{}\",\"scope\":\"{}\"",
        escape_json(status),
        escape_json(scope)
    );
    if let Some(url) = openid_configuration {
        json.push_str(&format!(",\"openid-configuration\":\"{}\"", escape_json(url)));
    }
    json.push('}');
    json.into_bytes()
}

fn escape_json(s: &str) -> String {
    s.chars()
        .flat_map(|c| match c {
            '"' => vec!['\\', '"'],
            '\\' => vec!['\\', '\\'],
            c if (c as u32) < 0x20 => format!("\\u{:04x}", c as u32).chars().collect(),
            c => vec![c],
        })
        .collect()
}

/// True when the client's reply to the error challenge is the lone
/// `%x01` the RFC asks for.
pub fn is_error_acknowledgement(response: &[u8]) -> bool {
    response == [KVSEP]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_rfc_example() {
        // RFC 7628 §4.1, with the authzid of an XMPP client.
        let m = b"n,a=user@example.com,\x01host=server.example.com\x01port=143\x01auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01";
        let c = parse(m).unwrap();
        assert_eq!(c.authzid.as_deref(), Some("user@example.com"));
        assert_eq!(c.token, "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==");
        assert!(!format!("{c:?}").contains("vF9d"));
    }

    #[test]
    fn authzid_is_optional_and_unescaped() {
        let c = parse(b"n,,\x01auth=bearer abc\x01\x01").unwrap();
        assert_eq!(c.authzid, None);
        assert_eq!(c.token, "abc");
        let c = parse(b"y,a=we=2Cird=3Dname@x,\x01auth=Bearer t\x01\x01").unwrap();
        assert_eq!(c.authzid.as_deref(), Some("we,ird=name@x"));
    }

    #[test]
    fn refuses_malformed_messages() {
        for bad in [
            &b""[..],
            b"\x01",
            b"n,,",
            b"n,,\x01auth=Bearer t\x01",
            b"p=tls-exporter,,\x01auth=Bearer t\x01\x01",
            b"x,,\x01auth=Bearer t\x01\x01",
            b"n,a=u=XYz,\x01auth=Bearer t\x01\x01",
            b"n,,\x01auth=Basic dXNlcg==\x01\x01",
            b"n,,\x01auth=Bearer \x01\x01",
            b"n,,\x01host=x\x01\x01",
            b"n,,\x01\xff\x01\x01",
        ] {
            assert!(
                matches!(parse(bad), Err(SaslError::MalformedRequest(_))),
                "{bad:?}"
            );
        }
        assert!(parse(&vec![b'a'; MAX_MESSAGE_LEN + 1]).is_err());
    }

    #[test]
    fn error_challenge_is_json() {
        let j = error_challenge(
            "invalid_token",
            "xmpp",
            Some("https://x/.well-known/openid-configuration"),
        );
        assert_eq!(
            std::str::from_utf8(&j).unwrap(),
            r#"{"status":"invalid_token","scope":"xmpp","openid-configuration":"https://x/.well-known/openid-configuration"}"#
        );
        assert_eq!(
            error_challenge("a\"b", "s", None),
            br#"{"status":"a\"b","scope":"s"}"#.to_vec()
        );
        assert!(is_error_acknowledgement(b"\x01"));
        assert!(!is_error_acknowledgement(b""));
    }
}
