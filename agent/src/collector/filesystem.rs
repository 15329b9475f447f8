//! Filesystem size, free space and inodes for every real mount in /proc/self/mounts.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use twinwatch_common::sample::{Metric, SeriesKey, Value};

use super::{read_into, CollectError, Collector, Roots};

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

/// What statvfs says of one filesystem, in blocks of `block` bytes and inodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub block: u64,
    pub size: u64,
    pub free: u64,
    pub avail: u64,
    pub files: u64,
    pub files_free: u64,
}

/// Asks the kernel for one mount's usage; may block forever on a dead network filesystem.
pub type StatFn = fn(&str) -> std::io::Result<Usage>;

pub fn statvfs(mountpoint: &str) -> std::io::Result<Usage> {
    let st = nix::sys::statvfs::statvfs(mountpoint).map_err(std::io::Error::from)?;
    Ok(Usage {
        block: st.fragment_size() as u64,
        size: st.blocks() as u64,
        free: st.blocks_free() as u64,
        avail: st.blocks_available() as u64,
        files: st.files() as u64,
        files_free: st.files_free() as u64,
    })
}

/// How long one collection waits for statvfs before it calls the mount stuck.
pub const STAT_TIMEOUT: Duration = Duration::from_secs(1);

/// A mount whose statvfs has not returned; skipped until it does.
type Stuck = Arc<Mutex<HashSet<String>>>;

/// A thread that runs statvfs calls so a hung mount blocks it, not the sampler.
struct Worker {
    jobs: mpsc::Sender<String>,
    results: mpsc::Receiver<(String, std::io::Result<Usage>)>,
}

impl Worker {
    fn spawn(stat: StatFn, stuck: Stuck) -> std::io::Result<Worker> {
        let (jobs, inbox) = mpsc::channel::<String>();
        let (outbox, results) = mpsc::channel();
        std::thread::Builder::new().name("statvfs".into()).spawn(move || {
            for mountpoint in inbox {
                let usage = stat(&mountpoint);
                // Once the collector has given up on this call the mount is in `stuck`: it has
                // returned now, so it may be asked again.
                stuck.lock().unwrap_or_else(|e| e.into_inner()).remove(&mountpoint);
                if outbox.send((mountpoint, usage)).is_err() {
                    return; // abandoned after a hang; a new worker serves the collector
                }
            }
        })?;
        Ok(Worker { jobs, results })
    }
}

/// Size, free space and inodes of every real mount, with statvfs off the sampling thread.
pub struct Filesystems {
    mounts_path: PathBuf,
    stat: StatFn,
    timeout: Duration,
    worker: Option<Worker>,
    stuck: Stuck,
    buf: String,
}

impl Filesystems {
    pub fn new(roots: &Roots) -> Self {
        Self::with_stat(roots.proc.join("self/mounts"), statvfs, STAT_TIMEOUT)
    }

    pub fn with_stat(mounts_path: PathBuf, stat: StatFn, timeout: Duration) -> Self {
        Filesystems { mounts_path, stat, timeout, worker: None, stuck: Stuck::default(), buf: String::new() }
    }

