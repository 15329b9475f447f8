//! One host's twin: its live state, backfill chains, ledgers per incarnation, counters and
//! clock, and the status it has at a given time.

use bincode::{Decode, Encode};
use twinwatch_common::delta::DeltaState;
use twinwatch_common::message::HostInfo;

use crate::twin::claims::Conflict;
use crate::twin::clock::Clock;
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
    pub(super) fn new(who: &AgentIdentity) -> Self {
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

    pub(super) fn ledger_mut(&mut self, incarnation: u64) -> &mut Ledger {
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

    pub(super) fn keep_chain(&mut self, chain: Chain) {
        if self.backfill.len() >= MAX_CHAINS {
            self.backfill.remove(0);
        }
        self.backfill.push(chain);
    }

    /// Drops chains whose next batch is already stored or known dropped: their work is done.
    pub(super) fn retire_chains(&mut self) {
        let ledgers = &self.ledgers;
        self.backfill.retain(|c| {
            let next = c.through + 1;
            !ledgers.iter().any(|l| l.incarnation == c.incarnation && (l.has(next) || l.dropped.contains(next)))
        });
    }
}
