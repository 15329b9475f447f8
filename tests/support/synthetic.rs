//! A synthetic host for benchmarks: [`SERIES`] node_exporter-like series (counters growing
//! irregularly with bursts, gauges on random walks, load averages as two-decimal floats), the
//! same in every run for a given seed, sampled once a second as the agent's sampler would.

use twinwatch_common::sample::{Metric, Sample, SeriesKey, Value};

/// Series the synthetic host reports.
pub const SERIES: usize = 500;

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
pub struct Host {
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

    pub fn new(seed: u64) -> Host {
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
    pub fn sample(&mut self, ts_ms: i64) -> Sample {
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
