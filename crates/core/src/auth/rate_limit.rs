//! Failed-login limiting per source address (Prosody's mod_limit_auth
//! options `limit_auth_period` and `limit_auth_max`): past the limit, logins
//! from that address get `temporary-auth-failure` until the period ends, so
//! passwords cannot be guessed at line speed.
//!
//! Once an address has failed, its attempts in progress count against the
//! limit too, so a burst of concurrent guesses cannot slip in before their
//! failures are recorded; an address with a clean record may log in many
//! sessions at once (a NAT, an office proxy).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    in_flight: u32,
    since: Instant,
}

pub struct AuthRateLimiter {
    period: Duration,
    max_failures: u32,
    entries: Mutex<HashMap<IpAddr, Entry>>,
}

/// One login attempt under way; dropping it without an outcome (the
/// connection went away) counts as neither success nor failure.
pub struct Attempt<'a> {
    limiter: &'a AuthRateLimiter,
    ip: IpAddr,
    done: bool,
}

impl Attempt<'_> {
    pub fn succeeded(mut self) {
        self.done = true;
        let mut map = self.limiter.lock();
        map.remove(&self.ip);
    }

    pub fn failed(mut self) {
        self.done = true;
        let mut map = self.limiter.lock();
        if let Some(e) = map.get_mut(&self.ip) {
            e.in_flight = e.in_flight.saturating_sub(1);
            e.failures += 1;
        }
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.done {
            let mut map = self.limiter.lock();
            if let Some(e) = map.get_mut(&self.ip) {
                e.in_flight = e.in_flight.saturating_sub(1);
            }
        }
    }
}

impl AuthRateLimiter {
    pub fn new(period: Duration, max_failures: u32) -> Self {
        Self {
            period,
            max_failures,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts an attempt, or None while the address has used up its
    /// failures (and attempts under way) for the period.
    pub fn begin(&self, ip: IpAddr) -> Option<Attempt<'_>> {
        let mut map = self.lock();
        // Bound memory under a spray of addresses: forget expired entries.
        if map.len() > 100_000 {
            let period = self.period;
            map.retain(|_, e| e.in_flight > 0 || e.since.elapsed() < period);
        }
        let now = Instant::now();
        let entry = map.entry(ip).or_insert(Entry {
            failures: 0,
            in_flight: 0,
            since: now,
        });
        if entry.since.elapsed() >= self.period {
            entry.failures = 0;
            entry.since = now;
        }
        let pending = if entry.failures > 0 { entry.in_flight } else { 0 };
        if entry.failures + pending >= self.max_failures {
            return None;
        }
        entry.in_flight += 1;
        Some(Attempt {
            limiter: self,
            ip,
            done: false,
        })
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
            l.begin(ip).expect("allowed").failed();
        }
        assert!(l.begin(ip).is_none());
        assert!(l.begin(other).is_some());
    }

    #[test]
    fn after_a_failure_concurrent_attempts_count_against_the_limit() {
        let l = AuthRateLimiter::new(Duration::from_secs(60), 3);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        l.begin(ip).expect("first").failed();
        let a = l.begin(ip).expect("second");
        let b = l.begin(ip).expect("third");
        assert!(
            l.begin(ip).is_none(),
            "a fourth guess while two are in flight after a failure"
        );
        a.succeeded();
        drop(b);
        assert!(l.begin(ip).is_some());
    }

    #[test]
    fn a_clean_address_may_log_in_many_sessions_at_once() {
        let l = AuthRateLimiter::new(Duration::from_secs(60), 2);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let attempts: Vec<_> = (0..10).map(|_| l.begin(ip).expect("allowed")).collect();
        for a in attempts {
            a.succeeded();
        }
    }

    #[test]
    fn abandoned_attempts_free_their_slot() {
        let l = AuthRateLimiter::new(Duration::from_secs(60), 1);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        drop(l.begin(ip));
        assert!(l.begin(ip).is_some());
    }

    #[test]
    fn period_expiry_unblocks() {
        let l = AuthRateLimiter::new(Duration::from_millis(1), 1);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        l.begin(ip).expect("allowed").failed();
        std::thread::sleep(Duration::from_millis(5));
        assert!(l.begin(ip).is_some());
    }
}
