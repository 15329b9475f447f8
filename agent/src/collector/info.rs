//! What the host is, as node_exporter's info series: `node_uname_info` and `node_os_info`.

use std::path::PathBuf;

use twinwatch_common::sample::{Metric, SeriesKey, Value};

use super::{read_into, CollectError, Collector, Roots};

/// `node_os_info` from an os-release file's text.
pub fn os_info(os_release: &str) -> Metric {
    let mut key = SeriesKey::new("node_os_info");
    for line in os_release.lines() {
        let Some((field, value)) = line.split_once('=') else { continue };
        let label = match field {
            "BUILD_ID" | "ID" | "ID_LIKE" | "IMAGE_ID" | "IMAGE_VERSION" | "NAME" | "PRETTY_NAME" | "VARIANT"
            | "VARIANT_ID" | "VERSION" | "VERSION_CODENAME" | "VERSION_ID" => field.to_ascii_lowercase(),
            _ => continue,
        };
        key = key.with(&label, value.trim().trim_matches('"'));
    }
    Metric::gauge(key, Value::Int(1))
}

pub struct Info {
    os_release: [PathBuf; 2],
    buf: String,
}

impl Info {
    pub fn new(_roots: &Roots) -> Self {
        Info { os_release: ["/etc/os-release".into(), "/usr/lib/os-release".into()], buf: String::new() }
    }
}

impl Collector for Info {
    fn collect(&mut self, out: &mut Vec<Metric>) -> Result<(), CollectError> {
        let uname =
            nix::sys::utsname::uname().map_err(|e| CollectError::Read { path: "uname(2)".into(), source: e.into() })?;
        let s = |v: &std::ffi::OsStr| v.to_string_lossy().into_owned();
        let key = SeriesKey::new("node_uname_info")
            .with("domainname", s(uname.domainname()))
            .with("machine", s(uname.machine()))
            .with("nodename", s(uname.nodename()))
            .with("release", s(uname.release()))
            .with("sysname", s(uname.sysname()))
            .with("version", s(uname.version()));
        out.push(Metric::gauge(key, Value::Int(1)));
        let read =
            read_into(&self.os_release[0], &mut self.buf).or_else(|_| read_into(&self.os_release[1], &mut self.buf));
        if read.is_ok() {
            out.push(os_info(&self.buf));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_fields_become_labels() {
        let m = os_info("PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nHOME_URL=\"https://www.debian.org/\"\nID=debian\n");
        assert_eq!(m.key.label("pretty_name"), Some("Debian GNU/Linux 12 (bookworm)"));
        assert_eq!(m.key.label("id"), Some("debian"));
        assert_eq!(m.key.label("version_id"), Some("12"));
        assert_eq!(m.key.labels.len(), 4);
    }

    #[test]
    fn this_host_has_a_uname() {
        let mut out = Vec::new();
        Info::new(&Roots::default()).collect(&mut out).unwrap();
        assert!(out[0].key.label("sysname") == Some("Linux"));
    }
}
