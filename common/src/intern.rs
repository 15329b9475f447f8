//! One shared copy of each series key.
//!
//! Hosts of one fleet mostly carry the same series (`node_cpu_seconds_total{cpu="0",mode="user"}`
//! on every one of them), and a key is a few hundred bytes on the heap. An aggregator holding a
//! thousand hosts of five hundred series would keep half a million copies; interned, it keeps one
//! per distinct key, and each host holds pointers.

use std::collections::HashSet;
use std::sync::Arc;

use crate::sample::SeriesKey;

/// Keys shared by everything that holds them.
#[derive(Debug)]
pub struct KeyInterner {
    keys: HashSet<Arc<SeriesKey>>,
    /// Size at which keys no one else holds any more are forgotten.
    purge_at: usize,
}

/// Keys kept before the first purge.
const FIRST_PURGE: usize = 4096;

impl Default for KeyInterner {
    fn default() -> Self {
        KeyInterner { keys: HashSet::new(), purge_at: FIRST_PURGE }
    }
}

impl KeyInterner {
    /// The shared copy of `key`.
    pub fn intern(&mut self, key: &SeriesKey) -> Arc<SeriesKey> {
        if let Some(k) = self.keys.get(key) {
            return Arc::clone(k);
        }
        self.insert(Arc::new(key.clone()))
    }

    /// Replaces `key` with the shared copy of what it holds.
    pub fn share(&mut self, key: &mut Arc<SeriesKey>) {
        match self.keys.get(&**key) {
            Some(k) => *key = Arc::clone(k),
            None => {
                self.insert(Arc::clone(key));
            }
        }
    }

    fn insert(&mut self, key: Arc<SeriesKey>) -> Arc<SeriesKey> {
        if self.keys.len() >= self.purge_at {
            // Amortised: the set at least doubles between purges.
            self.keys.retain(|k| Arc::strong_count(k) > 1);
            self.purge_at = (self.keys.len() * 2).max(FIRST_PURGE);
        }
        self.keys.insert(Arc::clone(&key));
        key
    }

    /// Distinct keys held.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_keys_share_one_copy_and_unheld_ones_are_forgotten() {
        let mut keys = KeyInterner::default();
        let a = keys.intern(&SeriesKey::new("cpu").with("cpu", "0"));
        let b = keys.intern(&SeriesKey::new("cpu").with("cpu", "0"));
        assert!(Arc::ptr_eq(&a, &b));
        let mut loaded = Arc::new(SeriesKey::new("cpu").with("cpu", "0"));
        keys.share(&mut loaded);
        assert!(Arc::ptr_eq(&a, &loaded));
        assert_eq!(keys.len(), 1);

        drop((a, b, loaded));
        let held: Vec<_> = (0..FIRST_PURGE).map(|i| keys.intern(&SeriesKey::new(format!("s{i}")))).collect();
        // The first key was dropped by everyone: the purge at FIRST_PURGE forgot it.
        assert_eq!(keys.len(), FIRST_PURGE);
        assert!(held.iter().all(|k| Arc::strong_count(k) == 2));
    }
}
