//! Host collectors: each reads one kernel source and appends metrics to a sample.
//!
//! Collectors know nothing of buffers or networks: they read text (or a tree of small files under
//! [`Roots`]) and produce [`Metric`]s named as node_exporter names them. Parsers take `&str`, so
//! tests feed captured files. A source that cannot be read costs its own metrics and bumps that
//! source's error counter; the rest of the sample goes on. A source the host simply does not have
//! (no PSI, no conntrack, no sensors, no GPU) produces nothing and is not an error.
//!
//! Each source runs at its own interval, a whole number of sampling ticks. Its index in the table
//! is its group: the sample marks the groups it skipped, so the delta codec keeps their series.
pub mod conntrack;
pub mod cpu;
pub mod disk;
pub mod filefd;
pub mod filesystem;
#[cfg(test)]
mod fixture;
pub mod gpu;
pub mod hwmon;
pub mod info;
pub mod load;
pub mod memory;
pub mod netclass;
pub mod netstat;
pub mod network;
pub mod power_supply;
pub mod pressure;
pub mod processes;
pub mod procfile;
pub mod sockstat;
pub mod tcp;
pub mod thermal;
pub mod vmstat;

use std::path::{Path, PathBuf};
use std::time::Duration;

use twinwatch_common::sample::Metric;

/// Where the kernel's files are: `/proc` and `/sys` on a real host, a fixture tree in tests.
#[derive(Debug, Clone)]
pub struct Roots {
    pub proc: PathBuf,
    pub sys: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Roots { proc: PathBuf::from("/proc"), sys: PathBuf::from("/sys") }
    }
}

/// Why one collector produced nothing this time.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("parsing {what}: {detail}")]
    Parse { what: &'static str, detail: String },
}

/// One source of host metrics.
pub trait Collector: Send {
    /// Appends this source's metrics to `out`. On error, whatever it appended is kept.
    fn collect(&mut self, out: &mut Vec<Metric>) -> Result<(), CollectError>;
}

/// Reads a whole file into `buf`, reusing its allocation.
pub(crate) fn read_into(path: &Path, buf: &mut String) -> Result<(), CollectError> {
    use std::io::Read;
    buf.clear();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_string(buf))
        .map(|_| ())
        .map_err(|source| CollectError::Read { path: path.to_owned(), source })
}

/// Reads a small sysfs attribute, trimmed; `None` if it is absent or unreadable (many attributes
/// are optional, and some refuse reads while a link is down).
pub(crate) fn read_attr(path: &Path, buf: &mut String) -> Option<()> {
    read_into(path, buf).ok()?;
    let trimmed = buf.trim_end().len();
    buf.truncate(trimmed);
    Some(())
}

/// The entries of a sysfs class directory as `(name, path)`, sorted by name. A directory that
/// does not exist is a host without that kind of device: no entries, no error.
pub(crate) fn list_dir(dir: &Path) -> Result<Vec<(String, PathBuf)>, CollectError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(CollectError::Read { path: dir.to_owned(), source }),
    };
    let mut list: Vec<(String, PathBuf)> =
        entries.flatten().filter_map(|e| Some((e.file_name().into_string().ok()?, e.path()))).collect();
    list.sort();
    Ok(list)
}

/// The number of kernel clock ticks per second that /proc/stat counts in.
pub fn user_hz() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

/// Parses one file's text, given the kernel's clock ticks per second.
type Parser = fn(&str, f64, &mut Vec<Metric>) -> Result<(), CollectError>;

/// A collector of one file: read it into a reused buffer, hand the text to a parser.
struct FileCollector {
    file: procfile::ProcFile,
    parse: Parser,
    user_hz: f64,
    buf: String,
}

impl Collector for FileCollector {
    fn collect(&mut self, out: &mut Vec<Metric>) -> Result<(), CollectError> {
        self.file.read(&mut self.buf)?;
        (self.parse)(&self.buf, self.user_hz, out)
    }
}

/// What the collectors need from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The sampling tick; every interval is rounded up to a whole number of ticks.
    pub tick: Duration,
    /// Per-source interval overrides by name; `None` turns a source off.
    pub intervals: Vec<(String, Option<Duration>)>,
    /// How many processes to report by CPU and by memory.
    pub top_processes: usize,
    /// `nvidia-smi`, if it should be asked for NVIDIA GPUs.
    pub nvidia_smi: Option<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            tick: Duration::from_secs(1),
            intervals: Vec::new(),
            top_processes: 5,
            nvidia_smi: Some(PathBuf::from("nvidia-smi")),
        }
    }
}

