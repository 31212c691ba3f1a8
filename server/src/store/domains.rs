//! Domains on the hosts that this installation cannot prove are its own, and what VMs left behind
//! on their host when they ended.

use serde::Serialize;
use sqlx::Row;
use utoipa::ToSchema;

use super::{Store, StoreError, now_ms, rfc3339};

/// A domain with Passage's name that this installation did not make (or cannot prove it made).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct UnknownDomain {
    /// The host it is on.
    pub host: String,
    /// Its libvirt UUID.
    pub uuid: String,
    /// Its name.
    pub name: String,
    /// The installation named in its metadata, when it has Passage's metadata.
    pub installation: Option<String>,
    /// Its run state when last seen.
    pub state: String,
    /// PCI functions it holds, comma-separated.
    pub devices: String,
    /// First seen (RFC 3339).
    pub first_seen: String,
    /// Last seen (RFC 3339).
    pub last_seen: String,
    /// An admin's decision: `keep` (leave it, its GPUs stay out of placement) or `remove`.
    pub decision: Option<String>,
    /// Who decided.
    pub decided_by: Option<String>,
}

/// What a reconciliation pass saw of an unknown domain.
#[derive(Debug, Clone)]
pub struct SeenDomain<'a> {
    /// The host.
    pub host: &'a str,
    /// Its libvirt UUID.
    pub uuid: &'a str,
    /// Its name.
    pub name: &'a str,
    /// The installation in its metadata.
    pub installation: Option<&'a str>,
    /// Its run state.
    pub state: &'a str,
    /// The PCI functions it holds.
    pub devices: &'a str,
}

fn unknown_domain(row: &sqlx::any::AnyRow) -> Result<UnknownDomain, StoreError> {
    Ok(UnknownDomain {
        host: row.try_get("host")?,
        uuid: row.try_get("uuid")?,
        name: row.try_get("name")?,
        installation: row.try_get("installation")?,
        state: row.try_get("state")?,
        devices: row.try_get("devices")?,
        first_seen: rfc3339(row.try_get("first_seen")?),
        last_seen: rfc3339(row.try_get("last_seen")?),
        decision: row.try_get("decision")?,
        decided_by: row.try_get("decided_by")?,
    })
}

impl Store {
    /// Records that an unknown domain is on a host; true the first time it is seen.
    pub async fn saw_unknown_domain(&self, seen: &SeenDomain<'_>) -> Result<bool, StoreError> {
        let now = now_ms();
        let known = sqlx::query(
            "UPDATE unknown_domains SET name = $1, installation = $2, state = $3, devices = $4,
                 last_seen = $5
             WHERE host = $6 AND uuid = $7",
        )
        .bind(seen.name)
        .bind(seen.installation)
        .bind(seen.state)
        .bind(seen.devices)
        .bind(now)
        .bind(seen.host)
        .bind(seen.uuid)
        .execute(&self.pool)
        .await?;
        if known.rows_affected() > 0 {
            return Ok(false);
        }
        let added = sqlx::query(
            "INSERT INTO unknown_domains (host, uuid, name, installation, state, devices,
                 first_seen, last_seen)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7) ON CONFLICT (host, uuid) DO NOTHING",
        )
        .bind(seen.host)
        .bind(seen.uuid)
        .bind(seen.name)
        .bind(seen.installation)
        .bind(seen.state)
        .bind(seen.devices)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(added.rows_affected() == 1)
    }

    /// Forgets unknown domains of `host` that are no longer there (`present` holds the UUIDs
    /// seen); returns how many were forgotten.
    pub async fn forget_unknown_domains(
        &self,
        host: &str,
        present: &[String],
    ) -> Result<u64, StoreError> {
        let mut forgotten = 0;
        for known in self.unknown_domains().await? {
            if known.host == host && !present.contains(&known.uuid) {
                forgotten +=
                    sqlx::query("DELETE FROM unknown_domains WHERE host = $1 AND uuid = $2")
                        .bind(host)
                        .bind(&known.uuid)
                        .execute(&self.pool)
                        .await?
                        .rows_affected();
            }
        }
        Ok(forgotten)
    }

    /// Every unknown domain, by host and name.
    pub async fn unknown_domains(&self) -> Result<Vec<UnknownDomain>, StoreError> {
        let rows = sqlx::query("SELECT * FROM unknown_domains ORDER BY host, name, uuid")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(unknown_domain).collect()
    }

    /// One unknown domain.
    pub async fn unknown_domain(
        &self,
        host: &str,
        uuid: &str,
    ) -> Result<Option<UnknownDomain>, StoreError> {
        let row = sqlx::query("SELECT * FROM unknown_domains WHERE host = $1 AND uuid = $2")
            .bind(host)
            .bind(uuid)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(unknown_domain).transpose()
    }

    /// Records an admin's decision on an unknown domain; false when it is not (or no longer)
    /// known.
    pub async fn decide_unknown_domain(
        &self,
        host: &str,
        uuid: &str,
        decision: &str,
        admin: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE unknown_domains SET decision = $1, decided_by = $2 WHERE host = $3 AND uuid = $4",
        )
        .bind(decision)
        .bind(admin)
        .bind(host)
        .bind(uuid)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Removes an unknown domain's record after it was removed from its host.
    pub async fn drop_unknown_domain(&self, host: &str, uuid: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM unknown_domains WHERE host = $1 AND uuid = $2")
            .bind(host)
            .bind(uuid)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Notes what a VM left on its host (`None`: nothing any more).
    pub async fn set_vm_leftover(&self, id: i64, leftover: Option<&str>) -> Result<(), StoreError> {
        sqlx::query("UPDATE vms SET leftover = $1, updated_at = $2 WHERE id = $3")
            .bind(leftover)
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Ended VMs that left something on their host: (id, request id, host, what is left).
    pub async fn vms_with_leftovers(&self) -> Result<Vec<(i64, i64, String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, request_id, host, leftover FROM vms
             WHERE leftover IS NOT NULL AND state IN ('failed', 'released') ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("id")?,
                    r.try_get("request_id")?,
                    r.try_get("host")?,
                    r.try_get("leftover")?,
                ))
            })
            .collect()
    }
}
