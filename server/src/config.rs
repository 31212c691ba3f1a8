//! The server's configuration: built-in defaults, then a TOML file, then `PASSAGE_*` variables.
//!
//! With no file and no variables the portal runs on a SQLite file under `./passage-data` and the
//! bundled simulated host, so a first start needs nothing. Every error names where the bad value
//! came from: the file, line and key, or the variable.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use passage_hypervisor::GpuVendors;
use serde::Deserialize;
use thiserror::Error;

/// Name of the simulated host in the default configuration.
pub const SIMULATED_HOST_NAME: &str = "simulated";
/// A host URI that stands for the bundled simulated host file, written into the data directory.
pub const SIMULATED_HOST_URI: &str = "simulated";

/// Configuration errors, each naming its source.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has a key or value the server does not know.
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong, naming the key.
        message: String,
    },
    /// An environment variable has a value that does not parse.
    #[error("environment variable {name}={value:?}: {message}")]
    Env {
        /// The variable.
        name: String,
        /// Its value.
        value: String,
        /// What is wrong.
        message: String,
    },
    /// The values parse but do not make sense together.
    #[error("{key}: {message}")]
    Invalid {
        /// The key, as written in the file (e.g. `hosts[1].uri`).
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One line of text per event, for people.
    Text,
    /// One JSON object per event, with the request's span (its id, method and route).
    Json,
}

/// The configuration file's shape. Unknown keys are errors, so typos do not pass silently.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    listen: Option<String>,
    database_url: Option<String>,
    data_dir: Option<PathBuf>,
    site_dir: Option<PathBuf>,
    log: Option<String>,
    log_format: Option<String>,
    inventory: Option<InventoryFile>,
    quotas: Option<Quotas>,
    auto_approve: Option<AutoApprove>,
    hosts: Option<Vec<HostConfig>>,
    vms: Option<VmSettings>,
    plugins: Option<PluginsFile>,
    agents: Option<AgentSettings>,
    jobs: Option<JobLimits>,
    http: Option<HttpFile>,
    login: Option<LoginSettings>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpFile {
    request_timeout_secs: Option<u64>,
    max_concurrent_requests: Option<usize>,
    trusted_proxies: Option<Vec<String>>,
}

/// How the portal's HTTP server protects itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    /// The longest a request may take, reading its body included. Long-lived exchanges (the
    /// console websocket, plugin uploads, agents' job results) are bounded by an idle timeout of
    /// the same length instead.
    pub request_timeout: Duration,
    /// Requests served at once; one more is answered 503 at once instead of queueing.
    pub max_concurrent_requests: usize,
    /// Proxies whose `X-Forwarded-For` names the client (addresses or CIDR ranges). A request
    /// from any other peer is its own client, whatever it claims.
    pub trusted_proxies: Vec<IpRange>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            request_timeout: Duration::from_secs(120),
            max_concurrent_requests: 512,
            trusted_proxies: Vec::new(),
        }
    }
}

/// An IP address or a CIDR range of them, e.g. `10.0.0.0/8` or `::1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    network: IpAddr,
    prefix: u8,
}

impl IpRange {
    /// Parses `address` or `address/prefix`.
    pub fn parse(text: &str) -> Result<IpRange, String> {
        let (address, prefix) = match text.trim().split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text.trim(), None),
        };
        let network: IpAddr = address.parse().map_err(|_| {
            format!("{text:?} is not an IP address or CIDR range (e.g. 10.0.0.0/8)")
        })?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {max}"))?,
            None => max,
        };
        Ok(IpRange { network, prefix })
    }

    /// True when `address` is in the range (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(address),
            v4 => v4,
        };
        match (self.network, address) {
            (IpAddr::V4(net), IpAddr::V4(addr)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(addr) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(addr)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(addr) & mask
            }
            _ => false,
        }
    }
}

/// How sign-in guesses are limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginSettings {
    /// Sign-in attempts that may fail per window for one name from one client address.
    pub max_failures: usize,
    /// Failed attempts per window from one client address, whatever the names.
    pub max_failures_per_address: usize,
    /// The window, in seconds.
    pub window_secs: u64,
    /// Password hashes computed at once (argon2 is slow on purpose); more wait their turn.
    pub concurrent_hashes: usize,
}

