//! The `passage-agent` binary that guests install, and its SHA-256.
//!
//! A guest downloads the agent from the portal (`/downloads/passage-agent`) and installs it only
//! when its SHA-256 equals the one in its cloud-init seed, so the seed and the download must
//! describe the same file. Both are served from one copy held in memory, read again only when
//! the file on disk changes (size or modification time), so an upgrade of the binary beside a
//! running portal is picked up by the next guest.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use sha2::{Digest, Sha256};
use thiserror::Error;

/// Why the agent binary cannot be offered.
#[derive(Debug, Error)]
pub enum AgentBinaryError {
    /// No file at the configured (or default) place.
    #[error("passage-agent is not installed at {0} (set [vms] agent_binary)")]
    Missing(PathBuf),
    /// The file exists but cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the file system said.
        source: std::io::Error,
    },
}

/// The agent binary as guests receive it.
#[derive(Debug, Clone)]
pub struct AgentRelease {
    /// The file's bytes.
    pub bytes: Arc<[u8]>,
    /// Their SHA-256, lower-case hex.
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
}

/// The agent binary at one path, read on first use and again when it changes.
#[derive(Debug)]
pub struct AgentBinary {
    path: PathBuf,
    cached: Mutex<Option<(Stamp, AgentRelease)>>,
}

impl AgentBinary {
    /// The binary at `path`, or `passage-agent` beside the running server when `None`.
    pub fn new(path: Option<PathBuf>) -> AgentBinary {
        let path = path.unwrap_or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|exe| exe.parent().map(|dir| dir.join("passage-agent")))
                .unwrap_or_else(|| PathBuf::from("passage-agent"))
        });
        AgentBinary {
            path,
            cached: Mutex::new(None),
        }
    }

    /// Where the binary is expected.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The binary and its hash, from memory unless the file changed.
    pub async fn release(&self) -> Result<AgentRelease, AgentBinaryError> {
        let read_error = |source| AgentBinaryError::Read {
            path: self.path.clone(),
            source,
        };
        let meta = match tokio::fs::metadata(&self.path).await {
            Ok(meta) if meta.is_file() => meta,
            Ok(_) => return Err(AgentBinaryError::Missing(self.path.clone())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(AgentBinaryError::Missing(self.path.clone()));
            }
            Err(e) => return Err(read_error(e)),
        };
        let stamp = Stamp {
            len: meta.len(),
            modified: meta.modified().ok(),
        };
        if let Some((cached, release)) = &*self.cached.lock().expect("agent binary lock")
            && *cached == stamp
        {
            return Ok(release.clone());
        }
        let path = self.path.clone();
        let release = tokio::task::spawn_blocking(move || {
            let bytes = std::fs::read(&path)?;
            let sha256 = hex::encode(Sha256::digest(&bytes));
            Ok::<_, std::io::Error>(AgentRelease {
                bytes: bytes.into(),
                sha256,
            })
        })
        .await
        .map_err(|e| read_error(std::io::Error::other(e)))?
        .map_err(read_error)?;
        *self.cached.lock().expect("agent binary lock") = Some((stamp, release.clone()));
        Ok(release)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_hash_follows_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passage-agent");
        let binary = AgentBinary::new(Some(path.clone()));
        assert!(matches!(
            binary.release().await,
            Err(AgentBinaryError::Missing(_))
        ));
        std::fs::write(&path, b"abc").unwrap();
        let first = binary.release().await.unwrap();
        assert_eq!(
            first.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(&*first.bytes, b"abc");
        std::fs::write(&path, b"abcd").unwrap();
        assert_ne!(binary.release().await.unwrap().sha256, first.sha256);
    }
}
