//! One connection's conversation with the aggregator, as decisions over time. Sans-IO: the shell
//! in `mod.rs` reads the buffer and the connection, tells this what happened and when, and does
//! what it is told; time is always passed in.
//!
//! - **Live first**: with a backlog at connect, the backlog stays closed until the live lane has
//!   opened (the keyframe of the present went out) or [`live_grace`] has passed.
//! - **The ack deadline**: batches unacknowledged for [`ACK_TIMEOUT`] end the connection,
//!   whatever QUIC thinks of it.
//! - **Pokes** ([`next_poke`]) while batches wait, and a **standby** handshake
//!   ([`standby_due`]) while the connection hears nothing at all. A standby connection replaces
//!   this one only if this one is still silent [`TAKEOVER_GRACE`] after the standby was
//!   answered: an aggregator that was only stalled (a slow disk, a busy machine) answers the
//!   old connection's waiting packets as soon as it answers the handshake, and keeps it.
//! - **Clock echoes**: the aggregator's clock, from an ack, is echoed at most once per
//!   [`ECHO_EVERY`].

use std::time::{Duration, Instant};

use super::probing::{next_poke, standby_due};

/// Batches in flight with no ack for this long mean the aggregator is gone, whatever QUIC thinks.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(15);
/// Clock echoes are sent at most this often.
pub const ECHO_EVERY: Duration = Duration::from_secs(1);
/// How long the old connection may still speak up after a standby handshake was answered.
pub const TAKEOVER_GRACE: Duration = Duration::from_millis(300);

/// How long the backlog waits for the live lane's first batch: two sample intervals and a second,
/// and at least [`MIN_LIVE_GRACE`], so a sampler that cannot deliver (stuck, or failing to
/// encode) never holds the history back for long.
pub fn live_grace(interval_ms: u32) -> Duration {
    (Duration::from_millis(u64::from(interval_ms)) * 2 + Duration::from_secs(1)).max(MIN_LIVE_GRACE)
}

/// The shortest live grace. A busy machine can take over a second to deliver a sample (one in
/// progress finishes before the keyframe is taken); holding a backlog, which is history, a few
/// seconds longer costs nothing, while sending it first leaves the twin stale until it is in.
pub const MIN_LIVE_GRACE: Duration = Duration::from_secs(5);

/// What a timer asks of the shell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Nothing to do but look again (the live grace ran out, or a timer came early).
    Nothing,
    /// Send a small packet the aggregator must answer.
    Poke,
    /// Batches waited [`ACK_TIMEOUT`]: give the connection up.
    GiveUp,
    /// The answered standby connection takes over: this one stayed silent.
    TakeOver,
}

/// What to do with the standby handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standby {
    /// Leave it as it is (under way or not).
    Keep,
    /// Start dialling one.
    Dial,
    /// Abandon it (and any connection it made): the connection hears again.
    Drop,
}

#[derive(Debug, Clone)]
pub struct Conversation {
    backlog_open: bool,
    live_by: Instant,
    /// The last ack, or the send that started a wait with nothing in flight.
    last_progress: Instant,
    /// Whether batches are in flight.
    waiting: bool,
    last_poke: Option<Instant>,
    /// The connection's count of received datagrams, and when it last changed.
    heard: u64,
    heard_at: Instant,
    /// The count when the standby under way was dialled, and when it was answered.
    standby: Option<(u64, Option<Instant>)>,
    last_echo: Instant,
}

impl Conversation {
    /// A conversation that began at `now` (the welcome and its echo done) with `backlog` batches
    /// waiting from earlier, the agent sampling every `interval_ms`, its connection having
    /// received `heard` datagrams.
    pub fn new(now: Instant, backlog: u64, interval_ms: u32, heard: u64) -> Self {
        Conversation {
            backlog_open: backlog == 0,
            live_by: now + live_grace(interval_ms),
            last_progress: now,
            waiting: false,
            last_poke: None,
            heard,
            heard_at: now,
            standby: None,
            last_echo: now,
        }
    }

    /// Whether backlog batches may go at `now`, given whether the live lane has opened.
    pub fn backlog_open(&mut self, live_opened: bool, now: Instant) -> bool {
        self.backlog_open = self.backlog_open || live_opened || now >= self.live_by;
        self.backlog_open
    }

    /// A batch was sent at `now`, leaving `in_flight` unacknowledged: the first into an empty
    /// window starts the wait for an ack.
    pub fn sent(&mut self, in_flight: usize, now: Instant) {
        if in_flight == 1 {
            self.last_progress = now;
        }
        self.waiting = in_flight > 0;
    }

    /// Acks arrived at `now`, leaving `in_flight` unacknowledged. Returns whether the
    /// aggregator's clock they carry is to be echoed (then it is counted as echoed).
    pub fn acked(&mut self, in_flight: usize, now: Instant) -> bool {
        self.last_progress = now;
        self.waiting = in_flight > 0;
        let echo = now.saturating_duration_since(self.last_echo) >= ECHO_EVERY;
        if echo {
            self.last_echo = now;
        }
        echo
    }

