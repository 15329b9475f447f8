//! The audit log: every admin action (who, what, on what, with what outcome, when, from where),
//! one JSON object a line in `<data_dir>/audit.log`, appended and synced before the action is
//! answered.
//!
//! Written by the aggregator for admin API calls (and refused attempts at them) and by the CLI
//! for `tokens` and `certs` commands, under the file lock both share. Bounded: past
//! `max_file_size` the file is rotated to `audit.log.1` (older ones shift up to `audit.log.<keep>`,
//! the oldest is deleted). Reading takes the newest records first and never more than
//! `max_file_size` twice from one file; a line that does not decode is skipped, never a panic.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use twinwatch_common::time::{parse_rfc3339, rfc3339};

use crate::access::watched;

/// Longest line read back; longer ones are skipped.
pub const MAX_LINE: usize = 4096;
/// Longest field kept when a record is written (detail: four times this).
const MAX_FIELD: usize = 256;
/// Most records one read returns.
pub const MAX_READ: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Done.
    Ok,
    /// Refused: the caller's role does not allow it.
    Denied,
    /// Allowed, but it did not happen (unknown target, bad input, an I/O error).
    Failed,
}

/// One admin action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Record {
    /// RFC 3339, UTC.
    pub time: String,
    /// A token's name, or `cli:<unix user>`.
    pub who: String,
    /// The client's address for API calls; `local` for the CLI.
    pub from: String,
    /// `token.create`, `token.revoke`, `agent.revoke`, `certificate.revoke`, `certs.init`,
    /// `certs.issue`, or the method and path of a refused request.
    pub action: String,
    pub target: String,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

fn clip(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

impl Record {
    pub fn new(now_ms: i64, who: &str, from: &str, action: &str, target: &str, outcome: Outcome) -> Record {
        Record {
            time: rfc3339(now_ms),
            who: clip(who, MAX_FIELD),
            from: clip(from, MAX_FIELD),
            action: clip(action, MAX_FIELD),
            target: clip(target, MAX_FIELD),
            outcome,
            detail: String::new(),
        }
    }

    pub fn with_detail(mut self, detail: impl AsRef<str>) -> Record {
        self.detail = clip(detail.as_ref(), 4 * MAX_FIELD);
        self
    }

    /// The record's line, newline included.
    pub fn encode(&self) -> String {
        let mut line = serde_json::to_string(self).unwrap_or_default();
        line.push('\n');
        line
    }

    /// A record from one line, or `None` if it is not one.
    pub fn decode(line: &str) -> Option<Record> {
        if line.len() > MAX_LINE {
            return None;
        }
        let r: Record = serde_json::from_str(line).ok()?;
        parse_rfc3339(&r.time).map(|_| r)
    }
}

/// The CLI's identity in the log: `cli:<user>`, and where it ran from.
pub fn cli_caller() -> (String, String) {
    let uid = nix::unistd::getuid();
    let user = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| format!("uid{}", uid.as_raw()));
    let from = match std::env::var("SUDO_USER") {
        Ok(by) if !by.is_empty() && by != user => format!("local, sudo from {by}"),
        _ => "local".into(),
    };
    (format!("cli:{user}"), from)
}

/// The log's files and bounds.
#[derive(Debug, Clone)]
pub struct AuditLog {
    path: PathBuf,
    max_file_bytes: u64,
    keep: usize,
}

impl AuditLog {
    /// `path` (e.g. `<data_dir>/audit.log`), rotated past `max_file_bytes`, keeping `keep` old files.
    pub fn new(path: PathBuf, max_file_bytes: u64, keep: usize) -> AuditLog {
        AuditLog { path, max_file_bytes: max_file_bytes.max(MAX_LINE as u64), keep }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn rotated(&self, n: usize) -> PathBuf {
        let mut name = self.path.file_name().unwrap_or_default().to_owned();
        name.push(format!(".{n}"));
        self.path.with_file_name(name)
    }

    fn io(&self) -> impl Fn(std::io::Error) -> AuditError + '_ {
        |source| AuditError::Io { path: self.path.clone(), source }
    }

    /// Appends `record` and syncs it, rotating first if the file would grow past its bound.
    pub fn append(&self, record: &Record) -> Result<(), AuditError> {
        let line = record.encode();
        let _lock = watched::lock(&self.path).map_err(self.io())?;
        let size = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        if size > 0 && size + line.len() as u64 > self.max_file_bytes {
            self.rotate().map_err(self.io())?;
        }
        watched::append(&self.path, &line).map_err(self.io())
    }

