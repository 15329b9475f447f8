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
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value as Json};
use twinwatch_agent::buffer::{Buffer, Meta};
use twinwatch_common::delta::DeltaEncoder;
use twinwatch_common::frame::FrameEncoder;
use twinwatch_common::message::{Batch, Message};
use twinwatch_common::sample::{Metric, Sample, SeriesKey, Value};
use twinwatch_tests::bench::{io_counters, median, report_dir, seconds_arg, usage};
use twinwatch_tests::{bin, wait_for, Aggregator, Proc, TempDir};

/// Replays of each kind.
const REPS: usize = 5;
/// One hour of one-second ticks.
const TICKS: u64 = 3600;
const SERIES: usize = 500;
/// The agent's defaults (`agent/src/config.rs`): keyframe interval, buffer cap, replay rate.
const KEYFRAME_EVERY: u32 = 300;
const BUFFER_CAP: u64 = 64 << 20;
const DEFAULT_RATE: f64 = (1 << 20) as f64;
/// How often the aggregator's ledger is read during a replay.
const POLL: Duration = Duration::from_millis(20);
/// Longest a replay may take before the run fails.
const REPLAY_LIMIT: Duration = Duration::from_secs(300);
/// From the agent's connection to the start of the disk measurement.
const SETTLE: Duration = Duration::from_secs(5);

// What the synthetic host reports, by node_exporter's names. Counters come with their mean
// growth per second.
#[rustfmt::skip]
const MEMORY_MOVING: [&str; 26] = [
    "MemFree", "MemAvailable", "Buffers", "Cached", "SwapCached", "Active", "Inactive", "Active_anon",
    "Inactive_anon", "Active_file", "Inactive_file", "SwapFree", "Dirty", "Writeback", "AnonPages", "Mapped",
    "Shmem", "KReclaimable", "Slab", "SReclaimable", "SUnreclaim", "KernelStack", "PageTables", "Committed_AS",
    "VmallocUsed", "AnonHugePages",
];
#[rustfmt::skip]
const MEMORY_FIXED: [&str; 14] = [
    "MemTotal", "SwapTotal", "Unevictable", "Mlocked", "NFS_Unstable", "Bounce", "WritebackTmp", "CommitLimit",
    "VmallocTotal", "VmallocChunk", "Percpu", "HardwareCorrupted", "ShmemHugePages", "Hugepagesize",
];
#[rustfmt::skip]
const VMSTAT: [(&str, f64); 30] = [
    ("pgpgin", 80.0), ("pgpgout", 600.0), ("pswpin", 0.01), ("pswpout", 0.02), ("pgfault", 4000.0),
    ("pgmajfault", 0.5), ("pgalloc_normal", 5000.0), ("pgfree", 5200.0), ("pgactivate", 300.0),
    ("pgdeactivate", 40.0), ("pglazyfree", 2.0), ("pgrefill", 40.0), ("pgsteal_kswapd", 20.0),
    ("pgsteal_direct", 0.1), ("pgscan_kswapd", 25.0), ("pgscan_direct", 0.1), ("pginodesteal", 0.0),
    ("slabs_scanned", 30.0), ("kswapd_inodesteal", 0.01), ("pageoutrun", 0.05), ("allocstall_normal", 0.01),
    ("compact_stall", 0.01), ("compact_fail", 0.005), ("compact_success", 0.005), ("thp_fault_alloc", 0.3),
    ("thp_collapse_alloc", 0.02), ("workingset_refault_file", 3.0), ("workingset_activate_file", 1.0),
    ("oom_kill", 0.0), ("nr_dirtied", 150.0),
];
#[rustfmt::skip]
const NETSTAT: [(&str, f64); 35] = [
    ("Tcp_ActiveOpens", 3.0), ("Tcp_PassiveOpens", 2.0), ("Tcp_AttemptFails", 0.05), ("Tcp_EstabResets", 0.1),
    ("Tcp_InSegs", 900.0), ("Tcp_OutSegs", 950.0), ("Tcp_RetransSegs", 0.5), ("Tcp_InErrs", 0.0),
    ("Tcp_OutRsts", 0.3), ("Udp_InDatagrams", 40.0), ("Udp_OutDatagrams", 40.0), ("Udp_NoPorts", 0.1),
    ("Udp_InErrors", 0.0), ("Udp_RcvbufErrors", 0.0), ("Udp_SndbufErrors", 0.0), ("Udp6_InDatagrams", 2.0),
    ("Udp6_OutDatagrams", 2.0), ("UdpLite_InDatagrams", 0.0), ("IpExt_InOctets", 160e3),
    ("IpExt_OutOctets", 110e3), ("Ip6_InOctets", 2e3), ("Ip6_OutOctets", 2e3), ("Icmp_InMsgs", 0.2),
    ("Icmp_OutMsgs", 0.2), ("Icmp_InErrors", 0.0), ("Icmp6_InMsgs", 0.3), ("Icmp6_OutMsgs", 0.3),
    ("TcpExt_ListenDrops", 0.0), ("TcpExt_ListenOverflows", 0.0), ("TcpExt_SyncookiesSent", 0.0),
    ("TcpExt_SyncookiesRecv", 0.0), ("TcpExt_SyncookiesFailed", 0.0), ("TcpExt_TCPSynRetrans", 0.05),
    ("TcpExt_TCPTimeouts", 0.2), ("TcpExt_TCPOFOQueue", 0.5),
];
#[rustfmt::skip]
const SOCKSTAT: [&str; 12] = [
    "sockets_used", "TCP_inuse", "TCP_orphan", "TCP_tw", "TCP_alloc", "TCP_mem", "TCP_mem_bytes", "UDP_inuse",
    "UDP_mem", "UDP_mem_bytes", "TCP6_inuse", "UDP6_inuse",
];

