//! Host benchmark: the agent next to node_exporter and blackbox_exporter, on the same host, doing
//! the same work in the same window.
//!
//! `cargo xtask bench` runs it (release binaries). A local web server answers `/health` on
//! loopback. For `--seconds` (default 600) the agent samples every second and runs [`PROBES`]
//! HTTP probes of that server every [`PROBE_EVERY`] s, shipping to a local aggregator; meanwhile
//! node_exporter is scraped every second with gzip, as Prometheus would, and blackbox_exporter is
//! asked for the same [`PROBES`] probes every [`PROBE_EVERY`] s (one a second). Measuring starts
//! as soon as all three answer, with no warm-up.
//!
//! CPU: each process's `utime + stime` over the whole window (exited threads included), the
//! same since the process started, and the median of 10 s windows (threads' schedstat).
//! Memory: resident bytes at the first and last reading, the median and the maximum, and at the
//! end split into anonymous and file-backed. The load average is recorded before and after.
//! With `--qemu-aarch64 BIN` the agent is that aarch64 binary under `qemu-aarch64-static -cpu
//! cortex-a57` (the UDM Pro's core) with the UniFi OS package's buffer and process settings; its
//! memory is the guest's own mappings (see `guest_rss_split`), and its CPU is qemu's, emulation
//! included, so only its memory stands for the router. Results go to `host-aarch64.json`.
//! Also printed: bytes per sample on the wire (the agent's own counters, read back through the
//! aggregator's API) against node_exporter's gzipped scrape. Results also go to
//! `target/bench/host.json`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use twinwatch_tests::bench::{
    cpu_seconds, guest_rss_split, loadavg, median, report_dir, rss_split, seconds_arg, threads, usage,
};
use twinwatch_tests::http::request_with;
use twinwatch_tests::web::Web;
use twinwatch_tests::{bin, http_get, wait_for, Aggregator, Proc, TempDir};

const NODE_EXPORTER: &str = "/usr/bin/prometheus-node-exporter";
const BLACKBOX: &str = "/usr/bin/prometheus-blackbox-exporter";
const WINDOW: usize = 10;
/// HTTP probes, on each side, every [`PROBE_EVERY`] seconds.
const PROBES: usize = 10;
const PROBE_EVERY: usize = 10;

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

/// What is read of one process every second, and what it comes to.
struct Measured {
    name: &'static str,
    pid: i32,
    cpu_windows: Vec<f64>,
    rss: Vec<f64>,
    schedstat_at: (u64, Instant),
    cpu_at_start: f64,
    /// A qemu process: memory is its guest's.
    guest: bool,
}

impl Measured {
    fn new(name: &'static str, pid: i32) -> Measured {
        let ns = usage(pid).expect("process alive").0;
        let cpu = cpu_seconds(pid).expect("process alive").0;
        let schedstat_at = (ns, Instant::now());
        Measured { name, pid, cpu_windows: vec![], rss: vec![], schedstat_at, cpu_at_start: cpu, guest: false }
    }

    fn split(&self) -> (u64, u64) {
        if self.guest {
            guest_rss_split(self.pid)
        } else {
            rss_split(self.pid)
        }
    }

    fn read(&mut self, window_ends: bool) {
        let (ns, rss) = usage(self.pid).unwrap_or_else(|| panic!("{} exited", self.name));
        let rss = if self.guest {
            let (anon, file) = guest_rss_split(self.pid);
            anon + file
        } else {
            rss
        };
        self.rss.push(rss as f64);
        if window_ends {
            let (ns0, at) = self.schedstat_at;
            self.cpu_windows.push(ns.saturating_sub(ns0) as f64 / 1e9 / at.elapsed().as_secs_f64() * 100.0);
            self.schedstat_at = (ns, Instant::now());
        }
    }

    /// Percent of one core over the window, over the process's life, and its CPU seconds.
    fn cpu(&self, window: f64) -> (f64, f64, f64) {
        let (now, age) = cpu_seconds(self.pid).expect("process alive");
        ((now - self.cpu_at_start) / window * 100.0, now / age * 100.0, now - self.cpu_at_start)
    }
}

