//! The VM pages: my VMs (admins: all) with their states kept current, one VM with its actions
//! and SSH details, and its browser console.

use std::time::Duration;

use leptos::form::ActionForm;
use leptos::prelude::*;
use leptos_router::hooks::use_params_map;

use crate::vms::{ActOnVm, VmView, load_vm, load_vms};

/// How often the pages ask for the VMs' states again.
const POLL: Duration = Duration::from_secs(2);

/// The list of VMs.
#[component]
pub fn VmsPage() -> impl IntoView {
    let (tick, hydrated) = super::polling(POLL);
    let vms = Resource::new(move || tick.get(), |_| load_vms());
    view! {
        <section class="vms-page" data-hydrated=move || hydrated.get().to_string()>
            <h1>"Virtual machines"</h1>
            <p class="muted">"New VMs get the SSH key of your " <a href="/account">"account"</a> "."</p>
            <Transition fallback=|| view! { <p class="notice">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match vms.await {
                        Err(e) => view! { <p class="error">{e.to_string()}</p> }.into_any(),
                        Ok(vms) if vms.is_empty() => {
                            view! {
                                <p class="notice" id="no-vms">
                                    "No VMs yet: they appear here once a request is approved."
                                </p>
                            }
                                .into_any()
                        }
                        Ok(vms) => view! { <VmTable vms/> }.into_any(),
                    }
                })}
            </Transition>
        </section>
    }
}

#[component]
fn VmTable(vms: Vec<VmView>) -> impl IntoView {
    view! {
        <table class="vms">
            <thead>
                <tr>
                    <th>"VM"</th>
                    <th>"Owner"</th>
                    <th>"State"</th>
                    <th>"Host · GPUs"</th>
                    <th>"Lease ends"</th>
                </tr>
            </thead>
            <tbody>
                {vms
                    .into_iter()
                    .map(|vm| {
                        view! {
                            <tr class="vm" data-id=vm.id.to_string() data-state=vm.state.clone()>
                                <td>
                                    <a href=format!("/vms/{}", vm.id)>{format!("VM {}", vm.id)}</a>
                                    <div class="muted">{format!("request {}", vm.request_id)}</div>
                                </td>
                                <td>{vm.owner.clone()}</td>
                                <td>
                                    <span class=format!("badge {}", vm.state)>{vm.state.clone()}</span>
                                    {vm.state_reason.clone().map(|why| view! { <div class="muted">{why}</div> })}
                                </td>
                                <td class="gpus">
                                    {format!("{} · {} × {}", vm.host, vm.gpus.len(), vm.gpu_model)}
                                    <div class="muted">{vm.gpus.join(", ")}</div>
                                </td>
                                <td>{vm.lease_expires_at.clone()}</td>
                            </tr>
                        }
                    })
                    .collect_view()}
            </tbody>
        </table>
    }
}

fn vm_id() -> Memo<Option<i64>> {
    let params = use_params_map();
    Memo::new(move |_| params.read().get("id").and_then(|id| id.parse().ok()))
}

/// One VM: what it is, its actions, how to reach it.
#[component]
pub fn VmPage() -> impl IntoView {
    let id = vm_id();
    let act = ServerAction::<ActOnVm>::new();
    let (tick, hydrated) = super::polling(POLL);
    let vm = Resource::new(
        move || (id.get(), tick.get(), act.version().get()),
        |(id, _, _)| async move {
            match id {
                Some(id) => load_vm(id).await,
                None => Ok(None),
            }
        },
    );
    let viewer = Resource::new(|| (), |_| crate::inventory::current_viewer());
    let agent = Resource::new(
        move || (id.get(), tick.get() / 5),
        |(id, _)| async move {
            let agents = crate::plugins::load_agents().await.unwrap_or_default();
            agents
                .into_iter()
                .find(|a| a.vm_id.is_some() && a.vm_id == id)
        },
    );
    view! {
        <section class="vm-page" data-hydrated=move || hydrated.get().to_string()>
            <Transition fallback=|| view! { <p class="notice">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    let admin = matches!(viewer.await, Ok(Some(v)) if v.is_admin);
                    match vm.await {
                        Err(e) => view! { <p class="error">{e.to_string()}</p> }.into_any(),
                        Ok(None) => view! { <p class="notice" id="no-such-vm">"No such VM."</p> }.into_any(),
                        Ok(Some(vm)) => {
                            let agent = agent.await;
                            view! { <VmDetails vm admin act/> <VmAgent agent/> }.into_any()
                        }
                    }
                })}
            </Transition>
            {move || {
                act.value().get().and_then(Result::err).map(|e| {
                    view! { <p class="error" id="action-error">{e.to_string()}</p> }
                })
            }}
        </section>
    }
}

