//! `passagectl`: the portal's JSON API from the command line, for admins and scripts.
//!
//! Every command prints a table (or `key: value` lines for one object), or with `--json` the
//! portal's answer unchanged. Exit status: 0 done, 1 the portal refused or failed, 2 bad
//! arguments or no usable token, 3 the portal cannot be reached.

mod client;
mod commands;
mod table;
mod token;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The heading of the options every command takes.
const GLOBAL: &str = "Global options";

/// passagectl: the hosts, GPUs, requests, VMs, jobs and experiments of a Passage portal.
///
/// The API token comes from --token-file, else PASSAGE_TOKEN, else
/// $XDG_CONFIG_HOME/passage/token (~/.config/passage/token); a token file must be readable by
/// you alone. `passage token create NAME --user YOU` makes a token.
#[derive(Debug, Parser)]
#[command(name = "passagectl", version)]
struct Cli {
    /// The portal's address.
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        env = "PASSAGE_URL",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL"
    )]
    url: String,

    /// A file holding the API token (mode 600).
    #[arg(long, global = true, help_heading = GLOBAL, value_name = "PATH")]
    token_file: Option<PathBuf>,

    /// Print the portal's JSON answer unchanged instead of text.
    #[arg(long, global = true, help_heading = GLOBAL)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The hypervisor hosts and how their last inventory went.
    Hosts,
    /// The GPUs on the hosts, optionally only some.
    Gpus {
        /// Only GPUs of this host.
        #[arg(long)]
        host: Option<String>,
        /// Only GPUs of this model, e.g. "H100 PCIe".
        #[arg(long)]
        model: Option<String>,
        /// Only GPUs in this state: available, claimed, unassignable, host-unreachable, missing.
        #[arg(long)]
        state: Option<String>,
    },
    /// GPU VM requests: yours (admins: everyone's), filing one, approving and denying.
    #[command(subcommand)]
    Requests(RequestsCommand),
    /// GPU VMs: yours (admins: everyone's) and what can be done with them.
    #[command(subcommand)]
    Vms(VmsCommand),
    /// Plugin runs on agents.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Benchmark experiments.
    #[command(subcommand)]
    Experiments(ExperimentsCommand),
    /// The account the token acts as.
    Me,
}

/// `passagectl requests ...`.
#[derive(Debug, Subcommand)]
pub enum RequestsCommand {
    /// Every request you may see.
    List,
    /// One request.
    Show {
        /// The request's id.
        id: i64,
    },
    /// File a request for a GPU VM.
    File {
        /// The GPU model, as `passagectl gpus` shows it.
        #[arg(long)]
        model: String,
        /// How many GPUs, 1 to 16.
        #[arg(long, default_value_t = 1)]
        count: i64,
        /// The lease in hours, 1 to 720.
        #[arg(long)]
        hours: i64,
        /// The base image, e.g. debian-12.
        #[arg(long)]
        image: String,
        /// Why, for the admin who approves it.
        #[arg(long, visible_alias = "purpose")]
        reason: String,
        /// Virtual CPUs, 1 to 256.
        #[arg(long, default_value_t = 8)]
        vcpus: i64,
        /// Memory in MiB.
        #[arg(long, default_value_t = 32768)]
        memory_mib: i64,
        /// Disk in GiB.
        #[arg(long, default_value_t = 100)]
        disk_gib: i64,
        /// kvm or xen.
        #[arg(long, default_value = "kvm")]
        hypervisor: String,
    },
    /// Approve a request: its GPUs are claimed and its VM made, or it waits for GPUs (admins).
    Approve {
        /// The request's id.
        id: i64,
    },
    /// Deny a pending or waiting request (admins).
    Deny {
        /// The request's id.
        id: i64,
        /// Why, shown to the requester.
        #[arg(long)]
        reason: String,
    },
}

/// `passagectl vms ...`.
#[derive(Debug, Subcommand)]
pub enum VmsCommand {
    /// Every VM you may see.
    List,
    /// One VM.
    Show {
        /// The VM's id.
        id: i64,
    },
    /// Start a stopped VM.
    Start {
        /// The VM's id.
        id: i64,
    },
    /// Shut a running VM down.
    Stop {
        /// The VM's id.
        id: i64,
    },
    /// Reboot a running VM.
    Reboot {
        /// The VM's id.
        id: i64,
    },
    /// Release a VM: its domain and disk are removed and its GPUs freed.
    Release {
        /// The VM's id.
        id: i64,
    },
    /// Extend a VM's lease (admins).
    Extend {
        /// The VM's id.
        id: i64,
        /// Hours to add, 1 to 8760.
        #[arg(long)]
        hours: i64,
    },
}

/// `passagectl jobs ...`.
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// The jobs you may see, newest first.
    List {
        /// Only jobs in this state: queued, running, succeeded, failed, cancelled.
        #[arg(long)]
        state: Option<String>,
        /// Only jobs of this plugin.
        #[arg(long)]
        plugin: Option<String>,
    },
    /// One job with its progress and result.
    Show {
        /// The job's id.
        id: i64,
    },
    /// Cancel a queued or running job, then show it.
    Cancel {
        /// The job's id.
        id: i64,
    },
}

/// `passagectl experiments ...`.
#[derive(Debug, Subcommand)]
pub enum ExperimentsCommand {
    /// Your experiments (admins: everyone's), newest first.
    List,
    /// One experiment: where it stands and its targets.
    Show {
        /// The experiment's id.
        id: i64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("passagectl: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let token = token::find(cli.token_file.as_deref())?;
        let api = client::Api::new(&cli.url, &token)?;
        commands::run(&api, cli.command, cli.json).await
    });
    match result {
        Ok(text) => {
            let mut out = std::io::stdout().lock();
            // A closed pipe (`| head`) is not an error worth a message.
            let _ = out.write_all(text.as_bytes());
            if !text.is_empty() && !text.ends_with('\n') {
                let _ = out.write_all(b"\n");
            }
            ExitCode::SUCCESS
        }
        Err(failure) => {
            eprintln!("passagectl: {failure}");
            ExitCode::from(failure.exit_code())
        }
    }
}
