//! Who may call what: every route the portal serves × every kind of caller, on real objects.
//!
//! The routes come from the portal itself, not from a list kept by hand: the router's own paths
//! and methods (`passage_server::web::routes`), the pages (`generate_route_list`) and the pages'
//! server functions (`server_fn_paths`); the OpenAPI document must describe a subset of them.
//! The test fails when a route appears that the matrix below has no row for, or a row names a
//! route that is gone.
//!
//! The callers: nobody; the agent token of another user's VM; a native host's agent token;
//! another user (bob); the owner's VM's own agent; the owner (ada); an admin. Every object in the
//! paths is ada's (a request, her VMs on the simulated host, her jobs, her tokens), so "another
//! user" reaches real objects that are not his. Each row says the exact status each caller gets;
//! a state change that succeeds for the owner and the admin acts on a second object for the
//! admin, so both outcomes are real. Rows run in order, refused callers first.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use passage_server::Portal;
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

/// The callers, in the order every row runs them.
const CALLERS: [&str; 7] = [
    "anonymous",
    "another VM's agent",
    "a native host's agent",
    "another user",
    "the VM's own agent",
    "the owner",
    "an admin",
];

/// What a caller gets: a status, `null` (200 with `null`: the object is invisible to them), or
/// `->PREFIX` (a 303 redirect whose Location starts with PREFIX).
type Expect = &'static str;

#[derive(Clone)]
enum Body {
    None,
    Json(Value),
    Form(String),
    Multipart,
    WebSocket,
}

struct Row {
    /// The route as the router names it, e.g. `GET /api/v1/vms/{id}`; a server function by its
    /// path without the hash, e.g. `POST /api/current_viewer`.
    route: &'static str,
    /// The URL path with `{name}` placeholders filled from the fixture's objects.
    url: &'static str,
    body: Body,
    /// One per caller, in [`CALLERS`] order.
    expect: [Expect; 7],
    /// The admin acts on the fixture's second objects (`{name}` from `spare`).
    spare_for_admin: bool,
}

fn row(route: &'static str, url: &'static str, body: Body, expect: [Expect; 7]) -> Row {
    Row {
        route,
        url,
        body,
        expect,
        spare_for_admin: false,
    }
}

fn spare(route: &'static str, url: &'static str, body: Body, expect: [Expect; 7]) -> Row {
    Row {
        spare_for_admin: true,
        ..row(route, url, body, expect)
    }
}

/// Refused to everyone but signed-in users; all users get `ok`.
const fn users(ok: Expect) -> [Expect; 7] {
    ["401", "401", "401", ok, "401", ok, ok]
}

/// Only admins; every other user gets 403.
const fn admins(ok: Expect) -> [Expect; 7] {
    ["401", "401", "401", "403", "401", "403", ok]
}

/// The owner's object: the owner and admins get `ok`, another user `other`.
const fn owned(other: Expect, ok: Expect) -> [Expect; 7] {
    ["401", "401", "401", other, "401", ok, ok]
}

/// The agents' API: only agent tokens, each for its own things.
const fn agents(other_agent: Expect, host_agent: Expect, own_agent: Expect) -> [Expect; 7] {
    [
        "401",
        other_agent,
        host_agent,
        "401",
        own_agent,
        "401",
        "401",
    ]
}

/// The same for everyone (a public route, or one whose credential is in the URL).
const fn everyone(expect: Expect) -> [Expect; 7] {
    [expect; 7]
}

/// Server functions: nobody signed in (agent tokens sign nobody in) gets `anonymous`.
const fn signed_in(anonymous: Expect, other: Expect, owner: Expect, admin: Expect) -> [Expect; 7] {
    [
        anonymous, anonymous, anonymous, other, anonymous, owner, admin,
    ]
}

