//! Passage's seam to the GPU.
//!
//! Plugins reach a GPU only through [`GpuBackend`]: device memory, host memory, modules, kernels,
//! streams and events, all named by opaque [`Handle`]s so that no device pointer ever leaves the
//! backend. Two backends implement it: CUDA through cudarc (in the agent) and [`FakeGpu`], a
//! simulated device for tests that keeps real memory semantics and records launches.
//!
//! Backends trust their caller for nothing: a handle of the wrong kind or a range past a buffer's
//! end is an error, never undefined behaviour.

pub mod cuda;
mod fake;
pub mod nvrtc;
pub mod signature;
pub mod source;

use std::fmt;

pub use fake::{FakeGpu, LaunchRecord};
use thiserror::Error;

/// An opaque name for a backend object (buffer, module, kernel, stream, event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Handle(pub u64);

/// What a device is, as plugins see it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceInfo {
    /// Marketing name.
    pub name: String,
    /// Total memory in bytes.
    pub total_memory: u64,
    /// Compute capability (major, minor).
    pub capability: (u32, u32),
    /// Streaming multiprocessors.
    pub multiprocessors: u32,
    /// Peak core clock in kHz.
    pub clock_khz: u32,
    /// Peak memory clock in kHz.
    pub memory_clock_khz: u32,
    /// Memory bus width in bits.
    pub memory_bus_width: u32,
    /// PCI bus id, `dddd:bb:ss.f`.
    pub pci_bus_id: String,
    /// True for the simulated device.
    pub simulated: bool,
}

/// Grid, block and dynamic shared memory of a launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchConfig {
    /// Blocks in x, y, z.
    pub grid: (u32, u32, u32),
    /// Threads per block in x, y, z.
    pub block: (u32, u32, u32),
    /// Dynamic shared memory per block, in bytes.
    pub shared_mem_bytes: u32,
}

/// One kernel argument.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KernelArg {
    /// A device buffer, passed as its device pointer.
    Buffer(Handle),
    /// `int`.
    I32(i32),
    /// `unsigned int`.
    U32(u32),
    /// `long long`.
    I64(i64),
    /// `unsigned long long`, `size_t`.
    U64(u64),
    /// `float`.
    F32(f32),
    /// `double`.
    F64(f64),
}

impl KernelArg {
    /// Size in bytes of the argument as the kernel receives it.
    pub fn size(&self) -> u32 {
        match self {
            KernelArg::I32(_) | KernelArg::U32(_) | KernelArg::F32(_) => 4,
            KernelArg::Buffer(_) | KernelArg::I64(_) | KernelArg::U64(_) | KernelArg::F64(_) => 8,
        }
    }
}

/// Why a GPU operation failed. The variants mirror the plugin contract's `gpu-error`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GpuError {
    /// The device is out of memory.
    #[error("out of device memory: {0}")]
    OutOfMemory(String),
    /// A per-run limit would be exceeded.
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
    /// A bad argument: range, handle, launch shape or kernel arguments.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Source did not compile; the compiler's log.
    #[error("compilation failed: {0}")]
    CompileFailed(String),
    /// No such kernel, or PTX that does not load.
    #[error("not found: {0}")]
    NotFound(String),
    /// The kernel faulted; the context must be rebuilt before the next run.
    #[error("kernel fault: {0}")]
    KernelFault(String),
    /// Any other driver failure.
    #[error("driver error: {0}")]
    Driver(String),
}

/// What was left behind by a run and freed by [`GpuBackend::end_run`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Leftovers {
    /// Device buffers.
    pub buffers: usize,
    /// Host buffers.
    pub host_buffers: usize,
    /// Modules.
    pub modules: usize,
    /// Streams and events.
    pub streams_and_events: usize,
}

impl Leftovers {
    /// True when the run freed everything itself.
    pub fn is_empty(&self) -> bool {
        *self == Leftovers::default()
    }
}

impl std::ops::AddAssign for Leftovers {
    fn add_assign(&mut self, other: Leftovers) {
        self.buffers += other.buffers;
        self.host_buffers += other.host_buffers;
        self.modules += other.modules;
        self.streams_and_events += other.streams_and_events;
    }
}

impl fmt::Display for Leftovers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} device buffers, {} host buffers, {} modules, {} streams/events",
            self.buffers, self.host_buffers, self.modules, self.streams_and_events
        )
    }
}

