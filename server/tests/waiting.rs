//! A request that cannot be placed says what holds it back: here, that its image is on one host
//! whose GPUs are taken while another host has them free.

mod common;

use std::time::Duration;

use passage_server::Portal;
use serde_json::json;

#[tokio::test]
async fn a_waiting_request_names_the_host_its_image_ties_it_to() {
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("test://{}", common::simulated_host_file().display());
    let mut config = common::config(dir.path(), &[("gpu-01", &uri), ("gpu-02", &uri)]);
    config.quotas.gpus = 8;
    let admin = common::client(&common::token_for(&config, "root", true).await);
    let portal = Portal::start(config).await.unwrap();
    let base = format!("http://{}", portal.address);
    common::inventory_and_image(&admin, &base, "gpu-01").await;
    let file_and_approve = |count: i64| {
        let admin = admin.clone();
        let base = base.clone();
        async move {
            let id = common::file_h100_request(&admin, &base, count).await;
            let (status, body) = common::post(
                &admin,
                format!("{base}/api/v1/requests/{id}/approve"),
                json!({}),
            )
            .await;
            assert!(status == 200 || status == 409, "{status}: {body}");
            common::get(&admin, format!("{base}/api/v1/requests/{id}"))
                .await
                .1
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