#[component]
fn VmDetails(vm: VmView, admin: bool, act: ServerAction<ActOnVm>) -> impl IntoView {
    let id = vm.id;
    let button = move |action: &'static str, label: &'static str| {
        view! {
            <ActionForm action=act>
                <input type="hidden" name="id" value=id.to_string()/>
                <input type="hidden" name="action" value=action/>
                <button type="submit" id=format!("vm-{action}") disabled=move || act.pending().get()>
                    {label}
                </button>
            </ActionForm>
        }
    };
    let running = vm.state == "running";
    let stopped = vm.state == "stopped";
    let simulated = vm.domain_type.as_deref() == Some("test");
    view! {
        <h1>{format!("VM {}", vm.id)} " " <span id="vm-state" class=format!("badge {}", vm.state)>{vm.state.clone()}</span></h1>
        {vm.state_reason.clone().map(|why| view! { <p class="muted" id="vm-reason">{why}</p> })}
        <dl class="facts">
            <dt>"Owner"</dt><dd>{vm.owner.clone()}</dd>
            <dt>"Host"</dt><dd id="vm-host">{vm.host.clone()}</dd>
            <dt>"Domain"</dt><dd id="vm-domain">{vm.domain.clone().unwrap_or_default()} " " <span class="muted">{vm.domain_type.clone().unwrap_or_default()}</span></dd>
            <dt>"GPUs"</dt>
            <dd id="vm-gpus">
                {format!("{} × {}", vm.gpus.len(), vm.gpu_model)}
                <ul>
                    {vm.gpus.clone().into_iter().map(|g| {
                        let detachable = admin && vm.is_live() && vm.gpus.len() > 1;
                        let gpu = g.clone();
                        view! {
                            <li class="gpu-address">
                                {g.clone()}
                                {detachable.then(|| view! {
                                    <ActionForm action=act attr:class="inline">
                                        <input type="hidden" name="id" value=id.to_string()/>
                                        <input type="hidden" name="action" value="detach"/>
                                        <input type="hidden" name="gpu" value=gpu.clone()/>
                                        <button type="submit" class="link detach">"detach"</button>
                                    </ActionForm>
                                })}
                            </li>
                        }
                    }).collect_view()}
                </ul>
            </dd>
            <dt>"Shape"</dt><dd>{format!("{} vCPU · {} MiB · {} GiB · {} · {}", vm.vcpus, vm.memory_mib, vm.disk_gib, vm.image, vm.hypervisor)}</dd>
            <dt>"Lease ends"</dt><dd id="vm-lease">{vm.lease_expires_at.clone()}</dd>
            <dt>"SSH"</dt>
            <dd id="vm-ssh">
                {match vm.ssh_address.clone() {
                    Some(address) => view! {
                        <code id="vm-ssh-command">{format!("ssh {}@{address}", vm.ssh_user)}</code>
                        <div class="muted">"With the SSH key of your account (PUT /api/v1/me/ssh-key). The address is the one the guest got, as its agent reported it; behind QEMU's user networking it is reachable only from inside the host."</div>
                    }.into_any(),
                    None => view! {
                        <code>{format!("ssh {}@<the VM's address>", vm.ssh_user)}</code>
                        <div class="muted">"With the SSH key of your account (PUT /api/v1/me/ssh-key); the guest's agent reports its address once it starts."</div>
                    }.into_any(),
                }}
            </dd>
        </dl>
        {vm.is_live().then(|| view! {
            <div class="actions">
                {stopped.then(|| button("start", "Start"))}
                {running.then(|| button("stop", "Shut down"))}
                {running.then(|| button("reboot", "Reboot"))}
                {(running || stopped).then(|| button("release", "Release"))}
                {running.then(|| {
                    if simulated {
                        view! { <span class="muted" id="console-link">"Console: the simulated host has no display."</span> }.into_any()
                    } else {
                        view! { <a id="console-link" rel="external" href=format!("/vms/{id}/console")>"Open console"</a> }.into_any()
                    }
                })}
            </div>
        })}
        {(admin && vm.is_live()).then(|| view! {
            <ActionForm action=act attr:class="extend">
                <input type="hidden" name="id" value=id.to_string()/>
                <input type="hidden" name="action" value="extend"/>
                <label>"Extend lease by " <input name="hours" value="24" inputmode="numeric" size="4"/> " hours"</label>
                <button type="submit" id="vm-extend">"Extend"</button>
            </ActionForm>
            <ActionForm action=act attr:class="attach">
                <input type="hidden" name="id" value=id.to_string()/>
                <input type="hidden" name="action" value="attach"/>
                <label>"Attach a free GPU of this host " <input name="gpu" id="attach-gpu" placeholder="0000:4e:00.0"/></label>
                <button type="submit" id="vm-attach">"Attach"</button>
            </ActionForm>
        })}
    }
}

