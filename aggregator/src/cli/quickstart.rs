//! `twinwatch-aggregator quickstart`: an aggregator and a local agent, with fresh certificates and
//! tokens under one directory, for a first look on one machine.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use twinwatch_aggregator::access::certs;
use twinwatch_aggregator::access::tokens::{Role, TokenError, Tokens};
use twinwatch_aggregator::config::{Config, LocalAgent};
use twinwatch_aggregator::local_agent::host_name;

use crate::cli::admin::audited;

fn write_secret(path: &Path, token: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(f, "{token}")?;
    Ok(())
}

pub async fn run(data_dir: &Path, http_port: u16, quic_port: u16) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let data_dir = data_dir.canonicalize()?;
    let agent_exe = std::env::current_exe()?.with_file_name("twinwatch-agent");
    if !agent_exe.exists() {
        bail!("{} not found: build both binaries (cargo build --release --bins)", agent_exe.display());
    }

    let mut config = Config::in_dir(data_dir.join("aggregator"));
    config.quic_listen = twinwatch_aggregator::listen::ListenAddr::Ip(([127, 0, 0, 1], quic_port).into());
    config.http_listen = twinwatch_aggregator::listen::ListenAddr::Ip(([127, 0, 0, 1], http_port).into());
    let certs_dir = config.certs_dir.display().to_string();
    if !config.certs_dir.join(certs::CA_CERT).exists() {
        audited(&config, "certs.init", &certs_dir, certs::init(&config.certs_dir, &[], false), |_| {
            "quickstart".into()
        })?;
    }
    let tokens = Tokens::new(config.tokens_file.clone());
    let read_token = data_dir.join("read-token");
    let admin_token = data_dir.join("admin-token");
    for (path, role, name) in
        [(&read_token, Role::Read, "quickstart-read"), (&admin_token, Role::Admin, "quickstart-admin")]
    {
        if !path.exists() {
            let now = twinwatch_common::time::now_ms();
            // The secret file is gone but its token is not: replace the token.
            let token = match tokens.create(role, name, now) {
                Err(TokenError::Exists(_)) => tokens.revoke(name).and_then(|_| tokens.create(role, name, now)),
                other => other,
            };
            let token =
                audited(&config, "token.create", name, token, |_| format!("role {}, quickstart", role.as_str()))?;
            write_secret(path, &token.secret)?;
        }
    }

    // The local agent is the aggregator's `[local_agent]`: it issues the certificate, starts
    // the agent beside itself and restarts it if it exits.
    let agent_config: PathBuf = data_dir.join("agent.toml");
    if !agent_config.exists() {
        std::fs::write(
            &agent_config,
            "# The quickstart's agent: every source of this host each second. Add [[probe]] sections\n\
             # (see packaging/agent.toml); the connection and certificate are the aggregator's to set.\n\
             interval = \"1s\"\n",
        )
        .with_context(|| format!("writing {}", agent_config.display()))?;
    }
    let id = host_name();
    config.local_agent =
        Some(LocalAgent { id: id.clone(), dc: "local".into(), config: agent_config.clone(), binary: Some(agent_exe) });

    let (tx, rx) = tokio::sync::watch::channel(false);
    let (listening_tx, listening_rx) = tokio::sync::oneshot::channel();
    let aggregator = tokio::spawn({
        let config = config.clone();
        async move {
            twinwatch_aggregator::run(&config, rx, |l| {
                let _ = listening_tx.send(l);
            })
            .await
        }
    });
    let Ok(listening) = listening_rx.await else {
        return aggregator.await?.context("aggregator failed to start");
    };

    let api = format!("http://{}", listening.http);
    println!("twinwatch quickstart: aggregator and agent {id:?} (dc \"local\") are running");
    println!("  API          {api}/api/v1/hosts");
    println!("  QUIC ingest  {}", listening.quic);
    println!("  read token   {}", read_token.display());
    println!("  admin token  {}", admin_token.display());
    println!("  try          curl -s -H \"Authorization: Bearer $(cat {})\" {api}/api/v1/hosts", read_token.display());
    println!("  status       twinwatch-aggregator status --url {api} --token-file {}", read_token.display());
    println!("  agent config {}", agent_config.display());
    println!("Ctrl-C stops both.");

    // Ctrl-C stops the aggregator, which stops the agent; an aggregator that ends by itself
    // ends the quickstart with its error.
    let signal = tokio::spawn(async move {
        crate::wait_for_signal().await;
        let _ = tx.send(true);
    });
    let result = aggregator.await;
    signal.abort();
    result?.context("aggregator failed")
}
