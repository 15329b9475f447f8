//! The QUIC shipper: connects to the aggregator, replays the queue in order, deletes what is
//! acknowledged, and reconnects with backoff when anything goes wrong.
//!
//! One bidirectional stream per connection: `Hello` → `Welcome`, then batch frames straight from
//! the queue, up to [`WINDOW`] unacknowledged at a time, answered by cumulative `Ack`s.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use twinwatch_common::frame::{FrameEncoder, FrameError};
use twinwatch_common::message::{Hello, HostInfo, Message};
use twinwatch_common::reader::MessageReader;

use crate::backoff::{unit_random, Backoff};
use crate::queue::{key, Key, Queue, QueueError};
use crate::sampler::now_ms;
use crate::stats::Stats;

/// Most batches sent and not yet acknowledged.
pub const WINDOW: usize = 64;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Batches in flight with no ack for this long mean the aggregator is gone, whatever QUIC thinks.
const ACK_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error("cannot resolve {0}")]
    Resolve(String),
    #[error("connect: {0}")]
    Connect(#[from] quinn::ConnectError),
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
    Queue(#[from] QueueError),
}

pub struct Shipper {
    pub endpoint: quinn::Endpoint,
    pub client: quinn::ClientConfig,
    pub aggregator: String,
    pub server_name: String,
    pub queue: Arc<Queue>,
    pub stats: Arc<Stats>,
    pub wake: Arc<Notify>,
    pub keyframe_wanted: Arc<AtomicBool>,
    pub hello: Hello,
}

impl Shipper {
    /// Ships until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
        loop {
            tokio::select! {
                result = self.session(&mut backoff) => match result {
                    Ok(()) => return,
                    Err(e) => tracing::warn!(aggregator = %self.aggregator, "shipping interrupted: {e}"),
                },
                _ = shutdown.changed() => return,
            }
            let delay = backoff.next_delay(unit_random());
            tracing::debug!(?delay, "reconnecting after backoff");
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

    async fn session(&self, backoff: &mut Backoff) -> Result<(), ShipError> {
        let addr = self.resolve().await?;
        let conn = self.endpoint.connect_with(self.client.clone(), addr, &self.server_name)?.await?;
        let result = self.converse(&conn, backoff).await;
        self.stats.udp_tx_bytes.fetch_add(conn.stats().udp_tx.bytes, Relaxed);
        conn.close(0u32.into(), b"bye");
        result
    }

    async fn converse(&self, conn: &quinn::Connection, backoff: &mut Backoff) -> Result<(), ShipError> {
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
        tracing::info!(agent = %welcome.agent_id, dc = %welcome.dc, stored_through = welcome.stored_through, "connected to aggregator");
        self.stats.connects.fetch_add(1, Relaxed);
        backoff.reset();

        let mut cursor: Option<Key> = None;
        let mut in_flight: VecDeque<Key> = VecDeque::new();
        let mut udp_reported = 0;
        let mut last_progress = tokio::time::Instant::now();
        loop {
            while in_flight.len() < WINDOW {
                let Some((k, frame)) = self.queue.next_after(cursor)? else {
                    break;
                };
                if in_flight.is_empty() {
                    last_progress = tokio::time::Instant::now();
                }
                send.write_all(&frame).await?;
                self.stats.sent_bytes.fetch_add(frame.len() as u64, Relaxed);
                cursor = Some(k);
                in_flight.push_back(k);
            }
            let udp = conn.stats().udp_tx.bytes;
            self.stats.udp_tx_bytes.fetch_add(udp - udp_reported, Relaxed);
            udp_reported = udp;
            let ack_deadline = last_progress + ACK_TIMEOUT;
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep_until(ack_deadline), if !in_flight.is_empty() => return Err(ShipError::AckTimeout),
                chunk = recv.read_chunk(64 * 1024, true) => {
                    let Some(chunk) = chunk? else { return Err(ShipError::Closed) };
                    reader.push(&chunk.bytes);
                    while let Some(message) = reader.next_message()? {
                        match message {
                            Message::Ack(ack) => {
                                let removed = self.queue.ack(ack.incarnation, ack.through_seq)?;
                                self.stats.acked_batches.fetch_add(removed, Relaxed);
                                let acked = key(ack.incarnation, ack.through_seq);
                                while in_flight.front().is_some_and(|k| *k <= acked) {
                                    in_flight.pop_front();
                                }
                                last_progress = tokio::time::Instant::now();
                            }
                            Message::KeyframeRequest(r) => {
                                tracing::info!(incarnation = r.incarnation, after = r.after_seq, "aggregator asked for a keyframe");
                                self.stats.keyframe_requests.fetch_add(1, Relaxed);
                                self.keyframe_wanted.store(true, Relaxed);
                            }
                            other => return Err(ShipError::Unexpected(other.name())),
                        }
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
