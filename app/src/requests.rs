//! GPU VM requests as the UI and the API see them, the rules a new request must meet, and the
//! server functions of the requests page.

use std::collections::BTreeMap;

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

/// A request as its owner and the admins see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct RequestView {
    /// Its id.
    pub id: i64,
    /// Who filed it.
    pub user: String,
    /// GPU model.
    pub gpu_model: String,
    /// GPUs asked for.
    pub gpu_count: i64,
    /// Virtual CPUs.
    pub vcpus: i64,
    /// Memory in MiB.
    pub memory_mib: i64,
    /// Disk in GiB.
    pub disk_gib: i64,
    /// Base image.
    pub image: String,
    /// `kvm` or `xen`.
    pub hypervisor: String,
    /// Lease in hours.
    pub lease_hours: i64,
    /// Why.
    pub reason: String,
    /// `pending`, `waiting`, `placed`, `denied` or `released`.
    pub state: String,
    /// Why it is waiting or was denied.
    pub state_reason: Option<String>,
    /// Host it was placed on.
    pub host: Option<String>,
    /// NUMA node of its GPUs, when they share one.
    pub numa_node: Option<i64>,
    /// The PCI addresses of the GPUs it holds.
    pub gpus: Vec<String>,
}

/// What a user asks for: the body of `POST /api/v1/requests`. Every field is required.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RequestForm {
    /// A `model` from `GET /api/v1/gpus`.
    pub gpu_model: String,
    /// 1 to 16.
    pub gpu_count: i64,
    /// 1 to 256.
    pub vcpus: i64,
    /// 512 to 4,194,304 (4 TiB).
    pub memory_mib: i64,
    /// 1 to 65,536.
    pub disk_gib: i64,
    /// A `name` from `GET /api/v1/images`.
    pub image: String,
    /// `kvm` or `xen`.
    pub hypervisor: String,
    /// 1 to 720 (30 days).
    pub lease_hours: i64,
    /// Why, for the admin: 1 to 1,000 characters.
    pub reason: String,
}

impl RequestForm {
    /// Checks every field against the GPU models and images that exist; the errors name each
    /// bad field.
    pub fn validate(
        &self,
        models: &[String],
        images: &[String],
    ) -> Result<(), BTreeMap<String, String>> {
        let mut errors = BTreeMap::new();
        let mut range = |field: &str, value: i64, min: i64, max: i64| {
            if !(min..=max).contains(&value) {
                errors.insert(
                    field.to_string(),
                    format!("must be from {min} to {max}, got {value}"),
                );
            }
        };
        range("gpu_count", self.gpu_count, 1, 16);
        range("vcpus", self.vcpus, 1, 256);
        range("memory_mib", self.memory_mib, 512, 4 << 20);
        range("disk_gib", self.disk_gib, 1, 65_536);
        range("lease_hours", self.lease_hours, 1, 720);
        if !models.contains(&self.gpu_model) {
            errors.insert(
                "gpu_model".into(),
                format!(
                    "{:?} is not a GPU model here; choose one of: {}",
                    self.gpu_model,
                    models.join(", ")
                ),
            );
        }
        if !images.contains(&self.image) {
            errors.insert(
                "image".into(),
                format!(
                    "{:?} is not an image here; choose one of: {}",
                    self.image,
                    images.join(", ")
                ),
            );
        }
        if !matches!(self.hypervisor.as_str(), "kvm" | "xen") {
            errors.insert("hypervisor".into(), "must be \"kvm\" or \"xen\"".into());
        }
        let reason = self.reason.trim();
        if reason.is_empty() || reason.chars().count() > 1000 {
            errors.insert("reason".into(), "say why in 1 to 1000 characters".into());
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// What a request can name: the GPU models on the hosts and the base images.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Choices {
    /// GPU models, sorted, once each.
    pub models: Vec<String>,
    /// Image names.
    pub images: Vec<String>,
    /// The images that bring NVIDIA's driver; VMs of the others install it on first boot.
    #[serde(default)]
    pub images_with_driver: Vec<String>,
}

/// What filing a request from the page did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct FileOutcome {
    /// The new request's id, when it was filed.
    pub id: Option<i64>,
    /// Field name to message, when it was not.
    pub errors: BTreeMap<String, String>,
}

/// The requests page's data: who asks, what can be asked for, and the requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestsView {
    /// Who asked (admins see every request and the approve/deny buttons).
    pub viewer: crate::inventory::Viewer,
    /// GPU models on the hosts.
    pub models: Vec<String>,
    /// Base images.
    pub images: Vec<String>,
    /// The images that bring NVIDIA's driver.
    #[serde(default)]
    pub images_with_driver: Vec<String>,
    /// Requests, newest first.
    pub requests: Vec<RequestView>,
}

/// The requests page's data; `None` when nobody is signed in.
#[server]
pub async fn load_requests() -> Result<Option<RequestsView>, ServerFnError> {
    let (service, viewer) = crate::inventory::signed_in().await?;
    let Some(viewer) = viewer else {
        return Ok(None);
    };
    let Choices {
        models,
        images,
        images_with_driver,
    } = service.0.choices().await.map_err(crate::service::refused)?;
    let requests = service
        .0
        .requests(viewer.clone())
        .await
        .map_err(crate::service::refused)?;
    Ok(Some(RequestsView {
        viewer,
        models,
        images,
        images_with_driver,
        requests,
    }))
}

