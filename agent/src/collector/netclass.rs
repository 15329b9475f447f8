//! TODO

use std::path::PathBuf;

use twinwatch_common::sample::Metric;

use super::{CollectError, Collector, Roots};

pub struct NetClass {
    #[allow(dead_code)]
    root: PathBuf,
}

impl NetClass {
    pub fn new(r: &Roots) -> Self {
        NetClass { root: r.sys.clone() }
    }
}

impl Collector for NetClass {
    fn collect(&mut self, _out: &mut Vec<Metric>) -> Result<(), CollectError> {
        Ok(())
    }
}
