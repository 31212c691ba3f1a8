//! `GET /metrics` for Prometheus: admins only, the OpenMetrics text format, the state of the
//! portal read at each scrape (GPUs by host, model and state; requests, VMs, jobs) and what the
//! process counted (HTTP requests by route, libvirt operations, placements); and the request id
//! every response carries.

mod common;

use std::time::Duration;

use passage_server::Portal;
use serde_json::json;

/// The value of the sample `name{labels}` in an OpenMetrics text, if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.parse().unwrap())
}

#[tokio::test]
async fn metrics_report_the_portal_to_admins_only() {
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("test://{}", common::simulated_host_file().display());
    let config = common::config(dir.path(), &[("gpu-01", &uri)]);
    let admin_token = common::token_for(&config, "root", true).await;
    let user_token = common::token_for(&config, "ada", false).await;
    let portal = Portal::start(config).await.unwrap();
    let base = format!("http://{}", portal.address);
    let (admin, user) = (common::client(&admin_token), common::client(&user_token));

    // Strangers and users get nothing.
    let anonymous = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let refused = user.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(refused.status(), 403);

    // A request filed and placed: its GPU is claimed, the placement counted.
    common::inventory_and_image(&admin, &base, "gpu-01").await;
    let id = common::file_h100_request(&user, &base, 1).await;
    let approved = admin
        .post(format!("{base}/api/v1/requests/{id}/approve"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(approved.status(), 200, "{}", approved.text().await.unwrap());

    let scraped = admin.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(scraped.status(), 200);
    assert!(
        scraped.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = scraped.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let gpus = |model: &str, state: &str| {
        sample(
            &text,
            &format!("passage_gpus{{host=\"gpu-01\",model=\"{model}\",state=\"{state}\"}}"),
        )
    };
    assert_eq!(gpus("H100 PCIe", "claimed"), Some(1.0), "{text}");
    assert!(
        gpus("H100 PCIe", "available").is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "passage_requests{state=\"placed\"}"),
        Some(1.0),
        "{text}"
    );
    assert!(sample(&text, "passage_placement_duration_seconds_count").is_some_and(|n| n >= 1.0));
    assert!(
        sample(
            &text,
            "passage_libvirt_operation_duration_seconds_count{host=\"gpu-01\",operation=\"inventory\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    // HTTP answers by route pattern, not by path.
    assert!(
        sample(
            &text,
            "passage_http_requests_total{method=\"POST\",route=\"/api/v1/requests/{id}/approve\",status=\"200\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "passage_http_requests_total{method=\"GET\",route=\"/metrics\",status=\"403\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(!text.contains(&format!("/api/v1/requests/{id}/")), "{text}");

    // Every response names its request; an id from a proxy in front is kept.
    let answered = reqwest::get(format!("{base}/healthz")).await.unwrap();
    let made = answered.headers()["x-request-id"].to_str().unwrap();
    assert_eq!(made.len(), 36, "a UUID: {made}");
    let passed_on = reqwest::Client::new()
        .get(format!("{base}/healthz"))
        .header("x-request-id", "from-the-proxy-1")
        .send()
        .await
        .unwrap();
    assert_eq!(passed_on.headers()["x-request-id"], "from-the-proxy-1");
    portal.shutdown(Duration::from_secs(5)).await.unwrap();
}