/// The request form's fields as the browser sends them: all text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RequestFields {
    /// GPU model.
    pub gpu_model: String,
    /// GPU count.
    pub gpu_count: String,
    /// vCPUs.
    pub vcpus: String,
    /// Memory in MiB.
    pub memory_mib: String,
    /// Disk in GiB.
    pub disk_gib: String,
    /// Image name.
    pub image: String,
    /// `kvm` or `xen`.
    pub hypervisor: String,
    /// Lease in hours.
    pub lease_hours: String,
    /// Why.
    pub reason: String,
}

/// Files a request from the page's form (fields named `form[...]`).
#[server]
pub async fn file_request(form: RequestFields) -> Result<FileOutcome, ServerFnError> {
    let (service, viewer) = crate::inventory::signed_in().await?;
    let viewer =
        viewer.ok_or_else(|| crate::service::refused(crate::service::Refusal::sign_in()))?;
    let mut errors = BTreeMap::new();
    let mut number = |field: &str, text: &str| match text.trim().parse::<i64>() {
        Ok(value) => value,
        Err(_) => {
            errors.insert(field.to_string(), format!("{text:?} is not a whole number"));
            0
        }
    };
    let form = RequestForm {
        gpu_count: number("gpu_count", &form.gpu_count),
        vcpus: number("vcpus", &form.vcpus),
        memory_mib: number("memory_mib", &form.memory_mib),
        disk_gib: number("disk_gib", &form.disk_gib),
        lease_hours: number("lease_hours", &form.lease_hours),
        gpu_model: form.gpu_model,
        image: form.image,
        hypervisor: form.hypervisor,
        reason: form.reason,
    };
    if !errors.is_empty() {
        return Ok(FileOutcome { id: None, errors });
    }
    match service.0.file(viewer, form).await {
        Ok(id) => Ok(FileOutcome {
            id: Some(id),
            errors: BTreeMap::new(),
        }),
        Err(crate::service::RequestFailure::Invalid(errors)) => {
            Ok(FileOutcome { id: None, errors })
        }
        Err(crate::service::RequestFailure::Other(refusal)) => {
            Err(crate::service::refused(refusal))
        }
    }
}

/// Approves a request (admins), optionally onto the GPUs listed in `gpus` (PCI addresses
/// separated by commas or spaces).
#[server]
pub async fn approve_request(id: i64, gpus: Option<String>) -> Result<(), ServerFnError> {
    let (service, viewer) = crate::inventory::signed_in().await?;
    let gpus: Vec<String> = gpus
        .unwrap_or_default()
        .split([',', ' '])
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(String::from)
        .collect();
    match viewer {
        Some(viewer) if viewer.is_admin => service
            .0
            .approve(viewer, id, gpus)
            .await
            .map_err(crate::service::refused),
        Some(_) => Err(crate::service::refused(
            crate::service::Refusal::admins_only("only admins approve requests"),
        )),
        None => Err(crate::service::refused(crate::service::Refusal::sign_in())),
    }
}

/// Denies a request with a reason (admins).
#[server]
pub async fn deny_request(id: i64, reason: String) -> Result<(), ServerFnError> {
    let (service, viewer) = crate::inventory::signed_in().await?;
    match viewer {
        Some(viewer) if viewer.is_admin => service
            .0
            .deny(viewer, id, reason)
            .await
            .map_err(crate::service::refused),
        Some(_) => Err(crate::service::refused(
            crate::service::Refusal::admins_only("only admins deny requests"),
        )),
        None => Err(crate::service::refused(crate::service::Refusal::sign_in())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form() -> RequestForm {
        RequestForm {
            gpu_model: "H100 PCIe".into(),
            gpu_count: 1,
            vcpus: 8,
            memory_mib: 32768,
            disk_gib: 100,
            image: "debian-12".into(),
            hypervisor: "kvm".into(),
            lease_hours: 24,
            reason: "benchmarks".into(),
        }
    }

    #[test]
    fn every_bad_field_gets_its_own_message() {
        let models = vec!["H100 PCIe".to_string()];
        let images = vec!["debian-12".to_string()];
        assert!(form().validate(&models, &images).is_ok());
        let bad = RequestForm {
            gpu_model: "K80".into(),
            gpu_count: 0,
            vcpus: 1000,
            memory_mib: 1,
            disk_gib: 0,
            image: "windows".into(),
            hypervisor: "vmware".into(),
            lease_hours: 10_000,
            reason: " ".into(),
        };
        let errors = bad.validate(&models, &images).unwrap_err();
        let fields: Vec<&str> = errors.keys().map(String::as_str).collect();
        assert_eq!(
            fields,
            vec![
                "disk_gib",
                "gpu_count",
                "gpu_model",
                "hypervisor",
                "image",
                "lease_hours",
                "memory_mib",
                "reason",
                "vcpus"
            ]
        );
        assert!(errors["gpu_model"].contains("H100 PCIe"));
    }
}
