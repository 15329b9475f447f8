//! A kernel file kept open and re-read from the start each time.
//!
//! procfs and sysfs regenerate a file's text on every read from offset 0, so one descriptor
//! serves every sampling tick: a `pread` instead of a path walk, an open and a close. On a
//! small router that is most of what reading /proc/stat costs.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::CollectError;

#[derive(Debug)]
pub struct ProcFile {
    path: PathBuf,
    file: Option<File>,
}

impl ProcFile {
    pub fn new(path: PathBuf) -> Self {
        ProcFile { path, file: None }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the whole file into `buf` (replacing its contents, reusing its allocation). A
    /// descriptor that went bad (the interface or device behind it was removed) is reopened once.
    pub fn read(&mut self, buf: &mut String) -> Result<(), CollectError> {
        match self.read_once(buf) {
            Ok(()) => Ok(()),
            Err(_) if self.file.take().is_some() => self.read_once(buf),
            Err(e) => Err(e),
        }
    }

    fn read_once(&mut self, buf: &mut String) -> Result<(), CollectError> {
        let error = |path: &Path, source| CollectError::Read { path: path.to_owned(), source };
        if self.file.is_none() {
            self.file = Some(File::open(&self.path).map_err(|e| error(&self.path, e))?);
        }
        let file = self.file.as_ref().expect("opened above");
        let mut bytes = std::mem::take(buf).into_bytes();
        bytes.clear();
        if bytes.capacity() < 4096 {
            bytes.reserve(4096);
        }
        let result = loop {
            let len = bytes.len();
            let spare = bytes.capacity() - len;
            if spare == 0 {
                bytes.reserve(bytes.capacity());
                continue;
            }
            bytes.resize(len + spare, 0);
            match file.read_at(&mut bytes[len..], len as u64) {
                Ok(0) => {
                    bytes.truncate(len);
                    break Ok(());
                }
                Ok(n) => bytes.truncate(len + n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => bytes.truncate(len),
                Err(e) => {
                    bytes.truncate(0);
                    break Err(error(&self.path, e));
                }
            }
        };
        *buf = String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rereads_see_new_contents_and_a_replaced_file_is_reopened() {
        let path = std::env::temp_dir().join(format!("twinwatch-procfile-{}", std::process::id()));
        std::fs::write(&path, "first\n").unwrap();
        let mut f = ProcFile::new(path.clone());
        let mut buf = String::new();
        f.read(&mut buf).unwrap();
        assert_eq!(buf, "first\n");
        // Rewritten in place: the same descriptor reads the new text from the start.
        std::fs::write(&path, "second, longer than the first\n").unwrap();
        f.read(&mut buf).unwrap();
        assert_eq!(buf, "second, longer than the first\n");
        let big = "x".repeat(100_000);
        std::fs::write(&path, &big).unwrap();
        f.read(&mut buf).unwrap();
        assert_eq!(buf.len(), 100_000);
        std::fs::remove_file(&path).unwrap();
        assert!(ProcFile::new(path).read(&mut buf).is_err());
    }

    #[test]
    fn proc_stat_changes_between_reads_of_one_descriptor() {
        let mut f = ProcFile::new("/proc/self/stat".into());
        let mut buf = String::new();
        f.read(&mut buf).unwrap();
        assert!(buf.contains(')'));
        let mut uptime = ProcFile::new("/proc/uptime".into());
        uptime.read(&mut buf).unwrap();
        let first = buf.clone();
        std::thread::sleep(std::time::Duration::from_millis(20));
        uptime.read(&mut buf).unwrap();
        assert_ne!(first, buf);
    }
}
