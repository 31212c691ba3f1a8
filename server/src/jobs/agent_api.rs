//! The API agents call, with their own tokens (`Authorization: Bearer psa_…`): one per VM,
//! handed to the guest in its cloud-init seed, or one per native host, made by an admin. An
//! agent token reaches these routes and nothing else; a user's token reaches none of them.
//!
//! An agent registers when it starts (what it is, the GPUs it sees), then polls: each poll is
//! its heartbeat, says which of its GPUs are idle, and may hand it a job. It fetches the
//! plugin by hash, reports progress (the answer says whether to go on) and posts the result.

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use passage_app::plugins::{DeviceView, JobResult};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::api::ApiError;
use crate::auth::{bearer, secret_hash};
use crate::store::{AgentRecord, AgentReport, JobEnd, param_texts};

/// The routes of this module but the result upload.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/agent/register", post(register))
        .route("/api/v1/agent/poll", post(poll))
        .route("/api/v1/agent/plugins/{sha256}", get(component))
        .route("/api/v1/agent/jobs/{id}/progress", post(progress))
}

/// The job results: up to 2 MiB from a guest on a slow link, so routed outside the request time
/// limit (an idle body is still cut).
pub fn upload_routes() -> Router<AppState> {
    Router::new().route(
        "/api/v1/agent/jobs/{id}/result",
        post(result).layer(DefaultBodyLimit::max(MAX_RESULT_BYTES)),
    )
}

/// The largest job result the portal keeps. A run's own limits (10,000 metrics and log lines,
/// 1 MiB of reported text) keep a result below it.
pub const MAX_RESULT_BYTES: usize = 2 << 20;

/// The agent behind a request's bearer token, or 401.
#[derive(Debug, Clone)]
pub struct Agent(pub AgentRecord);

impl FromRequestParts<AppState> for Agent {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let unauthorized = |why: &str| ApiError::new(StatusCode::UNAUTHORIZED, why.to_string());
        let token = bearer(&parts.headers)
            .filter(|t| t.starts_with("psa_"))
            .ok_or_else(|| unauthorized("agents send Authorization: Bearer psa_…"))?;
        let agent = state
            .store
            .agent_by_token(&secret_hash(token))
            .await?
            .ok_or_else(|| unauthorized("unknown or revoked agent token"))?;
        if let Some(vm) = agent.vm_id
            && matches!(
                agent.vm_state.as_deref(),
                Some("released" | "failed") | None
            )
        {
            return Err(unauthorized(&format!(
                "VM {vm} is gone: its agent token is no longer valid"
            )));
        }
        Ok(Agent(agent))
    }
}

/// What an agent says about itself when it starts.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// The machine's host name.
    pub hostname: String,
    /// The agent's version.
    pub version: String,
    /// `cuda` or `fake`.
    pub backend: String,
    /// Every GPU it sees.
    pub devices: Vec<DeviceView>,
    /// The machine's IP addresses, the one it reaches the portal from first: a VM's SSH address.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// The account it runs as, e.g. `passage-agent (uid 998)`.
    #[serde(default)]
    pub run_as: Option<String>,
    /// Why the CUDA driver cannot be used (not installed, not loaded), when it cannot.
    #[serde(default)]
    pub cuda_problem: Option<String>,
}

/// The portal's answer to a registration.
#[derive(Debug, Serialize, ToSchema)]
pub struct Registered {
    /// The agent's name.
    pub agent: String,
    /// `vm` or `host`.
    pub kind: String,
    /// How often to poll when idle.
    pub poll_secs: u64,
    /// For VM agents: the verdict on the passthrough.
    pub verification: Option<String>,
}

/// An agent starts: what it is and which GPUs it sees. Jobs it was running before are failed.
#[utoipa::path(post, path = "/api/v1/agent/register", tag = "agent", request_body = Registration,
    security(("agent" = [])),
    responses((status = 200, body = Registered), (status = 401), (status = 422)))]
