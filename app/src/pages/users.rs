//! The accounts page (admins): every account, with buttons to disable or enable it, make or
//! unmake an admin, end its sessions and delete it. The server decides what is allowed (never
//! the last enabled admin; no deletion while the account holds VMs, requests or jobs) and the
//! page shows its answer.

use leptos::form::ActionForm;
use leptos::prelude::*;

use crate::account::{AccountAction, AccountView, load_accounts};

/// Every account and what an admin can do to it.
#[component]
pub fn UsersPage() -> impl IntoView {
    let act = ServerAction::<AccountAction>::new();
    let (hydrated, set_hydrated) = signal(false);
    Effect::new(move |_| set_hydrated.set(true));
    let accounts = Resource::new(move || act.version().get(), |_| load_accounts());
    view! {
        <section class="users-page" data-hydrated=move || hydrated.get().to_string()>
            <h1>"Users"</h1>
            <p class="muted">
                "Disabling an account ends its sessions and stops its API tokens until it is enabled again. "
                "Deleting one keeps its history under its name; it is refused while the account holds VMs, "
                "open requests or unfinished jobs. The portal always keeps an enabled admin. "
                "New accounts: " <code>"passage user add NAME"</code>
            </p>
            {move || act.value().get().and_then(Result::err).map(|e| view! { <p class="error" id="account-error">{e.to_string()}</p> })}
            <Transition fallback=|| view! { <p class="notice">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match accounts.await {
                        Err(e) => view! { <p class="error" id="accounts-error">{e.to_string()}</p> }.into_any(),
                        Ok(accounts) => view! {
                            <table class="accounts">
                                <thead>
                                    <tr><th>"Name"</th><th>"Role"</th><th>"State"</th><th>"Sessions"</th><th>"Tokens"</th><th>"Since"</th><th></th></tr>
                                </thead>
                                <tbody>
                                    {accounts.into_iter().map(|a| view! { <AccountRow account=a act/> }).collect_view()}
                                </tbody>
                            </table>
                        }.into_any(),
                    }
                })}
            </Transition>
        </section>
    }
}

/// One account and its buttons.
#[component]
fn AccountRow(account: AccountView, act: ServerAction<AccountAction>) -> impl IntoView {
    let name = account.name.clone();
    let button = move |action: &'static str, label: &'static str| {
        let name = name.clone();
        view! {
            <ActionForm action=act attr:class="inline">
                <input type="hidden" name="name" value=name/>
                <input type="hidden" name="action" value=action/>
                <button type="submit" class=format!("act {action}") data-action=action>{label}</button>
            </ActionForm>
        }
    };
    let state = if account.disabled {
        "disabled"
    } else {
        "enabled"
    };
    view! {
        <tr class="account" data-name=account.name.clone() data-state=state data-admin=account.is_admin.to_string()>
            <td>{account.name.clone()}</td>
            <td>{if account.is_admin { "admin" } else { "user" }}</td>
            <td><span class=format!("badge {state}")>{state}</span></td>
            <td class="sessions">{account.sessions}</td>
            <td class="tokens">{account.tokens}</td>
            <td class="muted">{account.disabled_at.clone().unwrap_or(account.created_at.clone())}</td>
            <td class="actions">
                {if account.disabled { button("enable", "Enable") } else { button("disable", "Disable") }}
                {if account.is_admin { button("demote", "Demote") } else { button("promote", "Make admin") }}
                {button("end-sessions", "End sessions")}
                <details class="delete">
                    <summary>"Delete…"</summary>
                    {button("delete", "Delete for good")}
                </details>
            </td>
        </tr>
    }
}
