//! A request that cannot be placed says what holds it back: here, that its image is on one host
//! whose GPUs are taken while another host has them free.

mod common;

use std::time::Duration;

use passage_server::Portal;
use serde_json::{Value, json};

#[tokio::test]
async fn a_waiting_request_names_the_host_its_image_ties_it_to() {
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("test://{}", common::simulated_host_file().display());
    let mut config = common::config(dir.path(), &[("gpu-01", &uri), ("gpu-02", &uri)]);
    config.quotas.gpus = 8;
    let admin = common::client(&common::token_for(&config, "root", true).await);
    let portal = Portal::start(config).await.unwrap();
    let base = format!("http://{}", portal.address);
    for (path, body) in [
        ("/api/v1/inventory/refresh", json!({})),
        (
            "/api/v1/images",
            json!({"name": "debian-12", "host": "gpu-01", "pool": "images",
                   "volume": "debian-12-generic-amd64.qcow2"}),
        ),
    ] {
        admin
            .post(format!("{base}{path}"))
            .json(&body)
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap();
    }
    let request = |count: i64| {
        json!({
            "gpu_model": "H100 PCIe", "gpu_count": count, "vcpus": 2, "memory_mib": 2048,
            "disk_gib": 10, "image": "debian-12", "hypervisor": "kvm", "lease_hours": 1,
            "reason": "where does it wait"
        })
    };
    let file_and_approve = |count: i64| {
        let admin = admin.clone();
        let base = base.clone();
        let body = request(count);
        async move {
            let filed: Value = admin
                .post(format!("{base}/api/v1/requests"))
                .json(&body)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let id = filed["id"].as_i64().unwrap_or_else(|| panic!("{filed}"));
            admin
                .post(format!("{base}/api/v1/requests/{id}/approve"))
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            let shown: Value = admin
                .get(format!("{base}/api/v1/requests/{id}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            shown
        }
    };
    // Every H100 of the image's host, then one more.
    let first = file_and_approve(4).await;
    assert_eq!(
        (first["state"].as_str(), first["host"].as_str()),
        (Some("placed"), Some("gpu-01"))
    );
    let second = file_and_approve(1).await;
    assert_eq!(second["state"], "waiting", "{second}");
    assert_eq!(
        second["state_reason"],
        "waiting for 1 free H100 PCIe GPU(s) on one host: its image is only on host gpu-01, \
         which has 0 free (4 free on other hosts)"
    );
    portal.shutdown(Duration::from_secs(5)).await.unwrap();
}
