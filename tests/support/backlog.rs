//! An agent backlog for benchmarks: seconds of the [`synthetic`](crate::synthetic) host written
//! into a fresh agent state directory's buffer exactly as the sampler would (a [`DeltaEncoder`]
//! with the agent's keyframe interval, one `Batch` frame per tick), under an incarnation below the
//! one the agent takes next, so the real agent replays it on its first connection.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use twinwatch_agent::buffer::{Buffer, Meta};
use twinwatch_common::delta::DeltaEncoder;
use twinwatch_common::frame::FrameEncoder;
use twinwatch_common::message::{Batch, Message};
use twinwatch_common::sample::Metric;

use crate::synthetic::Host;
use crate::{bin, Aggregator, Proc};

/// The agent's defaults (`agent/src/config.rs`): keyframe interval and buffer cap.
const KEYFRAME_EVERY: u32 = 300;
const BUFFER_CAP: u64 = 64 << 20;
/// The synthetic host's seed: the same backlog in every run.
pub const SEED: u64 = 0x7769_6e77_6174_6368;

/// What was put in a buffer.
pub struct Backlog {
    pub incarnation: u64,
    pub frame_bytes: u64,
    /// The first tick's time; tick `i` (from 0) is one second later each.
    pub first_ms: i64,
    /// Series values in the backlog.
    pub values: u64,
}

/// Writes `ticks` seconds of the synthetic host, ending now, into the buffer of the state dir
/// `state`, under a fresh incarnation.
pub fn write_backlog(state: &Path, ticks: u64) -> Backlog {
    write_backlog_of(state, ticks, |_| true)
}

/// The same with only the series `keep` accepts (the host is generated whole, so the values
/// are the same as in a full backlog).
pub fn write_backlog_of(state: &Path, ticks: u64, keep: impl Fn(&Metric) -> bool) -> Backlog {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_millis() as i64;
    let first_ms = now - (ticks as i64 - 1) * 1000;
    // Nothing waits long enough to be spilled one by one: the backlog goes to disk in one commit.
    let buffer = Buffer::open(&state.join("buffer"), BUFFER_CAP, Duration::from_secs(86_400)).expect("open buffer");
    let incarnation = buffer.next_incarnation(first_ms as u64).expect("incarnation");
    let mut host = Host::new(SEED);
    let mut encoder = DeltaEncoder::new(KEYFRAME_EVERY);
    let mut frames = FrameEncoder::new();
    let at = Instant::now();
    let mut frame_bytes = 0;
    let mut values = 0;
    for seq in 1..=ticks {
        let mut sample = host.sample(first_ms + (seq as i64 - 1) * 1000);
        sample.metrics.retain(&keep);
        values += sample.metrics.len() as u64;
        let tick = encoder.encode(&sample);
        let meta = Meta { ticks: 1, ts_ms: sample.ts_ms, keyframe: tick.keyframe };
        let frame = Message::Batch(Batch { incarnation, seq, ticks: vec![tick] }).to_frame(&mut frames).expect("frame");
        frame_bytes += frame.len() as u64;
        let done = buffer.push(incarnation, seq, meta, frame, at).expect("push");
        assert_eq!(done.dropped_batches, 0, "the backlog fits under the agent's cap");
    }
    buffer.flush().expect("flush buffer");
    assert_eq!(buffer.len(), ticks);
    Backlog { incarnation, frame_bytes, first_ms, values }
}

pub fn write_agent_config(dir: &Path, agg: &Aggregator, buffer: &str) {
    let config = format!(
        "aggregator = \"127.0.0.1:{}\"\nserver_name = \"localhost\"\nstate_dir = \"{}\"\ninterval = \"1s\"\n{buffer}",
        agg.quic_port,
        dir.display()
    );
    std::fs::write(dir.join("agent.toml"), config).expect("agent config");
}

pub fn start_agent(dir: &Path) -> Proc {
    let cfg = dir.join("agent.toml");
    Proc::spawn(&bin("twinwatch-agent"), &["--config", cfg.to_str().expect("utf-8"), "run"], dir.join("agent.log"))
}

/// Ticks the aggregator's ledger of `incarnation` holds for host `bench`; `None` before it has one.
pub fn ticks_stored(agg: &Aggregator, incarnation: u64) -> Option<u64> {
    let host = agg.get("/api/v1/hosts/bench")?;
    let ledgers = host["ingest"]["incarnations"].as_array()?;
    ledgers.iter().find(|l| l["incarnation"].as_u64() == Some(incarnation))?["ticks_stored"].as_u64()
}
