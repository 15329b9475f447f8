//! The twin core: every host's reconciled state, driven by messages and the time passed in.
//!
//! Sans-IO: no sockets, no storage, no clock reads. Ingest calls [`Twin::handle_hello`],
//! [`Twin::handle_batch`], [`Twin::handle_dropped`] and [`Twin::handle_echo`] with the
//! aggregator's current time and the connection's id; the API reads [`Twin::hosts`] and asks
//! [`HostTwin::status`] with its own `now`. Everything here is a plain `#[test]` away.
//!
//! Sequence rules, per agent incarnation (sequence numbers count from 1):
//! - Every batch is checked against the incarnation's `Ledger`: one already stored is a replay
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
//! Every decoded tick, live or backfilled, is shown to `Endpoints`, which keeps the recent probe
//! results the host states alone would forget. Two connections claiming one identity are settled
//! by `Claims`; clock offsets are estimated by `Clock`.

pub(crate) mod claims;
pub(crate) mod clock;
pub(crate) mod endpoints;
mod host;
pub mod identity;
pub(crate) mod ledger;
pub(crate) mod runs;
#[cfg(test)]
pub(crate) mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

use twinwatch_common::delta::{DeltaError, DeltaState, Tick};
use twinwatch_common::intern::KeyInterner;
use twinwatch_common::message::{Batch, Dropped, Hello, TimeEcho};
use twinwatch_common::sample::SeriesKey;

use crate::history::recorder::Recorder;
use crate::twin::claims::{Claim, Claims, REMEMBERED_CONFLICTS};
use crate::twin::endpoints::Endpoints;
use crate::twin::identity::AgentIdentity;

pub use host::{Chain, HostStatus, HostTwin, IngestCounters, ONLINE_MISSED_INTERVALS};

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
    /// Shared with readers: the API takes an `Arc` under the lock and builds its answer after
    /// releasing it; ingest copies a host only when it changes one a reader still holds.
    hosts: BTreeMap<String, Arc<HostTwin>>,
    /// Recent probe results, taken from the ticks as they are decoded; not persisted.
    endpoints: Endpoints,
    /// Which connection speaks for which agent; not persisted (no connection survives a restart).
    claims: Claims,
    /// Every decoded tick's points, until a checkpoint writes them.
    pub history: Recorder,
    /// Series keys, one copy each, shared by every host's states and the recorder.
    keys: KeyInterner,
}

impl Twin {
    /// Rebuilds the twin from hosts loaded from the store.
    pub fn from_hosts(hosts: impl IntoIterator<Item = HostTwin>) -> Self {
        let mut keys = KeyInterner::default();
        let hosts = hosts
            .into_iter()
            .map(|mut h| {
                h.state.share_keys(&mut keys);
                for chain in &mut h.backfill {
                    chain.state.share_keys(&mut keys);
                }
                (h.id.clone(), Arc::new(h))
            })
            .collect();
        Twin { hosts, keys, ..Twin::default() }
    }

    /// Registers the series host `id` has in storage, by index (see `Recorder::load`).
    pub fn load_history(&mut self, id: &str, keys: Vec<SeriesKey>) {
        let keys = keys.iter().map(|k| self.keys.intern(k)).collect();
        self.history.load(id, keys);
    }

    /// Distinct series keys held, however many hosts carry each.
    pub fn distinct_keys(&self) -> usize {
        self.keys.len()
    }

    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    pub fn hosts(&self) -> impl Iterator<Item = &HostTwin> {
        self.hosts.values().map(|h| &**h)
    }

    pub fn host(&self, id: &str) -> Option<&HostTwin> {
        self.hosts.get(id).map(|h| &**h)
    }

    /// Every host as it is now, to read without the lock.
    pub fn shared_hosts(&self) -> Vec<Arc<HostTwin>> {
        self.hosts.values().cloned().collect()
    }

    /// Host `id` as it is now, to read without the lock.
    pub fn shared_host(&self, id: &str) -> Option<Arc<HostTwin>> {
        self.hosts.get(id).cloned()
    }

    fn host_mut(&mut self, id: &str) -> Option<&mut HostTwin> {
        self.hosts.get_mut(id).map(Arc::make_mut)
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
                self.hosts.insert(id.to_owned(), Arc::new(h));
            }
            None => {
                self.hosts.remove(id);
                self.endpoints.forget_host(id);
            }
        }
    }

    /// Connection `conn` of agent `who` said hello. Decides whether it is served (see
    /// `Claims`) and, if so, records what the agent is.
    pub fn handle_hello(&mut self, who: &AgentIdentity, conn: u64, hello: &Hello, now_ms: i64) -> Claim {
        let host = Arc::make_mut(self.hosts.entry(who.id.clone()).or_insert_with(|| Arc::new(HostTwin::new(who))));
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
        if let Some(host) = self.host_mut(agent) {
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
        let Some(host) = self.host_mut(agent) else {
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
        let Some(host) = self.hosts.get_mut(agent).map(Arc::make_mut) else {
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
        let (endpoints, history, keys) = (&mut self.endpoints, &mut self.history, &mut self.keys);
        let shift = host.clock.correct(0);
        let mut observe = |state: &DeltaState, tick: &Tick, live: bool| {
            endpoints.observe(agent, state, tick, live);
            history.observe(agent, state, tick, shift);
        };
        let outcome = if incarnation == host.incarnation && seq > host.live_through {
            live(host, batch, keys, |state, tick| observe(state, tick, true))
        } else {
            backfill(host, batch, keys, |state, tick| observe(state, tick, false))
        };
        host.retire_chains();
        outcome
    }
}

/// A batch ahead of the live state.
fn live(
    host: &mut HostTwin,
    batch: &Batch,
    keys: &mut KeyInterner,
    observe: impl FnMut(&DeltaState, &Tick),
) -> Outcome {
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
    match apply_all(&mut host.state, batch, keys, observe) {
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
fn backfill(
    host: &mut HostTwin,
    batch: &Batch,
    keys: &mut KeyInterner,
    observe: impl FnMut(&DeltaState, &Tick),
) -> Outcome {
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
    match apply_all(&mut chain.state, batch, keys, observe) {
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
    keys: &mut KeyInterner,
    mut applied: impl FnMut(&DeltaState, &Tick),
) -> Result<(), DeltaError> {
    batch.ticks.iter().try_for_each(|tick| {
        state.apply_interned(tick, keys)?;
        applied(state, tick);
        Ok(())
    })
}
