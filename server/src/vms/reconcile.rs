//! Bringing records and hosts back into agreement, at start-up and periodically.
//!
//! - Provisioning that made no progress for `vms.provisioning_timeout_secs` (its server died) is
//!   rolled back: domain, volume, claim.
//! - A VM whose domain vanished from its host is marked failed and its GPUs are freed.
//! - A VM whose domain runs while the record says stopped (or the reverse) gets its state fixed.
//! - A Passage domain that no live VM owns is powered off and undefined; its name and devices
//!   stay in the audit log.
//! - A placed request without a VM is provisioned; claims of closed requests are dropped.
//!
//! Nothing is deleted from the database: VMs keep their records, with the reason, and every
//! repair is an audit entry. An unreachable host is skipped until the next pass.

use std::collections::HashMap;
use std::time::Duration;

use passage_hypervisor::domain::{DomainState, vm_id_of};

use super::{VmError, VmService};
use crate::store::{AuditRecord, now_ms};

/// What one pass repaired.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Repairs {
    /// Provisioning rolled back after its server died.
    pub interrupted: Vec<i64>,
    /// VMs whose domain vanished.
    pub vanished: Vec<i64>,
    /// VMs whose state was corrected.
    pub drifted: Vec<i64>,
    /// Domains nobody owns that were removed: (host, domain).
    pub unknown_domains: Vec<(String, String)>,
    /// Placed requests that got their provisioning started.
    pub unprovisioned: Vec<i64>,
    /// Requests whose stray claims were dropped.
    pub stray_claims: Vec<i64>,
}

impl Repairs {
    /// True when nothing needed repair.
    pub fn is_empty(&self) -> bool {
        self == &Repairs::default()
    }
}

impl VmService {
    /// One reconciliation pass over every host and record.
    pub async fn reconcile(&self) -> Result<Repairs, VmError> {
        let mut repairs = Repairs::default();
        let timeout = Duration::from_secs(self.inner.settings.provisioning_timeout_secs);
        let stale_before = now_ms() - i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        let live = self.store().live_vms().await?;
        for vm in live
            .iter()
            .filter(|vm| vm.state == "provisioning" && vm.updated_at < stale_before)
        {
            if self
                .inner
                .busy
                .lock()
                .expect("busy set poisoned")
                .contains(&vm.id)
            {
                continue;
            }
            self.roll_back(
                vm.id,
                &format!(
                    "provisioning was interrupted (no progress for {} s; the server stopped?)",
                    timeout.as_secs()
                ),
            )
            .await;
            repairs.interrupted.push(vm.id);
        }

        for (name, handle) in &self.inner.hosts {
            let domains = match handle.host.passage_domains().await {
                Ok(domains) => domains,
                Err(e) => {
                    tracing::debug!(host = %name, error = %e, "host skipped by reconciliation");
                    continue;
                }
            };
            let by_name: HashMap<&str, _> = domains.iter().map(|d| (d.name.as_str(), d)).collect();
            let live = self.store().live_vms().await?;
            for vm in live
                .iter()
                .filter(|vm| &vm.host == name && vm.state != "provisioning")
            {
                if self
                    .inner
                    .busy
                    .lock()
                    .expect("busy set poisoned")
                    .contains(&vm.id)
                {
                    continue;
                }
                let domain = vm.domain.as_deref().unwrap_or_default();
                match by_name.get(domain) {
                    None => {
                        self.roll_back(
                            vm.id,
                            &format!("its domain {domain} vanished from host {name}"),
                        )
                        .await;
                        repairs.vanished.push(vm.id);
                    }
                    Some(status) => {
                        let actual = match status.state {
                            DomainState::Off => "stopped",
                            _ => "running",
                        };
                        if actual != vm.state
                            && self
                                .store()
                                .set_vm_state(vm.id, &[vm.state.as_str()], actual, None)
                                .await?
                        {
                            self.audit(AuditRecord {
                                actor: "system",
                                action: "vm.drift",
                                subject: format!("vm {}", vm.id),
                                before: Some(vm.state.clone()),
                                after: Some(actual.into()),
                                detail: Some(format!("domain {domain} was found {actual}")),
                            })
                            .await;
                            repairs.drifted.push(vm.id);
                        }
                    }
                }
            }
            let owned: Vec<i64> = self
                .store()
                .live_vms()
                .await?
                .iter()
                .filter(|vm| &vm.host == name)
                .map(|vm| vm.id)
                .collect();
            for domain in &domains {
                let ours = vm_id_of(&domain.name).is_some_and(|id| owned.contains(&id));
                if ours {
                    continue;
                }
                let devices = domain
                    .hostdevs
                    .iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(", ");
                match handle.host.remove_domain(&domain.name).await {
                    Ok(_) => {
                        self.audit(AuditRecord {
                            actor: "system",
                            action: "domain.remove_unknown",
                            subject: format!("domain {} on {name}", domain.name),
                            before: Some(format!("{:?}", domain.state).to_lowercase()),
                            after: Some("removed".into()),
                            detail: Some(format!("no live VM owns it; it held [{devices}]")),
                        })
                        .await;
                        repairs
                            .unknown_domains
                            .push((name.clone(), domain.name.clone()));
                    }
                    Err(e) => tracing::warn!(host = %name, domain = %domain.name, error = %e,
                        "removing a domain no VM owns failed"),
                }
            }
        }

        for request in self.store().placed_without_vm().await? {
            self.audit(AuditRecord {
                actor: "system",
                action: "request.provision_missing",
                subject: format!("request {request}"),
                before: Some("placed, no VM".into()),
                after: Some("provisioning".into()),
                detail: None,
            })
            .await;
            self.provision_in_background(request);
            repairs.unprovisioned.push(request);
        }
        for (request, state) in self.store().stray_claims().await? {
            self.store().drop_claims(request).await?;
            self.audit(AuditRecord {
                actor: "system",
                action: "request.drop_claims",
                subject: format!("request {request}"),
                before: Some(format!("{state} with claims")),
                after: Some(state),
                detail: None,
            })
            .await;
            repairs.stray_claims.push(request);
        }
        self.place_waiting().await?;
        Ok(repairs)
    }
}
