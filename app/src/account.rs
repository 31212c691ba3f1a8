//! Accounts: the signed-in user's own settings (password, API tokens for scripts, the SSH key
//! for new VMs) and, for admins, everyone's accounts.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

/// An API token as its owner sees it (never the secret, which is shown once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenView {
    /// Its id.
    pub id: i64,
    /// The name its owner gave it.
    pub name: String,
    /// When it was made (RFC 3339).
    pub created_at: String,
    /// When it last authenticated a request.
    pub last_used_at: Option<String>,
    /// When it was revoked.
    pub revoked_at: Option<String>,
    /// When it stops working; `None` for never.
    pub expires_at: Option<String>,
    /// True once `expires_at` has passed: it authenticates nothing.
    pub expired: bool,
}

/// An account as admins see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct AccountView {
    /// Login name.
    pub name: String,
    /// An admin.
    pub is_admin: bool,
    /// Disabled by an admin: it cannot sign in, and its tokens authenticate nothing.
    pub disabled: bool,
    /// When it was disabled (RFC 3339).
    pub disabled_at: Option<String>,
    /// When it was made (RFC 3339).
    pub created_at: String,
    /// Browser sessions open now.
    pub sessions: i64,
    /// API tokens that work now (not revoked, not expired).
    pub tokens: i64,
}

/// The viewer's API tokens.
#[server(endpoint = "account/tokens")]
pub async fn load_tokens() -> Result<Vec<TokenView>, ServerFnError> {
    let (portal, viewer) = crate::inventory::signed_in_viewer().await?;
    portal
        .0
        .tokens(viewer)
        .await
        .map_err(crate::service::refused)
}

/// Makes an API token for the viewer, expiring after `expires_in_days` days (empty: never);
/// returns the secret, shown this once.
#[server(endpoint = "account/tokens/create")]
pub async fn create_token(name: String, expires_in_days: String) -> Result<String, ServerFnError> {
    let (portal, viewer) = crate::inventory::signed_in_viewer().await?;
    let days = match expires_in_days.trim() {
        "" => None,
        days => Some(
            days.parse::<u32>()
                .map_err(|_| ServerFnError::new(format!("{days:?} is not a number of days")))?,
        ),
    };
    portal
        .0
        .create_token(viewer, name, days)
        .await
        .map_err(crate::service::refused)
}

/// Changes the viewer's password; their other sessions end.
#[server(endpoint = "account/password")]
pub async fn change_password(
    current_password: String,
    new_password: String,
    repeated: String,
) -> Result<(), ServerFnError> {
    use axum::extract::ConnectInfo;
    let (portal, viewer) = crate::inventory::signed_in_viewer().await?;
    if new_password != repeated {
        return Err(ServerFnError::new(
            "the new password and its repetition differ",
        ));
    }
    let headers: axum::http::HeaderMap = leptos_axum::extract().await?;
    let ConnectInfo(peer): ConnectInfo<std::net::SocketAddr> = leptos_axum::extract().await?;
    portal
        .0
        .change_password(viewer, headers, peer, current_password, new_password)
        .await
        .map_err(crate::service::refused)
}

/// Every account (admins).
#[server(endpoint = "users/list")]
pub async fn load_accounts() -> Result<Vec<AccountView>, ServerFnError> {
    let (portal, viewer) = crate::inventory::signed_in_viewer().await?;
    portal
        .0
        .accounts(viewer)
        .await
        .map_err(crate::service::refused)
}

/// `disable`, `enable`, `promote`, `demote`, `end-sessions` or `delete` the account `name`
/// (admins).
#[server(endpoint = "users/act")]
pub async fn account_action(name: String, action: String) -> Result<(), ServerFnError> {
    let (portal, viewer) = crate::inventory::signed_in_viewer().await?;
    portal
        .0
        .account_action(viewer, name, action)
        .await
        .map_err(crate::service::refused)
}

/// Revokes one of the viewer's API tokens.
#[server(endpoint = "account/tokens/revoke")]
pub async fn revoke_token(id: i64) -> Result<(), ServerFnError> {
    let (portal, viewer) = crate::inventory::signed_in_viewer().await?;
    portal
        .0
        .revoke_token(viewer, id)
        .await
        .map_err(crate::service::refused)
}