/// xorshift64*: the same synthetic hour in every run.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn between(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
}

/// How a series moves from one second to the next.
#[derive(Clone, Copy)]
enum Walk {
    /// Grows by about `mean` a second: exponentially distributed, now and then a burst ten times
    /// as large, and often not at all when `mean` is small.
    Counter { mean: f64 },
    /// Moves by up to `steps` times `unit` either way in a fraction `moves` of seconds, never
    /// below zero.
    Gauge { unit: f64, steps: f64, moves: f64 },
    /// A load average: a float with two decimals, drifting.
    Load,
}

/// A host of [`SERIES`] series, sampled once a second.
struct Host {
    series: Vec<(Metric, Walk)>,
    rng: Rng,
}

impl Host {
    fn add(&mut self, metric: Metric, walk: Walk, group: u8) {
        self.series.push((Metric { group, ..metric }, walk));
    }

    /// A counter three days into its host's uptime.
    fn counter(&mut self, key: SeriesKey, scale: f64, mean: f64, group: u8) {
        let start = (mean * 259_200.0 * self.rng.between(0.5, 1.5)) as i64;
        self.add(Metric::counter(key, Value::Int(start)).scaled(scale), Walk::Counter { mean }, group);
    }

    /// A gauge in bytes moves by whole pages, any other by ones.
    fn gauge(&mut self, key: SeriesKey, start: f64, steps: f64, moves: f64, group: u8) {
        let unit = if key.name.ends_with("_bytes") { 4096.0 } else { 1.0 };
        self.add(Metric::gauge(key, Value::Int(start as i64)), Walk::Gauge { unit, steps, moves }, group);
    }

