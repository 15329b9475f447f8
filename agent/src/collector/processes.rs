//! Processes and threads by state, and the top processes by CPU and by memory, from /proc/[pid].
//!
//! Every collection lists /proc once and reads each process's `/proc/[pid]/stat` (one small read,
//! into a reused buffer), plus `/proc/sys/kernel/pid_max` and `/proc/sys/kernel/threads-max`. Only
//! the few processes reported by name cost more: the owner of their `/proc/[pid]` directory, the
//! boot time from `/proc/stat`, and `/etc/passwd` (parsed again only when it changes).
//!
//! node_exporter's `node_processes_threads_state` is not produced: it reads
//! `/proc/[pid]/task/*/stat`, one directory listing per process and one read per thread, which on a
//! router running a JVM and a database multiplies this collector's cost several times over.
//!
//! CPU use over the interval needs the previous reading of every process, since any of them may be
//! the busiest now. A process not seen last time (new, or a reused pid with another start time) was
//! born during the interval, so all its ticks are charged to it. The first collection has no
//! interval: it reports no ratio and ranks by memory only, rather than by lifetime CPU, which would
//! name long-running daemons that drop out of the set a collection later.

mod listing;
mod stat;
mod top;
mod users;

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Instant;

use twinwatch_common::sample::{Metric, SeriesKey, Value};

use super::{num, read_attr, read_into, CollectError, Collector, Roots};
use listing::Listing;
use stat::{parse_pid, parse_stat, read_small};
use top::{offer, Candidate, Seen};
use users::Users;

/// The CPU ratio travels as an integer in units of 1/10,000 of a core.
const RATIO_SCALE: f64 = 1e-4;

/// node_exporter's processes collector, and the top processes by CPU and by resident memory.
pub struct Processes {
    root: PathBuf,
    top: usize,
    user_hz: f64,
    page_size: f64,
    users: Users,
    /// Every process at the last collection, and when that was; empty when `top` is 0.
    seen: HashMap<u32, Seen>,
    /// This collection's readings, swapped into `seen` at the end (both keep their capacity).
    seen_next: HashMap<u32, Seen>,
    last: Option<Instant>,
    by_cpu: Vec<Candidate>,
    by_rss: Vec<Candidate>,
    chosen: Vec<Candidate>,
    path: PathBuf,
    stat: Vec<u8>,
    text: String,
}

impl Processes {
    pub fn new(roots: &Roots, top: usize, user_hz: f64) -> Self {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        Processes {
            root: roots.proc.clone(),
            top,
            user_hz,
            page_size: if page > 0 { page as f64 } else { 4096.0 },
            users: Users::new(PathBuf::from("/etc/passwd")),
            seen: HashMap::new(),
            seen_next: HashMap::new(),
            last: None,
            by_cpu: Vec::with_capacity(top.min(64)),
            by_rss: Vec::with_capacity(top.min(64)),
            chosen: Vec::with_capacity(top.min(64) * 2),
            path: PathBuf::new(),
            stat: vec![0; 1024],
            text: String::new(),
        }
    }

    /// One collection at `now`, the clock the CPU ratio's interval is measured by.
    fn collect_at(&mut self, now: Instant, out: &mut Vec<Metric>) -> Result<(), CollectError> {
        let mut listing =
            Listing::open(&self.root).map_err(|source| CollectError::Read { path: self.root.clone(), source })?;
        let tracking = self.top > 0;
        let interval = self.last.map(|last| now.saturating_duration_since(last).as_secs_f64()).filter(|s| *s > 0.0);
        self.seen_next.clear();
        self.by_cpu.clear();
        self.by_rss.clear();
        let (mut pids, mut threads) = (0u64, 0u64);
        let mut states = [0u64; 128];
        self.path.clone_from(&self.root);
        while let Some(name) = listing.next_name() {
            let Some(pid) = parse_pid(name) else { continue };
            self.path.push(std::ffi::OsStr::from_bytes(name));
            self.path.push("stat");
            let read = read_small(&self.path, &mut self.stat);
            self.path.pop();
            self.path.pop();
            // Gone since the listing, or not a process: either way, not counted.
            let Ok(len) = read else { continue };
            let Some(stat) = parse_stat(&self.stat[..len]) else { continue };
            pids += 1;
            threads = threads.saturating_add(stat.threads);
            states[usize::from(stat.state)] += 1;
            if !tracking {
                continue;
            }
            let used = match self.seen.get(&pid) {
                Some(seen) if seen.start == stat.start => stat.ticks.saturating_sub(seen.ticks),
                _ => stat.ticks,
            };
            self.seen_next.insert(pid, Seen { start: stat.start, ticks: stat.ticks });
            let candidate = Candidate::new(pid, &stat, used);
            if interval.is_some() && used > 0 {
                offer(&mut self.by_cpu, self.top, candidate, |c| c.used);
            }
            if stat.rss_pages > 0 {
                offer(&mut self.by_rss, self.top, candidate, |c| c.rss_pages);
            }
        }
        drop(listing);
        if tracking {
            // Swapping drops the vanished pids' readings with the old map's contents.
            std::mem::swap(&mut self.seen, &mut self.seen_next);
            self.last = Some(now);
        }

        let gauge = |name: &str, v: u64| Metric::gauge(SeriesKey::new(name), Value::Int(v as i64));
        out.push(gauge("node_processes_pids", pids));
        out.push(gauge("node_processes_threads", threads));
        for (state, &count) in states.iter().enumerate().filter(|(_, &n)| n > 0) {
            let key = SeriesKey::new("node_processes_state").with("state", char::from(state as u8).to_string());
            out.push(Metric::gauge(key, Value::Int(count as i64)));
        }
        let mut error = None;
        for (file, name) in [
            ("sys/kernel/pid_max", "node_processes_max_processes"),
            ("sys/kernel/threads-max", "node_processes_max_threads"),
        ] {
            match self.read_limit(file) {
                Ok(v) => out.push(gauge(name, v)),
                Err(e) => {
                    error.get_or_insert(e);
                }
            }
        }
        if let Err(e) = self.emit_top(interval, out) {
            error.get_or_insert(e);
        }
        error.map_or(Ok(()), Err)
    }

