//! The requests page: file a GPU VM request, follow its state without reloading, and, for
//! admins, approve or deny what is pending.

use std::time::Duration;

use leptos::form::ActionForm;
use leptos::prelude::*;

use crate::requests::{
    ApproveRequest, DenyRequest, FileRequest, RequestView, RequestsView, load_requests,
};

/// How often the page asks for the requests' states again.
const POLL: Duration = Duration::from_secs(2);

/// Requests: the form, and the list with live states.
#[component]
pub fn RequestsPage() -> impl IntoView {
    let file = ServerAction::<FileRequest>::new();
    let approve = ServerAction::<ApproveRequest>::new();
    let deny = ServerAction::<DenyRequest>::new();
    let (tick, hydrated) = super::polling(POLL);
    let data = Resource::new(
        move || {
            (
                tick.get(),
                file.version().get(),
                approve.version().get(),
                deny.version().get(),
            )
        },
        |_| load_requests(),
    );
    let field_error = move |field: &'static str| {
        move || {
            file.value()
                .get()
                .and_then(Result::ok)
                .and_then(|outcome| outcome.errors.get(field).cloned())
                .map(|e| view! { <span class="field-error" data-field=field>{e}</span> })
        }
    };

    view! {
        <section class="requests-page" data-hydrated=move || hydrated.get().to_string()>
            <h1>"GPU requests"</h1>
            <Transition fallback=|| view! { <p class="notice">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match data.await {
                        Ok(None) => {
                            view! {
                                <p class="notice" id="sign-in-prompt">
                                    "Sign in to request GPUs: " <a href="/login">"sign in"</a>
                                </p>
                            }
                                .into_any()
                        }
                        Err(e) => view! { <p class="error">{e.to_string()}</p> }.into_any(),
                        Ok(Some(page)) => {
                            let RequestsView { viewer, models, images, images_with_driver, requests } = page;
                            let admin = viewer.is_admin;
                            view! {
                                <ActionForm action=file attr:class="request-form" attr:id="request-form">
                                    <label>
                                        "GPU model"
                                        <select name="form[gpu_model]">
                                            {models.into_iter().map(|m| view! { <option value=m.clone()>{m.clone()}</option> }).collect_view()}
                                        </select>
                                        {field_error("gpu_model")}
                                    </label>
                                    <label>"GPUs" <input name="form[gpu_count]" value="1" inputmode="numeric"/> {field_error("gpu_count")}</label>
                                    <label>"vCPUs" <input name="form[vcpus]" value="8" inputmode="numeric"/> {field_error("vcpus")}</label>
                                    <label>"Memory (MiB)" <input name="form[memory_mib]" value="32768" inputmode="numeric"/> {field_error("memory_mib")}</label>
                                    <label>"Disk (GiB)" <input name="form[disk_gib]" value="100" inputmode="numeric"/> {field_error("disk_gib")}</label>
                                    <label>
                                        "Image"
                                        <select name="form[image]">
                                            {images.into_iter().map(|i| {
                                                let label = if images_with_driver.contains(&i) {
                                                    format!("{i} (GPU driver included)")
                                                } else {
                                                    format!("{i} (NVIDIA driver installed at first boot)")
                                                };
                                                view! { <option value=i.clone()>{label}</option> }
                                            }).collect_view()}
                                        </select>
                                        {field_error("image")}
                                        <span class="muted" id="image-driver-note">"An image without NVIDIA's driver gets it on the VM's first boot (Debian: non-free nvidia-driver; Ubuntu: nvidia-driver-*-server), then a reboot: several minutes before the GPUs can be used."</span>
                                    </label>
                                    <label>
                                        "Hypervisor"
                                        <select name="form[hypervisor]">
                                            <option value="kvm">"KVM"</option>
                                            <option value="xen">"Xen"</option>
                                        </select>
                                        {field_error("hypervisor")}
                                    </label>
                                    <label>"Lease (hours)" <input name="form[lease_hours]" value="24" inputmode="numeric"/> {field_error("lease_hours")}</label>
                                    <label class="wide">"Reason" <input name="form[reason]" placeholder="what the GPUs are for"/> {field_error("reason")}</label>
                                    <button type="submit" id="file-request">"Request"</button>
                                    {move || {
                                        file.value().get().and_then(Result::ok).and_then(|o| o.id).map(|id| {
                                            view! { <span class="notice" id="filed">{format!("Request {id} filed.")}</span> }
                                        })
                                    }}
                                </ActionForm>
                                {move || {
                                    approve.value().get().and_then(Result::err).map(|e| {
                                        view! { <p class="error" id="approve-error">{e.to_string()}</p> }
                                    })
                                }}
                                <RequestTable requests admin approve deny/>
                            }
                                .into_any()
                        }
                    }
                })}
            </Transition>
        </section>
    }
}

/// The list of requests, with approve and deny for admins on what is still open.
#[component]
fn RequestTable(
    requests: Vec<RequestView>,
    admin: bool,
    approve: ServerAction<ApproveRequest>,
    deny: ServerAction<DenyRequest>,
) -> impl IntoView {
    if requests.is_empty() {
        return view! { <p class="notice">"No requests yet."</p> }.into_any();
    }
    view! {
        <table class="requests">
            <thead>
                <tr>
                    <th>"#"</th>
                    <th>"By"</th>
                    <th>"Asked for"</th>
                    <th>"State"</th>
                    <th>"Placement"</th>
                    {admin.then(|| view! { <th>"Decide"</th> })}
                </tr>
            </thead>
            <tbody>
                {requests
                    .into_iter()
                    .map(|r| {
                        let open = matches!(r.state.as_str(), "pending" | "waiting");
                        let id = r.id;
                        let placement = match &r.host {
                            Some(host) => format!(
                                "{host}{} · {}",
                                r.numa_node.map(|n| format!(" NUMA {n}")).unwrap_or_default(),
                                r.gpus.join(", ")
                            ),
                            None => String::new(),
                        };
                        view! {
                            <tr class="request" data-id=id.to_string() data-state=r.state.clone()>
                                <td>{id}</td>
                                <td>{r.user.clone()}</td>
                                <td>
                                    {format!("{} × {}", r.gpu_count, r.gpu_model)}
                                    <div class="muted">
                                        {format!(
                                            "{} vCPU · {} MiB · {} GiB · {} · {} · {} h",
                                            r.vcpus, r.memory_mib, r.disk_gib, r.image, r.hypervisor, r.lease_hours
                                        )}
                                    </div>
                                </td>
                                <td>
                                    <span class=format!("badge {}", r.state)>{r.state.clone()}</span>
                                    {r.state_reason.clone().map(|why| view! { <div class="muted">{why}</div> })}
                                </td>
                                <td class="placement">{placement}</td>
                                {(admin && open).then(|| view! {
                                    <td class="decide">
                                        <ActionForm action=approve>
                                            <input type="hidden" name="id" value=id.to_string()/>
                                            <input name="gpus" class="gpu-choice" placeholder="GPUs (optional): 0000:17:00.0, …"/>
                                            <button type="submit" class="approve">"Approve"</button>
                                        </ActionForm>
                                        <ActionForm action=deny>
                                            <input type="hidden" name="id" value=id.to_string()/>
                                            <input name="reason" placeholder="reason" required/>
                                            <button type="submit" class="deny">"Deny"</button>
                                        </ActionForm>
                                    </td>
                                })}
                                {(admin && !open).then(|| view! { <td></td> })}
                            </tr>
                        }
                    })
                    .collect_view()}
            </tbody>
        </table>
    }
    .into_any()
}
