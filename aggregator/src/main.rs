//! `twinwatch-aggregator`: run the aggregator, manage its certificates, revocations and tokens,
//! read its audit log, show a status tree, or start a local quickstart.

mod cli;

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use twinwatch_aggregator::access::tokens::Role;
use twinwatch_aggregator::config::{Config, DEFAULT_PATH};
use twinwatch_aggregator::listen::ListenAddr;
use twinwatch_common::config::{LogFormat, LOG_FORMAT_VAR};

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
        /// Override `quic_listen` (an address or a host name, with a port).
        #[arg(long)]
        quic_listen: Option<ListenAddr>,
        /// Override `http_listen`.
        #[arg(long)]
        http_listen: Option<ListenAddr>,
    },
    /// Validate the configuration and load every certificate `run` needs; print the settings
    /// in force. Fails when the aggregator could not start as configured.
    Check,
    /// Certificates: the CA, the server certificate, agent certificates and their revocation.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// API tokens.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// The audit log of admin actions, newest first.
    Audit {
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// A tree of DCs, hosts and the endpoints they probe, with 24 h trends, from the REST API.
    Status {
        /// The API's address (default: this machine's `http_listen`).
        #[arg(long)]
        url: Option<String>,
        /// A read (or admin) token.
        #[arg(long, conflicts_with = "token_file")]
        token: Option<String>,
        /// A file holding the token (default: <data_dir>/read-token).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// A CA certificate (PEM) to trust for an https URL, besides the system's.
        #[arg(long)]
        ca: Option<PathBuf>,
        /// Trends compare this much time before now with the same span before it.
        #[arg(long, default_value = "24h")]
        window: String,
    },
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
    /// Revoke an agent's certificates issued until now, or one certificate by serial number.
    /// A connected agent is closed; every handshake after is refused. A certificate issued to
    /// the same agent afterwards works.
    Revoke {
        #[arg(long, required_unless_present = "serial", conflicts_with = "serial")]
        agent: Option<String>,
        /// Hex, as `certs issue` or `openssl x509 -serial` print it.
        #[arg(long)]
        serial: Option<String>,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// List the revocations.
    Revocations,
}

#[derive(Subcommand)]
enum TokensCommand {
    /// Create a token and print it (only its hash is kept).
    Create {
        #[arg(long, default_value = "read")]
        role: Role,
        /// A unique name, the token's identity in the audit log (default: made up).
        #[arg(long, default_value = "")]
        name: String,
    },
    /// Names, roles and creation times; never the secrets.
    List,
    /// Revoke a token by name: its next request is refused.
    Revoke { name: String },
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
    let command = cli.command.unwrap_or(Command::Run { quic_listen: None, http_listen: None });
    // Read before logging starts, since it says how to log; the quickstart writes its own.
    let mut config = match command {
        Command::Quickstart { .. } => None,
        _ => Some(load_config(cli.config.as_deref())?),
    };
    let format = config.as_ref().map_or(LogFormat::default(), |c| c.log_format);
    let format = LogFormat::overridden(format, std::env::var_os(LOG_FORMAT_VAR).as_deref())?;
    if let Some(c) = config.as_mut() {
        c.log_format = format;
    }
    init_logging(format);
    let runtime = || tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build();
    let config = || config.clone().context("no configuration was read");
    match command {
        Command::Run { quic_listen, http_listen } => {
            let mut config = config()?;
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
        Command::Check => {
            let config = config()?;
            twinwatch_aggregator::check(&config)?;
            // Not the whole configuration: remote write credentials stay out of terminals, and a
            // password in a remote's URL is redacted.
            println!("data_dir      {}", config.data_dir.display());
            println!("quic_listen   {}", config.quic_listen);
            println!(
                "http_listen   {} ({})",
                config.http_listen,
                if config.http_tls.is_some() { "https" } else { "http" }
            );
            println!("certificates  {} (CA, server certificate and key load)", config.certs_dir.display());
            for remote in config.remote_write.iter().flatten() {
                println!("remote_write  {} {}", remote.name, twinwatch_common::redact::url(&remote.url));
            }
            println!("log_format    {}", config.log_format.as_str());
            if let Some(local) = &config.local_agent {
                println!("local_agent   {} in {} with {}", local.id, local.dc, local.config.display());
            }
            Ok(())
        }
        Command::Certs(CertsCommand::Init { names, force }) => cli::admin::certs_init(&config()?, &names, force),
        Command::Certs(CertsCommand::Issue { agent, dc, out, days }) => {
            cli::admin::certs_issue(&config()?, &agent, &dc, out, days)
        }
        Command::Certs(CertsCommand::Revoke { agent, serial, reason }) => {
            cli::admin::certs_revoke(&config()?, agent, serial, &reason)
        }
        Command::Certs(CertsCommand::Revocations) => cli::admin::certs_revocations(&config()?),
        Command::Tokens(TokensCommand::Create { role, name }) => cli::admin::tokens_create(&config()?, role, &name),
        Command::Tokens(TokensCommand::List) => cli::admin::tokens_list(&config()?),
        Command::Tokens(TokensCommand::Revoke { name }) => cli::admin::tokens_revoke(&config()?, &name),
        Command::Audit { limit } => cli::admin::audit(&config()?, limit),
        Command::Status { url, token, token_file, ca, window } => {
            let config = config()?;
            let args = cli::status::Args { url, token, token_file, ca, window };
            runtime()?.block_on(cli::status::run(args, &config))
        }
        Command::Quickstart { data_dir, http_port, quic_port } => {
            runtime()?.block_on(cli::quickstart::run(&data_dir, http_port, quic_port))
        }
    }
}

/// Log lines to stderr, filtered by `TWINWATCH_LOG` (an `EnvFilter` directive, `info` by default),
/// as text or as one JSON object a line.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TWINWATCH_LOG").unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
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