impl Default for LoginSettings {
    fn default() -> Self {
        LoginSettings {
            max_failures: 10,
            max_failures_per_address: 100,
            window_secs: 600,
            concurrent_hashes: 4,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginsFile {
    dir: Option<PathBuf>,
    max_upload_mib: Option<u64>,
}

/// The plugin registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginSettings {
    /// Where the shipped plugins are (`<name>.wasm`), registered at start-up. Default: the
    /// `plugins` directory beside the server binary's directory (`target/plugins` in a build).
    pub dir: Option<PathBuf>,
    /// The largest component an admin may upload, in bytes.
    pub max_upload_bytes: u64,
}

impl Default for PluginSettings {
    fn default() -> Self {
        PluginSettings {
            dir: None,
            max_upload_bytes: 32 << 20,
        }
    }
}

/// How agents keep in touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentSettings {
    /// How often an agent reports that it lives (and asks for work when idle).
    pub heartbeat_secs: u64,
    /// An agent silent this long is offline, and the jobs it was running fail.
    pub offline_after_secs: u64,
}

impl Default for AgentSettings {
    fn default() -> Self {
        AgentSettings {
            heartbeat_secs: 5,
            offline_after_secs: 60,
        }
    }
}

/// What one job may use (the agent's sandbox enforces it), and how many one user may queue on
/// the shared native hosts (the portal enforces that).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobLimits {
    /// Wall-clock time of one run.
    pub time_limit_secs: u64,
    /// Device memory the plugin may hold at once, in MiB.
    pub gpu_memory_mib: u64,
    /// The plugin's own (WebAssembly) memory, in MiB.
    pub wasm_memory_mib: u64,
    /// Unfinished (queued or running) jobs one user may have on the native hosts at once, so
    /// that nobody fills a shared machine's queue; a VM's own agent has no such limit.
    pub native_jobs_per_user: u64,
}

impl Default for JobLimits {
    fn default() -> Self {
        JobLimits {
            time_limit_secs: 900,
            gpu_memory_mib: 64 << 10,
            wasm_memory_mib: 512,
            native_jobs_per_user: 32,
        }
    }
}

/// How VMs are made and kept.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VmSettings {
    /// The portal's URL as guests reach it (cloud-init seed and agent). Default: the listen
    /// address; behind QEMU's user networking the host is `http://10.0.2.2:PORT`.
    pub public_url: Option<String>,
    /// How long an ACPI shutdown may take before the VM is powered off.
    pub shutdown_grace_secs: u64,
    /// How often expired leases are reclaimed.
    pub lease_check_secs: u64,
    /// How often domains and records are reconciled.
    pub reconcile_secs: u64,
    /// Provisioning that has made no progress for this long (a server that died mid-way) is
    /// rolled back by reconciliation.
    pub provisioning_timeout_secs: u64,
    /// The `passage-agent` binary guests download (`/downloads/passage-agent`) and check by its
    /// SHA-256. Default: `passage-agent` beside the server binary.
    pub agent_binary: Option<PathBuf>,
}

impl Default for VmSettings {
    fn default() -> Self {
        VmSettings {
            public_url: None,
            shutdown_grace_secs: 60,
            lease_check_secs: 30,
            reconcile_secs: 60,
            provisioning_timeout_secs: 300,
            agent_binary: None,
        }
    }
}

/// What each user may hold at once; checked when a request is filed and again at approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Quotas {
    /// GPUs held by placed requests, plus the one being asked for.
    pub gpus: i64,
    /// Requests open at once (pending, waiting or placed).
    pub requests: i64,
    /// The longest lease.
    pub lease_hours: i64,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            gpus: 8,
            requests: 4,
            lease_hours: 168,
        }
    }
}

/// Requests this small are approved at once, without an admin. `gpus = 0` turns it off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AutoApprove {
    /// At most this many GPUs.
    pub gpus: i64,
    /// For at most this many hours.
    pub lease_hours: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct InventoryFile {
    refresh_secs: Option<u64>,
    call_timeout_secs: Option<u64>,
    gpu_vendors: Option<Vec<String>>,
}

/// A hypervisor host: a name for people and a libvirt URI.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// Unique name shown in the UI and API.
    pub name: String,
    /// A libvirt URI (`qemu:///system`, `qemu+ssh://root@host/system`, `xen:///system`,
    /// `test:///abs/path/host.xml`), or `simulated` for the bundled simulated host.
    pub uri: String,
    /// The libvirt network VMs join, e.g. `default`. Without it (and without `bridge`), QEMU
    /// guests use user-mode networking.
    #[serde(default)]
    pub network: Option<String>,
    /// A host bridge VMs join instead, e.g. `br0` (what Xen hosts usually need).
    #[serde(default)]
    pub bridge: Option<String>,
    /// Run `kvm` requests with QEMU's emulator (TCG) on this host: for hosts without usable KVM,
    /// e.g. nested test machines. Slow; never for real GPU work.
    #[serde(default)]
    pub tcg: bool,
    /// The GPU backend of the agents in this host's VMs: `cuda` (the guest's NVIDIA driver), or
    /// `fake` for a lab host without GPUs, whose VMs' agents then offer one simulated GPU and
    /// every job on them is labelled SIMULATED.
    #[serde(default)]
    pub agent_backend: AgentBackend,
    /// GPUs whose IOMMU group also holds devices of the host (a NIC, an NVMe drive), allowed to
    /// be passed through with them anyway. Each names the GPU and every such member; without
    /// an entry such a GPU is unassignable, since passthrough would take the devices from the
    /// host.
    #[serde(default)]
    pub shared_groups: Vec<SharedGroup>,
}

