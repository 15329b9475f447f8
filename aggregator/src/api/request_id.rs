//! Every API request's id: the client's `X-Request-Id` when it is short and plain, otherwise a
//! new one. The id comes back in the answer's `X-Request-Id` header and in every error body
//! (`request_id`), and a span carries it, with the method and path, on every log line the
//! request causes; one line per request says how it was answered (debug, warn for a 5xx).
//!
//! Not here: heads hyper refuses before routing have no request to trace;
//! [`super::bare_status`] gives their answers an id of their own.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// The request and answer header.
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");
/// Longest id accepted from a client.
const MAX_LEN: usize = 64;
/// Longest path recorded on log lines (a request line may hold 64 KiB).
const MAX_LOGGED_PATH: usize = 256;

/// The client's id, if it is 1 to [`MAX_LEN`] of `A-Z a-z 0-9 . _ -`: anything else (control
/// characters, spaces, quotes, a novel) could garble a log line or an answer, and is replaced.
pub fn accepted(value: &[u8]) -> Option<String> {
    let plain = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
    let fits = (1..=MAX_LEN).contains(&value.len()) && value.iter().all(plain);
    fits.then(|| value.iter().map(|&b| char::from(b)).collect())
}

/// A new id: 16 hex digits, unique in this process (a counter through a bijection of the 64-bit
/// numbers) and unlike another run's (the counter starts at a random number).
pub fn generate() -> String {
    static START: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let start = *START.get_or_init(|| {
        use ring::rand::SecureRandom;
        let mut bytes = [0u8; 8];
        match ring::rand::SystemRandom::new().fill(&mut bytes) {
            Ok(()) => u64::from_le_bytes(bytes),
            Err(_) => twinwatch_common::time::now_ms() as u64,
        }
    });
    // Multiplying by an odd number is a bijection modulo 2^64: no two counts give one id.
    let n = start.wrapping_add(COUNTER.fetch_add(1, Relaxed).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    twinwatch_common::hex::encode(&n.to_be_bytes())
}

/// Middleware, the outermost: gives the request its id and span, puts every error answer in the
/// API's shape with that id ([`super::error::as_json`]), echoes the id, and logs the answer.
pub async fn traced(request: Request, next: Next) -> Response {
    let id = request.headers().get(&HEADER).and_then(|v| accepted(v.as_bytes())).unwrap_or_else(generate);
    let path: String = request.uri().path().chars().take(MAX_LOGGED_PATH).collect();
    let span = tracing::info_span!("request", request_id = %id, method = %request.method(), path = %path);
    let started = Instant::now();
    let answer = async {
        let response = next.run(request).await;
        super::error::as_json(response, &id).await
    };
    let mut response = answer.instrument(span.clone()).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, value);
    }
    let status = response.status().as_u16();
    let elapsed_ms = started.elapsed().as_millis() as u64;
    if response.status().is_server_error() {
        tracing::warn!(parent: &span, status, elapsed_ms, "request answered");
    } else {
        tracing::debug!(parent: &span, status, elapsed_ms, "request answered");
    }
    response
}

#[cfg(test)]
mod tests {
    use super::{accepted, generate};

    #[test]
    fn plain_short_ids_are_kept_and_others_replaced() {
        assert_eq!(accepted(b"abc-123_x.y").as_deref(), Some("abc-123_x.y"));
        assert_eq!(accepted(&[b'a'; 64]).map(|s| s.len()), Some(64));
        for refused in [&b""[..], &[b'a'; 65], b"a b", b"a\r\nb", b"\"x\"", "é".as_bytes(), b"a/b", b"\0"] {
            assert_eq!(accepted(refused), None, "{refused:?}");
        }
    }

    #[test]
    fn generated_ids_are_sixteen_hex_digits_and_distinct() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| generate()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|id| id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit())));
        assert!(ids.iter().all(|id| accepted(id.as_bytes()).is_some()));
    }
}