    /// The connection had received `datagrams` in all at `now`.
    pub fn heard(&mut self, datagrams: u64, now: Instant) {
        if datagrams != self.heard {
            (self.heard, self.heard_at) = (datagrams, now);
        }
    }

    /// What to do with the standby handshake at `now`.
    pub fn standby(&mut self, now: Instant) -> Standby {
        match self.standby {
            Some((at, _)) if at != self.heard => {
                self.standby = None;
                Standby::Drop
            }
            Some(_) => Standby::Keep,
            None if standby_due(self.waiting_since(), self.heard_at, now) => {
                self.standby = Some((self.heard, None));
                Standby::Dial
            }
            None => Standby::Keep,
        }
    }

    /// The standby handshake was answered at `now`; the fresh connection waits for
    /// [`Due::TakeOver`] (or [`Standby::Drop`]).
    pub fn standby_answered(&mut self, now: Instant) {
        if let Some((_, answered)) = &mut self.standby {
            *answered = Some(now);
        }
    }

    /// The standby's attempts ran out unanswered.
    pub fn standby_ended(&mut self) {
        self.standby = None;
    }

    /// When a timer is next due: a poke, the ack deadline, or the end of the live grace.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let poke = next_poke(self.waiting_since(), self.last_poke);
        let deadline = self.waiting.then_some(self.last_progress + ACK_TIMEOUT);
        let grace = (!self.backlog_open).then_some(self.live_by);
        let takeover = self.standby.and_then(|(_, answered)| answered).map(|at| at + TAKEOVER_GRACE);
        [poke, deadline, grace, takeover].into_iter().flatten().min()
    }

    /// A timer fired at `now`.
    pub fn handle_timeout(&mut self, now: Instant) -> Due {
        if let Some((at, Some(answered))) = self.standby {
            if at == self.heard && now >= answered + TAKEOVER_GRACE {
                self.standby = None;
                return Due::TakeOver;
            }
        }
        if self.waiting && now >= self.last_progress + ACK_TIMEOUT {
            return Due::GiveUp;
        }
        match next_poke(self.waiting_since(), self.last_poke) {
            Some(at) if at <= now => {
                self.last_poke = Some(now);
                Due::Poke
            }
            _ => Due::Nothing,
        }
    }

    fn waiting_since(&self) -> Option<Instant> {
        self.waiting.then_some(self.last_progress)
    }
}

#[cfg(test)]
mod tests {
    use super::super::probing::{POKE_EVERY, STALL_AFTER, STANDBY_AFTER};
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Runs the timers from `from` to `until`, the way the shell does, and returns what came due.
    fn run_timers(c: &mut Conversation, from: Instant, until: Instant) -> Vec<(Duration, Due)> {
        let (mut now, mut seen) = (from, Vec::new());
        while let Some(at) = c.poll_timeout().filter(|at| *at <= until) {
            assert!(seen.len() < 1000, "the timers spin");
            now = at.max(now);
            let due = c.handle_timeout(now);
            seen.push((now - from, due));
            if due == Due::GiveUp {
                break;
            }
        }
        seen
    }

    #[test]
    fn the_backlog_waits_for_the_live_lane_or_the_grace() {
        let t0 = Instant::now();
        let mut c = Conversation::new(t0, 40, 1000, 0);
        assert!(!c.backlog_open(false, t0 + ms(100)), "a backlog waits for the present");
        assert_eq!(c.poll_timeout(), Some(t0 + live_grace(1000)), "and wakes when the grace ends");
        assert!(c.backlog_open(true, t0 + ms(150)), "the live lane opened: the backlog follows");
        assert!(c.backlog_open(false, t0 + ms(151)), "and stays open");

        let mut stuck = Conversation::new(t0, 40, 1000, 0);
        assert!(!stuck.backlog_open(false, t0 + live_grace(1000) - ms(1)));
        assert!(stuck.backlog_open(false, t0 + live_grace(1000)), "a stuck sampler holds nothing back");
        assert!(Conversation::new(t0, 0, 1000, 0).backlog_open(false, t0), "no backlog: nothing to hold");

        // A fast interval still waits the minimum for a sample a busy machine is finishing.
        assert_eq!(live_grace(100), MIN_LIVE_GRACE);
        let mut fast = Conversation::new(t0, 40, 100, 0);
        assert!(!fast.backlog_open(false, t0 + MIN_LIVE_GRACE - ms(1)));
        assert!(fast.backlog_open(false, t0 + MIN_LIVE_GRACE));
    }

