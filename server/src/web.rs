//! Serves the Leptos UI: server-rendered pages, their server functions, and the browser assets;
//! and puts every route, the API's included, behind the guards of [`crate::guard`].

use std::sync::Arc;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::post;
use axum::{Form, Router};
use leptos::config::LeptosOptions;
use leptos::prelude::provide_context;
use leptos_axum::{LeptosRoutes, file_and_error_handler_with_context, generate_route_list};
use passage_app::account::{AccountView, TokenView};
use passage_app::experiments::{Comparison, ExperimentForm, ExperimentSummary, ExperimentView};
use passage_app::inventory::{InventoryView, Viewer};
use passage_app::plugins::{AgentView, JobFilter, JobOrder, JobView, PluginView};
use passage_app::requests::{Choices, RequestForm, RequestView};
use passage_app::service::{BoxFuture, Portal, PortalService, Refusal, RequestFailure};
use passage_app::vms::{AuditEntry, AuditFilter, VmView};
use passage_app::{App, shell};
use tower_http::compression::CompressionLayer;
use tower_http::request_id::{
    MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::AppState;
use crate::accounts::AccountAction;
use crate::auth::{self, AuthError};
use crate::config::{Config, HttpSettings};
use crate::guard::{self, ConcurrencyLimit};
use crate::store::Window;

/// The name of the browser bundle: `pkg/passage.js` and `pkg/passage_bg.wasm`.
const OUTPUT_NAME: &str = "passage";

/// Leptos' options for the configured asset directory. Missing assets are reported once here:
/// pages still render, but stay static until the browser bundle is built.
pub fn site_options(config: &Config) -> LeptosOptions {
    let bundle = config
        .site_dir
        .join("pkg")
        .join(format!("{OUTPUT_NAME}.js"));
    if !bundle.is_file() {
        tracing::warn!(
            missing = %bundle.display(),
            "the browser bundle is missing: pages render but are not interactive (build it with ./x build)"
        );
    }
    LeptosOptions::builder()
        .output_name(OUTPUT_NAME)
        .site_root(config.site_dir.display().to_string())
        .site_pkg_dir("pkg")
        .site_addr(config.listen)
        .build()
}

/// The routes that must finish within the request time limit: the API, the agents' API, the
/// guests' seeds and agent binary, and the forms that post without script.
fn bounded_routes() -> Router<AppState> {
    Router::new()
        .merge(crate::api::routes())
        .merge(crate::accounts::routes())
        .merge(crate::jobs::api::routes())
        .merge(crate::jobs::agent_api::routes())
        .merge(crate::metrics::routes())
        .route("/login", post(login_form))
        .route("/logout", post(logout_form))
}

/// The routes that may take long while they move: the console websocket and uploads.
fn long_lived_routes(max_upload_bytes: u64) -> Router<AppState> {
    Router::new()
        .merge(crate::vms::api::console_routes())
        .merge(crate::jobs::api::upload_routes(max_upload_bytes))
        .merge(crate::jobs::agent_api::upload_routes())
}

/// Every route but the pages, their server functions and the static files. Tests list what it
/// serves (its `Debug` names each path) to hold each route to an authorization rule.
pub fn routes(max_upload_bytes: u64) -> Router<AppState> {
    bounded_routes().merge(long_lived_routes(max_upload_bytes))
}

/// Pages, server functions, the API and static files in one router. Every response carries the
/// security headers (`over_tls`: HSTS too); requests beyond `http.max_concurrent_requests` are
/// refused at once; every request but the long-lived ones (console, uploads) has
/// `http.request_timeout` to finish, and those have it as an idle limit on their body.
pub fn router(state: AppState, http: &HttpSettings, over_tls: bool) -> Router {
    let routes = generate_route_list(App);
    let handle = Portal(Arc::new(UiService {
        state: state.clone(),
    }));
    let options = LeptosOptions::clone(&state.leptos_options);
    let context = move || {
        provide_context(handle.clone());
        guard::set_page_policy();
    };
    let bounded = bounded_routes()
        .leptos_routes_with_context(&state, routes, context.clone(), move || {
            shell(options.clone())
        })
        .fallback(file_and_error_handler_with_context::<AppState, _>(
            context, shell,
        ))
        .layer(axum::middleware::from_fn_with_state(
            http.request_timeout,
            guard::limit_time,
        ));
    let long_lived = long_lived_routes(state.jobs.max_upload_bytes())
        .layer(RequestBodyTimeoutLayer::new(http.request_timeout));
    let router = bounded
        .merge(long_lived)
        .layer(axum::middleware::from_fn(crate::api::json_errors))
        .layer(axum::middleware::from_fn(auth::same_origin_guard))
        .layer(CompressionLayer::new())
        .layer(axum::middleware::from_fn_with_state(
            ConcurrencyLimit::new(http.max_concurrent_requests),
            guard::limit_concurrency,
        ))
        .layer(axum::middleware::from_fn(crate::metrics::count_requests))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid));
    guard::with_security_headers(router, over_tls).with_state(state)
}

