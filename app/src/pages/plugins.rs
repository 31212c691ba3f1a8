//! The plugin pages: every registered plugin (admins upload new ones), the study's suite queued
//! in one go, and one plugin with its description and a form to run it.

use std::collections::BTreeMap;

use leptos::prelude::*;
use leptos_router::hooks::{use_navigate, use_params_map, use_query_map};

use crate::plugins::{
    AgentView, JobOrder, ParamView, PluginView, load_agents, load_plugin, load_plugins, queue_job,
    queue_suite,
};

/// A page's hydration marker, for tests and for people who want to know the page is live.
fn hydrated() -> ReadSignal<bool> {
    let (hydrated, set_hydrated) = signal(false);
    Effect::new(move |_| set_hydrated.set(true));
    hydrated
}

/// Agents that can take a job now: not revoked, and for VMs, online or waiting.
fn runnable(agents: Vec<AgentView>) -> Vec<AgentView> {
    agents
        .into_iter()
        .filter(|a| a.status != "revoked")
        .collect()
}

/// A select of the agents to run on.
#[component]
fn TargetSelect(
    agents: Vec<AgentView>,
    target: RwSignal<String>,
    id: &'static str,
) -> impl IntoView {
    if target.get_untracked().is_empty()
        && let Some(first) = agents.first()
    {
        target.set(first.id.to_string());
    }
    view! {
        <select id=id on:change=move |ev| target.set(event_target_value(&ev)) prop:value=move || target.get()>
            {agents.into_iter().map(|a| {
                let label = format!("{} · {}", a.label(), a.status);
                view! { <option value=a.id.to_string()>{label}</option> }
            }).collect_view()}
        </select>
    }
}

/// What the page says for an error code of the upload form.
fn upload_error_text(code: &str) -> Option<&'static str> {
    Some(match code {
        "not-a-plugin" => {
            "That file is not a plugin: not a WebAssembly component of Passage's plugin world \
             (plugins/wit/plugin.wit), or its describe failed. The portal's log says which."
        }
        "too-large" => "That file is larger than the portal takes ([plugins] max_upload_mib).",
        "version-taken" => {
            "A plugin of that name and version is registered with other contents: give the new \
             build a new version."
        }
        "no-file" => "Choose a .wasm file first.",
        "broken-upload" => "The upload broke off. Try again.",
        "forbidden" => "Only admins upload plugins.",
        "unavailable" => "The portal cannot register plugins right now. Try again shortly.",
        _ => return None,
    })
}

/// Every plugin; the suite; the upload form for admins.
#[component]
pub fn PluginsPage() -> impl IntoView {
    let hydrated = hydrated();
    let plugins = Resource::new(|| (), |_| load_plugins());
    let agents = Resource::new(|| (), |_| load_agents());
    let viewer = Resource::new(|| (), |_| crate::inventory::current_viewer());
    let query = use_query_map();
    // Only known codes are shown, so a crafted link cannot put words on this page.
    let upload_error = move || {
        query
            .read()
            .get("error")
            .and_then(|code| upload_error_text(&code))
    };
    let target = RwSignal::new(String::new());
    let suite = Action::new(|agent: &i64| queue_suite(*agent));
    let navigate = use_navigate();
    Effect::new(move |_| {
        if let Some(Ok(batch)) = suite.value().get() {
            navigate(&format!("/jobs?batch={batch}"), Default::default());
        }
    });
    view! {
        <section class="plugins-page" data-hydrated=move || hydrated.get().to_string()>
            <h1>"Plugins"</h1>
            <p class="muted">
                "Benchmarks and workloads: WebAssembly components that run in the agent's sandbox, "
                "on a VM's GPUs or on a native host's. Writing one: docs/writing-plugins.md."
            </p>
            <p class="muted" id="plugin-kits">
                "Start a plugin from a kit (the contract, helpers and a plugin that builds with one command): "
                <a href="/downloads/plugin-kit/rust" rel="external" download>"Rust"</a>", "
                <a href="/downloads/plugin-kit/python" rel="external" download>"Python"</a>", "
                <a href="/downloads/plugin-kit/js" rel="external" download>"JavaScript"</a>
                ", or run " <code>"passage-agent new NAME --lang rust|python|js"</code> "."
            </p>
            <Transition fallback=|| view! { <p class="notice">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    let admin = matches!(viewer.await, Ok(Some(v)) if v.is_admin);
                    let agents = runnable(agents.await.unwrap_or_default());
                    match plugins.await {
                        Err(e) => view! { <p class="error">{e.to_string()}</p> }.into_any(),
                        Ok(plugins) => view! {
                            <div class="suite panel">
                                <h2>"The study's suite"</h2>
                                <p class="muted">
                                    "The ten CUDA programs of the 2012 passthrough study (alignedTypes, asyncAPI, "
                                    "BlackScholes, clock, convolutionSeparable, fastWalshTransform, matrixMul, "
                                    "bandwidthTest, a sizeable matrixMul, VecAdd at 128 to 1024 and 16 Mi elements), "
                                    "queued at once with the study's sizes. Run it on a VM and on a native host to compare."
                                </p>
                                {if agents.is_empty() {
                                    view! { <p class="notice" id="no-agents">"No agent to run on yet: a VM's agent registers when the VM boots; admins add native hosts on the Agents page."</p> }.into_any()
                                } else {
                                    view! {
                                        <div class="inline-form">
                                            <TargetSelect agents=agents.clone() target id="suite-target"/>
                                            <button id="run-suite" disabled=move || suite.pending().get()
                                                on:click=move |_| {
                                                    if let Ok(agent) = target.get_untracked().parse::<i64>() {
                                                        suite.dispatch(agent);
                                                    }
                                                }>
                                                "Run the study's suite"
                                            </button>
                                        </div>
                                    }.into_any()
                                }}
                                {move || suite.value().get().and_then(Result::err).map(|e| view! { <p class="error" id="suite-error">{e.to_string()}</p> })}
                            </div>
                            <PluginTable plugins/>
                            {admin.then(|| view! {
                                <form class="upload panel" method="post" action="/plugins/upload" enctype="multipart/form-data">
                                    <h2>"Upload a plugin"</h2>
                                    <p class="muted">"A component built for wasm32-wasip2 against plugins/wit/plugin.wit. The portal reads its describe in the sandbox; a new build needs a new version."</p>
                                    <input type="file" name="component" id="plugin-file" accept=".wasm,application/wasm" required/>
                                    <button type="submit" id="upload-plugin">"Upload"</button>
                                </form>
                            })}
                        }.into_any(),
                    }
                })}
            </Transition>
            {move || upload_error().map(|e| view! { <p class="error" id="upload-error">{e}</p> })}
        </section>
    }
}

