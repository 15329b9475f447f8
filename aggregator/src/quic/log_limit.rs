//! A sans-IO limit on repeated log lines: the first event of a kind is told at once, the ones
//! after it are counted and told as one summary per kind and interval.
//!
//! An attacker decides how often an event happens, so the log must not: whatever the rate, a
//! kind writes at most one line per interval. A kind that has been quiet for an interval is told
//! at once again, so a lone refusal after a calm hour is not held back. Time is passed in; the
//! caller logs the [`Line`]s and calls [`LogLimit::due`] now and then, so the last summary of a
//! burst that has stopped is not lost.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// What to log for a kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Line<D> {
    /// The first event after a quiet interval.
    First(D),
    /// `count` events since the kind's previous line, `over` that long; `last` is the latest.
    Summary { count: u64, over: Duration, last: D },
}

#[derive(Debug)]
struct Kind<D> {
    /// No line before this instant.
    quiet_until: Instant,
    /// When the kind's previous line was told.
    since: Instant,
    /// Events since then.
    count: u64,
    last: Option<D>,
}

/// Per kind: when it last logged and what it has held back since.
#[derive(Debug)]
pub(crate) struct LogLimit<K, D> {
    interval: Duration,
    kinds: HashMap<K, Kind<D>>,
}

impl<K: Clone + Eq + Hash, D> LogLimit<K, D> {
    pub(crate) fn new(interval: Duration) -> Self {
        LogLimit { interval, kinds: HashMap::new() }
    }

    /// An event of `kind` at `now`: the line to log now, if any.
    pub(crate) fn event(&mut self, kind: K, now: Instant, detail: D) -> Option<Line<D>> {
        let interval = self.interval;
        match self.kinds.get_mut(&kind) {
            Some(k) if k.count > 0 || now < k.quiet_until => {
                k.count += 1;
                k.last = Some(detail);
                if now >= k.quiet_until {
                    return k.summary(now, interval);
                }
                None
            }
            _ => {
                self.kinds.insert(kind, Kind { quiet_until: now + interval, since: now, count: 0, last: None });
                Some(Line::First(detail))
            }
        }
    }

    /// The summaries due at `now`: of kinds whose interval has passed with events held back.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<(K, Line<D>)> {
        let interval = self.interval;
        let mut out = Vec::new();
        for (kind, k) in &mut self.kinds {
            if k.count > 0 && now >= k.quiet_until {
                if let Some(line) = k.summary(now, interval) {
                    out.push((kind.clone(), line));
                }
            }
        }
        out
    }

    /// The earliest instant a summary falls due, if one is pending.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.kinds.values().filter(|k| k.count > 0).map(|k| k.quiet_until).min()
    }
}

impl<D> Kind<D> {
    fn summary(&mut self, now: Instant, interval: Duration) -> Option<Line<D>> {
        let last = self.last.take()?;
        let line = Line::Summary { count: self.count, over: now.saturating_duration_since(self.since), last };
        self.count = 0;
        self.since = now;
        self.quiet_until = now + interval;
        Some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_first_event_is_told_at_once_and_the_rest_once_a_minute() {
        let t0 = Instant::now();
        let mut limit = LogLimit::new(MINUTE);
        assert_eq!(limit.event("busy", t0, 0), Some(Line::First(0)));
        // A flood of 1,000 a second for ten minutes, simulated: ten summaries and no more.
        let mut lines = Vec::new();
        for i in 1..=600_000u64 {
            let now = t0 + ms(i);
            if let Some(line) = limit.event("busy", now, i) {
                lines.push((now, line));
            }
            lines.extend(limit.due(now).into_iter().map(|(_, l)| (now, l)));
        }
        assert_eq!(lines.len(), 10, "one line a minute after the first");
        for (n, (at, line)) in lines.iter().enumerate() {
            assert_eq!(*at, t0 + MINUTE * (n as u32 + 1), "summary {n}");
            // Every event is told in the summary that follows it.
            let last = 60_000 * (n as u64 + 1);
            assert_eq!(*line, Line::Summary { count: 60_000, over: MINUTE, last }, "summary {n}");
        }
        assert!(limit.due(t0 + MINUTE * 11).is_empty());
    }

    #[test]
    fn a_summary_carries_the_latest_detail_and_comes_when_the_burst_stopped() {
        let t0 = Instant::now();
        let mut limit = LogLimit::new(MINUTE);
        assert!(limit.event("unknown_ca", t0, "a").is_some());
        assert_eq!(limit.event("unknown_ca", t0 + ms(10), "b"), None);
        assert_eq!(limit.event("unknown_ca", t0 + ms(20), "c"), None);
        assert_eq!(limit.next_due(), Some(t0 + MINUTE));
        assert!(limit.due(t0 + MINUTE - ms(1)).is_empty(), "not before the minute is up");
        assert_eq!(
            limit.due(t0 + MINUTE + ms(500)),
            vec![("unknown_ca", Line::Summary { count: 2, over: MINUTE + ms(500), last: "c" })]
        );
        assert!(limit.due(t0 + MINUTE * 5).is_empty(), "nothing held, nothing told");
        assert_eq!(limit.next_due(), None);
    }

    #[test]
    fn kinds_are_limited_apart_and_a_quiet_kind_is_told_at_once_again() {
        let t0 = Instant::now();
        let mut limit = LogLimit::new(MINUTE);
        assert!(limit.event("busy", t0, 1).is_some());
        assert!(limit.event("revoked", t0 + ms(1), 2).is_some(), "another kind is not held back");
        assert!(limit.event("busy", t0 + ms(2), 3).is_none());
        // Its summary was told at the minute; after a quiet minute more, a new event is first.
        assert_eq!(limit.due(t0 + MINUTE).len(), 1);
        assert!(limit.event("busy", t0 + MINUTE + ms(1), 4).is_none(), "within the minute after a summary");
        assert_eq!(limit.due(t0 + MINUTE * 2).len(), 1);
        assert_eq!(limit.event("busy", t0 + MINUTE * 3, 5), Some(Line::First(5)));
        assert_eq!(limit.event("revoked", t0 + MINUTE * 3, 6), Some(Line::First(6)));
    }

    #[test]
    fn an_event_past_the_interval_carries_the_held_summary_itself() {
        let t0 = Instant::now();
        let mut limit = LogLimit::new(MINUTE);
        assert!(limit.event("bad_initial", t0, 1).is_some());
        assert!(limit.event("bad_initial", t0 + ms(5), 2).is_none());
        // Nobody called `due`: the next event tells the summary, itself included.
        assert_eq!(
            limit.event("bad_initial", t0 + MINUTE * 2, 3),
            Some(Line::Summary { count: 2, over: MINUTE * 2, last: 3 })
        );
        assert!(limit.event("bad_initial", t0 + MINUTE * 2 + ms(1), 4).is_none());
    }
}
