//! Probing while nobody answers. Sans-IO: the time and the state are passed in.
//!
//! - **Connecting** ([`Probing`]): a slot comes every `period` within the window; an attempt
//!   starts in a slot unless `max_pending` are already under way, and either way the next slot is
//!   a period later. So the loop wakes only for slots and finished attempts, never for a time
//!   already past: an agent probing an absent aggregator costs a handful of wake-ups a second.
//! - **Connected, but stalled** ([`next_poke`]): batches have waited [`STALL_AFTER`] for an ack.
//!   A killed and restarted aggregator answers any packet of a connection it no longer knows with
//!   a stateless reset, but only when a packet comes; between samples, and with QUIC's probe
//!   timeouts doubling, that could be a second or more. So the connection sends a small packet
//!   every [`POKE_EVERY`] until the ack comes or the session is given up: a few dozen packets of
//!   about 40 bytes per stall, and the restart is noticed within a fifth of a second.
//! - **Connected, stalled and silent** ([`standby_due`]): the connection has heard nothing at
//!   all for [`STANDBY_AFTER`] while batches wait. The pokes may not even leave: once enough is
//!   unacknowledged, QUIC's congestion control lets out only its own probe packets, seconds apart
//!   after a long outage. So fresh handshakes start on [`Probing`]'s schedule beside it; one that
//!   is answered while the old connection stays silent means the aggregator restarted (or the
//!   path changed), and the new connection takes over. An aggregator that is merely slow still
//!   acknowledges packets, so it never sees a standby handshake.

use std::time::{Duration, Instant};

/// Batches unacknowledged this long mean the path is gone or the aggregator restarted.
pub const STALL_AFTER: Duration = Duration::from_millis(500);
/// How often a stalled connection sends a packet.
pub const POKE_EVERY: Duration = Duration::from_millis(200);

/// When a connection whose oldest unacknowledged batch was sent (or last acknowledged progress
/// made) at `waiting_since` should next send a packet, the last one sent at `last_poke`; `None`
/// with nothing waiting for an ack.
pub fn next_poke(waiting_since: Option<Instant>, last_poke: Option<Instant>) -> Option<Instant> {
    let stalled = waiting_since? + STALL_AFTER;
    Some(last_poke.map_or(stalled, |p| stalled.max(p + POKE_EVERY)))
}

/// A connection that has heard nothing for this long while batches wait dials a standby.
pub const STANDBY_AFTER: Duration = Duration::from_secs(1);

/// Whether a standby handshake should be under way at `now`, for a connection whose batches have
/// waited since `waiting_since` (`None`: nothing waits) and which last received a packet at
/// `heard_at`.
pub fn standby_due(waiting_since: Option<Instant>, heard_at: Instant, now: Instant) -> bool {
    waiting_since.is_some_and(|w| now >= w.max(heard_at) + STANDBY_AFTER)
}

#[derive(Debug, Clone)]
pub struct Probing {
    period: Duration,
    max_pending: usize,
    deadline: Instant,
    next: Instant,
}

impl Probing {
    /// A window of `window` from `now`, its first slot at once.
    pub fn new(now: Instant, window: Duration, period: Duration, max_pending: usize) -> Self {
        Probing { period, max_pending, deadline: now + window, next: now }
    }

    /// At a wake-up: whether to start an attempt now, with `pending` under way.
    pub fn start_attempt(&mut self, now: Instant, pending: usize) -> bool {
        if now < self.next || now >= self.deadline {
            return false;
        }
        self.next = now + self.period;
        pending < self.max_pending
    }