#[component]
fn PluginTable(plugins: Vec<PluginView>) -> impl IntoView {
    if plugins.is_empty() {
        return view! { <p class="notice" id="no-plugins">"No plugins registered."</p> }.into_any();
    }
    view! {
        <table class="plugins">
            <thead><tr><th>"Plugin"</th><th>"Version"</th><th>"What it does"</th><th>"From"</th></tr></thead>
            <tbody>
                {plugins.into_iter().map(|p| view! {
                    <tr class="plugin" data-name=p.name.clone()>
                        <td><a href=format!("/plugins/{}", p.id)>{p.name.clone()}</a></td>
                        <td>{p.version.clone()} {p.all_gpus.then(|| view! { <span class="badge claimed" title="runs on every GPU of a machine at once">"all GPUs"</span> })}</td>
                        <td class="summary-cell">{p.summary.clone()}</td>
                        <td class="muted">
                            {if p.shipped { "shipped".to_string() } else { format!("uploaded by {}", p.uploaded_by) }}
                            <div><code title=p.sha256.clone()>{p.sha256.chars().take(12).collect::<String>()}</code></div>
                        </td>
                    </tr>
                }).collect_view()}
            </tbody>
        </table>
    }
    .into_any()
}

/// One plugin: its description, parameters and the run form.
#[component]
pub fn PluginPage() -> impl IntoView {
    let hydrated = hydrated();
    let params = use_params_map();
    let id = Memo::new(move |_| {
        params
            .read()
            .get("id")
            .and_then(|id| id.parse::<i64>().ok())
    });
    let plugin = Resource::new(
        move || id.get(),
        |id| async move {
            match id {
                Some(id) => load_plugin(id).await,
                None => Ok(None),
            }
        },
    );
    let agents = Resource::new(|| (), |_| load_agents());
    view! {
        <section class="plugin-page" data-hydrated=move || hydrated.get().to_string()>
            <Transition fallback=|| view! { <p class="notice">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    let agents = runnable(agents.await.unwrap_or_default());
                    match plugin.await {
                        Err(e) => view! { <p class="error">{e.to_string()}</p> }.into_any(),
                        Ok(None) => view! { <p class="notice" id="no-such-plugin">"No such plugin."</p> }.into_any(),
                        Ok(Some(plugin)) => view! { <PluginDetails plugin agents/> }.into_any(),
                    }
                })}
            </Transition>
        </section>
    }
}

