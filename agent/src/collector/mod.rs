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

/// One collector's name and its running count of failures.
pub struct Source {
    pub name: &'static str,
    pub errors: u64,
    pub last_error: Option<String>,
}

/// Every host collector, run together once per sampling tick.
pub struct Collectors {
    roots: Roots,
    user_hz: f64,
    buf: String,
    pub sources: Vec<Source>,
}

impl Collectors {
    pub fn new(roots: Roots) -> Self {
        let sources = ["cpu", "memory", "load", "network", "disk", "filesystem"]
            .into_iter()
            .map(|name| Source { name, errors: 0, last_error: None })
            .collect();
        Collectors { roots, user_hz: user_hz(), buf: String::with_capacity(16 * 1024), sources }
    }

    /// Appends every collector's metrics to `out`.
    pub fn collect(&mut self, out: &mut Vec<Metric>) {
        let roots = self.roots.clone();
        let hz = self.user_hz;
        for i in 0..self.sources.len() {
            let buf = &mut self.buf;
            let result = match self.sources[i].name {
                "cpu" => read_into(&roots.proc.join("stat"), buf).and_then(|_| cpu::parse(buf, hz, out)),
                "memory" => read_into(&roots.proc.join("meminfo"), buf).and_then(|_| memory::parse(buf, out)),
                "load" => read_into(&roots.proc.join("loadavg"), buf).and_then(|_| load::parse(buf, out)),
                "network" => read_into(&roots.proc.join("net/dev"), buf).and_then(|_| network::parse(buf, out)),
                "disk" => read_into(&roots.proc.join("diskstats"), buf).and_then(|_| disk::parse(buf, out)),
                "filesystem" => {
                    read_into(&roots.proc.join("self/mounts"), buf).and_then(|_| filesystem::collect(buf, out))
                }
                _ => Ok(()),
            };
            if let Err(e) = result {
                let source = &mut self.sources[i];
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
