//! A real portal in process: database, inventory over the test driver, HTTP API and SSR page.

mod common;

use std::time::Duration;

use passage_app::inventory::{GpuState, GpuView, HostState, HostView};
use passage_server::Portal;
use serde_json::Value;

async fn refresh(http: &reqwest::Client, base: &str) -> Vec<HostView> {
    let response = http
        .post(format!("{base}/api/v1/inventory/refresh"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn the_api_lists_hosts_and_gpus_and_an_offline_host_does_not_disturb_them() {
    let dir = tempfile::tempdir().unwrap();
    let offline = "test:///nonexistent/passage/offline.xml";
    let config = common::config(
        dir.path(),
        &[("simulated", "simulated"), ("offline", offline)],
    );
    let http = common::client(&common::token_for(&config, "ops", true).await);
    let portal = Portal::start(config).await.unwrap();
    let base = format!("http://{}", portal.address);

    let health: Value = reqwest::get(format!("{base}/healthz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");

    let hosts = refresh(&http, &base).await;
    let names: Vec<(&str, HostState)> = hosts.iter().map(|h| (h.name.as_str(), h.state)).collect();
    assert_eq!(
        names,
        vec![
            ("offline", HostState::Unreachable),
            ("simulated", HostState::Reachable)
        ]
    );
    let error = hosts[0].error.as_deref().unwrap();
    assert!(
        error.contains("/nonexistent/passage/offline.xml"),
        "{error}"
    );
    assert_eq!(hosts[1].gpu_count, 8);
    assert_eq!(hosts[1].driver.as_deref(), Some("TEST"));

    let gpus: Vec<GpuView> = http
        .get(format!("{base}/api/v1/gpus"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(gpus.len(), 8);
    assert!(
        gpus.iter()
            .all(|g| g.state == GpuState::Available && g.vendor_id == "0x10de")
    );
    let ada = gpus.iter().find(|g| g.address == "0000:e3:00.0").unwrap();
    assert_eq!(
        ada.passthrough_functions,
        vec!["0000:e3:00.0", "0000:e3:00.1"]
    );
    assert_eq!(ada.iommu_group.as_ref().unwrap().members.len(), 2);
    assert_eq!(ada.numa_node, Some(1));
    let degraded = gpus.iter().find(|g| g.address == "0000:4e:00.0").unwrap();
    assert!(degraded.link.as_ref().unwrap().degraded);

    let h100: Vec<GpuView> = http
        .get(format!(
            "{base}/api/v1/gpus?model=H100%20PCIe&state=available"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h100.len(), 4);
    assert!(h100.iter().all(|g| g.numa_node == Some(0)));

    let bad = http
        .get(format!("{base}/api/v1/gpus?colour=green"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("colour"), "{body}");

    let missing = reqwest::get(format!("{base}/api/v1/nothing"))
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.unwrap();
    assert!(body["error"].is_string());

    let page = http.get(&base).send().await.unwrap().text().await.unwrap();
    assert!(
        page.contains("0000:b1:00.0"),
        "the page is rendered on the server"
    );
    assert!(page.contains("unreachable"));
    let anonymous = reqwest::get(&base).await.unwrap().text().await.unwrap();
    assert!(
        !anonymous.contains("0000:b1:00.0"),
        "nothing is shown before signing in"
    );
    assert!(anonymous.contains("sign-in-prompt"));

    portal.shutdown(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test]
async fn the_inventory_survives_a_restart_and_tracks_a_host_that_goes_away() {
    let dir = tempfile::tempdir().unwrap();
    let host_file = dir.path().join("lab.xml");
    std::fs::copy(common::simulated_host_file(), &host_file).unwrap();
    let uri = format!("test://{}", host_file.display());

    let config = common::config(dir.path(), &[("lab", &uri)]);
    let http = common::client(&common::token_for(&config, "ops", true).await);
    let portal = Portal::start(config).await.unwrap();
    let base = format!("http://{}", portal.address);
    assert_eq!(refresh(&http, &base).await[0].gpu_count, 8);
    portal.shutdown(Duration::from_secs(10)).await.unwrap();

    // The host's file disappears while the portal is down: after a restart, the GPUs are still
    // known from the database, but marked as on an unreachable host.
    std::fs::remove_file(&host_file).unwrap();
    let portal = Portal::start(common::config(dir.path(), &[("lab", &uri)]))
        .await
        .unwrap();
    let base = format!("http://{}", portal.address);
    let hosts = refresh(&http, &base).await;
    assert_eq!(hosts[0].state, HostState::Unreachable);
    assert!(
        hosts[0].last_refresh.is_some(),
        "the last good inventory is kept"
    );
    let gpus: Vec<GpuView> = http
        .get(format!("{base}/api/v1/gpus"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(gpus.len(), 8);
    assert!(gpus.iter().all(|g| g.state == GpuState::HostUnreachable));

    // It comes back with one GPU fewer: that GPU is kept and marked missing.
    let text = std::fs::read_to_string(common::simulated_host_file()).unwrap();
    let start = text.find("<name>pci_0000_ca_00_0</name>").unwrap();
    let device_start = text[..start].rfind("<device>").unwrap();
    let device_end = start + text[start..].find("</device>").unwrap() + "</device>".len();
    std::fs::write(
        &host_file,
        format!("{}{}", &text[..device_start], &text[device_end..]),
    )
    .unwrap();
    let hosts = refresh(&http, &base).await;
    assert_eq!(hosts[0].state, HostState::Reachable);
    assert_eq!(hosts[0].gpu_count, 7);
    let gpus: Vec<GpuView> = http
        .get(format!("{base}/api/v1/gpus"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let l40s = gpus.iter().find(|g| g.address == "0000:ca:00.0").unwrap();
    assert_eq!(l40s.state, GpuState::Missing);
    portal.shutdown(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test]
async fn every_endpoint_checks_who_is_asking() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(dir.path(), &[("simulated", "simulated")]);
    let admin = common::client(&common::token_for(&config, "ops", true).await);
    let user = common::client(&common::token_for(&config, "ada", false).await);
    let portal = Portal::start(config).await.unwrap();
    let base = format!("http://{}", portal.address);
    let anonymous = reqwest::Client::new();

    for path in [
        "/api/v1/hosts",
        "/api/v1/gpus",
        "/api/v1/me",
        "/api/v1/tokens",
    ] {
        let response = anonymous.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(response.status(), 401, "{path}");
    }
    assert_eq!(
        user.get(format!("{base}/api/v1/gpus"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let refresh = format!("{base}/api/v1/inventory/refresh");
    assert_eq!(user.post(&refresh).send().await.unwrap().status(), 403);
    assert_eq!(anonymous.post(&refresh).send().await.unwrap().status(), 401);
    assert_eq!(admin.post(&refresh).send().await.unwrap().status(), 200);

    // A revoked token stops working at once.
    let created: Value = user
        .post(format!("{base}/api/v1/tokens"))
        .json(&serde_json::json!({ "name": "ci" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ci = common::client(created["token"].as_str().unwrap());
    let me: Value = ci
        .get(format!("{base}/api/v1/me"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["name"], "ada");
    let id = created["id"].as_i64().unwrap();
    // Nobody revokes another user's token.
    let theirs = admin
        .delete(format!("{base}/api/v1/tokens/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status(), 404);
    let revoked = user
        .delete(format!("{base}/api/v1/tokens/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 204);
    assert_eq!(
        ci.get(format!("{base}/api/v1/me"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    portal.shutdown(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test]
async fn sessions_sign_in_rate_limit_and_refuse_cross_site_requests() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(dir.path(), &[("simulated", "simulated")]);
    common::token_for(&config, "ada", false).await;
    let portal = Portal::start(config).await.unwrap();
    let base = format!("http://{}", portal.address);
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let login = |password: &str| {
        browser
            .post(format!("{base}/api/v1/login"))
            .json(&serde_json::json!({ "name": "ada", "password": password }))
            .send()
    };
    let ok = login("a long enough password").await.unwrap();
    assert_eq!(ok.status(), 200);
    let cookie = ok.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert_eq!(
        browser
            .get(format!("{base}/api/v1/gpus"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // A state change with the cookie from another site is refused.
    let forged = browser
        .post(format!("{base}/api/v1/tokens"))
        .header("origin", "http://evil.example")
        .json(&serde_json::json!({ "name": "stolen" }))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);

    // A browser names the page's origin on every POST; one without it is refused.
    let no_origin = browser
        .post(format!("{base}/api/v1/logout"))
        .send()
        .await
        .unwrap();
    assert_eq!(no_origin.status(), 403);
    let out = browser
        .post(format!("{base}/api/v1/logout"))
        .header("origin", &base)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    assert_eq!(
        browser
            .get(format!("{base}/api/v1/gpus"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );

    let mut statuses = Vec::new();
    for _ in 0..11 {
        statuses.push(login("wrong password").await.unwrap().status().as_u16());
    }
    assert_eq!(statuses[..10], [401; 10]);
    assert_eq!(
        statuses[10], 429,
        "the eleventh failure in ten minutes is refused"
    );
    let limited = login("a long enough password").await.unwrap();
    assert_eq!(limited.status(), 429, "even the right password waits");
    portal.shutdown(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test]
async fn the_api_describes_itself_as_openapi() {
    let dir = tempfile::tempdir().unwrap();
    let portal = Portal::start(common::config(dir.path(), &[]))
        .await
        .unwrap();
    let base = format!("http://{}", portal.address);
    let doc: Value = reqwest::get(format!("{base}/api/v1/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/healthz",
        "/api/v1/hosts",
        "/api/v1/gpus",
        "/api/v1/inventory/refresh",
        "/api/v1/login",
        "/api/v1/logout",
        "/api/v1/me",
        "/api/v1/tokens",
        "/api/v1/tokens/{id}",
        "/api/v1/images",
        "/api/v1/requests",
        "/api/v1/requests/{id}",
        "/api/v1/requests/{id}/approve",
        "/api/v1/requests/{id}/deny",
        "/api/v1/me/password",
        "/api/v1/users",
        "/api/v1/users/{name}",
        "/api/v1/users/{name}/disable",
        "/api/v1/users/{name}/enable",
        "/api/v1/users/{name}/promote",
        "/api/v1/users/{name}/demote",
        "/api/v1/users/{name}/sessions",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is documented");
    }
    assert!(doc["components"]["schemas"]["GpuView"].is_object());
    assert!(doc["components"]["schemas"]["AccountView"].is_object());
    assert!(doc["components"]["schemas"]["NewToken"]["properties"]["expires_in_days"].is_object());
    assert!(doc["components"]["schemas"]["ApiTokenRecord"]["properties"]["expires_at"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    portal.shutdown(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test]
async fn a_user_requests_gpus_and_an_admin_approves_or_denies() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(dir.path(), &[("simulated", "simulated")]);
    let admin = common::client(&common::token_for(&config, "ops", true).await);
    let ada = common::client(&common::token_for(&config, "ada", false).await);
    let bob = common::client(&common::token_for(&config, "bob", false).await);
    let portal = Portal::start(config).await.unwrap();
    let base = format!("http://{}", portal.address);
    admin
        .post(format!("{base}/api/v1/inventory/refresh"))
        .send()
        .await
        .unwrap();

    let images: Value = ada
        .get(format!("{base}/api/v1/images"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(images[0]["name"], "debian-12");

    let body = |model: &str, count: i64| {
        serde_json::json!({
            "gpu_model": model, "gpu_count": count, "vcpus": 16, "memory_mib": 65536,
            "disk_gib": 200, "image": "debian-12", "hypervisor": "kvm", "lease_hours": 48,
            "reason": "rerun the passthrough study"
        })
    };
    let file = |client: &reqwest::Client, body: Value| {
        client
            .post(format!("{base}/api/v1/requests"))
            .json(&body)
            .send()
    };

    let bad = file(
        &ada,
        serde_json::json!({
            "gpu_model": "K80", "gpu_count": 99, "vcpus": 16, "memory_mib": 65536, "disk_gib": 200,
            "image": "debian-12", "hypervisor": "esx", "lease_hours": 48, "reason": "x"
        }),
    )
    .await
    .unwrap();
    assert_eq!(bad.status(), 422);
    let bad: Value = bad.json().await.unwrap();
    for field in ["gpu_model", "gpu_count", "hypervisor"] {
        assert!(bad["fields"][field].is_string(), "{field}: {bad}");
    }

    let filed = file(&ada, body("A100 PCIe 80GB", 2)).await.unwrap();
    assert_eq!(filed.status(), 201);
    let filed: Value = filed.json().await.unwrap();
    assert_eq!(filed["state"], "pending");
    let id = filed["id"].as_i64().unwrap();

    // Nobody else sees it, and only admins approve.
    assert_eq!(
        bob.get(format!("{base}/api/v1/requests/{id}"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let approve = format!("{base}/api/v1/requests/{id}/approve");
    assert_eq!(ada.post(&approve).send().await.unwrap().status(), 403);

    let placed: Value = admin
        .post(&approve)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(placed["state"], "placed");
    assert_eq!(placed["numa_node"], 1);
    assert_eq!(placed["gpus"].as_array().unwrap().len(), 2);
    let mine: Value = ada
        .get(format!("{base}/api/v1/requests/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(mine["gpus"], placed["gpus"]);
    let again = admin.post(&approve).send().await.unwrap();
    assert_eq!(again.status(), 409, "placed once");
    let again: Value = again.json().await.unwrap();
    assert!(
        again["error"]
            .as_str()
            .unwrap()
            .contains("not pending or waiting"),
        "{again}"
    );

    let gpus: Vec<GpuView> = ada
        .get(format!("{base}/api/v1/gpus?state=claimed"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(gpus.len(), 2);

    // Two more A100s do not exist: approved, the request waits and says why.
    let more: Value = file(&ada, body("A100 PCIe 80GB", 1))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let waiting: Value = admin
        .post(format!("{base}/api/v1/requests/{}/approve", more["id"]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(waiting["state"], "waiting");
    assert!(waiting["state_reason"].as_str().unwrap().contains("A100"));

    let other: Value = file(&bob, body("L40S", 1))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let deny = format!("{base}/api/v1/requests/{}/deny", other["id"]);
    let denied: Value = admin
        .post(&deny)
        .json(&serde_json::json!({ "reason": "no budget this month" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(denied["state"], "denied");
    assert_eq!(denied["state_reason"], "no budget this month");
    let listed: Vec<Value> = bob
        .get(format!("{base}/api/v1/requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.len(), 1, "bob sees only his own");
    let all: Vec<Value> = admin
        .get(format!("{base}/api/v1/requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all.len(), 3);
    portal.shutdown(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test]
async fn quotas_are_enforced_and_small_requests_are_approved_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path(), &[("simulated", "simulated")]);
    config.quotas.gpus = 2;
    config.quotas.lease_hours = 48;
    config.auto_approve.gpus = 1;
    config.auto_approve.lease_hours = 24;
    let admin = common::client(&common::token_for(&config, "ops", true).await);
    let ada = common::client(&common::token_for(&config, "ada", false).await);
    let portal = Portal::start(config).await.unwrap();
    let base = format!("http://{}", portal.address);
    admin
        .post(format!("{base}/api/v1/inventory/refresh"))
        .send()
        .await
        .unwrap();
    let body = |model: &str, count: i64, hours: i64| {
        serde_json::json!({
            "gpu_model": model, "gpu_count": count, "vcpus": 8, "memory_mib": 16384,
            "disk_gib": 50, "image": "debian-12", "hypervisor": "kvm", "lease_hours": hours,
            "reason": "quota test"
        })
    };
    let file = |body: Value| {
        ada.post(format!("{base}/api/v1/requests"))
            .json(&body)
            .send()
    };

    let over: Value = file(body("H100 PCIe", 3, 24))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        over["fields"]["gpu_count"]
            .as_str()
            .unwrap()
            .contains("quota is 2"),
        "{over}"
    );
    let long: Value = file(body("H100 PCIe", 1, 72))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        long["fields"]["lease_hours"]
            .as_str()
            .unwrap()
            .contains("48"),
        "{long}"
    );

    // Two GPUs need an admin; one GPU for half a day is approved at once.
    let pair: Value = file(body("A100 PCIe 80GB", 2, 24))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(pair["state"], "pending");
    let small = file(body("L40S", 1, 12)).await.unwrap();
    assert_eq!(small.status(), 201);
    let small: Value = small.json().await.unwrap();
    assert_eq!(small["state"], "placed");
    // Ada now holds one GPU: asking for two more is refused when filing.
    let more: Value = file(body("H100 PCIe", 2, 24))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        more["fields"]["gpu_count"]
            .as_str()
            .unwrap()
            .contains("you hold 1"),
        "{more}"
    );
    // Approving it would take ada to three GPUs.
    let refused = admin
        .post(format!("{base}/api/v1/requests/{}/approve", pair["id"]))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 409);
    let refused: Value = refused.json().await.unwrap();
    assert!(
        refused["error"].as_str().unwrap().contains("quota"),
        "{refused}"
    );
    portal.shutdown(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test]
async fn libvirt_uris_and_messages_are_shown_to_admins_only() {
    let dir = tempfile::tempdir().unwrap();
    let offline = "test:///nonexistent/passage/offline.xml";
    let config = common::config(
        dir.path(),
        &[("simulated", "simulated"), ("offline", offline)],
    );
    let admin = common::client(&common::token_for(&config, "ops", true).await);
    let user = common::client(&common::token_for(&config, "ada", false).await);
    let portal = Portal::start(config).await.unwrap();
    let base = format!("http://{}", portal.address);
    refresh(&admin, &base).await;

    let hosts = |client: &reqwest::Client| {
        let url = format!("{base}/api/v1/hosts");
        let client = client.clone();
        async move {
            let text = client.get(url).send().await.unwrap().text().await.unwrap();
            let hosts: Vec<HostView> = serde_json::from_str(&text).unwrap();
            (text, hosts)
        }
    };
    let (_, seen) = hosts(&admin).await;
    assert_eq!(seen[0].uri.as_deref(), Some(offline));
    assert!(seen[0].error.as_deref().unwrap().contains("nonexistent"));
    assert_eq!(seen[1].driver.as_deref(), Some("TEST"));

    let (text, seen) = hosts(&user).await;
    assert!(
        !text.contains("nonexistent") && !text.contains("test:///"),
        "{text}"
    );
    assert_eq!(
        seen.iter()
            .map(|h| (h.name.as_str(), h.state))
            .collect::<Vec<_>>(),
        [
            ("offline", HostState::Unreachable),
            ("simulated", HostState::Reachable)
        ]
    );
    assert!(seen.iter().all(|h| h.uri.is_none()
        && h.error.is_none()
        && h.hostname.is_none()
        && h.driver.is_none()
        && h.libvirt_version.is_none()));
    assert_eq!(seen[1].gpu_count, 8);

    // The page says the same: the state, not libvirt's words.
    let page = user.get(&base).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("0000:b1:00.0"));
    assert!(!page.contains("nonexistent") && !page.contains("test:///"));
    assert!(page.contains("admins see why"));
    let page = admin.get(&base).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("/nonexistent/passage/offline.xml"));
    portal.shutdown(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test]
async fn a_broken_database_is_reported_without_its_own_words() {
    common::on_every_backend(|url| async move {
        let dir = tempfile::tempdir().unwrap();
        let mut config = common::config(dir.path(), &[]);
        config.database_url = url.clone();
        let ada = common::client(&common::token_for(&config, "ada", false).await);
        let portal = Portal::start(config).await.unwrap();
        let base = format!("http://{}", portal.address);
        assert_eq!(
            reqwest::get(format!("{base}/healthz"))
                .await
                .unwrap()
                .status(),
            200
        );

        // The accounts table goes away under the running portal.
        sqlx::any::install_default_drivers();
        let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&url)
            .await
            .unwrap();
        sqlx::query("ALTER TABLE users RENAME TO users_gone")
            .execute(&mut conn)
            .await
            .unwrap();

        let leaks = |text: &str| {
            ["users", "table", "relation", "sqlx", "error returned"]
                .iter()
                .any(|word| text.contains(word))
        };
        let health = reqwest::get(format!("{base}/healthz")).await.unwrap();
        assert_eq!(health.status(), 503);
        let text = health.text().await.unwrap();
        assert!(!leaks(&text), "{text}");
        assert!(text.contains("unavailable"), "{text}");

        let api = ada.get(format!("{base}/api/v1/gpus")).send().await.unwrap();
        assert_eq!(api.status(), 503);
        let text = api.text().await.unwrap();
        assert!(!leaks(&text), "{text}");
        assert!(text.contains("database is not available"), "{text}");

        let login = reqwest::Client::new()
            .post(format!("{base}/api/v1/login"))
            .json(&serde_json::json!({ "name": "ada", "password": "a long enough password" }))
            .send()
            .await
            .unwrap();
        assert_eq!(login.status(), 503);
        let text = login.text().await.unwrap();
        assert!(!leaks(&text), "{text}");

        let page = ada.get(&base).send().await.unwrap().text().await.unwrap();
        assert!(!page.contains("users_gone") && !page.contains("no such table"));
        assert!(page.contains("database is not available"), "{page}");

        sqlx::query("ALTER TABLE users_gone RENAME TO users")
            .execute(&mut conn)
            .await
            .unwrap();
        <sqlx::AnyConnection as sqlx::Connection>::close(conn)
            .await
            .unwrap();
        portal.shutdown(Duration::from_secs(10)).await.unwrap();
    })
    .await;
}
