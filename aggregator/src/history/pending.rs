//! One host's points in one raw window while they wait for a checkpoint: a row per tick, appended
//! to one byte stream as ticks arrive.
//!
//! A thousand hosts of five hundred series hold half a minute of points between checkpoints. Kept
//! per series (a column each, with its codec state, allocation and map entry) that costs far more
//! than the points; kept as rows, a tick's time is written once for all its series and a series
//! costs only its points and ten bytes of state:
//!
//! ```text
//! row   := count:varint  dt:signed (time after the row before; the first row's is whole)  entry*
//! entry := head:varint (zig-zag of the index after the one before, << 1 | meta follows)
//!          [flags:u8 (1 float, 2 counter)  scale:f64 LE]   (a series' first point here, or a change)
//!          value (integer: signed change from the series' point before; float: XOR as in `codec`)
//! ```
//!
//! Points come back in arrival order per series; [`Rows::column`] and [`Rows::columns`] give them
//! as [`Column`]s for the caller to sort.

use std::collections::BTreeMap;

use super::codec::{put_signed, put_varint, zigzag, CodecError, Cursor, Xor};
use super::segment::{Column, Columns};

/// How a series' bits are read; written into the stream when it changes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Meta {
    pub float: bool,
    pub counter: bool,
    pub scale: f64,
}

