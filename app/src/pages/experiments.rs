//! The experiment pages: my experiments (admins: everyone's) with the form for a new one; one
//! experiment, live while it runs, with its charts, the numbers beside them and the overheads
//! against native; its printable report; and two experiments compared.

use std::collections::BTreeMap;
use std::time::Duration;

use leptos::prelude::*;
use leptos_router::hooks::{use_navigate, use_params_map, use_query_map};

use crate::experiments::{
    BenchmarkChoice, ChartLink, Comparison, ExperimentForm, ExperimentSummary, ExperimentView,
    Figure, Overhead, TargetChoice, VariantChoice, approve_experiment, cancel_experiment,
    compare_experiments, create_experiment, load_experiment, load_experiments,
};
use crate::plugins::{load_agents, load_plugins};

/// How often the pages ask again while something runs.
const POLL: Duration = Duration::from_secs(2);

/// `1.234` with about four significant digits.
fn number(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let digits = (3 - x.abs().log10().floor() as i32).clamp(0, 9) as usize;
    format!("{x:.digits$}")
}

fn percent(x: f64) -> String {
    format!("{:+.1}%", x * 100.0)
}

fn progress(summary: &ExperimentSummary) -> impl IntoView + use<> {
    let percent = (summary.fraction() * 100.0).round().clamp(0.0, 100.0);
    view! {
        <div class="progress" title=format!("{percent}%")>
            <div class="bar" style=format!("width: {percent}%")></div>
        </div>
    }
}

fn simulated_banner(simulated: bool) -> impl IntoView {
    simulated.then(|| view! {
        <p class="simulated" id="simulated-banner">
            "SIMULATED: targets of this experiment ran on Passage's simulated GPU. Kernels did not "
            "execute; its figures show how the portal works, not how fast anything is."
        </p>
    })
}

/// My experiments, and a new one.
#[component]
pub fn ExperimentsPage() -> impl IntoView {
    let (tick, hydrated) = super::polling(POLL);
    let list = Resource::new(move || tick.get(), |_| load_experiments());
    view! {
        <section class="experiments-page" data-hydrated=move || hydrated.get().to_string()>
            <h1>"Experiments"</h1>
            <p class="muted">
                "The same benchmarks on several targets (native hosts, VMs, and VMs made for the "
                "experiment with 1, 2 or 4 vCPUs under KVM or Xen), repeated in rotating order and "
                "compared: each VM against native, with a 95% interval."
            </p>
            <Transition fallback=|| view! { <p class="notice">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match list.await {
                        Err(e) => view! { <p class="error">{e.to_string()}</p> }.into_any(),
                        Ok(list) if list.is_empty() => view! { <p class="notice" id="no-experiments">"No experiments yet."</p> }.into_any(),
                        Ok(list) => view! { <ExperimentTable list/> }.into_any(),
                    }
                })}
            </Transition>
            <NewExperiment/>
        </section>
    }
}

#[component]
fn ExperimentTable(list: Vec<ExperimentSummary>) -> impl IntoView {
    view! {
        <table class="experiments" id="experiment-list">
            <thead><tr><th>"Experiment"</th><th>"By"</th><th>"State"</th><th>"Progress"</th><th>"Made"</th></tr></thead>
            <tbody>
                {list.into_iter().map(|e| view! {
                    <tr class="experiment" data-id=e.id.to_string() data-state=e.state.clone()>
                        <td><a href=format!("/experiments/{}", e.id)>{format!("{} · {}", e.id, e.name)}</a>
                            {e.simulated.then(|| view! { " " <span class="badge simulated">"simulated"</span> })}</td>
                        <td>{e.owner.clone()}</td>
                        <td><span class=format!("badge {}", e.state)>{e.state.clone()}</span></td>
                        <td>{progress(&e)} <span class="muted">{format!("{} of {} jobs", e.jobs_done, e.jobs_total)}</span></td>
                        <td class="muted">{e.created_at.clone()}</td>
                    </tr>
                }).collect_view()}
            </tbody>
        </table>
    }
}

/// `1,2,4` as numbers.
fn numbers(text: &str) -> Vec<i64> {
    text.split([',', ' '])
        .filter_map(|n| n.trim().parse().ok())
        .collect()
}

