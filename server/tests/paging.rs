//! Lists of the API in pages: `limit`, and the `Link: <...>; rel="next"` to follow, with the
//! filters kept; every item once, in order, also when items come and go between pages.

mod common;

use std::time::Duration;

use passage_server::Portal;
use serde_json::Value;

/// Follows `Link: rel="next"` from `first`, returning every page's items.
async fn every_page(client: &reqwest::Client, base: &str, first: &str) -> Vec<Vec<Value>> {
    let mut pages = Vec::new();
    let mut next = Some(first.to_string());
    while let Some(path) = next.take() {
        let answer = client.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(answer.status(), 200, "{path}");
        next = answer.headers().get("link").map(|link| {
            let link = link.to_str().unwrap();
            assert!(link.ends_with(">; rel=\"next\""), "{link}");
            link[1..link.find('>').unwrap()].to_string()
        });
        pages.push(answer.json::<Vec<Value>>().await.unwrap());
        assert!(pages.len() < 50, "the links go round in circles");
    }
    pages
}

#[tokio::test]
async fn lists_come_in_pages_linked_to_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("test://{}", common::simulated_host_file().display());
    let mut config = common::config(dir.path(), &[("gpu-01", &uri)]);
    // Six open requests of one user.
    config.quotas.requests = 10;
    config.quotas.gpus = 10;
    let admin = common::client(&common::token_for(&config, "root", true).await);
    let portal = Portal::start(config).await.unwrap();
    let base = format!("http://{}", portal.address);
    common::inventory_and_image(&admin, &base, "gpu-01").await;

    // GPUs: 8 in pages of 3, by host and address, each once.
    let all: Vec<Value> = admin
        .get(format!("{base}/api/v1/gpus"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all.len(), 8);
    let pages = every_page(&admin, &base, "/api/v1/gpus?limit=3").await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 2]);
    assert_eq!(pages.concat(), all);
    // The filters stay in the links.
    let h100: Vec<Value> = all
        .iter()
        .filter(|g| g["model"] == "H100 PCIe")
        .cloned()
        .collect();
    assert!(h100.len() > 1);
    let pages = every_page(&admin, &base, "/api/v1/gpus?model=H100%20PCIe&limit=1").await;
    assert_eq!(pages.len(), h100.len());
    assert_eq!(pages.concat(), h100);

    // Requests: newest first; one filed between pages shows on none of the later pages, and
    // none is shown twice or skipped.
    let file = || common::file_h100_request(&admin, &base, 1);
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(file().await);
    }
    ids.reverse();
    let first = admin
        .get(format!("{base}/api/v1/requests?limit=2"))
        .send()
        .await
        .unwrap();
    let link = first.headers()["link"].to_str().unwrap().to_string();
    let first: Vec<Value> = first.json().await.unwrap();
    let newer = file().await;
    let rest = every_page(&admin, &base, &link[1..link.find('>').unwrap()]).await;
    let seen: Vec<i64> = [vec![first], rest]
        .concat()
        .concat()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(seen, ids);
    assert!(newer > ids[0]);

    // The audit log pages the same way (filing and approving are audited).
    let entries = every_page(&admin, &base, "/api/v1/audit?limit=2")
        .await
        .concat();
    let everything: Vec<Value> = admin
        .get(format!("{base}/api/v1/audit"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(entries, everything);

    // What is not a page is refused, in JSON.
    for bad in [
        "/api/v1/gpus?limit=0",
        "/api/v1/gpus?limit=1001",
        "/api/v1/gpus?cursor=nothing-to-split",
        "/api/v1/requests?cursor=abc",
        "/api/v1/vms?limit=-1",
        "/api/v1/jobs?cursor=0",
        "/api/v1/audit?limit=x",
    ] {
        let refused = admin.get(format!("{base}{bad}")).send().await.unwrap();
        assert_eq!(refused.status(), 400, "{bad}");
        let body: Value = refused.json().await.unwrap();
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{bad}: {body}"
        );
    }
    portal.shutdown(Duration::from_secs(5)).await.unwrap();
}
