//! The HTTP(S) check: one fresh connection per hop, every phase timed, redirects followed by
//! policy, then status, body assertions and schema validation.
//!
//! Phases follow blackbox_exporter: `resolve`, `connect`, `tls`, `processing` (request written
//! until the first response byte) and `transfer` (first byte until the end of the body), each
//! summed over redirects. Connections are not reused: each run measures what a new visitor sees.

use std::time::Instant;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{HeaderName, HeaderValue, CONNECTION, CONTENT_TYPE, HOST, LOCATION, USER_AGENT};
use hyper::{Method, Request, Uri, Version};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use twinwatch_common::probe::Outcome;

use super::definition::HttpCheck;
use super::net;
use super::result::{HttpResult, ProbeResult};

const AGENT: &str = concat!("twinwatch-agent/", env!("CARGO_PKG_VERSION"));

/// The final response of a run, for the checks after it.
#[derive(Debug, Default)]
pub struct Response {
    pub status: u16,
    pub content_type: Option<String>,
    /// Kept only when a check needs it.
    pub body: Vec<u8>,
}

/// Runs the whole check into `result`.
pub async fn probe(check: &HttpCheck, result: &mut ProbeResult) {
    result.http = Some(HttpResult::default());
    let keep = check.needs_body();
    let Some(response) = fetch(check, keep, result).await else { return };
    if !check.accepts(response.status) {
        result.fail(Outcome::StatusMismatch, format!("status {} is not expected", response.status));
    }
    if keep {
        if let Some(failure) = assertions(check, &response.body) {
            if let Some(h) = result.http.as_mut() {
                h.assertion_failed = true;
            }
            result.fail(Outcome::AssertionFailed, failure);
        }
    }
    if let Some(validator) = &check.validator {
        let violations = validator.validate(response.status, response.content_type.as_deref(), &response.body);
        if let (Some(first), true) = (violations.first(), check.violations_fail) {
            let detail =
                format!("{} schema violations; first at {:?}: {}", violations.len(), first.pointer, first.message);
            result.fail(Outcome::SchemaViolation, detail);
        }
        result.violations = Some(violations);
    }
}

/// Follows the check's URL through redirects (as its policy allows) to a final response.
/// `None` once a failure is recorded in `result`.
pub async fn fetch(check: &HttpCheck, keep: bool, result: &mut ProbeResult) -> Option<Response> {
    let mut uri: Uri = match check.url.parse() {
        Ok(uri) => uri,
        Err(e) => {
            result.fail(Outcome::HttpError, format!("url {:?}: {e}", check.url));
            return None;
        }
    };
    let mut method = Method::from_bytes(check.method.as_bytes()).unwrap_or(Method::GET);
    let mut body = check.body.clone();
    let mut redirects = 0u32;
    loop {
        let (response, location) = hop(check, &uri, &method, body.as_deref(), keep, result).await?;
        let redirect = matches!(response.status, 301 | 302 | 303 | 307 | 308);
        let Some(location) = location.filter(|_| redirect && check.follow_redirects) else {
            return Some(response);
        };
        redirects += 1;
        if let Some(h) = result.http.as_mut() {
            h.redirects = redirects;
        }
        if redirects > check.max_redirects {
            result.fail(Outcome::HttpError, format!("more than {} redirects", check.max_redirects));
            return None;
        }
        let Some(next) = join(&uri, &location) else {
            result.fail(Outcome::HttpError, format!("redirect to {location:?}, which is not a URL"));
            return None;
        };
        // As browsers do: 303 always, and 301/302 after a POST, continue with a GET and no body.
        if response.status == 303 || (matches!(response.status, 301 | 302) && method == Method::POST) {
            method = Method::GET;
            body = None;
        }
        uri = next;
    }
}

