//! Runs Passage plugins: WebAssembly components of the `passage:plugin` world.
//!
//! One [`PluginEngine`] per process compiles components (kept on disk, keyed by content, engine
//! settings and wasmtime version, and mapped into memory when seen again) and holds the linker. Each run gets a fresh
//! `Store` with its own limits (wasm memory, GPU memory, live resources, wall time by epoch
//! interruption) and sees only the `gpu` and `report` imports plus WASI clocks and random: no
//! files, no sockets, no environment. Whatever a run leaves on the GPU is freed when it ends.

mod bindings;
mod check;
mod compiled;
mod gpu_host;
mod limits;
mod params;
mod state;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use passage_gpu::{GpuBackend, Leftovers};
use sha2::{Digest, Sha256};
use thiserror::Error;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, Store, Trap};

pub use check::{CheckReport, Finding, Verdict};
pub use limits::{LimitSettings, RunLimits};
pub use params::{ParamKind, ParamSpec, ParamValue, PluginInfo, resolve_params};
pub use state::{LogLevel, Metric, RunEvent};

use crate::bindings::Plugin;
use crate::compiled::CompiledCache;
use crate::limits::{LimitReached, MemoryLimiter};
use crate::state::RunState;

/// How often the epoch advances: the resolution of wall-time limits.
const EPOCH_TICK: Duration = Duration::from_millis(10);
/// The interface whose import asks for every GPU of the machine.
const PEERS_INTERFACE: &str = "passage:plugin/peers";
/// How long `describe` may take: it only returns a record, and uploads are described on the
/// portal, which must not be held up by a plugin that loops.
const DESCRIBE_TIME: Duration = Duration::from_secs(5);

/// Errors of loading and running plugins, each with a message for the plugin's author.
#[derive(Debug, Error)]
pub enum PluginError {
    /// The bytes are not a WebAssembly component (garbage, or a core module).
    #[error("not a WebAssembly component: {0}")]
    NotAComponent(String),
    /// The component does not fit the `passage:plugin` world (other imports or exports).
    #[error("not a Passage plugin: {0}")]
    WrongWorld(String),
    /// A parameter is unknown, of the wrong kind or out of range.
    #[error("parameter {name}: {message}")]
    BadParam {
        /// The parameter.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// The plugin trapped (a panic, an unreachable, a failed memory growth).
    #[error("the plugin crashed: {0}")]
    Trap(String),
    /// The run passed its wall-time limit.
    #[error("the plugin ran past its time limit of {} s: raise it with {setting}", limit.as_secs_f64())]
    TimedOut {
        /// The limit.
        limit: Duration,
        /// How to change it.
        setting: &'static str,
    },
    /// The plugin reported more than the run's limits allow (metrics, log lines, bytes).
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
    /// The plugin returned an error.
    #[error("the plugin failed: {0}")]
    Failed(String),
    /// The engine could not be set up.
    #[error("plugin engine: {0}")]
    Engine(String),
}

/// A compiled plugin and what it says about itself.
#[derive(Clone)]
pub struct LoadedPlugin {
    component: Component,
    /// The plugin's description from `describe`.
    pub info: PluginInfo,
    /// SHA-256 of the component's bytes, hex.
    pub sha256: String,
    /// True when it imports `peers`: it runs on every GPU of a machine, not on one.
    pub wants_peers: bool,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("info", &self.info)
            .field("sha256", &self.sha256)
            .field("wants_peers", &self.wants_peers)
            .finish()
    }
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// Every metric, in the order reported.
    pub metrics: Vec<Metric>,
    /// Log lines.
    pub logs: Vec<(LogLevel, String)>,
    /// Wall time of the run.
    pub wall: Duration,
    /// GPU objects the plugin did not free itself (freed by the host).
    pub leftovers: Leftovers,
    /// True when the GPU was simulated: figures are not measurements.
    pub simulated: bool,
}

/// The result of [`PluginEngine::run`]: the backends come back whatever happened.
pub struct RunResult {
    /// The GPU backend, cleaned up and ready for the next run.
    pub gpu: Box<dyn GpuBackend>,
    /// The run's further devices ([`PluginEngine::run_on`]), cleaned up as well.
    pub peers: Vec<Box<dyn GpuBackend>>,
    /// The run's report or why it failed.
    pub outcome: Result<RunReport, PluginError>,
}

