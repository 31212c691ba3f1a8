//! Accounts have a life: people change their own password; admins list accounts, disable and
//! enable them, make and unmake admins, end someone's sessions and delete accounts.
//!
//! The rules are here once, for the API below and for the pages: only admins change other
//! accounts; the portal always keeps an enabled admin (the store decides that under a lock, so
//! two admins demoting each other at once leave one); an account that holds VMs, open requests or
//! unfinished jobs is not deleted (release, deny or cancel them first). A deleted account keeps
//! its row, so its history still names it; it can no longer sign in and its name stays taken.
//! Every change goes to the audit log.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use passage_app::account::AccountView;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::{Admin, Auth, AuthError, CurrentUser, User, secret_hash, session_secret};
use crate::store::{AccountChange, AuditRecord, rfc3339};

/// What an admin can do to an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountAction {
    /// It can no longer sign in; its sessions end and its tokens stop working.
    Disable,
    /// It can sign in again (and its tokens work again).
    Enable,
    /// It becomes an admin.
    Promote,
    /// It is no longer an admin (never the last enabled one).
    Demote,
    /// Every browser session of it ends now.
    EndSessions,
    /// It is deleted.
    Delete,
}

impl AccountAction {
    /// The action named as the pages and the audit log name it (`disable`, `end-sessions`, …).
    pub fn parse(word: &str) -> Option<AccountAction> {
        Some(match word {
            "disable" => AccountAction::Disable,
            "enable" => AccountAction::Enable,
            "promote" => AccountAction::Promote,
            "demote" => AccountAction::Demote,
            "end-sessions" => AccountAction::EndSessions,
            "delete" => AccountAction::Delete,
            _ => return None,
        })
    }

    fn audit_name(self) -> &'static str {
        match self {
            AccountAction::Disable => "user.disable",
            AccountAction::Enable => "user.enable",
            AccountAction::Promote => "user.promote",
            AccountAction::Demote => "user.demote",
            AccountAction::EndSessions => "user.end-sessions",
            AccountAction::Delete => "user.delete",
        }
    }
}

impl Auth {
    /// Every account but deleted ones (admins only).
    pub async fn accounts(&self, admin: &User) -> Result<Vec<AccountView>, AuthError> {
        require_admin(admin)?;
        Ok(self
            .store()
            .accounts()
            .await?
            .into_iter()
            .map(|a| AccountView {
                name: a.name,
                is_admin: a.is_admin,
                disabled: a.disabled_at.is_some(),
                disabled_at: a.disabled_at.map(rfc3339),
                created_at: rfc3339(a.created_at),
                sessions: a.sessions,
                tokens: a.tokens,
            })
            .collect())
    }

    /// Carries out `action` on the account `name` for `admin`.
    pub async fn act_on_account(
        &self,
        admin: &User,
        name: &str,
        action: AccountAction,
    ) -> Result<(), AuthError> {
        require_admin(admin)?;
        let store = self.store();
        let change = match action {
            AccountAction::Disable => store.set_disabled(name, true).await?,
            AccountAction::Enable => store.set_disabled(name, false).await?,
            AccountAction::Promote => store.set_admin(name, true).await?,
            AccountAction::Demote => store.set_admin(name, false).await?,
            AccountAction::Delete => store.delete_user(name).await?,
            AccountAction::EndSessions => match store.end_sessions(name).await? {
                Some(_) => AccountChange::Done,
                None => AccountChange::NoSuchUser,
            },
        };
        match change {
            AccountChange::Done => {}
            AccountChange::NoSuchUser => {
                return Err(AuthError::NotFound(format!("no account {name:?}")));
            }
            AccountChange::Unchanged => {
                let state = match action {
                    AccountAction::Disable => "disabled",
                    AccountAction::Enable => "enabled",
                    AccountAction::Promote => "an admin",
                    _ => "not an admin",
                };
                return Err(AuthError::Conflict(format!("{name} is {state} already")));
            }
            AccountChange::LastAdmin => {
                return Err(AuthError::Conflict(format!(
                    "{name} is the last enabled admin: make another admin first, so that the \
                     portal is never without one"
                )));
            }
            AccountChange::Holds => {
                return Err(AuthError::Conflict(format!(
                    "{name} still holds VMs, open requests or unfinished jobs: release, deny or \
                     cancel them first"
                )));
            }
        }
        if let Err(e) = store
            .audit(AuditRecord {
                actor: &admin.name,
                action: action.audit_name(),
                subject: format!("user {name}"),
                before: None,
                after: None,
                detail: None,
            })
            .await
        {
            tracing::error!(error = %e, "writing the audit log failed");
        }
        tracing::info!(admin = %admin.name, user = name, action = action.audit_name(), "account changed");
        Ok(())
    }