    #[test]
    fn an_answered_connection_is_never_poked_nor_given_up() {
        let t0 = Instant::now();
        let mut c = Conversation::new(t0, 0, 1000, 0);
        // A batch a second, each acked 20 ms later, for a minute.
        for s in 0..60 {
            let sent = t0 + Duration::from_secs(s);
            c.sent(1, sent);
            assert_eq!(run_timers(&mut c, sent, sent + ms(20)), vec![]);
            c.heard(s + 1, sent + ms(20));
            c.acked(0, sent + ms(20));
            assert_eq!(c.standby(sent + ms(20)), Standby::Keep);
            assert_eq!(c.poll_timeout(), None, "nothing waits: no timer at all");
        }
    }

    #[test]
    fn a_stalled_connection_is_poked_then_given_up() {
        let t0 = Instant::now();
        let mut c = Conversation::new(t0, 0, 1000, 0);
        c.sent(1, t0);
        let seen = run_timers(&mut c, t0, t0 + ms(30_000));
        let pokes: Vec<Duration> = seen.iter().filter(|(_, d)| *d == Due::Poke).map(|(t, _)| *t).collect();
        assert_eq!(pokes.first(), Some(&STALL_AFTER));
        assert!(pokes.windows(2).all(|w| w[1] - w[0] == POKE_EVERY), "{pokes:?}");
        assert_eq!(seen.last(), Some(&(ACK_TIMEOUT, Due::GiveUp)));
        // Later batches do not move the deadline: only an ack does.
        let mut c = Conversation::new(t0, 0, 1000, 0);
        c.sent(1, t0);
        c.sent(2, t0 + ms(10_000));
        assert_eq!(c.handle_timeout(t0 + ACK_TIMEOUT), Due::GiveUp);
    }

    #[test]
    fn an_ack_moves_the_deadline_and_stops_the_pokes() {
        let t0 = Instant::now();
        let mut c = Conversation::new(t0, 0, 1000, 0);
        c.sent(1, t0);
        c.sent(2, t0 + ms(100));
        assert_eq!(c.handle_timeout(t0 + ms(600)), Due::Poke);
        c.acked(1, t0 + ms(700));
        assert_eq!(c.poll_timeout(), Some(t0 + ms(700) + STALL_AFTER), "a fresh stall is waited for");
        assert_eq!(c.handle_timeout(t0 + ms(700) + ACK_TIMEOUT - ms(1)), Due::Poke);
        assert_eq!(c.handle_timeout(t0 + ms(700) + ACK_TIMEOUT), Due::GiveUp);
    }

    #[test]
    fn a_silent_connection_dials_a_standby_which_takes_over_only_if_the_silence_lasts() {
        let t0 = Instant::now();
        let mut c = Conversation::new(t0, 0, 1000, 5);
        c.sent(1, t0);
        assert_eq!(c.standby(t0 + STANDBY_AFTER - ms(1)), Standby::Keep);
        assert_eq!(c.standby(t0 + STANDBY_AFTER), Standby::Dial);
        assert_eq!(c.standby(t0 + STANDBY_AFTER + ms(200)), Standby::Keep, "one standby at a time");
        // Answered while the old connection still hears nothing: the restart case. The fresh
        // connection takes over once the grace has passed in silence.
        let answered = t0 + ms(3000);
        c.standby_answered(answered);
        assert!(c.poll_timeout() <= Some(answered + TAKEOVER_GRACE), "a timer for the takeover");
        assert_eq!(c.handle_timeout(answered + TAKEOVER_GRACE - ms(1)), Due::Poke);
        assert_eq!(c.handle_timeout(answered + TAKEOVER_GRACE), Due::TakeOver);

        // A stalled aggregator answers the handshake and, within the grace, the old connection:
        // the standby is dropped and the old connection carries on.
        let mut c = Conversation::new(t0, 0, 1000, 5);
        c.sent(1, t0);
        assert_eq!(c.standby(t0 + STANDBY_AFTER), Standby::Dial);
        c.standby_answered(t0 + ms(2500));
        c.heard(6, t0 + ms(2600));
        assert_eq!(c.standby(t0 + ms(2600)), Standby::Drop);
        assert_ne!(c.handle_timeout(t0 + ms(2800)), Due::TakeOver);
        assert_eq!(c.standby(t0 + ms(2900)), Standby::Keep, "heard 300 ms ago");
        assert_eq!(c.standby(t0 + ms(3600)), Standby::Dial, "silent a second again");

        // Attempts that ran out leave room for a new standby.
        c.standby_ended();
        assert_eq!(c.standby(t0 + ms(3700)), Standby::Dial);
    }

    #[test]
    fn an_idle_connection_dials_no_standby() {
        let t0 = Instant::now();
        let mut c = Conversation::new(t0, 0, 60_000, 5);
        assert_eq!(c.standby(t0 + Duration::from_secs(50)), Standby::Keep, "nothing waits for an ack");
    }

    #[test]
    fn the_clock_is_echoed_at_most_once_a_second() {
        let t0 = Instant::now();
        let mut c = Conversation::new(t0, 0, 100, 0);
        let echoes = (1..=50).filter(|i| c.acked(0, t0 + ms(100 * i))).count();
        assert_eq!(echoes, 5, "acks every 100 ms for 5 s");
    }
}
