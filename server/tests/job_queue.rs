//! The job queue in the database, on SQLite and PostgreSQL: a job is taken once however many
//! processes ask, first in first out per agent, never onto a busy GPU; results are taken once;
//! a cancelled job stays cancelled; jobs of a silent agent fail; a restarted agent's jobs fail;
//! a user's unfinished jobs on native hosts stay within their limit however many submissions
//! arrive at once; queued jobs for GPUs a restarted agent no longer reports fail.

mod common;

use passage_app::plugins::{DeviceView, JobFilter, JobResult, MetricView};
use passage_plugin_host::{ParamKind, ParamSpec, ParamValue};
use passage_server::store::{
    AgentReport, JobEnd, NewJob, NewPlugin, Queuing, Registered, Scope, Store, Window, now_ms,
};

struct Queue {
    store: Store,
    user: i64,
    agent: i64,
    plugin: i64,
}

async fn queue(url: &str) -> Queue {
    let store = Store::open(url).await.unwrap();
    let user = store
        .create_user("ada", "not-a-hash", false)
        .await
        .unwrap()
        .id;
    let params = [ParamSpec {
        name: "size".into(),
        summary: "elements".into(),
        kind: ParamKind::Integer,
        default: ParamValue::Integer(1024),
        min: Some(1.0),
        max: None,
        unit: String::new(),
    }];
    let component = b"\0asm not really a component, the store does not look".to_vec();
    let new = NewPlugin {
        name: "vector-add",
        version: "1.0.0",
        summary: "adds",
        params: &params,
        sha256: "ab".repeat(32).leak(),
        component: &component,
        shipped: true,
        all_gpus: false,
        uploaded_by: "system",
    };
    let Registered::New(plugin) = store.register_plugin(&new).await.unwrap() else {
        panic!("a new plugin")
    };
    assert_eq!(
        store.register_plugin(&new).await.unwrap(),
        Registered::Known(plugin),
        "the same bytes twice are one plugin"
    );
    assert_eq!(
        store.plugin_component(new.sha256).await.unwrap().unwrap(),
        component,
        "the component comes back byte for byte"
    );
    let record = store.plugin(plugin).await.unwrap().unwrap();
    assert_eq!(record.params, params, "the description comes back typed");
    let agent = store
        .create_agent("host", "bench-01", None, "hash-of-token", "ops")
        .await
        .unwrap();
    Queue {
        store,
        user,
        agent,
        plugin,
    }
}

impl Queue {
    fn order(&self, agent: i64, device: Option<i64>) -> NewJob<'static> {
        NewJob {
            agent_id: agent,
            plugin_id: self.plugin,
            params_json: r#"[["size",1024]]"#,
            device_wanted: device,
            all_devices: false,
            label: None,
            batch: None,
            requested_by: self.user,
        }
    }

    async fn job(&self, device: Option<i64>) -> i64 {
        self.store
            .create_job(&NewJob {
                agent_id: self.agent,
                plugin_id: self.plugin,
                params_json: r#"[["size",1024]]"#,
                device_wanted: device,
                all_devices: false,
                label: None,
                batch: None,
                requested_by: self.user,
            })
            .await
            .unwrap()
    }
}

fn result() -> JobResult {
    JobResult {
        simulated: true,
        devices: vec![DeviceView {
            index: 0,
            name: "Passage simulated GPU".into(),
            pci_bus_id: "0000:10:00.0".into(),
            total_memory: 1 << 34,
            compute_capability: "9.0".into(),
            simulated: true,
        }],
        metrics: vec![MetricView {
            name: "bandwidth".into(),
            value: 12.5,
            unit: "GB/s".into(),
        }],
        logs: Vec::new(),
        wall_s: 0.5,
        user_s: 0.25,
        system_s: 0.125,
        leftovers: "nothing".into(),
    }
}

