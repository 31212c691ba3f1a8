//! What a server keeps in memory to answer reads without asking the database each time: the
//! inventory lists and who a token or session is. Each is tagged with the change counter it was
//! read under (`change_counters`, bumped by triggers in the same transaction as any change, on
//! SQLite) and is used only while the counter still reads the same.
//!
//! The counters themselves are read once per burst of requests: a request waits for a read of
//! the counters that *began after it arrived* (so it sees every change committed before it), and
//! every request that arrived before that read began shares its answer. Under load one query
//! serves dozens of requests; alone, a request costs one small query.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::{StoreError, UserRecord};

/// The change counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Versions {
    /// Hosts, GPUs, IOMMU groups and claims.
    pub inventory: i64,
    /// Users, sessions and API tokens (not a token's last use).
    pub accounts: i64,
}

/// Reads of the change counters, shared by the requests waiting at the same time.
#[derive(Debug, Default)]
pub(super) struct CounterReads {
    /// One read at a time; waiters queue in order.
    turn: tokio::sync::Mutex<()>,
    /// How many reads have begun.
    begun: AtomicU64,
    /// The last read that succeeded: its number and what it read.
    last: Mutex<Option<(u64, Versions)>>,
}

impl CounterReads {
    /// Counters read after this call began: a finished read that began later, else a new one.
    pub async fn fresh<F, Fut>(&self, read: F) -> Result<Versions, StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Versions, StoreError>>,
    {
        let arrived = self.begun.load(Ordering::SeqCst);
        let _turn = self.turn.lock().await;
        if let Some((number, versions)) = *self.last.lock().unwrap_or_else(PoisonError::into_inner)
            && number > arrived
        {
            return Ok(versions);
        }
        let number = self.begun.fetch_add(1, Ordering::SeqCst) + 1;
        let versions = read().await?;
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some((number, versions));
        Ok(versions)
    }
}

/// How many keys a snapshot holds before it starts again (keys come from requests: a model name
/// that matches nothing must not grow the memory).
const MAX_KEYS: usize = 64;

/// The newest copy of a list (one per key: the free GPUs of each model) and the counter it was
/// read under.
#[derive(Debug)]
pub(super) struct Snapshot<T, K = ()> {
    newest: Mutex<HashMap<K, (i64, Arc<T>)>>,
}

impl<T, K> Default for Snapshot<T, K> {
    fn default() -> Self {
        Snapshot {
            newest: Mutex::new(HashMap::new()),
        }
    }
}

impl<T, K: Eq + std::hash::Hash> Snapshot<T, K> {
    /// The copy of `key` read under `version`, if that is the one kept.
    pub fn get(&self, key: &K, version: i64) -> Option<Arc<T>> {
        match self
            .newest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
        {
            Some((kept, value)) if *kept == version => Some(Arc::clone(value)),
            _ => None,
        }
    }

    /// Keeps `value` of `key`, read under `version`, unless a copy read under a later counter
    /// is kept.
    pub fn put(&self, key: K, version: i64, value: T) -> Arc<T> {
        let value = Arc::new(value);
        let mut newest = self.newest.lock().unwrap_or_else(PoisonError::into_inner);
        if newest.len() >= MAX_KEYS && !newest.contains_key(&key) {
            newest.clear();
        }
        if newest.get(&key).is_none_or(|(kept, _)| *kept <= version) {
            newest.insert(key, (version, Arc::clone(&value)));
        }
        value
    }
}

/// How many credentials are remembered before the memory is cleared and filled again.
const MAX_CREDENTIALS: usize = 10_000;

/// A credential (the hash of a token or session secret) and who it authenticates.
#[derive(Debug, Clone)]
pub(super) struct Credential {
    /// The account.
    pub user: UserRecord,
    /// The API token's id (`None` for a session).
    pub token_id: Option<i64>,
    /// When it stops working (Unix ms), if ever.
    pub expires_at: Option<i64>,
    /// When the token's use was last written (Unix ms).
    pub last_used_at: Option<i64>,
}

/// Credentials looked up under one `accounts` counter; a new counter starts an empty memory.
#[derive(Debug, Default)]
pub(super) struct Credentials {
    known: Mutex<(i64, HashMap<String, Credential>)>,
}

