//! What a benchmark needs of a GPU: the plugin contract's `gpu` interface as a trait, so that
//! the same benchmark code runs in a plugin and natively.

/// Errors are messages for people, saying what was being done.
pub type Res<T> = Result<T, String>;

/// What a benchmark needs to know about the device.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceFacts {
    /// Marketing name.
    pub name: String,
    /// True on the simulated backend: kernels do not run, figures are not measurements.
    pub simulated: bool,
    /// Peak core clock in kHz.
    pub clock_khz: u32,
    /// Streaming multiprocessors.
    pub multiprocessors: u32,
}

/// Grid, block and dynamic shared memory of a launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Launch {
    /// Blocks in x, y, z.
    pub grid: (u32, u32, u32),
    /// Threads per block in x, y, z.
    pub block: (u32, u32, u32),
    /// Dynamic shared memory per block, in bytes.
    pub shared_mem_bytes: u32,
}

impl Launch {
    /// `blocks` blocks of `threads` threads, in x.
    pub fn linear(blocks: u32, threads: u32) -> Launch {
        Launch {
            grid: (blocks, 1, 1),
            block: (threads, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// The same launch with `bytes` of dynamic shared memory per block.
    pub fn with_shared(self, bytes: u32) -> Launch {
        Launch {
            shared_mem_bytes: bytes,
            ..self
        }
    }
}

/// One kernel argument.
#[derive(Debug)]
pub enum Arg<'a, B> {
    /// A device buffer, passed as its device pointer.
    Buffer(&'a B),
    /// `int`.
    I32(i32),
    /// `long long`.
    I64(i64),
    /// `float`.
    F32(f32),
}

/// A GPU as the suite uses it. Every call blocks until the driver has accepted the work; work
/// queued on a stream completes later.
pub trait Gpu {
    /// Device memory.
    type Buffer;
    /// Host memory owned by the runtime, pinned or pageable.
    type Host;
    /// A loaded module.
    type Module;
    /// A kernel of a module.
    type Kernel;
    /// A stream.
    type Stream;
    /// An event.
    type Event;

    /// The device.
    fn device(&self) -> DeviceFacts;
    /// Allocates `bytes` of device memory.
    fn alloc(&self, bytes: u64) -> Res<Self::Buffer>;
    /// Copies `data` into `dst` at `offset`, synchronously.
    fn write(&self, dst: &Self::Buffer, offset: u64, data: &[u8]) -> Res<()>;
    /// Copies `len` bytes at `offset` out of `src`, synchronously.
    fn read(&self, src: &Self::Buffer, offset: u64, len: u64) -> Res<Vec<u8>>;
    /// Sets every byte of `dst` to `value`, on `stream`.
    fn fill(&self, dst: &Self::Buffer, value: u8, stream: &Self::Stream) -> Res<()>;
    /// Copies the first `len` bytes of `src` to `dst`, on `stream`.
    fn copy(
        &self,
        dst: &Self::Buffer,
        src: &Self::Buffer,
        len: u64,
        stream: &Self::Stream,
    ) -> Res<()>;
    /// Allocates `bytes` of host memory, page-locked when `pinned`.
    fn host_alloc(&self, bytes: u64, pinned: bool) -> Res<Self::Host>;
    /// Copies `data` into host memory at `offset`.
    fn host_write(&self, dst: &Self::Host, offset: u64, data: &[u8]) -> Res<()>;
    /// Copies `len` bytes at `offset` out of host memory.
    fn host_read(&self, src: &Self::Host, offset: u64, len: u64) -> Res<Vec<u8>>;
    /// Host-to-device copy of the first `len` bytes, on `stream`.
    fn upload(
        &self,
        dst: &Self::Buffer,
        src: &Self::Host,
        len: u64,
        stream: &Self::Stream,
    ) -> Res<()>;
    /// Device-to-host copy of the first `len` bytes, on `stream`.
    fn download(
        &self,
        dst: &Self::Host,
        src: &Self::Buffer,
        len: u64,
        stream: &Self::Stream,
    ) -> Res<()>;
    /// Compiles CUDA C; `name` labels it in compiler messages.
    fn compile(&self, name: &str, source: &str) -> Res<Self::Module>;
    /// The `extern "C"` kernel `name` of `module`.
    fn kernel(&self, module: &Self::Module, name: &str) -> Res<Self::Kernel>;
    /// Launches `kernel` on `stream`.
    fn launch(
        &self,
        kernel: &Self::Kernel,
        config: Launch,
        args: &[Arg<'_, Self::Buffer>],
        stream: &Self::Stream,
    ) -> Res<()>;
    /// A new stream.
    fn stream(&self) -> Res<Self::Stream>;
    /// Waits for all work on `stream`.
    fn synchronize(&self, stream: &Self::Stream) -> Res<()>;
    /// A new event.
    fn event(&self) -> Res<Self::Event>;
    /// Records `event` at the end of `stream`.
    fn record(&self, event: &Self::Event, stream: &Self::Stream) -> Res<()>;
    /// Waits until `event` has happened.
    fn wait(&self, event: &Self::Event) -> Res<()>;
    /// True when `event` has happened; never blocks.
    fn query(&self, event: &Self::Event) -> Res<bool>;
    /// Milliseconds from `start` to `end`.
    fn elapsed_ms(&self, start: &Self::Event, end: &Self::Event) -> Res<f64>;
    /// Records a figure.
    fn metric(&self, name: &str, value: f64, unit: &str);
    /// Writes a line to the run's log.
    fn log(&self, message: &str);
}