/// What the VM's agent reported: is it up, and does the guest see the GPUs it was given.
#[component]
fn VmAgent(agent: Option<crate::plugins::AgentView>) -> impl IntoView {
    let Some(agent) = agent else {
        return view! { <p class="muted" id="vm-agent">"Agent: none yet."</p> }.into_any();
    };
    let verdict = agent
        .verification
        .clone()
        .unwrap_or_else(|| "the agent has not reported yet".into());
    let class = verdict.split(':').next().unwrap_or_default().to_string();
    view! {
        <h2>"Agent"</h2>
        <p id="vm-agent">
            <span class=format!("badge {}", agent.status)>{agent.status.clone()}</span>
            " " <span class=format!("verification {class}") id="vm-verification">{verdict}</span>
        </p>
        <p class="muted" id="vm-verification-basis">
            "This verdict rests on the guest's own report: its agent lists the GPUs its CUDA driver \
             sees, and the portal compares them with the GPUs it passed through. Whoever controls \
             the guest can change that report, so it shows an honest owner that passthrough works; \
             it is not proof."
        </p>
        {agent.cuda_problem.clone().map(|problem| view! {
            <p class="error" id="vm-no-cuda">
                "The agent found no CUDA driver in this VM, so no job can use its GPUs: " {problem}
                ". An image without NVIDIA's driver installs it on the first boot and reboots; until that is done (or if it failed) this stays."
            </p>
        })}
        {agent.run_as.clone().map(|account| view! {
            <p class="muted" id="vm-agent-account">{format!("The agent runs as {account}.")}</p>
        })}
        <p>
            <a href="/plugins">"Run a plugin on this VM"</a> " · "
            <a href=format!("/jobs?agent={}", agent.id)>"its jobs"</a>
        </p>
    }
    .into_any()
}

/// The VM's console: noVNC over the portal's websocket proxy.
#[component]
pub fn ConsolePage() -> impl IntoView {
    let id = vm_id();
    view! {
        <section class="console-page">
            <h1>
                <a href=move || format!("/vms/{}", id.get().unwrap_or_default())>
                    {move || format!("VM {}", id.get().unwrap_or_default())}
                </a>
                " · console"
            </h1>
            <p id="console-status" class="muted">"Connecting…"</p>
            <div id="console-screen" data-vm=move || id.get().unwrap_or_default().to_string()></div>
            <script type="module" src="/console.js"></script>
        </section>
    }
}
