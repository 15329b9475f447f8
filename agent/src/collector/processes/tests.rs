//! The collector against fixture /proc trees, and once against the real one.

use super::stat::Stat;
use super::users::parse_passwd;
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
    assert_eq!((stat.comm, stat.state, stat.ticks, stat.start, stat.rss_pages), (&b"x) R 1 2 3"[..], b'D', 10, 44, 5));
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
        std::fs::write(dir.join("stat"), format!("cpu  1 2 3 4\ncpu0 1 2 3 4\nbtime {BTIME}\nprocesses 9\n")).unwrap();
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
