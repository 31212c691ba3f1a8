//! How long VMs take to come up, per host: request to running and placement to running, median
//! and p90, shown to admins on the hosts page and in `GET /api/v1/hosts`, and to nobody else.

mod common;

use std::time::Duration;

use passage_server::Portal;
use serde_json::{Value, json};

#[tokio::test]
async fn admins_see_how_long_vms_took_to_come_up_on_each_host() {
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("test://{}", common::simulated_host_file().display());
    let mut config = common::config(dir.path(), &[("gpu-01", &uri), ("gpu-02", &uri)]);
    config.quotas.gpus = 8;
    let admin = common::client(&common::token_for(&config, "root", true).await);
    let ada = common::client(&common::token_for(&config, "ada", false).await);
    let portal = Portal::start(config).await.unwrap();
    let base = format!("http://{}", portal.address);
    common::inventory_and_image(&admin, &base, "gpu-01").await;

    let hosts = |client: reqwest::Client| {
        let base = base.clone();
        async move {
            let (status, hosts) = common::get(&client, format!("{base}/api/v1/hosts")).await;
            assert_eq!(status, 200, "{hosts}");
            hosts
        }
    };
    let host = |hosts: &Value, name: &str| -> Value {
        hosts
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["name"] == name)
            .cloned()
            .unwrap()
    };
    assert!(
        host(&hosts(admin.clone()).await, "gpu-01")["startup"].is_null(),
        "no VM has run yet"
    );

    // Two requests; the first waits a moment before an admin approves it.
    let mut ids = Vec::new();
    for _ in 0..2 {
        let id = common::file_h100_request(&ada, &base, 1).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (status, body) = common::post(
            &admin,
            format!("{base}/api/v1/requests/{id}/approve"),
            json!({}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        ids.push(id);
    }
    common::wait_for("both VMs running", Duration::from_secs(30), || {
        let (admin, base) = (admin.clone(), base.clone());
        async move {
            let (_, vms) = common::get(&admin, format!("{base}/api/v1/vms")).await;
            let running = vms
                .as_array()
                .map(|v| v.iter().filter(|v| v["state"] == "running").count())
                .unwrap_or(0);
            if running == 2 {
                Ok(())
            } else {
                Err(vms.to_string())
            }
        }
    })
    .await;

    let seen = host(&hosts(admin.clone()).await, "gpu-01");
    let startup = &seen["startup"];
    assert_eq!(startup["vms"], 2, "{seen}");
    let request = startup["request_to_running"]["median_s"].as_f64().unwrap();
    let placed = startup["placed_to_running"]["median_s"].as_f64().unwrap();
    assert!(
        request >= 0.3,
        "filing to running includes the wait for approval: {seen}"
    );
    assert!(
        (0.0..request).contains(&placed),
        "placement to running is part of request to running: {seen}"
    );
    assert!(startup["request_to_running"]["p90_s"].as_f64().unwrap() >= request);
    assert!(
        host(&hosts(admin.clone()).await, "gpu-02")["startup"].is_null(),
        "nothing ran on gpu-02"
    );
    // Not for users: not in the API, not on the page.
    assert!(host(&hosts(ada.clone()).await, "gpu-01")["startup"].is_null());
    let page = |client: reqwest::Client| {
        let base = base.clone();
        async move {
            client
                .get(format!("{base}/"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    let shown = page(admin.clone()).await;
    assert!(
        shown.contains("Request to running: median") && shown.contains("(2 VMs, last 30 days)"),
        "{shown}"
    );
    assert!(!page(ada.clone()).await.contains("Request to running"));

    // A VM that stops and runs again keeps the time it first ran.
    let (_, vms) = common::get(&admin, format!("{base}/api/v1/vms")).await;
    let vm = vms[0]["id"].as_i64().unwrap();
    for action in ["stop", "start"] {
        let (status, body) = common::post(
            &admin,
            format!("{base}/api/v1/vms/{vm}/{action}"),
            json!({}),
        )
        .await;
        assert_eq!(status, 200, "{action}: {body}");
    }
    let again = host(&hosts(admin.clone()).await, "gpu-01");
    assert_eq!(
        again["startup"], seen["startup"],
        "a restart is not a start-up"
    );
    portal.shutdown(Duration::from_secs(5)).await.unwrap();
}
