//! Who may call what: bearer tokens checked per request, the caller handed to handlers, refused
//! admin attempts recorded in the audit log, and the counters `/metrics` shows.
//!
//! Reads need a `read` or `admin` token, changes an `admin` token. No token or an unknown one is
//! 401 (with `WWW-Authenticate: Bearer`); a read token on an admin route is 403, and is audited.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use twinwatch_common::time::now_ms;

use super::{ApiError, AppState};
use crate::access::audit::{AuditLog, Outcome, Record};
use crate::access::revocation::Revocations;
use crate::access::tokens::{Role, Tokens};

/// A refused admin attempt by the same token is audited at most this often.
const DENIED_AUDIT_EVERY_MS: i64 = 10_000;

/// The client's address, as the server accepted the connection (plain or TLS); the server
/// ([`super::server`]) puts it in every request as `ConnectInfo<Peer>`.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// Who made a request: inserted by the auth layer for handlers to use.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    /// The client's address, or `unknown` when the server did not say (in-process tests).
    pub from: String,
}

#[derive(Debug, Default)]
pub struct AccessStats {
    pub unauthorized: AtomicU64,
    pub forbidden: AtomicU64,
    pub audit_errors: AtomicU64,
}

/// Tokens, revocations and the audit log: what access control reads and writes.
pub struct Access {
    pub tokens: Tokens,
    pub revocations: Arc<Revocations>,
    pub audit: AuditLog,
    pub stats: AccessStats,
    /// Per token name, when its last refused attempt was audited.
    denied_audited: Mutex<HashMap<String, i64>>,
}

impl Access {
    pub fn new(tokens: Tokens, revocations: Arc<Revocations>, audit: AuditLog) -> Access {
        Access { tokens, revocations, audit, stats: AccessStats::default(), denied_audited: Mutex::new(HashMap::new()) }
    }

    /// Appends `record` to the audit log off the async threads. A failure is logged and counted:
    /// the action it records has happened already.
    pub async fn record(self: &Arc<Self>, record: Record) {
        let access = self.clone();
        let written = tokio::task::spawn_blocking(move || access.audit.append(&record)).await;
        if let Err(e) = written.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string())) {
            self.stats.audit_errors.fetch_add(1, Relaxed);
            tracing::error!("audit record not written: {e}");
        }
    }

    /// Whether a refused attempt by `name` at `now` should be audited (not within
    /// [`DENIED_AUDIT_EVERY_MS`] of the last one), so a read token cannot flood the log.
    fn audit_denied(&self, name: &str, now: i64) -> bool {
        let mut seen = self.denied_audited.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() > 10_000 {
            seen.clear();
        }
        match seen.get(name) {
            Some(last) if now - last < DENIED_AUDIT_EVERY_MS => false,
            _ => {
                seen.insert(name.to_owned(), now);
                true
            }
        }
    }

    /// Access control's counters in Prometheus text.
    pub fn render_metrics(&self, out: &mut String) {
        let r = &self.revocations.stats;
        let counters = [
            (
                "twinwatch_aggregator_revoked_refused_total",
                "Agent connections refused because their certificate is revoked.",
                r.refused.load(Relaxed),
            ),
            (
                "twinwatch_aggregator_revoked_disconnected_total",
                "Connected agents closed because their certificate was revoked.",
                r.disconnected.load(Relaxed),
            ),
            (
                "twinwatch_aggregator_audit_write_errors_total",
                "Audit records that could not be written.",
                self.stats.audit_errors.load(Relaxed),
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        }
        let name = "twinwatch_aggregator_api_denied_total";
        let _ = writeln!(out, "# HELP {name} API requests refused: no or unknown token (401), role too low (403).");
        let _ = writeln!(out, "# TYPE {name} counter");
        let _ = writeln!(out, "{name}{{status=\"401\"}} {}", self.stats.unauthorized.load(Relaxed));
        let _ = writeln!(out, "{name}{{status=\"403\"}} {}", self.stats.forbidden.load(Relaxed));
    }
}

