//! The cloud-init NoCloud seed of a VM.
//!
//! The domain's SMBIOS serial reads `ds=nocloud-net;s=<portal>/cloud-init/<vm>/<key>/`, so cloud-init
//! in the guest fetches `meta-data` and `user-data` from the portal on first boot; no seed image
//! has to be built or uploaded to the host. The key is random per VM and only its hash is stored.
//! The agent's token is derived from the key, so the portal can hand the same token out again
//! (cloud-init may fetch more than once) without keeping the token itself.
//!
//! Both documents are YAML written by serde_yaml from typed structures, never by pasting strings.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::auth::{new_secret, secret_hash};
use crate::config::AgentBackend;

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
    /// The SHA-256 of the agent binary the portal serves: the guest installs nothing else.
    /// `None` when the portal has no agent binary to offer: the seed then brings no agent.
    pub agent_sha256: Option<String>,
    /// The GPU backend the agent runs jobs on.
    pub agent_backend: AgentBackend,
    /// Whether the image brings NVIDIA's driver; without it the seed installs it.
    pub gpu_driver_included: bool,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    power_state: Option<PowerState>,
}

#[derive(Serialize)]
struct GuestUser {
    name: String,
    shell: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sudo: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ssh_authorized_keys: Vec<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    system: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    no_create_home: bool,
    lock_passwd: bool,
}

#[derive(Serialize)]
struct WriteFile {
    path: &'static str,
    permissions: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
    /// Written in cloud-init's final stage, after the users exist.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    defer: bool,
    content: String,
}

/// A reboot at the end of the first boot, only when `condition` succeeds.
#[derive(Serialize)]
struct PowerState {
    mode: &'static str,
    message: &'static str,
    condition: Vec<&'static str>,
}

/// Where the agent keeps its token inside the guest.
pub const AGENT_TOKEN_PATH: &str = "/etc/passage/agent-token";
/// Where the agent binary is installed inside the guest.
pub const AGENT_PATH: &str = "/usr/local/bin/passage-agent";
/// The unprivileged account the agent runs as inside the guest.
pub const AGENT_USER: &str = "passage-agent";
/// The agent's cache (compiled plugins), the one place it may write.
pub const AGENT_CACHE_DIR: &str = "/var/cache/passage-agent";
/// The agent's systemd unit inside the guest.
pub const AGENT_UNIT_PATH: &str = "/etc/systemd/system/passage-agent.service";

/// Installs the agent: `$1` the URL, `$2` its SHA-256, `$3` where to install it. The download
/// lands beside the destination and is moved there only when its hash matches (fail closed: a
/// mismatch leaves nothing installed and nothing started). The values are arguments, never part
/// of the script's text.
pub const INSTALL_AGENT_SCRIPT: &str = r#"set -eu
url="$1"; want="$2"; dest="$3"
tmp="$(mktemp "$dest.download.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
curl -fsSL --retry 10 --retry-delay 3 --retry-connrefused -o "$tmp" "$url"
have="$(sha256sum "$tmp" | cut -d' ' -f1)"
if [ "$have" != "$want" ]; then
  echo "passage-agent: refusing to install $url: SHA-256 $have, the seed says $want" >&2
  exit 1
fi
chmod 0755 "$tmp"
mv -f "$tmp" "$dest"
trap - EXIT
systemctl daemon-reload
systemctl enable --now passage-agent.service
"#;

/// Installs NVIDIA's driver from the distribution: Debian's `nvidia-driver` from `non-free`
/// (the components are enabled first), or Ubuntu's newest `nvidia-driver-*-server`. The kernel
/// module is built for the running kernel; the seed reboots the guest when it is not loaded.
pub const INSTALL_NVIDIA_DRIVER_SCRIPT: &str = r#"set -eu
. /etc/os-release
export DEBIAN_FRONTEND=noninteractive
case "$ID" in
debian)
  for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
    [ -f "$f" ] || continue
    sed -i -E '/^(Components:|deb )/{/non-free( |$)/!s/main/main contrib non-free non-free-firmware/}' "$f"
  done
  apt-get update
  apt-get install -y "linux-headers-$(uname -r)" nvidia-driver firmware-misc-nonfree nvidia-smi
  ;;
ubuntu)
  apt-get update
  pkg="$(apt-cache search --names-only '^nvidia-driver-[0-9]+-server$' | cut -d' ' -f1 | sort -V | tail -n1)"
  [ -n "$pkg" ] || { echo "passage: no nvidia-driver-*-server package found" >&2; exit 1; }
  apt-get install -y "linux-headers-$(uname -r)" "$pkg"
  ;;
