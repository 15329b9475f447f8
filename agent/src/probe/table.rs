//! The latest series of every probe and service, where the sampler picks them up.
//!
//! Probes write their result here when a run ends; the sampler copies everything into the next
//! sample only if something changed since it last looked (or a keyframe wants every series), and
//! otherwise marks the probe group skipped, so unchanged probes cost nothing per tick.

use std::collections::BTreeMap;
use std::sync::Mutex;

use twinwatch_common::sample::Metric;

use crate::collector::Collectors;

/// The wire group of probe series: right after the agent's own.
pub const GROUP: u8 = Collectors::AGENT_GROUP + 1;

#[derive(Debug, Default)]
pub struct Table {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    version: u64,
    entries: BTreeMap<String, Vec<Metric>>,
}

impl Table {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the series under `key` (an endpoint id, or `service:<name>`).
    pub fn put(&self, key: &str, mut metrics: Vec<Metric>) {
        for m in &mut metrics {
            m.group = GROUP;
        }
        let mut inner = self.lock();
        inner.version += 1;
        inner.entries.insert(key.to_owned(), metrics);
    }

    /// Removes every entry whose key `gone` selects (a probe that no longer exists).
    pub fn remove(&self, gone: impl Fn(&str) -> bool) {
        let mut inner = self.lock();
        let before = inner.entries.len();
        inner.entries.retain(|k, _| !gone(k));
        if inner.entries.len() != before {
            inner.version += 1;
        }
    }

    /// Appends every series if anything changed since `seen` (or if `all`), updating `seen`.
    /// Returns whether it appended.
    pub fn emit(&self, seen: &mut u64, all: bool, out: &mut Vec<Metric>) -> bool {
        let inner = self.lock();
        if !all && inner.version == *seen {
            return false;
        }
        *seen = inner.version;
        for metrics in inner.entries.values() {
            out.extend_from_slice(metrics);
        }
        true
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use twinwatch_common::sample::{SeriesKey, Value};

    #[test]
    fn emits_only_after_a_change_or_for_a_keyframe() {
        let table = Table::default();
        let mut seen = 0;
        let mut out = Vec::new();
        assert!(!table.emit(&mut seen, false, &mut out));
        table.put("a", vec![Metric::gauge(SeriesKey::new("probe_success"), Value::Int(1))]);
        assert!(table.emit(&mut seen, false, &mut out));
        assert_eq!((out.len(), out[0].group), (1, GROUP));
        assert!(!table.emit(&mut seen, false, &mut out));
        assert!(table.emit(&mut seen, true, &mut out));
        table.remove(|k| k == "a");
        out.clear();
        assert!(table.emit(&mut seen, false, &mut out) && out.is_empty());
    }
}
