//! The real GPU, through the CUDA driver API (cudarc, loaded at run time).
//!
//! The library is found when the backend opens, so the agent builds and starts on machines
//! without CUDA and says so. Each backend owns its own (non-primary) context. A kernel fault
//! (an illegal address, say) is sticky for the whole process: on the H100 driver measured, even a
//! new context in the same process fails afterwards. So after a fault [`GpuBackend::end_run`]
//! destroys the context and the backend refuses further work with a message that says why;
//! isolation between runs comes from running each job in its own process, as the agent does.
//! CUDA C is compiled with NVRTC ([`crate::nvrtc`]) and the PTX cached on disk by the hash of the source, the
//! architecture and the NVRTC version.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ffi::{CString, c_void};
use std::hash::{BuildHasherDefault, Hasher};
use std::path::PathBuf;
use std::sync::Arc;

use cudarc::driver::result as cu;
use cudarc::driver::sys::{self, CUdevice_attribute};
use cudarc::driver::{CudaContext, DriverError};
use sha2::{Digest, Sha256};

use crate::nvrtc;
use crate::signature::{self, Signatures};
use crate::{DeviceInfo, GpuBackend, GpuError, Handle, KernelArg, LaunchConfig, Leftovers};

/// Handles are small unique integers: hashing them is needless work on the launch path.
#[derive(Default)]
struct HandleHasher(u64);

impl Hasher for HandleHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 << 8) | u64::from(*byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

type Objects = HashMap<Handle, Object, BuildHasherDefault<HandleHasher>>;

enum Object {
    Buffer {
        ptr: sys::CUdeviceptr,
        size: usize,
    },
    PinnedHost {
        ptr: *mut u8,
        size: usize,
    },
    PageableHost(Vec<u8>),
    Module {
        module: sys::CUmodule,
        kernels: Signatures,
        global_bytes: u64,
    },
    Kernel(sys::CUfunction),
    Stream(sys::CUstream),
    Event(sys::CUevent),
}

/// One CUDA device and everything a run created on it.
pub struct CudaGpu {
    /// The device context; `None` only while a faulted one is being replaced.
    ctx: Option<Arc<CudaContext>>,
    info: DeviceInfo,
    arch: &'static str,
    objects: Objects,
    next: u64,
    ptx_cache: Option<PathBuf>,
    faulted: bool,
    /// Contexts this one was given direct access to during the run.
    peers: Vec<sys::CUcontext>,
}

// SAFETY: the raw CUDA handles in `objects` are plain identifiers that the driver accepts from any
// thread once the owning context is current; every method binds `ctx` to the calling thread
// before using them, and `&mut self` keeps two threads from using them at once. Pinned host
// pointers are owned exclusively by this value.
unsafe impl Send for CudaGpu {}

impl std::fmt::Debug for CudaGpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaGpu")
            .field("info", &self.info)
            .field("objects", &self.objects.len())
            .finish()
    }
}

fn driver(e: DriverError) -> GpuError {
    use sys::cudaError_enum as E;
    let name = e
        .error_string()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|_| format!("{:?}", e.0));
    match e.0 {
        E::CUDA_ERROR_OUT_OF_MEMORY => GpuError::OutOfMemory(name),
        E::CUDA_ERROR_ILLEGAL_ADDRESS
        | E::CUDA_ERROR_LAUNCH_FAILED
        | E::CUDA_ERROR_MISALIGNED_ADDRESS
        | E::CUDA_ERROR_ILLEGAL_INSTRUCTION
        | E::CUDA_ERROR_HARDWARE_STACK_ERROR
        | E::CUDA_ERROR_INVALID_PC
        | E::CUDA_ERROR_ASSERT
        | E::CUDA_ERROR_LAUNCH_TIMEOUT => GpuError::KernelFault(name),
        E::CUDA_ERROR_NOT_FOUND => GpuError::NotFound(name),
        E::CUDA_ERROR_INVALID_VALUE
        | E::CUDA_ERROR_INVALID_HANDLE
        | E::CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES
        | E::CUDA_ERROR_INVALID_PTX
        | E::CUDA_ERROR_INVALID_IMAGE => GpuError::InvalidArgument(name),
        _ => GpuError::Driver(name),
    }
}

