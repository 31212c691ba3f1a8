//! Write Passage plugins in Rust.
//!
//! A plugin implements [`Guest`] (`describe` and `run`) and exports it with [`export!`]:
//!
//! ```ignore
//! use passage_plugin_sdk::{export, Guest, Param, PluginInfo};
//!
//! struct Hello;
//! impl Guest for Hello {
//!     fn describe() -> PluginInfo { /* name, version, summary, params */ }
//!     fn run(params: Vec<Param>) -> Result<(), String> { /* use gpu, report */ }
//! }
//! export!(Hello);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2`: the `.wasm` file is a component
//! that `passage-agent run` and the portal accept. See `docs/writing-plugins.md`.

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "passage_plugin_sdk::bindings",
    });
}

mod helpers;

pub use bindings::passage::plugin::gpu::{
    self, Buffer, DeviceInfo, Event, HostMemory, Kernel, KernelArg, LaunchConfig, Module, Stream,
};
pub use bindings::passage::plugin::peers;
pub use bindings::passage::plugin::report::{self, Level};
pub use bindings::passage::plugin::types::{GpuError, Value, ValueKind};
pub use bindings::{Guest, Param, ParamSpec, PluginInfo, export};
pub use helpers::*;