    /// A single number from a file under /proc.
    fn read_limit(&mut self, file: &'static str) -> Result<u64, CollectError> {
        read_attr(&self.root.join(file), &mut self.text)
            .ok_or_else(|| CollectError::Parse { what: file, detail: "missing or unreadable".into() })?;
        num(Some(self.text.as_str()), file)
    }

    /// The series of the processes in either top list; their owners are looked up now.
    fn emit_top(&mut self, interval: Option<f64>, out: &mut Vec<Metric>) -> Result<(), CollectError> {
        self.chosen.clear();
        self.chosen.extend_from_slice(&self.by_cpu);
        self.chosen.extend_from_slice(&self.by_rss);
        if self.chosen.is_empty() {
            return Ok(());
        }
        self.chosen.sort_unstable_by_key(|c| c.pid);
        self.chosen.dedup_by_key(|c| c.pid);
        self.users.refresh();
        let btime = self.boot_time();
        let tick = 1.0 / self.user_hz;
        for c in &self.chosen {
            let pid = c.pid.to_string();
            // The directory belongs to the process's effective uid (to root if it is not dumpable);
            // gone since the scan if this fails.
            let Ok(meta) = std::fs::metadata(self.root.join(&pid)) else { continue };
            let name = String::from_utf8_lossy(&c.comm[..c.comm_len]).into_owned();
            let user = self.users.name(meta.uid());
            let key = |metric: &str| {
                SeriesKey::new(metric).with("name", name.as_str()).with("pid", pid.as_str()).with("user", user.as_str())
            };
            let int = |v: u64| Value::Int(v as i64);
            if let Some(secs) = interval {
                let ratio = (c.used as f64 * tick / secs / RATIO_SCALE).round() as i64;
                out.push(Metric::gauge(key("twinwatch_top_process_cpu_ratio"), Value::Int(ratio)).scaled(RATIO_SCALE));
            }
            out.push(Metric::counter(key("twinwatch_top_process_cpu_seconds_total"), int(c.ticks)).scaled(tick));
            // Pages with the page size as scale: smaller integers for the delta codec than bytes.
            out.push(
                Metric::gauge(key("twinwatch_top_process_resident_bytes"), int(c.rss_pages)).scaled(self.page_size),
            );
            out.push(Metric::gauge(key("twinwatch_top_process_threads"), int(c.threads)));
            if let Ok(btime) = &btime {
                // Boot time in ticks plus ticks after boot: an integer that scales to seconds.
                let start = ((*btime as f64 * self.user_hz).round() as u64).saturating_add(c.start);
                out.push(Metric::gauge(key("twinwatch_top_process_start_time_seconds"), int(start)).scaled(tick));
            }
            let info = key("twinwatch_top_process_info").with("state", char::from(c.state).to_string());
            out.push(Metric::gauge(info, Value::Int(1)));
        }
        btime.map(|_| ())
    }

    /// The boot time in seconds since the epoch, from the `btime` line of /proc/stat. Read each
    /// time, not once: the kernel derives it from the wall clock, which a router without a
    /// battery-backed clock only learns from NTP after boot.
    fn boot_time(&mut self) -> Result<u64, CollectError> {
        read_into(&self.root.join("stat"), &mut self.text)?;
        let line = self.text.lines().find_map(|l| l.strip_prefix("btime "));
        let what = "/proc/stat btime";
        num(Some(line.ok_or_else(|| CollectError::Parse { what, detail: "missing".into() })?.trim()), what)
    }
}

impl Collector for Processes {
    fn collect(&mut self, out: &mut Vec<Metric>) -> Result<(), CollectError> {
        self.collect_at(Instant::now(), out)
    }
}

#[cfg(test)]
mod tests;
