//! Which connection speaks for an agent identity, when two claim it at once.
//!
//! Rules, in order, for a new connection with a `Hello` while another holds the identity:
//! 1. Same machine (machine id) and an incarnation at least the holder's: the newcomer takes
//!    over. This is an agent that restarted, or reconnected from a new address behind NAT, before
//!    its old connection timed out.
//! 2. The holder has been silent for longer than [`SILENT_INTERVALS`] sample intervals: the
//!    newcomer takes over; the old connection is presumed dead.
//! 3. Otherwise the newcomer is refused and the holder keeps the identity: a second machine with a
//!    copied certificate, or an older process of the same agent, cannot take over a live one.
//!
//! Every refusal, and every takeover by a different machine, is recorded as a [`Conflict`] on the
//! host and shown by the API. Sans-IO: connection ids and times are passed in.

use std::collections::BTreeMap;

use bincode::{Decode, Encode};
use twinwatch_common::message::Hello;

/// A holder silent this many intervals may be replaced.
pub const SILENT_INTERVALS: i64 = 3;
/// Conflicts remembered per host.
pub const REMEMBERED_CONFLICTS: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub conn: u64,
    pub incarnation: u64,
    pub machine_id: String,
    pub hostname: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Serve the connection; close `supersedes` if set.
    Accept { supersedes: Option<u64> },
    /// Close the connection with this reason.
    Refuse { reason: String },
}

/// A contested identity, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, serde::Serialize)]
pub struct Conflict {
    pub at_ms: i64,
    /// The same conflict again (a refused agent retrying): how often, and the latest time.
    pub count: u64,
    pub last_ms: i64,
    /// `refused` (the newcomer) or `superseded` (the holder, by another machine or when silent).
    pub outcome: String,
    pub machine_id: String,
    pub hostname: String,
    pub incarnation: u64,
    pub holder_machine_id: String,
    pub holder_hostname: String,
    pub holder_incarnation: u64,
}

impl Conflict {
    /// Whether `other` is this conflict repeated.
    pub fn same_as(&self, other: &Conflict) -> bool {
        (&self.outcome, &self.machine_id, self.incarnation, &self.holder_machine_id, self.holder_incarnation)
            == (
                &other.outcome,
                &other.machine_id,
                other.incarnation,
                &other.holder_machine_id,
                other.holder_incarnation,
            )
    }
}

#[derive(Debug, Default)]
pub struct Claims {
    holders: BTreeMap<String, Holder>,
}

impl Claims {
    /// Decides on `conn` claiming `id`. `holder_silent_ms` is how long the identity's host has
    /// been silent and `interval_ms` its sample interval. Returns the decision and, when it is a
    /// conflict, the record to keep.
    pub fn claim(
        &mut self,
        id: &str,
        conn: u64,
        hello: &Hello,
        holder_silent_ms: i64,
        interval_ms: i64,
        now_ms: i64,
    ) -> (Claim, Option<Conflict>) {
        let newcomer = Holder {
            conn,
            incarnation: hello.incarnation,
            machine_id: hello.host.machine_id.clone(),
            hostname: hello.host.hostname.clone(),
        };
        let Some(holder) = self.holders.get(id).filter(|h| h.conn != conn) else {
            self.holders.insert(id.to_owned(), newcomer);
            return (Claim::Accept { supersedes: None }, None);
        };
        let same_machine = !holder.machine_id.is_empty() && holder.machine_id == newcomer.machine_id;
        let silent = holder_silent_ms > SILENT_INTERVALS * interval_ms.max(1);
        let conflict = |outcome: &str| Conflict {
            at_ms: now_ms,
            count: 1,
            last_ms: now_ms,
            outcome: outcome.to_owned(),
            machine_id: newcomer.machine_id.clone(),
            hostname: newcomer.hostname.clone(),
            incarnation: newcomer.incarnation,
            holder_machine_id: holder.machine_id.clone(),
            holder_hostname: holder.hostname.clone(),
            holder_incarnation: holder.incarnation,
        };
        if (same_machine && newcomer.incarnation >= holder.incarnation) || silent {
            let record = (!same_machine).then(|| conflict("superseded"));
            let old = holder.conn;
            self.holders.insert(id.to_owned(), newcomer);
            return (Claim::Accept { supersedes: Some(old) }, record);
        }
        let reason = format!(
            "identity {id} is held by {} (machine {}, incarnation {})",
            holder.hostname, holder.machine_id, holder.incarnation
        );
        let record = conflict("refused");
        (Claim::Refuse { reason }, Some(record))
    }

    /// Whether `conn` currently speaks for `id`.
    pub fn holds(&self, id: &str, conn: u64) -> bool {
        self.holders.get(id).is_some_and(|h| h.conn == conn)
    }

    /// `conn` ended; frees `id` if it held it.
    pub fn release(&mut self, id: &str, conn: u64) {
        if self.holds(id, conn) {
            self.holders.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use twinwatch_common::message::HostInfo;

    fn hello(machine: &str, incarnation: u64) -> Hello {
        Hello {
            agent_version: "t".into(),
            incarnation,
            agent_time_ms: 0,
            interval_ms: 1000,
            host: HostInfo { machine_id: machine.into(), hostname: format!("host-{machine}"), ..HostInfo::default() },
        }
    }

    #[test]
    fn a_restarted_agent_takes_over_its_own_identity() {
        let mut c = Claims::default();
        assert_eq!(c.claim("a", 1, &hello("m1", 5), 0, 1000, 0).0, Claim::Accept { supersedes: None });
        let (claim, conflict) = c.claim("a", 2, &hello("m1", 6), 0, 1000, 1);
        assert_eq!(claim, Claim::Accept { supersedes: Some(1) });
        assert!(conflict.is_none(), "a restart is not a conflict");
        assert!(c.holds("a", 2) && !c.holds("a", 1));
        // The old connection ending later does not free the identity.
        c.release("a", 1);
        assert!(c.holds("a", 2));
    }

    #[test]
    fn a_second_machine_is_refused_while_the_holder_is_live_and_recorded() {
        let mut c = Claims::default();
        c.claim("a", 1, &hello("m1", 5), 0, 1000, 0);
        let (claim, conflict) = c.claim("a", 2, &hello("m2", 9), 500, 1000, 10);
        assert!(matches!(claim, Claim::Refuse { ref reason } if reason.contains("host-m1")), "{claim:?}");
        let conflict = conflict.unwrap();
        assert_eq!((conflict.outcome.as_str(), conflict.machine_id.as_str()), ("refused", "m2"));
        // The same decision every time it retries.
        assert!(matches!(c.claim("a", 3, &hello("m2", 9), 900, 1000, 20).0, Claim::Refuse { .. }));
        // An older process of the same machine is refused too.
        assert!(matches!(c.claim("a", 4, &hello("m1", 4), 0, 1000, 30).0, Claim::Refuse { .. }));
        assert!(c.holds("a", 1));
    }

    #[test]
    fn a_silent_holder_is_replaced_and_that_is_recorded() {
        let mut c = Claims::default();
        c.claim("a", 1, &hello("m1", 5), 0, 1000, 0);
        let (claim, conflict) = c.claim("a", 2, &hello("m2", 9), 3_001, 1000, 10);
        assert_eq!(claim, Claim::Accept { supersedes: Some(1) });
        assert_eq!(conflict.unwrap().outcome, "superseded");
        // Once the holder leaves, anyone may claim.
        c.release("a", 2);
        assert_eq!(c.claim("a", 3, &hello("m1", 6), 0, 1000, 20).0, Claim::Accept { supersedes: None });
    }
}