    fn new(seed: u64) -> Host {
        let mut h = Host { series: Vec::with_capacity(SERIES), rng: Rng(seed) };
        let key = |name: &str| SeriesKey::new(name);
        let cpus: Vec<String> = (0..8).map(|c| c.to_string()).collect();
        let modes = [
            ("idle", 70.0),
            ("user", 15.0),
            ("system", 6.0),
            ("iowait", 1.5),
            ("softirq", 0.8),
            ("irq", 0.3),
            ("nice", 0.1),
            ("steal", 0.05),
        ];
        for cpu in &cpus {
            for (mode, mean) in modes {
                h.counter(key("node_cpu_seconds_total").with("cpu", cpu).with("mode", mode), 0.01, mean, 0);
            }
        }
        let interrupts = [
            ("LOC", "Local timer interrupts", 250.0),
            ("RES", "Rescheduling interrupts", 20.0),
            ("CAL", "Function call interrupts", 5.0),
            ("TLB", "TLB shootdowns", 2.0),
            ("IWI", "IRQ work interrupts", 1.0),
            ("MCP", "Machine check polls", 0.003),
            ("NMI", "Non-maskable interrupts", 0.0),
            ("SPU", "Spurious interrupts", 0.0),
            ("124", "nvme0q1", 30.0),
            ("125", "eth0-TxRx-0", 80.0),
            ("126", "eth0-TxRx-1", 60.0),
        ];
        for cpu in &cpus {
            for (kind, devices, mean) in interrupts {
                let k = key("node_interrupts_total").with("cpu", cpu).with("devices", devices).with("type", kind);
                h.counter(k, 1.0, mean, 1);
            }
        }
        for (device, bytes) in [("eth0", 120e3), ("eth1", 8e3), ("lo", 30e3), ("docker0", 2e3), ("veth3a9e1c0", 500.0)]
        {
            for (dir, share) in [("receive", 1.0), ("transmit", 0.6)] {
                let b = bytes * share;
                for (what, mean) in [("bytes", b), ("packets", b / 900.0), ("errs", 0.0), ("drop", 0.002)] {
                    h.counter(key(&format!("node_network_{dir}_{what}_total")).with("device", device), 1.0, mean, 2);
                }
            }
        }
        for (device, load) in [("nvme0n1", 1.0), ("nvme1n1", 0.4), ("sda", 0.05), ("dm-0", 0.9)] {
            let counters = [
                ("reads_completed_total", 1.0, 5.0),
                ("writes_completed_total", 1.0, 40.0),
                ("read_bytes_total", 1.0, 80e3),
                ("written_bytes_total", 1.0, 600e3),
                ("io_time_seconds_total", 0.001, 30.0),
                ("read_time_seconds_total", 0.001, 4.0),
                ("write_time_seconds_total", 0.001, 60.0),
                ("discards_completed_total", 1.0, 0.01),
            ];
            for (name, scale, mean) in counters {
                h.counter(key(&format!("node_disk_{name}")).with("device", device), scale, mean * load, 3);
            }
            h.gauge(key("node_disk_io_now").with("device", device), 0.0, 2.0, 0.2 * load, 3);
        }
        for name in MEMORY_MOVING {
            let start = (h.rng.between(8.0, 8192.0) * 256.0).round() * 4096.0;
            let steps = h.rng.between(1.0, 256.0).round();
            let moves = h.rng.between(0.2, 0.9);
            h.gauge(key(&format!("node_memory_{name}_bytes")), start, steps, moves, 4);
        }
        for name in MEMORY_FIXED {
            let value = (h.rng.between(0.0, 65536.0) * 256.0).round() * 4096.0;
            h.gauge(key(&format!("node_memory_{name}_bytes")), value, 0.0, 0.0, 4);
        }
        for (name, mean) in VMSTAT {
            h.counter(key(&format!("node_vmstat_{name}")), 1.0, mean, 5);
        }
        let filesystems = [
            ("/", "/dev/nvme0n1p2", "ext4", 1.0),
            ("/boot", "/dev/nvme0n1p1", "vfat", 0.0),
            ("/home", "/dev/mapper/vg0-home", "ext4", 0.3),
            ("/var/lib/docker", "/dev/nvme1n1p1", "xfs", 0.5),
            ("/srv", "/dev/sda1", "ext4", 0.05),
            ("/run", "tmpfs", "tmpfs", 0.1),
            ("/dev/shm", "tmpfs", "tmpfs", 0.05),
            ("/run/user/1000", "tmpfs", "tmpfs", 0.02),
        ];
        for (mountpoint, device, fstype, busy) in filesystems {
            let fs = |name: &str| {
                key(&format!("node_filesystem_{name}"))
                    .with("device", device)
                    .with("fstype", fstype)
                    .with("mountpoint", mountpoint)
            };
            let size = (h.rng.between(1.0, 2048.0) * 262_144.0).round() * 4096.0;
            let free = (size * h.rng.between(0.1, 0.9) / 4096.0).round() * 4096.0;
            h.gauge(fs("size_bytes"), size, 0.0, 0.0, 6);
            h.gauge(fs("free_bytes"), free, 64.0, busy, 6);
            h.gauge(fs("avail_bytes"), (free * 0.95 / 4096.0).round() * 4096.0, 64.0, busy, 6);
            h.gauge(fs("files"), size / 16384.0, 0.0, 0.0, 6);
            h.gauge(fs("files_free"), size / 20000.0, 3.0, busy * 0.5, 6);
        }
        for name in ["node_load1", "node_load5", "node_load15"] {
            h.add(Metric::gauge(key(name), Value::Float(0.8)), Walk::Load, 7);
        }
        let pressure = [
            ("cpu_waiting", 20e3),
            ("io_waiting", 5e3),
            ("io_stalled", 3e3),
            ("memory_waiting", 100.0),
            ("memory_stalled", 50.0),
            ("irq_stalled", 10.0),
        ];
        for (name, mean) in pressure {
            h.counter(key(&format!("node_pressure_{name}_seconds_total")), 1e-6, mean, 8);
        }
        let sensors = [("platform_coretemp_0", 9), ("nvme_nvme0", 2), ("acpitz", 1)];
        for (chip, count) in sensors {
            for sensor in 1..=count {
                let k = key("node_hwmon_temp_celsius").with("chip", chip).with("sensor", format!("temp{sensor}"));
                let start = (h.rng.between(38.0, 55.0)).round() * 1000.0;
                let walk = Walk::Gauge { unit: 1000.0, steps: 1.0, moves: 0.4 };
                h.add(Metric::gauge(k, Value::Int(start as i64)).scaled(0.001), walk, 9);
            }
        }
        for (name, mean) in NETSTAT {
            h.counter(key(&format!("node_netstat_{name}")), 1.0, mean, 10);
        }
        h.gauge(key("node_netstat_Tcp_CurrEstab"), 140.0, 3.0, 0.4, 10);
        for name in SOCKSTAT {
            let start = h.rng.between(2.0, 800.0).round();
            h.gauge(key(&format!("node_sockstat_{name}")), start, 3.0, 0.3, 11);
        }
        for (name, mean) in
            [("node_context_switches_total", 12e3), ("node_intr_total", 9e3), ("node_forks_total", 15.0)]
        {
            h.counter(key(name), 1.0, mean, 12);
        }
        h.gauge(key("node_procs_running"), 3.0, 2.0, 0.6, 12);
        h.gauge(key("node_procs_blocked"), 0.0, 1.0, 0.1, 12);
        for cpu in &cpus {
            for (name, scale, mean) in [
                ("node_softnet_processed_total", 1.0, 300.0),
                ("node_softnet_times_squeezed_total", 1.0, 0.05),
                ("node_softnet_dropped_total", 1.0, 0.001),
                ("node_softnet_received_rps_total", 1.0, 0.0),
                ("node_softnet_flow_limit_count_total", 1.0, 0.0),
                ("node_schedstat_running_seconds_total", 1e-9, 2e8),
                ("node_schedstat_waiting_seconds_total", 1e-9, 1e7),
                ("node_schedstat_timeslices_total", 1.0, 300.0),
            ] {
                h.counter(key(name).with("cpu", cpu), scale, mean, 13);
            }
            for mode in ["user", "nice"] {
                h.counter(key("node_cpu_guest_seconds_total").with("cpu", cpu).with("mode", mode), 0.01, 0.0, 0);
            }
            let khz = Value::Int(h.rng.between(800e3, 3500e3) as i64);
            let walk = Walk::Gauge { unit: 1.0, steps: 400e3, moves: 0.7 };
            h.add(Metric::gauge(key("node_cpu_scaling_frequency_hertz").with("cpu", cpu), khz).scaled(1e3), walk, 0);
        }
        assert_eq!(h.series.len(), SERIES, "the synthetic host");
        h
    }

