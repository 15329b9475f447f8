//! The API's HTTP server: hyper's HTTP/1.1 connections under limits of time, size and number, so
//! that a slow or hostile client holds up nobody.
//!
//! - A request head must arrive within `header_timeout`, counted from the moment the server
//!   waits for it: this also ends idle keep-alive connections and half-sent heads (slowloris).
//! - A head larger than [`MAX_HEAD_BYTES`] is refused by hyper; [`super::bare_status`] turns
//!   hyper's bare refusals into the API's JSON errors.
//! - Bodies are bounded in size and time by [`super::limits`].
//! - At most `max_connections` connections are open at once; past that a new one is closed at
//!   once, counted, and logged at most once a minute.
//!
//! Each connection runs in its own task; a shutdown asks every connection to finish the request
//! it is serving and closes it.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::serve::Listener;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{watch, Semaphore};

use super::bare_status::BareStatusAsJson;
use super::bearer::Peer;

/// Largest request head (request line and headers) hyper reads before refusing it with 431.
pub const MAX_HEAD_BYTES: usize = 64 << 10;
/// Most headers in one request.
const MAX_HEADERS: usize = 128;
/// How long a shutdown waits for a connection to finish the request it is serving.
const DRAIN: Duration = Duration::from_secs(5);

/// The server's limits, `[http]` in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// A request head (and the wait for the next one on a kept-alive connection) must arrive
    /// within this.
    pub header_timeout: Duration,
    /// A request body must arrive within this.
    pub body_timeout: Duration,
    /// Largest request body, declared or sent.
    pub max_body: usize,
    /// Connections open at once.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            max_body: 1 << 20,
            max_connections: 4096,
        }
    }
}

/// What the server has refused, for `/metrics`.
#[derive(Debug, Default)]
pub struct HttpStats {
    /// Connections closed at once because `max_connections` were open.
    pub refused_connections: AtomicU64,
    /// Connections open now.
    pub open_connections: AtomicU64,
}

impl HttpStats {
    /// The counters in Prometheus text format.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = writeln!(
            out,
            "# HELP twinwatch_http_connections_refused_total API connections closed at once: max_connections were open.\n\
             # TYPE twinwatch_http_connections_refused_total counter\n\
             twinwatch_http_connections_refused_total {}\n\
             # HELP twinwatch_http_connections_open API connections open now.\n\
             # TYPE twinwatch_http_connections_open gauge\n\
             twinwatch_http_connections_open {}",
            self.refused_connections.load(Relaxed),
            self.open_connections.load(Relaxed),
        );
    }
}

/// Serves `app` on `listener` until `shutdown` turns true.
pub async fn serve<L>(
    mut listener: L,
    app: Router,
    limits: HttpLimits,
    stats: Arc<HttpStats>,
    mut shutdown: watch::Receiver<bool>,
) where
    L: Listener<Addr = std::net::SocketAddr>,
{
    raise_fd_limit(limits.max_connections as u64 + 256);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(MAX_HEAD_BYTES)
        .max_buf_size(2 * MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    let mut last_refusal_log: Option<Instant> = None;
    let mut refused_since_log = 0u64;
    loop {
        let (io, remote) = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(io);
            stats.refused_connections.fetch_add(1, Relaxed);
            refused_since_log += 1;
            if last_refusal_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                tracing::warn!(
                    refused = refused_since_log,
                    last_peer = %remote,
                    max_connections = limits.max_connections,
                    "HTTP connections refused: the server is at its connection limit"
                );
                last_refusal_log = Some(Instant::now());
                refused_since_log = 0;
            }
            continue;
        };
        let app = app.clone();
        let http = http.clone();
        let stats = stats.clone();
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            stats.open_connections.fetch_add(1, Relaxed);
            let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(Peer(remote)));
                let mut app = app.clone();
                async move {
                    Ok::<_, Infallible>(tower::Service::call(&mut app, request).await.unwrap_or_else(|e| match e {}))
                }
            });
            let conn = http.serve_connection(TokioIo::new(BareStatusAsJson::new(io)), service);
            tokio::pin!(conn);
            let ended = tokio::select! {
                ended = conn.as_mut() => Some(ended),
                _ = stop.wait_for(|s| *s) => None,
            };
            let ended = match ended {
                Some(ended) => ended,
                None => {
                    conn.as_mut().graceful_shutdown();
                    tokio::time::timeout(DRAIN, conn).await.unwrap_or(Ok(()))
                }
            };
            if let Err(e) = ended {
                tracing::debug!(%remote, "HTTP connection: {e}");
            }
            stats.open_connections.fetch_sub(1, Relaxed);
            drop(slot);
        });
    }
}

/// Raises the soft limit of open files towards `want` (as far as the hard limit allows): the
/// usual soft limit of 1,024 would make the connection limit unreachable, and a flood of
/// connections would starve everything else of descriptors before it.
fn raise_fd_limit(want: u64) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the struct it is given and nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 || limit.rlim_cur >= want {
        return;
    }
    let raised = libc::rlimit { rlim_cur: want.min(limit.rlim_max), rlim_max: limit.rlim_max };
    // SAFETY: setrlimit reads the struct it is given and nothing else.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 || raised.rlim_cur < want {
        tracing::warn!(
            soft = raised.rlim_cur,
            wanted = want,
            "open file limit below http.max_connections + 256: raise LimitNOFILE, or lower max_connections"
        );
    }
}