fn matrix() -> Vec<Row> {
    use Body::{Form, Json as J, Multipart, None as N, WebSocket};
    let request = || {
        J(
            json!({ "gpu_model": "H100 PCIe", "gpu_count": 1, "vcpus": 2, "memory_mib": 2048,
                  "disk_gib": 10, "image": "debian-12", "hypervisor": "kvm", "lease_hours": 4,
                  "reason": "the matrix" }),
        )
    };
    let job = || J(json!({ "plugin": "{plugin}", "agent": "{vm_agent}" }));
    let registration = || {
        J(
            json!({ "hostname": "h", "version": "0.1.0", "backend": "fake",
                  "devices": [{ "index": 0, "name": "Passage simulated GPU",
                                "pci_bus_id": "0000:10:00.0", "total_memory": 1024,
                                "compute_capability": "9.0", "simulated": true }] }),
        )
    };
    let fn_form = |text: &'static str| Form(text.to_string());
    vec![
        // The portal and accounts.
        row("GET /healthz", "/healthz", N, everyone("200")),
        row("GET /metrics", "/metrics", N, admins("200")),
        row(
            "GET /api/v1/openapi.json",
            "/api/v1/openapi.json",
            N,
            everyone("200"),
        ),
        row("GET /api/v1/hosts", "/api/v1/hosts", N, users("200")),
        row("GET /api/v1/gpus", "/api/v1/gpus", N, users("200")),
        row(
            "POST /api/v1/inventory/refresh",
            "/api/v1/inventory/refresh",
            N,
            admins("200"),
        ),
        row(
            "POST /api/v1/login",
            "/api/v1/login",
            J(json!({ "name": "ada", "password": common::PASSWORD })),
            everyone("200"),
        ),
        row("POST /api/v1/logout", "/api/v1/logout", N, everyone("204")),
        row("GET /api/v1/me", "/api/v1/me", N, users("200")),
        // A wrong current password: refused (403) to everyone signed in.
        row(
            "PUT /api/v1/me/password",
            "/api/v1/me/password",
            J(
                json!({ "current_password": "not it at all", "new_password": "the matrix's new one" }),
            ),
            users("403"),
        ),
        // Accounts (admins). The account acted on does not exist: an admin gets past
        // authorization to its absence, and nobody's account changes under the other rows.
        row("GET /api/v1/users", "/api/v1/users", N, admins("200")),
        row(
            "DELETE /api/v1/users/{name}",
            "/api/v1/users/zoe",
            N,
            admins("404"),
        ),
        row(
            "DELETE /api/v1/users/{name}/sessions",
            "/api/v1/users/zoe/sessions",
            N,
            admins("404"),
        ),
        row(
            "POST /api/v1/users/{name}/disable",
            "/api/v1/users/zoe/disable",
            N,
            admins("404"),
        ),
        row(
            "POST /api/v1/users/{name}/enable",
            "/api/v1/users/zoe/enable",
            N,
            admins("404"),
        ),
        row(
            "POST /api/v1/users/{name}/promote",
            "/api/v1/users/zoe/promote",
            N,
            admins("404"),
        ),
        row(
            "POST /api/v1/users/{name}/demote",
            "/api/v1/users/zoe/demote",
            N,
            admins("404"),
        ),
        row("GET /api/v1/tokens", "/api/v1/tokens", N, users("200")),
        row(
            "POST /api/v1/tokens",
            "/api/v1/tokens",
            J(json!({ "name": "matrix" })),
            users("201"),
        ),
        // Tokens are each user's own, an admin's included.
        spare(
            "DELETE /api/v1/tokens/{id}",
            "/api/v1/tokens/{token}",
            N,
            owned("404", "204"),
        )
        .admin("404"),
        row(
            "PUT /api/v1/me/ssh-key",
            "/api/v1/me/ssh-key",
            J(json!({ "key": null })),
            users("204"),
        ),
        row("GET /api/v1/images", "/api/v1/images", N, users("200")),
        row(
            "POST /api/v1/images",
            "/api/v1/images",
            J(
                json!({ "name": "debian-12-again", "host": "gpu-01", "pool": "images",
                      "volume": "debian-12-generic-amd64.qcow2" }),
            ),
            admins("201"),
        ),
        row("GET /api/v1/audit", "/api/v1/audit", N, admins("200")),
        row(
            "GET /api/v1/unknown-domains",
            "/api/v1/unknown-domains",
            N,
            admins("200"),
        ),
        // The fixture's host has no unknown domain: an admin gets past authorization to the
        // domain's absence.
        row(
            "POST /api/v1/unknown-domains/{host}/{uuid}",
            "/api/v1/unknown-domains/gpu-01/6f0e4a52-8d0e-4e43-a3a7-0d6f6c1b9a01",
            J(json!({ "decision": "keep" })),
            admins("422"),
        ),
        row(
            "GET /api/v1/users/{name}/quota",
            "/api/v1/users/ada/quota",
            N,
            admins("200"),
        ),
        row(
            "PUT /api/v1/users/{name}/quota",
            "/api/v1/users/ada/quota",
            J(json!({ "gpus": 8, "requests": 20, "lease_hours": null })),
            admins("200"),
        ),
        // Requests.
        row("GET /api/v1/requests", "/api/v1/requests", N, users("200")),
        row(
            "POST /api/v1/requests",
            "/api/v1/requests",
            request(),
            users("201"),
        ),
        row(
            "GET /api/v1/requests/{id}",
            "/api/v1/requests/{request}",
            N,
            owned("404", "200"),
        ),
        row(
            "POST /api/v1/requests/{id}/approve",
            "/api/v1/requests/{request}/approve",
            N,
            admins("200"),
        ),
        row(
            "POST /api/v1/requests/{id}/deny",
            "/api/v1/requests/{request_to_deny}/deny",
            J(json!({ "reason": "the matrix" })),
            admins("200"),
        ),
        // VMs.
        row("GET /api/v1/vms", "/api/v1/vms", N, users("200")),
        row(
            "GET /api/v1/vms/{id}",
            "/api/v1/vms/{vm}",
            N,
            owned("404", "200"),
        ),
        row(
            "GET /api/v1/vms/{id}/domain",
            "/api/v1/vms/{vm}/domain",
            N,
            admins("200"),
        ),
        row(
            "GET /api/v1/vms/{id}/console",
            "/api/v1/vms/{vm}/console",
            WebSocket,
            owned("404", "502"),
        ),
        row(
            "POST /api/v1/vms/{id}/extend",
            "/api/v1/vms/{vm}/extend",
            J(json!({ "hours": 1 })),
            admins("200"),
        ),
        row(
            "POST /api/v1/vms/{id}/gpus",
            "/api/v1/vms/{vm}/gpus",
            J(json!({ "address": "{free_gpu}" })),
            admins("200"),
        ),
        row(
            "DELETE /api/v1/vms/{id}/gpus/{address}",
            "/api/v1/vms/{vm}/gpus/{free_gpu}",
            N,
            admins("200"),
        ),
        spare(
            "POST /api/v1/vms/{id}/stop",
            "/api/v1/vms/{vm}/stop",
            N,
            owned("404", "200"),
        ),
        spare(
            "POST /api/v1/vms/{id}/start",
            "/api/v1/vms/{vm}/start",
            N,
            owned("404", "200"),
        ),
        spare(
            "POST /api/v1/vms/{id}/reboot",
            "/api/v1/vms/{vm}/reboot",
            N,
            owned("404", "200"),
        ),
        // Plugins, agents and jobs.
        row("GET /api/v1/plugins", "/api/v1/plugins", N, users("200")),
        row(
            "POST /api/v1/plugins",
            "/api/v1/plugins",
            Body::Json(json!("not a component")),
            admins("422"),
        ),
        row(
            "GET /api/v1/plugins/{id}",
            "/api/v1/plugins/{plugin}",
            N,
            users("200"),
        ),
        row(
            "GET /api/v1/plugins/{id}/component",
            "/api/v1/plugins/{plugin}/component",
            N,
            users("200"),
        ),
        row("GET /api/v1/agents", "/api/v1/agents", N, users("200")),
        row(
            "POST /api/v1/agents",
            "/api/v1/agents",
            J(json!({ "name": "bench-matrix" })),
            admins("201"),
        ),
        row(
            "DELETE /api/v1/agents/{id}",
            "/api/v1/agents/{spare_host}",
            N,
            admins("204"),
        ),
        // 409: allowed; the study's plugins are not registered here.
        row(
            "POST /api/v1/agents/{id}/suite",
            "/api/v1/agents/{vm_agent}/suite",
            N,
            owned("404", "409"),
        ),
        row("GET /api/v1/jobs", "/api/v1/jobs", N, users("200")),
        row(
            "POST /api/v1/jobs",
            "/api/v1/jobs",
            job(),
            owned("404", "201"),
        ),
        row(
            "GET /api/v1/jobs/{id}",
            "/api/v1/jobs/{job}",
            N,
            owned("404", "200"),
        ),
        // A native host's jobs are everyone's baseline to read, but only their owner's to stop.
        row(
            "GET /api/v1/jobs/{id}",
            "/api/v1/jobs/{host_job}",
            N,
            owned("200", "200"),
        ),
        spare(
            "POST /api/v1/jobs/{id}/cancel",
            "/api/v1/jobs/{host_job}/cancel",
            N,
            owned("403", "204"),
        ),
        spare(
            "POST /api/v1/jobs/{id}/cancel",
            "/api/v1/jobs/{job_to_cancel}/cancel",
            N,
            owned("404", "204"),
        ),
        // Experiments. Another user cannot run on ada's VM, nor see her experiments.
        row(
            "GET /api/v1/experiments",
            "/api/v1/experiments",
            N,
            users("200"),
        ),
        row(
            "POST /api/v1/experiments",
            "/api/v1/experiments",
            J(
                json!({ "name": "the matrix", "plugins": [{ "plugin": "vector-add" }],
                      "targets": [{ "agent": "{vm_agent}" }] }),
            ),
            owned("422", "201"),
        ),
        row(
            "GET /api/v1/experiments/{id}",
            "/api/v1/experiments/{experiment}",
            N,
            owned("404", "200"),
        ),
        row(
            "GET /api/v1/experiments/compare",
            "/api/v1/experiments/compare?a={experiment}&b={experiment}",
            N,
            owned("404", "200"),
        ),
        row(
            "GET /api/v1/experiments/{id}/results.csv",
            "/api/v1/experiments/{experiment}/results.csv",
            N,
            owned("404", "200"),
        ),
        row(
            "GET /api/v1/experiments/{id}/results.json",
            "/api/v1/experiments/{experiment}/results.json",
            N,
            owned("404", "200"),
        ),
        // No results yet, so no chart: the owner gets past authorization to its absence.
        row(
            "GET /api/v1/experiments/{id}/charts/{file}",
            "/api/v1/experiments/{experiment}/charts/times-0.svg",
            N,
            owned("404", "404"),
        ),
        row(
            "POST /api/v1/experiments/{id}/approve",
            "/api/v1/experiments/{experiment}/approve",
            N,
            admins("200"),
        ),
        spare(
            "POST /api/v1/experiments/{id}/cancel",
            "/api/v1/experiments/{experiment_to_cancel}/cancel",
            N,
            owned("404", "200"),
        ),
        // The agents' API.
        row(
            "POST /api/v1/agent/poll",
            "/api/v1/agent/poll",
            J(json!({ "running": [], "free_devices": [] })),
            agents("200", "200", "200"),
        ),
        row(
            "GET /api/v1/agent/plugins/{sha256}",
            "/api/v1/agent/plugins/{plugin_sha256}",
            N,
            agents("404", "404", "200"),
        ),
        row(
            "POST /api/v1/agent/jobs/{id}/progress",
            "/api/v1/agent/jobs/{running_job}/progress",
            J(json!({ "fraction": 0.5, "note": "half" })),
            agents("404", "404", "200"),
        ),
        row(
            "POST /api/v1/agent/jobs/{id}/result",
            "/api/v1/agent/jobs/{running_job}/result",
            J(json!({ "ok": true })),
            agents("404", "404", "200"),
        ),
        // A registration fails the jobs its agent was running: after their results.
        row(
            "POST /api/v1/agent/register",
            "/api/v1/agent/register",
            registration(),
            agents("200", "200", "200"),
        ),
        // Routes outside the API document.
        row(
            "ANY /api/v1/{*rest}",
            "/api/v1/no-such-thing",
            N,
            everyone("404"),
        ),
        row(
            "GET /downloads/plugin-kit/{language}",
            "/downloads/plugin-kit/python",
            N,
            users("200"),
        ),
        row(
            "GET /downloads/passage-agent",
            "/downloads/passage-agent",
            N,
            everyone("200"),
        ),
        // A seed's key is its credential, whoever asks.
        row(
            "GET /cloud-init/{id}/{key}/{document}",
            "/cloud-init/{spare_vm}/{seed_key}/meta-data",
            N,
            everyone("200"),
        ),
        row(
            "GET /cloud-init/{id}/{key}/{document}",
            "/cloud-init/{spare_vm}/0000{seed_key}/meta-data",
            N,
            everyone("404"),
        ),
        row(
            "POST /login",
            "/login",
            Form(format!(
                "name=ada&password={}",
                common::PASSWORD.replace(' ', "+")
            )),
            everyone("->/"),
        ),
        row("POST /logout", "/logout", N, everyone("->/login")),
        row(
            "POST /plugins/upload",
            "/plugins/upload",
            Multipart,
            [
                "->/login",
                "->/login",
                "->/login",
                "->/plugins?error=forbidden",
                "->/login",
                "->/plugins?error=forbidden",
                "->/plugins?error=",
            ],
        ),
        // Pages: the HTML shell for everyone; what is in it comes from the server functions.
        row("GET /", "/", N, everyone("200")),
        row("GET /login", "/login", N, everyone("200")),
        row("GET /requests", "/requests", N, everyone("200")),
        row("GET /vms", "/vms", N, everyone("200")),
        row("GET /vms/{id}", "/vms/{spare_vm}", N, everyone("200")),
        row(
            "GET /vms/{id}/console",
            "/vms/{spare_vm}/console",
            N,
            everyone("200"),
        ),
        row("GET /plugins", "/plugins", N, everyone("200")),
        row("GET /plugins/{id}", "/plugins/{plugin}", N, everyone("200")),
        row("GET /jobs", "/jobs", N, everyone("200")),
        row("GET /jobs/{id}", "/jobs/{job}", N, everyone("200")),
        row("GET /agents", "/agents", N, everyone("200")),
        row("GET /experiments", "/experiments", N, everyone("200")),
        row(
            "GET /experiments/compare",
            "/experiments/compare?a={experiment}&b={experiment}",
            N,
            everyone("200"),
        ),
        row(
            "GET /experiments/{id}",
            "/experiments/{experiment}",
            N,
            everyone("200"),
        ),
        row(
            "GET /experiments/{id}/report",
            "/experiments/{experiment}/report",
            N,
            everyone("200"),
        ),
        row("GET /audit", "/audit", N, everyone("200")),
        row("GET /account", "/account", N, everyone("200")),
        row("GET /users", "/users", N, everyone("200")),
        // The pages' server functions.
        row(
            "POST /api/current_viewer",
            "",
            N,
            signed_in("null", "200", "200", "200"),
        ),
        row(
            "POST /api/load_inventory",
            "",
            N,
            signed_in("null", "200", "200", "200"),
        ),
        row(
            "POST /api/refresh_inventory",
            "",
            N,
            signed_in("401", "403", "403", "null"),
        ),
        row(
            "POST /api/load_requests",
            "",
            N,
            signed_in("null", "200", "200", "200"),
        ),
        row(
            "POST /api/file_request",
            "",
            fn_form(
                "form[gpu_model]=H100+PCIe&form[gpu_count]=1&form[vcpus]=2&form[memory_mib]=2048\
                 &form[disk_gib]=10&form[image]=debian-12&form[hypervisor]=kvm\
                 &form[lease_hours]=4&form[reason]=the+matrix",
            ),
            signed_in("401", "200", "200", "200"),
        ),
        row(
            "POST /api/approve_request",
            "",
            fn_form("id={request_for_fn}"),
            signed_in("401", "403", "403", "null"),
        ),
        row(
            "POST /api/deny_request",
            "",
            fn_form("id={request_for_fn_deny}&reason=the+matrix"),
            signed_in("401", "403", "403", "null"),
        ),
        row(
            "POST /api/vms/list",
            "",
            N,
            signed_in("401", "200", "200", "200"),
        ),
        row(
            "POST /api/vms/show",
            "",
            fn_form("id={vm}"),
            signed_in("401", "null", "200", "200"),
        ),
        spare(
            "POST /api/vms/act",
            "",
            fn_form("id={vm}&action=reboot"),
            signed_in("401", "404", "null", "null"),
        ),
        row(
            "POST /api/vms/act",
            "",
            fn_form("id={vm}&action=extend&hours=1"),
            signed_in("401", "403", "403", "null"),
        ),
        row(
            "POST /api/me/ssh-key",
            "",
            fn_form("key="),
            signed_in("401", "null", "null", "null"),
        ),
        row(
            "POST /api/audit/list",
            "",
            fn_form("filter[action]=vm."),
            signed_in("401", "403", "403", "200"),
        ),
        row(
            "POST /api/account/tokens",
            "",
            N,
            signed_in("401", "200", "200", "200"),
        ),
        row(
            "POST /api/account/password",
            "",
            fn_form(
                "current_password=not%20it&new_password=the%20new%20one!&repeated=the%20new%20one!",
            ),
            signed_in("401", "403", "403", "403"),
        ),
        row(
            "POST /api/users/list",
            "",
            N,
            signed_in("401", "403", "403", "200"),
        ),
        row(
            "POST /api/users/act",
            "",
            fn_form("name=zoe&action=disable"),
            signed_in("401", "403", "403", "404"),
        ),
        row(
            "POST /api/account/tokens/create",
            "",
            fn_form("name=matrix-page&expires_in_days="),
            signed_in("401", "200", "200", "200"),
        ),
        spare(
            "POST /api/account/tokens/revoke",
            "",
            fn_form("id={fn_token}"),
            signed_in("401", "404", "null", "404"),
        ),
        row(
            "POST /api/plugins/list",
            "",
            N,
            signed_in("401", "200", "200", "200"),
        ),
        row(
            "POST /api/plugins/show",
            "",
            fn_form("id={plugin}"),
            signed_in("401", "200", "200", "200"),
        ),
        row(
            "POST /api/agents/list",
            "",
            N,
            signed_in("401", "200", "200", "200"),
        ),
        row(
            "POST /api/agents/add",
            "",
            fn_form("name=bench-page"),
            signed_in("401", "403", "403", "200"),
        ),
        row(
            "POST /api/agents/revoke",
            "",
            fn_form("id={spare_host_for_fn}"),
            signed_in("401", "403", "403", "null"),
        ),
        row(
            "POST /api/jobs/queue",
            "",
            J(json!({ "order": { "plugin": "{plugin}", "agent": "{vm_agent}" } })),
            signed_in("401", "404", "200", "200"),
        ),
        row(
            "POST /api/jobs/suite",
            "",
            fn_form("agent={vm_agent}"),
            signed_in("401", "404", "409", "409"),
        ),
        row(
            "POST /api/jobs/list",
            "",
            J(json!({ "filter": {} })),
            signed_in("401", "200", "200", "200"),
        ),
        row(
            "POST /api/jobs/show",
            "",
            fn_form("id={job}"),
            signed_in("401", "null", "200", "200"),
        ),
        spare(
            "POST /api/jobs/cancel",
            "",
            fn_form("id={job_for_fn}"),
            signed_in("401", "404", "null", "null"),
        ),
        // Experiments: ada's, waiting for a native host's agent that never starts.
        row(
            "POST /api/experiments/list",
            "",
            N,
            signed_in("401", "200", "200", "200"),
        ),
        row(
            "POST /api/experiments/show",
            "",
            fn_form("id={experiment}"),
            signed_in("401", "null", "200", "200"),
        ),
        row(
            "POST /api/experiments/create",
            "",
            J(
                json!({ "form": { "name": "from the page", "plugins": [{ "plugin": "vector-add" }],
                                "targets": [{ "agent": "{exp_host}" }] } }),
            ),
            signed_in("401", "200", "200", "200"),
        ),
        row(
            "POST /api/experiments/approve",
            "",
            fn_form("id={experiment}"),
            signed_in("401", "403", "403", "null"),
        ),
        row(
            "POST /api/experiments/compare",
            "",
            fn_form("a={experiment}&b={experiment}"),
            signed_in("401", "404", "200", "200"),
        ),
        spare(
            "POST /api/experiments/cancel",
            "",
            fn_form("id={experiment_for_fn}"),
            signed_in("401", "404", "null", "null"),
        ),
        // Releasing comes last: the VM's agent token and its seed end with it.
        spare(
            "DELETE /api/v1/vms/{id}",
            "/api/v1/vms/{vm}",
            N,
            owned("404", "200"),
        ),
    ]
}

