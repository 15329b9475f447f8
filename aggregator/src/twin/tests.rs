//! The twin's reconciliation rules as plain tests: batches in, outcomes and states out, with
//! simulated time.

use twinwatch_common::delta::DeltaEncoder;
use twinwatch_common::message::HostInfo;
use twinwatch_common::sample::{Metric, Sample, SeriesKey, Value};

use super::*;
use crate::twin::endpoints::tests::http_result;

const CONN: u64 = 1;

pub(crate) fn who() -> AgentIdentity {
    AgentIdentity { id: "udm".into(), dc: "dc1".into() }
}

pub(crate) fn hello(incarnation: u64) -> Hello {
    Hello {
        agent_version: "t".into(),
        incarnation,
        agent_time_ms: 0,
        interval_ms: 1000,
        host: HostInfo { machine_id: "m1".into(), ..HostInfo::default() },
    }
}

/// An agent as the twin sees it: a delta encoder and a sequence counter.
struct Agent {
    enc: DeltaEncoder,
    incarnation: u64,
    seq: u64,
}

impl Agent {
    fn new(incarnation: u64) -> Self {
        Agent { enc: DeltaEncoder::new(1000), incarnation, seq: 0 }
    }
    /// The next batch: one tick at time `v` whose counter reads `v`.
    fn batch(&mut self, v: i64) -> Batch {
        self.seq += 1;
        let m = Metric::counter(SeriesKey::new("c"), Value::Int(v));
        let tick = self.enc.encode(&Sample::new(v, vec![m]));
        Batch { incarnation: self.incarnation, seq: self.seq, ticks: vec![tick] }
    }
    fn keyframe(&mut self, v: i64) -> Batch {
        self.enc.request_keyframe();
        self.batch(v)
    }
}

fn value(twin: &Twin) -> f64 {
    twin.host("udm").unwrap().state.series().next().unwrap().value()
}

fn connected() -> Twin {
    let mut twin = Twin::default();
    assert_eq!(twin.handle_hello(&who(), CONN, &hello(1), 0), Claim::Accept { supersedes: None });
    twin
}

#[test]
fn replays_are_ignored_and_counted() {
    let mut twin = connected();
    let mut agent = Agent::new(1);
    let batches: Vec<_> = (1..=5).map(|v| agent.batch(v * 10)).collect();
    for b in &batches[..3] {
        assert_eq!(twin.handle_batch("udm", CONN, b, 1), Outcome::Applied);
    }
    // The connection drops before the ack; the agent replays everything it still holds.
    twin.handle_disconnect("udm", CONN);
    twin.handle_hello(&who(), 2, &hello(1), 2);
    assert_eq!(twin.host("udm").unwrap().accounted_through(1), 3);
    for b in &batches {
        twin.handle_batch("udm", 2, b, 3);
    }
    let host = twin.host("udm").unwrap();
    assert_eq!((host.counters.batches_applied, host.counters.duplicates), (5, 3));
    assert_eq!(host.ledger(1).unwrap().ticks_stored, 5);
    assert_eq!(value(&twin), 50.0);
}

#[test]
fn a_live_gap_waits_for_a_keyframe() {
    let mut twin = connected();
    let mut agent = Agent::new(1);
    assert_eq!(twin.handle_batch("udm", CONN, &agent.batch(1), 0), Outcome::Applied);
    agent.batch(2); // dropped at the agent
    let after_gap = agent.batch(3);
    assert!(matches!(twin.handle_batch("udm", CONN, &after_gap, 0), Outcome::Unapplied { keyframe_wanted: true, .. }));
    assert!(matches!(
        twin.handle_batch("udm", CONN, &agent.batch(4), 0),
        Outcome::Unapplied { keyframe_wanted: false, .. }
    ));
    assert_eq!(twin.handle_batch("udm", CONN, &agent.keyframe(5), 0), Outcome::Applied);
    assert_eq!(value(&twin), 5.0);
    let c = &twin.host("udm").unwrap().counters;
    assert_eq!((c.missing_batches, c.unapplied, c.keyframe_requests, c.batches_applied), (1, 2, 1, 2));
}

