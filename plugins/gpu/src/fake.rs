//! A simulated GPU for tests and for machines without one.
//!
//! Memory behaves as on a device: buffers hold bytes, copies and fills move them, ranges are
//! checked. Kernels do not execute: CUDA C is compiled by NVRTC where it is installed (it needs
//! no GPU), launches are checked against the declared parameters and recorded. Events measure host time. The device says it is simulated, and so must every
//! figure measured on it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::nvrtc;
use crate::signature::{self, Signatures};
use crate::{DeviceInfo, GpuBackend, GpuError, Handle, KernelArg, LaunchConfig, Leftovers};

/// One recorded kernel launch.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchRecord {
    /// The kernel's name.
    pub kernel: String,
    /// Its launch configuration.
    pub config: LaunchConfig,
    /// Its arguments.
    pub args: Vec<KernelArg>,
}

enum Object {
    Buffer(Vec<u8>),
    HostBuffer(Vec<u8>),
    Module {
        kernels: Signatures,
        global_bytes: u64,
    },
    Kernel {
        name: String,
    },
    Stream,
    Event(Option<Instant>),
}

/// The simulated device.
pub struct FakeGpu {
    info: DeviceInfo,
    objects: HashMap<Handle, Object>,
    next: u64,
    device_bytes: u64,
    launches: Arc<Mutex<Vec<LaunchRecord>>>,
    fail_next_launch: Option<GpuError>,
    peers: Vec<String>,
}

impl std::fmt::Debug for FakeGpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeGpu")
            .field("info", &self.info)
            .field("objects", &self.objects.len())
            .field("device_bytes", &self.device_bytes)
            .finish()
    }
}

impl Default for FakeGpu {
    fn default() -> Self {
        FakeGpu::new(16 << 30)
    }
}

impl FakeGpu {
    /// A simulated device with `total_memory` bytes.
    pub fn new(total_memory: u64) -> FakeGpu {
        FakeGpu {
            info: DeviceInfo {
                name: "Passage simulated GPU".into(),
                total_memory,
                capability: (9, 0),
                multiprocessors: 4,
                clock_khz: 1_000_000,
                memory_clock_khz: 1_000_000,
                memory_bus_width: 256,
                pci_bus_id: "0000:00:00.0".into(),
                simulated: true,
            },
            objects: HashMap::new(),
            next: 1,
            device_bytes: 0,
            launches: Arc::default(),
            fail_next_launch: None,
            peers: Vec::new(),
        }
    }

    /// Simulated device number `index` of a machine with several, each at its own PCI address.
    pub fn numbered(index: usize, total_memory: u64) -> FakeGpu {
        let mut gpu = FakeGpu::new(total_memory);
        gpu.info.pci_bus_id = format!("0000:{:02x}:00.0", 0x10 + index);
        gpu
    }

    /// The launch log, shared: it stays readable after the device moves into a plugin host.
    pub fn launches(&self) -> Arc<Mutex<Vec<LaunchRecord>>> {
        self.launches.clone()
    }

    /// Makes the next launch fail with `error`, to test how callers handle device faults.
    pub fn fail_next_launch(&mut self, error: GpuError) {
        self.fail_next_launch = Some(error);
    }

    /// Objects currently alive (for tests of cleanup).
    pub fn live_objects(&self) -> usize {
        self.objects.len()
    }

    fn insert(&mut self, object: Object) -> Handle {
        let handle = Handle(self.next);
        self.next += 1;
        self.objects.insert(handle, object);
        handle
    }

    fn buffer(&mut self, handle: Handle) -> Result<&mut Vec<u8>, GpuError> {
        match self.objects.get_mut(&handle) {
            Some(Object::Buffer(bytes)) => Ok(bytes),
            _ => Err(GpuError::InvalidArgument(format!(
                "{handle:?} is not a device buffer"
            ))),
        }
    }

    fn host(&mut self, handle: Handle) -> Result<&mut Vec<u8>, GpuError> {
        match self.objects.get_mut(&handle) {
            Some(Object::HostBuffer(bytes)) => Ok(bytes),
            _ => Err(GpuError::InvalidArgument(format!(
                "{handle:?} is not a host buffer"
            ))),
        }
    }

    fn check_stream(&self, handle: Handle) -> Result<(), GpuError> {
        match self.objects.get(&handle) {
            Some(Object::Stream) => Ok(()),
            _ => Err(GpuError::InvalidArgument(format!(
                "{handle:?} is not a stream"
            ))),
        }
    }

