//! The twin core: every host's reconciled state, driven by messages and the time passed in.
//!
//! Sans-IO: no sockets, no storage, no clock reads. Ingest calls [`Twin::handle_hello`],
//! [`Twin::handle_batch`], [`Twin::handle_dropped`] and [`Twin::handle_echo`] with the
//! aggregator's current time and the connection's id; the API reads [`Twin::hosts`] and asks
//! [`HostTwin::status`] with its own `now`. Everything here is a plain `#[test]` away.
//!
//! Sequence rules, per agent incarnation (sequence numbers count from 1):
//! - Every batch is checked against the incarnation's [`Ledger`]: one already stored is a replay
//!   (a lost ack) and is acknowledged again but neither stored nor applied twice.
//! - The agent sends live batches first, and its backlog from an outage behind them. The live lane
//!   restarts with a keyframe, which the twin applies at once, so the twin is current while the
//!   gap fills. The state it had before the jump is kept as a backfill [`Chain`] that decodes the
//!   backlog in order as it arrives: late batches land in history in their place.
//! - A live delta that does not follow the live state (batches dropped at the agent) cannot be
//!   applied: it is stored, and a keyframe is requested.
//! - A higher incarnation is an agent restart: the old live state becomes a backfill chain for the
//!   old incarnation's backlog. A new boot id is a host reboot.
//! - Batches the agent drops to stay under its buffer cap are reported (`Dropped`) and recorded as
//!   known gaps, so `stored + dropped` accounts for every batch the agent produced.
//!
//! Every decoded tick, live or backfilled, is shown to [`Endpoints`], which keeps the recent probe
//! results the host states alone would forget. Two connections claiming one identity are settled
//! by [`Claims`]; clock offsets are estimated by [`Clock`].

pub mod claims;
pub mod clock;
pub mod endpoints;
pub mod identity;
pub mod ledger;
pub mod runs;

use std::collections::BTreeMap;

use bincode::{Decode, Encode};
use twinwatch_common::delta::{DeltaError, DeltaState, Tick};
use twinwatch_common::message::{Batch, Dropped, Hello, HostInfo, TimeEcho};

use crate::history::recorder::Recorder;
use crate::twin::claims::{Claim, Claims, Conflict, REMEMBERED_CONFLICTS};
use crate::twin::clock::Clock;
use crate::twin::endpoints::Endpoints;
use crate::twin::identity::AgentIdentity;
use crate::twin::ledger::Ledger;

/// Incarnations remembered per host, to recognise late replays of earlier ones.
const REMEMBERED_INCARNATIONS: usize = 16;
/// Backfill chains kept per host; the oldest is given up first.
const MAX_CHAINS: usize = 4;

/// Ingest bookkeeping, persisted with the host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Encode, Decode, serde::Serialize)]
pub struct IngestCounters {
    /// Live batches applied (and stored): each exactly once.
    pub batches_applied: u64,
    /// Late batches (backlog, earlier incarnations) stored and decoded into history.
    pub batches_backfilled: u64,
    /// Replayed batches recognised and ignored.
    pub duplicates: u64,
    /// Live batches missing before one that arrived, seen as sequence jumps.
    pub missing_batches: u64,
    /// Batches stored but not decoded: a keyframe was awaited, or their predecessor never came.
    pub unapplied: u64,
    pub keyframe_requests: u64,
    /// Batches and samples the agent reported dropped to stay under its buffer cap.
    pub dropped_batches: u64,
    pub dropped_ticks: u64,
    pub connects: u64,
    /// Connections refused because another held the identity.
    pub refused: u64,
    /// Connections closed because a newer one took over.
    pub superseded: u64,
    /// Hellos that carried a boot id different from the one before.
    pub reboots: u64,
}

/// A delta state following one incarnation's batches behind the live state, to decode a backlog.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct Chain {
    pub incarnation: u64,
    /// The last sequence number applied to `state`.
    pub through: u64,
    pub state: DeltaState,
}

