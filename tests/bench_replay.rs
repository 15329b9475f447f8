//! Buffer benchmark: how fast an hour of backlog drains into the aggregator, and what the agent
//! writes to disk while the aggregator is reachable. Real release binaries on loopback.
//!
//! `cargo xtask bench` runs it. Two measurements:
//!
//! - **Backlog replay.** One hour of a synthetic host, 500 node_exporter-like series sampled every
//!   second (counters growing irregularly, gauges on random walks), becomes 3600 batches of one
//!   tick each, made exactly as the sampler makes them: a [`DeltaEncoder`] with a keyframe every
//!   300 ticks, one `Batch` frame per tick. They go into the buffer of a fresh agent state
//!   directory under an incarnation below the one the agent takes next, stamped one second apart
//!   and ending now. The real agent then starts (sampling live as usual) against a fresh
//!   aggregator, and what is timed runs from starting the agent until the aggregator's ledger for
//!   that incarnation holds all 3600 ticks, polled every 20 ms. Runs alternate between
//!   `replay_rate = "0"` (unlimited) and the default rate, [`REPS`] of each; printed are medians of
//!   batches, series values and frame bytes per second, and how many times faster than real time
//!   the hour came back.
//! - **Disk writes while connected.** The agent with its default configuration samples every
//!   second and ships to a local aggregator. After it has connected and [`SETTLE`] has passed,
//!   `/proc/PID/io` is read, and again `--seconds` (default 120) later; `write_bytes` (what the
//!   agent sent towards the disk), `wchar` and `rchar` are scaled to an hour, next to the agent's
//!   own counters of bytes spilled to its buffer and bytes shipped, read back through the
//!   aggregator's API. No store-and-forward peer is installed to compare with, so these are
//!   absolute figures and the agent's own ratios.
//!
//! Results also go to `target/bench/replay.json`.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};
use twinwatch_tests::backlog::{start_agent, ticks_stored, write_agent_config, write_backlog};
use twinwatch_tests::bench::{io_counters, median, report_dir, seconds_arg, usage};
use twinwatch_tests::synthetic::SERIES;
use twinwatch_tests::{wait_for, Aggregator, TempDir};

/// Replays of each kind.
const REPS: usize = 5;
/// One hour of one-second ticks.
const TICKS: u64 = 3600;
/// The agent's default replay rate (`agent/src/config.rs`).
const DEFAULT_RATE: f64 = (1 << 20) as f64;
/// How often the aggregator's ledger is read during a replay.
const POLL: Duration = Duration::from_millis(20);
/// Longest a replay may take before the run fails.
const REPLAY_LIMIT: Duration = Duration::from_secs(300);
/// From the agent's connection to the start of the disk measurement.
const SETTLE: Duration = Duration::from_secs(5);

/// What a process has written so far, from `/proc/PID/io`: `write_bytes` counts the page cache
/// it dirtied for the disk (whole pages, or larger folios), `wchar` the bytes it passed to write
/// calls of any kind, sockets and pipes included.
#[derive(Clone, Copy, Default)]
struct Written {
    write_bytes: f64,
    wchar: f64,
}

impl Written {
    fn of(pid: i32) -> Written {
        let io = io_counters(pid).unwrap_or_default();
        let field = |name: &str| io.get(name).copied().unwrap_or(0) as f64;
        Written { write_bytes: field("write_bytes"), wchar: field("wchar") }
    }

    fn since(self, earlier: Written) -> Written {
        Written { write_bytes: self.write_bytes - earlier.write_bytes, wchar: self.wchar - earlier.wchar }
    }
}

/// One replay, from starting the agent until every synthetic tick is stored.
struct Replay {
    seconds: f64,
    /// Until the synthetic incarnation's first batch was stored.
    first_stored: f64,
    frame_bytes: u64,
    /// CPU seconds, and `write_bytes` and `wchar` from `/proc/PID/io`, of each process during
    /// the replay.
    agent_cpu: f64,
    aggregator_cpu: f64,
    agent_written: Written,
    aggregator_written: Written,
    /// How long each read of the ledger took, the median, in milliseconds.
    poll_ms: f64,
    counters: Json,
}

