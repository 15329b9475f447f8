//! Probe benchmark: CPU per plain-HTTP probe, the agent next to blackbox_exporter, same run.
//!
//! `cargo xtask bench` runs it (release binaries). A local web server answers `/health`. One agent
//! runs [`PROBES`] HTTP probes of it every second with every host collector off; a second agent,
//! configured the same but with no probes, measures what an agent costs without them, which is
//! subtracted. blackbox_exporter is asked for the same probe as many times per second, as
//! Prometheus would ask it. CPU comes from each process's threads' schedstat, per 10 s window;
//! printed are the medians of CPU per probe and their ratio. Results also go to
//! `target/bench/probes.json`.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use twinwatch_tests::bench::{median, report_dir, seconds_arg, usage};
use twinwatch_tests::web::Web;
use twinwatch_tests::{bin, http_get, wait_for, Aggregator, Proc, TempDir};

const BLACKBOX: &str = "/usr/bin/prometheus-blackbox-exporter";
const WINDOW: usize = 10;
/// Probes per second, on each side.
const PROBES: usize = 10;
/// Every host source, switched off so the agents measure probing alone.
const SOURCES: [&str; 20] = [
    "cpu",
    "pressure",
    "memory",
    "vmstat",
    "load",
    "network",
    "netclass",
    "sockstat",
    "netstat",
    "tcp",
    "conntrack",
    "disk",
    "filesystem",
    "hwmon",
    "thermal",
    "power_supply",
    "processes",
    "filefd",
    "gpu",
    "info",
];

fn start_agent(agg: &Aggregator, dir: &Path, name: &str, probes: &str) -> Proc {
    agg.issue(name, "dc1", &dir.join("certs"));
    let mut config = format!(
        "aggregator = \"127.0.0.1:{}\"\nserver_name = \"localhost\"\nstate_dir = \"{}\"\ninterval = \"1s\"\n{probes}\n[collectors]\n",
        agg.quic_port,
        dir.display()
    );
    for source in SOURCES {
        config.push_str(&format!("{source} = \"off\"\n"));
    }
    std::fs::write(dir.join("agent.toml"), config).expect("agent config");
    let cfg = dir.join("agent.toml");
    Proc::spawn(&bin("twinwatch-agent"), &["--config", cfg.to_str().expect("utf-8"), "run"], dir.join("agent.log"))
}