/// One request on one new connection.
async fn hop(
    check: &HttpCheck,
    uri: &Uri,
    method: &Method,
    body: Option<&str>,
    keep: bool,
    result: &mut ProbeResult,
) -> Option<(Response, Option<String>)> {
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        other => {
            result.fail(Outcome::HttpError, format!("scheme {other:?} is not http or https"));
            return None;
        }
    };
    let Some(host) = uri.host().map(str::to_owned) else {
        result.fail(Outcome::HttpError, format!("{uri}: no host"));
        return None;
    };
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let before = result.resolve;
    let addrs = net::resolve(&host, port, check.ip, result).await;
    let resolved = result.resolve - before;
    phases(result)[0] += resolved;
    let addrs = addrs?;

    let request = match request(check, uri, &host, method, body) {
        Ok(r) => r,
        Err(e) => {
            result.fail(Outcome::HttpError, format!("{uri}: {e}"));
            return None;
        }
    };
    let began = Instant::now();
    let stream = net::connect(&addrs, result).await;
    phases(result)[1] += began.elapsed();
    let stream = stream?;

    if let Some(h) = result.http.as_mut() {
        h.ssl = https;
    }
    if !https {
        return exchange(stream, request, keep, check.body_limit, result).await;
    }
    let began = Instant::now();
    let (handshake, seen) = check.tls.handshake(stream, &host).await;
    phases(result)[2] += began.elapsed();
    let invalid = seen.invalid.clone();
    result.tls = Some(seen);
    match handshake {
        Ok(stream) => {
            if let Some(reason) = invalid {
                // Accepted only because the probe is `insecure`: still worth saying why.
                result.detail = reason;
            }
            exchange(stream, request, keep, check.body_limit, result).await
        }
        Err(e) => {
            match invalid {
                Some(reason) => result.fail(Outcome::CertInvalid, reason),
                None => result.fail(Outcome::TlsFailed, e),
            }
            None
        }
    }
}

/// The request for one hop. Header names and values were checked when the config was read.
fn request(
    check: &HttpCheck,
    uri: &Uri,
    host: &str,
    method: &Method,
    body: Option<&str>,
) -> Result<Request<Full<Bytes>>, hyper::http::Error> {
    let authority = uri.authority().map_or(host, |a| a.as_str());
    let mut builder = Request::builder()
        .method(method.clone())
        .uri(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(HOST, authority)
        .header(USER_AGENT, AGENT)
        .header(CONNECTION, "close");
    for (name, value) in &check.headers {
        // `header` appends; a configured header replaces the default of the same name.
        if let Some(headers) = builder.headers_mut() {
            if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
                headers.remove(&name);
            }
        }
        builder = builder.header(name.as_str(), value.as_str());
    }
    builder.body(Full::new(Bytes::from(body.unwrap_or_default().to_owned())))
}

fn phases(result: &mut ProbeResult) -> &mut super::result::Phases {
    &mut result.http.get_or_insert_with(HttpResult::default).phases
}

/// Aborts the connection's driver task when the exchange ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn exchange<Io>(
    io: Io,
    request: Request<Full<Bytes>>,
    keep: bool,
    limit: usize,
    result: &mut ProbeResult,
) -> Option<(Response, Option<String>)>
where
    Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let began = Instant::now();
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(io)).await {
        Ok(pair) => pair,
        Err(e) => {
            result.fail(Outcome::HttpError, e.to_string());
            return None;
        }
    };
    let _driver = AbortOnDrop(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let response = sender.send_request(request).await;
    phases(result)[3] += began.elapsed();
    let response = match response {
        Ok(r) => r,
        Err(e) => {
            result.fail(Outcome::HttpError, e.to_string());
            return None;
        }
    };
    let began = Instant::now();
    let status = response.status().as_u16();
    let header = |name| response.headers().get(name).and_then(|v: &HeaderValue| v.to_str().ok()).map(str::to_owned);
    let location = header(LOCATION);
    let content_type = header(CONTENT_TYPE);
    let version = match response.version() {
        Version::HTTP_09 => 0.9,
        Version::HTTP_10 => 1.0,
        Version::HTTP_2 => 2.0,
        Version::HTTP_3 => 3.0,
        _ => 1.1,
    };
    let mut body = response.into_body();
    let mut kept = Vec::new();
    let mut bytes = 0u64;
    let mut failed = None;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                let Ok(data) = frame.into_data() else { continue };
                bytes += data.len() as u64;
                if bytes > limit as u64 {
                    failed = Some(format!("body larger than the limit of {limit} bytes"));
                    break;
                }
                if keep {
                    kept.extend_from_slice(&data);
                }
            }
            Err(e) => {
                failed = Some(format!("reading the body: {e}"));
                break;
            }
        }
    }
    phases(result)[4] += began.elapsed();
    if let Some(h) = result.http.as_mut() {
        h.status = status;
        h.version = version;
        h.body_bytes = bytes;
    }
    if let Some(e) = failed {
        result.fail(Outcome::HttpError, e);
        return None;
    }
    Some((Response { status, content_type, body: kept }, location))
}

