//! Bringing records and hosts back into agreement, at start-up and periodically.
//!
//! - Provisioning that made no progress for `vms.provisioning_timeout_secs` (its server died) is
//!   rolled back: domain, volume, claim.
//! - A VM whose domain vanished from its host is marked failed and its GPUs are freed.
//! - A VM whose domain runs while the record says stopped (or the reverse) gets its state fixed.
//! - What an ended VM left on its host (a domain that could not be removed then) is removed, and
//!   its GPUs, held until now, are freed.
//! - A domain is this installation's only when a VM record names it and it carries the UUID that
//!   VM gave it. Any other domain with Passage's name (another installation's, one made before the
//!   database was restored, one without Passage's metadata) is recorded as unknown for an admin
//!   and never touched: its GPUs stay out of placement until an admin decides.
//! - A placed request without a VM is provisioned; claims of closed requests are dropped.
//!
//! Records are read before a host's domains are listed, so that a VM whose provisioning ends in
//! between is not taken for one whose domain vanished; every repair of a VM holds that VM
//! ([`VmService::lock_vm`]), also against other servers on the same database. Nothing is deleted
//! from the database: VMs keep their records, with the reason, and every repair is an audit
//! entry. An unreachable host is skipped until the next pass.

use std::time::Duration;

use passage_hypervisor::domain::{DomainState, DomainStatus};

use super::{VmError, VmService};
use crate::store::{AuditRecord, SeenDomain, VmRecord, now_ms};

/// What one pass repaired or found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Repairs {
    /// Provisioning rolled back after its server died.
    pub interrupted: Vec<i64>,
    /// VMs whose domain vanished.
    pub vanished: Vec<i64>,
    /// VMs whose state was corrected.
    pub drifted: Vec<i64>,
    /// Ended VMs whose leftovers were removed now (their GPUs freed).
    pub cleaned: Vec<i64>,
    /// Domains this installation cannot prove are its own, seen for the first time:
    /// (host, domain). They are left alone.
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

/// The VM record a domain belongs to, among `records` (every VM on its host with a domain): the
/// one that names it and gave it its UUID. A VM made before UUIDs were recorded matches by name
/// when the domain carries no installation id or this installation's.
pub(crate) fn owner_of<'a>(
    domain: &DomainStatus,
    records: &'a [VmRecord],
    installation: &str,
) -> Option<&'a VmRecord> {
    records.iter().find(|r| {
        r.domain.as_deref() == Some(domain.name.as_str())
            && match &r.domain_uuid {
                Some(uuid) => uuid.eq_ignore_ascii_case(&domain.uuid),
                None => domain
                    .installation
                    .as_deref()
                    .is_none_or(|i| i == installation),
            }
    })
}

fn state_word(state: DomainState) -> String {
    format!("{state:?}").to_lowercase()
}

