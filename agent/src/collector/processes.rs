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

use std::collections::HashMap;
use std::ffi::CStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::time::{Instant, SystemTime};

use twinwatch_common::sample::{Metric, SeriesKey, Value};

use super::{num, read_attr, read_into, CollectError, Collector, Roots};

/// The CPU ratio travels as an integer in units of 1/10,000 of a core.
const RATIO_SCALE: f64 = 1e-4;

/// Bytes of a process name kept for the top set. The kernel's task name is 16 bytes, but
/// /proc/[pid]/stat shows kernel threads' longer names (workqueue workers) up to 64.
const COMM_MAX: usize = 64;

/// A stat file longer than this is not one (the real ones are a few hundred bytes).
const STAT_MAX: usize = 64 * 1024;

/// What the collector needs from one /proc/[pid]/stat line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat<'a> {
    comm: &'a [u8],
    state: u8,
    /// utime + stime, in clock ticks.
    ticks: u64,
    threads: u64,
    /// Clock ticks after boot.
    start: u64,
    rss_pages: u64,
}

/// Parses a /proc/[pid]/stat line; `None` if it is truncated or garbled.
///
/// The name may hold spaces and parentheses (a process names itself), so it ends at the last ')'.
/// Bytes, not text: a name need not be UTF-8, and such a process still counts.
fn parse_stat(line: &[u8]) -> Option<Stat<'_>> {
    let open = line.iter().position(|&b| b == b'(')?;
    let close = line.iter().rposition(|&b| b == b')')?;
    let comm = line.get(open + 1..close)?;
    let mut fields = line[close + 1..].split(|b| b.is_ascii_whitespace()).filter(|f| !f.is_empty());
    // Numbered as in proc(5): the state is field 3.
    let state = match fields.next()? {
        [s] if s.is_ascii_alphabetic() => *s,
        _ => return None,
    };
    let utime = number(fields.nth(10)?)?; // 14
    let stime = number(fields.next()?)?; // 15
    let threads = number(fields.nth(4)?)?; // 20
    let start = number(fields.nth(1)?)?; // 22
    let rss_pages = number(fields.nth(1)?)?; // 24
    Some(Stat { comm, state, ticks: utime.saturating_add(stime), threads, start, rss_pages })
}