/// After an outage the agent sends a live keyframe first and its backlog behind it, in any
/// order across the two lanes: the twin is current at once, and every backlog batch is
/// decoded into history, each once.
#[test]
fn live_first_then_the_backlog_fills_in_behind() {
    let mut twin = connected();
    let mut agent = Agent::new(1);
    for v in 1..=3 {
        assert_eq!(twin.handle_batch("udm", CONN, &agent.batch(v), v), Outcome::Applied);
    }
    let backlog: Vec<Batch> = (4..=20).map(|v| agent.batch(v)).collect();
    let live_key = agent.keyframe(21);
    let live_next = agent.batch(22);
    assert_eq!(twin.handle_batch("udm", CONN, &live_key, 30), Outcome::Applied);
    assert_eq!(value(&twin), 21.0, "current before the backlog");
    // The backlog drains interleaved with live batches, and one batch is replayed.
    assert_eq!(twin.handle_batch("udm", CONN, &backlog[0], 31), Outcome::Backfilled);
    assert_eq!(twin.handle_batch("udm", CONN, &live_next, 31), Outcome::Applied);
    for b in &backlog[1..] {
        assert_eq!(twin.handle_batch("udm", CONN, b, 32), Outcome::Backfilled);
    }
    assert_eq!(twin.handle_batch("udm", CONN, &backlog[5], 33), Outcome::Duplicate);
    let host = twin.host("udm").unwrap();
    assert_eq!(value(&twin), 22.0);
    assert!(host.backfill.is_empty(), "the chain retires once it reaches the live keyframe");
    assert_eq!((host.counters.batches_backfilled, host.counters.unapplied), (17, 0));
    assert_eq!(host.accounted_through(1), 22);
    assert_eq!(host.ledger(1).unwrap().ticks_stored, 22);
}

/// The agent dropped the oldest part of its backlog, whole segments up to a keyframe, and said
/// so: the gap is recorded with its count, and the rest decodes from the next keyframe.
#[test]
fn a_reported_drop_is_a_known_gap_and_the_rest_decodes() {
    let mut twin = connected();
    let mut agent = Agent::new(1);
    twin.handle_batch("udm", CONN, &agent.batch(1), 1);
    let dropped: Vec<Batch> = (2..=6).map(|v| agent.batch(v)).collect();
    let kept: Vec<Batch> = std::iter::once(agent.keyframe(7)).chain((8..=9).map(|v| agent.batch(v))).collect();
    let live = agent.keyframe(10);
    assert_eq!(twin.handle_batch("udm", CONN, &live, 10), Outcome::Applied);
    let report = Dropped { incarnation: 1, first_seq: 2, last_seq: 6, ticks: 5, from_ms: 2, to_ms: 6 };
    assert_eq!(twin.handle_dropped("udm", CONN, &report, 11), Ok(true));
    assert_eq!(twin.handle_dropped("udm", CONN, &report, 11), Ok(false), "a repeated report counts once");
    for b in &kept {
        assert_eq!(twin.handle_batch("udm", CONN, b, 12), Outcome::Backfilled);
    }
    let host = twin.host("udm").unwrap();
    let ledger = host.ledger(1).unwrap();
    assert_eq!((ledger.ticks_stored, ledger.ticks_dropped), (5, 5));
    assert_eq!(host.accounted_through(1), 10);
    assert_eq!(ledger.gaps[0].from_ms, 2);
    assert!(host.backfill.is_empty());
    assert_eq!(dropped.len(), 5);
}

