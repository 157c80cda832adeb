//! Charger authentication for OCPP security profiles 1 and 2 (HTTP Basic auth
//! with the charger's identity as user name), and a limiter that keeps a flood
//! of bad passwords from costing honest chargers anything.

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// Hashes a charger password for storage as `sha256$SALT$HASH`.
///
/// Why not argon2 as for people's passwords: OCPP `AuthorizationKey`s are
/// machine-generated secrets of 16 to 40 characters, not guessable words, so a
/// salted SHA-256 is as strong in practice, and it keeps tens of thousands of
/// chargers reconnecting after an outage from costing seconds of CPU each.
pub fn hash_password(password: &str) -> String {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    format!(
        "sha256${}${}",
        hex::encode(salt),
        hex::encode(digest(&salt, password))
    )
}

pub fn verify_password(password: &str, stored: &str) -> bool {
    let mut parts = stored.split('$');
    let (Some("sha256"), Some(salt), Some(hash), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let (Ok(salt), Ok(expected)) = (hex::decode(salt), hex::decode(hash)) else {
        return false;
    };
    digest(&salt, password).ct_eq(&expected).into()
}

fn digest(salt: &[u8], password: &str) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(password.as_bytes());
    h.finalize().to_vec()
}

/// Reads `Authorization: Basic base64(user:password)`.
pub fn parse_basic(header: &str) -> Option<(String, String)> {
    let encoded = header
        .trim()
        .strip_prefix("Basic ")
        .or_else(|| header.trim().strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    // OCPP allows any bytes in the key; read it as UTF-8 where it is.
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Counts failed handshakes per key (an identity, an address) in a sliding
/// window; a key over the limit is refused before any password is checked.
pub struct FailureLimiter {
    max_failures: u32,
    window: Duration,
    seen: Mutex<HashMap<String, (u32, Instant)>>,
}

impl FailureLimiter {
    pub fn new(max_failures: u32, window: Duration) -> Self {
        FailureLimiter {
            max_failures,
            window,
            seen: Mutex::new(HashMap::new()),
        }
    }

    pub fn is_blocked(&self, key: &str) -> bool {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        matches!(seen.get(key), Some((count, since)) if *count >= self.max_failures && since.elapsed() < self.window)
    }

    pub fn record_failure(&self, key: &str) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() > 100_000 {
            // Bounded memory under a flood from many addresses.
            let window = self.window;
            seen.retain(|_, (_, since)| since.elapsed() < window);
        }
        let entry = seen.entry(key.to_owned()).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= self.window {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }

    pub fn record_success(&self, key: &str) {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hashed_password_verifies_and_a_wrong_one_does_not() {
        let stored = hash_password("s3cret-key-0123456789");
        assert!(verify_password("s3cret-key-0123456789", &stored));
        assert!(!verify_password("s3cret-key-012345678", &stored));
        assert!(!verify_password("anything", "plaintext"));
        assert_ne!(hash_password("same"), hash_password("same"), "salted");
    }

    #[test]
    fn basic_auth_headers_are_read() {
        assert_eq!(
            parse_basic("Basic Q1AwMDE6cGFzczp3b3Jk"),
            Some(("CP001".into(), "pass:word".into()))
        );
        assert_eq!(parse_basic("Bearer abc"), None);
    }

    #[test]
    fn the_limiter_blocks_after_too_many_failures() {
        let limiter = FailureLimiter::new(3, Duration::from_secs(60));
        for _ in 0..3 {
            assert!(!limiter.is_blocked("ip:1.2.3.4"));
            limiter.record_failure("ip:1.2.3.4");
        }
        assert!(limiter.is_blocked("ip:1.2.3.4"));
        assert!(!limiter.is_blocked("ip:5.6.7.8"));
    }
}
