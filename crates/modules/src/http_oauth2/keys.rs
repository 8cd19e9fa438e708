//! The server's keys: ES256 keys that sign id_tokens (published as a JWKS)
//! and a symmetric key for what only this server reads back (the web
//! login cookie, the consent form's request). Both live in the database:
//! generated on first start, rotated with `jackdaw oauth2 rotate-key`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use jackdaw_core::storage::{OAuthStore, SigningKey, StorageError};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The default id_token algorithm (ECDSA P-256).
pub const ALGORITHM: &str = "ES256";
/// Also offered: OpenID Connect Discovery says RS256 must be, and it is
/// what a client that registers no `id_token_signed_response_alg` may
/// expect.
pub const RSA_ALGORITHM: &str = "RS256";
/// Every algorithm id_tokens can be signed with, default first.
pub const ALGORITHMS: [&str; 2] = [ALGORITHM, RSA_ALGORITHM];
const RSA_BITS: usize = 2048;
/// The name of the symmetric secret in `OAuthStore::secret`.
const INTERNAL_SECRET: &str = "http_oauth2.internal";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("stored signing key {kid} is unusable: {reason}")]
    BadKey { kid: String, reason: String },
    #[error("cannot generate a key")]
    Generate,
}

/// One public key as published, and the private one to sign with.
struct LoadedKey {
    kid: String,
    algorithm: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

/// The keys of one server, loaded once.
pub struct Keys {
    /// Newest last; the newest of an algorithm signs.
    signing: Vec<LoadedKey>,
    internal: Vec<u8>,
}

/// A new signing key for `algorithm` (ES256 or RS256), its kid the RFC
/// 7638 thumbprint.
pub fn generate_signing_key(algorithm: &str, now: i64) -> Result<SigningKey, KeyError> {
    let private_key = match algorithm {
        ALGORITHM => EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .map_err(|_| KeyError::Generate)?
            .as_ref()
            .to_vec(),
        RSA_ALGORITHM => {
            // ring signs RSA but cannot make keys; the rsa crate only
            // generates here (signing, the timing-sensitive part, is ring's).
            use rsa::pkcs1::EncodeRsaPrivateKey;
            rsa::RsaPrivateKey::new(&mut rand::thread_rng(), RSA_BITS)
                .map_err(|_| KeyError::Generate)?
                .to_pkcs1_der()
                .map_err(|_| KeyError::Generate)?
                .as_bytes()
                .to_vec()
        }
        _ => return Err(KeyError::Generate),
    };
    let mut key = SigningKey {
        kid: String::new(),
        algorithm: algorithm.into(),
        private_key,
        created_at: now,
    };
    key.kid = load(&key)?.kid;
    Ok(key)
}

/// ES256 keys are PKCS#8, RS256 keys PKCS#1 (what ring reads for each).
fn load(stored: &SigningKey) -> Result<LoadedKey, KeyError> {
    let bad = |reason: &str| KeyError::BadKey {
        kid: stored.kid.clone(),
        reason: reason.into(),
    };
    let (algorithm, encoding, jwk) = match stored.algorithm.as_str() {
        ALGORITHM => {
            let pair = EcdsaKeyPair::from_pkcs8(
                &ECDSA_P256_SHA256_FIXED_SIGNING,
                &stored.private_key,
                &SystemRandom::new(),
            )
            .map_err(|_| bad("not a P-256 PKCS#8 key"))?;
            // The public key is the uncompressed point 0x04 || x || y.
            let point = pair.public_key().as_ref();
            if point.len() != 65 {
                return Err(bad("unexpected public key length"));
            }
            let jwk = json!({
                "kty": "EC",
                "crv": "P-256",
                "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&point[33..]),
            });
            (
                Algorithm::ES256,
                EncodingKey::from_ec_der(&stored.private_key),
                jwk,
            )
        }
        RSA_ALGORITHM => {
            let pair = ring::rsa::KeyPair::from_der(&stored.private_key)
                .map_err(|_| bad("not an RSA PKCS#1 key"))?;
            let public: ring::rsa::PublicKeyComponents<Vec<u8>> = pair.public().into();
            let jwk = json!({
                "kty": "RSA",
                "n": URL_SAFE_NO_PAD.encode(&public.n),
                "e": URL_SAFE_NO_PAD.encode(&public.e),
            });
            (
                Algorithm::RS256,
                EncodingKey::from_rsa_der(&stored.private_key),
                jwk,
            )
        }
        other => return Err(bad(&format!("unknown algorithm {other}"))),
    };
    let kid = if stored.kid.is_empty() {
        thumbprint(&jwk)
    } else {
        stored.kid.clone()
    };
    let mut jwk = jwk;
    jwk["kid"] = json!(kid);
    jwk["use"] = json!("sig");
    jwk["alg"] = json!(stored.algorithm);
    Ok(LoadedKey {
        kid,
        algorithm,
        encoding,
        jwk,
    })
}

/// RFC 7638: SHA-256 of the required members in lexicographic order.
fn thumbprint(jwk: &Value) -> String {
    let field = |name: &str| jwk[name].as_str().unwrap_or_default().to_string();
    let canonical = if jwk["kty"] == "RSA" {
        format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, field("e"), field("n"))
    } else {
        format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            field("x"),
            field("y")
        )
    };
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