fn replay(dir: &Path, replay_rate: Option<&str>) -> Replay {
    let agg = Aggregator::start(&dir.join("aggregator"));
    let agent_dir = dir.join("agent");
    agg.issue("bench", "dc1", &agent_dir.join("certs"));
    let buffer = replay_rate.map(|r| format!("[buffer]\nreplay_rate = \"{r}\"\n")).unwrap_or_default();
    write_agent_config(&agent_dir, &agg, &buffer);
    let backlog = write_backlog(&agent_dir, TICKS);
    let aggregator_pid = agg.proc.as_ref().expect("aggregator running").pid();
    let aggregator_cpu = usage(aggregator_pid).expect("aggregator alive").0;
    let aggregator_written = Written::of(aggregator_pid);

    let start = Instant::now();
    let agent = start_agent(&agent_dir);
    let deadline = start + REPLAY_LIMIT;
    let mut first_stored = None;
    let mut stored = None;
    let mut polls = Vec::new();
    loop {
        let asked = Instant::now();
        stored = ticks_stored(&agg, backlog.incarnation).or(stored);
        polls.push(asked.elapsed().as_secs_f64() * 1e3);
        if first_stored.is_none() && stored.is_some_and(|n| n > 0) {
            first_stored = Some(start.elapsed());
        }
        if stored == Some(TICKS) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replay not done after {REPLAY_LIMIT:?}: {stored:?} of {TICKS} ticks stored\n{}",
            agent.log_text()
        );
        std::thread::sleep(POLL);
    }
    let seconds = start.elapsed().as_secs_f64();
    let cpu = |pid| usage(pid).expect("process alive").0 as f64 / 1e9;
    let counters = agg.get("/api/v1/hosts/bench").map(|h| h["ingest"]["counters"].clone()).unwrap_or_default();
    assert_eq!(counters["unapplied"].as_u64(), Some(0), "every batch decodes: {counters}");
    Replay {
        seconds,
        first_stored: first_stored.unwrap_or_default().as_secs_f64(),
        frame_bytes: backlog.frame_bytes,
        agent_cpu: cpu(agent.pid()),
        aggregator_cpu: cpu(aggregator_pid) - aggregator_cpu as f64 / 1e9,
        agent_written: Written::of(agent.pid()),
        aggregator_written: Written::of(aggregator_pid).since(aggregator_written),
        poll_ms: median(polls),
        counters,
    }
}

/// The agent's spilled and sent byte counters, as the aggregator has them.
fn agent_bytes(agg: &Aggregator) -> Option<(f64, f64)> {
    let host = agg.get("/api/v1/hosts/bench")?;
    let a = &host["agent"];
    Some((a["buffer_spilled_bytes_total"].as_f64()?, a["sent_bytes_total"].as_f64()?))
}

/// What the agent wrote while connected, each figure per hour.
struct Disk {
    seconds: f64,
    write_bytes: f64,
    wchar: f64,
    rchar: f64,
    spilled_bytes: f64,
    sent_bytes: f64,
    log_bytes: f64,
    /// `write_bytes` from the agent's start until the measurement began (not scaled).
    startup_write_bytes: u64,
}

