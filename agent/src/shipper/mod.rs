//! The QUIC shipper: connects to the aggregator, sends the buffer's live lane first and its
//! backlog behind it at a bounded rate, forgets what is acknowledged, and reconnects by the
//! policy in [`backoff`] when anything goes wrong; a refusal is logged with what to do
//! ([`refusal`]).
//!
//! This file is the tokio shell: it reads the buffer and the connection and does what the
//! sans-IO parts decide: [`conversation`] (live first, pokes, standby handshakes, the ack
//! deadline, clock echoes), [`throttle`] (the backlog's rate), [`probing`] (when attempts start),
//! [`backoff`] (how long to wait between sessions). [`dialer`] runs the attempts.
//!
//! Live first: at a connection with a backlog, the sampler is woken for a keyframe of the present
//! at once, and no backlog batch is sent before it (unless it fails to come within
//! [`conversation::live_grace`]), so the aggregator shows the host's current state before it
//! fills the gap.
//!
//! One bidirectional stream per connection: `Hello` → `Welcome` (whose clock is echoed at once),
//! then batch frames straight from the buffer, up to [`WINDOW`] unacknowledged at a time, and any
//! `Dropped` reports. `Ack`s come back as ranges; each carries the aggregator's clock, echoed at
//! most once per [`conversation::ECHO_EVERY`].

pub mod backoff;
pub mod conversation;
mod dialer;
pub mod probing;
pub mod refusal;
pub mod throttle;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use twinwatch_common::frame::{FrameEncoder, FrameError};
use twinwatch_common::message::{Hello, HostInfo, Message, TimeEcho};
use twinwatch_common::reader::MessageReader;

use self::backoff::{unit_random, Ended, Reconnect};
use self::conversation::{Conversation, Due, Standby, ACK_TIMEOUT};
use self::dialer::Dialer;
use self::refusal::{Credentials, Refusal};
use self::throttle::Throttle;
use crate::buffer::{Buffer, BufferError, Lane};
use crate::sampler::now_ms;
use crate::stats::Stats;

