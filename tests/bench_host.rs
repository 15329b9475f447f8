//! Host-sampling benchmark: the agent next to node_exporter, on the same host, in the same run.
//!
//! `cargo xtask bench` runs it (release binaries). For `--seconds` (default 120) the agent samples
//! every second and ships to a local aggregator while node_exporter is scraped every second with
//! gzip, as Prometheus would. Every second both processes' CPU time (summed over their threads'
//! schedstat, in nanoseconds) and resident memory are read from /proc; CPU is reported per 10 s
//! window. Printed: medians, the ratio node_exporter / agent,
//! and bytes per sample on the wire (the agent's own counters, read back through the aggregator's
//! API) against node_exporter's gzipped scrape. Results also go to `target/bench/host.json`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use twinwatch_tests::bench::{median, report_dir, seconds_arg, usage};
use twinwatch_tests::http::request_with;
use twinwatch_tests::{bin, http_get, wait_for, Aggregator, Proc, TempDir};

const NODE_EXPORTER: &str = "/usr/bin/prometheus-node-exporter";
const WINDOW: usize = 10;

/// One scrape as Prometheus does it (gzip accepted): the compressed body length.
fn scrape_gzip(port: u16) -> std::io::Result<usize> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let headers = [("Accept-Encoding", "gzip"), ("Connection", "close")];
    let answer = request_with(addr, "GET", "/metrics", &headers, b"")?;
    assert_eq!(answer.header("content-encoding"), Some("gzip"), "node_exporter did not gzip: {:?}", answer.headers);
    Ok(answer.bytes.len())
}

/// The agent's own counters as the aggregator has them.
fn agent_counters(agg: &Aggregator) -> Option<(f64, f64, f64)> {
    let host = agg.get("/api/v1/hosts/bench")?;
    let a = &host["agent"];
    Some((a["samples_total"].as_f64()?, a["sent_bytes_total"].as_f64()?, a["udp_tx_bytes_total"].as_f64()?))
}

struct Series {
    cpu_percent: Vec<f64>,
    rss_bytes: Vec<f64>,
}

