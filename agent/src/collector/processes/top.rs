//! The top set: which processes are reported by name, by CPU used over the interval and by
//! resident memory.

use super::stat::Stat;

/// Bytes of a process name kept for the top set. The kernel's task name is 16 bytes, but
/// /proc/[pid]/stat shows kernel threads' longer names (workqueue workers) up to 64.
const COMM_MAX: usize = 64;

/// A process's CPU time when it was last seen, and which process that was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Seen {
    pub(super) start: u64,
    pub(super) ticks: u64,
}

/// A process that may make the top set, copied out of the read buffer without allocating.
#[derive(Clone, Copy)]
pub(super) struct Candidate {
    pub(super) pid: u32,
    pub(super) comm: [u8; COMM_MAX],
    pub(super) comm_len: usize,
    pub(super) state: u8,
    pub(super) ticks: u64,
    /// Ticks used since the last collection.
    pub(super) used: u64,
    pub(super) threads: u64,
    pub(super) start: u64,
    pub(super) rss_pages: u64,
}

impl Candidate {
    pub(super) fn new(pid: u32, stat: &Stat, used: u64) -> Self {
        let comm_len = stat.comm.len().min(COMM_MAX);
        let mut comm = [0; COMM_MAX];
        comm[..comm_len].copy_from_slice(&stat.comm[..comm_len]);
        Candidate {
            pid,
            comm,
            comm_len,
            state: stat.state,
            ticks: stat.ticks,
            used,
            threads: stat.threads,
            start: stat.start,
            rss_pages: stat.rss_pages,
        }
    }
}

/// Keeps `list` the `top` largest by `key`, largest first, ties to the lower pid so the set does
/// not depend on directory order.
pub(super) fn offer(list: &mut Vec<Candidate>, top: usize, c: Candidate, key: fn(&Candidate) -> u64) {
    let rank = |x: &Candidate| (key(x), std::cmp::Reverse(x.pid));
    let at = list.partition_point(|x| rank(x) > rank(&c));
    if at < top {
        if list.len() == top {
            list.pop();
        }
        list.insert(at, c);
    }
}
