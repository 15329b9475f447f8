//! `twinwatch-aggregator status`: asks an aggregator's REST API (local or remote, with a read
//! token) for its hosts, endpoints and their history, and prints them as a tree (`tree.rs`).
//!
//! Requests run a few at a time; a host or endpoint that vanishes between the list and its
//! detail is left out, and a trend the history cannot give (no data in the window before) is
//! simply not shown. No answer, or 401, is an error that says which.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::tree::{Snapshot, TrendKey};
use twinwatch_common::error_chain::error_chain as chain;

/// Largest answer read from the API.
const MAX_BODY: usize = 64 << 20;
/// Requests in flight at once.
const PARALLEL: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("{url}: no answer: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("{url}: 401 unauthorized: {detail} (pass a read token with --token or --token-file)")]
    Unauthorized { url: String, detail: String },
    #[error("{url}: {status}: {detail}")]
    Http { url: String, status: u16, detail: String },
    #[error("{url}: not JSON: {detail}")]
    BadJson { url: String, detail: String },
    #[error("CA certificate {}: {detail}", path.display())]
    Ca { path: PathBuf, detail: String },
    #[error("HTTP client: {0}")]
    Client(String),
}

/// Where to ask, and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// The API's base, e.g. `https://aggregator.example.net:8080`.
    pub url: String,
    pub token: String,
    /// Trust this CA (PEM) besides the system's.
    pub ca: Option<PathBuf>,
    /// Trends compare this window before now with the one before it.
    pub window: Duration,
    pub window_text: String,
    pub timeout: Duration,
}

/// Path segments as the URL needs them.
fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

struct Api {
    client: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    /// `GET path` as JSON; `Ok(None)` for 404.
    async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Option<Value>, StatusError> {
        let full = format!("{}{path}", self.base);
        // Errors name the URL without a password it may carry; reqwest's own errors lose theirs.
        let url = twinwatch_common::redact::url(&full).into_owned();
        let response = self
            .client
            .get(&full)
            .bearer_auth(&self.token)
            .query(query)
            .send()
            .await
            .map_err(|e| StatusError::Unreachable { url: url.clone(), detail: chain(&e.without_url()) })?;
        let status = response.status().as_u16();
        let mut response = response;
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| StatusError::Unreachable { url: url.clone(), detail: chain(&e.without_url()) })?
        {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(StatusError::BadJson { url, detail: format!("answer larger than {MAX_BODY} bytes") });
            }
            body.extend_from_slice(&chunk);
        }
        let detail = || {
            serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["detail"].as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect())
        };
        match status {
            200 => {
                serde_json::from_slice(&body).map(Some).map_err(|e| StatusError::BadJson { url, detail: e.to_string() })
            }
            404 => Ok(None),
            401 => Err(StatusError::Unauthorized { url, detail: detail() }),
            status => Err(StatusError::Http { url, status, detail: detail() }),
        }
    }
}

/// Runs `jobs` with at most [`PARALLEL`] in flight, keeping their order.
async fn all<T: Send + 'static>(
    jobs: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>>,
) -> Result<Vec<T>, StatusError> {
    let limit = Arc::new(tokio::sync::Semaphore::new(PARALLEL));
    let mut set = tokio::task::JoinSet::new();
    for (i, job) in jobs.into_iter().enumerate() {
        let limit = limit.clone();
        set.spawn(async move {
            let _permit = limit.acquire_owned().await;
            (i, job.await)
        });
    }
    let mut out: Vec<(usize, T)> = Vec::new();
    while let Some(done) = set.join_next().await {
        out.push(done.map_err(|e| StatusError::Client(e.to_string()))?);
    }
    out.sort_by_key(|(i, _)| *i);
    Ok(out.into_iter().map(|(_, t)| t).collect())
}