/// An admin's permission to pass a GPU through together with host devices in its IOMMU group.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedGroup {
    /// The GPU's PCI address.
    pub gpu: String,
    /// Every host device of its group that may go to the VM with it.
    pub members: Vec<String>,
}

/// The GPU backend an agent in a VM runs jobs on (`passage-agent serve --backend`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentBackend {
    /// The NVIDIA GPUs passed through, through the guest's CUDA driver.
    #[default]
    Cuda,
    /// A simulated GPU: memory semantics only, figures that are not measurements.
    Fake,
}

impl AgentBackend {
    /// The value of the agent's `--backend` option.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentBackend::Cuda => "cuda",
            AgentBackend::Fake => "fake",
        }
    }
}

impl HostConfig {
    /// A host with default settings.
    pub fn new(name: impl Into<String>, uri: impl Into<String>) -> HostConfig {
        HostConfig {
            name: name.into(),
            uri: uri.into(),
            network: None,
            bridge: None,
            tcg: false,
            agent_backend: AgentBackend::Cuda,
            shared_groups: Vec::new(),
        }
    }
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// `sqlite://...` or `postgres://...`.
    pub database_url: String,
    /// Where the server keeps its files (the SQLite database by default, the simulated host file).
    pub data_dir: PathBuf,
    /// Where the compiled browser assets are (`pkg/passage.js`, `pkg/passage_bg.wasm`, CSS).
    pub site_dir: PathBuf,
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `passage=debug,info`.
    pub log: String,
    /// How log lines are written: for people, or one JSON object per line for a log collector.
    pub log_format: LogFormat,
    /// How often every host's inventory is refreshed.
    pub inventory_refresh: Duration,
    /// Limit for one libvirt call, opening the connection included.
    pub libvirt_call_timeout: Duration,
    /// The PCI vendors whose display functions are GPUs (NVIDIA alone by default).
    pub gpu_vendors: GpuVendors,
    /// Per-user limits.
    pub quotas: Quotas,
    /// Which requests need no admin.
    pub auto_approve: AutoApprove,
    /// The hypervisor hosts.
    pub hosts: Vec<HostConfig>,
    /// How VMs are made and kept.
    pub vms: VmSettings,
    /// The plugin registry.
    pub plugins: PluginSettings,
    /// How agents keep in touch.
    pub agents: AgentSettings,
    /// What one job may use.
    pub jobs: JobLimits,
    /// Timeouts, concurrency and trusted proxies of the HTTP server.
    pub http: HttpSettings,
    /// How sign-in guesses are limited.
    pub login: LoginSettings,
}

