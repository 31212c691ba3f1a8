//! Placing approved requests on GPUs.
//!
//! A request for N GPUs of a model goes to one host, preferably to one NUMA node, so that the
//! VM's vCPUs and memory can sit next to its GPUs. Among the NUMA nodes that fit, the one with the
//! fewest free GPUs wins (best fit), which keeps large free groups for large requests. The claim
//! itself is a database transaction guarded by a primary key on (host, function): when two
//! approvals race for a GPU, one wins and the other reads again and tries the next fit.

use std::collections::BTreeMap;

use thiserror::Error;

use crate::store::{ClaimOutcome, FreeGpu, Store, StoreError};

/// How often a placement re-reads and retries after losing a race.
const ATTEMPTS: usize = 32;

/// Where a request was placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The host.
    pub host: String,
    /// The NUMA node, when all GPUs share one.
    pub numa_node: Option<i64>,
    /// The GPUs' PCI addresses.
    pub gpus: Vec<String>,
}

/// Why a request was not placed.
#[derive(Debug, Error)]
pub enum PlaceError {
    /// Not enough free GPUs of the model on any one host; the request waits.
    #[error("{0}")]
    NoFit(String),
    /// No such request, or it is not waiting for GPUs.
    #[error("request {0} cannot be placed in its state")]
    NotPlaceable(i64),
    /// The admin's choice cannot be honoured.
    #[error("{0}")]
    BadChoice(String),
    /// The owner's GPUs would pass their quota.
    #[error("{0}")]
    OverQuota(String),
    /// Every attempt lost a race: the GPUs are very contended.
    #[error("gave up after {ATTEMPTS} attempts lost to concurrent approvals")]
    Contended,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Picks `count` GPUs on one host: one NUMA node if possible (the fullest one that fits), else
/// the host with the fewest free GPUs that still fits. Within that, GPUs behind one PCIe switch
/// (the same root port) go together, again the fullest switch that fits; a single GPU comes
/// from the least shared place, which keeps switch pairs whole for the requests that want them.
pub fn choose<'a>(
    free: impl IntoIterator<Item = &'a FreeGpu>,
    count: usize,
) -> Option<Vec<&'a FreeGpu>> {
    if count == 0 {
        return None;
    }
    // By host, keeping each host's GPUs in the order given. Lists come sorted by host already,
    // and then this sort is a single pass.
    let mut sorted: Vec<&FreeGpu> = free.into_iter().collect();
    sorted.sort_by(|a, b| a.host.cmp(&b.host));
    // The smallest group that fits; among equals, the first host (by name), then the lowest
    // node: (size, host's position, node).
    let mut best_node: Option<(usize, usize, i64)> = None;
    let mut best_host: Option<(usize, usize)> = None;
    let hosts: Vec<&[&FreeGpu]> = sorted.chunk_by(|a, b| a.host == b.host).collect();
    for (position, host) in hosts.iter().enumerate() {
        if host.len() < count {
            continue;
        }
        if best_host.is_none_or(|(size, _)| host.len() < size) {
            best_host = Some((host.len(), position));
        }
        for (i, gpu) in host.iter().enumerate() {
            let Some(node) = gpu.numa_node else { continue };
            if host[..i].iter().any(|g| g.numa_node == Some(node)) {
                continue; // counted at its first GPU
            }
            let size = host.iter().filter(|g| g.numa_node == Some(node)).count();
            if size >= count && best_node.is_none_or(|best| (size, position, node) < best) {
                best_node = Some((size, position, node));
            }
        }
    }
    if let Some((_, position, node)) = best_node {
        let group = hosts[position]
            .iter()
            .copied()
            .filter(|g| g.numa_node == Some(node))
            .collect();
        return Some(closest(group, count));
    }
    best_host.map(|(_, position)| closest(hosts[position].to_vec(), count))
}

/// An admin's choice at approval: a host, or the exact GPUs.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Choice {
    /// Place on this host only.
    #[serde(default)]
    pub host: Option<String>,
    /// Exactly these GPUs (PCI addresses), as many as the request asks for, on one host.
    #[serde(default)]
    pub gpus: Vec<String>,
}

