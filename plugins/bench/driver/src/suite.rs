//! `suite-native`: the study's benchmarks (`passage-suite`) as a native Rust program on cudarc,
//! the baseline that the plugins are compared with.
//!
//! The benchmark code is the same as in the plugins (generic over `passage_suite::Gpu`), and so
//! are the CUDA C sources. This backend makes the driver calls that the agent's CUDA backend
//! makes (cudarc's driver-API layer: async copies, `cuLaunchKernel`, events), without the plugin
//! boundary: no WebAssembly, no resource table, no argument checks. The ratio plugin / native
//! is therefore what the boundary costs.

// Raw driver calls, each with its reasons: this is the native baseline.
#![allow(unsafe_code)]

use std::cell::{RefCell, UnsafeCell};
use std::ffi::{CString, c_void};
use std::sync::Arc;

use anyhow::Context;
use cudarc::driver::result as cu;
use cudarc::driver::sys::{self, CUdevice_attribute};
use cudarc::driver::{CudaContext, DriverError};
use passage_plugin_host::{ParamKind, ParamSpec, ParamValue, PluginInfo, resolve_params};
use passage_suite::{Arg, Benchmark, DeviceFacts, Gpu, Launch, Params, Res, Value};
use serde_json::json;

/// The device, through cudarc, and the figures reported so far.
pub struct NativeGpu {
    ctx: Arc<CudaContext>,
    facts: DeviceFacts,
    arch: &'static str,
    metrics: RefCell<Vec<(String, f64, String)>>,
    logs: RefCell<Vec<String>>,
}

fn driver(what: &str) -> impl FnOnce(DriverError) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// Device memory: its pointer and size.
pub struct DeviceBuffer(sys::CUdeviceptr, usize);

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        // SAFETY: allocated by cuMemAlloc in `alloc` and freed only here.
        let _ = unsafe { cu::free_sync(self.0) };
    }
}

/// Host memory: page-locked from cuMemHostAlloc, or an ordinary vector.
pub struct HostBuffer {
    ptr: *mut u8,
    len: usize,
    pageable: Option<UnsafeCell<Vec<u8>>>,
}

impl HostBuffer {
    /// The bytes at `offset..offset + len`, checked.
    fn range(&self, offset: u64, len: u64) -> Res<(*mut u8, usize)> {
        let (offset, len) = (offset as usize, len as usize);
        if offset.checked_add(len).is_none_or(|end| end > self.len) {
            return Err("range outside the host buffer".into());
        }
        // SAFETY: offset + len is inside the allocation.
        Ok((unsafe { self.ptr.add(offset) }, len))
    }
}

impl Drop for HostBuffer {
    fn drop(&mut self) {
        if self.pageable.is_none() {
            // SAFETY: page-locked memory from cuMemHostAlloc in `host_alloc`, freed only here.
            let _ = unsafe { cu::free_host(self.ptr.cast()) };
        }
    }
}

/// A loaded module.
pub struct NativeModule(sys::CUmodule);

impl Drop for NativeModule {
    fn drop(&mut self) {
        // SAFETY: loaded by cuModuleLoadData in `compile`, unloaded only here.
        let _ = unsafe { cu::module::unload(self.0) };
    }
}

/// A stream.
pub struct NativeStream(sys::CUstream);

impl Drop for NativeStream {
    fn drop(&mut self) {
        // SAFETY: created in `stream`, destroyed only here.
        let _ = unsafe { cu::stream::destroy(self.0) };
    }
}

/// An event.
pub struct NativeEvent(sys::CUevent);

impl Drop for NativeEvent {
    fn drop(&mut self) {
        // SAFETY: created in `event`, destroyed only here.
        let _ = unsafe { cu::event::destroy(self.0) };
    }
}

impl NativeGpu {
    /// Opens CUDA device `ordinal`.
    pub fn open(ordinal: usize) -> anyhow::Result<NativeGpu> {
        let ctx = CudaContext::new(ordinal).context("open the CUDA device")?;
        ctx.bind_to_thread()?;
        let attribute = |a| ctx.attribute(a).map(|v| v as u32);
        let (major, minor) = ctx.compute_capability()?;
        let facts = DeviceFacts {
            name: ctx.name()?,
            simulated: false,
            clock_khz: attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_CLOCK_RATE)?,
            multiprocessors: attribute(
                CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
            )?,
        };
        Ok(NativeGpu {
            ctx,
            facts,
            arch: Box::leak(format!("sm_{major}{minor}").into_boxed_str()),
            metrics: RefCell::default(),
            logs: RefCell::default(),
        })
    }
}

