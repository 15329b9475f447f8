//! The aggregator's configuration file, `/etc/twinwatch/aggregator.toml` by default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use twinwatch_common::config::{load_toml, parse_toml, ConfigError, Span};

use crate::history::Retention;

pub const DEFAULT_PATH: &str = "/etc/twinwatch/aggregator.toml";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    data_dir: Option<PathBuf>,
    quic_listen: Option<SocketAddr>,
    http_listen: Option<SocketAddr>,
    certs_dir: Option<PathBuf>,
    tokens_file: Option<PathBuf>,
    offline_after: Option<Span>,
    metrics_open: Option<bool>,
    history: Option<HistoryFile>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryFile {
    raw_retention: Option<Span>,
    minute_retention: Option<Span>,
    five_minute_retention: Option<Span>,
    hour_retention: Option<Span>,
    checkpoint_interval: Option<Span>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub quic_listen: SocketAddr,
    pub http_listen: SocketAddr,
    /// `ca.crt`, `ca.key`, `server.crt`, `server.key`.
    pub certs_dir: PathBuf,
    pub tokens_file: PathBuf,
    /// A host silent this long is offline (before that, past three intervals, it is stale).
    pub offline_after: Duration,
    /// Serve `/metrics` without a token (for a Prometheus on a trusted network).
    pub metrics_open: bool,
    /// How long each history tier is kept.
    pub retention: Retention,
    /// How often recorded points are written from memory (the log holds them meanwhile).
    pub checkpoint_interval: Duration,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Ok(Self::resolve(load_toml(path)?, path))
    }

    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        Ok(Self::resolve(parse_toml(path, text)?, path))
    }

    /// Defaults only, with state in `data_dir`.
    pub fn in_dir(data_dir: PathBuf) -> Config {
        Self::resolve(File { data_dir: Some(data_dir), ..File::default() }, Path::new("/"))
    }

    fn resolve(file: File, path: &Path) -> Config {
        let base = path.parent().unwrap_or(Path::new("/"));
        let history = file.history.clone().unwrap_or_default();
        let abs = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        let data_dir = abs(file.data_dir.unwrap_or_else(|| "/var/lib/twinwatch/aggregator".into()));
        Config {
            quic_listen: file.quic_listen.unwrap_or_else(|| "0.0.0.0:4433".parse().expect("static")),
            http_listen: file.http_listen.unwrap_or_else(|| "0.0.0.0:8080".parse().expect("static")),
            certs_dir: file.certs_dir.map(abs).unwrap_or_else(|| data_dir.join("certs")),
            tokens_file: file.tokens_file.map(abs).unwrap_or_else(|| data_dir.join("tokens")),
            offline_after: file.offline_after.map_or(Duration::from_secs(60), |s| s.0),
            metrics_open: file.metrics_open.unwrap_or(false),
            retention: {
                let h = history.clone();
                let d = Retention::default();
                let or = |s: Option<Span>, ms: i64| s.map_or(Duration::from_millis(ms as u64), |s| s.0);
                Retention::from_durations(
                    or(h.raw_retention, d.raw_ms),
                    or(h.minute_retention, d.minute_ms),
                    or(h.five_minute_retention, d.five_minutes_ms),
                    or(h.hour_retention, d.hour_ms),
                )
            },
            checkpoint_interval: history.checkpoint_interval.map_or(Duration::from_secs(30), |s| s.0),
            data_dir,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_packaged_example_parses() {
        let text = include_str!("../../packaging/aggregator.toml");
        let c = Config::parse(Path::new("/etc/twinwatch/aggregator.toml"), text).unwrap();
        assert_eq!(c.offline_after, Duration::from_secs(60));
    }

    #[test]
    fn defaults_follow_the_data_dir() {
        let c = Config::parse(Path::new("/etc/twinwatch/aggregator.toml"), "data_dir = \"/srv/tw\"\n").unwrap();
        assert_eq!(c.certs_dir, Path::new("/srv/tw/certs"));
        assert_eq!(c.quic_listen.port(), 4433);
        assert_eq!(c.http_listen.port(), 8080);
        let err = Config::parse(Path::new("x.toml"), "quic_listen = \"nowhere\"\n").unwrap_err().to_string();
        assert!(err.starts_with("x.toml:1: key `quic_listen`"), "{err}");
    }
}
