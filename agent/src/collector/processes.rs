//! Processes and threads by state, and the top processes by CPU and by memory, from /proc/[pid].

use std::path::PathBuf;

use twinwatch_common::sample::Metric;

use super::{CollectError, Collector, Roots};

pub struct Processes {
    #[allow(dead_code)]
    root: PathBuf,
    #[allow(dead_code)]
    top: usize,
    #[allow(dead_code)]
    user_hz: f64,
}

impl Processes {
    pub fn new(roots: &Roots, top: usize, user_hz: f64) -> Self {
        Processes { root: roots.proc.clone(), top, user_hz }
    }
}

impl Collector for Processes {
    fn collect(&mut self, _out: &mut Vec<Metric>) -> Result<(), CollectError> {
        Ok(())
    }
}
