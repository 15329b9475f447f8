//! TODO

use std::path::PathBuf;

use twinwatch_common::sample::Metric;

use super::{CollectError, Collector, Roots};

pub struct Pressure {
    #[allow(dead_code)]
    root: PathBuf,
}

impl Pressure {
    pub fn new(r: &Roots) -> Self {
        Pressure { root: r.proc.clone() }
    }
}

impl Collector for Pressure {
    fn collect(&mut self, _out: &mut Vec<Metric>) -> Result<(), CollectError> {
        Ok(())
    }
}
