//! Opens the GPU backend chosen on the command line.

use std::path::Path;

use anyhow::Context;
use passage_gpu::{FakeGpu, GpuBackend};

use crate::BackendKind;

/// The backend for device `ordinal`; the CUDA backend caches compiled PTX under `cache`.
pub fn open(
    kind: BackendKind,
    ordinal: usize,
    cache: Option<&Path>,
) -> anyhow::Result<Box<dyn GpuBackend>> {
    match kind {
        BackendKind::Fake => Ok(Box::new(FakeGpu::default())),
        BackendKind::Cuda => {
            let gpu = passage_gpu::cuda::CudaGpu::open(ordinal, cache.map(|c| c.join("ptx")))
                .with_context(|| format!("CUDA device {ordinal}"))?;
            Ok(Box::new(gpu))
        }
    }
}