    /// When the next slot is due, after [`Probing::start_attempt`] at `now`; `None` once the
    /// window has closed (only the pending attempts are awaited then).
    pub fn next_slot(&self, now: Instant) -> Option<Instant> {
        (now < self.deadline && self.next < self.deadline).then_some(self.next.max(now + Duration::from_millis(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a window against a path where every attempt times out after `timeout`, the way the
    /// shipper's loop does, and returns (attempts started, wake-ups).
    fn simulate(timeout: Duration) -> (usize, usize) {
        let t0 = Instant::now();
        let mut p = Probing::new(t0, Duration::from_secs(30), Duration::from_secs(1), 4);
        let mut pending: Vec<Instant> = Vec::new();
        let (mut started, mut wakes) = (0, 0);
        let mut now = t0;
        loop {
            pending.retain(|&end| end > now);
            if p.start_attempt(now, pending.len()) {
                pending.push(now + timeout);
                started += 1;
            }
            let wake = match (p.next_slot(now), pending.iter().min()) {
                (Some(slot), Some(&end)) => slot.min(end),
                (Some(slot), None) => slot,
                (None, Some(&end)) => end,
                (None, None) => break,
            };
            assert!(wake > now, "a wake-up at {:?} for a time already past", now - t0);
            now = wake;
            wakes += 1;
            assert!(wakes < 1000, "the loop spins");
        }
        (started, wakes)
    }

    #[test]
    fn a_full_set_of_attempts_does_not_spin() {
        // Attempts outlast four slots: the set fills and later slots pass without one.
        let (started, wakes) = simulate(Duration::from_secs(8));
        assert!((4..=30).contains(&started), "{started}");
        // One wake-up per slot and per ended attempt, no more.
        assert!(wakes <= 30 + started, "{wakes} wake-ups");
    }

    #[test]
    fn quick_failures_start_one_attempt_a_slot() {
        let (started, wakes) = simulate(Duration::from_millis(300));
        assert_eq!(started, 30);
        assert!(wakes <= 60, "{wakes}");
    }

    #[test]
    fn a_stalled_connection_is_poked_steadily_and_an_answered_one_never() {
        let t0 = Instant::now();
        assert_eq!(next_poke(None, Some(t0)), None, "nothing in flight: nothing to poke");
        assert_eq!(next_poke(Some(t0), None), Some(t0 + STALL_AFTER));
        // Simulated: a batch waits from t0 with no ack for 15 s; count the pokes.
        let (mut now, mut last, mut pokes) = (t0, None, 0);
        while let Some(at) = next_poke(Some(t0), last).filter(|at| *at < t0 + Duration::from_secs(15)) {
            assert!(at > now || pokes == 0);
            now = at;
            last = Some(at);
            pokes += 1;
        }
        assert_eq!(pokes, 73, "one every {POKE_EVERY:?} from {STALL_AFTER:?} on");
        // An ack moves `waiting_since`: the next poke waits for a fresh stall.
        let acked = now + Duration::from_millis(10);
        assert_eq!(next_poke(Some(acked), last), Some(acked + STALL_AFTER));
    }

    #[test]
    fn a_standby_is_dialled_only_for_a_silent_connection_with_batches_waiting() {
        let t0 = Instant::now();
        let later = |ms| t0 + Duration::from_millis(ms);
        assert!(!standby_due(None, t0, later(60_000)), "nothing waits: silence is just idleness");
        assert!(!standby_due(Some(t0), t0, later(999)));
        assert!(standby_due(Some(t0), t0, later(1000)));
        // Packets still arrive (a slow aggregator acknowledges at the transport level).
        assert!(!standby_due(Some(t0), later(900), later(1500)));
        assert!(standby_due(Some(t0), later(900), later(1900)));
        // A batch sent after a long quiet spell is waited on for the full time first.
        assert!(!standby_due(Some(later(5000)), t0, later(5500)));
    }

    #[test]
    fn no_slot_after_the_window() {
        let t0 = Instant::now();
        let mut p = Probing::new(t0, Duration::from_secs(3), Duration::from_secs(1), 4);
        assert!(p.start_attempt(t0, 0));
        assert!(!p.start_attempt(t0 + Duration::from_millis(500), 1), "not before the next slot");
        let late = t0 + Duration::from_secs(3);
        assert!(!p.start_attempt(late, 0));
        assert_eq!(p.next_slot(late), None);
    }
}