/// Most batches sent and not yet acknowledged.
pub const WINDOW: usize = 64;
/// A handshake is given up after this long: enough for a slow, lossy path.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(8);
/// While unanswered, a fresh attempt starts this often, overlapping the pending ones, so a path
/// that comes back is noticed within about this long without cutting short a slow handshake.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// Attempts pending at once: as many as [`ATTEMPT_TIMEOUT`] holds at one every [`PROBE_EVERY`],
/// so a fresh attempt starts every second throughout. Each sends one Initial (QUIC would resend
/// it only after [`crate::tls::INITIAL_RTT`] three times over, past the attempt's end), so an
/// unanswered agent sends about two small packets a second and a returning aggregator hears from
/// it within a second.
const MAX_ATTEMPTS: usize = 8;
const _: () = assert!(3 * crate::tls::INITIAL_RTT.as_millis() > ATTEMPT_TIMEOUT.as_millis());
/// One call to connect probes for this long before reporting no answer.
const CONNECT_WINDOW: Duration = Duration::from_secs(30);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error("cannot resolve {0}")]
    Resolve(String),
    #[error("connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    #[error("no answer within {CONNECT_WINDOW:?}")]
    ConnectTimeout,
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("write: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("read: {0}")]
    Read(#[from] quinn::ReadError),
    #[error("bad frame from aggregator: {0}")]
    Frame(#[from] FrameError),
    #[error("aggregator closed the stream")]
    Closed,
    #[error("aggregator sent an unexpected {0}")]
    Unexpected(&'static str),
    #[error("no welcome within {HANDSHAKE_TIMEOUT:?}")]
    HandshakeTimeout,
    #[error("no ack within {ACK_TIMEOUT:?}")]
    AckTimeout,
    #[error(transparent)]
    Buffer(#[from] BufferError),
    /// A fresh handshake was answered while this connection heard nothing: the aggregator
    /// restarted, or the path changed. The fresh connection carries on.
    #[error("the aggregator answered a fresh handshake but not this connection (it restarted?)")]
    Replaced(quinn::Connection),
}

impl ShipError {
    /// The connection's own error, where there is one.
    fn connection(&self) -> Option<&quinn::ConnectionError> {
        match self {
            ShipError::Connection(e)
            | ShipError::Write(quinn::WriteError::ConnectionLost(e))
            | ShipError::Read(quinn::ReadError::ConnectionLost(e)) => Some(e),
            _ => None,
        }
    }

    /// How it ended, for the reconnect policy: whether the aggregator answered at all, and how.
    pub fn ended(&self) -> Ended {
        let unanswered = matches!(
            self,
            ShipError::Resolve(_) | ShipError::ConnectTimeout | ShipError::HandshakeTimeout | ShipError::AckTimeout
        ) || matches!(self.connection(), Some(quinn::ConnectionError::TimedOut));
        if unanswered {
            Ended::Unanswered
        } else if self.refusal().is_some() {
            Ended::Refused
        } else if matches!(self.connection(), Some(quinn::ConnectionError::Reset))
            || matches!(self, ShipError::Replaced(_))
        {
            Ended::Reset
        } else {
            Ended::Answered
        }
    }

    /// Why the aggregator refused this agent (or this agent the aggregator), if it did.
    pub fn refusal(&self) -> Option<Refusal> {
        self.connection().and_then(Refusal::of)
    }
}

pub struct Shipper {
    pub endpoint: quinn::Endpoint,
    pub client: quinn::ClientConfig,
    pub aggregator: String,
    pub server_name: String,
    pub buffer: Arc<Buffer>,
    pub stats: Arc<Stats>,
    pub wake: Arc<Notify>,
    pub keyframe_wanted: Arc<AtomicBool>,
    pub hello: Hello,
    /// Backlog bytes per second; 0 is unlimited.
    pub replay_rate: u64,
    /// The sampling thread, woken for a keyframe at once when a connection opens with a backlog.
    pub sampler: Option<std::thread::Thread>,
    /// Named in the advice a refusal is logged with.
    pub credentials: Credentials,
}

impl Shipper {
    /// Ships until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut reconnect = Reconnect::default();
        loop {
            let ended = tokio::select! {
                result = self.session(&mut reconnect) => match result {
                    Ok(()) => return,
                    Err(e) => {
                        match e.refusal() {
                            Some(refusal) => tracing::error!(aggregator = %self.aggregator, "{}", refusal.advice(&self.credentials)),
                            None => tracing::warn!(aggregator = %self.aggregator, "shipping interrupted: {e}"),
                        }
                        e.ended()
                    }
                },
                _ = shutdown.changed() => return,
            };
            self.buffer.end_session();
            let delay = reconnect.delay(ended, std::time::Instant::now(), unit_random());
            tracing::debug!(?delay, ?ended, "reconnecting");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    async fn resolve(&self) -> Result<SocketAddr, ShipError> {
        tokio::net::lookup_host(&self.aggregator)
            .await
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| ShipError::Resolve(self.aggregator.clone()))
    }

    /// Connects, starting a fresh attempt every [`PROBE_EVERY`] while earlier ones are pending:
    /// the first handshake to finish wins. An answered failure (a refusal) ends it at once.
    async fn connect(&self) -> Result<quinn::Connection, ShipError> {
        let mut dialer = Dialer::new(self.resolve().await?, CONNECT_WINDOW);
        loop {
            if let Some(conn) = dialer.next(self).await? {
                return Ok(conn);
            }
        }
    }

    /// One connection after another: a connection replaced by a standby one hands its place over
    /// without a pause.
    async fn session(&self, reconnect: &mut Reconnect) -> Result<(), ShipError> {
        let mut conn = self.connect().await?;
        loop {
            let mut udp_reported = 0;
            let result = self.converse(&conn, reconnect, &mut udp_reported).await;
            self.stats.udp_tx_bytes.fetch_add(conn.stats().udp_tx.bytes.saturating_sub(udp_reported), Relaxed);
            conn.close(0u32.into(), b"bye");
            match result {
                Err(e @ ShipError::Replaced(_)) => {
                    tracing::warn!(aggregator = %self.aggregator, "shipping interrupted: {e}");
                    self.buffer.end_session();
                    let ShipError::Replaced(next) = e else { unreachable!() };
                    conn = next;
                }
                other => return other,
            }
        }
    }

    async fn converse(
        &self,
        conn: &quinn::Connection,
        reconnect: &mut Reconnect,
        udp_reported: &mut u64,
    ) -> Result<(), ShipError> {
        let (mut send, mut recv) = conn.open_bi().await?;
        let mut frames = FrameEncoder::new();
        let mut reader = MessageReader::new();
        let hello = Hello { agent_time_ms: now_ms(), ..self.hello.clone() };
        send.write_all(&Message::Hello(hello).to_frame(&mut frames)?).await?;

        let welcome = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
            loop {
                if let Some(m) = reader.next_message()? {
                    return Ok(m);
                }
                match recv.read_chunk(64 * 1024, true).await? {
                    Some(chunk) => reader.push(&chunk.bytes),
                    None => return Err(ShipError::Closed),
                }
            }
        })
        .await
        .map_err(|_| ShipError::HandshakeTimeout)??;
        let Message::Welcome(welcome) = welcome else {
            return Err(ShipError::Unexpected(welcome.name()));
        };
        let echo = TimeEcho { server_time_ms: welcome.server_time_ms, agent_time_ms: now_ms() };
        send.write_all(&Message::TimeEcho(echo).to_frame(&mut frames)?).await?;
        // With a backlog, the live lane opens with a keyframe of the present, taken now, and the
        // backlog waits for it; with none, the next batch opens it.
        let backlog = self.buffer.begin_session();
        if backlog > 0 {
            self.keyframe_wanted.store(true, Relaxed);
            if let Some(sampler) = &self.sampler {
                sampler.unpark();
            }
        }
        tracing::info!(agent = %welcome.agent_id, dc = %welcome.dc, backlog_batches = backlog, "connected to aggregator");
        self.stats.connects.fetch_add(1, Relaxed);
        reconnect.connected();
        self.wake.notify_one();

        let now = std::time::Instant::now();
        let mut talk = Conversation::new(now, backlog, self.hello.interval_ms, conn.stats().udp_rx.datagrams);
        let mut throttle = Throttle::new(self.replay_rate, now);
        let mut out = Vec::new();
        // quinn sends no PING on request, but a larger receive window queues a MAX_DATA frame,
        // which is as good: a small packet the aggregator must answer. From the default (the
        // largest possible) window, the first step is down; the aggregator ignores a MAX_DATA
        // that grants nothing new, so the credit it holds never matters.
        let mut poke_window = 1u32 << 20;
        conn.set_receive_window(poke_window.into());
        // The standby dialling while the connection is silent, and the connection it made.
        let mut standby: Option<Dialer> = None;
        let mut fresh: Option<quinn::Connection> = None;
        loop {
            out.clear();
            for d in self.buffer.unsent_drops() {
                Message::Dropped(d).encode(&mut frames, &mut out)?;
            }
            if !out.is_empty() {
                send.write_all(&out).await?;
            }
            let mut throttled = false;
            while self.buffer.in_flight() < WINDOW {
                let now = std::time::Instant::now();
                let backlog_allowed = talk.backlog_open(self.buffer.live_opened(), now) && throttle.ready(now);
                let Some((_, frame, lane)) = self.buffer.next(backlog_allowed)? else {
                    throttled = talk.backlog_open(self.buffer.live_opened(), now) && !backlog_allowed;
                    break;
                };
                talk.sent(self.buffer.in_flight(), now);
                send.write_all(&frame).await?;
                if lane == Lane::Backlog {
                    throttle.spend(frame.len(), std::time::Instant::now());
                    self.stats.backlog_batches.fetch_add(1, Relaxed);
                }
                self.stats.sent_bytes.fetch_add(frame.len() as u64, Relaxed);
            }
            let stats = conn.stats();
            self.stats.udp_tx_bytes.fetch_add(stats.udp_tx.bytes.saturating_sub(*udp_reported), Relaxed);
            *udp_reported = stats.udp_tx.bytes;
            let now = std::time::Instant::now();
            talk.heard(stats.udp_rx.datagrams, now);
            match talk.standby(now) {
                Standby::Dial => standby = Some(Dialer::new(conn.remote_address(), ACK_TIMEOUT)),
                Standby::Drop => {
                    standby = None;
                    if let Some(unused) = fresh.take() {
                        unused.close(0u32.into(), b"not needed");
                    }
                }
                Standby::Keep => {}
            }
            let throttle_wait = throttle.wait().max(Duration::from_millis(5));
            let replay_waits = throttled && self.buffer.backlog_pending()?;
            let timer = talk.poll_timeout().map(Instant::from_std);
            tokio::select! {
                _ = tokio::time::sleep_until(timer.unwrap_or_else(Instant::now)), if timer.is_some() => {
                    match talk.handle_timeout(std::time::Instant::now()) {
                        Due::Poke => {
                            poke_window = poke_window.saturating_add(1);
                            conn.set_receive_window(poke_window.into());
                        }
                        Due::GiveUp => return Err(ShipError::AckTimeout),
                        Due::TakeOver => match fresh.take() {
                            Some(next) => return Err(ShipError::Replaced(next)),
                            None => talk.standby_ended(),
                        },
                        Due::Nothing => {}
                    }
                }
                _ = self.wake.notified() => {}
                dialled = async {
                    match standby.as_mut() {
                        Some(dialer) => dialer.next(self).await,
                        None => std::future::pending().await,
                    }
                }, if standby.is_some() => {
                    match dialled {
                        Ok(Some(answered)) => {
                            standby = None;
                            fresh = Some(answered);
                            talk.standby_answered(std::time::Instant::now());
                        }
                        Ok(None) => {}
                        Err(ShipError::ConnectTimeout) => {
                            standby = None;
                            talk.standby_ended();
                        }
                        Err(e) => return Err(e),
                    }
                }
                _ = tokio::time::sleep(throttle_wait), if replay_waits => {}
                chunk = recv.read_chunk(64 * 1024, true) => {
                    let Some(chunk) = chunk? else { return Err(ShipError::Closed) };
                    reader.push(&chunk.bytes);
                    let mut server_time = None;
                    while let Some(message) = reader.next_message()? {
                        match message {
                            Message::Ack(ack) => {
                                let removed = self.buffer.ack(ack.incarnation, ack.first_seq, ack.last_seq)?;
                                self.stats.acked_batches.fetch_add(removed, Relaxed);
                                server_time = Some(ack.server_time_ms);
                            }
                            Message::KeyframeRequest(r) => {
                                tracing::info!(incarnation = r.incarnation, after = r.after_seq, "aggregator asked for a keyframe");
                                self.stats.keyframe_requests.fetch_add(1, Relaxed);
                                self.keyframe_wanted.store(true, Relaxed);
                            }
                            other => return Err(ShipError::Unexpected(other.name())),
                        }
                    }
                    let echo = server_time.filter(|_| talk.acked(self.buffer.in_flight(), std::time::Instant::now()));
                    if let Some(server_time_ms) = echo {
                        let echo = TimeEcho { server_time_ms, agent_time_ms: now_ms() };
                        send.write_all(&Message::TimeEcho(echo).to_frame(&mut frames)?).await?;
                    }
                }
            }
        }
    }
}

/// The `Hello` fields that do not change between connections.
pub fn hello(incarnation: u64, interval: Duration, host: HostInfo) -> Hello {
    Hello {
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        incarnation,
        agent_time_ms: 0,
        interval_ms: interval.as_millis().min(u32::MAX as u128) as u32,
        host,
    }
}
