//! Fleet benchmark: the release aggregator under N simulated agents ([`loadgen`]), each sending
//! 500 node_exporter-like series and two HTTP probes' results every second over its own QUIC
//! connection, with API readers running throughout.
//!
//! `cargo xtask bench` runs it with 200 agents and readers, then with 1,000 agents (not in a 256
//! MiB memory cgroup until the aggregator fits one); `cargo bench -p twinwatch-tests --bench fleet -- --agents 1000 --seconds 600`
//! runs the thousand for longer. After every agent has connected and
//! `--warmup` seconds (default 30) have passed, it samples the aggregator once a second for
//! `--seconds` (default 120):
//!
//! - ingest CPU per value: the aggregator's CPU (every thread's schedstat) over the values
//!   acknowledged in the same second, median and p99 over the seconds; its share of one core;
//! - resident memory, anonymous and file-backed, at the start and end, and its slope (least
//!   squares, MiB per minute);
//! - API latency of the readers' answers (hosts, one host, endpoints, history), median and p99
//!   (`--readers N`, default 8, each asking again as soon as answered, or after
//!   `--reader-pause-ms`),
//!   and of a `/metrics` scrape every 15 s;
//! - sample to API: how old a host's newest sample was when an answer first showed it;
//! - the load generator's own CPU, since it shares the machine;
//! - produced to acknowledged per batch, median, p99 and worst: a checkpoint, compaction or lock
//!   that holds ingest up shows here; and *stalled seconds*, those in which fewer than half the
//!   agents' batches were acknowledged;
//! - history growth on disk (the data directory, sled's files) per agent per day, from its size
//!   at the start and end of the measured seconds; and at the end, with the aggregator stopped,
//!   the history the store holds (raw segments and rollup blocks, keys and values) per agent per
//!   day of the fleet's sampling.
//!
//! A progress line is printed every minute, so a long run (`--seconds 3600`) can be watched.
//!
//! With `--memory-limit-mib N` the aggregator runs in a cgroup (v1 memory controller) of that
//! limit, page cache included, as on a VM of that size; the report gives the cgroup's peak and
//! how often it hit the limit, and a killed aggregator fails the run.
//!
//! Then (unless `--no-restart`) the aggregator is killed (`kill -9`) and restarted: how long until
//! every agent is back, the most handshakes in flight at once, and, once the fleet has drained,
//! whether every agent's ledger holds exactly what it produced. Results go to
//! `target/bench/fleet-N.json`.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use serde_json::json;
use twinwatch_aggregator::history::Retention;
use twinwatch_tests::bench::{dir_bytes, median, percentile, report_dir, rss_split, seconds_arg, usage};
use twinwatch_tests::loadgen::{enrol, Fleet, FleetConfig};
use twinwatch_tests::readers::Readers;
use twinwatch_tests::{wait_for, Aggregator, TempDir};

