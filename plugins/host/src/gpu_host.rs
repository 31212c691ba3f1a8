//! The `gpu`, `peers` and `report` imports: every call checks its arguments and the run's limits
//! before the backend sees it, and every resource is counted so that a run cannot hoard a device.
//! Device memory, streams and events belong to one device of the run; the `gpu` interface uses
//! device 0, and work that mixes devices goes through `peers.copy-peer`.

use passage_gpu::{GpuError, Handle, KernelArg, LaunchConfig};
use wasmtime::component::Resource;

use crate::bindings::GpuError as WitGpuError;
use crate::bindings::passage::plugin::{gpu, peers, report, types};
use crate::limits::over_memory_limit;
use crate::state::{LogLevel, Metric, RunEvent, RunState};

/// The most bytes one `read` or `write` call moves between the plugin and the host.
const MAX_TRANSFER: u64 = 256 << 20;

/// A device buffer of the run.
#[derive(Debug)]
pub struct BufferRes {
    handle: Handle,
    size: u64,
    device: usize,
}

/// Host memory of the run.
#[derive(Debug)]
pub struct HostMemoryRes {
    handle: Handle,
    size: u64,
    pinned: bool,
}

/// A loaded module.
#[derive(Debug)]
pub struct ModuleRes {
    handle: Handle,
    /// Device bytes of the module's own variables, counted against the run's GPU memory.
    global_bytes: u64,
}

/// A kernel and its declared parameter sizes.
#[derive(Debug)]
pub struct KernelRes {
    handle: Handle,
    name: String,
    params: Vec<u32>,
}

/// A stream.
#[derive(Debug)]
pub struct StreamRes {
    handle: Handle,
    device: usize,
}

/// An event.
#[derive(Debug)]
pub struct EventRes {
    handle: Handle,
    device: usize,
}

/// The device that every one of `devices` is on, or an error naming `what` mixes devices.
fn one_device(what: &str, devices: &[usize]) -> Result<usize, GpuError> {
    match devices.split_first() {
        Some((first, rest)) if rest.iter().all(|d| d == first) => Ok(*first),
        Some(_) => Err(GpuError::InvalidArgument(format!(
            "{what} mixes devices {devices:?}: move data between devices with peers.copy-peer"
        ))),
        None => Ok(0),
    }
}

fn to_wit(error: GpuError) -> WitGpuError {
    match error {
        GpuError::OutOfMemory(m) => WitGpuError::OutOfMemory(m),
        GpuError::LimitExceeded(m) => WitGpuError::LimitExceeded(m),
        GpuError::InvalidArgument(m) => WitGpuError::InvalidArgument(m),
        GpuError::CompileFailed(m) => WitGpuError::CompileFailed(m),
        GpuError::NotFound(m) => WitGpuError::NotFound(m),
        GpuError::KernelFault(m) => WitGpuError::KernelFault(m),
        GpuError::Driver(m) => WitGpuError::Driver(m),
    }
}

fn check_range(what: &str, size: u64, offset: u64, len: u64) -> Result<(), GpuError> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(GpuError::InvalidArgument(format!(
            "{what}: bytes {offset}..{} are outside its {size} bytes",
            offset.saturating_add(len)
        ))),
    }
}

fn check_transfer(len: u64) -> Result<(), GpuError> {
    if len > MAX_TRANSFER {
        return Err(GpuError::InvalidArgument(format!(
            "{len} bytes in one call; move at most {MAX_TRANSFER} bytes per read or write"
        )));
    }
    Ok(())
}