/// How many CUDA devices this machine has. Fails with a clear message when no CUDA driver is
/// installed.
pub fn device_count() -> Result<usize, GpuError> {
    // SAFETY: only probes whether the shared library can be loaded; no CUDA call is made.
    if !unsafe { sys::is_culib_present() } {
        return Err(GpuError::Driver(
            "no CUDA driver found (libcuda.so is not installed): use --backend fake to try plugins without a GPU"
                .into(),
        ));
    }
    let count = CudaContext::device_count().map_err(driver)?;
    Ok(usize::try_from(count).unwrap_or(0))
}

impl CudaGpu {
    /// Opens device `ordinal`. Fails with a clear message when no CUDA driver is installed.
    pub fn open(ordinal: usize, ptx_cache: Option<PathBuf>) -> Result<CudaGpu, GpuError> {
        let count = device_count()?;
        if ordinal >= count {
            return Err(GpuError::InvalidArgument(format!(
                "device {ordinal} does not exist: this machine has {count} CUDA device(s)"
            )));
        }
        let ctx = CudaContext::new_non_primary(ordinal, 0).map_err(driver)?;
        let attribute = |a: CUdevice_attribute| {
            ctx.attribute(a)
                .map(|v| u32::try_from(v).unwrap_or(0))
                .map_err(driver)
        };
        let (major, minor) = ctx.compute_capability().map_err(driver)?;
        let info = DeviceInfo {
            name: ctx.name().map_err(driver)?,
            total_memory: ctx.total_mem().map_err(driver)? as u64,
            capability: (major as u32, minor as u32),
            multiprocessors: attribute(
                CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
            )?,
            clock_khz: attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_CLOCK_RATE)?,
            memory_clock_khz: attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE)?,
            memory_bus_width: attribute(
                CUdevice_attribute::CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH,
            )?,
            pci_bus_id: format!(
                "{:04x}:{:02x}:{:02x}.0",
                attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID)?,
                attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_PCI_BUS_ID)?,
                attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID)?
            ),
            simulated: false,
        };
        let arch = nvrtc::arch((major as u32, minor as u32));
        Ok(CudaGpu {
            ctx: Some(ctx),
            info,
            arch,
            objects: Objects::default(),
            next: 1,
            ptx_cache,
            faulted: false,
            peers: Vec::new(),
        })
    }

    fn context(&self) -> Result<&Arc<CudaContext>, GpuError> {
        self.ctx.as_ref().ok_or_else(|| {
            GpuError::Driver("an earlier kernel fault left CUDA unusable in this process".into())
        })
    }

    fn bind(&mut self) -> Result<(), GpuError> {
        match &self.ctx {
            Some(ctx) => ctx.bind_to_thread().map_err(driver),
            None => Err(GpuError::Driver(
                "an earlier kernel fault left CUDA unusable in this process: run the next job in a new \
                 process (passage-agent runs every job in its own)"
                    .into(),
            )),
        }
    }

    fn insert(&mut self, object: Object) -> Handle {
        let handle = Handle(self.next);
        self.next += 1;
        self.objects.insert(handle, object);
        handle
    }

    fn track<T>(&mut self, result: Result<T, DriverError>) -> Result<T, GpuError> {
        result.map_err(|e| {
            let error = driver(e);
            if matches!(error, GpuError::KernelFault(_)) {
                self.faulted = true;
            }
            error
        })
    }

    fn device_ptr(&self, handle: Handle) -> Result<sys::CUdeviceptr, GpuError> {
        match self.objects.get(&handle) {
            Some(Object::Buffer { ptr, .. }) => Ok(*ptr),
            _ => Err(GpuError::InvalidArgument(format!(
                "{handle:?} is not a device buffer"
            ))),
        }
    }

    fn stream(&self, handle: Handle) -> Result<sys::CUstream, GpuError> {
        match self.objects.get(&handle) {
            Some(Object::Stream(stream)) => Ok(*stream),
            _ => Err(GpuError::InvalidArgument(format!(
                "{handle:?} is not a stream"
            ))),
        }
    }

    fn event(&self, handle: Handle) -> Result<sys::CUevent, GpuError> {
        match self.objects.get(&handle) {
            Some(Object::Event(event)) => Ok(*event),
            _ => Err(GpuError::InvalidArgument(format!(
                "{handle:?} is not an event"
            ))),
        }
    }

    /// Host memory as a byte slice: `(pointer, size)` for pinned, or the vector.
    fn host_bytes(&mut self, handle: Handle) -> Result<&mut [u8], GpuError> {
        match self.objects.get_mut(&handle) {
            Some(Object::PinnedHost { ptr, size }) => {
                // SAFETY: `ptr` came from cuMemHostAlloc with exactly `size` bytes, is owned by
                // this object until it is freed, and `&mut self` makes this the only live
                // reference.
                Ok(unsafe { std::slice::from_raw_parts_mut(*ptr, *size) })
            }
            Some(Object::PageableHost(bytes)) => Ok(bytes.as_mut_slice()),
            _ => Err(GpuError::InvalidArgument(format!(
                "{handle:?} is not host memory"
            ))),
        }
    }

    fn compile_ptx(&self, name: &str, source: &str) -> Result<String, GpuError> {
        let key = hex::encode(Sha256::digest(format!(
            "{}\0{}\0{}",
            self.arch,
            nvrtc::find()
                .map(|n| n.version.as_str())
                .unwrap_or_default(),
            source
        )));
        let cached = self
            .ptx_cache
            .as_ref()
            .map(|dir| dir.join(format!("{key}.ptx")));
        if let Some(path) = &cached
            && let Ok(ptx) = std::fs::read_to_string(path)
        {
            return Ok(ptx);
        }
        let text = nvrtc::compile(name, source, self.arch)?;
        if let Some(path) = cached {
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            // Written to a temporary name first so that a reader never sees half a file.
            let temporary = path.with_extension(format!("ptx.{}", std::process::id()));
            if std::fs::write(&temporary, &text).is_ok() {
                let _ = std::fs::rename(&temporary, &path);
            }
        }
        Ok(text)
    }

    fn free_object(object: Object) {
        // Errors are ignored: this runs during cleanup, after a fault among other times, and
        // the context is replaced after a fault anyway.
        match object {
            // SAFETY: each handle was created by the matching CUDA call in this context and is
            // removed from the table here, so it is released exactly once.
            Object::Buffer { ptr, .. } => unsafe {
                let _ = cu::free_sync(ptr);
            },
            // SAFETY: as above, for memory from cuMemHostAlloc.
            Object::PinnedHost { ptr, .. } => unsafe {
                let _ = cu::free_host(ptr.cast());
            },
            Object::PageableHost(_) | Object::Kernel(_) => {}
            // SAFETY: as above, for a module from cuModuleLoadData.
            Object::Module { module, .. } => unsafe {
                let _ = cu::module::unload(module);
            },
            // SAFETY: as above, for a stream from cuStreamCreate.
            Object::Stream(stream) => unsafe {
                let _ = cu::stream::destroy(stream);
            },
            // SAFETY: as above, for an event from cuEventCreate.
            Object::Event(event) => unsafe {
                let _ = cu::event::destroy(event);
            },
        }
    }

    fn remove(
        &mut self,
        handle: Handle,
        what: &str,
        matches: fn(&Object) -> bool,
    ) -> Result<(), GpuError> {
        self.bind()?;
        match self.objects.get(&handle) {
            Some(object) if matches(object) => {
                let object = self.objects.remove(&handle).expect("present");
                CudaGpu::free_object(object);
                Ok(())
            }
            _ => Err(GpuError::InvalidArgument(format!(
                "{handle:?} is not a {what}"
            ))),
        }
    }
}

