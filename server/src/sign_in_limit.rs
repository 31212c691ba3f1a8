//! How many password guesses a client gets.
//!
//! An attempt is counted before its password is checked, under one lock, so any number of
//! guesses sent at once still gets at most the allowed number checked. Attempts are counted per
//! client address and name (so nobody elsewhere can lock a user out by naming them) and per
//! client address alone (so one address cannot try every name). A success forgets the attempts
//! of its address and name. Entries older than the window are forgotten, and the table never
//! holds more than [`MAX_TRACKED`] keys: beyond that the least recently used go first.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::LoginSettings;

/// The most keys (address and name pairs, and addresses) remembered at once.
pub const MAX_TRACKED: usize = 20_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Pair(IpAddr, String),
    Address(IpAddr),
}

#[derive(Debug, Default)]
struct Attempts {
    by_key: HashMap<Key, VecDeque<Instant>>,
}

/// Counts sign-in attempts; cheap to clone (one shared table).
#[derive(Debug, Clone)]
pub struct SignInLimiter {
    settings: LoginSettings,
    attempts: Arc<Mutex<Attempts>>,
}

/// An attempt counted against its client; forgotten again only by [`Attempt::succeeded`].
#[derive(Debug)]
#[must_use = "an attempt is a failure unless it is marked as a success"]
pub struct Attempt {
    limiter: SignInLimiter,
    pair: Key,
    address: Key,
    at: Instant,
}

impl SignInLimiter {
    /// A limiter with these limits.
    pub fn new(settings: LoginSettings) -> SignInLimiter {
        SignInLimiter {
            settings,
            attempts: Arc::default(),
        }
    }

    fn window(&self) -> Duration {
        Duration::from_secs(self.settings.window_secs)
    }

    /// Counts an attempt of `name` from `client`, or says how long to wait when the client has
    /// used up its attempts.
    pub fn begin(&self, client: IpAddr, name: &str) -> Result<Attempt, Duration> {
        self.begin_at(client, name, Instant::now())
    }

    fn begin_at(&self, client: IpAddr, name: &str, now: Instant) -> Result<Attempt, Duration> {
        let window = self.window();
        let pair = Key::Pair(client, name.to_string());
        let address = Key::Address(client);
        let mut attempts = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        let mut wait = Duration::ZERO;
        for (key, allowed) in [
            (&pair, self.settings.max_failures),
            (&address, self.settings.max_failures_per_address),
        ] {
            if let Some(times) = attempts.by_key.get_mut(key) {
                while times
                    .front()
                    .is_some_and(|t| now.saturating_duration_since(*t) >= window)
                {
                    times.pop_front();
                }
                if times.len() >= allowed
                    && let Some(oldest) = times.front()
                {
                    wait = wait.max(window.saturating_sub(now.saturating_duration_since(*oldest)));
                }
            }
        }
        if !wait.is_zero() {
            return Err(wait);
        }
        for key in [&pair, &address] {
            attempts
                .by_key
                .entry(key.clone())
                .or_default()
                .push_back(now);
        }
        if attempts.by_key.len() > MAX_TRACKED {
            attempts.forget_old(now, window);
        }
        drop(attempts);
        Ok(Attempt {
            limiter: self.clone(),
            pair,
            address,
            at: now,
        })
    }

    /// How many keys are remembered now.
    pub fn tracked(&self) -> usize {
        self.attempts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_key
            .len()
    }
}

impl Attempts {
    /// Drops every expired entry, then, while still over the bound, the least recently used.
    fn forget_old(&mut self, now: Instant, window: Duration) {
        self.by_key.retain(|_, times| {
            times.retain(|t| now.saturating_duration_since(*t) < window);
            !times.is_empty()
        });
        if self.by_key.len() <= MAX_TRACKED {
            return;
        }
        let mut last_use: Vec<(Instant, Key)> = self
            .by_key
            .iter()
            .filter_map(|(key, times)| times.back().map(|t| (*t, key.clone())))
            .collect();
        last_use.sort_by_key(|(t, _)| *t);
        // Down to nine tenths, so that the next few attempts do not sort again.
        let excess = self.by_key.len() - MAX_TRACKED * 9 / 10;
        for (_, key) in last_use.into_iter().take(excess) {
            self.by_key.remove(&key);
        }
    }
}

