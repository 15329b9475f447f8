//! The protocol messages and their frame kinds.
//!
//! One QUIC bidirectional stream per connection carries them. The agent opens with [`Hello`]; the
//! aggregator answers [`Welcome`]. The agent then sends [`Batch`]es: live ones first, in order,
//! and its backlog behind them, so sequence numbers arrive out of order across the two lanes. It
//! reports batches it had to drop with [`Dropped`], and echoes the aggregator's clock with
//! [`TimeEcho`]. The aggregator answers with [`Ack`]s, each for a range of sequence numbers it
//! has durably stored (or recorded as dropped), and with a [`KeyframeRequest`] when it cannot
//! apply a live delta.
//!
//! The aggregator closes a connection it will not serve with one of the [`close`] codes.

use bincode::{Decode, Encode};

use crate::delta::Tick;
use crate::frame::{decode_body, FrameDecoder, FrameEncoder, FrameError};

/// What the agent knows about its host when it connects.
#[derive(Debug, Clone, PartialEq, Default, Encode, Decode)]
pub struct HostInfo {
    pub hostname: String,
    pub kernel: String,
    pub os: String,
    pub arch: String,
    pub cpu_count: u32,
    /// "Intel(R) Xeon(R) ...", or for ARM the core design ("ARM Cortex-A57").
    pub cpu_model: String,
    pub machine_id: String,
    pub boot_id: String,
}

/// First message of a connection, agent to aggregator.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct Hello {
    pub agent_version: String,
    /// Changes on every agent start; sequence numbers count from 1 within it.
    pub incarnation: u64,
    /// Agent clock when the message was built, milliseconds since the Unix epoch.
    pub agent_time_ms: i64,
    /// How often the agent samples, so the aggregator can tell a late host from a quiet one.
    pub interval_ms: u32,
    pub host: HostInfo,
}

/// The aggregator's answer to [`Hello`].
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct Welcome {
    pub server_time_ms: i64,
    /// Identity the aggregator read from the client certificate.
    pub agent_id: String,
    pub dc: String,
    /// Highest sequence of the Hello's incarnation already stored, 0 if none.
    pub stored_through: u64,
}

/// Samples of one agent incarnation, in order.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct Batch {
    pub incarnation: u64,
    pub seq: u64,
    pub ticks: Vec<Tick>,
}

impl Batch {
    pub fn is_keyframe(&self) -> bool {
        self.ticks.first().is_some_and(|t| t.keyframe)
    }
}

/// Batches `first_seq..=last_seq` of `incarnation` are durably stored (or recorded as dropped):
/// the agent may forget them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct Ack {
    pub incarnation: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    /// Aggregator clock when the ack was sent, ms since the epoch; the agent echoes it.
    pub server_time_ms: i64,
}

/// The agent dropped batches `first_seq..=last_seq` of `incarnation` to stay under its buffer
/// cap: `ticks` samples of the host (each one tick: every series at one instant), taken from
/// `from_ms` to `to_ms` (agent clock), will never arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct Dropped {
    pub incarnation: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub ticks: u64,
    pub from_ms: i64,
    pub to_ms: i64,
}

/// Agent to aggregator: the latest `server_time_ms` the agent received (in a `Welcome` or an
/// `Ack`), echoed at once with the agent's clock, so the aggregator can time the round trip on
/// its own clock and estimate the agent's offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct TimeEcho {
    pub server_time_ms: i64,
    pub agent_time_ms: i64,
}

/// QUIC application close codes the aggregator uses, and what the agent does about them.
pub mod close {
    /// Normal end of a connection.
    pub const DONE: u32 = 0;
    /// A protocol or storage error; the agent reconnects with backoff.
    pub const ERROR: u32 = 1;
    /// Too many agents connecting at once; the reason holds the delay in ms the agent should
    /// wait at least before trying again.
    pub const BUSY: u32 = 2;
    /// Another connection holds this agent identity; the reason says which.
    pub const IDENTITY_IN_USE: u32 = 3;
    /// A newer connection of the same agent took over.
    pub const SUPERSEDED: u32 = 4;
    /// The agent's certificate was revoked; the reason says by whom.
    pub const REVOKED: u32 = 5;
}

