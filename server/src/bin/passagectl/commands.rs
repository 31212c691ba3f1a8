//! Each command: the API route it calls and how its answer is shown to people.

use passage_app::experiments::{ExperimentSummary, ExperimentView};
use passage_app::inventory::{GpuView, HostView, Viewer};
use passage_app::plugins::JobView;
use passage_app::requests::{RequestForm, RequestView};
use passage_app::vms::VmView;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::client::{Answer, Api, Failure};
use crate::table::{Fields, Table, list, or_dash};
use crate::{Command, ExperimentsCommand, JobsCommand, RequestsCommand, VmsCommand};

/// Runs `command` and returns what to print: the answer as it came with `json`, else text.
pub async fn run(api: &Api, command: Command, json: bool) -> Result<String, Failure> {
    match command {
        Command::Hosts => show(api.get_all("/hosts", &[]).await?, json, hosts),
        Command::Gpus { host, model, state } => {
            let query: Vec<(&str, &str)> = [("host", &host), ("model", &model), ("state", &state)]
                .into_iter()
                .filter_map(|(key, value)| value.as_deref().map(|v| (key, v)))
                .collect();
            show(api.get_all("/gpus", &query).await?, json, gpus)
        }
        Command::Requests(command) => requests(api, command, json).await,
        Command::Vms(command) => vms(api, command, json).await,
        Command::Jobs(command) => jobs(api, command, json).await,
        Command::Experiments(command) => experiments(api, command, json).await,
        Command::Me => show(api.get("/me", &[]).await?, json, me),
    }
}

/// The answer unchanged with `json`; else read into `T` and rendered.
fn show<T: DeserializeOwned>(
    answer: Answer,
    json: bool,
    render: impl FnOnce(T) -> String,
) -> Result<String, Failure> {
    if json {
        Ok(answer.text)
    } else {
        Ok(render(answer.parse()?))
    }
}

/// `passagectl requests ...`: `/api/v1/requests`.
async fn requests(api: &Api, command: RequestsCommand, json: bool) -> Result<String, Failure> {
    match command {
        RequestsCommand::List => show(api.get_all("/requests", &[]).await?, json, request_table),
        RequestsCommand::Show { id } => show(
            api.get(&format!("/requests/{id}"), &[]).await?,
            json,
            request,
        ),
        RequestsCommand::File {
            model,
            count,
            hours,
            image,
            reason,
            vcpus,
            memory_mib,
            disk_gib,
            hypervisor,
        } => {
            let form = RequestForm {
                gpu_model: model,
                gpu_count: count,
                vcpus,
                memory_mib,
                disk_gib,
                image,
                hypervisor,
                lease_hours: hours,
                reason,
            };
            show(api.post("/requests", Some(&form)).await?, json, filed)
        }
        RequestsCommand::Approve { id } => {
            let path = format!("/requests/{id}/approve");
            show(api.post(&path, None::<&()>).await?, json, request)
        }
        RequestsCommand::Deny { id, reason } => {
            let path = format!("/requests/{id}/deny");
            let body = json!({ "reason": reason });
            show(api.post(&path, Some(&body)).await?, json, request)
        }
    }
}

/// `passagectl vms ...`: `/api/v1/vms`.
async fn vms(api: &Api, command: VmsCommand, json: bool) -> Result<String, Failure> {
    let none = None::<&()>;
    let answer = match command {
        VmsCommand::List => return show(api.get_all("/vms", &[]).await?, json, vm_table),
        VmsCommand::Show { id } => api.get(&format!("/vms/{id}"), &[]).await?,
        VmsCommand::Start { id } => api.post(&format!("/vms/{id}/start"), none).await?,
        VmsCommand::Stop { id } => api.post(&format!("/vms/{id}/stop"), none).await?,
        VmsCommand::Reboot { id } => api.post(&format!("/vms/{id}/reboot"), none).await?,
        VmsCommand::Release { id } => api.delete(&format!("/vms/{id}")).await?,
        VmsCommand::Extend { id, hours } => {
            let body = json!({ "hours": hours });
            api.post(&format!("/vms/{id}/extend"), Some(&body)).await?
        }
    };
    // Every action answers with the VM as it is afterwards.
    show(answer, json, vm)
}