fn disk(dir: &Path, seconds: usize) -> Disk {
    let agg = Aggregator::start(&dir.join("aggregator"));
    let agent_dir = dir.join("agent");
    agg.issue("bench", "dc1", &agent_dir.join("certs"));
    write_agent_config(&agent_dir, &agg, "");
    let agent = start_agent(&agent_dir);
    wait_for("the agent's counters in the API", Duration::from_secs(30), || agent_bytes(&agg));
    std::thread::sleep(SETTLE);

    let log_size = || std::fs::metadata(&agent.log).map_or(0, |m| m.len()) as f64;
    let io0 = io_counters(agent.pid()).expect("agent alive");
    let (spilled0, sent0) = agent_bytes(&agg).expect("agent counters");
    let log0 = log_size();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds as u64));
    let io1 = io_counters(agent.pid()).expect("agent alive");
    let (spilled1, sent1) = agent_bytes(&agg).expect("agent counters");
    let elapsed = start.elapsed().as_secs_f64();
    let hourly = |d: f64| d * 3600.0 / elapsed;
    let delta =
        |name: &str| hourly(io1.get(name).copied().unwrap_or(0) as f64 - io0.get(name).copied().unwrap_or(0) as f64);
    Disk {
        seconds: elapsed,
        write_bytes: delta("write_bytes"),
        wchar: delta("wchar"),
        rchar: delta("rchar"),
        spilled_bytes: hourly(spilled1 - spilled0),
        sent_bytes: hourly(sent1 - sent0),
        log_bytes: hourly(log_size() - log0),
        startup_write_bytes: io0.get("write_bytes").copied().unwrap_or(0),
    }
}

