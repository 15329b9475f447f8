//! One remote's sender task: takes the oldest queued entries as a request, compresses it with
//! snappy, POSTs it, and settles it by the answer.
//!
//! - **2xx**: the entries are removed and their samples counted sent.
//! - **No answer, 5xx or 429**: the same entries are tried again after an exponential backoff
//!   with jitter ([`Backoff`]), each try counted as a retry. Nothing is dropped while waiting,
//!   except by the queue's own cap.
//! - **Any other 4xx** (Prometheus answers 400 to an out-of-order sample): the request can never
//!   succeed. A remote rejects a request whole, so one entry of replayed old samples would take
//!   the newer entries joined with it down too; a rejected request of several entries is
//!   therefore sent again one entry at a time, and only entries rejected on their own are dropped
//!   and counted rejected, with the remote's answer logged once per such entry.
//!
//! The task keeps no state that matters across a restart: the queue is the state.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderValue, CONTENT_ENCODING, CONTENT_TYPE, USER_AGENT};
use tokio::sync::watch;

use twinwatch_common::backoff::unit_random;
pub use twinwatch_common::backoff::Backoff;
use twinwatch_common::error_chain::error_chain;

use super::queue::Request;
use super::Endpoint;

/// The first retry delay and the longest.
const BACKOFF_BASE: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long an idle sender sleeps before looking at its queue again without being woken.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// Uncompressed request body bytes at most, besides the sample limit.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;
/// How much of a rejecting answer's body is logged.
const LOGGED_BODY: usize = 512;

/// What to do with a request after the remote's answer (`None`: no answer at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Sent,
    Retry,
    Reject,
}

pub fn verdict(status: Option<u16>) -> Verdict {
    match status {
        Some(200..=299) => Verdict::Sent,
        None | Some(429) | Some(500..=599) => Verdict::Retry,
        // 1xx and 3xx are not answers a write receiver gives (redirects are not followed): like
        // a 4xx, trying again would get the same.
        Some(_) => Verdict::Reject,
    }
}

/// An answer: the status, or why there was none; and the start of the body if it failed.
struct Answer {
    status: Option<u16>,
    detail: String,
}

/// Runs until `shutdown` turns true (or its sender is gone).
pub async fn run(ep: Arc<Endpoint>, mut shutdown: watch::Receiver<bool>) {
    let mut backoff = Backoff::new(BACKOFF_BASE, BACKOFF_MAX);
    // After a rejected request of several entries: its last key, up to which entries go alone.
    let mut alone_until: Option<u64> = None;
    let mut failing = false;
    while !*shutdown.borrow() {
        let max_entries = if alone_until.is_some() { 1 } else { usize::MAX };
        let request = match ep.queue.take(ep.max_samples_per_send as u64, MAX_REQUEST_BYTES, max_entries) {
            Ok(Some(request)) => request,
            Ok(None) => {
                alone_until = None;
                tokio::select! {
                    _ = ep.wake.notified() => {}
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                    changed = shutdown.changed() => if changed.is_err() { return },
                }
                continue;
            }
            Err(e) => {
                tracing::error!(remote = %ep.name, error = %e, "remote write queue unreadable");
                if !pause(&mut shutdown, backoff.next_delay(unit_random())).await {
                    return;
                }
                continue;
            }
        };
        let answer = tokio::select! {
            answer = post(&ep, &request) => answer,
            // Abandoned mid-request: the entries stay queued for the next run.
            _ = shutdown.wait_for(|stop| *stop) => {
                let _ = ep.queue.settle(&request, false);
                return;
            }
        };
        let verdict = verdict(answer.status);
        let settled = match verdict {
            Verdict::Sent => {
                ep.stats.sent(request.samples);
                backoff.reset();
                if failing {
                    tracing::info!(remote = %ep.name, "remote write delivering again");
                    failing = false;
                }
                ep.queue.settle(&request, true)
            }
            Verdict::Reject if request.entries > 1 => {
                tracing::debug!(remote = %ep.name, entries = request.entries, "rejected; sending its entries one by one");
                alone_until = Some(request.last);
                ep.queue.settle(&request, false)
            }
            Verdict::Reject => {
                ep.stats.rejected(request.samples);
                tracing::warn!(
                    remote = %ep.name, samples = request.samples, status = ?answer.status, answer = %answer.detail,
                    "remote write request rejected; its samples are dropped"
                );
                ep.queue.settle(&request, true)
            }
            Verdict::Retry => {
                ep.stats.retried();
                if !failing {
                    tracing::warn!(remote = %ep.name, status = ?answer.status, error = %answer.detail, "remote write failing; retrying with backoff");
                    failing = true;
                }
                ep.queue.settle(&request, false)
            }
        };
        if let Err(e) = settled {
            tracing::error!(remote = %ep.name, error = %e, "remote write queue not updated");
        }
        // The last entry of a rejected range settled: entries are joined again.
        if request.entries == 1 && verdict != Verdict::Retry && alone_until.is_some_and(|last| request.last >= last) {
            alone_until = None;
        }
        let delay = match verdict {
            Verdict::Retry => backoff.next_delay(unit_random()),
            _ => Duration::ZERO,
        };
        if !delay.is_zero() && !pause(&mut shutdown, delay).await {
            return;
        }
    }
}

