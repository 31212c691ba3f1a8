//! What the server provides to server functions, through context: who is asking, the
//! inventory and the requests. The server implements [`PortalService`]; the UI never touches the
//! database itself.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::account::{AccountView, TokenView};
use crate::inventory::{InventoryView, Viewer};
use crate::plugins::{AgentView, JobFilter, JobOrder, JobView, PluginView};
use crate::requests::{Choices, RequestForm, RequestView};
use crate::vms::{AuditEntry, AuditFilter, VmView};

/// A boxed future, so that the service can be a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a request action failed.
#[derive(Debug, Clone)]
pub enum RequestFailure {
    /// Fields that are not valid, each with its message.
    Invalid(BTreeMap<String, String>),
    /// Anything else, in words.
    Other(String),
}

/// What the UI needs from the server.
pub trait PortalService: Send + Sync + 'static {
    /// The signed-in user behind these request headers, if any.
    fn viewer<'a>(
        &'a self,
        headers: &'a axum::http::HeaderMap,
    ) -> BoxFuture<'a, Result<Option<Viewer>, String>>;
    /// The stored inventory of every configured host, for `viewer`.
    fn snapshot(&self, viewer: Viewer) -> BoxFuture<'_, Result<InventoryView, String>>;
    /// Asks every host for a fresh inventory now and waits until all have answered or failed.
    fn refresh(&self) -> BoxFuture<'_, Result<(), String>>;
    /// GPU models and image names a request can name.
    fn choices(&self) -> BoxFuture<'_, Result<Choices, String>>;
    /// The viewer's requests (admins: everyone's), newest first.
    fn requests(&self, viewer: Viewer) -> BoxFuture<'_, Result<Vec<RequestView>, String>>;
    /// Files a request for the viewer; returns its id.
    fn file(&self, viewer: Viewer, form: RequestForm)
    -> BoxFuture<'_, Result<i64, RequestFailure>>;
    /// Approves a request (the caller checked that the viewer is an admin), onto exactly
    /// `gpus` when any are given.
    fn approve(
        &self,
        viewer: Viewer,
        id: i64,
        gpus: Vec<String>,
    ) -> BoxFuture<'_, Result<(), String>>;
    /// Denies a request with a reason (the caller checked that the viewer is an admin).
    fn deny(&self, viewer: Viewer, id: i64, reason: String) -> BoxFuture<'_, Result<(), String>>;
    /// The viewer's VMs (admins: everyone's), newest first.
    fn vms(&self, viewer: Viewer) -> BoxFuture<'_, Result<Vec<VmView>, String>>;
    /// One VM, if the viewer may see it.
    fn vm(&self, viewer: Viewer, id: i64) -> BoxFuture<'_, Result<Option<VmView>, String>>;
    /// `start`, `stop`, `reboot`, `release` (owner or admin); `extend` by `hours`, `attach` or
    /// `detach` the GPU `gpu` (admins).
    fn vm_action(
        &self,
        viewer: Viewer,
        id: i64,
        action: String,
        hours: Option<i64>,
        gpu: Option<String>,
    ) -> BoxFuture<'_, Result<(), String>>;
    /// Stores the viewer's SSH public key; an empty key removes it.
    fn set_ssh_key(&self, viewer: Viewer, key: String) -> BoxFuture<'_, Result<(), String>>;
    /// The viewer's API tokens.
    fn tokens(&self, viewer: Viewer) -> BoxFuture<'_, Result<Vec<TokenView>, String>>;
    /// Makes an API token for the viewer, expiring after `expires_in_days` if given; returns
    /// the secret.
    fn create_token(
        &self,
        viewer: Viewer,
        name: String,
        expires_in_days: Option<u32>,
    ) -> BoxFuture<'_, Result<String, String>>;
    /// Changes the viewer's password (the request's headers and peer address say which session
    /// stays and whose attempt it is); their other sessions end.
    fn change_password(
        &self,
        viewer: Viewer,
        headers: axum::http::HeaderMap,
        peer: std::net::SocketAddr,
        current: String,
        new: String,
    ) -> BoxFuture<'_, Result<(), String>>;
    /// Every account (the service refuses anyone but admins).
    fn accounts(&self, viewer: Viewer) -> BoxFuture<'_, Result<Vec<AccountView>, String>>;
    /// An admin's action on an account (the service refuses anyone but admins).
    fn account_action(
        &self,
        viewer: Viewer,
        name: String,
        action: String,
    ) -> BoxFuture<'_, Result<(), String>>;
    /// Revokes one of the viewer's tokens.
    fn revoke_token(&self, viewer: Viewer, id: i64) -> BoxFuture<'_, Result<(), String>>;
    /// The audit log, newest first (the caller checked that the viewer is an admin).
    fn audit(&self, filter: AuditFilter) -> BoxFuture<'_, Result<Vec<AuditEntry>, String>>;
    /// Every registered plugin version.
    fn plugins(&self) -> BoxFuture<'_, Result<Vec<PluginView>, String>>;
    /// One plugin version.
    fn plugin(&self, id: i64) -> BoxFuture<'_, Result<Option<PluginView>, String>>;
    /// The agents `viewer` may run plugins on (admins: every agent).
    fn agents(&self, viewer: Viewer) -> BoxFuture<'_, Result<Vec<AgentView>, String>>;
    /// Registers a native host (admins); returns its agent token.
    fn add_native_host(
        &self,
        viewer: Viewer,
        name: String,
    ) -> BoxFuture<'_, Result<String, String>>;
    /// Revokes an agent's token (admins).
    fn revoke_agent(&self, viewer: Viewer, id: i64) -> BoxFuture<'_, Result<(), String>>;
    /// Queues a plugin run; returns the jobs' ids.
    fn queue_job(&self, viewer: Viewer, order: JobOrder)
    -> BoxFuture<'_, Result<Vec<i64>, String>>;
    /// Queues the study's suite on an agent; returns the batch.
    fn queue_suite(&self, viewer: Viewer, agent: i64) -> BoxFuture<'_, Result<String, String>>;
    /// The jobs `viewer` may see, newest first.
    fn jobs(
        &self,
        viewer: Viewer,
        filter: JobFilter,
    ) -> BoxFuture<'_, Result<Vec<JobView>, String>>;
    /// One job, if `viewer` may see it.
    fn job(&self, viewer: Viewer, id: i64) -> BoxFuture<'_, Result<Option<JobView>, String>>;
    /// Cancels a job.
    fn cancel_job(&self, viewer: Viewer, id: i64) -> BoxFuture<'_, Result<(), String>>;
}

/// The handle placed in context.
#[derive(Clone)]
pub struct Portal(pub Arc<dyn PortalService>);