impl Config {
    /// Reads the file (if any) and the environment, and validates the result.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let file = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                parse_file(path, &text)?
            }
            None => ConfigFile::default(),
        };
        let env: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with("PASSAGE_"))
            .collect();
        Config::resolve(file, &env)
    }

    fn resolve(file: ConfigFile, env: &[(String, String)]) -> Result<Config, ConfigError> {
        let var = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let data_dir = var("PASSAGE_DATA_DIR")
            .map(PathBuf::from)
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("passage-data"));
        let listen_text = var("PASSAGE_LISTEN")
            .map(|v| (v, Some("PASSAGE_LISTEN")))
            .or(file.listen.map(|v| (v, None)))
            .unwrap_or_else(|| ("127.0.0.1:8080".into(), None));
        let listen = listen_text.0.parse().map_err(|_| {
            let message = "expected address:port, e.g. 127.0.0.1:8080 or [::]:8080".to_string();
            match listen_text.1 {
                Some(name) => ConfigError::Env {
                    name: name.into(),
                    value: listen_text.0.clone(),
                    message,
                },
                None => ConfigError::Invalid {
                    key: "listen".into(),
                    message: format!("{:?}: {message}", listen_text.0),
                },
            }
        })?;
        let database_url = var("PASSAGE_DATABASE_URL")
            .or(file.database_url)
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("passage.db").display()));
        let seconds =
            |name: &str, from_file: Option<u64>, default: u64| -> Result<u64, ConfigError> {
                match var(name) {
                    Some(value) => value.parse::<u64>().map_err(|_| ConfigError::Env {
                        name: name.into(),
                        value: value.clone(),
                        message: "expected a whole number of seconds".into(),
                    }),
                    None => Ok(from_file.unwrap_or(default)),
                }
            };
        let inventory = file.inventory.unwrap_or_default();
        let gpu_vendors = match var("PASSAGE_INVENTORY_GPU_VENDORS") {
            Some(value) => {
                let ids: Vec<&str> = value.split(',').map(str::trim).collect();
                parse_gpu_vendors(&ids).map_err(|message| ConfigError::Env {
                    name: "PASSAGE_INVENTORY_GPU_VENDORS".into(),
                    value: value.clone(),
                    message,
                })?
            }
            None => match &inventory.gpu_vendors {
                Some(ids) => {
                    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
                    parse_gpu_vendors(&ids).map_err(|message| ConfigError::Invalid {
                        key: "inventory.gpu_vendors".into(),
                        message,
                    })?
                }
                None => GpuVendors::default(),
            },
        };
        let vms_file = file.vms.unwrap_or_default();
        let plugins_file = file.plugins.unwrap_or_default();
        let plugins = PluginSettings {
            dir: var("PASSAGE_PLUGIN_DIR")
                .map(PathBuf::from)
                .or(plugins_file.dir)
                .or_else(default_plugin_dir),
            max_upload_bytes: plugins_file
                .max_upload_mib
                .map(|mib| mib << 20)
                .unwrap_or(PluginSettings::default().max_upload_bytes),
        };
        let http_file = file.http.unwrap_or_default();
        let defaults = HttpSettings::default();
        let http = HttpSettings {
            request_timeout: http_file
                .request_timeout_secs
                .map(Duration::from_secs)
                .unwrap_or(defaults.request_timeout),
            max_concurrent_requests: http_file
                .max_concurrent_requests
                .unwrap_or(defaults.max_concurrent_requests),
            trusted_proxies: http_file
                .trusted_proxies
                .unwrap_or_default()
                .iter()
                .map(|p| IpRange::parse(p))
                .collect::<Result<_, _>>()
                .map_err(|message| ConfigError::Invalid {
                    key: "http.trusted_proxies".into(),
                    message,
                })?,
        };
        let log_format = match var("PASSAGE_LOG_FORMAT").or(file.log_format).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    key: "log_format".into(),
                    message: format!("{other:?} is not a log format: \"text\" or \"json\""),
                });
            }
        };
        let config = Config {
            listen,
            database_url,
            site_dir: var("PASSAGE_SITE_DIR")
                .map(PathBuf::from)
                .or(file.site_dir)
                .unwrap_or_else(default_site_dir),
            log: var("PASSAGE_LOG")
                .or(file.log)
                .unwrap_or_else(|| "info".into()),
            log_format,
            inventory_refresh: Duration::from_secs(seconds(
                "PASSAGE_INVENTORY_REFRESH_SECS",
                inventory.refresh_secs,
                60,
            )?),
            libvirt_call_timeout: Duration::from_secs(seconds(
                "PASSAGE_LIBVIRT_CALL_TIMEOUT_SECS",
                inventory.call_timeout_secs,
                30,
            )?),
            gpu_vendors,
            quotas: file.quotas.unwrap_or_default(),
            auto_approve: file.auto_approve.unwrap_or_default(),
            hosts: file
                .hosts
                .unwrap_or_else(|| vec![HostConfig::new(SIMULATED_HOST_NAME, SIMULATED_HOST_URI)]),
            vms: VmSettings {
                agent_binary: var("PASSAGE_AGENT_BINARY")
                    .map(PathBuf::from)
                    .or(vms_file.agent_binary),
                ..vms_file
            },
            plugins,
            agents: file.agents.unwrap_or_default(),
            jobs: file.jobs.unwrap_or_default(),
            http,
            login: file.login.unwrap_or_default(),
            data_dir,
        };
        for (name, _) in env {
            if !KNOWN_VARIABLES.contains(&name.as_str()) && !name.starts_with("PASSAGE_TEST_") {
                tracing::warn!(variable = %name, "unknown PASSAGE_ environment variable ignored");
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks what parsing cannot: ranges, unique host names, supported database schemes.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: key.into(),
            message,
        };
        if !(self.database_url.starts_with("sqlite:")
            || self.database_url.starts_with("postgres://")
            || self.database_url.starts_with("postgresql://"))
        {
            return Err(invalid(
                "database_url",
                format!(
                    "{:?}: expected sqlite://path/to/file.db or postgres://user@host/db",
                    self.database_url
                ),
            ));
        }
        if self.inventory_refresh < Duration::from_secs(5) {
            return Err(invalid(
                "inventory.refresh_secs",
                "must be at least 5 seconds".into(),
            ));
        }
        if self.libvirt_call_timeout.is_zero() {
            return Err(invalid(
                "inventory.call_timeout_secs",
                "must be at least 1 second".into(),
            ));
        }
        for (key, value) in [
            ("quotas.gpus", self.quotas.gpus),
            ("quotas.requests", self.quotas.requests),
            ("quotas.lease_hours", self.quotas.lease_hours),
        ] {
            if value < 1 {
                return Err(invalid(key, format!("must be at least 1, got {value}")));
            }
        }
        if self.auto_approve.gpus < 0 || self.auto_approve.lease_hours < 0 {
            return Err(invalid(
                "auto_approve",
                "gpus and lease_hours cannot be negative".into(),
            ));
        }
        if let Some(url) = &self.vms.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(invalid(
                "vms.public_url",
                format!("{url:?}: expected http://host:port or https://host"),
            ));
        }
        for (key, value) in [
            ("vms.lease_check_secs", self.vms.lease_check_secs),
            ("vms.reconcile_secs", self.vms.reconcile_secs),
            (
                "vms.provisioning_timeout_secs",
                self.vms.provisioning_timeout_secs,
            ),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1 second".into()));
            }
        }
        if self.plugins.max_upload_bytes == 0 {
            return Err(invalid(
                "plugins.max_upload_mib",
                "must be at least 1".into(),
            ));
        }
        for (key, value) in [
            ("agents.heartbeat_secs", self.agents.heartbeat_secs),
            ("agents.offline_after_secs", self.agents.offline_after_secs),
            ("jobs.time_limit_secs", self.jobs.time_limit_secs),
            ("jobs.gpu_memory_mib", self.jobs.gpu_memory_mib),
            ("jobs.wasm_memory_mib", self.jobs.wasm_memory_mib),
            ("jobs.native_jobs_per_user", self.jobs.native_jobs_per_user),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1".into()));
            }
        }
        if self.http.request_timeout.is_zero() {
            return Err(invalid(
                "http.request_timeout_secs",
                "must be at least 1 second".into(),
            ));
        }
        if self.http.request_timeout.as_secs() <= self.vms.shutdown_grace_secs {
            return Err(invalid(
                "http.request_timeout_secs",
                format!(
                    "must be longer than vms.shutdown_grace_secs ({} s): stopping a VM waits that long for its guest",
                    self.vms.shutdown_grace_secs
                ),
            ));
        }
        for (key, value) in [
            (
                "http.max_concurrent_requests",
                self.http.max_concurrent_requests,
            ),
            ("login.max_failures", self.login.max_failures),
            (
                "login.max_failures_per_address",
                self.login.max_failures_per_address,
            ),
            ("login.concurrent_hashes", self.login.concurrent_hashes),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1".into()));
            }
        }
        if self.login.window_secs == 0 {
            return Err(invalid(
                "login.window_secs",
                "must be at least 1 second".into(),
            ));
        }
        if self.agents.offline_after_secs < 2 * self.agents.heartbeat_secs {
            return Err(invalid(
                "agents.offline_after_secs",
                format!(
                    "must be at least twice agents.heartbeat_secs ({} s)",
                    self.agents.heartbeat_secs
                ),
            ));
        }
        for (i, host) in self.hosts.iter().enumerate() {
            let name_ok = !host.name.is_empty()
                && host.name.len() <= 64
                && host
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
            if !name_ok {
                return Err(invalid(
                    &format!("hosts[{i}].name"),
                    format!(
                        "{:?}: use 1 to 64 letters, digits, '-', '_' or '.'",
                        host.name
                    ),
                ));
            }
            if self.hosts[..i].iter().any(|h| h.name == host.name) {
                return Err(invalid(
                    &format!("hosts[{i}].name"),
                    format!("{:?} is used by another host", host.name),
                ));
            }
            if host.network.is_some() && host.bridge.is_some() {
                return Err(invalid(
                    &format!("hosts[{i}]"),
                    "set network or bridge, not both".into(),
                ));
            }
            for (j, shared) in host.shared_groups.iter().enumerate() {
                for address in std::iter::once(&shared.gpu).chain(&shared.members) {
                    if address.parse::<passage_hypervisor::PciAddress>().is_err() {
                        return Err(invalid(
                            &format!("hosts[{i}].shared_groups[{j}]"),
                            format!("{address:?} is not a PCI address (dddd:bb:ss.f)"),
                        ));
                    }
                }
                if shared.members.is_empty() {
                    return Err(invalid(
                        &format!("hosts[{i}].shared_groups[{j}].members"),
                        "name every host device that may go with the GPU".into(),
                    ));
                }
            }
            if host.uri.trim().is_empty() {
                return Err(invalid(
                    &format!("hosts[{i}].uri"),
                    "must not be empty".into(),
                ));
            }
        }
        Ok(())
    }

    /// The portal's URL as guests reach it.
    pub fn public_url(&self) -> String {
        self.vms
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen))
            .trim_end_matches('/')
            .to_string()
    }

    /// True when people reach the portal over TLS (its public URL is `https://`): browsers are
    /// then told to use nothing else (HSTS).
    pub fn served_over_tls(&self) -> bool {
        self.public_url().starts_with("https://")
    }

    /// The libvirt URI to open for a host: `simulated` becomes the bundled host file.
    pub fn libvirt_uri(&self, host: &HostConfig) -> String {
        if host.uri == SIMULATED_HOST_URI {
            format!("test://{}", self.simulated_host_file().display())
        } else {
            host.uri.clone()
        }
    }

    /// Where the bundled simulated host description is written at start-up.
    pub fn simulated_host_file(&self) -> PathBuf {
        absolute(&self.data_dir).join("simulated-host.xml")
    }
}

