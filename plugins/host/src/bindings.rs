//! Host bindings of the plugin contract, generated from `plugins/wit` once, here.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
    imports: { default: trappable },
    with: {
        "passage:plugin/gpu.buffer": crate::gpu_host::BufferRes,
        "passage:plugin/gpu.host-memory": crate::gpu_host::HostMemoryRes,
        "passage:plugin/gpu.module": crate::gpu_host::ModuleRes,
        "passage:plugin/gpu.kernel": crate::gpu_host::KernelRes,
        "passage:plugin/gpu.stream": crate::gpu_host::StreamRes,
        "passage:plugin/gpu.event": crate::gpu_host::EventRes,
    },
});

pub use passage::plugin::types::GpuError;