fn checked(size: u64) -> Result<usize, GpuError> {
    usize::try_from(size).map_err(|_| GpuError::InvalidArgument(format!("{size} bytes")))
}

impl GpuBackend for CudaGpu {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn alloc(&mut self, size: u64) -> Result<Handle, GpuError> {
        self.bind()?;
        let size = checked(size)?;
        // SAFETY: allocates fresh device memory in the current context; the pointer is kept in
        // the table and freed exactly once.
        let ptr = unsafe { cu::malloc_sync(size) };
        let ptr = self.track(ptr)?;
        Ok(self.insert(Object::Buffer { ptr, size }))
    }

    fn free(&mut self, buffer: Handle) -> Result<(), GpuError> {
        self.remove(buffer, "device buffer", |o| {
            matches!(o, Object::Buffer { .. })
        })
    }

    fn write(&mut self, buffer: Handle, offset: u64, data: &[u8]) -> Result<(), GpuError> {
        self.bind()?;
        let ptr = self.device_ptr(buffer)?;
        // SAFETY: the caller checked that offset + data.len() lies inside the buffer; the copy
        // is synchronous, so `data` outlives it.
        let result = unsafe { cu::memcpy_htod_sync(ptr + offset, data) };
        self.track(result)
    }

    fn read(&mut self, buffer: Handle, offset: u64, len: u64) -> Result<Vec<u8>, GpuError> {
        self.bind()?;
        let ptr = self.device_ptr(buffer)?;
        let mut out = vec![0u8; checked(len)?];
        // SAFETY: the caller checked the range; the copy is synchronous into `out`, which has
        // exactly `len` bytes.
        let result = unsafe { cu::memcpy_dtoh_sync(&mut out, ptr + offset) };
        self.track(result)?;
        Ok(out)
    }

