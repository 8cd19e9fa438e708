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
/// Expired device codes are remembered this much longer, so that a late
/// poll hears `expired_token`, not "unknown".
const EXPIRED_DEVICE_MEMORY: Duration = Duration::from_secs(600);
/// Bounds on what unauthenticated or lightly authenticated requests can
/// make the server hold (per host): beyond them, new flows are refused
/// until old ones expire.
pub const MAX_PENDING_CODES: usize = 20_000;
pub const MAX_PENDING_DEVICES: usize = 10_000;
const MAX_PENDING_DEVICES_PER_CLIENT: usize = 100;

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
    /// Being exchanged; `reused` once it was presented again meanwhile.
    Exchanging {
        client_id: String,
        reused: bool,
    },
    /// Exchanged by `client_id` for the grant named here.
    Used {
        client_id: String,
        grant_id: String,
    },
}

/// What presenting a code found.
pub enum CodeLookup {
    Pending(Box<PendingCode>),
    /// Presented a second time by the client it was issued to: the grant
    /// it produced (if any yet) must go.
    Reused(Option<String>),
    Unknown,
}

#[derive(Default)]
pub struct Codes {
    map: Mutex<HashMap<String, (CodeState, Instant)>>,
}

impl Codes {
    /// Stores a code; returns the code to hand to the client, or None
    /// when too many are pending.
    pub fn issue(&self, pending: PendingCode) -> Option<String> {
        let code = new_secret();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if map.len() >= MAX_PENDING_CODES {
            map.retain(|_, (state, at)| match state {
                CodeState::Pending(_) | CodeState::Exchanging { .. } => now.duration_since(*at) < CODE_TTL,
                CodeState::Used { .. } => now.duration_since(*at) < USED_CODE_MEMORY,
            });
            if map.len() >= MAX_PENDING_CODES {
                return None;
            }
        }
        map.insert(hash_secret(&code), (CodeState::Pending(Box::new(pending)), now));
        Some(code)
    }

    /// Takes a code for exchange by `client_id`: it can be taken once.
    /// Another client presenting it learns nothing and changes nothing.
    pub fn take(&self, code: &str, client_id: &str) -> CodeLookup {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let key = hash_secret(code);
        let Some((state, at)) = map.get_mut(&key) else {
            return CodeLookup::Unknown;
        };
        match state {
            CodeState::Used {
                client_id: owner,
                grant_id,
            } if owner == client_id => CodeLookup::Reused(Some(grant_id.clone())),
            CodeState::Exchanging {
                client_id: owner,
                reused,
            } if owner == client_id => {
                *reused = true;
                CodeLookup::Reused(None)
            }
            CodeState::Pending(p) if p.approval.client_id != client_id => CodeLookup::Unknown,
            CodeState::Pending(_) if at.elapsed() >= CODE_TTL => {
                map.remove(&key);
                CodeLookup::Unknown
            }
            CodeState::Pending(_) => {
                let exchanging = CodeState::Exchanging {
                    client_id: client_id.to_string(),
                    reused: false,
                };
                let CodeState::Pending(p) = std::mem::replace(state, exchanging) else {
                    unreachable!("matched Pending above");
                };
                *at = Instant::now();
                CodeLookup::Pending(p)
            }
            _ => CodeLookup::Unknown,
        }
    }

    /// Records the grant a code was exchanged for; false when the code was
    /// presented again during the exchange (the grant must then go too).
    pub fn mark_used(&self, code: &str, grant_id: &str) -> bool {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let Some((state, _)) = map.get_mut(&hash_secret(code)) else {
            return true;
        };
        let (client_id, reused) = match state {
            CodeState::Exchanging { client_id, reused } => (std::mem::take(client_id), *reused),
            _ => return true,
        };
        *state = CodeState::Used {
            client_id,
            grant_id: grant_id.to_string(),
        };
        !reused
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
    table: Mutex<DeviceTable>,
}

#[derive(Default)]
struct DeviceTable {
    /// By device code hash.
    requests: HashMap<String, DeviceRequest>,
    /// Device code hash by user code.
    by_user_code: HashMap<String, String>,
}

impl DeviceTable {
    fn forget_expired(&mut self) {
        let by_user_code = &mut self.by_user_code;
        self.requests.retain(|_, d| {
            let keep = d.created.elapsed() < DEVICE_CODE_TTL + EXPIRED_DEVICE_MEMORY;
            if !keep {
                by_user_code.remove(&d.user_code);
            }
            keep
        });
    }