impl Gpu for NativeGpu {
    type Buffer = DeviceBuffer;
    type Host = HostBuffer;
    type Module = NativeModule;
    type Kernel = sys::CUfunction;
    type Stream = NativeStream;
    type Event = NativeEvent;

    fn device(&self) -> DeviceFacts {
        self.facts.clone()
    }

    fn alloc(&self, bytes: u64) -> Res<DeviceBuffer> {
        // SAFETY: fresh device memory, owned by the returned value.
        let ptr = unsafe { cu::malloc_sync(bytes as usize) }.map_err(driver("cuMemAlloc"))?;
        Ok(DeviceBuffer(ptr, bytes as usize))
    }

    fn write(&self, dst: &DeviceBuffer, offset: u64, data: &[u8]) -> Res<()> {
        // SAFETY: the benchmarks write inside their own allocations; the copy is synchronous.
        unsafe { cu::memcpy_htod_sync(dst.0 + offset, data) }.map_err(driver("cuMemcpyHtoD"))
    }

    fn read(&self, src: &DeviceBuffer, offset: u64, len: u64) -> Res<Vec<u8>> {
        let mut out = vec![0u8; len as usize];
        // SAFETY: as in `write`; `out` has exactly `len` bytes.
        unsafe { cu::memcpy_dtoh_sync(&mut out, src.0 + offset) }
            .map_err(driver("cuMemcpyDtoH"))?;
        Ok(out)
    }

    fn fill(&self, dst: &DeviceBuffer, value: u8, stream: &NativeStream) -> Res<()> {
        // SAFETY: sets exactly the allocation's own bytes, on a live stream.
        unsafe { cu::memset_d8_async(dst.0, value, dst.1, stream.0) }.map_err(driver("cuMemsetD8"))
    }

    fn copy(
        &self,
        dst: &DeviceBuffer,
        src: &DeviceBuffer,
        len: u64,
        stream: &NativeStream,
    ) -> Res<()> {
        // SAFETY: both allocations hold at least `len` bytes (the benchmarks' sizes).
        unsafe { cu::memcpy_dtod_async(dst.0, src.0, len as usize, stream.0) }
            .map_err(driver("cuMemcpyDtoD"))
    }

    fn host_alloc(&self, bytes: u64, pinned: bool) -> Res<HostBuffer> {
        let len = bytes as usize;
        if pinned {
            // SAFETY: page-locked memory owned by the returned value.
            let ptr = unsafe { cu::malloc_host(len, 0) }.map_err(driver("cuMemHostAlloc"))?;
            Ok(HostBuffer {
                ptr: ptr.cast(),
                len,
                pageable: None,
            })
        } else {
            let cell = UnsafeCell::new(vec![0u8; len]);
            let ptr = cell.get();
            // SAFETY: the vector lives in the cell as long as the buffer and is never resized.
            let data = unsafe { (*ptr).as_mut_ptr() };
            Ok(HostBuffer {
                ptr: data,
                len,
                pageable: Some(cell),
            })
        }
    }