impl Credentials {
    /// The credential for this hash, when remembered under `version` and not expired at `now`.
    pub fn get(&self, version: i64, hash: &str, now: i64) -> Option<Credential> {
        let known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        if known.0 != version {
            return None;
        }
        known
            .1
            .get(hash)
            .filter(|c| c.expires_at.is_none_or(|at| at > now))
            .cloned()
    }

    /// Remembers a credential read under `version`.
    pub fn put(&self, version: i64, hash: &str, credential: Credential) {
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        if known.0 != version || known.1.len() >= MAX_CREDENTIALS {
            if version < known.0 {
                return;
            }
            *known = (version, HashMap::new());
        }
        known.1.insert(hash.to_string(), credential);
    }

    /// Notes that a token's use was written at `at`.
    pub fn used(&self, hash: &str, at: i64) {
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(credential) = known.1.get_mut(hash) {
            credential.last_used_at = Some(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn versions(n: i64) -> Versions {
        Versions {
            inventory: n,
            accounts: n,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_share_reads_that_began_after_they_arrived() {
        let reads = Arc::new(CounterReads::default());
        let queries = Arc::new(AtomicUsize::new(0));
        let mut callers = Vec::new();
        for _ in 0..64 {
            let (reads, queries) = (Arc::clone(&reads), Arc::clone(&queries));
            callers.push(tokio::spawn(async move {
                let before = queries.load(Ordering::SeqCst);
                let seen = reads
                    .fresh(|| async {
                        let n = queries.fetch_add(1, Ordering::SeqCst) as i64 + 1;
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                        Ok(versions(n))
                    })
                    .await
                    .unwrap();
                // The read that answered began after this caller looked at the count.
                assert!(seen.inventory > before as i64, "{seen:?} after {before}");
            }));
        }
        for caller in callers {
            caller.await.unwrap();
        }
        let made = queries.load(Ordering::SeqCst);
        assert!((1..64).contains(&made), "{made} queries for 64 callers");
    }

    #[tokio::test]
    async fn a_caller_after_a_read_reads_again() {
        let reads = CounterReads::default();
        let first = reads.fresh(|| async { Ok(versions(1)) }).await.unwrap();
        let second = reads.fresh(|| async { Ok(versions(2)) }).await.unwrap();
        assert_eq!((first.inventory, second.inventory), (1, 2));
    }

    #[tokio::test]
    async fn a_failed_read_is_not_shared() {
        let reads = CounterReads::default();
        let failed = reads
            .fresh(|| async { Err(StoreError::Query(sqlx::Error::PoolClosed)) })
            .await;
        assert!(failed.is_err());
        assert_eq!(
            reads.fresh(|| async { Ok(versions(7)) }).await.unwrap(),
            versions(7)
        );
    }

    #[test]
    fn a_snapshot_keeps_the_newest_copy() {
        let snapshot = Snapshot::default();
        snapshot.put((), 2, "two");
        snapshot.put((), 1, "one");
        assert_eq!(snapshot.get(&(), 2).as_deref(), Some(&"two"));
        assert_eq!(snapshot.get(&(), 1), None);
        snapshot.put((), 3, "three");
        assert_eq!(snapshot.get(&(), 2), None);
        let by_model = Snapshot::default();
        by_model.put("H100", 3, 1);
        by_model.put("L40S", 4, 2);
        assert_eq!(by_model.get(&"H100", 3).as_deref(), Some(&1));
        assert_eq!(by_model.get(&"L40S", 3), None);
    }

    #[test]
    fn credentials_expire_and_go_with_a_new_counter() {
        let credentials = Credentials::default();
        let user = UserRecord {
            id: 1,
            name: "ada".into(),
            password_hash: String::new(),
            is_admin: false,
            disabled: false,
        };
        let credential = Credential {
            user,
            token_id: Some(4),
            expires_at: Some(100),
            last_used_at: None,
        };
        credentials.put(5, "h", credential);
        assert!(credentials.get(5, "h", 99).is_some());
        assert!(credentials.get(5, "h", 100).is_none(), "expired");
        assert!(credentials.get(6, "h", 0).is_none(), "another counter");
        credentials.used("h", 42);
        assert_eq!(credentials.get(5, "h", 0).unwrap().last_used_at, Some(42));
    }
}
