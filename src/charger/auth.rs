//! Charger authentication for OCPP security profiles 1 and 2 (HTTP Basic auth
//! with the charger's identity as user name), and a limiter that makes a
//! flood of bad passwords cost the attacker, never an honest charger.

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

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

/// Counts failed handshakes per key (an identity, an address) so that a
/// flood of bad passwords costs whoever sends it and never an honest charger.
///
/// - Only failures are counted and only failures are ever refused: the
///   handshake checks the password first, and one that presents the right
///   password (or needs none) is accepted whatever failed before under its
///   identity or from its address. A charger's own password check is one
///   salted SHA-256, so checking every attempt stays cheap.
/// - A failure from a key over the limit within its window is answered 429
///   with `Retry-After`, after a short tarpit delay that costs the sender
///   time. At most [`MAX_TARPITTED`] handshakes wait at once; beyond that
///   they are answered at once, so a flood cannot hold unbounded resources.
/// - Memory is fixed: counters live in a table of [`SLOTS`] slots picked by a
///   hash of the key with a per-process random seed. Keys sharing a slot
///   share a count, which can only answer someone's failures 429 sooner,
///   never refuse a right password; a flood from a million addresses costs
///   the same memory as one from a single address.
pub struct FailureLimiter {
    max_failures: u32,
    window: Duration,
    slots: Mutex<Vec<Slot>>,
    seed: RandomState,
    tarpit: Duration,
    tarpits: Semaphore,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    failures: u32,
    /// When the slot's current window began (its first failure in it).
    since: Option<Instant>,
}

/// Slots of the failure table (24 bytes each).
pub const SLOTS: usize = 16_384;
/// How long a failure over the limit waits before its 429.
pub const TARPIT: Duration = Duration::from_millis(500);
/// How many handshakes may sit in the tarpit at once.
pub const MAX_TARPITTED: usize = 256;

impl FailureLimiter {
    /// `max_failures` per key within `window`; failures beyond are 429.
    pub fn new(max_failures: u32, window: Duration) -> Self {
        Self::with_table(max_failures, window, SLOTS, TARPIT, MAX_TARPITTED)
    }

    fn with_table(
        max_failures: u32,
        window: Duration,
        slots: usize,
        tarpit: Duration,
        max_tarpitted: usize,
    ) -> Self {
        FailureLimiter {
            max_failures,
            window,
            slots: Mutex::new(vec![Slot::default(); slots.max(1)]),
            seed: RandomState::new(),
            tarpit,
            tarpits: Semaphore::new(max_tarpitted),
        }
    }

    fn slot_of(&self, key: &str, slots: usize) -> usize {
        (self.seed.hash_one(key) % slots as u64) as usize
    }

    /// Counts a failed handshake against each key. `Some(retry_after)` when
    /// any of them is now over the limit: answer 429, not the failure itself.
    pub fn record_failure(&self, keys: &[&str]) -> Option<Duration> {
        self.record_failure_at(keys, Instant::now())
    }

    fn record_failure_at(&self, keys: &[&str], now: Instant) -> Option<Duration> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let count = slots.len();
        let mut retry_after: Option<Duration> = None;
        for key in keys {
            let slot = &mut slots[self.slot_of(key, count)];
            let since = match slot.since {
                Some(since) if now.saturating_duration_since(since) < self.window => since,
                _ => {
                    *slot = Slot {
                        failures: 0,
                        since: Some(now),
                    };
                    now
                }
            };
            slot.failures = slot.failures.saturating_add(1);
            if slot.failures > self.max_failures {
                let left = self
                    .window
                    .saturating_sub(now.saturating_duration_since(since));
                retry_after = retry_after.max(Some(left));
            }
        }
        retry_after
    }

    /// Whether any key is already over the limit, without counting anything:
    /// `Some(retry_after)` until its window ends.
    pub fn blocked(&self, keys: &[&str]) -> Option<Duration> {
        let now = Instant::now();
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let count = slots.len();
        keys.iter()
            .filter_map(|key| {
                let slot = slots[self.slot_of(key, count)];
                let since = slot.since?;
                let age = now.saturating_duration_since(since);
                (age < self.window && slot.failures >= self.max_failures)
                    .then(|| self.window.saturating_sub(age))
            })
            .max()
    }

    /// Holds a failure over the limit for a moment before it is answered, so
    /// a flood costs its sender time. True when it waited; false when the
    /// tarpit is full and the answer must go out at once.
    pub async fn tarpit(&self) -> bool {
        let Ok(_permit) = self.tarpits.try_acquire() else {
            return false;
        };
        tokio::time::sleep(self.tarpit).await;
        true
    }
}