#[test]
fn a_new_incarnation_starts_afresh_and_old_backlog_is_history() {
    let mut twin = connected();
    let mut old = Agent::new(1);
    twin.handle_batch("udm", CONN, &old.batch(1), 0);
    let late = old.batch(2);
    let later = old.batch(3);
    let mut new = Agent::new(2);
    twin.handle_disconnect("udm", CONN);
    twin.handle_hello(&who(), 2, &hello(2), 0);
    assert_eq!(twin.handle_batch("udm", 2, &new.batch(100), 0), Outcome::Applied);
    assert_eq!(twin.handle_batch("udm", 2, &late, 0), Outcome::Backfilled);
    assert_eq!(twin.handle_batch("udm", 2, &later, 0), Outcome::Backfilled);
    assert_eq!(twin.handle_batch("udm", 2, &late, 0), Outcome::Duplicate);
    assert_eq!(value(&twin), 100.0);
    let host = twin.host("udm").unwrap();
    assert_eq!(host.incarnation, 2);
    assert_eq!((host.accounted_through(1), host.accounted_through(2)), (3, 1));
}

#[test]
fn a_late_batch_without_its_predecessor_is_stored_undecoded() {
    let mut twin = connected();
    let mut agent = Agent::new(1);
    twin.handle_batch("udm", CONN, &agent.batch(1), 0);
    agent.batch(2); // lost at a kill -9 of the agent, say
    let orphan = agent.batch(3);
    twin.handle_batch("udm", CONN, &agent.keyframe(4), 0);
    assert!(matches!(twin.handle_batch("udm", CONN, &orphan, 0), Outcome::Unapplied { keyframe_wanted: false, .. }));
    assert_eq!(twin.host("udm").unwrap().ledger(1).unwrap().ticks_stored, 3);
}

#[test]
fn a_new_boot_id_counts_a_reboot_and_a_reconnect_does_not() {
    let mut twin = Twin::default();
    let booted = |incarnation, boot: &str| Hello {
        host: HostInfo { boot_id: boot.into(), machine_id: "m1".into(), ..HostInfo::default() },
        ..hello(incarnation)
    };
    for (conn, (incarnation, boot)) in [(1, "b1"), (1, "b1"), (2, "b1"), (3, "b2")].into_iter().enumerate() {
        twin.handle_hello(&who(), conn as u64, &booted(incarnation, boot), conn as i64);
        if conn == 2 {
            assert_eq!(twin.host("udm").unwrap().counters.reboots, 0);
        }
    }
    assert_eq!(twin.host("udm").unwrap().counters.reboots, 1);
}

#[test]
fn a_second_machine_with_the_same_identity_is_refused_and_shown() {
    let mut twin = connected();
    let mut agent = Agent::new(1);
    twin.handle_batch("udm", CONN, &agent.batch(1), 100);
    let impostor = Hello { host: HostInfo { machine_id: "m2".into(), ..HostInfo::default() }, ..hello(9) };
    assert!(matches!(twin.handle_hello(&who(), 2, &impostor, 200), Claim::Refuse { .. }));
    // Its batches are not taken even if it sends some.
    let mut other = Agent::new(9);
    assert_eq!(twin.handle_batch("udm", 2, &other.batch(1), 200), Outcome::NotHolder);
    // It retries: the same conflict, counted.
    assert!(matches!(twin.handle_hello(&who(), 3, &impostor, 900), Claim::Refuse { .. }));
    let host = twin.host("udm").unwrap();
    assert_eq!((host.counters.refused, host.conflicts.len(), host.conflicts[0].count), (2, 1, 2));
    assert_eq!(host.info.machine_id, "m1");
    assert_eq!(host.incarnation, 1);
}