thread_local! {
    /// The row being encoded, reused: one per ingest thread, not one per host.
    static ROW: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// One window's rows.
#[derive(Debug, Default, Clone)]
pub struct Rows {
    bytes: Vec<u8>,
    points: usize,
    last_ts: i64,
    /// Per series index: its previous point's bits, and its meta as last written (an index into
    /// `metas` plus one; 0 before its first point).
    last: Vec<u64>,
    meta_of: Vec<u16>,
    /// The distinct metas of this window: a handful (a few scales, float or not).
    metas: Vec<Meta>,
}

impl Rows {
    /// Appends one row: `entries` are the `(series index, meta, bits)` read at `ts`, `count` of
    /// them (counted by the caller, which has them at hand).
    pub fn push(&mut self, ts: i64, count: usize, entries: impl Iterator<Item = (u32, Meta, u64)>) {
        if count == 0 {
            return;
        }
        // Encoded aside, then appended with a growth this type chooses: written in place, a row
        // crossing the capacity would double the stream.
        let mut row = ROW.take();
        row.clear();
        put_varint(&mut row, count as u64);
        put_signed(&mut row, ts.wrapping_sub(self.last_ts));
        self.last_ts = ts;
        let mut next = 0u32;
        let mut written = 0;
        for (idx, meta, bits) in entries.take(count) {
            let i = idx as usize;
            if self.last.len() <= i {
                self.last.reserve_exact(i + 1 - self.last.len());
                self.last.resize(i + 1, 0);
                self.meta_of.reserve_exact(i + 1 - self.meta_of.len());
                self.meta_of.resize(i + 1, 0);
            }
            let id = self.meta_of[i];
            let changed = id == 0 || self.metas.get(id as usize - 1) != Some(&meta);
            put_varint(&mut row, zigzag(i64::from(idx) - i64::from(next)) << 1 | u64::from(changed));
            next = idx.wrapping_add(1);
            if changed {
                row.push(u8::from(meta.float) | u8::from(meta.counter) << 1);
                row.extend_from_slice(&meta.scale.to_le_bytes());
                self.meta_of[i] = self.meta_id(meta);
            }
            if meta.float {
                Xor::after(self.last[i]).put(&mut row, bits);
            } else {
                put_signed(&mut row, (bits as i64).wrapping_sub(self.last[i] as i64));
            }
            self.last[i] = bits;
            written += 1;
        }
        // The caller's count is the row's: a shorter iterator would leave a row that lies.
        debug_assert_eq!(written, count, "row count");
        self.points += written;
        let spare = self.bytes.capacity() - self.bytes.len();
        if spare < row.len() {
            // By an eighth rather than doubling: a window's rows are the bulk of the aggregator's
            // memory between checkpoints.
            self.bytes.reserve_exact(row.len().max(self.bytes.len() / 8 + 4096));
        }
        self.bytes.extend_from_slice(&row);
        ROW.set(row);
    }

    fn meta_id(&mut self, meta: Meta) -> u16 {
        match self.metas.iter().position(|m| *m == meta) {
            Some(i) => i as u16 + 1,
            None if self.metas.len() < usize::from(u16::MAX) - 1 => {
                self.metas.push(meta);
                self.metas.len() as u16
            }
            // More distinct metas than any agent sends: write the meta again at every point.
            None => 0,
        }
    }

    #[cfg(test)]
    pub fn points(&self) -> usize {
        self.points
    }

    /// Bytes the stream and its state hold.
    #[cfg(test)]
    pub fn heap_bytes(&self) -> usize {
        self.bytes.capacity() + self.last.capacity() * 8 + self.meta_of.capacity() * 2 + self.metas.capacity() * 16
    }

    /// Series `idx`'s points, in arrival order within each run of one meta, the runs merged.
    pub fn column(&self, idx: u32) -> Option<Column> {
        let mut runs = Runs::default();
        // Only this type writes these bytes, so a walk cannot fail; what it read stands.
        let _ = self.walk(|i, meta, ts, bits| {
            if i == idx {
                runs.push(meta, ts, bits);
            }
        });
        runs.finish()
    }

    /// Every series' points, as [`Rows::column`] gives them.
    pub fn columns(&self) -> Columns {
        let mut runs: BTreeMap<u32, Runs> = BTreeMap::new();
        let _ = self.walk(|i, meta, ts, bits| runs.entry(i).or_default().push(meta, ts, bits));
        runs.into_iter().filter_map(|(i, r)| Some((i, r.finish()?))).collect()
    }

    fn walk(&self, mut each: impl FnMut(u32, Meta, i64, u64)) -> Result<(), CodecError> {
        let mut c = Cursor::new(&self.bytes);
        let mut last: Vec<(u64, Meta)> = Vec::new();
        let mut ts = 0i64;
        while c.remaining() > 0 {
            let count = c.count(2)?;
            ts = ts.wrapping_add(c.signed()?);
            let mut next = 0i64;
            for _ in 0..count {
                let head = c.varint()?;
                let idx = next.wrapping_add(super::codec::unzigzag(head >> 1));
                let idx = u32::try_from(idx).map_err(|_| CodecError::Corrupt("series index"))?;
                next = i64::from(idx) + 1;
                let i = idx as usize;
                if last.len() <= i {
                    // Bounded: an index beyond what was pushed cannot be in these bytes.
                    if i >= self.last.len() {
                        return Err(CodecError::Corrupt("series index"));
                    }
                    last.resize(i + 1, (0, Meta { float: false, counter: false, scale: 1.0 }));
                }
                if head & 1 == 1 {
                    let flags = c.byte()?;
                    let scale = f64::from_le_bytes(c.take(8)?.try_into().map_err(|_| CodecError::Truncated)?);
                    last[i].1 = Meta { float: flags & 1 != 0, counter: flags & 2 != 0, scale };
                }
                let (prev, meta) = last[i];
                let bits = if meta.float {
                    Xor::after(prev).read(&mut c)?
                } else {
                    (prev as i64).wrapping_add(c.signed()?) as u64
                };
                last[i].0 = bits;
                each(idx, meta, ts, bits);
            }
        }
        Ok(())
    }
}

/// One series' points as read from the rows: a column per run of one meta.
#[derive(Default)]
struct Runs {
    done: Option<Column>,
    run: Option<Column>,
}

impl Runs {
    fn push(&mut self, meta: Meta, ts: i64, bits: u64) {
        let same = self.run.as_ref().is_some_and(|r| r.float == meta.float && r.scale == meta.scale);
        if !same {
            self.end_run();
        }
        let run = self.run.get_or_insert_with(|| Column::new(meta.float, meta.counter, meta.scale));
        run.counter = meta.counter;
        run.points.push((ts, bits));
    }

    fn end_run(&mut self) {
        if let Some(run) = self.run.take() {
            match &mut self.done {
                // Rare (a changed agent): the window's column continues in the form both share.
                Some(done) => {
                    super::recorder::sort_points(&mut done.points);
                    let mut run = run;
                    super::recorder::sort_points(&mut run.points);
                    done.merge(&run);
                }
                None => self.done = Some(run),
            }
        }
    }

    fn finish(mut self) -> Option<Column> {
        self.end_run();
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::codec::tests::Rng;

    const INT: Meta = Meta { float: false, counter: true, scale: 0.01 };
    const FLOAT: Meta = Meta { float: true, counter: false, scale: 1.0 };

    #[test]
    fn points_come_back_exactly_per_series_in_arrival_order() {
        let mut rng = Rng(7);
        let mut rows = Rows::default();
        let mut want: BTreeMap<u32, Column> = BTreeMap::new();
        let mut ts = 1_700_000_000_000i64;
        let mut v = 0i64;
        for i in 0..600u64 {
            // Jitter, a late row now and then, values of every size and sign, series that come
            // and go, and indices out of order.
            ts += if i % 97 == 0 { -5_000 } else { 1_000 + rng.below(9) as i64 };
            let mut row = Vec::new();
            for idx in [3u32, 0, 7, 1, 200, 2] {
                if (i + u64::from(idx)) % 5 == 4 {
                    continue;
                }
                v = v.wrapping_add(rng.below(1 << (i % 60)) as i64 - (1 << (i % 60)) / 2);
                let meta = if idx % 2 == 0 { FLOAT } else { INT };
                let bits = if meta.float { (v as f64 / 7.0).to_bits() } else { v as u64 };
                row.push((idx, meta, bits));
                want.entry(idx)
                    .or_insert_with(|| Column::new(meta.float, meta.counter, meta.scale))
                    .points
                    .push((ts, bits));
            }
            rows.push(ts, row.len(), row.into_iter());
        }
        rows.push(i64::MIN, 2, [(5, FLOAT, f64::NAN.to_bits()), (0, FLOAT, u64::MAX)].into_iter());
        want.insert(5, Column { points: vec![(i64::MIN, f64::NAN.to_bits())], ..Column::new(true, false, 1.0) });
        want.get_mut(&0).unwrap().points.push((i64::MIN, u64::MAX));
        assert_eq!(rows.columns(), want);
        for (idx, col) in &want {
            assert_eq!(rows.column(*idx).as_ref(), Some(col));
        }
        assert_eq!(rows.column(4), None);
        assert_eq!(rows.points(), want.values().map(|c| c.points.len()).sum::<usize>());
    }

    #[test]
    fn a_series_whose_form_changes_comes_back_as_one_column_in_the_form_both_share() {
        let mut rows = Rows::default();
        rows.push(1_000, 1, [(0, Meta { float: false, counter: false, scale: 0.5 }, 4)].into_iter());
        rows.push(2_000, 1, [(0, FLOAT, 3.25f64.to_bits())].into_iter());
        let col = rows.column(0).unwrap();
        assert_eq!(col.reals().collect::<Vec<_>>(), [(1_000, 2.0), (2_000, 3.25)]);
    }

    #[test]
    fn a_host_read_every_second_costs_a_few_bytes_a_point_and_little_else() {
        let mut rows = Rows::default();
        let n = 500u32;
        for t in 0..30i64 {
            let entries = (0..n).map(|i| {
                if i % 2 == 0 {
                    (i, INT, (1_000_000 + t * 250 * i64::from(i)) as u64)
                } else {
                    (i, FLOAT, if t % 10 == 0 { 0.5f64 } else { 0.25 }.to_bits())
                }
            });
            rows.push(1_700_000_000_000 + t * 1000 + t % 3, n as usize, entries);
        }
        let per_point = rows.heap_bytes() as f64 / rows.points() as f64;
        // The first point of each series carries its meta and whole value; the rest are changes
        // (here counters growing by up to 125,000 a second: three bytes).
        assert!(per_point < 4.5, "{per_point:.2} bytes a point");
        assert!(rows.bytes.capacity() <= rows.bytes.len() * 9 / 8 + 8192, "grown by more than an eighth");
    }
}