#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct HostTwin {
    pub id: String,
    pub dc: String,
    pub info: HostInfo,
    pub agent_version: String,
    pub interval_ms: u32,
    /// The incarnation whose deltas [`HostTwin::state`] follows: the newest seen.
    pub incarnation: u64,
    /// The live state, current to batch `live_through` of `incarnation`.
    pub state: DeltaState,
    pub live_through: u64,
    pub awaiting_keyframe: bool,
    /// States decoding backlogs behind the live one, oldest first.
    pub backfill: Vec<Chain>,
    /// What is stored per incarnation, oldest first.
    pub ledgers: Vec<Ledger>,
    /// Aggregator clock when the host was last heard from, ms since the epoch.
    pub last_seen_ms: i64,
    pub clock: Clock,
    pub conflicts: Vec<Conflict>,
    pub counters: IngestCounters,
}

/// How current a host's twin is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HostStatus {
    Online,
    Stale,
    Offline,
}

impl HostStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HostStatus::Online => "online",
            HostStatus::Stale => "stale",
            HostStatus::Offline => "offline",
        }
    }
}

/// Intervals a host may miss and still be online.
pub const ONLINE_MISSED_INTERVALS: i64 = 3;

impl HostTwin {
    fn new(who: &AgentIdentity) -> Self {
        HostTwin {
            id: who.id.clone(),
            dc: who.dc.clone(),
            info: HostInfo::default(),
            agent_version: String::new(),
            interval_ms: 1000,
            incarnation: 0,
            state: DeltaState::default(),
            live_through: 0,
            awaiting_keyframe: false,
            backfill: Vec::new(),
            ledgers: Vec::new(),
            last_seen_ms: 0,
            clock: Clock::default(),
            conflicts: Vec::new(),
            counters: IngestCounters::default(),
        }
    }

    pub fn ledger(&self, incarnation: u64) -> Option<&Ledger> {
        self.ledgers.iter().find(|l| l.incarnation == incarnation)
    }

    fn ledger_mut(&mut self, incarnation: u64) -> &mut Ledger {
        let at = match self.ledgers.binary_search_by_key(&incarnation, |l| l.incarnation) {
            Ok(at) => at,
            Err(at) => {
                self.ledgers.insert(at, Ledger::new(incarnation));
                if self.ledgers.len() > REMEMBERED_INCARNATIONS {
                    let forgotten = self.ledgers.remove(0).incarnation;
                    self.backfill.retain(|c| c.incarnation != forgotten);
                    return self.ledger_mut(incarnation);
                }
                at
            }
        };
        &mut self.ledgers[at]
    }

    /// Every batch `1..=n` of `incarnation` is stored or known dropped; `n`.
    pub fn accounted_through(&self, incarnation: u64) -> u64 {
        self.ledger(incarnation).map_or(0, Ledger::accounted_through)
    }

    /// Intervals missed since the host was last heard from.
    pub fn missed_intervals(&self, now_ms: i64) -> i64 {
        ((now_ms - self.last_seen_ms) / self.interval_ms.max(1) as i64).max(0)
    }

    /// Online while the host is heard from within [`ONLINE_MISSED_INTERVALS`] intervals, stale
    /// until `offline_after_ms`, then offline.
    pub fn status(&self, now_ms: i64, offline_after_ms: i64) -> HostStatus {
        let silent = now_ms - self.last_seen_ms;
        if silent <= ONLINE_MISSED_INTERVALS * self.interval_ms.max(1) as i64 {
            HostStatus::Online
        } else if silent <= offline_after_ms {
            HostStatus::Stale
        } else {
            HostStatus::Offline
        }
    }

    fn keep_chain(&mut self, chain: Chain) {
        if self.backfill.len() >= MAX_CHAINS {
            self.backfill.remove(0);
        }
        self.backfill.push(chain);
    }

    /// Drops chains whose next batch is already stored or known dropped: their work is done.
    fn retire_chains(&mut self) {
        let ledgers = &self.ledgers;
        self.backfill.retain(|c| {
            let next = c.through + 1;
            !ledgers.iter().any(|l| l.incarnation == c.incarnation && (l.has(next) || l.dropped.contains(next)))
        });
    }
}