/// `k=v k=v` as parameters.
fn params(text: &str) -> BTreeMap<String, String> {
    text.split_whitespace()
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The form for a new experiment.
#[component]
fn NewExperiment() -> impl IntoView {
    let plugins = Resource::new(|| (), |_| load_plugins());
    let agents = Resource::new(|| (), |_| load_agents());
    let choices = Resource::new(|| (), |_| crate::requests::load_requests());
    let name = RwSignal::new(String::new());
    let study = RwSignal::new(true);
    let chosen_plugins: RwSignal<BTreeMap<String, String>> = RwSignal::new(BTreeMap::new());
    let chosen_agents: RwSignal<Vec<i64>> = RwSignal::new(Vec::new());
    let make_vms = RwSignal::new(false);
    let model = RwSignal::new(String::new());
    let image = RwSignal::new(String::new());
    let vcpus = RwSignal::new("1,2,4".to_string());
    let kvm = RwSignal::new(false);
    let xen = RwSignal::new(false);
    let repetitions = RwSignal::new("5".to_string());
    let create = Action::new(|form: &ExperimentForm| create_experiment(form.clone()));
    let navigate = use_navigate();
    Effect::new(move |_| {
        if let Some(Ok(id)) = create.value().get() {
            navigate(&format!("/experiments/{id}"), Default::default());
        }
    });
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let mut targets: Vec<TargetChoice> = chosen_agents
            .get_untracked()
            .into_iter()
            .map(|agent| TargetChoice::Agent { agent })
            .collect();
        if make_vms.get_untracked() {
            let hypervisors = [("kvm", kvm), ("xen", xen)]
                .into_iter()
                .filter(|(_, on)| on.get_untracked())
                .map(|(h, _)| h.to_string())
                .collect();
            let text = |s: RwSignal<String>| Some(s.get_untracked()).filter(|s| !s.is_empty());
            targets.push(TargetChoice::Variant {
                variant: VariantChoice {
                    gpu_model: text(model),
                    image: text(image),
                    vcpus: numbers(&vcpus.get_untracked()),
                    hypervisors,
                    ..VariantChoice::default()
                },
            });
        }
        let (preset, plugins) = if study.get_untracked() {
            (Some("study".to_string()), Vec::new())
        } else {
            let plugins = chosen_plugins
                .get_untracked()
                .into_iter()
                .map(|(plugin, text)| BenchmarkChoice {
                    plugin,
                    params: params(&text),
                    label: None,
                })
                .collect();
            (None, plugins)
        };
        create.dispatch(ExperimentForm {
            name: name.get_untracked(),
            plugins,
            preset,
            targets,
            repetitions: repetitions.get_untracked().trim().parse().unwrap_or(0),
        });
    };
    view! {
        <form class="panel experiment-form" id="experiment-form" on:submit=submit>
            <h2>"New experiment"</h2>
            <label>"Name " <input id="experiment-name" required maxlength="200"
                on:input=move |ev| name.set(event_target_value(&ev)) prop:value=move || name.get()/></label>
            <fieldset>
                <legend>"Benchmarks"</legend>
                <label><input type="radio" name="benchmarks" id="preset-study" prop:checked=move || study.get()
                    on:change=move |_| study.set(true)/> "The study's suite (ten programs at the study's sizes, 15 runs)"</label>
                <label><input type="radio" name="benchmarks" id="choose-plugins" prop:checked=move || !study.get()
                    on:change=move |_| study.set(false)/> "Plugins:"</label>
                <Transition fallback=|| ()>
                    {move || Suspend::new(async move {
                        let mut names: Vec<String> = plugins.await.unwrap_or_default().into_iter().map(|p| p.name).collect();
                        names.dedup();
                        view! {
                            <ul class="choices" id="plugin-choices">
                                {names.into_iter().map(|p| {
                                    let (on, text) = (p.clone(), p.clone());
                                    view! {
                                        <li>
                                            <label><input type="checkbox" class="plugin-choice" data-plugin=p.clone()
                                                on:change=move |ev| {
                                                    let checked = event_target_checked(&ev);
                                                    study.set(false);
                                                    chosen_plugins.update(|c| { if checked { c.entry(on.clone()).or_default(); } else { c.remove(&on); } });
                                                }/> {p.clone()}</label>
                                            " " <input class="plugin-params" placeholder="parameters, e.g. elements=1024" data-plugin=p.clone()
                                                on:input=move |ev| { let v = event_target_value(&ev); chosen_plugins.update(|c| { if let Some(t) = c.get_mut(&text) { *t = v; } }); }/>
                                        </li>
                                    }
                                }).collect_view()}
                            </ul>
                        }
                    })}
                </Transition>
            </fieldset>
            <fieldset>
                <legend>"Targets"</legend>
                <Transition fallback=|| ()>
                    {move || Suspend::new(async move {
                        let agents: Vec<_> = agents.await.unwrap_or_default().into_iter().filter(|a| a.status != "revoked").collect();
                        view! {
                            <ul class="choices" id="agent-choices">
                                {agents.into_iter().map(|a| {
                                    let id = a.id;
                                    let gpus = a.devices.first().map(|d| format!(" · {} x {}", a.devices.len(), d.name)).unwrap_or_default();
                                    view! {
                                        <li><label><input type="checkbox" class="agent-choice" data-agent=id.to_string()
                                            on:change=move |ev| {
                                                let checked = event_target_checked(&ev);
                                                chosen_agents.update(|c| { c.retain(|x| *x != id); if checked { c.push(id); } });
                                            }/>
                                            {format!("{} · {}{gpus}", a.label(), a.status)}</label></li>
                                    }
                                }).collect_view()}
                            </ul>
                        }
                    })}
                </Transition>
                <label><input type="checkbox" id="make-vms" prop:checked=move || make_vms.get()
                    on:change=move |ev| make_vms.set(event_target_checked(&ev))/>
                    " Make VMs for the experiment (requested like any VM: quotas apply, an admin approves; released when it ends)"</label>
                <Transition fallback=|| ()>
                    {move || Suspend::new(async move {
                        let page = choices.await.ok().flatten();
                        let (models, images, with_driver) = page
                            .map(|p| (p.models, p.images, p.images_with_driver))
                            .unwrap_or_default();
                        if model.get_untracked().is_empty() && let Some(m) = models.first() { model.set(m.clone()); }
                        if image.get_untracked().is_empty() && let Some(i) = with_driver.first().or(images.first()) { image.set(i.clone()); }
                        view! {
                            <div class="variant" id="variant-fields">
                                <label>"GPU model " <select id="variant-model" on:change=move |ev| model.set(event_target_value(&ev)) prop:value=move || model.get()>
                                    {models.into_iter().map(|m| view! { <option value=m.clone()>{m.clone()}</option> }).collect_view()}
                                </select></label>
                                <label>"Image " <select id="variant-image" on:change=move |ev| image.set(event_target_value(&ev)) prop:value=move || image.get()>
                                    {images.into_iter().map(|i| view! { <option value=i.clone()>{i.clone()}</option> }).collect_view()}
                                </select></label>
                                <label>"vCPUs " <input id="variant-vcpus" on:input=move |ev| vcpus.set(event_target_value(&ev)) prop:value=move || vcpus.get()/></label>
                                <label><input type="checkbox" id="variant-kvm" on:change=move |ev| kvm.set(event_target_checked(&ev))/> "KVM"</label>
                                <label><input type="checkbox" id="variant-xen" on:change=move |ev| xen.set(event_target_checked(&ev))/> "Xen"</label>
                                <span class="muted">" (neither: each that a host with the model offers)"</span>
                            </div>
                        }
                    })}
                </Transition>
            </fieldset>
            <label>"Repetitions " <input id="experiment-repetitions" inputmode="numeric" on:input=move |ev| repetitions.set(event_target_value(&ev)) prop:value=move || repetitions.get()/></label>
            <button type="submit" id="create-experiment" disabled=move || create.pending().get()>"Create the experiment"</button>
            {move || create.value().get().and_then(Result::err).map(|e| view! { <p class="error" id="experiment-error">{e.to_string()}</p> })}
        </form>
    }
}