fn main() {
    let seconds = seconds_arg(120, 10);
    let tmp = TempDir::new("bench-replay");
    let kinds = [("0 (unlimited)", Some("0")), ("default (1 MiB/s)", None)];
    let mut runs: Vec<Vec<Replay>> = vec![Vec::new(), Vec::new()];
    for rep in 0..REPS {
        for (i, (label, rate)) in kinds.iter().enumerate() {
            let dir = tmp.path().join(format!("replay-{i}-{rep}"));
            let run = replay(&dir, *rate);
            eprintln!("bench: replay_rate {label}, run {}: {:.2} s", rep + 1, run.seconds);
            runs[i].push(run);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    eprintln!("bench: agent disk writes, measuring {seconds} s");
    let disk = disk(&tmp.path().join("disk"), seconds);

    let frame_bytes = runs[0][0].frame_bytes as f64;
    let mib = |b: f64| b / (1024.0 * 1024.0);
    let values = (TICKS as usize * SERIES) as f64;
    println!(
        "backlog replay: 1 h of {SERIES} series at 1 s = {TICKS} batches, {values:.0} values, {:.2} MiB of frames; \
         agent start to all stored; median of {REPS}",
        mib(frame_bytes)
    );
    println!("| replay_rate | seconds | batches/s | values/s | MiB/s | x real time |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let med = |runs: &[Replay], f: fn(&Replay) -> f64| median(runs.iter().map(f).collect());
    for ((label, _), runs) in kinds.iter().zip(&runs) {
        let s = med(runs, |r| r.seconds);
        let per_second = |n: f64| n / s;
        println!(
            "| {label} | {s:.2} | {:.0} | {:.0} | {:.2} | {:.0}x |",
            per_second(TICKS as f64),
            per_second(values),
            mib(per_second(frame_bytes)),
            per_second(TICKS as f64)
        );
    }
    println!(
        "| replay_rate | first batch stored, s | CPU s, agent / aggregator | write_bytes MiB, agent / aggregator \
         | wchar MiB, agent / aggregator | one ledger read, ms |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for ((label, _), runs) in kinds.iter().zip(&runs) {
        println!(
            "| {label} | {:.2} | {:.2} / {:.2} | {:.1} / {:.1} | {:.1} / {:.1} | {:.1} |",
            med(runs, |r| r.first_stored),
            med(runs, |r| r.agent_cpu),
            med(runs, |r| r.aggregator_cpu),
            mib(med(runs, |r| r.agent_written.write_bytes)),
            mib(med(runs, |r| r.aggregator_written.write_bytes)),
            mib(med(runs, |r| r.agent_written.wchar)),
            mib(med(runs, |r| r.aggregator_written.wchar)),
            med(runs, |r| r.poll_ms)
        );
    }
    for ((label, _), runs) in kinds.iter().zip(&runs) {
        let secs: Vec<String> = runs.iter().map(|r| format!("{:.2}", r.seconds)).collect();
        println!("replay_rate {label}, every run, s: {}", secs.join(", "));
    }
    println!(
        "at the default rate alone the hour would take about {:.1} s (its first second's worth goes at once)",
        (frame_bytes - DEFAULT_RATE).max(0.0) / DEFAULT_RATE
    );
    let report: Vec<Json> = kinds
        .iter()
        .zip(&runs)
        .map(|((_, rate), runs)| {
            let s = med(runs, |r| r.seconds);
            json!({
                "replay_rate": rate.unwrap_or("default"),
                "seconds_median": s,
                "seconds_runs": runs.iter().map(|r| r.seconds).collect::<Vec<_>>(),
                "batches_per_second": TICKS as f64 / s,
                "values_per_second": values / s,
                "bytes_per_second": frame_bytes / s,
                "times_real_time": TICKS as f64 / s,
                "first_stored_seconds_median": med(runs, |r| r.first_stored),
                "agent_cpu_seconds_median": med(runs, |r| r.agent_cpu),
                "aggregator_cpu_seconds_median": med(runs, |r| r.aggregator_cpu),
                "agent_write_bytes_median": med(runs, |r| r.agent_written.write_bytes),
                "aggregator_write_bytes_median": med(runs, |r| r.aggregator_written.write_bytes),
                "agent_wchar_median": med(runs, |r| r.agent_written.wchar),
                "aggregator_wchar_median": med(runs, |r| r.aggregator_written.wchar),
                "ledger_read_ms_median": med(runs, |r| r.poll_ms),
                "ingest_counters": runs.iter().map(|r| r.counters.clone()).collect::<Vec<_>>(),
            })
        })
        .collect();

    println!();
    println!(
        "agent disk writes while the aggregator is reachable: default config, 1 s, {:.0} s measured, per hour",
        disk.seconds
    );
    println!("| figure | bytes per hour |");
    println!("| --- | --- |");
    println!("| write_bytes (/proc/PID/io) | {:.0} |", disk.write_bytes);
    println!("| wchar (every write(2), log included) | {:.0} |", disk.wchar);
    println!("| rchar | {:.0} |", disk.rchar);
    println!("| of which log to stderr (info) | {:.0} |", disk.log_bytes);
    println!("| buffer spilled (agent's counter) | {:.0} |", disk.spilled_bytes);
    println!("| shipped (agent's counter) | {:.0} |", disk.sent_bytes);
    println!(
        "write_bytes per byte shipped: {:.4}; spilled per byte shipped: {:.4}; startup before the window: {} write_bytes",
        disk.write_bytes / disk.sent_bytes,
        disk.spilled_bytes / disk.sent_bytes,
        disk.startup_write_bytes
    );
    println!("no store-and-forward peer is installed here: absolute figures and the agent's own ratios only");

    let report = json!({
        "replay": {
            "ticks": TICKS, "series": SERIES, "values": values, "frame_bytes": frame_bytes, "repetitions": REPS,
            "runs": report,
        },
        "disk": {
            "seconds": disk.seconds,
            "per_hour": { "write_bytes": disk.write_bytes, "wchar": disk.wchar, "rchar": disk.rchar,
                          "log_bytes": disk.log_bytes, "buffer_spilled_bytes": disk.spilled_bytes,
                          "sent_bytes": disk.sent_bytes },
            "write_bytes_per_sent_byte": disk.write_bytes / disk.sent_bytes,
            "spilled_bytes_per_sent_byte": disk.spilled_bytes / disk.sent_bytes,
            "startup_write_bytes": disk.startup_write_bytes,
            "peer": "none installed with a store-and-forward buffer",
        },
    });
    let _ = std::fs::write(report_dir().join("replay.json"), serde_json::to_string_pretty(&report).unwrap_or_default());
}
