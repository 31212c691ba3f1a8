//! Passage's web UI.
//!
//! One crate for both sides: with `ssr` the server renders pages to HTML; with `hydrate` the same
//! components, compiled to WebAssembly, take over those pages in the browser.

pub mod account;
pub mod experiments;
pub mod inventory;
mod pages;
pub mod plugins;
pub mod requests;
#[cfg(feature = "ssr")]
pub mod service;
pub mod vms;

use leptos::prelude::*;
use leptos_meta::{MetaTags, Stylesheet, Title, provide_meta_context};
use leptos_router::components::{A, Route, Router, Routes};
use leptos_router::path;

/// The HTML document around every page.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <HydrationScripts options/>
                <MetaTags/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

/// The portal: navigation and routes.
#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    view! {
        <Stylesheet id="passage" href="/pkg/passage.css"/>
        <Title text="Passage"/>
        <Router>
            <header class="topbar">
                <A href="/" attr:class="brand">"Passage"</A>
                <nav>
                    <A href="/">"Hosts & GPUs"</A>
                    <A href="/requests">"Requests"</A>
                    <A href="/vms">"VMs"</A>
                    <A href="/plugins">"Plugins"</A>
                    <A href="/jobs">"Jobs"</A>
                    <A href="/agents">"Agents"</A>
                    <A href="/experiments">"Experiments"</A>
                    <A href="/audit">"Audit"</A>
                    <A href="/users">"Users"</A>
                    <A href="/account">"Account"</A>
                </nav>
                <Account/>
            </header>
            <main>
                <Routes fallback=|| view! { <p class="notice">"No such page."</p> }>
                    <Route path=path!("/") view=pages::hosts::HostsPage/>
                    <Route path=path!("/login") view=pages::login::LoginPage/>
                    <Route path=path!("/requests") view=pages::requests::RequestsPage/>
                    <Route path=path!("/vms") view=pages::vms::VmsPage/>
                    <Route path=path!("/vms/:id") view=pages::vms::VmPage/>
                    <Route path=path!("/vms/:id/console") view=pages::vms::ConsolePage/>
                    <Route path=path!("/plugins") view=pages::plugins::PluginsPage/>
                    <Route path=path!("/plugins/:id") view=pages::plugins::PluginPage/>
                    <Route path=path!("/jobs") view=pages::jobs::JobsPage/>
                    <Route path=path!("/jobs/:id") view=pages::jobs::JobPage/>
                    <Route path=path!("/agents") view=pages::agents::AgentsPage/>
                    <Route path=path!("/experiments") view=pages::experiments::ExperimentsPage/>
                    <Route path=path!("/experiments/compare") view=pages::experiments::ComparePage/>
                    <Route path=path!("/experiments/:id") view=pages::experiments::ExperimentPage/>
                    <Route path=path!("/experiments/:id/report") view=pages::experiments::ReportPage/>
                    <Route path=path!("/audit") view=pages::audit::AuditPage/>
                    <Route path=path!("/account") view=pages::account::AccountPage/>
                    <Route path=path!("/users") view=pages::users::UsersPage/>
                </Routes>
            </main>
        </Router>
    }
}

/// Who is signed in, with a sign-out button; or a sign-in link.
#[component]
fn Account() -> impl IntoView {
    let viewer = Resource::new(|| (), |_| inventory::current_viewer());
    view! {
        <div class="account">
            <Transition fallback=|| ()>
                {move || Suspend::new(async move {
                    match viewer.await {
                        Ok(Some(viewer)) => {
                            view! {
                                <span id="viewer">
                                    {viewer.name.clone()}
                                    {viewer.is_admin.then_some(" (admin)")}
                                </span>
                                <form method="post" action="/logout">
                                    <button type="submit" class="link" id="sign-out">
                                        "Sign out"
                                    </button>
                                </form>
                            }
                                .into_any()
                        }
                        _ => view! { <a href="/login">"Sign in"</a> }.into_any(),
                    }
                })}
            </Transition>
        </div>
    }
}

/// Entry point of the browser build: hydrates the server-rendered page.
#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(App);
}
