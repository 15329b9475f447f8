//! The multi-DC test bed: each DC and the aggregator in network namespaces of their own, linked
//! only through userspace UDP relays in the test's namespace that impair the path on demand.
//! Counts are exact: the aggregator must hold every batch an agent produced, once.

use std::time::{Duration, Instant};

use serde_json::Value;
use twinwatch_tests::netns::{Ns, Testbed};
use twinwatch_tests::relay::{Impairment, Relay};
use twinwatch_tests::{bin, wait_for, Aggregator, Proc, TempDir};

/// Starts an agent in `ns`, shipping through `relay`, sampling every 250 ms.
fn agent(bed: &Testbed, ns: &Ns, agg: &Aggregator, relay: &Relay, dir: &std::path::Path, id: &str, dc: &str) -> Proc {
    agg.issue(id, dc, &dir.join("certs"));
    let config = format!(
        "aggregator = \"{}\"\nserver_name = \"localhost\"\nstate_dir = \"{}\"\ninterval = \"250ms\"\n[buffer]\nflush_interval = \"100ms\"\n",
        relay.listen,
        dir.display()
    );
    std::fs::write(dir.join("agent.toml"), config).expect("agent config");
    let cfg = dir.join("agent.toml");
    bed.spawn(ns, &bin("twinwatch-agent"), &["--config", cfg.to_str().expect("utf-8"), "run"], dir.join("agent.log"))
}

/// What the aggregator holds of `id`, once every batch up to the last one applied is stored
/// exactly once: `(batches stored, host twin, batches report)`.
fn complete(agg: &Aggregator, id: &str) -> Option<(u64, Value, Value)> {
    let host = agg.get(&format!("/api/v1/hosts/{id}"))?;
    let report = agg.get(&format!("/api/v1/hosts/{id}/batches"))?;
    // The batch carrying a sample reports the batches pushed before it.
    let produced_before_last_applied = host["agent"]["batches_total"].as_u64()?;
    let stored = report["stored"].as_array()?;
    let current = stored.iter().find(|s| s["incarnation"] == report["incarnation"])?;
    let runs = current["runs"].as_array()?;
    let count = current["count"].as_u64()?;
    let c = &report["counters"];
    let whole = runs.len() == 1
        && runs[0][0] == 1
        && runs[0][1].as_u64() == Some(count)
        && count > produced_before_last_applied
        && c["missing_batches"] == 0
        && c["unapplied"] == 0
        && c["batches_applied"].as_u64() == Some(count);
    whole.then_some((count, host, report))
}

#[test]
fn thirty_percent_loss_with_delay_and_reordering_loses_nothing() {
    let tmp = TempDir::new("testbed-loss");
    let mut bed = Testbed::new("loss");
    let agg_ns = bed.add("agg");
    let (dc1, dc2) = (bed.add("dc1"), bed.add("dc2"));
    let agg = Aggregator::start_in(&tmp.path().join("agg"), &agg_ns);
    let lossy = Relay::start((dc1.host_addr, 0).into(), agg.quic_addr(), 30);
    let clean = Relay::start((dc2.host_addr, 0).into(), agg.quic_addr(), 2);
    let _a = agent(&bed, &dc1, &agg, &lossy, &tmp.path().join("dc1"), "udm", "dc1");
    let _b = agent(&bed, &dc2, &agg, &clean, &tmp.path().join("dc2"), "box", "dc2");
    wait_for("both hosts in the twin", Duration::from_secs(30), || {
        (complete(&agg, "udm").is_some() && complete(&agg, "box").is_some()).then_some(())
    });

    let impaired = Duration::from_secs(120);
    lossy.set(Impairment {
        loss: 0.3,
        delay: Duration::from_millis(300),
        jitter: Duration::from_millis(100),
        reorder: 0.1,
        duplicate: 0.0,
        blackhole: false,
    });
    let until = Instant::now() + impaired;
    while Instant::now() < until {
        std::thread::sleep(Duration::from_secs(1));
    }
    lossy.set(Impairment::default());
    let stats = lossy.stats();
    let (seen, dropped) = (
        stats.received.load(std::sync::atomic::Ordering::Relaxed),
        stats.dropped.load(std::sync::atomic::Ordering::Relaxed),
    );
    assert!(dropped as f64 > 0.2 * seen as f64, "the path really lost datagrams: {dropped} of {seen}");

    for id in ["udm", "box"] {
        let (count, host, report) =
            wait_for(&format!("every batch of {id} stored once"), Duration::from_secs(60), || complete(&agg, id));
        // 250 ms sampling: about four batches a second for the whole run, none dropped by the agent.
        assert!(count as f64 >= impaired.as_secs_f64() * 3.0, "{id}: only {count} batches: {report}");
        assert_eq!(host["agent"]["dropped_batches_total"].as_u64(), Some(0), "{id}: {host}");
        println!("{id}: {count} batches stored, each once; duplicates ignored: {}", report["counters"]["duplicates"]);
    }
    println!("impaired path: {dropped} of {seen} datagrams dropped");
}

#[test]
fn an_aggregator_killed_mid_ingest_and_restarted_loses_nothing() {
    let tmp = TempDir::new("testbed-kill-agg");
    let mut bed = Testbed::new("kag");
    let agg_ns = bed.add("agg");
    let dc1 = bed.add("dc1");
    let mut agg = Aggregator::start_in(&tmp.path().join("agg"), &agg_ns);
    let relay = Relay::start((dc1.host_addr, 0).into(), agg.quic_addr(), 3);
    let _agent = agent(&bed, &dc1, &agg, &relay, &tmp.path().join("dc1"), "udm", "dc1");
    let (before, _, first) = wait_for("the host in the twin", Duration::from_secs(30), || complete(&agg, "udm"));

    // Three times: kill -9 while batches stream in (four a second), stay down a moment so the
    // agent buffers, and start again on the same data directory.
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(1500));
        agg.proc.as_mut().expect("running").kill9();
        std::thread::sleep(Duration::from_secs(2));
        agg.restart();
    }
    std::thread::sleep(Duration::from_secs(3));
    let (count, _, report) = wait_for("every batch stored once after the restarts", Duration::from_secs(60), || {
        complete(&agg, "udm").filter(|(count, _, _)| *count > before + 20)
    });
    assert_eq!(report["incarnation"], first["incarnation"], "the agent itself never restarted");
    println!(
        "{count} batches stored, each once, across three aggregator kills; duplicates ignored: {}",
        report["counters"]["duplicates"]
    );
}
