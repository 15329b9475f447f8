//! QUIC ingest: accept agents, verify who they are, reconcile their messages into the twin,
//! store them, and acknowledge only what is durable.
//!
//! Per connection: the TLS layer has already refused any client certificate our CA did not sign;
//! the identity comes from that certificate. Then `Hello` → [`Twin::handle_hello`] decides
//! whether this connection speaks for the identity (another may hold it) → `Welcome`, and a loop
//! that takes every message available, reconciles each, commits the stored batches with the
//! host's new state in one sled batch, flushes, and only then sends `Ack`s for the ranges it
//! took. Each ack carries the aggregator's clock, which the agent echoes for the skew estimate.
//!
//! Revocation: the TLS layer refuses revoked certificates at the handshake (`quic/tls.rs`); a
//! session straight after a resumed handshake is checked here, and [`Ingest::watch_revocations`]
//! closes connected agents whose certificate the list refuses as soon as the list changes.
//!
//! Admission: at most [`MAX_HANDSHAKES`] connections may be between accept and `Welcome` at a
//! time. Past that, new ones are refused before any cryptography, and the agents back off: an
//! aggregator restarting under hundreds of agents serves them in waves instead of drowning.
//!
//! Attempts refused before a session (busy, a failed or forged handshake, a certificate without
//! an identity, a revoked one) go to [`Refusals`], which counts them all and logs a bounded few:
//! anyone can make them, as fast as they like.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;

use twinwatch_common::frame::{FrameEncoder, FrameError};
use twinwatch_common::message::{close, Message, Welcome};
use twinwatch_common::reader::MessageReader;
use twinwatch_common::time::now_ms;

use crate::access::cert_identity::{self, IdentityError};
use crate::access::revocation::{Credential, RevocationList, Revocations, REVOCATION_POLL};
use crate::quic::admission::{Admission, Slot};
use crate::quic::peer_identity;
use crate::quic::refusals::{Refusal, Refusals};
use crate::quic::round::{Round, RoundError};
use crate::remote_write::RemoteWrite;
use crate::store::checkpoint;
use crate::store::{Store, StoreError};
use crate::twin::claims::Claim;
use crate::twin::identity::AgentIdentity;
use crate::twin::Twin;