fn main() {
    let seconds = seconds_arg(120, WINDOW);
    assert!(Path::new(NODE_EXPORTER).exists(), "{NODE_EXPORTER} is missing: `cargo xtask bench` installs it");

    let tmp = TempDir::new("bench-host");
    let agg = Aggregator::start(&tmp.path().join("aggregator"));
    let agent_dir = tmp.path().join("agent");
    agg.issue("bench", "dc1", &agent_dir.join("certs"));
    std::fs::write(
        agent_dir.join("agent.toml"),
        format!(
            "aggregator = \"127.0.0.1:{}\"\nserver_name = \"localhost\"\nstate_dir = \"{}\"\ninterval = \"1s\"\n",
            agg.quic_port,
            agent_dir.display()
        ),
    )
    .expect("agent config");
    let agent_cfg = agent_dir.join("agent.toml");
    let agent = Proc::spawn(
        &bin("twinwatch-agent"),
        &["--config", agent_cfg.to_str().expect("utf-8"), "run"],
        agent_dir.join("agent.log"),
    );
    let mut exporter = Proc::spawn(
        Path::new(NODE_EXPORTER),
        &["--web.listen-address=127.0.0.1:0"],
        tmp.path().join("node_exporter.log"),
    );
    let port = exporter.wait_logged_addr("msg=\"Listening on\"", "address").port();
    wait_for("node_exporter", Duration::from_secs(20), || scrape_gzip(port).ok());
    wait_for("the agent's host in the API", Duration::from_secs(30), || agent_counters(&agg));

    eprintln!("bench: warming up 15 s, then measuring {seconds} s");
    let warm_until = Instant::now() + Duration::from_secs(15);
    while Instant::now() < warm_until {
        let _ = scrape_gzip(port);
        // Paced at the measured rate: the warm-up is the same load as the measurement.
        std::thread::sleep(Duration::from_secs(1));
    }

    let pids = [agent.pid(), exporter.pid()];
    let mut series: Vec<Series> = (0..2).map(|_| Series { cpu_percent: vec![], rss_bytes: vec![] }).collect();
    let mut window_start: Vec<(u64, Instant)> =
        pids.iter().map(|p| (usage(*p).expect("process alive").0, Instant::now())).collect();
    let first = agent_counters(&agg).expect("agent counters");
    let mut gzip_bytes = Vec::with_capacity(seconds);
    let start = Instant::now();
    for second in 1..=seconds {
        gzip_bytes.push(scrape_gzip(port).expect("scrape node_exporter") as f64);
        let next = start + Duration::from_secs(second as u64);
        // Paced by the clock: one scrape and one reading a second is what is measured.
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        for (i, pid) in pids.iter().enumerate() {
            let (ticks, rss) = usage(*pid).expect("process alive");
            series[i].rss_bytes.push(rss as f64);
            if second % WINDOW == 0 {
                let (t0, at) = window_start[i];
                let cpu = ticks.saturating_sub(t0) as f64 / 1e9 / at.elapsed().as_secs_f64() * 100.0;
                series[i].cpu_percent.push(cpu);
                window_start[i] = (ticks, Instant::now());
            }
        }
    }
    let last = agent_counters(&agg).expect("agent counters");
    let samples = last.0 - first.0;
    let wire = (last.1 - first.1) / samples;
    let udp = (last.2 - first.2) / samples;
    let (_, text) = http_get(port, "/metrics", None).expect("plain scrape");
    let exporter_samples = twinwatch_tests::prometheus::parse(&text).expect("node_exporter's metrics").len() as f64;
    let exporter_wire = median(gzip_bytes) / exporter_samples;

    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len() as f64).unwrap_or(f64::NAN);
    let agent_cpu = median(series[0].cpu_percent.clone());
    let exporter_cpu = median(series[1].cpu_percent.clone());
    let agent_rss = median(series[0].rss_bytes.clone());
    let exporter_rss = median(series[1].rss_bytes.clone());
    let agent_size = size(&bin("twinwatch-agent"));
    let exporter_size = size(Path::new(NODE_EXPORTER));
    let mib = |b: f64| b / (1024.0 * 1024.0);
    println!("host sampling, 1 s, {seconds} s measured ({} CPU windows of {WINDOW} s)", series[0].cpu_percent.len());
    println!("| figure (median) | twinwatch-agent | node_exporter | ratio |");
    println!("| --- | --- | --- | --- |");
    println!("| CPU, % of one core | {agent_cpu:.3} | {exporter_cpu:.3} | {:.1}x |", exporter_cpu / agent_cpu);
    println!(
        "| resident memory, MiB | {:.1} | {:.1} | {:.1}x |",
        mib(agent_rss),
        mib(exporter_rss),
        exporter_rss / agent_rss
    );
    println!(
        "| bytes per sample on the wire | {wire:.2} ({udp:.2} as UDP) | {exporter_wire:.2} (gzip) | {:.1}x |",
        exporter_wire / udp
    );
    println!("| samples per second | {:.0} | {exporter_samples:.0} | |", samples / seconds as f64);
    println!(
        "| binary size, MiB | {:.1} | {:.1} | {:.1}x |",
        mib(agent_size),
        mib(exporter_size),
        exporter_size / agent_size
    );

    let report: Value = json!({
        "seconds": seconds,
        "agent": { "cpu_percent_median": agent_cpu, "cpu_percent_windows": series[0].cpu_percent,
                   "rss_bytes_median": agent_rss, "wire_bytes_per_sample": wire,
                   "udp_bytes_per_sample": udp, "samples_per_second": samples / seconds as f64,
                   "binary_bytes": agent_size },
        "node_exporter": { "cpu_percent_median": exporter_cpu, "cpu_percent_windows": series[1].cpu_percent,
                           "rss_bytes_median": exporter_rss, "gzip_bytes_per_sample": exporter_wire,
                           "samples_per_scrape": exporter_samples, "binary_bytes": exporter_size },
    });
    let _ = std::fs::write(report_dir().join("host.json"), serde_json::to_string_pretty(&report).unwrap_or_default());
}
