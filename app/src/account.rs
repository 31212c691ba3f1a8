//! The signed-in user's own settings: API tokens for scripts and the SSH key for new VMs.

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

/// Makes an API token for the viewer; returns the secret, shown this once.
#[server(endpoint = "account/tokens/create")]
pub async fn create_token(name: String) -> Result<String, ServerFnError> {
    let (portal, viewer) = crate::inventory::signed_in_viewer().await?;
    portal
        .0
        .create_token(viewer, name)
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
