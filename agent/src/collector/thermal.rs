//! Thermal zone temperatures from /sys/class/thermal.

use std::path::PathBuf;

use twinwatch_common::sample::Metric;

use super::{CollectError, Collector, Roots};

pub struct Thermal {
    #[allow(dead_code)]
    root: PathBuf,
}

impl Thermal {
    pub fn new(roots: &Roots) -> Self {
        Thermal { root: roots.sys.clone() }
    }
}

impl Collector for Thermal {
    fn collect(&mut self, _out: &mut Vec<Metric>) -> Result<(), CollectError> {
        Ok(())
    }
}
