//! The plugin registry: components are described in the same sandbox agents run them in
//! (`describe` only: no GPU, a few seconds at most), then kept with their hash and description.

use std::path::Path;
use std::sync::OnceLock;

use passage_app::plugins::PluginView;
use passage_plugin_host::{PluginEngine, PluginError};
use sha2::{Digest, Sha256};

use super::JobError;
use crate::store::{NewPlugin, Registered, Store, is_unique_violation};

/// What registering a component did.
#[derive(Debug, Clone)]
pub struct Registration {
    /// The plugin version, new or found.
    pub plugin: PluginView,
    /// False when these very bytes were registered already.
    pub new: bool,
}

/// One engine per process: compiling needs no per-portal state, and the engine reserves its
/// memory pool once.
fn engine() -> Result<&'static PluginEngine, JobError> {
    static ENGINE: OnceLock<Result<PluginEngine, String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| PluginEngine::new(None).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| JobError::BadPlugin(format!("the plugin engine cannot start: {e}")))
}

/// Describes `bytes` and registers them. A component that is not a plugin, or a different
/// component under a registered name and version, is refused with the reason.
pub async fn register(
    store: &Store,
    bytes: Vec<u8>,
    uploaded_by: &str,
    shipped: bool,
) -> Result<Registration, JobError> {
    let engine = engine()?;
    let (bytes, loaded) = tokio::task::spawn_blocking(move || {
        let loaded = engine.load(&bytes);
        (bytes, loaded)
    })
    .await
    .map_err(|e| JobError::BadPlugin(format!("describing the plugin failed: {e}")))?;
    let loaded = loaded.map_err(|e| match e {
        PluginError::NotAComponent(_) | PluginError::WrongWorld(_) => {
            JobError::BadPlugin(e.to_string())
        }
        other => JobError::BadPlugin(format!("describe failed: {other}")),
    })?;
    let info = &loaded.info;
    let outcome = store
        .register_plugin(&NewPlugin {
            name: &info.name,
            version: &info.version,
            summary: &info.summary,
            params: &info.params,
            sha256: &loaded.sha256,
            component: &bytes,
            shipped,
            all_gpus: loaded.wants_peers,
            uploaded_by,
        })
        .await;
    let (id, new) = match outcome {
        Ok(Registered::New(id)) => (id, true),
        Ok(Registered::Known(id)) => (id, false),
        Err(e) if is_unique_violation(&e) => {
            return Err(JobError::Conflict(format!(
                "{} {} is registered already with other contents: give the new build a new version",
                info.name, info.version
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let plugin = store
        .plugin(id)
        .await?
        .ok_or_else(|| JobError::NotFound(format!("plugin {id} vanished")))?;
    Ok(Registration {
        plugin: plugin.view,
        new,
    })
}

/// Registers every `*.wasm` directly in `dir` that is not registered yet, as shipped. A file
/// that fails is reported and skipped.
pub async fn register_directory(store: &Store, dir: &Path) -> Result<(), JobError> {
    let mut entries = match tokio::fs::read_dir(dir).await {
        Ok(entries) => entries,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot read the plugin directory");
            return Ok(());
        }
    };
    let known = store.plugin_hashes().await?;
    let mut files = Vec::new();
    while let Ok(Some(entry)) = entries.next_entry().await {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "wasm") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    let mut added = 0;
    for path in files {
        let bytes = match tokio::fs::read(&path).await {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot read a shipped plugin");
                continue;
            }
        };
        if known.contains(&hex::encode(Sha256::digest(&bytes))) {
            continue;
        }
        match register(store, bytes, "system", true).await {
            Ok(r) => {
                added += 1;
                tracing::info!(plugin = %r.plugin.name, version = %r.plugin.version, "registered a shipped plugin");
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "a shipped plugin was not registered")
            }
        }
    }
    if added > 0 {
        tracing::info!(dir = %dir.display(), added, "shipped plugins registered");
    }
    Ok(())
}