    fn fill(&mut self, buffer: Handle, value: u8, stream: Handle) -> Result<(), GpuError> {
        self.bind()?;
        let (ptr, size) = match self.objects.get(&buffer) {
            Some(Object::Buffer { ptr, size }) => (*ptr, *size),
            _ => {
                return Err(GpuError::InvalidArgument(format!(
                    "{buffer:?} is not a device buffer"
                )));
            }
        };
        let stream = self.stream(stream)?;
        // SAFETY: sets exactly the buffer's own bytes, on a stream of this context.
        let result = unsafe { cu::memset_d8_async(ptr, value, size, stream) };
        self.track(result)
    }

    fn copy(
        &mut self,
        dst: Handle,
        dst_offset: u64,
        src: Handle,
        src_offset: u64,
        len: u64,
        stream: Handle,
    ) -> Result<(), GpuError> {
        self.bind()?;
        let (dst, src) = (self.device_ptr(dst)?, self.device_ptr(src)?);
        let stream = self.stream(stream)?;
        // SAFETY: the caller checked both ranges against the buffers' sizes.
        let result = unsafe {
            cu::memcpy_dtod_async(dst + dst_offset, src + src_offset, checked(len)?, stream)
        };
        self.track(result)
    }

    fn host_alloc(&mut self, size: u64, pinned: bool) -> Result<Handle, GpuError> {
        self.bind()?;
        let size = checked(size)?;
        if pinned {
            // SAFETY: allocates page-locked host memory; the pointer is owned by the table entry
            // and freed exactly once.
            let ptr = unsafe { cu::malloc_host(size, 0) };
            let ptr = self.track(ptr)?;
            Ok(self.insert(Object::PinnedHost {
                ptr: ptr.cast(),
                size,
            }))
        } else {
            let mut bytes = Vec::new();
            bytes
                .try_reserve_exact(size)
                .map_err(|_| GpuError::OutOfMemory(format!("{size} bytes of host memory")))?;
            bytes.resize(size, 0);
            Ok(self.insert(Object::PageableHost(bytes)))
        }
    }

    fn host_free(&mut self, buffer: Handle) -> Result<(), GpuError> {
        self.remove(buffer, "host buffer", |o| {
            matches!(o, Object::PinnedHost { .. } | Object::PageableHost(_))
        })
    }

    fn host_write(&mut self, buffer: Handle, offset: u64, data: &[u8]) -> Result<(), GpuError> {
        let bytes = self.host_bytes(buffer)?;
        let start = checked(offset)?;
        bytes
            .get_mut(start..start + data.len())
            .ok_or_else(|| GpuError::InvalidArgument("range outside the host buffer".into()))?
            .copy_from_slice(data);
        Ok(())
    }

    fn host_read(&mut self, buffer: Handle, offset: u64, len: u64) -> Result<Vec<u8>, GpuError> {
        let bytes = self.host_bytes(buffer)?;
        let start = checked(offset)?;
        Ok(bytes
            .get(start..start + checked(len)?)
            .ok_or_else(|| GpuError::InvalidArgument("range outside the host buffer".into()))?
            .to_vec())
    }