fn experiment_id() -> Memo<Option<i64>> {
    let params = use_params_map();
    Memo::new(move |_| {
        params
            .read()
            .get("id")
            .and_then(|id| id.parse::<i64>().ok())
    })
}

/// An experiment, polled until it has ended.
fn live_experiment(
    extra: impl Fn() -> usize + Send + Sync + 'static,
) -> (
    Resource<Result<Option<ExperimentView>, ServerFnError>>,
    ReadSignal<bool>,
) {
    let (tick, hydrated) = super::polling(POLL);
    let id = experiment_id();
    let (finished, set_finished) = signal(false);
    let data = Resource::new(
        move || {
            (
                id.get(),
                if finished.get() { 0 } else { tick.get() },
                extra(),
            )
        },
        |(id, _, _)| async move {
            match id {
                Some(id) => load_experiment(id).await,
                None => Ok(None),
            }
        },
    );
    Effect::new(move |_| {
        if let Some(Ok(Some(view))) = data.get()
            && view.summary.is_finished()
            && view
                .targets
                .iter()
                .all(|t| t.kind != "variant" || t.status == "released")
        {
            set_finished.set(true);
        }
    });
    (data, hydrated)
}

/// One experiment.
#[component]
pub fn ExperimentPage() -> impl IntoView {
    let cancel = Action::new(|id: &i64| cancel_experiment(*id));
    let approve = Action::new(|id: &i64| approve_experiment(*id));
    let viewer = Resource::new(|| (), |_| crate::inventory::current_viewer());
    let (data, hydrated) =
        live_experiment(move || cancel.version().get() + approve.version().get());
    view! {
        <section class="experiment-page" data-hydrated=move || hydrated.get().to_string()>
            <Transition fallback=|| view! { <p class="notice">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    let admin = matches!(viewer.await, Ok(Some(v)) if v.is_admin);
                    match data.await {
                        Err(e) => view! { <p class="error">{e.to_string()}</p> }.into_any(),
                        Ok(None) => view! { <p class="notice" id="no-such-experiment">"No such experiment."</p> }.into_any(),
                        Ok(Some(view)) => view! { <ExperimentDetails view admin cancel approve/> }.into_any(),
                    }
                })}
            </Transition>
        </section>
    }
}

