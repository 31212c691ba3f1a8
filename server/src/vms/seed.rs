//! The cloud-init NoCloud seed of a VM.
//!
//! The domain's SMBIOS serial reads `ds=nocloud;s=<portal>/cloud-init/<vm>/<key>/`, so cloud-init
//! in the guest fetches `meta-data` and `user-data` from the portal on first boot; no seed image
//! has to be built or uploaded to the host. The key is random per VM and only its hash is stored.
//! The agent's token is derived from the key, so the portal can hand the same token out again
//! (cloud-init may fetch more than once) without keeping the token itself.
//!
//! Both documents are YAML written by serde_yaml from typed structures, never by pasting strings.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::auth::{new_secret, secret_hash};

/// A VM's seed key: in the seed URL, never stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedKey(String);

impl SeedKey {
    /// A fresh random key.
    pub fn generate() -> SeedKey {
        SeedKey(new_secret(""))
    }

    /// The key as received in a URL.
    pub fn from_url(key: &str) -> SeedKey {
        SeedKey(key.to_string())
    }

    /// What is stored.
    pub fn hash(&self) -> String {
        secret_hash(&self.0)
    }

    /// The key itself, for the URL.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The VM agent's token (prefix `psa_`), derived from the key.
    pub fn agent_token(&self) -> String {
        let digest = Sha256::new()
            .chain_update(b"passage agent token\0")
            .chain_update(self.0.as_bytes())
            .finalize();
        format!("psa_{}", hex::encode(digest))
    }
}

/// The seed's base URL, as put in the domain's SMBIOS serial.
pub fn seed_url(public_url: &str, vm_id: i64, key: &SeedKey) -> String {
    format!("{public_url}/cloud-init/{vm_id}/{}/", key.as_str())
}

/// What goes into a VM's seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedContent {
    /// The VM id.
    pub vm_id: i64,
    /// The owner's user name (the guest account).
    pub user: String,
    /// The owner's SSH public key.
    pub ssh_public_key: Option<String>,
    /// The portal's URL as the guest reaches it.
    pub server_url: String,
    /// The agent's token.
    pub agent_token: String,
}

#[derive(Serialize)]
struct MetaData {
    #[serde(rename = "instance-id")]
    instance_id: String,
    #[serde(rename = "local-hostname")]
    local_hostname: String,
}

#[derive(Serialize)]
struct UserData {
    hostname: String,
    users: Vec<GuestUser>,
    write_files: Vec<WriteFile>,
    runcmd: Vec<Vec<String>>,
}

#[derive(Serialize)]
struct GuestUser {
    name: String,
    shell: &'static str,
    sudo: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ssh_authorized_keys: Vec<String>,
}

#[derive(Serialize)]
struct WriteFile {
    path: &'static str,
    permissions: &'static str,
    content: String,
}

/// Where the agent keeps its token inside the guest.
pub const AGENT_TOKEN_PATH: &str = "/etc/passage/agent-token";

impl SeedContent {
    /// The `meta-data` document.
    pub fn meta_data(&self) -> String {
        serde_yaml::to_string(&MetaData {
            instance_id: format!("passage-vm-{}", self.vm_id),
            local_hostname: format!("passage-vm-{}", self.vm_id),
        })
        .expect("plain structures serialise")
    }

    /// The `user-data` document (`#cloud-config`): the owner's account and key, and the agent,
    /// fetched from the portal and started as a service with its token.
    pub fn user_data(&self) -> String {
        let unit = format!(
            "[Unit]\nDescription=Passage agent\nAfter=network-online.target\nWants=network-online.target\n\n\
             [Service]\nExecStart=/usr/local/bin/passage-agent serve --server {} --token-file {}\n\
             Restart=always\nRestartSec=5\n\n[Install]\nWantedBy=multi-user.target\n",
            self.server_url, AGENT_TOKEN_PATH
        );
        let data = UserData {
            hostname: format!("passage-vm-{}", self.vm_id),
            users: vec![GuestUser {
                name: self.user.clone(),
                shell: "/bin/bash",
                sudo: "ALL=(ALL) NOPASSWD:ALL",
                ssh_authorized_keys: self.ssh_public_key.iter().cloned().collect(),
            }],
            write_files: vec![
                WriteFile {
                    path: AGENT_TOKEN_PATH,
                    permissions: "0600",
                    content: format!("{}\n", self.agent_token),
                },
                WriteFile {
                    path: "/etc/systemd/system/passage-agent.service",
                    permissions: "0644",
                    content: unit,
                },
            ],
            runcmd: vec![
                vec![
                    "curl".into(),
                    "-fsSL".into(),
                    "-o".into(),
                    "/usr/local/bin/passage-agent".into(),
                    format!("{}/downloads/passage-agent", self.server_url),
                ],
                vec![
                    "chmod".into(),
                    "0755".into(),
                    "/usr/local/bin/passage-agent".into(),
                ],
                vec![
                    "systemctl".into(),
                    "enable".into(),
                    "--now".into(),
                    "passage-agent.service".into(),
                ],
            ],
        };
        format!(
            "#cloud-config\n{}",
            serde_yaml::to_string(&data).expect("plain structures serialise")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(key: Option<&str>) -> SeedContent {
        SeedContent {
            vm_id: 3,
            user: "alice".into(),
            ssh_public_key: key.map(String::from),
            server_url: "http://10.0.2.2:8080".into(),
            agent_token: "psa_abc".into(),
        }
    }

    #[test]
    fn user_data_is_cloud_config_that_parses_back() {
        let text = content(Some("ssh-ed25519 AAAA alice@laptop")).user_data();
        assert!(text.starts_with("#cloud-config\n"), "{text}");
        let parsed: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(parsed["users"][0]["name"], "alice");
        assert_eq!(
            parsed["users"][0]["ssh_authorized_keys"][0],
            "ssh-ed25519 AAAA alice@laptop"
        );
        assert_eq!(parsed["write_files"][0]["content"], "psa_abc\n");
        assert!(
            parsed["write_files"][1]["content"]
                .as_str()
                .unwrap()
                .contains("--server http://10.0.2.2:8080 --token-file /etc/passage/agent-token")
        );
    }

    #[test]
    fn hostile_keys_stay_data() {
        let hostile = "ssh-rsa AAAA\nruncmd: [[rm, -rf, /]]\n# \"quoted\": {x}";
        let text = content(Some(hostile)).user_data();
        let parsed: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(parsed["users"][0]["ssh_authorized_keys"][0], hostile);
        assert_eq!(parsed["runcmd"].as_sequence().unwrap().len(), 3);
    }

    #[test]
    fn the_agent_token_follows_from_the_key_and_differs_per_key() {
        let key = SeedKey::generate();
        assert_eq!(
            key.agent_token(),
            SeedKey::from_url(key.as_str()).agent_token()
        );
        assert_ne!(key.agent_token(), SeedKey::generate().agent_token());
        assert!(key.agent_token().starts_with("psa_"));
        let meta: serde_yaml::Value = serde_yaml::from_str(&content(None).meta_data()).unwrap();
        assert_eq!(meta["instance-id"], "passage-vm-3");
    }
}