    /// Mounts currently skipped because statvfs hung on them.
    pub fn stuck(&self) -> usize {
        self.stuck.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Collector for Filesystems {
    fn collect(&mut self, out: &mut Vec<Metric>) -> Result<(), CollectError> {
        read_into(&self.mounts_path, &mut self.buf)?;
        let mounts = parse_mounts(&self.buf);
        let worker = match self.worker.take() {
            Some(w) => w,
            None => Worker::spawn(self.stat, self.stuck.clone())
                .map_err(|source| CollectError::Read { path: "statvfs worker".into(), source })?,
        };
        let mut asked = Vec::new();
        for mount in &mounts {
            if self.stuck.lock().unwrap_or_else(|e| e.into_inner()).contains(&mount.mountpoint) {
                continue;
            }
            if worker.jobs.send(mount.mountpoint.clone()).is_ok() {
                asked.push(mount);
            }
        }
        let deadline = Instant::now() + self.timeout;
        let mut hung = false;
        for mount in asked {
            let left = deadline.saturating_duration_since(Instant::now());
            let usage = match worker.results.recv_timeout(left) {
                Ok((_, usage)) => usage,
                Err(_) => {
                    // The worker is blocked on this mount (answers come in order). Leave it there
                    // and skip the mount until its call returns; the rest wait for the next round.
                    self.stuck.lock().unwrap_or_else(|e| e.into_inner()).insert(mount.mountpoint.clone());
                    tracing::warn!(mountpoint = %mount.mountpoint, "statvfs did not return; skipping this mount");
                    hung = true;
                    break;
                }
            };
            let Ok(u) = usage else {
                continue; // vanished or permission denied: that mount only
            };
            let key = |name: &str| {
                SeriesKey::new(name)
                    .with("device", mount.device.as_str())
                    .with("fstype", mount.fstype.as_str())
                    .with("mountpoint", mount.mountpoint.as_str())
            };
            let gauge = |name: &str, v: u64| Metric::gauge(key(name), Value::Int(v as i64));
            // Sizes travel in blocks, so a 4 kB write changes them by one.
            let blocks = |name: &str, v: u64| gauge(name, v).scaled(u.block.max(1) as f64);
            out.push(blocks("node_filesystem_size_bytes", u.size));
            out.push(blocks("node_filesystem_free_bytes", u.free));
            out.push(blocks("node_filesystem_avail_bytes", u.avail));
            out.push(gauge("node_filesystem_files", u.files));
            out.push(gauge("node_filesystem_files_free", u.files_free));
            out.push(gauge("node_filesystem_readonly", mount.read_only as u64));
        }
        if !hung {
            self.worker = Some(worker);
        }
        let stuck = self.stuck() as i64;
        out.push(Metric::gauge(SeriesKey::new("twinwatch_filesystem_stuck_mounts"), Value::Int(stuck)));
        Ok(())
    }
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

    fn mounts_file(name: &str, text: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("twinwatch-mounts-{name}-{}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path
    }

    fn sizes(out: &[Metric]) -> Vec<(&str, f64)> {
        out.iter()
            .filter(|m| m.key.name == "node_filesystem_size_bytes")
            .map(|m| (m.key.label("mountpoint").unwrap(), m.real()))
            .collect()
    }

    #[test]
    fn the_root_filesystem_has_a_size() {
        let mut fs = Filesystems::with_stat(mounts_file("root", "/dev/root / ext4 rw 0 0\n"), statvfs, STAT_TIMEOUT);
        let mut out = Vec::new();
        fs.collect(&mut out).unwrap();
        assert!(sizes(&out)[0].1 > 0.0);
    }

    /// Stands in for a dead NFS server: `/hung` blocks for a while, everything else answers.
    fn hanging_stat(mountpoint: &str) -> std::io::Result<Usage> {
        if mountpoint == "/hung" {
            std::thread::sleep(Duration::from_millis(1500));
        }
        Ok(Usage { block: 4096, size: 1, free: 0, avail: 0, files: 10, files_free: 5 })
    }

    #[test]
    fn a_hung_mount_is_skipped_without_stalling_the_others() {
        let text = "/dev/a /a ext4 rw 0 0\nserver:/x /hung nfs rw 0 0\n/dev/b /b ext4 rw 0 0\n";
        let mut fs = Filesystems::with_stat(mounts_file("hung", text), hanging_stat, Duration::from_millis(200));
        let started = Instant::now();
        let mut out = Vec::new();
        fs.collect(&mut out).unwrap();
        assert!(started.elapsed() < Duration::from_millis(1000), "collect waited for the hung mount");
        assert_eq!(sizes(&out), [("/a", 4096.0)]);
        assert_eq!(fs.stuck(), 1);
        // While the call hangs, the mount is skipped and the others are read by a fresh worker.
        let mut out = Vec::new();
        fs.collect(&mut out).unwrap();
        assert_eq!(sizes(&out), [("/a", 4096.0), ("/b", 4096.0)]);
        // Once it returns, it is asked again (and hangs again, bounded by the timeout).
        std::thread::sleep(Duration::from_millis(1600));
        assert_eq!(fs.stuck(), 0);
    }
}