    fn remove(
        &mut self,
        handle: Handle,
        what: &str,
        matches: fn(&Object) -> bool,
    ) -> Result<Object, GpuError> {
        match self.objects.get(&handle) {
            Some(object) if matches(object) => Ok(self.objects.remove(&handle).expect("present")),
            _ => Err(GpuError::InvalidArgument(format!(
                "{handle:?} is not a {what}"
            ))),
        }
    }

    /// Copies between two byte vectors held in the object map (which may be the same one).
    fn copy_bytes(
        &mut self,
        dst: (Handle, u64),
        src: (Handle, u64),
        len: u64,
        pick: fn(&mut FakeGpu, Handle) -> Result<&mut Vec<u8>, GpuError>,
        pick_src: fn(&mut FakeGpu, Handle) -> Result<&mut Vec<u8>, GpuError>,
    ) -> Result<(), GpuError> {
        let data = {
            let bytes = pick_src(self, src.0)?;
            slice(bytes, src.1, len)?.to_vec()
        };
        let bytes = pick(self, dst.0)?;
        slice_mut(bytes, dst.1, len)?.copy_from_slice(&data);
        Ok(())
    }
}

fn range(len_of: usize, offset: u64, len: u64) -> Result<std::ops::Range<usize>, GpuError> {
    let end = offset
        .checked_add(len)
        .filter(|end| *end <= len_of as u64)
        .ok_or_else(|| {
            GpuError::InvalidArgument(format!(
                "range {offset}..{} is outside a {len_of}-byte buffer",
                offset.saturating_add(len)
            ))
        })?;
    Ok(offset as usize..end as usize)
}

fn slice(bytes: &[u8], offset: u64, len: u64) -> Result<&[u8], GpuError> {
    Ok(&bytes[range(bytes.len(), offset, len)?])
}

fn slice_mut(bytes: &mut [u8], offset: u64, len: u64) -> Result<&mut [u8], GpuError> {
    let r = range(bytes.len(), offset, len)?;
    Ok(&mut bytes[r])
}

impl GpuBackend for FakeGpu {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn alloc(&mut self, size: u64) -> Result<Handle, GpuError> {
        let total = self.device_bytes.saturating_add(size);
        if total > self.info.total_memory {
            return Err(GpuError::OutOfMemory(format!(
                "{size} bytes requested, {} of {} in use",
                self.device_bytes, self.info.total_memory
            )));
        }
        let bytes =
            usize::try_from(size).map_err(|_| GpuError::OutOfMemory(format!("{size} bytes")))?;
        self.device_bytes = total;
        Ok(self.insert(Object::Buffer(vec![0xa5; bytes])))
    }

    fn free(&mut self, buffer: Handle) -> Result<(), GpuError> {
        if let Object::Buffer(bytes) =
            self.remove(buffer, "device buffer", |o| matches!(o, Object::Buffer(_)))?
        {
            self.device_bytes -= bytes.len() as u64;
        }
        Ok(())
    }

    fn write(&mut self, buffer: Handle, offset: u64, data: &[u8]) -> Result<(), GpuError> {
        slice_mut(self.buffer(buffer)?, offset, data.len() as u64)?.copy_from_slice(data);
        Ok(())
    }

    fn read(&mut self, buffer: Handle, offset: u64, len: u64) -> Result<Vec<u8>, GpuError> {
        Ok(slice(self.buffer(buffer)?, offset, len)?.to_vec())
    }

    fn fill(&mut self, buffer: Handle, value: u8, stream: Handle) -> Result<(), GpuError> {
        self.check_stream(stream)?;
        self.buffer(buffer)?.fill(value);
        Ok(())
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
        self.check_stream(stream)?;
        self.copy_bytes(
            (dst, dst_offset),
            (src, src_offset),
            len,
            FakeGpu::buffer,
            FakeGpu::buffer,
        )
    }

    fn host_alloc(&mut self, size: u64, pinned: bool) -> Result<Handle, GpuError> {
        let bytes = usize::try_from(size)
            .map_err(|_| GpuError::OutOfMemory(format!("{size} bytes of host memory")))?;
        // Zeroed memory comes from the system untouched, so a large buffer costs nothing
        // until it is written, as with the pages of a real allocation.
        let storage = vec![0u8; bytes];
        // Simulated memory is never page-locked; `pinned` only matters on a real device.
        let _ = pinned;
        Ok(self.insert(Object::HostBuffer(storage)))
    }

