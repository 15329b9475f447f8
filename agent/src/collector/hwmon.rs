//! Temperatures, fans, voltages, currents, power and energy from /sys/class/hwmon, named as
//! node_exporter's hwmon collector names them.
//!
//! Each `hwmonN` directory (and its `device` directory, where older drivers put their files) holds
//! one small file per sensor attribute, `<type><n>_<property>`: `temp1_input`, `fan2_min`,
//! `in0_input`. Listing directories and resolving links costs more than reading those files, so
//! the list of attribute files, each with its finished series key, is built once and rebuilt every
//! [`REDISCOVER_EVERY`] collections, or sooner when a file has vanished (a driver reload renumbers
//! the chips). Labels and chip names are read at discovery only: they do not change while a chip
//! exists.

mod discover;

use std::path::PathBuf;

use twinwatch_common::sample::{Kind, Metric, Value};

use super::{list_dir, read_into, CollectError, Collector, Roots};
pub(crate) use discover::clean;
use discover::{discover_chip, Attr, Read};

/// How many collections a discovered file list serves before the directories are listed again.
pub(crate) const REDISCOVER_EVERY: u64 = 60;

/// A sensor value as node_exporter parses it: integers stay integers, anything else that reads as
/// a number becomes a float.
fn parse_value(text: &str) -> Option<Value> {
    if let Ok(v) = text.parse::<i64>() {
        return Some(Value::Int(v));
    }
    text.parse::<f64>().ok().filter(|v| v.is_finite()).map(Value::Float)
}

/// Whether a failed read means the file list is out of date: the file or its device is gone.
pub(crate) fn vanished(e: &CollectError) -> bool {
    match e {
        CollectError::Read { source, .. } => {
            source.kind() == std::io::ErrorKind::NotFound || source.raw_os_error() == Some(libc::ENODEV)
        }
        CollectError::Parse { .. } => false,
    }
}

/// Every hwmon chip's sensors.
pub struct Hwmon {
    class: PathBuf,
    attrs: Vec<Attr>,
    annotations: Vec<Metric>,
    collections: u64,
    stale: bool,
    buf: String,
}

impl Hwmon {
    pub fn new(roots: &Roots) -> Self {
        Hwmon {
            class: roots.sys.join("class/hwmon"),
            attrs: Vec::new(),
            annotations: Vec::new(),
            collections: 0,
            stale: true,
            buf: String::with_capacity(64),
        }
    }

    /// Lists the chips and their attribute files. A host without hwmon has none.
    fn discover(&mut self) -> Result<(), CollectError> {
        self.attrs.clear();
        self.annotations.clear();
        for (_, dir) in list_dir(&self.class)?.into_iter().filter(|(_, p)| p.is_dir()) {
            // A chip that cannot be named is skipped; the others are still reported.
            discover_chip(&dir, &mut self.buf, &mut self.attrs, &mut self.annotations);
        }
        Ok(())
    }
}

impl Collector for Hwmon {
    fn collect(&mut self, out: &mut Vec<Metric>) -> Result<(), CollectError> {
        if self.stale || self.collections % REDISCOVER_EVERY == 0 {
            self.stale = false;
            self.discover()?;
        }
        self.collections += 1;
        out.extend(self.annotations.iter().cloned());
        for attr in &self.attrs {
            if let Err(e) = read_into(&attr.path, &mut self.buf) {
                // Sensors that are not wired up answer EIO or ENODATA: skip them quietly.
                self.stale |= vanished(&e);
                continue;
            }
            let text = self.buf.trim();
            let value = match attr.read {
                Read::Flag => Value::Int((text == "1") as i64),
                Read::Number => match parse_value(text) {
                    Some(v) => v,
                    None => continue,
                },
            };
            let metric = match attr.kind {
                Kind::Counter => Metric::counter(attr.key.clone(), value),
                Kind::Gauge => Metric::gauge(attr.key.clone(), value),
            };
            out.push(metric.scaled(attr.scale));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
