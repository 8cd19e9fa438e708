//! What lives between the steps of a flow, in memory: authorization codes
//! (one-time, two minutes) and device authorizations (RFC 8628), plus a
//! per-address request limit for the token and device endpoints. None of
//! it survives a restart, which only costs a user one more click.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::Rng;
use sha2::{Digest, Sha256};

/// How long an authorization code may wait for its exchange.
pub const CODE_TTL: Duration = Duration::from_secs(120);
/// How long a used code is remembered, to catch a second use.
const USED_CODE_MEMORY: Duration = Duration::from_secs(600);
pub const DEVICE_CODE_TTL: Duration = Duration::from_secs(600);
/// RFC 8628 §3.2 `interval`, and what `slow_down` adds to it.
pub const DEVICE_POLL_INTERVAL: Duration = Duration::from_secs(5);

/// A new bearer secret (token, code, device code): 256 random bits.
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::thread_rng().r#gen();
    URL_SAFE_NO_PAD.encode(bytes)
}

/// What is stored instead of a secret.
pub fn hash_secret(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What the user agreed to, on the way to tokens.
#[derive(Debug, Clone)]
pub struct Approval {
    pub user: String,
    pub client_id: String,
    pub scope: String,
    pub nonce: Option<String>,
    /// Unix seconds of the user's login (OpenID `auth_time`).
    pub auth_time: i64,
}

#[derive(Debug, Clone)]
pub struct PendingCode {
    pub approval: Approval,
    pub redirect_uri: String,
    /// The authorization request named the redirect URI, so the token
    /// request must too (RFC 6749 §4.1.3).
    pub redirect_uri_given: bool,
    pub code_challenge: Option<String>,
    pub code_challenge_method: String,
}

enum CodeState {
    Pending(Box<PendingCode>),
    /// Exchanged for the grant named here.
    Used(String),
}

/// What presenting a code found.
pub enum CodeLookup {
    Pending(Box<PendingCode>),
    /// Presented a second time: the grant it produced must go.
    Reused(String),
    Unknown,
}

#[derive(Default)]
pub struct Codes {
    map: Mutex<HashMap<String, (CodeState, Instant)>>,
}

impl Codes {
    /// Stores a code; returns the code to hand to the client.
    pub fn issue(&self, pending: PendingCode) -> String {
        let code = new_secret();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        map.retain(|_, (state, at)| match state {
            CodeState::Pending(_) => now.duration_since(*at) < CODE_TTL,
            CodeState::Used(_) => now.duration_since(*at) < USED_CODE_MEMORY,
        });
        map.insert(hash_secret(&code), (CodeState::Pending(Box::new(pending)), now));
        code
    }

    /// Takes a code for exchange: it can be taken once.
    pub fn take(&self, code: &str) -> CodeLookup {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let key = hash_secret(code);
        let Some((state, at)) = map.get_mut(&key) else {
            return CodeLookup::Unknown;
        };
        match state {
            CodeState::Used(grant) => CodeLookup::Reused(grant.clone()),
            CodeState::Pending(_) if at.elapsed() >= CODE_TTL => {
                map.remove(&key);
                CodeLookup::Unknown
            }
            CodeState::Pending(_) => {
                // Until the grant exists, a second use finds no grant to
                // revoke but still fails.
                let CodeState::Pending(p) = std::mem::replace(state, CodeState::Used(String::new())) else {
                    unreachable!("matched Pending above");
                };
                *at = Instant::now();
                CodeLookup::Pending(p)
            }
        }
    }

    /// Records the grant a code was exchanged for.
    pub fn mark_used(&self, code: &str, grant_id: &str) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((state, _)) = map.get_mut(&hash_secret(code)) {
            *state = CodeState::Used(grant_id.to_string());
        }
    }
}

#[derive(Debug, Clone)]
pub enum DeviceState {
    Pending,
    Approved(Approval),
    Denied,
}

#[derive(Debug, Clone)]
pub struct DeviceRequest {
    pub client_id: String,
    pub scope: String,
    pub user_code: String,
    pub state: DeviceState,
    pub created: Instant,
    pub last_poll: Option<Instant>,
    pub interval: Duration,
}

/// What polling the token endpoint with a device code finds.
pub enum DevicePoll {
    Pending,
    SlowDown,
    Denied,
    Expired,
    Approved(Approval),
    Unknown,
}

#[derive(Default)]
pub struct Devices {
    /// By device code hash.
    map: Mutex<HashMap<String, DeviceRequest>>,
}

/// RFC 8628 §6.1: no vowels (no words), no look-alikes; 20^8 codes.
const USER_CODE_ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";

fn new_user_code() -> String {
    let mut rng = rand::thread_rng();
    let c: String = (0..8)
        .map(|_| USER_CODE_ALPHABET[rng.gen_range(0..USER_CODE_ALPHABET.len())] as char)
        .collect();
    format!("{}-{}", &c[..4], &c[4..])
}

/// What a user typed, in the form codes are issued in.
pub fn normalize_user_code(typed: &str) -> String {
    let c: String = typed
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if c.len() == 8 {
        format!("{}-{}", &c[..4], &c[4..])
    } else {
        c
    }
}

