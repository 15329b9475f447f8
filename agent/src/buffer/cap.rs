//! Drop-oldest past the cap: whole segments, each reported as a gap.

use std::ops::Bound;

use twinwatch_common::message::Dropped;

use super::record::{encode_drop, split_key, Meta, META_LEN};
use super::{key, Buffer, BufferError, Inner, Key};

impl Buffer {
    /// Drops oldest segments until under the cap. A segment is the oldest batch and those after
    /// it up to the next keyframe of the same incarnation. One with a batch in flight is left
    /// for now; with no keyframe after the oldest batch, one is asked for.
    pub(super) fn keep_cap(&self, inner: &mut Inner) -> Result<(), BufferError> {
        while inner.mem_bytes + inner.disk_bytes > self.cap {
            let Some(first) = self.first_from(inner, Bound::Unbounded, None)? else {
                return Ok(());
            };
            let (incarnation, _) = split_key(&first);
            let mut segment = vec![first];
            let mut at = first;
            let ends = loop {
                let Some(next) = self.first_from(inner, Bound::Excluded(at), None)? else {
                    break false;
                };
                if split_key(&next).0 != incarnation || self.meta(inner, &next)?.is_some_and(|m| m.keyframe) {
                    break true;
                }
                segment.push(next);
                at = next;
            };
            if !ends {
                inner.want_keyframe = true;
                return Ok(());
            }
            if segment.iter().any(|k| inner.in_flight.contains(k)) {
                return Ok(());
            }
            self.drop_segment(inner, &segment)?;
        }
        Ok(())
    }

    fn drop_segment(&self, inner: &mut Inner, segment: &[Key]) -> Result<(), BufferError> {
        let mut disk = sled::Batch::default();
        let mut reports: Vec<Dropped> = Vec::new();
        for k in segment {
            let (incarnation, seq) = split_key(k);
            let meta = match inner.mem.remove(k) {
                Some(e) => {
                    inner.mem_bytes -= (META_LEN + e.frame.len()) as u64;
                    e.meta
                }
                None => {
                    let Some(v) = self.batches.get(k)? else { continue };
                    disk.remove(k.as_slice());
                    inner.disk_bytes -= v.len() as u64;
                    inner.disk_count -= 1;
                    Meta::decode(&v)
                }
            };
            inner.totals.dropped_batches += 1;
            inner.totals.dropped_ticks += meta.ticks as u64;
            match reports.last_mut() {
                Some(r) if r.incarnation == incarnation && r.last_seq + 1 == seq => {
                    r.last_seq = seq;
                    r.ticks += meta.ticks as u64;
                    r.to_ms = meta.ts_ms;
                }
                _ => reports.push(Dropped {
                    incarnation,
                    first_seq: seq,
                    last_seq: seq,
                    ticks: meta.ticks as u64,
                    from_ms: meta.ts_ms,
                    to_ms: meta.ts_ms,
                }),
            }
        }
        let mut recorded = sled::Batch::default();
        for r in &reports {
            let k = key(r.incarnation, r.first_seq);
            recorded.insert(k.as_slice(), encode_drop(r));
            inner.drops.insert(k, *r);
            tracing::warn!(
                incarnation = r.incarnation,
                first = r.first_seq,
                last = r.last_seq,
                ticks = r.ticks,
                "buffer full: dropped the oldest samples"
            );
        }
        self.batches.apply_batch(disk)?;
        self.drops.apply_batch(recorded)?;
        Ok(())
    }

    /// Whether the cap wants a keyframe soon (taken: it reads once as true).
    pub fn take_keyframe_wish(&self) -> bool {
        std::mem::take(&mut self.inner().want_keyframe)
    }
}