impl Row {
    /// The admin gets `expect` instead.
    fn admin(mut self, expect: Expect) -> Row {
        self.expect[6] = expect;
        self
    }
}

/// Every route the portal serves: `METHOD /path` (`ANY` for a catch-all; server functions by
/// their path without the hash).
fn served_routes() -> BTreeSet<String> {
    let mut served = BTreeSet::new();
    // The router names its paths and, per route id, which methods have a handler.
    let debug = format!("{:?}", passage_server::web::routes(1 << 20));
    let debug = debug
        .split("fallback_router")
        .next()
        .expect("the router's own routes");
    let methods: BTreeMap<String, Vec<&str>> = debug
        .split("RouteId(")
        .skip(1)
        .filter_map(|chunk| {
            let (id, rest) = chunk.split_once(')')?;
            let router = rest.strip_prefix(": MethodRouter(MethodRouter {")?;
            let handled = |name: &str| router.contains(&format!(" {name}: BoxedHandler"));
            let mut found: Vec<&str> = [
                ("get", "GET"),
                ("post", "POST"),
                ("put", "PUT"),
                ("delete", "DELETE"),
                ("patch", "PATCH"),
            ]
            .into_iter()
            .filter(|(name, _)| handled(name))
            .map(|(_, method)| method)
            .collect();
            if handled("fallback") {
                found.push("ANY");
            }
            Some((id.to_string(), found))
        })
        .collect();
    let paths = debug.split("paths: {").nth(1).expect("the router's paths");
    for entry in paths.split("RouteId(").skip(1) {
        let (id, rest) = entry.split_once(')').unwrap();
        let path = rest.split('"').nth(1).expect("a quoted path");
        let methods = methods
            .get(id)
            .unwrap_or_else(|| panic!("no methods for {path}"));
        assert!(!methods.is_empty(), "{path} has no handler");
        for method in methods {
            served.insert(format!("{method} {path}"));
        }
    }
    assert!(
        served.len() > 40,
        "too few routes read from the router: {served:?}"
    );
    for page in leptos_axum::generate_route_list(passage_app::App) {
        served.insert(format!("GET {}", page.path()));
    }
    for key in server_functions().keys() {
        served.insert(format!("POST {key}"));
    }
    served
}