    /// Moves every series on by one second and returns the sample.
    fn sample(&mut self, ts_ms: i64) -> Sample {
        for (metric, walk) in &mut self.series {
            let rng = &mut self.rng;
            metric.value = match (*walk, metric.value) {
                (Walk::Counter { mean }, Value::Int(v)) => {
                    let burst = if rng.unit() < 0.02 { 10.0 } else { 1.0 };
                    let grow = (mean * burst * -(1.0 - rng.unit()).ln()).round() as i64;
                    Value::Int(v + grow)
                }
                (Walk::Gauge { unit, steps, moves }, Value::Int(v)) if rng.unit() < moves => {
                    let by = (rng.between(-1.0, 1.0) * steps).round() * unit;
                    Value::Int((v as f64 + by).max(0.0) as i64)
                }
                (Walk::Load, Value::Float(v)) => {
                    Value::Float(((v + rng.between(-0.06, 0.06)).max(0.0) * 100.0).round() / 100.0)
                }
                (_, v) => v,
            };
        }
        Sample { ts_ms, metrics: self.series.iter().map(|(m, _)| m.clone()).collect(), skipped: 0 }
    }
}

/// What was put in a buffer.
struct Backlog {
    incarnation: u64,
    frame_bytes: u64,
}

/// Writes an hour of the synthetic host, ending now, into the buffer of the state dir `state`,
/// under a fresh incarnation.
fn write_backlog(state: &Path) -> Backlog {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_millis() as i64;
    let first_ms = now - (TICKS as i64 - 1) * 1000;
    // Nothing waits long enough to be spilled one by one: the hour goes to disk in one commit.
    let buffer = Buffer::open(&state.join("buffer"), BUFFER_CAP, Duration::from_secs(86_400)).expect("open buffer");
    let incarnation = buffer.next_incarnation(first_ms as u64).expect("incarnation");
    let mut host = Host::new(0x7769_6e77_6174_6368);
    let mut encoder = DeltaEncoder::new(KEYFRAME_EVERY);
    let mut frames = FrameEncoder::new();
    let at = Instant::now();
    let mut frame_bytes = 0;
    for seq in 1..=TICKS {
        let sample = host.sample(first_ms + (seq as i64 - 1) * 1000);
        let tick = encoder.encode(&sample);
        let meta = Meta { ticks: 1, ts_ms: sample.ts_ms, keyframe: tick.keyframe };
        let frame = Message::Batch(Batch { incarnation, seq, ticks: vec![tick] }).to_frame(&mut frames).expect("frame");
        frame_bytes += frame.len() as u64;
        let done = buffer.push(incarnation, seq, meta, frame, at).expect("push");
        assert_eq!(done.dropped_batches, 0, "the backlog fits under the agent's cap");
    }
    buffer.flush().expect("flush buffer");
    assert_eq!(buffer.len(), TICKS);
    Backlog { incarnation, frame_bytes }
}

fn write_agent_config(dir: &Path, agg: &Aggregator, buffer: &str) {
    let config = format!(
        "aggregator = \"127.0.0.1:{}\"\nserver_name = \"localhost\"\nstate_dir = \"{}\"\ninterval = \"1s\"\n{buffer}",
        agg.quic_port,
        dir.display()
    );
    std::fs::write(dir.join("agent.toml"), config).expect("agent config");
}

fn start_agent(dir: &Path) -> Proc {
    let cfg = dir.join("agent.toml");
    Proc::spawn(&bin("twinwatch-agent"), &["--config", cfg.to_str().expect("utf-8"), "run"], dir.join("agent.log"))
}

/// Ticks the aggregator's ledger of `incarnation` holds for host `bench`; `None` before it has one.
fn ticks_stored(agg: &Aggregator, incarnation: u64) -> Option<u64> {
    let host = agg.get("/api/v1/hosts/bench")?;
    let ledgers = host["ingest"]["incarnations"].as_array()?;
    ledgers.iter().find(|l| l["incarnation"].as_u64() == Some(incarnation))?["ticks_stored"].as_u64()
}

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
    let backlog = write_backlog(&agent_dir);
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