#[component]
fn PluginDetails(plugin: PluginView, agents: Vec<AgentView>) -> impl IntoView {
    let values: Vec<(ParamView, RwSignal<String>)> = plugin
        .params
        .iter()
        .map(|p| (p.clone(), RwSignal::new(p.default.clone())))
        .collect();
    let target = RwSignal::new(String::new());
    let gpu = RwSignal::new("any".to_string());
    let run = Action::new(|order: &JobOrder| queue_job(order.clone()));
    let navigate = use_navigate();
    Effect::new(move |_| {
        if let Some(Ok(ids)) = run.value().get() {
            match ids.as_slice() {
                [one] => navigate(&format!("/jobs/{one}"), Default::default()),
                _ => navigate("/jobs", Default::default()),
            }
        }
    });
    let plugin_id = plugin.id;
    let submitted = values.clone();
    let submit = move |_| {
        let Ok(agent) = target.get_untracked().parse::<i64>() else {
            return;
        };
        let params: BTreeMap<String, String> = submitted
            .iter()
            .filter(|(spec, value)| value.get_untracked() != spec.default)
            .map(|(spec, value)| (spec.name.clone(), value.get_untracked()))
            .collect();
        run.dispatch(JobOrder {
            plugin: plugin_id,
            agent,
            gpu: Some(gpu.get_untracked()),
            params,
        });
    };
    let agents_for_select = agents.clone();
    let all_gpus = plugin.all_gpus;
    let gpu_choices = move || {
        let devices = agents
            .iter()
            .find(|a| a.id.to_string() == target.get())
            .map(|a| a.devices.clone())
            .unwrap_or_default();
        if all_gpus {
            return view! { <option value="any">{format!("every GPU of the machine ({})", devices.len())}</option> }
                .into_any();
        }
        let mut choices = vec![("any".to_string(), "any idle GPU".to_string())];
        if devices.len() > 1 {
            choices.push(("each".into(), format!("each of its {} GPUs", devices.len())));
        }
        for d in devices {
            choices.push((
                d.index.to_string(),
                format!("GPU {}: {} ({})", d.index, d.name, d.pci_bus_id),
            ));
        }
        choices
            .into_iter()
            .map(|(value, label)| view! { <option value=value>{label}</option> })
            .collect_view()
            .into_any()
    };
    view! {
        <h1>{plugin.name.clone()} " " <span class="muted">{plugin.version.clone()}</span></h1>
        <p class="plugin-summary">{plugin.summary.clone()}</p>
        <p class="muted">
            {if plugin.shipped { "Shipped with Passage".to_string() } else { format!("Uploaded by {}", plugin.uploaded_by) }}
            {format!(" · {} bytes · sha256 ", plugin.size_bytes)} <code>{plugin.sha256.clone()}</code>
            " · " <a href=format!("/api/v1/plugins/{}/component", plugin.id) rel="external">"download"</a>
            " · " <a href=format!("/jobs?plugin={}", plugin.name)>"its jobs"</a>
        </p>
        <h2>"Run it"</h2>
        {if agents_for_select.is_empty() {
            view! { <p class="notice" id="no-agents">"No agent to run on yet: a VM's agent registers when the VM boots; admins add native hosts on the Agents page."</p> }.into_any()
        } else {
            view! {
                <div class="run-form panel">
                    <label>"On " <TargetSelect agents=agents_for_select target id="run-target"/></label>
                    <label>"GPU "
                        <select id="run-gpu" on:change=move |ev| gpu.set(event_target_value(&ev)) prop:value=move || gpu.get()>
                            {gpu_choices}
                        </select>
                    </label>
                    <table class="params">
                        <thead><tr><th>"Parameter"</th><th>"Value"</th><th>"Range"</th><th>"What it is"</th></tr></thead>
                        <tbody>
                            {values.into_iter().map(|(spec, value)| {
                                let range = match (spec.min, spec.max) {
                                    (Some(min), Some(max)) => format!("{min} to {max}"),
                                    (Some(min), None) => format!("at least {min}"),
                                    (None, Some(max)) => format!("at most {max}"),
                                    (None, None) => String::new(),
                                };
                                view! {
                                    <tr class="param" data-name=spec.name.clone()>
                                        <td><code>{spec.name.clone()}</code> " " <span class="muted">{spec.kind.clone()}</span></td>
                                        <td>
                                            <input name=spec.name.clone() class="param-value" prop:value=move || value.get()
                                                on:input=move |ev| value.set(event_target_value(&ev))/>
                                            " " <span class="muted">{spec.unit.clone()}</span>
                                        </td>
                                        <td class="muted">{range}</td>
                                        <td>{spec.summary.clone()} <span class="muted">{format!(" (default {})", spec.default)}</span></td>
                                    </tr>
                                }
                            }).collect_view()}
                        </tbody>
                    </table>
                    <button id="run-plugin" on:click=submit disabled=move || run.pending().get()>"Run"</button>
                    {move || run.value().get().and_then(Result::err).map(|e| view! { <p class="error" id="run-error">{e.to_string()}</p> })}
                </div>
            }.into_any()
        }}
    }
}

#[cfg(test)]
mod tests {
    use super::upload_error_text;

    #[test]
    fn only_known_upload_errors_are_shown() {
        assert!(
            upload_error_text("not-a-plugin")
                .unwrap()
                .contains("not a WebAssembly component")
        );
        assert_eq!(
            upload_error_text("Your account is locked: call +1 555 0100"),
            None
        );
        assert_eq!(upload_error_text(""), None);
    }
}
