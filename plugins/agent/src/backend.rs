//! Opens the GPU backend chosen on the command line, and lists what it sees.

use std::path::Path;

use anyhow::Context;
use passage_gpu::{DeviceInfo, FakeGpu, GpuBackend};
use serde::{Deserialize, Serialize};

use crate::BackendKind;

/// Memory of a simulated device.
const FAKE_MEMORY: u64 = 16 << 30;

/// A GPU as the portal is told about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device {
    /// Device index (CUDA ordinal).
    pub index: i64,
    /// Marketing name.
    pub name: String,
    /// PCI bus id as this machine sees it.
    pub pci_bus_id: String,
    /// Memory in bytes.
    pub total_memory: u64,
    /// e.g. `9.0`.
    pub compute_capability: String,
    /// True on the simulated backend.
    pub simulated: bool,
}

impl Device {
    /// Device `index` described by `info`.
    pub fn new(index: usize, info: &DeviceInfo) -> Device {
        Device {
            index: index as i64,
            name: info.name.clone(),
            pci_bus_id: info.pci_bus_id.clone(),
            total_memory: info.total_memory,
            compute_capability: format!("{}.{}", info.capability.0, info.capability.1),
            simulated: info.simulated,
        }
    }
}

/// The backend for device `ordinal`; the CUDA backend caches compiled PTX under `cache`.
pub fn open(
    kind: BackendKind,
    ordinal: usize,
    cache: Option<&Path>,
) -> anyhow::Result<Box<dyn GpuBackend>> {
    match kind {
        BackendKind::Fake => Ok(Box::new(FakeGpu::numbered(ordinal, FAKE_MEMORY))),
        BackendKind::Cuda => {
            let gpu = passage_gpu::cuda::CudaGpu::open(ordinal, cache.map(|c| c.join("ptx")))
                .with_context(|| format!("CUDA device {ordinal}"))?;
            Ok(Box::new(gpu))
        }
    }
}

/// Every GPU of a backend: CUDA's devices, or `fake_devices` simulated ones. Opening a CUDA
/// device makes a context, so `serve` asks a child process (`passage-agent devices`) instead.
pub fn devices(kind: BackendKind, fake_devices: usize) -> anyhow::Result<Vec<Device>> {
    match kind {
        BackendKind::Fake => Ok((0..fake_devices)
            .map(|i| Device::new(i, FakeGpu::numbered(i, FAKE_MEMORY).info()))
            .collect()),
        BackendKind::Cuda => {
            let count = passage_gpu::cuda::device_count()?;
            (0..count)
                .map(|i| {
                    let gpu = passage_gpu::cuda::CudaGpu::open(i, None)
                        .with_context(|| format!("CUDA device {i}"))?;
                    Ok(Device::new(i, gpu.info()))
                })
                .collect()
        }
    }
}
