//! Accounts have a life, on SQLite and PostgreSQL: a user changes their own password (their
//! other sessions end); an admin disables, enables, deletes, promotes and demotes accounts and
//! ends their sessions; tokens may expire. The portal never loses its last enabled admin, also
//! when two admins demote each other at the same moment; every endpoint checks who asks.

mod common;

use std::time::Duration;

use passage_server::Portal;
use passage_server::auth::Auth;
use passage_server::store::{AccountChange, Store};
use reqwest::StatusCode;
use serde_json::{Value, json};

const PASSWORD: &str = "a long enough password";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_admins_demoting_each_other_at_once_leave_one_admin() {
    common::on_every_backend(|url| async move {
        let store = Store::open(&url).await.unwrap();
        let auth = Auth::new(store.clone());
        for name in ["ops", "root"] {
            auth.add_user(name, PASSWORD, true).await.unwrap();
        }
        auth.add_user("ada", PASSWORD, false).await.unwrap();
        for round in 0..20 {
            // Each admin takes the other's rights (or disables, or deletes the other) at once.
            let (a, b) = (store.clone(), store.clone());
            let (first, second) = match round % 3 {
                0 => tokio::join!(
                    tokio::spawn(async move { a.set_admin("root", false).await }),
                    tokio::spawn(async move { b.set_admin("ops", false).await }),
                ),
                1 => tokio::join!(
                    tokio::spawn(async move { a.set_disabled("root", true).await }),
                    tokio::spawn(async move { b.set_admin("ops", false).await }),
                ),
                _ => tokio::join!(
                    tokio::spawn(async move { a.set_admin("root", false).await }),
                    tokio::spawn(async move { b.set_disabled("ops", true).await }),
                ),
            };
            let outcomes = [first.unwrap().unwrap(), second.unwrap().unwrap()];
            let done = outcomes
                .iter()
                .filter(|o| **o == AccountChange::Done)
                .count();
            assert_eq!(done, 1, "round {round}: {outcomes:?}");
            assert!(
                outcomes.contains(&AccountChange::LastAdmin),
                "round {round}: {outcomes:?}"
            );
            assert_eq!(
                store.count_active_admins().await.unwrap(),
                1,
                "round {round}"
            );
            // Both admins again for the next round.
            for name in ["ops", "root"] {
                let _ = store.set_disabled(name, false).await.unwrap();
                let _ = store.set_admin(name, true).await.unwrap();
            }
            assert_eq!(store.count_active_admins().await.unwrap(), 2);
        }
        // The last admin is never deleted, disabled or demoted; other accounts are.
        assert_eq!(
            store.set_admin("root", false).await.unwrap(),
            AccountChange::Done
        );
        for refused in [
            store.set_admin("ops", false).await.unwrap(),
            store.set_disabled("ops", true).await.unwrap(),
            store.delete_user("ops").await.unwrap(),
        ] {
            assert_eq!(refused, AccountChange::LastAdmin);
        }
        assert_eq!(
            store.set_admin("root", false).await.unwrap(),
            AccountChange::Unchanged
        );
        assert_eq!(
            store.set_admin("nobody", true).await.unwrap(),
            AccountChange::NoSuchUser
        );
        assert_eq!(store.delete_user("ada").await.unwrap(), AccountChange::Done);
        assert_eq!(
            store.delete_user("ada").await.unwrap(),
            AccountChange::NoSuchUser
        );
        store.close().await;
    })
    .await;
}

/// A browser-like client: keeps its session cookie and says where it comes from.
struct Browser {
    http: reqwest::Client,
    base: String,
}

impl Browser {
    async fn signed_in(base: &str, name: &str, password: &str) -> (Browser, StatusCode) {
        let http = reqwest::Client::builder()
            .cookie_store(true)
            .build()
            .unwrap();
        let status = http
            .post(format!("{base}/api/v1/login"))
            .json(&json!({ "name": name, "password": password }))
            .send()
            .await
            .unwrap()
            .status();
        (
            Browser {
                http,
                base: base.to_string(),
            },
            status,
        )
    }

    async fn me(&self) -> StatusCode {
        self.http
            .get(format!("{}/api/v1/me", self.base))
            .send()
            .await
            .unwrap()
            .status()
    }

