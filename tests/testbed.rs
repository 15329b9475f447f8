//! The multi-DC test bed: each DC and the aggregator in network namespaces of their own, linked
//! only through userspace UDP relays in the test's namespace that impair the path on demand.
//! Counts are exact: the aggregator must hold every batch an agent produced, once.

use std::time::{Duration, Instant};

use serde_json::Value;
use twinwatch_tests::netns::{Ns, Testbed};
use twinwatch_tests::relay::{Impairment, Relay};
use twinwatch_tests::{bin, wait_for, Aggregator, Proc, TempDir};

/// An agent's settings for the bed: `interval`, and anything more for the file's end.
struct AgentSetup<'a> {
    id: &'a str,
    dc: &'a str,
    interval: &'a str,
    extra: &'a str,
}

const FAST: AgentSetup =
    AgentSetup { id: "udm", dc: "dc1", interval: "250ms", extra: "[buffer]\nflush_interval = \"100ms\"\n" };

/// Starts an agent in `ns`, shipping through `relay`.
fn agent(bed: &Testbed, ns: &Ns, agg: &Aggregator, relay: &Relay, dir: &std::path::Path, setup: &AgentSetup) -> Proc {
    if !dir.join("certs").join("agent.crt").exists() {
        agg.issue(setup.id, setup.dc, &dir.join("certs"));
    }
    let config = format!(
        "aggregator = \"{}\"\nserver_name = \"localhost\"\nstate_dir = \"{}\"\ninterval = \"{}\"\n{}",
        relay.listen,
        dir.display(),
        setup.interval,
        setup.extra
    );
    std::fs::write(dir.join("agent.toml"), config).expect("agent config");
    let cfg = dir.join("agent.toml");
    bed.spawn(ns, &bin("twinwatch-agent"), &["--config", cfg.to_str().expect("utf-8"), "run"], dir.join("agent.log"))
}

/// The ledger of `incarnation` (the current one if `None`) in the host's twin.
fn ledger(host: &Value, incarnation: Option<u64>) -> Option<Value> {
    let want = incarnation.or(host["ingest"]["incarnation"].as_u64())?;
    host["ingest"]["incarnations"].as_array()?.iter().find(|l| l["incarnation"].as_u64() == Some(want)).cloned()
}

/// The runs of a ledger's `stored` or `dropped` side.
fn runs(ledger: &Value, side: &str) -> Vec<(u64, u64)> {
    ledger[side]
        .as_array()
        .map(|a| a.iter().filter_map(|r| Some((r[0].as_u64()?, r[1].as_u64()?))).collect())
        .unwrap_or_default()
}

/// The host's twin once its current incarnation is whole: every batch from 1 to the live one is
/// stored exactly once, nothing dropped, nothing undecoded, and the agent's own count of the
/// samples (ticks) it produced before the live one agrees. Returns `(batches, host twin)`.
fn complete(agg: &Aggregator, id: &str) -> Option<(u64, Value)> {
    let host = agg.get(&format!("/api/v1/hosts/{id}"))?;
    let l = ledger(&host, None)?;
    let live = host["ingest"]["live_through"].as_u64()?;
    // The sample carried by batch `live` counts the ticks produced before it.
    let produced = host["agent"]["ticks_total"].as_u64()? + 1;
    let c = &host["ingest"]["counters"];
    let whole = runs(&l, "stored") == [(1, live)]
        && l["ticks_stored"].as_u64() == Some(live)
        && produced == live
        && l["ticks_dropped"] == 0
        && c["unapplied"] == 0
        && c["missing_batches"] == 0;
    whole.then_some((live, host))
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
    let _a = agent(&bed, &dc1, &agg, &lossy, &tmp.path().join("dc1"), &FAST);
    let _b = agent(&bed, &dc2, &agg, &clean, &tmp.path().join("dc2"), &AgentSetup { id: "box", dc: "dc2", ..FAST });
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
        let (count, host) =
            wait_for(&format!("every batch of {id} stored once"), Duration::from_secs(60), || complete(&agg, id));
        // 250 ms sampling: about four batches a second for the whole run, none dropped by the agent.
        assert!(count as f64 >= impaired.as_secs_f64() * 3.0, "{id}: only {count} batches: {host}");
        assert_eq!(host["agent"]["dropped_batches_total"].as_u64(), Some(0), "{id}: {host}");
        println!(
            "{id}: {count} samples produced, {count} stored, each once; duplicates ignored: {}",
            host["ingest"]["counters"]["duplicates"]
        );
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
    let _agent = agent(&bed, &dc1, &agg, &relay, &tmp.path().join("dc1"), &FAST);
    let (before, first) = wait_for("the host in the twin", Duration::from_secs(30), || complete(&agg, "udm"));

    // Three times: kill -9 while batches stream in (four a second), stay down a moment so the
    // agent buffers, and start again on the same data directory.
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(1500));
        agg.proc.as_mut().expect("running").kill9();
        std::thread::sleep(Duration::from_secs(2));
        agg.restart();
    }
    std::thread::sleep(Duration::from_secs(3));
    let (count, host) = wait_for("every batch stored once after the restarts", Duration::from_secs(60), || {
        complete(&agg, "udm").filter(|(count, _)| *count > before + 20)
    });
    assert_eq!(host["ingest"]["incarnation"], first["ingest"]["incarnation"], "the agent itself never restarted");
    println!(
        "{count} samples produced and stored, each once, across three aggregator kills; duplicates ignored: {}, backfilled: {}",
        host["ingest"]["counters"]["duplicates"],
        host["ingest"]["counters"]["batches_backfilled"]
    );
}