    fn upload(
        &mut self,
        dst: Handle,
        dst_offset: u64,
        src: Handle,
        src_offset: u64,
        len: u64,
        stream: Handle,
    ) -> Result<(), GpuError> {
        self.bind()?;
        let dst = self.device_ptr(dst)?;
        let stream = self.stream(stream)?;
        let (start, len) = (checked(src_offset)?, checked(len)?);
        let host = self.host_bytes(src)?;
        let host = host
            .get(start..start + len)
            .ok_or_else(|| GpuError::InvalidArgument("range outside the host buffer".into()))?;
        // SAFETY: the caller checked the device range; the host range is a slice of memory this
        // backend owns and frees only in `host_free`/`end_run`, both of which synchronise first
        // or run after the plugin is gone, so it outlives the asynchronous copy.
        let result = unsafe { cu::memcpy_htod_async(dst + dst_offset, host, stream) };
        self.track(result)
    }

    fn download(
        &mut self,
        src: Handle,
        src_offset: u64,
        dst: Handle,
        dst_offset: u64,
        len: u64,
        stream: Handle,
    ) -> Result<(), GpuError> {
        self.bind()?;
        let src = self.device_ptr(src)?;
        let stream = self.stream(stream)?;
        let (start, len) = (checked(dst_offset)?, checked(len)?);
        let host = self.host_bytes(dst)?;
        let host = host
            .get_mut(start..start + len)
            .ok_or_else(|| GpuError::InvalidArgument("range outside the host buffer".into()))?;
        // SAFETY: as in `upload`, for the opposite direction.
        let result = unsafe { cu::memcpy_dtoh_async(host, src + src_offset, stream) };
        self.track(result)
    }

    fn compile(&mut self, name: &str, source: &str) -> Result<Handle, GpuError> {
        crate::source::check_cuda_source(name, source)?;
        let ptx = self.compile_ptx(name, source)?;
        self.load_ptx(&ptx)
    }

    fn load_ptx(&mut self, ptx: &str) -> Result<Handle, GpuError> {
        self.bind()?;
        let kernels = signature::from_ptx(ptx).map_err(GpuError::NotFound)?;
        let global_bytes = signature::ptx_global_bytes(ptx);
        let image = CString::new(ptx)
            .map_err(|_| GpuError::InvalidArgument("PTX contains a NUL byte".into()))?;
        // SAFETY: `image` is a NUL-terminated PTX string that lives across the call.
        let module = unsafe { cu::module::load_data(image.as_ptr().cast::<c_void>()) };
        let module = self.track(module)?;
        Ok(self.insert(Object::Module {
            module,
            kernels,
            global_bytes,
        }))
    }

    fn module_global_bytes(&self, module: Handle) -> Result<u64, GpuError> {
        match self.objects.get(&module) {
            Some(Object::Module { global_bytes, .. }) => Ok(*global_bytes),
            _ => Err(GpuError::InvalidArgument(format!(
                "{module:?} is not a module"
            ))),
        }
    }

    fn unload(&mut self, module: Handle) -> Result<(), GpuError> {
        self.remove(module, "module", |o| matches!(o, Object::Module { .. }))
    }

    fn kernel(&mut self, module: Handle, name: &str) -> Result<(Handle, Vec<u32>), GpuError> {
        self.bind()?;
        let (cu_module, params) = match self.objects.get(&module) {
            Some(Object::Module {
                module, kernels, ..
            }) => (
                *module,
                kernels
                    .get(name)
                    .cloned()
                    .ok_or_else(|| signature::missing_kernel(name, kernels))?,
            ),
            _ => {
                return Err(GpuError::InvalidArgument(format!(
                    "{module:?} is not a module"
                )));
            }
        };
        let c_name = CString::new(name)
            .map_err(|_| GpuError::InvalidArgument("kernel name contains NUL".into()))?;
        // SAFETY: `cu_module` is a loaded module of this context.
        let function = unsafe { cu::module::get_function(cu_module, c_name) };
        let function = self.track(function)?;
        Ok((self.insert(Object::Kernel(function)), params))
    }