/// Resolves a `Location` against the URL it came from.
pub fn join(base: &Uri, location: &str) -> Option<Uri> {
    let location = location.trim();
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.parse().ok();
    }
    let scheme = base.scheme_str()?;
    if let Some(rest) = location.strip_prefix("//") {
        return format!("{scheme}://{rest}").parse().ok();
    }
    let authority = base.authority()?.as_str();
    if location.starts_with('/') {
        return format!("{scheme}://{authority}{location}").parse().ok();
    }
    let path = base.path();
    let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
    let dir = if dir.is_empty() { "/" } else { dir };
    format!("{scheme}://{authority}{dir}{location}").parse().ok()
}

/// The first failed body assertion, described.
fn assertions(check: &HttpCheck, body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    if let Some(re) = check.body_matches.iter().find(|re| !re.is_match(&text)) {
        return Some(format!("body does not match {:?}", re.as_str()));
    }
    if let Some(re) = check.body_not_matches.iter().find(|re| re.is_match(&text)) {
        return Some(format!("body matches {:?}", re.as_str()));
    }
    if check.json.is_empty() {
        return None;
    }
    let value: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return Some(format!("body is not JSON: {e}")),
    };
    for assert in &check.json {
        let nodes = assert.path.query(&value).all();
        match &assert.equals {
            None if nodes.is_empty() => return Some(format!("{} selects nothing", assert.text)),
            Some(want) if nodes.is_empty() || nodes.iter().any(|n| *n != want) => {
                let got: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
                return Some(format!("{} is [{}], not {want}", assert.text, got.join(", ")));
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_headers_replace_the_defaults_once() {
        let tls = crate::probe::tls::TlsContext::new(None, false).unwrap();
        let mut check = HttpCheck::get("http://app.test:8080/x?y=1".into(), tls);
        check.headers = vec![("User-Agent".into(), "probe/1".into()), ("X-Env".into(), "dev".into())];
        let uri: Uri = check.url.parse().unwrap();
        let r = request(&check, &uri, "app.test", &Method::GET, None).unwrap();
        let all =
            |name: &str| r.headers().get_all(name).iter().map(|v| v.to_str().unwrap().to_owned()).collect::<Vec<_>>();
        assert_eq!(all("user-agent"), ["probe/1"]);
        assert_eq!(
            (all("host"), all("x-env"), all("connection")),
            (vec!["app.test:8080".to_owned()], vec!["dev".to_owned()], vec!["close".to_owned()])
        );
        assert_eq!(r.uri(), "/x?y=1");
    }

    #[test]
    fn locations_resolve_against_their_base() {
        let base: Uri = "https://app.test:8443/a/b?x=1".parse().unwrap();
        let join = |l: &str| join(&base, l).unwrap().to_string();
        assert_eq!(join("/login"), "https://app.test:8443/login");
        assert_eq!(join("c?y=2"), "https://app.test:8443/a/c?y=2");
        assert_eq!(join("//other.test/p"), "https://other.test/p");
        assert_eq!(join("http://plain.test/"), "http://plain.test/");
    }
}