#[tokio::test]
async fn concurrent_takers_get_each_job_once() {
    common::on_every_backend(|url| async move {
        let q = queue(&url).await;
        let second = Store::open(&url).await.unwrap();
        let mut ids = Vec::new();
        for _ in 0..20 {
            ids.push(q.job(None).await);
        }
        // Twenty takers over two pools, each offering a different idle device.
        let mut takers = tokio::task::JoinSet::new();
        for i in 0..20 {
            let store = if i % 2 == 0 {
                q.store.clone()
            } else {
                second.clone()
            };
            let agent = q.agent;
            takers.spawn(async move { store.take_job(agent, &[i]).await.unwrap() });
        }
        let mut taken: Vec<i64> = takers
            .join_all()
            .await
            .into_iter()
            .flatten()
            .map(|job| job.id)
            .collect();
        taken.sort();
        let before = taken.len();
        taken.dedup();
        assert_eq!(taken.len(), before, "no job was handed out twice");
        assert!(!taken.is_empty());
        second.close().await;
    })
    .await;
}

#[tokio::test]
async fn jobs_go_first_in_first_out_and_never_onto_a_busy_gpu() {
    common::on_every_backend(|url| async move {
        let q = queue(&url).await;
        let first = q.job(Some(1)).await;
        let second = q.job(None).await;
        assert!(
            q.store.take_job(q.agent, &[0]).await.unwrap().is_none(),
            "the oldest job waits for its GPU rather than being overtaken"
        );
        let taken = q.store.take_job(q.agent, &[0, 1]).await.unwrap().unwrap();
        assert_eq!((taken.id, taken.devices.clone()), (first, vec![1]));
        assert_eq!(taken.plugin.0, "vector-add");
        assert_eq!(taken.params_json, r#"[["size",1024]]"#);
        // The agent claims device 1 is idle, but the database knows job `first` runs there.
        assert!(q.store.take_job(q.agent, &[1]).await.unwrap().is_none());
        let next = q.store.take_job(q.agent, &[0, 1]).await.unwrap().unwrap();
        assert_eq!((next.id, next.devices), (second, vec![0]));
        assert!(q.store.take_job(q.agent, &[0, 1]).await.unwrap().is_none());
    })
    .await;
}

#[tokio::test]
async fn results_are_taken_once_and_cancellations_stick() {
    common::on_every_backend(|url| async move {
        let q = queue(&url).await;
        let id = q.job(None).await;
        q.store.take_job(q.agent, &[0]).await.unwrap().unwrap();
        assert_eq!(
            q.store
                .job_progress(q.agent, id, 0.5, "half way")
                .await
                .unwrap()
                .as_deref(),
            Some("running")
        );
        assert_eq!(
            q.store
                .job_progress(q.agent + 1, id, 0.9, "")
                .await
                .unwrap(),
            None,
            "another agent cannot touch it"
        );
        let result = result();
        let end = JobEnd {
            state: "succeeded",
            error: None,
            result: Some(&result),
        };
        assert!(q.store.finish_job(q.agent, id, &end).await.unwrap());
        assert!(
            !q.store.finish_job(q.agent, id, &end).await.unwrap(),
            "a second result is not taken"
        );
        let job = q.store.job(Scope::User(q.user), id).await.unwrap().unwrap();
        assert_eq!(job.state, "succeeded");
        assert_eq!(job.progress, 1.0);
        assert_eq!(job.result.unwrap(), result);
        assert_eq!(job.params, vec![("size".to_string(), "1024".to_string())]);
        assert_eq!(job.summary[0].median, 12.5);

        let cancelled = q.job(None).await;
        q.store.take_job(q.agent, &[0]).await.unwrap().unwrap();
        assert!(
            q.store
                .cancel_job(cancelled, "cancelled by ada")
                .await
                .unwrap()
        );
        assert_eq!(
            q.store.stopped_jobs(q.agent, &[cancelled]).await.unwrap(),
            vec![cancelled],
            "the agent is told to stop it"
        );
        assert!(!q.store.finish_job(q.agent, cancelled, &end).await.unwrap());
        let job = q.store.job(Scope::All, cancelled).await.unwrap().unwrap();
        assert_eq!(
            (job.state.as_str(), job.error.as_deref()),
            ("cancelled", Some("cancelled by ada"))
        );
        assert!(!q.store.cancel_job(cancelled, "again").await.unwrap());
    })
    .await;
}

#[tokio::test]
async fn jobs_of_silent_and_restarted_agents_fail() {
    common::on_every_backend(|url| async move {
        let q = queue(&url).await;
        let silent = q.job(None).await;
        // Every agent call authenticates, which marks the agent seen.
        let agent = q
            .store
            .agent_by_token("hash-of-token")
            .await
            .unwrap()
            .unwrap();
        assert_eq!((agent.id, agent.name.as_str()), (q.agent, "bench-01"));
        q.store.take_job(q.agent, &[0]).await.unwrap().unwrap();
        assert!(
            q.store
                .fail_jobs_of_silent_agents(now_ms() - 60_000)
                .await
                .unwrap()
                .is_empty(),
            "the agent was seen when it took the job"
        );
        assert_eq!(
            q.store
                .fail_jobs_of_silent_agents(now_ms() + 1)
                .await
                .unwrap(),
            vec![silent]
        );
        let restarted = q.job(None).await;
        q.store.take_job(q.agent, &[0]).await.unwrap().unwrap();
        let devices = result().devices;
        assert_eq!(
            q.store
                .record_registration(
                    q.agent,
                    &AgentReport {
                        hostname: "bench-01".into(),
                        agent_version: "0.1.0".into(),
                        backend: "fake".into(),
                        devices: devices.clone(),
                        ..AgentReport::default()
                    },
                    None,
                )
                .await
                .unwrap()
                .running_failed,
            1
        );
        let jobs = q
            .store
            .jobs(
                Scope::All,
                &JobFilter::default(),
                Window {
                    before: None,
                    limit: Some(10),
                },
            )
            .await
            .unwrap();
        let state = |id: i64| {
            let job = jobs.iter().find(|j| j.id == id).unwrap();
            (job.state.clone(), job.error.clone().unwrap_or_default())
        };
        assert_eq!(state(silent).0, "failed");
        assert!(state(silent).1.contains("stopped answering"));
        assert_eq!(state(restarted).0, "failed");
        assert!(state(restarted).1.contains("restarted"));
        assert_eq!(q.store.agent_devices(q.agent).await.unwrap(), devices);
    })
    .await;
}

#[tokio::test]
async fn the_native_limit_holds_for_submissions_that_arrive_at_once() {
    common::on_every_backend(|url| async move {
        let q = queue(&url).await;
        let second = Store::open(&url).await.unwrap();
        const LIMIT: i64 = 5;
        // Forty submissions of one job each, over two pools (two portal replicas).
        let mut submissions = tokio::task::JoinSet::new();
        for i in 0..40 {
            let store = if i % 2 == 0 {
                q.store.clone()
            } else {
                second.clone()
            };
            let job = q.order(q.agent, None);
            submissions.spawn(async move { store.queue_jobs(&[job], LIMIT).await.unwrap() });
        }
        let outcomes = submissions.join_all().await;
        let queued = outcomes
            .iter()
            .filter(|o| matches!(o, Queuing::Queued(_)))
            .count();
        assert_eq!(queued as i64, LIMIT, "{outcomes:?}");
        assert!(
            outcomes
                .iter()
                .filter_map(|o| match o {
                    Queuing::OverLimit { unfinished } => Some(*unfinished),
                    Queuing::Queued(_) => None,
                })
                .all(|unfinished| unfinished == LIMIT),
            "{outcomes:?}"
        );
        assert_eq!(q.store.unfinished_native_jobs(q.user).await.unwrap(), LIMIT);

        // A batch goes in whole or not at all.
        let first = q
            .store
            .jobs(
                Scope::All,
                &JobFilter::default(),
                Window {
                    before: None,
                    limit: Some(100),
                },
            )
            .await
            .unwrap()
            .last()
            .unwrap()
            .id;
        assert!(q.store.cancel_job(first, "make room").await.unwrap());
        let batch = [q.order(q.agent, None), q.order(q.agent, None)];
        assert_eq!(
            q.store.queue_jobs(&batch, LIMIT).await.unwrap(),
            Queuing::OverLimit {
                unfinished: LIMIT - 1
            }
        );
        assert_eq!(
            q.store.unfinished_native_jobs(q.user).await.unwrap(),
            LIMIT - 1
        );
        let Queuing::Queued(ids) = q.store.queue_jobs(&batch[..1], LIMIT).await.unwrap() else {
            panic!("a cancelled job makes room for one")
        };
        assert_eq!(ids.len(), 1);

        // Running jobs count; ended ones do not; a VM's own agent is not limited.
        let running = q.store.take_job(q.agent, &[0]).await.unwrap().unwrap();
        assert_eq!(q.store.unfinished_native_jobs(q.user).await.unwrap(), LIMIT);
        let end = JobEnd {
            state: "succeeded",
            error: None,
            result: None,
        };
        assert!(q.store.finish_job(q.agent, running.id, &end).await.unwrap());
        assert_eq!(
            q.store.unfinished_native_jobs(q.user).await.unwrap(),
            LIMIT - 1
        );
        let vm_agent = q
            .store
            .create_agent("vm", "vm-7", None, "hash-of-vm-token", "system")
            .await
            .unwrap();
        let many: Vec<_> = (0..10).map(|_| q.order(vm_agent, None)).collect();
        let Queuing::Queued(ids) = q.store.queue_jobs(&many, LIMIT).await.unwrap() else {
            panic!("a VM's agent is not a shared machine")
        };
        assert_eq!(ids.len(), 10);
        second.close().await;
    })
    .await;
}

#[tokio::test]
async fn queued_jobs_for_gpus_a_restarted_agent_does_not_report_fail_instead_of_blocking() {
    common::on_every_backend(|url| async move {
        let q = queue(&url).await;
        let gone = q.job(Some(3)).await;
        let behind = q.job(Some(0)).await;
        let any = q.job(None).await;
        let report = |devices| AgentReport {
            hostname: "bench-01".into(),
            agent_version: "0.1.0".into(),
            backend: "fake".into(),
            devices,
            ..AgentReport::default()
        };
        let ended = q
            .store
            .record_registration(q.agent, &report(result().devices), None)
            .await
            .unwrap();
        assert_eq!(ended.unrunnable_failed, 1);
        let job = q.store.job(Scope::All, gone).await.unwrap().unwrap();
        assert_eq!(job.state, "failed");
        assert_eq!(
            job.error.as_deref(),
            Some("the agent reports no GPU 3 (it has 0 (0000:10:00.0))")
        );
        // The job behind it is not held up.
        let taken = q.store.take_job(q.agent, &[0]).await.unwrap().unwrap();
        assert_eq!(taken.id, behind);

        // An agent that comes back without any GPU can run nothing that is queued.
        let mut without = report(Vec::new());
        without.cuda_problem = Some("libcuda.so.1 is not installed".into());
        let ended = q
            .store
            .record_registration(q.agent, &without, None)
            .await
            .unwrap();
        assert_eq!((ended.running_failed, ended.unrunnable_failed), (1, 1));
        let job = q.store.job(Scope::All, any).await.unwrap().unwrap();
        assert_eq!(job.state, "failed");
        assert_eq!(
            job.error.as_deref(),
            Some("the agent reports no GPU: libcuda.so.1 is not installed")
        );
    })
    .await;
}