/// The aggregator cannot apply deltas after `after_seq`: the agent should send a keyframe next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct KeyframeRequest {
    pub incarnation: u64,
    pub after_seq: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Hello(Hello),
    Welcome(Welcome),
    Batch(Batch),
    Ack(Ack),
    KeyframeRequest(KeyframeRequest),
    Dropped(Dropped),
    TimeEcho(TimeEcho),
}

const KIND_HELLO: u8 = 1;
const KIND_WELCOME: u8 = 2;
const KIND_BATCH: u8 = 3;
const KIND_ACK: u8 = 4;
const KIND_KEYFRAME_REQUEST: u8 = 5;
const KIND_DROPPED: u8 = 6;
const KIND_TIME_ECHO: u8 = 7;

impl Message {
    pub fn name(&self) -> &'static str {
        match self {
            Message::Hello(_) => "hello",
            Message::Welcome(_) => "welcome",
            Message::Batch(_) => "batch",
            Message::Ack(_) => "ack",
            Message::KeyframeRequest(_) => "keyframe-request",
            Message::Dropped(_) => "dropped",
            Message::TimeEcho(_) => "time-echo",
        }
    }

    /// Appends this message as one frame to `out`.
    pub fn encode(&self, enc: &mut FrameEncoder, out: &mut Vec<u8>) -> Result<(), FrameError> {
        match self {
            Message::Hello(m) => enc.encode(KIND_HELLO, m, out),
            Message::Welcome(m) => enc.encode(KIND_WELCOME, m, out),
            Message::Batch(m) => enc.encode(KIND_BATCH, m, out),
            Message::Ack(m) => enc.encode(KIND_ACK, m, out),
            Message::KeyframeRequest(m) => enc.encode(KIND_KEYFRAME_REQUEST, m, out),
            Message::Dropped(m) => enc.encode(KIND_DROPPED, m, out),
            Message::TimeEcho(m) => enc.encode(KIND_TIME_ECHO, m, out),
        }
    }

    /// Encodes this message as a frame of its own.
    pub fn to_frame(&self, enc: &mut FrameEncoder) -> Result<Vec<u8>, FrameError> {
        let mut out = Vec::new();
        self.encode(enc, &mut out)?;
        Ok(out)
    }

    /// Reads the first message in `buf`: the message and the bytes it took, or `Ok(None)` when the
    /// frame is not complete yet.
    pub fn decode(dec: &mut FrameDecoder, buf: &[u8]) -> Result<Option<(Message, usize)>, FrameError> {
        let Some((header, raw, used)) = dec.split(buf)? else {
            return Ok(None);
        };
        let message = match header.kind {
            KIND_HELLO => Message::Hello(decode_body(&raw)?),
            KIND_WELCOME => Message::Welcome(decode_body(&raw)?),
            KIND_BATCH => Message::Batch(decode_body(&raw)?),
            KIND_ACK => Message::Ack(decode_body(&raw)?),
            KIND_KEYFRAME_REQUEST => Message::KeyframeRequest(decode_body(&raw)?),
            KIND_DROPPED => Message::Dropped(decode_body(&raw)?),
            KIND_TIME_ECHO => Message::TimeEcho(decode_body(&raw)?),
            other => return Err(FrameError::UnknownKind(other)),
        };
        Ok(Some((message, used)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delta::{DeltaEncoder, DeltaState};
    use crate::frame::{Header, HEADER_LEN, MAGIC, MAX_RAW_LEN, MAX_WIRE_LEN};
    use crate::sample::{Metric, Sample, SeriesKey, Value};
    use crate::PROTOCOL_VERSION;

    fn batch(n: usize) -> Batch {
        let mut enc = DeltaEncoder::new(100);
        let metrics = (0..n)
            .map(|i| {
                Metric::counter(
                    SeriesKey::new("node_network_receive_bytes_total").with("device", format!("eth{i}")),
                    Value::Int(i as i64 * 1000),
                )
            })
            .collect();
        let tick = enc.encode(&Sample::new(1_700_000_000_000, metrics));
        Batch { incarnation: 7, seq: 42, ticks: vec![tick] }
    }

    fn all_messages() -> Vec<Message> {
        vec![
            Message::Hello(Hello {
                agent_version: "0.1.0".into(),
                incarnation: 3,
                agent_time_ms: -5,
                interval_ms: 1000,
                host: HostInfo { hostname: "udm".into(), cpu_count: 4, ..Default::default() },
            }),
            Message::Welcome(Welcome { server_time_ms: 9, agent_id: "a".into(), dc: "dc1".into(), stored_through: 4 }),
            Message::Batch(batch(200)),
            Message::Ack(Ack { incarnation: 1, first_seq: 5, last_seq: u64::MAX, server_time_ms: -1 }),
            Message::KeyframeRequest(KeyframeRequest { incarnation: 2, after_seq: 3 }),
            Message::Dropped(Dropped {
                incarnation: 4,
                first_seq: 1,
                last_seq: 9,
                ticks: 9,
                from_ms: 1_000,
                to_ms: 9_000,
            }),
            Message::TimeEcho(TimeEcho { server_time_ms: 10, agent_time_ms: 12 }),
        ]
    }

    fn ack(seq: u64) -> Ack {
        Ack { incarnation: 1, first_seq: seq, last_seq: seq, server_time_ms: 0 }
    }

    fn frame_with(kind: u8, flags: u8, payload: &[u8], raw_len: u32) -> Vec<u8> {
        let mut f = MAGIC.to_vec();
        f.extend_from_slice(&[PROTOCOL_VERSION, kind, flags, 0]);
        f.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        f.extend_from_slice(&raw_len.to_le_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn every_message_round_trips_and_frames_concatenate() {
        let mut enc = FrameEncoder::new();
        let mut dec = FrameDecoder::new();
        let mut stream = Vec::new();
        for m in all_messages() {
            m.encode(&mut enc, &mut stream).unwrap();
        }
        let mut at = 0;
        let mut got = Vec::new();
        while let Some((m, used)) = Message::decode(&mut dec, &stream[at..]).unwrap() {
            got.push(m);
            at += used;
        }
        assert_eq!(at, stream.len());
        assert_eq!(got, all_messages());
    }

    #[test]
    fn large_batches_are_compressed_and_still_apply() {
        let mut enc = FrameEncoder::new();
        let b = batch(500);
        let frame = Message::Batch(b.clone()).to_frame(&mut enc).unwrap();
        let header = Header::parse(&frame).unwrap().unwrap();
        assert!(header.compressed && header.dictionary && header.wire_len < header.raw_len);
        let (Message::Batch(back), _) = Message::decode(&mut FrameDecoder::new(), &frame).unwrap().unwrap() else {
            panic!("not a batch")
        };
        let mut state = DeltaState::default();
        state.apply(&back.ticks[0]).unwrap();
        assert_eq!(state.len(), 500);

        // Without the dictionary flag the same bytes do not decode: an error, not a panic.
        let mut stripped = frame.clone();
        stripped[6] = 1;
        assert!(Message::decode(&mut FrameDecoder::new(), &stripped).is_err());
        // The dictionary flag alone (no compression) is not a valid header.
        stripped[6] = 2;
        assert!(Message::decode(&mut FrameDecoder::new(), &stripped).is_err());
    }

    #[test]
    fn plain_zstd_frames_still_decode() {
        let body = bincode::encode_to_vec(batch(50), crate::frame::bincode_config()).unwrap();
        let packed = zstd::bulk::compress(&body, 3).unwrap();
        let frame = frame_with(KIND_BATCH, 1, &packed, body.len() as u32);
        let (Message::Batch(back), _) = Message::decode(&mut FrameDecoder::new(), &frame).unwrap().unwrap() else {
            panic!("not a batch")
        };
        assert_eq!(back, batch(50));
    }

    #[test]
    fn every_truncation_asks_for_more_bytes() {
        let frame = Message::Batch(batch(50)).to_frame(&mut FrameEncoder::new()).unwrap();
        let mut dec = FrameDecoder::new();
        for cut in 0..frame.len() {
            assert!(Message::decode(&mut dec, &frame[..cut]).unwrap().is_none(), "cut at {cut}");
        }
    }

    #[test]
    fn oversized_lengths_are_refused_before_allocating() {
        let mut dec = FrameDecoder::new();
        let wire = frame_with(KIND_BATCH, 1, &[], MAX_WIRE_LEN as u32 + 1);
        let mut wire_big = wire.clone();
        wire_big[8..12].copy_from_slice(&(MAX_WIRE_LEN as u32 + 1).to_le_bytes());
        assert!(matches!(dec.split(&wire_big), Err(FrameError::TooLarge { .. })));
        let raw_big = frame_with(KIND_BATCH, 1, &[0; 8], u32::MAX);
        assert!(matches!(dec.split(&raw_big), Err(FrameError::TooLarge { .. })));
        // A vector length of 2^60 elements inside an otherwise well-formed frame.
        let mut body = bincode::encode_to_vec(7u64, bincode::config::standard()).unwrap();
        body.extend(bincode::encode_to_vec(1u64, bincode::config::standard()).unwrap());
        body.extend(bincode::encode_to_vec(1u64 << 60, bincode::config::standard()).unwrap());
        let f = frame_with(KIND_BATCH, 0, &body, body.len() as u32);
        assert!(matches!(Message::decode(&mut dec, &f), Err(FrameError::Decode(_))));
    }

    #[test]
    fn trailing_bytes_inside_a_payload_are_refused() {
        let mut body = bincode::encode_to_vec(ack(2), bincode::config::standard()).unwrap();
        body.push(0);
        let f = frame_with(KIND_ACK, 0, &body, body.len() as u32);
        assert!(matches!(Message::decode(&mut FrameDecoder::new(), &f), Err(FrameError::TrailingBytes(1))));
    }

    #[test]
    fn a_zstd_bomb_fails_at_its_declared_size() {
        let bomb = zstd::bulk::compress(&vec![0u8; 8 << 20], 19).unwrap();
        assert!(bomb.len() < 4096);
        let f = frame_with(KIND_BATCH, 1, &bomb, 1024);
        assert!(matches!(FrameDecoder::new().split(&f), Err(FrameError::Decompress(_))));
        // Declared honestly, the same bomb is still refused when it exceeds the limit.
        let big = zstd::bulk::compress(&vec![0u8; MAX_RAW_LEN + 1], 19).unwrap();
        let f = frame_with(KIND_BATCH, 1, &big, MAX_RAW_LEN as u32 + 1);
        assert!(matches!(FrameDecoder::new().split(&f), Err(FrameError::TooLarge { .. })));
    }

    #[test]
    fn header_faults_are_typed_errors() {
        let good = Message::Ack(ack(1)).to_frame(&mut FrameEncoder::new()).unwrap();
        let mut dec = FrameDecoder::new();
        let mut bad = good.clone();
        bad[0] = b'X';
        assert!(matches!(dec.split(&bad), Err(FrameError::BadMagic(_))));
        let mut bad = good.clone();
        bad[4] = 99;
        assert!(matches!(dec.split(&bad), Err(FrameError::Version(99))));
        let mut bad = good.clone();
        bad[5] = 200;
        assert!(matches!(Message::decode(&mut dec, &bad), Err(FrameError::UnknownKind(200))));
        let mut bad = good.clone();
        bad[6] = 0x80;
        assert!(matches!(dec.split(&bad), Err(FrameError::Flags(_))));
        let mut bad = good;
        bad[12] ^= 1; // uncompressed, but raw length differs from wire length
        assert!(matches!(dec.split(&bad), Err(FrameError::LengthMismatch { .. })));
        assert_eq!(HEADER_LEN, 16);
    }

    #[test]
    fn garbage_never_panics() {
        // A deterministic walk over corrupted frames: every outcome is a value, never a panic.
        let frames: Vec<Vec<u8>> =
            all_messages().iter().map(|m| m.to_frame(&mut FrameEncoder::new()).unwrap()).collect();
        let mut dec = FrameDecoder::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for round in 0..20_000 {
            let mut f = frames[round % frames.len()].clone();
            for _ in 0..1 + round % 4 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let at = (x as usize) % f.len();
                f[at] = (x >> 32) as u8;
            }
            let _ = Message::decode(&mut dec, &f);
        }
    }
}
