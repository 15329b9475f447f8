//! Trains the wire's zstd dictionary on this host's batches: `cargo xtask dictionary`.
//!
//! Samples every source once a second (`TICKS`, default 120), encodes each sample as the agent
//! would ship it, trains a 4 KiB dictionary on three batches in four, and reports what it buys on
//! the fourth, which it never saw. Writes the dictionary to the path given as the first argument.

use std::time::Duration;

use twinwatch_agent::collector::{Collectors, Roots, Settings};
use twinwatch_agent::sampler::now_ms;
use twinwatch_common::delta::DeltaEncoder;
use twinwatch_common::message::Batch;
use twinwatch_common::sample::Sample;

fn main() {
    let out = std::env::args().nth(1).expect("usage: train_dictionary OUT [TICKS]");
    let ticks: u64 = std::env::args().nth(2).and_then(|v| v.parse().ok()).unwrap_or(120);
    let mut collectors = Collectors::new(Roots::default(), &Settings::default());
    let mut encoder = DeltaEncoder::new(40);
    let mut batches = Vec::new();
    for seq in 1..=ticks {
        let mut metrics = Vec::new();
        let skipped = collectors.collect(&mut metrics, encoder.keyframe_due());
        let tick = encoder.encode(&Sample { ts_ms: now_ms(), metrics, skipped });
        let batch = Batch { incarnation: now_ms() as u64, seq, ticks: vec![tick] };
        batches.push(bincode::encode_to_vec(&batch, bincode::config::standard()).expect("encodes"));
        std::thread::sleep(Duration::from_secs(1));
    }
    let (held, train): (Vec<_>, Vec<_>) = batches.iter().enumerate().partition(|(i, _)| i % 4 == 3);
    let train: Vec<&Vec<u8>> = train.into_iter().map(|(_, b)| b).collect();
    let dict =
        zstd::dict::from_samples(&train, 4096).expect("training the dictionary (too few batches? give TICKS >= 40)");
    let size = |c: &mut zstd::bulk::Compressor| -> usize {
        held.iter().map(|(_, b)| c.compress(b).expect("compresses").len()).sum()
    };
    let plain = size(&mut zstd::bulk::Compressor::new(3).expect("zstd"));
    let trained = size(&mut zstd::bulk::Compressor::with_dictionary(3, &dict).expect("zstd"));
    let raw: usize = held.iter().map(|(_, b)| b.len()).sum();
    println!("held-out batches: {raw} bytes raw, {plain} zstd, {trained} zstd with the dictionary");
    std::fs::write(&out, dict).expect("writing the dictionary");
    println!("wrote {out}");
}
