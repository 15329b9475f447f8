//! API tokens: bearer secrets with a `read` or `admin` role, kept only as SHA-256 hashes.
//!
//! The token file holds one token a line, `role sha256-hex name`, and is re-read when it changes,
//! so tokens made by the CLI work without a restart.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Read,
    Admin,
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "read" => Ok(Role::Read),
            "admin" => Ok(Role::Admin),
            other => Err(format!("unknown role {other:?} (read or admin)")),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}:{line}: {detail}", path.display())]
    Malformed { path: PathBuf, line: usize, detail: String },
}

#[derive(Debug, Clone)]
struct Entry {
    role: Role,
    hash: [u8; 32],
}

pub struct Tokens {
    path: PathBuf,
    cache: Mutex<(Option<SystemTime>, Vec<Entry>)>,
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn parse(path: &Path, text: &str) -> Result<Vec<Entry>, TokenError> {
    let mut entries = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |detail: String| TokenError::Malformed { path: path.to_owned(), line: i + 1, detail };
        let mut f = line.split_ascii_whitespace();
        let role = f.next().unwrap_or_default().parse().map_err(bad)?;
        let hash = f.next().and_then(unhex).ok_or_else(|| bad("expected a 64-digit SHA-256 hex hash".into()))?;
        entries.push(Entry { role, hash });
    }
    Ok(entries)
}

impl Tokens {
    pub fn new(path: PathBuf) -> Self {
        Tokens { path, cache: Mutex::new((None, Vec::new())) }
    }

    /// The role `token` grants, if any.
    pub fn check(&self, token: &str) -> Option<Role> {
        let modified = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        // A std mutex: the critical section does no async work, only a file read on change.
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if modified != cache.0 {
            let text = std::fs::read_to_string(&self.path).unwrap_or_default();
            match parse(&self.path, &text) {
                Ok(entries) => *cache = (modified, entries),
                Err(e) => tracing::error!("token file ignored: {e}"),
            }
        }
        // Comparing hashes, not secrets: timing reveals nothing about a token's bytes.
        let hash = sha256(token.as_bytes());
        cache.1.iter().filter(|e| e.hash == hash).map(|e| e.role).max()
    }

    /// Creates a token with `role`, appends its hash to the file and returns the secret.
    pub fn create(&self, role: Role, name: &str) -> Result<String, TokenError> {
        use ring::rand::SecureRandom;
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut secret = [0u8; 24];
        let _ = ring::rand::SystemRandom::new().fill(&mut secret);
        let token = format!("tw_{}", hex(&secret));
        let role_name = match role {
            Role::Read => "read",
            Role::Admin => "admin",
        };
        let io = |source| TokenError::Io { path: self.path.clone(), source };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut f = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(&self.path).map_err(io)?;
        let name: String = name.chars().filter(|c| !c.is_whitespace()).collect();
        writeln!(f, "{role_name} {} {name}", hex(&sha256(token.as_bytes()))).and_then(|_| f.sync_all()).map_err(io)?;
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_hashed_at_rest_and_grant_their_role() {
        let path = std::env::temp_dir().join(format!("twinwatch-tokens-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let tokens = Tokens::new(path.clone());
        let read = tokens.create(Role::Read, "grafana").unwrap();
        let admin = tokens.create(Role::Admin, "ops").unwrap();
        assert_eq!(tokens.check(&read), Some(Role::Read));
        assert_eq!(tokens.check(&admin), Some(Role::Admin));
        assert_eq!(tokens.check("tw_nope"), None);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&read) && !text.contains(&admin));
        std::fs::write(&path, "read nothex\n").unwrap();
        assert!(parse(&path, "read nothex\n").is_err());
        let _ = std::fs::remove_file(&path);
    }
}