/// What became of one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Applied to the live twin; store it.
    Applied,
    /// A late batch decoded into history behind the live state; store it.
    Backfilled,
    /// Already stored: acknowledge it again, store nothing.
    Duplicate,
    /// Store it for history, but it could not be decoded; maybe a keyframe is wanted.
    Unapplied { keyframe_wanted: bool, reason: String },
    /// The connection no longer speaks for this agent: close it.
    NotHolder,
}

impl Outcome {
    /// Whether the batch is to be stored.
    pub fn stores(&self) -> bool {
        matches!(self, Outcome::Applied | Outcome::Backfilled | Outcome::Unapplied { .. })
    }
}

#[derive(Debug, Default)]
pub struct Twin {
    hosts: BTreeMap<String, HostTwin>,
    /// Recent probe results, taken from the ticks as they are decoded; not persisted.
    endpoints: Endpoints,
    /// Which connection speaks for which agent; not persisted (no connection survives a restart).
    claims: Claims,
    /// Every decoded tick's points, until a checkpoint writes them.
    pub history: Recorder,
}

impl Twin {
    /// Rebuilds the twin from hosts loaded from the store.
    pub fn from_hosts(hosts: impl IntoIterator<Item = HostTwin>) -> Self {
        Twin { hosts: hosts.into_iter().map(|h| (h.id.clone(), h)).collect(), ..Twin::default() }
    }

    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    pub fn hosts(&self) -> impl Iterator<Item = &HostTwin> {
        self.hosts.values()
    }

    pub fn host(&self, id: &str) -> Option<&HostTwin> {
        self.hosts.get(id)
    }

    /// Whether a connection currently speaks for `id`.
    pub fn connected(&self, id: &str, conn: u64) -> bool {
        self.claims.holds(id, conn)
    }

    /// Puts back a host as the store has it, after a failed commit; the caller then replays the
    /// host's log.
    pub fn restore(&mut self, host: Option<HostTwin>, id: &str) {
        // Results already taken from the undone batches stay: their replay finds the same
        // timestamps and takes nothing twice.
        self.history.discard_pending(id);
        match host {
            Some(h) => {
                self.hosts.insert(id.to_owned(), h);
            }
            None => {
                self.hosts.remove(id);
                self.endpoints.forget_host(id);
            }
        }
    }

    /// Connection `conn` of agent `who` said hello. Decides whether it is served (see
    /// [`Claims`]) and, if so, records what the agent is.
    pub fn handle_hello(&mut self, who: &AgentIdentity, conn: u64, hello: &Hello, now_ms: i64) -> Claim {
        let host = self.hosts.entry(who.id.clone()).or_insert_with(|| HostTwin::new(who));
        let silent = if host.last_seen_ms == 0 { i64::MAX } else { now_ms - host.last_seen_ms };
        let (claim, conflict) = self.claims.claim(&who.id, conn, hello, silent, host.interval_ms as i64, now_ms);
        if let Some(c) = conflict {
            match host.conflicts.last_mut().filter(|last| last.same_as(&c)) {
                Some(last) => {
                    last.count += 1;
                    last.last_ms = now_ms;
                }
                None => {
                    if host.conflicts.len() >= REMEMBERED_CONFLICTS {
                        host.conflicts.remove(0);
                    }
                    host.conflicts.push(c);
                }
            }
        }
        match &claim {
            Claim::Refuse { .. } => {
                host.counters.refused += 1;
                return claim;
            }
            Claim::Accept { supersedes: Some(_) } => host.counters.superseded += 1,
            Claim::Accept { supersedes: None } => {}
        }
        host.dc = who.dc.clone();
        if !host.info.boot_id.is_empty() && host.info.boot_id != hello.host.boot_id {
            host.counters.reboots += 1;
        }
        if host.info.machine_id != hello.host.machine_id {
            host.clock.reset();
        }
        host.info = hello.host.clone();
        host.agent_version = hello.agent_version.clone();
        host.interval_ms = hello.interval_ms.max(1);
        host.last_seen_ms = now_ms;
        host.counters.connects += 1;
        claim
    }

    /// Connection `conn` of `agent` ended.
    pub fn handle_disconnect(&mut self, agent: &str, conn: u64) {
        self.claims.release(agent, conn);
    }

