//! What one run's `Store` holds: the sandbox's WASI context, the GPU and its accounting, and
//! what the plugin reported.

use std::time::{Duration, Instant};

use passage_gpu::{GpuBackend, GpuError};
use thiserror::Error;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::RunLimits;
use crate::limits::{LimitSettings, MemoryLimiter};

/// One result figure.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// What was measured, e.g. "H2D bandwidth".
    pub name: String,
    /// The value.
    pub value: f64,
    /// Its unit, e.g. "GB/s".
    pub unit: String,
}

/// Severity of a plugin's log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Detail.
    Debug,
    /// Normal.
    Info,
    /// Something looks wrong.
    Warn,
    /// Something failed.
    Error,
}

impl LogLevel {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// Something a plugin reported while running.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEvent {
    /// A result figure.
    Metric(Metric),
    /// Progress from 0 to 1 with a note.
    Progress(f32, String),
    /// A log line.
    Log(LogLevel, String),
}

/// The metric by which a plugin says whether the GPU's output matched a reference: 1 PASS,
/// 0 FAIL, -1 skipped.
pub const VERIFICATION: &str = "verification";
/// The most bytes of one metric name.
pub const MAX_METRIC_NAME: usize = 256;
/// The most bytes of one unit.
pub const MAX_UNIT: usize = 32;
/// The most bytes of one progress note.
pub const MAX_NOTE: usize = 256;
/// Progress is passed on at most this often; calls in between only update the latest value.
const PROGRESS_EVERY: Duration = Duration::from_millis(50);

/// Why a run was stopped for reporting too much: ends the plugin's call with this error, which
/// the engine turns into [`crate::PluginError::LimitExceeded`].
#[derive(Debug, Error)]
#[error("{0}")]
pub struct ReportLimit(pub String);

/// What a finished run leaves: the GPUs and what the plugin reported.
pub(crate) struct Finished {
    pub gpus: Vec<Box<dyn GpuBackend>>,
    pub metrics: Vec<Metric>,
    pub logs: Vec<(LogLevel, String)>,
    /// The run's first kernel fault, if any.
    pub fault: Option<String>,
}

/// The data of one run's store.
pub struct RunState {
    wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limits: MemoryLimiter,
    /// The run's devices; the `gpu` interface uses the first. None while describing.
    pub(crate) gpus: Vec<Box<dyn GpuBackend>>,
    /// Device bytes held by live buffers and loaded modules' variables.
    pub(crate) gpu_bytes: u64,
    pub(crate) gpu_limit: u64,
    /// Host bytes held by live host memory.
    pub(crate) host_bytes: u64,
    pub(crate) host_limit: u64,
    /// What may still be reported: metrics, log lines, bytes of text.
    metrics_left: usize,
    log_lines_left: usize,
    report_bytes_left: usize,
    report_limits: RunLimits,
    last_progress: Option<Instant>,
    /// GPU resources alive.
    pub(crate) resources: usize,
    pub(crate) resource_limit: usize,
    /// The first kernel fault of the run: the device context is unusable after it.
    pub(crate) fault: Option<String>,
    metrics: Vec<Metric>,
    logs: Vec<(LogLevel, String)>,
    events: Box<dyn FnMut(&RunEvent) + Send>,
}

impl RunState {
    fn new(
        gpus: Vec<Box<dyn GpuBackend>>,
        limits: &RunLimits,
        events: Box<dyn FnMut(&RunEvent) + Send>,
    ) -> RunState {
        // Nothing but clocks and random: no arguments, environment, directories or sockets,
        // and standard output and error go nowhere.
        let wasi = WasiCtxBuilder::new()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        RunState {
            wasi,
            table: ResourceTable::new(),
            limits: MemoryLimiter::default(),
            gpus,
            gpu_bytes: 0,
            gpu_limit: limits.gpu_memory,
            host_bytes: 0,
            host_limit: limits.host_memory,
            metrics_left: limits.metrics,
            log_lines_left: limits.log_lines,
            report_bytes_left: limits.report_bytes,
            report_limits: limits.clone(),
            last_progress: None,
            resources: 0,
            resource_limit: limits.resources,
            fault: None,
            metrics: Vec::new(),
            logs: Vec::new(),
            events,
        }
    }

    /// State for calling `describe`: no GPU at all.
    pub(crate) fn describing() -> RunState {
        RunState::new(Vec::new(), &RunLimits::default(), Box::new(|_| {}))
    }

    /// State for a run on `gpus` (at least one).
    pub(crate) fn running(
        gpus: Vec<Box<dyn GpuBackend>>,
        limits: &RunLimits,
        events: Box<dyn FnMut(&RunEvent) + Send>,
    ) -> RunState {
        RunState::new(gpus, limits, events)
    }

    /// Hands back the GPUs and what was reported.
    pub(crate) fn finish(self) -> Finished {
        Finished {
            gpus: self.gpus,
            metrics: self.metrics,
            logs: self.logs,
            fault: self.fault,
        }
    }

    /// Where the run's limits are changed, for messages.
    pub(crate) fn settings(&self) -> LimitSettings {
        self.report_limits.settings
    }

