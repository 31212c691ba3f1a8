//! The study's ten CUDA benchmarks, after NVIDIA's cuda-samples of the same names.
//!
//! Each benchmark is written once, generic over [`Gpu`], and built twice: into a plugin (through
//! the plugin SDK, `plugins/suite/guest`) and into native Rust on cudarc (`passage-bench
//! suite-native`). Both run the same host logic and the same CUDA C (`plugins/suite/kernels`), so
//! the ratio of their figures is the cost of the plugin boundary and nothing else.
//!
//! [`study`] lists the ten plugins with the study's sizes, for whoever queues the suite.

pub mod aligned_types;
pub mod async_api;
pub mod bandwidth_test;
pub mod black_scholes;
pub mod clock;
pub mod convolution_separable;
pub mod fast_walsh_transform;
mod gpu;
pub mod matrix_mul;
mod measure;
mod params;
pub mod study;
pub mod vector_add;

pub use gpu::{Arg, DeviceFacts, Gpu, Launch, Res};
pub use measure::{
    Rng, Summary, Timer, Verification, bytes_f32, bytes_i32, f32_bytes, i32_bytes, report_summary,
    report_verification, summarize,
};
pub use params::{ParamDecl, Params, Value};

/// One benchmark of the suite.
pub trait Benchmark {
    /// The plugin's name, e.g. `matrix-mul`.
    const NAME: &'static str;
    /// One paragraph for people: what it measures and after which sample.
    const SUMMARY: &'static str;
    /// Its parameters, with the sample's values as defaults.
    fn params() -> Vec<ParamDecl>;
    /// Runs it: reports figures through [`Gpu::metric`], verification included.
    fn run<G: Gpu>(gpu: &G, params: &Params) -> Res<()>;
}

/// Calls `$body` with the benchmark type named `$name` bound to `$bench`; `$none` otherwise.
/// Lets a program dispatch on a plugin's name without a trait object.
#[macro_export]
macro_rules! with_benchmark {
    ($name:expr, $bench:ident => $body:expr, _ => $none:expr) => {
        match $name {
            "bandwidth-test" => {
                type $bench = $crate::bandwidth_test::BandwidthTest;
                $body
            }
            "matrix-mul" => {
                type $bench = $crate::matrix_mul::MatrixMul;
                $body
            }
            "vector-add" => {
                type $bench = $crate::vector_add::VectorAdd;
                $body
            }
            "black-scholes" => {
                type $bench = $crate::black_scholes::BlackScholes;
                $body
            }
            "convolution-separable" => {
                type $bench = $crate::convolution_separable::ConvolutionSeparable;
                $body
            }
            "fast-walsh-transform" => {
                type $bench = $crate::fast_walsh_transform::FastWalshTransform;
                $body
            }
            "aligned-types" => {
                type $bench = $crate::aligned_types::AlignedTypes;
                $body
            }
            "async-api" => {
                type $bench = $crate::async_api::AsyncApi;
                $body
            }
            "clock" => {
                type $bench = $crate::clock::Clock;
                $body
            }
            _ => $none,
        }
    };
}

/// The CUDA C of the gate kernel (see [`Timer`]).
pub const GATE_CU: &str = include_str!("../../kernels/gate.cu");
