//! The revocation list: agent certificates the aggregator refuses, kept in a text file in the
//! data directory (`revocations` by default) and re-read when it changes.
//!
//! Two kinds of entry, one a line, `kind target revoked-at by [reason]`:
//! - `agent box-1 2026-11-22T14:00:00.000Z cli:root stolen` refuses every certificate of agent
//!   `box-1` **issued at or before** that time. A certificate issued for the same id afterwards
//!   works: revoking an agent and issuing it a new certificate is how a leaked key is replaced.
//! - `serial 4f3a… 2026-11-22T14:00:00.000Z ops` refuses that one certificate.
//!
//! A certificate's issue time is its `notBefore` plus [`crate::access::certs::BACKDATE`] (issued
//! certificates are back-dated for clock skew), to the second. Parsing and checking are sans-IO;
//! [`Revocations`] is the file around them.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use twinwatch_common::time::{parse_rfc3339, rfc3339};

use crate::access::cert_identity::{self, IdentityError};
use crate::access::watched::{self, Stamp};
use crate::twin::identity::valid_name;

/// Longest reason kept, in bytes.
pub const MAX_REASON: usize = 256;
/// Longest serial number in hex digits (RFC 5280: at most 20 octets).
const MAX_SERIAL_DIGITS: usize = 40;

/// How often the revocation list file is looked at for changes made by another process.
pub const REVOCATION_POLL: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}:{line}: {detail}", path.display())]
    Malformed { path: PathBuf, line: usize, detail: String },
    #[error("{0}")]
    BadTarget(String),
}

/// What an entry refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every certificate of this agent id issued at or before the revocation.
    Agent(String),
    /// One certificate, by serial number: lowercase hex without leading zeros.
    Serial(String),
}

impl Target {
    /// An agent target, if `id` is a valid agent id.
    pub fn agent(id: &str) -> Result<Target, RevocationError> {
        if !valid_name(id) {
            return Err(RevocationError::BadTarget(format!(
                "agent id {id:?} must be 1-64 characters of letters, digits, '.', '_' or '-'"
            )));
        }
        Ok(Target::Agent(id.to_owned()))
    }

    /// A serial target from hex as `openssl x509 -serial` or `certs issue` print it (colons and
    /// case do not matter).
    pub fn serial(hex: &str) -> Result<Target, RevocationError> {
        let digits: String = hex.trim().trim_start_matches("serial=").chars().filter(|c| *c != ':').collect();
        if digits.is_empty() || digits.len() > MAX_SERIAL_DIGITS || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(RevocationError::BadTarget(format!("serial {hex:?} must be 1-40 hex digits")));
        }
        Ok(Target::Serial(normalise_serial(&digits)))
    }

    fn kind(&self) -> &'static str {
        match self {
            Target::Agent(_) => "agent",
            Target::Serial(_) => "serial",
        }
    }

    fn value(&self) -> &str {
        match self {
            Target::Agent(v) | Target::Serial(v) => v,
        }
    }
}

fn normalise_serial(hex: &str) -> String {
    let s = hex.to_ascii_lowercase();
    let s = s.trim_start_matches('0');
    if s.is_empty() {
        "0".into()
    } else {
        s.to_owned()
    }
}

/// One entry of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub target: Target,
    pub at_ms: i64,
    /// Who revoked: a token name or `cli:<user>`.
    pub by: String,
    pub reason: String,
}

impl Revocation {
    /// The entry's line in the file, newline included.
    pub fn line(&self) -> String {
        let reason: String = self.reason.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        let line =
            format!("{} {} {} {} {}", self.target.kind(), self.target.value(), rfc3339(self.at_ms), self.by, reason);
        format!("{}\n", line.trim_end())
    }

    /// As the API shows it.
    pub fn to_json(&self) -> serde_json::Value {
        let applies_to = match &self.target {
            Target::Agent(id) => format!("certificates of agent {id} issued at or before {}", rfc3339(self.at_ms)),
            Target::Serial(s) => format!("the certificate with serial {s}"),
        };
        serde_json::json!({
            "kind": self.target.kind(),
            "target": self.target.value(),
            "revoked_at": rfc3339(self.at_ms),
            "by": self.by,
            "reason": self.reason,
            "applies_to": applies_to,
        })
    }
}

/// What the list needs to know of a presented certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub agent: String,
    /// Lowercase hex without leading zeros.
    pub serial: String,
    /// When it was issued, unix seconds.
    pub issued_s: i64,
}

impl Credential {
    /// Reads an agent's DER client certificate (already verified against our CA).
    pub fn from_der(der: &[u8]) -> Result<Credential, IdentityError> {
        let who = cert_identity::from_der(der)?;
        let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| IdentityError::Parse(e.to_string()))?;
        let serial = normalise_serial(&twinwatch_common::hex::encode(cert.raw_serial()));
        let issued_s = cert.validity().not_before.timestamp() + crate::access::certs::BACKDATE.whole_seconds();
        Ok(Credential { agent: who.id, serial, issued_s })
    }
}

