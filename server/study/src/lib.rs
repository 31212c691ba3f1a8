//! Passage's experiment statistics and charts.
//!
//! An experiment runs the same CUDA benchmarks natively and in VMs and compares them. This
//! crate turns the raw samples into what the portal shows: summaries ([`stats::summarize`]),
//! differences against a baseline with bootstrap intervals ([`stats::difference`]), and
//! standalone SVG charts ([`charts::grouped_bars`], [`charts::lines`]) that a server-rendered
//! page can embed, a person can download, and a printer can print.

pub mod charts;
pub mod stats;