impl Attempt {
    /// The password was right: the client's failures with this name are forgotten, and this
    /// attempt does not count against its address.
    pub fn succeeded(self) {
        let mut attempts = self
            .limiter
            .attempts
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        attempts.by_key.remove(&self.pair);
        if let Some(times) = attempts.by_key.get_mut(&self.address) {
            if let Some(i) = times.iter().position(|t| *t == self.at) {
                times.remove(i);
            }
            if times.is_empty() {
                attempts.by_key.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(max_failures: usize, per_address: usize) -> SignInLimiter {
        SignInLimiter::new(LoginSettings {
            max_failures,
            max_failures_per_address: per_address,
            window_secs: 60,
            concurrent_hashes: 1,
        })
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn attempts_count_before_they_are_checked() {
        let limiter = limiter(3, 100);
        let now = Instant::now();
        // Three attempts in flight at once use up the allowance; the fourth waits.
        let held: Vec<Attempt> = (0..3)
            .map(|_| limiter.begin_at(ip("192.0.2.1"), "ada", now).unwrap())
            .collect();
        let wait = limiter
            .begin_at(ip("192.0.2.1"), "ada", now + Duration::from_secs(10))
            .unwrap_err();
        assert_eq!(wait, Duration::from_secs(50));
        drop(held);
        // The window passes.
        assert!(
            limiter
                .begin_at(ip("192.0.2.1"), "ada", now + Duration::from_secs(60))
                .is_ok()
        );
    }

    #[test]
    fn a_name_locked_from_one_address_is_open_from_another() {
        let limiter = limiter(2, 100);
        let now = Instant::now();
        for _ in 0..2 {
            let _ = limiter.begin_at(ip("203.0.113.9"), "ada", now).unwrap();
        }
        assert!(limiter.begin_at(ip("203.0.113.9"), "ada", now).is_err());
        limiter
            .begin_at(ip("192.0.2.1"), "ada", now)
            .unwrap()
            .succeeded();
        assert!(limiter.begin_at(ip("203.0.113.9"), "bob", now).is_ok());
    }

    #[test]
    fn one_address_cannot_try_every_name() {
        let limiter = limiter(10, 5);
        let now = Instant::now();
        for i in 0..5 {
            let _ = limiter
                .begin_at(ip("203.0.113.9"), &format!("user{i}"), now)
                .unwrap();
        }
        assert!(limiter.begin_at(ip("203.0.113.9"), "user99", now).is_err());
    }

    #[test]
    fn a_success_forgets_the_failures_of_its_name_and_address() {
        let limiter = limiter(2, 100);
        let now = Instant::now();
        let _ = limiter.begin_at(ip("192.0.2.1"), "ada", now).unwrap();
        limiter
            .begin_at(ip("192.0.2.1"), "ada", now)
            .unwrap()
            .succeeded();
        assert_eq!(
            limiter.tracked(),
            1,
            "only the earlier failure of the address"
        );
        assert!(limiter.begin_at(ip("192.0.2.1"), "ada", now).is_ok());
        assert!(limiter.begin_at(ip("192.0.2.1"), "ada", now).is_ok());
    }

    #[test]
    fn memory_stays_bounded() {
        let limiter = limiter(10, 100);
        let now = Instant::now();
        for i in 0..(MAX_TRACKED as u32) {
            let address = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let _ = limiter.begin_at(address, "ada", now).unwrap();
        }
        assert!(limiter.tracked() <= MAX_TRACKED, "{}", limiter.tracked());
        // Once the window has passed, everything old goes at the next overflow.
        let later = now + Duration::from_secs(61);
        for i in 0..2_000u32 {
            let address = IpAddr::from(std::net::Ipv4Addr::from(0x0b00_0000 + i));
            let _ = limiter.begin_at(address, "bob", later).unwrap();
        }
        assert!(limiter.tracked() <= 4_000, "{}", limiter.tracked());
    }
}