    /// Changes `user`'s own password after checking the current one (which counts as a sign-in
    /// attempt from `client`), and ends their other sessions: every session but
    /// `current_session` (the secret of the session that asks, if it is one).
    pub async fn change_password(
        &self,
        user: &User,
        client: IpAddr,
        current_session: Option<&str>,
        current: &str,
        new: &str,
    ) -> Result<(), AuthError> {
        let attempt = self.begin_attempt(client, &user.name)?;
        let record = self
            .store()
            .user_by_id(user.id)
            .await?
            .ok_or_else(|| AuthError::NotFound(format!("no account {:?}", user.name)))?;
        if !self
            .check_password(record.password_hash.clone(), current)
            .await
        {
            return Err(AuthError::Forbidden(
                "the current password is not right".into(),
            ));
        }
        attempt.succeeded();
        if new == current {
            return Err(AuthError::Invalid(
                "the new password is the current one".into(),
            ));
        }
        let hash = self.new_password_hash(new).await?;
        let keep = current_session.map(secret_hash);
        if !self
            .store()
            .change_password(user.id, &record.password_hash, &hash, keep.as_deref())
            .await?
        {
            return Err(AuthError::Conflict(
                "the password was changed meanwhile, or the account disabled".into(),
            ));
        }
        if let Err(e) = self
            .store()
            .audit(AuditRecord {
                actor: &user.name,
                action: "user.password",
                subject: format!("user {}", user.name),
                before: None,
                after: None,
                detail: Some("other sessions ended".into()),
            })
            .await
        {
            tracing::error!(error = %e, "writing the audit log failed");
        }
        Ok(())
    }
}

fn require_admin(user: &User) -> Result<(), AuthError> {
    if user.is_admin {
        Ok(())
    } else {
        Err(AuthError::Forbidden("only admins manage accounts".into()))
    }
}

/// The routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/me/password", put(change_password))
        .route("/api/v1/users", get(list_users))
        .route("/api/v1/users/{name}", delete(delete_user))
        .route("/api/v1/users/{name}/disable", post(disable))
        .route("/api/v1/users/{name}/enable", post(enable))
        .route("/api/v1/users/{name}/promote", post(promote))
        .route("/api/v1/users/{name}/demote", post(demote))
        .route("/api/v1/users/{name}/sessions", delete(end_sessions))
}

/// Body of `PUT /api/v1/me/password`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    /// The password now.
    pub current_password: String,
    /// The new one: at least 10 characters.
    pub new_password: String,
}

/// Changes your password. Your other browser sessions end; the one that asks (if it is one)
/// and your API tokens stay.
#[utoipa::path(put, path = "/api/v1/me/password", tag = "accounts", request_body = PasswordChange,
    responses((status = 204), (status = 400, body = crate::api::ErrorBody, description = "too short, or the same"),
        (status = 401, body = crate::api::ErrorBody), (status = 403, body = crate::api::ErrorBody, description = "the current password is wrong"),
        (status = 409, body = crate::api::ErrorBody), (status = 429, body = crate::api::ErrorBody)))]
pub(crate) async fn change_password(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    CurrentUser(user): CurrentUser,
    headers: HeaderMap,
    Json(body): Json<PasswordChange>,
) -> Result<StatusCode, AuthError> {
    let client = state.client_address(peer, &headers);
    let session = if crate::auth::bearer(&headers).is_some() {
        None
    } else {
        session_secret(&headers)
    };
    state
        .auth
        .change_password(
            &user,
            client,
            session.as_deref(),
            &body.current_password,
            &body.new_password,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every account: admin or not, disabled or not, with its open sessions and live tokens
/// (admins).
#[utoipa::path(get, path = "/api/v1/users", tag = "accounts",
    responses((status = 200, body = [AccountView]), (status = 401, body = crate::api::ErrorBody), (status = 403, body = crate::api::ErrorBody)))]
pub(crate) async fn list_users(
    State(state): State<AppState>,
    Admin(admin): Admin,
) -> Result<Json<Vec<AccountView>>, AuthError> {
    Ok(Json(state.auth.accounts(&admin).await?))
}

