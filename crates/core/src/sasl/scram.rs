//! The SCRAM family (RFC 5802; SHA-256 per RFC 7677; `tls-exporter`
//! channel binding per RFC 9266): key derivation for the account store and
//! the server side of one exchange.
//!
//! An exchange is `client-first` → `server-first` → `client-final` →
//! `server-final`; [`ScramServer`] checks each step and keeps what the
//! proof is computed over. The server only ever holds StoredKey and
//! ServerKey, never the password.

use std::fmt;
use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use sha1::Sha1;
use sha2::{Digest as _, Sha256};
use subtle::{Choice, ConstantTimeEq as _};

use super::{ChannelBindings, Mechanism, SaslError, TLS_EXPORTER, TLS_SERVER_END_POINT};
use crate::storage::{ScramCredentials, ScramHash};

/// Length of the random salt of new credentials (RFC 5802 leaves it open;
/// 16 bytes is what common servers use).
const SALT_LEN: usize = 16;
/// Random bytes in the server's nonce part, before base64.
const SERVER_NONCE_LEN: usize = 24;
/// Iteration count advertised for accounts that do not exist; it matches
/// the default of `auth::internal` so probes see the usual value.
const FAKE_ITERATIONS: u32 = 4096;

// --- primitives -----------------------------------------------------------

fn mac<M: Mac + hmac::digest::KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = <M as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

fn hmac(hash: ScramHash, key: &[u8], data: &[u8]) -> Vec<u8> {
    match hash {
        ScramHash::Sha1 => mac::<Hmac<Sha1>>(key, data),
        ScramHash::Sha256 => mac::<Hmac<Sha256>>(key, data),
    }
}

fn digest(hash: ScramHash, data: &[u8]) -> Vec<u8> {
    match hash {
        ScramHash::Sha1 => Sha1::digest(data).to_vec(),
        ScramHash::Sha256 => Sha256::digest(data).to_vec(),
    }
}

fn output_len(hash: ScramHash) -> usize {
    match hash {
        ScramHash::Sha1 => 20,
        ScramHash::Sha256 => 32,
    }
}

/// SaltedPassword := Hi(password, salt, i), Hi being PBKDF2 with HMAC-H
/// and one block of output (RFC 5802 §2.2).
fn salted_password(hash: ScramHash, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
    let mut out = vec![0; output_len(hash)];
    match hash {
        ScramHash::Sha1 => pbkdf2::pbkdf2_hmac::<Sha1>(password, salt, iterations, &mut out),
        ScramHash::Sha256 => pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out),
    }
    out
}

/// ClientKey := HMAC(SaltedPassword, "Client Key") (RFC 5802 §3).
fn client_key(hash: ScramHash, salted: &[u8]) -> Vec<u8> {
    hmac(hash, salted, b"Client Key")
}

// --- credentials ----------------------------------------------------------

/// Derives the keys to store for `password`, with a fresh random salt.
///
/// # Panics
/// If `iterations` is 0: RFC 5802 requires a positive count, and a zero
/// here is a configuration error, not input from a peer.
pub fn derive_credentials(password: &[u8], hash: ScramHash, iterations: u32) -> ScramCredentials {
    let mut salt = [0u8; SALT_LEN];
    rand::thread_rng().fill_bytes(&mut salt);
    derive_credentials_with_salt(password, hash, iterations, &salt)
}

/// As [`derive_credentials`] with a given salt, for test vectors and for
/// importing accounts whose salt is known.
///
/// # Panics
/// If `iterations` is 0, as [`derive_credentials`].
pub fn derive_credentials_with_salt(
    password: &[u8],
    hash: ScramHash,
    iterations: u32,
    salt: &[u8],
) -> ScramCredentials {
    assert!(iterations > 0, "SCRAM iteration count must be positive");
    let salted = salted_password(hash, password, salt, iterations);
    ScramCredentials {
        hash,
        salt: salt.to_vec(),
        iterations,
        stored_key: digest(hash, &client_key(hash, &salted)),
        server_key: hmac(hash, &salted, b"Server Key"),
    }
}

/// True if `password` produces the stored credentials, for PLAIN and for
/// password changes. The comparison is constant-time; credentials with a
/// zero iteration count (a corrupt store) never match.
pub fn verify_password(creds: &ScramCredentials, password: &[u8]) -> bool {
    if creds.iterations == 0 {
        return false;
    }
    let salted = salted_password(creds.hash, password, &creds.salt, creds.iterations);
    let stored_key = digest(creds.hash, &client_key(creds.hash, &salted));
    stored_key.ct_eq(&creds.stored_key).into()
}

// --- message syntax (RFC 5802 §7) -----------------------------------------

