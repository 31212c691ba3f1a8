//! What one run's `Store` holds: the sandbox's WASI context, the GPU and its accounting, and
//! what the plugin reported.

use passage_gpu::{GpuBackend, GpuError};
use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::RunLimits;

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

/// What a finished run leaves: the GPU and what the plugin reported.
pub(crate) struct Finished {
    pub gpu: Box<dyn GpuBackend>,
    pub metrics: Vec<Metric>,
    pub logs: Vec<(LogLevel, String)>,
    /// The run's first kernel fault, if any.
    pub fault: Option<String>,
}

/// The data of one run's store.
pub struct RunState {
    wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limits: StoreLimits,
    pub(crate) gpu: Option<Box<dyn GpuBackend>>,
    /// Device bytes held by live buffers.
    pub(crate) gpu_bytes: u64,
    pub(crate) gpu_limit: u64,
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
        gpu: Option<Box<dyn GpuBackend>>,
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
            limits: StoreLimits::default(),
            gpu,
            gpu_bytes: 0,
            gpu_limit: limits.gpu_memory,
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
        RunState::new(None, &RunLimits::default(), Box::new(|_| {}))
    }

    /// State for a run on `gpu`.
    pub(crate) fn running(
        gpu: Box<dyn GpuBackend>,
        limits: &RunLimits,
        events: Box<dyn FnMut(&RunEvent) + Send>,
    ) -> RunState {
        RunState::new(Some(gpu), limits, events)
    }

    /// Hands back the GPU and what was reported.
    pub(crate) fn finish(self) -> Finished {
        Finished {
            gpu: self.gpu.expect("finish is only called on running state"),
            metrics: self.metrics,
            logs: self.logs,
            fault: self.fault,
        }
    }

    pub(crate) fn report(&mut self, event: RunEvent) {
        (self.events)(&event);
        match event {
            RunEvent::Metric(metric) => self.metrics.push(metric),
            RunEvent::Log(level, message) => self.logs.push((level, message)),
            RunEvent::Progress(..) => {}
        }
    }

    /// The GPU, or an error when there is none (during `describe`) or it faulted.
    pub(crate) fn gpu(&mut self) -> Result<&mut (dyn GpuBackend + 'static), GpuError> {
        if let Some(fault) = &self.fault {
            return Err(GpuError::KernelFault(format!(
                "the device faulted earlier in this run: {fault}"
            )));
        }
        self.gpu
            .as_deref_mut()
            .ok_or_else(|| GpuError::InvalidArgument("describe must not use the GPU".into()))
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

impl WasiView for RunState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
