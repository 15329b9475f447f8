//! What the QUIC edge turns away: connection attempts refused, by reason, and datagrams that
//! are not QUIC for us. Counted for `/metrics` and logged at a bounded rate.
//!
//! Anyone can send UDP datagrams, and forged QUIC Initials cost the sender nothing: a line per
//! refusal would let a flood fill the disk and drown the refusals that matter. So every refusal
//! is counted, the first of a kind is logged at once, and the rest of that kind once a minute
//! as a summary ([`LogLimit`]). Revoked certificates are limited per agent and stage: only
//! certificates our CA signed and the revocation list names get that far, so their number is the
//! operator's, and one revoked agent's retries do not hide another's. Refusals of agents in a session (identity
//! conflicts, a superseded connection) are not here: those agents are known and back off.

use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::counters::Counters;
use crate::quic::log_limit::{Line, LogLimit};

/// How often a kind of refusal may write a line.
pub const LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Why the edge turned something away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// Past the limit of handshakes at once.
    Busy,
    /// A client certificate our CA did not sign.
    UnknownCa,
    /// A client certificate that is missing, expired, badly signed or without an agent identity.
    BadCertificate,
    /// A certificate in the revocation list.
    Revoked,
    /// A handshake the peer did not finish in time.
    HandshakeTimeout,
    /// An Initial packet that does not authenticate: forged, or damaged on the way.
    BadInitial,
    /// Any other failed handshake (no common protocol, closed by the peer, ...).
    HandshakeFailed,
    /// A datagram that is not QUIC for us (see [`crate::quic::reset_key::classify`]).
    Malformed,
}

impl Refusal {
    pub const ALL: [Refusal; 8] = [
        Refusal::Busy,
        Refusal::UnknownCa,
        Refusal::BadCertificate,
        Refusal::Revoked,
        Refusal::HandshakeTimeout,
        Refusal::BadInitial,
        Refusal::HandshakeFailed,
        Refusal::Malformed,
    ];

    /// The `reason` label on `/metrics`, and in the log.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Busy => "busy",
            Refusal::UnknownCa => "unknown_ca",
            Refusal::BadCertificate => "bad_certificate",
            Refusal::Revoked => "revoked",
            Refusal::HandshakeTimeout => "handshake_timeout",
            Refusal::BadInitial => "bad_initial",
            Refusal::HandshakeFailed => "handshake_failed",
            Refusal::Malformed => "malformed_datagram",
        }
    }

    fn index(self) -> usize {
        Refusal::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }

    /// The reason a handshake that ended in `error` was refused.
    pub fn of_handshake(error: &quinn::ConnectionError) -> Refusal {
        use quinn::ConnectionError as E;
        match error {
            E::TimedOut => Refusal::HandshakeTimeout,
            E::CidsExhausted => Refusal::Busy,
            E::TransportError(e) => {
                let code = u64::from(e.code);
                // TLS alerts travel as QUIC crypto errors, 0x100 + the alert (RFC 9001 §4.8).
                match code.checked_sub(0x100).filter(|alert| *alert <= 0xff) {
                    Some(48) => Refusal::UnknownCa,
                    Some(44) => Refusal::Revoked,
                    // bad, unsupported, expired or unknown certificate; bad signature
                    // (decrypt_error); certificate required.
                    Some(42 | 43 | 45 | 46 | 51 | 116) => Refusal::BadCertificate,
                    Some(_) => Refusal::HandshakeFailed,
                    None if e.code == quinn_proto::TransportErrorCode::PROTOCOL_VIOLATION => Refusal::BadInitial,
                    None => Refusal::HandshakeFailed,
                }
            }
            _ => Refusal::HandshakeFailed,
        }
    }
}

/// Who was refused and why, as the log tells it.
#[derive(Debug, Clone)]
pub struct Detail {
    /// Unknown to the TLS verifier, which sees certificates but not addresses.
    pub peer: Option<SocketAddr>,
    /// The agent its certificate names, for revoked ones.
    pub agent: Option<String>,
    pub reason: String,
}

/// The counters and the log limit, shared by the endpoint, the TLS verifier and ingest.
#[derive(Debug)]
pub struct Refusals {
    counts: [AtomicU64; Refusal::ALL.len()],
    /// A std mutex: held only to decide whether to log, never across an await.
    log: Mutex<LogLimit<(Refusal, Option<String>), Detail>>,
}

impl Default for Refusals {
    fn default() -> Self {
        Refusals { counts: Default::default(), log: Mutex::new(LogLimit::new(LOG_INTERVAL)) }
    }
}

impl Refusals {
    /// Counts a refusal, and logs it if its kind may write a line now. `reason` is the whole
    /// sentence the log tells.
    pub fn refused(&self, kind: Refusal, peer: Option<SocketAddr>, reason: impl std::fmt::Display) {
        self.note(kind, None, Detail { peer, agent: None, reason: reason.to_string() });
    }

    /// [`Refusals::refused`], for a certificate the revocation list refuses: limited per agent
    /// and per `stage` (the handshake, or a resumed session), so that an agent refused on
    /// resumption still gets its first line when it is next refused in TLS itself.
    pub fn revoked(&self, agent: &str, stage: &'static str, peer: Option<SocketAddr>, reason: impl std::fmt::Display) {
        let detail = Detail { peer, agent: Some(agent.to_owned()), reason: reason.to_string() };
        self.note(Refusal::Revoked, Some(format!("{agent} {stage}")), detail);
    }

