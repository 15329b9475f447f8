//! The aggregator's configuration file, `/etc/twinwatch/aggregator.toml` by default.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use twinwatch_common::config::{load_toml, parse_toml, Bytes, ConfigError, LogFormat, Span};

use crate::api::server::HttpLimits;
use crate::history::Retention;
use crate::listen::ListenAddr;
use crate::remote_write::RemoteWriteConfig;

pub const DEFAULT_PATH: &str = "/etc/twinwatch/aggregator.toml";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    data_dir: Option<PathBuf>,
    quic_listen: Option<ListenAddr>,
    http_listen: Option<ListenAddr>,
    certs_dir: Option<PathBuf>,
    tokens_file: Option<PathBuf>,
    revocations_file: Option<PathBuf>,
    offline_after: Option<Span>,
    metrics_open: Option<bool>,
    log_format: Option<LogFormat>,
    history: Option<HistoryFile>,
    remote_write: Option<Vec<RemoteWriteConfig>>,
    audit: Option<AuditFile>,
    http_tls: Option<HttpTlsFile>,
    local_agent: Option<LocalAgentFile>,
    http: Option<HttpFile>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpFile {
    header_timeout: Option<Span>,
    body_timeout: Option<Span>,
    max_body: Option<Bytes>,
    max_connections: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct LocalAgentFile {
    dc: String,
    id: Option<String>,
    config: Option<PathBuf>,
    binary: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditFile {
    path: Option<PathBuf>,
    max_file_size: Option<Bytes>,
    keep: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpTlsFile {
    cert: PathBuf,
    key: PathBuf,
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

/// `[audit]`: where the audit log is and how much of it is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    pub path: PathBuf,
    /// Rotated past this size.
    pub max_file_bytes: u64,
    /// Rotated files kept.
    pub keep: usize,
}

/// `[local_agent]`: an agent the aggregator runs beside itself, one more vantage point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalAgent {
    /// Its agent id (the certificate's common name); by default this host's name.
    pub id: String,
    /// Its DC (on Fly.io, the DC the aggregator is in).
    pub dc: String,
    /// The agent's own configuration (probes, collectors); `aggregator`, `server_name`,
    /// `state_dir` and the certificate are the aggregator's to set.
    pub config: PathBuf,
    /// `twinwatch-agent`, by default beside the aggregator's own binary.
    pub binary: Option<PathBuf>,
}

/// `[http_tls]`: serve the REST API over TLS with this certificate chain and key (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub quic_listen: ListenAddr,
    pub http_listen: ListenAddr,
    /// `ca.crt`, `ca.key`, `server.crt`, `server.key`.
    pub certs_dir: PathBuf,
    pub tokens_file: PathBuf,
    /// Revoked agent certificates.
    pub revocations_file: PathBuf,
    pub audit: AuditConfig,
    /// Plain HTTP when `None` (the default: a proxy such as Fly's terminates TLS).
    pub http_tls: Option<HttpTls>,
    /// A host silent this long is offline (before that, past three intervals, it is stale).
    pub offline_after: Duration,
    /// Serve `/metrics` without a token (for a Prometheus on a trusted network).
    pub metrics_open: bool,
    /// How long each history tier is kept.
    pub retention: Retention,
    /// How often recorded points are written from memory (the log holds them meanwhile).
    pub checkpoint_interval: Duration,
    /// `[[remote_write]]`: remotes every stored sample is sent to.
    pub remote_write: Option<Vec<RemoteWriteConfig>>,
    /// `[local_agent]`, when the aggregator's host is a vantage point too.
    pub local_agent: Option<LocalAgent>,
    /// `[http]`: the API server's limits of time, size and number.
    pub http: HttpLimits,
    /// How log lines are written; `TWINWATCH_LOG_FORMAT` wins over it (see `main.rs`). The
    /// local agent, which shares the aggregator's stderr, is given the same.
    pub log_format: LogFormat,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::checked(load_toml(path)?, path)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        Self::checked(parse_toml(path, text)?, path)
    }

    /// What TOML types cannot say: remote names unique, URLs usable.
    fn checked(file: File, path: &Path) -> Result<Config, ConfigError> {
        if let Some(remotes) = &file.remote_write {
            crate::remote_write::config::validate(remotes).map_err(|i| ConfigError::Invalid {
                path: path.to_owned(),
                line: None,
                key: i.key,
                message: i.message,
            })?;
        }
        if let Some(audit) = &file.audit {
            let invalid = |key: &str, message: &str| ConfigError::Invalid {
                path: path.to_owned(),
                line: None,
                key: key.into(),
                message: message.into(),
            };
            if audit.max_file_size.is_some_and(|b| b.0 < 64 << 10) {
                return Err(invalid("audit.max_file_size", "at least 64KiB"));
            }
            if audit.keep.is_some_and(|k| k > 1000) {
                return Err(invalid("audit.keep", "at most 1000 files"));
            }
        }
        if let Some(http) = &file.http {
            let invalid = |key: &str, message: &str| ConfigError::Invalid {
                path: path.to_owned(),
                line: None,
                key: format!("http.{key}"),
                message: message.into(),
            };
            let short = |s: &Option<Span>| {
                s.is_some_and(|s| s.0 < Duration::from_millis(100) || s.0 > Duration::from_secs(3600))
            };
            if short(&http.header_timeout) {
                return Err(invalid("header_timeout", "from 100ms to 1h"));
            }
            if short(&http.body_timeout) {
                return Err(invalid("body_timeout", "from 100ms to 1h"));
            }
            if http.max_body.is_some_and(|b| b.0 < 1024 || b.0 > 1 << 30) {
                return Err(invalid("max_body", "from 1KiB to 1GiB"));
            }
            if http.max_connections.is_some_and(|n| !(1..=1_000_000).contains(&n)) {
                return Err(invalid("max_connections", "from 1 to 1000000"));
            }
        }
        if let Some(local) = &file.local_agent {
            let invalid = |key: &str, value: &str| ConfigError::Invalid {
                path: path.to_owned(),
                line: None,
                key: format!("local_agent.{key}"),
                message: format!("{value:?}: 1 to 64 letters, digits, '.', '_' or '-'"),
            };
            if !crate::twin::identity::valid_name(&local.dc) {
                return Err(invalid("dc", &local.dc));
            }
            if let Some(id) = local.id.as_deref().filter(|id| !crate::twin::identity::valid_name(id)) {
                return Err(invalid("id", id));
            }
        }
        Ok(Self::resolve(file, path))
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
        let audit = file.audit.unwrap_or_default();
        Config {
            quic_listen: file.quic_listen.unwrap_or_else(|| "0.0.0.0:4433".parse().expect("static")),
            http_listen: file.http_listen.unwrap_or_else(|| "0.0.0.0:8080".parse().expect("static")),
            certs_dir: file.certs_dir.map(abs).unwrap_or_else(|| data_dir.join("certs")),
            tokens_file: file.tokens_file.map(abs).unwrap_or_else(|| data_dir.join("tokens")),
            revocations_file: file.revocations_file.map(abs).unwrap_or_else(|| data_dir.join("revocations")),
            audit: AuditConfig {
                path: audit.path.map(abs).unwrap_or_else(|| data_dir.join("audit.log")),
                max_file_bytes: audit.max_file_size.map_or(4 << 20, |b| b.0),
                keep: audit.keep.unwrap_or(7),
            },
            http_tls: file.http_tls.map(|t| HttpTls { cert: abs(t.cert), key: abs(t.key) }),
            offline_after: file.offline_after.map_or(Duration::from_secs(60), |s| s.0),
            metrics_open: file.metrics_open.unwrap_or(false),
            log_format: file.log_format.unwrap_or_default(),
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
            checkpoint_interval: history.checkpoint_interval.map_or(Duration::from_secs(15), |s| s.0),
            remote_write: file.remote_write,
            local_agent: file.local_agent.map(|l| LocalAgent {
                id: l.id.unwrap_or_else(crate::local_agent::host_name),
                dc: l.dc,
                config: abs(l.config.unwrap_or_else(|| "agent.toml".into())),
                binary: l.binary.map(abs),
            }),
            http: {
                let h = file.http.unwrap_or_default();
                let d = HttpLimits::default();
                HttpLimits {
                    header_timeout: h.header_timeout.map_or(d.header_timeout, |s| s.0),
                    body_timeout: h.body_timeout.map_or(d.body_timeout, |s| s.0),
                    max_body: h.max_body.map_or(d.max_body, |b| b.0 as usize),
                    max_connections: h.max_connections.unwrap_or(d.max_connections),
                }
            },
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
        assert!(c.remote_write.is_none());
        // The commented-out remote, switched on (with one of its two auth keys), is valid too.
        let remote: String = text
            .lines()
            .skip_while(|l| !l.starts_with("# [[remote_write]]"))
            .filter(|l| !l.contains("bearer_token"))
            .map(|l| format!("{}\n", l.trim_start_matches("# ")))
            .collect();
        let c = Config::parse(Path::new("/etc/twinwatch/aggregator.toml"), &remote).unwrap();
        let remotes = c.remote_write.unwrap();
        assert_eq!((remotes[0].name.as_str(), remotes[0].headers.len()), ("prometheus", 1));
    }

    #[test]
    fn defaults_follow_the_data_dir() {
        let c = Config::parse(Path::new("/etc/twinwatch/aggregator.toml"), "data_dir = \"/srv/tw\"\n").unwrap();
        assert_eq!(c.certs_dir, Path::new("/srv/tw/certs"));
        assert_eq!(c.quic_listen.port(), 4433);
        assert_eq!(c.http_listen.port(), 8080);
        let err = Config::parse(Path::new("x.toml"), "quic_listen = \"nowhere\"\n").unwrap_err().to_string();
        assert!(err.starts_with("x.toml:1: key `quic_listen`"), "{err}");
        assert_eq!(c.revocations_file, Path::new("/srv/tw/revocations"));
        assert_eq!(c.audit, AuditConfig { path: "/srv/tw/audit.log".into(), max_file_bytes: 4 << 20, keep: 7 });
        assert_eq!(c.http_tls, None);
        assert_eq!(c.log_format, LogFormat::Text);
        let c = Config::parse(Path::new("x.toml"), "log_format = \"json\"\n").unwrap();
        assert_eq!(c.log_format, LogFormat::Json);
        let err = Config::parse(Path::new("x.toml"), "data_dir = \"/x\"\nlog_format = \"JSON\"\n").unwrap_err();
        assert!(err.to_string().starts_with("x.toml:2: key `log_format`: \"JSON\" is not a log format"), "{err}");
    }

    #[test]
    fn listen_names_audit_bounds_and_http_tls() {
        let path = Path::new("/etc/twinwatch/aggregator.toml");
        let text = "quic_listen = \"fly-global-services:4433\"\nhttp_listen = \"[::]:8080\"\n\
                    [audit]\nmax_file_size = \"1MiB\"\nkeep = 3\n\
                    [http_tls]\ncert = \"tls/api.crt\"\nkey = \"/srv/api.key\"\n";
        let c = Config::parse(path, text).unwrap();
        assert_eq!(c.quic_listen.to_string(), "fly-global-services:4433");
        assert_eq!(c.http_listen.port(), 8080);
        assert_eq!((c.audit.max_file_bytes, c.audit.keep), (1 << 20, 3));
        let tls = c.http_tls.unwrap();
        assert_eq!(
            (tls.cert.as_path(), tls.key.as_path()),
            (Path::new("/etc/twinwatch/tls/api.crt"), Path::new("/srv/api.key"))
        );

        let err = Config::parse(path, "\n[http_tls]\ncert = \"a.crt\"\n").unwrap_err().to_string();
        assert!(err.contains("key `key`") && err.contains("missing field"), "{err}");
        let err = Config::parse(path, "[http_tls]\ncert = \"a\"\nkey = \"b\"\nca = \"c\"\n").unwrap_err().to_string();
        assert!(err.starts_with("/etc/twinwatch/aggregator.toml:4: key `ca`"), "{err}");
        let err = Config::parse(path, "[audit]\nmax_file_size = \"1KiB\"\n").unwrap_err().to_string();
        assert!(err.starts_with("/etc/twinwatch/aggregator.toml: key `audit.max_file_size`"), "{err}");
        let err = Config::parse(path, "\nhttp_listen = \"host:http\"\n").unwrap_err().to_string();
        assert!(err.starts_with("/etc/twinwatch/aggregator.toml:2: key `http_listen`"), "{err}");
    }

    #[test]
    fn remote_write_sections() {
        let path = Path::new("/etc/twinwatch/aggregator.toml");
        let text = "[[remote_write]]\nname = \"prom\"\nurl = \"http://127.0.0.1:9090/api/v1/write\"\n\
                    [[remote_write]]\nname = \"mimir\"\nurl = \"https://mimir.example/api/v1/push\"\n\
                    max_queue_bytes = \"64MiB\"\nmax_samples_per_send = 5000\ntimeout = \"10s\"\n\
                    basic_auth = { username = \"u\", password = \"p\" }\n\
                    headers = { X-Scope-OrgID = \"tenant-1\" }\n";
        let c = Config::parse(path, text).unwrap();
        let remotes = c.remote_write.unwrap();
        assert_eq!(remotes.len(), 2);
        assert_eq!((remotes[0].max_queue_bytes.0, remotes[0].max_samples_per_send), (256 << 20, 2000));
        assert_eq!(remotes[0].timeout.0, Duration::from_secs(30));
        assert_eq!((remotes[1].max_queue_bytes.0, remotes[1].timeout.0), (64 << 20, Duration::from_secs(10)));
        assert_eq!(remotes[1].headers["X-Scope-OrgID"], "tenant-1");

        let twice = "[[remote_write]]\nname = \"a\"\nurl = \"http://x/\"\n[[remote_write]]\nname = \"a\"\nurl = \"http://y/\"\n";
        let err = Config::parse(path, twice).unwrap_err().to_string();
        assert!(err.starts_with("/etc/twinwatch/aggregator.toml: key `remote_write.name`: two"), "{err}");
        let bad_url = "[[remote_write]]\nname = \"a\"\nurl = \"127.0.0.1:9090\"\n";
        let err = Config::parse(path, bad_url).unwrap_err().to_string();
        assert!(err.starts_with("/etc/twinwatch/aggregator.toml: key `remote_write.url`: \"127.0.0.1:9090\""), "{err}");
        let unknown = "[[remote_write]]\nname = \"a\"\nurl = \"http://x/\"\nqueue_size = 3\n";
        let err = Config::parse(path, unknown).unwrap_err().to_string();
        assert!(err.contains("key `queue_size`"), "{err}");
    }
}
