//! `twinwatch-aggregator`: run the aggregator, manage its certificates and tokens, or start a
//! local quickstart.

mod quickstart;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use twinwatch_aggregator::auth::{Role, Tokens};
use twinwatch_aggregator::certs;
use twinwatch_aggregator::config::{Config, DEFAULT_PATH};

#[derive(Parser)]
#[command(name = "twinwatch-aggregator", version, about = "Collects agents' twins over QUIC and serves them over REST")]
struct Cli {
    /// Configuration file (defaults apply when the default file does not exist).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the aggregator (the default).
    Run {
        /// Override `quic_listen`.
        #[arg(long)]
        quic_listen: Option<SocketAddr>,
        /// Override `http_listen`.
        #[arg(long)]
        http_listen: Option<SocketAddr>,
    },
    /// Certificates: the CA, the server certificate, agent certificates.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// API tokens.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Start an aggregator and a local agent with fresh certificates, for a first look.
    Quickstart {
        /// Where certificates, tokens and data go.
        #[arg(long, default_value = "twinwatch-data")]
        data_dir: PathBuf,
        #[arg(long, default_value_t = 8080)]
        http_port: u16,
        #[arg(long, default_value_t = 4433)]
        quic_port: u16,
    },
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Create the CA and the aggregator's server certificate.
    Init {
        /// DNS names or IP addresses agents use to reach this aggregator (localhost is always in).
        #[arg(long = "name")]
        names: Vec<String>,
        /// Replace an existing CA.
        #[arg(long)]
        force: bool,
    },
    /// Issue an agent's client certificate; writes agent.crt, agent.key and ca.crt.
    Issue {
        #[arg(long)]
        agent: String,
        #[arg(long)]
        dc: String,
        /// Directory to write into (default: ./<agent>).
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, default_value_t = 825)]
        days: i64,
    },
}

#[derive(Subcommand)]
enum TokensCommand {
    /// Create a token and print it (only its hash is kept).
    Create {
        #[arg(long, default_value = "read")]
        role: Role,
        #[arg(long, default_value = "")]
        name: String,
    },
}

fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    match path {
        Some(p) => Ok(Config::load(p)?),
        None if Path::new(DEFAULT_PATH).exists() => Ok(Config::load(Path::new(DEFAULT_PATH))?),
        None => Ok(Config::in_dir("/var/lib/twinwatch/aggregator".into())),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("TWINWATCH_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let runtime = || tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build();
    match cli.command.unwrap_or(Command::Run { quic_listen: None, http_listen: None }) {
        Command::Run { quic_listen, http_listen } => {
            let mut config = load_config(cli.config.as_deref())?;
            config.quic_listen = quic_listen.unwrap_or(config.quic_listen);
            config.http_listen = http_listen.unwrap_or(config.http_listen);
            runtime()?.block_on(async {
                let (tx, rx) = tokio::sync::watch::channel(false);
                tokio::spawn(async move {
                    wait_for_signal().await;
                    let _ = tx.send(true);
                });
                twinwatch_aggregator::run(&config, rx, |_| {}).await.context("aggregator failed")
            })
        }
        Command::Certs(CertsCommand::Init { names, force }) => {
            let config = load_config(cli.config.as_deref())?;
            certs::init(&config.certs_dir, &names, force)?;
            println!("CA and server certificate written to {}", config.certs_dir.display());
            Ok(())
        }
        Command::Certs(CertsCommand::Issue { agent, dc, out, days }) => {
            let config = load_config(cli.config.as_deref())?;
            let out = out.unwrap_or_else(|| PathBuf::from(&agent));
            let issued = certs::issue(&config.certs_dir, &agent, &dc, days, &out)?;
            println!(
                "agent {agent} in {dc}: {} {} {}",
                issued.cert.display(),
                issued.key.display(),
                issued.ca.display()
            );
            Ok(())
        }
        Command::Tokens(TokensCommand::Create { role, name }) => {
            let config = load_config(cli.config.as_deref())?;
            let token = Tokens::new(config.tokens_file.clone()).create(role, &name)?;
            println!("{token}");
            Ok(())
        }
        Command::Quickstart { data_dir, http_port, quic_port } => {
            runtime()?.block_on(quickstart::run(&data_dir, http_port, quic_port))
        }
    }
}

pub(crate) async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("signal received, shutting down");
}
