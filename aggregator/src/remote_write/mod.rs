//! Prometheus remote write 1.0: every stored sample, queued durably per remote and sent as
//! snappy-compressed protobuf to Prometheus, Mimir, Thanos Receive or anything else that
//! speaks it.
//!
//! # Layout
//! - [`proto`]: the hand-written `WriteRequest` encoding and its cutting into fragments.
//! - `queue`: one sled tree of fragments per remote, capped, oldest dropped first.
//! - `sender`: one task per remote: POST, then remove, retry with backoff, or reject.
//! - `stats`: counters and their Prometheus text.
//! - `config`: the `[[remote_write]]` sections.
//!
//! Ingest calls [`RemoteWrite::enqueue`] with the points it is storing, before the flush that
//! makes them durable, so the queue is exactly as durable as the store: **nothing here flushes**,
//! and nothing here reads the twin or the store.

pub(crate) mod config;
pub mod proto;
mod queue;
mod sender;
mod stats;

use std::collections::HashSet;
use std::sync::Arc;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::sync::{watch, Notify};

pub use config::RemoteWriteConfig;

use crate::counters::Counters;
use queue::Queue;
use stats::Stats;

/// One series' new points, labels already complete (`__name__`, `host`, `dc`, series labels).
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesPoints {
    pub labels: Vec<(String, String)>,
    /// `(milliseconds since the Unix epoch, value)`, oldest first.
    pub points: Vec<(i64, f64)>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteWriteError {
    #[error("remote write {name:?}: {key}: {message}")]
    Config { name: String, key: String, message: String },
    #[error("remote write {name:?}: HTTP client: {source}")]
    Client { name: String, source: reqwest::Error },
    #[error("remote write {name:?}: queue: {source}")]
    Queue { name: String, source: sled::Error },
}

/// Every configured remote: its queue, client and counters.
pub struct RemoteWrite {
    endpoints: Vec<Arc<Endpoint>>,
}

/// One remote, shared by [`RemoteWrite`] and its sender task.
struct Endpoint {
    name: String,
    config: RemoteWriteConfig,
    url: reqwest::Url,
    client: reqwest::Client,
    /// The configured extra headers.
    headers: HeaderMap,
    max_samples_per_send: usize,
    queue: Queue,
    stats: Stats,
    /// Told when entries are queued, so an idle sender starts at once.
    wake: Notify,
}

impl RemoteWrite {
    /// Opens (or creates) one durable queue per configured endpoint in `db` (trees named
    /// `remote_write/<name>`).
    pub fn open(db: &sled::Db, configs: &[RemoteWriteConfig]) -> Result<Arc<RemoteWrite>, RemoteWriteError> {
        let mut names = HashSet::new();
        let mut endpoints = Vec::with_capacity(configs.len());
        for config in configs {
            let name = config.name.clone();
            let invalid =
                |i: config::Invalid| RemoteWriteError::Config { name: name.clone(), key: i.key, message: i.message };
            config::validate(std::slice::from_ref(config)).map_err(invalid)?;
            if !names.insert(name.clone()) {
                return Err(invalid(config::Invalid { key: "remote_write.name".into(), message: "used twice".into() }));
            }
            let url = config.parsed_url().map_err(invalid)?;
            let mut headers = HeaderMap::new();
            for (k, v) in &config.headers {
                // Checked by `validate`; a failure here would be a bug there, not a panic here.
                if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) {
                    headers.insert(k, v);
                }
            }
            let client = reqwest::Client::builder()
                .timeout(config.timeout.0)
                .connect_timeout(config.timeout.0)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|source| RemoteWriteError::Client { name: name.clone(), source })?;
            let queue = Queue::open(db, &name, config.max_queue_bytes.0)
                .map_err(|source| RemoteWriteError::Queue { name: name.clone(), source })?;
            let counts = queue.counts();
            if counts.entries > 0 {
                tracing::info!(remote = %name, samples = counts.samples, bytes = counts.bytes, "remote write queue resumed");
            }
            endpoints.push(Arc::new(Endpoint {
                name,
                url,
                client,
                headers,
                max_samples_per_send: config.max_samples_per_send,
                queue,
                stats: Stats::default(),
                wake: Notify::new(),
                config: config.clone(),
            }));
        }
        Ok(Arc::new(RemoteWrite { endpoints }))
    }

    /// Appends to every endpoint's queue. Writes to sled but does NOT flush: the caller's next
    /// `db.flush` makes it durable.
    pub fn enqueue(&self, series: &[SeriesPoints]) -> Result<(), RemoteWriteError> {
        // Remotes with the same request size share one encoding.
        let mut encoded: Option<(usize, Vec<proto::Fragment>)> = None;
        for ep in &self.endpoints {
            let limit = ep.max_samples_per_send;
            if encoded.as_ref().is_none_or(|(l, _)| *l != limit) {
                encoded = Some((limit, proto::fragments(series, limit, sender::MAX_REQUEST_BYTES)));
            }
            let Some((_, fragments)) = &encoded else { continue };
            if fragments.is_empty() {
                return Ok(());
            }
            for f in fragments {
                ep.queue
                    .push(f.samples, &f.bytes)
                    .map_err(|source| RemoteWriteError::Queue { name: ep.name.clone(), source })?;
            }
            ep.wake.notify_one();
        }
        Ok(())
    }

    /// Starts one sender task per endpoint; they stop when `shutdown` turns true.
    pub fn spawn(self: &Arc<Self>, shutdown: watch::Receiver<bool>) {
        for ep in &self.endpoints {
            tokio::spawn(sender::run(ep.clone(), shutdown.clone()));
        }
    }
}

