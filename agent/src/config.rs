//! The agent's configuration file, `/etc/twinwatch/agent.toml` by default.
//!
//! Every key has a default except where the agent is: a bare file with `aggregator = "host:4433"`
//! and certificates in the state directory works. Relative paths are relative to the file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;
use twinwatch_common::config::{parse_toml, Bytes, ConfigError, LogFormat, Span};

use crate::collector::{self, Settings};
use crate::probe::config::{ProbeFile, ProbesFile, ServiceFile};
use crate::probe::ProbeSettings;

pub const DEFAULT_PATH: &str = "/etc/twinwatch/agent.toml";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    aggregator: Option<String>,
    server_name: Option<String>,
    state_dir: Option<PathBuf>,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    interval: Option<Span>,
    keyframe_every: Option<u32>,
    log_format: Option<LogFormat>,
    #[serde(default)]
    buffer: BufferFile,
    /// Interval per source by name, or "off".
    #[serde(default)]
    collectors: BTreeMap<Spanned<String>, Every>,
    #[serde(default)]
    processes: ProcessesFile,
    #[serde(default)]
    gpu: GpuFile,
    #[serde(default)]
    probes: ProbesFile,
    #[serde(default)]
    probe: Vec<Spanned<ProbeFile>>,
    #[serde(default)]
    service: Vec<Spanned<ServiceFile>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProcessesFile {
    top: Option<usize>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GpuFile {
    nvidia_smi: Option<PathBuf>,
}

/// A source's interval: a duration, or `"off"`.
#[derive(Debug, Clone, Copy)]
struct Every(Option<Duration>);

impl<'de> Deserialize<'de> for Every {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text == "off" {
            return Ok(Every(None));
        }
        text.parse::<Span>()
            .map(|s| Every(Some(s.0.max(Duration::from_millis(100)))))
            .map_err(|e| serde::de::Error::custom(format!("{e} (or \"off\")")))
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BufferFile {
    max_bytes: Option<Bytes>,
    flush_interval: Option<Span>,
    replay_rate: Option<Bytes>,
}

/// The agent's settings, with defaults applied and paths resolved.
#[derive(Debug, Clone)]
pub struct Config {
    /// `host:port` of the aggregator's QUIC listener.
    pub aggregator: String,
    /// Name the aggregator's certificate must carry.
    pub server_name: String,
    pub state_dir: PathBuf,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// How often host metrics are sampled.
    pub interval: Duration,
    /// A full keyframe every this many ticks.
    pub keyframe_every: u32,
    /// The on-disk buffer's cap; past it the oldest batches are dropped and counted.
    pub buffer_max_bytes: u64,
    /// How long an unacknowledged batch stays in memory before a group commit writes it to disk:
    /// with one sample interval, what a kill -9 can lose at most.
    pub flush_interval: Duration,
    /// Backlog bytes per second sent behind live data after an outage; 0 is unlimited.
    pub replay_rate: u64,
    /// Which host sources run, and how often.
    pub collectors: Settings,
    /// Endpoint probes and OpenAPI services.
    pub probes: ProbeSettings,
    /// How log lines are written; `TWINWATCH_LOG_FORMAT` wins over it (see `main.rs`).
    pub log_format: LogFormat,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let file: File = parse_toml(path, text)?;
        let known: Vec<&str> = collector::source_names().collect();
        if let Some(unknown) = file.collectors.keys().find(|k| !known.contains(&k.get_ref().as_str())) {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                line: Some(text[..unknown.span().start.min(text.len())].matches('\n').count() + 1),
                key: unknown.get_ref().clone(),
                message: format!("unknown collector; known ones are {}", known.join(", ")),
            });
        }
        let probes = crate::probe::config::resolve(path, text, &file.probes, file.probe.clone(), file.service.clone())?;
        Ok(Self::resolve(file, path, probes))
    }

    fn resolve(file: File, path: &Path, probes: ProbeSettings) -> Config {
        let base = path.parent().unwrap_or(Path::new("/"));
        let abs = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        let state_dir = abs(file.state_dir.unwrap_or_else(|| "/var/lib/twinwatch/agent".into()));
        let certs = state_dir.join("certs");
        let interval = file.interval.map_or(Duration::from_secs(1), |s| s.0.max(Duration::from_millis(100)));
        let defaults = Settings::default();
        let collectors = Settings {
            tick: interval,
            intervals: file.collectors.into_iter().map(|(k, v)| (k.into_inner(), v.0)).collect(),
            top_processes: file.processes.top.unwrap_or(defaults.top_processes),
            nvidia_smi: file.gpu.nvidia_smi.or(defaults.nvidia_smi),
        };
        Config {
            aggregator: file.aggregator.unwrap_or_else(|| "127.0.0.1:4433".into()),
            server_name: file.server_name.unwrap_or_else(|| "localhost".into()),
            ca: file.ca.map(abs).unwrap_or_else(|| certs.join("ca.crt")),
            cert: file.cert.map(abs).unwrap_or_else(|| certs.join("agent.crt")),
            key: file.key.map(abs).unwrap_or_else(|| certs.join("agent.key")),
            state_dir,
            interval,
            keyframe_every: file.keyframe_every.unwrap_or(300).max(1),
            buffer_max_bytes: file.buffer.max_bytes.map_or(64 << 20, |b| b.0.max(64 << 10)),
            flush_interval: file
                .buffer
                .flush_interval
                .map_or(Duration::from_secs(1), |s| s.0.max(Duration::from_millis(10))),
            replay_rate: file.buffer.replay_rate.map_or(1 << 20, |b| b.0),
            collectors,
            probes,
            log_format: file.log_format.unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_relative_paths() {
        let c = Config::parse(Path::new("/etc/twinwatch/agent.toml"), "aggregator = \"agg.example:4433\"\nstate_dir = \"state\"\ncert = \"/x/a.crt\"\n[buffer]\nmax_bytes = \"8MiB\"\n").unwrap();
        assert_eq!(c.state_dir, Path::new("/etc/twinwatch/state"));
        assert_eq!(c.ca, Path::new("/etc/twinwatch/state/certs/ca.crt"));
        assert_eq!(c.cert, Path::new("/x/a.crt"));
        assert_eq!(c.interval, Duration::from_secs(1));
        assert_eq!(c.buffer_max_bytes, 8 << 20);
    }

    #[test]
    fn the_packaged_example_parses() {
        let c =
            Config::parse(Path::new("/etc/twinwatch/agent.toml"), include_str!("../../packaging/agent.toml")).unwrap();
        assert_eq!(c.flush_interval, Duration::from_secs(1));
        assert_eq!(c.buffer_max_bytes, 64 << 20);
    }

    #[test]
    fn collector_intervals_and_switches() {
        let text = "[collectors]\nprocesses = \"30s\"\ngpu = \"off\"\n[processes]\ntop = 3\n";
        let c = Config::parse(Path::new("a.toml"), text).unwrap();
        let i = &c.collectors.intervals;
        assert!(i.contains(&("processes".into(), Some(Duration::from_secs(30)))) && i.contains(&("gpu".into(), None)));
        assert_eq!(c.collectors.top_processes, 3);
        for name in collector::source_names() {
            Config::parse(Path::new("a.toml"), &format!("[collectors]\n{name} = \"5s\"\n")).unwrap();
        }
        let err =
            Config::parse(Path::new("a.toml"), "interval = \"1s\"\n[collectors]\nprocess = \"5s\"\n").unwrap_err();
        assert!(err.to_string().starts_with("a.toml:3: key `process`: unknown collector"), "{err}");
        let err = Config::parse(Path::new("a.toml"), "[collectors]\ncpu = \"never\"\n").unwrap_err();
        assert!(err.to_string().starts_with("a.toml:2: key `cpu`"), "{err}");
    }

    #[test]
    fn log_format_is_text_unless_set() {
        let c = Config::parse(Path::new("a.toml"), "aggregator = \"x:1\"\n").unwrap();
        assert_eq!(c.log_format, LogFormat::Text);
        let c = Config::parse(Path::new("a.toml"), "log_format = \"json\"\n").unwrap();
        assert_eq!(c.log_format, LogFormat::Json);
        let err = Config::parse(Path::new("a.toml"), "aggregator = \"x:1\"\nlog_format = \"xml\"\n").unwrap_err();
        assert!(err.to_string().starts_with("a.toml:2: key `log_format`"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused_with_their_line() {
        let err =
            Config::parse(Path::new("a.toml"), "aggregator = \"x:1\"\n[buffer]\nmax_byte = \"1MiB\"\n").unwrap_err();
        assert!(err.to_string().starts_with("a.toml:3: key `max_byte`"), "{err}");
    }
}