fn main() {
    let seconds = seconds_arg(120, WINDOW);
    assert!(Path::new(BLACKBOX).exists(), "{BLACKBOX} is missing: `cargo xtask bench` installs it");

    let tmp = TempDir::new("bench-probes");
    let web = Web::start(&tmp.path().join("web"));
    let target = format!("http://127.0.0.1:{}/health", web.http_port);
    let agg = Aggregator::start(&tmp.path().join("aggregator"));
    let mut probes = String::from("[probes]\ninterval = \"1s\"\n");
    for i in 0..PROBES {
        probes.push_str(&format!("[[probe]]\nname = \"health-{i}\"\nurl = \"{target}\"\n"));
    }
    let agent = start_agent(&agg, &tmp.path().join("agent"), "bench", &probes);
    let idle = start_agent(&agg, &tmp.path().join("idle"), "idle", "");

    let config = tmp.path().join("blackbox.yml");
    std::fs::write(&config, "modules:\n  http_2xx:\n    prober: http\n    timeout: 5s\n").expect("blackbox config");
    let mut blackbox = Proc::spawn(
        Path::new(BLACKBOX),
        &[&format!("--config.file={}", config.display()), "--web.listen-address=127.0.0.1:0"],
        tmp.path().join("blackbox.log"),
    );
    let port = blackbox.wait_logged_addr("msg=\"Listening on\"", "address").port();
    let probe_path = format!("/probe?module=http_2xx&target={target}");
    let ask = || {
        let (status, text) = http_get(port, &probe_path, None).expect("blackbox probe");
        assert!(status == 200 && text.contains("probe_success 1"), "blackbox: {status} {text}");
    };
    wait_for("blackbox_exporter", Duration::from_secs(20), || {
        matches!(http_get(port, "/-/healthy", None), Ok((200, _))).then_some(())
    });
    wait_for("the agent's probes in the API", Duration::from_secs(30), || agg.probe_runs("bench"));

    eprintln!("bench: warming up 15 s, then measuring {seconds} s");
    let warm_until = Instant::now() + Duration::from_secs(15);
    while Instant::now() < warm_until {
        ask();
        // Paced at the measured rate: the warm-up is the same load as the measurement.
        std::thread::sleep(Duration::from_millis(1000 / PROBES as u64));
    }

    let pids = [agent.pid(), idle.pid(), blackbox.pid()];
    let mut cpu_ms: Vec<Vec<f64>> = vec![Vec::new(); 3];
    let mut rss: Vec<Vec<f64>> = vec![Vec::new(); 3];
    let mut window: Vec<u64> = pids.iter().map(|p| usage(*p).expect("alive").0).collect();
    let mut window_runs = agg.probe_runs("bench").expect("runs");
    let mut window_asked = 0usize;
    let (mut our_probes, mut their_probes) = (0.0, 0usize);
    let mut per_probe: [Vec<f64>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    let start = Instant::now();
    for second in 1..=seconds {
        let next = start + Duration::from_secs(second as u64);
        for i in 0..PROBES {
            ask();
            window_asked += 1;
            let slot = next - Duration::from_secs(1) + Duration::from_millis((i as u64 + 1) * 1000 / PROBES as u64);
            // Paced by the clock: the probe rate is what is measured.
            std::thread::sleep(slot.saturating_duration_since(Instant::now()));
        }
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        for (i, pid) in pids.iter().enumerate() {
            rss[i].push(usage(*pid).expect("alive").1 as f64);
        }
        if second % WINDOW == 0 {
            let now: Vec<u64> = pids.iter().map(|p| usage(*p).expect("alive").0).collect();
            let spent: Vec<f64> = now.iter().zip(&window).map(|(n, w)| n.saturating_sub(*w) as f64 / 1e6).collect();
            // Results reach the aggregator within a second or so; the window edges blur by that.
            let ran = agg.probe_runs("bench").expect("runs");
            let ours = ran - window_runs;
            for (i, ms) in spent.iter().enumerate() {
                cpu_ms[i].push(*ms);
            }
            per_probe[0].push((spent[0] - spent[1]) / ours);
            per_probe[1].push(spent[2] / window_asked as f64);
            per_probe[2].push(spent[0] / ours);
            our_probes += ours;
            their_probes += window_asked;
            window = now;
            window_runs = ran;
            window_asked = 0;
        }
    }
    let ours = median(per_probe[0].clone());
    let theirs = median(per_probe[1].clone());
    let gross = median(per_probe[2].clone());
    let mib = |b: f64| b / (1024.0 * 1024.0);
    let (agent_rss, idle_rss, bb_rss) = (median(rss[0].clone()), median(rss[1].clone()), median(rss[2].clone()));
    println!("probes: {PROBES} plain-HTTP probes per second on loopback, {seconds} s measured, {WINDOW} s windows");
    println!("| figure (median) | twinwatch-agent | blackbox_exporter | ratio |");
    println!("| --- | --- | --- | --- |");
    println!("| CPU per probe, ms | {ours:.3} | {theirs:.3} | {:.1}x |", theirs / ours);
    println!("| CPU per probe incl. the idle agent's own cost, ms | {gross:.3} | | |");
    println!(
        "| resident memory, MiB | {:.1} (idle agent {:.1}) | {:.1} | {:.1}x |",
        mib(agent_rss),
        mib(idle_rss),
        mib(bb_rss),
        bb_rss / agent_rss
    );
    println!("| probes measured | {our_probes:.0} | {their_probes} | |");
    let report = json!({
        "seconds": seconds, "probes_per_second": PROBES,
        "agent": { "cpu_ms_per_probe_median": ours, "cpu_ms_per_probe_windows": per_probe[0],
                   "cpu_ms_per_probe_gross": gross, "rss_bytes_median": agent_rss, "probes": our_probes },
        "idle_agent": { "cpu_ms_windows": cpu_ms[1], "rss_bytes_median": idle_rss },
        "blackbox_exporter": { "cpu_ms_per_probe_median": theirs, "cpu_ms_per_probe_windows": per_probe[1],
                               "rss_bytes_median": bb_rss, "probes": their_probes },
    });
    let _ = std::fs::write(report_dir().join("probes.json"), serde_json::to_string_pretty(&report).unwrap_or_default());
}