/// Decodes a `saslname`: `=2C` and `=3D` stand for `,` and `=`, and any
/// other `=` is an error (RFC 5802 §5.1). Commas cannot occur here since
/// the caller split the message on them.
fn decode_saslname(raw: &str) -> Result<String, SaslError> {
    if raw.is_empty() {
        return Err(SaslError::MalformedRequest("empty saslname"));
    }
    if raw.contains('\0') {
        return Err(SaslError::MalformedRequest("NUL in saslname"));
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(pos) = rest.find('=') {
        out.push_str(&rest[..pos]);
        let escape = rest.get(pos..pos + 3);
        out.push(match escape {
            Some("=2C") => ',',
            Some("=3D") => '=',
            _ => return Err(SaslError::MalformedRequest("bad escape in saslname")),
        });
        rest = &rest[pos + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `printable` of RFC 5802 §7: visible ASCII except `,`.
fn is_printable_nonce(nonce: &str) -> bool {
    !nonce.is_empty() && nonce.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// Checks an optional extension `attr-val` (`ALPHA "=" 1*value-char`);
/// its content is ignored, as RFC 5802 §5.1 requires for unknown ones.
fn check_extension(field: &str) -> Result<(), SaslError> {
    let b = field.as_bytes();
    if b.len() >= 3 && b[0].is_ascii_alphabetic() && b[1] == b'=' && !field.contains('\0') {
        Ok(())
    } else {
        Err(SaslError::MalformedRequest("bad attribute"))
    }
}

/// The value of `attr=value` if `field` starts with `attr=`.
fn attribute(field: &str, attr: char) -> Option<&str> {
    let mut chars = field.chars();
    (chars.next() == Some(attr) && chars.next() == Some('=')).then(|| &field[2..])
}

fn text(msg: &[u8]) -> Result<&str, SaslError> {
    std::str::from_utf8(msg).map_err(|_| SaslError::MalformedRequest("SCRAM message is not UTF-8"))
}

// --- the exchange ---------------------------------------------------------

/// What the client asked for in its first message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst {
    /// The authentication identity (`n=`), unescaped; not yet normalized,
    /// so the caller applies its username preparation before the look-up.
    pub username: String,
    /// The authorization identity (`a=`), if the client sent one; the
    /// caller decides whether `username` may act as it.
    pub authzid: Option<String>,
}

/// Keys the final step checks against.
struct Keys {
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

enum State {
    AwaitingClientFirst,
    /// `client_first` succeeded; the caller now looks the user up.
    ReceivedClientFirst {
        /// gs2-header followed by the channel-binding data, which `c=`
        /// must carry back (RFC 5802 §7, `cbind-input`).
        cbind_input: Vec<u8>,
        client_first_bare: String,
        client_nonce: String,
    },
    AwaitingClientFinal {
        cbind_input: Vec<u8>,
        client_first_bare: String,
        server_first: String,
        nonce: String,
        keys: Keys,
        /// False when the user does not exist: the exchange runs on
        /// decoy keys and must fail at the end whatever the proof.
        user_known: bool,
    },
    /// Succeeded or failed; nothing more may happen.
    Finished,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::AwaitingClientFirst => "awaiting-client-first",
            State::ReceivedClientFirst { .. } => "received-client-first",
            State::AwaitingClientFinal { .. } => "awaiting-client-final",
            State::Finished => "finished",
        }
    }
}

/// Server side of one SCRAM exchange.
///
/// The caller feeds the decoded `<auth/>` payload to
/// [`client_first`](Self::client_first), looks up the user's credentials
/// for [`Mechanism::hash`], answers with [`server_first`](Self::server_first)
/// (or [`server_first_unknown_user`](Self::server_first_unknown_user)), and
/// feeds the `<response/>` payload to [`client_final`](Self::client_final),
/// whose result goes in `<success/>`. Any error ends the exchange.
pub struct ScramServer {
    mechanism: Mechanism,
    hash: ScramHash,
    bindings: ChannelBindings,
    plus_offered: bool,
    state: State,
    username: Option<String>,
    authzid: Option<String>,
    cb_type: Option<&'static str>,
    #[cfg(test)]
    fixed_server_nonce: Option<String>,
}

// By hand: the derived form would print the keys.
impl fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramServer")
            .field("mechanism", &self.mechanism)
            .field("state", &self.state.name())
            .field("username", &self.username)
            .field("authzid", &self.authzid)
            .field("channel_binding", &self.cb_type)
            .finish_non_exhaustive()
    }
}

impl ScramServer {
    /// Starts an exchange. `bindings` is what the TLS layer offers, and
    /// `plus_offered` tells whether `-PLUS` variants were advertised on
    /// this stream, which makes a client's `y` flag a sign of a downgrade.
    ///
    /// # Panics
    /// If `mechanism` is not a SCRAM mechanism: the caller dispatches PLAIN
    /// elsewhere.
    pub fn new(mechanism: Mechanism, bindings: ChannelBindings, plus_offered: bool) -> Self {
        let hash = mechanism
            .hash()
            .expect("ScramServer::new needs a SCRAM mechanism");
        ScramServer {
            mechanism,
            hash,
            bindings,
            plus_offered,
            state: State::AwaitingClientFirst,
            username: None,
            authzid: None,
            cb_type: None,
            #[cfg(test)]
            fixed_server_nonce: None,
        }
    }

    /// Fixes the server's nonce part so tests can replay published vectors.
    #[cfg(test)]
    pub(crate) fn with_server_nonce(mut self, nonce: &str) -> Self {
        self.fixed_server_nonce = Some(nonce.to_owned());
        self
    }

    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// The authentication identity from the client's first message.
    pub fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }

    /// The authorization identity from the client's first message.
    pub fn authzid(&self) -> Option<&str> {
        self.authzid.as_deref()
    }

    /// The channel-binding type the client used, if any.
    pub fn channel_binding(&self) -> Option<&'static str> {
        self.cb_type
    }

    /// Parses `client-first-message` (RFC 5802 §7) and applies the
    /// channel-binding rules of §6.
    pub fn client_first(&mut self, msg: &[u8]) -> Result<ClientFirst, SaslError> {
        if !matches!(self.state, State::AwaitingClientFirst) {
            self.state = State::Finished;
            return Err(SaslError::MalformedRequest("unexpected client-first-message"));
        }
        // Whatever happens next, a failure ends the exchange.
        self.state = State::Finished;
        let msg = text(msg)?;

        // gs2-header = gs2-cbind-flag "," [authzid] ","
        let (cbind_flag, rest) = msg
            .split_once(',')
            .ok_or(SaslError::MalformedRequest("missing gs2 header"))?;
        let (authzid_field, bare) = rest
            .split_once(',')
            .ok_or(SaslError::MalformedRequest("missing gs2 header"))?;
        let gs2_header = &msg[..cbind_flag.len() + authzid_field.len() + 2];

        let (cb_type, cb_data) = self.check_cbind_flag(cbind_flag)?;

        let authzid = if authzid_field.is_empty() {
            None
        } else {
            let raw = attribute(authzid_field, 'a')
                .ok_or(SaslError::MalformedRequest("bad authzid in gs2 header"))?;
            Some(decode_saslname(raw)?)
        };

        // client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions]
        let mut fields = bare.split(',');
        let first = fields.next().unwrap_or_default();
        if attribute(first, 'm').is_some() {
            // A mandatory extension we do not know: RFC 5802 §5.1 says fail.
            return Err(SaslError::MalformedRequest("unsupported mandatory extension"));
        }
        let username = attribute(first, 'n')
            .ok_or(SaslError::MalformedRequest("missing username"))
            .and_then(decode_saslname)?;
        let client_nonce = fields
            .next()
            .and_then(|f| attribute(f, 'r'))
            .ok_or(SaslError::MalformedRequest("missing nonce"))?;
        if !is_printable_nonce(client_nonce) {
            return Err(SaslError::MalformedRequest("bad nonce"));
        }
        fields.try_for_each(check_extension)?;

        let mut cbind_input = gs2_header.as_bytes().to_vec();
        cbind_input.extend_from_slice(&cb_data);

        self.username = Some(username.clone());
        self.authzid = authzid.clone();
        self.cb_type = cb_type;
        self.state = State::ReceivedClientFirst {
            cbind_input,
            client_first_bare: bare.to_owned(),
            client_nonce: client_nonce.to_owned(),
        };
        Ok(ClientFirst { username, authzid })
    }

    /// Applies RFC 5802 §6 to the gs2-cbind-flag and returns the binding
    /// type and the data that `c=` must then contain (empty without binding).
    fn check_cbind_flag(&self, flag: &str) -> Result<(Option<&'static str>, Vec<u8>), SaslError> {
        if let Some(cb_name) = attribute(flag, 'p') {
            if !self.mechanism.is_plus() {
                return Err(SaslError::MalformedRequest(
                    "channel binding requested with a non-PLUS mechanism",
                ));
            }
            // Matched against the constants so the stored name is 'static.
            let unsupported = SaslError::MalformedRequest("unsupported channel-binding type");
            let name = match cb_name {
                TLS_EXPORTER => TLS_EXPORTER,
                TLS_SERVER_END_POINT => TLS_SERVER_END_POINT,
                _ => return Err(unsupported),
            };
            let data = self.bindings.get(name).ok_or(unsupported)?.to_vec();
            return Ok((Some(name), data));
        }
        match flag {
            // A -PLUS mechanism without binding gives none of its guarantee.
            "n" | "y" if self.mechanism.is_plus() => Err(SaslError::NotAuthorized),
            // "y": the client could bind but believes we cannot; if we
            // offered -PLUS, someone stripped it from the list.
            "y" if self.plus_offered => Err(SaslError::NotAuthorized),
            "n" | "y" => Ok((None, Vec::new())),
            _ => Err(SaslError::MalformedRequest("bad gs2-cbind-flag")),
        }
    }

    /// Builds `server-first-message` from the user's credentials.
    ///
    /// # Panics
    /// If not called right after a successful
    /// [`client_first`](Self::client_first): the order of steps on the
    /// server side is the caller's to keep.
    pub fn server_first(&mut self, creds: &ScramCredentials) -> Vec<u8> {
        // Keys of the wrong hash cannot verify anything; in release builds
        // such an exchange fails like an unknown user.
        debug_assert_eq!(creds.hash, self.hash, "credentials for the wrong hash");
        let keys = Keys {
            stored_key: creds.stored_key.clone(),
            server_key: creds.server_key.clone(),
        };
        let user_known = creds.hash == self.hash;
        self.respond(&creds.salt, creds.iterations, keys, user_known)
    }

    /// Builds a `server-first-message` for a user that does not exist, in
    /// the same shape as for one that does: the salt is derived from the
    /// username with a per-process key, so repeated probes see a stable
    /// salt, and the iteration count is the usual one. The exchange then
    /// fails with `NotAuthorized` in [`client_final`](Self::client_final),
    /// as a wrong password would.
    ///
    /// # Panics
    /// As [`server_first`](Self::server_first).
    pub fn server_first_unknown_user(&mut self) -> Vec<u8> {
        let username = self.username.clone().unwrap_or_default();
        let salt = fake_salt(self.hash, &username);
        // Random decoy keys of the right length, so the final step does the
        // same work as for a real user.
        let mut decoy = vec![0u8; 2 * output_len(self.hash)];
        rand::thread_rng().fill_bytes(&mut decoy);
        let server_key = decoy.split_off(output_len(self.hash));
        let keys = Keys {
            stored_key: decoy,
            server_key,
        };
        self.respond(&salt, FAKE_ITERATIONS, keys, false)
    }

    fn respond(&mut self, salt: &[u8], iterations: u32, keys: Keys, user_known: bool) -> Vec<u8> {
        let State::ReceivedClientFirst {
            cbind_input,
            client_first_bare,
            client_nonce,
        } = std::mem::replace(&mut self.state, State::Finished)
        else {
            panic!("ScramServer::server_first called out of order");
        };
        let nonce = format!("{client_nonce}{}", self.server_nonce());
        let server_first = format!("r={nonce},s={},i={iterations}", STANDARD.encode(salt));
        self.state = State::AwaitingClientFinal {
            cbind_input,
            client_first_bare,
            server_first: server_first.clone(),
            nonce,
            keys,
            user_known,
        };
        server_first.into_bytes()
    }

    fn server_nonce(&self) -> String {
        #[cfg(test)]
        if let Some(nonce) = &self.fixed_server_nonce {
            return nonce.clone();
        }
        let mut bytes = [0u8; SERVER_NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut bytes);
        // The base64 alphabet is printable and has no ',', as a nonce must.
        STANDARD.encode(bytes)
    }

    /// Checks `client-final-message` and, on success, returns
    /// `server-final-message` (`v=ServerSignature`) for `<success/>`.
    ///
    /// Syntax errors are `MalformedRequest`; a channel-binding, nonce or
    /// proof mismatch, or an unknown user, is `NotAuthorized`.
    pub fn client_final(&mut self, msg: &[u8]) -> Result<Vec<u8>, SaslError> {
        let State::AwaitingClientFinal {
            cbind_input,
            client_first_bare,
            server_first,
            nonce,
            keys,
            user_known,
        } = std::mem::replace(&mut self.state, State::Finished)
        else {
            return Err(SaslError::MalformedRequest("unexpected client-final-message"));
        };
        let msg = text(msg)?;

        // The proof comes last and its base64 has no ',', so the message
        // without it is everything before the last ",p=".
        let split = msg
            .rfind(",p=")
            .ok_or(SaslError::MalformedRequest("missing proof"))?;
        let without_proof = &msg[..split];
        let proof = STANDARD
            .decode(&msg[split + 3..])
            .map_err(|_| SaslError::MalformedRequest("proof is not base64"))?;

        let mut fields = without_proof.split(',');
        let cbind = fields
            .next()
            .and_then(|f| attribute(f, 'c'))
            .ok_or(SaslError::MalformedRequest("missing channel binding"))?;
        let cbind = STANDARD
            .decode(cbind)
            .map_err(|_| SaslError::MalformedRequest("channel binding is not base64"))?;
        let client_nonce = fields
            .next()
            .and_then(|f| attribute(f, 'r'))
            .ok_or(SaslError::MalformedRequest("missing nonce"))?;
        fields.try_for_each(check_extension)?;
        if proof.len() != output_len(self.hash) {
            return Err(SaslError::MalformedRequest("proof has the wrong length"));
        }

        if !bool::from(cbind.ct_eq(&cbind_input)) {
            return Err(SaslError::NotAuthorized);
        }
        if client_nonce != nonce {
            return Err(SaslError::NotAuthorized);
        }

        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let client_signature = hmac(self.hash, &keys.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof.iter().zip(&client_signature).map(|(p, s)| p ^ s).collect();
        let proof_ok = digest(self.hash, &client_key).ct_eq(&keys.stored_key);
        if !bool::from(proof_ok & Choice::from(u8::from(user_known))) {
            return Err(SaslError::NotAuthorized);
        }

        let server_signature = hmac(self.hash, &keys.server_key, auth_message.as_bytes());
        Ok(format!("v={}", STANDARD.encode(server_signature)).into_bytes())
    }
}

