//! A set of sequence numbers as sorted, disjoint, inclusive runs: what a ledger remembers of one
//! incarnation. Holes are rare, so a handful of runs describes millions of batches.

use bincode::{Decode, Encode};

#[derive(Debug, Clone, Default, PartialEq, Eq, Encode, Decode, serde::Serialize)]
#[serde(transparent)]
pub struct Runs(Vec<(u64, u64)>);

impl Runs {
    pub fn contains(&self, seq: u64) -> bool {
        self.run_at(seq).is_ok()
    }

    /// `Ok(index)` of the run holding `seq`, or `Err(index)` where a run starting at `seq` goes.
    fn run_at(&self, seq: u64) -> Result<usize, usize> {
        let i = self.0.partition_point(|&(_, last)| last < seq);
        match self.0.get(i) {
            Some(&(first, _)) if first <= seq => Ok(i),
            _ => Err(i),
        }
    }

    /// Adds `first..=last`; returns how many of its numbers were not in the set before.
    pub fn insert(&mut self, first: u64, last: u64) -> u64 {
        if first > last {
            return 0;
        }
        let added = (last - first + 1) - self.count_in(first, last);
        // Runs that overlap or touch the new one merge with it.
        let start = self.0.partition_point(|&(_, l)| l.saturating_add(1) < first);
        let end = self.0.partition_point(|&(f, _)| f <= last.saturating_add(1));
        let (mut lo, mut hi) = (first, last);
        if start < end {
            lo = lo.min(self.0[start].0);
            hi = hi.max(self.0[end - 1].1);
        }
        self.0.splice(start..end, [(lo, hi)]);
        added
    }

    /// Removes `first..=last`; returns how many of its numbers were in the set.
    pub fn remove(&mut self, first: u64, last: u64) -> u64 {
        if first > last {
            return 0;
        }
        let removed = self.count_in(first, last);
        let mut kept = Vec::with_capacity(self.0.len() + 1);
        for &(f, l) in &self.0 {
            if l < first || f > last {
                kept.push((f, l));
                continue;
            }
            if f < first {
                kept.push((f, first - 1));
            }
            if l > last {
                kept.push((last + 1, l));
            }
        }
        self.0 = kept;
        removed
    }

    /// How many numbers of `first..=last` are in the set.
    pub fn count_in(&self, first: u64, last: u64) -> u64 {
        self.0.iter().filter(|&&(f, l)| f <= last && l >= first).map(|&(f, l)| l.min(last) - f.max(first) + 1).sum()
    }

    pub fn len(&self) -> u64 {
        self.0.iter().map(|&(f, l)| l - f + 1).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn last(&self) -> Option<u64> {
        self.0.last().map(|&(_, l)| l)
    }

    /// The highest `n` such that every number in `1..=n` is in the set (0 if 1 is not).
    pub fn contiguous_from_one(&self) -> u64 {
        match self.0.first() {
            Some(&(1, last)) => last,
            _ => 0,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.0.iter().copied()
    }

    /// Sorted sequence numbers as runs, e.g. to acknowledge a set of batches as ranges.
    pub fn from_sorted(seqs: impl IntoIterator<Item = u64>) -> Runs {
        let mut runs = Runs::default();
        for s in seqs {
            runs.insert(s, s);
        }
        runs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Random inserts and removals against a `BTreeSet` model.
    #[test]
    fn matches_a_set_model() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for _ in 0..200 {
            let mut runs = Runs::default();
            let mut model = BTreeSet::new();
            for _ in 0..60 {
                let first = 1 + next(80);
                let last = first + next(6);
                let fresh = (first..=last).filter(|s| !model.contains(s)).count() as u64;
                if next(3) == 0 {
                    let present = (first..=last).filter(|s| model.contains(s)).count() as u64;
                    assert_eq!(runs.remove(first, last), present);
                    (first..=last).for_each(|s| {
                        model.remove(&s);
                    });
                } else {
                    assert_eq!(runs.insert(first, last), fresh);
                    model.extend(first..=last);
                }
                assert_eq!(runs.len(), model.len() as u64);
                for s in 0..100 {
                    assert_eq!(runs.contains(s), model.contains(&s), "{s} in {runs:?}");
                }
                let pairs: Vec<_> = runs.iter().collect();
                assert!(pairs.windows(2).all(|w| w[0].1 + 1 < w[1].0), "runs merge: {pairs:?}");
                let contiguous = (1..).take_while(|s| model.contains(s)).count() as u64;
                assert_eq!(runs.contiguous_from_one(), contiguous);
            }
        }
    }

    #[test]
    fn from_sorted_groups_runs() {
        let runs = Runs::from_sorted([1, 2, 3, 7, 9, 10]);
        assert_eq!(runs.iter().collect::<Vec<_>>(), [(1, 3), (7, 7), (9, 10)]);
        assert_eq!(runs.count_in(2, 9), 4);
    }
}
