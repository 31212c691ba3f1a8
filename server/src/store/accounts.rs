//! Queries for users, browser sessions and API tokens. Secrets arrive here already hashed.
//!
//! Changes to an account are conditional on the state they leave, checked in the statement that
//! makes them. Changes that could leave the portal without an enabled admin (demoting, disabling
//! or deleting an admin) first lock every admin row, so that two of them at once are decided one
//! after the other: two admins demoting each other at the same moment leave one admin.

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::{Backend, Store, StoreError, cache, flag, now_ms};

/// An account that can sign in: not disabled, not deleted (`u` is the users table).
const ACTIVE: &str = "u.disabled_at IS NULL AND u.deleted_at IS NULL";

/// How precisely a token's last use is recorded: at most one write per token and minute.
const TOKEN_USE_RESOLUTION_MS: i64 = 60_000;

/// How many enabled admins there are.
const ACTIVE_ADMINS: &str = "(SELECT COUNT(*) FROM users a
     WHERE a.is_admin = $2 AND a.disabled_at IS NULL AND a.deleted_at IS NULL)";

/// A user as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Database id.
    pub id: i64,
    /// Login name.
    pub name: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// May approve, manage hosts and read the audit log.
    pub is_admin: bool,
    /// Disabled by an admin: signs in to nothing, its sessions and tokens authenticate nothing.
    pub disabled: bool,
}

/// An account as admins list it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRecord {
    /// Database id.
    pub id: i64,
    /// Login name.
    pub name: String,
    /// An admin.
    pub is_admin: bool,
    /// When an admin disabled it (Unix ms).
    pub disabled_at: Option<i64>,
    /// When it was made (Unix ms).
    pub created_at: i64,
    /// Browser sessions open now.
    pub sessions: i64,
    /// API tokens that authenticate now (not revoked, not expired).
    pub tokens: i64,
}

/// How a change to someone's account went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountChange {
    /// Done.
    Done,
    /// No account of that name (or it is deleted).
    NoSuchUser,
    /// The account is in that state already.
    Unchanged,
    /// It would leave the portal without an enabled admin.
    LastAdmin,
    /// The account still holds something: VMs, open requests or unfinished jobs.
    Holds,
}

/// An API token as listed to its owner (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct ApiTokenRecord {
    /// Database id, used to revoke it.
    pub id: i64,
    /// The name its owner gave it.
    pub name: String,
    /// When it was made (Unix ms).
    pub created_at: i64,
    /// When it last authenticated a request (Unix ms).
    pub last_used_at: Option<i64>,
    /// When it was revoked (Unix ms); revoked tokens authenticate nothing.
    pub revoked_at: Option<i64>,
    /// When it stops working (Unix ms); `None` for never.
    pub expires_at: Option<i64>,
}

fn user(row: &AnyRow) -> Result<UserRecord, StoreError> {
    Ok(UserRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        password_hash: row.try_get("password_hash")?,
        is_admin: flag(row, "is_admin")?,
        disabled: row.try_get::<Option<i64>, _>("disabled_at")?.is_some(),
    })
}

const USER_COLUMNS: &str = "u.id, u.name, u.password_hash, u.is_admin, u.disabled_at";

/// True when the error is a violated UNIQUE constraint.
pub fn is_unique_violation(e: &StoreError) -> bool {
    match e {
        StoreError::Query(sqlx::Error::Database(db)) => db.is_unique_violation(),
        _ => false,
    }
}

impl Store {
    /// Adds a user. A taken name is a unique violation (see [`is_unique_violation`]).
    pub async fn create_user(
        &self,
        name: &str,
        password_hash: &str,
        is_admin: bool,
    ) -> Result<UserRecord, StoreError> {
        let row = sqlx::query(
            "INSERT INTO users (name, password_hash, is_admin, created_at) VALUES ($1, $2, $3, $4)
             RETURNING id, name, password_hash, is_admin, disabled_at",
        )
        .bind(name)
        .bind(password_hash)
        .bind(is_admin)
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await?;
        user(&row)
    }