/// The hypervisors (`kvm`, `xen`) a host with libvirt driver `driver` runs guests of.
pub fn hypervisors(driver: Option<&str>) -> Vec<&'static str> {
    ["kvm", "xen"]
        .into_iter()
        .filter(|h| runs(driver, h))
        .collect()
}

/// True when a host with libvirt driver `driver` can run a `hypervisor` guest.
fn runs(driver: Option<&str>, hypervisor: &str) -> bool {
    match driver {
        Some("TEST") | None => true,
        Some("QEMU") => hypervisor == "kvm",
        Some("Xen") => hypervisor == "xen",
        Some(_) => false,
    }
}

/// `count` GPUs out of `group` (which has enough), keeping those behind one switch together.
fn closest(group: Vec<&FreeGpu>, count: usize) -> Vec<&FreeGpu> {
    let mut by_root: BTreeMap<(Option<&str>, &str), Vec<&FreeGpu>> = BTreeMap::new();
    for gpu in group {
        // A GPU whose root port is unknown shares it with nobody.
        let key = match &gpu.pcie_root {
            Some(root) => (Some(root.as_str()), ""),
            None => (None, gpu.address.as_str()),
        };
        by_root.entry(key).or_default().push(gpu);
    }
    let mut switches: Vec<Vec<&FreeGpu>> = by_root.into_values().collect();
    if let Some(fit) = switches
        .iter()
        .filter(|s| s.len() >= count)
        .min_by_key(|s| s.len())
    {
        return fit[..count].to_vec();
    }
    // No switch holds them all: the fullest switches first.
    switches.sort_by_key(|s| std::cmp::Reverse(s.len()));
    switches.into_iter().flatten().take(count).collect()
}

/// Places a request: claims its GPUs, or marks it waiting with the reason.
pub async fn place(store: &Store, request_id: i64) -> Result<Placement, PlaceError> {
    place_with(store, request_id, &Choice::default(), None).await
}

/// Places a request within an admin's choice of host or GPUs. GPUs named one by one must all be
/// free now; otherwise the request waits like any other. With `max_gpus`, the claim is refused
/// when the owner's GPUs would pass it (checked in the claim's own transaction).
pub async fn place_with(
    store: &Store,
    request_id: i64,
    choice: &Choice,
    max_gpus: Option<i64>,
) -> Result<Placement, PlaceError> {
    let _turn = store.placement_turn().await;
    let began = std::time::Instant::now();
    let placement = claim_or_wait(store, request_id, choice, max_gpus).await;
    crate::metrics::placed_in(began.elapsed());
    placement
}

