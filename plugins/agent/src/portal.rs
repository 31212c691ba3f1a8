//! The portal's agent API, as this agent calls it: `/api/v1/agent/…` with the agent's token.
//!
//! Every call says whether a failure is worth retrying: the portal being down, restarting or
//! overloaded is; a refused token or a job that is no longer ours is not.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::backend::Device;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum PortalError {
    /// The portal could not be reached or answered 5xx: try again later.
    #[error("the portal is unavailable: {0}")]
    Unavailable(String),
    /// The token is unknown or revoked.
    #[error("the portal refused the agent's token: {0}")]
    Unauthorized(String),
    /// The portal refused this particular call (404, 409, 422): do not repeat it.
    #[error("the portal refused: {0}")]
    Refused(String),
}

/// What the agent tells the portal when it starts.
#[derive(Debug, Serialize)]
struct Registration<'a> {
    hostname: &'a str,
    version: &'a str,
    backend: &'a str,
    devices: &'a [Device],
    #[serde(flatten)]
    machine: &'a Machine,
}

/// What the agent says about the machine it runs on, beyond its GPUs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Machine {
    /// The machine's IP addresses: the one it reaches the portal from.
    pub addresses: Vec<String>,
    /// The account the agent runs as, e.g. `passage-agent (uid 998)`.
    pub run_as: Option<String>,
    /// Why the CUDA driver cannot be used, when it cannot.
    pub cuda_problem: Option<String>,
}

/// The portal's answer to a registration.
#[derive(Debug, Deserialize)]
pub struct Registered {
    /// The agent's name at the portal.
    pub agent: String,
    /// For a VM: the verdict on the GPUs it was given.
    pub verification: Option<String>,
}

#[derive(Debug, Serialize)]
struct Poll<'a> {
    running: &'a [i64],
    free_devices: &'a [i64],
}

/// A job to run.
#[derive(Debug, Clone, Deserialize)]
pub struct Job {
    /// Its id.
    pub id: i64,
    /// The plugin's name.
    pub plugin: String,
    /// The plugin's version.
    pub version: String,
    /// The component's SHA-256.
    pub sha256: String,
    /// Every parameter, as `name`, `value`.
    pub params: Vec<(String, String)>,
    /// The devices to run on.
    pub devices: Vec<i64>,
    /// Wall-clock limit in seconds.
    pub time_limit_secs: u64,
    /// GPU memory limit in MiB.
    pub gpu_memory_mib: u64,
    /// Plugin memory limit in MiB.
    pub wasm_memory_mib: u64,
}

/// The answer to a poll.
#[derive(Debug, Deserialize)]
pub struct PollAnswer {
    /// Jobs to stop.
    pub stop: Vec<i64>,
    /// A job to start.
    pub job: Option<Job>,
    /// When to poll next.
    pub poll_secs: u64,
}

#[derive(Debug, Deserialize)]
struct JobState {
    state: String,
}

/// How a job ended.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// True when the plugin ran to its end.
    pub ok: bool,
    /// Why not.
    pub error: Option<String>,
    /// What it produced (the `result` of `passage-agent run --events`).
    pub result: Option<Value>,
}

/// A portal, reached at `base` with `token`.
#[derive(Debug, Clone)]
pub struct Portal {
    base: String,
    token: String,
    http: reqwest::blocking::Client,
}