impl VmService {
    /// One reconciliation pass over every host and record.
    pub async fn reconcile(&self) -> Result<Repairs, VmError> {
        let mut repairs = Repairs::default();
        self.interrupted(&mut repairs).await?;
        for name in self.inner.hosts.keys() {
            self.reconcile_host(name, &mut repairs).await?;
        }
        self.clean_leftovers(&mut repairs).await?;

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

    /// Rolls back provisioning that made no progress for the configured time.
    async fn interrupted(&self, repairs: &mut Repairs) -> Result<(), VmError> {
        let timeout = Duration::from_secs(self.inner.settings.provisioning_timeout_secs);
        let stale_before = |now: i64| now - i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        let candidates = self.store().live_vms().await?;
        for vm in candidates
            .iter()
            .filter(|vm| vm.state == "provisioning" && vm.updated_at < stale_before(now_ms()))
        {
            // A VM still held is being provisioned (here or by another server): not stale.
            let Some(lock) = self.try_lock_vm(vm.id).await? else {
                continue;
            };
            let still = self.store().vm_record(vm.id).await?;
            if still
                .is_some_and(|r| r.state == "provisioning" && r.updated_at < stale_before(now_ms()))
            {
                self.roll_back(
                    &lock,
                    vm.id,
                    &format!(
                        "provisioning was interrupted (no progress for {} s; the server stopped?)",
                        timeout.as_secs()
                    ),
                )
                .await;
                repairs.interrupted.push(vm.id);
            }
            lock.unlock().await;
        }
        Ok(())
    }

    /// Compares one host's domains with the records.
    async fn reconcile_host(&self, name: &str, repairs: &mut Repairs) -> Result<(), VmError> {
        let handle = self.host(name)?;
        // Read before the listing: every VM judged here had its domain before the host was asked.
        let before: Vec<VmRecord> = self
            .store()
            .live_vms()
            .await?
            .into_iter()
            .filter(|vm| vm.host == name && vm.state != "provisioning")
            .collect();
        let domains = match handle.host.passage_domains().await {
            Ok(domains) => domains,
            Err(e) => {
                tracing::debug!(host = %name, error = %e, "host skipped by reconciliation");
                return Ok(());
            }
        };
        // Read after the listing: a domain defined meanwhile has its record (parts are recorded
        // before the domain is defined).
        let records = self.store().vms_with_domains_on(name).await?;
        let installation = self.installation().to_string();

        for vm in &before {
            let Some(lock) = self.try_lock_vm(vm.id).await? else {
                continue;
            };
            let Some(now) = self.store().vm_record(vm.id).await? else {
                lock.unlock().await;
                continue;
            };
            if now.state != vm.state {
                // Someone acted between the reading and the lock; the next pass looks again.
                lock.unlock().await;
                continue;
            }
            let domain = now.domain.as_deref().unwrap_or_default();
            let found = domains
                .iter()
                .find(|d| owner_of(d, std::slice::from_ref(&now), &installation).is_some());
            match found {
                None => {
                    self.roll_back(
                        &lock,
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
                    if actual != now.state
                        && self
                            .store()
                            .set_vm_state(vm.id, &[now.state.as_str()], actual, None)
                            .await?
                    {
                        self.audit(AuditRecord {
                            actor: "system",
                            action: "vm.drift",
                            subject: format!("vm {}", vm.id),
                            before: Some(now.state.clone()),
                            after: Some(actual.into()),
                            detail: Some(format!("domain {domain} was found {actual}")),
                        })
                        .await;
                        repairs.drifted.push(vm.id);
                    }
                }
            }
            lock.unlock().await;
        }

        let mut unknown = Vec::new();
        for domain in &domains {
            match owner_of(domain, &records, &installation) {
                Some(vm) if matches!(vm.state.as_str(), "failed" | "released") => {
                    // Ours beyond doubt (its UUID), and its VM has ended: left over.
                    if vm.domain_uuid.is_some() {
                        self.store()
                            .set_vm_leftover(vm.id, Some(&format!("domain {}", domain.name)))
                            .await?;
                    } else {
                        unknown.push(domain);
                    }
                }
                Some(_) => {}
                None => unknown.push(domain),
            }
        }
        for domain in &unknown {
            let devices = domain
                .hostdevs
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            let state = state_word(domain.state);
            let first = self
                .store()
                .saw_unknown_domain(&SeenDomain {
                    host: name,
                    uuid: &domain.uuid,
                    name: &domain.name,
                    installation: domain.installation.as_deref(),
                    state: &state,
                    devices: &devices,
                })
                .await?;
            if first {
                let whose = match &domain.installation {
                    Some(other) if *other != installation => {
                        format!("it belongs to installation {other}")
                    }
                    Some(_) => "no VM record of this installation has its UUID".to_string(),
                    None => "it carries no Passage installation id".to_string(),
                };
                self.audit(AuditRecord {
                    actor: "system",
                    action: "domain.unknown",
                    subject: format!("domain {} on {name}", domain.name),
                    before: None,
                    after: Some(state.clone()),
                    detail: Some(format!(
                        "left alone for an admin: {whose}; it holds [{devices}]"
                    )),
                })
                .await;
                tracing::warn!(host = %name, domain = %domain.name, "a domain this installation did not make is on the host; left alone");
                repairs
                    .unknown_domains
                    .push((name.to_string(), domain.name.clone()));
            }
        }
        let present: Vec<String> = unknown.iter().map(|d| d.uuid.clone()).collect();
        self.store().forget_unknown_domains(name, &present).await?;
        Ok(())
    }

    /// Removes what ended VMs left on their hosts and frees their GPUs once nothing is left.
    async fn clean_leftovers(&self, repairs: &mut Repairs) -> Result<(), VmError> {
        for (id, request_id, host, _) in self.store().vms_with_leftovers().await? {
            let Some(lock) = self.try_lock_vm(id).await? else {
                continue;
            };
            let Some(record) = self.store().vm_record(id).await? else {
                lock.unlock().await;
                continue;
            };
            let left = self.remove_parts(&record).await;
            if left.is_empty() {
                self.store().set_vm_leftover(id, None).await?;
                self.store().drop_claims(request_id).await?;
                self.audit(AuditRecord {
                    actor: "system",
                    action: "vm.cleanup",
                    subject: format!("vm {id}"),
                    before: record.domain.clone(),
                    after: Some("removed".into()),
                    detail: Some(format!(
                        "what it left on {host} is removed; its GPUs are free"
                    )),
                })
                .await;
                repairs.cleaned.push(id);
            } else {
                self.store()
                    .set_vm_leftover(id, Some(&left.join("; ")))
                    .await?;
            }
            lock.unlock().await;
        }
        Ok(())
    }
}

impl VmService {
    /// An admin's decision on an unknown domain: `keep` leaves it (its GPUs stay out of
    /// placement), `remove` powers it off and undefines it, only if it still has that UUID.
    pub async fn decide_unknown_domain(
        &self,
        admin: &str,
        host: &str,
        uuid: &str,
        decision: &str,
    ) -> Result<(), VmError> {
        if !matches!(decision, "keep" | "remove") {
            return Err(VmError::Invalid(
                "decision: `keep` (leave it alone) or `remove` (power off and undefine)".into(),
            ));
        }
        let domain = self
            .store()
            .unknown_domain(host, uuid)
            .await?
            .ok_or_else(|| {
                VmError::Invalid(format!("no unknown domain {uuid} on host {host:?}"))
            })?;
        if decision == "remove" {
            self.host(host)?
                .host
                .remove_domain_if(&domain.name, Some(uuid))
                .await?;
            self.store().drop_unknown_domain(host, uuid).await?;
        } else {
            self.store()
                .decide_unknown_domain(host, uuid, decision, admin)
                .await?;
        }
        self.audit(AuditRecord {
            actor: admin,
            action: if decision == "remove" {
                "domain.remove_unknown"
            } else {
                "domain.keep_unknown"
            },
            subject: format!("domain {} on {host}", domain.name),
            before: Some(domain.state.clone()),
            after: Some(
                if decision == "remove" {
                    "removed"
                } else {
                    "kept"
                }
                .into(),
            ),
            detail: Some(format!("uuid {uuid}; it held [{}]", domain.devices)),
        })
        .await;
        if decision == "remove"
            && let Err(e) = self.place_waiting().await
        {
            tracing::warn!(error = %e, "placing waiting requests failed");
        }
        Ok(())
    }
}