/// `passagectl jobs ...`: `/api/v1/jobs`.
async fn jobs(api: &Api, command: JobsCommand, json: bool) -> Result<String, Failure> {
    match command {
        JobsCommand::List { state, plugin } => {
            let query: Vec<(&str, &str)> = [("state", &state), ("plugin", &plugin)]
                .into_iter()
                .filter_map(|(key, value)| value.as_deref().map(|v| (key, v)))
                .collect();
            show(api.get_all("/jobs", &query).await?, json, job_table)
        }
        JobsCommand::Show { id } => show(api.get(&format!("/jobs/{id}"), &[]).await?, json, job),
        JobsCommand::Cancel { id } => {
            // The cancel itself answers 204 without a body: the job is shown as it is now.
            api.post(&format!("/jobs/{id}/cancel"), None::<&()>).await?;
            show(api.get(&format!("/jobs/{id}"), &[]).await?, json, job)
        }
    }
}

/// `passagectl experiments ...`: `/api/v1/experiments`.
async fn experiments(
    api: &Api,
    command: ExperimentsCommand,
    json: bool,
) -> Result<String, Failure> {
    match command {
        ExperimentsCommand::List => show(
            api.get_all("/experiments", &[]).await?,
            json,
            experiment_table,
        ),
        ExperimentsCommand::Show { id } => show(
            api.get(&format!("/experiments/{id}"), &[]).await?,
            json,
            experiment,
        ),
    }
}

/// The hosts, one line each.
fn hosts(hosts: Vec<HostView>) -> String {
    let mut table = Table::new(&["NAME", "STATE", "GPUS", "LAST REFRESH", "PROBLEM"]);
    for h in hosts {
        // libvirt's error (admins see it) says more than the passthrough problem.
        let problem = h.error.or(h.passthrough_problem);
        table.row(vec![
            h.name,
            h.state.as_str().into(),
            h.gpu_count.to_string(),
            or_dash(h.last_refresh),
            or_dash(problem),
        ]);
    }
    table.render()
}

/// The GPUs, one line each.
fn gpus(gpus: Vec<GpuView>) -> String {
    let mut table = Table::new(&["HOST", "ADDRESS", "MODEL", "NUMA", "IOMMU", "LINK", "STATE"]);
    for g in gpus {
        let link = g.link.and_then(|l| {
            let degraded = if l.degraded { " (degraded)" } else { "" };
            l.current.map(|c| format!("{c}{degraded}"))
        });
        let state = match g.state_reason {
            Some(reason) => format!("{}: {reason}", g.state.as_str()),
            None => g.state.as_str().into(),
        };
        table.row(vec![
            g.host,
            g.address,
            g.model,
            or_dash(g.numa_node),
            or_dash(g.iommu_group.map(|i| i.number)),
            or_dash(link),
            state,
        ]);
    }
    table.render()
}

/// Requests, one line each.
fn request_table(requests: Vec<RequestView>) -> String {
    let mut table = Table::new(&[
        "ID", "USER", "MODEL", "GPUS", "HOURS", "IMAGE", "STATE", "HOST",
    ]);
    for r in requests {
        table.row(vec![
            r.id.to_string(),
            r.user,
            r.gpu_model,
            r.gpu_count.to_string(),
            r.lease_hours.to_string(),
            r.image,
            r.state,
            or_dash(r.host),
        ]);
    }
    table.render()
}

/// One request, every field.
fn request(r: RequestView) -> String {
    Fields::new()
        .add("id", r.id)
        .add("user", r.user)
        .add("state", r.state)
        .opt("why", r.state_reason)
        .add("gpu model", r.gpu_model)
        .add("gpu count", r.gpu_count)
        .add("vcpus", r.vcpus)
        .add("memory MiB", r.memory_mib)
        .add("disk GiB", r.disk_gib)
        .add("image", r.image)
        .add("hypervisor", r.hypervisor)
        .add("lease hours", r.lease_hours)
        .add("reason", r.reason)
        .opt("host", r.host)
        .opt("numa node", r.numa_node)
        .add("gpus", list(&r.gpus))
        .render()
}

/// The answer to filing a request: its id and state.
#[derive(Debug, Deserialize)]
struct Filed {
    id: i64,
    state: Option<String>,
}

/// What filing a request answered.
fn filed(f: Filed) -> String {
    Fields::new().add("id", f.id).opt("state", f.state).render()
}

/// VMs, one line each.
fn vm_table(vms: Vec<VmView>) -> String {
    let mut table = Table::new(&[
        "ID",
        "REQUEST",
        "OWNER",
        "STATE",
        "HOST",
        "MODEL",
        "GPUS",
        "LEASE ENDS",
        "SSH",
    ]);
    for v in vms {
        let ssh = v.ssh_address.map(|a| format!("{}@{a}", v.ssh_user));
        table.row(vec![
            v.id.to_string(),
            v.request_id.to_string(),
            v.owner,
            v.state,
            v.host,
            v.gpu_model,
            v.gpus.len().to_string(),
            v.lease_expires_at,
            or_dash(ssh),
        ]);
    }
    table.render()
}

