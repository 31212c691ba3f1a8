//! Counts of what the portal holds, by state, for the metrics.

use sqlx::Row;

use super::{Store, StoreError};

/// How many requests, VMs and jobs are in each state, and how many agents are online.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tallies {
    /// GPU requests by state (pending, waiting, placed, denied, released).
    pub requests: Vec<(String, i64)>,
    /// VMs by state (provisioning, running, stopped, failed, released).
    pub vms: Vec<(String, i64)>,
    /// Jobs by state (queued, running, succeeded, failed, cancelled).
    pub jobs: Vec<(String, i64)>,
    /// Agents not revoked and heard from since the moment given.
    pub agents_online: i64,
}

impl Store {
    /// The counts now; agents seen since `online_after` (Unix ms) count as online.
    pub async fn tallies(&self, online_after: i64) -> Result<Tallies, StoreError> {
        let by_state = |table: &'static str| async move {
            let rows = sqlx::query(&format!(
                "SELECT state, COUNT(*) AS n FROM {table} GROUP BY state ORDER BY state"
            ))
            .fetch_all(&self.pool)
            .await?;
            rows.iter()
                .map(|row| Ok((row.try_get("state")?, row.try_get("n")?)))
                .collect::<Result<Vec<(String, i64)>, StoreError>>()
        };
        let agents_online: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM agents WHERE revoked_at IS NULL AND last_seen_at >= $1",
        )
        .bind(online_after)
        .fetch_one(&self.pool)
        .await?
        .try_get("n")?;
        Ok(Tallies {
            requests: by_state("gpu_requests").await?,
            vms: by_state("vms").await?,
            jobs: by_state("jobs").await?,
            agents_online,
        })
    }
}
