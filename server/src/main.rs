//! `passage`: the portal's command line.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use passage_server::Portal;
use passage_server::config::Config;
use tracing_subscriber::EnvFilter;

/// Passage: a self-hosted GPU passthrough cloud portal.
#[derive(Debug, Parser)]
#[command(name = "passage", version, about, long_about = None)]
struct Cli {
    /// Configuration file (TOML). Without one, built-in defaults apply: a SQLite file under
    /// ./passage-data and the bundled simulated host. PASSAGE_* variables override both.
    #[arg(
        long,
        short,
        global = true,
        env = "PASSAGE_CONFIG",
        value_name = "FILE"
    )]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the portal: apply migrations, inventory the hosts, serve the UI and the API.
    Serve,
    /// Print the configuration that `serve` would use, then exit.
    CheckConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("passage: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = EnvFilter::try_new(&config.log).unwrap_or_else(|e| {
        eprintln!(
            "passage: log filter {:?} is invalid ({e}); using \"info\"",
            config.log
        );
        EnvFilter::new("info")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    match cli.command {
        Command::CheckConfig => {
            println!("{config:#?}");
            ExitCode::SUCCESS
        }
        Command::Serve => {
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(runtime) => runtime,
                Err(e) => {
                    eprintln!("passage: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(serve(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("passage: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let mut portal = Portal::start(config).await?;
    println!("Passage is running at http://{}/", portal.address);
    tokio::select! {
        result = portal.wait() => result,
        signal = shutdown_signal() => {
            tracing::info!(signal, "shutting down");
            portal.shutdown(Duration::from_secs(30)).await
        }
    }
}

/// Resolves on SIGINT or SIGTERM, naming which.
async fn shutdown_signal() -> &'static str {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(stream) => stream,
                Err(_) => {
                    let _ = interrupt.await;
                    return "SIGINT";
                }
            };
        tokio::select! {
            _ = interrupt => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
        "interrupt"
    }
}
