//! The sampling loop: collectors -> sample -> delta tick -> batch frame -> queue.
//!
//! Runs on its own thread so a slow kernel read (a stuck mount) never stalls the network side.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;
use twinwatch_common::delta::DeltaEncoder;
use twinwatch_common::frame::FrameEncoder;
use twinwatch_common::message::{Batch, Message};
use twinwatch_common::sample::{Metric, Sample, SeriesKey, Value};

use crate::collector::{user_hz, Collectors};
use crate::queue::Queue;
use crate::stats::{process_metrics, Stats};

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

pub struct Sampler {
    pub collectors: Collectors,
    pub encoder: DeltaEncoder,
    pub queue: Arc<Queue>,
    pub stats: Arc<Stats>,
    pub incarnation: u64,
    pub interval: Duration,
    /// Set by the shipper when the aggregator asks for a keyframe.
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
        while !self.stop.load(Relaxed) {
            metrics.clear();
            if self.keyframe_wanted.swap(false, Relaxed) {
                self.encoder.request_keyframe();
            }
            // A keyframe carries every series, so every source is read for it.
            let skipped = self.collectors.collect(&mut metrics, self.encoder.keyframe_due());
            let own = metrics.len();
            for source in &self.collectors.sources {
                let key = SeriesKey::new("twinwatch_agent_collector_errors_total").with("collector", source.name);
                metrics.push(Metric::counter(key, Value::Int(source.errors as i64)));
                let key = SeriesKey::new("twinwatch_agent_collector_seconds_total").with("collector", source.name);
                metrics.push(Metric::counter(key, Value::Int(source.busy.as_micros() as i64)).scaled(1e-6));
            }
            self.stats.metrics(&mut metrics);
            metrics.push(Metric::gauge(
                SeriesKey::new("twinwatch_agent_queue_batches"),
                Value::Int(self.queue.len() as i64),
            ));
            metrics.push(Metric::gauge(
                SeriesKey::new("twinwatch_agent_queue_bytes"),
                Value::Int(self.queue.bytes() as i64),
            ));
            process_metrics(&mut metrics, hz);
            for m in &mut metrics[own..] {
                m.group = Collectors::AGENT_GROUP;
            }

            let sample = Sample { ts_ms: now_ms(), metrics: std::mem::take(&mut metrics), skipped };
            let tick = self.encoder.encode(&sample);
            metrics = sample.metrics;
            seq += 1;
            let batch = Message::Batch(Batch { incarnation: self.incarnation, seq, ticks: vec![tick] });
            match batch.to_frame(&mut frames) {
                Ok(frame) => {
                    match self.queue.push(self.incarnation, seq, metrics.len() as u32, &frame) {
                        Ok(dropped) => {
                            self.stats.samples.fetch_add(metrics.len() as u64, Relaxed);
                            self.stats.ticks.fetch_add(1, Relaxed);
                            self.stats.batches.fetch_add(1, Relaxed);
                            if dropped.batches > 0 {
                                self.stats.dropped_batches.fetch_add(dropped.batches, Relaxed);
                                self.stats.dropped_samples.fetch_add(dropped.samples, Relaxed);
                                tracing::warn!(
                                    batches = dropped.batches,
                                    samples = dropped.samples,
                                    "buffer full: dropped the oldest batches"
                                );
                            }
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

            next += self.interval;
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
                // One wake-up per tick: shutdown unparks this thread rather than it polling.
                std::thread::park_timeout(left);
            }
        }
    }
}

/// `cargo xtask dictionary` runs this to train the wire dictionary on this host's batches.
#[cfg(test)]
mod dictionary {
    use super::*;
    use crate::collector::{Collectors, Roots, Settings};

    #[test]
    #[ignore = "trains common/src/wire.dict; run by cargo xtask dictionary"]
    fn train_wire_dictionary() {
        let Some(out) = std::env::var_os("TWINWATCH_DICT_OUT") else { return };
        let ticks: usize = std::env::var("TWINWATCH_DICT_TICKS").ok().and_then(|v| v.parse().ok()).unwrap_or(120);
        let mut collectors = Collectors::new(Roots::default(), &Settings::default());
        let mut encoder = DeltaEncoder::new(40);
        let mut batches = Vec::new();
        for seq in 1..=ticks as u64 {
            let mut metrics = Vec::new();
            let skipped = collectors.collect(&mut metrics, encoder.keyframe_due());
            let tick = encoder.encode(&Sample { ts_ms: now_ms(), metrics, skipped });
            let batch = Batch { incarnation: now_ms() as u64, seq, ticks: vec![tick] };
            batches.push(bincode::encode_to_vec(&batch, bincode::config::standard()).expect("encodes"));
            std::thread::sleep(Duration::from_secs(1));
        }
        // Hold out every fourth batch to report what the dictionary buys on batches it never saw.
        let (held, train): (Vec<_>, Vec<_>) = batches.iter().enumerate().partition(|(i, _)| i % 4 == 3);
        let train: Vec<&Vec<u8>> = train.into_iter().map(|(_, b)| b).collect();
        let dict = zstd::dict::from_samples(&train, 4096).expect("training");
        let size = |c: &mut zstd::bulk::Compressor| -> usize {
            held.iter().map(|(_, b)| c.compress(b).expect("compresses").len()).sum()
        };
        let plain = size(&mut zstd::bulk::Compressor::new(3).expect("zstd"));
        let trained = size(&mut zstd::bulk::Compressor::with_dictionary(3, &dict).expect("zstd"));
        let raw: usize = held.iter().map(|(_, b)| b.len()).sum();
        eprintln!("held-out batches: {raw} bytes raw, {plain} zstd, {trained} zstd with the dictionary");
        std::fs::write(out, dict).expect("writing the dictionary");
    }
}
