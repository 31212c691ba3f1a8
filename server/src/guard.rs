//! What the HTTP server does around every handler: security headers on every response, a time
//! limit and a concurrency limit on requests, and the client's address behind trusted proxies.
//!
//! Pages get a Content-Security-Policy that allows inline scripts only with the nonce Leptos
//! puts on its hydration scripts for that one response; every other response gets a policy that
//! allows nothing at all. Long-lived exchanges (the console websocket, uploads) are routed
//! outside the time limit and get an idle limit on their body instead.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::Semaphore;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::config::IpRange;

/// The policy of every response that is not a page: JSON, files, errors. Nothing may load.
pub const DEFAULT_POLICY: &str =
    "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The policy of a page rendered with `nonce`: its own scripts, styles and images, inline
/// scripts only with the nonce (Leptos' hydration and resource scripts), WebAssembly, style
/// attributes (progress bars and heat maps are sized by them; they cannot run script), `data:`
/// images (noVNC draws the remote cursor as one), requests and websockets to the portal only,
/// forms posted to the portal only, and no framing.
pub fn page_policy(nonce: &str) -> String {
    format!(
        "default-src 'self'; script-src 'self' 'nonce-{nonce}' 'wasm-unsafe-eval'; \
         style-src 'self'; style-src-attr 'unsafe-inline'; img-src 'self' data:; \
         connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; \
         form-action 'self'; frame-ancestors 'none'"
    )
}

/// Sets the page policy for the response being rendered, with the nonce Leptos made for it.
/// Called from the Leptos context of every page (and of the error pages).
pub fn set_page_policy() {
    let Some(nonce) = leptos::nonce::use_nonce() else {
        return;
    };
    if let (Some(options), Ok(value)) = (
        leptos::prelude::use_context::<leptos_axum::ResponseOptions>(),
        HeaderValue::from_str(&page_policy(&nonce)),
    ) {
        options.insert_header(header::CONTENT_SECURITY_POLICY, value);
    }
}

/// Adds the headers every response carries: the policy (when the response has none of its
/// own), no sniffing of content types, no referrer beyond the portal, no framing, and, when the
/// portal is served over TLS, HSTS.
pub fn with_security_headers<S: Clone + Send + Sync + 'static>(
    router: axum::Router<S>,
    over_tls: bool,
) -> axum::Router<S> {
    let router = router
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(DEFAULT_POLICY),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ));
    if over_tls {
        router.layer(SetResponseHeaderLayer::overriding(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        ))
    } else {
        router
    }
}

/// The client of a request: the peer, or, when the peer is a trusted proxy, the last address in
/// `X-Forwarded-For` that is not itself a trusted proxy. A peer that is not trusted is its own
/// client whatever it claims.
pub fn client_address(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpRange]) -> IpAddr {
    let peer = peer.ip();
    let is_trusted = |ip: IpAddr| trusted.iter().any(|range| range.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|part| part.trim().parse::<IpAddr>())
        .collect::<Result<_, _>>()
        // A garbled header cannot be followed: the proxy itself is the client.
        .unwrap_or_default();
    forwarded
        .into_iter()
        .rev()
        .find(|ip| !is_trusted(*ip))
        .unwrap_or(peer)
}

/// At most this many requests at once; one more is answered 503 at once rather than queued.
#[derive(Debug, Clone)]
pub struct ConcurrencyLimit {
    permits: Arc<Semaphore>,
}

impl ConcurrencyLimit {
    /// A limit of `max` requests.
    pub fn new(max: usize) -> ConcurrencyLimit {
        ConcurrencyLimit {
            permits: Arc::new(Semaphore::new(max)),
        }
    }
}

/// The middleware of [`ConcurrencyLimit`].
pub async fn limit_concurrency(
    axum::extract::State(limit): axum::extract::State<ConcurrencyLimit>,
    request: Request,
    next: Next,
) -> Response {
    match limit.permits.clone().try_acquire_owned() {
        Ok(_permit) => next.run(request).await,
        Err(_) => {
            tracing::warn!("too many requests at once: one answered 503");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "1")],
                Json(json!({ "error": "the portal is busy with other requests; try again in a moment" })),
            )
                .into_response()
        }
    }
}

/// The middleware that ends a request taking longer than its time limit with a 503 that says so.
pub async fn limit_time(
    axum::extract::State(limit): axum::extract::State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_string();
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(%path, seconds = limit.as_secs(), "a request ran out of time");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({
                    "error": format!(
                        "the request did not finish within {} s and was stopped (http.request_timeout_secs)",
                        limit.as_secs()
                    )
                })),
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 40000)
    }

    fn forwarded(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", value.parse().unwrap());
        headers
    }

    #[test]
    fn only_a_trusted_proxy_names_the_client() {
        let trusted = [IpRange::parse("10.0.0.0/8").unwrap()];
        let spoofed = forwarded("198.51.100.7");
        assert_eq!(
            client_address(peer("203.0.113.5"), &spoofed, &trusted),
            "203.0.113.5".parse::<IpAddr>().unwrap(),
            "an untrusted peer is its own client"
        );
        assert_eq!(
            client_address(peer("10.0.0.2"), &spoofed, &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        // What the client wrote itself stands left of what the proxies added.
        let chain = forwarded("1.2.3.4, 198.51.100.7, 10.0.0.9");
        assert_eq!(
            client_address(peer("10.0.0.2"), &chain, &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_address(peer("10.0.0.2"), &forwarded("not an address"), &trusted),
            "10.0.0.2".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_address(peer("10.0.0.2"), &HeaderMap::new(), &trusted),
            "10.0.0.2".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_address(peer("10.0.0.2"), &spoofed, &[]),
            "10.0.0.2".parse::<IpAddr>().unwrap(),
            "no trusted proxies: nobody names another client"
        );
    }

    #[test]
    fn the_page_policy_allows_inline_scripts_only_with_the_nonce() {
        let policy = page_policy("abc123");
        assert!(policy.contains("script-src 'self' 'nonce-abc123' 'wasm-unsafe-eval';"));
        assert!(!policy.contains("script-src 'self' 'unsafe-inline'"));
        assert!(policy.contains("frame-ancestors 'none'"));
        assert!(DEFAULT_POLICY.contains("default-src 'none'"));
    }
}
