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
