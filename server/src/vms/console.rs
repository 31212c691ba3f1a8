//! The browser console: a websocket that carries the VM's VNC (RFB) stream, for noVNC.
//!
//! libvirt hands the portal a socket already connected to the domain's VNC server
//! (`virDomainOpenGraphicsFD`), so VNC never has to listen beyond the host's loopback and no
//! port is exposed. Only the VM's owner and admins get one.

use std::os::unix::net::UnixStream as StdUnixStream;

use axum::extract::ws::{Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::{VmError, VmService};
use crate::auth::User;
use crate::store::AuditRecord;

/// A VNC connection to a VM, ready to be joined to a websocket.
#[derive(Debug)]
pub struct ConsoleStream {
    vm_id: i64,
    socket: UnixStream,
}

impl VmService {
    /// Opens the console of VM `id` for `user`.
    pub async fn open_console(&self, user: &User, id: i64) -> Result<ConsoleStream, VmError> {
        let record = self.owned(user, id).await?;
        if record.state != "running" {
            return Err(VmError::Conflict(format!(
                "VM {id} is {}; the console needs it running",
                record.state
            )));
        }
        let handle = self.host(&record.host)?;
        let domain = record.domain.as_deref().unwrap_or_default();
        let fd = handle.host.open_vnc(domain).await?;
        let std = StdUnixStream::from(fd);
        std.set_nonblocking(true)
            .map_err(|e| VmError::Invalid(format!("console socket: {e}")))?;
        let socket = UnixStream::from_std(std)
            .map_err(|e| VmError::Invalid(format!("console socket: {e}")))?;
        self.audit(AuditRecord {
            actor: &user.name,
            action: "vm.console",
            subject: format!("vm {id}"),
            before: None,
            after: None,
            detail: None,
        })
        .await;
        Ok(ConsoleStream { vm_id: id, socket })
    }
}

impl ConsoleStream {
    /// Copies bytes both ways until either side closes.
    pub async fn join(self, ws: WebSocket) {
        let (mut ws_tx, mut ws_rx) = ws.split();
        let (mut vnc_rx, mut vnc_tx) = self.socket.into_split();
        let to_browser = async {
            let mut buffer = vec![0u8; 64 * 1024];
            loop {
                match vnc_rx.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if ws_tx
                            .send(Message::Binary(buffer[..n].to_vec().into()))
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                }
            }
            let _ = ws_tx.close().await;
        };
        let to_vm = async {
            while let Some(Ok(message)) = ws_rx.next().await {
                let bytes = match message {
                    Message::Binary(bytes) => bytes.to_vec(),
                    Message::Text(text) => text.as_bytes().to_vec(),
                    Message::Close(_) => break,
                    _ => continue,
                };
                if vnc_tx.write_all(&bytes).await.is_err() {
                    break;
                }
            }
            let _ = vnc_tx.shutdown().await;
        };
        tokio::select! {
            _ = to_browser => {}
            _ = to_vm => {}
        }
        tracing::debug!(vm = self.vm_id, "console closed");
    }
}