impl Keys {
    /// Loads the stored keys, making the first ones on a new server. The
    /// symmetric key mixes the stored secret with `config_secret` (the
    /// registration key), so a copy of the database alone cannot forge a
    /// login cookie.
    pub async fn load_or_create(
        store: &dyn OAuthStore,
        now: i64,
        config_secret: &[u8],
    ) -> Result<Keys, KeyError> {
        let mut stored = store.signing_keys().await?;
        // One key per algorithm at least (a server from before RS256 gets
        // its RSA key at the next start).
        for algorithm in ALGORITHMS {
            if !stored.iter().any(|k| k.algorithm == algorithm) {
                // RSA key generation takes a CPU for a while: not on the
                // runtime's threads.
                let key = tokio::task::spawn_blocking(move || generate_signing_key(algorithm, now))
                    .await
                    .map_err(|_| KeyError::Generate)??;
                store.add_signing_key(&key).await?;
                tracing::info!(kid = %key.kid, algorithm, "generated an OAuth id_token signing key");
                stored.push(key);
            }
        }
        let signing = stored.iter().map(load).collect::<Result<Vec<_>, _>>()?;
        let mut fresh = [0u8; 32];
        ring::rand::SecureRandom::fill(&SystemRandom::new(), &mut fresh).map_err(|_| KeyError::Generate)?;
        let stored_secret = store.secret(INTERNAL_SECRET, &fresh).await?;
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&stored_secret).expect("HMAC takes keys of any length");
        mac.update(config_secret);
        let internal = mac.finalize().into_bytes().to_vec();
        Ok(Keys { signing, internal })
    }

    pub fn jwks(&self) -> Value {
        json!({ "keys": self.signing.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() })
    }

    /// Signs claims as a JWS with the newest key of `algorithm` (id_tokens).
    pub fn sign(&self, algorithm: &str, claims: &impl Serialize) -> Option<String> {
        let key = self.signing.iter().rev().find(|k| k.jwk["alg"] == algorithm)?;
        let mut header = Header::new(key.algorithm);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, claims, &key.encoding)
            .map_err(|e| tracing::error!(error = %e, "cannot sign an id_token"))
            .ok()
    }

    /// The symmetric key for `purpose` on `host`: separate keys per use,
    /// so a value made for one purpose never passes for another.
    fn internal_key(&self, host: &str, purpose: &str) -> Vec<u8> {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.internal).expect("HMAC takes keys of any length");
        mac.update(host.as_bytes());
        mac.update(b"\0");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// A value only this server can have made (HS256 JWT).
    pub fn seal(&self, host: &str, purpose: &str, claims: &impl Serialize) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(&self.internal_key(host, purpose)),
        )
        .expect("HS256 signing does not fail")
    }

    /// Opens what `seal` made for the same host and purpose; checks `exp`.
    pub fn open<T: DeserializeOwned>(&self, host: &str, purpose: &str, sealed: &str) -> Option<T> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.required_spec_claims = ["exp".to_string()].into_iter().collect();
        validation.validate_aud = false;
        validation.leeway = 0;
        jsonwebtoken::decode::<T>(
            sealed,
            &DecodingKey::from_secret(&self.internal_key(host, purpose)),
            &validation,
        )
        .ok()
        .map(|d| d.claims)
    }

    /// A CSRF token bound to a browser's cookie nonce.
    pub fn csrf_token(&self, host: &str, nonce: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.internal_key(host, "csrf"))
            .expect("HMAC takes keys of any length");
        mac.update(nonce.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    pub fn csrf_matches(&self, host: &str, nonce: &str, given: &str) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(self.csrf_token(host, nonce).as_bytes().ct_eq(given.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_load_and_sign() {
        let ec = generate_signing_key(ALGORITHM, 1).unwrap();
        let rsa = generate_signing_key(RSA_ALGORITHM, 1).unwrap();
        let keys = Keys {
            signing: vec![load(&ec).unwrap(), load(&rsa).unwrap()],
            internal: vec![7; 32],
        };
        let claims = json!({"sub": "x", "exp": 4_000_000_000u64});
        let jwks = keys.jwks();
        assert_eq!(jwks["keys"][0]["crv"], "P-256");
        assert_eq!(jwks["keys"][1]["kty"], "RSA");
        // Each verifies with what the JWKS publishes.
        let es = keys.sign(ALGORITHM, &claims).unwrap();
        let header = jsonwebtoken::decode_header(&es).unwrap();
        assert_eq!(header.alg, Algorithm::ES256);
        assert_eq!(header.kid.as_deref(), Some(ec.kid.as_str()));
        let jwk = &jwks["keys"][0];
        let decoding =
            DecodingKey::from_ec_components(jwk["x"].as_str().unwrap(), jwk["y"].as_str().unwrap()).unwrap();
        let mut v = Validation::new(Algorithm::ES256);
        v.validate_aud = false;
        assert!(jsonwebtoken::decode::<Value>(&es, &decoding, &v).is_ok());
        let rs = keys.sign(RSA_ALGORITHM, &claims).unwrap();
        let header = jsonwebtoken::decode_header(&rs).unwrap();
        assert_eq!(header.alg, Algorithm::RS256);
        assert_eq!(header.kid.as_deref(), Some(rsa.kid.as_str()));
        let jwk = &jwks["keys"][1];
        let decoding =
            DecodingKey::from_rsa_components(jwk["n"].as_str().unwrap(), jwk["e"].as_str().unwrap()).unwrap();
        let mut v = Validation::new(Algorithm::RS256);
        v.validate_aud = false;
        assert!(jsonwebtoken::decode::<Value>(&rs, &decoding, &v).is_ok());
        assert!(keys.sign("HS256", &claims).is_none());
    }

    #[tokio::test]
    async fn keys_persist_and_a_database_copy_alone_cannot_forge_cookies() {
        let dir = tempfile::tempdir().unwrap();
        let db = jackdaw_storage::SqliteStore::open(&dir.path().join("db.sqlite")).unwrap();
        let store = db.stores().oauth;
        let first = Keys::load_or_create(store.as_ref(), 1, b"registration key")
            .await
            .unwrap();
        let again = Keys::load_or_create(store.as_ref(), 2, b"registration key")
            .await
            .unwrap();
        assert_eq!(first.jwks(), again.jwks(), "the signing key is kept");
        assert_eq!(first.csrf_token("h", "n"), again.csrf_token("h", "n"));
        let without_config = Keys::load_or_create(store.as_ref(), 2, b"").await.unwrap();
        assert_ne!(first.csrf_token("h", "n"), without_config.csrf_token("h", "n"));
        let sealed = first.seal(
            "h",
            "web-session",
            &json!({"sub": "alice", "exp": 4_000_000_000u64}),
        );
        assert!(
            without_config
                .open::<Value>("h", "web-session", &sealed)
                .is_none()
        );
    }

    #[test]
    fn sealed_values_are_bound_to_host_and_purpose() {
        let keys = Keys {
            signing: vec![],
            internal: vec![9; 32],
        };
        let sealed = keys.seal("h", "a", &json!({"v": 1, "exp": 4_000_000_000u64}));
        assert_eq!(keys.open::<Value>("h", "a", &sealed).unwrap()["v"], 1);
        assert!(keys.open::<Value>("h", "b", &sealed).is_none());
        assert!(keys.open::<Value>("g", "a", &sealed).is_none());
        let expired = keys.seal("h", "a", &json!({"exp": 1}));
        assert!(keys.open::<Value>("h", "a", &expired).is_none());
        let csrf = keys.csrf_token("h", "n1");
        assert!(keys.csrf_matches("h", "n1", &csrf));
        assert!(!keys.csrf_matches("h", "n2", &csrf));
        assert!(keys.sign(ALGORITHM, &json!({})).is_none(), "no signing key");
    }
}
