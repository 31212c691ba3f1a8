//! The account page: the password, API tokens (made with an optional expiry, listed, revoked)
//! and the SSH key for new VMs.

use leptos::form::ActionForm;
use leptos::prelude::*;

use crate::account::{ChangePassword, CreateToken, RevokeToken, load_tokens};
use crate::vms::SaveSshKey;

/// The signed-in user's password, tokens and key.
#[component]
pub fn AccountPage() -> impl IntoView {
    let create = ServerAction::<CreateToken>::new();
    let revoke = ServerAction::<RevokeToken>::new();
    let save_key = ServerAction::<SaveSshKey>::new();
    let password = ServerAction::<ChangePassword>::new();
    let (hydrated, set_hydrated) = signal(false);
    Effect::new(move |_| set_hydrated.set(true));
    let tokens = Resource::new(
        move || (create.version().get(), revoke.version().get()),
        |_| load_tokens(),
    );
    view! {
        <section class="account-page" data-hydrated=move || hydrated.get().to_string()>
            <h1>"Account"</h1>
            <h2>"Password"</h2>
            <ActionForm action=password attr:class="password" attr:id="password-form">
                <label>
                    "Current password "
                    <input type="password" name="current_password" id="current-password" autocomplete="current-password" required/>
                </label>
                <label>
                    "New password "
                    <input type="password" name="new_password" id="new-password" autocomplete="new-password" minlength="10" required/>
                </label>
                <label>
                    "Again "
                    <input type="password" name="repeated" id="new-password-again" autocomplete="new-password" minlength="10" required/>
                </label>
                <button type="submit" id="change-password">"Change password"</button>
                {move || password.value().get().map(|r| match r {
                    Ok(()) => view! { <span class="notice" id="password-changed">"Changed. Your other sessions have ended."</span> }.into_any(),
                    Err(e) => view! { <span class="error" id="password-error">{e.to_string()}</span> }.into_any(),
                })}
            </ActionForm>
            <h2>"SSH key"</h2>
            <ActionForm action=save_key attr:class="ssh-key" attr:id="ssh-key-form">
                <label>
                    "Public key put into new VMs "
                    <input name="key" id="ssh-key" size="60" placeholder="ssh-ed25519 AAAA… you@laptop"/>
                </label>
                <button type="submit" id="save-ssh-key">"Save"</button>
                {move || save_key.value().get().map(|r| match r {
                    Ok(()) => view! { <span class="notice" id="ssh-key-saved">"Saved."</span> }.into_any(),
                    Err(e) => view! { <span class="error" id="ssh-key-error">{e.to_string()}</span> }.into_any(),
                })}
            </ActionForm>
            <h2>"API tokens"</h2>
            <p class="muted">"Scripts send a token as Authorization: Bearer …; it is shown once, here, and stored only as a hash."</p>
            <ActionForm action=create attr:id="token-form">
                <label>"Name " <input name="name" id="token-name" placeholder="nightly-benchmarks" required/></label>
                <label>
                    "Expires "
                    <select name="expires_in_days" id="token-expiry">
                        <option value="">"never"</option>
                        <option value="7">"in 7 days"</option>
                        <option value="30">"in 30 days"</option>
                        <option value="90">"in 90 days"</option>
                        <option value="365">"in a year"</option>
                    </select>
                </label>
                <button type="submit" id="create-token">"Make a token"</button>
            </ActionForm>
            {move || create.value().get().map(|r| match r {
                Ok(secret) => view! { <p class="notice">"Your new token: " <code id="new-token">{secret}</code></p> }.into_any(),
                Err(e) => view! { <p class="error" id="token-error">{e.to_string()}</p> }.into_any(),
            })}
            <Transition fallback=|| ()>
                {move || Suspend::new(async move {
                    match tokens.await {
                        Err(e) => view! { <p class="error">{e.to_string()}</p> }.into_any(),
                        Ok(tokens) => view! {
                            <table class="tokens">
                                <thead><tr><th>"Name"</th><th>"Made"</th><th>"Expires"</th><th>"Last used"</th><th></th></tr></thead>
                                <tbody>
                                    {tokens.into_iter().map(|t| view! {
                                        <tr class="token" data-name=t.name.clone()>
                                            <td>{t.name.clone()}</td>
                                            <td>{t.created_at.clone()}</td>
                                            <td class="expires" class:warn=t.expired>
                                                {match (t.expires_at.clone(), t.expired) {
                                                    (None, _) => "never".to_string(),
                                                    (Some(when), false) => when,
                                                    (Some(when), true) => format!("expired {when}"),
                                                }}
                                            </td>
                                            <td>{t.last_used_at.clone().unwrap_or_else(|| "never".into())}</td>
                                            <td>
                                                {match t.revoked_at.clone() {
                                                    Some(when) => view! { <span class="muted revoked">{format!("revoked {when}")}</span> }.into_any(),
                                                    None => view! {
                                                        <ActionForm action=revoke attr:class="inline">
                                                            <input type="hidden" name="id" value=t.id.to_string()/>
                                                            <button type="submit" class="revoke">"Revoke"</button>
                                                        </ActionForm>
                                                    }.into_any(),
                                                }}
                                            </td>
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
