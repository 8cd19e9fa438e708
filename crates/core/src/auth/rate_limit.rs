//! Failed-login limiting per source address (Prosody's mod_limit_auth
//! options `limit_auth_period` and `limit_auth_max`): past the limit, logins
//! from that address get `temporary-auth-failure` until the period ends, so
//! passwords cannot be guessed at line speed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct AuthRateLimiter {
    period: Duration,
    max_failures: u32,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl AuthRateLimiter {
    pub fn new(period: Duration, max_failures: u32) -> Self {
        Self {
            period,
            max_failures,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// True while the address has used up its failures for the period.
    pub fn is_blocked(&self, ip: IpAddr) -> bool {
        let map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        matches!(map.get(&ip), Some((n, since)) if *n >= self.max_failures && since.elapsed() < self.period)
    }

    pub fn record_failure(&self, ip: IpAddr) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        // Bound memory under a spray of addresses: forget expired entries.
        if map.len() > 100_000 {
            map.retain(|_, (_, since)| since.elapsed() < self.period);
        }
        let entry = map.entry(ip).or_insert((0, now));
        if entry.1.elapsed() >= self.period {
            *entry = (0, now);
        }
        entry.0 += 1;
    }

    pub fn record_success(&self, ip: IpAddr) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_max_failures_and_success_resets() {
        let l = AuthRateLimiter::new(Duration::from_secs(60), 3);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert!(!l.is_blocked(ip));
            l.record_failure(ip);
        }
        assert!(l.is_blocked(ip));
        assert!(!l.is_blocked(other));
        l.record_success(ip);
        assert!(!l.is_blocked(ip));
    }

    #[test]
    fn period_expiry_unblocks() {
        let l = AuthRateLimiter::new(Duration::from_millis(1), 1);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        l.record_failure(ip);
        std::thread::sleep(Duration::from_millis(5));
        assert!(!l.is_blocked(ip));
    }
}