fn arg(name: &str, default: usize) -> usize {
    std::env::args().skip_while(|a| a != name).nth(1).and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// A v1 memory cgroup holding the aggregator, removed on drop.
struct MemoryLimit(std::path::PathBuf);

impl MemoryLimit {
    fn new(mib: usize) -> MemoryLimit {
        let dir = std::path::PathBuf::from(format!("/sys/fs/cgroup/memory/twinwatch-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a memory cgroup (needs root and the v1 memory controller)");
        std::fs::write(dir.join("memory.limit_in_bytes"), format!("{}", mib << 20)).expect("memory limit");
        MemoryLimit(dir)
    }

    fn hold(&self, pid: i32) {
        std::fs::write(self.0.join("cgroup.procs"), pid.to_string()).expect("move into the cgroup");
    }

    /// Processes the kernel killed for want of memory in the cgroup.
    fn oom_kills(&self) -> u64 {
        let control = std::fs::read_to_string(self.0.join("memory.oom_control")).unwrap_or_default();
        control.lines().find_map(|l| l.strip_prefix("oom_kill ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
    }

    fn read(&self, file: &str) -> u64 {
        std::fs::read_to_string(self.0.join(file)).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
    }
}

impl Drop for MemoryLimit {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Least-squares slope of `ys` over `xs`.
fn slope(xs: &[f64], ys: &[f64]) -> f64 {
    let n = xs.len() as f64;
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let cov: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let var: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    cov / var
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let agents = arg("--agents", 200);
    let seconds = seconds_arg(120, 10);
    let warmup = arg("--warmup", 30);
    let readers_n = arg("--readers", 8);
    let restart = !std::env::args().any(|a| a == "--no-restart");
    let dir = TempDir::new("bench-fleet");
    let mut agg = Aggregator::start(dir.path());
    let limit = (arg("--memory-limit-mib", 0) > 0).then(|| MemoryLimit::new(arg("--memory-limit-mib", 0)));
    if let Some(l) = &limit {
        l.hold(agg.proc.as_ref().expect("running").pid());
    }
    let idle_rss = rss_split(agg.proc.as_ref().expect("running").pid());
    let config = FleetConfig::new(agents);
    let values_per_batch = 500 + config.probes as u64 * 10;
    let started = Instant::now();
    let enrolled = enrol(&agg.certs_dir(), &dir.path().join("agents"), &config);
    let ids: Vec<String> = enrolled.iter().map(|e| e.id.clone()).collect();
    println!("fleet: {agents} agents enrolled in {:.1} s", started.elapsed().as_secs_f64());
    let fleet = Fleet::start(agg.quic_addr(), enrolled, &config, arg("--loadgen-threads", 1));
    let connecting = Instant::now();
    wait_for("every agent connected", Duration::from_secs(600), || {
        (fleet.counters.connected.load(Relaxed) == agents).then_some(())
    });
    println!("fleet: all connected in {:.1} s; warming up {warmup} s", connecting.elapsed().as_secs_f64());
    let pause = Duration::from_millis(arg("--reader-pause-ms", 0) as u64);
    let readers = Readers::paced(&agg, &ids, readers_n, pause);
    std::thread::sleep(Duration::from_secs(warmup as u64));
    let _ = readers.take_latencies();
    let _ = readers.take_visibility();
    let _ = readers.take_scrapes();
    let _ = fleet.counters.take_ack_ms();
    let data_dir = agg.dir.clone();
    let disk_start = dir_bytes(&data_dir);

    let pid = agg.proc.as_ref().expect("running").pid();
    let me = std::process::id() as i32;
    let (mut cpu, _) = usage(pid).expect("aggregator usage");
    let (mut my_cpu, _) = usage(me).expect("own usage");
    let mut acked = fleet.counters.acked.load(Relaxed);
    let (mut per_value_us, mut core_share, mut times, mut rss, mut anon, mut file) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let connects_before = fleet.counters.connects.load(Relaxed);
    let t0 = Instant::now();
    let mut tick = Instant::now();
    let mut loadgen_ns = 0u64;
    let (mut acked_per_s, mut stalled) = (Vec::new(), 0usize);
    for second in 0..seconds {
        tick += Duration::from_secs(1);
        std::thread::sleep(tick.saturating_duration_since(Instant::now()));
        let (c, r) = usage(pid).expect("aggregator usage");
        let (m, _) = usage(me).expect("own usage");
        let a = fleet.counters.acked.load(Relaxed);
        acked_per_s.push((a - acked) as f64);
        if ((a - acked) as usize) < agents / 2 {
            stalled += 1;
        }
        let values = (a - acked) * values_per_batch;
        if values > 0 {
            per_value_us.push((c - cpu) as f64 / 1000.0 / values as f64);
        }
        core_share.push((c - cpu) as f64 / 1e9);
        loadgen_ns += m - my_cpu;
        let (an, fi) = rss_split(pid);
        times.push(t0.elapsed().as_secs_f64());
        rss.push(r as f64 / (1 << 20) as f64);
        anon.push(an as f64 / (1 << 20) as f64);
        file.push(fi as f64 / (1 << 20) as f64);
        (cpu, my_cpu, acked) = (c, m, a);
        if (second + 1) % 60 == 0 {
            println!(
                "fleet: {:>5} s  rss {:.1} MiB (anon {:.1}, file {:.1})  acked {:.0}/s  disk {:.1} MiB  stalled {stalled} s",
                second + 1,
                rss.last().copied().unwrap_or(0.0),
                anon.last().copied().unwrap_or(0.0),
                file.last().copied().unwrap_or(0.0),
                acked_per_s[acked_per_s.len().saturating_sub(60)..].iter().sum::<f64>() / 60.0,
                dir_bytes(&data_dir) as f64 / (1 << 20) as f64,
            );
        }
    }
    let disk_end = dir_bytes(&data_dir);
    let ack_ms = fleet.counters.take_ack_ms();
    acked_per_s.sort_by(f64::total_cmp);
    let latencies = readers.take_latencies();
    let visible = readers.take_visibility();
    let scrapes = readers.take_scrapes();
    per_value_us.sort_by(f64::total_cmp);
    let values_per_s = fleet.counters.values.load(Relaxed) as f64 / started.elapsed().as_secs_f64();
    let mib_per_min = slope(&times, &rss) * 60.0;
    let half = times.len() / 2;
    let second_half_mib_per_min = slope(&times[half..], &rss[half..]) * 60.0;
    let disk_per_agent_day = (disk_end as f64 - disk_start as f64) / agents as f64 * 86_400.0 / seconds as f64;
    let report = json!({
        "agents": agents,
        "series_per_agent": values_per_batch,
        "seconds": seconds,
        "warmup_s": warmup,
        "ingest_us_per_value": { "median": median(per_value_us.clone()), "p99": percentile(&per_value_us, 0.99) },
        "aggregator_core_share": { "median": median(core_share.clone()), "max": core_share.iter().cloned().fold(0.0, f64::max) },
        "rss_mib": { "start": rss.first(), "end": rss.last(), "max": rss.iter().cloned().fold(0.0, f64::max), "slope_mib_per_min": mib_per_min, "second_half_slope_mib_per_min": second_half_mib_per_min },
        "produced_to_acked_ms": { "median": percentile(&ack_ms, 0.5), "p99": percentile(&ack_ms, 0.99), "p999": percentile(&ack_ms, 0.999), "max": ack_ms.last() },
        "acked_batches_per_s": { "min": acked_per_s.first(), "median": percentile(&acked_per_s, 0.5) },
        "stalled_seconds": stalled,
        "disk": { "start_mib": disk_start as f64 / (1 << 20) as f64, "end_mib": disk_end as f64 / (1 << 20) as f64, "per_agent_per_day_mib": disk_per_agent_day / (1 << 20) as f64 },
        "rss_idle_mib": (idle_rss.0 + idle_rss.1) as f64 / (1 << 20) as f64,
        "rss_per_agent_kib": (rss.last().copied().unwrap_or(0.0) - (idle_rss.0 + idle_rss.1) as f64 / (1 << 20) as f64) * 1024.0 / agents as f64,
        "rss_anon_mib_end": anon.last(),
        "rss_file_mib_end": file.last(),
        "api": { "answers": latencies.len(), "median_ms": percentile(&latencies, 0.5), "p99_ms": percentile(&latencies, 0.99), "readers": readers_n, "pause_ms": pause.as_millis() as u64 },
        "metrics_scrape_ms": { "scrapes": scrapes.len(), "median": percentile(&scrapes, 0.5), "max": scrapes.last() },
        "sample_to_api_ms": { "seen": visible.len(), "median": percentile(&visible, 0.5), "p99": percentile(&visible, 0.99) },
        "reconnects_during_run": fleet.counters.connects.load(Relaxed) - connects_before,
        "loadgen_core_share": loadgen_ns as f64 / 1e9 / seconds as f64,
        "values_per_second_offered": values_per_s,
    });
    println!("{}", serde_json::to_string_pretty(&report).expect("json"));
    let mut report = report;

    let mut sampled_until = None;
    let mut failures: Vec<String> = Vec::new();
    if restart {
        agg.proc.as_mut().expect("running").kill9();
        let connects = fleet.counters.connects.load(Relaxed);
        agg.restart();
        if let Some(l) = &limit {
            l.hold(agg.proc.as_ref().expect("running").pid());
        }
        let ready = Instant::now();
        wait_for("every agent back", Duration::from_secs(600), || {
            let back = fleet.counters.connects.load(Relaxed) >= connects + agents as u64;
            (back && fleet.counters.connected.load(Relaxed) == agents).then_some(())
        });
        let back_s = ready.elapsed().as_secs_f64();
        let peak = agg.metric("twinwatch_quic_handshakes_peak");
        fleet.stop_sampling();
        sampled_until = Some(started.elapsed().as_secs_f64());
        wait_for("every batch acknowledged", Duration::from_secs(600), || (fleet.pending() == 0).then_some(()));
        let mut wrong = 0;
        for (id, incarnation, mine) in &fleet.agents {
            let stored = agg.get(&format!("/api/v1/hosts/{id}")).and_then(|h| {
                h["ingest"]["incarnations"]
                    .as_array()?
                    .iter()
                    .find(|l| l["incarnation"].as_u64() == Some(*incarnation))?["ticks_stored"]
                    .as_u64()
            });
            if stored != Some(mine.produced.load(Relaxed)) {
                wrong += 1;
            }
        }
        let limit = agg.metric("twinwatch_quic_handshakes_limit");
        report["restart"] = json!({
            "all_back_s_after_ready": back_s,
            "handshakes_peak": peak,
            "handshakes_limit": limit,
            "busy_refusals": fleet.counters.refused_busy.load(Relaxed),
            "agents_with_wrong_counts": wrong,
        });
        println!("{}", serde_json::to_string_pretty(&report["restart"]).expect("json"));
        if !peak.zip(limit).is_some_and(|(p, l)| p <= l) {
            failures.push(format!("handshakes at once {peak:?} over the limit {limit:?}"));
        }
        if wrong > 0 {
            failures.push(format!("{wrong} agents' stored counts are not what they produced"));
        }
    }
    let _ = readers.stop();
    let sampled_s = sampled_until.unwrap_or_else(|| started.elapsed().as_secs_f64());
    drop(fleet);
    agg.proc.as_mut().expect("running").terminate();
    match twinwatch_aggregator::store::Store::open(&data_dir.join("db"), Retention::default()) {
        Ok(store) => {
            let [series, raw, rollups] = store.archive.bytes().expect("history bytes");
            let per_day = |b: u64| b as f64 / agents as f64 * 86_400.0 / sampled_s / (1 << 20) as f64;
            report["history_stored"] = json!({
                "sampled_s": sampled_s,
                "raw_mib": raw as f64 / (1 << 20) as f64,
                "rollup_mib": rollups as f64 / (1 << 20) as f64,
                "series_mib": series as f64 / (1 << 20) as f64,
                "raw_mib_per_agent_per_day": per_day(raw),
                "rollup_mib_per_agent_per_day": per_day(rollups),
                "disk_mib_at_end": dir_bytes(&data_dir) as f64 / (1 << 20) as f64,
            });
            println!("{}", serde_json::to_string_pretty(&report["history_stored"]).expect("json"));
        }
        Err(e) => println!("fleet: the store did not open after the run: {e}"),
    }
    if let Some(l) = &limit {
        assert_eq!(l.oom_kills(), 0, "the aggregator was killed under the limit");
        report["memory_limit"] = json!({
            "limit_mib": arg("--memory-limit-mib", 0),
            "peak_mib": l.read("memory.max_usage_in_bytes") as f64 / (1 << 20) as f64,
            "times_at_limit": l.read("memory.failcnt"),
        });
        println!("{}", serde_json::to_string_pretty(&report["memory_limit"]).expect("json"));
    }
    let out = report_dir().join(format!("fleet-{agents}.json"));
    std::fs::write(&out, serde_json::to_string_pretty(&report).expect("json")).expect("report");
    println!("fleet: report in {}", out.display());
    assert!(failures.is_empty(), "{failures:?}");
}
