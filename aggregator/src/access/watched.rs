//! Small state files shared by the running aggregator and its CLI: read again when they change,
//! written under a lock, and owned like the directory they live in.
//!
//! The token file, the revocation list and the audit log are each changed by two processes: the
//! aggregator (through the admin API) and `twinwatch-aggregator tokens|certs ...` run by an
//! operator. Writers take an exclusive `flock` on a `.lock` file beside the data; readers stat the
//! file and re-read it only when its stamp (modification time, size, inode) moved.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Largest state file read: beyond this a file is refused, not read into memory.
pub const MAX_FILE_BYTES: u64 = 4 << 20;

/// What changes when a file is rewritten or appended to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

/// The file's stamp, or `None` if it does not exist (or cannot be read).
pub fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp { modified: m.modified().ok(), len: m.len(), inode: m.ino() })
}

/// Reads a state file as text: empty if it does not exist, an error past [`MAX_FILE_BYTES`].
pub fn read_text(path: &Path) -> std::io::Result<String> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(e),
    };
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(std::io::Error::other(format!("larger than {MAX_FILE_BYTES} bytes")));
    }
    Ok(text)
}

/// An exclusive lock on `<path>.lock`, held until dropped.
pub struct Lock(#[allow(dead_code)] nix::fcntl::Flock<File>);

/// Takes the exclusive lock that guards changes to `path`, creating its directory if needed.
pub fn lock(path: &Path) -> std::io::Result<Lock> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let lock_path = lock_path(path);
    let file = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(&lock_path)?;
    own_like_parent(&lock_path);
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map(Lock)
        .map_err(|(_, errno)| std::io::Error::from(errno))
}

fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".lock");
    path.with_file_name(name)
}

/// Replaces `path` with `contents` (mode 0600) through a temporary file and a rename, so a reader
/// sees the old file or the new one, never half of one. The caller holds the [`lock`].
pub fn replace(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    own_like_parent(&tmp);
    std::fs::rename(&tmp, path)?;
    sync_dir(path);
    Ok(())
}

/// Appends `line` (which ends in a newline) to `path` (created with mode 0600) and syncs it. The
/// caller holds the [`lock`].
pub fn append(path: &Path, line: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let created = !path.exists();
    let mut f = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
    f.write_all(line.as_bytes())?;
    f.sync_data()?;
    if created {
        own_like_parent(path);
        sync_dir(path);
    }
    Ok(())
}

/// Makes the directory entry of a new or renamed file durable.
pub fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent() {
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
}

/// When run as root, gives `path` to the owner of its directory: a file the CLI creates with
/// `sudo` in `/var/lib/twinwatch/aggregator` stays usable by the aggregator's own user.
pub fn own_like_parent(path: &Path) {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let Some(dir) = path.parent().and_then(|d| std::fs::metadata(d).ok()) else { return };
    let _ = std::os::unix::fs::chown(path, Some(dir.uid()), Some(dir.gid()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_move_on_append_and_replace() {
        let dir = std::env::temp_dir().join(format!("twinwatch-watched-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("state");
        assert_eq!(stamp(&path), None);
        assert_eq!(read_text(&path).unwrap(), "");
        let _lock = lock(&path).unwrap();
        append(&path, "a\n").unwrap();
        let first = stamp(&path).unwrap();
        append(&path, "b\n").unwrap();
        assert_ne!(stamp(&path).unwrap(), first);
        replace(&path, "c\n").unwrap();
        assert_eq!(read_text(&path).unwrap(), "c\n");
        std::fs::write(&path, vec![b'x'; MAX_FILE_BYTES as usize + 1]).unwrap();
        assert!(read_text(&path).is_err(), "an oversized file is refused");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