async fn claim_or_wait(
    store: &Store,
    request_id: i64,
    choice: &Choice,
    max_gpus: Option<i64>,
) -> Result<Placement, PlaceError> {
    let Some(needs) = store.request_needs(request_id).await? else {
        return Err(PlaceError::NotPlaceable(request_id));
    };
    if !needs.is_open() {
        return Err(PlaceError::NotPlaceable(request_id));
    }
    let model = needs.gpu_model.clone();
    let count = usize::try_from(needs.gpu_count).unwrap_or(0);
    if !choice.gpus.is_empty() && choice.gpus.len() != count {
        return Err(PlaceError::BadChoice(format!(
            "the request asks for {count} GPU(s); {} were chosen",
            choice.gpus.len()
        )));
    }
    let drivers: BTreeMap<String, Option<String>> = store
        .hosts()
        .await?
        .iter()
        .map(|h| (h.name.clone(), h.driver.clone()))
        .collect();
    let usable = |gpu: &FreeGpu| {
        needs.image_hosts.contains(&gpu.host)
            && runs(
                drivers.get(&gpu.host).and_then(|d| d.as_deref()),
                &needs.hypervisor,
            )
            && choice.host.as_ref().is_none_or(|h| *h == gpu.host)
    };
    if needs.image_hosts.is_empty() {
        let reason = "waiting: the request's image is no longer registered".to_string();
        return Err(waiting(store, request_id, reason).await?);
    }
    for _ in 0..ATTEMPTS {
        let all_free = store.free_gpus(&model).await?;
        let free: Vec<&FreeGpu> = all_free.iter().filter(|g| usable(g)).collect();
        if !choice.gpus.is_empty() {
            let picked: Vec<FreeGpu> = choice
                .gpus
                .iter()
                .filter_map(|address| free.iter().find(|g| &g.address == address))
                .map(|g| (*g).clone())
                .collect();
            let one_host = picked.iter().all(|g| g.host == picked[0].host);
            if picked.len() != count || !one_host {
                return Err(PlaceError::BadChoice(format!(
                    "the chosen GPUs are not all free {model} GPUs on one host that can run this request"
                )));
            }
            return match store.claim_within(request_id, &picked, max_gpus).await? {
                ClaimOutcome::Claimed => Ok(placement(picked)),
                ClaimOutcome::NotOpen => Err(PlaceError::NotPlaceable(request_id)),
                ClaimOutcome::OverQuota { held } => Err(over_quota(held, count, max_gpus)),
                ClaimOutcome::Lost => Err(PlaceError::BadChoice(
                    "a chosen GPU was just claimed by another request".into(),
                )),
            };
        }
        let Some(picked) = choose(free.iter().copied(), count) else {
            let reason = no_fit_reason(&needs, choice, &all_free, &free, &drivers);
            return Err(waiting(store, request_id, reason).await?);
        };
        let picked: Vec<FreeGpu> = picked.into_iter().cloned().collect();
        match store.claim_within(request_id, &picked, max_gpus).await? {
            ClaimOutcome::Claimed => return Ok(placement(picked)),
            ClaimOutcome::NotOpen => return Err(PlaceError::NotPlaceable(request_id)),
            ClaimOutcome::OverQuota { held } => return Err(over_quota(held, count, max_gpus)),
            ClaimOutcome::Lost => {}
        }
    }
    Err(PlaceError::Contended)
}

/// Why a request waits, naming what narrowed the free GPUs: the host its image is on, the
/// hypervisor it asks for, the admin's choice of host, or only that too few are free together.
fn no_fit_reason(
    needs: &crate::store::RequestNeeds,
    choice: &Choice,
    all_free: &[FreeGpu],
    usable: &[&FreeGpu],
    drivers: &BTreeMap<String, Option<String>>,
) -> String {
    let (count, model) = (needs.gpu_count, &needs.gpu_model);
    let wanted = format!("waiting for {count} free {model} GPU(s) on one host");
    let on = |host: &str| all_free.iter().filter(|g| g.host == host).count();
    if let Some(host) = &choice.host {
        return format!("{wanted}: the chosen host {host} has {} free", on(host));
    }
    let with_image: usize = needs.image_hosts.iter().map(|h| on(h)).sum();
    let elsewhere = all_free.len() - with_image;
    if elsewhere > 0 {
        let holders = match needs.image_hosts.as_slice() {
            [one] => format!("only on host {one}, which has"),
            many => format!("only on hosts {}, which have", many.join(", ")),
        };
        return format!(
            "{wanted}: its image is {holders} {with_image} free ({elsewhere} free on other \
             hosts)"
        );
    }
    let other_hypervisor = all_free
        .iter()
        .filter(|g| {
            !runs(
                drivers.get(&g.host).and_then(|d| d.as_deref()),
                &needs.hypervisor,
            )
        })
        .count();
    if other_hypervisor > 0 {
        return format!(
            "{wanted}: {} free where {} runs, {other_hypervisor} on hosts that cannot run it",
            usable.len(),
            needs.hypervisor
        );
    }
    match usable.len() {
        0 => format!("{wanted} (none free)"),
        n => format!("{wanted} ({n} free in all, not {count} on one host)"),
    }
}

fn over_quota(held: i64, count: usize, max: Option<i64>) -> PlaceError {
    PlaceError::OverQuota(format!(
        "the requester holds {held} GPU(s); {count} more would pass the quota of {}",
        max.unwrap_or_default()
    ))
}