impl Portal {
    /// The portal at `base` (e.g. `http://10.0.2.2:8080`).
    ///
    /// An `https://` portal is verified against the system's certificate store and, when given,
    /// `ca_file` (PEM), for a portal whose certificate an installation's own CA signed.
    pub fn new(base: &str, token: &str, ca_file: Option<&Path>) -> anyhow::Result<Portal> {
        let mut builder = reqwest::blocking::Client::builder()
            .use_rustls_tls()
            .https_only(base.starts_with("https://"))
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("passage-agent/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = ca_file {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read the CA file {}", path.display()))?;
            for certificate in reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("{} holds no PEM certificate", path.display()))?
            {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let http = builder.build()?;
        Ok(Portal {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http,
        })
    }

    fn post<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, PortalError> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .map_err(|e| PortalError::Unavailable(with_causes(&e)))?;
        decode(response)?
            .json()
            .map_err(|e| PortalError::Unavailable(format!("{path}: unreadable answer: {e}")))
    }

    /// Says who this agent is and which GPUs it sees.
    pub fn register(
        &self,
        hostname: &str,
        backend: &str,
        devices: &[Device],
        machine: &Machine,
    ) -> Result<Registered, PortalError> {
        self.post(
            "/api/v1/agent/register",
            &Registration {
                hostname,
                version: env!("CARGO_PKG_VERSION"),
                backend,
                devices,
                machine,
            },
        )
    }

    /// The local address this machine reaches the portal from (no packet is sent: the kernel
    /// only picks the route), or `None` when the portal's name does not resolve.
    pub fn local_address(&self) -> Option<std::net::IpAddr> {
        let url = reqwest::Url::parse(&self.base).ok()?;
        let port = url.port_or_known_default()?;
        let host = url
            .host_str()?
            .trim_start_matches('[')
            .trim_end_matches(']');
        let remote = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
            .ok()?
            .next()?;
        let any: std::net::SocketAddr = if remote.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = std::net::UdpSocket::bind(any).ok()?;
        socket.connect(remote).ok()?;
        Some(socket.local_addr().ok()?.ip())
    }

    /// The heartbeat: what runs, what is idle; the answer may hold a job.
    pub fn poll(&self, running: &[i64], free_devices: &[i64]) -> Result<PollAnswer, PortalError> {
        self.post(
            "/api/v1/agent/poll",
            &Poll {
                running,
                free_devices,
            },
        )
    }

    /// The component with this hash, checked against it.
    pub fn component(&self, sha256: &str) -> Result<Vec<u8>, PortalError> {
        let response = self
            .http
            .get(format!("{}/api/v1/agent/plugins/{sha256}", self.base))
            .bearer_auth(&self.token)
            .send()
            .map_err(|e| PortalError::Unavailable(with_causes(&e)))?;
        let bytes = decode(response)?
            .bytes()
            .map_err(|e| PortalError::Unavailable(with_causes(&e)))?;
        let got = hex::encode(Sha256::digest(&bytes));
        if got != sha256 {
            return Err(PortalError::Unavailable(format!(
                "the plugin arrived damaged: sha256 {got}, expected {sha256}"
            )));
        }
        Ok(bytes.to_vec())
    }

    /// Reports progress; true while the job should go on.
    pub fn progress(&self, job: i64, fraction: f32, note: &str) -> Result<bool, PortalError> {
        let state: JobState = self.post(
            &format!("/api/v1/agent/jobs/{job}/progress"),
            &serde_json::json!({ "fraction": fraction, "note": note }),
        )?;
        Ok(state.state == "running")
    }

    /// Posts how a job ended.
    pub fn finish(&self, job: i64, outcome: &Outcome) -> Result<(), PortalError> {
        let _: JobState = self.post(&format!("/api/v1/agent/jobs/{job}/result"), outcome)?;
        Ok(())
    }
}

fn decode(
    response: reqwest::blocking::Response,
) -> Result<reqwest::blocking::Response, PortalError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let message = response
        .json::<Value>()
        .ok()
        .and_then(|v| v["error"].as_str().map(String::from))
        .unwrap_or_else(|| status.to_string());
    Err(match status.as_u16() {
        401 | 403 => PortalError::Unauthorized(message),
        400..=499 if status.as_u16() != 408 && status.as_u16() != 429 => {
            PortalError::Refused(message)
        }
        _ => PortalError::Unavailable(message),
    })
}

/// An error with every cause behind it: "error sending request" alone does not say that a
/// certificate was refused or a connection reset.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}
