//! Making a VM for a placed request: a copy-on-write volume over the base image, a cloud-init
//! seed, the domain with every claimed function passed through, started. Each part is recorded
//! before it is made, so that a failure here, or a server that dies half-way, is undone by
//! removing exactly what may exist: the domain, the volume, then the claim.

use passage_hypervisor::domain::{
    DomainIdentity, DomainSpec, KernelBoot, Network, NumaPlacement, domain_name,
};
use passage_hypervisor::{HypervisorError, PciAddress};
use rand_core::{OsRng, RngCore};

use super::seed::{SeedKey, seed_url};
use super::{VmError, VmLock, VmService};
use crate::auth::secret_hash;
use crate::store::{AuditRecord, ProvisionPlan, VmParts, VmRecord, now_ms};

impl VmService {
    /// Provisions a placed request in the background; failures are recorded on the VM.
    pub fn provision_in_background(&self, request_id: i64) {
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(e) = this.provision(request_id).await {
                tracing::warn!(request = request_id, error = %e, "provisioning failed");
            }
        });
    }

    /// Provisions a placed request now. `Ok(None)` when there is nothing to do (the request is not
    /// placed, or it has a VM already); on failure everything made is removed, the GPUs are
    /// freed and the request shows why.
    pub async fn provision(&self, request_id: i64) -> Result<Option<i64>, VmError> {
        let plan = self
            .store()
            .provision_plan(request_id)
            .await?
            .ok_or(VmError::NotFound(request_id))?;
        if plan.state != "placed" {
            return Ok(None);
        }
        let Some(host) = plan.host.clone() else {
            return Ok(None);
        };
        let lease_end = now_ms() + plan.lease_hours * 3_600_000;
        let Some(vm_id) = self
            .store()
            .create_vm(request_id, plan.user_id, &host, lease_end)
            .await?
        else {
            return Ok(None);
        };
        let lock = self.lock_vm(vm_id).await?;
        let made = self
            .provision_locked(&lock, request_id, vm_id, &plan, &host)
            .await;
        lock.unlock().await;
        made
    }

    async fn provision_locked(
        &self,
        lock: &VmLock,
        request_id: i64,
        vm_id: i64,
        plan: &ProvisionPlan,
        host: &str,
    ) -> Result<Option<i64>, VmError> {
        self.audit(AuditRecord {
            actor: "system",
            action: "vm.provision",
            subject: format!("vm {vm_id}"),
            before: None,
            after: Some("provisioning".into()),
            detail: Some(format!(
                "request {request_id}, {} on {host}",
                plan.functions.join(", ")
            )),
        })
        .await;
        match self.build(vm_id, plan).await {
            Ok(()) => {
                self.store()
                    .set_vm_state(vm_id, &["provisioning"], "running", None)
                    .await?;
                self.audit(AuditRecord {
                    actor: "system",
                    action: "vm.start",
                    subject: format!("vm {vm_id}"),
                    before: Some("provisioning".into()),
                    after: Some("running".into()),
                    detail: None,
                })
                .await;
                tracing::info!(vm = vm_id, request = request_id, %host, "VM running");
                Ok(Some(vm_id))
            }
            Err(e) => {
                let reason = format!("provisioning failed: {e}");
                self.roll_back(lock, vm_id, &reason).await;
                Err(e)
            }
        }
    }

    async fn build(&self, vm_id: i64, plan: &ProvisionPlan) -> Result<(), VmError> {
        let host_name = plan.host.as_deref().unwrap_or_default();
        let handle = self.host(host_name)?;
        let image = plan.image.as_ref().ok_or_else(|| {
            VmError::Invalid("the request's image is no longer registered".into())
        })?;
        if image.host != host_name {
            return Err(VmError::Invalid(format!(
                "image {} is on host {}, the GPUs on {host_name}",
                image.name, image.host
            )));
        }
        let facts = handle.host.facts().await?;
        let kind = facts
            .domain_kind(&plan.hypervisor, handle.config.tcg)
            .map_err(VmError::Invalid)?;
        let domain = domain_name(vm_id);
        let volume = format!("{domain}.qcow2");
        let key = SeedKey::generate();
        let identity = DomainIdentity {
            uuid: new_uuid(),
            installation: self.installation().to_string(),
        };
        // Never take over what is there already: a domain or volume of this name is not ours.
        if handle.host.domain(&domain).await?.is_some() {
            return Err(VmError::Conflict(format!(
                "a domain named {domain} already exists on {host_name}"
            )));
        }
        if handle.host.volume(&image.pool, &volume).await?.is_some() {
            return Err(VmError::Conflict(format!(
                "a volume named {volume} already exists in pool {} on {host_name}",
                image.pool
            )));
        }
        // Recorded before anything is made: a crash from here on is undone by reconciliation.
        self.store()
            .record_vm_parts(
                vm_id,
                &VmParts {
                    domain: Some(domain.clone()),
                    domain_type: Some(kind.to_string()),
                    pool: Some(image.pool.clone()),
                    volume: Some(volume.clone()),
                    seed_key_hash: Some(key.hash()),
                    domain_uuid: Some(identity.uuid.clone()),
                },
            )
            .await?;
        // The guest's agent authenticates with the token its seed carries; only its hash is kept.
        self.store()
            .create_agent(
                "vm",
                &format!("vm-{vm_id}"),
                Some(vm_id),
                &secret_hash(&key.agent_token()),
                "system",
            )
            .await?;
        let capacity = u64::try_from(plan.disk_gib)
            .unwrap_or(1)
            .saturating_mul(1 << 30)
            .max(u64::try_from(image.capacity_bytes).unwrap_or(0));
        let disk = handle
            .host
            .create_cow_volume(&image.pool, &volume, capacity, &image.path)
            .await?;
        let hostdevs = plan
            .functions
            .iter()
            .map(|f| f.parse::<PciAddress>())
            .collect::<Result<Vec<_>, _>>()?;
        let spec = DomainSpec {
            kind,
            vm_id,
            request_id: plan.request_id,
            owner: plan.owner.clone(),
            vcpus: u32::try_from(plan.vcpus).unwrap_or(1),
            memory_mib: u64::try_from(plan.memory_mib).unwrap_or(512),
            disk_path: disk.path,
            network: match (&handle.config.network, &handle.config.bridge) {
                (Some(network), _) => Network::Named(network.clone()),
                (_, Some(bridge)) => Network::Bridge(bridge.clone()),
                _ => Network::User,
            },
            numa: plan
                .numa_node
                .and_then(|n| u32::try_from(n).ok())
                .map(|node| NumaPlacement {
                    node,
                    cpus: facts.cpus_of(node),
                }),
            hostdevs,
            seed_url: Some(seed_url(&self.inner.public_url, vm_id, &key)),
            kernel_boot: image.kernel.as_ref().map(|kernel| KernelBoot {
                kernel: kernel.clone(),
                initrd: image.initrd.clone(),
                cmdline: image.cmdline.clone(),
            }),
            identity: Some(identity),
        };
        handle.host.define_and_start(&spec.to_xml()).await?;
        Ok(())
    }

    /// Removes whatever a VM may have on its host (domain, volume), closes its request with
    /// `reason` and marks it failed. Its GPUs are freed only when nothing is left on the host: a
    /// domain that could not be removed may still hold them, so they stay claimed, and
    /// reconciliation removes what is left and frees them then. Safe to repeat; the caller
    /// holds the VM.
    pub(crate) async fn roll_back(&self, _lock: &VmLock, vm_id: i64, reason: &str) {
        let record = match self.store().vm_record(vm_id).await {
            Ok(Some(record)) => record,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(vm = vm_id, error = %e, "cannot read the VM to roll it back");
                return;
            }
        };
        let left = self.remove_parts(&record).await;
        let reason = if left.is_empty() {
            reason.to_string()
        } else {
            format!(
                "{reason}; could not remove {}; its GPUs stay claimed until it is removed",
                left.join("; ")
            )
        };
        let result = async {
            if left.is_empty() {
                self.store()
                    .close_request(record.request_id, &reason)
                    .await?;
            } else {
                self.store()
                    .set_vm_leftover(vm_id, Some(&left.join("; ")))
                    .await?;
                self.store()
                    .end_request_keeping_claims(record.request_id, &reason)
                    .await?;
            }
            self.store()
                .set_vm_state(
                    vm_id,
                    &["provisioning", "running", "stopped"],
                    "failed",
                    Some(&reason),
                )
                .await
        }
        .await;
        if let Err(e) = result {
            tracing::error!(vm = vm_id, error = %e, "recording a rollback failed");
            return;
        }
        self.audit(AuditRecord {
            actor: "system",
            action: "vm.fail",
            subject: format!("vm {vm_id}"),
            before: Some(record.state.clone()),
            after: Some("failed".into()),
            detail: Some(reason.clone()),
        })
        .await;
        tracing::warn!(vm = vm_id, %reason, "VM rolled back");
        if !left.is_empty() {
            return;
        }
        if let Err(e) = self.place_waiting().await {
            tracing::warn!(error = %e, "placing waiting requests failed");
        }
    }
}

impl VmService {
    /// Removes a VM's domain (only the one with the UUID it was given) and volume from its host;
    /// returns what could not be removed, in words.
    pub(crate) async fn remove_parts(&self, record: &VmRecord) -> Vec<String> {
        let mut left = Vec::new();
        let handle = match self.host(&record.host) {
            Ok(handle) => handle,
            Err(e) => {
                if let Some(domain) = &record.domain {
                    left.push(format!("domain {domain}: {e}"));
                }
                return left;
            }
        };
        if let Some(domain) = &record.domain {
            match handle
                .host
                .remove_domain_if(domain, record.domain_uuid.as_deref())
                .await
            {
                // Another domain took the name: this VM's own is gone already.
                Ok(_) | Err(HypervisorError::NotOurs { .. }) => {}
                Err(e) => left.push(format!("domain {domain}: {e}")),
            }
        }
        if let (Some(pool), Some(volume)) = (&record.pool, &record.volume)
            && let Err(e) = handle.host.delete_volume(pool, volume).await
        {
            left.push(format!("volume {volume}: {e}"));
        }
        left
    }
}

/// A random (version 4) UUID, the form libvirt takes.
fn new_uuid() -> String {
    let mut b = [0u8; 16];
    OsRng.fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}
