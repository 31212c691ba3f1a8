//! A running VM's life: start, stop (ACPI, then power off after a grace period), reboot,
//! release, lease extension and expiry, and GPU hot-plug. Who may act is checked here: owners act
//! on their own VMs, admins on all; hot-plug and lease extension are for admins.

use std::time::Duration;

use passage_app::vms::VmView;
use passage_hypervisor::{Hotplug, PciAddress};

use super::{VmError, VmLock, VmService};
use crate::auth::User;
use crate::store::{AuditRecord, ClaimOutcome, FreeGpu, VmRecord, Window, now_ms, rfc3339};

/// What an owner or admin asks of a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmAction {
    /// Start a stopped VM.
    Start,
    /// Shut a running VM down (ACPI, then power off after the grace period).
    Stop,
    /// Reboot a running VM.
    Reboot,
    /// Give the VM and its GPUs back.
    Release,
}

impl VmAction {
    /// Parses `start`, `stop`, `reboot` or `release`.
    pub fn parse(name: &str) -> Option<VmAction> {
        Some(match name {
            "start" => VmAction::Start,
            "stop" => VmAction::Stop,
            "reboot" => VmAction::Reboot,
            "release" => VmAction::Release,
            _ => return None,
        })
    }
}

fn scope(user: &User) -> Option<i64> {
    (!user.is_admin).then_some(user.id)
}

fn subject(vm_id: i64) -> String {
    format!("vm {vm_id}")
}

impl VmService {
    /// The VMs `user` may see in `window`, newest first.
    pub async fn list(&self, user: &User, window: Window) -> Result<Vec<VmView>, VmError> {
        Ok(self.store().vms(scope(user), window).await?)
    }

    /// One VM, if `user` may see it.
    pub async fn show(&self, user: &User, id: i64) -> Result<VmView, VmError> {
        self.store()
            .vm(scope(user), id)
            .await?
            .ok_or(VmError::NotFound(id))
    }

    /// The record of a VM `user` may act on; someone else's VM is as missing as an absent one.
    pub(super) async fn owned(&self, user: &User, id: i64) -> Result<VmRecord, VmError> {
        let record = self
            .store()
            .vm_record(id)
            .await?
            .ok_or(VmError::NotFound(id))?;
        if !user.is_admin && record.user_id != user.id {
            return Err(VmError::NotFound(id));
        }
        Ok(record)
    }

    /// Carries out `action` on VM `id` for `user`.
    pub async fn act(&self, user: &User, id: i64, action: VmAction) -> Result<VmView, VmError> {
        self.owned(user, id).await?;
        let lock = self.lock_vm(id).await?;
        // Read again now that no other action can run on it.
        let done = match self.store().vm_record(id).await {
            Ok(Some(record)) => match action {
                VmAction::Release => {
                    self.release(&lock, &user.name, &record, "released by its owner")
                        .await
                }
                _ => self.power(&user.name, &record, action).await,
            },
            Ok(None) => Err(VmError::NotFound(id)),
            Err(e) => Err(e.into()),
        };
        lock.unlock().await;
        done?;
        self.show(user, id).await
    }

    async fn power(&self, actor: &str, record: &VmRecord, action: VmAction) -> Result<(), VmError> {
        let wanted = match action {
            VmAction::Start => "stopped",
            _ => "running",
        };
        if record.state != wanted {
            return Err(VmError::Conflict(format!(
                "VM {} is {}; {} needs it {wanted}",
                record.id,
                record.state,
                format!("{action:?}").to_lowercase()
            )));
        }
        let handle = self.host(&record.host)?;
        let domain = record.domain.as_deref().unwrap_or_default();
        let (after, detail) = match action {
            VmAction::Start => {
                handle.host.start(domain).await?;
                ("running", None)
            }
            VmAction::Reboot => {
                handle.host.reboot(domain).await?;
                ("running", None)
            }
            VmAction::Stop => {
                let grace = Duration::from_secs(self.inner.settings.shutdown_grace_secs);
                let clean = handle.host.shut_down(domain, grace).await?;
                let how = if clean {
                    "shut down by the guest"
                } else {
                    "powered off after the grace period"
                };
                ("stopped", Some(how.to_string()))
            }
            VmAction::Release => unreachable!("handled by release"),
        };
        if after != record.state {
            self.store()
                .set_vm_state(record.id, &[record.state.as_str()], after, None)
                .await?;
        }
        self.audit(AuditRecord {
            actor,
            action: match action {
                VmAction::Start => "vm.start",
                VmAction::Stop => "vm.stop",
                VmAction::Reboot => "vm.reboot",
                VmAction::Release => "vm.release",
            },
            subject: subject(record.id),
            before: Some(record.state.clone()),
            after: Some(after.into()),
            detail,
        })
        .await;
        Ok(())
    }

