//! TODO

use std::path::PathBuf;

use twinwatch_common::sample::Metric;

use super::{CollectError, Collector, Roots};

pub struct Sockstat {
    #[allow(dead_code)]
    root: PathBuf,
}

impl Sockstat {
    pub fn new(r: &Roots) -> Self {
        Sockstat { root: r.proc.clone() }
    }
}

impl Collector for Sockstat {
    fn collect(&mut self, _out: &mut Vec<Metric>) -> Result<(), CollectError> {
        Ok(())
    }
}
