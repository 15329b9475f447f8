//! The sampling loop: collectors -> sample -> delta tick -> batch frame -> buffer.
//!
//! Runs on its own thread so a slow kernel read (a stuck mount) never stalls the network side.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use twinwatch_common::delta::DeltaEncoder;
use twinwatch_common::frame::FrameEncoder;
use twinwatch_common::message::{Batch, Message};
use twinwatch_common::sample::{Metric, Sample, SeriesKey, Value};

use crate::buffer::{Buffer, Meta};
use crate::collector::{user_hz, Collectors};
use crate::probe::table::{self, Table};
use crate::stats::{process_metrics, Stats};

pub use twinwatch_common::time::now_ms;

pub struct Sampler {
    pub collectors: Collectors,
    /// Probe results, when any probes are configured.
    pub probes: Option<Arc<Table>>,
    pub encoder: DeltaEncoder,
    pub buffer: Arc<Buffer>,
    pub stats: Arc<Stats>,
    pub incarnation: u64,
    pub interval: Duration,
    /// Set by the shipper when the aggregator asks for a keyframe; when the shipper also unparks
    /// this thread (a connection opened with a backlog), the keyframe is taken at once.
    pub keyframe_wanted: Arc<AtomicBool>,
    /// Woken after every push.
    pub wake: Arc<Notify>,
    pub stop: Arc<AtomicBool>,
}

impl Sampler {
    /// Samples every `interval` until `stop` is set.
    pub fn run(mut self) {
        let mut frames = FrameEncoder::new();
        let hz = user_hz();
        let mut seq = 0u64;
        let mut next = Instant::now();
        let mut metrics: Vec<Metric> = Vec::with_capacity(512);
        let mut probes_seen = 0u64;
        let mut extra = false;
        while !self.stop.load(Relaxed) {
            metrics.clear();
            if self.keyframe_wanted.swap(false, Relaxed) | self.buffer.take_keyframe_wish() {
                self.encoder.request_keyframe();
            }
            // A keyframe carries every series, so every source is read for it.
            let all = self.encoder.keyframe_due();
            let mut skipped = self.collectors.collect(&mut metrics, all);
            // Probe results join the sample only when one has landed since the last tick.
            let fresh = self.probes.as_ref().is_some_and(|t| t.emit(&mut probes_seen, all, &mut metrics));
            if !fresh {
                skipped |= 1 << table::GROUP;
            }
            let own = metrics.len();
            for source in &self.collectors.sources {
                let key = SeriesKey::new("twinwatch_agent_collector_errors_total").with("collector", source.name);
                metrics.push(Metric::counter(key, Value::Int(source.errors as i64)));
                let key = SeriesKey::new("twinwatch_agent_collector_seconds_total").with("collector", source.name);
                metrics.push(Metric::counter(key, Value::Int(source.busy.as_micros() as i64)).scaled(1e-6));
            }
            self.stats.metrics(&mut metrics);
            metrics.push(Metric::gauge(
                SeriesKey::new("twinwatch_agent_buffer_batches"),
                Value::Int(self.buffer.len() as i64),
            ));
            metrics.push(Metric::gauge(
                SeriesKey::new("twinwatch_agent_buffer_bytes"),
                Value::Int(self.buffer.bytes() as i64),
            ));
            process_metrics(&mut metrics, hz);
            for m in &mut metrics[own..] {
                m.group = Collectors::AGENT_GROUP;
            }

            let sample = Sample { ts_ms: now_ms(), metrics: std::mem::take(&mut metrics), skipped };
            let tick = self.encoder.encode(&sample);
            metrics = sample.metrics;
            seq += 1;
            let meta = Meta { ticks: 1, ts_ms: sample.ts_ms, keyframe: tick.keyframe };
            let batch = Message::Batch(Batch { incarnation: self.incarnation, seq, ticks: vec![tick] });
            match batch.to_frame(&mut frames) {
                Ok(frame) => {
                    match self.buffer.push(self.incarnation, seq, meta, frame, Instant::now()) {
                        Ok(done) => {
                            self.stats.samples.fetch_add(metrics.len() as u64, Relaxed);
                            self.stats.ticks.fetch_add(1, Relaxed);
                            self.stats.batches.fetch_add(1, Relaxed);
                            self.stats.dropped_batches.fetch_add(done.dropped_batches, Relaxed);
                            self.stats.dropped_ticks.fetch_add(done.dropped_ticks, Relaxed);
                            self.stats.spills.fetch_add(done.spills, Relaxed);
                            self.stats.spilled_bytes.fetch_add(done.spilled_bytes, Relaxed);
                            self.wake.notify_one();
                        }
                        Err(e) => {
                            // The next tick must not be a delta against a batch nobody will see.
                            tracing::error!("buffer write failed, sample lost: {e}");
                            self.encoder.request_keyframe();
                            seq -= 1;
                        }
                    }
                }
                Err(e) => {
                    tracing::error!("cannot encode batch: {e}");
                    self.encoder.request_keyframe();
                    seq -= 1;
                }
            }

            // A sample taken out of turn leaves the schedule as it was.
            if !std::mem::take(&mut extra) {
                next += self.interval;
            }
            let now = Instant::now();
            if next <= now {
                // Running late (suspend, overload): skip the missed ticks rather than bursting.
                next = now + self.interval;
            }
            while !self.stop.load(Relaxed) {
                let left = next.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                if self.keyframe_wanted.load(Relaxed) {
                    extra = true;
                    break;
                }
                // One wake-up per tick: shutdown unparks this thread rather than it polling.
                std::thread::park_timeout(left);
            }
        }
    }
}
