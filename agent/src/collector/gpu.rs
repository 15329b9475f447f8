//! GPU utilisation, memory, temperature and power: /sys/class/drm for AMD (amdgpu) cards, named
//! as node_exporter's drm collector names them, and `nvidia-smi` for NVIDIA cards when it is
//! installed, named as utkuozdemir/nvidia_gpu_exporter names them.
//!
//! amdgpu exposes `gpu_busy_percent` and `mem_info_*` (bytes) under `cardN/device`; the cards are
//! listed once and again every [`REDISCOVER_EVERY`] collections or when one vanishes. NVIDIA has
//! no such files, so `nvidia-smi` is run once per collection, with a deadline: it is known to hang
//! when a GPU has fallen off the bus, and the sampler must not hang with it.

mod child;
mod nvidia_smi;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use twinwatch_common::sample::{Metric, SeriesKey, Value};

use super::hwmon::{clean, vanished, REDISCOVER_EVERY};
use super::{list_dir, read_attr, read_into, CollectError, Collector, Roots};
use child::{resolve, run, Run, NVIDIA_SMI_DEADLINE};
use nvidia_smi::parse_nvidia_smi;

/// amdgpu's numeric files under `cardN/device` and node_exporter's names for them, all plain
/// numbers (percent, bytes).
const AMD_FILES: &[(&str, &str)] = &[
    ("gpu_busy_percent", "node_drm_gpu_busy_percent"),
    ("mem_info_gtt_total", "node_drm_memory_gtt_size_bytes"),
    ("mem_info_gtt_used", "node_drm_memory_gtt_used_bytes"),
    ("mem_info_vis_vram_total", "node_drm_memory_vis_vram_size_bytes"),
    ("mem_info_vis_vram_used", "node_drm_memory_vis_vram_used_bytes"),
    ("mem_info_vram_total", "node_drm_memory_vram_size_bytes"),
    ("mem_info_vram_used", "node_drm_memory_vram_used_bytes"),
];

/// amdgpu's text files that label `node_drm_card_info`, with node_exporter's label names.
const AMD_INFO: &[(&str, &str)] = &[
    ("mem_info_vram_vendor", "memory_vendor"),
    ("power_dpm_force_performance_level", "power_performance_level"),
    ("unique_id", "unique_id"),
];

/// One amdgpu card: its name, the device files it has with finished keys, and its info files.
struct Card {
    name: String,
    chip: Option<String>,
    numbers: Vec<(PathBuf, SeriesKey)>,
    info: Vec<(&'static str, PathBuf)>,
}

pub struct Gpu {
    drm: PathBuf,
    cards: Vec<Card>,
    collections: u64,
    stale: bool,
    /// `nvidia-smi`, found at construction; `None`: no NVIDIA driver here, nothing to ask.
    nvidia_smi: Option<PathBuf>,
    deadline: Duration,
    /// An `nvidia-smi` killed at the deadline that had not yet died: no other is started until it
    /// has, so a GPU that hangs every call costs one process, not one per collection.
    lingering: Option<Child>,
    buf: String,
}

impl Gpu {
    pub fn new(roots: &Roots, nvidia_smi: Option<PathBuf>) -> Self {
        let path_var = std::env::var_os("PATH");
        Gpu {
            drm: roots.sys.join("class/drm"),
            cards: Vec::new(),
            collections: 0,
            stale: true,
            nvidia_smi: nvidia_smi.and_then(|p| resolve(&p, path_var.as_deref())),
            deadline: NVIDIA_SMI_DEADLINE,
            lingering: None,
            buf: String::with_capacity(32),
        }
    }