    /// Replaces a user's password hash (the operator's command line).
    pub async fn set_password(&self, user_id: i64, password_hash: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(password_hash)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Replaces a user's password if it is still `old_hash` and the account is active, and ends
    /// every session of the user but `keep_session`, in one transaction. False when the password
    /// changed meanwhile (another change won) or the account was disabled.
    pub async fn change_password(
        &self,
        user_id: i64,
        old_hash: &str,
        new_hash: &str,
        keep_session: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let changed = sqlx::query(
            "UPDATE users SET password_hash = $1
             WHERE id = $2 AND password_hash = $3 AND disabled_at IS NULL AND deleted_at IS NULL",
        )
        .bind(new_hash)
        .bind(user_id)
        .bind(old_hash)
        .execute(&mut *tx)
        .await?;
        if changed.rows_affected() != 1 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND token_hash <> $2")
            .bind(user_id)
            .bind(keep_session.unwrap_or(""))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The account called `name`, unless it is deleted (disabled ones are returned).
    pub async fn user_by_name(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users u WHERE u.name = $1 AND u.deleted_at IS NULL"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(user).transpose()
    }

    /// The account with this id, unless it is deleted.
    pub async fn user_by_id(&self, id: i64) -> Result<Option<UserRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users u WHERE u.id = $1 AND u.deleted_at IS NULL"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(user).transpose()
    }

    /// Every account but deleted ones, by name, with its open sessions and live tokens.
    pub async fn accounts(&self) -> Result<Vec<AccountRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT u.id, u.name, u.is_admin, u.disabled_at, u.created_at,
                 (SELECT COUNT(*) FROM sessions s WHERE s.user_id = u.id AND s.expires_at > $1)
                     AS sessions,
                 (SELECT COUNT(*) FROM api_tokens t WHERE t.user_id = u.id
                     AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > $1))
                     AS tokens
             FROM users u WHERE u.deleted_at IS NULL ORDER BY u.name",
        )
        .bind(now_ms())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(AccountRecord {
                    id: row.try_get("id")?,
                    name: row.try_get("name")?,
                    is_admin: flag(row, "is_admin")?,
                    disabled_at: row.try_get("disabled_at")?,
                    created_at: row.try_get("created_at")?,
                    sessions: row.try_get("sessions")?,
                    tokens: row.try_get("tokens")?,
                })
            })
            .collect()
    }

    /// How many enabled admins there are.
    pub async fn count_active_admins(&self) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM users
             WHERE is_admin = $1 AND disabled_at IS NULL AND deleted_at IS NULL",
        )
        .bind(true)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }

    /// Holds every admin row until the transaction ends, so that changes which could remove the
    /// last enabled admin are decided one at a time. On SQLite the first write of a transaction
    /// takes the database's single write lock for the rest of it.
    async fn lock_admins(&self, tx: &mut Transaction<'static, Any>) -> Result<(), StoreError> {
        let sql = match self.backend {
            Backend::Postgres => "SELECT id FROM users WHERE is_admin = $1 ORDER BY id FOR UPDATE",
            Backend::Sqlite => "UPDATE users SET is_admin = is_admin WHERE is_admin = $1",
        };
        sqlx::query(sql).bind(true).execute(&mut **tx).await?;
        Ok(())
    }

    /// Why a conditional change of `name` touched nothing.
    async fn why_unchanged(
        &self,
        tx: &mut Transaction<'static, Any>,
        name: &str,
        unchanged_when: &str,
    ) -> Result<AccountChange, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT ({unchanged_when}) AS unchanged FROM users u
             WHERE u.name = $1 AND u.deleted_at IS NULL"
        ))
        .bind(name)
        .fetch_optional(&mut **tx)
        .await?;
        Ok(match row {
            None => AccountChange::NoSuchUser,
            Some(row) if flag(&row, "unchanged")? => AccountChange::Unchanged,
            Some(_) => AccountChange::LastAdmin,
        })
    }

    /// Makes `name` an admin, or takes that away; never the last enabled admin's.
    pub async fn set_admin(&self, name: &str, admin: bool) -> Result<AccountChange, StoreError> {
        let mut tx = self.pool.begin().await?;
        self.lock_admins(&mut tx).await?;
        let done = if admin {
            sqlx::query(
                "UPDATE users SET is_admin = $2 WHERE name = $1 AND is_admin <> $2
                     AND deleted_at IS NULL",
            )
            .bind(name)
            .bind(true)
            .execute(&mut *tx)
            .await?
        } else {
            sqlx::query(&format!(
                "UPDATE users SET is_admin = $3 WHERE name = $1 AND is_admin = $2
                     AND deleted_at IS NULL
                     AND (disabled_at IS NOT NULL OR {ACTIVE_ADMINS} > 1)"
            ))
            .bind(name)
            .bind(true)
            .bind(false)
            .execute(&mut *tx)
            .await?
        };
        if done.rows_affected() == 1 {
            tx.commit().await?;
            return Ok(AccountChange::Done);
        }
        let unchanged_when = if admin {
            "u.is_admin"
        } else {
            "NOT u.is_admin"
        };
        let why = self.why_unchanged(&mut tx, name, unchanged_when).await?;
        tx.rollback().await?;
        Ok(why)
    }

    /// Disables `name` (never the last enabled admin) and ends its sessions, or enables it again.
    /// A disabled account's API tokens authenticate nothing until it is enabled again.
    pub async fn set_disabled(
        &self,
        name: &str,
        disabled: bool,
    ) -> Result<AccountChange, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = if disabled {
            self.lock_admins(&mut tx).await?;
            let done = sqlx::query(&format!(
                "UPDATE users SET disabled_at = $3 WHERE name = $1 AND disabled_at IS NULL
                     AND deleted_at IS NULL
                     AND (is_admin <> $2 OR {ACTIVE_ADMINS} > 1)"
            ))
            .bind(name)
            .bind(true)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "DELETE FROM sessions WHERE user_id IN
                     (SELECT id FROM users WHERE name = $1 AND disabled_at IS NOT NULL)",
            )
            .bind(name)
            .execute(&mut *tx)
            .await?;
            done
        } else {
            sqlx::query(
                "UPDATE users SET disabled_at = NULL WHERE name = $1 AND disabled_at IS NOT NULL
                     AND deleted_at IS NULL",
            )
            .bind(name)
            .execute(&mut *tx)
            .await?
        };
        if done.rows_affected() == 1 {
            tx.commit().await?;
            return Ok(AccountChange::Done);
        }
        let unchanged_when = if disabled {
            "u.disabled_at IS NOT NULL"
        } else {
            "u.disabled_at IS NULL"
        };
        let why = self.why_unchanged(&mut tx, name, unchanged_when).await?;
        tx.rollback().await?;
        Ok(why)
    }

    /// Deletes `name` unless it holds VMs, open requests or unfinished jobs, or is the last
    /// enabled admin. Its row stays (its history names it) with no password, no SSH key, no
    /// sessions, no tokens and no quota of its own; the name stays taken.
    pub async fn delete_user(&self, name: &str) -> Result<AccountChange, StoreError> {
        let mut tx = self.pool.begin().await?;
        self.lock_admins(&mut tx).await?;
        let holds = "EXISTS (SELECT 1 FROM vms v WHERE v.user_id = u.id
                 AND v.state IN ('provisioning', 'running', 'stopped'))
             OR EXISTS (SELECT 1 FROM gpu_requests r WHERE r.user_id = u.id
                 AND r.state IN ('pending', 'waiting', 'placed'))
             OR EXISTS (SELECT 1 FROM jobs j WHERE j.requested_by = u.id
                 AND j.state IN ('queued', 'running'))";
        let now = now_ms();
        let done = sqlx::query(&format!(
            "UPDATE users SET deleted_at = $3, disabled_at = COALESCE(disabled_at, $3),
                 password_hash = '!', ssh_public_key = NULL
             WHERE name = $1 AND deleted_at IS NULL
                 AND id NOT IN (SELECT u.id FROM users u WHERE {holds})
                 AND (is_admin <> $2 OR disabled_at IS NOT NULL OR {ACTIVE_ADMINS} > 1)"
        ))
        .bind(name)
        .bind(true)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            let row = sqlx::query(&format!(
                "SELECT ({holds}) AS holds FROM users u WHERE u.name = $1 AND u.deleted_at IS NULL"
            ))
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
            tx.rollback().await?;
            return Ok(match row {
                None => AccountChange::NoSuchUser,
                Some(row) if flag(&row, "holds")? => AccountChange::Holds,
                Some(_) => AccountChange::LastAdmin,
            });
        }
        for sql in [
            "DELETE FROM sessions WHERE user_id IN (SELECT id FROM users WHERE name = $1)",
            "DELETE FROM api_tokens WHERE user_id IN (SELECT id FROM users WHERE name = $1)",
            "DELETE FROM user_quotas WHERE user_id IN (SELECT id FROM users WHERE name = $1)",
        ] {
            sqlx::query(sql).bind(name).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(AccountChange::Done)
    }

    /// Ends every browser session of `name`; returns how many were open, or `None` when there is
    /// no such account.
    pub async fn end_sessions(&self, name: &str) -> Result<Option<u64>, StoreError> {
        let Some(user) = self.user_by_name(name).await? else {
            return Ok(None);
        };
        let done = sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND expires_at > $2")
            .bind(user.id)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(Some(done.rows_affected()))
    }

    /// How many users exist.
    pub async fn count_users(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM users")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }

    /// Stores a new browser session for `user_id`, valid until `expires_at` (Unix ms).
    pub async fn create_session(
        &self,
        token_hash: &str,
        user_id: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        // Expired sessions are removed whenever a new one starts.
        sqlx::query("DELETE FROM sessions WHERE expires_at < $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        sqlx::query("INSERT INTO sessions (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(token_hash)
            .bind(user_id)
            .bind(now)
            .bind(expires_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The user of an unexpired session, while the account is active.
    pub async fn session_user(&self, token_hash: &str) -> Result<Option<UserRecord>, StoreError> {
        let versions = self.versions().await?;
        let now = now_ms();
        if let Some(known) = versions.and_then(|v| {
            self.memory
                .credentials
                .get(v.accounts, token_hash, now)
                .filter(|c| c.token_id.is_none())
        }) {
            return Ok(Some(known.user));
        }
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS}, s.expires_at AS session_expires_at
             FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.token_hash = $1 AND s.expires_at > $2 AND {ACTIVE}"
        ))
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let found = user(&row)?;
        if let Some(v) = versions {
            let credential = cache::Credential {
                user: found.clone(),
                token_id: None,
                expires_at: Some(row.try_get("session_expires_at")?),
                last_used_at: None,
            };
            self.memory
                .credentials
                .put(v.accounts, token_hash, credential);
        }
        Ok(Some(found))
    }

    /// Ends a session.
    pub async fn delete_session(&self, token_hash: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Stores a new API token for `user_id`, working until `expires_at` (Unix ms) if given. A
    /// name already used by that user is a unique violation.
    pub async fn create_token(
        &self,
        user_id: i64,
        name: &str,
        token_hash: &str,
        expires_at: Option<i64>,
    ) -> Result<ApiTokenRecord, StoreError> {
        let row = sqlx::query(
            "INSERT INTO api_tokens (user_id, name, token_hash, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5)
             RETURNING id, name, created_at, last_used_at, revoked_at, expires_at",
        )
        .bind(user_id)
        .bind(name)
        .bind(token_hash)
        .bind(now_ms())
        .bind(expires_at)
        .fetch_one(&self.pool)
        .await?;
        token(&row)
    }

    /// The user of a live token (not revoked, not expired) of an active account, noting its use.
    pub async fn token_user(&self, token_hash: &str) -> Result<Option<UserRecord>, StoreError> {
        let versions = self.versions().await?;
        let now = now_ms();
        let known = versions.and_then(|v| {
            self.memory
                .credentials
                .get(v.accounts, token_hash, now)
                .filter(|c| c.token_id.is_some())
        });
        let credential = match known {
            Some(credential) => credential,
            None => {
                let row = sqlx::query(&format!(
                    "SELECT {USER_COLUMNS}, t.id AS token_id, t.last_used_at AS token_last_used_at,
                         t.expires_at AS token_expires_at
                     FROM api_tokens t JOIN users u ON u.id = t.user_id
                     WHERE t.token_hash = $1 AND t.revoked_at IS NULL
                         AND (t.expires_at IS NULL OR t.expires_at > $2) AND {ACTIVE}"
                ))
                .bind(token_hash)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
                let Some(row) = row else { return Ok(None) };
                let credential = cache::Credential {
                    user: user(&row)?,
                    token_id: Some(row.try_get("token_id")?),
                    expires_at: row.try_get("token_expires_at")?,
                    last_used_at: row.try_get("token_last_used_at")?,
                };
                if let Some(v) = versions {
                    self.memory
                        .credentials
                        .put(v.accounts, token_hash, credential.clone());
                }
                credential
            }
        };
        // A token's last use is kept to the minute: a read stays a read (no write, no lock on
        // the database) for every request but the first of each minute.
        if credential
            .last_used_at
            .is_none_or(|at| now - at >= TOKEN_USE_RESOLUTION_MS)
        {
            sqlx::query(
                "UPDATE api_tokens SET last_used_at = $1
                 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at <= $3)",
            )
            .bind(now)
            .bind(credential.token_id)
            .bind(now - TOKEN_USE_RESOLUTION_MS)
            .execute(&self.pool)
            .await?;
            self.memory.credentials.used(token_hash, now);
        }
        Ok(Some(credential.user))
    }

    /// A user's tokens, newest first.
    pub async fn tokens(&self, user_id: i64) -> Result<Vec<ApiTokenRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, created_at, last_used_at, revoked_at, expires_at FROM api_tokens
             WHERE user_id = $1 ORDER BY id DESC",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(token).collect()
    }

    /// Revokes one of the user's tokens; false when the user has no such live token.
    pub async fn revoke_token(&self, user_id: i64, token_id: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL",
        )
        .bind(now_ms())
        .bind(token_id)
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

fn token(row: &AnyRow) -> Result<ApiTokenRecord, StoreError> {
    Ok(ApiTokenRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
        revoked_at: row.try_get("revoked_at")?,
        expires_at: row.try_get("expires_at")?,
    })
}
