//! The optional positive-result cache (`http_auth_cache_ttl`): remembers
//! that a password was right for a while, keyed on a salted hash so the
//! password itself is never kept. A wrong password is never cached.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::RngCore;
use sha2::{Digest, Sha256};

/// (host, user) → (salted digest of the password, when it was checked).
type Entries = HashMap<(String, String), ([u8; 32], Instant)>;

pub struct PasswordCache {
    ttl: Duration,
    /// Per-process random salt: the hashes are useless outside it.
    salt: [u8; 32],
    entries: Mutex<Entries>,
}

/// Entries kept at most; past it expired ones are dropped, then all.
const MAX_ENTRIES: usize = 100_000;

impl PasswordCache {
    pub fn new(ttl: Duration) -> Self {
        let mut salt = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut salt);
        Self {
            ttl,
            salt,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn digest(&self, host: &str, user: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.salt);
        for part in [host, user, password] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        h.finalize().into()
    }

    pub fn is_enabled(&self) -> bool {
        !self.ttl.is_zero()
    }

    pub fn check(&self, host: &str, user: &str, password: &str) -> bool {
        if !self.is_enabled() {
            return false;
        }
        let digest = self.digest(host, user, password);
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.get(&(host.to_string(), user.to_string())) {
            Some((stored, at)) => {
                at.elapsed() < self.ttl && subtle::ConstantTimeEq::ct_eq(&stored[..], &digest[..]).into()
            }
            None => false,
        }
    }

    pub fn remember(&self, host: &str, user: &str, password: &str) {
        if !self.is_enabled() {
            return;
        }
        let digest = self.digest(host, user, password);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_ENTRIES {
            let ttl = self.ttl;
            entries.retain(|_, (_, at)| at.elapsed() < ttl);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert((host.to_string(), user.to_string()), (digest, Instant::now()));
    }

    pub fn forget(&self, host: &str, user: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.remove(&(host.to_string(), user.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_only_the_right_password_until_forgotten() {
        let c = PasswordCache::new(Duration::from_secs(60));
        assert!(!c.check("h", "u", "pw"));
        c.remember("h", "u", "pw");
        assert!(c.check("h", "u", "pw"));
        assert!(!c.check("h", "u", "other"));
        assert!(!c.check("h", "v", "pw"));
        c.forget("h", "u");
        assert!(!c.check("h", "u", "pw"));
    }

    #[test]
    fn disabled_with_zero_ttl() {
        let c = PasswordCache::new(Duration::ZERO);
        c.remember("h", "u", "pw");
        assert!(!c.check("h", "u", "pw"));
    }
}