*)
  echo "passage: cannot install NVIDIA's driver on $ID: use an image that includes it" >&2
  exit 1
  ;;
esac
"#;

impl SeedContent {
    /// The `meta-data` document.
    pub fn meta_data(&self) -> String {
        serde_yaml::to_string(&MetaData {
            instance_id: format!("passage-vm-{}", self.vm_id),
            local_hostname: format!("passage-vm-{}", self.vm_id),
        })
        .expect("plain structures serialise")
    }

    /// True when the seed installs NVIDIA's driver: a CUDA agent on an image without it.
    pub fn installs_gpu_driver(&self) -> bool {
        self.agent_backend == AgentBackend::Cuda && !self.gpu_driver_included
    }

    /// The agent's systemd unit: the agent as its own unprivileged user, writing only its cache.
    pub fn agent_unit(&self) -> String {
        let exec = exec_line(&[
            AGENT_PATH,
            "serve",
            "--server",
            &self.server_url,
            "--token-file",
            AGENT_TOKEN_PATH,
            "--backend",
            self.agent_backend.as_str(),
            "--cache-dir",
            AGENT_CACHE_DIR,
        ]);
        let cache = AGENT_CACHE_DIR.trim_start_matches("/var/cache/");
        let sections: [(&str, Vec<(&str, String)>); 3] = [
            (
                "Unit",
                vec![
                    ("Description", "Passage agent".into()),
                    ("After", "network-online.target".into()),
                    ("Wants", "network-online.target".into()),
                ],
            ),
            (
                "Service",
                vec![
                    ("User", AGENT_USER.into()),
                    ("Group", AGENT_USER.into()),
                    ("ExecStart", exec),
                    ("CacheDirectory", cache.into()),
                    ("NoNewPrivileges", "yes".into()),
                    ("ProtectSystem", "strict".into()),
                    ("ProtectHome", "yes".into()),
                    ("PrivateTmp", "yes".into()),
                    ("Restart", "always".into()),
                    ("RestartSec", "5".into()),
                ],
            ),
            ("Install", vec![("WantedBy", "multi-user.target".into())]),
        ];
        let mut unit = String::new();
        for (i, (section, entries)) in sections.iter().enumerate() {
            if i > 0 {
                unit.push('\n');
            }
            unit.push_str(&format!("[{section}]\n"));
            for (key, value) in entries {
                unit.push_str(&format!("{key}={value}\n"));
            }
        }
        unit
    }

    /// The `user-data` document (`#cloud-config`): the owner's account and key, an unprivileged
    /// account for the agent, the agent's token readable by that account only, NVIDIA's driver
    /// when the image lacks it, and the agent, installed only when its SHA-256 is the one given
    /// here, started as a service.
    pub fn user_data(&self) -> String {
        let mut runcmd = Vec::new();
        let mut write_files = Vec::new();
        if self.installs_gpu_driver() {
            runcmd.push(vec![
                "sh".into(),
                "-c".into(),
                INSTALL_NVIDIA_DRIVER_SCRIPT.into(),
                "passage-install-nvidia-driver".into(),
            ]);
        }
        if let Some(sha256) = &self.agent_sha256 {
            runcmd.push(vec![
                "sh".into(),
                "-c".into(),
                INSTALL_AGENT_SCRIPT.into(),
                "passage-install-agent".into(),
                format!("{}/downloads/passage-agent", self.server_url),
                sha256.clone(),
                AGENT_PATH.into(),
            ]);
            write_files = vec![
                WriteFile {
                    path: AGENT_TOKEN_PATH,
                    permissions: "0600",
                    owner: Some(format!("{AGENT_USER}:{AGENT_USER}")),
                    defer: true,
                    content: format!("{}\n", self.agent_token),
                },
                WriteFile {
                    path: AGENT_UNIT_PATH,
                    permissions: "0644",
                    owner: None,
                    defer: false,
                    content: self.agent_unit(),
                },
            ];
        }
        let data = UserData {
            hostname: format!("passage-vm-{}", self.vm_id),
            users: vec![
                GuestUser {
                    name: self.user.clone(),
                    shell: "/bin/bash",
                    sudo: Some("ALL=(ALL) NOPASSWD:ALL"),
                    ssh_authorized_keys: self.ssh_public_key.iter().cloned().collect(),
                    system: false,
                    no_create_home: false,
                    lock_passwd: true,
                },
                GuestUser {
                    name: AGENT_USER.into(),
                    shell: "/usr/sbin/nologin",
                    sudo: None,
                    ssh_authorized_keys: Vec::new(),
                    system: true,
                    no_create_home: true,
                    lock_passwd: true,
                },
            ],
            write_files,
            runcmd,
            power_state: self.installs_gpu_driver().then_some(PowerState {
                mode: "reboot",
                message: "rebooting to load NVIDIA's driver",
                condition: vec!["sh", "-c", "! nvidia-smi -L >/dev/null 2>&1"],
            }),
        };
        format!(
            "#cloud-config\n{}",
            serde_yaml::to_string(&data).expect("plain structures serialise")
        )
    }
}