    /// Shuts the VM down, removes its domain and volume, frees its GPUs and closes its request;
    /// then places requests waiting for GPUs. The caller holds the VM and read `record` after
    /// taking it.
    pub(crate) async fn release(
        &self,
        _lock: &VmLock,
        actor: &str,
        record: &VmRecord,
        why: &str,
    ) -> Result<(), VmError> {
        if !matches!(record.state.as_str(), "running" | "stopped") {
            return Err(VmError::Conflict(format!(
                "VM {} is {}; only a running or stopped VM can be released",
                record.id, record.state
            )));
        }
        let handle = self.host(&record.host)?;
        if let Some(domain) = &record.domain {
            let grace = Duration::from_secs(self.inner.settings.shutdown_grace_secs);
            match handle.host.shut_down(domain, grace).await {
                Ok(_) | Err(passage_hypervisor::HypervisorError::NoDomain { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            handle
                .host
                .remove_domain_if(domain, record.domain_uuid.as_deref())
                .await?;
        }
        if let (Some(pool), Some(volume)) = (&record.pool, &record.volume) {
            handle.host.delete_volume(pool, volume).await?;
        }
        self.store().close_request(record.request_id, why).await?;
        self.store()
            .set_vm_state(record.id, &["running", "stopped"], "released", Some(why))
            .await?;
        self.audit(AuditRecord {
            actor,
            action: "vm.release",
            subject: subject(record.id),
            before: Some(record.state.clone()),
            after: Some("released".into()),
            detail: Some(why.to_string()),
        })
        .await;
        tracing::info!(vm = record.id, %why, "VM released");
        self.place_waiting().await?;
        Ok(())
    }

    /// Releases every VM whose lease has ended. A VM some other action holds is left for the
    /// next pass, and the lease is read again once the VM is held: an extension that came in
    /// meanwhile keeps the VM.
    pub async fn reclaim_expired(&self) -> Result<usize, VmError> {
        let mut reclaimed = 0;
        for id in self.store().expired_vms(now_ms()).await? {
            let Some(lock) = self.try_lock_vm(id).await? else {
                continue;
            };
            let done = match self.store().vm_record(id).await {
                Ok(Some(record)) if record.lease_expires_at < now_ms() => self
                    .release(&lock, "system", &record, "the lease expired")
                    .await
                    .map(|()| true),
                Ok(_) => Ok(false),
                Err(e) => Err(e.into()),
            };
            lock.unlock().await;
            match done {
                Ok(true) => reclaimed += 1,
                Ok(false) => {}
                Err(e) => tracing::warn!(vm = id, error = %e, "reclaiming an expired VM failed"),
            }
        }
        Ok(reclaimed)
    }

    /// The domain's XML as libvirt has it now (admins).
    pub async fn domain_xml(&self, admin: &User, id: i64) -> Result<String, VmError> {
        if !admin.is_admin {
            return Err(VmError::Forbidden("only admins read domain XML".into()));
        }
        let record = self.owned(admin, id).await?;
        let domain = record
            .domain
            .ok_or_else(|| VmError::Conflict(format!("VM {id} has no domain yet")))?;
        Ok(self.host(&record.host)?.host.domain_xml(&domain).await?)
    }

    /// Adds `hours` to a VM's lease (admins).
    pub async fn extend(&self, admin: &User, id: i64, hours: i64) -> Result<VmView, VmError> {
        if !admin.is_admin {
            return Err(VmError::Forbidden("only admins extend leases".into()));
        }
        if !(1..=8760).contains(&hours) {
            return Err(VmError::Invalid("hours: extend by 1 to 8,760 hours".into()));
        }
        self.owned(admin, id).await?;
        // Held while the lease moves, so that an expiry being reclaimed either finishes first
        // (the extension then finds the VM released) or sees the new end.
        let lock = self.lock_vm(id).await?;
        let extended = async {
            let record = self
                .store()
                .vm_record(id)
                .await?
                .ok_or(VmError::NotFound(id))?;
            let end = self
                .store()
                .extend_lease(id, hours)
                .await?
                .ok_or_else(|| VmError::Conflict(format!("VM {id} is {}", record.state)))?;
            Ok::<_, VmError>((record, end))
        }
        .await;
        lock.unlock().await;
        let (record, end) = extended?;
        self.audit(AuditRecord {
            actor: &admin.name,
            action: "vm.extend",
            subject: subject(id),
            before: Some(rfc3339(record.lease_expires_at)),
            after: Some(rfc3339(end)),
            detail: Some(format!("+{hours} h")),
        })
        .await;
        self.show(admin, id).await
    }

    /// Passes one more free GPU of the VM's host through to it (admins): the claim first, then
    /// the device; if the device cannot be attached the claim is given back.
    pub async fn attach_gpu(
        &self,
        admin: &User,
        id: i64,
        address: &str,
    ) -> Result<(VmView, Hotplug), VmError> {
        if !admin.is_admin {
            return Err(VmError::Forbidden("only admins attach GPUs".into()));
        }
        self.owned(admin, id).await?;
        let lock = self.lock_vm(id).await?;
        let attached = self.attach_locked(admin, id, address).await;
        lock.unlock().await;
        attached
    }

    async fn attach_locked(
        &self,
        admin: &User,
        id: i64,
        address: &str,
    ) -> Result<(VmView, Hotplug), VmError> {
        let record = self.owned(admin, id).await?;
        if !matches!(record.state.as_str(), "running" | "stopped") {
            return Err(VmError::Conflict(format!("VM {id} is {}", record.state)));
        }
        let address: PciAddress = address
            .parse()
            .map_err(|_| VmError::Invalid(format!("{address:?} is not a PCI address")))?;
        let address = address.to_string();
        let model = self
            .store()
            .gpus()
            .await?
            .iter()
            .find(|g| g.host == record.host && g.address == address)
            .map(|g| g.model.clone())
            .ok_or_else(|| VmError::Invalid(format!("no GPU {address} on host {}", record.host)))?;
        let gpu: FreeGpu = self
            .store()
            .free_gpus(&model)
            .await?
            .iter()
            .find(|g| g.host == record.host && g.address == address)
            .cloned()
            .ok_or_else(|| VmError::Conflict(format!("GPU {address} is not free")))?;
        if self.store().add_claim(record.request_id, &gpu).await? == ClaimOutcome::Lost {
            return Err(VmError::Conflict(format!(
                "GPU {address} was just claimed by another request"
            )));
        }
        let handle = self.host(&record.host)?;
        let domain = record.domain.as_deref().unwrap_or_default();
        let mut attached = Vec::new();
        let mut outcome = Hotplug::Live;
        for function in &gpu.functions {
            let pci: PciAddress = function.parse()?;
            match handle.host.attach_hostdev(domain, &pci).await {
                Ok(how) => {
                    outcome = how;
                    attached.push(pci);
                }
                Err(e) => {
                    for done in attached.iter().rev() {
                        if let Err(undo) = handle.host.detach_hostdev(domain, done).await {
                            tracing::warn!(error = %undo, "undoing a partial attach failed");
                        }
                    }
                    self.store()
                        .remove_claim(record.request_id, &address)
                        .await?;
                    return Err(e.into());
                }
            }
        }
        self.audit(AuditRecord {
            actor: &admin.name,
            action: "vm.attach_gpu",
            subject: subject(id),
            before: None,
            after: Some(gpu.functions.join(", ")),
            detail: Some(match outcome {
                Hotplug::Live => "attached to the running guest".into(),
                Hotplug::NextStart => "the guest sees it from its next start".into(),
            }),
        })
        .await;
        Ok((self.show(admin, id).await?, outcome))
    }

    /// Takes one GPU (with its functions) away from a VM and frees it (admins). A VM keeps at
    /// least one GPU: release it instead.
    pub async fn detach_gpu(
        &self,
        admin: &User,
        id: i64,
        address: &str,
    ) -> Result<(VmView, Hotplug), VmError> {
        if !admin.is_admin {
            return Err(VmError::Forbidden("only admins detach GPUs".into()));
        }
        self.owned(admin, id).await?;
        let lock = self.lock_vm(id).await?;
        let detached = self.detach_locked(admin, id, address).await;
        lock.unlock().await;
        detached
    }

    async fn detach_locked(
        &self,
        admin: &User,
        id: i64,
        address: &str,
    ) -> Result<(VmView, Hotplug), VmError> {
        let record = self.owned(admin, id).await?;
        if !matches!(record.state.as_str(), "running" | "stopped") {
            return Err(VmError::Conflict(format!("VM {id} is {}", record.state)));
        }
        let view = self.show(admin, id).await?;
        let address = address
            .parse::<PciAddress>()
            .map_err(|_| VmError::Invalid(format!("{address:?} is not a PCI address")))?
            .to_string();
        if !view.gpus.contains(&address) {
            return Err(VmError::Invalid(format!(
                "VM {id} does not hold GPU {address}"
            )));
        }
        if view.gpus.len() == 1 {
            return Err(VmError::Conflict(
                "this is the VM's only GPU: release the VM instead".into(),
            ));
        }
        let functions = self
            .store()
            .claimed_functions(record.request_id, &address)
            .await?;
        let handle = self.host(&record.host)?;
        let domain = record.domain.as_deref().unwrap_or_default();
        let mut outcome = Hotplug::Live;
        for function in &functions {
            outcome = handle
                .host
                .detach_hostdev(domain, &function.parse::<PciAddress>()?)
                .await?;
        }
        self.store()
            .remove_claim(record.request_id, &address)
            .await?;
        self.audit(AuditRecord {
            actor: &admin.name,
            action: "vm.detach_gpu",
            subject: subject(id),
            before: Some(functions.join(", ")),
            after: None,
            detail: None,
        })
        .await;
        self.place_waiting().await?;
        Ok((self.show(admin, id).await?, outcome))
    }
}
