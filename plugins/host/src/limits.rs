//! What one run may use, and the messages a plugin's author gets on reaching a limit: each
//! names the limit, its value and the flag or setting that changes it.

use std::time::Duration;

use thiserror::Error;
use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};

/// Per-run limits.
#[derive(Debug, Clone)]
pub struct RunLimits {
    /// Linear memory of the plugin, in bytes. It also bounds the largest single transfer: the
    /// data of one `write` or `read` passes through this memory.
    pub wasm_memory: usize,
    /// Device memory held at once, in bytes: buffers and the modules' own variables.
    pub gpu_memory: u64,
    /// Host memory (pinned and pageable) held at once through `host-memory`, in bytes.
    pub host_memory: u64,
    /// Wall-clock time of the whole run.
    pub wall_time: Duration,
    /// GPU resources (buffers, host buffers, modules, kernels, streams, events) alive at once.
    pub resources: usize,
    /// `report.metric` calls.
    pub metrics: usize,
    /// `report.log` lines.
    pub log_lines: usize,
    /// Bytes of text reported: metric names and units, log lines and progress notes together.
    pub report_bytes: usize,
    /// Where each limit is changed, for the messages of runs that reach one.
    pub settings: LimitSettings,
}

impl Default for RunLimits {
    fn default() -> Self {
        RunLimits {
            wasm_memory: 256 << 20,
            gpu_memory: 8 << 30,
            host_memory: 4 << 30,
            wall_time: Duration::from_secs(600),
            resources: 4096,
            metrics: 10_000,
            log_lines: 10_000,
            report_bytes: 1 << 20,
            settings: LimitSettings::COMMAND_LINE,
        }
    }
}

/// How the person running a plugin changes each limit: a command-line flag of
/// `passage-agent run`, or a setting of the portal whose job it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitSettings {
    /// Changes [`RunLimits::wasm_memory`].
    pub wasm_memory: &'static str,
    /// Changes [`RunLimits::gpu_memory`].
    pub gpu_memory: &'static str,
    /// Changes [`RunLimits::host_memory`].
    pub host_memory: &'static str,
    /// Changes [`RunLimits::wall_time`].
    pub wall_time: &'static str,
}

impl LimitSettings {
    /// `passage-agent run` run by hand.
    pub const COMMAND_LINE: LimitSettings = LimitSettings {
        wasm_memory: "`passage-agent run --wasm-memory-mib N`",
        gpu_memory: "`passage-agent run --gpu-memory-mib N`",
        host_memory: "`passage-agent run --host-memory-mib N`",
        wall_time: "`passage-agent run --timeout SECONDS`",
    };
    /// A job handed out by a portal: its admin sets the limits in the portal's configuration.
    pub const PORTAL: LimitSettings = LimitSettings {
        wasm_memory: "the portal's `jobs.wasm_memory_mib` (ask its admin)",
        gpu_memory: "the portal's `jobs.gpu_memory_mib` (ask its admin)",
        host_memory: "`--host-memory-mib` of the agent's runs (fixed for portal jobs)",
        wall_time: "the portal's `jobs.time_limit_secs` (ask its admin)",
    };
}

/// Why a run was stopped at one of its limits; the engine turns it into
/// [`crate::PluginError::LimitExceeded`].
#[derive(Debug, Error)]
#[error("{0}")]
pub struct LimitReached(pub String);

/// The store's resource limiter: wasmtime's own, plus a message in the author's terms when the
/// plugin's memory would grow past its limit.
pub(crate) struct MemoryLimiter {
    inner: StoreLimits,
    limit: usize,
    setting: &'static str,
}

impl Default for MemoryLimiter {
    fn default() -> Self {
        MemoryLimiter::new(&RunLimits::default())
    }
}

impl MemoryLimiter {
    pub(crate) fn new(limits: &RunLimits) -> MemoryLimiter {
        MemoryLimiter {
            inner: StoreLimitsBuilder::new()
                .memory_size(limits.wasm_memory)
                .table_elements(100_000)
                .instances(16)
                .tables(32)
                .memories(8)
                .trap_on_grow_failure(true)
                .build(),
            limit: limits.wasm_memory,
            setting: limits.settings.wasm_memory,
        }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            return Err(LimitReached(format!(
                "the plugin's WebAssembly memory would grow to {} MiB, past the run's limit of {} MiB \
                 (it held {} MiB): raise it with {}, or hold less data in the plugin at once (write \
                 and read large buffers in pieces)",
                mib(desired as u64),
                mib(self.limit as u64),
                mib(current as u64),
                self.setting
            ))
            .into());
        }
        self.inner.memory_growing(current, desired, maximum)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

/// `bytes` in MiB, rounded up, for messages.
pub(crate) fn mib(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 20)
}

/// The message when `wanted` more bytes of `what` (e.g. "GPU memory") would pass the run's
/// `limit` with `used` held, naming the `setting` that raises it.
pub(crate) fn over_memory_limit(
    what: &str,
    wanted: u64,
    used: u64,
    limit: u64,
    setting: &str,
) -> String {
    format!(
        "{} more would take the run past its {what} limit of {} ({} in use): raise it with {setting}",
        bytes(wanted),
        bytes(limit),
        bytes(used)
    )
}

/// A size for people: exact bytes, with MiB beside them from 1 MiB up.
fn bytes(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{n} bytes ({} MiB)", mib(n))
    } else {
        format!("{n} bytes")
    }
}