#[component]
fn ExperimentDetails(
    view: ExperimentView,
    admin: bool,
    cancel: Action<i64, Result<(), ServerFnError>>,
    approve: Action<i64, Result<(), ServerFnError>>,
) -> impl IntoView {
    let s = view.summary.clone();
    let id = s.id;
    let live = !s.is_finished();
    let pending_vms = view
        .targets
        .iter()
        .any(|t| t.status.starts_with("waiting for approval"));
    view! {
        <h1>{format!("Experiment {id}: {}", s.name)} " "
            <span id="experiment-state" class=format!("badge {}", s.state)>{s.state.clone()}</span></h1>
        {simulated_banner(s.simulated)}
        <p class="muted">{format!("by {} · made {} · {} repetition(s)", s.owner, s.created_at, s.repetitions)}
            {s.finished_at.clone().map(|f| format!(" · ended {f}"))}</p>
        <div id="experiment-progress">
            {progress(&s)}
            <span class="muted" id="experiment-jobs">{format!("{} of {} jobs ended ({} failed)", s.jobs_done, s.jobs_total, s.jobs_failed)}</span>
            {s.note.clone().map(|n| view! { <p class="muted" id="experiment-note">{n}</p> })}
        </div>
        <p class="actions">
            <a href=format!("/experiments/{id}/report") id="report-link">"Report"</a> " · "
            <a href=format!("/api/v1/experiments/{id}/results.csv") id="csv-link" download>"CSV"</a> " · "
            <a href=format!("/api/v1/experiments/{id}/results.json") id="json-link" download>"JSON"</a> " · "
            <a href=format!("/experiments/{id}") id="permalink">"Permalink"</a> " · "
            <a href=format!("/experiments/compare?a={id}") id="compare-link">"Compare with…"</a>
        </p>
        {(admin && live && pending_vms).then(|| view! {
            <button id="approve-experiment" on:click=move |_| { approve.dispatch(id); } disabled=move || approve.pending().get()>
                "Approve its VMs"
            </button>
        })}
        {live.then(|| view! {
            <button id="cancel-experiment" class="deny" on:click=move |_| { cancel.dispatch(id); } disabled=move || cancel.pending().get()>
                "Cancel"
            </button>
        })}
        {move || cancel.value().get().and_then(Result::err).or_else(|| approve.value().get().and_then(Result::err))
            .map(|e| view! { <p class="error" id="experiment-action-error">{e.to_string()}</p> })}
        <Targets view=view.clone()/>
        <Results view/>
    }
}