/// The newest entries the job and audit pages show.
const PAGE_WINDOW: Window = Window {
    before: None,
    limit: Some(500),
};

/// The span every request's log lines carry: its id (`X-Request-Id`, made here unless a proxy
/// in front sent one, and returned in the response), the method and the route's pattern (not
/// the path, which can hold a secret such as a cloud-init key).
fn request_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let id = request
        .extensions()
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .unwrap_or("-");
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("-", axum::extract::MatchedPath::as_str);
    tracing::info_span!("request", id, method = %request.method(), route)
}

/// What the pages' server functions reach: the same state, rules and checks as the API.
struct UiService {
    state: AppState,
}

impl PortalService for UiService {
    fn viewer<'a>(
        &'a self,
        headers: &'a HeaderMap,
    ) -> BoxFuture<'a, Result<Option<Viewer>, Refusal>> {
        Box::pin(async move {
            let user = self
                .state
                .auth
                .authenticate(headers)
                .await
                .map_err(refusal)?;
            Ok(user.map(|u| Viewer {
                id: u.id,
                name: u.name,
                is_admin: u.is_admin,
            }))
        })
    }

    fn snapshot(&self, viewer: Viewer) -> BoxFuture<'_, Result<InventoryView, Refusal>> {
        Box::pin(async move { self.state.inventory.view(viewer).await.map_err(refusal) })
    }

    fn refresh(&self) -> BoxFuture<'_, Result<(), Refusal>> {
        Box::pin(async move { self.state.inventory.refresh_all().await.map_err(refusal) })
    }

    fn choices(&self) -> BoxFuture<'_, Result<Choices, Refusal>> {
        Box::pin(async move {
            crate::requests::choices(&self.state.store)
                .await
                .map_err(refusal)
        })
    }

    fn requests(&self, viewer: Viewer) -> BoxFuture<'_, Result<Vec<RequestView>, Refusal>> {
        Box::pin(async move {
            let scope = if viewer.is_admin {
                None
            } else {
                Some(viewer.id)
            };
            self.state
                .store
                .requests(scope, Window::ALL)
                .await
                .map_err(refusal)
        })
    }

    fn file(
        &self,
        viewer: Viewer,
        form: RequestForm,
    ) -> BoxFuture<'_, Result<i64, RequestFailure>> {
        Box::pin(async move {
            let user = auth::User {
                id: viewer.id,
                name: viewer.name,
                is_admin: viewer.is_admin,
            };
            crate::requests::file_request(&self.state, &user, form)
                .await
                .map_err(|e| match e {
                    crate::requests::RequestError::Invalid(fields) => {
                        RequestFailure::Invalid(fields)
                    }
                    other => RequestFailure::Other(refusal(other)),
                })
        })
    }

    fn approve(
        &self,
        viewer: Viewer,
        id: i64,
        gpus: Vec<String>,
    ) -> BoxFuture<'_, Result<(), Refusal>> {
        Box::pin(async move {
            let choice = crate::scheduler::Choice { host: None, gpus };
            crate::requests::approve_request(&self.state, &viewer.name, id, &choice)
                .await
                .map_err(refusal)
        })
    }

    fn vms(&self, viewer: Viewer) -> BoxFuture<'_, Result<Vec<VmView>, Refusal>> {
        Box::pin(async move {
            self.state
                .vms
                .list(&user_of(viewer), Window::ALL)
                .await
                .map_err(refusal)
        })
    }

    fn vm(&self, viewer: Viewer, id: i64) -> BoxFuture<'_, Result<Option<VmView>, Refusal>> {
        Box::pin(async move {
            match self.state.vms.show(&user_of(viewer), id).await {
                Ok(vm) => Ok(Some(vm)),
                Err(crate::vms::VmError::NotFound(_)) => Ok(None),
                Err(e) => Err(refusal(e)),
            }
        })
    }

    fn vm_action(
        &self,
        viewer: Viewer,
        id: i64,
        action: String,
        hours: Option<i64>,
        gpu: Option<String>,
    ) -> BoxFuture<'_, Result<(), Refusal>> {
        Box::pin(async move {
            self.vm_action_for(viewer, id, action, hours, gpu)
                .await
                .map_err(refusal)
        })
    }

    fn tokens(&self, viewer: Viewer) -> BoxFuture<'_, Result<Vec<TokenView>, Refusal>> {
        Box::pin(async move {
            let tokens = self.state.store.tokens(viewer.id).await.map_err(refusal)?;
            Ok(tokens
                .into_iter()
                .map(|t| TokenView {
                    id: t.id,
                    name: t.name,
                    created_at: crate::store::rfc3339(t.created_at),
                    last_used_at: t.last_used_at.map(crate::store::rfc3339),
                    revoked_at: t.revoked_at.map(crate::store::rfc3339),
                    expires_at: t.expires_at.map(crate::store::rfc3339),
                    expired: t.expires_at.is_some_and(|at| at <= crate::store::now_ms()),
                })
                .collect())
        })
    }

    fn create_token(
        &self,
        viewer: Viewer,
        name: String,
        expires_in_days: Option<u32>,
    ) -> BoxFuture<'_, Result<String, Refusal>> {
        Box::pin(async move {
            self.state
                .auth
                .create_token(&user_of(viewer), &name, expires_in_days)
                .await
                .map(|(_, secret)| secret)
                .map_err(refusal)
        })
    }

    fn change_password(
        &self,
        viewer: Viewer,
        headers: HeaderMap,
        peer: SocketAddr,
        current: String,
        new: String,
    ) -> BoxFuture<'_, Result<(), Refusal>> {
        Box::pin(async move {
            let client = self.state.client_address(peer, &headers);
            // A bearer token is not a session to keep: every session ends.
            let session = auth::bearer(&headers)
                .is_none()
                .then(|| auth::session_secret(&headers))
                .flatten();
            self.state
                .auth
                .change_password(&user_of(viewer), client, session.as_deref(), &current, &new)
                .await
                .map_err(refusal)
        })
    }

    fn accounts(&self, viewer: Viewer) -> BoxFuture<'_, Result<Vec<AccountView>, Refusal>> {
        Box::pin(async move {
            self.state
                .auth
                .accounts(&user_of(viewer))
                .await
                .map_err(refusal)
        })
    }

    fn account_action(
        &self,
        viewer: Viewer,
        name: String,
        action: String,
    ) -> BoxFuture<'_, Result<(), Refusal>> {
        Box::pin(async move {
            let action = AccountAction::parse(&action)
                .ok_or_else(|| Refusal::new(422, format!("no account action {action:?}")))?;
            self.state
                .auth
                .act_on_account(&user_of(viewer), &name, action)
                .await
                .map_err(refusal)
        })
    }

    fn revoke_token(&self, viewer: Viewer, id: i64) -> BoxFuture<'_, Result<(), Refusal>> {
        Box::pin(async move {
            match self.state.store.revoke_token(viewer.id, id).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(Refusal::new(404, format!("no token {id}"))),
                Err(e) => Err(refusal(e)),
            }
        })
    }

    fn set_ssh_key(&self, viewer: Viewer, key: String) -> BoxFuture<'_, Result<(), Refusal>> {
        Box::pin(async move {
            let key = key.trim();
            let key = (!key.is_empty()).then_some(key);
            if let Some(key) = key {
                crate::vms::api::check_ssh_key(key).map_err(|e| Refusal::new(422, e))?;
            }
            self.state
                .store
                .set_ssh_key(viewer.id, key)
                .await
                .map_err(refusal)
        })
    }

    fn audit(&self, filter: AuditFilter) -> BoxFuture<'_, Result<Vec<AuditEntry>, Refusal>> {
        Box::pin(async move {
            self.state
                .store
                .audit_entries(&filter, PAGE_WINDOW)
                .await
                .map_err(refusal)
        })
    }

    fn plugins(&self) -> BoxFuture<'_, Result<Vec<PluginView>, Refusal>> {
        Box::pin(async move { self.state.jobs.plugins().await.map_err(refusal) })
    }

    fn plugin(&self, id: i64) -> BoxFuture<'_, Result<Option<PluginView>, Refusal>> {
        Box::pin(async move {
            match self.state.jobs.plugin(id).await {
                Ok(plugin) => Ok(Some(plugin)),
                Err(crate::jobs::JobError::NotFound(_)) => Ok(None),
                Err(e) => Err(refusal(e)),
            }
        })
    }

    fn agents(&self, viewer: Viewer) -> BoxFuture<'_, Result<Vec<AgentView>, Refusal>> {
        Box::pin(async move {
            self.state
                .jobs
                .agents(&user_of(viewer))
                .await
                .map_err(refusal)
        })
    }

    fn add_native_host(
        &self,
        viewer: Viewer,
        name: String,
    ) -> BoxFuture<'_, Result<String, Refusal>> {
        Box::pin(async move {
            self.state
                .jobs
                .add_native_host(&user_of(viewer), &name)
                .await
                .map(|(_, token)| token)
                .map_err(refusal)
        })
    }

    fn revoke_agent(&self, viewer: Viewer, id: i64) -> BoxFuture<'_, Result<(), Refusal>> {
        Box::pin(async move {
            self.state
                .jobs
                .revoke_agent(&user_of(viewer), id)
                .await
                .map_err(refusal)
        })
    }

    fn queue_job(
        &self,
        viewer: Viewer,
        order: JobOrder,
    ) -> BoxFuture<'_, Result<Vec<i64>, Refusal>> {
        Box::pin(async move {
            self.state
                .jobs
                .queue(&user_of(viewer), &order)
                .await
                .map_err(refusal)
        })
    }

    fn queue_suite(&self, viewer: Viewer, agent: i64) -> BoxFuture<'_, Result<String, Refusal>> {
        Box::pin(async move {
            self.state
                .jobs
                .queue_suite(&user_of(viewer), agent)
                .await
                .map_err(refusal)
        })
    }

    fn jobs(
        &self,
        viewer: Viewer,
        filter: JobFilter,
    ) -> BoxFuture<'_, Result<Vec<JobView>, Refusal>> {
        Box::pin(async move {
            self.state
                .jobs
                .jobs(&user_of(viewer), &filter, PAGE_WINDOW)
                .await
                .map_err(refusal)
        })
    }

    fn job(&self, viewer: Viewer, id: i64) -> BoxFuture<'_, Result<Option<JobView>, Refusal>> {
        Box::pin(async move {
            match self.state.jobs.job(&user_of(viewer), id).await {
                Ok(job) => Ok(Some(job)),
                Err(crate::jobs::JobError::NotFound(_)) => Ok(None),
                Err(e) => Err(refusal(e)),
            }
        })
    }

    fn cancel_job(&self, viewer: Viewer, id: i64) -> BoxFuture<'_, Result<(), Refusal>> {
        Box::pin(async move {
            self.state
                .jobs
                .cancel(&user_of(viewer), id)
                .await
                .map_err(refusal)
        })
    }

    fn experiments(
        &self,
        viewer: Viewer,
    ) -> BoxFuture<'_, Result<Vec<ExperimentSummary>, Refusal>> {
        Box::pin(async move {
            crate::experiments::list(&self.state, &user_of(viewer))
                .await
                .map_err(refusal)
        })
    }

    fn experiment(
        &self,
        viewer: Viewer,
        id: i64,
    ) -> BoxFuture<'_, Result<Option<ExperimentView>, Refusal>> {
        Box::pin(async move {
            match crate::experiments::show(&self.state, &user_of(viewer), id).await {
                Ok(view) => Ok(Some(view)),
                Err(crate::experiments::ExperimentError::NotFound(_)) => Ok(None),
                Err(e) => Err(refusal(e)),
            }
        })
    }

    fn create_experiment(
        &self,
        viewer: Viewer,
        form: ExperimentForm,
    ) -> BoxFuture<'_, Result<i64, Refusal>> {
        Box::pin(async move {
            crate::experiments::create(&self.state, &user_of(viewer), form)
                .await
                .map_err(refusal)
        })
    }

    fn cancel_experiment(&self, viewer: Viewer, id: i64) -> BoxFuture<'_, Result<(), Refusal>> {
        Box::pin(async move {
            crate::experiments::cancel(&self.state, &user_of(viewer), id)
                .await
                .map_err(refusal)
        })
    }

    fn approve_experiment(&self, viewer: Viewer, id: i64) -> BoxFuture<'_, Result<(), Refusal>> {
        Box::pin(async move {
            crate::experiments::approve(&self.state, &user_of(viewer), id)
                .await
                .map(|_| ())
                .map_err(refusal)
        })
    }

    fn compare_experiments(
        &self,
        viewer: Viewer,
        a: i64,
        b: i64,
    ) -> BoxFuture<'_, Result<Comparison, Refusal>> {
        Box::pin(async move {
            crate::experiments::compare_two(&self.state, &user_of(viewer), a, b)
                .await
                .map_err(refusal)
        })
    }

    fn deny(&self, viewer: Viewer, id: i64, reason: String) -> BoxFuture<'_, Result<(), Refusal>> {
        Box::pin(async move {
            crate::requests::deny_request(&self.state.store, &viewer.name, id, &reason)
                .await
                .map_err(refusal)
        })
    }
}

