//! `scram`: the server's cost of checking a password, per login.
//!
//! Logins/s is one of the figures Jackdaw is compared on (issue 4), and
//! the password check is the one step of a login that costs CPU by design.
//! Two ways in, with the default 4096 iterations of
//! `auth::internal::SCRAM_ITERATIONS`:
//!
//! - `scram_sha256_exchange`: the server side of a whole SCRAM-SHA-256
//!   exchange (`client_first`, `server_first`, `client_final`) against
//!   stored keys. The server never runs PBKDF2 here (that is the client's
//!   work), so this is a few HMACs, the nonce and the message parsing.
//!   The client's proof cannot be precomputed whole, because it covers
//!   the server's random nonce; the client's PBKDF2 result (ClientKey) is
//!   precomputed once and each iteration does the client's one HMAC to
//!   sign the exchange. `client_proof_only` times that client part alone,
//!   to subtract.
//! - `plain_verify_password`: `scram::verify_password`, which SASL PLAIN
//!   (and auth on password change) uses: a full PBKDF2-HMAC-SHA256 of 4096
//!   iterations per login, the dominant cost of a PLAIN login.

use std::hint::black_box;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hmac::{Hmac, Mac};
use jackdaw_core::auth::internal::SCRAM_ITERATIONS;
use jackdaw_core::sasl::scram::{ScramServer, derive_credentials_with_salt, verify_password};
use jackdaw_core::sasl::{ChannelBindings, Mechanism};
use jackdaw_core::storage::ScramHash;
use sha2::{Digest as _, Sha256};

const PASSWORD: &[u8] = b"correct horse battery staple";
const SALT: &[u8] = b"0123456789abcdef";
const CLIENT_FIRST_BARE: &str = "n=alice,r=fyko+d2lbbFgONRv9qkxdawL";

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// What a client knows after its own PBKDF2 (RFC 5802 §3): ClientKey and
/// StoredKey, so that signing one exchange is a single HMAC.
struct ClientKeys {
    client_key: Vec<u8>,
    stored_key: Vec<u8>,
}

impl ClientKeys {
    fn derive(password: &[u8], salt: &[u8], iterations: u32) -> Self {
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut salted);
        let client_key = hmac_sha256(&salted, b"Client Key");
        let stored_key = Sha256::digest(&client_key).to_vec();
        Self {
            client_key,
            stored_key,
        }
    }

    /// `client-final-message` for `server_first` (no channel binding).
    fn client_final(&self, server_first: &str) -> String {
        let nonce = server_first
            .split(',')
            .next()
            .and_then(|f| f.strip_prefix("r="))
            .expect("server-first starts with the nonce");
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{CLIENT_FIRST_BARE},{server_first},{without_proof}");
        let signature = hmac_sha256(&self.stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = self
            .client_key
            .iter()
            .zip(&signature)
            .map(|(k, s)| k ^ s)
            .collect();
        format!("{without_proof},p={}", STANDARD.encode(proof))
    }
}

fn bench_scram(c: &mut Criterion) {
    let creds = derive_credentials_with_salt(PASSWORD, ScramHash::Sha256, SCRAM_ITERATIONS, SALT);
    let client = ClientKeys::derive(PASSWORD, SALT, SCRAM_ITERATIONS);
    let client_first = format!("n,,{CLIENT_FIRST_BARE}");

    let exchange = || {
        let mut server = ScramServer::new(Mechanism::ScramSha256, ChannelBindings::default(), false);
        server
            .client_first(client_first.as_bytes())
            .expect("valid client-first");
        let server_first = String::from_utf8(server.server_first(&creds)).expect("ASCII");
        let client_final = client.client_final(&server_first);
        server
            .client_final(client_final.as_bytes())
            .expect("the proof is right")
    };
    // A wrong key would make every iteration an early error instead.
    assert!(exchange().starts_with(b"v="));

    let mut group = c.benchmark_group("scram");
    group.throughput(Throughput::Elements(1));
    group.bench_function("scram_sha256_exchange", |b| b.iter(|| black_box(exchange())));
    let sample_server_first = format!(
        "r=fyko+d2lbbFgONRv9qkxdawL{},s=MDEyMzQ1Njc4OWFiY2RlZg==,i=4096",
        "x".repeat(32)
    );
    group.bench_function("client_proof_only", |b| {
        b.iter(|| black_box(client.client_final(black_box(&sample_server_first))))
    });
    // PBKDF2 at 4096 iterations takes milliseconds: fewer samples suffice.
    group.sample_size(20);
    group.bench_function("plain_verify_password", |b| {
        b.iter(|| assert!(verify_password(black_box(&creds), black_box(PASSWORD))))
    });
    group.finish();
}

criterion_group!(benches, bench_scram);
criterion_main!(benches);