#[component]
fn Targets(view: ExperimentView) -> impl IntoView {
    view! {
        <h2>"Targets"</h2>
        <table class="targets" id="targets">
            <thead><tr><th>"Target"</th><th>"Kind"</th><th>"GPU"</th><th>"Hypervisor"</th><th>"vCPUs"</th><th>"Agent"</th><th>"Status"</th></tr></thead>
            <tbody>
                {view.targets.iter().map(|t| view! {
                    <tr class="target" data-position=t.position.to_string()>
                        <td>{t.label.clone()}</td>
                        <td>{t.kind.clone()}</td>
                        <td>{t.gpu_model.clone().unwrap_or_default()}</td>
                        <td>{t.hypervisor.clone().map(|h| h.to_uppercase()).unwrap_or_else(|| "none (native)".into())}</td>
                        <td>{t.vcpus.map(|v| v.to_string()).unwrap_or_default()}</td>
                        <td>{t.agent_id.map(|a| format!("agent {a}")).unwrap_or_default()}
                            {t.vm_id.map(|v| view! { " · " <a href=format!("/vms/{v}")>{format!("VM {v}")}</a> })}</td>
                        <td class="target-status">{t.status.clone()}</td>
                    </tr>
                }).collect_view()}
            </tbody>
        </table>
    }
}

/// A chart with its numbers beside it.
#[component]
fn ChartWithTable(view: ExperimentView, chart: ChartLink) -> impl IntoView {
    let table = match chart.section.as_str() {
        "overhead" => overhead_table(&view, &chart).into_any(),
        _ => figure_table(&view, &chart).into_any(),
    };
    // The chart changes as jobs end: its address does too, so no stale copy is shown.
    let src = format!("{}?after={}", chart.url, view.summary.jobs_done);
    view! {
        <figure class="chart" data-chart=chart.name.clone()>
            <div class="chart-image">
                <img src=src alt=chart.title.clone() loading="lazy"/>
                <figcaption>{chart.title.clone()} " · "
                    <a href=format!("{}?download", chart.url) download class="svg-download">"SVG"</a></figcaption>
            </div>
            <div class="chart-numbers">{table}</div>
        </figure>
    }
}

/// The figures a chart draws.
fn figures_of<'a>(view: &'a ExperimentView, chart: &ChartLink) -> Vec<&'a Figure> {
    chart
        .figures
        .iter()
        .filter_map(|(b, m)| {
            view.figures
                .iter()
                .find(|f| f.benchmark == *b && f.metric == *m)
        })
        .collect()
}

fn figure_table(view: &ExperimentView, chart: &ChartLink) -> impl IntoView + use<> {
    let figures: Vec<Figure> = figures_of(view, chart).into_iter().cloned().collect();
    numbers_table(view, figures, Vec::new())
}

/// Figures (rows) by target (columns): median, range and samples; with `links`, each row's
/// chart.
fn numbers_table(
    view: &ExperimentView,
    figures: Vec<Figure>,
    links: Vec<Option<String>>,
) -> impl IntoView + use<> {
    let targets = view.targets.clone();
    let linked = !links.is_empty();
    view! {
        <table class="numbers">
            <thead><tr>{linked.then(|| view! { <th>"Chart"</th> })}<th>"Benchmark"</th><th>"Figure"</th>
                {targets.iter().map(|t| view! { <th>{t.label.clone()}</th> }).collect_view()}</tr></thead>
            <tbody>
                {figures.into_iter().zip(links.into_iter().chain(std::iter::repeat(None))).map(|(f, link)| view! {
                    <tr class="figure">
                        {linked.then(|| view! { <td>{link.map(|url| view! { <a href=url class="figure-chart">"SVG"</a> })}</td> })}
                        <td>{f.benchmark_label.clone()}</td>
                        <td>{format!("{} ({})", f.metric, f.unit)}</td>
                        {targets.iter().map(|t| {
                            let cell = f.cells.iter().find(|c| c.target == t.position).cloned();
                            view! { <td class="cell" data-target=t.position.to_string()>{cell.map(|c| view! {
                                <span class="median">{number(c.median)}</span>
                                <span class="muted">{format!(" [{}–{}] n={}", number(c.min), number(c.max), c.n)}</span>
                            })}</td> }
                        }).collect_view()}
                    </tr>
                }).collect_view()}
            </tbody>
        </table>
    }
}