    async fn change_password(&self, current: &str, new: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .put(format!("{}/api/v1/me/password", self.base))
            .header("origin", &self.base)
            .json(&json!({ "current_password": current, "new_password": new }))
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

async fn status_of(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn accounts_have_a_life_through_the_api() {
    common::on_every_backend(|url| async move {
        let dir = tempfile::tempdir().unwrap();
        let mut config = common::config(dir.path(), &[("simulated", "simulated")]);
        config.database_url = url;
        let ops_token = common::token_for(&config, "ops", true).await;
        let ada_token = common::token_for(&config, "ada", false).await;
        common::token_for(&config, "bob", false).await;
        let portal = Portal::start(config.clone()).await.unwrap();
        let base = format!("http://{}", portal.address);
        let ops = common::client(&ops_token);
        let ada = common::client(&ada_token);
        let anonymous = reqwest::Client::new();

        // Who may call what: anonymous 401, users 403, admins through.
        let admin_calls = [
            ("GET", "/api/v1/users"),
            ("POST", "/api/v1/users/bob/disable"),
            ("POST", "/api/v1/users/bob/enable"),
            ("POST", "/api/v1/users/bob/promote"),
            ("POST", "/api/v1/users/bob/demote"),
            ("DELETE", "/api/v1/users/bob/sessions"),
            ("DELETE", "/api/v1/users/bob"),
        ];
        let call = |client: &reqwest::Client, method: &str, path: &str| {
            client.request(method.parse().unwrap(), format!("{base}{path}"))
        };
        for (method, path) in admin_calls {
            let (status, _) = status_of(call(&anonymous, method, path)).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
            let (status, body) = status_of(call(&ada, method, path)).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {body}");
        }
        let (status, _) = status_of(
            anonymous
                .put(format!("{base}/api/v1/me/password"))
                .json(&json!({ "current_password": PASSWORD, "new_password": "x".repeat(12) })),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, body) = status_of(call(&ops, "GET", "/api/v1/users")).await;
        assert_eq!(status, StatusCode::OK);
        let names: Vec<&str> = body
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["ada", "bob", "ops"]);
        assert_eq!(body[0]["tokens"], 1);

        // Ada changes her password in one browser; the other browser's session ends, the one
        // she used and her API token keep working.
        let (first, status) = Browser::signed_in(&base, "ada", PASSWORD).await;
        assert_eq!(status, StatusCode::OK);
        let (second, _) = Browser::signed_in(&base, "ada", PASSWORD).await;
        let new_password = "a new and longer password";
        let (status, body) = first
            .change_password("not the password", new_password)
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        let (status, body) = first.change_password(PASSWORD, "short").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let (status, body) = first.change_password(PASSWORD, new_password).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
        assert_eq!(first.me().await, StatusCode::OK);
        assert_eq!(
            second.me().await,
            StatusCode::UNAUTHORIZED,
            "other sessions end"
        );
        let (status, _) = status_of(ada.get(format!("{base}/api/v1/me"))).await;
        assert_eq!(status, StatusCode::OK, "her token still works");
        assert_eq!(
            Browser::signed_in(&base, "ada", PASSWORD).await.1,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            Browser::signed_in(&base, "ada", new_password).await.1,
            StatusCode::OK
        );

        // Disabled: her sessions and token stop at once, and she cannot sign in; enabled again,
        // the token works and she signs in.
        let (status, _) = status_of(call(&ops, "POST", "/api/v1/users/ada/disable")).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(first.me().await, StatusCode::UNAUTHORIZED);
        let (status, _) = status_of(ada.get(format!("{base}/api/v1/me"))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, body) = status_of(
            anonymous
                .post(format!("{base}/api/v1/login"))
                .json(&json!({ "name": "ada", "password": new_password })),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(
            body["error"].as_str().unwrap().contains("disabled"),
            "{body}"
        );
        let (status, body) = status_of(call(&ops, "POST", "/api/v1/users/ada/disable")).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        let (status, _) = status_of(call(&ops, "POST", "/api/v1/users/ada/enable")).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _) = status_of(ada.get(format!("{base}/api/v1/me"))).await;
        assert_eq!(status, StatusCode::OK);

        // An admin ends someone's sessions; their tokens are not sessions.
        let (third, _) = Browser::signed_in(&base, "ada", new_password).await;
        assert_eq!(third.me().await, StatusCode::OK);
        let (status, _) = status_of(call(&ops, "DELETE", "/api/v1/users/ada/sessions")).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(third.me().await, StatusCode::UNAUTHORIZED);
        let (status, _) = status_of(ada.get(format!("{base}/api/v1/me"))).await;
        assert_eq!(status, StatusCode::OK);

        // The portal keeps an admin: the only one can neither step down nor be disabled.
        for path in ["/api/v1/users/ops/demote", "/api/v1/users/ops/disable"] {
            let (status, body) = status_of(call(&ops, "POST", path)).await;
            assert_eq!(status, StatusCode::CONFLICT, "{path}");
            assert!(
                body["error"]
                    .as_str()
                    .unwrap()
                    .contains("last enabled admin"),
                "{body}"
            );
        }
        let (status, _) = status_of(call(&ops, "DELETE", "/api/v1/users/ops")).await;
        assert_eq!(status, StatusCode::CONFLICT);
        // With bob an admin, ops may step down, and then is no admin at once.
        let (status, _) = status_of(call(&ops, "POST", "/api/v1/users/bob/promote")).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _) = status_of(call(&ops, "POST", "/api/v1/users/ops/demote")).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _) = status_of(call(&ops, "GET", "/api/v1/users")).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _) = status_of(call(&ops, "GET", "/api/v1/me")).await;
        assert_eq!(status, StatusCode::OK);

        // Deleting an account that holds an open request is refused with the reason; once
        // the request is denied, the account goes, its token with it.
        let (bob, _) = Browser::signed_in(&base, "bob", PASSWORD).await;
        let (status, _) = status_of(
            bob.http
                .post(format!("{base}/api/v1/inventory/refresh"))
                .header("origin", &base),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let (status, filed) = status_of(ada.post(format!("{base}/api/v1/requests")).json(&json!({
            "gpu_model": "L40S", "gpu_count": 1, "vcpus": 4, "memory_mib": 8192, "disk_gib": 20,
            "image": "debian-12", "hypervisor": "kvm", "lease_hours": 8, "reason": "a study"
        })))
        .await;
        assert_eq!(status, StatusCode::CREATED, "{filed}");
        let delete_ada = || {
            bob.http
                .delete(format!("{base}/api/v1/users/ada"))
                .header("origin", &base)
        };
        let (status, body) = status_of(delete_ada()).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert!(
            body["error"].as_str().unwrap().contains("open requests"),
            "{body}"
        );
        let (status, _) = status_of(
            bob.http
                .post(format!("{base}/api/v1/requests/{}/deny", filed["id"]))
                .header("origin", &base)
                .json(&json!({ "reason": "no budget" })),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = status_of(delete_ada()).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _) = status_of(ada.get(format!("{base}/api/v1/me"))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            Browser::signed_in(&base, "ada", new_password).await.1,
            StatusCode::UNAUTHORIZED
        );
        let (_, listed) = status_of(bob.http.get(format!("{base}/api/v1/users"))).await;
        assert!(
            listed
                .as_array()
                .unwrap()
                .iter()
                .all(|a| a["name"] != "ada"),
            "{listed}"
        );
        // Her history stays, under her name.
        let (_, requests) = status_of(bob.http.get(format!("{base}/api/v1/requests"))).await;
        assert_eq!(requests[0]["user"], "ada", "{requests}");
        let (status, _) = status_of(delete_ada()).await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        // The audit log has every change.
        let (_, audit) = status_of(bob.http.get(format!("{base}/api/v1/audit?action=user."))).await;
        let actions: Vec<&str> = audit
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].as_str().unwrap())
            .collect();
        for action in [
            "user.password",
            "user.disable",
            "user.enable",
            "user.end-sessions",
            "user.promote",
            "user.demote",
            "user.delete",
        ] {
            assert!(actions.contains(&action), "{action}: {actions:?}");
        }
        portal.shutdown(Duration::from_secs(10)).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn api_tokens_may_expire() {
    common::on_every_backend(|url| async move {
        let dir = tempfile::tempdir().unwrap();
        let mut config = common::config(dir.path(), &[]);
        config.database_url = url.clone();
        let ada = common::client(&common::token_for(&config, "ada", false).await);
        let portal = Portal::start(config).await.unwrap();
        let base = format!("http://{}", portal.address);

        let (status, body) = status_of(
            ada.post(format!("{base}/api/v1/tokens"))
                .json(&json!({ "name": "forever", "expires_in_days": 0 })),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let (status, created) = status_of(
            ada.post(format!("{base}/api/v1/tokens"))
                .json(&json!({ "name": "nightly", "expires_in_days": 7 })),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        let now = passage_server::store::now_ms();
        let expires = created["expires_at"].as_i64().unwrap();
        assert!((expires - now - 7 * 86_400_000).abs() < 60_000, "{created}");
        let nightly = common::client(created["token"].as_str().unwrap());
        let (status, _) = status_of(nightly.get(format!("{base}/api/v1/me"))).await;
        assert_eq!(status, StatusCode::OK);
        let (_, listed) = status_of(ada.get(format!("{base}/api/v1/tokens"))).await;
        let entry = listed
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == "nightly")
            .unwrap();
        assert_eq!(entry["expires_at"], expires);

        // Its time passes (moved in the database): refused.
        sqlx::any::install_default_drivers();
        let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&url)
            .await
            .unwrap();
        sqlx::query("UPDATE api_tokens SET expires_at = $1 WHERE id = $2")
            .bind(now - 1)
            .bind(created["id"].as_i64().unwrap())
            .execute(&mut conn)
            .await
            .unwrap();
        <sqlx::AnyConnection as sqlx::Connection>::close(conn)
            .await
            .unwrap();
        let (status, _) = status_of(nightly.get(format!("{base}/api/v1/me"))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _) = status_of(ada.get(format!("{base}/api/v1/me"))).await;
        assert_eq!(status, StatusCode::OK, "tokens without expiry keep working");
        portal.shutdown(Duration::from_secs(10)).await.unwrap();
    })
    .await;
}