const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections allowed between accept and `Welcome` at once.
pub const MAX_HANDSHAKES: usize = 64;

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
    #[error("refused: {0}")]
    Refused(String),
    #[error("a newer connection of this agent took over")]
    Superseded,
    #[error("refused: certificate revoked by {0}")]
    Revoked(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A connection past its hello, and the certificate it presented.
struct Open {
    conn: quinn::Connection,
    credential: Credential,
}

/// Shared by every connection.
pub struct Ingest {
    /// A std mutex: it is never held across an await.
    pub twin: Arc<Mutex<Twin>>,
    pub store: Arc<Store>,
    /// Remote write queues, fed by each checkpoint.
    remote: Option<Arc<RemoteWrite>>,
    next_conn: AtomicU64,
    /// Open connections by id, so one superseded by another, or revoked, can be closed.
    connections: Mutex<HashMap<u64, Open>>,
    pub revocations: Arc<Revocations>,
    pub admission: Arc<Admission>,
    /// Attempts refused before a session, counted and logged at a bounded rate.
    pub refusals: Arc<Refusals>,
}

impl Ingest {
    pub fn new(
        twin: Arc<Mutex<Twin>>,
        store: Arc<Store>,
        remote: Option<Arc<RemoteWrite>>,
        revocations: Arc<Revocations>,
        refusals: Arc<Refusals>,
    ) -> Self {
        Ingest {
            twin,
            store,
            remote,
            next_conn: AtomicU64::new(1),
            connections: Mutex::new(HashMap::new()),
            revocations,
            admission: Admission::new(MAX_HANDSHAKES),
            refusals,
        }
    }

    fn twin(&self) -> std::sync::MutexGuard<'_, Twin> {
        self.twin.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn connections(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Open>> {
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes every connected agent whose certificate `list` refuses; returns how many.
    pub fn enforce(&self, list: &RevocationList) -> usize {
        let revoked: Vec<(u64, Open, String)> = {
            let mut open = self.connections();
            let ids: Vec<(u64, String)> =
                open.iter().filter_map(|(id, o)| list.refuses(&o.credential).map(|r| (*id, r.by.clone()))).collect();
            ids.into_iter().filter_map(|(id, by)| open.remove(&id).map(|o| (id, o, by))).collect()
        };
        for (_, open, by) in &revoked {
            self.revocations.stats.disconnected.fetch_add(1, Relaxed);
            tracing::warn!(
                agent = %open.credential.agent,
                serial = %open.credential.serial,
                remote = %open.conn.remote_address(),
                revoked_by = %by,
                "certificate revoked: disconnecting the agent"
            );
            open.conn.close(close::REVOKED.into(), format!("certificate revoked by {by}").as_bytes());
        }
        revoked.len()
    }

    /// Enforces the revocation list whenever it changes: at once when this process changed it,
    /// within [`REVOCATION_POLL`] when the CLI did.
    pub async fn watch_revocations(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut seen = None;
        loop {
            let (generation, list) = self.revocations.current();
            if seen != Some(generation) {
                seen = Some(generation);
                self.enforce(&list);
            }
            tokio::select! {
                _ = self.revocations.changed.notified() => {}
                _ = tokio::time::sleep(REVOCATION_POLL) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }

    /// Accepts connections until the endpoint is closed.
    pub async fn serve(self: Arc<Self>, endpoint: quinn::Endpoint) {
        while let Some(incoming) = endpoint.accept().await {
            let remote = incoming.remote_address();
            let Some(permit) = self.admission.try_admit() else {
                self.refusals.refused(
                    Refusal::Busy,
                    Some(remote),
                    format_args!("agent refused: over {MAX_HANDSHAKES} handshakes at once"),
                );
                incoming.refuse();
                continue;
            };
            let ingest = self.clone();
            tokio::spawn(async move {
                let conn_id = ingest.next_conn.fetch_add(1, Relaxed);
                match ingest.connection(incoming, conn_id, permit).await {
                    Ok(who) => tracing::info!(%remote, agent = %who, "agent disconnected"),
                    Err((Some(who), IngestError::Revoked(by))) => ingest.refusals.revoked(
                        &who.id,
                        "session",
                        Some(remote),
                        format_args!("agent refused: {who}: certificate revoked by {by}"),
                    ),
                    Err((Some(who), e)) => tracing::warn!(%remote, agent = %who, "agent connection ended: {e}"),
                    Err((None, e)) => ingest.refused(remote, &e),
                }
            });
        }
    }

    /// Counts and logs an attempt that ended before it had an identity.
    fn refused(&self, remote: std::net::SocketAddr, error: &IngestError) {
        let kind = match error {
            IngestError::Connection(e) => Refusal::of_handshake(e),
            IngestError::Identity(_) => Refusal::BadCertificate,
            _ => Refusal::HandshakeFailed,
        };
        // The TLS verifier counted and logged it, with the certificate it refused.
        if kind != Refusal::Revoked {
            self.refusals.refused(kind, Some(remote), format_args!("agent refused: {error}"));
        }
    }

    async fn connection(
        &self,
        incoming: quinn::Incoming,
        conn_id: u64,
        permit: Slot,
    ) -> Result<AgentIdentity, (Option<AgentIdentity>, IngestError)> {
        let conn = incoming.await.map_err(|e| (None, e.into()))?;
        let leaf = peer_identity::leaf_certificate(&conn).map_err(|e| (None, e.into()))?;
        let who = cert_identity::from_der(&leaf).map_err(|e| (None, e.into()))?;
        let credential = Credential::from_der(&leaf).map_err(|e| (None, e.into()))?;
        if let Some(r) = self.revocations.refuses(&credential) {
            self.revocations.stats.refused.fetch_add(1, Relaxed);
            conn.close(close::REVOKED.into(), format!("certificate revoked by {}", r.by).as_bytes());
            return Err((Some(who), IngestError::Revoked(r.by)));
        }
        let result = self.session(&conn, conn_id, &who, credential, permit).await;
        self.twin().handle_disconnect(&who.id, conn_id);
        self.connections().remove(&conn_id);
        match result {
            Ok(()) | Err(IngestError::Closed) => Ok(who),
            Err(IngestError::Read(quinn::ReadError::ConnectionLost(quinn::ConnectionError::ApplicationClosed(_)))) => {
                Ok(who)
            }
            Err(IngestError::Refused(reason)) => {
                conn.close(close::IDENTITY_IN_USE.into(), reason.as_bytes());
                Err((Some(who), IngestError::Refused(reason)))
            }
            Err(IngestError::Superseded) => {
                conn.close(close::SUPERSEDED.into(), b"a newer connection of this agent took over");
                Err((Some(who), IngestError::Superseded))
            }
            Err(IngestError::Revoked(by)) => {
                conn.close(close::REVOKED.into(), format!("certificate revoked by {by}").as_bytes());
                Err((Some(who), IngestError::Revoked(by)))
            }
            Err(e) => {
                conn.close(close::ERROR.into(), e.to_string().as_bytes());
                Err((Some(who), e))
            }
        }
    }

    async fn session(
        &self,
        conn: &quinn::Connection,
        conn_id: u64,
        who: &AgentIdentity,
        credential: Credential,
        permit: Slot,
    ) -> Result<(), IngestError> {
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

        let (claim, stored_through) = {
            let mut twin = self.twin();
            let claim = twin.handle_hello(who, conn_id, &hello, now_ms());
            (claim, twin.host(&who.id).map_or(0, |h| h.accounted_through(hello.incarnation)))
        };
        // What the hello changed (identity, counters, conflicts) is kept at once.
        checkpoint::checkpoint(&self.twin, &self.store, self.remote.as_deref(), &who.id).await?;
        match claim {
            Claim::Refuse { reason } => {
                tracing::warn!(agent = %who, hostname = %hello.host.hostname, machine = %hello.host.machine_id, "identity conflict: {reason}");
                return Err(IngestError::Refused(reason));
            }
            Claim::Accept { supersedes } => {
                if let Some(old) = supersedes.and_then(|old| self.connections().remove(&old)) {
                    tracing::info!(agent = %who, "a newer connection takes over; closing the old one");
                    old.conn.close(close::SUPERSEDED.into(), b"a newer connection of this agent took over");
                }
            }
        }
        self.connections().insert(conn_id, Open { conn: conn.clone(), credential: credential.clone() });
        // A revocation written since the check after the handshake found no connection to close.
        if let Some(r) = self.revocations.refuses(&credential) {
            self.connections().remove(&conn_id);
            self.revocations.stats.refused.fetch_add(1, Relaxed);
            return Err(IngestError::Revoked(r.by));
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
        drop(permit);

        let mut out = Vec::new();
        loop {
            let mut round = Round::default();
            {
                // Reconciling takes the twin lock; storing does not. No sled call is made under
                // the twin lock: API readers and every other session wait on it.
                let mut twin = self.twin();
                while let Some(message) = reader.next_message()? {
                    round.handle(&mut twin, who, conn_id, message, reader.last_frame(), now_ms()).map_err(
                        |e| match e {
                            RoundError::Superseded => IngestError::Superseded,
                            RoundError::Unexpected(got) => IngestError::Unexpected { expected: "batch", got },
                        },
                    )?;
                }
            }
            // Logged after the twin took the frames: a checkpoint in between holds them already,
            // keeps their log entries (logged past the position it read) and a replay after a
            // crash finds every one of them in the ledger.
            if !round.logged.is_empty() {
                if let Err(e) = self.store.log(&who.id, &round.logged) {
                    // Memory ran ahead of disk: put the host back as stored and let the agent
                    // send again what was not acknowledged.
                    let reloaded = {
                        let stored = self.store.host(&who.id).and_then(|h| Ok((h, self.store.logged(&who.id)?)));
                        stored.map(|(host, logged)| checkpoint::restore(&mut self.twin(), &who.id, host, &logged))
                    };
                    if let Err(again) = reloaded {
                        tracing::error!(agent = %who, "reloading the host after a failed write: {again}");
                    }
                    return Err(e.into());
                }
            }
            let answer = round.answer(now_ms());
            if !answer.is_empty() {
                if !round.logged.is_empty() {
                    self.store.flush().await?;
                }
                out.clear();
                for message in answer {
                    message.encode(&mut frames, &mut out)?;
                }
                send.write_all(&out).await?;
            }
            match recv.read_chunk(256 * 1024, true).await? {
                Some(chunk) => reader.push(&chunk.bytes),
                None => return Err(IngestError::Closed),
            }
            // Take whatever else has already arrived, so one log write and one flush cover it.
            while let Some(Ok(Some(chunk))) = recv.read_chunk(256 * 1024, true).now_or_never() {
                reader.push(&chunk.bytes);
            }
        }
    }
}
