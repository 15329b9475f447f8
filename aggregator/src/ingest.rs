//! QUIC ingest: accept agents, verify who they are, reconcile their batches into the twin,
//! store them, and acknowledge only what is durable.
//!
//! Per connection: the TLS layer has already refused any client certificate our CA did not sign;
//! the identity comes from that certificate. Then `Hello` → `Welcome`, and a loop that takes every
//! batch frame available, reconciles each ([`crate::twin`]), commits the accepted ones with the
//! host's new state in one sled batch, flushes, and only then sends the cumulative `Ack`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use twinwatch_common::frame::{FrameEncoder, FrameError};
use twinwatch_common::message::{Ack, KeyframeRequest, Message, Welcome};
use twinwatch_common::reader::MessageReader;

use crate::identity::{self, AgentIdentity, IdentityError};
use crate::store::{Store, StoreError};
use crate::twin::{Outcome, Twin};

const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("handshake: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("identity: {0}")]
    Identity(#[from] IdentityError),
    #[error("read: {0}")]
    Read(#[from] quinn::ReadError),
    #[error("write: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    #[error("expected {expected}, got {got}")]
    Unexpected { expected: &'static str, got: &'static str },
    #[error("no hello within {HELLO_TIMEOUT:?}")]
    HelloTimeout,
    #[error("stream closed")]
    Closed,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Shared by every connection.
pub struct Ingest {
    /// A std mutex: it is never held across an await.
    pub twin: Arc<Mutex<Twin>>,
    pub store: Arc<Store>,
}

impl Ingest {
    fn twin(&self) -> std::sync::MutexGuard<'_, Twin> {
        self.twin.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Accepts connections until the endpoint is closed.
    pub async fn serve(self: Arc<Self>, endpoint: quinn::Endpoint) {
        while let Some(incoming) = endpoint.accept().await {
            let ingest = self.clone();
            let remote = incoming.remote_address();
            tokio::spawn(async move {
                match ingest.connection(incoming).await {
                    Ok(who) => tracing::info!(%remote, agent = %who, "agent disconnected"),
                    Err((who, e)) => match who {
                        Some(who) => tracing::warn!(%remote, agent = %who, "agent connection ended: {e}"),
                        None => tracing::warn!(%remote, "agent refused: {e}"),
                    },
                }
            });
        }
    }

    async fn connection(
        &self,
        incoming: quinn::Incoming,
    ) -> Result<AgentIdentity, (Option<AgentIdentity>, IngestError)> {
        let conn = incoming.await.map_err(|e| (None, e.into()))?;
        let who = identity::from_connection(&conn).map_err(|e| (None, e.into()))?;
        let result = self.session(&conn, &who).await;
        match result {
            Ok(()) | Err(IngestError::Closed) => Ok(who),
            Err(IngestError::Read(quinn::ReadError::ConnectionLost(quinn::ConnectionError::ApplicationClosed(_)))) => {
                Ok(who)
            }
            Err(e) => {
                conn.close(1u32.into(), e.to_string().as_bytes());
                Err((Some(who), e))
            }
        }
    }

    async fn session(&self, conn: &quinn::Connection, who: &AgentIdentity) -> Result<(), IngestError> {
        let (mut send, mut recv) =
            tokio::time::timeout(HELLO_TIMEOUT, conn.accept_bi()).await.map_err(|_| IngestError::HelloTimeout)??;
        let mut reader = MessageReader::new();
        let mut frames = FrameEncoder::new();
        let hello = tokio::time::timeout(HELLO_TIMEOUT, async {
            loop {
                if let Some(m) = reader.next_message()? {
                    return Ok(m);
                }
                match recv.read_chunk(64 * 1024, true).await? {
                    Some(chunk) => reader.push(&chunk.bytes),
                    None => return Err(IngestError::Closed),
                }
            }
        })
        .await
        .map_err(|_| IngestError::HelloTimeout)??;
        let Message::Hello(hello) = hello else {
            return Err(IngestError::Unexpected { expected: "hello", got: hello.name() });
        };

        let (stored_through, snapshot) = {
            let mut twin = self.twin();
            let stored = twin.handle_hello(who, &hello, now_ms());
            (stored, twin.host(&who.id).cloned())
        };
        if let Some(host) = &snapshot {
            self.store.commit(host, &[])?;
        }
        tracing::info!(
            agent = %who,
            hostname = %hello.host.hostname,
            version = %hello.agent_version,
            incarnation = hello.incarnation,
            stored_through,
            "agent connected"
        );
        let welcome =
            Welcome { server_time_ms: now_ms(), agent_id: who.id.clone(), dc: who.dc.clone(), stored_through };
        send.write_all(&Message::Welcome(welcome).to_frame(&mut frames)?).await?;

        let mut out = Vec::new();
        loop {
            let mut accepted: Vec<(u64, u64, Vec<u8>)> = Vec::new();
            let mut ack: Option<Ack> = None;
            let mut keyframe: Option<KeyframeRequest> = None;
            {
                let mut twin = self.twin();
                while let Some(message) = reader.next_message()? {
                    let Message::Batch(batch) = message else {
                        return Err(IngestError::Unexpected { expected: "batch", got: message.name() });
                    };
                    match twin.handle_batch(&who.id, &batch, now_ms()) {
                        Outcome::Applied => accepted.push((batch.incarnation, batch.seq, reader.last_frame().to_vec())),
                        Outcome::Duplicate => {}
                        Outcome::Unapplied { keyframe_wanted, reason } => {
                            tracing::debug!(agent = %who, seq = batch.seq, "batch stored unapplied: {reason}");
                            accepted.push((batch.incarnation, batch.seq, reader.last_frame().to_vec()));
                            if keyframe_wanted {
                                keyframe =
                                    Some(KeyframeRequest { incarnation: batch.incarnation, after_seq: batch.seq });
                            }
                        }
                    }
                    let through = twin.host(&who.id).map_or(batch.seq, |h| h.stored_through(batch.incarnation));
                    ack = Some(Ack { incarnation: batch.incarnation, through_seq: through });
                }
                if ack.is_some() {
                    if let Some(host) = twin.host(&who.id) {
                        if let Err(e) = self.store.commit(host, &accepted) {
                            // Memory ran ahead of disk: put the host back as stored and let the
                            // agent replay.
                            let stored = self.store.host(&who.id).ok().flatten();
                            twin.restore(stored, &who.id);
                            return Err(e.into());
                        }
                    }
                }
            }
            if let Some(ack) = ack {
                self.store.flush().await?;
                out.clear();
                Message::Ack(ack).encode(&mut frames, &mut out)?;
                if let Some(request) = keyframe {
                    Message::KeyframeRequest(request).encode(&mut frames, &mut out)?;
                }
                send.write_all(&out).await?;
            }
            match recv.read_chunk(256 * 1024, true).await? {
                Some(chunk) => reader.push(&chunk.bytes),
                None => return Err(IngestError::Closed),
            }
        }
    }
}
