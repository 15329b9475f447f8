//! Filesystem size, free space and inodes for every real mount in /proc/self/mounts.

use std::collections::HashSet;

use twinwatch_common::sample::{Metric, SeriesKey, Value};

use super::CollectError;

/// node_exporter's default excluded filesystem types.
const PSEUDO_TYPES: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "fusectl",
    "hugetlbfs",
    "iso9660",
    "mqueue",
    "nsfs",
    "overlay",
    "proc",
    "procfs",
    "pstore",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "sysfs",
    "tracefs",
];

/// One mount worth reporting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub device: String,
    pub mountpoint: String,
    pub fstype: String,
    pub read_only: bool,
}

/// Undoes the octal escapes the kernel writes for spaces, tabs and backslashes (`\040`).
fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 4).and_then(|oct| u8::from_str_radix(oct, 8).ok());
        match code {
            Some(byte) => {
                out.push(byte as char);
                rest = &rest[at + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// node_exporter's default excluded mount points: `^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)`.
fn excluded_mountpoint(path: &str) -> bool {
    let under = |prefix: &str| path == prefix || path.starts_with(&format!("{prefix}/"));
    under("/dev")
        || under("/proc")
        || under("/sys")
        || path.starts_with("/run/credentials/")
        || path.starts_with("/var/lib/docker/")
        || path.starts_with("/var/lib/containers/storage/")
}

/// The mounts worth reporting, first mount of each mount point winning.
pub fn parse_mounts(text: &str) -> Vec<Mount> {
    let mut seen = HashSet::new();
    let mut mounts = Vec::new();
    for line in text.lines() {
        let mut f = line.split_ascii_whitespace();
        let (Some(device), Some(mountpoint), Some(fstype), Some(options)) = (f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let mountpoint = unescape(mountpoint);
        if PSEUDO_TYPES.contains(&fstype) || excluded_mountpoint(&mountpoint) || !seen.insert(mountpoint.clone()) {
            continue;
        }
        mounts.push(Mount {
            device: unescape(device),
            mountpoint,
            fstype: fstype.to_owned(),
            read_only: options.split(',').any(|o| o == "ro"),
        });
    }
    mounts
}

/// Reads usage of every mount listed in `mounts_text` with statvfs.
pub fn collect(mounts_text: &str, out: &mut Vec<Metric>) -> Result<(), CollectError> {
    for mount in parse_mounts(mounts_text) {
        let Ok(st) = nix::sys::statvfs::statvfs(mount.mountpoint.as_str()) else {
            continue; // vanished or permission denied: that mount only
        };
        let frsize = st.fragment_size() as i64;
        let key = |name: &str| {
            SeriesKey::new(name)
                .with("device", mount.device.as_str())
                .with("fstype", mount.fstype.as_str())
                .with("mountpoint", mount.mountpoint.as_str())
        };
        let gauge = |name: &str, v: i64| Metric::gauge(key(name), Value::Int(v));
        out.push(gauge("node_filesystem_size_bytes", st.blocks() as i64 * frsize));
        out.push(gauge("node_filesystem_free_bytes", st.blocks_free() as i64 * frsize));
        out.push(gauge("node_filesystem_avail_bytes", st.blocks_available() as i64 * frsize));
        out.push(gauge("node_filesystem_files", st.files() as i64));
        out.push(gauge("node_filesystem_files_free", st.files_free() as i64));
        out.push(gauge("node_filesystem_readonly", mount.read_only as i64));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudo_filesystems_and_system_paths_are_excluded() {
        let text = "/dev/vda / ext4 rw,relatime 0 0
proc /proc proc rw 0 0
sysfs /sys sysfs rw 0 0
tmpfs /run tmpfs rw,nosuid 0 0
/dev/vdb /mnt/my\\040disk ext4 ro,relatime 0 0
overlay /var/lib/docker/overlay2/x/merged overlay rw 0 0
/dev/vda / ext4 rw 0 0
devtmpfs /dev devtmpfs rw 0 0
";
        let mounts = parse_mounts(text);
        let points: Vec<_> = mounts.iter().map(|m| m.mountpoint.as_str()).collect();
        assert_eq!(points, ["/", "/run", "/mnt/my disk"]);
        assert!(mounts[2].read_only && !mounts[0].read_only);
    }

    #[test]
    fn the_root_filesystem_has_a_size() {
        let mut out = Vec::new();
        collect("/dev/root / ext4 rw 0 0\n", &mut out).unwrap();
        let size = out.iter().find(|m| m.key.name == "node_filesystem_size_bytes").unwrap();
        assert!(size.value.as_f64() > 0.0);
    }
}