fn main() {
    let seconds = seconds_arg(600, WINDOW);
    let qemu = std::env::args().skip_while(|a| a != "--qemu-aarch64").nth(1).map(std::path::PathBuf::from);
    let agent_bin = qemu.clone().unwrap_or_else(|| bin("twinwatch-agent"));
    for peer in [NODE_EXPORTER, BLACKBOX] {
        assert!(Path::new(peer).exists(), "{peer} is missing: `cargo xtask bench` installs it");
    }

    let tmp = TempDir::new("bench-host");
    let web = Web::start(&tmp.path().join("web"));
    let target = format!("http://127.0.0.1:{}/health", web.http_port);
    let agg = Aggregator::start(&tmp.path().join("aggregator"));
    let agent_dir = tmp.path().join("agent");
    agg.issue("bench", "dc1", &agent_dir.join("certs"));
    let mut config = format!(
        "aggregator = \"127.0.0.1:{}\"\nserver_name = \"localhost\"\nstate_dir = \"{}\"\ninterval = \"1s\"\n\
         [probes]\ninterval = \"{PROBE_EVERY}s\"\n",
        agg.quic_port,
        agent_dir.display()
    );
    if qemu.is_some() {
        // packaging/udm/agent.toml's settings.
        config.push_str("[buffer]\nmax_bytes = \"32MiB\"\nflush_interval = \"1s\"\n[processes]\ntop = 5\n");
    }
    for i in 0..PROBES {
        config.push_str(&format!("[[probe]]\nname = \"health-{i}\"\nurl = \"{target}\"\n"));
    }
    std::fs::write(agent_dir.join("agent.toml"), config).expect("agent config");
    let agent_cfg = agent_dir.join("agent.toml");
    let cfg = agent_cfg.to_str().expect("utf-8");
    let agent = match &qemu {
        Some(b) => Proc::spawn(
            Path::new("/usr/bin/qemu-aarch64-static"),
            &["-cpu", "cortex-a57", b.to_str().expect("utf-8"), "--config", cfg, "run"],
            agent_dir.join("agent.log"),
        ),
        None => Proc::spawn(&agent_bin, &["--config", cfg, "run"], agent_dir.join("agent.log")),
    };
    let mut exporter = Proc::spawn(
        Path::new(NODE_EXPORTER),
        &["--web.listen-address=127.0.0.1:0"],
        tmp.path().join("node_exporter.log"),
    );
    let blackbox_cfg = tmp.path().join("blackbox.yml");
    std::fs::write(&blackbox_cfg, "modules:\n  http_2xx:\n    prober: http\n    timeout: 5s\n")
        .expect("blackbox config");
    let mut blackbox = Proc::spawn(
        Path::new(BLACKBOX),
        &[&format!("--config.file={}", blackbox_cfg.display()), "--web.listen-address=127.0.0.1:0"],
        tmp.path().join("blackbox.log"),
    );
    let port = exporter.wait_logged_addr("msg=\"Listening on\"", "address").port();
    let bb_port = blackbox.wait_logged_addr("msg=\"Listening on\"", "address").port();
    let probe_path = format!("/probe?module=http_2xx&target={target}");
    let ask_blackbox = || {
        let (status, text) = http_get(bb_port, &probe_path, None).expect("blackbox probe");
        assert!(status == 200 && text.contains("probe_success 1"), "blackbox: {status} {text}");
    };
    wait_for("node_exporter", Duration::from_secs(20), || scrape_gzip(port).ok());
    wait_for("blackbox_exporter", Duration::from_secs(20), || {
        matches!(http_get(bb_port, "/-/healthy", None), Ok((200, _))).then_some(())
    });
    wait_for("the agent's host in the API", Duration::from_secs(30), || agent_counters(&agg));

    let load_before = loadavg();
    eprintln!("bench: measuring {seconds} s from now, no warm-up; load average {load_before}");
    let mut procs = [
        Measured { guest: qemu.is_some(), ..Measured::new("twinwatch-agent", agent.pid()) },
        Measured::new("node_exporter", exporter.pid()),
        Measured::new("blackbox_exporter", blackbox.pid()),
    ];
    let first = agent_counters(&agg).expect("agent counters");
    let first_runs = agg.probe_runs("bench").unwrap_or(0.0);
    let first_split = procs[0].split();
    let mut gzip_bytes = Vec::with_capacity(seconds);
    let mut asked = 0usize;
    let start = Instant::now();
    for second in 1..=seconds {
        gzip_bytes.push(scrape_gzip(port).expect("scrape node_exporter") as f64);
        // One probe a second for the first PROBES seconds of every PROBE_EVERY: PROBES per period.
        if (second - 1) % PROBE_EVERY < PROBES {
            ask_blackbox();
            asked += 1;
        }
        let next = start + Duration::from_secs(second as u64);
        // Paced by the clock: one scrape and one reading a second is what is measured.
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        for p in &mut procs {
            p.read(second % WINDOW == 0);
        }
    }
    let window = start.elapsed().as_secs_f64();
    let load_after = loadavg();
    let last = agent_counters(&agg).expect("agent counters");
    let agent_runs = agg.probe_runs("bench").unwrap_or(0.0) - first_runs;
    let samples = last.0 - first.0;
    let wire = (last.1 - first.1) / samples;
    let udp = (last.2 - first.2) / samples;
    let (_, text) = http_get(port, "/metrics", None).expect("plain scrape");
    let exporter_samples = twinwatch_tests::prometheus::parse(&text).expect("node_exporter's metrics").len() as f64;
    let exporter_wire = median(gzip_bytes) / exporter_samples;

    let mib = |b: f64| b / (1024.0 * 1024.0);
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len() as f64).unwrap_or(f64::NAN);
    let split: Vec<(u64, u64)> = procs.iter().map(Measured::split).collect();
    let cpu: Vec<(f64, f64, f64)> = procs.iter().map(|p| p.cpu(window)).collect();
    println!(
        "host: 1 s sampling and {PROBES} HTTP probes every {PROBE_EVERY} s, {window:.0} s measured from start-up; \
         load average {load_before} before, {load_after} after"
    );
    if qemu.is_some() {
        println!("agent: aarch64 under qemu-aarch64-static -cpu cortex-a57: its memory is the guest's, its CPU qemu's");
    }
    println!("| figure | twinwatch-agent | node_exporter | blackbox_exporter |");
    println!("| --- | --- | --- | --- |");
    let row = |name: &str, f: &dyn Fn(usize) -> String| {
        println!("| {name} | {} | {} | {} |", f(0), f(1), f(2));
    };
    row("CPU over the window, % of one core", &|i| format!("{:.3} ({:.2} s)", cpu[i].0, cpu[i].2));
    row("CPU since the process started, %", &|i| format!("{:.3}", cpu[i].1));
    row("CPU, median of 10 s windows, %", &|i| format!("{:.3}", median(procs[i].cpu_windows.clone())));
    row("RSS first / median / max / last, MiB", &|i| {
        let r = &procs[i].rss;
        let max = r.iter().copied().fold(0.0, f64::max);
        format!("{:.1} / {:.1} / {:.1} / {:.1}", mib(r[0]), mib(median(r.clone())), mib(max), mib(r[r.len() - 1]))
    });
    row("RSS at the end, anonymous + file-backed, MiB", &|i| {
        format!("{:.1} + {:.1}", mib(split[i].0 as f64), mib(split[i].1 as f64))
    });
    row("threads", &|i| threads(procs[i].pid).to_string());
    println!(
        "agent: RSS at the first reading {:.1} + {:.1} MiB; {agent_runs:.0} probe runs (blackbox_exporter: {asked})",
        mib(first_split.0 as f64),
        mib(first_split.1 as f64)
    );
    println!("| bytes per sample on the wire | {wire:.2} ({udp:.2} as UDP) | {exporter_wire:.2} (gzip) | |");
    println!("| samples per second | {:.0} | {exporter_samples:.0} | |", samples / window);
    println!(
        "| binary size, MiB | {:.1} | {:.1} | {:.1} |",
        mib(size(&agent_bin)),
        mib(size(Path::new(NODE_EXPORTER))),
        mib(size(Path::new(BLACKBOX)))
    );

    let entry = |i: usize| {
        let p = &procs[i];
        json!({ "cpu_percent_window": cpu[i].0, "cpu_percent_lifetime": cpu[i].1, "cpu_seconds_window": cpu[i].2,
                "cpu_percent_windows": p.cpu_windows, "rss_bytes": p.rss,
                "rss_anon_bytes_end": split[i].0, "rss_file_bytes_end": split[i].1, "threads": threads(p.pid) })
    };
    let mut agent_entry = entry(0);
    agent_entry["wire_bytes_per_sample"] = json!(wire);
    agent_entry["udp_bytes_per_sample"] = json!(udp);
    agent_entry["probe_runs"] = json!(agent_runs);
    agent_entry["binary_bytes"] = json!(size(&agent_bin));
    agent_entry["under_qemu_aarch64"] = json!(qemu.is_some());
    let mut exporter_entry = entry(1);
    exporter_entry["gzip_bytes_per_sample"] = json!(exporter_wire);
    exporter_entry["samples_per_scrape"] = json!(exporter_samples);
    let mut blackbox_entry = entry(2);
    blackbox_entry["probes"] = json!(asked);
    let report: Value = json!({
        "seconds": window, "probes": PROBES, "probe_every_seconds": PROBE_EVERY,
        "loadavg_before": load_before, "loadavg_after": load_after,
        "agent": agent_entry, "node_exporter": exporter_entry, "blackbox_exporter": blackbox_entry,
    });
    let name = if qemu.is_some() { "host-aarch64.json" } else { "host.json" };
    let _ = std::fs::write(report_dir().join(name), serde_json::to_string_pretty(&report).unwrap_or_default());
}
