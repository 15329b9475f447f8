//! One round of an agent's session, sans-IO: the messages that arrived together are reconciled
//! into the twin, and the round says which frames to store and, once they are durable, what to
//! answer (ack ranges per incarnation, then a keyframe request if a batch could not be decoded).
//! The session in `ingest.rs` reads the connection, stores, flushes and writes; this decides.
//! Time is passed in.

use std::collections::BTreeMap;

use twinwatch_common::message::{Ack, KeyframeRequest, Message};

use crate::twin::identity::AgentIdentity;
use crate::twin::runs::Runs;
use crate::twin::{Outcome, Twin};

/// Why a round ends the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RoundError {
    /// Another connection now speaks for this agent.
    Superseded,
    /// A message an agent never sends after its hello.
    Unexpected(&'static str),
}

/// What one round took, and what it owes the agent.
#[derive(Debug, Default)]
pub(crate) struct Round {
    /// Frames to store, in the order they came.
    pub(crate) logged: Vec<Vec<u8>>,
    acks: BTreeMap<u64, Runs>,
    keyframe: Option<KeyframeRequest>,
}

impl Round {
    /// Reconciles `message` (whose frame is `frame`) from the connection `conn` of `who` into
    /// `twin` at `now_ms`.
    pub(crate) fn handle(
        &mut self,
        twin: &mut Twin,
        who: &AgentIdentity,
        conn: u64,
        message: Message,
        frame: &[u8],
        now_ms: i64,
    ) -> Result<(), RoundError> {
        match message {
            Message::Batch(batch) => {
                let outcome = twin.handle_batch(&who.id, conn, &batch, now_ms);
                if outcome == Outcome::NotHolder {
                    return Err(RoundError::Superseded);
                }
                if let Outcome::Unapplied { keyframe_wanted, reason } = &outcome {
                    tracing::debug!(agent = %who, seq = batch.seq, "batch stored undecoded: {reason}");
                    if *keyframe_wanted {
                        self.keyframe = Some(KeyframeRequest { incarnation: batch.incarnation, after_seq: batch.seq });
                    }
                }
                if outcome.stores() {
                    self.logged.push(frame.to_vec());
                }
                self.acks.entry(batch.incarnation).or_default().insert(batch.seq, batch.seq);
            }
            Message::Dropped(d) => {
                let new = twin.handle_dropped(&who.id, conn, &d, now_ms).map_err(|_| RoundError::Superseded)?;
                if new {
                    tracing::warn!(agent = %who, incarnation = d.incarnation, first = d.first_seq, last = d.last_seq, ticks = d.ticks, "agent dropped samples to stay under its buffer cap");
                    self.logged.push(frame.to_vec());
                }
                self.acks.entry(d.incarnation).or_default().insert(d.first_seq, d.last_seq);
            }
            Message::TimeEcho(echo) => twin.handle_echo(&who.id, conn, &echo, now_ms),
            other => return Err(RoundError::Unexpected(other.name())),
        }
        Ok(())
    }

    /// The answer, once what [`Round::logged`] holds is durable: one ack per run of sequence
    /// numbers, carrying the aggregator's clock, then any keyframe request. Empty when the round
    /// took nothing that needs an ack (clock echoes only).
    pub(crate) fn answer(&self, server_time_ms: i64) -> Vec<Message> {
        if self.acks.is_empty() {
            return Vec::new();
        }
        let acks = self.acks.iter().flat_map(|(incarnation, runs)| {
            runs.iter().map(move |(first_seq, last_seq)| {
                Message::Ack(Ack { incarnation: *incarnation, first_seq, last_seq, server_time_ms })
            })
        });
        acks.chain(self.keyframe.map(Message::KeyframeRequest)).collect()
    }
}

#[cfg(test)]
mod tests {
    use twinwatch_common::delta::DeltaEncoder;
    use twinwatch_common::message::{Batch, Dropped, TimeEcho};
    use twinwatch_common::sample::{Metric, Sample, SeriesKey, Value};

    use super::*;
    use crate::twin::claims::Claim;
    use crate::twin::tests::{hello, who};

    /// A twin where connection `conn` holds the agent, and an encoder for its batches.
    fn session(conn: u64) -> (Twin, DeltaEncoder) {
        let mut twin = Twin::default();
        assert_eq!(twin.handle_hello(&who(), conn, &hello(1), 0), Claim::Accept { supersedes: None });
        (twin, DeltaEncoder::new(1000))
    }

    fn batch(enc: &mut DeltaEncoder, seq: u64, t: i64) -> Message {
        let m = Metric::counter(SeriesKey::new("c"), Value::Int(t));
        Message::Batch(Batch { incarnation: 1, seq, ticks: vec![enc.encode(&Sample::new(t, vec![m]))] })
    }