/// An unsigned decimal field.
fn number(field: &[u8]) -> Option<u64> {
    if field.is_empty() {
        return None;
    }
    field.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// A directory entry's name as a pid, if it is one.
fn parse_pid(name: &[u8]) -> Option<u32> {
    u32::try_from(number(name)?).ok()
}

/// Reads a small file into `buf` with plain reads, returning its length. No size probing: /proc
/// files report a size of 0, and `read_to_end` would spend two extra system calls finding out.
fn read_small(path: &Path, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut file = std::fs::File::open(path)?;
    let mut len = 0;
    loop {
        if len == buf.len() {
            if len >= STAT_MAX {
                return Err(std::io::ErrorKind::InvalidData.into());
            }
            buf.resize((len * 2).max(1024), 0);
        }
        match file.read(&mut buf[len..]) {
            Ok(0) => return Ok(len),
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// A listing of a directory through libc, so that it allocates nothing per entry (std's
/// `read_dir` allocates every entry's name, and /proc has one per process).
struct Listing {
    dir: NonNull<libc::DIR>,
}

impl Listing {
    fn open(path: &Path) -> std::io::Result<Listing> {
        let path = std::ffi::CString::new(path.as_os_str().as_bytes())?;
        // SAFETY: `path` is NUL-terminated and outlives the call.
        let dir = unsafe { libc::opendir(path.as_ptr()) };
        NonNull::new(dir).map(|dir| Listing { dir }).ok_or_else(std::io::Error::last_os_error)
    }

    /// The next entry's name, or `None` at the end of the directory.
    fn next_name(&mut self) -> Option<&[u8]> {
        // SAFETY: `dir` is open until drop. The entry readdir returns stays valid until the next
        // readdir or closedir on this stream, which the borrow of `self` rules out. The kernel's
        // record may be shorter than `struct dirent`, so the name is reached by a raw pointer, not
        // through a reference to the whole array; it is NUL-terminated.
        unsafe {
            let entry = libc::readdir(self.dir.as_ptr());
            if entry.is_null() {
                return None;
            }
            let name = (&raw const (*entry).d_name).cast::<libc::c_char>();
            Some(CStr::from_ptr(name).to_bytes())
        }
    }
}

impl Drop for Listing {
    fn drop(&mut self) {
        // SAFETY: `dir` came from opendir and is closed only here.
        unsafe { libc::closedir(self.dir.as_ptr()) };
    }
}

/// User names by uid from a passwd file, parsed again only when its mtime or length changes.
struct Users {
    path: PathBuf,
    /// The modification time and length of the file when it was last parsed.
    parsed: Option<(Option<SystemTime>, u64)>,
    names: HashMap<u32, String>,
}

impl Users {
    fn new(path: PathBuf) -> Self {
        Users { path, parsed: None, names: HashMap::new() }
    }

    fn refresh(&mut self) {
        let stamp = std::fs::metadata(&self.path).ok().map(|m| (m.modified().ok(), m.len()));
        if stamp.is_some() && stamp == self.parsed {
            return;
        }
        self.names.clear();
        self.parsed = None;
        let Some(stamp) = stamp else { return };
        // An unreadable file leaves uids numeric and is tried again next time.
        let Ok(bytes) = std::fs::read(&self.path) else { return };
        parse_passwd(&String::from_utf8_lossy(&bytes), &mut self.names);
        self.parsed = Some(stamp);
    }

    fn name(&self, uid: u32) -> String {
        self.names.get(&uid).cloned().unwrap_or_else(|| uid.to_string())
    }
}

/// `name:password:uid:...` lines; the first name for a uid wins, as getpwuid would answer.
fn parse_passwd(text: &str, names: &mut HashMap<u32, String>) {
    for line in text.lines() {
        let mut fields = line.split(':');
        let (Some(name), Some(_), Some(uid)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        // NIS compat entries (`+name`, `-name`) and comments name nobody.
        if name.is_empty() || name.starts_with(['#', '+', '-']) {
            continue;
        }
        if let Ok(uid) = uid.trim().parse::<u32>() {
            names.entry(uid).or_insert_with(|| name.to_owned());
        }
    }
}

/// A process's CPU time when it was last seen, and which process that was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    start: u64,
    ticks: u64,
}

/// A process that may make the top set, copied out of the read buffer without allocating.
#[derive(Clone, Copy)]
struct Candidate {
    pid: u32,
    comm: [u8; COMM_MAX],
    comm_len: usize,
    state: u8,
    ticks: u64,
    /// Ticks used since the last collection.
    used: u64,
    threads: u64,
    start: u64,
    rss_pages: u64,
}

impl Candidate {
    fn new(pid: u32, stat: &Stat, used: u64) -> Self {
        let comm_len = stat.comm.len().min(COMM_MAX);
        let mut comm = [0; COMM_MAX];
        comm[..comm_len].copy_from_slice(&stat.comm[..comm_len]);
        Candidate {
            pid,
            comm,
            comm_len,
            state: stat.state,
            ticks: stat.ticks,
            used,
            threads: stat.threads,
            start: stat.start,
            rss_pages: stat.rss_pages,
        }
    }
}

/// Keeps `list` the `top` largest by `key`, largest first, ties to the lower pid so the set does
/// not depend on directory order.
fn offer(list: &mut Vec<Candidate>, top: usize, c: Candidate, key: fn(&Candidate) -> u64) {
    let rank = |x: &Candidate| (key(x), std::cmp::Reverse(x.pid));
    let at = list.partition_point(|x| rank(x) > rank(&c));
    if at < top {
        if list.len() == top {
            list.pop();
        }
        list.insert(at, c);
    }
}

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
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;
    use twinwatch_common::sample::Kind;

    #[test]
    fn the_name_ends_at_the_last_parenthesis() {
        let line = b"4242 (my (weird) proc) S 1 4242 4242 0 -1 4194560 1234 0 5 0 150 50 0 0 20 0 3 0 98765 \
123456789 2048 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
        let stat = parse_stat(line).unwrap();
        assert_eq!(
            stat,
            Stat { comm: b"my (weird) proc", state: b'S', ticks: 200, threads: 3, start: 98765, rss_pages: 2048 }
        );
        // A name that imitates the fields after it.
        let line = b"7 (x) R 1 2 3) D 1 7 7 0 -1 0 0 0 0 0 9 1 0 0 20 0 1 0 44 0 5 0\n";
        let stat = parse_stat(line).unwrap();
        assert_eq!(
            (stat.comm, stat.state, stat.ticks, stat.start, stat.rss_pages),
            (&b"x) R 1 2 3"[..], b'D', 10, 44, 5)
        );
    }

    #[test]
    fn a_truncated_or_garbled_line_is_refused() {
        assert_eq!(parse_stat(b"4242 (trunc) S 1 4242 4242 0 -1 4194560 1234 0 5 0 150 50 0 0 20 0 3"), None);
        assert_eq!(parse_stat(b"4242 (no end S 1 4242 4242 0 -1 4194560 1234 0 5 0 150 50 0 0 20 0 3 0 1 2 3 4"), None);
        assert_eq!(parse_stat(b"4242 (bad) S 1 4242 4242 0 -1 4194560 1234 0 5 0 x 50 0 0 20 0 3 0 1 2 3 4"), None);
        assert_eq!(parse_stat(b"4242 (bad) SS 1 4242 4242 0 -1 4194560 1234 0 5 0 1 50 0 0 20 0 3 0 1 2 3 4"), None);
        assert_eq!(parse_stat(b")("), None);
        assert_eq!(parse_stat(b""), None);
    }

    #[test]
    fn passwd_names_the_first_entry_of_a_uid() {
        let mut names = HashMap::new();
        let text = "root:x:0:0::/root:/bin/sh\ntoor:x:0:0::/:/bin/sh\n# c:x:5:5\n+nis:x:6:6\nbad\n\
                    ui:x:1000:1000::/home/ui:/bin/sh\n";
        parse_passwd(text, &mut names);
        let mut pairs: Vec<_> = names.iter().map(|(u, n)| (*u, n.as_str())).collect();
        pairs.sort();
        assert_eq!(pairs, [(0, "root"), (1000, "ui")]);
    }

    /// A /proc tree in a temp dir of its own, removed on drop.
    struct Fixture {
        dir: PathBuf,
    }

    const BTIME: u64 = 1_700_000_000;

    impl Fixture {
        fn new(name: &str) -> Self {
            static SEQ: AtomicUsize = AtomicUsize::new(0);
            let seq = SEQ.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("twinwatch-procs-{name}-{}-{seq}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("sys/kernel")).unwrap();
            std::fs::create_dir_all(dir.join("etc")).unwrap();
            std::fs::write(dir.join("stat"), format!("cpu  1 2 3 4\ncpu0 1 2 3 4\nbtime {BTIME}\nprocesses 9\n"))
                .unwrap();
            std::fs::write(dir.join("sys/kernel/pid_max"), "4194304\n").unwrap();
            std::fs::write(dir.join("sys/kernel/threads-max"), "63465\n").unwrap();
            Fixture { dir }
        }

        fn roots(&self) -> Roots {
            Roots { proc: self.dir.clone(), sys: self.dir.join("sys") }
        }

        /// Writes /proc/[pid]/stat with the fields the collector reads; the rest are plausible.
        #[allow(clippy::too_many_arguments)] // the stat fields read, in the file's order
        fn process(
            &self,
            pid: u32,
            comm: &str,
            state: char,
            (utime, stime): (u64, u64),
            threads: u64,
            start: u64,
            rss: u64,
        ) {
            let line = format!(
                "{pid} ({comm}) {state} 1 {pid} {pid} 0 -1 4194560 120 0 0 0 {utime} {stime} 0 0 20 0 {threads} 0 \
                 {start} 12345678 {rss} 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
            );
            self.raw(&pid.to_string(), &line);
        }

        fn raw(&self, dir: &str, stat: &str) {
            std::fs::create_dir_all(self.dir.join(dir)).unwrap();
            std::fs::write(self.dir.join(dir).join("stat"), stat).unwrap();
        }

        fn passwd(&self, text: &str) -> PathBuf {
            let path = self.dir.join("etc/passwd");
            std::fs::write(&path, text).unwrap();
            path
        }

        /// The uid that owns the fixture's pid directories: whoever runs the test.
        fn uid(&self) -> u32 {
            std::fs::metadata(&self.dir).unwrap().uid()
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// The node_processes_* series as (name, state label, value), in emission order.
    fn totals(out: &[Metric]) -> Vec<(&str, Option<&str>, f64)> {
        out.iter()
            .filter(|m| m.key.name.starts_with("node_processes_"))
            .map(|m| (m.key.name.as_str(), m.key.label("state"), m.real()))
            .collect()
    }

    /// The twinwatch_top_process_* series, values only, as (pid, name suffix, value), by pid.
    fn top_values(out: &[Metric]) -> Vec<(u32, &str, f64)> {
        let mut v: Vec<_> = out
            .iter()
            .filter_map(|m| {
                let suffix = m.key.name.strip_prefix("twinwatch_top_process_")?;
                Some((m.key.label("pid")?.parse::<u32>().unwrap(), suffix, m.real()))
            })
            .filter(|(_, suffix, _)| *suffix != "info")
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(b.1)));
        v
    }

    /// The info series' labels as (pid, name, user, state), by pid; each must have the value 1.
    fn infos(out: &[Metric]) -> Vec<(String, String, String, String)> {
        let mut v: Vec<_> = out
            .iter()
            .filter(|m| m.key.name == "twinwatch_top_process_info")
            .map(|m| {
                assert_eq!(m.value, Value::Int(1));
                let l = |k: &str| m.key.label(k).unwrap().to_owned();
                (l("pid"), l("name"), l("user"), l("state"))
            })
            .collect();
        v.sort_by_key(|(pid, ..)| pid.parse::<u32>().unwrap());
        v
    }

    fn info(pid: &str, name: &str, user: &str, state: &str) -> (String, String, String, String) {
        (pid.into(), name.into(), user.into(), state.into())
    }

    #[test]
    fn counts_states_and_picks_the_top_processes_across_two_collections() {
        let f = Fixture::new("top");
        f.process(1, "systemd", 'S', (300, 200), 1, 1, 3000);
        f.process(2, "kthreadd", 'S', (0, 0), 1, 2, 0);
        f.process(3, "kworker/0:0-events", 'I', (0, 5), 1, 3, 0);
        f.process(100, "big mem", 'S', (50, 50), 10, 500, 50_000);
        f.process(200, "busy (worker)", 'R', (1000, 200), 4, 900, 1000);
        f.process(300, "short", 'Z', (1, 1), 1, 950, 0);
        f.process(400, "disk io", 'D', (10, 10), 2, 960, 2000);
        // Not counted: a truncated stat, a pid gone before its stat was read, a non-pid name.
        f.raw("500", "500 (bad) S 1 500 500 0 -1 4194560 120 0 0 0 3 4 0 0");
        std::fs::create_dir_all(f.dir.join("600")).unwrap();
        f.raw("12ab", "12 (odd) S 1 12 12 0 -1 4194560 120 0 0 0 3 4 0 0 20 0 1 0 7 1 900 1");
        let uid = f.uid();
        let mut p = Processes::new(&f.roots(), 2, 100.0);
        p.page_size = 4096.0;
        p.users = Users::new(f.passwd(&format!("daemon:x:1:1::/:/bin/sh\nfixture:x:{uid}:{uid}::/:/bin/sh\n")));
        let t0 = Instant::now();

        let mut out = Vec::new();
        p.collect_at(t0, &mut out).unwrap();
        assert_eq!(
            totals(&out),
            [
                ("node_processes_pids", None, 7.0),
                ("node_processes_threads", None, 20.0),
                ("node_processes_state", Some("D"), 1.0),
                ("node_processes_state", Some("I"), 1.0),
                ("node_processes_state", Some("R"), 1.0),
                ("node_processes_state", Some("S"), 3.0),
                ("node_processes_state", Some("Z"), 1.0),
                ("node_processes_max_processes", None, 4194304.0),
                ("node_processes_max_threads", None, 63465.0),
            ]
        );
        // No interval yet: no ratio, and the set is the top two by memory.
        assert_eq!(
            top_values(&out),
            [
                (1, "cpu_seconds_total", 5.0),
                (1, "resident_bytes", 3000.0 * 4096.0),
                (1, "start_time_seconds", 1_700_000_000.01),
                (1, "threads", 1.0),
                (100, "cpu_seconds_total", 1.0),
                (100, "resident_bytes", 50_000.0 * 4096.0),
                (100, "start_time_seconds", 1_700_000_005.0),
                (100, "threads", 10.0),
            ]
        );
        assert_eq!(infos(&out), [info("1", "systemd", "fixture", "S"), info("100", "big mem", "fixture", "S")]);
        let counter = out.iter().find(|m| m.key.name == "twinwatch_top_process_cpu_seconds_total").unwrap();
        assert_eq!((counter.kind, counter.value, counter.scale), (Kind::Counter, Value::Int(500), 0.01));

        // Ten seconds later: 200 used half a core, 1 a hundredth, 100 nothing; 400 exited and 300's
        // pid went to a new process; the passwd file lost the fixture's user.
        f.process(1, "systemd", 'S', (305, 205), 1, 1, 3000);
        f.process(200, "busy (worker)", 'S', (1400, 300), 4, 900, 1000);
        f.process(300, "newproc", 'R', (20, 10), 1, 5000, 700);
        std::fs::remove_dir_all(f.dir.join("400")).unwrap();
        f.passwd("daemon:x:1:1::/:/bin/sh\n");
        let mut out = Vec::new();
        p.collect_at(t0 + Duration::from_secs(10), &mut out).unwrap();
        assert_eq!(
            totals(&out),
            [
                ("node_processes_pids", None, 6.0),
                ("node_processes_threads", None, 18.0),
                ("node_processes_state", Some("I"), 1.0),
                ("node_processes_state", Some("R"), 1.0),
                ("node_processes_state", Some("S"), 4.0),
                ("node_processes_max_processes", None, 4194304.0),
                ("node_processes_max_threads", None, 63465.0),
            ]
        );
        // By CPU: 200 and the new 300 (charged all its 30 ticks); by memory: 100 and 1.
        assert_eq!(
            top_values(&out),
            [
                (1, "cpu_ratio", 0.01),
                (1, "cpu_seconds_total", 5.1),
                (1, "resident_bytes", 3000.0 * 4096.0),
                (1, "start_time_seconds", 1_700_000_000.01),
                (1, "threads", 1.0),
                (100, "cpu_ratio", 0.0),
                (100, "cpu_seconds_total", 1.0),
                (100, "resident_bytes", 50_000.0 * 4096.0),
                (100, "start_time_seconds", 1_700_000_005.0),
                (100, "threads", 10.0),
                (200, "cpu_ratio", 0.5),
                (200, "cpu_seconds_total", 17.0),
                (200, "resident_bytes", 1000.0 * 4096.0),
                (200, "start_time_seconds", 1_700_000_009.0),
                (200, "threads", 4.0),
                (300, "cpu_ratio", 0.03),
                (300, "cpu_seconds_total", 0.3),
                (300, "resident_bytes", 700.0 * 4096.0),
                (300, "start_time_seconds", 1_700_000_050.0),
                (300, "threads", 1.0),
            ]
        );
        let uid = uid.to_string();
        assert_eq!(
            infos(&out),
            [
                info("1", "systemd", &uid, "S"),
                info("100", "big mem", &uid, "S"),
                info("200", "busy (worker)", &uid, "S"),
                info("300", "newproc", &uid, "R"),
            ]
        );
        let ratio = out.iter().find(|m| m.key.name == "twinwatch_top_process_cpu_ratio").unwrap();
        assert_eq!((ratio.kind, ratio.value, ratio.scale), (Kind::Gauge, Value::Int(100), 1e-4));
        // The exited pid is forgotten; the reused one is remembered as the new process.
        let mut pids: Vec<_> = p.seen.keys().copied().collect();
        pids.sort();
        assert_eq!(pids, [1, 2, 3, 100, 200, 300]);
        assert_eq!(p.seen[&300], Seen { start: 5000, ticks: 30 });
    }

    #[test]
    fn without_a_top_set_only_totals_and_a_missing_limit_is_an_error() {
        let f = Fixture::new("notop");
        f.process(1, "init", 'S', (1, 1), 2, 1, 100);
        std::fs::remove_file(f.dir.join("sys/kernel/threads-max")).unwrap();
        let mut p = Processes::new(&f.roots(), 0, 100.0);
        let mut out = Vec::new();
        assert!(matches!(
            p.collect_at(Instant::now(), &mut out),
            Err(CollectError::Parse { what: "sys/kernel/threads-max", .. })
        ));
        assert_eq!(
            totals(&out),
            [
                ("node_processes_pids", None, 1.0),
                ("node_processes_threads", None, 2.0),
                ("node_processes_state", Some("S"), 1.0),
                ("node_processes_max_processes", None, 4194304.0),
            ]
        );
        assert!(out.iter().all(|m| !m.key.name.starts_with("twinwatch_")));
        assert!(p.seen.is_empty());
    }

    #[test]
    fn a_missing_proc_is_an_error() {
        let roots = Roots { proc: PathBuf::from("/nonexistent/twinwatch/proc"), sys: PathBuf::from("/nonexistent") };
        let mut out = Vec::new();
        assert!(matches!(Processes::new(&roots, 5, 100.0).collect(&mut out), Err(CollectError::Read { .. })));
        assert!(out.is_empty());
    }

    #[test]
    fn this_test_process_is_among_the_top_on_the_real_proc() {
        let mut p = Processes::new(&Roots::default(), 100_000, super::super::user_hz());
        let mut out = Vec::new();
        p.collect(&mut out).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let mut out = Vec::new();
        p.collect(&mut out).unwrap();
        let me = std::process::id().to_string();
        let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
        let mine: Vec<&Metric> = out.iter().filter(|m| m.key.label("pid") == Some(me.as_str())).collect();
        let find = |name: &str| mine.iter().find(|m| m.key.name == name).map(|m| m.real());
        let info = mine.iter().find(|m| m.key.name == "twinwatch_top_process_info").expect("this process is reported");
        assert_eq!(info.key.label("name"), Some(comm.trim_end()));
        // The state is the main thread's, not the test thread's that is running this.
        assert!(info.key.label("state").is_some_and(|s| s.len() == 1));
        assert!(!info.key.label("user").unwrap().is_empty());
        assert!(find("twinwatch_top_process_resident_bytes").unwrap() > 0.0);
        assert!(find("twinwatch_top_process_threads").unwrap() >= 1.0);
        assert!(find("twinwatch_top_process_cpu_ratio").unwrap() >= 0.0);
        assert!(find("twinwatch_top_process_cpu_seconds_total").unwrap() >= 0.0);
        let pids = out.iter().find(|m| m.key.name == "node_processes_pids").unwrap().real();
        let by_state: f64 = out.iter().filter(|m| m.key.name == "node_processes_state").map(|m| m.real()).sum();
        assert!(pids >= 1.0);
        assert_eq!(by_state, pids);
    }
}
