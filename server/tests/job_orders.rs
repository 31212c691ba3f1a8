//! Orders for jobs through the API, on SQLite and PostgreSQL: a user's unfinished jobs on the
//! shared native hosts stop at the configured limit (429, naming it), also when the orders
//! arrive at once; a job for a GPU its agent does not report, or on an agent that reports none,
//! is refused when it is queued, so that it never holds the agent's queue.

mod common;

use passage_server::Portal;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

struct Orders {
    _dir: tempfile::TempDir,
    portal: Portal,
    base: String,
    admin: Client,
    ada: Client,
    bob: Client,
    plugin: i64,
}

async fn portal(url: String, native_jobs_per_user: u64) -> Orders {
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("test://{}", common::simulated_host_file().display());
    let mut config = common::config(dir.path(), &[("gpu-01", &uri)]);
    config.database_url = url;
    config.jobs.native_jobs_per_user = native_jobs_per_user;
    let admin = common::client(&common::token_for(&config, "ops", true).await);
    let ada = common::client(&common::token_for(&config, "ada", false).await);
    let bob = common::client(&common::token_for(&config, "bob", false).await);
    let plugin = common::stand_in_plugin(&config, "vector-add").await;
    let portal = Portal::start(config).await.unwrap();
    let base = format!("http://{}", portal.address);
    Orders {
        _dir: dir,
        portal,
        base,
        admin,
        ada,
        bob,
        plugin,
    }
}

async fn post(client: &Client, url: String, body: Value) -> (StatusCode, Value) {
    let response = client.post(url).json(&body).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

impl Orders {
    /// Registers a native host; returns its id and an HTTP client with its agent token.
    async fn native_host(&self, name: &str) -> (i64, Client) {
        let (status, body) = post(
            &self.admin,
            format!("{}/api/v1/agents", self.base),
            json!({ "name": name }),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        (
            body["id"].as_i64().unwrap(),
            common::client(body["token"].as_str().unwrap()),
        )
    }

    /// The agent on `agent` starts and reports `devices` GPUs (and `problem`, if any).
    async fn register(&self, agent: &Client, devices: usize, problem: Option<&str>) {
        let devices: Vec<Value> = (0..devices)
            .map(|i| {
                json!({ "index": i, "name": "Passage simulated GPU",
                        "pci_bus_id": format!("00000000:{:02x}:00.0", 0x10 + i),
                        "total_memory": 1u64 << 34, "compute_capability": "9.0",
                        "simulated": true })
            })
            .collect();
        let (status, body) = post(
            agent,
            format!("{}/api/v1/agent/register", self.base),
            json!({ "hostname": "bench", "version": "0.1.0", "backend": "fake",
                    "devices": devices, "cuda_problem": problem }),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    async fn order(&self, client: &Client, agent: i64, gpu: &str) -> (StatusCode, Value) {
        post(
            client,
            format!("{}/api/v1/jobs", self.base),
            json!({ "plugin": self.plugin, "agent": agent, "gpu": gpu }),
        )
        .await
    }

    async fn stop(self) {
        self.portal
            .shutdown(std::time::Duration::from_secs(10))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_users_unfinished_jobs_on_native_hosts_stop_at_the_limit() {
    common::on_every_backend(|url| async move {
        let o = portal(url, 3).await;
        let (host, _) = o.native_host("bench-01").await;

        // Ten orders at once: three are queued, the others are refused with the limit named.
        let mut orders = tokio::task::JoinSet::new();
        for _ in 0..10 {
            let (client, base, plugin) = (o.ada.clone(), o.base.clone(), o.plugin);
            orders.spawn(async move {
                post(
                    &client,
                    format!("{base}/api/v1/jobs"),
                    json!({ "plugin": plugin, "agent": host }),
                )
                .await
            });
        }
        let answers = orders.join_all().await;
        let queued: Vec<i64> = answers
            .iter()
            .filter(|(status, _)| *status == StatusCode::CREATED)
            .map(|(_, body)| body["jobs"][0].as_i64().unwrap())
            .collect();
        assert_eq!(queued.len(), 3, "{answers:?}");
        for (status, body) in answers.iter().filter(|(s, _)| *s != StatusCode::CREATED) {
            assert_eq!(*status, StatusCode::TOO_MANY_REQUESTS, "{body}");
            let error = body["error"].as_str().unwrap();
            assert!(
                error.contains("limit of 3 per user (jobs.native_jobs_per_user)")
                    && error.contains("you have 3 unfinished job(s)"),
                "{error}"
            );
        }

        // The limit is each user's own; a cancelled job makes room again.
        assert_eq!(o.order(&o.bob, host, "any").await.0, StatusCode::CREATED);
        let cancelled = o
            .ada
            .post(format!("{}/api/v1/jobs/{}/cancel", o.base, queued[0]))
            .send()
            .await
            .unwrap();
        assert_eq!(cancelled.status(), StatusCode::NO_CONTENT);
        assert_eq!(o.order(&o.ada, host, "any").await.0, StatusCode::CREATED);
        assert_eq!(
            o.order(&o.ada, host, "any").await.0,
            StatusCode::TOO_MANY_REQUESTS
        );
        o.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_job_for_a_gpu_its_agent_does_not_report_is_refused_when_queued() {
    common::on_every_backend(|url| async move {
        let o = portal(url, 32).await;
        let (host, agent) = o.native_host("bench-01").await;

        // Before the agent has started, its GPUs are unknown: only "any" may wait for it.
        let (status, body) = o.order(&o.ada, host, "3").await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("bench-01 has not reported its GPUs yet"),
            "{body}"
        );
        assert_eq!(o.order(&o.ada, host, "any").await.0, StatusCode::CREATED);

        o.register(&agent, 2, None).await;
        for missing in ["5", "0000:99:00.0"] {
            let (status, body) = o.order(&o.ada, host, missing).await;
            assert_eq!(
                status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{missing}: {body}"
            );
            assert_eq!(
                body["error"],
                format!(
                    "gpu: bench-01 has no GPU {missing}; it reports 0 (00000000:10:00.0), \
                     1 (00000000:11:00.0)"
                ),
            );
        }
        // A GPU named by its PCI address, written the kernel's way, is the agent's index 1.
        let (status, body) = o.order(&o.ada, host, "0000:11:00.0").await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let job: Value = o
            .ada
            .get(format!("{}/api/v1/jobs/{}", o.base, body["jobs"][0]))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(job["device_wanted"], 1);

        // An agent that reports no GPU (no driver) takes no job at all.
        let (bare, bare_agent) = o.native_host("bench-02").await;
        o.register(&bare_agent, 0, Some("libcuda.so.1 is not installed"))
            .await;
        for gpu in ["any", "each", "0"] {
            let (status, body) = o.order(&o.ada, bare, gpu).await;
            assert_eq!(status, StatusCode::CONFLICT, "{gpu}: {body}");
            assert!(
                body["error"]
                    .as_str()
                    .unwrap()
                    .starts_with("bench-02 reports no GPU"),
                "{body}"
            );
        }
        let suite = o
            .ada
            .post(format!("{}/api/v1/agents/{bare}/suite", o.base))
            .send()
            .await
            .unwrap();
        assert_eq!(suite.status(), StatusCode::CONFLICT);
        o.stop().await;
    })
    .await;
}
