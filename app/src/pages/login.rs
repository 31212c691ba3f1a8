//! The sign-in page: a plain form posted to the server, which sets the session cookie.

use leptos::prelude::*;
use leptos_router::hooks::use_query_map;

/// Sign in with a name and password.
#[component]
pub fn LoginPage() -> impl IntoView {
    let query = use_query_map();
    // Only known codes are shown, so a crafted link cannot put words on this page.
    let error = move || {
        query
            .read()
            .get("error")
            .and_then(|code| match code.as_str() {
                "credentials" => Some("Wrong name or password."),
                "rate-limited" => {
                    Some("Too many failed attempts. Wait a few minutes and try again.")
                }
                "disabled" => Some("This account is disabled. An admin can enable it again."),
                "unavailable" => {
                    Some("The portal cannot check accounts right now. Try again shortly.")
                }
                _ => None,
            })
    };
    view! {
        <section class="login">
            <h1>"Sign in"</h1>
            {move || error().map(|e| view! { <p class="error" id="login-error">{e}</p> })}
            <form method="post" action="/login" class="login-form">
                <label>
                    "Name" <input name="name" autocomplete="username" required autofocus/>
                </label>
                <label>
                    "Password"
                    <input type="password" name="password" autocomplete="current-password" required/>
                </label>
                <button type="submit" id="sign-in">
                    "Sign in"
                </button>
            </form>
            <p class="muted">
                "Accounts are made by the portal's operator: " <code>"passage user add NAME"</code>
            </p>
        </section>
    }
}