    fn launch(
        &mut self,
        kernel: Handle,
        config: &LaunchConfig,
        args: &[KernelArg],
        stream: Handle,
    ) -> Result<(), GpuError> {
        self.bind()?;
        let function = match self.objects.get(&kernel) {
            Some(Object::Kernel(function)) => *function,
            _ => {
                return Err(GpuError::InvalidArgument(format!(
                    "{kernel:?} is not a kernel"
                )));
            }
        };
        let stream = self.stream(stream)?;
        // Each argument gets an 8-byte slot; CUDA reads as many bytes as the parameter declares
        // (the caller checked that they match), from the slot's start. Up to 16 arguments live
        // on the stack: launches are the hot path.
        const ON_STACK: usize = 16;
        let mut stack_slots = [0u64; ON_STACK];
        let mut heap_slots = Vec::new();
        let slots: &mut [u64] = if args.len() <= ON_STACK {
            &mut stack_slots[..args.len()]
        } else {
            heap_slots.resize(args.len(), 0);
            &mut heap_slots
        };
        for (slot, arg) in slots.iter_mut().zip(args) {
            *slot = match *arg {
                KernelArg::Buffer(h) => self.device_ptr(h)?,
                KernelArg::I32(v) => u64::from(v as u32),
                KernelArg::U32(v) => u64::from(v),
                KernelArg::I64(v) => v as u64,
                KernelArg::U64(v) => v,
                KernelArg::F32(v) => u64::from(v.to_bits()),
                KernelArg::F64(v) => v.to_bits(),
            };
        }
        let mut stack_pointers = [std::ptr::null_mut::<c_void>(); ON_STACK];
        let mut heap_pointers = Vec::new();
        let pointers: &mut [*mut c_void] = if args.len() <= ON_STACK {
            &mut stack_pointers[..args.len()]
        } else {
            heap_pointers.resize(args.len(), std::ptr::null_mut());
            &mut heap_pointers
        };
        for (pointer, slot) in pointers.iter_mut().zip(slots.iter_mut()) {
            *pointer = (slot as *mut u64).cast();
        }
        // SAFETY: `function` belongs to a module loaded in this context; the argument count and
        // sizes were checked against the kernel's PTX declaration; buffers are live device
        // allocations of this context; `slots` outlives the call (the driver copies parameters
        // at launch), and little-endian slots hold 4-byte values in their first bytes.
        let result = unsafe {
            cu::launch_kernel(
                function,
                config.grid,
                config.block,
                config.shared_mem_bytes,
                stream,
                pointers,
            )
        };
        self.track(result)
    }

    fn stream_create(&mut self) -> Result<Handle, GpuError> {
        self.bind()?;
        let stream = cu::stream::create(cu::stream::StreamKind::NonBlocking);
        let stream = self.track(stream)?;
        Ok(self.insert(Object::Stream(stream)))
    }

    fn stream_destroy(&mut self, stream: Handle) -> Result<(), GpuError> {
        self.remove(stream, "stream", |o| matches!(o, Object::Stream(_)))
    }

    fn stream_sync(&mut self, stream: Handle) -> Result<(), GpuError> {
        self.bind()?;
        let stream = self.stream(stream)?;
        // SAFETY: a live stream of this context.
        let result = unsafe { cu::stream::synchronize(stream) };
        self.track(result)
    }

    fn event_create(&mut self) -> Result<Handle, GpuError> {
        self.bind()?;
        let event = cu::event::create(sys::CUevent_flags::CU_EVENT_DEFAULT);
        let event = self.track(event)?;
        Ok(self.insert(Object::Event(event)))
    }

    fn event_destroy(&mut self, event: Handle) -> Result<(), GpuError> {
        self.remove(event, "event", |o| matches!(o, Object::Event(_)))
    }

    fn event_record(&mut self, event: Handle, stream: Handle) -> Result<(), GpuError> {
        self.bind()?;
        let (event, stream) = (self.event(event)?, self.stream(stream)?);
        // SAFETY: a live event and a live stream of this context.
        let result = unsafe { cu::event::record(event, stream) };
        self.track(result)
    }

    fn event_sync(&mut self, event: Handle) -> Result<(), GpuError> {
        self.bind()?;
        let event = self.event(event)?;
        // SAFETY: a live event of this context.
        let result = unsafe { cu::event::synchronize(event) };
        self.track(result)
    }

    fn event_query(&mut self, event: Handle) -> Result<bool, GpuError> {
        self.bind()?;
        let event = self.event(event)?;
        // SAFETY: a live event of this context; the query does not block.
        match unsafe { cu::event::query(event) } {
            Ok(()) => Ok(true),
            Err(DriverError(sys::CUresult::CUDA_ERROR_NOT_READY)) => Ok(false),
            Err(e) => self.track(Err(e)),
        }
    }