/// Marks the request waiting with `reason`; the error to return is `NoFit`, or `NotPlaceable`
/// when the request was placed, denied or released meanwhile.
async fn waiting(store: &Store, request_id: i64, reason: String) -> Result<PlaceError, StoreError> {
    Ok(if store.mark_waiting(request_id, &reason).await? {
        PlaceError::NoFit(reason)
    } else {
        PlaceError::NotPlaceable(request_id)
    })
}

fn placement(picked: Vec<FreeGpu>) -> Placement {
    let numa = picked[0].numa_node;
    Placement {
        host: picked[0].host.clone(),
        numa_node: picked
            .iter()
            .all(|g| g.numa_node == numa)
            .then_some(numa)
            .flatten(),
        gpus: picked.into_iter().map(|g| g.address).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(host: &str, address: &str, numa: Option<i64>) -> FreeGpu {
        FreeGpu {
            gpu_id: 0,
            host: host.into(),
            address: address.into(),
            numa_node: numa,
            pcie_root: None,
            functions: vec![address.into()],
        }
    }

    fn behind(mut gpu: FreeGpu, root: &str) -> FreeGpu {
        gpu.pcie_root = Some(root.into());
        gpu
    }

    #[test]
    fn gpus_behind_one_switch_go_together_and_single_gpus_leave_switches_whole() {
        let free = vec![
            gpu("a", "17", Some(0)),
            gpu("a", "2a", Some(0)),
            behind(gpu("a", "3d", Some(0)), "3a"),
            behind(gpu("a", "4e", Some(0)), "3a"),
        ];
        assert_eq!(addresses(choose(&free, 2)), vec!["a/3d", "a/4e"]);
        assert_eq!(addresses(choose(&free, 1)), vec!["a/17"]);
        assert_eq!(addresses(choose(&free, 3)), vec!["a/3d", "a/4e", "a/17"]);
    }

    fn addresses(picked: Option<Vec<&FreeGpu>>) -> Vec<String> {
        picked
            .unwrap_or_default()
            .into_iter()
            .map(|g| format!("{}/{}", g.host, g.address))
            .collect()
    }

    #[test]
    fn one_numa_node_is_preferred_and_the_fullest_that_fits_wins() {
        let free = vec![
            gpu("a", "17", Some(0)),
            gpu("a", "2a", Some(0)),
            gpu("a", "3d", Some(0)),
            gpu("a", "98", Some(1)),
            gpu("a", "b1", Some(1)),
        ];
        assert_eq!(addresses(choose(&free, 2)), vec!["a/98", "a/b1"]);
        assert_eq!(addresses(choose(&free, 3)), vec!["a/17", "a/2a", "a/3d"]);
        assert_eq!(addresses(choose(&free, 1)), vec!["a/98"]);
    }

    #[test]
    fn a_host_is_used_across_nodes_when_no_node_fits() {
        let free = vec![
            gpu("a", "17", Some(0)),
            gpu("a", "98", Some(1)),
            gpu("b", "17", Some(0)),
        ];
        assert_eq!(addresses(choose(&free, 2)), vec!["a/17", "a/98"]);
    }

    #[test]
    fn among_equal_fits_the_first_host_and_lowest_node_win_in_any_input_order() {
        let free = vec![
            gpu("b", "17", Some(1)),
            gpu("b", "2a", Some(1)),
            gpu("a", "98", Some(1)),
            gpu("a", "b1", Some(1)),
            gpu("a", "17", Some(0)),
            gpu("a", "2a", Some(0)),
        ];
        assert_eq!(addresses(choose(&free, 2)), vec!["a/17", "a/2a"]);
        let three = addresses(choose(&free, 3));
        assert_eq!(three.len(), 3);
        assert!(three.iter().all(|g| g.starts_with("a/")), "{three:?}");
    }

    #[test]
    fn gpus_are_never_spread_over_hosts() {
        let free = vec![gpu("a", "17", Some(0)), gpu("b", "17", Some(0))];
        assert_eq!(choose(&free, 2), None);
        assert_eq!(choose(&free, 0), None);
    }
}
