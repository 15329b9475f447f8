//! Accuracy against a trusted peer: Debian's node_exporter and our agent read the same host at
//! the same moment, and every series they both export must agree.
//!
//! Needs `prometheus-node-exporter` (`cargo xtask test` installs it). No expected value is written
//! here: node_exporter is the reference.

use std::process::Command;
use std::time::Duration;

use twinwatch_tests::prometheus::parse;
use twinwatch_tests::{bin, http_get, wait_for, Proc, TempDir};

const NODE_EXPORTER: &str = "/usr/bin/prometheus-node-exporter";

/// Series families compared, by prefix. Memory is the fields an operator reads; the rest of
/// meminfo (AnonPages, Mapped, ...) moves by the reading process's own footprint between two reads.
const FAMILIES: &[&str] = &[
    "node_memory_MemTotal_bytes",
    "node_memory_MemAvailable_bytes",
    "node_memory_MemFree_bytes",
    "node_memory_Buffers_bytes",
    "node_memory_Cached_bytes",
    "node_memory_Shmem_bytes",
    "node_memory_Slab_bytes",
    "node_memory_SwapTotal_bytes",
    "node_memory_SwapFree_bytes",
    "node_memory_Dirty_bytes",
    "node_memory_Writeback_bytes",
    "node_filesystem_size_bytes",
    "node_filesystem_avail_bytes",
    "node_filesystem_free_bytes",
    "node_filesystem_files{",
    "node_filesystem_readonly",
    "node_network_receive_",
    "node_network_transmit_",
    "node_disk_",
    "node_cpu_seconds_total",
    "node_load",
    "node_boot_time_seconds",
    "node_context_switches_total",
    "node_forks_total",
    "node_intr_total",
    "node_pressure_",
    "node_vmstat_",
    "node_network_up",
    "node_network_carrier",
    "node_network_mtu_bytes",
    "node_network_speed_bytes",
    "node_network_info",
    "node_sockstat_",
    "node_netstat_",
    "node_tcp_connection_states",
    "node_nf_conntrack_",
    "node_filefd_",
    "node_processes_pids",
    "node_processes_max_",
    "node_uname_info",
    "node_os_info",
    "node_hwmon_",
    "node_thermal_zone_temp",
    "node_power_supply_",
];

/// Within 1 %, or within a small absolute slack: 1 MiB for memory (a page cache flicker between
/// the two reads), 64 open files and 16 sockets (the reading processes' own: node_exporter reads
/// sockstat while our scrape's connection is open on both ends, the agent while it is not), 2
/// for everything else (counters near zero).
fn close(key: &str, ours: f64, theirs: f64) -> bool {
    let diff = (ours - theirs).abs();
    let slack = if key.starts_with("node_memory_") {
        1024.0 * 1024.0
    } else if key.starts_with("node_filefd_") {
        64.0
    } else if key.starts_with("node_sockstat_") {
        16.0
    } else {
        2.0
    };
    diff <= 0.01 * theirs.abs().max(ours.abs()) || diff <= slack
}

#[test]
fn agent_agrees_with_node_exporter() {
    assert!(
        std::path::Path::new(NODE_EXPORTER).exists(),
        "{NODE_EXPORTER} is missing: install prometheus-node-exporter (cargo xtask test does)"
    );
    let tmp = TempDir::new("node-exporter");
    let mut exporter = Proc::spawn(
        std::path::Path::new(NODE_EXPORTER),
        &[
            "--web.listen-address=127.0.0.1:0",
            // Off by default in node_exporter; on in the agent.
            "--collector.processes",
            "--collector.tcpstat",
        ],
        tmp.path().join("node_exporter.log"),
    );
    let port = exporter.wait_logged_addr("msg=\"Listening on\"", "address").port();
    wait_for("node_exporter to answer", Duration::from_secs(20), || {
        matches!(http_get(port, "/metrics", None), Ok((200, _))).then_some(())
    });

    // Ours is read between two of node_exporter's reads, several times, and the closest pass is
    // kept: a value that moved between the reads (a busy counter while other tests run) agrees
    // when ours lies between node_exporter's two readings or close to either.
    let agent = bin("twinwatch-agent");
    let mut best: Option<(usize, Vec<String>, usize)> = None;
    for _ in 0..3 {
        let before = parse(&http_get(port, "/metrics", None).expect("scrape").1).expect("node_exporter's metrics");
        let out = Command::new(&agent).arg("sample").output().expect("twinwatch-agent sample");
        assert!(out.status.success());
        let ours = parse(&String::from_utf8_lossy(&out.stdout)).expect("the agent's sample");
        let theirs = parse(&http_get(port, "/metrics", None).expect("scrape").1).expect("node_exporter's metrics");
        let mut compared = 0;
        let mut mismatches = Vec::new();
        for (key, &value) in &ours {
            if !FAMILIES.iter().any(|f| key.starts_with(f)) {
                continue;
            }
            let (Some(&first), Some(&second)) = (before.get(key), theirs.get(key)) else { continue };
            compared += 1;
            let between = first.min(second) <= value && value <= first.max(second);
            if !(between || close(key, value, first) || close(key, value, second)) {
                mismatches.push(format!("{key}: ours {value} node_exporter {first} then {second}"));
            }
        }
        let missing = ours.keys().filter(|k| k.starts_with("node_") && !theirs.contains_key(*k)).count();
        if best.as_ref().is_none_or(|(_, m, _)| mismatches.len() < m.len()) {
            best = Some((compared, mismatches, missing));
        }
        if best.as_ref().is_some_and(|(_, m, _)| m.is_empty()) {
            break;
        }
    }
    let (compared, mismatches, missing) = best.unwrap();
    assert!(mismatches.is_empty(), "{} of {compared} series disagree:\n{}", mismatches.len(), mismatches.join("\n"));
    // Enough was compared for the agreement to mean something: every CPU mode of every core,
    // the operator's meminfo fields, and at least one filesystem, interface and disk.
    let cores = std::thread::available_parallelism().unwrap().get();
    assert!(compared >= 8 * cores + 30, "only {compared} series compared");
    eprintln!("{compared} series agree with node_exporter; {missing} of ours have no node_exporter counterpart");
}