    fn host_free(&mut self, buffer: Handle) -> Result<(), GpuError> {
        self.remove(buffer, "host buffer", |o| {
            matches!(o, Object::HostBuffer(_))
        })
        .map(drop)
    }

    fn host_write(&mut self, buffer: Handle, offset: u64, data: &[u8]) -> Result<(), GpuError> {
        slice_mut(self.host(buffer)?, offset, data.len() as u64)?.copy_from_slice(data);
        Ok(())
    }

    fn host_read(&mut self, buffer: Handle, offset: u64, len: u64) -> Result<Vec<u8>, GpuError> {
        Ok(slice(self.host(buffer)?, offset, len)?.to_vec())
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
        self.check_stream(stream)?;
        self.copy_bytes(
            (dst, dst_offset),
            (src, src_offset),
            len,
            FakeGpu::buffer,
            FakeGpu::host,
        )
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
        self.check_stream(stream)?;
        self.copy_bytes(
            (dst, dst_offset),
            (src, src_offset),
            len,
            FakeGpu::host,
            FakeGpu::buffer,
        )
    }

    fn compile(&mut self, name: &str, source: &str) -> Result<Handle, GpuError> {
        crate::source::check_cuda_source(name, source)?;
        // With NVRTC the source is compiled for real, so its errors and its kernels' parameter
        // lists are the compiler's; without it, Passage's own reading of the signatures is all
        // there is, and the agent says so.
        let (kernels, global_bytes) = if nvrtc::find().is_some() {
            let ptx = nvrtc::compile(name, source, nvrtc::arch(self.info.capability))?;
            let kernels = signature::from_ptx(&ptx).map_err(GpuError::CompileFailed)?;
            (kernels, signature::ptx_global_bytes(&ptx))
        } else {
            let kernels = signature::from_cuda_source(source)
                .map_err(|e| GpuError::CompileFailed(format!("{name}: {e}")))?;
            (kernels, signature::cuda_global_bytes(source))
        };
        Ok(self.insert(Object::Module {
            kernels,
            global_bytes,
        }))
    }