pub(crate) async fn register(
    State(state): State<AppState>,
    Agent(agent): Agent,
    Json(report): Json<Registration>,
) -> Result<Json<Registered>, ApiError> {
    if report.devices.len() > 64 || report.hostname.len() > 255 || report.version.len() > 64 {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "at most 64 devices, a 255-character host name and a 64-character version".into(),
        ));
    }
    let addresses_ok = report.addresses.len() <= 16
        && report
            .addresses
            .iter()
            .all(|a| a.parse::<std::net::IpAddr>().is_ok());
    if !addresses_ok
        || report.run_as.as_ref().is_some_and(|r| r.len() > 128)
        || report.cuda_problem.as_ref().is_some_and(|p| p.len() > 1000)
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "at most 16 IP addresses, a 128-character account and a 1000-character CUDA problem"
                .into(),
        ));
    }
    let report = AgentReport {
        hostname: report.hostname,
        agent_version: report.version,
        backend: report.backend,
        devices: report.devices,
        addresses: report.addresses,
        run_as: report.run_as,
        cuda_problem: report.cuda_problem,
    };
    let verification = state.jobs.register_agent(&agent, &report).await?;
    Ok(Json(Registered {
        agent: agent.name,
        kind: agent.kind,
        poll_secs: state.jobs.agent_settings().heartbeat_secs,
        verification,
    }))
}

/// A poll: the agent's heartbeat.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Poll {
    /// The jobs it is running.
    #[serde(default)]
    pub running: Vec<i64>,
    /// Its idle GPUs (device indexes): a job is handed out only when one is given.
    #[serde(default)]
    pub free_devices: Vec<i64>,
}

/// A job for an agent.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobOrderForAgent {
    /// The job's id.
    pub id: i64,
    /// The plugin's name.
    pub plugin: String,
    /// Its version.
    pub version: String,
    /// The component's SHA-256: fetch it from `/api/v1/agent/plugins/{sha256}` and check it.
    pub sha256: String,
    /// Every parameter as `[name, value]`, in the plugin's order.
    #[schema(value_type = Vec<Vec<String>>)]
    pub params: Vec<(String, String)>,
    /// The device indexes to run on.
    pub devices: Vec<i64>,
    /// Wall-clock limit of the run, in seconds.
    pub time_limit_secs: u64,
    /// GPU memory limit, MiB.
    pub gpu_memory_mib: u64,
    /// The plugin's own memory limit, MiB.
    pub wasm_memory_mib: u64,
}

/// The answer to a poll.
#[derive(Debug, Serialize, ToSchema)]
pub struct PollAnswer {
    /// Running jobs to stop now (cancelled, or ended otherwise).
    pub stop: Vec<i64>,
    /// A job to start, if one fits the idle GPUs.
    pub job: Option<JobOrderForAgent>,
    /// When to poll next if idle.
    pub poll_secs: u64,
}

/// An agent checks in: which jobs to stop, and maybe a new job.
#[utoipa::path(post, path = "/api/v1/agent/poll", tag = "agent", request_body = Poll,
    security(("agent" = [])),
    responses((status = 200, body = PollAnswer), (status = 401)))]
pub(crate) async fn poll(
    State(state): State<AppState>,
    Agent(agent): Agent,
    Json(poll): Json<Poll>,
) -> Result<Json<PollAnswer>, ApiError> {
    let stop = state.jobs.stopped(&agent, &poll.running).await?;
    let limits = state.jobs.limits();
    let job = match state.jobs.take(&agent, &poll.free_devices).await? {
        Some(taken) => {
            let params = param_texts(&taken.params_json)?;
            let (plugin, version, sha256) = taken.plugin;
            Some(JobOrderForAgent {
                id: taken.id,
                plugin,
                version,
                sha256,
                params,
                devices: taken.devices,
                time_limit_secs: limits.time_limit_secs,
                gpu_memory_mib: limits.gpu_memory_mib,
                wasm_memory_mib: limits.wasm_memory_mib,
            })
        }
        None => None,
    };
    Ok(Json(PollAnswer {
        stop,
        job,
        poll_secs: state.jobs.agent_settings().heartbeat_secs,
    }))
}