/// Sleeps `delay` unless shutdown comes first; `false` if it did.
async fn pause(shutdown: &mut watch::Receiver<bool>, delay: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = shutdown.wait_for(|stop| *stop) => false,
    }
}

async fn post(ep: &Endpoint, request: &Request) -> Answer {
    let body = match snap::raw::Encoder::new().compress_vec(&request.body) {
        Ok(body) => body,
        // Only a body past snappy's 4 GiB limit fails, and a request is kept far below it.
        Err(e) => return Answer { status: Some(413), detail: format!("snappy: {e}") },
    };
    tracing::trace!(remote = %ep.name, samples = request.samples, raw = request.body.len(), compressed = body.len(), "remote write request");
    let mut builder = ep
        .client
        .post(ep.url.clone())
        .headers(ep.headers.clone())
        .header(CONTENT_ENCODING, HeaderValue::from_static("snappy"))
        .header(CONTENT_TYPE, HeaderValue::from_static("application/x-protobuf"))
        .header("X-Prometheus-Remote-Write-Version", HeaderValue::from_static("0.1.0"))
        .header(USER_AGENT, HeaderValue::from_static(concat!("twinwatch/", env!("CARGO_PKG_VERSION"))))
        .body(body);
    if let Some(token) = &ep.config.bearer_token {
        builder = builder.bearer_auth(token);
    }
    if let Some(auth) = &ep.config.basic_auth {
        builder = builder.basic_auth(&auth.username, Some(&auth.password));
    }
    match builder.send().await {
        Ok(response) => {
            let status = response.status();
            // Read to the end either way, so the connection can carry the next request.
            let text = response.text().await.unwrap_or_default();
            let detail = if status.is_success() { String::new() } else { truncate(text.trim(), LOGGED_BODY) };
            Answer { status: Some(status.as_u16()), detail }
        }
        Err(e) => Answer { status: None, detail: error_chain(&e) },
    }
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_decide_send_retry_or_reject() {
        assert_eq!(verdict(Some(200)), Verdict::Sent);
        assert_eq!(verdict(Some(204)), Verdict::Sent);
        for retry in [None, Some(429), Some(500), Some(503)] {
            assert_eq!(verdict(retry), Verdict::Retry, "{retry:?}");
        }
        for reject in [Some(400), Some(401), Some(404), Some(413), Some(302)] {
            assert_eq!(verdict(reject), Verdict::Reject, "{reject:?}");
        }
    }

    #[test]
    fn backoff_doubles_from_half_a_second_to_thirty_and_resets() {
        let mut b = Backoff::new(BACKOFF_BASE, BACKOFF_MAX);
        let ceilings: Vec<_> = (0..10).map(|_| b.next_delay(1.0).as_millis()).collect();
        assert_eq!(ceilings, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000]);
        b.reset();
        assert_eq!(b.next_delay(0.0), Duration::from_millis(250), "jitter takes at most half");
        assert_eq!(b.next_delay(0.5), Duration::from_millis(750));
        for _ in 0..100 {
            b.next_delay(0.3);
        }
        assert_eq!(b.next_delay(0.0), Duration::from_secs(15), "no overflow after many failures");
        let spread: std::collections::BTreeSet<_> = (0..50)
            .map(|_| Backoff::new(Duration::from_secs(1), BACKOFF_MAX).next_delay(unit_random()).as_micros())
            .collect();
        assert!(spread.len() > 25, "only {} distinct delays", spread.len());
    }

    /// A full request of node_exporter-like series: how big it is raw and sent.
    #[test]
    fn a_full_request_stays_small_once_compressed() {
        let series: Vec<super::super::SeriesPoints> = (0..500)
            .map(|i| super::super::SeriesPoints {
                labels: [
                    ("__name__", "node_cpu_seconds_total".to_owned()),
                    ("cpu", (i / 8).to_string()),
                    ("mode", ["idle", "user", "system", "iowait", "irq", "softirq", "steal", "nice"][i % 8].into()),
                    ("host", "web-01".into()),
                    ("dc", "fra1".into()),
                    ("instance", "web-01".into()),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
                points: (0..4).map(|p| (1_760_000_000_000 + p * 1000, 1234.56 + (i * 4 + p as usize) as f64)).collect(),
            })
            .collect();
        let fragments = super::super::proto::fragments(&series, 2000, MAX_REQUEST_BYTES);
        assert_eq!(fragments.len(), 1);
        let raw = &fragments[0].bytes;
        let sent = snap::raw::Encoder::new().compress_vec(raw).unwrap();
        println!("2000 samples: {} bytes encoded, {} bytes with snappy", raw.len(), sent.len());
        assert!(raw.len() < 200_000 && sent.len() < raw.len() / 2, "{} -> {}", raw.len(), sent.len());
        assert_eq!(snap::raw::Decoder::new().decompress_vec(&sent).unwrap(), *raw);
    }

    #[test]
    fn long_answers_are_cut_on_a_character_boundary() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("ééé", 2), "éé...");
    }
}