    fn load_ptx(&mut self, ptx: &str) -> Result<Handle, GpuError> {
        let kernels = signature::from_ptx(ptx).map_err(GpuError::NotFound)?;
        if kernels.is_empty() {
            return Err(GpuError::NotFound("the PTX has no .entry".into()));
        }
        let global_bytes = signature::ptx_global_bytes(ptx);
        Ok(self.insert(Object::Module {
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
            .map(drop)
    }

    fn kernel(&mut self, module: Handle, name: &str) -> Result<(Handle, Vec<u32>), GpuError> {
        let params = match self.objects.get(&module) {
            Some(Object::Module { kernels, .. }) => kernels
                .get(name)
                .cloned()
                .ok_or_else(|| signature::missing_kernel(name, kernels))?,
            _ => {
                return Err(GpuError::InvalidArgument(format!(
                    "{module:?} is not a module"
                )));
            }
        };
        // Kernels are owned by their module on real devices; here they are plain records.
        let handle = self.insert(Object::Kernel { name: name.into() });
        Ok((handle, params))
    }

    fn launch(
        &mut self,
        kernel: Handle,
        config: &LaunchConfig,
        args: &[KernelArg],
        stream: Handle,
    ) -> Result<(), GpuError> {
        self.check_stream(stream)?;
        let name = match self.objects.get(&kernel) {
            Some(Object::Kernel { name }) => name.clone(),
            _ => {
                return Err(GpuError::InvalidArgument(format!(
                    "{kernel:?} is not a kernel"
                )));
            }
        };
        for arg in args {
            if let KernelArg::Buffer(handle) = arg {
                self.buffer(*handle)?;
            }
        }
        if let Some(error) = self.fail_next_launch.take() {
            return Err(error);
        }
        self.launches
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(LaunchRecord {
                kernel: name,
                config: *config,
                args: args.to_vec(),
            });
        Ok(())
    }

    fn stream_create(&mut self) -> Result<Handle, GpuError> {
        Ok(self.insert(Object::Stream))
    }

    fn stream_destroy(&mut self, stream: Handle) -> Result<(), GpuError> {
        self.remove(stream, "stream", |o| matches!(o, Object::Stream))
            .map(drop)
    }

    fn stream_sync(&mut self, stream: Handle) -> Result<(), GpuError> {
        self.check_stream(stream)
    }

    fn event_create(&mut self) -> Result<Handle, GpuError> {
        Ok(self.insert(Object::Event(None)))
    }

    fn event_destroy(&mut self, event: Handle) -> Result<(), GpuError> {
        self.remove(event, "event", |o| matches!(o, Object::Event(_)))
            .map(drop)
    }

    fn event_record(&mut self, event: Handle, stream: Handle) -> Result<(), GpuError> {
        self.check_stream(stream)?;
        match self.objects.get_mut(&event) {
            Some(Object::Event(at)) => {
                *at = Some(Instant::now());
                Ok(())
            }
            _ => Err(GpuError::InvalidArgument(format!(
                "{event:?} is not an event"
            ))),
        }
    }

    fn event_sync(&mut self, event: Handle) -> Result<(), GpuError> {
        match self.objects.get(&event) {
            Some(Object::Event(Some(_))) => Ok(()),
            Some(Object::Event(None)) => Err(GpuError::InvalidArgument(
                "the event was never recorded".into(),
            )),
            _ => Err(GpuError::InvalidArgument(format!(
                "{event:?} is not an event"
            ))),
        }
    }

    fn event_query(&mut self, event: Handle) -> Result<bool, GpuError> {
        // Simulated work completes when it is queued: a recorded event has always happened.
        self.event_sync(event).map(|()| true)
    }

    fn event_elapsed_ms(&mut self, start: Handle, end: Handle) -> Result<f32, GpuError> {
        let at = |gpu: &FakeGpu, event: Handle| match gpu.objects.get(&event) {
            Some(Object::Event(Some(at))) => Ok(*at),
            Some(Object::Event(None)) => Err(GpuError::InvalidArgument(
                "the event was never recorded".into(),
            )),
            _ => Err(GpuError::InvalidArgument(format!(
                "{event:?} is not an event"
            ))),
        };
        let (start, end) = (at(self, start)?, at(self, end)?);
        Ok(end.saturating_duration_since(start).as_secs_f32() * 1000.0)
    }

    fn end_run(&mut self) -> Leftovers {
        let mut left = Leftovers::default();
        for object in self.objects.values() {
            match object {
                Object::Buffer(_) => left.buffers += 1,
                Object::HostBuffer(_) => left.host_buffers += 1,
                Object::Module { .. } => left.modules += 1,
                Object::Stream | Object::Event(_) => left.streams_and_events += 1,
                Object::Kernel { .. } => {}
            }
        }
        self.objects.clear();
        self.device_bytes = 0;
        self.peers.clear();
        left
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }

    fn can_access_peer(&mut self, peer: &mut dyn GpuBackend) -> Result<bool, GpuError> {
        // Simulated devices are all connected to each other, as on an NVLink machine.
        crate::same_kind::<FakeGpu>(peer).map(|_| true)
    }

    fn set_peer_access(
        &mut self,
        peer: &mut dyn GpuBackend,
        enabled: bool,
    ) -> Result<(), GpuError> {
        let id = crate::same_kind::<FakeGpu>(peer)?.info.pci_bus_id.clone();
        self.peers.retain(|p| *p != id);
        if enabled {
            self.peers.push(id);
        }
        Ok(())
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
        self.check_stream(stream)?;
        let data = slice(self.buffer(src)?, src_offset, len)?.to_vec();
        let peer = crate::same_kind::<FakeGpu>(peer)?;
        slice_mut(peer.buffer(dst)?, dst_offset, len)?.copy_from_slice(&data);
        Ok(())
    }
}

impl FakeGpu {
    /// The PCI bus ids of the peers this device has direct access to, in this run.
    pub fn peers(&self) -> &[String] {
        &self.peers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_round_trips_through_every_copy() {
        let mut gpu = FakeGpu::new(1 << 20);
        let s = gpu.stream_create().unwrap();
        let host_in = gpu.host_alloc(8, true).unwrap();
        let host_out = gpu.host_alloc(8, false).unwrap();
        let a = gpu.alloc(8).unwrap();
        let b = gpu.alloc(8).unwrap();
        gpu.host_write(host_in, 0, &[1, 2, 3, 4, 5, 6, 7, 8])
            .unwrap();
        gpu.upload(a, 0, host_in, 0, 8, s).unwrap();
        gpu.copy(b, 4, a, 0, 4, s).unwrap();
        gpu.fill(a, 9, s).unwrap();
        gpu.copy(b, 0, a, 0, 2, s).unwrap();
        gpu.download(b, 0, host_out, 0, 8, s).unwrap();
        assert_eq!(
            gpu.host_read(host_out, 0, 8).unwrap(),
            vec![9, 9, 0xa5, 0xa5, 1, 2, 3, 4]
        );
        gpu.write(a, 6, &[7, 7]).unwrap();
        assert_eq!(gpu.read(a, 5, 3).unwrap(), vec![9, 7, 7]);
    }

    #[test]
    fn out_of_range_and_wrong_handles_are_errors() {
        let mut gpu = FakeGpu::new(1 << 20);
        let s = gpu.stream_create().unwrap();
        let a = gpu.alloc(8).unwrap();
        assert!(matches!(
            gpu.read(a, 4, 5),
            Err(GpuError::InvalidArgument(_))
        ));
        assert!(matches!(
            gpu.read(a, u64::MAX, 2),
            Err(GpuError::InvalidArgument(_))
        ));
        assert!(matches!(
            gpu.write(s, 0, &[1]),
            Err(GpuError::InvalidArgument(_))
        ));
        assert!(matches!(
            gpu.fill(a, 0, a),
            Err(GpuError::InvalidArgument(_))
        ));
        assert!(matches!(gpu.alloc(2 << 20), Err(GpuError::OutOfMemory(_))));
        gpu.free(a).unwrap();
        assert!(matches!(gpu.free(a), Err(GpuError::InvalidArgument(_))));
    }

    #[test]
    fn launches_are_recorded_and_faults_can_be_injected() {
        let mut gpu = FakeGpu::new(1 << 20);
        let log = gpu.launches();
        let s = gpu.stream_create().unwrap();
        let m = gpu
            .compile("k.cu", "extern \"C\" __global__ void k(float *x, int n) {}")
            .unwrap();
        let (k, params) = gpu.kernel(m, "k").unwrap();
        assert_eq!(params, vec![8, 4]);
        assert!(matches!(gpu.kernel(m, "nope"), Err(GpuError::NotFound(_))));
        let x = gpu.alloc(16).unwrap();
        let config = LaunchConfig {
            grid: (1, 1, 1),
            block: (4, 1, 1),
            shared_mem_bytes: 0,
        };
        gpu.launch(k, &config, &[KernelArg::Buffer(x), KernelArg::I32(4)], s)
            .unwrap();
        gpu.fail_next_launch(GpuError::KernelFault("illegal address".into()));
        assert!(matches!(
            gpu.launch(k, &config, &[KernelArg::Buffer(x), KernelArg::I32(4)], s),
            Err(GpuError::KernelFault(_))
        ));
        assert_eq!(log.lock().unwrap().len(), 1);
        assert_eq!(log.lock().unwrap()[0].kernel, "k");
    }

    #[test]
    fn end_run_frees_everything_and_counts_it() {
        let mut gpu = FakeGpu::new(1 << 20);
        gpu.alloc(1024).unwrap();
        gpu.host_alloc(16, true).unwrap();
        gpu.stream_create().unwrap();
        gpu.compile("k.cu", "extern \"C\" __global__ void k() {}")
            .unwrap();
        let left = gpu.end_run();
        assert_eq!(
            left,
            Leftovers {
                buffers: 1,
                host_buffers: 1,
                modules: 1,
                streams_and_events: 1
            }
        );
        assert_eq!(gpu.live_objects(), 0);
        assert!(
            gpu.alloc(1 << 20).is_ok(),
            "all device memory is free again"
        );
    }

    #[test]
    fn events_measure_host_time_in_milliseconds() {
        let mut gpu = FakeGpu::new(1 << 20);
        let s = gpu.stream_create().unwrap();
        let (a, b) = (gpu.event_create().unwrap(), gpu.event_create().unwrap());
        assert!(
            gpu.event_elapsed_ms(a, b).is_err(),
            "unrecorded events have no time"
        );
        gpu.event_record(a, s).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
        gpu.event_record(b, s).unwrap();
        gpu.event_sync(b).unwrap();
        assert!(gpu.event_elapsed_ms(a, b).unwrap() >= 2.0);
    }

    #[test]
    fn a_recorded_event_has_happened_and_an_unrecorded_one_is_an_error() {
        let mut gpu = FakeGpu::new(1 << 20);
        let s = gpu.stream_create().unwrap();
        let e = gpu.event_create().unwrap();
        assert!(gpu.event_query(e).is_err(), "never recorded");
        gpu.event_record(e, s).unwrap();
        assert_eq!(gpu.event_query(e), Ok(true));
        assert!(gpu.event_query(s).is_err(), "a stream is not an event");
    }
}
