//! The ledger of one agent incarnation: which batches are stored, which the agent reported
//! dropped, and how many host samples (ticks) each side holds. Together with the agent's own
//! count it answers "is anything missing, and if so, is it accounted for?".

use bincode::{Decode, Encode};
use twinwatch_common::message::Dropped;

use crate::twin::runs::Runs;

/// Gaps remembered per incarnation; older ones still count in the totals.
const REMEMBERED_GAPS: usize = 32;

/// A known hole in history: batches the agent dropped, with the samples and times they covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, serde::Serialize)]
pub struct Gap {
    pub first_seq: u64,
    pub last_seq: u64,
    pub ticks: u64,
    /// Agent clock, ms since the epoch.
    pub from_ms: i64,
    pub to_ms: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Encode, Decode, serde::Serialize)]
pub struct Ledger {
    pub incarnation: u64,
    pub stored: Runs,
    pub dropped: Runs,
    pub ticks_stored: u64,
    pub ticks_dropped: u64,
    pub gaps: Vec<Gap>,
    /// Agent clock of the newest tick stored, ms since the epoch.
    pub newest_tick_ms: i64,
}

impl Ledger {
    pub fn new(incarnation: u64) -> Self {
        Ledger { incarnation, ..Ledger::default() }
    }

    /// Whether batch `seq` is already stored: a replay.
    pub fn has(&self, seq: u64) -> bool {
        self.stored.contains(seq)
    }

    /// Records batch `seq` carrying `ticks` ticks, the newest at `newest_ms`, as stored. A batch
    /// the agent had reported dropped (it was in flight when it was dropped) moves from the
    /// dropped side to the stored side.
    pub fn store(&mut self, seq: u64, ticks: u64, newest_ms: i64) {
        if self.stored.insert(seq, seq) == 0 {
            return;
        }
        self.ticks_stored += ticks;
        self.newest_tick_ms = self.newest_tick_ms.max(newest_ms);
        if self.dropped.remove(seq, seq) > 0 {
            self.ticks_dropped = self.ticks_dropped.saturating_sub(ticks);
        }
    }

    /// Records the agent's report of dropped batches; the part already stored is not dropped.
    /// Returns whether anything was new.
    pub fn drop_reported(&mut self, d: &Dropped) -> bool {
        if d.first_seq > d.last_seq || self.dropped.count_in(d.first_seq, d.last_seq) > 0 {
            return false;
        }
        let already = self.stored.count_in(d.first_seq, d.last_seq);
        let batches = d.last_seq - d.first_seq + 1;
        // One tick per batch is the agent's rule; a report that says otherwise is taken at its word
        // for the part not stored.
        let ticks = d.ticks.saturating_sub(already * d.ticks / batches.max(1));
        for (first, last) in gaps_between(&self.stored, d.first_seq, d.last_seq) {
            self.dropped.insert(first, last);
        }
        self.ticks_dropped += ticks;
        // The agent drops one segment at a time; consecutive ones are one gap.
        if let Some(g) = self.gaps.last_mut().filter(|g| g.last_seq + 1 == d.first_seq) {
            g.last_seq = d.last_seq;
            g.ticks += ticks;
            g.to_ms = d.to_ms;
            return true;
        }
        if self.gaps.len() >= REMEMBERED_GAPS {
            self.gaps.remove(0);
        }
        self.gaps.push(Gap { first_seq: d.first_seq, last_seq: d.last_seq, ticks, from_ms: d.from_ms, to_ms: d.to_ms });
        true
    }

    /// Highest `n` with every batch `1..=n` stored or reported dropped.
    pub fn accounted_through(&self) -> u64 {
        let mut all = self.stored.clone();
        for (f, l) in self.dropped.iter() {
            all.insert(f, l);
        }
        all.contiguous_from_one()
    }
}

/// The runs of `first..=last` that are not in `set`.
fn gaps_between(set: &Runs, first: u64, last: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut at = first;
    for (f, l) in set.iter() {
        if l < at {
            continue;
        }
        if f > last {
            break;
        }
        if f > at {
            out.push((at, f - 1));
        }
        at = l.saturating_add(1);
        if at > last {
            return out;
        }
    }
    if at <= last {
        out.push((at, last));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dropped(first: u64, last: u64) -> Dropped {
        Dropped { incarnation: 1, first_seq: first, last_seq: last, ticks: last - first + 1, from_ms: 0, to_ms: 1 }
    }

    #[test]
    fn stored_and_dropped_account_for_every_batch() {
        let mut l = Ledger::new(1);
        for seq in [1, 2, 3, 9, 10] {
            l.store(seq, 1, 0);
        }
        l.store(2, 1, 0); // a replay counts once
        assert_eq!(l.ticks_stored, 5);
        assert_eq!(l.accounted_through(), 3);
        // The agent dropped 3..=8, but 3 had reached us before it was dropped.
        assert!(l.drop_reported(&dropped(3, 8)));
        assert!(!l.drop_reported(&dropped(3, 8)), "a repeated report is not counted twice");
        assert_eq!((l.ticks_dropped, l.dropped.len()), (5, 5));
        assert_eq!(l.accounted_through(), 10);
        // A batch reported dropped that was in flight arrives after all.
        l.store(5, 1, 0);
        assert_eq!((l.ticks_stored, l.ticks_dropped), (6, 4));
        assert_eq!(l.gaps.len(), 1);
        // A later drop is a second gap; the segment right after it grows that gap.
        assert!(l.drop_reported(&dropped(11, 12)));
        assert!(l.drop_reported(&dropped(13, 14)));
        assert_eq!(l.gaps.len(), 2);
        assert_eq!((l.gaps[1].first_seq, l.gaps[1].last_seq, l.gaps[1].ticks), (11, 14, 4));
    }

    #[test]
    fn gaps_between_runs() {
        let set = Runs::from_sorted([3, 4, 8]);
        assert_eq!(gaps_between(&set, 1, 10), [(1, 2), (5, 7), (9, 10)]);
        assert_eq!(gaps_between(&set, 3, 4), []);
        assert_eq!(gaps_between(&Runs::default(), 2, 2), [(2, 2)]);
    }
}