    fn host_write(&self, dst: &HostBuffer, offset: u64, data: &[u8]) -> Res<()> {
        let (ptr, len) = dst.range(offset, data.len() as u64)?;
        // SAFETY: `range` checked the bounds; no copy is in flight on this memory when the
        // benchmarks write it (they synchronise first).
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), ptr, len) };
        Ok(())
    }

    fn host_read(&self, src: &HostBuffer, offset: u64, len: u64) -> Res<Vec<u8>> {
        let (ptr, len) = src.range(offset, len)?;
        // SAFETY: as in `host_write`.
        Ok(unsafe { std::slice::from_raw_parts(ptr, len) }.to_vec())
    }

    fn upload(
        &self,
        dst: &DeviceBuffer,
        src: &HostBuffer,
        len: u64,
        stream: &NativeStream,
    ) -> Res<()> {
        let (ptr, len) = src.range(0, len)?;
        // SAFETY: the host range is checked and outlives the copy (the buffer is dropped only
        // after the benchmark has synchronised); the device buffer holds `len` bytes.
        let host = unsafe { std::slice::from_raw_parts(ptr, len) };
        // SAFETY: as above.
        unsafe { cu::memcpy_htod_async(dst.0, host, stream.0) }.map_err(driver("cuMemcpyHtoDAsync"))
    }

    fn download(
        &self,
        dst: &HostBuffer,
        src: &DeviceBuffer,
        len: u64,
        stream: &NativeStream,
    ) -> Res<()> {
        let (ptr, len) = dst.range(0, len)?;
        // SAFETY: as in `upload`, for the opposite direction.
        let host = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
        // SAFETY: as above.
        unsafe { cu::memcpy_dtoh_async(host, src.0, stream.0) }.map_err(driver("cuMemcpyDtoHAsync"))
    }

    fn compile(&self, name: &str, source: &str) -> Res<NativeModule> {
        let options = cudarc::nvrtc::CompileOptions {
            arch: Some(self.arch),
            name: Some(name.to_string()),
            ..Default::default()
        };
        let ptx = cudarc::nvrtc::compile_ptx_with_opts(source, options)
            .map_err(|e| format!("{name}: {e:?}"))?;
        let image = CString::new(ptx.to_src()).map_err(|_| "PTX with a NUL byte".to_string())?;
        // SAFETY: a NUL-terminated PTX image that lives across the call.
        let module = unsafe { cu::module::load_data(image.as_ptr().cast::<c_void>()) }
            .map_err(driver("cuModuleLoadData"))?;
        Ok(NativeModule(module))
    }

    fn kernel(&self, module: &NativeModule, name: &str) -> Res<sys::CUfunction> {
        let c_name = CString::new(name).map_err(|_| "kernel name with NUL".to_string())?;
        // SAFETY: a loaded module of this context.
        unsafe { cu::module::get_function(module.0, c_name) }.map_err(driver("cuModuleGetFunction"))
    }

    fn launch(
        &self,
        kernel: &sys::CUfunction,
        config: Launch,
        args: &[Arg<'_, DeviceBuffer>],
        stream: &NativeStream,
    ) -> Res<()> {
        const MAX: usize = 16;
        if args.len() > MAX {
            return Err(format!("at most {MAX} kernel arguments"));
        }
        let mut slots = [0u64; MAX];
        for (slot, arg) in slots.iter_mut().zip(args) {
            *slot = match *arg {
                Arg::Buffer(b) => b.0,
                Arg::I32(v) => u64::from(v as u32),
                Arg::I64(v) => v as u64,
                Arg::F32(v) => u64::from(v.to_bits()),
            };
        }
        let mut pointers = [std::ptr::null_mut::<c_void>(); MAX];
        for (pointer, slot) in pointers.iter_mut().zip(slots.iter_mut()) {
            *pointer = (slot as *mut u64).cast();
        }
        // SAFETY: the suite's kernels are launched with the arguments they declare (the same
        // calls pass the plugin host's checks); `slots` outlives the call, and little-endian
        // slots hold 4-byte values in their first bytes.
        unsafe {
            cu::launch_kernel(
                *kernel,
                config.grid,
                config.block,
                config.shared_mem_bytes,
                stream.0,
                &mut pointers[..args.len()],
            )
        }
        .map_err(driver("cuLaunchKernel"))
    }

    fn stream(&self) -> Res<NativeStream> {
        cu::stream::create(cu::stream::StreamKind::NonBlocking)
            .map(NativeStream)
            .map_err(driver("cuStreamCreate"))
    }

    fn synchronize(&self, stream: &NativeStream) -> Res<()> {
        // SAFETY: a live stream.
        unsafe { cu::stream::synchronize(stream.0) }.map_err(driver("cuStreamSynchronize"))
    }

    fn event(&self) -> Res<NativeEvent> {
        cu::event::create(sys::CUevent_flags::CU_EVENT_DEFAULT)
            .map(NativeEvent)
            .map_err(driver("cuEventCreate"))
    }

    fn record(&self, event: &NativeEvent, stream: &NativeStream) -> Res<()> {
        // SAFETY: a live event and stream.
        unsafe { cu::event::record(event.0, stream.0) }.map_err(driver("cuEventRecord"))
    }

    fn wait(&self, event: &NativeEvent) -> Res<()> {
        // SAFETY: a live event.
        unsafe { cu::event::synchronize(event.0) }.map_err(driver("cuEventSynchronize"))
    }

    fn query(&self, event: &NativeEvent) -> Res<bool> {
        // SAFETY: a live event; the query does not block.
        match unsafe { cu::event::query(event.0) } {
            Ok(()) => Ok(true),
            Err(DriverError(sys::CUresult::CUDA_ERROR_NOT_READY)) => Ok(false),
            Err(e) => Err(format!("cuEventQuery: {e}")),
        }
    }

    fn elapsed_ms(&self, start: &NativeEvent, end: &NativeEvent) -> Res<f64> {
        // SAFETY: live events.
        unsafe { cu::event::elapsed(start.0, end.0) }
            .map(f64::from)
            .map_err(driver("cuEventElapsedTime"))
    }

    fn metric(&self, name: &str, value: f64, unit: &str) {
        self.metrics
            .borrow_mut()
            .push((name.to_string(), value, unit.to_string()));
    }

    fn log(&self, message: &str) {
        self.logs.borrow_mut().push(message.to_string());
    }
}