/// A trend to ask for: its key, the path under `/api/v1/hosts/`, the query, and the host's
/// memory total (for the memory trend).
type Ask = (TrendKey, String, Vec<(&'static str, String)>, f64);

type Job<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// `/api/v1/{kind}/{id}` of every id; one that is gone by now (404) is left out.
async fn details(api: &Arc<Api>, kind: &'static str, ids: Vec<String>) -> Result<Vec<Value>, StatusError> {
    let jobs = ids
        .iter()
        .map(|id| {
            let (api, path) = (api.clone(), format!("/api/v1/{kind}/{}", segment(id)));
            Box::pin(async move { api.get(&path, &[]).await }) as Job<_>
        })
        .collect();
    let answers = all(jobs).await?.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok(answers.into_iter().flatten().collect())
}

/// Everything [`super::tree::render`] needs, from the API at `opts.url`.
pub async fn snapshot(opts: &Options) -> Result<Snapshot, StatusError> {
    let mut client =
        reqwest::Client::builder().timeout(opts.timeout).connect_timeout(opts.timeout.min(Duration::from_secs(5)));
    if let Some(path) = &opts.ca {
        let pem = std::fs::read(path).map_err(|e| StatusError::Ca { path: path.clone(), detail: e.to_string() })?;
        let ca = reqwest::Certificate::from_pem(&pem)
            .map_err(|e| StatusError::Ca { path: path.clone(), detail: chain(&e) })?;
        client = client.add_root_certificate(ca);
    }
    let client = client.build().map_err(|e| StatusError::Client(chain(&e)))?;
    let api = Arc::new(Api { client, base: opts.url.trim_end_matches('/').to_owned(), token: opts.token.clone() });
    let now_ms = twinwatch_common::time::now_ms();

    let list = |v: Option<Value>| -> Vec<String> {
        v.and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|h| h["id"].as_str().map(str::to_owned))
            .collect()
    };
    let hosts = details(&api, "hosts", list(api.get("/api/v1/hosts", &[]).await?)).await?;
    let endpoints = details(&api, "endpoints", list(api.get("/api/v1/endpoints", &[]).await?)).await?;

    // Trend queries: (host, metric, extra parameters) and how to read each answer.
    let window_ms = opts.window.as_millis() as i64;
    let mut base = vec![
        ("from", format!("{:.3}", (now_ms - window_ms) as f64 / 1000.0)),
        ("to", format!("{:.3}", now_ms as f64 / 1000.0)),
        ("trend", "true".into()),
    ];
    if window_ms >= 3_600_000 {
        base.push(("step", format!("{}", (window_ms / 144 / 1000).max(60))));
    }
    let mut asks: Vec<Ask> = Vec::new();
    for h in &hosts {
        let Some(id) = h["id"].as_str() else { continue };
        let total = h["memory"]["total_bytes"].as_f64().unwrap_or(0.0);
        let mut rate = base.clone();
        rate.push(("rate", "true".into()));
        asks.push((TrendKey::Cpu(id.into()), format!("{id}/metrics/node_cpu_seconds_total"), rate, 0.0));
        asks.push((
            TrendKey::Memory(id.into()),
            format!("{id}/metrics/node_memory_MemAvailable_bytes"),
            base.clone(),
            total,
        ));
        asks.push((TrendKey::Load(id.into()), format!("{id}/metrics/node_load1"), base.clone(), 0.0));
    }
    for e in &endpoints {
        let Some(eid) = e["id"].as_str() else { continue };
        for v in e["vantages"].as_array().into_iter().flatten() {
            let Some(host) = v["host"].as_str() else { continue };
            let mut q = base.clone();
            q.push(("endpoint", eid.to_owned()));
            let (h, ep) = (host.to_owned(), eid.to_owned());
            asks.push((
                TrendKey::Latency(h.clone(), ep.clone()),
                format!("{host}/metrics/probe_duration_seconds"),
                q.clone(),
                0.0,
            ));
            asks.push((TrendKey::Success(h, ep), format!("{host}/metrics/probe_success"), q, 0.0));
        }
    }
    let jobs: Vec<Job<Option<(TrendKey, f64)>>> = asks
        .into_iter()
        .map(|(key, path, query, total)| {
            let api = api.clone();
            let path = format!("/api/v1/hosts/{}", path.split('/').map(segment).collect::<Vec<_>>().join("/"));
            Box::pin(async move {
                let history = api.get(&path, &query).await.ok()??;
                let change = match &key {
                    TrendKey::Cpu(_) => super::trend::cpu_change(&history),
                    TrendKey::Memory(_) => super::trend::used_memory_change(&history, total),
                    _ => super::trend::series_change(&history),
                };
                change.map(|c| (key, c))
            }) as Job<_>
        })
        .collect();
    let trends: BTreeMap<TrendKey, f64> = all(jobs).await?.into_iter().flatten().collect();

    Ok(Snapshot { url: opts.url.clone(), now_ms, window: opts.window_text.clone(), hosts, endpoints, trends })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(segment("shop.health"), "shop.health");
        assert_eq!(segment("a/b c?"), "a%2Fb%20c%3F");
    }
}