    /// Records and passes on what the plugin reported, within the run's limits; past them the
    /// plugin's call ends in a [`ReportLimit`] error.
    pub(crate) fn report(&mut self, event: RunEvent) -> Result<(), ReportLimit> {
        let event = self.honest(event);
        match &event {
            RunEvent::Metric(metric) => {
                check_length("a metric name", &metric.name, MAX_METRIC_NAME)?;
                check_length("a unit", &metric.unit, MAX_UNIT)?;
                take(
                    &mut self.metrics_left,
                    1,
                    self.report_limits.metrics,
                    "metrics (report.metric calls)",
                )?;
                self.spend(metric.name.len() + metric.unit.len())?;
            }
            RunEvent::Log(_, message) => {
                take(
                    &mut self.log_lines_left,
                    1,
                    self.report_limits.log_lines,
                    "log lines (report.log calls)",
                )?;
                self.spend(message.len())?;
            }
            RunEvent::Progress(_, note) => {
                check_length("a progress note", note, MAX_NOTE)?;
                if self
                    .last_progress
                    .is_some_and(|at| at.elapsed() < PROGRESS_EVERY)
                {
                    return Ok(());
                }
                self.last_progress = Some(Instant::now());
            }
        }
        (self.events)(&event);
        match event {
            RunEvent::Metric(metric) => self.metrics.push(metric),
            RunEvent::Log(level, message) => self.logs.push((level, message)),
            RunEvent::Progress(..) => {}
        }
        Ok(())
    }

    /// On a simulated device no kernel ran, so nothing can have been verified: the host, not the
    /// plugin, decides, and a `verification` PASS becomes skipped (-1), with a log line saying so.
    fn honest(&mut self, event: RunEvent) -> RunEvent {
        match event {
            RunEvent::Metric(metric)
                if metric.name == VERIFICATION && metric.value > 0.0 && self.simulated() =>
            {
                let note = "the plugin reported verification PASS on a simulated device, where no \
                            kernel runs: recorded as skipped";
                (self.events)(&RunEvent::Log(LogLevel::Warn, note.into()));
                self.logs.push((LogLevel::Warn, note.into()));
                RunEvent::Metric(Metric {
                    value: -1.0,
                    ..metric
                })
            }
            other => other,
        }
    }

    fn simulated(&self) -> bool {
        self.gpus.iter().any(|gpu| gpu.info().simulated)
    }

    fn spend(&mut self, bytes: usize) -> Result<(), ReportLimit> {
        take(
            &mut self.report_bytes_left,
            bytes,
            self.report_limits.report_bytes,
            "bytes of reported text (metric names and units, log lines)",
        )
    }

    /// Device `index` of the run, or an error when there is none (during `describe`, or past
    /// the run's devices) or the run faulted.
    pub(crate) fn device(
        &mut self,
        index: usize,
    ) -> Result<&mut (dyn GpuBackend + 'static), GpuError> {
        self.healthy()?;
        if self.gpus.is_empty() {
            return Err(GpuError::InvalidArgument(
                "describe must not use the GPU".into(),
            ));
        }
        let count = self.gpus.len();
        self.gpus
            .get_mut(index)
            .map(|gpu| gpu.as_mut())
            .ok_or_else(|| {
                GpuError::InvalidArgument(format!(
                    "device {index} does not exist: this run has {count}"
                ))
            })
    }

    /// Devices `a` and `b` (different) at once, for copies and access between them.
    pub(crate) fn pair(
        &mut self,
        a: usize,
        b: usize,
    ) -> Result<(&mut dyn GpuBackend, &mut dyn GpuBackend), GpuError> {
        self.device(a.max(b))?;
        if a == b {
            return Err(GpuError::InvalidArgument(format!(
                "device {a} is not a peer of itself"
            )));
        }
        let (low, high) = self.gpus.split_at_mut(a.max(b));
        let (low, high) = (low[a.min(b)].as_mut(), high[0].as_mut());
        Ok(if a < b { (low, high) } else { (high, low) })
    }

    fn healthy(&self) -> Result<(), GpuError> {
        match &self.fault {
            Some(fault) => Err(GpuError::KernelFault(format!(
                "the device faulted earlier in this run: {fault}"
            ))),
            None => Ok(()),
        }
    }

    /// Remembers a kernel fault so that the run fails even if the plugin carries on.
    pub(crate) fn note<T>(&mut self, result: Result<T, GpuError>) -> Result<T, GpuError> {
        if let Err(GpuError::KernelFault(message)) = &result
            && self.fault.is_none()
        {
            self.fault = Some(message.clone());
        }
        result
    }
}

/// Takes `amount` from what is `left` of a limit named `what`.
fn take(left: &mut usize, amount: usize, limit: usize, what: &str) -> Result<(), ReportLimit> {
    match left.checked_sub(amount) {
        Some(rest) => {
            *left = rest;
            Ok(())
        }
        None => Err(ReportLimit(format!(
            "the run reported more than {limit} {what}, its limit; the run was stopped"
        ))),
    }
}

fn check_length(what: &str, text: &str, max: usize) -> Result<(), ReportLimit> {
    if text.len() > max {
        return Err(ReportLimit(format!(
            "{what} of {} bytes; at most {max} bytes are accepted",
            text.len()
        )));
    }
    Ok(())
}

impl WasiView for RunState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
