//! `twinwatch-aggregator status`: where to ask and with which token, then the tree.
//!
//! Defaults come from the local configuration: the URL from `http_listen` (`https` when
//! `[http_tls]` is set, trusting the aggregator's CA besides the system's), the token from
//! `$TWINWATCH_TOKEN`, `<data_dir>/read-token`, or the `read-token` beside the data directory
//! (the quickstart's layout).

mod client;
mod tree;
mod trend;

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use client::Options;
use twinwatch_aggregator::access::certs;
use twinwatch_aggregator::config::Config;
use twinwatch_common::config::Span;

pub struct Args {
    pub url: Option<String>,
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    pub window: String,
}

fn read_token(path: &Path) -> anyhow::Result<String> {
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(4096).read_to_string(&mut text))
        .with_context(|| format!("reading the token from {}", path.display()))?;
    let token = text.trim().to_owned();
    if token.is_empty() {
        bail!("{} holds no token", path.display());
    }
    Ok(token)
}

fn token(args: &Args, config: &Config) -> anyhow::Result<String> {
    if let Some(t) = &args.token {
        return Ok(t.clone());
    }
    if let Some(path) = &args.token_file {
        return read_token(path);
    }
    if let Ok(t) = std::env::var("TWINWATCH_TOKEN") {
        if !t.trim().is_empty() {
            return Ok(t.trim().to_owned());
        }
    }
    let local = config.data_dir.join("read-token");
    let quickstart = config.data_dir.parent().map(|p| p.join("read-token"));
    for path in std::iter::once(local.clone()).chain(quickstart) {
        if path.exists() {
            return read_token(&path);
        }
    }
    bail!(
        "no token: pass --token or --token-file, set TWINWATCH_TOKEN, or keep one in {} \
         (twinwatch-aggregator tokens create --role read --name status > {})",
        local.display(),
        local.display()
    )
}

pub async fn run(args: Args, config: &Config) -> anyhow::Result<()> {
    let span: Span = args.window.parse().map_err(|e: String| anyhow::anyhow!("--window: {e}"))?;
    if span.0 < Duration::from_secs(1) {
        bail!("--window must be at least 1s");
    }
    let local_tls = config.http_tls.is_some();
    let url = match (&args.url, std::env::var("TWINWATCH_URL")) {
        (Some(u), _) => u.clone(),
        (None, Ok(u)) if !u.is_empty() => u,
        _ => format!("{}://{}", if local_tls { "https" } else { "http" }, config.http_listen.local_authority()),
    };
    if !url.starts_with("http://") && !url.starts_with("https://") {
        bail!("--url {:?} must start with http:// or https://", twinwatch_common::redact::url(&url));
    }
    let our_ca = config.certs_dir.join(certs::CA_CERT);
    let ca = args.ca.clone().or_else(|| (args.url.is_none() && local_tls && our_ca.exists()).then_some(our_ca));
    let options = Options {
        url,
        token: token(&args, config)?,
        ca,
        window: span.0,
        window_text: args.window.clone(),
        timeout: Duration::from_secs(15),
    };
    let snapshot = client::snapshot(&options).await?;
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    print!("{}", tree::render(&snapshot, color));
    Ok(())
}
