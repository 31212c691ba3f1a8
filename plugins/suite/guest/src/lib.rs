//! The suite's benchmarks as plugins: [`SdkGpu`] implements the suite's [`Gpu`] over the plugin
//! contract's `gpu` and `report` imports, and [`suite_plugin!`] makes a crate that plugin.
//!
//! ```ignore
//! passage_suite_guest::suite_plugin!(passage_suite::clock::Clock);
//! ```

use passage_plugin_sdk::{
    Buffer, Event, GpuError, HostMemory, Kernel, KernelArg, LaunchConfig, Level, Module, Param,
    ParamSpec, PluginInfo, Stream, Value as SdkValue, gpu, param, report,
};
use passage_suite::{Arg, Benchmark, DeviceFacts, Gpu, Launch, ParamDecl, Params, Res, Value};

#[doc(hidden)]
pub use passage_plugin_sdk as sdk;

/// The GPU of a plugin run, through the host.
#[derive(Debug, Default)]
pub struct SdkGpu;

fn err(what: &'static str) -> impl FnOnce(GpuError) -> String {
    move |e| format!("{what}: {e:?}")
}

impl Gpu for SdkGpu {
    type Buffer = Buffer;
    type Host = HostMemory;
    type Module = Module;
    type Kernel = Kernel;
    type Stream = Stream;
    type Event = Event;

    fn device(&self) -> DeviceFacts {
        let info = gpu::device();
        DeviceFacts {
            name: info.name,
            simulated: info.simulated,
            clock_khz: info.clock_khz,
            multiprocessors: info.multiprocessors,
        }
    }

    fn alloc(&self, bytes: u64) -> Res<Buffer> {
        Buffer::alloc(bytes).map_err(err("allocate device memory"))
    }

    fn write(&self, dst: &Buffer, offset: u64, data: &[u8]) -> Res<()> {
        dst.write(offset, data).map_err(err("copy to the device"))
    }

    fn read(&self, src: &Buffer, offset: u64, len: u64) -> Res<Vec<u8>> {
        src.read(offset, len).map_err(err("copy from the device"))
    }

    fn fill(&self, dst: &Buffer, value: u8, stream: &Stream) -> Res<()> {
        dst.fill(value, stream).map_err(err("fill device memory"))
    }

    fn copy(&self, dst: &Buffer, src: &Buffer, len: u64, stream: &Stream) -> Res<()> {
        dst.copy_from(0, src, 0, len, stream)
            .map_err(err("copy device to device"))
    }

    fn host_alloc(&self, bytes: u64, pinned: bool) -> Res<HostMemory> {
        HostMemory::alloc(bytes, pinned).map_err(err("allocate host memory"))
    }

    fn host_write(&self, dst: &HostMemory, offset: u64, data: &[u8]) -> Res<()> {
        dst.write(offset, data).map_err(err("write host memory"))
    }

    fn host_read(&self, src: &HostMemory, offset: u64, len: u64) -> Res<Vec<u8>> {
        src.read(offset, len).map_err(err("read host memory"))
    }

    fn upload(&self, dst: &Buffer, src: &HostMemory, len: u64, stream: &Stream) -> Res<()> {
        dst.upload(0, src, 0, len, stream)
            .map_err(err("copy host to device"))
    }

    fn download(&self, dst: &HostMemory, src: &Buffer, len: u64, stream: &Stream) -> Res<()> {
        src.download(0, dst, 0, len, stream)
            .map_err(err("copy device to host"))
    }

    fn compile(&self, name: &str, source: &str) -> Res<Module> {
        Module::compile(name, source).map_err(err("compile CUDA C"))
    }

    fn kernel(&self, module: &Module, name: &str) -> Res<Kernel> {
        module.kernel(name).map_err(err("find a kernel"))
    }

