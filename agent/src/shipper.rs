//! The QUIC shipper: connects to the aggregator, sends the buffer's live lane first and its
//! backlog behind it at a bounded rate, forgets what is acknowledged, and reconnects by the
//! policy in [`crate::backoff`] when anything goes wrong.
//!
//! One bidirectional stream per connection: `Hello` → `Welcome` (whose clock is echoed at once),
//! then batch frames straight from the buffer, up to [`WINDOW`] unacknowledged at a time, and any
//! `Dropped` reports. `Ack`s come back as ranges; each carries the aggregator's clock, echoed at
//! most once per [`ECHO_EVERY`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use twinwatch_common::frame::{FrameEncoder, FrameError};
use twinwatch_common::message::{close, Hello, HostInfo, Message, TimeEcho};
use twinwatch_common::reader::MessageReader;

use crate::backoff::{unit_random, Ended, Reconnect};
use crate::buffer::{Buffer, BufferError, Lane};
use crate::sampler::now_ms;
use crate::stats::Stats;
use crate::throttle::Throttle;

/// Most batches sent and not yet acknowledged.
pub const WINDOW: usize = 64;
/// A handshake is given up after this long: enough for a slow, lossy path.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(8);
/// While unanswered, a fresh attempt starts this often, overlapping the pending ones, so a path
/// that comes back is noticed within about this long without cutting short a slow handshake.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// Attempts pending at once.
const MAX_ATTEMPTS: usize = 4;
/// One call to connect probes for this long before reporting no answer.
const CONNECT_WINDOW: Duration = Duration::from_secs(30);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Batches in flight with no ack for this long mean the aggregator is gone, whatever QUIC thinks.
const ACK_TIMEOUT: Duration = Duration::from_secs(15);
/// Clock echoes are sent at most this often.
pub const ECHO_EVERY: Duration = Duration::from_secs(1);

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

    /// Whether the aggregator answered at all, for the reconnect policy.
    pub fn ended(&self) -> Ended {
        let unanswered = matches!(
            self,
            ShipError::Resolve(_) | ShipError::ConnectTimeout | ShipError::HandshakeTimeout | ShipError::AckTimeout
        ) || matches!(self.connection(), Some(quinn::ConnectionError::TimedOut));
        if unanswered {
            Ended::Unanswered
        } else {
            Ended::Answered
        }
    }

    /// The aggregator's reason, when it closed the connection on purpose.
    fn refusal(&self) -> Option<String> {
        match self.connection()? {
            quinn::ConnectionError::ApplicationClosed(c)
                if [close::IDENTITY_IN_USE, close::SUPERSEDED, close::BUSY, close::REVOKED]
                    .contains(&(c.error_code.into_inner() as u32)) =>
            {
                Some(String::from_utf8_lossy(&c.reason).into_owned())
            }
            _ => None,
        }
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
                            Some(reason) => tracing::error!(aggregator = %self.aggregator, "aggregator refused this agent: {reason}"),
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
        let addr = self.resolve().await?;
        let mut attempts = tokio::task::JoinSet::new();
        let deadline = Instant::now() + CONNECT_WINDOW;
        let mut next = Instant::now();
        loop {
            if Instant::now() >= next && attempts.len() < MAX_ATTEMPTS && Instant::now() < deadline {
                let connecting = self.endpoint.connect_with(self.client.clone(), addr, &self.server_name)?;
                attempts.spawn(tokio::time::timeout(ATTEMPT_TIMEOUT, connecting));
                next = Instant::now() + PROBE_EVERY;
            }
            if attempts.is_empty() {
                return Err(ShipError::ConnectTimeout);
            }
            tokio::select! {
                done = attempts.join_next() => match done {
                    Some(Ok(Ok(Ok(conn)))) => return Ok(conn),
                    Some(Ok(Ok(Err(e)))) => {
                        let e = ShipError::from(e);
                        if e.ended() == Ended::Answered {
                            return Err(e);
                        }
                    }
                    _ => {} // that attempt timed out
                },
                _ = tokio::time::sleep_until(next), if Instant::now() < deadline => {}
            }
        }
    }

    async fn session(&self, reconnect: &mut Reconnect) -> Result<(), ShipError> {
        let conn = self.connect().await?;
        let result = self.converse(&conn, reconnect).await;
        self.stats.udp_tx_bytes.fetch_add(conn.stats().udp_tx.bytes, Relaxed);
        conn.close(0u32.into(), b"bye");
        result
    }

    async fn converse(&self, conn: &quinn::Connection, reconnect: &mut Reconnect) -> Result<(), ShipError> {
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
        let mut last_echo = Instant::now();
        tracing::info!(
            agent = %welcome.agent_id,
            dc = %welcome.dc,
            backlog_batches = self.buffer.len(),
            "connected to aggregator"
        );
        self.stats.connects.fetch_add(1, Relaxed);
        reconnect.connected();
        // With a backlog, the live lane opens with a keyframe, so the aggregator is current
        // without waiting for it.
        if self.buffer.begin_session() {
            self.keyframe_wanted.store(true, Relaxed);
        }
        self.wake.notify_one();

        let mut throttle = Throttle::new(self.replay_rate, std::time::Instant::now());
        let mut udp_reported = 0;
        let mut last_progress = Instant::now();
        let mut out = Vec::new();
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
                let backlog_allowed = throttle.ready(std::time::Instant::now());
                let Some((_, frame, lane)) = self.buffer.next(backlog_allowed)? else {
                    throttled = !backlog_allowed;
                    break;
                };
                if self.buffer.in_flight() == 1 {
                    last_progress = Instant::now();
                }
                send.write_all(&frame).await?;
                if lane == Lane::Backlog {
                    throttle.spend(frame.len(), std::time::Instant::now());
                    self.stats.backlog_batches.fetch_add(1, Relaxed);
                }
                self.stats.sent_bytes.fetch_add(frame.len() as u64, Relaxed);
            }
            let udp = conn.stats().udp_tx.bytes;
            self.stats.udp_tx_bytes.fetch_add(udp - udp_reported, Relaxed);
            udp_reported = udp;
            let ack_deadline = last_progress + ACK_TIMEOUT;
            let throttle_wait = throttle.wait().max(Duration::from_millis(5));
            let waiting = self.buffer.in_flight() > 0;
            let replay_waits = throttled && self.buffer.backlog_pending()?;
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(throttle_wait), if replay_waits => {}
                _ = tokio::time::sleep_until(ack_deadline), if waiting => return Err(ShipError::AckTimeout),
                chunk = recv.read_chunk(64 * 1024, true) => {
                    let Some(chunk) = chunk? else { return Err(ShipError::Closed) };
                    reader.push(&chunk.bytes);
                    let mut server_time = None;
                    while let Some(message) = reader.next_message()? {
                        match message {
                            Message::Ack(ack) => {
                                let removed = self.buffer.ack(ack.incarnation, ack.first_seq, ack.last_seq)?;
                                self.stats.acked_batches.fetch_add(removed, Relaxed);
                                last_progress = Instant::now();
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
                    if let Some(server_time_ms) = server_time.filter(|_| last_echo.elapsed() >= ECHO_EVERY) {
                        let echo = TimeEcho { server_time_ms, agent_time_ms: now_ms() };
                        send.write_all(&Message::TimeEcho(echo).to_frame(&mut frames)?).await?;
                        last_echo = Instant::now();
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
