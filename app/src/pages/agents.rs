//! The agents page: every agent the viewer may use, with what it reported and, for VMs, whether
//! the GPUs passed through are the ones the guest sees; admins register native hosts here.

use std::time::Duration;

use leptos::form::ActionForm;
use leptos::prelude::*;

use crate::plugins::{AddNativeHost, AgentView, RevokeAgent, load_agents};

/// How often the page asks again.
const POLL: Duration = Duration::from_secs(3);

/// The agents.
#[component]
pub fn AgentsPage() -> impl IntoView {
    let (tick, hydrated) = super::polling(POLL);
    let add = ServerAction::<AddNativeHost>::new();
    let revoke = ServerAction::<RevokeAgent>::new();
    let viewer = Resource::new(|| (), |_| crate::inventory::current_viewer());
    let agents = Resource::new(
        move || (tick.get(), add.version().get(), revoke.version().get()),
        |_| load_agents(),
    );
    view! {
        <section class="agents-page" data-hydrated=move || hydrated.get().to_string()>
            <h1>"Agents"</h1>
            <p class="muted">
                "An agent runs plugins for the portal: one in every VM (it arrives with the VM's cloud-init seed "
                "and reports the GPUs the guest sees), and one on each bare-metal host registered as a native "
                "baseline, where the same plugins run without virtualisation."
            </p>
            <Transition fallback=|| ()>
                {move || Suspend::new(async move {
                    let admin = matches!(viewer.await, Ok(Some(v)) if v.is_admin);
                    admin.then(|| view! {
                        <ActionForm action=add attr:class="panel inline-form" attr:id="native-host-form">
                            <label>"Register a native host " <input name="name" id="native-host-name" placeholder="gpu-01-native" required/></label>
                            <button type="submit" id="add-native-host">"Register"</button>
                        </ActionForm>
                    })
                })}
            </Transition>
            {move || add.value().get().map(|r| match r {
                Ok(token) => view! {
                    <div class="notice panel" id="native-host-token">
                        <p>"Its agent token, shown this once:"</p>
                        <code id="new-agent-token">{token.clone()}</code>
                        <p>"On the host, with the NVIDIA driver installed:"</p>
                        <pre>{format!("passage-agent serve --server http://PORTAL:8080 --token {token}")}</pre>
                    </div>
                }.into_any(),
                Err(e) => view! { <p class="error" id="native-host-error">{e.to_string()}</p> }.into_any(),
            })}
            {move || revoke.value().get().and_then(Result::err).map(|e| view! { <p class="error">{e.to_string()}</p> })}
            <Transition fallback=|| view! { <p class="notice">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    let admin = matches!(viewer.await, Ok(Some(v)) if v.is_admin);
                    match agents.await {
                        Err(e) => view! { <p class="error">{e.to_string()}</p> }.into_any(),
                        Ok(agents) if agents.is_empty() => view! { <p class="notice" id="no-agents">"No agents yet."</p> }.into_any(),
                        Ok(agents) => view! { <AgentTable agents admin revoke/> }.into_any(),
                    }
                })}
            </Transition>
        </section>
    }
}

#[component]
fn AgentTable(
    agents: Vec<AgentView>,
    admin: bool,
    revoke: ServerAction<RevokeAgent>,
) -> impl IntoView {
    view! {
        <table class="agents">
            <thead><tr><th>"Agent"</th><th>"State"</th><th>"GPUs it sees"</th><th>"Passthrough"</th><th></th></tr></thead>
            <tbody>
                {agents.into_iter().map(|a| {
                    let verdict_class = a.verification.as_deref().map(|v| v.split(':').next().unwrap_or_default().to_string()).unwrap_or_default();
                    view! {
                        <tr class="agent" data-id=a.id.to_string() data-name=a.name.clone() data-status=a.status.clone()>
                            <td>
                                {match a.vm_id {
                                    Some(vm) => view! { <a href=format!("/vms/{vm}")>{a.label()}</a> }.into_any(),
                                    None => view! { <span>{a.label()}</span> }.into_any(),
                                }}
                                <div class="muted">
                                    {a.hostname.clone().map(|h| format!("{h} · "))}
                                    {a.agent_version.clone().map(|v| format!("agent {v} · "))}
                                    {a.backend.clone()}
                                </div>
                            </td>
                            <td>
                                <span class=format!("badge {}", a.status)>{a.status.clone()}</span>
                                {a.last_seen_at.clone().map(|t| view! { <div class="muted">{format!("seen {t}")}</div> })}
                            </td>
                            <td>
                                <ul class="devices">
                                    {a.devices.iter().map(|d| view! {
                                        <li>{format!("{}: {} · {}", d.index, d.name, d.pci_bus_id)}{d.simulated.then_some(" (simulated)")}</li>
                                    }).collect_view()}
                                </ul>
                                <a href=format!("/jobs?agent={}", a.id)>"jobs"</a>
                            </td>
                            <td class=format!("verification {verdict_class}")>
                                {a.verification.clone().unwrap_or_else(|| if a.kind == "host" { "native host".into() } else { "the agent has not reported yet".into() })}
                            </td>
                            <td>
                                {(admin && a.kind == "host" && a.status != "revoked").then(|| view! {
                                    <ActionForm action=revoke attr:class="inline">
                                        <input type="hidden" name="id" value=a.id.to_string()/>
                                        <button type="submit" class="deny revoke-agent">"Revoke"</button>
                                    </ActionForm>
                                })}
                            </td>
                        </tr>
                    }
                }).collect_view()}
            </tbody>
        </table>
    }
}