const KNOWN_VARIABLES: &[&str] = &[
    "PASSAGE_CONFIG",
    "PASSAGE_LISTEN",
    "PASSAGE_DATABASE_URL",
    "PASSAGE_DATA_DIR",
    "PASSAGE_SITE_DIR",
    "PASSAGE_LOG",
    "PASSAGE_LOG_FORMAT",
    "PASSAGE_INVENTORY_REFRESH_SECS",
    "PASSAGE_LIBVIRT_CALL_TIMEOUT_SECS",
    "PASSAGE_INVENTORY_GPU_VENDORS",
    "PASSAGE_PLUGIN_DIR",
    "PASSAGE_AGENT_BINARY",
    // passagectl's, often set in the same shell.
    "PASSAGE_URL",
    "PASSAGE_TOKEN",
];

/// PCI vendor ids as admins write them: `0x10de` (hexadecimal, as `lspci -n` prints them, with or
/// without the `0x`). Duplicates are harmless; an empty list, zero and 0xffff (no device) are not.
fn parse_gpu_vendors(ids: &[&str]) -> Result<GpuVendors, String> {
    let mut parsed = Vec::with_capacity(ids.len());
    for id in ids {
        let digits = id
            .strip_prefix("0x")
            .or_else(|| id.strip_prefix("0X"))
            .unwrap_or(id);
        let vendor = (digits.len() == 4)
            .then(|| u16::from_str_radix(digits, 16).ok())
            .flatten()
            .filter(|v| *v != 0 && *v != 0xffff)
            .ok_or_else(|| {
                format!("{id:?} is not a PCI vendor id: expected four hex digits, e.g. \"0x10de\"")
            })?;
        parsed.push(vendor);
    }
    GpuVendors::new(parsed).ok_or_else(|| {
        "no vendor listed: at least one is needed, e.g. [\"0x10de\"] for NVIDIA".to_string()
    })
}