/// A systemd command line: each argument quoted where it needs to be, with `\`, `"`, `%`
/// (specifiers) and `$` (variables) escaped, so every argument arrives as written.
fn exec_line(args: &[&str]) -> String {
    args.iter()
        .map(|arg| {
            let plain = !arg.is_empty()
                && arg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/._:-,+=@".contains(c));
            if plain {
                return (*arg).to_string();
            }
            let mut quoted = String::from("\"");
            for c in arg.chars() {
                match c {
                    '\\' => quoted.push_str("\\\\"),
                    '"' => quoted.push_str("\\\""),
                    '%' => quoted.push_str("%%"),
                    '$' => quoted.push_str("$$"),
                    '\n' => quoted.push_str("\\n"),
                    c => quoted.push(c),
                }
            }
            quoted.push('"');
            quoted
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(key: Option<&str>) -> SeedContent {
        SeedContent {
            vm_id: 3,
            user: "alice".into(),
            ssh_public_key: key.map(String::from),
            server_url: "https://portal.example:8443".into(),
            agent_token: "psa_abc".into(),
            agent_sha256: Some("ab".repeat(32)),
            agent_backend: AgentBackend::Cuda,
            gpu_driver_included: true,
        }
    }

    fn parsed(content: &SeedContent) -> serde_yaml::Value {
        let text = content.user_data();
        assert!(text.starts_with("#cloud-config\n"), "{text}");
        serde_yaml::from_str(&text).unwrap()
    }

    #[test]
    fn user_data_is_cloud_config_that_parses_back() {
        let parsed = parsed(&content(Some("ssh-ed25519 AAAA alice@laptop")));
        assert_eq!(parsed["users"][0]["name"], "alice");
        assert_eq!(
            parsed["users"][0]["ssh_authorized_keys"][0],
            "ssh-ed25519 AAAA alice@laptop"
        );
        // The agent's token: its own account's, nobody else's, written once that account exists.
        let token = &parsed["write_files"][0];
        assert_eq!(token["path"], AGENT_TOKEN_PATH);
        assert_eq!(token["content"], "psa_abc\n");
        assert_eq!(token["permissions"], "0600");
        assert_eq!(token["owner"], "passage-agent:passage-agent");
        assert_eq!(token["defer"], true);
        assert!(parsed["power_state"].is_null());
    }

    #[test]
    fn the_agent_runs_as_an_unprivileged_system_account() {
        let parsed = parsed(&content(None));
        let agent = &parsed["users"][1];
        assert_eq!(agent["name"], AGENT_USER);
        assert_eq!(agent["system"], true);
        assert_eq!(agent["shell"], "/usr/sbin/nologin");
        assert_eq!(agent["lock_passwd"], true);
        assert!(agent["sudo"].is_null(), "{agent:?}");
        let unit = parsed["write_files"][1]["content"].as_str().unwrap();
        assert!(unit.contains("\nUser=passage-agent\n"), "{unit}");
        assert!(unit.contains("\nNoNewPrivileges=yes\n"), "{unit}");
        assert!(unit.contains("\nProtectSystem=strict\n"), "{unit}");
        assert!(
            unit.contains(
                "\nExecStart=/usr/local/bin/passage-agent serve --server \
                 https://portal.example:8443 --token-file /etc/passage/agent-token \
                 --backend cuda --cache-dir /var/cache/passage-agent\n"
            ),
            "{unit}"
        );
    }

    #[test]
    fn the_agent_is_installed_only_with_the_seeds_hash() {
        let parsed = parsed(&content(None));
        let runcmd = parsed["runcmd"].as_sequence().unwrap();
        assert_eq!(runcmd.len(), 1, "an image with the driver: only the agent");
        let install: Vec<&str> = runcmd[0]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(install[..2], ["sh", "-c"]);
        assert_eq!(install[2], INSTALL_AGENT_SCRIPT);
        assert_eq!(
            install[4..],
            [
                "https://portal.example:8443/downloads/passage-agent",
                &"ab".repeat(32),
                AGENT_PATH,
            ]
        );
    }

    /// The install script itself, run here against a file:// URL, with `systemctl` stubbed.
    #[test]
    fn the_install_script_fails_closed_on_a_wrong_hash() {
        if std::process::Command::new("curl")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("curl is not installed: skipping the install script's own test");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let download = dir.path().join("served-agent");
        std::fs::write(&download, b"#!/bin/sh\necho agent\n").unwrap();
        let good = hex::encode(Sha256::digest(std::fs::read(&download).unwrap()));
        let stubs = dir.path().join("bin");
        std::fs::create_dir(&stubs).unwrap();
        let systemctl = stubs.join("systemctl");
        std::fs::write(
            &systemctl,
            format!(
                "#!/bin/sh\necho \"$@\" >> {}\n",
                dir.path().join("systemctl.log").display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&systemctl, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!(
            "{}:{}",
            stubs.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let dest = dir.path().join("passage-agent");
        let install = |hash: &str| {
            std::process::Command::new("sh")
                .args(["-c", INSTALL_AGENT_SCRIPT, "passage-install-agent"])
                .arg(format!("file://{}", download.display()))
                .arg(hash)
                .arg(&dest)
                .env("PATH", &path)
                .output()
                .unwrap()
        };
        let refused = install(&"0".repeat(64));
        assert!(!refused.status.success());
        let said = String::from_utf8_lossy(&refused.stderr);
        assert!(said.contains("refusing to install"), "{said}");
        assert!(!dest.exists(), "nothing is installed");
        assert!(
            !dir.path().join("systemctl.log").exists(),
            "nothing is started"
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            2,
            "no download is left behind"
        );
        let installed = install(&good);
        assert!(
            installed.status.success(),
            "{}",
            String::from_utf8_lossy(&installed.stderr)
        );
        assert_eq!(
            std::fs::read(&dest).unwrap(),
            std::fs::read(&download).unwrap()
        );
        let mode = std::fs::metadata(&dest).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        let started = std::fs::read_to_string(dir.path().join("systemctl.log")).unwrap();
        assert!(
            started.contains("enable --now passage-agent.service"),
            "{started}"
        );
    }

    #[test]
    fn images_without_the_driver_get_it_installed_and_a_reboot() {
        let mut seed = content(None);
        seed.gpu_driver_included = false;
        let parsed = parsed(&seed);
        let runcmd = parsed["runcmd"].as_sequence().unwrap();
        assert_eq!(runcmd.len(), 2);
        assert_eq!(runcmd[0][2], INSTALL_NVIDIA_DRIVER_SCRIPT);
        assert_eq!(runcmd[1][2], INSTALL_AGENT_SCRIPT, "the driver comes first");
        assert_eq!(parsed["power_state"]["mode"], "reboot");
        assert!(INSTALL_NVIDIA_DRIVER_SCRIPT.contains("nvidia-driver firmware-misc-nonfree"));
        assert!(INSTALL_NVIDIA_DRIVER_SCRIPT.contains("non-free"));
        assert!(INSTALL_NVIDIA_DRIVER_SCRIPT.contains("nvidia-driver-[0-9]+-server"));
        // A simulated GPU needs no driver.
        seed.agent_backend = AgentBackend::Fake;
        let parsed = self::parsed(&seed);
        assert_eq!(parsed["runcmd"].as_sequence().unwrap().len(), 1);
        assert!(parsed["power_state"].is_null());
        let unit = parsed["write_files"][1]["content"].as_str().unwrap();
        assert!(unit.contains("--backend fake"), "{unit}");
    }

    #[test]
    fn without_an_agent_binary_the_seed_still_makes_the_account() {
        let mut seed = content(Some("ssh-ed25519 AAAA alice@laptop"));
        seed.agent_sha256 = None;
        let parsed = parsed(&seed);
        assert_eq!(parsed["users"][0]["name"], "alice");
        assert!(parsed["runcmd"].as_sequence().unwrap().is_empty());
        assert!(parsed["write_files"].as_sequence().unwrap().is_empty());
    }

    #[test]
    fn unit_arguments_arrive_as_written() {
        assert_eq!(exec_line(&["/bin/x", "a-b.c"]), "/bin/x a-b.c");
        assert_eq!(
            exec_line(&["/bin/x", "http://h/p?q=1&r=%41 $HOME \"x\" \\"]),
            r#"/bin/x "http://h/p?q=1&r=%%41 $$HOME \"x\" \\""#
        );
        assert_eq!(exec_line(&[""]), r#""""#);
    }

    #[test]
    fn hostile_keys_stay_data() {
        let hostile = "ssh-rsa AAAA\nruncmd: [[rm, -rf, /]]\n# \"quoted\": {x}";
        let parsed = parsed(&content(Some(hostile)));
        assert_eq!(parsed["users"][0]["ssh_authorized_keys"][0], hostile);
        assert_eq!(parsed["runcmd"].as_sequence().unwrap().len(), 1);
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