    /// The agent echoed a `server_time_ms` we sent: one clock exchange.
    pub fn handle_echo(&mut self, agent: &str, conn: u64, echo: &TimeEcho, now_ms: i64) {
        if !self.claims.holds(agent, conn) {
            return;
        }
        if let Some(host) = self.hosts.get_mut(agent) {
            host.clock.observe(echo.server_time_ms, echo.agent_time_ms, now_ms);
            host.last_seen_ms = now_ms;
        }
    }

    /// The agent reports batches it dropped. Returns whether the host changed (and needs storing).
    pub fn handle_dropped(&mut self, agent: &str, conn: u64, d: &Dropped, now_ms: i64) -> Result<bool, Outcome> {
        if !self.claims.holds(agent, conn) {
            return Err(Outcome::NotHolder);
        }
        Ok(self.apply_dropped(agent, d, now_ms))
    }

    /// [`Twin::handle_dropped`] without the connection check: also how the log is replayed.
    pub fn apply_dropped(&mut self, agent: &str, d: &Dropped, now_ms: i64) -> bool {
        let Some(host) = self.hosts.get_mut(agent) else {
            return false;
        };
        host.last_seen_ms = now_ms;
        let ledger = host.ledger_mut(d.incarnation);
        let before = ledger.ticks_dropped;
        if !ledger.drop_reported(d) {
            return false;
        }
        let ticks = ledger.ticks_dropped - before;
        host.counters.dropped_batches += d.last_seq - d.first_seq + 1;
        host.counters.dropped_ticks += ticks;
        host.retire_chains();
        true
    }

    /// Reconciles one batch from connection `conn` of `agent` into its twin.
    pub fn handle_batch(&mut self, agent: &str, conn: u64, batch: &Batch, now_ms: i64) -> Outcome {
        if !self.claims.holds(agent, conn) {
            return Outcome::NotHolder;
        }
        self.apply_batch(agent, batch, now_ms)
    }

    /// [`Twin::handle_batch`] without the connection check: also how the log is replayed.
    pub fn apply_batch(&mut self, agent: &str, batch: &Batch, now_ms: i64) -> Outcome {
        let Some(host) = self.hosts.get_mut(agent) else {
            return Outcome::Unapplied { keyframe_wanted: false, reason: "batch before hello".into() };
        };
        host.last_seen_ms = now_ms;
        let (incarnation, seq) = (batch.incarnation, batch.seq);
        let ledger = host.ledger_mut(incarnation);
        if seq == 0 || ledger.has(seq) {
            host.counters.duplicates += 1;
            return Outcome::Duplicate;
        }
        ledger.store(seq, batch.ticks.len() as u64, batch.ticks.iter().map(|t| t.ts_ms).max().unwrap_or(0));
        if incarnation > host.incarnation {
            // An agent restart: the old live state can still decode the old incarnation's backlog.
            if host.state.is_keyframed() && host.incarnation != 0 {
                let old = Chain {
                    incarnation: host.incarnation,
                    through: host.live_through,
                    state: std::mem::take(&mut host.state),
                };
                host.keep_chain(old);
            }
            host.incarnation = incarnation;
            host.state = DeltaState::default();
            host.live_through = 0;
            host.awaiting_keyframe = false;
        }
        let (endpoints, history) = (&mut self.endpoints, &mut self.history);
        let shift = host.clock.correct(0);
        let mut observe = |state: &DeltaState, tick: &Tick, live: bool| {
            endpoints.observe(agent, state, tick, live);
            history.observe(agent, state, tick, shift);
        };
        let outcome = if incarnation == host.incarnation && seq > host.live_through {
            live(host, batch, |state, tick| observe(state, tick, true))
        } else {
            backfill(host, batch, |state, tick| observe(state, tick, false))
        };
        host.retire_chains();
        outcome
    }
}