/// How a source is built: roots, settings, kernel ticks per second.
type Build = fn(&Roots, &Settings, f64) -> Box<dyn Collector>;

fn file(roots: &Roots, proc_path: &str, parse: Parser, user_hz: f64) -> Box<dyn Collector> {
    let file = procfile::ProcFile::new(roots.proc.join(proc_path));
    Box::new(FileCollector { file, parse, user_hz, buf: String::with_capacity(4096) })
}

/// Every source: its name, default interval in seconds (`None`: every tick), and how it is
/// built. The order is the group number on the wire: append, never reorder.
pub const SOURCES: &[(&str, Option<u64>, Build)] = &[
    ("cpu", None, |r, _, hz| file(r, "stat", cpu::parse, hz)),
    ("pressure", None, |r, _, _| Box::new(pressure::Pressure::new(r))),
    ("memory", None, |r, _, hz| file(r, "meminfo", |t, _, out| memory::parse(t, out), hz)),
    ("vmstat", Some(5), |r, _, hz| file(r, "vmstat", |t, _, out| vmstat::parse(t, out), hz)),
    ("load", None, |r, _, hz| file(r, "loadavg", |t, _, out| load::parse(t, out), hz)),
    ("network", None, |r, _, hz| file(r, "net/dev", |t, _, out| network::parse(t, out), hz)),
    ("netclass", Some(5), |r, _, _| Box::new(netclass::NetClass::new(r))),
    ("sockstat", Some(5), |r, _, _| Box::new(sockstat::Sockstat::new(r))),
    ("netstat", Some(5), |r, _, _| Box::new(netstat::Netstat::new(r))),
    ("tcp", Some(60), |r, _, _| Box::new(tcp::TcpStates::new(r))),
    ("conntrack", None, |r, _, _| Box::new(conntrack::Conntrack::new(r))),
    ("disk", None, |r, _, hz| file(r, "diskstats", |t, _, out| disk::parse(t, out), hz)),
    ("filesystem", Some(10), |r, _, _| Box::new(filesystem::Filesystems::new(r))),
    ("hwmon", Some(5), |r, _, _| Box::new(hwmon::Hwmon::new(r))),
    ("thermal", Some(5), |r, _, _| Box::new(thermal::Thermal::new(r))),
    ("power_supply", Some(30), |r, _, _| Box::new(power_supply::PowerSupply::new(r))),
    ("processes", Some(10), |r, s, hz| Box::new(processes::Processes::new(r, s.top_processes, hz))),
    ("filefd", Some(5), |r, _, hz| file(r, "sys/fs/file-nr", |t, _, out| filefd::parse(t, out), hz)),
    ("gpu", Some(10), |r, s, _| Box::new(gpu::Gpu::new(r, s.nvidia_smi.clone()))),
    ("info", Some(60), |r, _, _| Box::new(info::Info::new(r))),
];

/// The names a configuration may give intervals for.
pub fn source_names() -> impl Iterator<Item = &'static str> {
    SOURCES.iter().map(|(name, _, _)| *name)
}

/// One collector with its schedule and its running count of failures.
pub struct Source {
    pub name: &'static str,
    /// Its group: the bit the sample sets when this source is skipped.
    pub group: u8,
    /// Runs every this many ticks.
    pub every: u64,
    collector: Box<dyn Collector>,
    pub errors: u64,
    pub last_error: Option<String>,
    /// Time spent in this source so far, for `twinwatch_agent_collector_seconds_total`.
    pub busy: Duration,
}

/// Every host collector, each run when its interval comes round.
pub struct Collectors {
    tick: u64,
    pub sources: Vec<Source>,
}

impl Collectors {
    pub fn new(roots: Roots, settings: &Settings) -> Self {
        let hz = user_hz();
        let tick = settings.tick.max(Duration::from_millis(1));
        let mut sources = Vec::with_capacity(SOURCES.len());
        for (group, (name, default_secs, build)) in SOURCES.iter().enumerate() {
            let configured = settings.intervals.iter().find(|(n, _)| n == name).map(|(_, every)| *every);
            let every = match configured {
                Some(None) => continue,
                Some(Some(d)) => d,
                None => default_secs.map_or(tick, Duration::from_secs),
            };
            let ticks = every.as_nanos().div_ceil(tick.as_nanos()).max(1) as u64;
            sources.push(Source {
                name,
                group: group as u8,
                every: ticks,
                collector: build(&roots, settings, hz),
                errors: 0,
                last_error: None,
                busy: Duration::ZERO,
            });
        }
        Collectors { tick: 0, sources }
    }

    /// The group the agent's own metrics use: after every source, and never skipped.
    pub const AGENT_GROUP: u8 = SOURCES.len() as u8;