    fn remove(&mut self, key: &str) {
        if let Some(d) = self.requests.remove(key) {
            self.by_user_code.remove(&d.user_code);
        }
    }

    fn pending_by_user_code(&mut self, user_code: &str) -> Option<&mut DeviceRequest> {
        let key = self.by_user_code.get(user_code)?;
        self.requests
            .get_mut(key)
            .filter(|d| matches!(d.state, DeviceState::Pending) && d.created.elapsed() < DEVICE_CODE_TTL)
    }
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
    fn lock(&self) -> std::sync::MutexGuard<'_, DeviceTable> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a device authorization; returns (device_code, user_code), or
    /// None when too many are pending (for this client or in all).
    pub fn start(&self, client_id: &str, scope: &str) -> Option<(String, String)> {
        let device_code = new_secret();
        let mut table = self.lock();
        table.forget_expired();
        let of_client = table
            .requests
            .values()
            .filter(|d| d.client_id == client_id)
            .count();
        if table.requests.len() >= MAX_PENDING_DEVICES || of_client >= MAX_PENDING_DEVICES_PER_CLIENT {
            return None;
        }
        let user_code = loop {
            let c = new_user_code();
            if !table.by_user_code.contains_key(&c) {
                break c;
            }
        };
        let key = hash_secret(&device_code);
        table.by_user_code.insert(user_code.clone(), key.clone());
        table.requests.insert(
            key,
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
        Some((device_code, user_code))
    }

    /// The pending request a user code names.
    pub fn by_user_code(&self, user_code: &str) -> Option<DeviceRequest> {
        self.lock().pending_by_user_code(user_code).map(|d| d.clone())
    }

    /// The user's decision; false when the code is no longer pending.
    pub fn decide(&self, user_code: &str, decision: DeviceState) -> bool {
        match self.lock().pending_by_user_code(user_code) {
            Some(d) => {
                d.state = decision;
                true
            }
            None => false,
        }
    }

    /// A poll by the client that holds `device_code`.
    pub fn poll(&self, device_code: &str, client_id: &str) -> DevicePoll {
        let mut table = self.lock();
        let key = hash_secret(device_code);
        let Some(d) = table.requests.get_mut(&key) else {
            return DevicePoll::Unknown;
        };
        if d.client_id != client_id {
            return DevicePoll::Unknown;
        }
        if d.created.elapsed() >= DEVICE_CODE_TTL {
            table.remove(&key);
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
                table.remove(&key);
                DevicePoll::Denied
            }
            DeviceState::Approved(approval) => {
                table.remove(&key);
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
        let pending = PendingCode {
            approval: approval(),
            redirect_uri: "https://x/cb".into(),
            redirect_uri_given: true,
            code_challenge: None,
            code_challenge_method: "S256".into(),
        };
        let code = codes.issue(pending.clone()).unwrap();
        assert!(
            matches!(codes.take(&code, "other"), CodeLookup::Unknown),
            "not another client's"
        );
        assert!(matches!(codes.take(&code, "c"), CodeLookup::Pending(_)));
        assert!(codes.mark_used(&code, "g1"));
        assert!(matches!(codes.take(&code, "c"), CodeLookup::Reused(Some(g)) if g == "g1"));
        assert!(
            matches!(codes.take(&code, "other"), CodeLookup::Unknown),
            "nor can another client revoke"
        );
        assert!(matches!(codes.take("nope", "c"), CodeLookup::Unknown));
        // Presented again while the first exchange runs: that exchange
        // learns it, and its grant goes too.
        let racing = codes.issue(pending).unwrap();
        assert!(matches!(codes.take(&racing, "c"), CodeLookup::Pending(_)));
        assert!(matches!(codes.take(&racing, "c"), CodeLookup::Reused(None)));
        assert!(!codes.mark_used(&racing, "g2"));
    }

    #[test]
    fn device_flow_states() {
        let devices = Devices::default();
        let (device_code, user_code) = devices.start("c", "xmpp").unwrap();
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
    fn pending_device_requests_are_bounded_per_client() {
        let devices = Devices::default();
        for _ in 0..MAX_PENDING_DEVICES_PER_CLIENT {
            assert!(devices.start("greedy", "xmpp").is_some());
        }
        assert!(devices.start("greedy", "xmpp").is_none());
        assert!(devices.start("modest", "xmpp").is_some());
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