    fn event_elapsed_ms(&mut self, start: Handle, end: Handle) -> Result<f32, GpuError> {
        self.bind()?;
        let (start, end) = (self.event(start)?, self.event(end)?);
        // SAFETY: live events of this context.
        let result = unsafe { cu::event::elapsed(start, end) };
        self.track(result)
    }

    fn end_run(&mut self) -> Leftovers {
        if let Some(ctx) = &self.ctx {
            let _ = ctx.bind_to_thread();
            // Work still queued may use what is about to be freed.
            let _ = ctx.synchronize();
        }
        let mut left = Leftovers::default();
        for (_, object) in self.objects.drain() {
            match object {
                Object::Buffer { .. } => left.buffers += 1,
                Object::PinnedHost { .. } | Object::PageableHost(_) => left.host_buffers += 1,
                Object::Module { .. } => left.modules += 1,
                Object::Stream(_) | Object::Event(_) => left.streams_and_events += 1,
                Object::Kernel(_) => {}
            }
            CudaGpu::free_object(object);
        }
        for peer in std::mem::take(&mut self.peers) {
            // SAFETY: `peer` is a context this one enabled access to in this run; disabling it
            // again leaves both contexts as they were before the run.
            let _ = unsafe { sys::cuCtxDisablePeerAccess(peer) };
        }
        if self.faulted {
            // The fault is sticky for the process: release the context and refuse further work.
            self.ctx = None;
        }
        left
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }

    fn can_access_peer(&mut self, peer: &mut dyn GpuBackend) -> Result<bool, GpuError> {
        let peer = crate::same_kind::<CudaGpu>(peer)?;
        let (mine, theirs) = (self.context()?.cu_device(), peer.context()?.cu_device());
        let mut can: std::ffi::c_int = 0;
        // SAFETY: both are valid device ordinals of this process and `can` outlives the call.
        let result = unsafe { sys::cuDeviceCanAccessPeer(&mut can, mine, theirs).result() };
        result.map_err(driver)?;
        Ok(can != 0)
    }

    fn set_peer_access(
        &mut self,
        peer: &mut dyn GpuBackend,
        enabled: bool,
    ) -> Result<(), GpuError> {
        let peer_ctx = crate::same_kind::<CudaGpu>(peer)?.context()?.cu_ctx();
        self.bind()?;
        use sys::cudaError_enum as E;
        let result = if enabled {
            // SAFETY: `peer_ctx` is a live context of this process; this one is current.
            unsafe { sys::cuCtxEnablePeerAccess(peer_ctx, 0) }
        } else {
            // SAFETY: as above.
            unsafe { sys::cuCtxDisablePeerAccess(peer_ctx) }
        };
        match result {
            E::CUDA_SUCCESS => {
                if enabled {
                    self.peers.push(peer_ctx);
                } else {
                    self.peers.retain(|p| *p != peer_ctx);
                }
                Ok(())
            }
            // Asking for the state it is in already is no error.
            E::CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED | E::CUDA_ERROR_PEER_ACCESS_NOT_ENABLED => {
                Ok(())
            }
            other => Err(driver(DriverError(other))),
        }
    }

    fn copy_to_peer(
        &mut self,
        src: Handle,
        src_offset: u64,
        peer: &mut dyn GpuBackend,
        dst: Handle,
        dst_offset: u64,
        len: u64,
        stream: Handle,
    ) -> Result<(), GpuError> {
        let peer = crate::same_kind::<CudaGpu>(peer)?;
        let (dst, dst_ctx) = (peer.device_ptr(dst)?, peer.context()?.cu_ctx());
        self.bind()?;
        let (src, src_ctx) = (self.device_ptr(src)?, self.context()?.cu_ctx());
        let stream = self.stream(stream)?;
        // SAFETY: both pointers are live allocations of their contexts, the caller checked both
        // ranges against the buffers' sizes, and the stream belongs to this (current) context.
        let result = unsafe {
            sys::cuMemcpyPeerAsync(
                dst + dst_offset,
                dst_ctx,
                src + src_offset,
                src_ctx,
                checked(len)?,
                stream,
            )
            .result()
        };
        self.track(result)
    }
}