#[test]
fn probe_results_are_taken_once_through_replays_and_new_incarnations() {
    let mut twin = connected();
    let mut enc = DeltaEncoder::new(1000);
    let mut tick = |ts: i64, probe_ts: i64| enc.encode(&Sample::new(ts, http_result("shop", probe_ts, 200, 0.1)));
    let batches = [
        Batch { incarnation: 1, seq: 1, ticks: vec![tick(1_000, 900)] },
        Batch { incarnation: 1, seq: 2, ticks: vec![tick(2_000, 900), tick(3_000, 2_900)] },
        Batch { incarnation: 1, seq: 3, ticks: vec![tick(4_000, 3_900), tick(5_000, 4_900)] },
    ];
    let results = |twin: &Twin| twin.endpoints().vantage("shop", "udm").map_or(0, |v| v.results().len());
    for b in &batches {
        assert_eq!(twin.handle_batch("udm", CONN, b, 1), Outcome::Applied);
    }
    assert_eq!(results(&twin), 4);
    for b in &batches {
        assert_eq!(twin.handle_batch("udm", CONN, b, 2), Outcome::Duplicate);
    }
    assert_eq!(results(&twin), 4);
    // A restarted agent's keyframe carries the last result again: still not a new one.
    let mut enc = DeltaEncoder::new(1000);
    let again = enc.encode(&Sample::new(6_000, http_result("shop", 4_900, 200, 0.1)));
    twin.handle_hello(&who(), 2, &hello(2), 3);
    assert_eq!(twin.handle_batch("udm", 2, &Batch { incarnation: 2, seq: 1, ticks: vec![again] }, 3), Outcome::Applied);
    assert_eq!(results(&twin), 4);
}

#[test]
fn status_follows_missed_intervals() {
    let mut twin = Twin::default();
    twin.handle_hello(&who(), CONN, &hello(1), 10_000);
    let host = twin.host("udm").unwrap();
    assert_eq!(host.status(13_000, 60_000), HostStatus::Online);
    assert_eq!(host.status(13_001, 60_000), HostStatus::Stale);
    assert_eq!(host.missed_intervals(13_001), 3);
    assert_eq!(host.status(70_001, 60_000), HostStatus::Offline);
}

#[test]
fn clock_echoes_only_count_from_the_holder() {
    let mut twin = connected();
    twin.handle_echo("udm", CONN, &TimeEcho { server_time_ms: 1_000, agent_time_ms: 9_000 }, 1_010);
    twin.handle_echo("udm", 7, &TimeEcho { server_time_ms: 1_000, agent_time_ms: 0 }, 1_010);
    let e = twin.host("udm").unwrap().clock.estimate().unwrap();
    assert_eq!((e.offset_ms, e.correction_ms), (7_995, -7_995));
}

#[test]
fn hosts_carrying_the_same_series_share_one_copy_of_each_key_also_after_a_reload() {
    let mut twin = Twin::default();
    let ids = ["a", "b", "c"];
    for (conn, id) in ids.iter().enumerate() {
        let who = AgentIdentity { id: (*id).into(), dc: "dc1".into() };
        twin.handle_hello(&who, conn as u64, &hello(1), 0);
        let mut agent = Agent::new(1);
        let outcome = twin.handle_batch(id, conn as u64, &agent.batch(1_000), 1_000);
        assert_eq!(outcome, Outcome::Applied);
    }
    let key = |twin: &Twin, id: &str| Arc::clone(&twin.host(id).unwrap().state.series().next().unwrap().key);
    let recorded = |twin: &Twin, id: &str| Arc::clone(&twin.history.host(id).unwrap().keys()[0]);
    let check = |twin: &Twin| {
        assert_eq!(twin.distinct_keys(), 1, "one series on three hosts is one key");
        let first = key(twin, "a");
        for id in ids {
            assert!(Arc::ptr_eq(&first, &key(twin, id)), "{id}'s state holds the shared key");
            assert!(Arc::ptr_eq(&first, &recorded(twin, id)), "{id}'s recorder holds the shared key");
        }
    };
    check(&twin);

    // A restart: each host decoded on its own (a copy of every key) and the recorder's keys
    // loaded separately.
    let config = bincode::config::standard();
    let hosts = ids.iter().map(|id| {
        let bytes = bincode::encode_to_vec(twin.host(id).unwrap(), config).unwrap();
        bincode::decode_from_slice::<HostTwin, _>(&bytes, config).unwrap().0
    });
    let mut reloaded = Twin::from_hosts(hosts);
    for id in ids {
        reloaded.load_history(id, vec![SeriesKey::new("c")]);
    }
    check(&reloaded);
}
