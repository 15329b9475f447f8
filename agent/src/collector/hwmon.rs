//! Temperatures, fans, voltages and power from /sys/class/hwmon.

use std::path::PathBuf;

use twinwatch_common::sample::Metric;

use super::{CollectError, Collector, Roots};

pub struct Hwmon {
    #[allow(dead_code)]
    root: PathBuf,
}

impl Hwmon {
    pub fn new(roots: &Roots) -> Self {
        Hwmon { root: roots.sys.clone() }
    }
}

impl Collector for Hwmon {
    fn collect(&mut self, _out: &mut Vec<Metric>) -> Result<(), CollectError> {
        Ok(())
    }
}
