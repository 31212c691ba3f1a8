//! What the server provides to server functions, through context: who is asking, the
//! inventory and the requests. The server implements [`PortalService`]; the UI never touches the
//! database itself.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::account::{AccountView, TokenView};
use crate::experiments::{Comparison, ExperimentForm, ExperimentSummary, ExperimentView};
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
    /// Anything else.
    Other(Refusal),
}

/// Why the portal did not do what a server function asked: the HTTP status the API gives the
/// same refusal (401, 403, 404, 409, 422, 503, ...) and what to tell people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The HTTP status.
    pub status: u16,
    /// What went wrong, for people.
    pub message: String,
}

impl Refusal {
    /// A refusal with this status and message.
    pub fn new(status: u16, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            message: message.into(),
        }
    }

    /// Nobody is signed in.
    pub fn sign_in() -> Refusal {
        Refusal::new(401, "sign in first")
    }

    /// Only admins may do this.
    pub fn admins_only(message: impl Into<String>) -> Refusal {
        Refusal::new(403, message)
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The error a server function answers with. When the request is a call of the server function
/// itself (under `/api/`), its response carries the refusal's status instead of a bare 500; a
/// page that calls it while it renders keeps its own status.
pub fn refused(refusal: Refusal) -> leptos::prelude::ServerFnError {
    use leptos::prelude::use_context;
    let called = use_context::<axum::http::request::Parts>()
        .is_some_and(|parts| parts.uri.path().starts_with("/api/"));
    if called
        && let Some(options) = use_context::<leptos_axum::ResponseOptions>()
        && let Ok(status) = axum::http::StatusCode::from_u16(refusal.status)
    {
        options.set_status(status);
    }
    leptos::prelude::ServerFnError::new(refusal.message)
}

/// What the UI needs from the server.
pub trait PortalService: Send + Sync + 'static {
    /// The signed-in user behind these request headers, if any.
    fn viewer<'a>(
        &'a self,
        headers: &'a axum::http::HeaderMap,
    ) -> BoxFuture<'a, Result<Option<Viewer>, Refusal>>;
    /// The stored inventory of every configured host, for `viewer`.
    fn snapshot(&self, viewer: Viewer) -> BoxFuture<'_, Result<InventoryView, Refusal>>;
    /// Asks every host for a fresh inventory now and waits until all have answered or failed.
    fn refresh(&self) -> BoxFuture<'_, Result<(), Refusal>>;
    /// GPU models and image names a request can name.
    fn choices(&self) -> BoxFuture<'_, Result<Choices, Refusal>>;
    /// The viewer's requests (admins: everyone's), newest first.
    fn requests(&self, viewer: Viewer) -> BoxFuture<'_, Result<Vec<RequestView>, Refusal>>;
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
    ) -> BoxFuture<'_, Result<(), Refusal>>;
    /// Denies a request with a reason (the caller checked that the viewer is an admin).
    fn deny(&self, viewer: Viewer, id: i64, reason: String) -> BoxFuture<'_, Result<(), Refusal>>;
    /// The viewer's VMs (admins: everyone's), newest first.
    fn vms(&self, viewer: Viewer) -> BoxFuture<'_, Result<Vec<VmView>, Refusal>>;
    /// One VM, if the viewer may see it.
    fn vm(&self, viewer: Viewer, id: i64) -> BoxFuture<'_, Result<Option<VmView>, Refusal>>;
    /// `start`, `stop`, `reboot`, `release` (owner or admin); `extend` by `hours`, `attach` or
    /// `detach` the GPU `gpu` (admins).
    fn vm_action(
        &self,
        viewer: Viewer,
        id: i64,
        action: String,
        hours: Option<i64>,
        gpu: Option<String>,
    ) -> BoxFuture<'_, Result<(), Refusal>>;
    /// Stores the viewer's SSH public key; an empty key removes it.
    fn set_ssh_key(&self, viewer: Viewer, key: String) -> BoxFuture<'_, Result<(), Refusal>>;
    /// The viewer's API tokens.
    fn tokens(&self, viewer: Viewer) -> BoxFuture<'_, Result<Vec<TokenView>, Refusal>>;
    /// Makes an API token for the viewer, expiring after `expires_in_days` if given; returns
    /// the secret.
    fn create_token(
        &self,
        viewer: Viewer,
        name: String,
        expires_in_days: Option<u32>,
    ) -> BoxFuture<'_, Result<String, Refusal>>;
    /// Changes the viewer's password (the request's headers and peer address say which session
    /// stays and whose attempt it is); their other sessions end.
    fn change_password(
        &self,
        viewer: Viewer,
        headers: axum::http::HeaderMap,
        peer: std::net::SocketAddr,
        current: String,
        new: String,
    ) -> BoxFuture<'_, Result<(), Refusal>>;
    /// Every account (the service refuses anyone but admins).
    fn accounts(&self, viewer: Viewer) -> BoxFuture<'_, Result<Vec<AccountView>, Refusal>>;
    /// An admin's action on an account (the service refuses anyone but admins).
    fn account_action(
        &self,
        viewer: Viewer,
        name: String,
        action: String,
    ) -> BoxFuture<'_, Result<(), Refusal>>;
    /// Revokes one of the viewer's tokens.
    fn revoke_token(&self, viewer: Viewer, id: i64) -> BoxFuture<'_, Result<(), Refusal>>;
    /// The audit log, newest first (the caller checked that the viewer is an admin).
    fn audit(&self, filter: AuditFilter) -> BoxFuture<'_, Result<Vec<AuditEntry>, Refusal>>;
    /// Every registered plugin version.
    fn plugins(&self) -> BoxFuture<'_, Result<Vec<PluginView>, Refusal>>;
    /// One plugin version.
    fn plugin(&self, id: i64) -> BoxFuture<'_, Result<Option<PluginView>, Refusal>>;
    /// The agents `viewer` may run plugins on (admins: every agent).
    fn agents(&self, viewer: Viewer) -> BoxFuture<'_, Result<Vec<AgentView>, Refusal>>;
    /// Registers a native host (admins); returns its agent token.
    fn add_native_host(
        &self,
        viewer: Viewer,
        name: String,
    ) -> BoxFuture<'_, Result<String, Refusal>>;
    /// Revokes an agent's token (admins).
    fn revoke_agent(&self, viewer: Viewer, id: i64) -> BoxFuture<'_, Result<(), Refusal>>;
    /// Queues a plugin run; returns the jobs' ids.
    fn queue_job(
        &self,
        viewer: Viewer,
        order: JobOrder,
    ) -> BoxFuture<'_, Result<Vec<i64>, Refusal>>;
    /// Queues the study's suite on an agent; returns the batch.
    fn queue_suite(&self, viewer: Viewer, agent: i64) -> BoxFuture<'_, Result<String, Refusal>>;
    /// The jobs `viewer` may see, newest first.
    fn jobs(
        &self,
        viewer: Viewer,
        filter: JobFilter,
    ) -> BoxFuture<'_, Result<Vec<JobView>, Refusal>>;
    /// One job, if `viewer` may see it.
    fn job(&self, viewer: Viewer, id: i64) -> BoxFuture<'_, Result<Option<JobView>, Refusal>>;
    /// Cancels a job.
    fn cancel_job(&self, viewer: Viewer, id: i64) -> BoxFuture<'_, Result<(), Refusal>>;
    /// The experiments `viewer` may see (admins: all), newest first.
    fn experiments(&self, viewer: Viewer)
    -> BoxFuture<'_, Result<Vec<ExperimentSummary>, Refusal>>;
    /// One experiment with its results, if `viewer` may see it.
    fn experiment(
        &self,
        viewer: Viewer,
        id: i64,
    ) -> BoxFuture<'_, Result<Option<ExperimentView>, Refusal>>;
    /// Makes an experiment for `viewer`; returns its id.
    fn create_experiment(
        &self,
        viewer: Viewer,
        form: ExperimentForm,
    ) -> BoxFuture<'_, Result<i64, Refusal>>;
    /// Cancels an experiment (its owner or an admin).
    fn cancel_experiment(&self, viewer: Viewer, id: i64) -> BoxFuture<'_, Result<(), Refusal>>;
    /// Approves the pending requests of an experiment's VMs (admins).
    fn approve_experiment(&self, viewer: Viewer, id: i64) -> BoxFuture<'_, Result<(), Refusal>>;
    /// Two experiments compared.
    fn compare_experiments(
        &self,
        viewer: Viewer,
        a: i64,
        b: i64,
    ) -> BoxFuture<'_, Result<Comparison, Refusal>>;
}

/// The handle placed in context.
#[derive(Clone)]
pub struct Portal(pub Arc<dyn PortalService>);
