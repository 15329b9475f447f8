//! The two lanes of a connection: live batches first, the backlog behind them.

use std::collections::BTreeSet;
use std::ops::Bound;

use twinwatch_common::message::Dropped;

use super::{Buffer, BufferError, Inner, Key};

/// Which lane a batch went out on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Live,
    Backlog,
}

/// The lanes of one connection.
#[derive(Debug, Default)]
pub(super) struct Session {
    /// First live batch: the first keyframe pushed during the session, or the first batch at all
    /// if the buffer was empty when it began (the aggregator already follows the sequence).
    pub(super) live_from: Option<Key>,
    pub(super) any_batch_opens: bool,
    live_sent: Option<Key>,
    backlog_sent: Option<Key>,
    drops_sent: BTreeSet<Key>,
}

impl Buffer {
    /// A connection is up: everything buffered so far is backlog; the first keyframe pushed from
    /// now on opens the live lane. Nothing is in flight yet. With nothing buffered, the next batch
    /// opens it whatever it is, and no keyframe is needed. Returns how many batches are backlog
    /// (so a keyframe is needed unless 0).
    pub fn begin_session(&self) -> u64 {
        let mut inner = self.inner();
        inner.in_flight.clear();
        let backlog = inner.mem.len() as u64 + inner.disk_count;
        inner.session = Some(Session { any_batch_opens: backlog == 0, ..Session::default() });
        backlog
    }

    /// Whether this session's live lane has sent its first batch: from then on the aggregator
    /// is current, and the backlog may follow.
    pub fn live_opened(&self) -> bool {
        self.inner().session.as_ref().is_some_and(|s| s.live_sent.is_some())
    }

    /// The connection is gone: whatever was in flight will be sent again.
    pub fn end_session(&self) {
        let mut inner = self.inner();
        inner.in_flight.clear();
        inner.session = None;
    }

    /// The next batch to send: live first, else (when `backlog_allowed`) the oldest unsent
    /// backlog batch. Marks it in flight.
    pub fn next(&self, backlog_allowed: bool) -> Result<Option<(Key, Vec<u8>, Lane)>, BufferError> {
        let mut inner = self.inner();
        let Some(session) = inner.session.as_ref() else {
            return Ok(None);
        };
        let (live_from, live_sent, backlog_sent) = (session.live_from, session.live_sent, session.backlog_sent);
        let mut found = None;
        if let Some(from) = live_from {
            let start = live_sent.map_or(Bound::Included(from), Bound::Excluded);
            if let Some(k) = self.first_from(&inner, start, None)? {
                found = Some((k, Lane::Live));
            }
        }
        if found.is_none() && backlog_allowed {
            let start = backlog_sent.map_or(Bound::Unbounded, Bound::Excluded);
            if let Some(k) = self.first_from(&inner, start, live_from)? {
                found = Some((k, Lane::Backlog));
            }
        }
        let Some((k, lane)) = found else {
            return Ok(None);
        };
        let Some((_, frame)) = self.meta_and_frame(&inner, &k)? else {
            return Ok(None);
        };
        let session = inner.session.as_mut().expect("checked above");
        match lane {
            Lane::Live => session.live_sent = Some(k),
            Lane::Backlog => session.backlog_sent = Some(k),
        }
        inner.in_flight.insert(k);
        Ok(Some((k, frame, lane)))
    }

    /// Whether unsent backlog remains (so the shipper knows to wait for its rate rather than for
    /// new batches).
    pub fn backlog_pending(&self) -> Result<bool, BufferError> {
        let inner = self.inner();
        let Some(session) = inner.session.as_ref() else {
            return Ok(false);
        };
        let start = session.backlog_sent.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(self.first_from(&inner, start, session.live_from)?.is_some())
    }

    /// Drop reports this session has not sent yet; marks them sent.
    pub fn unsent_drops(&self) -> Vec<Dropped> {
        let mut inner = self.inner();
        let Inner { session, drops, .. } = &mut *inner;
        let Some(session) = session.as_mut() else {
            return Vec::new();
        };
        drops.iter().filter(|(k, _)| session.drops_sent.insert(**k)).map(|(_, d)| *d).collect()
    }
}
