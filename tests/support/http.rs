//! The tests' one HTTP/1.1 client: any method, headers both ways, plain or over TLS with a client
//! that trusts a given CA, one request per connection or several on one kept alive.
//!
//! Every answer is read by [`read_answer`], which is also what reads the raw bytes a hostile test
//! got back from a socket it wrote by hand ([`parse`]). It is lenient on purpose: an answer cut
//! short keeps what arrived, and bytes that are no HTTP answer give status 0.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How long a connect, and each read, may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// An answer: status, header lines (lowercase names), body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The body as text (lossy UTF-8).
    pub body: String,
    /// The body's bytes, unchunked but otherwise as sent (compressed, if it was).
    pub bytes: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// A request's head and body as bytes. `headers` come after `Host`; `Content-Length` is added
/// when there is a body or the method usually carries one.
fn raw_request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || !matches!(method, "GET" | "HEAD") {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

/// The headers of [`request`]: a bearer token, and a JSON body's type.
fn usual_headers<'a>(token: Option<&'a str>, body: Option<&str>, bearer: &'a mut String) -> Vec<(&'a str, &'a str)> {
    let mut headers = vec![("Connection", "close")];
    if let Some(t) = token {
        *bearer = format!("Bearer {t}");
        headers.push(("Authorization", bearer.as_str()));
    }
    if body.is_some_and(|b| !b.is_empty()) {
        headers.push(("Content-Type", "application/json"));
    }
    headers
}

/// Reads one answer: the status line, the headers, and a body framed by `Content-Length`, by
/// chunks, or by the end of the stream. A stream that ends early ends the body there.
pub fn read_answer(reader: &mut impl BufRead) -> std::io::Result<Answer> {
    let mut line = String::new();
    read_line(reader, &mut line)?;
    let status = line.strip_prefix("HTTP/1.").and_then(|l| l.get(2..5)).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut headers = Vec::new();
    loop {
        line.clear();
        if read_line(reader, &mut line)? == 0 || line.trim_end().is_empty() {
            break;
        }
        if let Some((n, v)) = line.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let find = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    let mut bytes = Vec::new();
    if status == 0 {
        // No HTTP answer: whatever else came is kept as it is.
        bytes.extend_from_slice(line.as_bytes());
        let _ = read_to_end(reader, &mut bytes);
    } else if find("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        loop {
            line.clear();
            read_line(reader, &mut line)?;
            let Ok(size) = usize::from_str_radix(line.trim(), 16) else { break };
            if size == 0 {
                break;
            }
            let mut chunk = Vec::with_capacity(size);
            reader.by_ref().take(size as u64).read_to_end(&mut chunk)?;
            bytes.extend_from_slice(&chunk);
            line.clear();
            read_line(reader, &mut line)?;
            if chunk.len() < size {
                break;
            }
        }
    } else if let Some(length) = find("content-length").and_then(|v| v.parse::<u64>().ok()) {
        reader.by_ref().take(length).read_to_end(&mut bytes)?;
    } else if status != 204 && status != 304 {
        read_to_end(reader, &mut bytes)?;
    }
    let body = String::from_utf8_lossy(&bytes).into_owned();
    Ok(Answer { status, headers, body, bytes })
}

/// A line, where a stream that ends or is cut (a TLS peer gone without close_notify) is an end.
fn read_line(reader: &mut impl BufRead, line: &mut String) -> std::io::Result<usize> {
    let mut raw = Vec::new();
    match reader.read_until(b'\n', &mut raw) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && !raw.is_empty() => {}
        Err(e) => return Err(e),
    }
    line.push_str(&String::from_utf8_lossy(&raw));
    Ok(raw.len())
}

/// The rest of the stream, where a cut as in [`read_line`] is its end.
fn read_to_end(reader: &mut impl Read, out: &mut Vec<u8>) -> std::io::Result<()> {
    match reader.read_to_end(out) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && !out.is_empty() => Ok(()),
        Err(e) => Err(e),
    }
}

/// An answer from the raw bytes a test read from a socket it wrote to by hand.
pub fn parse(response: &[u8]) -> Answer {
    let mut reader = response;
    read_answer(&mut reader).expect("reading from memory cannot fail")
}

/// A plain HTTP request to `addr`, with a bearer `token` and a JSON `body` if given.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> std::io::Result<Answer> {
    let mut bearer = String::new();
    let headers = usual_headers(token, body, &mut bearer);
    request_with(addr, method, path, &headers, body.unwrap_or("").as_bytes())
}

/// A plain HTTP request with exactly `headers` (add `Connection: close` for one request).
pub fn request_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Answer> {
    Connection::open(addr)?.send(method, path, headers, body)
}

/// A connection kept alive for several requests, as a client that measures the server's cost
/// of a request, not of a connection, needs.
pub struct Connection {
    reader: BufReader<TcpStream>,
}

impl Connection {
    pub fn open(addr: SocketAddr) -> std::io::Result<Connection> {
        let stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        Ok(Connection { reader: BufReader::new(stream) })
    }

    /// Sends one request and reads its answer.
    pub fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> std::io::Result<Answer> {
        self.reader.get_mut().write_all(&raw_request(method, path, headers, body))?;
        read_answer(&mut self.reader)
    }
}

/// The same over TLS, trusting only the CA in `ca_pem` and checking the certificate is for
/// `server_name`.
pub fn request_tls(
    addr: SocketAddr,
    server_name: &str,
    ca_pem: &Path,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> Result<Answer, String> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca_pem).map_err(|e| e.to_string())? {
        roots.add(cert.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from(server_name.to_owned()).map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut bearer = String::new();
    let headers = usual_headers(token, None, &mut bearer);
    tls.write_all(&raw_request(method, path, &headers, b"")).map_err(|e| e.to_string())?;
    let answer = read_answer(&mut BufReader::new(tls)).map_err(|e| e.to_string())?;
    // A failed handshake surfaces on the first read: no status line at all.
    if answer.status == 0 && answer.bytes.is_empty() {
        return Err("no answer".into());
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_framed_by_length_by_chunks_or_by_the_end_and_cut_short() {
        let mut two: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello\
                               HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let first = read_answer(&mut two).unwrap();
        assert_eq!((first.status, first.body.as_str()), (200, "hello"));
        let second = read_answer(&mut two).unwrap();
        assert_eq!(
            (second.status, second.body.as_str(), second.header("transfer-encoding")),
            (201, "abcde", Some("chunked"))
        );
        let to_end = parse(b"HTTP/1.0 404 Not Found\r\nX-A: b\r\n\r\nnot here");
        assert_eq!((to_end.status, to_end.body.as_str(), to_end.header("x-a")), (404, "not here", Some("b")));
        let cut = parse(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 100\r\n\r\n{\"error\"");
        assert_eq!((cut.status, cut.body.as_str()), (400, "{\"error\""));
        let garbage = parse(b"\x15\x03\x03\x00\x02\x02\x50");
        assert_eq!(garbage.status, 0);
        assert_eq!(parse(b"").status, 0);
    }

    #[test]
    fn requests_carry_their_headers_and_length() {
        let get = raw_request("GET", "/x", &[("Authorization", "Bearer t")], b"");
        assert_eq!(get, b"GET /x HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer t\r\n\r\n");
        let post = raw_request("POST", "/y", &[], b"{}");
        assert_eq!(post, b"POST /y HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}");
    }
}
