//! A kernel file kept open and re-read from the start each time.
//!
//! procfs and sysfs regenerate a file's text on every read from offset 0, so one descriptor
//! serves every sampling tick: a `pread` instead of a path walk, an open and a close. On a
//! small router that is most of what reading /proc/stat costs.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::CollectError;

/// How much of a file [`ProcFile::for_each_line`] holds at a time.
pub const CHUNK: usize = 16 << 10;

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

    /// Passes every line of the file, in order, to `each`, reading it [`CHUNK`] bytes at a time
    /// into `buf`: a file of any length (/proc/net/tcp on a busy host runs to megabytes) costs
    /// one chunk of memory, not its whole text. A line longer than the buffer doubles it. The
    /// first error `each` returns ends the reading and is returned. A descriptor that went bad
    /// before any line was passed on is reopened once.
    pub fn for_each_line(
        &mut self,
        buf: &mut Vec<u8>,
        mut each: impl FnMut(&str) -> Result<(), CollectError>,
    ) -> Result<(), CollectError> {
        let mut passed = false;
        match self.lines_once(buf, &mut each, &mut passed) {
            Err(CollectError::Read { .. }) if !passed && self.file.take().is_some() => {
                self.lines_once(buf, &mut each, &mut passed)
            }
            other => other,
        }
    }

    fn lines_once(
        &mut self,
        buf: &mut Vec<u8>,
        each: &mut dyn FnMut(&str) -> Result<(), CollectError>,
        passed: &mut bool,
    ) -> Result<(), CollectError> {
        let error = |path: &Path, source| CollectError::Read { path: path.to_owned(), source };
        if self.file.is_none() {
            self.file = Some(File::open(&self.path).map_err(|e| error(&self.path, e))?);
        }
        let file = self.file.as_ref().expect("opened above");
        if buf.len() < CHUNK {
            buf.resize(CHUNK, 0);
        }
        // `buf[..held]` is the start of a line whose end has not been read yet; it begins at
        // `offset` in the file. Reads follow each other without a gap, as seq_file likes them.
        let (mut offset, mut held) = (0u64, 0usize);
        loop {
            if held == buf.len() {
                buf.resize(buf.len() * 2, 0);
            }
            let n = loop {
                match file.read_at(&mut buf[held..], offset + held as u64) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(error(&self.path, e)),
                }
            };
            let end = held + n;
            // At the end of the file the last line counts even without its newline.
            let complete = if n == 0 { end } else { buf[..end].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1) };
            for line in String::from_utf8_lossy(&buf[..complete]).lines() {
                *passed = true;
                each(line)?;
            }
            if n == 0 {
                return Ok(());
            }
            buf.copy_within(complete..end, 0);
            offset += complete as u64;
            held = end - complete;
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
    fn lines_come_whole_across_chunks_and_the_buffer_stays_one_chunk() {
        let path = std::env::temp_dir().join(format!("twinwatch-procfile-lines-{}", std::process::id()));
        let mut text: String = (0..5000).map(|i| format!("line {i} {}\n", "x".repeat(i % 200))).collect();
        // A line longer than a chunk, and a last line without its newline.
        text.push_str(&"y".repeat(CHUNK + 10));
        text.push_str("\nlast");
        std::fs::write(&path, &text).unwrap();
        let mut f = ProcFile::new(path.clone());
        let mut buf = Vec::new();
        let mut lines = Vec::new();
        f.for_each_line(&mut buf, |l| {
            lines.push(l.to_owned());
            Ok(())
        })
        .unwrap();
        assert_eq!(lines, text.lines().collect::<Vec<_>>());
        assert_eq!(buf.len(), 2 * CHUNK, "doubled once for the long line, never to the file's length");

        let mut seen = 0;
        let stop = f.for_each_line(&mut buf, |_| {
            seen += 1;
            if seen == 3 {
                return Err(CollectError::Parse { what: "test", detail: "third".into() });
            }
            Ok(())
        });
        assert!(matches!(stop, Err(CollectError::Parse { .. })) && seen == 3);
        std::fs::remove_file(&path).unwrap();
        assert!(ProcFile::new(path).for_each_line(&mut buf, |_| Ok(())).is_err());
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
