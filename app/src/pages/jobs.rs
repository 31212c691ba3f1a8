//! The job pages: the jobs I may see, with live states, and one job with its progress while it
//! runs and its figures once it has, side by side with the same run on other machines (a VM
//! against a native host is the comparison Passage exists for).

use std::time::Duration;

use leptos::prelude::*;
use leptos_router::hooks::{use_params_map, use_query_map};

use crate::plugins::{JobFilter, JobView, MetricSummary, cancel_job, load_job, load_jobs};

/// How often the list asks again.
const LIST_POLL: Duration = Duration::from_secs(2);
/// How often a job's page asks again while it runs.
const JOB_POLL: Duration = Duration::from_secs(1);

fn progress_bar(job: &JobView) -> impl IntoView + use<> {
    let percent = (job.progress * 100.0).round().clamp(0.0, 100.0);
    view! {
        <div class="progress" title=format!("{percent}%")>
            <div class="bar" style=format!("width: {percent}%")></div>
        </div>
    }
}

/// The jobs, filtered by the page's query (`batch`, `plugin`, `agent`, `state`).
#[component]
pub fn JobsPage() -> impl IntoView {
    let (tick, hydrated) = super::polling(LIST_POLL);
    let query = use_query_map();
    let filter = Memo::new(move |_| {
        let q = query.read();
        JobFilter {
            agent: q.get("agent").and_then(|a| a.parse().ok()),
            plugin: q.get("plugin"),
            batch: q.get("batch"),
            state: q.get("state"),
            results: false,
        }
    });
    let jobs = Resource::new(move || (tick.get(), filter.get()), |(_, f)| load_jobs(f));
    view! {
        <section class="jobs-page" data-hydrated=move || hydrated.get().to_string()>
            <h1>"Jobs"</h1>
            {move || {
                let f = filter.get();
                let parts: Vec<String> = [
                    f.batch.map(|b| format!("batch {b}")),
                    f.plugin.map(|p| format!("plugin {p}")),
                    f.agent.map(|a| format!("agent {a}")),
                    f.state.map(|s| format!("state {s}")),
                ].into_iter().flatten().collect();
                (!parts.is_empty()).then(|| view! {
                    <p class="muted" id="job-filter">{format!("Only {}. ", parts.join(", "))} <a href="/jobs">"All jobs"</a></p>
                })
            }}
            <Transition fallback=|| view! { <p class="notice">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match jobs.await {
                        Err(e) => view! { <p class="error">{e.to_string()}</p> }.into_any(),
                        Ok(jobs) if jobs.is_empty() => view! {
                            <p class="notice" id="no-jobs">"No jobs yet: run a plugin from the " <a href="/plugins">"plugins"</a> " page."</p>
                        }.into_any(),
                        Ok(jobs) => view! { <JobTable jobs/> }.into_any(),
                    }
                })}
            </Transition>
        </section>
    }
}

#[component]
fn JobTable(jobs: Vec<JobView>) -> impl IntoView {
    view! {
        <table class="jobs">
            <thead><tr><th>"Job"</th><th>"Plugin"</th><th>"On"</th><th>"State"</th><th>"Queued"</th></tr></thead>
            <tbody>
                {jobs.into_iter().map(|job| view! {
                    <tr class="job" data-id=job.id.to_string() data-state=job.state.clone()>
                        <td><a href=format!("/jobs/{}", job.id)>{format!("job {}", job.id)}</a></td>
                        <td>
                            {job.label.clone().unwrap_or_else(|| job.plugin.clone())}
                            <div class="muted">{format!("{} {}", job.plugin, job.plugin_version)}</div>
                        </td>
                        <td>{job.target.clone()}</td>
                        <td>
                            <span class=format!("badge {}", job.state)>{job.state.clone()}</span>
                            {(job.state == "running").then(|| progress_bar(&job))}
                            {job.error.clone().map(|e| view! { <div class="muted">{e}</div> })}
                        </td>
                        <td class="muted">{job.created_at.clone()} <div>{format!("by {}", job.requested_by)}</div></td>
                    </tr>
                }).collect_view()}
            </tbody>
        </table>
    }
}

