//! The hosts page: every hypervisor host, whether it answers, and its GPUs by NUMA node.

use std::collections::BTreeMap;

use leptos::prelude::*;

use crate::inventory::{GpuState, GpuView, HostState, HostView, RefreshInventory, load_inventory};

/// Lists hosts and their GPUs, with a model filter and a refresh button.
#[component]
pub fn HostsPage() -> impl IntoView {
    let refresh = ServerAction::<RefreshInventory>::new();
    let inventory = Resource::new(move || refresh.version().get(), |_| load_inventory());
    let (model, set_model) = signal(String::new());
    // Effects run only in the browser: the attribute flips once the page is interactive.
    let (hydrated, set_hydrated) = signal(false);
    Effect::new(move |_| set_hydrated.set(true));

    view! {
        <section class="hosts-page" data-hydrated=move || hydrated.get().to_string()>
            <div class="toolbar">
                <h1>"Hosts & GPUs"</h1>
                <Transition fallback=|| ()>
                    {move || Suspend::new(async move {
                        let Ok(Some(inv)) = inventory.await else {
                            return None;
                        };
                        let models = models_of(&inv.gpus);
                        let admin = inv.viewer.is_admin;
                        Some(view! {
                            <label class="filter">
                                "Model "
                                <select
                                    id="model-filter"
                                    on:change=move |ev| set_model.set(event_target_value(&ev))
                                    prop:value=move || model.get()
                                >
                                    <option value="">"All models"</option>
                                    {models
                                        .into_iter()
                                        .map(|m| view! { <option value=m.clone()>{m.clone()}</option> })
                                        .collect_view()}
                                </select>
                            </label>
                            {admin
                                .then(|| {
                                    view! {
                                        <button
                                            id="refresh"
                                            on:click=move |_| {
                                                refresh.dispatch(RefreshInventory {});
                                            }
                                            disabled=move || refresh.pending().get()
                                        >
                                            {move || {
                                                if refresh.pending().get() { "Refreshing…" } else { "Refresh" }
                                            }}
                                        </button>
                                    }
                                })}
                        })
                    })}
                </Transition>
            </div>
            {move || {
                refresh
                    .value()
                    .get()
                    .and_then(Result::err)
                    .map(|e| view! { <p class="error">"Refresh failed: " {e.to_string()}</p> })
            }}
            <Transition fallback=|| view! { <p class="notice">"Loading the inventory…"</p> }>
                {move || Suspend::new(async move {
                    match inventory.await {
                        Ok(None) => {
                            view! {
                                <p class="notice" id="sign-in-prompt">
                                    "Sign in to see the hosts and their GPUs: "
                                    <a href="/login">"sign in"</a>
                                </p>
                            }
                                .into_any()
                        }
                        Ok(Some(inv)) if inv.hosts.is_empty() => {
                            view! {
                                <p class="notice">
                                    "No hosts are configured. Add one under [[hosts]] in the configuration file."
                                </p>
                            }
                                .into_any()
                        }
                        Ok(Some(inv)) => {
                            let total = inv.gpus.len();
                            let all = inv.gpus.clone();
                            let shown = move || {
                                let m = model.get();
                                all.iter().filter(|g| m.is_empty() || g.model == m).count()
                            };
                            view! {
                                <p class="summary" id="gpu-summary">
                                    {shown} " of " {total} " GPUs shown"
                                </p>
                                {inv
                                    .hosts
                                    .into_iter()
                                    .map(|host| {
                                        let gpus: Vec<GpuView> = inv
                                            .gpus
                                            .iter()
                                            .filter(|g| g.host == host.name)
                                            .cloned()
                                            .collect();
                                        view! { <HostCard host gpus model/> }
                                    })
                                    .collect_view()}
                            }
                                .into_any()
                        }
                        Err(e) => {
                            view! { <p class="error">"Could not load the inventory: " {e.to_string()}</p> }
                                .into_any()
                        }
                    }
                })}
            </Transition>
        </section>
    }
}