    fn rotate(&self) -> std::io::Result<()> {
        if self.keep == 0 {
            return std::fs::remove_file(&self.path);
        }
        let _ = std::fs::remove_file(self.rotated(self.keep));
        for n in (1..self.keep).rev() {
            let from = self.rotated(n);
            if from.exists() {
                std::fs::rename(&from, self.rotated(n + 1))?;
            }
        }
        std::fs::rename(&self.path, self.rotated(1))?;
        watched::sync_dir(&self.path);
        Ok(())
    }

    /// The newest `limit` records (at most [`MAX_READ`]), newest first.
    pub fn recent(&self, limit: usize) -> Result<Vec<Record>, AuditError> {
        let limit = limit.min(MAX_READ);
        let mut out = Vec::new();
        for n in 0..=self.keep {
            if out.len() >= limit {
                break;
            }
            let path = if n == 0 { self.path.clone() } else { self.rotated(n) };
            let text = match tail(&path, 2 * self.max_file_bytes) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(AuditError::Io { path, source }),
            };
            out.extend(text.lines().rev().filter_map(Record::decode).take(limit - out.len()));
        }
        Ok(out)
    }
}

/// The last `cap` bytes of `path`, from the first whole line in them.
fn tail(path: &Path, cap: u64) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let mut bytes = Vec::new();
    if len > cap {
        f.seek(SeekFrom::Start(len - cap))?;
    }
    f.take(cap).read_to_end(&mut bytes)?;
    if len > cap {
        let cut = bytes.iter().position(|b| *b == b'\n').map_or(bytes.len(), |i| i + 1);
        bytes.drain(..cut);
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: i64) -> Record {
        Record::new(1_800_000_000_000 + i, "ops", "127.0.0.1:5000", "token.create", &format!("t{i}"), Outcome::Ok)
    }

    #[test]
    fn records_encode_to_one_line_and_back() {
        let r = Record::new(1_800_000_000_000, "cli:root", "local", "agent.revoke", "box\n-1", Outcome::Denied)
            .with_detail("x".repeat(5000));
        let line = r.encode();
        assert_eq!(line.matches('\n').count(), 1, "{line}");
        assert!(line.starts_with(r#"{"time":"2027-01-15T08:00:00.000Z","who":"cli:root","from":"local","action":"agent.revoke","target":"box-1","outcome":"denied","detail":"xxx"#), "{line}");
        let back = Record::decode(line.trim_end()).unwrap();
        assert_eq!((back.detail.len(), back.outcome), (1024, Outcome::Denied));
        assert_eq!(Record::decode(&record(0).encode()), Some(record(0)));
    }

    #[test]
    fn undecodable_lines_are_skipped_never_a_panic() {
        for line in [
            "",
            "{",
            "null",
            "[]",
            r#"{"time":"yesterday","who":"a","from":"","action":"","target":"","outcome":"ok"}"#,
            r#"{"time":"2027-01-15T08:00:00Z","who":"a","from":"","action":"","target":"","outcome":"maybe"}"#,
            "\u{0}\u{ffff}",
        ] {
            assert_eq!(Record::decode(line), None, "{line:?}");
        }
        assert_eq!(Record::decode(&format!("{{\"time\":\"{}\"}}", "9".repeat(MAX_LINE))), None);
        let deep = "[".repeat(3000);
        assert_eq!(Record::decode(&deep), None);
    }

    #[test]
    fn the_log_rotates_keeps_its_bound_and_reads_newest_first() {
        let dir = std::env::temp_dir().join(format!("twinwatch-audit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let log = AuditLog::new(dir.join("audit.log"), 4096, 2);
        for i in 0..100 {
            log.append(&record(i)).unwrap();
        }
        let line = record(0).encode().len() as u64;
        let sizes: Vec<u64> = ["audit.log", "audit.log.1", "audit.log.2"]
            .iter()
            .map(|f| std::fs::metadata(dir.join(f)).unwrap().len())
            .collect();
        assert!(sizes.iter().all(|s| *s <= 4096 && *s >= line), "{sizes:?}");
        assert!(!dir.join("audit.log.3").exists());
        let recent = log.recent(5).unwrap();
        let targets: Vec<&str> = recent.iter().map(|r| r.target.as_str()).collect();
        assert_eq!(targets, ["t99", "t98", "t97", "t96", "t95"]);
        // Everything kept, across the files, newest first; the oldest were rotated away.
        let all = log.recent(1000).unwrap();
        // Two full rotated files and the current one's share.
        assert!(all.len() < 100 && all.len() as u64 > 2 * (4096 / line), "{} of {line} bytes", all.len());
        assert!(all.windows(2).all(|w| w[0].time > w[1].time));
        // A damaged line in the middle costs that line only.
        std::fs::write(dir.join("audit.log"), format!("{}garbage\n{}", record(200).encode(), record(201).encode()))
            .unwrap();
        let targets: Vec<String> = log.recent(2).unwrap().into_iter().map(|r| r.target).collect();
        assert_eq!(targets, ["t201", "t200"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