impl Devices {
    /// Starts a device authorization; returns (device_code, user_code).
    pub fn start(&self, client_id: &str, scope: &str) -> (String, String) {
        let device_code = new_secret();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, d| d.created.elapsed() < DEVICE_CODE_TTL);
        let user_code = loop {
            let c = new_user_code();
            if !map.values().any(|d| d.user_code == c) {
                break c;
            }
        };
        map.insert(
            hash_secret(&device_code),
            DeviceRequest {
                client_id: client_id.into(),
                scope: scope.into(),
                user_code: user_code.clone(),
                state: DeviceState::Pending,
                created: Instant::now(),
                last_poll: None,
                interval: DEVICE_POLL_INTERVAL,
            },
        );
        (device_code, user_code)
    }

    /// The pending request a user code names.
    pub fn by_user_code(&self, user_code: &str) -> Option<DeviceRequest> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.values()
            .find(|d| {
                d.user_code == user_code
                    && matches!(d.state, DeviceState::Pending)
                    && d.created.elapsed() < DEVICE_CODE_TTL
            })
            .cloned()
    }

    /// The user's decision; false when the code is no longer pending.
    pub fn decide(&self, user_code: &str, decision: DeviceState) -> bool {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        match map
            .values_mut()
            .find(|d| d.user_code == user_code && matches!(d.state, DeviceState::Pending))
        {
            Some(d) if d.created.elapsed() < DEVICE_CODE_TTL => {
                d.state = decision;
                true
            }
            _ => false,
        }
    }

    /// A poll by the client that holds `device_code`.
    pub fn poll(&self, device_code: &str, client_id: &str) -> DevicePoll {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let key = hash_secret(device_code);
        let Some(d) = map.get_mut(&key) else {
            return DevicePoll::Unknown;
        };
        if d.client_id != client_id {
            return DevicePoll::Unknown;
        }
        if d.created.elapsed() >= DEVICE_CODE_TTL {
            map.remove(&key);
            return DevicePoll::Expired;
        }
        let now = Instant::now();
        let too_soon = d
            .last_poll
            .is_some_and(|last| now.duration_since(last) < d.interval);
        d.last_poll = Some(now);
        match d.state.clone() {
            DeviceState::Pending if too_soon => {
                d.interval += DEVICE_POLL_INTERVAL;
                DevicePoll::SlowDown
            }
            DeviceState::Pending => DevicePoll::Pending,
            DeviceState::Denied => {
                map.remove(&key);
                DevicePoll::Denied
            }
            DeviceState::Approved(approval) => {
                map.remove(&key);
                DevicePoll::Approved(approval)
            }
        }
    }
}

/// A token bucket per client address.
pub struct RequestLimiter {
    burst: f64,
    per_second: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RequestLimiter {
    pub fn new(burst: u32, per_second: u32) -> Self {
        Self {
            burst: burst as f64,
            per_second: per_second as f64,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Ok, or how long to wait.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if map.len() > 10_000 {
            // Full buckets are the default: forgetting them changes nothing.
            let (burst, rate) = (self.burst, self.per_second);
            map.retain(|_, (tokens, at)| *tokens + now.duration_since(*at).as_secs_f64() * rate < burst);
        }
        let (tokens, at) = map.entry(ip.to_canonical()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.per_second).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.per_second))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approval() -> Approval {
        Approval {
            user: "u".into(),
            client_id: "c".into(),
            scope: "xmpp".into(),
            nonce: None,
            auth_time: 0,
        }
    }

    #[test]
    fn codes_are_one_time() {
        let codes = Codes::default();
        let code = codes.issue(PendingCode {
            approval: approval(),
            redirect_uri: "https://x/cb".into(),
            redirect_uri_given: true,
            code_challenge: None,
            code_challenge_method: "S256".into(),
        });
        assert!(matches!(codes.take(&code), CodeLookup::Pending(_)));
        codes.mark_used(&code, "g1");
        assert!(matches!(codes.take(&code), CodeLookup::Reused(g) if g == "g1"));
        assert!(matches!(codes.take("nope"), CodeLookup::Unknown));
    }

    #[test]
    fn device_flow_states() {
        let devices = Devices::default();
        let (device_code, user_code) = devices.start("c", "xmpp");
        assert_eq!(user_code.len(), 9);
        assert!(matches!(devices.poll(&device_code, "other"), DevicePoll::Unknown));
        assert!(matches!(devices.poll(&device_code, "c"), DevicePoll::Pending));
        assert!(matches!(devices.poll(&device_code, "c"), DevicePoll::SlowDown));
        let typed = user_code.to_lowercase().replace('-', " ");
        assert_eq!(normalize_user_code(&typed), user_code);
        assert!(devices.by_user_code(&user_code).is_some());
        assert!(devices.decide(&user_code, DeviceState::Approved(approval())));
        assert!(!devices.decide(&user_code, DeviceState::Denied), "decided once");
        assert!(devices.by_user_code(&user_code).is_none());
        // The interval since the last poll has not passed, but an approved
        // request is answered at once.
        assert!(matches!(devices.poll(&device_code, "c"), DevicePoll::Approved(_)));
        assert!(matches!(devices.poll(&device_code, "c"), DevicePoll::Unknown));
    }

    #[test]
    fn limiter_allows_a_burst_then_refills() {
        let limiter = RequestLimiter::new(3, 1000);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..3 {
            assert!(limiter.check(ip).is_ok());
        }
        assert!(limiter.check(ip).is_err());
        std::thread::sleep(Duration::from_millis(5));
        assert!(limiter.check(ip).is_ok());
        assert!(limiter.check("10.0.0.1".parse().unwrap()).is_ok());
    }
}
