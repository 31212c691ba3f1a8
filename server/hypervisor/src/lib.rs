//! Passage's seam to libvirt.
//!
//! Everything the portal knows about a hypervisor host comes through this crate: a long-lived
//! connection per host ([`LibvirtHost`]), the host's PCI functions ([`PciDevice`]) and which of
//! them are passthrough GPUs (display functions of the configured vendors) with their IOMMU groups ([`Gpu`]). libvirt's test driver stands in
//! for real hosts in tests and in the default configuration.

pub mod domain;
mod error;
pub mod gpu;
mod host;
pub mod pci;
pub mod readiness;
mod vm;

pub use error::HypervisorError;
pub use gpu::{
    Assignability, Gpu, GpuVendors, IommuGroup, IommuMember, NVIDIA_VENDOR_ID, classify, is_gpu,
};
pub use host::{CallObserver, CallReport, HostInventory, LibvirtHost, Volume};
pub use pci::{PciAddress, PciDevice, PcieLink};
pub use readiness::{PassthroughSupport, host_passthrough_problem};
pub use vm::{HostFacts, Hotplug};