/// A batch ahead of the live state.
fn live(host: &mut HostTwin, batch: &Batch, observe: impl FnMut(&DeltaState, &Tick)) -> Outcome {
    let follows = batch.seq == host.live_through + 1 && !host.awaiting_keyframe && host.state.is_keyframed();
    if !follows && !batch.is_keyframe() {
        let first_ask = !host.awaiting_keyframe;
        let reason = if first_ask {
            let missing = batch.seq - host.live_through - 1;
            host.counters.missing_batches += missing;
            host.counters.keyframe_requests += 1;
            format!("{missing} batches missing before it")
        } else {
            "awaiting keyframe".into()
        };
        host.awaiting_keyframe = true;
        host.counters.unapplied += 1;
        return Outcome::Unapplied { keyframe_wanted: first_ask, reason };
    }
    if !follows && host.state.is_keyframed() {
        let (first, last) = (host.live_through + 1, batch.seq - 1);
        let stored = host.ledger(batch.incarnation).map_or(0, |l| l.stored.count_in(first, last));
        let hole = first <= last && stored < last - first + 1;
        if hole {
            // The live lane jumps ahead of a backlog: keep the state the backlog continues from.
            let behind =
                Chain { incarnation: batch.incarnation, through: host.live_through, state: host.state.clone() };
            host.keep_chain(behind);
        }
    }
    match apply_all(&mut host.state, batch, observe) {
        Ok(()) => {
            host.live_through = batch.seq;
            host.awaiting_keyframe = false;
            host.counters.batches_applied += 1;
            Outcome::Applied
        }
        Err(e) => {
            host.counters.unapplied += 1;
            host.awaiting_keyframe = true;
            host.counters.keyframe_requests += 1;
            Outcome::Unapplied { keyframe_wanted: true, reason: e.to_string() }
        }
    }
}

/// A batch behind the live state: decoded by the chain it continues, or starting one if it is a
/// keyframe.
fn backfill(host: &mut HostTwin, batch: &Batch, observe: impl FnMut(&DeltaState, &Tick)) -> Outcome {
    let at = host.backfill.iter().position(|c| c.incarnation == batch.incarnation && c.through + 1 == batch.seq);
    let at = match at {
        Some(at) => at,
        None if batch.is_keyframe() => {
            host.keep_chain(Chain { incarnation: batch.incarnation, through: 0, state: DeltaState::default() });
            host.backfill.len() - 1
        }
        None => {
            host.counters.unapplied += 1;
            return Outcome::Unapplied {
                keyframe_wanted: false,
                reason: "late batch whose predecessor is missing".into(),
            };
        }
    };
    let chain = &mut host.backfill[at];
    match apply_all(&mut chain.state, batch, observe) {
        Ok(()) => {
            chain.through = batch.seq;
            host.counters.batches_backfilled += 1;
            Outcome::Backfilled
        }
        Err(e) => {
            host.backfill.remove(at);
            host.counters.unapplied += 1;
            Outcome::Unapplied { keyframe_wanted: false, reason: e.to_string() }
        }
    }
}

/// Applies every tick of a batch in order, showing `applied` the state after each.
/// `DeltaState::apply` leaves the state untouched when a tick fails; ticks before it stay applied,
/// and the caller then waits for a keyframe, which replaces the state whole.
fn apply_all(
    state: &mut DeltaState,
    batch: &Batch,
    mut applied: impl FnMut(&DeltaState, &Tick),
) -> Result<(), DeltaError> {
    batch.ticks.iter().try_for_each(|tick| {
        state.apply(tick)?;
        applied(state, tick);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::twin::endpoints::tests::http_result;
    use twinwatch_common::delta::DeltaEncoder;
    use twinwatch_common::sample::{Metric, Sample, SeriesKey, Value};

    const CONN: u64 = 1;

    fn who() -> AgentIdentity {
        AgentIdentity { id: "udm".into(), dc: "dc1".into() }
    }

    fn hello(incarnation: u64) -> Hello {
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
        assert!(matches!(
            twin.handle_batch("udm", CONN, &after_gap, 0),
            Outcome::Unapplied { keyframe_wanted: true, .. }
        ));
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
        assert!(matches!(
            twin.handle_batch("udm", CONN, &orphan, 0),
            Outcome::Unapplied { keyframe_wanted: false, .. }
        ));
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
        assert_eq!(
            twin.handle_batch("udm", 2, &Batch { incarnation: 2, seq: 1, ticks: vec![again] }, 3),
            Outcome::Applied
        );
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
}
