//! Keys and the records sled holds: a batch behind its [`Meta`], and a drop report.

use twinwatch_common::message::Dropped;

pub type Key = [u8; 16];

pub fn key(incarnation: u64, seq: u64) -> Key {
    let mut k = [0; 16];
    k[..8].copy_from_slice(&incarnation.to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

pub fn split_key(k: &[u8]) -> (u64, u64) {
    let mut inc = [0; 8];
    let mut seq = [0; 8];
    inc.copy_from_slice(&k[..8]);
    seq.copy_from_slice(&k[8..16]);
    (u64::from_be_bytes(inc), u64::from_be_bytes(seq))
}

/// What the buffer knows of a batch besides its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Host samples (ticks) in the batch.
    pub ticks: u32,
    /// Agent clock of its (first) tick.
    pub ts_ms: i64,
    /// Whether it starts with a keyframe, so decoding can start at it.
    pub keyframe: bool,
}

pub(super) const META_LEN: usize = 13;

impl Meta {
    pub(super) fn encode(&self, frame: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(META_LEN + frame.len());
        v.extend_from_slice(&self.ticks.to_le_bytes());
        v.extend_from_slice(&self.ts_ms.to_le_bytes());
        v.push(self.keyframe as u8);
        v.extend_from_slice(frame);
        v
    }

    pub(super) fn decode(v: &[u8]) -> Meta {
        if v.len() < META_LEN {
            return Meta { ticks: 0, ts_ms: 0, keyframe: false };
        }
        Meta {
            ticks: u32::from_le_bytes(v[..4].try_into().expect("4 bytes")),
            ts_ms: i64::from_le_bytes(v[4..12].try_into().expect("8 bytes")),
            keyframe: v[12] == 1,
        }
    }
}

pub(super) fn encode_drop(d: &Dropped) -> Vec<u8> {
    let mut v = Vec::with_capacity(48);
    for x in [d.incarnation, d.first_seq, d.last_seq, d.ticks, d.from_ms as u64, d.to_ms as u64] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    v
}

pub(super) fn decode_drop(v: &[u8]) -> Option<Dropped> {
    let f = |i: usize| v.get(i * 8..i * 8 + 8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
    Some(Dropped {
        incarnation: f(0)?,
        first_seq: f(1)?,
        last_seq: f(2)?,
        ticks: f(3)?,
        from_ms: f(4)? as i64,
        to_ms: f(5)? as i64,
    })
}

pub(super) fn to_key(k: &[u8]) -> Key {
    let mut key = [0; 16];
    key.copy_from_slice(&k[..16]);
    key
}