/// A difference's badge class and words: called a difference only when its interval excludes
/// zero; without an interval (fewer than two samples a side) nothing is told.
fn verdict(o: &Overhead) -> (&'static str, &'static str) {
    match (o.significant, o.low) {
        (true, _) => ("badge failed", "difference"),
        (false, Some(_)) => ("badge ok", "no difference shown"),
        (false, None) => ("badge pending", "too few samples to tell"),
    }
}

fn overhead_row(view: &ExperimentView, o: &Overhead) -> impl IntoView + use<> {
    let target = view
        .target(o.target)
        .map(|t| t.label.clone())
        .unwrap_or_default();
    let interval = match (o.low, o.high) {
        (Some(l), Some(h)) => format!("[{}, {}] {}", number(l), number(h), o.unit),
        _ => "too few samples".into(),
    };
    let relative_interval = match (o.relative_low, o.relative_high) {
        (Some(l), Some(h)) => format!("[{}, {}]", percent(l), percent(h)),
        _ => String::new(),
    };
    let (class, verdict) = verdict(o);
    view! {
        <tr class="overhead" data-significant=o.significant.to_string()>
            <td>{o.benchmark_label.clone()}</td>
            <td>{o.metric.clone()}</td>
            <td>{target}</td>
            <td>{format!("{} {}", number(o.absolute), o.unit)}</td>
            <td>{interval}</td>
            <td>{o.relative.map(percent).unwrap_or_default()} " " <span class="muted">{relative_interval}</span></td>
            <td><span class=class>{verdict}</span></td>
        </tr>
    }
}

fn overhead_table(view: &ExperimentView, chart: &ChartLink) -> impl IntoView + use<> {
    let rows: Vec<Overhead> = view
        .overheads
        .iter()
        .filter(|o| {
            chart
                .figures
                .iter()
                .any(|(b, m)| o.benchmark == *b && o.metric == *m)
        })
        .cloned()
        .collect();
    let view = view.clone();
    view! { <OverheadTable view rows/> }
}

#[component]
fn OverheadTable(view: ExperimentView, rows: Vec<Overhead>) -> impl IntoView {
    view! {
        <table class="numbers overheads">
            <thead><tr><th>"Benchmark"</th><th>"Figure"</th><th>"Target"</th><th>"VM − native"</th>
                <th>"95% interval"</th><th>"Relative"</th><th>"Verdict"</th></tr></thead>
            <tbody>{rows.iter().map(|o| overhead_row(&view, o)).collect_view()}</tbody>
        </table>
    }
}

/// The charts by section, each with its table, and every overhead.
#[component]
fn Results(
    view: ExperimentView,
    /// Set on the report: each section says what the 2012 study found.
    #[prop(optional)]
    report: bool,
) -> impl IntoView {
    if view.figures.is_empty() {
        return view! { <p class="notice" id="no-results">"No results yet: they appear as jobs end."</p> }.into_any();
    }
    let sections = [
        ("times", "Execution time (real, user, system)"),
        (
            "bandwidth",
            "Bandwidth: host to device, device to host, device to device",
        ),
        ("sizes", "Across sizes"),
        ("overhead", "Overhead against native"),
    ];
    // Every other figure: one table, each row with a link to its own chart.
    let drawn = |f: &Figure, section: &str| {
        view.charts.iter().find(|c| {
            (c.section == "figures") == (section == "figures")
                && c.figures.contains(&(f.benchmark, f.metric.clone()))
        })
    };
    let (other_figures, other_links): (Vec<Figure>, Vec<Option<String>>) = view
        .figures
        .iter()
        .filter(|f| drawn(f, "sections").is_none())
        .map(|f| (f.clone(), drawn(f, "figures").map(|c| c.url.clone())))
        .unzip();
    let baseline = view
        .targets
        .iter()
        .find(|t| t.kind == "native")
        .map(|t| t.label.clone());
    view! {
        <div id="results">
            {sections.into_iter().map(|(section, title)| {
                let charts: Vec<ChartLink> = view.charts.iter().filter(|c| c.section == section).cloned().collect();
                (!charts.is_empty()).then(|| {
                    let v = view.clone();
                    view! {
                        <section class="result-section" data-section=section>
                            <h2>{title}</h2>
                            {report.then(|| study_finding(section)).flatten().map(|finding| view! {
                                <p class="study-finding">{finding}</p>
                            })}
                            {charts.into_iter().map(|chart| view! { <ChartWithTable view=v.clone() chart/> }).collect_view()}
                        </section>
                    }
                })
            }).collect_view()}
            {(!other_figures.is_empty()).then(|| view! {
                <section class="result-section" data-section="figures">
                    <h2>"Every other figure"</h2>
                    {numbers_table(&view, other_figures, other_links)}
                </section>
            })}
            <section class="result-section" data-section="all-overheads">
                <h2>"Every figure against native"</h2>
                {match baseline {
                    Some(b) => view! {
                        <p class="muted">{format!("Baseline: {b}. Each difference is the VM's median minus native's, with a 95% bootstrap interval (10,000 resamples); it is called a difference only when the interval excludes zero.")}</p>
                        <OverheadTable view=view.clone() rows=view.overheads.clone()/>
                    }.into_any(),
                    None => view! { <p class="notice">"No native target: there is no baseline to measure overhead against."</p> }.into_any(),
                }}
            </section>
        </div>
    }
    .into_any()
}