/// The parsed list, indexed for a check per handshake.
#[derive(Debug, Default, Clone)]
pub struct RevocationList {
    entries: Vec<Revocation>,
    /// Per agent, the latest revocation time, unix seconds.
    agents: HashMap<String, (i64, usize)>,
    serials: HashMap<String, usize>,
}

impl RevocationList {
    pub fn parse(path: &Path, text: &str) -> Result<RevocationList, RevocationError> {
        let mut list = RevocationList::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |detail: String| RevocationError::Malformed { path: path.to_owned(), line: i + 1, detail };
            let mut f = line.splitn(5, ' ').filter(|s| !s.is_empty());
            let (kind, value) = (f.next().unwrap_or_default(), f.next().unwrap_or_default());
            let target = match kind {
                "agent" => Target::agent(value),
                "serial" => Target::serial(value),
                other => return Err(bad(format!("unknown kind {other:?} (agent or serial)"))),
            }
            .map_err(|e| bad(e.to_string()))?;
            let at = f.next().unwrap_or_default();
            let at_ms = parse_rfc3339(at).ok_or_else(|| bad(format!("bad time {at:?}")))?;
            let by = f.next().unwrap_or("-").to_owned();
            let reason = f.next().unwrap_or_default().chars().take(MAX_REASON).collect();
            list.push(Revocation { target, at_ms, by, reason });
        }
        Ok(list)
    }

    fn push(&mut self, r: Revocation) {
        let at_s = r.at_ms.div_euclid(1000);
        let index = self.entries.len();
        match &r.target {
            Target::Agent(id) => {
                let e = self.agents.entry(id.clone()).or_insert((at_s, index));
                if at_s >= e.0 {
                    *e = (at_s, index);
                }
            }
            Target::Serial(s) => {
                self.serials.insert(s.clone(), index);
            }
        }
        self.entries.push(r);
    }

    /// The entry that refuses `c`, if any.
    pub fn refuses(&self, c: &Credential) -> Option<&Revocation> {
        if let Some(i) = self.serials.get(&c.serial) {
            return self.entries.get(*i);
        }
        let (at_s, i) = self.agents.get(&c.agent)?;
        (c.issued_s <= *at_s).then(|| self.entries.get(*i)).flatten()
    }

    pub fn entries(&self) -> &[Revocation] {
        &self.entries
    }

    /// Agents with at least one revocation.
    pub fn agents(&self) -> HashSet<&str> {
        self.agents.keys().map(String::as_str).collect()
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct RevocationStats {
    /// Handshakes (or sessions straight after one) refused for a revoked certificate.
    pub refused: AtomicU64,
    /// Connected agents closed because their certificate was revoked.
    pub disconnected: AtomicU64,
}

struct Cached {
    stamp: Option<Stamp>,
    list: Arc<RevocationList>,
    generation: u64,
}

/// The revocation list file, shared by the QUIC verifier, ingest, the API and the CLI.
pub struct Revocations {
    path: PathBuf,
    cache: Mutex<Cached>,
    /// Woken after this process changed the list, so connected agents are checked at once.
    pub changed: tokio::sync::Notify,
    pub stats: RevocationStats,
}

impl Revocations {
    /// Opens the list at `path` (absent is empty). A list that does not parse is an error here,
    /// so the aggregator does not start while ignoring revocations.
    pub fn open(path: PathBuf) -> Result<Revocations, RevocationError> {
        let stamp = watched::stamp(&path);
        let list = read(&path)?;
        Ok(Revocations {
            path,
            cache: Mutex::new(Cached { stamp, list: Arc::new(list), generation: 0 }),
            changed: tokio::sync::Notify::new(),
            stats: RevocationStats::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The list as the file says now, and a generation that moves whenever it changed. A file
    /// that stops parsing keeps the last good list (revocations are never dropped by a typo).
    pub fn current(&self) -> (u64, Arc<RevocationList>) {
        let stamp = watched::stamp(&self.path);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if stamp != cache.stamp {
            cache.stamp = stamp;
            match read(&self.path) {
                Ok(list) => {
                    cache.list = Arc::new(list);
                    cache.generation += 1;
                }
                Err(e) => tracing::error!("revocation list unchanged, the file does not parse: {e}"),
            }
        }
        (cache.generation, cache.list.clone())
    }

    /// The entry refusing `c`, if any.
    pub fn refuses(&self, c: &Credential) -> Option<Revocation> {
        self.current().1.refuses(c).cloned()
    }

    /// Appends a revocation and wakes whoever enforces it.
    pub fn revoke(&self, target: Target, by: &str, reason: &str, now_ms: i64) -> Result<Revocation, RevocationError> {
        let by: String = by.chars().filter(|c| !c.is_whitespace()).take(128).collect();
        let reason: String = reason.trim().chars().take(MAX_REASON).collect();
        let r = Revocation { target, at_ms: now_ms, by, reason };
        let io = |source| RevocationError::Io { path: self.path.clone(), source };
        let _lock = watched::lock(&self.path).map_err(io)?;
        if watched::stamp(&self.path).is_none() {
            let header = "# twinwatch revocation list: kind target revoked-at by reason (see README, Access control)\n";
            watched::append(&self.path, header).map_err(io)?;
        }
        watched::append(&self.path, &r.line()).map_err(io)?;
        self.changed.notify_one();
        Ok(r)
    }
}

fn read(path: &Path) -> Result<RevocationList, RevocationError> {
    let text = watched::read_text(path).map_err(|source| RevocationError::Io { path: path.to_owned(), source })?;
    RevocationList::parse(path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_800_000_000_000;

    fn cred(agent: &str, serial: &str, issued_s: i64) -> Credential {
        Credential { agent: agent.into(), serial: serial.into(), issued_s }
    }

    #[test]
    fn agent_entries_refuse_certificates_issued_until_then() {
        let text = "# header\nagent box-1 2027-01-15T08:00:00.000Z cli:root laptop stolen\nserial 0A:bc 2027-01-15T08:00:00Z ops\n";
        let list = RevocationList::parse(Path::new("r"), text).unwrap();
        let at_s = parse_rfc3339("2027-01-15T08:00:00Z").unwrap() / 1000;
        let r = list.refuses(&cred("box-1", "1", at_s)).unwrap();
        assert_eq!((r.by.as_str(), r.reason.as_str()), ("cli:root", "laptop stolen"));
        assert!(list.refuses(&cred("box-1", "1", at_s - 3600)).is_some());
        assert!(list.refuses(&cred("box-1", "1", at_s + 1)).is_none(), "a certificate issued later works");
        assert!(list.refuses(&cred("box-2", "1", at_s)).is_none());
        assert!(list.refuses(&cred("box-2", "abc", at_s + 99)).is_some(), "by serial, whatever its time");
        assert_eq!(list.entries().len(), 2);
    }

    #[test]
    fn the_latest_agent_entry_counts_and_lines_round_trip() {
        let a = Revocation { target: Target::agent("a").unwrap(), at_ms: T, by: "x".into(), reason: "one\ntwo".into() };
        let b = Revocation { at_ms: T + 60_000, reason: String::new(), ..a.clone() };
        let text = format!("{}{}", a.line(), b.line());
        assert_eq!(a.line(), "agent a 2027-01-15T08:00:00.000Z x one two\n");
        let list = RevocationList::parse(Path::new("r"), &text).unwrap();
        assert!(list.refuses(&cred("a", "1", T / 1000 + 30)).is_some());
        assert_eq!(list.entries()[0].reason, "one two");
        assert_eq!(list.entries()[1].reason, "");
    }

    #[test]
    fn malformed_lines_are_errors_that_name_the_line() {
        for (text, want) in [
            ("agent a\n", "r:1: bad time"),
            ("\nhost a 2027-01-15T08:00:00Z\n", "r:2: unknown kind"),
            ("agent a/b 2027-01-15T08:00:00Z\n", "r:1: agent id"),
            ("serial xyz 2027-01-15T08:00:00Z\n", "r:1: serial"),
            ("serial 0123456789012345678901234567890123456789ff 2027-01-15T08:00:00Z\n", "r:1: serial"),
        ] {
            let err = RevocationList::parse(Path::new("r"), text).unwrap_err().to_string();
            assert!(err.starts_with(want), "{text:?}: {err}");
        }
        // Arbitrary bytes never panic.
        for text in ["agent", "agent  ", "serial : x", "agent a 9999-99-99T99:99:99Z", "\u{0}\u{ffff} é"] {
            let _ = RevocationList::parse(Path::new("r"), text);
        }
    }

    #[test]
    fn serials_are_normalised() {
        assert_eq!(Target::serial("serial=00:0A:BC").unwrap(), Target::Serial("abc".into()));
        assert_eq!(Target::serial("000").unwrap(), Target::Serial("0".into()));
        assert!(Target::serial("").is_err() && Target::serial("0x12").is_err());
    }

    #[test]
    fn the_file_is_appended_and_reread() {
        let path = std::env::temp_dir().join(format!("twinwatch-revocations-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let r = Revocations::open(path.clone()).unwrap();
        let (g0, list) = r.current();
        assert!(list.entries().is_empty());
        r.revoke(Target::agent("box-1").unwrap(), "cli:root", "gone", T).unwrap();
        let (g1, list) = r.current();
        assert!(g1 > g0 && list.entries().len() == 1);
        // Another process (the CLI) appends: seen on the next look.
        let other = Revocations::open(path.clone()).unwrap();
        other.revoke(Target::serial("ff").unwrap(), "ops", "", T).unwrap();
        assert_eq!(r.current().1.entries().len(), 2);
        // A damaged file keeps the last good list.
        std::fs::write(&path, "agent\n").unwrap();
        assert_eq!(r.current().1.entries().len(), 2);
        assert!(Revocations::open(path.clone()).is_err(), "but does not start an aggregator");
        let _ = std::fs::remove_file(&path);
    }
}
