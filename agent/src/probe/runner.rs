//! Runs probes: one task per probe, on its schedule, under the global concurrency cap.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Semaphore};
use twinwatch_common::probe::Outcome;

use super::definition::{Check, ProbeDef};
use super::result::ProbeResult;
use super::schedule::{Jitter, Schedule};
use super::table::Table;
use super::{http, net};
use crate::sampler::now_ms;

/// Runs one check once, within its timeout.
pub async fn run_once(def: &ProbeDef) -> ProbeResult {
    let mut result = ProbeResult::new(now_ms());
    let began = Instant::now();
    let check = async {
        match &def.check {
            Check::Http(h) => http::probe(h, &mut result).await,
            Check::Tcp { target, ip } => net::tcp(target, *ip, &mut result).await,
            Check::Dns { name, ip } => net::dns(name, *ip, &mut result).await,
            Check::Tls { target, ip, tls } => net::tls(target, *ip, tls, &mut result).await,
        }
    };
    // The check borrows `result` and keeps what it measured so far, so a timeout still reports
    // the phases that completed.
    let timed_out = tokio::time::timeout(def.timeout, check).await.is_err();
    if timed_out {
        result.fail(Outcome::Timeout, format!("no answer within {:?}", def.timeout));
    }
    result.duration = began.elapsed();
    result
}

/// Runs `def` on its schedule until `stop` turns true, writing each result to `table`.
pub async fn run_forever(def: ProbeDef, table: Arc<Table>, permits: Arc<Semaphore>, mut stop: watch::Receiver<bool>) {
    let epoch = tokio::time::Instant::now();
    let interval = def.interval.as_millis() as u64;
    let mut schedule = Schedule::new(&def.id, interval, def.jitter.as_millis() as u64);
    let mut jitter = Jitter::new(now_ms() as u64 ^ ((std::process::id() as u64) << 32) ^ interval);
    let (mut runs, mut skipped) = (0u64, 0u64);
    loop {
        let now = epoch.elapsed().as_millis() as u64;
        let slot = schedule.next(now, jitter.next_u64());
        skipped += slot.skipped;
        let at = epoch + Duration::from_millis(slot.at_ms);
        tokio::select! {
            _ = tokio::time::sleep_until(at) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        // A run waits for a permit only until its slot ends; then the beat is skipped.
        let until = epoch + Duration::from_millis(slot.until_ms);
        let permit = tokio::select! {
            p = tokio::time::timeout_at(until, permits.clone().acquire_owned()) => p,
            _ = stop.wait_for(|s| *s) => return,
        };
        let Ok(Ok(_permit)) = permit else {
            skipped += 1;
            continue;
        };
        let result = tokio::select! {
            r = run_once(&def) => r,
            _ = stop.wait_for(|s| *s) => return,
        };
        runs += 1;
        if result.outcome != Outcome::Success {
            tracing::debug!(endpoint = %def.id, outcome = result.outcome.as_str(), "{}", result.detail);
        }
        let mut metrics = Vec::with_capacity(32);
        result.metrics(&def, runs, skipped, &mut metrics);
        table.put(&def.id, metrics);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that accepts connections and never answers: every HTTP probe of it runs until
    /// its timeout.
    async fn silent_server() -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        (format!("http://{addr}/"), task)
    }

    fn probe(id: &str, url: &str) -> ProbeDef {
        let tls = crate::probe::tls::TlsContext::new(None, false).unwrap();
        let check = crate::probe::definition::HttpCheck::get(url.into(), tls);
        ProbeDef {
            id: id.into(),
            interval: Duration::from_millis(400),
            timeout: Duration::from_millis(400),
            jitter: Duration::ZERO,
            check: Check::Http(Box::new(check)),
            info: Vec::new(),
        }
    }

    fn counter(table: &Table, id: &str, name: &str) -> f64 {
        let mut out = Vec::new();
        table.emit(&mut 0, true, &mut out);
        out.iter().find(|m| m.key.name == name && m.key.label("endpoint") == Some(id)).map_or(0.0, |m| m.real())
    }

    #[tokio::test]
    async fn slow_probes_under_a_cap_of_one_skip_beats_instead_of_stacking() {
        let (url, server) = silent_server().await;
        let table = Arc::new(Table::default());
        let permits = Arc::new(Semaphore::new(1));
        let (stop_tx, stop) = watch::channel(false);
        let ids = ["a", "b"];
        for id in ids {
            tokio::spawn(run_forever(probe(id, &url), table.clone(), permits.clone(), stop.clone()));
        }
        // Each run holds the only permit for its whole 400 ms timeout, and each probe wants one
        // run per 400 ms: twice what the cap allows over 2 s.
        tokio::time::sleep(Duration::from_millis(2000)).await;
        let _ = stop_tx.send(true);
        let runs: f64 = ids.iter().map(|id| counter(&table, id, "twinwatch_probe_runs_total")).sum();
        let skipped: f64 = ids.iter().map(|id| counter(&table, id, "twinwatch_probe_skipped_total")).sum();
        assert!(runs <= 5.0, "at most one 400 ms run at a time fits 2 s: {runs}");
        assert!(runs >= 2.0 && skipped >= 1.0, "runs {runs}, skipped {skipped}");
        let mut out = Vec::new();
        table.emit(&mut 0, true, &mut out);
        assert!(out
            .iter()
            .any(|m| m.key.name == "twinwatch_probe_result_info" && m.key.label("outcome") == Some("timeout")));
        server.abort();
    }
}