impl RunState {
    /// Runs `call` on device 0, remembering faults and translating errors for the plugin.
    fn with_gpu<T>(
        &mut self,
        call: impl FnOnce(&mut (dyn passage_gpu::GpuBackend + 'static)) -> Result<T, GpuError>,
    ) -> Result<T, WitGpuError> {
        self.with_device(Ok(0), call)
    }

    /// Runs `call` on `device` (itself the result of a check), as [`RunState::with_gpu`].
    fn with_device<T>(
        &mut self,
        device: Result<usize, GpuError>,
        call: impl FnOnce(&mut (dyn passage_gpu::GpuBackend + 'static)) -> Result<T, GpuError>,
    ) -> Result<T, WitGpuError> {
        let result = device.and_then(|d| self.device(d)).and_then(call);
        self.note(result).map_err(to_wit)
    }

    /// Allocates `size` bytes on `device`, within the run's limits.
    fn alloc_on(&mut self, device: usize, size: u64) -> WitResult<Resource<BufferRes>> {
        if let Err(e) = self.admit_resource() {
            return Ok(Err(e));
        }
        if size == 0 {
            return Ok(Err(WitGpuError::InvalidArgument(
                "a buffer needs at least one byte".into(),
            )));
        }
        if self.gpu_bytes.saturating_add(size) > self.gpu_limit {
            return Ok(Err(WitGpuError::LimitExceeded(over_memory_limit(
                "GPU memory",
                size,
                self.gpu_bytes,
                self.gpu_limit,
                self.settings().gpu_memory,
            ))));
        }
        match self.with_device(Ok(device), |gpu| gpu.alloc(size)) {
            Ok(handle) => {
                self.gpu_bytes += size;
                Ok(Ok(self.added(BufferRes {
                    handle,
                    size,
                    device,
                })?))
            }
            Err(e) => Ok(Err(e)),
        }
    }

    /// A stream on `device`.
    fn stream_on(&mut self, device: usize) -> WitResult<Resource<StreamRes>> {
        if let Err(e) = self.admit_resource() {
            return Ok(Err(e));
        }
        match self.with_device(Ok(device), |gpu| gpu.stream_create()) {
            Ok(handle) => Ok(Ok(self.added(StreamRes { handle, device })?)),
            Err(e) => Ok(Err(e)),
        }
    }

    /// An event on `device`.
    fn event_on(&mut self, device: usize) -> WitResult<Resource<EventRes>> {
        if let Err(e) = self.admit_resource() {
            return Ok(Err(e));
        }
        match self.with_device(Ok(device), |gpu| gpu.event_create()) {
            Ok(handle) => Ok(Ok(self.added(EventRes { handle, device })?)),
            Err(e) => Ok(Err(e)),
        }
    }

    /// The backend a resource of `device` is freed on, if the run still has it.
    fn owner(&mut self, device: usize) -> Option<&mut (dyn passage_gpu::GpuBackend + 'static)> {
        self.gpus.get_mut(device).map(|gpu| gpu.as_mut())
    }

    fn admit_resource(&self) -> Result<(), WitGpuError> {
        if self.resources >= self.resource_limit {
            return Err(WitGpuError::LimitExceeded(format!(
                "{} GPU resources are alive; drop some before creating more",
                self.resource_limit
            )));
        }
        Ok(())
    }

    fn added<T: Send + 'static>(&mut self, value: T) -> wasmtime::Result<Resource<T>> {
        let resource = self.table.push(value)?;
        self.resources += 1;
        Ok(resource)
    }

    fn removed<T: 'static>(&mut self, resource: Resource<T>) -> wasmtime::Result<T> {
        let value = self.table.delete(resource)?;
        self.resources = self.resources.saturating_sub(1);
        Ok(value)
    }

    fn buffer(&self, resource: &Resource<BufferRes>) -> wasmtime::Result<(Handle, u64, usize)> {
        let buffer = self.table.get(resource)?;
        Ok((buffer.handle, buffer.size, buffer.device))
    }

    fn host_buffer(&self, resource: &Resource<HostMemoryRes>) -> wasmtime::Result<(Handle, u64)> {
        let buffer = self.table.get(resource)?;
        Ok((buffer.handle, buffer.size))
    }

    fn stream(&self, resource: &Resource<StreamRes>) -> wasmtime::Result<(Handle, usize)> {
        let stream = self.table.get(resource)?;
        Ok((stream.handle, stream.device))
    }

    fn event(&self, resource: &Resource<EventRes>) -> wasmtime::Result<(Handle, usize)> {
        let event = self.table.get(resource)?;
        Ok((event.handle, event.device))
    }
}

type WitResult<T> = wasmtime::Result<Result<T, WitGpuError>>;

impl types::Host for RunState {}

impl gpu::Host for RunState {
    fn device(&mut self) -> wasmtime::Result<gpu::DeviceInfo> {
        let Some(gpu) = self.gpus.first() else {
            wasmtime::bail!("describe must not use the GPU");
        };
        Ok(device_info(gpu.info()))
    }
}

fn device_info(info: &passage_gpu::DeviceInfo) -> gpu::DeviceInfo {
    gpu::DeviceInfo {
        name: info.name.clone(),
        total_memory: info.total_memory,
        capability_major: info.capability.0,
        capability_minor: info.capability.1,
        multiprocessors: info.multiprocessors,
        clock_khz: info.clock_khz,
        memory_clock_khz: info.memory_clock_khz,
        memory_bus_width: info.memory_bus_width,
        pci_bus_id: info.pci_bus_id.clone(),
        simulated: info.simulated,
    }
}

impl gpu::HostBuffer for RunState {
    fn alloc(&mut self, size: u64) -> WitResult<Resource<BufferRes>> {
        self.alloc_on(0, size)
    }

    fn size(&mut self, buffer: Resource<BufferRes>) -> wasmtime::Result<u64> {
        Ok(self.buffer(&buffer)?.1)
    }

    fn write(&mut self, buffer: Resource<BufferRes>, offset: u64, data: Vec<u8>) -> WitResult<()> {
        let (handle, size, device) = self.buffer(&buffer)?;
        Ok(self.with_device(Ok(device), |gpu| {
            check_transfer(data.len() as u64)?;
            check_range("buffer write", size, offset, data.len() as u64)?;
            gpu.write(handle, offset, &data)
        }))
    }

    fn read(&mut self, buffer: Resource<BufferRes>, offset: u64, len: u64) -> WitResult<Vec<u8>> {
        let (handle, size, device) = self.buffer(&buffer)?;
        Ok(self.with_device(Ok(device), |gpu| {
            check_transfer(len)?;
            check_range("buffer read", size, offset, len)?;
            gpu.read(handle, offset, len)
        }))
    }

    fn fill(
        &mut self,
        buffer: Resource<BufferRes>,
        value: u8,
        s: Resource<StreamRes>,
    ) -> WitResult<()> {
        let (handle, _, device) = self.buffer(&buffer)?;
        let (stream, on) = self.stream(&s)?;
        let device = one_device("fill", &[device, on]);
        Ok(self.with_device(device, |gpu| gpu.fill(handle, value, stream)))
    }

    fn copy_from(
        &mut self,
        buffer: Resource<BufferRes>,
        offset: u64,
        src: Resource<BufferRes>,
        src_offset: u64,
        len: u64,
        s: Resource<StreamRes>,
    ) -> WitResult<()> {
        let (dst, dst_size, dst_device) = self.buffer(&buffer)?;
        let (src, src_size, src_device) = self.buffer(&src)?;
        let (stream, on) = self.stream(&s)?;
        let device = one_device("copy-from", &[dst_device, src_device, on]);
        Ok(self.with_device(device, |gpu| {
            check_range("copy destination", dst_size, offset, len)?;
            check_range("copy source", src_size, src_offset, len)?;
            gpu.copy(dst, offset, src, src_offset, len, stream)
        }))
    }

    fn upload(
        &mut self,
        buffer: Resource<BufferRes>,
        offset: u64,
        src: Resource<HostMemoryRes>,
        src_offset: u64,
        len: u64,
        s: Resource<StreamRes>,
    ) -> WitResult<()> {
        let (dst, dst_size, device) = self.buffer(&buffer)?;
        let (src, src_size) = self.host_buffer(&src)?;
        let (stream, on) = self.stream(&s)?;
        // Host memory belongs to device 0's context.
        let device = one_device("upload", &[0, device, on]);
        Ok(self.with_device(device, |gpu| {
            check_range("upload destination", dst_size, offset, len)?;
            check_range("upload source", src_size, src_offset, len)?;
            gpu.upload(dst, offset, src, src_offset, len, stream)
        }))
    }

    fn download(
        &mut self,
        buffer: Resource<BufferRes>,
        offset: u64,
        dst: Resource<HostMemoryRes>,
        dst_offset: u64,
        len: u64,
        s: Resource<StreamRes>,
    ) -> WitResult<()> {
        let (src, src_size, device) = self.buffer(&buffer)?;
        let (dst, dst_size) = self.host_buffer(&dst)?;
        let (stream, on) = self.stream(&s)?;
        let device = one_device("download", &[0, device, on]);
        Ok(self.with_device(device, |gpu| {
            check_range("download source", src_size, offset, len)?;
            check_range("download destination", dst_size, dst_offset, len)?;
            gpu.download(src, offset, dst, dst_offset, len, stream)
        }))
    }

    fn drop(&mut self, buffer: Resource<BufferRes>) -> wasmtime::Result<()> {
        let buffer = self.removed(buffer)?;
        self.gpu_bytes = self.gpu_bytes.saturating_sub(buffer.size);
        if let Some(gpu) = self.owner(buffer.device) {
            gpu.free(buffer.handle).ok();
        }
        Ok(())
    }
}

impl gpu::HostHostMemory for RunState {
    fn alloc(&mut self, size: u64, pinned: bool) -> WitResult<Resource<HostMemoryRes>> {
        if let Err(e) = self.admit_resource() {
            return Ok(Err(e));
        }
        if size == 0 {
            return Ok(Err(WitGpuError::InvalidArgument(
                "a host buffer needs at least one byte".into(),
            )));
        }
        if self.host_bytes.saturating_add(size) > self.host_limit {
            return Ok(Err(WitGpuError::LimitExceeded(over_memory_limit(
                "host memory",
                size,
                self.host_bytes,
                self.host_limit,
                self.settings().host_memory,
            ))));
        }
        match self.with_gpu(|gpu| gpu.host_alloc(size, pinned)) {
            Ok(handle) => {
                self.host_bytes += size;
                Ok(Ok(self.added(HostMemoryRes {
                    handle,
                    size,
                    pinned,
                })?))
            }
            Err(e) => Ok(Err(e)),
        }
    }

    fn size(&mut self, buffer: Resource<HostMemoryRes>) -> wasmtime::Result<u64> {
        Ok(self.host_buffer(&buffer)?.1)
    }

    fn pinned(&mut self, buffer: Resource<HostMemoryRes>) -> wasmtime::Result<bool> {
        Ok(self.table.get(&buffer)?.pinned)
    }

    fn write(
        &mut self,
        buffer: Resource<HostMemoryRes>,
        offset: u64,
        data: Vec<u8>,
    ) -> WitResult<()> {
        let (handle, size) = self.host_buffer(&buffer)?;
        Ok(self.with_gpu(|gpu| {
            check_transfer(data.len() as u64)?;
            check_range("host buffer write", size, offset, data.len() as u64)?;
            gpu.host_write(handle, offset, &data)
        }))
    }

    fn read(
        &mut self,
        buffer: Resource<HostMemoryRes>,
        offset: u64,
        len: u64,
    ) -> WitResult<Vec<u8>> {
        let (handle, size) = self.host_buffer(&buffer)?;
        Ok(self.with_gpu(|gpu| {
            check_transfer(len)?;
            check_range("host buffer read", size, offset, len)?;
            gpu.host_read(handle, offset, len)
        }))
    }

    fn drop(&mut self, buffer: Resource<HostMemoryRes>) -> wasmtime::Result<()> {
        let buffer = self.removed(buffer)?;
        self.host_bytes = self.host_bytes.saturating_sub(buffer.size);
        if let Some(gpu) = self.owner(0) {
            gpu.host_free(buffer.handle).ok();
        }
        Ok(())
    }
}

impl RunState {
    /// Counts a loaded module's variables against the GPU memory limit; a module that does not
    /// fit is unloaded again.
    fn module_added(&mut self, handle: Handle) -> WitResult<Resource<ModuleRes>> {
        let global_bytes = match self.with_gpu(|gpu| gpu.module_global_bytes(handle)) {
            Ok(bytes) => bytes,
            Err(e) => return Ok(Err(e)),
        };
        if self.gpu_bytes.saturating_add(global_bytes) > self.gpu_limit {
            if let Some(gpu) = self.owner(0) {
                gpu.unload(handle).ok();
            }
            return Ok(Err(WitGpuError::LimitExceeded(format!(
                "the module's __device__ variables: {}",
                over_memory_limit(
                    "GPU memory",
                    global_bytes,
                    self.gpu_bytes,
                    self.gpu_limit,
                    self.settings().gpu_memory,
                )
            ))));
        }
        self.gpu_bytes += global_bytes;
        Ok(Ok(self.added(ModuleRes {
            handle,
            global_bytes,
        })?))
    }
}

impl gpu::HostModule for RunState {
    fn compile(&mut self, name: String, source: String) -> WitResult<Resource<ModuleRes>> {
        if let Err(e) = self.admit_resource() {
            return Ok(Err(e));
        }
        match self.with_gpu(|gpu| gpu.compile(&name, &source)) {
            Ok(handle) => self.module_added(handle),
            Err(e) => Ok(Err(e)),
        }
    }

    fn load_ptx(&mut self, ptx: String) -> WitResult<Resource<ModuleRes>> {
        if let Err(e) = self.admit_resource() {
            return Ok(Err(e));
        }
        match self.with_gpu(|gpu| gpu.load_ptx(&ptx)) {
            Ok(handle) => self.module_added(handle),
            Err(e) => Ok(Err(e)),
        }
    }

    fn kernel(
        &mut self,
        module: Resource<ModuleRes>,
        name: String,
    ) -> WitResult<Resource<KernelRes>> {
        if let Err(e) = self.admit_resource() {
            return Ok(Err(e));
        }
        let module = self.table.get(&module)?.handle;
        match self.with_gpu(|gpu| gpu.kernel(module, &name)) {
            Ok((handle, params)) => Ok(Ok(self.added(KernelRes {
                handle,
                name,
                params,
            })?)),
            Err(e) => Ok(Err(e)),
        }
    }

    fn drop(&mut self, module: Resource<ModuleRes>) -> wasmtime::Result<()> {
        let module = self.removed(module)?;
        self.gpu_bytes = self.gpu_bytes.saturating_sub(module.global_bytes);
        if let Some(gpu) = self.owner(0) {
            gpu.unload(module.handle).ok();
        }
        Ok(())
    }
}

impl gpu::HostKernel for RunState {
    fn params(&mut self, kernel: Resource<KernelRes>) -> wasmtime::Result<Vec<u32>> {
        Ok(self.table.get(&kernel)?.params.clone())
    }

    fn launch(
        &mut self,
        kernel: Resource<KernelRes>,
        config: gpu::LaunchConfig,
        args: Vec<gpu::KernelArg>,
        s: Resource<StreamRes>,
    ) -> WitResult<()> {
        let (stream, on) = self.stream(&s)?;
        // Modules, and so kernels, are device 0's.
        let mut device = if on == 0 {
            Ok(0)
        } else {
            one_device("launch", &[0, on])
        };
        let mut lowered = Vec::with_capacity(args.len());
        for arg in &args {
            lowered.push(match arg {
                gpu::KernelArg::Buffer(buffer) => {
                    let (handle, _, on) = self.buffer(buffer)?;
                    if on != 0 && device.is_ok() {
                        device = one_device("launch", &[0, on]);
                    }
                    KernelArg::Buffer(handle)
                }
                gpu::KernelArg::S32(v) => KernelArg::I32(*v),
                gpu::KernelArg::U32(v) => KernelArg::U32(*v),
                gpu::KernelArg::S64(v) => KernelArg::I64(*v),
                gpu::KernelArg::U64(v) => KernelArg::U64(*v),
                gpu::KernelArg::F32(v) => KernelArg::F32(*v),
                gpu::KernelArg::F64(v) => KernelArg::F64(*v),
            });
        }
        let launch = LaunchConfig {
            grid: (config.grid_x, config.grid_y, config.grid_z),
            block: (config.block_x, config.block_y, config.block_z),
            shared_mem_bytes: config.shared_mem_bytes,
        };
        // Checked while the kernel is borrowed from the table: launches are the hot path.
        let (handle, checked) = {
            let kernel = self.table.get(&kernel)?;
            let checked = check_arguments(&kernel.name, &kernel.params, &lowered)
                .and_then(|()| check_shape(&kernel.name, &launch));
            (kernel.handle, checked)
        };
        Ok(self.with_device(device, |gpu| {
            checked?;
            gpu.launch(handle, &launch, &lowered, stream)
        }))
    }

    fn drop(&mut self, kernel: Resource<KernelRes>) -> wasmtime::Result<()> {
        self.removed(kernel)?;
        Ok(())
    }
}

/// Arguments must match the kernel's declared parameters in number and size.
fn check_arguments(name: &str, params: &[u32], args: &[KernelArg]) -> Result<(), GpuError> {
    if params.len() != args.len() {
        return Err(GpuError::InvalidArgument(format!(
            "kernel {name} takes {} arguments, {} were given",
            params.len(),
            args.len()
        )));
    }
    for (i, (size, arg)) in params.iter().zip(args).enumerate() {
        if *size != arg.size() {
            return Err(GpuError::InvalidArgument(format!(
                "kernel {name}: argument {i} is {} bytes ({arg:?}) but the parameter is {size} bytes",
                arg.size()
            )));
        }
    }
    Ok(())
}

fn check_shape(name: &str, config: &LaunchConfig) -> Result<(), GpuError> {
    let (gx, gy, gz) = config.grid;
    let (bx, by, bz) = config.block;
    if [gx, gy, gz, bx, by, bz].contains(&0) {
        return Err(GpuError::InvalidArgument(format!(
            "kernel {name}: grid {:?} and block {:?} need every dimension at least 1",
            config.grid, config.block
        )));
    }
    if u64::from(bx) * u64::from(by) * u64::from(bz) > 1024 {
        return Err(GpuError::InvalidArgument(format!(
            "kernel {name}: a block of {:?} has more than 1024 threads",
            config.block
        )));
    }
    Ok(())
}

impl gpu::HostStream for RunState {
    fn create(&mut self) -> WitResult<Resource<StreamRes>> {
        self.stream_on(0)
    }

    fn synchronize(&mut self, s: Resource<StreamRes>) -> WitResult<()> {
        let (stream, device) = self.stream(&s)?;
        Ok(self.with_device(Ok(device), |gpu| gpu.stream_sync(stream)))
    }

    fn drop(&mut self, s: Resource<StreamRes>) -> wasmtime::Result<()> {
        let stream = self.removed(s)?;
        if let Some(gpu) = self.owner(stream.device) {
            gpu.stream_destroy(stream.handle).ok();
        }
        Ok(())
    }
}

impl gpu::HostEvent for RunState {
    fn create(&mut self) -> WitResult<Resource<EventRes>> {
        self.event_on(0)
    }

    fn record(&mut self, event: Resource<EventRes>, s: Resource<StreamRes>) -> WitResult<()> {
        let (event, device) = self.event(&event)?;
        let (stream, on) = self.stream(&s)?;
        let device = one_device("event record", &[device, on]);
        Ok(self.with_device(device, |gpu| gpu.event_record(event, stream)))
    }

    fn synchronize(&mut self, event: Resource<EventRes>) -> WitResult<()> {
        let (event, device) = self.event(&event)?;
        Ok(self.with_device(Ok(device), |gpu| gpu.event_sync(event)))
    }

    fn query(&mut self, event: Resource<EventRes>) -> WitResult<bool> {
        let (event, device) = self.event(&event)?;
        Ok(self.with_device(Ok(device), |gpu| gpu.event_query(event)))
    }

    fn elapsed_ms(&mut self, end: Resource<EventRes>, start: Resource<EventRes>) -> WitResult<f32> {
        let (end, end_device) = self.event(&end)?;
        let (start, start_device) = self.event(&start)?;
        let device = one_device("elapsed-ms", &[start_device, end_device]);
        Ok(self.with_device(device, |gpu| gpu.event_elapsed_ms(start, end)))
    }

    fn drop(&mut self, event: Resource<EventRes>) -> wasmtime::Result<()> {
        let event = self.removed(event)?;
        if let Some(gpu) = self.owner(event.device) {
            gpu.event_destroy(event.handle).ok();
        }
        Ok(())
    }
}

impl peers::Host for RunState {
    fn devices(&mut self) -> wasmtime::Result<Vec<gpu::DeviceInfo>> {
        if self.gpus.is_empty() {
            wasmtime::bail!("describe must not use the GPU");
        }
        Ok(self.gpus.iter().map(|g| device_info(g.info())).collect())
    }

    fn can_access_peer(&mut self, from: u32, to: u32) -> WitResult<bool> {
        let result = self
            .pair(from as usize, to as usize)
            .and_then(|(a, b)| a.can_access_peer(b));
        Ok(self.note(result).map_err(to_wit))
    }

    fn set_peer_access(&mut self, from: u32, to: u32, enabled: bool) -> WitResult<()> {
        let result = self.pair(from as usize, to as usize).and_then(|(a, b)| {
            if enabled && !a.can_access_peer(b)? {
                return Err(GpuError::InvalidArgument(format!(
                    "device {from} cannot access device {to} directly"
                )));
            }
            a.set_peer_access(b, enabled)
        });
        Ok(self.note(result).map_err(to_wit))
    }

    fn alloc(&mut self, device: u32, size: u64) -> WitResult<Resource<BufferRes>> {
        self.alloc_on(device as usize, size)
    }

    fn create_stream(&mut self, device: u32) -> WitResult<Resource<StreamRes>> {
        self.stream_on(device as usize)
    }

    fn create_event(&mut self, device: u32) -> WitResult<Resource<EventRes>> {
        self.event_on(device as usize)
    }

    fn copy_peer(
        &mut self,
        dst: Resource<BufferRes>,
        dst_offset: u64,
        src: Resource<BufferRes>,
        src_offset: u64,
        len: u64,
        s: Resource<StreamRes>,
    ) -> WitResult<()> {
        let (dst, dst_size, dst_device) = self.buffer(&dst)?;
        let (src, src_size, src_device) = self.buffer(&src)?;
        let (stream, on) = self.stream(&s)?;
        let checks = check_range("copy-peer destination", dst_size, dst_offset, len)
            .and_then(|()| check_range("copy-peer source", src_size, src_offset, len))
            .and_then(|()| match on == src_device {
                true => Ok(()),
                false => Err(GpuError::InvalidArgument(format!(
                    "copy-peer runs on a stream of the source's device {src_device}, not {on}"
                ))),
            });
        if let Err(e) = checks {
            return Ok(Err(to_wit(e)));
        }
        if dst_device == src_device {
            return Ok(self.with_device(Ok(src_device), |gpu| {
                gpu.copy(dst, dst_offset, src, src_offset, len, stream)
            }));
        }
        let result = self.pair(src_device, dst_device).and_then(|(from, to)| {
            from.copy_to_peer(src, src_offset, to, dst, dst_offset, len, stream)
        });
        Ok(self.note(result).map_err(to_wit))
    }
}

impl report::Host for RunState {
    fn metric(&mut self, name: String, value: f64, unit: String) -> wasmtime::Result<()> {
        Ok(self.report(RunEvent::Metric(Metric { name, value, unit }))?)
    }

    fn progress(&mut self, fraction: f32, note: String) -> wasmtime::Result<()> {
        Ok(self.report(RunEvent::Progress(fraction.clamp(0.0, 1.0), note))?)
    }

    fn log(&mut self, level: report::Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            report::Level::Debug => LogLevel::Debug,
            report::Level::Info => LogLevel::Info,
            report::Level::Warn => LogLevel::Warn,
            report::Level::Error => LogLevel::Error,
        };
        Ok(self.report(RunEvent::Log(level, message))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_checked_against_parameters() {
        let ok = [KernelArg::Buffer(Handle(1)), KernelArg::U32(3)];
        assert!(check_arguments("k", &[8, 4], &ok).is_ok());
        let err = check_arguments("k", &[8, 4], &ok[..1])
            .unwrap_err()
            .to_string();
        assert!(err.contains("takes 2 arguments, 1 were given"), "{err}");
        let err = check_arguments("k", &[8, 8], &ok).unwrap_err().to_string();
        assert!(err.contains("argument 1 is 4 bytes"), "{err}");
    }

    #[test]
    fn launch_shapes_are_checked() {
        let shape = |grid, block| LaunchConfig {
            grid,
            block,
            shared_mem_bytes: 0,
        };
        assert!(check_shape("k", &shape((1, 1, 1), (1024, 1, 1))).is_ok());
        assert!(check_shape("k", &shape((0, 1, 1), (32, 1, 1))).is_err());
        assert!(check_shape("k", &shape((1, 1, 1), (32, 32, 2))).is_err());
    }

    #[test]
    fn ranges_cannot_overflow() {
        assert!(check_range("b", 16, 8, 8).is_ok());
        assert!(check_range("b", 16, 9, 8).is_err());
        assert!(check_range("b", 16, u64::MAX, 2).is_err());
    }
}