    fn launch(
        &self,
        kernel: &Kernel,
        config: Launch,
        args: &[Arg<'_, Buffer>],
        stream: &Stream,
    ) -> Res<()> {
        let args: Vec<KernelArg<'_>> = args
            .iter()
            .map(|a| match a {
                Arg::Buffer(b) => KernelArg::Buffer(b),
                Arg::I32(v) => KernelArg::S32(*v),
                Arg::I64(v) => KernelArg::S64(*v),
                Arg::F32(v) => KernelArg::F32(*v),
            })
            .collect();
        let config = LaunchConfig {
            grid_x: config.grid.0,
            grid_y: config.grid.1,
            grid_z: config.grid.2,
            block_x: config.block.0,
            block_y: config.block.1,
            block_z: config.block.2,
            shared_mem_bytes: config.shared_mem_bytes,
        };
        kernel
            .launch(config, &args, stream)
            .map_err(err("launch a kernel"))
    }

    fn stream(&self) -> Res<Stream> {
        Stream::create().map_err(err("create a stream"))
    }

    fn synchronize(&self, stream: &Stream) -> Res<()> {
        stream.synchronize().map_err(err("wait for a stream"))
    }

    fn event(&self) -> Res<Event> {
        Event::create().map_err(err("create an event"))
    }

    fn record(&self, event: &Event, stream: &Stream) -> Res<()> {
        event.record(stream).map_err(err("record an event"))
    }

    fn wait(&self, event: &Event) -> Res<()> {
        event.synchronize().map_err(err("wait for an event"))
    }

    fn query(&self, event: &Event) -> Res<bool> {
        event.query().map_err(err("query an event"))
    }

    fn elapsed_ms(&self, start: &Event, end: &Event) -> Res<f64> {
        end.elapsed_ms(start)
            .map(f64::from)
            .map_err(err("read an event"))
    }

    fn metric(&self, name: &str, value: f64, unit: &str) {
        report::metric(name, value, unit);
    }

    fn log(&self, message: &str) {
        report::log(Level::Info, message);
    }
}

fn spec(decl: ParamDecl) -> ParamSpec {
    let default = match decl.default {
        Value::Integer(v) => SdkValue::Integer(v),
        Value::Float(v) => SdkValue::Float(v),
        Value::Boolean(v) => SdkValue::Boolean(v),
        Value::Text(v) => SdkValue::Text(v),
    };
    param(
        decl.name,
        decl.summary,
        default,
        decl.min,
        decl.max,
        decl.unit,
    )
}

/// `describe` of the plugin for benchmark `B`.
pub fn describe<B: Benchmark>(version: &str) -> PluginInfo {
    PluginInfo {
        name: B::NAME.into(),
        version: version.into(),
        summary: B::SUMMARY.into(),
        params: B::params().into_iter().map(spec).collect(),
    }
}

/// `run` of the plugin for benchmark `B`.
pub fn run<B: Benchmark>(params: Vec<Param>) -> Result<(), String> {
    let params = Params::new(
        params
            .into_iter()
            .map(|p| {
                let value = match p.value {
                    SdkValue::Integer(v) => Value::Integer(v),
                    SdkValue::Float(v) => Value::Float(v),
                    SdkValue::Boolean(v) => Value::Boolean(v),
                    SdkValue::Text(v) => Value::Text(v),
                };
                (p.name, value)
            })
            .collect(),
    );
    B::run(&SdkGpu, &params)
}

/// Makes the crate the plugin of one benchmark: `suite_plugin!(path::To::Benchmark);`. The crate
/// depends on `passage-plugin-sdk`, `passage-suite` and this crate, and is a `cdylib`.
#[macro_export]
macro_rules! suite_plugin {
    ($benchmark:ty) => {
        struct SuitePlugin;

        impl $crate::sdk::Guest for SuitePlugin {
            fn describe() -> $crate::sdk::PluginInfo {
                $crate::describe::<$benchmark>(env!("CARGO_PKG_VERSION"))
            }

            fn run(params: Vec<$crate::sdk::Param>) -> Result<(), String> {
                $crate::run::<$benchmark>(params)
            }
        }

        passage_plugin_sdk::export!(SuitePlugin);
    };
}