    /// Counts, and logs if the log limit lets `(kind, subject)` write a line now.
    fn note(&self, kind: Refusal, subject: Option<String>, detail: Detail) {
        self.counts[kind.index()].fetch_add(1, Relaxed);
        let line = self.log.lock().unwrap_or_else(|e| e.into_inner()).event((kind, subject), Instant::now(), detail);
        if let Some(line) = line {
            emit(kind, &line);
        }
    }

    /// How many refusals of `kind` so far.
    pub fn count(&self, kind: Refusal) -> u64 {
        self.counts[kind.index()].load(Relaxed)
    }

    /// Logs the summaries of bursts that have stopped, until `shutdown`.
    pub async fn summarize(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            let next = self.log.lock().unwrap_or_else(|e| e.into_inner()).next_due();
            // At least once a second, so a burst that begins while this sleeps is summarized
            // on time.
            let wait = next.map_or(Duration::from_secs(1), |at| at.saturating_duration_since(Instant::now()));
            tokio::select! {
                _ = tokio::time::sleep(wait.clamp(Duration::from_millis(100), Duration::from_secs(1))) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            let lines = self.log.lock().unwrap_or_else(|e| e.into_inner()).due(Instant::now());
            for ((kind, _), line) in lines {
                emit(kind, &line);
            }
        }
    }
}

impl Counters for Refusals {
    /// The counters in Prometheus text format.
    fn render_metrics(&self, out: &mut String) {
        let name = "twinwatch_quic_refused_total";
        let _ = writeln!(out, "# HELP {name} QUIC connection attempts refused before a session, by reason.");
        let _ = writeln!(out, "# TYPE {name} counter");
        for kind in Refusal::ALL.into_iter().filter(|k| *k != Refusal::Malformed) {
            let _ = writeln!(out, "{name}{{reason=\"{}\"}} {}", kind.label(), self.count(kind));
        }
        let name = "twinwatch_quic_malformed_datagrams_total";
        let _ = writeln!(out, "# HELP {name} Datagrams to the QUIC port that are not QUIC for this aggregator.");
        let _ = writeln!(out, "# TYPE {name} counter");
        let _ = writeln!(out, "{name} {}", self.count(Refusal::Malformed));
    }
}

fn emit(kind: Refusal, line: &Line<Detail>) {
    let reason = kind.label();
    match line {
        Line::First(d) => tracing::warn!(
            reason,
            peer = %Peer(d.peer),
            agent = d.agent.as_ref().map(tracing::field::display),
            "{}; more like it are counted on /metrics and summarized once a minute",
            d.reason
        ),
        Line::Summary { count, over, last } => tracing::warn!(
            reason,
            count,
            agent = last.agent.as_ref().map(tracing::field::display),
            "{count} more refused ({reason}) in the last {} s; the last from {}: {}",
            over.as_secs(),
            Peer(last.peer),
            last.reason
        ),
    }
}

struct Peer(Option<SocketAddr>);

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(peer) => peer.fmt(f),
            None => f.write_str("an address the TLS layer does not know"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_alerts_name_the_reason() {
        let alert = |n: u8| {
            quinn::ConnectionError::TransportError(quinn_proto::TransportError {
                code: quinn_proto::TransportErrorCode::crypto(n),
                frame: None,
                reason: String::new(),
            })
        };
        assert_eq!(Refusal::of_handshake(&alert(48)), Refusal::UnknownCa);
        assert_eq!(Refusal::of_handshake(&alert(44)), Refusal::Revoked);
        assert_eq!(Refusal::of_handshake(&alert(116)), Refusal::BadCertificate);
        assert_eq!(Refusal::of_handshake(&alert(45)), Refusal::BadCertificate);
        assert_eq!(Refusal::of_handshake(&alert(120)), Refusal::HandshakeFailed, "no application protocol");
        let forged = quinn::ConnectionError::TransportError(quinn_proto::TransportError {
            code: quinn_proto::TransportErrorCode::PROTOCOL_VIOLATION,
            frame: None,
            reason: "authentication failed".into(),
        });
        assert_eq!(Refusal::of_handshake(&forged), Refusal::BadInitial);
        assert_eq!(Refusal::of_handshake(&quinn::ConnectionError::TimedOut), Refusal::HandshakeTimeout);
    }

    #[test]
    fn every_reason_is_on_metrics_and_counts() {
        let refusals = Refusals::default();
        let peer = Some("127.0.0.1:9".parse().unwrap());
        for _ in 0..3 {
            refusals.refused(Refusal::UnknownCa, peer, "test");
        }
        refusals.refused(Refusal::Malformed, peer, "test");
        let mut text = String::new();
        refusals.render_metrics(&mut text);
        assert!(text.contains("twinwatch_quic_refused_total{reason=\"unknown_ca\"} 3\n"), "{text}");
        assert!(text.contains("twinwatch_quic_refused_total{reason=\"busy\"} 0\n"), "{text}");
        assert!(text.contains("twinwatch_quic_malformed_datagrams_total 1\n"), "{text}");
        assert_eq!(text.matches("twinwatch_quic_refused_total{").count(), Refusal::ALL.len() - 1);
    }
}
