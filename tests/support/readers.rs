//! API readers for the fleet test and benchmark: clients reading hosts, one host, endpoints and
//! a history series as fast as they are answered, one of them also scraping `/metrics`, recording
//! latencies and how old a host's newest sample was when an answer first showed it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::{http_get_at, Aggregator};

/// How often the first reader scrapes `/metrics`, as a Prometheus would.
const SCRAPE_EVERY: Duration = Duration::from_secs(15);

/// API clients reading hosts, one host, endpoints and a history series in turn, as fast as they
/// are answered (or each waiting `pause` between requests, as a dashboard polls); the first also
/// scrapes `/metrics` every [`SCRAPE_EVERY`].
pub struct Readers {
    pub answered: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    latencies_ms: Arc<Mutex<Vec<f64>>>,
    /// Sample to answer: each time a host's answer shows a newer sample, how old it was then (ms).
    /// An upper bound, to within a reader's round of requests.
    visible_ms: Arc<Mutex<Vec<f64>>>,
    /// How long each `/metrics` scrape took (ms).
    scrape_ms: Arc<Mutex<Vec<f64>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Readers {
    pub fn start(agg: &Aggregator, ids: &[String], n: usize) -> Readers {
        Readers::paced(agg, ids, n, Duration::ZERO)
    }

    /// `n` readers, each waiting `pause` after every answer.
    pub fn paced(agg: &Aggregator, ids: &[String], n: usize, pause: Duration) -> Readers {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        let latencies_ms = Arc::new(Mutex::new(Vec::new()));
        let visible_ms = Arc::new(Mutex::new(Vec::new()));
        let scrape_ms = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..n)
            .map(|r| {
                let (stop, answered, latencies) = (stop.clone(), answered.clone(), latencies_ms.clone());
                let (visible, scrapes) = (visible_ms.clone(), scrape_ms.clone());
                let (addr, token) = (agg.http_addr(), agg.token.clone());
                let id = ids[r * 7 % ids.len()].clone();
                let paths = [
                    "/api/v1/hosts".to_owned(),
                    format!("/api/v1/hosts/{id}"),
                    "/api/v1/endpoints".to_owned(),
                    format!("/api/v1/hosts/{id}/metrics/node_load1"),
                ];
                std::thread::spawn(move || {
                    let mut newest = None;
                    let mut scraped: Option<Instant> = None;
                    for (i, path) in paths.iter().enumerate().cycle() {
                        if stop.load(Relaxed) {
                            return;
                        }
                        // The first reader also scrapes `/metrics` as a Prometheus would.
                        let due = r == 0 && scraped.is_none_or(|t| t.elapsed() >= SCRAPE_EVERY);
                        let path = if due { "/metrics" } else { path.as_str() };
                        if due {
                            scraped = Some(Instant::now());
                        }
                        if !pause.is_zero() {
                            std::thread::sleep(pause);
                        }
                        let started = Instant::now();
                        match http_get_at(addr, path, Some(&token)) {
                            Ok((200, body)) => {
                                let now = twinwatch_common::time::now_ms();
                                answered.fetch_add(1, Relaxed);
                                let ms = started.elapsed().as_secs_f64() * 1000.0;
                                if due {
                                    scrapes.lock().unwrap_or_else(|e| e.into_inner()).push(ms);
                                    continue;
                                }
                                latencies.lock().unwrap_or_else(|e| e.into_inner()).push(ms);
                                if i == 1 {
                                    let sampled = serde_json::from_str::<serde_json::Value>(&body)
                                        .ok()
                                        .and_then(|v| v["sampled_at_ms"].as_i64());
                                    if newest.is_some() && sampled.is_some() && sampled != newest {
                                        let age = (now - sampled.unwrap_or(now)) as f64;
                                        visible.lock().unwrap_or_else(|e| e.into_inner()).push(age);
                                    }
                                    newest = sampled.or(newest);
                                }
                            }
                            Ok((status, body)) if status != 503 && status != 0 => panic!("{path}: {status} {body}"),
                            // Down or starting: the watchdog decides whether that is a stall.
                            _ => std::thread::sleep(Duration::from_millis(50)),
                        }
                    }
                })
            })
            .collect();
        Readers { stop, answered, latencies_ms, visible_ms, scrape_ms, threads }
    }

    /// Takes the `/metrics` scrape times so far (ms), sorted.
    pub fn take_scrapes(&self) -> Vec<f64> {
        let mut v = std::mem::take(&mut *self.scrape_ms.lock().unwrap_or_else(|e| e.into_inner()));
        v.sort_by(f64::total_cmp);
        v
    }

    /// Takes the sample-to-answer ages seen so far (ms), sorted.
    pub fn take_visibility(&self) -> Vec<f64> {
        let mut v = std::mem::take(&mut *self.visible_ms.lock().unwrap_or_else(|e| e.into_inner()));
        v.sort_by(f64::total_cmp);
        v
    }

    /// Answers so far, and takes their latencies (ms), sorted.
    pub fn take_latencies(&self) -> Vec<f64> {
        let mut l = std::mem::take(&mut *self.latencies_ms.lock().unwrap_or_else(|e| e.into_inner()));
        l.sort_by(f64::total_cmp);
        l
    }

    /// Stops them; the latency of every answer, in ms, sorted.
    pub fn stop(self) -> Vec<f64> {
        self.stop.store(true, Relaxed);
        for t in self.threads {
            t.join().expect("a reader failed");
        }
        let mut l = self.latencies_ms.lock().unwrap_or_else(|e| e.into_inner()).clone();
        l.sort_by(f64::total_cmp);
        l
    }
}