/// The pages' server functions: their path without its hash, and their path.
fn server_functions() -> BTreeMap<String, String> {
    leptos::server_fn::axum::server_fn_paths()
        .map(|(path, method)| {
            assert_eq!(
                method,
                Method::POST,
                "{path}: the matrix sends server functions POST"
            );
            let key = path.trim_end_matches(|c: char| c.is_ascii_digit());
            (key.to_string(), path.to_string())
        })
        .collect()
}

fn documented_routes() -> BTreeSet<String> {
    let document =
        serde_json::to_value(<passage_server::api::ApiDoc as utoipa::OpenApi>::openapi()).unwrap();
    let mut routes = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            routes.insert(format!("{} {path}", method.to_uppercase()));
        }
    }
    routes
}

#[tokio::test]
async fn every_route_has_a_row_and_every_row_a_route() {
    let served = served_routes();
    let rows: BTreeSet<String> = matrix().iter().map(|r| r.route.to_string()).collect();
    let missing: Vec<&String> = served.difference(&rows).collect();
    assert!(
        missing.is_empty(),
        "routes the authorization matrix has no row for (add one to server/tests/authorization.rs \
         saying what each caller gets): {missing:?}"
    );
    let gone: Vec<&String> = rows.difference(&served).collect();
    assert!(
        gone.is_empty(),
        "rows for routes the portal does not serve: {gone:?}"
    );
    let undocumented: Vec<String> = documented_routes().difference(&served).cloned().collect();
    assert!(
        undocumented.is_empty(),
        "the OpenAPI document describes routes the portal does not serve: {undocumented:?}"
    );
}