/// A refusal for a page's server function: the status and words the API gives for the same
/// error (a database failure as such, without the database's own words).
fn refusal(e: impl Into<crate::api::ApiError>) -> Refusal {
    let e = e.into();
    Refusal::new(e.status().as_u16(), e.message())
}

fn user_of(viewer: Viewer) -> auth::User {
    auth::User {
        id: viewer.id,
        name: viewer.name,
        is_admin: viewer.is_admin,
    }
}

impl UiService {
    async fn vm_action_for(
        &self,
        viewer: Viewer,
        id: i64,
        action: String,
        hours: Option<i64>,
        gpu: Option<String>,
    ) -> Result<(), crate::vms::VmError> {
        let user = user_of(viewer);
        let gpu = gpu.unwrap_or_default();
        match action.as_str() {
            "extend" => {
                self.state.vms.extend(&user, id, hours.unwrap_or(0)).await?;
                return Ok(());
            }
            "attach" => {
                self.state.vms.attach_gpu(&user, id, gpu.trim()).await?;
                return Ok(());
            }
            "detach" => {
                self.state.vms.detach_gpu(&user, id, gpu.trim()).await?;
                return Ok(());
            }
            _ => {}
        }
        let action = crate::vms::VmAction::parse(&action)
            .ok_or_else(|| crate::vms::VmError::Invalid(format!("unknown action {action:?}")))?;
        self.state.vms.act(&user, id, action).await?;
        Ok(())
    }
}

