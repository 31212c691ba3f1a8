//! What several server processes on one database agree through it: the installation's id, and
//! short leases that one process holds while it acts on a VM or runs a background loop.

use std::time::Duration;

use rand_core::{OsRng, RngCore};
use sqlx::Row;

use super::{Store, StoreError, now_ms};

impl Store {
    /// This installation's id, made on first use and kept for the database's life. Every domain
    /// the installation defines carries it, so that domains of another installation (or of this
    /// one before its database was reset) are never taken for its own.
    pub async fn installation_id(&self) -> Result<String, StoreError> {
        let mut bytes = [0u8; 16];
        OsRng.fill_bytes(&mut bytes);
        sqlx::query(
            "INSERT INTO installation (singleton, id, created_at) VALUES (1, $1, $2)
             ON CONFLICT (singleton) DO NOTHING",
        )
        .bind(hex::encode(bytes))
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        let row = sqlx::query("SELECT id FROM installation WHERE singleton = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("id")?)
    }

    /// Takes lease `name` for `holder` for `ttl`, or renews it when `holder` has it already.
    /// False when another holder's lease has not ended yet.
    pub async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let until = now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        let taken = sqlx::query(
            "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,
                 expires_at = excluded.expires_at
             WHERE leases.holder = excluded.holder OR leases.expires_at < $4",
        )
        .bind(name)
        .bind(holder)
        .bind(until)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(taken.rows_affected() == 1)
    }

    /// Extends lease `name` by `ttl` from now if `holder` still has it; false when it does not
    /// (it was given back or taken over). Never takes a lease that is not held.
    pub async fn renew_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let until = now_ms().saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        let renewed =
            sqlx::query("UPDATE leases SET expires_at = $1 WHERE name = $2 AND holder = $3")
                .bind(until)
                .bind(name)
                .bind(holder)
                .execute(&self.pool)
                .await?;
        Ok(renewed.rows_affected() == 1)
    }

    /// Gives lease `name` back, if `holder` still has it.
    pub async fn drop_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("p.db").display());
        let store = Store::open(&url).await.unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn a_lease_is_one_holders_until_it_ends_or_is_given_back() {
        let (_dir, store) = store().await;
        let long = Duration::from_secs(60);
        assert!(store.take_lease("vm:1", "a", long).await.unwrap());
        assert!(!store.take_lease("vm:1", "b", long).await.unwrap());
        assert!(
            store.take_lease("vm:1", "a", long).await.unwrap(),
            "renewed"
        );
        assert!(store.take_lease("vm:2", "b", long).await.unwrap());
        store.drop_lease("vm:1", "b").await.unwrap();
        assert!(!store.take_lease("vm:1", "b", long).await.unwrap());
        store.drop_lease("vm:1", "a").await.unwrap();
        assert!(store.take_lease("vm:1", "b", long).await.unwrap());
        // A holder that died: its lease ends by itself.
        assert!(
            store
                .take_lease("loop:x", "a", Duration::ZERO)
                .await
                .unwrap()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(store.take_lease("loop:x", "b", long).await.unwrap());
    }

    #[tokio::test]
    async fn the_installation_keeps_its_id() {
        let (_dir, store) = store().await;
        let id = store.installation_id().await.unwrap();
        assert_eq!(id.len(), 32);
        assert_eq!(store.installation_id().await.unwrap(), id);
    }
}