/// What the 2012 study reported for a section of its chapter 4, in its own terms (its figures
/// are pictures without their numbers, so only what its text states is repeated).
fn study_finding(section: &str) -> Option<&'static str> {
    Some(match section {
        "times" => {
            "The 2012 study (Figures 4-1 to 4-15: C1060, C2050 and NVS295 GPUs, native and in VMs \
             with 1, 2 and 4 vCPUs) found the same user (GPU computing) time native and in VMs, \
             within 0.001 s, and a shorter system time in VMs, shortest with one vCPU."
        }
        "bandwidth" => {
            "The 2012 study (Figures 4-16 to 4-18) found host-to-device and device-to-host \
             bandwidth about 400 MB/s lower in VMs than native, whatever their vCPU count, and \
             device-to-device the same."
        }
        "sizes" => {
            "The 2012 study (Figures 4-19 to 4-24: VecAdd at 128 to 1,024 elements, matrixMul) \
             found the four environments very close, the VMs sometimes faster than native."
        }
        "overhead" => {
            "The 2012 study (Figures 4-25 and 4-26) set the time passthrough adds beside the \
             times rCUDA (Duato et al., HPCS 2010) and vCUDA (Shi et al., IPDPS 2009) add, and \
             found passthrough adds the least; its figures give no numbers to repeat here."
        }
        _ => return None,
    })
}

/// The study's chapter 4 redrawn from an experiment, for printing.
#[component]
pub fn ReportPage() -> impl IntoView {
    let (data, hydrated) = live_experiment(|| 0);
    view! {
        <article class="report-page" data-hydrated=move || hydrated.get().to_string()>
            <Transition fallback=|| view! { <p class="notice">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match data.await {
                        Err(e) => view! { <p class="error">{e.to_string()}</p> }.into_any(),
                        Ok(None) => view! { <p class="notice">"No such experiment."</p> }.into_any(),
                        Ok(Some(view)) => view! { <Report view/> }.into_any(),
                    }
                })}
            </Transition>
        </article>
    }
}

#[component]
fn Report(view: ExperimentView) -> impl IntoView {
    let s = view.summary.clone();
    let targets = view
        .targets
        .iter()
        .map(|t| t.label.clone())
        .collect::<Vec<_>>()
        .join(", ");
    let benchmarks = view
        .benchmarks
        .iter()
        .map(|b| b.label.clone())
        .collect::<Vec<_>>()
        .join(", ");
    view! {
        <h1>{format!("Experiment {}: {}", s.id, s.name)}</h1>
        {simulated_banner(s.simulated)}
        <p class="muted">{format!("{} · by {} · made {}{}", s.state, s.owner, s.created_at,
            s.finished_at.clone().map(|f| format!(" · ended {f}")).unwrap_or_default())}</p>
        <h2>"Method"</h2>
        <p>{format!(
            "Benchmarks: {benchmarks}. Targets: {targets}. Every benchmark ran {} time(s) on every \
             target; each repetition ran the whole matrix, with the order of benchmarks and targets \
             rotated by one from one repetition to the next. Figures are medians over repetitions \
             with their range; real time is the wall-clock time of the plugin's run, user and system \
             time its CPU time. Overheads compare each VM with the first native target: the \
             difference of medians with a 95% percentile-bootstrap interval (10,000 resamples), \
             called a difference only when the interval excludes zero.", s.repetitions)}</p>
        <Results view report=true/>
    }
}