fn models_of(gpus: &[GpuView]) -> Vec<String> {
    let mut models: Vec<String> = gpus.iter().map(|g| g.model.clone()).collect();
    models.sort();
    models.dedup();
    models
}

/// One host: its state and its GPUs grouped by NUMA node, filtered by model.
#[component]
fn HostCard(host: HostView, gpus: Vec<GpuView>, model: ReadSignal<String>) -> impl IntoView {
    let state = host.state.as_str();
    let facts = [
        host.hostname.as_ref().map(|h| format!("hostname {h}")),
        host.driver.as_ref().map(|d| format!("driver {d}")),
        host.libvirt_version
            .as_ref()
            .map(|v| format!("libvirt {v}")),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(" · ");
    let refreshed = host
        .last_refresh
        .clone()
        .map(|t| format!("last inventory {t}"))
        .unwrap_or_else(|| "never inventoried".into());
    let known = !gpus.is_empty();
    let by_numa = move || {
        let m = model.get();
        let mut nodes: BTreeMap<Option<i64>, Vec<GpuView>> = BTreeMap::new();
        for gpu in gpus.iter().filter(|g| m.is_empty() || g.model == m) {
            nodes.entry(gpu.numa_node).or_default().push(gpu.clone());
        }
        nodes
    };
    view! {
        <section class="host" data-host=host.name.clone() data-state=state>
            <header>
                <h2>{host.name.clone()}</h2>
                <span class=format!("badge {state}")>{state}</span>
                {host.uri.clone().map(|uri| view! { <code class="uri">{uri}</code> })}
            </header>
            <p class="facts">
                {(!facts.is_empty()).then(|| view! { <span class="facts-text">{facts}</span> })}
                <span class="last-refresh">{refreshed}</span>
            </p>
            {host.startup.clone().map(|startup| {
                let vms = match startup.vms {
                    1 => "1 VM".to_string(),
                    n => format!("{n} VMs"),
                };
                let provisioning = startup
                    .placed_to_running
                    .map(|p| format!("; from placement: {}", p.describe()))
                    .unwrap_or_default();
                view! {
                    <p class="startup">
                        {format!(
                            "Request to running: {}{provisioning} ({vms}, last 30 days)",
                            startup.request_to_running.describe(),
                        )}
                    </p>
                }
            })}
            {host.error.clone().map(|e| view! { <p class="error host-error">{e}</p> })}
            {(host.state == HostState::Unreachable && host.error.is_none()).then(|| view! {
                <p class="error host-error">"The host did not answer its last inventory; admins see why."</p>
            })}
            {host
                .passthrough_problem
                .clone()
                .map(|p| {
                    view! {
                        <p class="error host-passthrough">
                            "No GPU of this host can be passed through: " {p}
                        </p>
                    }
                })}
            {move || {
                let nodes = by_numa();
                if nodes.is_empty() {
                    let text = if known {
                        "No GPUs of this model on this host."
                    } else {
                        "No GPUs known on this host."
                    };
                    return view! { <p class="notice">{text}</p> }.into_any();
                }
                nodes
                    .into_iter()
                    .map(|(numa, gpus)| view! { <NumaNode numa gpus/> })
                    .collect_view()
                    .into_any()
            }}
        </section>
    }
}

/// The GPUs of one NUMA node as a table.
#[component]
fn NumaNode(numa: Option<i64>, gpus: Vec<GpuView>) -> impl IntoView {
    let count = match gpus.len() {
        1 => "1 GPU".to_string(),
        n => format!("{n} GPUs"),
    };
    let title = match numa {
        Some(n) => format!("NUMA node {n} · {count}"),
        None => format!("NUMA node unknown · {count}"),
    };
    view! {
        <div class="numa" data-numa=numa.map(|n| n.to_string()).unwrap_or_default()>
            <h3>{title}</h3>
            <table class="gpus">
                <colgroup>
                    <col class="c-address"/>
                    <col class="c-model"/>
                    <col class="c-group"/>
                    <col class="c-link"/>
                    <col class="c-driver"/>
                    <col class="c-state"/>
                </colgroup>
                <thead>
                    <tr>
                        <th>"PCI address"</th>
                        <th>"Model"</th>
                        <th>"IOMMU group"</th>
                        <th>"PCIe link"</th>
                        <th>"Driver"</th>
                        <th>"State"</th>
                    </tr>
                </thead>
                <tbody>{gpus.into_iter().map(|gpu| view! { <GpuRow gpu/> }).collect_view()}</tbody>
            </table>
        </div>
    }
}

/// One GPU, with its IOMMU group members listed.
#[component]
fn GpuRow(gpu: GpuView) -> impl IntoView {
    let group = match &gpu.iommu_group {
        Some(group) => {
            let members = group
                .members
                .iter()
                .map(|m| {
                    let note = if m.is_bridge {
                        " (stays with host)"
                    } else if !m.same_device {
                        " (another device: goes with it)"
                    } else {
                        ""
                    };
                    view! {
                        <li>
                            <code>{m.address.clone()}</code>
                            " "
                            {m.description.clone()}
                            {note}
                        </li>
                    }
                })
                .collect_view();
            view! {
                <span class="group-number">{format!("group {}", group.number)}</span>
                <ul class="members">{members}</ul>
            }
            .into_any()
        }
        None => view! { <span class="muted">"none"</span> }.into_any(),
    };
    let link = gpu.link.as_ref().map(|l| {
        let current = l.current.clone().unwrap_or_else(|| "unknown".into());
        match (&l.max, l.degraded) {
            (Some(max), true) => format!("{current} (capable of {max})"),
            _ => current,
        }
    });
    let degraded = gpu.link.as_ref().is_some_and(|l| l.degraded);
    let state = gpu.state.as_str();
    let reason = gpu.state_reason.clone();
    let available = gpu.state == GpuState::Available;
    view! {
        <tr
            class="gpu"
            data-host=gpu.host.clone()
            data-address=gpu.address.clone()
            data-model=gpu.model.clone()
        >
            <td>
                <code>{gpu.address.clone()}</code>
            </td>
            <td>
                <strong>{gpu.model.clone()}</strong>
                <div class="muted">
                    {format!("{} [{}:{}]", gpu.product_name, gpu.vendor_id, gpu.product_id)}
                </div>
            </td>
            <td>{group}</td>
            <td class:warn=degraded>
                {link.unwrap_or_else(|| "unknown".into())}
                {gpu.pcie_root.clone().map(|root| view! { <div class="muted pcie-root">{format!("root port {root}")}</div> })}
            </td>
            <td>{gpu.driver.clone().unwrap_or_else(|| "unknown".into())}</td>
            <td>
                <span class=format!("badge {state}") class:ok=available title=reason.clone()>
                    {state}
                </span>
                {reason.map(|r| view! { <div class="muted">{r}</div> })}
            </td>
        </tr>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_are_listed_once_in_order() {
        let gpu = |model: &str| GpuView {
            host: "h".into(),
            address: "0000:17:00.0".into(),
            node_device: "pci_0000_17_00_0".into(),
            vendor_id: "0x10de".into(),
            vendor_name: "NVIDIA Corporation".into(),
            product_id: "0x2331".into(),
            product_name: "x".into(),
            model: model.into(),
            class_code: "0x030200".into(),
            numa_node: Some(0),
            link: None,
            driver: None,
            iommu_group: None,
            pcie_root: None,
            passthrough_functions: vec![],
            state: GpuState::Available,
            state_reason: None,
            last_seen: String::new(),
        };
        let gpus = vec![gpu("L40S"), gpu("H100 PCIe"), gpu("L40S")];
        assert_eq!(models_of(&gpus), vec!["H100 PCIe", "L40S"]);
        assert_eq!(HostState::Unreachable.as_str(), "unreachable");
    }
}
