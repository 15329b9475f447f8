//! Power supplies (mains, batteries, UPS) from /sys/class/power_supply.

use std::path::PathBuf;

use twinwatch_common::sample::Metric;

use super::{CollectError, Collector, Roots};

pub struct PowerSupply {
    #[allow(dead_code)]
    root: PathBuf,
}

impl PowerSupply {
    pub fn new(roots: &Roots) -> Self {
        PowerSupply { root: roots.sys.clone() }
    }
}

impl Collector for PowerSupply {
    fn collect(&mut self, _out: &mut Vec<Metric>) -> Result<(), CollectError> {
        Ok(())
    }
}