/// Where a request came from, for the audit log: the connection's address, and what a proxy in
/// front says about the client (Fly's `Fly-Client-IP`, or `X-Forwarded-For`), recorded as said,
/// not trusted.
fn origin(peer: Option<SocketAddr>, forwarded: Option<&str>) -> String {
    let peer = peer.map_or_else(|| "unknown".to_owned(), |a| a.to_string());
    match forwarded.map(str::trim).filter(|f| !f.is_empty()) {
        Some(f) => format!("{peer}, forwarded for {}", f.chars().take(128).collect::<String>()),
        None => peer,
    }
}

fn bearer(request: &Request) -> Option<&str> {
    let value = request.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Lets a request through with a read or admin bearer token.
pub async fn require_read(State(state): State<AppState>, request: Request, next: Next) -> Result<Response, ApiError> {
    authorize(state, request, next, Role::Read).await
}

/// Lets a request through with an admin bearer token.
pub async fn require_admin(State(state): State<AppState>, request: Request, next: Next) -> Result<Response, ApiError> {
    authorize(state, request, next, Role::Admin).await
}

async fn authorize(state: AppState, mut request: Request, next: Next, needed: Role) -> Result<Response, ApiError> {
    let access = &state.access;
    let Some(token) = bearer(&request) else {
        access.stats.unauthorized.fetch_add(1, Relaxed);
        return Err(ApiError::unauthorized("a bearer token is required"));
    };
    let Some(grant) = access.tokens.check(token) else {
        access.stats.unauthorized.fetch_add(1, Relaxed);
        return Err(ApiError::unauthorized("unknown token"));
    };
    let peer = request.extensions().get::<ConnectInfo<Peer>>().map(|ConnectInfo(Peer(addr))| *addr);
    let forwarded = ["fly-client-ip", "x-forwarded-for"]
        .iter()
        .find_map(|h| request.headers().get(*h).and_then(|v| v.to_str().ok()));
    let from = origin(peer, forwarded);
    if grant.role < needed {
        access.stats.forbidden.fetch_add(1, Relaxed);
        let now = now_ms();
        if access.audit_denied(&grant.name, now) {
            // Admin routes are nested under /api/v1, which the nested router no longer sees.
            let action = format!("{} /api/v1{}", request.method(), request.uri().path());
            let record = Record::new(now, &grant.name, &from, &action, "", Outcome::Denied)
                .with_detail(format!("a {} token; this needs admin", grant.role.as_str()));
            access.record(record).await;
        }
        return Err(ApiError::forbidden(format!("token {:?} has the read role; this needs admin", grant.name)));
    }
    request.extensions_mut().insert(Caller { name: grant.name, from });
    Ok(next.run(request).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_origin_names_the_peer_and_what_a_proxy_says() {
        let peer: SocketAddr = "172.19.0.2:41234".parse().unwrap();
        assert_eq!(origin(Some(peer), None), "172.19.0.2:41234");
        assert_eq!(origin(Some(peer), Some(" 203.0.113.7 ")), "172.19.0.2:41234, forwarded for 203.0.113.7");
        assert_eq!(origin(None, Some("")), "unknown");
        assert_eq!(origin(None, Some(&"9".repeat(500))).len(), "unknown, forwarded for ".len() + 128);
    }

    #[test]
    fn refused_attempts_are_audited_at_most_every_ten_seconds_per_token() {
        let dir = std::env::temp_dir().join(format!("twinwatch-access-{}", std::process::id()));
        let access = Access::new(
            Tokens::new(dir.join("tokens")),
            Arc::new(Revocations::open(dir.join("revocations")).unwrap()),
            AuditLog::new(dir.join("audit.log"), 1 << 20, 1),
        );
        assert!(access.audit_denied("grafana", 0));
        assert!(!access.audit_denied("grafana", 9_999));
        assert!(access.audit_denied("other", 9_999));
        assert!(access.audit_denied("grafana", 10_000));
        let mut text = String::new();
        access.render_metrics(&mut text);
        assert!(text.contains("twinwatch_aggregator_api_denied_total{status=\"403\"} 0\n"), "{text}");
        assert!(text.contains("twinwatch_aggregator_revoked_refused_total 0\n"), "{text}");
    }
}
