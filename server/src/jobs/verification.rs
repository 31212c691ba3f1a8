//! Did the passthrough work? The agent in a VM reports what its CUDA driver sees; that is
//! compared with what the VM was given.

use passage_app::plugins::DeviceView;

/// The verdict on a VM given `assigned` GPUs of `model` whose agent sees `devices`: a sentence
/// starting with `verified`, `mismatch` or `unverified`.
pub fn verdict(model: &str, assigned: usize, devices: &[DeviceView]) -> String {
    if devices.iter().any(|d| d.simulated) {
        return format!(
            "unverified: the agent runs on a simulated GPU ({} device(s)), so the passthrough of {assigned} × {model} cannot be checked",
            devices.len()
        );
    }
    if devices.len() != assigned {
        return format!(
            "mismatch: {assigned} × {model} passed through, but the guest's CUDA driver sees {} GPU(s)",
            devices.len()
        );
    }
    // The model's first word (`H100`, `A100`, `L40S`, `RTX`, `Tesla`) is in CUDA's name for it.
    let key = model
        .split_whitespace()
        .next()
        .unwrap_or(model)
        .to_ascii_lowercase();
    match devices
        .iter()
        .find(|d| !d.name.to_ascii_lowercase().contains(&key))
    {
        Some(other) => format!(
            "mismatch: {model} passed through, but the guest sees {:?} at {}",
            other.name, other.pci_bus_id
        ),
        None => format!(
            "verified: the guest's CUDA driver sees {assigned} × {}",
            devices.first().map(|d| d.name.as_str()).unwrap_or(model)
        ),
    }
}

/// The verdict when the guest's agent found no usable CUDA driver: nothing can be checked.
pub fn no_driver(model: &str, assigned: usize, problem: &str) -> String {
    format!(
        "unverified: the agent found no CUDA driver in the guest, so the passthrough of \
         {assigned} × {model} cannot be checked ({problem})"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(name: &str, simulated: bool) -> DeviceView {
        DeviceView {
            index: 0,
            name: name.into(),
            pci_bus_id: "0000:06:00.0".into(),
            total_memory: 80 << 30,
            compute_capability: "9.0".into(),
            simulated,
        }
    }

    #[test]
    fn the_guest_must_see_every_gpu_of_the_model() {
        let h100 = device("NVIDIA H100 PCIe", false);
        assert!(verdict("H100 PCIe", 2, &[h100.clone(), h100.clone()]).starts_with("verified"));
        assert!(verdict("H100 PCIe", 2, std::slice::from_ref(&h100)).starts_with("mismatch"));
        let a100 = device("NVIDIA A100 80GB PCIe", false);
        assert!(verdict("H100 PCIe", 1, &[a100]).starts_with("mismatch"));
        assert!(
            verdict("H100 PCIe", 1, &[device("Simulated GPU", true)]).starts_with("unverified")
        );
        assert!(verdict("H100 PCIe", 1, &[]).starts_with("mismatch"));
    }
}
