//! hyper answers a request head it cannot parse (a bad request line, a head too large, a URI too
//! long) by itself, with a bare status and no body, before any handler runs. This adapter sits
//! between hyper and the socket and rewrites exactly those answers into the API's JSON error shape,
//! `{"error", "detail", "request_id"}`, so that every error a client can see reads the same.
//! No request was read, so the id is always a new one (a client's `X-Request-Id` is in the head
//! hyper could not parse); it is in the `X-Request-Id` header too, and on a debug log line.
//!
//! It recognises them by what no handler's answer has: an error status with neither a body nor
//! a `content-type` (every error the API writes itself is JSON). hyper closes the connection after
//! such an answer, so nothing follows it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// An I/O stream whose bare error answers are rewritten as JSON; see the module's comment.
pub struct BareStatusAsJson<T> {
    inner: T,
    /// A rewritten answer, and how much of it is written.
    pending: Option<(Vec<u8>, usize)>,
}

impl<T> BareStatusAsJson<T> {
    pub fn new(inner: T) -> Self {
        BareStatusAsJson { inner, pending: None }
    }
}

/// The JSON answer for `head`, if `head` is hyper's bare answer to a head it could not parse.
fn rewrite(head: &[u8]) -> Option<Vec<u8>> {
    let rest = head.strip_prefix(b"HTTP/1.1 ").or_else(|| head.strip_prefix(b"HTTP/1.0 "))?;
    let code: u16 = std::str::from_utf8(rest.get(..3)?).ok()?.parse().ok()?;
    if !(400..600).contains(&code) {
        return None;
    }
    let end = head.windows(4).position(|w| w == b"\r\n\r\n")?;
    if end + 4 != head.len() {
        return None;
    }
    let text = std::str::from_utf8(&head[..end]).ok()?.to_ascii_lowercase();
    let mut lines = text.split("\r\n").skip(1);
    if lines.clone().any(|l| l.starts_with("content-type:") || l.starts_with("transfer-encoding:")) {
        return None;
    }
    if !lines.all(|l| !l.starts_with("content-length:") || l["content-length:".len()..].trim() == "0") {
        return None;
    }
    let (error, detail) = match code {
        414 => ("uri too long", "the request line is too long"),
        431 => ("request header fields too large", "the request's headers are too large or too many"),
        _ => ("bad request", "the request's head is not valid HTTP/1.1"),
    };
    let request_id = super::request_id::generate();
    tracing::debug!(request_id, status = code, "request head refused before routing: {detail}");
    let body = serde_json::json!({ "error": error, "detail": detail, "request_id": request_id }).to_string();
    let status_line = &head[..head.windows(2).position(|w| w == b"\r\n")?];
    let mut out = Vec::with_capacity(status_line.len() + body.len() + 128);
    out.extend_from_slice(status_line);
    out.extend_from_slice(b"\r\ncontent-type: application/json\r\nconnection: close\r\nx-request-id: ");
    out.extend_from_slice(request_id.as_bytes());
    out.extend_from_slice(b"\r\ncontent-length: ");
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body.as_bytes());
    Some(out)
}

impl<T: AsyncWrite + Unpin> BareStatusAsJson<T> {
    /// Writes what is left of a rewritten answer.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, done)) = &mut self.pending {
            if *done == bytes.len() {
                self.pending = None;
                break;
            }
            match Pin::new(&mut self.inner).poll_write(cx, &bytes[*done..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *done += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for BareStatusAsJson<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for BareStatusAsJson<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        std::task::ready!(self.poll_pending(cx))?;
        if let Some(json) = rewrite(buf) {
            self.pending = Some((json, 0));
            // Taken whole: what the caller wrote is replaced, and sent by the flush that follows.
            let _ = self.poll_pending(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::rewrite;

    #[test]
    fn hypers_bare_refusals_become_json() {
        let bare = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Mon, 07 Dec 2026 00:00:00 GMT\r\n\r\n";
        let json = String::from_utf8(rewrite(bare).expect("rewritten")).unwrap();
        assert!(json.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"), "{json}");
        assert!(json.contains("content-type: application/json\r\n"), "{json}");
        let body = json.split("\r\n\r\n").nth(1).unwrap();
        let value: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(value["error"], "request header fields too large");
        let id = value["request_id"].as_str().expect("request_id");
        assert!(json.contains(&format!("\r\nx-request-id: {id}\r\n")), "{json}");
        let length: usize =
            json.split("content-length: ").nth(1).unwrap().split("\r\n").next().unwrap().parse().unwrap();
        assert_eq!(length, body.len());
        assert!(rewrite(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n").is_some());
        assert!(rewrite(b"HTTP/1.1 414 URI Too Long\r\n\r\n").is_some());
    }

    #[test]
    fn answers_with_a_body_or_a_type_pass_untouched() {
        // The API's own errors, successes, and anything that is not a whole head.
        assert!(rewrite(b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")
            .is_none());
        assert!(
            rewrite(b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n").is_none()
        );
        assert!(rewrite(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(rewrite(b"HTTP/1.1 304 Not Modified\r\n\r\n").is_none());
        assert!(rewrite(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n\r\n").is_none());
        assert!(rewrite(b"HTTP/1.1 400 Bad Req").is_none());
        assert!(rewrite(b"{\"error\": \"HTTP/1.1 400\"}").is_none());
        assert!(rewrite(b"").is_none());
    }
}
