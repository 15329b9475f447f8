//! What the twinwatch agent and aggregator agree on: the sample model, the delta codec and the
//! framed wire protocol.
//!
//! This crate is plain code. It knows nothing of tokio, quinn, sled or axum: it turns values into
//! bytes and bytes into values, and every decoder of network input is bounded. Three functions
//! touch the operating system, each named for it: [`config`] reads the configuration file,
//! [`time::now_ms`] reads the wall clock and [`backoff::unit_random`] the system's random
//! generator.
//!
//! # Layout
//! - [`config`]: TOML loading whose errors name file, line and key; durations, sizes, log format.
//! - [`sample`]: what a collector produces, a timestamped set of named series values.
//! - [`delta`]: the keyframe/delta encoder (agent side) and the state it rebuilds (aggregator side).
//! - [`intern`]: one shared copy of each series key, however many hosts carry it.
//! - [`message`]: the protocol messages (`Hello`, `Welcome`, `Batch`, `Ack`, `KeyframeRequest`).
//! - [`probe`]: the series names and labels endpoint probes report under.
//! - [`reader`]: the sans-IO buffer that turns stream chunks back into messages.
//! - [`time`]: RFC 3339 formatting and parsing; the wall clock in milliseconds.
//! - [`backoff`]: exponential backoff with jitter, and the random numbers it draws.
//! - [`hex`], [`error_chain`]: bytes as hex; an error with its causes on one line.
//! - [`redact`]: secrets in printed settings (header values, URL passwords) shown as their length.
//! - [`frame`]: the versioned, length-prefixed, zstd-compressed envelope around one message.

pub mod backoff;
pub mod config;
pub mod delta;
pub mod error_chain;
pub mod frame;
pub mod hex;
pub mod intern;
pub mod message;
pub mod probe;
pub mod reader;
pub mod redact;
pub mod sample;
pub mod time;

/// Version of the wire protocol carried in every frame header.
pub const PROTOCOL_VERSION: u8 = 1;

/// ALPN identifier both QUIC endpoints require.
pub const ALPN: &[u8] = b"twinwatch/1";