/// `plugins` beside the directory of the server binary, when it exists: `target/plugins` for
/// `target/debug/passage`, `/usr/lib/passage/plugins` for `/usr/lib/passage/bin/passage`.
fn default_plugin_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?.parent()?.join("plugins");
    dir.is_dir().then_some(dir)
}

fn parse_file(path: &Path, text: &str) -> Result<ConfigFile, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let offset = e.span().map(|s| s.start).unwrap_or(0).min(text.len());
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before
            .rsplit('\n')
            .next()
            .map(|l| l.chars().count())
            .unwrap_or(0)
            + 1;
        ConfigError::Parse {
            path: path.to_path_buf(),
            line,
            column,
            message: e.message().to_string(),
        }
    })
}

/// The browser assets sit beside the build output: `target/site` for `target/debug/passage`.
fn default_site_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().and_then(Path::parent).map(|p| p.join("site")))
        .filter(|dir| dir.is_dir())
        .unwrap_or_else(|| PathBuf::from("target/site"))
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|cwd| cwd.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let file = parse_file(Path::new("passage.toml"), text)?;
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::resolve(file, &env)
    }

    #[test]
    fn defaults_need_no_file() {
        let config = from("", &[]).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.database_url, "sqlite://passage-data/passage.db");
        assert_eq!(config.hosts.len(), 1);
        assert_eq!(config.hosts[0].uri, SIMULATED_HOST_URI);
        assert!(config.libvirt_uri(&config.hosts[0]).starts_with("test:///"));
        assert!(
            config
                .libvirt_uri(&config.hosts[0])
                .ends_with("passage-data/simulated-host.xml")
        );
    }

    #[test]
    fn the_environment_overrides_the_file() {
        let config = from(
            "listen = \"0.0.0.0:9000\"\ndatabase_url = \"sqlite://a.db\"\n",
            &[
                ("PASSAGE_LISTEN", "127.0.0.1:7000"),
                ("PASSAGE_DATABASE_URL", "postgres://p@db/passage"),
            ],
        )
        .unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:7000");
        assert_eq!(config.database_url, "postgres://p@db/passage");
    }

    #[test]
    fn quotas_and_auto_approval_have_defaults_and_can_be_set() {
        let config = from("", &[]).unwrap();
        assert_eq!(config.quotas, Quotas::default());
        assert_eq!(config.auto_approve.gpus, 0, "off unless configured");
        let config = from(
            "[quotas]\ngpus = 2\n\n[auto_approve]\ngpus = 1\nlease_hours = 12\n",
            &[],
        )
        .unwrap();
        assert_eq!(config.quotas.gpus, 2);
        assert_eq!(config.quotas.requests, 4);
        assert_eq!(
            config.auto_approve,
            AutoApprove {
                gpus: 1,
                lease_hours: 12
            }
        );
        let err = from("[quotas]\ngpus = 0\n", &[]).unwrap_err();
        assert!(err.to_string().starts_with("quotas.gpus:"), "{err}");
    }

    #[test]
    fn gpu_vendors_default_to_nvidia_and_can_be_listed() {
        let config = from("", &[]).unwrap();
        assert_eq!(config.gpu_vendors, GpuVendors::default());
        let config = from(
            "[inventory]\ngpu_vendors = [\"0x10de\", \"0x1002\", \"8086\"]\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            config.gpu_vendors.ids().collect::<Vec<_>>(),
            vec![0x1002, 0x10de, 0x8086]
        );
        let config = from(
            "[inventory]\ngpu_vendors = [\"0x10de\"]\n",
            &[("PASSAGE_INVENTORY_GPU_VENDORS", "0x1234, 0x10DE")],
        )
        .unwrap();
        assert_eq!(
            config.gpu_vendors.ids().collect::<Vec<_>>(),
            vec![0x10de, 0x1234]
        );
        for bad in [
            "[]",
            "[\"nvidia\"]",
            "[\"0x10de0\"]",
            "[\"0xffff\"]",
            "[\"0x0000\"]",
        ] {
            let err = from(&format!("[inventory]\ngpu_vendors = {bad}\n"), &[]).unwrap_err();
            assert!(
                err.to_string().starts_with("inventory.gpu_vendors:"),
                "{bad}: {err}"
            );
        }
        let err = from("", &[("PASSAGE_INVENTORY_GPU_VENDORS", "0x10de,amd")]).unwrap_err();
        assert!(
            err.to_string().contains("PASSAGE_INVENTORY_GPU_VENDORS")
                && err.to_string().contains("\"amd\""),
            "{err}"
        );
        let err = from("[inventory]\ngpu_vendors = [0x10de]\n", &[]).unwrap_err();
        assert!(err.to_string().starts_with("passage.toml:2:"), "{err}");
    }

    #[test]
    fn hosts_come_from_the_file() {
        let config = from(
            "[[hosts]]\nname = \"gpu-01\"\nuri = \"qemu+ssh://root@gpu-01/system\"\n\n[[hosts]]\nname = \"lab\"\nuri = \"test:///srv/lab.xml\"\n",
            &[],
        )
        .unwrap();
        let names: Vec<&str> = config.hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, vec!["gpu-01", "lab"]);
        assert_eq!(config.libvirt_uri(&config.hosts[1]), "test:///srv/lab.xml");
        assert!(from("hosts = []\n", &[]).unwrap().hosts.is_empty());
    }

    #[test]
    fn an_unknown_key_names_file_line_and_key() {
        let err = from(
            "listen = \"127.0.0.1:1\"\n\n[inventory]\nrefresh_sec = 10\n",
            &[],
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("passage.toml:4:"), "{text}");
        assert!(text.contains("refresh_sec"), "{text}");
    }

    #[test]
    fn malformed_toml_names_the_line() {
        let err = from("listen = \"127.0.0.1:1\"\nhosts = [\n", &[]).unwrap_err();
        assert!(err.to_string().starts_with("passage.toml:"), "{err}");
        let err = from("listen = 8080\n", &[]).unwrap_err();
        assert!(err.to_string().starts_with("passage.toml:1:"), "{err}");
    }

    #[test]
    fn bad_values_name_their_key_or_variable() {
        let err = from("", &[("PASSAGE_LISTEN", "localhost")]).unwrap_err();
        assert!(err.to_string().contains("PASSAGE_LISTEN"), "{err}");
        let err = from("listen = \"nope\"\n", &[]).unwrap_err();
        assert!(err.to_string().starts_with("listen:"), "{err}");
        let err = from("", &[("PASSAGE_INVENTORY_REFRESH_SECS", "soon")]).unwrap_err();
        assert!(
            err.to_string().contains("PASSAGE_INVENTORY_REFRESH_SECS"),
            "{err}"
        );
        let err = from("database_url = \"mysql://x\"\n", &[]).unwrap_err();
        assert!(err.to_string().starts_with("database_url:"), "{err}");
        let err = from("[inventory]\nrefresh_secs = 1\n", &[]).unwrap_err();
        assert!(
            err.to_string().starts_with("inventory.refresh_secs:"),
            "{err}"
        );
    }

    #[test]
    fn http_and_login_limits_have_defaults_and_are_checked() {
        let config = from("", &[]).unwrap();
        assert_eq!(config.http, HttpSettings::default());
        assert_eq!(config.login, LoginSettings::default());
        assert!(!config.served_over_tls());
        let config = from(
            "[http]\nrequest_timeout_secs = 90\nmax_concurrent_requests = 8\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n\n[login]\nmax_failures = 3\n\n[vms]\npublic_url = \"https://portal.example\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(config.http.request_timeout, Duration::from_secs(90));
        assert_eq!(config.http.max_concurrent_requests, 8);
        assert_eq!(config.login.max_failures, 3);
        assert_eq!(config.login.window_secs, 600);
        assert!(config.served_over_tls());
        let proxies = &config.http.trusted_proxies;
        assert!(proxies[0].contains("10.1.2.3".parse().unwrap()));
        assert!(!proxies[0].contains("11.1.2.3".parse().unwrap()));
        assert!(proxies[1].contains("::1".parse().unwrap()));
        assert!(!proxies[1].contains("127.0.0.1".parse().unwrap()));
        for (text, key) in [
            (
                "[http]\ntrusted_proxies = [\"10.0.0.0/33\"]\n",
                "http.trusted_proxies:",
            ),
            (
                "[http]\ntrusted_proxies = [\"proxy.example\"]\n",
                "http.trusted_proxies:",
            ),
            (
                "[http]\nrequest_timeout_secs = 30\n",
                "http.request_timeout_secs:",
            ),
            (
                "[http]\nmax_concurrent_requests = 0\n",
                "http.max_concurrent_requests:",
            ),
            (
                "[login]\nconcurrent_hashes = 0\n",
                "login.concurrent_hashes:",
            ),
        ] {
            let err = from(text, &[]).unwrap_err();
            assert!(err.to_string().starts_with(key), "{text}: {err}");
        }
    }

    #[test]
    fn ip_ranges_match_their_addresses_only() {
        let range = IpRange::parse("192.168.4.0/22").unwrap();
        assert!(range.contains("192.168.7.255".parse().unwrap()));
        assert!(range.contains("::ffff:192.168.5.1".parse().unwrap()));
        assert!(!range.contains("192.168.8.0".parse().unwrap()));
        assert!(
            IpRange::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        let one = IpRange::parse("fd00::1").unwrap();
        assert!(one.contains("fd00::1".parse().unwrap()));
        assert!(!one.contains("fd00::2".parse().unwrap()));
    }

    #[test]
    fn host_names_are_unique_and_plain() {
        let twice = "[[hosts]]\nname = \"a\"\nuri = \"qemu:///system\"\n[[hosts]]\nname = \"a\"\nuri = \"xen:///system\"\n";
        assert!(
            from(twice, &[])
                .unwrap_err()
                .to_string()
                .starts_with("hosts[1].name:")
        );
        let odd = "[[hosts]]\nname = \"a b\"\nuri = \"qemu:///system\"\n";
        assert!(
            from(odd, &[])
                .unwrap_err()
                .to_string()
                .starts_with("hosts[0].name:")
        );
        let extra = "[[hosts]]\nname = \"a\"\nuri = \"qemu:///system\"\nport = 1\n";
        let err = from(extra, &[]).unwrap_err().to_string();
        assert!(
            err.starts_with("passage.toml:4:") && err.contains("port"),
            "{err}"
        );
    }
}
