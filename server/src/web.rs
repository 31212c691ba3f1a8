//! Serves the Leptos UI: server-rendered pages, their server functions, and the browser assets.

use std::sync::Arc;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::post;
use axum::{Form, Router};
use leptos::config::LeptosOptions;
use leptos::prelude::provide_context;
use leptos_axum::{LeptosRoutes, file_and_error_handler, generate_route_list};
use passage_app::inventory::service::Inventory as InventoryHandle;
use passage_app::{App, shell};
use tower_http::compression::CompressionLayer;
use tower_http::trace::TraceLayer;

use crate::AppState;
use crate::auth::{self, AuthError};
use crate::config::Config;

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

/// Pages, server functions, the API and static files in one router.
pub fn router(state: AppState) -> Router {
    let routes = generate_route_list(App);
    let handle = InventoryHandle(Arc::new(state.inventory.clone()));
    let options = state.leptos_options.clone();
    Router::new()
        .merge(crate::api::routes())
        .route("/login", post(login_form))
        .route("/logout", post(logout_form))
        .leptos_routes_with_context(
            &state,
            routes,
            move || provide_context(handle.clone()),
            move || shell(options.clone()),
        )
        .fallback(file_and_error_handler::<AppState, _>(shell))
        .layer(axum::middleware::from_fn(auth::same_origin_guard))
        .layer(CompressionLayer::new())
        .layer(TraceLayer::new_for_http())
        .with_state(state)
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
        .login(&form.name, &form.password, client.ip())
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