async fn act(
    state: &AppState,
    admin: &User,
    name: &str,
    action: AccountAction,
) -> Result<StatusCode, AuthError> {
    state.auth.act_on_account(admin, name, action).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Disables an account (admins): it can no longer sign in, its sessions end and its API tokens
/// stop working until it is enabled again. Never the last enabled admin.
#[utoipa::path(post, path = "/api/v1/users/{name}/disable", tag = "accounts",
    params(("name" = String, Path, description = "the account's name")),
    responses((status = 204), (status = 401, body = crate::api::ErrorBody), (status = 403, body = crate::api::ErrorBody),
        (status = 404, body = crate::api::ErrorBody), (status = 409, body = crate::api::ErrorBody, description = "disabled already, or the last enabled admin")))]
pub(crate) async fn disable(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(name): Path<String>,
) -> Result<StatusCode, AuthError> {
    act(&state, &admin, &name, AccountAction::Disable).await
}

/// Enables a disabled account again (admins).
#[utoipa::path(post, path = "/api/v1/users/{name}/enable", tag = "accounts",
    params(("name" = String, Path, description = "the account's name")),
    responses((status = 204), (status = 401, body = crate::api::ErrorBody), (status = 403, body = crate::api::ErrorBody),
        (status = 404, body = crate::api::ErrorBody), (status = 409, body = crate::api::ErrorBody, description = "enabled already")))]
pub(crate) async fn enable(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(name): Path<String>,
) -> Result<StatusCode, AuthError> {
    act(&state, &admin, &name, AccountAction::Enable).await
}

/// Makes an account an admin (admins).
#[utoipa::path(post, path = "/api/v1/users/{name}/promote", tag = "accounts",
    params(("name" = String, Path, description = "the account's name")),
    responses((status = 204), (status = 401, body = crate::api::ErrorBody), (status = 403, body = crate::api::ErrorBody),
        (status = 404, body = crate::api::ErrorBody), (status = 409, body = crate::api::ErrorBody, description = "an admin already")))]
pub(crate) async fn promote(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(name): Path<String>,
) -> Result<StatusCode, AuthError> {
    act(&state, &admin, &name, AccountAction::Promote).await
}

/// Takes an account's admin rights away (admins); never the last enabled admin's, so the portal
/// cannot be left without one (also when two admins demote each other at once).
#[utoipa::path(post, path = "/api/v1/users/{name}/demote", tag = "accounts",
    params(("name" = String, Path, description = "the account's name")),
    responses((status = 204), (status = 401, body = crate::api::ErrorBody), (status = 403, body = crate::api::ErrorBody),
        (status = 404, body = crate::api::ErrorBody), (status = 409, body = crate::api::ErrorBody, description = "not an admin, or the last enabled admin")))]
pub(crate) async fn demote(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(name): Path<String>,
) -> Result<StatusCode, AuthError> {
    act(&state, &admin, &name, AccountAction::Demote).await
}

/// Ends every browser session of an account now (admins). Its API tokens are not affected.
#[utoipa::path(delete, path = "/api/v1/users/{name}/sessions", tag = "accounts",
    params(("name" = String, Path, description = "the account's name")),
    responses((status = 204), (status = 401, body = crate::api::ErrorBody), (status = 403, body = crate::api::ErrorBody),
        (status = 404, body = crate::api::ErrorBody)))]
pub(crate) async fn end_sessions(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(name): Path<String>,
) -> Result<StatusCode, AuthError> {
    act(&state, &admin, &name, AccountAction::EndSessions).await
}

/// Deletes an account (admins). Refused (409) while it holds VMs (provisioning, running or
/// stopped), open requests (pending, waiting or placed) or unfinished jobs, and for the last
/// enabled admin. Its sessions, tokens, SSH key and quota go; its past requests, VMs and jobs
/// stay in the history under its name, which stays taken.
#[utoipa::path(delete, path = "/api/v1/users/{name}", tag = "accounts",
    params(("name" = String, Path, description = "the account's name")),
    responses((status = 204), (status = 401, body = crate::api::ErrorBody), (status = 403, body = crate::api::ErrorBody),
        (status = 404, body = crate::api::ErrorBody), (status = 409, body = crate::api::ErrorBody, description = "it holds something, or is the last enabled admin")))]
pub(crate) async fn delete_user(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(name): Path<String>,
) -> Result<StatusCode, AuthError> {
    act(&state, &admin, &name, AccountAction::Delete).await
}