/// The component of a plugin this agent has a job for.
#[utoipa::path(get, path = "/api/v1/agent/plugins/{sha256}", tag = "agent",
    security(("agent" = [])),
    params(("sha256" = String, Path, description = "the component's SHA-256, hex")),
    responses((status = 200, content_type = "application/wasm"), (status = 401), (status = 404)))]
pub(crate) async fn component(
    State(state): State<AppState>,
    Agent(agent): Agent,
    Path(sha256): Path<String>,
) -> Result<Response, ApiError> {
    let bytes = state.jobs.component_for(&agent, &sha256).await?;
    Ok(([(header::CONTENT_TYPE, "application/wasm")], bytes).into_response())
}

/// How far a running job is.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Progress {
    /// From 0 to 1.
    pub fraction: f64,
    /// A short note from the plugin.
    #[serde(default)]
    pub note: String,
}

/// The job's state after a report: anything but `running` means stop.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobState {
    /// `running`, `cancelled`, `failed` or `succeeded`.
    pub state: String,
}

/// A running job's progress.
#[utoipa::path(post, path = "/api/v1/agent/jobs/{id}/progress", tag = "agent",
    security(("agent" = [])), request_body = Progress,
    params(("id" = i64, Path, description = "job id")),
    responses((status = 200, body = JobState), (status = 401), (status = 404)))]
pub(crate) async fn progress(
    State(state): State<AppState>,
    Agent(agent): Agent,
    Path(id): Path<i64>,
    Json(progress): Json<Progress>,
) -> Result<Json<JobState>, ApiError> {
    let fraction = if progress.fraction.is_finite() {
        progress.fraction
    } else {
        0.0
    };
    let note: String = progress.note.chars().take(200).collect();
    let job_state = state.jobs.progress(&agent, id, fraction, &note).await?;
    Ok(Json(JobState { state: job_state }))
}

/// How a job ended.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Outcome {
    /// True when the plugin ran to its end.
    pub ok: bool,
    /// Why it failed, for people.
    #[serde(default)]
    pub error: Option<String>,
    /// What it produced; kept also when it failed after reporting figures.
    #[serde(default)]
    pub result: Option<JobResult>,
}

/// A job's end. Posting again, or after a cancellation, answers 409.
#[utoipa::path(post, path = "/api/v1/agent/jobs/{id}/result", tag = "agent",
    security(("agent" = [])), request_body = Outcome,
    params(("id" = i64, Path, description = "job id")),
    responses((status = 200, body = JobState), (status = 401), (status = 404), (status = 409), (status = 413)))]
pub(crate) async fn result(
    State(state): State<AppState>,
    Agent(agent): Agent,
    Path(id): Path<i64>,
    outcome: Result<Json<Outcome>, JsonRejection>,
) -> Result<Json<JobState>, ApiError> {
    let Json(outcome) = outcome.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the result is larger than {MAX_RESULT_BYTES} bytes, the most the portal keeps for \
                 one job; report fewer or shorter metrics and log lines"
            ),
        ),
        status => ApiError::new(status, rejection.body_text()),
    })?;
    let error = match (&outcome.ok, &outcome.error) {
        (true, _) => None,
        (false, Some(e)) => Some(e.chars().take(4000).collect::<String>()),
        (false, None) => Some("the run failed without saying why".to_string()),
    };
    let end_state = if outcome.ok { "succeeded" } else { "failed" };
    state
        .jobs
        .finish(
            &agent,
            id,
            &JobEnd {
                state: end_state,
                error: error.as_deref(),
                result: outcome.result.as_ref(),
            },
        )
        .await?;
    Ok(Json(JobState {
        state: end_state.into(),
    }))
}