/// Compiles and runs plugins. Cheap to clone; one per process is enough.
#[derive(Clone)]
pub struct PluginEngine {
    engine: Engine,
    compiled: Option<CompiledCache>,
    linker: Arc<Linker<RunState>>,
    ticker: Arc<EpochTicker>,
}

impl std::fmt::Debug for PluginEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginEngine").finish_non_exhaustive()
    }
}

/// Advances the engine's epoch on a thread while the engine lives.
struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl PluginEngine {
    /// An engine whose compiled components are cached under `cache_dir` (none: no cache).
    pub fn new(cache_dir: Option<&Path>) -> Result<PluginEngine, PluginError> {
        let engine_error = |e: wasmtime::Error| PluginError::Engine(format!("{e:#}"));
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        // Plugins are synchronous; without the async machinery every host call is cheaper.
        config.concurrency_support(false);
        config.epoch_interruption(true);
        let mut pooling = wasmtime::PoolingAllocationConfig::default();
        pooling
            .total_component_instances(64)
            .total_core_instances(256)
            .total_memories(64)
            .total_tables(128)
            .max_memory_size(1 << 30);
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pooling));
        let engine = Engine::new(&config).map_err(engine_error)?;
        let compiled = cache_dir
            .map(|dir| {
                CompiledCache::open(dir, &engine).map_err(|e| {
                    PluginError::Engine(format!("cache directory {}: {e}", dir.display()))
                })
            })
            .transpose()?;

        let mut linker = Linker::<RunState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(engine_error)?;
        Plugin::add_to_linker::<RunState, HasSelf<RunState>>(&mut linker, |state| state)
            .map_err(engine_error)?;

        let stop = Arc::new(AtomicBool::new(false));
        let ticker_engine = engine.weak();
        let ticker_stop = stop.clone();
        std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || {
                while !ticker_stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match ticker_engine.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(|e| PluginError::Engine(format!("epoch thread: {e}")))?;

        Ok(PluginEngine {
            engine,
            compiled,
            linker: Arc::new(linker),
            ticker: Arc::new(EpochTicker { stop }),
        })
    }

    /// Compiles `bytes` and asks the plugin to describe itself. Garbage, core modules and
    /// components of other worlds are refused with a clear error.
    pub fn load(&self, bytes: &[u8]) -> Result<LoadedPlugin, PluginError> {
        if !bytes.starts_with(b"\0asm") {
            return Err(PluginError::NotAComponent(
                "the file does not start with the WebAssembly magic bytes".into(),
            ));
        }
        let sha256 = hex::encode(Sha256::digest(bytes));
        let component = match &self.compiled {
            Some(cache) => cache.component(&self.engine, &sha256, bytes),
            None => Component::from_binary(&self.engine, bytes),
        }
        .map_err(|e| PluginError::NotAComponent(format!("{e:#}")))?;
        let limits = RunLimits {
            wall_time: DESCRIBE_TIME,
            settings: LimitSettings {
                wall_time: "nothing: `describe` only returns a record, without loops or the GPU",
                ..LimitSettings::COMMAND_LINE
            },
            ..RunLimits::default()
        };
        let mut store = self.store(RunState::describing(), &limits);
        let plugin = self.instantiate(&mut store, &component)?;
        let info = plugin
            .call_describe(&mut store)
            .map_err(|e| classify_trap(e, &limits))?;
        let info = PluginInfo::from_wit(info).map_err(PluginError::WrongWorld)?;
        let wants_peers = component
            .component_type()
            .imports(&self.engine)
            .any(|(name, _)| name.starts_with(PEERS_INTERFACE));
        Ok(LoadedPlugin {
            component,
            info,
            sha256,
            wants_peers,
        })
    }

    /// Runs `plugin` on `gpu` with `params` (already resolved against the plugin's description).
    /// `events` sees metrics, progress and log lines as they happen.
    pub fn run(
        &self,
        plugin: &LoadedPlugin,
        params: &[(String, ParamValue)],
        gpu: Box<dyn GpuBackend>,
        limits: &RunLimits,
        events: Box<dyn FnMut(&RunEvent) + Send>,
    ) -> RunResult {
        self.run_on(plugin, params, gpu, Vec::new(), limits, events)
    }

    /// As [`PluginEngine::run`], with `peers` as the run's devices 1, 2, … for the `peers`
    /// interface. The limits hold for all the devices together.
    pub fn run_on(
        &self,
        plugin: &LoadedPlugin,
        params: &[(String, ParamValue)],
        gpu: Box<dyn GpuBackend>,
        peers: Vec<Box<dyn GpuBackend>>,
        limits: &RunLimits,
        events: Box<dyn FnMut(&RunEvent) + Send>,
    ) -> RunResult {
        let started = Instant::now();
        let simulated = gpu.info().simulated || peers.iter().any(|p| p.info().simulated);
        let mut gpus = vec![gpu];
        gpus.extend(peers);
        let mut store = self.store(RunState::running(gpus, limits, events), limits);
        let outcome = self
            .instantiate(&mut store, &plugin.component)
            .and_then(|instance| {
                let wit_params: Vec<bindings::Param> = params
                    .iter()
                    .map(|(name, value)| params::to_wit(name, value))
                    .collect();
                instance
                    .call_run(&mut store, &wit_params)
                    .map_err(|e| classify_trap(e, limits))
            });
        let wall = started.elapsed();
        let state::Finished {
            mut gpus,
            metrics,
            logs,
            fault,
        } = store.into_data().finish();
        let mut leftovers = Leftovers::default();
        for gpu in &mut gpus {
            leftovers += gpu.end_run();
        }
        let gpu = gpus.remove(0);
        if !leftovers.is_empty() {
            tracing::warn!(plugin = %plugin.info.name, %leftovers, "the run left GPU objects behind; freed");
        }
        let outcome = match outcome {
            Ok(Ok(())) => match fault {
                // A fault the plugin chose to ignore still fails the run.
                Some(fault) => Err(PluginError::Failed(fault)),
                None => Ok(RunReport {
                    metrics,
                    logs,
                    wall,
                    leftovers,
                    simulated,
                }),
            },
            Ok(Err(message)) => Err(PluginError::Failed(message)),
            Err(e) => Err(e),
        };
        RunResult {
            gpu,
            peers: gpus,
            outcome,
        }
    }

    fn store(&self, state: RunState, limits: &RunLimits) -> Store<RunState> {
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limits);
        store.data_mut().limits = MemoryLimiter::new(limits);
        // One call's data (a `write`'s bytes) passes through the plugin's memory, which is the
        // real bound; wasmtime's own, smaller cap per host call would stop a legal transfer
        // with a message about fuel.
        store.set_hostcall_fuel(limits.wasm_memory.saturating_mul(2));
        let ticks = (limits.wall_time.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64;
        store.set_epoch_deadline(ticks);
        // Keep the ticker alive as long as stores exist.
        let _ = &self.ticker;
        store
    }

    fn instantiate(
        &self,
        store: &mut Store<RunState>,
        component: &Component,
    ) -> Result<Plugin, PluginError> {
        Plugin::instantiate(&mut *store, component, &self.linker).map_err(|e| {
            let text = format!("{e:#}");
            if e.downcast_ref::<Trap>().is_some() {
                PluginError::Trap(text)
            } else {
                PluginError::WrongWorld(text)
            }
        })
    }
}

fn classify_trap(error: wasmtime::Error, limits: &RunLimits) -> PluginError {
    if let Some(limit) = error.downcast_ref::<state::ReportLimit>() {
        return PluginError::LimitExceeded(limit.0.clone());
    }
    if let Some(limit) = error.downcast_ref::<LimitReached>() {
        return PluginError::LimitExceeded(limit.0.clone());
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => PluginError::TimedOut {
            limit: limits.wall_time,
            setting: limits.settings.wall_time,
        },
        _ => PluginError::Trap(format!("{error:#}")),
    }
}