impl Counters for RemoteWrite {
    /// Appends this module's own metrics in Prometheus text format (per endpoint label `remote`).
    fn render_metrics(&self, out: &mut String) {
        let remotes: Vec<stats::Snapshot<'_>> = self
            .endpoints
            .iter()
            .map(|ep| stats::Snapshot { name: &ep.name, stats: &ep.stats, queue: ep.queue.counts() })
            .collect();
        stats::render(&remotes, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enqueue_fills_every_remote_and_open_refuses_bad_configs() {
        let dir = std::env::temp_dir().join(format!("twinwatch-rw-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let db = sled::Config::new().path(&dir).flush_every_ms(None).open().unwrap();
        let mut small = RemoteWriteConfig::new("small", "http://127.0.0.1:9/api/v1/write");
        small.max_samples_per_send = 2;
        // An https remote opens as well (rustls with the system's roots); it is never reached here.
        let tls = RemoteWriteConfig::new("tls", "https://127.0.0.1:9/api/v1/write");
        let configs = [RemoteWriteConfig::new("a", "http://127.0.0.1:9/api/v1/write"), small, tls];
        let rw = RemoteWrite::open(&db, &configs).unwrap();
        let series = SeriesPoints {
            labels: vec![("__name__".into(), "m".into()), ("host".into(), "h".into())],
            points: vec![(1, 1.0), (2, 2.0), (3, 3.0)],
        };
        rw.enqueue(&[series]).unwrap();
        rw.enqueue(&[]).unwrap();
        let counts: Vec<_> =
            rw.endpoints.iter().map(|ep| (ep.queue.counts().samples, ep.queue.counts().entries)).collect();
        assert_eq!(counts, [(3, 1), (3, 2), (3, 1)]);
        let mut out = String::new();
        rw.render_metrics(&mut out);
        assert!(out.contains("twinwatch_remote_write_queue_samples{remote=\"small\"} 3\n"), "{out}");

        let twice = [configs[0].clone(), configs[0].clone()];
        let err = RemoteWrite::open(&db, &twice).err().unwrap().to_string();
        assert_eq!(err, "remote write \"a\": remote_write.name: used twice");
        let err = RemoteWrite::open(&db, &[RemoteWriteConfig::new("u", "localhost:9090")]).err().unwrap();
        assert!(matches!(err, RemoteWriteError::Config { ref key, .. } if key == "remote_write.url"), "{err}");
        drop(rw);
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Reads one HTTP/1.1 request from `stream`: the head, lower-cased, and the body.
    async fn read_request(stream: &mut tokio::net::TcpStream) -> (String, Vec<u8>) {
        use tokio::io::AsyncReadExt;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed mid-request");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse().unwrap())
            .expect("content-length");
        while buf.len() < head_end + length {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed mid-body");
            buf.extend_from_slice(&chunk[..n]);
        }
        (head, buf[head_end..].to_vec())
    }

    /// What goes on the wire: the protocol's headers, the configured auth and headers, and a
    /// snappy block of the encoded series.
    #[tokio::test]
    async fn a_request_carries_the_protocol_headers_auth_and_a_snappy_body() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut config = RemoteWriteConfig::new("wire", &format!("http://{}/push", listener.local_addr().unwrap()));
        config.basic_auth = Some(config::BasicAuth { username: "tw".into(), password: "secret".into() });
        config.headers.insert("X-Scope-OrgID".into(), "tenant-1".into());
        let dir = std::env::temp_dir().join(format!("twinwatch-rw-wire-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let db = sled::Config::new().path(&dir).flush_every_ms(None).open().unwrap();
        let rw = RemoteWrite::open(&db, &[config]).unwrap();
        let series = SeriesPoints {
            labels: vec![("host".into(), "h".into()), ("__name__".into(), "m".into())],
            points: vec![(1_700_000_000_000, 0.5)],
        };
        rw.enqueue(std::slice::from_ref(&series)).unwrap();
        let (stop_tx, stop) = watch::channel(false);
        rw.spawn(stop);

        let (mut stream, _) = listener.accept().await.unwrap();
        let (head, body) = read_request(&mut stream).await;
        stream.write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n").await.unwrap();
        assert!(head.starts_with("post /push http/1.1\r\n"), "{head}");
        for header in [
            "content-encoding: snappy\r\n",
            "content-type: application/x-protobuf\r\n",
            "x-prometheus-remote-write-version: 0.1.0\r\n",
            concat!("user-agent: twinwatch/", env!("CARGO_PKG_VERSION"), "\r\n"),
            "x-scope-orgid: tenant-1\r\n",
            // base64("tw:secret"), lower-cased with the rest of the head.
            "authorization: basic dhc6c2vjcmv0\r\n",
        ] {
            assert!(head.contains(header), "no {header:?} in\n{head}");
        }
        let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        let labels = vec![("__name__".to_owned(), "m".to_owned()), ("host".to_owned(), "h".to_owned())];
        assert_eq!(proto::tests::decode(&raw), vec![(labels, series.points.clone())]);
        for _ in 0..200 {
            if rw.endpoints[0].queue.counts().entries == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(rw.endpoints[0].queue.counts().entries, 0, "a 204 removes what it acknowledged");
        let _ = stop_tx.send(true);
        drop(rw);
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