    /// Lists `cardN` (not the `cardN-DP-1` connectors) driven by amdgpu.
    fn discover(&mut self) -> Result<(), CollectError> {
        self.cards.clear();
        let mut cards: Vec<(String, PathBuf)> = list_dir(&self.drm)?
            .into_iter()
            .filter(|(name, _)| {
                name.strip_prefix("card").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            })
            .collect();
        cards.sort();
        for (name, dir) in cards {
            let device = dir.join("device");
            let amd = read_attr(&device.join("uevent"), &mut self.buf).is_some()
                && self.buf.lines().any(|l| l.trim() == "DRIVER=amdgpu");
            if !amd {
                continue;
            }
            // node_exporter's chip label: the device's bus address and its parent's.
            let chip = std::fs::canonicalize(&device).ok().and_then(|real| {
                let part = |p: &Path| p.file_name().map(|n| clean(&n.to_string_lossy())).filter(|n| !n.is_empty());
                let name = part(&real)?;
                Some(match real.parent().and_then(part) {
                    Some(bus) => format!("{bus}_{name}"),
                    None => name,
                })
            });
            let numbers = AMD_FILES
                .iter()
                .map(|(file, metric)| (device.join(file), SeriesKey::new(*metric).with("card", name.as_str())))
                .filter(|(path, _)| path.is_file())
                .collect();
            let info = AMD_INFO.iter().map(|(file, label)| (*label, device.join(file))).collect();
            self.cards.push(Card { name, chip, numbers, info });
        }
        Ok(())
    }

    fn collect_amd(&mut self, out: &mut Vec<Metric>) -> Result<(), CollectError> {
        if self.stale || self.collections % REDISCOVER_EVERY == 0 {
            self.stale = false;
            self.discover()?;
        }
        self.collections += 1;
        for card in &self.cards {
            let mut info = SeriesKey::new("node_drm_card_info").with("card", card.name.as_str()).with("vendor", "amd");
            if let Some(chip) = &card.chip {
                info = info.with("chip", chip.as_str());
            }
            for (label, path) in &card.info {
                if read_attr(path, &mut self.buf).is_some() && !self.buf.trim().is_empty() {
                    info = info.with(label, self.buf.trim());
                }
            }
            out.push(Metric::gauge(info, Value::Int(1)));
            for (path, key) in &card.numbers {
                // gpu_busy_percent refuses reads while the GPU sleeps: left out this time.
                if let Err(e) = read_into(path, &mut self.buf) {
                    self.stale |= vanished(&e);
                    continue;
                }
                let Ok(value) = self.buf.trim().parse::<i64>() else { continue };
                out.push(Metric::gauge(key.clone(), Value::Int(value)));
            }
        }
        Ok(())
    }

    fn collect_nvidia(&mut self, out: &mut Vec<Metric>) -> Result<(), CollectError> {
        let Some(program) = &self.nvidia_smi else { return Ok(()) };
        let failed = |source: std::io::Error| CollectError::Read { path: program.clone(), source };
        if let Some(child) = &mut self.lingering {
            match child.try_wait() {
                Ok(None) => {
                    let msg = "the nvidia-smi killed at the last deadline has still not exited";
                    return Err(failed(std::io::Error::new(std::io::ErrorKind::TimedOut, msg)));
                }
                Ok(Some(_)) | Err(_) => self.lingering = None,
            }
        }
        match run(program, self.deadline).map_err(failed)? {
            Run::TimedOut(child) => {
                self.lingering = child;
                let msg = format!("no answer within {:?}; killed", self.deadline);
                Err(failed(std::io::Error::new(std::io::ErrorKind::TimedOut, msg)))
            }
            Run::Exited(status, output) => {
                let text = String::from_utf8_lossy(&output);
                if !status.success() {
                    // nvidia-smi explains itself on standard output ("couldn't communicate with
                    // the NVIDIA driver").
                    let said = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
                    return Err(failed(std::io::Error::other(format!("{status}: {said}"))));
                }
                parse_nvidia_smi(&text, out)
            }
        }
    }
}

impl Collector for Gpu {
    fn collect(&mut self, out: &mut Vec<Metric>) -> Result<(), CollectError> {
        // An AMD failure does not keep NVIDIA cards from being read; the first error is reported.
        let amd = self.collect_amd(out);
        let nvidia = self.collect_nvidia(out);
        amd.and(nvidia)
    }
}

#[cfg(test)]
mod tests;
