//! Errors of the libvirt layer, with the libvirt message kept intact for admins.

use thiserror::Error;

/// What can go wrong talking to a hypervisor host or reading what it reports.
#[derive(Debug, Error)]
pub enum HypervisorError {
    /// The URI is not something libvirt can be asked to open.
    #[error("invalid libvirt URI {uri:?}: {reason}")]
    InvalidUri {
        /// The URI as configured.
        uri: String,
        /// Why it was refused.
        reason: String,
    },
    /// libvirt could not open a connection.
    #[error("cannot connect to {uri}: {message}")]
    Connect {
        /// The host's URI.
        uri: String,
        /// libvirt's own message.
        message: String,
    },
    /// A call on an open connection failed.
    #[error("{call} on {uri} failed: {message}")]
    Call {
        /// The host's URI.
        uri: String,
        /// The libvirt API that failed.
        call: &'static str,
        /// libvirt's own message.
        message: String,
        /// True when the failure means the connection itself is gone (it is reopened next time).
        connection_lost: bool,
    },
    /// libvirt did not answer in time (a hung daemon or an unreachable remote host).
    #[error("{uri} did not answer within {seconds} s")]
    Timeout {
        /// The host's URI.
        uri: String,
        /// The limit that passed.
        seconds: u64,
    },
    /// libvirt returned node-device XML that does not describe a PCI function sensibly.
    #[error("invalid node device XML: {reason}")]
    InvalidNodeDeviceXml {
        /// What was wrong.
        reason: String,
    },
    /// libvirt returned domain capabilities that cannot be read.
    #[error("invalid domain capabilities XML: {reason}")]
    InvalidDomainCapabilities {
        /// What was wrong.
        reason: String,
    },
    /// A PCI address that is not of the form `dddd:bb:ss.f`.
    #[error("invalid PCI address {0:?}: expected dddd:bb:ss.f in hexadecimal")]
    InvalidPciAddress(String),
    /// A domain has the expected name but not the UUID it was given: it is not ours to touch.
    #[error("domain {domain} has UUID {uuid}, not the one Passage gave it: left alone")]
    NotOurs {
        /// The domain's name.
        domain: String,
        /// The UUID found.
        uuid: String,
    },
    /// No domain of that name is defined on the host.
    #[error("no domain {name} on {uri}")]
    NoDomain {
        /// The host's URI.
        uri: String,
        /// The domain's name.
        name: String,
    },
    /// The blocking worker that runs libvirt calls stopped (it panicked or was cancelled).
    #[error("libvirt worker for {uri} stopped: {reason}")]
    Worker {
        /// The host's URI.
        uri: String,
        /// What the runtime said.
        reason: String,
    },
}

impl HypervisorError {
    /// True when retrying later may succeed (network, daemon restarts, timeouts); false for
    /// errors in configuration or in what the host reported.
    pub fn is_transient(&self) -> bool {
        match self {
            HypervisorError::Connect { .. }
            | HypervisorError::Timeout { .. }
            | HypervisorError::Worker { .. } => true,
            HypervisorError::Call {
                connection_lost, ..
            } => *connection_lost,
            HypervisorError::InvalidUri { .. }
            | HypervisorError::InvalidNodeDeviceXml { .. }
            | HypervisorError::InvalidDomainCapabilities { .. }
            | HypervisorError::InvalidPciAddress(_)
            | HypervisorError::NotOurs { .. }
            | HypervisorError::NoDomain { .. } => false,
        }
    }
}