/// One job.
#[component]
pub fn JobPage() -> impl IntoView {
    let (tick, hydrated) = super::polling(JOB_POLL);
    let params = use_params_map();
    let id = Memo::new(move |_| {
        params
            .read()
            .get("id")
            .and_then(|id| id.parse::<i64>().ok())
    });
    let cancel = Action::new(|id: &i64| cancel_job(*id));
    let (finished, set_finished) = signal(false);
    // Once a job has ended it no longer changes: stop asking.
    let job = Resource::new(
        move || {
            (
                id.get(),
                if finished.get() { 0 } else { tick.get() },
                cancel.version().get(),
            )
        },
        |(id, _, _)| async move {
            match id {
                Some(id) => load_job(id).await,
                None => Ok(None),
            }
        },
    );
    let others = Resource::new(
        move || {
            job.get()
                .and_then(|j| j.ok().flatten())
                .filter(|j| j.is_finished())
        },
        |job| async move {
            match job {
                Some(job) => load_jobs(JobFilter {
                    plugin: Some(job.plugin.clone()),
                    state: Some("succeeded".into()),
                    results: true,
                    ..JobFilter::default()
                })
                .await
                .map(|all| comparable(&job, all)),
                None => Ok(Vec::new()),
            }
        },
    );
    view! {
        <section class="job-page" data-hydrated=move || hydrated.get().to_string()>
            <Transition fallback=|| view! { <p class="notice">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match job.await {
                        Err(e) => view! { <p class="error">{e.to_string()}</p> }.into_any(),
                        Ok(None) => view! { <p class="notice" id="no-such-job">"No such job."</p> }.into_any(),
                        Ok(Some(job)) => {
                            if job.is_finished() {
                                set_finished.set(true);
                            }
                            view! { <JobDetails job cancel/> }.into_any()
                        }
                    }
                })}
            </Transition>
            <Transition fallback=|| ()>
                {move || Suspend::new(async move {
                    let runs = others.await.unwrap_or_default();
                    let this = job.await.ok().flatten();
                    match this {
                        Some(this) if runs.len() > 1 => view! { <Comparison this runs/> }.into_any(),
                        _ => ().into_any(),
                    }
                })}
            </Transition>
        </section>
    }
}

/// The newest successful run per machine with the same plugin and parameters as `job`.
fn comparable(job: &JobView, all: Vec<JobView>) -> Vec<JobView> {
    let mut runs: Vec<JobView> = Vec::new();
    for other in all {
        let same = other.params == job.params && other.plugin == job.plugin;
        if same && !runs.iter().any(|r| r.agent_id == other.agent_id) {
            runs.push(other);
        }
    }
    runs
}

#[component]
fn JobDetails(job: JobView, cancel: Action<i64, Result<(), ServerFnError>>) -> impl IntoView {
    let id = job.id;
    let live = !job.is_finished();
    view! {
        <h1>
            {format!("Job {}", job.id)} " "
            <span id="job-state" class=format!("badge {}", job.state)>{job.state.clone()}</span>
        </h1>
        <dl class="facts">
            <dt>"Plugin"</dt>
            <dd><a href=format!("/plugins/{}", job.plugin_id)>{format!("{} {}", job.plugin, job.plugin_version)}</a>
                {job.label.clone().map(|l| view! { " · " <span id="job-label">{l}</span> })}</dd>
            <dt>"On"</dt><dd id="job-target">{job.target.clone()}
                {job.devices.clone().map(|d| view! { <span class="muted">{format!(" · GPU {d}")}</span> })}</dd>
            <dt>"Parameters"</dt>
            <dd class="params-list">
                {job.params.iter().map(|(k, v)| view! { <code>{format!("{k}={v}")}</code> " " }).collect_view()}
            </dd>
            <dt>"Queued"</dt><dd>{format!("{} by {}", job.created_at, job.requested_by)}</dd>
            {job.started_at.clone().map(|t| view! { <dt>"Started"</dt><dd>{t}</dd> })}
            {job.finished_at.clone().map(|t| view! { <dt>"Ended"</dt><dd>{t}</dd> })}
            {job.batch.clone().map(|b| view! { <dt>"Batch"</dt><dd><a href=format!("/jobs?batch={b}")>{b.clone()}</a></dd> })}
        </dl>
        {(job.state == "running").then(|| view! {
            <div id="job-progress">
                {progress_bar(&job)}
                <span class="muted">{format!("{:.0}% {}", job.progress * 100.0, job.progress_note.clone().unwrap_or_default())}</span>
            </div>
        })}
        {live.then(|| view! {
            <button id="cancel-job" class="deny" on:click=move |_| { cancel.dispatch(id); } disabled=move || cancel.pending().get()>
                "Cancel"
            </button>
        })}
        {move || cancel.value().get().and_then(Result::err).map(|e| view! { <p class="error">{e.to_string()}</p> })}
        {job.error.clone().map(|e| view! { <p class="error" id="job-error">{e}</p> })}
        {job.result.clone().map(|result| view! { <ResultView summary=job.summary.clone() result/> })}
    }
}

