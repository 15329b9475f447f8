//! Writes the fuzz targets' seed corpus from this host's real frames: `cargo xtask fuzz-corpus`.
//!
//! Samples every source with the agent's own collectors, a keyframe and then `DELTAS` deltas one
//! second apart, and encodes each sample as the agent's sampler does (the same extra series, the
//! same delta encoder, one batch frame per tick). The aggregator's answers are framed too, with
//! the values it would send. Writes, under the directory given as the only argument:
//!
//! - `frame/seed-*`: single frames of every kind, a batch of several ticks, and the opening of a
//!   connection as one stream (hello, batches, ack);
//! - `delta/seed-*`: ticks as a batch carries them (bincode with the wire's configuration): the
//!   keyframe, which the delta target also primes its state with, each delta, and the deltas as
//!   one sequence.
//!
//! Every `seed-*` file already there is replaced; other files (inputs a fuzzer added) are kept.

use std::path::Path;
use std::time::Duration;

use twinwatch_agent::collector::{user_hz, Collectors, Roots, Settings};
use twinwatch_agent::identity::host_info;
use twinwatch_agent::probe::table;
use twinwatch_agent::sampler::now_ms;
use twinwatch_agent::shipper::hello;
use twinwatch_agent::stats::{process_metrics, Stats};
use twinwatch_common::delta::{DeltaEncoder, Tick};
use twinwatch_common::frame::FrameEncoder;
use twinwatch_common::message::{Ack, Batch, Dropped, KeyframeRequest, Message, TimeEcho, Welcome};
use twinwatch_common::sample::{Metric, Sample, SeriesKey, Value};

/// Deltas after the keyframe: enough for the sources read every five seconds to come round.
const DELTAS: usize = 5;
/// The agent's default keyframe interval, in ticks.
const KEYFRAME_EVERY: u32 = 300;

fn main() {
    let Some(out) = std::env::args().nth(1) else {
        eprintln!("usage: twinwatch-fuzz-seed CORPUS_DIR");
        std::process::exit(2);
    };
    let out = Path::new(&out);
    let ticks = sample_ticks();
    let incarnation = now_ms() as u64;

    let mut frames = FrameEncoder::new();
    let mut frame = |m: Message| m.to_frame(&mut frames).expect("a sampled message encodes");
    let batches: Vec<Vec<u8>> = ticks
        .iter()
        .zip(1u64..)
        .map(|(tick, seq)| frame(Message::Batch(Batch { incarnation, seq, ticks: vec![tick.clone()] })))
        .collect();
    let mut hello = hello(incarnation, Duration::from_secs(1), host_info(&Roots::default().proc));
    hello.agent_time_ms = now_ms();
    let hello = frame(Message::Hello(hello));
    let welcome = frame(Message::Welcome(Welcome {
        server_time_ms: now_ms(),
        agent_id: "fuzz-seed".into(),
        dc: "dc1".into(),
        stored_through: 0,
    }));
    let last = ticks.len() as u64;
    let ack = frame(Message::Ack(Ack { incarnation, first_seq: 1, last_seq: last, server_time_ms: now_ms() }));
    let dropped = frame(Message::Dropped(Dropped {
        incarnation,
        first_seq: 1,
        last_seq: last,
        ticks: last,
        from_ms: now_ms() - 60_000,
        to_ms: now_ms(),
    }));
    let echo = frame(Message::TimeEcho(TimeEcho { server_time_ms: now_ms(), agent_time_ms: now_ms() + 3 }));
    let keyframe_request = frame(Message::KeyframeRequest(KeyframeRequest { incarnation, after_seq: last }));
    let several = frame(Message::Batch(Batch { incarnation, seq: last + 1, ticks: ticks.clone() }));
    let stream = [&hello, &echo, &batches[0], &batches[1], &batches[2], &dropped, &ack].map(|f| f.as_slice()).concat();

    let mut files: Vec<(String, Vec<u8>)> = vec![
        ("frame/seed-hello".into(), hello),
        ("frame/seed-welcome".into(), welcome),
        ("frame/seed-ack".into(), ack),
        ("frame/seed-dropped".into(), dropped),
        ("frame/seed-time-echo".into(), echo),
        ("frame/seed-keyframe-request".into(), keyframe_request),
        ("frame/seed-batch-ticks".into(), several),
        ("frame/seed-stream".into(), stream),
    ];
    for (i, batch) in batches.into_iter().enumerate() {
        let name = if i == 0 { "frame/seed-batch-keyframe".into() } else { format!("frame/seed-batch-delta-{i}") };
        files.push((name, batch));
    }
    for (i, tick) in ticks.iter().enumerate() {
        let name = if i == 0 { "delta/seed-keyframe".into() } else { format!("delta/seed-delta-{i}") };
        files.push((name, wire(tick)));
    }
    files.push(("delta/seed-deltas".into(), wire(&ticks[1..].to_vec())));

    for dir in ["frame", "delta"] {
        clear_seeds(&out.join(dir));
    }
    let mut total = 0;
    for (name, bytes) in &files {
        let path = out.join(name);
        std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        total += bytes.len();
    }
    println!("wrote {} seeds, {total} bytes, under {}", files.len(), out.display());
}

/// A keyframe and [`DELTAS`] deltas of this host, one second apart.
fn sample_ticks() -> Vec<Tick> {
    let mut collectors = Collectors::new(Roots::default(), &Settings::default());
    let mut encoder = DeltaEncoder::new(KEYFRAME_EVERY);
    let stats = Stats::default();
    let hz = user_hz();
    let mut ticks = Vec::new();
    for n in 0..=DELTAS {
        if n > 0 {
            std::thread::sleep(Duration::from_secs(1));
        }
        let mut metrics = Vec::new();
        let all = encoder.keyframe_due();
        // No probes are configured: their group is skipped, as in the agent.
        let skipped = collectors.collect(&mut metrics, all) | 1 << table::GROUP;
        agent_metrics(&collectors, &stats, hz, &mut metrics);
        ticks.push(encoder.encode(&Sample { ts_ms: now_ms(), metrics, skipped }));
    }
    ticks
}

/// The agent's own series, as its sampler appends them after the collectors'.
fn agent_metrics(collectors: &Collectors, stats: &Stats, hz: f64, metrics: &mut Vec<Metric>) {
    let own = metrics.len();
    for source in &collectors.sources {
        let key = SeriesKey::new("twinwatch_agent_collector_errors_total").with("collector", source.name);
        metrics.push(Metric::counter(key, Value::Int(source.errors as i64)));
        let key = SeriesKey::new("twinwatch_agent_collector_seconds_total").with("collector", source.name);
        metrics.push(Metric::counter(key, Value::Int(source.busy.as_micros() as i64)).scaled(1e-6));
    }
    stats.metrics(metrics);
    metrics.push(Metric::gauge(SeriesKey::new("twinwatch_agent_queue_batches"), Value::Int(0)));
    metrics.push(Metric::gauge(SeriesKey::new("twinwatch_agent_queue_bytes"), Value::Int(0)));
    process_metrics(metrics, hz);
    for m in &mut metrics[own..] {
        m.group = Collectors::AGENT_GROUP;
    }
}

/// A value as a frame's payload carries it: bincode's standard configuration, which the wire's
/// only extends with a decoding limit.
fn wire<T: bincode::Encode>(value: &T) -> Vec<u8> {
    bincode::encode_to_vec(value, bincode::config::standard()).expect("a sampled tick encodes")
}

fn clear_seeds(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()));
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with("seed-") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