/// A GPU as plugins use it. Methods block until the driver has accepted the work; work queued
/// on a stream completes later (see [`GpuBackend::stream_sync`] and events).
pub trait GpuBackend: Send {
    /// The device's description.
    fn info(&self) -> &DeviceInfo;
    /// Allocates `size` bytes of device memory.
    fn alloc(&mut self, size: u64) -> Result<Handle, GpuError>;
    /// Frees a device buffer.
    fn free(&mut self, buffer: Handle) -> Result<(), GpuError>;
    /// Copies `data` into `buffer` at `offset`, synchronously.
    fn write(&mut self, buffer: Handle, offset: u64, data: &[u8]) -> Result<(), GpuError>;
    /// Copies `len` bytes at `offset` out of `buffer`, synchronously.
    fn read(&mut self, buffer: Handle, offset: u64, len: u64) -> Result<Vec<u8>, GpuError>;
    /// Sets every byte of `buffer` to `value`, on `stream`.
    fn fill(&mut self, buffer: Handle, value: u8, stream: Handle) -> Result<(), GpuError>;
    /// Device-to-device copy on `stream`.
    fn copy(
        &mut self,
        dst: Handle,
        dst_offset: u64,
        src: Handle,
        src_offset: u64,
        len: u64,
        stream: Handle,
    ) -> Result<(), GpuError>;
    /// Allocates host memory, page-locked when `pinned`.
    fn host_alloc(&mut self, size: u64, pinned: bool) -> Result<Handle, GpuError>;
    /// Frees host memory.
    fn host_free(&mut self, buffer: Handle) -> Result<(), GpuError>;
    /// Copies `data` into host memory at `offset`.
    fn host_write(&mut self, buffer: Handle, offset: u64, data: &[u8]) -> Result<(), GpuError>;
    /// Copies `len` bytes at `offset` out of host memory.
    fn host_read(&mut self, buffer: Handle, offset: u64, len: u64) -> Result<Vec<u8>, GpuError>;
    /// Host-to-device copy on `stream`.
    fn upload(
        &mut self,
        dst: Handle,
        dst_offset: u64,
        src: Handle,
        src_offset: u64,
        len: u64,
        stream: Handle,
    ) -> Result<(), GpuError>;
    /// Device-to-host copy on `stream`.
    fn download(
        &mut self,
        src: Handle,
        src_offset: u64,
        dst: Handle,
        dst_offset: u64,
        len: u64,
        stream: Handle,
    ) -> Result<(), GpuError>;
    /// Compiles CUDA C source into a module. The source is checked first
    /// ([`source::check_cuda_source`]): no file but NVRTC's own headers can be included.
    fn compile(&mut self, name: &str, source: &str) -> Result<Handle, GpuError>;
    /// Loads PTX text into a module.
    fn load_ptx(&mut self, ptx: &str) -> Result<Handle, GpuError>;
    /// Bytes of device memory the module's own variables (`__device__`, `.global`) take.
    fn module_global_bytes(&self, module: Handle) -> Result<u64, GpuError>;
    /// Unloads a module (its kernels become invalid).
    fn unload(&mut self, module: Handle) -> Result<(), GpuError>;
    /// Finds kernel `name` in `module`; returns it with the size of each declared parameter.
    fn kernel(&mut self, module: Handle, name: &str) -> Result<(Handle, Vec<u32>), GpuError>;
    /// Launches `kernel` on `stream`. Callers check `args` against the declared parameters first.
    fn launch(
        &mut self,
        kernel: Handle,
        config: &LaunchConfig,
        args: &[KernelArg],
        stream: Handle,
    ) -> Result<(), GpuError>;
    /// Creates a stream.
    fn stream_create(&mut self) -> Result<Handle, GpuError>;
    /// Destroys a stream.
    fn stream_destroy(&mut self, stream: Handle) -> Result<(), GpuError>;
    /// Waits for all work on `stream`.
    fn stream_sync(&mut self, stream: Handle) -> Result<(), GpuError>;
    /// Creates an event.
    fn event_create(&mut self) -> Result<Handle, GpuError>;
    /// Destroys an event.
    fn event_destroy(&mut self, event: Handle) -> Result<(), GpuError>;
    /// Records `event` at the end of `stream`.
    fn event_record(&mut self, event: Handle, stream: Handle) -> Result<(), GpuError>;
    /// Waits until `event` has happened.
    fn event_sync(&mut self, event: Handle) -> Result<(), GpuError>;
    /// True when `event` has happened, false while work before it is pending; never blocks.
    fn event_query(&mut self, event: Handle) -> Result<bool, GpuError>;
    /// Milliseconds from `start` to `end`.
    fn event_elapsed_ms(&mut self, start: Handle, end: Handle) -> Result<f32, GpuError>;
    /// Ends a run: frees everything still allocated and turns peer access off again. After a
    /// kernel fault a backend that cannot recover in-process refuses further work with an error
    /// saying so. Returns what was freed.
    fn end_run(&mut self) -> Leftovers;

    /// This backend as `Any`, so that a peer of the same kind can reach its memory.
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any;
    /// Whether this device can access `peer`'s memory directly (`cuDeviceCanAccessPeer`).
    fn can_access_peer(&mut self, peer: &mut dyn GpuBackend) -> Result<bool, GpuError>;
    /// Turns this device's direct access to `peer`'s memory on or off.
    fn set_peer_access(&mut self, peer: &mut dyn GpuBackend, enabled: bool)
    -> Result<(), GpuError>;
    /// Copies `len` bytes of this device's buffer `src` at `src_offset` into `peer`'s buffer
    /// `dst` at `dst_offset`, on this device's `stream`: directly when peer access is on,
    /// staged through host memory otherwise. Ranges are checked by the caller.
    #[allow(clippy::too_many_arguments)]
    fn copy_to_peer(
        &mut self,
        src: Handle,
        src_offset: u64,
        peer: &mut dyn GpuBackend,
        dst: Handle,
        dst_offset: u64,
        len: u64,
        stream: Handle,
    ) -> Result<(), GpuError>;
}

/// The backend `peer` as a `T`, or an error: peers must be of one kind.
pub fn same_kind<T: 'static>(peer: &mut dyn GpuBackend) -> Result<&mut T, GpuError> {
    peer.as_any_mut().downcast_mut::<T>().ok_or_else(|| {
        GpuError::InvalidArgument("the devices of a run must use the same backend".into())
    })
}