/// A salt for a user that does not exist: stable for a given name (a
/// random one would differ between two probes and give the game away) and
/// unpredictable without the per-process key.
fn fake_salt(hash: ScramHash, username: &str) -> Vec<u8> {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    let key = KEY.get_or_init(|| {
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        key
    });
    // The hash name keeps the SHA-1 and SHA-256 salts of a name apart, as
    // real accounts have one salt per hash.
    let input = format!("{}\0{username}", hash.name());
    let mut salt = hmac(ScramHash::Sha256, key, input.as_bytes());
    salt.truncate(SALT_LEN);
    salt
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> Vec<u8> {
        STANDARD.decode(s).unwrap()
    }

    /// Client side of the proof (RFC 5802 §3), for exchanges the RFCs
    /// give no vector for.
    fn client_final_for(
        hash: ScramHash,
        password: &str,
        client_first_bare: &str,
        server_first: &str,
        cbind_input: &[u8],
    ) -> String {
        let fields: Vec<&str> = server_first.split(',').collect();
        let nonce = &fields[0][2..];
        let salt = b64(&fields[1][2..]);
        let iterations: u32 = fields[2][2..].parse().unwrap();
        let without_proof = format!("c={},r={nonce}", STANDARD.encode(cbind_input));
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let salted = salted_password(hash, password.as_bytes(), &salt, iterations);
        let ck = client_key(hash, &salted);
        let signature = hmac(hash, &digest(hash, &ck), auth_message.as_bytes());
        let proof: Vec<u8> = ck.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
        format!("{without_proof},p={}", STANDARD.encode(proof))
    }

    fn exporter_bindings() -> ChannelBindings {
        ChannelBindings {
            tls_exporter: Some((0..32).collect()),
            tls_server_end_point: None,
        }
    }

    fn malformed<T: fmt::Debug>(r: Result<T, SaslError>) -> bool {
        matches!(r, Err(SaslError::MalformedRequest(_)))
    }

    #[test]
    fn rfc5802_sha1_vector() {
        let creds = derive_credentials_with_salt(b"pencil", ScramHash::Sha1, 4096, &b64("QSXCR+Q6sek8bf92"));
        let mut server = ScramServer::new(Mechanism::ScramSha1, ChannelBindings::default(), false)
            .with_server_nonce("3rfcNHYJY1ZVvWVs7j");
        let first = server
            .client_first(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL")
            .unwrap();
        assert_eq!(
            first,
            ClientFirst {
                username: "user".into(),
                authzid: None
            }
        );
        assert_eq!(
            server.server_first(&creds),
            b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096"
        );
        let last = server
            .client_final(
                b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,\
                  p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
            )
            .unwrap();
        assert_eq!(last, b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=");
        assert_eq!(server.username(), Some("user"));
    }

    #[test]
    fn rfc7677_sha256_vector() {
        let creds = derive_credentials_with_salt(
            b"pencil",
            ScramHash::Sha256,
            4096,
            &b64("W22ZaJ0SNY7soEsUEjb6gQ=="),
        );
        let mut server = ScramServer::new(Mechanism::ScramSha256, ChannelBindings::default(), false)
            .with_server_nonce("%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
        server.client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap();
        assert_eq!(
            server.server_first(&creds),
            b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
              s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let last = server
            .client_final(
                b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                  p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            )
            .unwrap();
        assert_eq!(last, b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    }

    #[test]
    fn random_server_nonce_is_printable() {
        let creds = derive_credentials(b"pencil", ScramHash::Sha256, 1);
        let mut server = ScramServer::new(Mechanism::ScramSha256, ChannelBindings::default(), false);
        server.client_first(b"n,,n=user,r=abc").unwrap();
        let first = String::from_utf8(server.server_first(&creds)).unwrap();
        let nonce = first.split(',').next().unwrap().strip_prefix("r=").unwrap();
        assert!(nonce.starts_with("abc") && nonce.len() == 3 + 32);
        assert!(is_printable_nonce(nonce));
    }

    /// A full exchange with a random nonce, returning the server's result.
    fn run(
        mechanism: Mechanism,
        bindings: ChannelBindings,
        client_first: &str,
        password_used: &str,
        cbind_data: &[u8],
    ) -> Result<Vec<u8>, SaslError> {
        let hash = mechanism.hash().unwrap();
        let creds = derive_credentials(b"correct horse", hash, 64);
        let mut server = ScramServer::new(mechanism, bindings, true);
        server.client_first(client_first.as_bytes())?;
        let server_first = String::from_utf8(server.server_first(&creds)).unwrap();
        let (gs2_header, bare) = client_first.split_at(client_first.find(",n=").unwrap() + 1);
        let mut cbind_input = gs2_header.as_bytes().to_vec();
        cbind_input.extend_from_slice(cbind_data);
        let last = client_final_for(hash, password_used, bare, &server_first, &cbind_input);
        server.client_final(last.as_bytes())
    }

    #[test]
    fn plus_with_tls_exporter() {
        let bindings = exporter_bindings();
        let data = bindings.tls_exporter.clone().unwrap();
        for mechanism in [Mechanism::ScramSha1Plus, Mechanism::ScramSha256Plus] {
            let v = run(
                mechanism,
                bindings.clone(),
                "p=tls-exporter,,n=user,r=nonce",
                "correct horse",
                &data,
            )
            .unwrap();
            assert!(v.starts_with(b"v="));
        }
    }

    #[test]
    fn plus_with_tls_server_end_point() {
        let bindings = ChannelBindings {
            tls_exporter: None,
            tls_server_end_point: Some(vec![7; 32]),
        };
        let mut server = ScramServer::new(Mechanism::ScramSha256Plus, bindings, true);
        server
            .client_first(b"p=tls-server-end-point,,n=user,r=nonce")
            .unwrap();
        assert_eq!(server.channel_binding(), Some("tls-server-end-point"));
    }

    #[test]
    fn plus_with_wrong_binding_data() {
        let r = run(
            Mechanism::ScramSha256Plus,
            exporter_bindings(),
            "p=tls-exporter,,n=user,r=nonce",
            "correct horse",
            &[0xaa; 32],
        );
        assert_eq!(r, Err(SaslError::NotAuthorized));
    }

    #[test]
    fn plus_requires_binding() {
        for flag in ["n", "y"] {
            let mut server = ScramServer::new(Mechanism::ScramSha256Plus, exporter_bindings(), true);
            let msg = format!("{flag},,n=user,r=nonce");
            assert_eq!(server.client_first(msg.as_bytes()), Err(SaslError::NotAuthorized));
        }
    }

    #[test]
    fn plus_with_unavailable_type() {
        for msg in [
            "p=tls-server-end-point,,n=user,r=nonce",
            "p=tls-unique,,n=user,r=nonce",
            "p=,,n=user,r=nonce",
        ] {
            let mut server = ScramServer::new(Mechanism::ScramSha256Plus, exporter_bindings(), true);
            assert!(malformed(server.client_first(msg.as_bytes())), "{msg}");
        }
    }

    #[test]
    fn binding_flag_on_non_plus() {
        let mut server = ScramServer::new(Mechanism::ScramSha256, exporter_bindings(), true);
        assert!(malformed(server.client_first(b"p=tls-exporter,,n=user,r=nonce")));
    }

    #[test]
    fn downgrade_is_rejected() {
        let mut server = ScramServer::new(Mechanism::ScramSha256, exporter_bindings(), true);
        assert_eq!(
            server.client_first(b"y,,n=user,r=nonce"),
            Err(SaslError::NotAuthorized)
        );
        // Without -PLUS on offer, "y" is an honest answer.
        let mut server = ScramServer::new(Mechanism::ScramSha256, ChannelBindings::default(), false);
        assert!(server.client_first(b"y,,n=user,r=nonce").is_ok());
    }

    #[test]
    fn y_flag_exchange_succeeds_without_plus_offered() {
        let hash = ScramHash::Sha1;
        let creds = derive_credentials(b"pw", hash, 16);
        let mut server = ScramServer::new(Mechanism::ScramSha1, ChannelBindings::default(), false);
        server.client_first(b"y,,n=user,r=nonce").unwrap();
        let server_first = String::from_utf8(server.server_first(&creds)).unwrap();
        let last = client_final_for(hash, "pw", "n=user,r=nonce", &server_first, b"y,,");
        assert!(server.client_final(last.as_bytes()).is_ok());
    }

    #[test]
    fn wrong_password() {
        let r = run(
            Mechanism::ScramSha256,
            ChannelBindings::default(),
            "n,,n=user,r=nonce",
            "battery staple",
            b"",
        );
        assert_eq!(r, Err(SaslError::NotAuthorized));
    }

    #[test]
    fn wrong_nonce() {
        let creds = derive_credentials(b"pw", ScramHash::Sha256, 16);
        let mut server = ScramServer::new(Mechanism::ScramSha256, ChannelBindings::default(), false);
        server.client_first(b"n,,n=user,r=nonce").unwrap();
        let server_first = String::from_utf8(server.server_first(&creds)).unwrap();
        let tampered = server_first.replacen("r=nonce", "r=nonce0", 1);
        let last = client_final_for(ScramHash::Sha256, "pw", "n=user,r=nonce", &tampered, b"n,,");
        assert_eq!(
            server.client_final(last.as_bytes()),
            Err(SaslError::NotAuthorized)
        );
    }

    #[test]
    fn authzid_and_saslname_escaping() {
        let mut server = ScramServer::new(Mechanism::ScramSha256, ChannelBindings::default(), false);
        let first = server
            .client_first(b"n,a=admin=3Dx=2Cy,n=us=2Cer=3D,r=nonce")
            .unwrap();
        assert_eq!(first.username, "us,er=");
        assert_eq!(first.authzid.as_deref(), Some("admin=x,y"));
        assert_eq!(server.authzid(), Some("admin=x,y"));
    }

    #[test]
    fn bad_saslname_escapes() {
        for msg in [
            "n,,n=us=2cer,r=nonce",
            "n,,n=us=er,r=nonce",
            "n,,n=user=,r=nonce",
            "n,,n=user=2,r=nonce",
            "n,a=x=41,n=user,r=nonce",
            "n,a=,n=user,r=nonce",
        ] {
            let mut server = ScramServer::new(Mechanism::ScramSha256, ChannelBindings::default(), false);
            assert!(malformed(server.client_first(msg.as_bytes())), "{msg}");
        }
    }

    #[test]
    fn malformed_client_first() {
        for msg in [
            &b""[..],
            b"n",
            b"n,",
            b"x,,n=user,r=nonce",
            b"n,b=x,n=user,r=nonce",
            b"n,,n=,r=nonce",
            b"n,,r=nonce,n=user",
            b"n,,n=user",
            b"n,,n=user,r=",
            b"n,,n=user,r=no nce",
            b"n,,n=user,r=nonce,",
            b"n,,n=user,r=nonce,1=x",
            b"n,,m=ext,n=user,r=nonce",
            b"n,,n=us\xffer,r=nonce",
            b"n,,n=us\0er,r=nonce",
        ] {
            let mut server = ScramServer::new(Mechanism::ScramSha256, ChannelBindings::default(), false);
            assert!(
                malformed(server.client_first(msg)),
                "{}",
                String::from_utf8_lossy(msg)
            );
        }
    }

    #[test]
    fn optional_extensions_are_ignored() {
        let mut server = ScramServer::new(Mechanism::ScramSha256, ChannelBindings::default(), false);
        assert!(server.client_first(b"n,,n=user,r=nonce,x=ext").is_ok());
    }

    #[test]
    fn malformed_client_final() {
        let creds = derive_credentials(b"pw", ScramHash::Sha256, 16);
        for msg in [
            "c=biws,r=nonce",
            "c=biws,r=nonce,p=***",
            "c=biws,p=AAAA",
            "r=nonce,c=biws,p=AAAA",
            "c=b!ws,r=nonce,p=AAAA",
            // A proof of the wrong length.
            "c=biws,r=nonce,p=AAAA",
        ] {
            let mut server = ScramServer::new(Mechanism::ScramSha256, ChannelBindings::default(), false)
                .with_server_nonce("srv");
            server.client_first(b"n,,n=user,r=nonce").unwrap();
            server.server_first(&creds);
            assert!(malformed(server.client_final(msg.as_bytes())), "{msg}");
        }
    }

    #[test]
    fn unknown_user_fails() {
        let mut server = ScramServer::new(Mechanism::ScramSha256, ChannelBindings::default(), false);
        server.client_first(b"n,,n=nobody,r=nonce").unwrap();
        let server_first = String::from_utf8(server.server_first_unknown_user()).unwrap();
        assert!(server_first.ends_with(",i=4096"));
        let last = client_final_for(
            ScramHash::Sha256,
            "guess",
            "n=nobody,r=nonce",
            &server_first,
            b"n,,",
        );
        assert_eq!(
            server.client_final(last.as_bytes()),
            Err(SaslError::NotAuthorized)
        );
    }

    #[test]
    fn unknown_user_salt_is_stable() {
        let salt = |mechanism: Mechanism, user: &str| {
            let mut server = ScramServer::new(mechanism, ChannelBindings::default(), false);
            server
                .client_first(format!("n,,n={user},r=nonce").as_bytes())
                .unwrap();
            let first = String::from_utf8(server.server_first_unknown_user()).unwrap();
            first.split(',').nth(1).unwrap().to_owned()
        };
        assert_eq!(
            salt(Mechanism::ScramSha256, "nobody"),
            salt(Mechanism::ScramSha256, "nobody")
        );
        assert_ne!(
            salt(Mechanism::ScramSha256, "nobody"),
            salt(Mechanism::ScramSha256, "someone")
        );
        assert_ne!(
            salt(Mechanism::ScramSha256, "nobody"),
            salt(Mechanism::ScramSha1, "nobody")
        );
        assert_eq!(b64(&salt(Mechanism::ScramSha1, "x")[2..]).len(), SALT_LEN);
    }

    #[test]
    fn steps_out_of_order() {
        let creds = derive_credentials(b"pw", ScramHash::Sha256, 16);
        let mut server = ScramServer::new(Mechanism::ScramSha256, ChannelBindings::default(), false);
        assert!(malformed(server.client_final(b"c=biws,r=nonce,p=AAAA")));

        let mut server = ScramServer::new(Mechanism::ScramSha256, ChannelBindings::default(), false);
        server.client_first(b"n,,n=user,r=nonce").unwrap();
        assert!(malformed(server.client_first(b"n,,n=user,r=nonce")));

        // After a failure, nothing more is accepted.
        let mut server = ScramServer::new(Mechanism::ScramSha256, ChannelBindings::default(), false);
        assert!(server.client_first(b"n,,n=user").is_err());
        assert!(malformed(server.client_first(b"n,,n=user,r=nonce")));

        // Nor after a success.
        let mut server = ScramServer::new(Mechanism::ScramSha256, ChannelBindings::default(), false);
        server.client_first(b"n,,n=user,r=nonce").unwrap();
        let server_first = String::from_utf8(server.server_first(&creds)).unwrap();
        let last = client_final_for(ScramHash::Sha256, "pw", "n=user,r=nonce", &server_first, b"n,,");
        assert!(server.client_final(last.as_bytes()).is_ok());
        assert!(malformed(server.client_final(last.as_bytes())));
    }

    #[test]
    #[should_panic(expected = "out of order")]
    fn server_first_before_client_first_panics() {
        let creds = derive_credentials(b"pw", ScramHash::Sha256, 1);
        let mut server = ScramServer::new(Mechanism::ScramSha256, ChannelBindings::default(), false);
        server.server_first(&creds);
    }

    #[test]
    fn verify_password_checks_keys() {
        for hash in [ScramHash::Sha1, ScramHash::Sha256] {
            let creds = derive_credentials(b"pencil", hash, 128);
            assert_eq!(creds.salt.len(), SALT_LEN);
            assert_eq!(creds.stored_key.len(), output_len(hash));
            assert!(verify_password(&creds, b"pencil"));
            assert!(!verify_password(&creds, b"Pencil"));
            assert!(!verify_password(&creds, b""));
        }
        // Fresh salts make the keys of the same password differ.
        let a = derive_credentials(b"pencil", ScramHash::Sha256, 1);
        let b = derive_credentials(b"pencil", ScramHash::Sha256, 1);
        assert_ne!(a.stored_key, b.stored_key);
    }

    #[test]
    fn debug_hides_keys() {
        let creds = derive_credentials_with_salt(b"pencil", ScramHash::Sha1, 1, b"salt");
        let mut server = ScramServer::new(Mechanism::ScramSha1, ChannelBindings::default(), false);
        server.client_first(b"n,,n=user,r=nonce").unwrap();
        server.server_first(&creds);
        let debug = format!("{server:?}");
        assert!(debug.contains("awaiting-client-final"), "{debug}");
        assert!(!debug.contains(&format!("{:?}", creds.stored_key)), "{debug}");
    }
}