/// The portal, its users and ada's objects.
struct Fixture {
    _dir: tempfile::TempDir,
    portal: Portal,
    base: String,
    /// One client per caller, in [`CALLERS`] order.
    callers: Vec<Client>,
    /// Placeholder values: for everyone, and for the admin on rows that change state.
    ids: BTreeMap<String, String>,
    spare: BTreeMap<String, String>,
}

async fn send(client: &Client, method: Method, url: String, body: Option<Value>) -> Value {
    let mut request = client.request(method.clone(), &url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(status.is_success(), "{method} {url}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// Waits until ada's VM of `request` runs; returns its id.
async fn running_vm(client: &Client, base: &str, request: i64) -> i64 {
    common::wait_for(
        &format!("the VM of request {request} to run"),
        Duration::from_secs(60),
        || async {
            let vms = send(client, Method::GET, format!("{base}/api/v1/vms"), None).await;
            vms.as_array()
                .unwrap()
                .iter()
                .find(|v| v["request_id"] == request && v["state"] == "running")
                .map(|v| v["id"].as_i64().unwrap())
                .ok_or_else(|| vms.to_string())
        },
    )
    .await
}

/// The seed's key and the agent token a VM's cloud-init seed carries, read as the guest does.
async fn seed(admin: &Client, base: &str, public: &str, vm: i64) -> (String, String) {
    let xml = admin
        .get(format!("{base}/api/v1/vms/{vm}/domain"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let marker = "ds=nocloud-net;s=";
    let url = &xml[xml.find(marker).expect("a seed URL") + marker.len()..];
    let url = url[..url.find('<').unwrap()].replace(public, base);
    let key = url
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    let user_data = reqwest::get(format!("{url}user-data"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let token = user_data
        .split_whitespace()
        .find(|w| w.starts_with("psa_"))
        .expect("the agent token in the seed")
        .trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .to_string();
    (key, token)
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("test://{}", common::simulated_host_file().display());
    let mut config = common::config(dir.path(), &[("gpu-01", &uri)]);
    // A fixed port, so that the seeds' URLs lead back here.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    config.listen = format!("127.0.0.1:{port}").parse().unwrap();
    config.quotas.gpus = 8;
    config.quotas.requests = 20;
    config.auto_approve.gpus = 0;
    let admin_token = common::token_for(&config, "ops", true).await;
    let ada_token = common::token_for(&config, "ada", false).await;
    let bob_token = common::token_for(&config, "bob", false).await;
    let (admin, ada, bob) = (
        common::client(&admin_token),
        common::client(&ada_token),
        common::client(&bob_token),
    );
    let plugin = common::stand_in_plugin(&config, "vector-add").await;
    // The native host's jobs run another plugin: its agent has no business with this one.
    let other_plugin = common::stand_in_plugin(&config, "matrix-mul").await;
    let public = config.public_url();
    let portal = Portal::start(config).await.unwrap();
    let base = format!("http://{}", portal.address);
    let url = |path: &str| format!("{base}{path}");

    send(&admin, Method::POST, url("/api/v1/inventory/refresh"), None).await;
    send(
        &admin,
        Method::POST,
        url("/api/v1/images"),
        Some(
            json!({ "name": "debian-12", "host": "gpu-01", "pool": "images",
                     "volume": "debian-12-generic-amd64.qcow2" }),
        ),
    )
    .await;
    let file = |client: Client| {
        let url = url("/api/v1/requests");
        async move {
            send(
                &client,
                Method::POST,
                url,
                Some(
                    json!({ "gpu_model": "H100 PCIe", "gpu_count": 1, "vcpus": 2,
                             "memory_mib": 2048, "disk_gib": 10, "image": "debian-12",
                             "hypervisor": "kvm", "lease_hours": 4, "reason": "the matrix" }),
                ),
            )
            .await["id"]
                .as_i64()
                .unwrap()
        }
    };
    let approve = |id: i64| {
        let (admin, url) = (
            admin.clone(),
            url(&format!("/api/v1/requests/{id}/approve")),
        );
        async move { send(&admin, Method::POST, url, None).await }
    };
    // Ada's two VMs (hers to act on, and the admin's), and bob's.
    let mut vms = Vec::new();
    for client in [&ada, &ada, &bob] {
        let request = file(client.clone()).await;
        approve(request).await;
        vms.push(running_vm(client, &base, request).await);
    }
    let (vm, spare_vm, bobs_vm) = (vms[0], vms[1], vms[2]);
    let (seed_key, vm_token) = seed(&admin, &base, &public, spare_vm).await;
    let (_, vm_token_first) = seed(&admin, &base, &public, vm).await;
    let (_, bobs_token) = seed(&admin, &base, &public, bobs_vm).await;
    let _ = vm_token;
    let own_agent = common::client(&vm_token_first);
    let other_agent = common::client(&bobs_token);

    let native = |name: &'static str| {
        let (admin, url) = (admin.clone(), url("/api/v1/agents"));
        async move {
            let body = send(&admin, Method::POST, url, Some(json!({ "name": name }))).await;
            (
                body["id"].as_i64().unwrap(),
                body["token"].as_str().unwrap().to_string(),
            )
        }
    };
    let (host, host_token) = native("bench-01").await;
    let (spare_host, _) = native("bench-02").await;
    let (spare_host_for_fn, _) = native("bench-03").await;
    // Experiments wait for this host's agent, which never starts: they stay preparing.
    let (exp_host, _) = native("bench-exp").await;
    let host_agent = common::client(&host_token);
    let registration = json!({ "hostname": "h", "version": "0.1.0", "backend": "fake",
        "devices": [{ "index": 0, "name": "Passage simulated GPU", "pci_bus_id": "0000:10:00.0",
                      "total_memory": 1024, "compute_capability": "9.0", "simulated": true }] });
    for agent in [&own_agent, &other_agent, &host_agent] {
        send(
            agent,
            Method::POST,
            url("/api/v1/agent/register"),
            Some(registration.clone()),
        )
        .await;
    }
    let agents = send(&ada, Method::GET, url("/api/v1/agents"), None).await;
    let vm_agent = agents
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["vm_id"] == vm)
        .expect("ada's VM's agent")["id"]
        .as_i64()
        .unwrap();

    // Ada's jobs: one her VM's agent runs, others to cancel, one on the native host.
    let queue = |agent: i64| {
        let (ada, url) = (ada.clone(), url("/api/v1/jobs"));
        async move {
            send(
                &ada,
                Method::POST,
                url,
                Some(json!({ "plugin": plugin, "agent": agent })),
            )
            .await["jobs"][0]
                .as_i64()
                .unwrap()
        }
    };
    let queue_other = |agent: i64| {
        let (ada, url) = (ada.clone(), url("/api/v1/jobs"));
        async move {
            send(
                &ada,
                Method::POST,
                url,
                Some(json!({ "plugin": other_plugin, "agent": agent })),
            )
            .await["jobs"][0]
                .as_i64()
                .unwrap()
        }
    };
    let running_job = queue(vm_agent).await;
    let taken = send(
        &own_agent,
        Method::POST,
        url("/api/v1/agent/poll"),
        Some(json!({ "running": [], "free_devices": [0] })),
    )
    .await;
    assert_eq!(taken["job"]["id"], running_job, "{taken}");
    let mut ids = BTreeMap::new();
    let mut spare = BTreeMap::new();
    let mut both = |name: &str, value: String, spare_value: String| {
        ids.insert(name.to_string(), value);
        spare.insert(name.to_string(), spare_value);
    };
    both("vm", vm.to_string(), spare_vm.to_string());
    both(
        "job_to_cancel",
        queue(vm_agent).await.to_string(),
        queue(vm_agent).await.to_string(),
    );
    both(
        "job_for_fn",
        queue(vm_agent).await.to_string(),
        queue(vm_agent).await.to_string(),
    );
    both(
        "host_job",
        queue_other(host).await.to_string(),
        queue_other(host).await.to_string(),
    );
    let experiment = || {
        let (ada, url) = (ada.clone(), url("/api/v1/experiments"));
        async move {
            send(
                &ada,
                Method::POST,
                url,
                Some(
                    json!({ "name": "the matrix", "plugins": [{ "plugin": "vector-add" }],
                             "targets": [{ "agent": exp_host }], "repetitions": 2 }),
                ),
            )
            .await["id"]
                .as_i64()
                .unwrap()
                .to_string()
        }
    };
    let shown = experiment().await;
    both("experiment", shown.clone(), shown);
    both(
        "experiment_to_cancel",
        experiment().await,
        experiment().await,
    );
    both("experiment_for_fn", experiment().await, experiment().await);
    let tokens: Vec<String> = {
        let mut made = Vec::new();
        for name in ["spare-1", "spare-2", "spare-3", "spare-4"] {
            let body = send(
                &ada,
                Method::POST,
                url("/api/v1/tokens"),
                Some(json!({ "name": name })),
            )
            .await;
            made.push(body["id"].as_i64().unwrap().to_string());
        }
        made
    };
    let fixture_tokens = [&tokens[0], &tokens[1]];
    both(
        "token",
        fixture_tokens[0].clone(),
        fixture_tokens[1].clone(),
    );
    let single = [
        ("spare_vm", spare_vm.to_string()),
        ("seed_key", seed_key),
        ("plugin", plugin.to_string()),
        (
            "plugin_sha256",
            passage_server::auth::secret_hash("vector-add"),
        ),
        ("vm_agent", vm_agent.to_string()),
        ("running_job", running_job.to_string()),
        ("job", running_job.to_string()),
        ("spare_host", spare_host.to_string()),
        ("spare_host_for_fn", spare_host_for_fn.to_string()),
        ("exp_host", exp_host.to_string()),
        ("request", file(ada.clone()).await.to_string()),
        ("request_to_deny", file(ada.clone()).await.to_string()),
        ("request_for_fn", file(ada.clone()).await.to_string()),
        ("request_for_fn_deny", file(ada.clone()).await.to_string()),
    ];
    for (name, value) in single {
        both(name, value.clone(), value);
    }
    // The token rows of the server functions revoke tokens of their own.
    ids.insert("fn_token".into(), tokens[2].clone());
    spare.insert("fn_token".into(), tokens[3].clone());
    // A free GPU of a model no request here asks for, so that it is still free when attached.
    let gpus = send(
        &admin,
        Method::GET,
        url("/api/v1/gpus?state=available&model=A100%20PCIe%2080GB"),
        None,
    )
    .await;
    let free = gpus[0]["address"].as_str().expect("a free GPU").to_string();
    ids.insert("free_gpu".into(), free.clone());
    spare.insert("free_gpu".into(), free);

    Fixture {
        _dir: dir,
        portal,
        base,
        callers: [
            None,
            Some(bobs_token),
            Some(host_token),
            Some(bob_token),
            Some(vm_token_first),
            Some(ada_token),
            Some(admin_token),
        ]
        .iter()
        .map(|token| caller(token.as_deref()))
        .collect(),
        ids,
        spare,
    }
}

/// A client that sends `token`, if any, and does not follow redirects (they are answers here).
fn caller(token: Option<&str>) -> Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
    }
    Client::builder()
        .default_headers(headers)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// `text` with every `{name}` filled in; in JSON, a quoted `"{name}"` becomes a number when the
/// value is one.
fn fill(text: &str, values: &BTreeMap<String, String>) -> String {
    let mut text = text.to_string();
    for (name, value) in values {
        if value.parse::<i64>().is_ok() {
            text = text.replace(&format!("\"{{{name}}}\""), value);
        }
        text = text.replace(&format!("{{{name}}}"), value);
    }
    text
}

/// What caller `who` gets for `row`: the status as the matrix writes it.
async fn outcome(
    f: &Fixture,
    row: &Row,
    who: usize,
    functions: &BTreeMap<String, String>,
) -> String {
    let values = if row.spare_for_admin && who == 6 {
        &f.spare
    } else {
        &f.ids
    };
    let (method, route) = row.route.split_once(' ').unwrap();
    let function = functions.get(route);
    let path = match function {
        Some(path) => path.clone(),
        None => fill(row.url, values),
    };
    let method = match method {
        "ANY" => Method::GET,
        other => Method::from_bytes(other.as_bytes()).unwrap(),
    };
    let client = &f.callers[who];
    let mut request = client.request(method, format!("{}{path}", f.base));
    request = match &row.body {
        Body::None => request,
        Body::Json(value) if row.route == "POST /api/v1/plugins" => request.body(value.to_string()),
        Body::Json(value) => request
            .header("content-type", "application/json")
            .body(fill(&value.to_string(), values)),
        Body::Form(text) => request
            .header("content-type", "application/x-www-form-urlencoded")
            .body(fill(text, values)),
        Body::Multipart => request
            .header("content-type", "multipart/form-data; boundary=matrix")
            .body(
                "--matrix\r\nContent-Disposition: form-data; name=\"component\"; \
                 filename=\"x.wasm\"\r\nContent-Type: application/wasm\r\n\r\n\
                 not a component\r\n--matrix--\r\n",
            ),
        Body::WebSocket => request
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("sec-websocket-protocol", "binary"),
    };
    let response = request.send().await.unwrap();
    let status = response.status();
    if status == StatusCode::SEE_OTHER {
        let location = response.headers()["location"].to_str().unwrap().to_string();
        return format!("->{location}");
    }
    let text = response.text().await.unwrap_or_default();
    if status == StatusCode::OK && function.is_some() && text.trim() == "null" {
        return "null".into();
    }
    if status.is_success() {
        status.as_u16().to_string()
    } else {
        format!(
            "{} {}",
            status.as_u16(),
            text.chars().take(160).collect::<String>()
        )
    }
}

#[tokio::test]
async fn every_caller_gets_exactly_what_the_matrix_says_on_every_route() {
    let f = fixture().await;
    let functions = server_functions();
    let mut wrong = Vec::new();
    for row in matrix() {
        for (who, caller) in CALLERS.iter().enumerate() {
            let got = outcome(&f, &row, who, &functions).await;
            let want = row.expect[who];
            let fits = match want.strip_prefix("->") {
                Some(prefix) => got
                    .strip_prefix("->")
                    .is_some_and(|l| l.starts_with(prefix)),
                None => got.split(' ').next() == Some(want),
            };
            if !fits {
                wrong.push(format!(
                    "{} ({}) as {}: got {got}, the matrix says {want}",
                    row.route, row.url, caller
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} answers differ:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    f.portal.shutdown(Duration::from_secs(10)).await.unwrap();
}
