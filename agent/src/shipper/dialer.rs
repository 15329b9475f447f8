//! Handshake attempts to the aggregator on [`Probing`]'s schedule, overlapping, the first to
//! finish winning: the tokio shell around the sans-IO schedule.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::backoff::Ended;
use super::probing::Probing;
use super::{ShipError, Shipper, ATTEMPT_TIMEOUT, MAX_ATTEMPTS, PROBE_EVERY};

/// Handshake attempts on [`Probing`]'s schedule, overlapping: the first to finish wins.
pub(crate) struct Dialer {
    addr: SocketAddr,
    probing: Probing,
    attempts:
        tokio::task::JoinSet<Result<Result<quinn::Connection, quinn::ConnectionError>, tokio::time::error::Elapsed>>,
}

impl Dialer {
    /// Attempts to `addr` for `window`, the first at once.
    pub(crate) fn new(addr: SocketAddr, window: Duration) -> Self {
        Dialer {
            addr,
            probing: Probing::new(std::time::Instant::now(), window, PROBE_EVERY, MAX_ATTEMPTS),
            attempts: tokio::task::JoinSet::new(),
        }
    }

    /// Starts an attempt when a slot is due, then waits for the next slot or finished attempt:
    /// a connection when a handshake finished, `None` when nothing came of it yet, an error when
    /// the aggregator answered with one, [`ShipError::ConnectTimeout`] once the window closed
    /// with nothing pending. Cancel-safe: the loop wakes only for a slot or a finished attempt.
    pub(crate) async fn next(&mut self, shipper: &Shipper) -> Result<Option<quinn::Connection>, ShipError> {
        let now = std::time::Instant::now();
        if self.probing.start_attempt(now, self.attempts.len()) {
            let connecting = shipper.endpoint.connect_with(shipper.client.clone(), self.addr, &shipper.server_name)?;
            self.attempts.spawn(tokio::time::timeout(ATTEMPT_TIMEOUT, connecting));
        }
        let slot = self.probing.next_slot(now);
        if self.attempts.is_empty() && slot.is_none() {
            return Err(ShipError::ConnectTimeout);
        }
        let slot = slot.map(Instant::from_std);
        tokio::select! {
            Some(done) = self.attempts.join_next() => match done {
                Ok(Ok(Ok(conn))) => Ok(Some(conn)),
                Ok(Ok(Err(e))) => {
                    let e = ShipError::from(e);
                    if e.ended() == Ended::Unanswered { Ok(None) } else { Err(e) }
                }
                _ => Ok(None), // that attempt timed out
            },
            _ = tokio::time::sleep_until(slot.unwrap_or_else(Instant::now)), if slot.is_some() => Ok(None),
        }
    }
}
