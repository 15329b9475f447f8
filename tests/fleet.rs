//! A fleet of simulated agents ([`loadgen`]) against the real aggregator: more agents than the
//! handshake limit, readers hammering the API, a `kill -9` and restart, and every connection
//! dropped at once. Nothing may stall (ingest and the API keep moving, or the test fails with
//! what stopped), the storm is served within the admission limit, and once the fleet has drained
//! every agent's ledger holds exactly the batches it produced.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use twinwatch_tests::bench::percentile;
use twinwatch_tests::loadgen::{enrol, Fleet, FleetConfig};
use twinwatch_tests::readers::Readers;
use twinwatch_tests::{wait_for, Aggregator, TempDir};

/// Twice the aggregator's handshake limit (64), so a restart is a storm it must serve in waves.
const AGENTS: usize = 130;
/// Longest time ingest or the API may go without progress before the test calls it a stall.
const STALL: Duration = Duration::from_secs(15);

/// Runs for `span`, failing if acknowledgements or API answers stop moving for [`STALL`].
fn watch(what: &str, span: Duration, fleet: &Fleet, readers: &Readers) {
    let end = Instant::now() + span;
    let (mut acked, mut answered) = (fleet.counters.acked.load(Relaxed), readers.answered.load(Relaxed));
    let (mut acked_at, mut answered_at) = (Instant::now(), Instant::now());
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(200));
        let (a, r) = (fleet.counters.acked.load(Relaxed), readers.answered.load(Relaxed));
        if a != acked {
            (acked, acked_at) = (a, Instant::now());
        }
        if r != answered {
            (answered, answered_at) = (r, Instant::now());
        }
        assert!(acked_at.elapsed() < STALL, "{what}: no batch acknowledged for {STALL:?} ({a} so far)");
        assert!(answered_at.elapsed() < STALL, "{what}: the API answered nothing for {STALL:?} ({r} so far)");
    }
}

fn all_connected(fleet: &Fleet, what: &str) {
    wait_for(what, Duration::from_secs(90), || (fleet.counters.connected.load(Relaxed) == AGENTS).then_some(()));
}

#[test]
fn a_fleet_through_a_kill_and_a_storm_never_stalls_and_loses_nothing() {
    let dir = TempDir::new("fleet");
    let mut agg = Aggregator::start(dir.path());
    let config = FleetConfig::new(AGENTS);
    let enrolled = enrol(&agg.certs_dir(), &dir.path().join("agents"), &config);
    let ids: Vec<String> = enrolled.iter().map(|e| e.id.clone()).collect();
    let fleet = Fleet::start(agg.quic_addr(), enrolled, &config, 1);
    all_connected(&fleet, "every agent connected");
    let readers = Readers::start(&agg, &ids, 4);
    watch("steady", Duration::from_secs(5), &fleet, &readers);

    // A crash: every agent must come back, through handshakes admitted in waves.
    agg.proc.as_mut().expect("running").kill9();
    let connects = fleet.counters.connects.load(Relaxed);
    agg.restart();
    let restarted = Instant::now();
    wait_for("every agent back after kill -9", Duration::from_secs(90), || {
        let back = fleet.counters.connects.load(Relaxed) >= connects + AGENTS as u64;
        (back && fleet.counters.connected.load(Relaxed) == AGENTS).then_some(())
    });
    eprintln!(
        "fleet: all {AGENTS} agents back {:.1} s after the restarted aggregator was ready",
        restarted.elapsed().as_secs_f64()
    );
    let peak = agg.metric("twinwatch_quic_handshakes_peak").expect("peak");
    let limit = agg.metric("twinwatch_quic_handshakes_limit").expect("limit");
    assert!(peak <= limit && peak > 0.0, "handshakes at once: {peak}, limit {limit}");
    watch("after the restart", Duration::from_secs(5), &fleet, &readers);

    // Every connection dropped at once: the aggregator sees them all come back together.
    fleet.disconnect_every(1);
    wait_for("connections dropped", Duration::from_secs(10), || {
        (fleet.counters.connected.load(Relaxed) < AGENTS).then_some(())
    });
    all_connected(&fleet, "every agent back after dropping all connections");
    watch("after the storm", Duration::from_secs(4), &fleet, &readers);

    fleet.stop_sampling();
    wait_for("every batch acknowledged", Duration::from_secs(60), || (fleet.pending() == 0).then_some(()));
    let latencies = readers.stop();
    let c = &fleet.counters;
    eprintln!(
        "fleet: {} batches ({} values), {} sent ({} resent), {} connects ({} replaced after silence), {} attempts failed ({} busy), {} keyframe \
         requests; API {} answers, median {:.1} ms, p99 {:.1} ms",
        c.produced.load(Relaxed),
        c.values.load(Relaxed),
        c.sent.load(Relaxed),
        c.resent.load(Relaxed),
        c.connects.load(Relaxed),
        c.silent.load(Relaxed),
        c.failed.load(Relaxed),
        c.refused_busy.load(Relaxed),
        c.keyframe_requests.load(Relaxed),
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
    );

    // Exact counts: every agent's ledger holds every batch it produced, each once.
    let hosts = agg.get("/api/v1/hosts").expect("hosts");
    assert_eq!(hosts.as_array().map(Vec::len), Some(AGENTS), "one twin per agent");
    for (id, incarnation, mine) in &fleet.agents {
        let host = agg.get(&format!("/api/v1/hosts/{id}")).unwrap_or_else(|| panic!("host {id}"));
        let ledgers = host["ingest"]["incarnations"].as_array().expect("ledgers");
        let ledger = ledgers.iter().find(|l| l["incarnation"].as_u64() == Some(*incarnation)).expect("this run's");
        let produced = mine.produced.load(Relaxed);
        assert_eq!(ledger["ticks_stored"].as_u64(), Some(produced), "{id}: {ledger}");
        assert_eq!(mine.acked.load(Relaxed), produced, "{id}");
    }
}
