//! What the twinwatch agent and aggregator agree on: the sample model, the delta codec and the
//! framed wire protocol.
//!
//! This crate is plain, sans-IO code. It knows nothing of tokio, quinn, sled or axum: it turns
//! values into bytes and bytes into values, and every decoder of network input is bounded.
//!
//! # Layout
//! - [`config`]: TOML loading whose errors name file, line and key; durations and sizes.
//! - [`sample`]: what a collector produces, a timestamped set of named series values.
//! - [`delta`]: the keyframe/delta encoder (agent side) and the state it rebuilds (aggregator side).
//! - [`message`]: the protocol messages (`Hello`, `Welcome`, `Batch`, `Ack`, `KeyframeRequest`).
//! - [`probe`]: the series names and labels endpoint probes report under.
//! - [`reader`]: the sans-IO buffer that turns stream chunks back into messages.
//! - [`time`]: RFC 3339 formatting and parsing.
//! - [`frame`]: the versioned, length-prefixed, zstd-compressed envelope around one message.

pub mod backoff;
pub mod config;
pub mod delta;
pub mod frame;
pub mod message;
pub mod probe;
pub mod reader;
pub mod sample;
pub mod time;

/// Version of the wire protocol carried in every frame header.
pub const PROTOCOL_VERSION: u8 = 1;

/// ALPN identifier both QUIC endpoints require.
pub const ALPN: &[u8] = b"twinwatch/1";
