//! `passage`: the portal's command line.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use passage_server::Portal;
use passage_server::config::{Config, LogFormat};
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
    /// Manage accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage agents on bare-metal hosts (the native baseline).
    #[command(subcommand)]
    Agent(AgentCommand),
}

#[derive(Debug, Subcommand)]
enum AgentCommand {
    /// Register a bare-metal GPU host and print its agent token (it is shown only once).
    Add {
        /// The host's name in the portal, e.g. gpu-01-native.
        name: String,
        /// The admin who registers it (recorded in the audit log).
        #[arg(long)]
        by: String,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Add a user; the password is read from standard input (asked twice on a terminal).
    Add {
        /// Login name: letters, digits, '.', '-', '_'.
        name: String,
        /// Make the user an admin.
        #[arg(long)]
        admin: bool,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create an API token for a user and print it (it is shown only once).
    Create {
        /// A name for the token, e.g. the script that will use it.
        name: String,
        /// The user the token acts as.
        #[arg(long)]
        user: String,
    },
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
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().with_current_span(true).init(),
    }

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("passage: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::CheckConfig => {
            println!("{config:#?}");
            Ok(())
        }
        Command::Serve => runtime.block_on(serve(config)),
        Command::User(UserCommand::Add { name, admin }) => {
            runtime.block_on(add_user(config, &name, admin))
        }
        Command::Token(TokenCommand::Create { name, user }) => {
            runtime.block_on(create_token(config, &name, &user))
        }
        Command::Agent(AgentCommand::Add { name, by }) => {
            runtime.block_on(add_native_host(config, &name, &by))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("passage: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn add_user(config: Config, name: &str, admin: bool) -> anyhow::Result<()> {
    let password = read_password()?;
    let store = passage_server::store::Store::open(&config.database_url).await?;
    let auth = passage_server::auth::Auth::new(store.clone());
    let user = auth.add_user(name, &password, admin).await?;
    store.close().await;
    println!(
        "added {}{}",
        user.name,
        if user.is_admin { " (admin)" } else { "" }
    );
    Ok(())
}

async fn create_token(config: Config, name: &str, user: &str) -> anyhow::Result<()> {
    let store = passage_server::store::Store::open(&config.database_url).await?;
    let auth = passage_server::auth::Auth::new(store.clone());
    let record = store
        .user_by_name(user)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no user {user:?}"))?;
    let (_, secret) = auth.create_token(&record.into(), name, None).await?;
    store.close().await;
    println!("{secret}");
    Ok(())
}

async fn add_native_host(config: Config, name: &str, by: &str) -> anyhow::Result<()> {
    let store = passage_server::store::Store::open(&config.database_url).await?;
    let admin = store
        .user_by_name(by)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no user {by:?}"))?;
    let jobs = passage_server::jobs::JobService::new(
        store.clone(),
        config.agents,
        config.jobs,
        config.plugins.clone(),
    );
    let (_, token) = jobs.add_native_host(&admin.into(), name).await?;
    store.close().await;
    println!("{token}");
    Ok(())
}

/// A password from standard input: asked twice without echo on a terminal, else the first line.
fn read_password() -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ")?;
        let second = rpassword::prompt_password("Again: ")?;
        anyhow::ensure!(first == second, "the passwords differ");
        Ok(first)
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    // Handlers go in before the portal says it is running, so that a signal sent right after
    // that line still shuts it down gracefully.
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut portal = Portal::start(config).await?;
    println!("Passage is running at http://{}/", portal.address);
    let signal = tokio::select! {
        result = portal.wait() => return result,
        _ = interrupt.recv() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    };
    tracing::info!(signal, "shutting down");
    portal.shutdown(Duration::from_secs(30)).await
}