/// The limiter key of an address. IPv6 is keyed by its /64: one subscriber
/// or host usually holds a whole /64, so counting single addresses would let
/// it spread a flood over 2^64 of them.
pub fn address_key(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => format!("ip:{v4}"),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("ip:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
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
    fn only_failures_over_the_limit_are_answered_429_until_the_window_ends() {
        let limiter = FailureLimiter::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for n in 0..3 {
            let at = t0 + Duration::from_secs(n);
            assert_eq!(limiter.record_failure_at(&["id:CP1"], at), None);
        }
        // The fourth within the window: 429, retry when the window ends.
        assert_eq!(
            limiter.record_failure_at(&["id:CP1"], t0 + Duration::from_secs(20)),
            Some(Duration::from_secs(40))
        );
        // A new window counts afresh.
        assert_eq!(
            limiter.record_failure_at(&["id:CP1"], t0 + Duration::from_secs(60)),
            None
        );
    }

    #[test]
    fn a_failure_counts_against_every_key_and_any_key_over_the_limit_decides() {
        let limiter = FailureLimiter::new(2, Duration::from_secs(60));
        // Two keys in different slots.
        let slots = SLOTS;
        let ip = "ip:10.0.0.1";
        let id = (0..)
            .map(|n| format!("id:CP{n}"))
            .find(|k| limiter.slot_of(k, slots) != limiter.slot_of(ip, slots))
            .unwrap();
        let now = Instant::now();
        assert_eq!(limiter.record_failure_at(&[ip], now), None);
        assert_eq!(limiter.record_failure_at(&[ip], now), None);
        // The identity's first failure, from an address over the limit: 429.
        assert!(limiter.record_failure_at(&[&id, ip], now).is_some());
        // The identity itself has one failure, well within its limit.
        assert_eq!(
            limiter.slots.lock().unwrap()[limiter.slot_of(&id, slots)].failures,
            1
        );
    }

    #[test]
    fn memory_stays_fixed_under_a_flood_from_many_addresses() {
        let limiter = FailureLimiter::new(10, Duration::from_secs(60));
        let now = Instant::now();
        let attacker = "id:CP-VICTIM";
        for _ in 0..11 {
            limiter.record_failure_at(&[attacker], now);
        }
        for n in 0..200_000u32 {
            let ip = IpAddr::from(n.to_be_bytes());
            limiter.record_failure_at(&[&address_key(ip)], now);
        }
        assert_eq!(limiter.slots.lock().unwrap().len(), SLOTS);
        // Nothing was evicted to make room: the key over the limit still is.
        assert!(limiter.record_failure_at(&[attacker], now).is_some());
    }

    #[tokio::test]
    async fn the_tarpit_holds_a_bounded_number_of_handshakes() {
        let pause = Duration::from_millis(100);
        let limiter = FailureLimiter::with_table(1, Duration::from_secs(60), 8, pause, 2);
        let started = Instant::now();
        let (a, b, c) = tokio::join!(limiter.tarpit(), limiter.tarpit(), limiter.tarpit());
        // Two waited; the third found the tarpit full and went at once.
        assert_eq!((a, b, c), (true, true, false));
        assert!(started.elapsed() >= pause);
        assert!(limiter.tarpit().await, "free again afterwards");
    }

    #[test]
    fn addresses_are_keyed_by_host_and_ipv6_by_its_64() {
        let key = |s: &str| address_key(s.parse().unwrap());
        assert_eq!(key("192.0.2.7"), "ip:192.0.2.7");
        assert_eq!(key("::ffff:192.0.2.7"), "ip:192.0.2.7");
        assert_eq!(key("2001:db8:1:2:aaaa::1"), "ip:2001:db8:1:2::/64");
        assert_eq!(key("2001:db8:1:2:bbbb::9"), key("2001:db8:1:2:aaaa::1"));
        assert_ne!(key("2001:db8:1:3::1"), key("2001:db8:1:2::1"));
    }
}
