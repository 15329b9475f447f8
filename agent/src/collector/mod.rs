//! Host collectors: each reads one kernel source and appends metrics to a sample.
//!
//! Collectors know nothing of buffers or networks: they take text (or a path to read it from) and
//! produce [`Metric`]s named as node_exporter names them. Each parser takes `&str`, so tests feed
//! captured files. A source that cannot be read costs its own metrics and bumps that collector's
//! error counter; the rest of the sample goes on.

pub mod cpu;
pub mod disk;
pub mod filesystem;
pub mod load;
pub mod memory;
pub mod network;

use std::path::{Path, PathBuf};

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

/// Reads a whole file into `buf`, reusing its allocation.
pub(crate) fn read_into(path: &Path, buf: &mut String) -> Result<(), CollectError> {
    use std::io::Read;
    buf.clear();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_string(buf))
        .map(|_| ())
        .map_err(|source| CollectError::Read { path: path.to_owned(), source })
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

/// Parses one source's text, given the kernel's clock ticks per second.
type Parser = fn(&str, f64, &mut Vec<Metric>) -> Result<(), CollectError>;

/// One collector: the file it reads, its parser, and its running count of failures.
pub struct Source {
    pub name: &'static str,
    path: PathBuf,
    parse: Parser,
    pub errors: u64,
    pub last_error: Option<String>,
}

/// Every host collector, run together once per sampling tick.
pub struct Collectors {
    user_hz: f64,
    buf: String,
    pub sources: Vec<Source>,
}

impl Collectors {
    pub fn new(roots: Roots) -> Self {
        let table: [(&'static str, &str, Parser); 6] = [
            ("cpu", "stat", cpu::parse),
            ("memory", "meminfo", |t, _, out| memory::parse(t, out)),
            ("load", "loadavg", |t, _, out| load::parse(t, out)),
            ("network", "net/dev", |t, _, out| network::parse(t, out)),
            ("disk", "diskstats", |t, _, out| disk::parse(t, out)),
            ("filesystem", "self/mounts", |t, _, out| filesystem::collect(t, out)),
        ];
        let sources = table
            .into_iter()
            .map(|(name, file, parse)| Source { name, path: roots.proc.join(file), parse, errors: 0, last_error: None })
            .collect();
        Collectors { user_hz: user_hz(), buf: String::with_capacity(16 * 1024), sources }
    }

    /// Appends every collector's metrics to `out`.
    pub fn collect(&mut self, out: &mut Vec<Metric>) {
        for source in &mut self.sources {
            let result =
                read_into(&source.path, &mut self.buf).and_then(|_| (source.parse)(&self.buf, self.user_hz, out));
            if let Err(e) = result {
                source.errors += 1;
                if source.errors == 1 || source.errors.is_power_of_two() {
                    tracing::warn!(collector = source.name, errors = source.errors, "{e}");
                }
                source.last_error = Some(e.to_string());
            }
        }
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
        let mut collectors = Collectors::new(Roots { proc: dir.clone(), sys: dir.join("sys") });
        let mut out = Vec::new();
        collectors.collect(&mut out);
        let names: Vec<&str> = out.iter().map(|m| m.key.name.as_str()).collect();
        assert_eq!(names, ["node_memory_MemTotal_bytes", "node_load1", "node_load5", "node_load15"]);
        let failed: Vec<(&str, u64)> = collectors.sources.iter().map(|s| (s.name, s.errors)).collect();
        assert_eq!(failed, [("cpu", 1), ("memory", 0), ("load", 0), ("network", 1), ("disk", 1), ("filesystem", 1)]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