    /// Runs the sources due this tick (every source if `all`), appending their metrics to `out`.
    /// Returns the mask of groups skipped.
    pub fn collect(&mut self, out: &mut Vec<Metric>, all: bool) -> u64 {
        let tick = self.tick;
        self.tick += 1;
        let mut skipped = 0u64;
        for source in &mut self.sources {
            if !all && tick % source.every != 0 {
                skipped |= 1 << source.group;
                continue;
            }
            let start = out.len();
            let began = std::time::Instant::now();
            let result = source.collector.collect(out);
            source.busy += began.elapsed();
            for m in &mut out[start..] {
                m.group = source.group;
            }
            if let Err(e) = result {
                source.errors += 1;
                if source.errors == 1 || source.errors.is_power_of_two() {
                    tracing::warn!(collector = source.name, errors = source.errors, "{e}");
                }
                source.last_error = Some(e.to_string());
            }
        }
        skipped
    }
}

/// Parses one whitespace-separated unsigned field, naming the source on failure.
pub(crate) fn num(field: Option<&str>, what: &'static str) -> Result<u64, CollectError> {
    let field = field.ok_or_else(|| CollectError::Parse { what, detail: "missing field".into() })?;
    field.parse().map_err(|_| CollectError::Parse { what, detail: format!("not a number: {field:?}") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_source_costs_only_its_own_metrics() {
        let dir = std::env::temp_dir().join(format!("twinwatch-roots-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("net")).unwrap();
        std::fs::write(dir.join("loadavg"), "0.5 0.25 0.125 1/80 1\n").unwrap();
        std::fs::write(dir.join("meminfo"), "MemTotal: 1000 kB\n").unwrap();
        let settings = Settings { nvidia_smi: None, ..Settings::default() };
        let mut collectors = Collectors::new(Roots { proc: dir.clone(), sys: dir.join("sys") }, &settings);
        let mut out = Vec::new();
        collectors.collect(&mut out, true);
        // The info series come from uname(2), not the fixture tree.
        let names: Vec<&str> = out.iter().map(|m| m.key.name.as_str()).filter(|n| !n.ends_with("_info")).collect();
        assert_eq!(
            names,
            [
                "node_memory_MemTotal_bytes",
                "node_load1",
                "node_load5",
                "node_load15",
                "node_processes_pids",
                "node_processes_threads"
            ]
        );
        let errors = |failed: bool| -> Vec<&str> {
            collectors.sources.iter().filter(|s| (s.errors > 0) == failed).map(|s| s.name).collect()
        };
        let expected_failures = [
            "cpu",
            "vmstat",
            "network",
            "netclass",
            "sockstat",
            "netstat",
            "tcp",
            "disk",
            "filesystem",
            "processes",
            "filefd",
        ];
        assert_eq!(errors(true), expected_failures);
        // Features this host lacks (PSI, conntrack, sensors, GPUs) are not errors.
        let fine = ["pressure", "memory", "load", "conntrack", "hwmon", "thermal", "power_supply", "gpu", "info"];
        assert_eq!(errors(false), fine);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn slow_sources_run_on_their_own_ticks_and_report_the_ones_skipped() {
        let settings = Settings {
            intervals: vec![("filesystem".into(), Some(Duration::from_millis(2500))), ("gpu".into(), None)],
            ..Settings::default()
        };
        let mut collectors = Collectors::new(Roots::default(), &settings);
        let group = |name: &str| collectors.sources.iter().find(|s| s.name == name).map(|s| (s.group, s.every));
        let (fs, every) = group("filesystem").unwrap();
        assert_eq!(every, 3, "2.5 s rounds up to three 1 s ticks");
        assert!(group("gpu").is_none(), "turned off");
        let (processes, _) = group("processes").unwrap();
        let mut ran = Vec::new();
        for _ in 0..6 {
            let mut out = Vec::new();
            let skipped = collectors.collect(&mut out, false);
            let fs_metrics = out.iter().any(|m| m.key.name == "node_filesystem_size_bytes");
            assert_eq!(fs_metrics, skipped & (1 << fs) == 0);
            assert!(out.iter().filter(|m| m.key.name.starts_with("node_filesystem")).all(|m| m.group == fs));
            ran.push(skipped & (1 << fs) == 0);
            assert_eq!(skipped & 1, 0, "cpu runs every tick");
        }
        assert_eq!(ran, [true, false, false, true, false, false]);
        // A keyframe reads everything.
        let skipped = collectors.collect(&mut Vec::new(), true);
        assert_eq!(skipped & (1 << processes), 0);
    }
}
