//! The client side of SASL PLAIN (RFC 4616), SCRAM-SHA-256 (RFC 7677) and
//! SCRAM-SHA-1 (RFC 5802; Prosody 0.12 offers no other SCRAM), without
//! channel binding (`n,,`): a load generator measures
//! the server's cost of a login, and -PLUS adds nothing to it but a hash.
//!
//! Hand-written on the workspace's hmac/sha2/pbkdf2 rather than the `sasl`
//! crate so the salted password can be cached per user: a real client
//! stores it after the first login (RFC 5802 §5.1 allows that), and without
//! the cache every login would cost the generator a PBKDF2 run (4,096 or
//! more HMACs), which would make the generator the bottleneck of `login`.

use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use thiserror::Error;

/// The hash of a SCRAM mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScramHash {
    Sha1,
    Sha256,
}

impl ScramHash {
    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        // Invariant: HMAC accepts keys of any length.
        match self {
            ScramHash::Sha1 => {
                let mut mac = Hmac::<Sha1>::new_from_slice(key).expect("HMAC takes any key length");
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
            ScramHash::Sha256 => {
                let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
        }
    }

    fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => Sha1::digest(data).to_vec(),
            ScramHash::Sha256 => Sha256::digest(data).to_vec(),
        }
    }

    fn salted_password(self, password: &str, salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => {
                let mut out = vec![0; 20];
                pbkdf2::pbkdf2_hmac::<Sha1>(password.as_bytes(), salt, iterations, &mut out);
                out
            }
            ScramHash::Sha256 => {
                let mut out = vec![0; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations, &mut out);
                out
            }
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SaslError {
    #[error("malformed server-first-message")]
    BadServerFirst,
    #[error("server nonce does not extend ours")]
    BadNonce,
    #[error("iteration count {0} out of range")]
    Iterations(u32),
    #[error("server signature missing or wrong")]
    BadServerSignature,
    #[error("server error: {0}")]
    ServerError(String),
}

/// The salted password as last computed.
struct Salted {
    hash: ScramHash,
    salt: Vec<u8>,
    iterations: u32,
    value: Vec<u8>,
}

/// A salted password, remembered for the hash, salt and iteration count it
/// was computed with (the server may change them when a password changes).
#[derive(Default)]
pub struct ScramCache {
    slot: Mutex<Option<Salted>>,
}

impl ScramCache {
    fn salted_password(&self, hash: ScramHash, password: &str, salt: &[u8], iterations: u32) -> Vec<u8> {
        // A poisoned lock only means another login panicked mid-update of
        // a plain value; the value itself is still whole.
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = slot.as_ref()
            && s.hash == hash
            && s.salt == salt
            && s.iterations == iterations
        {
            return s.value.clone();
        }
        let value = hash.salted_password(password, salt, iterations);
        *slot = Some(Salted {
            hash,
            salt: salt.to_vec(),
            iterations,
            value: value.clone(),
        });
        value
    }
}

/// The initial response of PLAIN: `\0user\0password`, base64.
pub fn plain_initial(user: &str, password: &str) -> String {
    let mut raw = Vec::with_capacity(user.len() + password.len() + 2);
    raw.push(0);
    raw.extend_from_slice(user.as_bytes());
    raw.push(0);
    raw.extend_from_slice(password.as_bytes());
    B64.encode(raw)
}

/// One SCRAM exchange in progress.
pub struct Scram {
    hash: ScramHash,
    client_first_bare: String,
    nonce: String,
    auth_message: String,
    server_key: Vec<u8>,
}

impl Scram {
    /// Starts an exchange; returns it with the client-first-message (base64).
    pub fn start(hash: ScramHash, user: &str) -> (Scram, String) {
        let mut raw = [0u8; 18];
        rand::thread_rng().fill_bytes(&mut raw);
        let nonce = B64.encode(raw);
        Self::start_with_nonce(hash, user, nonce)
    }

    fn start_with_nonce(hash: ScramHash, user: &str, nonce: String) -> (Scram, String) {
        // RFC 5802 §5.1: '=' and ',' in the name are escaped.
        let name = user.replace('=', "=3D").replace(',', "=2C");
        let client_first_bare = format!("n={name},r={nonce}");
        let first = B64.encode(format!("n,,{client_first_bare}"));
        let scram = Scram {
            hash,
            client_first_bare,
            nonce,
            auth_message: String::new(),
            server_key: Vec::new(),
        };
        (scram, first)
    }

    /// Answers the server-first-message (raw, decoded from base64) with
    /// the client-final-message (base64).
    pub fn respond(
        &mut self,
        server_first: &str,
        password: &str,
        cache: &ScramCache,
    ) -> Result<String, SaslError> {
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for part in server_first.split(',') {
            match part.split_once('=') {
                Some(("r", v)) => nonce = Some(v),
                Some(("s", v)) => salt = B64.decode(v).ok(),
                Some(("i", v)) => iterations = v.parse::<u32>().ok(),
                Some(("m", _)) => return Err(SaslError::BadServerFirst),
                _ => {}
            }
        }
        let (Some(nonce), Some(salt), Some(iterations)) = (nonce, salt, iterations) else {
            return Err(SaslError::BadServerFirst);
        };
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(SaslError::BadNonce);
        }
        // A bound on the work a hostile server can make us do.
        if !(1..=10_000_000).contains(&iterations) {
            return Err(SaslError::Iterations(iterations));
        }
        let h = self.hash;
        let salted = cache.salted_password(h, password, &salt, iterations);
        let client_key = h.hmac(&salted, b"Client Key");
        let stored_key = h.digest(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        self.auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let signature = h.hmac(&stored_key, self.auth_message.as_bytes());
        let mut proof = client_key;
        for (p, s) in proof.iter_mut().zip(signature) {
            *p ^= s;
        }
        self.server_key = h.hmac(&salted, b"Server Key");
        Ok(B64.encode(format!("{without_proof},p={}", B64.encode(proof))))
    }

    /// Checks the server-final-message (raw) carried by `<success/>`.
    pub fn verify(&self, server_final: &str) -> Result<(), SaslError> {
        if let Some(e) = server_final.strip_prefix("e=") {
            return Err(SaslError::ServerError(e.to_string()));
        }
        let v = server_final
            .strip_prefix("v=")
            .and_then(|v| B64.decode(v.split(',').next().unwrap_or(v)).ok())
            .ok_or(SaslError::BadServerSignature)?;
        let expected = self.hash.hmac(&self.server_key, self.auth_message.as_bytes());
        if v != expected {
            return Err(SaslError::BadServerSignature);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 §3's example exchange.
    #[test]
    fn rfc7677_example() {
        let (mut scram, first) =
            Scram::start_with_nonce(ScramHash::Sha256, "user", "rOprNGfwEbeRWgbNEkqO".into());
        assert_eq!(
            B64.decode(first).expect("base64"),
            b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
        );
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                            s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let cache = ScramCache::default();
        let fin = scram.respond(server_first, "pencil", &cache).expect("responds");
        assert_eq!(
            String::from_utf8(B64.decode(fin).expect("base64")).expect("utf8"),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
             p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        scram
            .verify("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .expect("server signature");
        assert_eq!(scram.verify("v=AAAA"), Err(SaslError::BadServerSignature));
        // The second login reuses the salted password.
        let (mut again, _) =
            Scram::start_with_nonce(ScramHash::Sha256, "user", "rOprNGfwEbeRWgbNEkqO".into());
        assert!(again.respond(server_first, "pencil", &cache).is_ok());
    }

    /// RFC 5802 §5's example exchange (SCRAM-SHA-1).
    #[test]
    fn rfc5802_example() {
        let (mut scram, first) =
            Scram::start_with_nonce(ScramHash::Sha1, "user", "fyko+d2lbbFgONRv9qkxdawL".into());
        assert_eq!(
            B64.decode(first).expect("base64"),
            b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL"
        );
        let server_first = "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096";
        let fin = scram
            .respond(server_first, "pencil", &ScramCache::default())
            .expect("responds");
        assert_eq!(
            String::from_utf8(B64.decode(fin).expect("base64")).expect("utf8"),
            "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
        );
        scram
            .verify("v=rmF9pqV8S7suAoZWja4dJRkFsKQ=")
            .expect("server signature");
    }

    #[test]
    fn refuses_a_nonce_that_does_not_extend_ours() {
        let (mut scram, _) = Scram::start_with_nonce(ScramHash::Sha256, "user", "abc".into());
        let cache = ScramCache::default();
        assert_eq!(
            scram.respond("r=xyz123,s=AAAA,i=4096", "pw", &cache),
            Err(SaslError::BadNonce)
        );
    }

    #[test]
    fn plain_initial_response() {
        assert_eq!(B64.decode(plain_initial("u", "p")).expect("base64"), b"\0u\0p");
    }
}