/// The sign-in form's fields.
#[derive(Debug, serde::Deserialize)]
struct LoginForm {
    name: String,
    password: String,
}

/// Signs in from the login page's form and goes to the hosts page, or back with an error code.
async fn login_form(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    match state
        .auth
        .login(
            &form.name,
            &form.password,
            state.client_address(client, &headers),
        )
        .await
    {
        Ok((_, secret)) => (
            [(
                header::SET_COOKIE,
                auth::session_cookie(&secret, auth::over_tls(&headers)),
            )],
            Redirect::to("/"),
        )
            .into_response(),
        Err(AuthError::RateLimited(_)) => Redirect::to("/login?error=rate-limited").into_response(),
        Err(AuthError::Disabled) => Redirect::to("/login?error=disabled").into_response(),
        Err(AuthError::Store(e)) => {
            tracing::error!(error = %e, "sign-in failed on the database");
            Redirect::to("/login?error=unavailable").into_response()
        }
        Err(_) => Redirect::to("/login?error=credentials").into_response(),
    }
}

/// Signs out and goes to the login page.
async fn logout_form(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(e) = state.auth.logout(&headers).await {
        tracing::error!(error = %e, "sign-out failed on the database");
    }
    (
        [(header::SET_COOKIE, auth::cleared_cookie())],
        Redirect::to("/login"),
    )
        .into_response()
}