/// Two experiments compared.
#[component]
pub fn ComparePage() -> impl IntoView {
    let query = use_query_map();
    let ids = Memo::new(move |_| {
        let q = query.read();
        (
            q.get("a").and_then(|a| a.parse::<i64>().ok()),
            q.get("b").and_then(|b| b.parse::<i64>().ok()),
        )
    });
    let list = Resource::new(|| (), |_| load_experiments());
    let comparison = Resource::new(
        move || ids.get(),
        |ids| async move {
            match ids {
                (Some(a), Some(b)) => compare_experiments(a, b).await.map(Some),
                _ => Ok(None),
            }
        },
    );
    let hydrated = {
        let (h, set) = signal(false);
        Effect::new(move |_| set.set(true));
        h
    };
    view! {
        <section class="compare-page" data-hydrated=move || hydrated.get().to_string()>
            <h1>"Compare two experiments"</h1>
            <Transition fallback=|| ()>
                {move || Suspend::new(async move {
                    let list = list.await.unwrap_or_default();
                    let (a, b) = ids.get();
                    let options = move |chosen: Option<i64>| list.iter().map(|e| view! {
                        <option value=e.id.to_string() selected=chosen == Some(e.id)>{format!("{} · {} ({})", e.id, e.name, e.state)}</option>
                    }).collect_view();
                    view! {
                        <form method="get" action="/experiments/compare" class="inline-form" id="compare-form">
                            <label>"A (baseline) " <select name="a" id="compare-a">{options(a)}</select></label>
                            <label>"B " <select name="b" id="compare-b">{options(b)}</select></label>
                            <button type="submit">"Compare"</button>
                        </form>
                    }
                })}
            </Transition>
            <Transition fallback=|| view! { <p class="notice">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match comparison.await {
                        Err(e) => view! { <p class="error">{e.to_string()}</p> }.into_any(),
                        Ok(None) => view! { <p class="muted">"Choose two experiments with the same benchmarks."</p> }.into_any(),
                        Ok(Some(c)) => view! { <ComparisonTable c/> }.into_any(),
                    }
                })}
            </Transition>
        </section>
    }
}

#[component]
fn ComparisonTable(c: Comparison) -> impl IntoView {
    view! {
        {simulated_banner(c.a.simulated || c.b.simulated)}
        <p>{format!("A: experiment {} ({}), B: experiment {} ({}). Targets are matched by role (native, KVM 2 vCPU, …); B − A with a 95% bootstrap interval.", c.a.id, c.a.name, c.b.id, c.b.name)}</p>
        {if c.rows.is_empty() {
            view! { <p class="notice" id="nothing-in-common">"The two experiments have no figure of the same benchmark and role in common."</p> }.into_any()
        } else {
            view! {
                <table class="numbers" id="comparison">
                    <thead><tr><th>"Benchmark"</th><th>"Figure"</th><th>"Role"</th><th>"A"</th><th>"B"</th>
                        <th>"B − A"</th><th>"95% interval"</th><th>"Verdict"</th></tr></thead>
                    <tbody>
                        {c.rows.into_iter().map(|r| {
                            let d = r.difference;
                            view! {
                                <tr class="comparison-row">
                                    <td>{r.benchmark_label}</td>
                                    <td>{format!("{} ({})", r.metric, r.unit)}</td>
                                    <td>{r.role}</td>
                                    <td>{number(r.a)}</td>
                                    <td>{number(r.b)}</td>
                                    <td>{format!("{} ({})", number(d.absolute), d.relative.map(percent).unwrap_or_default())}</td>
                                    <td>{match (d.low, d.high) { (Some(l), Some(h)) => format!("[{}, {}]", number(l), number(h)), _ => "too few samples".into() }}</td>
                                    <td>{verdict(&d).1}</td>
                                </tr>
                            }
                        }).collect_view()}
                    </tbody>
                </table>
            }.into_any()
        }}
    }
}
