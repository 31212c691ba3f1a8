//! The audit log (admins): every admin action and state change, filtered by actor, action and
//! subject.

use leptos::prelude::*;

use crate::vms::{AuditFilter, load_audit};

/// The audit log with its filters.
#[component]
pub fn AuditPage() -> impl IntoView {
    let (actor, set_actor) = signal(String::new());
    let (action, set_action) = signal(String::new());
    let (subject, set_subject) = signal(String::new());
    let (hydrated, set_hydrated) = signal(false);
    Effect::new(move |_| set_hydrated.set(true));
    let some = |s: String| (!s.trim().is_empty()).then(|| s.trim().to_string());
    let entries = Resource::new(
        move || AuditFilter {
            actor: some(actor.get()),
            action: some(action.get()),
            subject: some(subject.get()),
        },
        load_audit,
    );
    let filter = move |id: &'static str, label: &'static str, set: WriteSignal<String>| {
        view! {
            <label>
                {label}
                <input id=id on:change=move |ev| set.set(event_target_value(&ev))/>
            </label>
        }
    };
    view! {
        <section class="audit-page" data-hydrated=move || hydrated.get().to_string()>
            <h1>"Audit log"</h1>
            <div class="toolbar">
                {filter("audit-actor", "Actor ", set_actor)}
                {filter("audit-action", "Action starts with ", set_action)}
                {filter("audit-subject", "Subject ", set_subject)}
            </div>
            <Transition fallback=|| view! { <p class="notice">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match entries.await {
                        Err(e) => view! { <p class="error">{e.to_string()}</p> }.into_any(),
                        Ok(entries) => view! {
                            <table class="audit">
                                <thead>
                                    <tr><th>"When"</th><th>"Who"</th><th>"What"</th><th>"On"</th><th>"Before → after"</th><th>"Detail"</th></tr>
                                </thead>
                                <tbody>
                                    {entries.into_iter().map(|e| view! {
                                        <tr class="audit-entry" data-action=e.action.clone()>
                                            <td>{e.at}</td>
                                            <td>{e.actor}</td>
                                            <td>{e.action.clone()}</td>
                                            <td>{e.subject}</td>
                                            <td>{format!("{} → {}", e.before.unwrap_or_default(), e.after.unwrap_or_default())}</td>
                                            <td class="muted">{e.detail.unwrap_or_default()}</td>
                                        </tr>
                                    }).collect_view()}
                                </tbody>
                            </table>
                        }.into_any(),
                    }
                })}
            </Transition>
        </section>
    }
}
