//! GPU memory and utilisation: sysfs for AMD and Intel, `nvidia-smi` for NVIDIA when installed.

use std::path::PathBuf;

use twinwatch_common::sample::Metric;

use super::{CollectError, Collector, Roots};

pub struct Gpu {
    #[allow(dead_code)]
    root: PathBuf,
    #[allow(dead_code)]
    nvidia_smi: Option<PathBuf>,
}

impl Gpu {
    pub fn new(roots: &Roots, nvidia_smi: Option<PathBuf>) -> Self {
        Gpu { root: roots.sys.clone(), nvidia_smi }
    }
}

impl Collector for Gpu {
    fn collect(&mut self, _out: &mut Vec<Metric>) -> Result<(), CollectError> {
        Ok(())
    }
}