fn spec(decl: passage_suite::ParamDecl) -> ParamSpec {
    let (kind, default) = match decl.default {
        Value::Integer(v) => (ParamKind::Integer, ParamValue::Integer(v)),
        Value::Float(v) => (ParamKind::Float, ParamValue::Float(v)),
        Value::Boolean(v) => (ParamKind::Boolean, ParamValue::Boolean(v)),
        Value::Text(v) => (ParamKind::Text, ParamValue::Text(v)),
    };
    ParamSpec {
        name: decl.name.into(),
        summary: decl.summary.into(),
        kind,
        default,
        min: decl.min,
        max: decl.max,
        unit: decl.unit.into(),
    }
}

fn run_benchmark<B: Benchmark>(given: &[(String, String)]) -> anyhow::Result<serde_json::Value> {
    let info = PluginInfo {
        name: B::NAME.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        summary: B::SUMMARY.into(),
        params: B::params().into_iter().map(spec).collect(),
    };
    let resolved = resolve_params(&info, given)?;
    let params = Params::new(
        resolved
            .iter()
            .map(|(name, value)| {
                let value = match value {
                    ParamValue::Integer(v) => Value::Integer(*v),
                    ParamValue::Float(v) => Value::Float(*v),
                    ParamValue::Boolean(v) => Value::Boolean(*v),
                    ParamValue::Text(v) => Value::Text(v.clone()),
                };
                (name.clone(), value)
            })
            .collect(),
    );
    let gpu = NativeGpu::open(0)?;
    let started = std::time::Instant::now();
    let outcome = B::run(&gpu, &params);
    let wall = started.elapsed().as_secs_f64();
    gpu.ctx.synchronize()?;
    let metrics: Vec<_> = gpu
        .metrics
        .borrow()
        .iter()
        .map(|(name, value, unit)| json!({ "name": name, "value": value, "unit": unit }))
        .collect();
    let logs: Vec<_> = gpu
        .logs
        .borrow()
        .iter()
        .map(|m| json!({ "level": "info", "message": m }))
        .collect();
    Ok(json!({
        "plugin": B::NAME,
        "native": true,
        "ok": outcome.is_ok(),
        "error": outcome.err(),
        "simulated": false,
        "device": { "name": gpu.facts.name },
        "params": resolved.iter().map(|(k, v)| (k.clone(), match v {
            ParamValue::Integer(v) => json!(v),
            ParamValue::Float(v) => json!(v),
            ParamValue::Boolean(v) => json!(v),
            ParamValue::Text(v) => json!(v),
        })).collect::<serde_json::Map<_, _>>(),
        "metrics": metrics,
        "logs": logs,
        "time": { "wall_s": wall },
    }))
}

/// Runs the suite's benchmark `name` natively with `name=value` parameters; prints JSON shaped
/// like `passage-agent run --json`.
pub fn suite_native(name: &str, given: &[String]) -> anyhow::Result<bool> {
    let given = given
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                .with_context(|| format!("--param {p:?}: expected NAME=VALUE"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let report = passage_suite::with_benchmark!(name, B => run_benchmark::<B>(&given)?, _ => {
        anyhow::bail!("{name} is not a benchmark of the suite")
    });
    let ok = report["ok"].as_bool().unwrap_or(false);
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(ok)
}
