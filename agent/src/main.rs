//! `twinwatch-agent`: run the agent, check a configuration, or print one sample.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use twinwatch_agent::collector::{Collectors, Roots};
use twinwatch_agent::config::{Config, DEFAULT_PATH};
use twinwatch_common::config::{LogFormat, LOG_FORMAT_VAR};

#[derive(Parser)]
#[command(name = "twinwatch-agent", version, about = "Samples this host and ships it to a twinwatch aggregator")]
struct Cli {
    /// Configuration file.
    #[arg(long, global = true, default_value = DEFAULT_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent (the default).
    Run(Overrides),
    /// Validate the configuration file and the certificate it names, and print the settings in
    /// force (secrets redacted); fails when the agent could not connect as configured.
    Check,
    /// Take one sample of this host and print it, one series per line.
    Sample {
        /// Instead, read every source this many times and print what each costs.
        #[arg(long, value_name = "N")]
        cost: Option<u32>,
    },
    /// Run every configured probe (and every service's generated probes) once and print the
    /// results, one series per line.
    Probe,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Run(Overrides::default()));
    // Read before logging starts, since it says how to log; `sample` reads no file.
    let config = match command {
        Command::Sample { .. } => None,
        _ => Some(Config::load(&cli.config)?),
    };
    let format = config.as_ref().map_or(LogFormat::default(), |c| c.log_format);
    init_logging(LogFormat::overridden(format, std::env::var_os(LOG_FORMAT_VAR).as_deref())?);
    let config = || config.clone().context("no configuration was read");
    match command {
        Command::Check => {
            let config = config()?;
            print!("{}", twinwatch_agent::check::report(&config));
            let enrolled = twinwatch_agent::tls::check_enrolment(&config.ca, &config.cert, &config.key)
                .context("the agent's certificate")?;
            let until = twinwatch_common::time::rfc3339(enrolled.not_after.saturating_mul(1000));
            println!("certificate: agent {:?} in dc {:?}, valid until {until}", enrolled.agent, enrolled.dc);
            Ok(())
        }
        Command::Sample { cost: Some(rounds) } => {
            let mut collectors = Collectors::new(Roots::default(), &Default::default());
            let mut series = vec![0usize; collectors.sources.len()];
            for _ in 0..rounds.max(1) {
                let mut out = Vec::new();
                collectors.collect(&mut out, true);
                for (i, source) in collectors.sources.iter().enumerate() {
                    series[i] = out.iter().filter(|m| m.group == source.group).count();
                }
            }
            println!("{:<14} {:>10} {:>8} {:>7}", "source", "µs/read", "series", "errors");
            for (source, n) in collectors.sources.iter().zip(series) {
                let micros = source.busy.as_secs_f64() * 1e6 / rounds.max(1) as f64;
                println!("{:<14} {micros:>10.1} {n:>8} {:>7}", source.name, source.errors);
            }
            Ok(())
        }
        Command::Sample { cost: None } => {
            let mut out = Vec::new();
            Collectors::new(Roots::default(), &Default::default()).collect(&mut out, true);
            print_metrics(out);
            Ok(())
        }
        Command::Probe => {
            let config = config()?;
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let table = runtime.block_on(twinwatch_agent::probe::run_all_once(&config.probes));
            let mut out = Vec::new();
            table.emit(&mut 0, true, &mut out);
            print_metrics(out);
            Ok(())
        }
        Command::Run(overrides) => {
            let mut config = config()?;
            overrides.apply(&mut config);
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async {
                let (tx, rx) = tokio::sync::watch::channel(false);
                tokio::spawn(async move {
                    wait_for_signal().await;
                    let _ = tx.send(true);
                });
                twinwatch_agent::run(config, rx).await.context("agent failed")
            })
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

/// Settings given on the command line win over the file's: a supervisor (the aggregator's
/// `[local_agent]`) runs the operator's probes with a connection and identity of its own.
#[derive(clap::Args, Default)]
struct Overrides {
    /// The aggregator's QUIC address (`aggregator`).
    #[arg(long)]
    aggregator: Option<String>,
    /// The name the aggregator's certificate carries (`server_name`).
    #[arg(long)]
    server_name: Option<String>,
    /// The buffer's directory (`state_dir`).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// A directory holding ca.crt, agent.crt and agent.key (`ca`, `cert`, `key`).
    #[arg(long)]
    certs: Option<PathBuf>,
}

impl Overrides {
    fn apply(self, config: &mut Config) {
        if let Some(a) = self.aggregator {
            config.aggregator = a;
        }
        if let Some(n) = self.server_name {
            config.server_name = n;
        }
        if let Some(d) = self.state_dir {
            config.state_dir = d;
        }
        if let Some(d) = self.certs {
            config.ca = d.join("ca.crt");
            config.cert = d.join("agent.crt");
            config.key = d.join("agent.key");
        }
    }
}

fn print_metrics(metrics: Vec<twinwatch_common::sample::Metric>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    for m in metrics {
        let labels: Vec<String> = m
            .key
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
            .collect();
        // A closed pipe (`| head`) ends the listing quietly.
        if writeln!(stdout, "{}{{{}}} {}", m.key.name, labels.join(","), m.real()).is_err() {
            break;
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("signal received, shutting down");
}