    fn acks(answer: &[Message]) -> Vec<(u64, u64, u64)> {
        answer
            .iter()
            .filter_map(|m| match m {
                Message::Ack(a) => Some((a.incarnation, a.first_seq, a.last_seq)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_round_stores_each_new_batch_once_and_acks_the_runs() {
        let (mut twin, mut enc) = session(7);
        let mut round = Round::default();
        for (seq, t) in [(1, 1000), (2, 2000), (3, 3000), (5, 5000)] {
            round.handle(&mut twin, &who(), 7, batch(&mut enc, seq, t), &[seq as u8], t).unwrap();
        }
        assert_eq!(round.logged, vec![vec![1], vec![2], vec![3], vec![5]]);
        let answer = round.answer(9_000);
        assert_eq!(acks(&answer), vec![(1, 1, 3), (1, 5, 5)], "ranges, not one ack per batch");
        assert!(answer.iter().all(|m| !matches!(m, Message::Ack(a) if a.server_time_ms != 9_000)));

        // A replay of what is stored is acked again but not stored twice.
        let mut replay = Round::default();
        let mut again = DeltaEncoder::new(1000);
        replay.handle(&mut twin, &who(), 7, batch(&mut again, 1, 1000), &[1], 9_500).unwrap();
        assert!(replay.logged.is_empty());
        assert_eq!(acks(&replay.answer(10_000)), vec![(1, 1, 1)]);
    }

    #[test]
    fn an_undecodable_batch_is_stored_acked_and_asks_for_a_keyframe() {
        let (mut twin, mut enc) = session(7);
        let mut round = Round::default();
        round.handle(&mut twin, &who(), 7, batch(&mut enc, 1, 1000), &[1], 1000).unwrap();
        // Batch 2 is lost on the way; 3 is a delta against it.
        let _lost = batch(&mut enc, 2, 2000);
        round.handle(&mut twin, &who(), 7, batch(&mut enc, 3, 3000), &[3], 3000).unwrap();
        assert_eq!(round.logged.len(), 2, "kept undecoded, to decode when 2 comes");
        let answer = round.answer(3_100);
        assert_eq!(acks(&answer), vec![(1, 1, 1), (1, 3, 3)]);
        assert!(
            matches!(answer.last(), Some(Message::KeyframeRequest(r)) if r.incarnation == 1 && r.after_seq == 3),
            "{answer:?}"
        );
    }

    #[test]
    fn a_superseded_connection_ends_its_session() {
        let (mut twin, mut enc) = session(7);
        assert!(matches!(twin.handle_hello(&who(), 8, &hello(1), 10), Claim::Accept { supersedes: Some(7) }));
        let mut round = Round::default();
        let old = round.handle(&mut twin, &who(), 7, batch(&mut enc, 1, 1000), &[1], 1000);
        assert_eq!(old, Err(RoundError::Superseded));
        let drop = Dropped { incarnation: 1, first_seq: 1, last_seq: 4, ticks: 4, from_ms: 1000, to_ms: 4000 };
        let old = round.handle(&mut twin, &who(), 7, Message::Dropped(drop), &[9], 1000);
        assert_eq!(old, Err(RoundError::Superseded));
        assert!(round.logged.is_empty() && round.answer(1).is_empty(), "nothing taken from it");
    }

    #[test]
    fn a_drop_report_is_stored_once_and_acked_as_its_range() {
        let (mut twin, _) = session(7);
        let drop = Dropped { incarnation: 1, first_seq: 1, last_seq: 4, ticks: 4, from_ms: 1000, to_ms: 4000 };
        let mut round = Round::default();
        round.handle(&mut twin, &who(), 7, Message::Dropped(drop), &[9], 5000).unwrap();
        round.handle(&mut twin, &who(), 7, Message::Dropped(drop), &[9], 5001).unwrap();
        assert_eq!(round.logged, vec![vec![9]], "the repeat is known");
        assert_eq!(acks(&round.answer(5002)), vec![(1, 1, 4)]);
    }

    #[test]
    fn clock_echoes_need_no_answer_and_a_hello_mid_session_is_refused() {
        let (mut twin, _) = session(7);
        let mut round = Round::default();
        let echo = TimeEcho { server_time_ms: 1000, agent_time_ms: 1010 };
        round.handle(&mut twin, &who(), 7, Message::TimeEcho(echo), &[], 1020).unwrap();
        assert!(round.answer(1030).is_empty());
        let hello = round.handle(&mut twin, &who(), 7, Message::Hello(hello(1)), &[], 1040);
        assert_eq!(hello, Err(RoundError::Unexpected("hello")));
    }
}
