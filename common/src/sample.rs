//! The sample model: what collectors produce and what the aggregator's twin holds.
//!
//! A series is named the way node_exporter names it (`node_memory_MemTotal_bytes`) with sorted
//! labels. Values are integers where the source is an integer (counters, bytes), floats otherwise,
//! so the delta codec can send an integer's change as a small varint.

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

/// A series' identity: metric name plus label pairs, sorted by label name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Encode, Decode, Serialize, Deserialize)]
pub struct SeriesKey {
    pub name: String,
    pub labels: Vec<(String, String)>,
}

impl SeriesKey {
    pub fn new(name: impl Into<String>) -> Self {
        SeriesKey { name: name.into(), labels: Vec::new() }
    }

    /// Adds a label, keeping labels sorted by name.
    pub fn with(mut self, label: &str, value: impl Into<String>) -> Self {
        let at = self.labels.partition_point(|(k, _)| k.as_str() < label);
        self.labels.insert(at, (label.to_owned(), value.into()));
        self
    }

    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Whether a series only goes up (a counter, reset on restart) or moves freely (a gauge).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Counter,
    Gauge,
}

/// One value of a series.
#[derive(Debug, Clone, Copy, PartialEq, Encode, Decode, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Int(i64),
    Float(f64),
}

impl Value {
    pub fn as_f64(self) -> f64 {
        match self {
            Value::Int(v) => v as f64,
            Value::Float(v) => v,
        }
    }

    /// The 64 raw bits the delta codec works on.
    pub fn to_bits(self) -> u64 {
        match self {
            Value::Int(v) => v as u64,
            Value::Float(v) => v.to_bits(),
        }
    }

    pub fn from_bits(bits: u64, is_float: bool) -> Value {
        if is_float {
            Value::Float(f64::from_bits(bits))
        } else {
            Value::Int(bits as i64)
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, Value::Float(_))
    }
}

/// `raw * scale`, computed as a division when the scale is the reciprocal of a whole number
/// (1/USER_HZ, 1/1000), so ticks and milliseconds read back as the same seconds the kernel's
/// other consumers (node_exporter) compute.
pub fn apply_scale(raw: f64, scale: f64) -> f64 {
    if scale > 0.0 && scale < 1.0 {
        let inverse = (1.0 / scale).round();
        if (inverse * scale - 1.0).abs() < 1e-12 {
            return raw / inverse;
        }
    }
    raw * scale
}

/// One measured value with what it needs to be understood.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub key: SeriesKey,
    pub kind: Kind,
    /// Multiply the raw value by this to get the unit in the series name: CPU time is read in
    /// kernel ticks and named in seconds, so its scale is 1/USER_HZ.
    pub scale: f64,
    pub value: Value,
    /// The source that produced it (a bit position in [`Sample::skipped`]).
    pub group: u8,
}

impl Metric {
    pub fn gauge(key: SeriesKey, value: Value) -> Self {
        Metric { key, kind: Kind::Gauge, scale: 1.0, value, group: 0 }
    }

    pub fn counter(key: SeriesKey, value: Value) -> Self {
        Metric { key, kind: Kind::Counter, scale: 1.0, value, group: 0 }
    }

    pub fn scaled(mut self, scale: f64) -> Self {
        self.scale = scale;
        self
    }

    /// The value in the unit its name states.
    pub fn real(&self) -> f64 {
        apply_scale(self.value.as_f64(), self.scale)
    }
}

/// Everything the collectors saw at one instant, stamped with the agent's clock.
///
/// Sources run at their own intervals: a group whose bit is set in `skipped` was not read this
/// time, so its series keep their last values instead of being taken as gone.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sample {
    /// Milliseconds since the Unix epoch, by the agent's clock.
    pub ts_ms: i64,
    pub metrics: Vec<Metric>,
    /// Bit `g` set: group `g` was not sampled at this instant.
    pub skipped: u64,
}

impl Sample {
    /// A sample in which every group was read.
    pub fn new(ts_ms: i64, metrics: Vec<Metric>) -> Self {
        Sample { ts_ms, metrics, skipped: 0 }
    }
}

/// Whether `group` is marked in a `skipped` mask (groups past 63 share the last bit).
pub fn is_skipped(skipped: u64, group: u8) -> bool {
    skipped & (1u64 << group.min(63)) != 0
}
