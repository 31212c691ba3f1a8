//! Helpers shared by the server's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use passage_server::config::{Config, HostConfig};

/// The bundled simulated host file, by absolute path.
pub fn simulated_host_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("hosts/simulated-host.xml")
        .canonicalize()
        .unwrap()
}

/// A configuration for an in-process portal in `dir`: port 0, SQLite in `dir`, given hosts.
pub fn config(dir: &Path, hosts: &[(&str, &str)]) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: format!("sqlite://{}", dir.join("passage.db").display()),
        data_dir: dir.to_path_buf(),
        site_dir: dir.join("site"),
        log: "warn".into(),
        inventory_refresh: Duration::from_secs(3600),
        libvirt_call_timeout: Duration::from_secs(10),
        hosts: hosts
            .iter()
            .map(|(name, uri)| HostConfig {
                name: name.to_string(),
                uri: uri.to_string(),
            })
            .collect(),
    }
}