/// What a finished job produced: its verdict, figures, time, device and log.
#[component]
fn ResultView(summary: Vec<MetricSummary>, result: crate::plugins::JobResult) -> impl IntoView {
    let simulated = result.simulated;
    view! {
        {simulated.then(|| view! {
            <p class="simulated" id="simulated-banner">
                "SIMULATED: this ran on Passage's simulated GPU. Kernels did not execute and the figures are not measurements; verification is skipped."
            </p>
        })}
        {summary.iter().find(|m| m.name == "verification").map(|m| {
            let (class, text) = match m.median {
                1.0 => ("ok", "PASS: the GPU's output matches the CPU reference"),
                0.0 => ("failed", "FAIL: the GPU's output does not match the CPU reference"),
                _ => ("pending", "skipped: nothing real was computed to check"),
            };
            view! { <p id="job-verification">"Verification: " <span class=format!("badge {class}")>{text}</span></p> }
        })}
        <Matrices summary=summary.clone()/>
        <h2>"Figures"</h2>
        <table class="metrics" id="job-metrics">
            <thead><tr><th>"Metric"</th><th>"Median"</th><th>"Min"</th><th>"Max"</th><th>"Unit"</th><th>"Samples"</th></tr></thead>
            <tbody>
                {summary.iter().map(|m| view! {
                    <tr class="metric" data-name=m.name.clone()>
                        <td>{m.name.clone()}</td>
                        <td class="num">{format_value(m.median)}</td>
                        <td class="num">{format_value(m.min)}</td>
                        <td class="num">{format_value(m.max)}</td>
                        <td>{m.unit.clone()}</td>
                        <td class="num">{m.samples}</td>
                    </tr>
                }).collect_view()}
            </tbody>
        </table>
        <p class="muted" id="job-time">
            {format!("time: real {:.3} s, user {:.3} s, sys {:.3} s", result.wall_s, result.user_s, result.system_s)}
            {(!result.leftovers.is_empty() && result.leftovers != "nothing").then(|| format!(" · freed after the run: {}", result.leftovers))}
        </p>
        {result.devices.first().map(|d| view! {
            <p class="muted" id="job-device">{format!("{} · {} MiB · compute {} · PCI {}", d.name, d.total_memory >> 20, d.compute_capability, d.pci_bus_id)}</p>
        })}
        {(!result.logs.is_empty()).then(|| view! {
            <h2>"Log"</h2>
            <pre class="log" id="job-log">
                {result.logs.iter().map(|l| format!("[{}] {}\n", l.level, l.message)).collect::<String>()}
            </pre>
        })}
    }
    .into_any()
}

/// A figure per pair of devices: metrics named `<figure> [i→j]`, gathered by figure.
#[derive(Debug, Clone, PartialEq)]
struct Matrix {
    name: String,
    unit: String,
    size: usize,
    cells: Vec<(usize, usize, f64)>,
}

fn matrices(summary: &[MetricSummary]) -> Vec<Matrix> {
    let mut found: Vec<Matrix> = Vec::new();
    for metric in summary {
        let Some((name, cell)) = metric.name.rsplit_once(" [") else {
            continue;
        };
        let Some((from, to)) = cell.strip_suffix(']').and_then(|c| c.split_once('→')) else {
            continue;
        };
        let (Ok(from), Ok(to)) = (from.trim().parse::<usize>(), to.trim().parse::<usize>()) else {
            continue;
        };
        let index = match found
            .iter()
            .position(|m| m.name == name && m.unit == metric.unit)
        {
            Some(i) => i,
            None => {
                found.push(Matrix {
                    name: name.to_string(),
                    unit: metric.unit.clone(),
                    size: 0,
                    cells: Vec::new(),
                });
                found.len() - 1
            }
        };
        let matrix = &mut found[index];
        matrix.size = matrix.size.max(from + 1).max(to + 1);
        matrix.cells.push((from, to, metric.median));
    }
    found
}

