//! A request that cannot be placed says what holds it back: here, that its image is on one host
//! whose GPUs are taken while another host has them free. A copy of the image on that other host
//! places it there.

mod common;

use std::time::Duration;

use passage_server::Portal;
use serde_json::json;

#[tokio::test]
async fn a_waiting_request_names_the_host_its_image_ties_it_to() {
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("test://{}", common::simulated_host_file().display());
    let mut config = common::config(dir.path(), &[("gpu-01", &uri), ("gpu-02", &uri)]);
    config.quotas.gpus = 16;
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

    // A copy of the image on gpu-02: the waiting request is placed there at once, and
    // placement now considers both hosts.
    let copy = json!({"name": "debian-12", "host": "gpu-02", "pool": "images",
                      "volume": "debian-12-generic-amd64.qcow2"});
    let (status, body) = common::post(&admin, format!("{base}/api/v1/images"), copy.clone()).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = common::post(&admin, format!("{base}/api/v1/images"), copy).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        body["error"],
        "image \"debian-12\" has a copy on host gpu-02 already"
    );
    let id = second["id"].as_i64().unwrap();
    let (_, placed) = common::get(&admin, format!("{base}/api/v1/requests/{id}")).await;
    assert_eq!(
        (placed["state"].as_str(), placed["host"].as_str()),
        (Some("placed"), Some("gpu-02")),
        "{placed}"
    );
    let (_, images) = common::get(&admin, format!("{base}/api/v1/images")).await;
    let hosts: Vec<&str> = images
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["name"] == "debian-12")
        .map(|i| i["host"].as_str().unwrap())
        .collect();
    assert_eq!(hosts, ["gpu-01", "gpu-02"]);
    // Both hosts full: the reason names both.
    let third = file_and_approve(4).await;
    assert_eq!(third["state"], "waiting", "{third}");
    assert_eq!(
        third["state_reason"],
        "waiting for 4 free H100 PCIe GPU(s) on one host (3 free in all, not 4 on one host)"
    );
    portal.shutdown(Duration::from_secs(5)).await.unwrap();
}