/// One VM, every field.
fn vm(v: VmView) -> String {
    Fields::new()
        .add("id", v.id)
        .add("request", v.request_id)
        .add("owner", v.owner)
        .add("state", v.state)
        .opt("why", v.state_reason)
        .add("host", v.host)
        .opt("domain", v.domain)
        .opt("domain type", v.domain_type)
        .add("gpu model", v.gpu_model)
        .add("gpus", list(&v.gpus))
        .add("vcpus", v.vcpus)
        .add("memory MiB", v.memory_mib)
        .add("disk GiB", v.disk_gib)
        .add("image", v.image)
        .add("hypervisor", v.hypervisor)
        .add("lease ends", v.lease_expires_at)
        .add("ssh user", v.ssh_user)
        .opt("ssh address", v.ssh_address)
        .render()
}

/// Jobs, one line each.
fn job_table(jobs: Vec<JobView>) -> String {
    let mut table = Table::new(&[
        "ID", "PLUGIN", "TARGET", "STATE", "PROGRESS", "BY", "CREATED",
    ]);
    for j in jobs {
        table.row(vec![
            j.id.to_string(),
            j.label.unwrap_or(j.plugin),
            j.target,
            j.state,
            percent(j.progress),
            j.requested_by,
            j.created_at,
        ]);
    }
    table.render()
}

/// One job: its fields, then each metric of its result.
fn job(j: JobView) -> String {
    let params: Vec<String> = j.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut fields = Fields::new();
    fields
        .add("id", j.id)
        .add("plugin", format!("{} {}", j.plugin, j.plugin_version))
        .opt("label", j.label)
        .opt("batch", j.batch)
        .add("target", j.target)
        .add("state", j.state)
        .add("progress", percent(j.progress))
        .opt("note", j.progress_note)
        .opt("error", j.error)
        .add("requested by", j.requested_by)
        .add("params", list(&params))
        .opt("devices", j.devices)
        .add("created", j.created_at)
        .opt("started", j.started_at)
        .opt("finished", j.finished_at);
    for metric in &j.summary {
        fields.add(
            "metric",
            format!(
                "{} {} {} (median of {}, {} to {})",
                metric.name, metric.median, metric.unit, metric.samples, metric.min, metric.max
            ),
        );
    }
    fields.render()
}

/// Experiments, one line each.
fn experiment_table(experiments: Vec<ExperimentSummary>) -> String {
    let mut table = Table::new(&["ID", "NAME", "OWNER", "STATE", "JOBS", "CREATED"]);
    for e in experiments {
        table.row(vec![
            e.id.to_string(),
            e.name,
            e.owner,
            e.state,
            format!("{}/{}", e.jobs_done, e.jobs_total),
            e.created_at,
        ]);
    }
    table.render()
}

/// One experiment: where it stands, then its benchmarks and targets.
fn experiment(view: ExperimentView) -> String {
    let e = view.summary;
    let mut text = Fields::new()
        .add("id", e.id)
        .add("name", e.name)
        .add("owner", e.owner)
        .add("state", e.state)
        .opt("note", e.note)
        .opt("preset", e.preset)
        .add(
            "repetition",
            format!("{} of {}", e.repetition, e.repetitions),
        )
        .add(
            "jobs",
            format!(
                "{} of {} done, {} failed",
                e.jobs_done, e.jobs_total, e.jobs_failed
            ),
        )
        .add("simulated", e.simulated)
        .add("created", e.created_at)
        .opt("finished", e.finished_at)
        .render();
    let mut benchmarks = Table::new(&["BENCHMARK", "PLUGIN"]);
    for b in view.benchmarks {
        benchmarks.row(vec![b.label, format!("{} {}", b.plugin, b.plugin_version)]);
    }
    let mut targets = Table::new(&["TARGET", "KIND", "VM", "STATUS"]);
    for t in view.targets {
        targets.row(vec![t.label, t.kind, or_dash(t.vm_id), t.status]);
    }
    text.push('\n');
    text.push_str(&benchmarks.render());
    text.push('\n');
    text.push_str(&targets.render());
    text
}

/// The signed-in account.
fn me(viewer: Viewer) -> String {
    Fields::new()
        .add("id", viewer.id)
        .add("name", viewer.name)
        .add("admin", if viewer.is_admin { "yes" } else { "no" })
        .render()
}

/// A fraction from 0 to 1 as a whole percentage.
fn percent(fraction: f64) -> String {
    format!("{:.0}%", fraction * 100.0)
}