/// Every figure measured between pairs of devices, as a heat map: darker is more.
#[component]
fn Matrices(summary: Vec<MetricSummary>) -> impl IntoView {
    let found = matrices(&summary);
    if found.is_empty() {
        return ().into_any();
    }
    view! {
        <h2>"Between devices"</h2>
        <div class="matrices" id="matrices">
            {found.into_iter().map(|m| {
                // Shaded from the smallest value to the largest, so that differences show.
                let top = m.cells.iter().map(|c| c.2).fold(f64::MIN, f64::max);
                let bottom = m.cells.iter().map(|c| c.2).fold(f64::MAX, f64::min);
                let value = |from: usize, to: usize| m.cells.iter().find(|c| c.0 == from && c.1 == to).map(|c| c.2);
                view! {
                    <table class="heatmap" data-name=m.name.clone()>
                        <caption>{format!("{} ({})", m.name, m.unit)}</caption>
                        <thead><tr><th>"from \\ to"</th>{(0..m.size).map(|to| view! { <th>{to}</th> }).collect_view()}</tr></thead>
                        <tbody>
                            {(0..m.size).map(|from| view! {
                                <tr>
                                    <th>{from}</th>
                                    {(0..m.size).map(|to| match value(from, to) {
                                        Some(v) => {
                                            let t = if top > bottom { ((v - bottom) / (top - bottom)).clamp(0.0, 1.0) } else { 1.0 };
                                            let style = format!(
                                                "background: hsl(210, 65%, {:.0}%); color: {}",
                                                92.0 - 55.0 * t,
                                                if t > 0.6 { "#fff" } else { "inherit" }
                                            );
                                            view! { <td class="cell" style=style>{format_value(v)}</td> }.into_any()
                                        }
                                        None => view! { <td class="cell empty">"—"</td> }.into_any(),
                                    }).collect_view()}
                                </tr>
                            }).collect_view()}
                        </tbody>
                    </table>
                }
            }).collect_view()}
        </div>
    }
    .into_any()
}

fn format_value(v: f64) -> String {
    if v == 0.0 || (v.abs() >= 0.01 && v.abs() < 1e7) {
        format!("{v:.3}")
    } else {
        format!("{v:.4e}")
    }
}

/// Bars of each metric's median, one per machine: how this run compares with the same run
/// elsewhere.
#[component]
fn Comparison(this: JobView, runs: Vec<JobView>) -> impl IntoView {
    let metrics: Vec<MetricSummary> = this
        .summary
        .iter()
        .filter(|m| m.name != "verification")
        .take(16)
        .cloned()
        .collect();
    let any_simulated = runs
        .iter()
        .any(|r| r.result.as_ref().is_some_and(|x| x.simulated));
    view! {
        <h2>"Compared with the same run elsewhere"</h2>
        <p class="muted">
            {format!("The newest successful run of {} with these parameters on each machine; bars are medians.", this.plugin)}
            {any_simulated.then_some(" Runs on the simulated GPU are marked: their figures are not measurements.")}
        </p>
        <div class="comparison" id="comparison">
            {metrics.into_iter().map(|metric| {
                let values: Vec<(String, bool, Option<f64>, bool)> = runs.iter().map(|r| {
                    let value = r.summary.iter().find(|m| m.name == metric.name && m.unit == metric.unit).map(|m| m.median);
                    let simulated = r.result.as_ref().is_some_and(|x| x.simulated);
                    let label = if simulated { format!("{} (simulated)", r.target) } else { r.target.clone() };
                    (label, r.target_kind == "host", value, r.id == this.id)
                }).collect();
                let top = values.iter().filter_map(|v| v.2).fold(0.0f64, f64::max);
                let native = values.iter().find(|v| v.1).and_then(|v| v.2);
                view! {
                    <div class="compare-metric">
                        <div class="compare-title">{format!("{} ({})", metric.name, metric.unit)}</div>
                        {values.into_iter().map(|(target, is_native, value, this_run)| {
                            let width = match value { Some(v) if top > 0.0 => (v / top * 100.0).clamp(0.0, 100.0), _ => 0.0 };
                            let ratio = match (value, native) {
                                (Some(v), Some(n)) if n != 0.0 && !is_native => format!(" · {:.1}% of native", v / n * 100.0),
                                _ => String::new(),
                            };
                            view! {
                                <div class="compare-row" class:native=is_native class:this-run=this_run>
                                    <span class="compare-label">{target}</span>
                                    <span class="compare-bar"><span style=format!("width: {width}%")></span></span>
                                    <span class="compare-value">{value.map(format_value).unwrap_or_else(|| "—".into())}{ratio}</span>
                                </div>
                            }
                        }).collect_view()}
                    </div>
                }
            }).collect_view()}
        </div>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(name: &str, median: f64) -> MetricSummary {
        MetricSummary {
            name: name.into(),
            unit: "GB/s".into(),
            samples: 1,
            median,
            min: median,
            max: median,
        }
    }

    #[test]
    fn metrics_named_by_device_pairs_make_matrices() {
        let found = matrices(&[
            metric("bandwidth [0→1]", 10.0),
            metric("kernel time", 3.0),
            metric("bandwidth [1→0]", 11.0),
            metric("latency [2→0]", 2.0),
            metric("not a cell [x→1]", 1.0),
        ]);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].name, "bandwidth");
        assert_eq!(found[0].size, 2);
        assert_eq!(found[0].cells, vec![(0, 1, 10.0), (1, 0, 11.0)]);
        assert_eq!((found[1].name.as_str(), found[1].size), ("latency", 3));
    }
}
