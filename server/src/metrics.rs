//! Prometheus metrics at `GET /metrics` (admins: a bearer token in Prometheus'
//! `authorization.credentials_file`), in the OpenMetrics text format.
//!
//! Two kinds of figure: what the process counts as it goes (HTTP requests and their latency,
//! libvirt operations, placement decisions), kept in one registry for the process, and the state
//! of the portal (GPUs, requests, VMs, jobs, agents), read from the database at each scrape so
//! that every replica reports the same.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use passage_hypervisor::{CallObserver, CallReport};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use serde_json::json;

use crate::AppState;
use crate::auth::Admin;

/// An HTTP answer: the route's pattern (not the path, which would name every id), the method
/// and the status.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: String,
    route: String,
    status: u16,
}

/// A route and method.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

/// A libvirt operation on a host.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LibvirtLabels {
    host: String,
    operation: String,
}

/// GPUs of one model on one host in one state.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GpuLabels {
    host: String,
    model: String,
    state: String,
}

/// Something counted by its state.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

/// Latency buckets from 0.5 ms to about 16 s.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Every figure the portal reports.
struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_latency: Family<RouteLabels, Histogram>,
    libvirt_latency: Family<LibvirtLabels, Histogram>,
    libvirt_errors: Family<LibvirtLabels, Counter>,
    placement: Histogram,
    gpus: Family<GpuLabels, Gauge>,
    requests: Family<StateLabels, Gauge>,
    vms: Family<StateLabels, Gauge>,
    jobs: Family<StateLabels, Gauge>,
    agents_online: Gauge,
    /// One scrape at a time sets the state gauges.
    scrape: tokio::sync::Mutex<()>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix("passage");
    let metrics = Metrics {
        registry: Registry::default(),
        http_requests: Family::default(),
        http_latency: Family::new_with_constructor(latency),
        libvirt_latency: Family::new_with_constructor(latency),
        libvirt_errors: Family::default(),
        placement: Histogram::new(exponential_buckets(0.000_05, 2.0, 14)),
        gpus: Family::default(),
        requests: Family::default(),
        vms: Family::default(),
        jobs: Family::default(),
        agents_online: Gauge::default(),
        scrape: tokio::sync::Mutex::new(()),
    };
    registry.register(
        "http_requests",
        "HTTP requests answered, by route, method and status",
        metrics.http_requests.clone(),
    );
    registry.register_with_unit(
        "http_request_duration",
        "Time to answer an HTTP request (to the response's head), by route and method",
        Unit::Seconds,
        metrics.http_latency.clone(),
    );
    registry.register_with_unit(
        "libvirt_operation_duration",
        "Time of an operation on a host's libvirt (connecting included), by host and operation",
        Unit::Seconds,
        metrics.libvirt_latency.clone(),
    );
    registry.register(
        "libvirt_operation_errors",
        "Operations on a host's libvirt that failed or timed out, by host and operation",
        metrics.libvirt_errors.clone(),
    );
    registry.register_with_unit(
        "placement_duration",
        "Time to decide where a request's GPUs go (reading the free GPUs included)",
        Unit::Seconds,
        metrics.placement.clone(),
    );
    registry.register(
        "gpus",
        "GPUs by host, model and state (available, claimed, unassignable, host-unreachable, missing)",
        metrics.gpus.clone(),
    );
    registry.register(
        "requests",
        "GPU requests by state",
        metrics.requests.clone(),
    );
    registry.register("vms", "VMs by state", metrics.vms.clone());
    registry.register(
        "jobs",
        "Jobs by state (queued, running, succeeded, failed, cancelled)",
        metrics.jobs.clone(),
    );
    registry.register(
        "agents_online",
        "Agents (in VMs and on native hosts) heard from recently",
        metrics.agents_online.clone(),
    );
    Metrics {
        registry,
        ..metrics
    }
});

/// The route of `/metrics`.
pub fn routes() -> Router<AppState> {
    Router::new().route("/metrics", get(scrape))
}

/// Counts each request and its time to the response's head, by the route that answered it.
pub async fn count_requests(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_string();
    let method = request.method().as_str().to_string();
    let began = Instant::now();
    let response = next.run(request).await;
    let elapsed = began.elapsed().as_secs_f64();
    METRICS
        .http_latency
        .get_or_create(&RouteLabels {
            method: method.clone(),
            route: route.clone(),
        })
        .observe(elapsed);
    METRICS
        .http_requests
        .get_or_create(&HttpLabels {
            method,
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

/// What hosts report of their libvirt operations, counted here. `host` is the portal's name
/// for the host (a URI can carry a user name).
pub fn libvirt_observer(host: &str) -> CallObserver {
    let host = host.to_string();
    std::sync::Arc::new(move |report: &CallReport<'_>| {
        let labels = LibvirtLabels {
            host: host.clone(),
            operation: report.operation.to_string(),
        };
        METRICS
            .libvirt_latency
            .get_or_create(&labels)
            .observe(report.elapsed.as_secs_f64());
        if report.failed {
            METRICS.libvirt_errors.get_or_create(&labels).inc();
        }
    })
}

/// Counts one placement decision.
pub fn placed_in(elapsed: Duration) {
    METRICS.placement.observe(elapsed.as_secs_f64());
}

async fn scrape(State(state): State<AppState>, _: Admin) -> Response {
    let _one_at_a_time = METRICS.scrape.lock().await;
    if let Err(e) = read_state(&state).await {
        tracing::warn!(error = %e, "metrics: the database does not answer");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": "the database does not answer" })),
        )
            .into_response();
    }
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &METRICS.registry) {
        tracing::warn!(error = %e, "metrics: encoding failed");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Sets the state gauges from the database: labels that no longer occur disappear.
async fn read_state(state: &AppState) -> Result<(), crate::store::StoreError> {
    let gpus = state.store.gpus().await?;
    let tallies = state.store.tallies(state.jobs.online_after()).await?;
    METRICS.gpus.clear();
    for gpu in gpus.iter() {
        METRICS
            .gpus
            .get_or_create(&GpuLabels {
                host: gpu.host.clone(),
                model: gpu.model.clone(),
                state: gpu.state.as_str().to_string(),
            })
            .inc();
    }
    for (family, counts) in [
        (&METRICS.requests, &tallies.requests),
        (&METRICS.vms, &tallies.vms),
        (&METRICS.jobs, &tallies.jobs),
    ] {
        family.clear();
        for (state, count) in counts {
            family
                .get_or_create(&StateLabels {
                    state: state.clone(),
                })
                .set(*count);
        }
    }
    METRICS.agents_online.set(tallies.agents_online);
    Ok(())
}
