//! API tokens: bearer secrets with a `read` or `admin` role and a name, kept only as SHA-256
//! hashes.
//!
//! The token file holds one token a line, `role sha256-hex name created`, and is re-read when it
//! changes, so tokens made or revoked by the CLI take effect without a restart. Lines written
//! before tokens had names and creation times (`role sha256-hex`) still work: their name is
//! `token-` and the first 8 digits of the hash.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use twinwatch_common::hex::encode as hex;
use twinwatch_common::time::{parse_rfc3339, rfc3339};

use crate::access::watched::{self, Stamp};
use crate::twin::identity::valid_name;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Read,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Admin => "admin",
        }
    }
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
    #[error("token name {0:?} must be 1-64 characters of letters, digits, '.', '_' or '-'")]
    BadName(String),
    #[error("a token named {0:?} exists already")]
    Exists(String),
    #[error("no token named {0:?}")]
    NotFound(String),
}

/// Who a request's token says the caller is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub role: Role,
    pub name: String,
}

/// A token as listed: never its secret, nor its hash.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct TokenInfo {
    pub name: String,
    pub role: Role,
    /// RFC 3339; `None` for tokens made before creation times were kept.
    pub created: Option<String>,
}

/// A token just made: its name and the secret, shown once.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub name: String,
    pub secret: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    role: Role,
    hash: [u8; 32],
    name: String,
    created_ms: Option<i64>,
}

impl Entry {
    fn info(&self) -> TokenInfo {
        TokenInfo { name: self.name.clone(), role: self.role, created: self.created_ms.map(rfc3339) }
    }

    fn line(&self) -> String {
        let created = self.created_ms.map(rfc3339).unwrap_or_else(|| "-".into());
        format!("{} {} {} {created}\n", self.role.as_str(), hex(&self.hash), self.name)
    }
}

pub struct Tokens {
    path: PathBuf,
    /// A std mutex: the critical section does no async work, only a file read on change.
    cache: Mutex<(Option<Stamp>, Vec<Entry>)>,
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0; 32];
    out.copy_from_slice(d.as_ref());
    out
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
        let name = match f.next() {
            // Names are checked when made; older files may hold any word here.
            Some(name) if name.len() <= 128 => name.to_owned(),
            Some(_) => return Err(bad("token name longer than 128 bytes".into())),
            None => format!("token-{}", &hex(&hash)[..8]),
        };
        let created_ms = match f.next() {
            None | Some("-") => None,
            Some(t) => Some(parse_rfc3339(t).ok_or_else(|| bad(format!("bad creation time {t:?}")))?),
        };
        entries.push(Entry { role, hash, name, created_ms });
    }
    Ok(entries)
}

impl Tokens {
    pub fn new(path: PathBuf) -> Self {
        Tokens { path, cache: Mutex::new((None, Vec::new())) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self) -> impl Fn(std::io::Error) -> TokenError + '_ {
        |source| TokenError::Io { path: self.path.clone(), source }
    }

    /// The entries as the file says now; a file that does not parse keeps the last good ones.
    fn entries(&self) -> Vec<Entry> {
        let stamp = watched::stamp(&self.path);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if stamp != cache.0 {
            match self.read() {
                Ok(entries) => *cache = (stamp, entries),
                Err(e) => tracing::error!("token file ignored: {e}"),
            }
        }
        cache.1.clone()
    }

    fn read(&self) -> Result<Vec<Entry>, TokenError> {
        parse(&self.path, &watched::read_text(&self.path).map_err(self.io())?)
    }

    /// The role and name `token` grants, if any.
    pub fn check(&self, token: &str) -> Option<Grant> {
        // Comparing hashes, not secrets: timing reveals nothing about a token's bytes.
        let hash = sha256(token.as_bytes());
        let entries = self.entries();
        let e = entries.iter().filter(|e| e.hash == hash).max_by_key(|e| e.role)?;
        Some(Grant { role: e.role, name: e.name.clone() })
    }

    /// Every token, in the order they were made.
    pub fn list(&self) -> Result<Vec<TokenInfo>, TokenError> {
        Ok(self.read()?.iter().map(Entry::info).collect())
    }

    /// Creates a token with `role` named `name` (an empty name makes one up), appends its hash to
    /// the file and returns the secret.
    pub fn create(&self, role: Role, name: &str, now_ms: i64) -> Result<NewToken, TokenError> {
        use ring::rand::SecureRandom;
        let mut secret = [0u8; 24];
        ring::rand::SystemRandom::new()
            .fill(&mut secret)
            .map_err(|_| self.io()(std::io::Error::other("no randomness")))?;
        let secret = format!("tw_{}", hex(&secret));
        let hash = sha256(secret.as_bytes());
        let name = if name.is_empty() { format!("{}-{}", role.as_str(), &hex(&hash)[..8]) } else { name.to_owned() };
        if !valid_name(&name) {
            return Err(TokenError::BadName(name));
        }
        let _lock = watched::lock(&self.path).map_err(self.io())?;
        if self.read()?.iter().any(|e| e.name == name) {
            return Err(TokenError::Exists(name));
        }
        let entry = Entry { role, hash, name: name.clone(), created_ms: Some(now_ms) };
        watched::append(&self.path, &entry.line()).map_err(self.io())?;
        Ok(NewToken { name, secret })
    }

    /// Removes the token named `name`: it stops working at its next request.
    pub fn revoke(&self, name: &str) -> Result<TokenInfo, TokenError> {
        let _lock = watched::lock(&self.path).map_err(self.io())?;
        let mut entries = self.read()?;
        let at = entries.iter().position(|e| e.name == name).ok_or_else(|| TokenError::NotFound(name.to_owned()))?;
        let gone = entries.remove(at);
        let text: String = entries.iter().map(Entry::line).collect();
        watched::replace(&self.path, &text).map_err(self.io())?;
        Ok(gone.info())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("twinwatch-tokens-{name}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        path
    }

    #[test]
    fn tokens_are_hashed_at_rest_and_grant_their_role() {
        let path = temp("roles");
        let tokens = Tokens::new(path.clone());
        let read = tokens.create(Role::Read, "grafana", 1_700_000_000_000).unwrap();
        let admin = tokens.create(Role::Admin, "ops", 1_700_000_001_000).unwrap();
        assert_eq!(tokens.check(&read.secret), Some(Grant { role: Role::Read, name: "grafana".into() }));
        assert_eq!(tokens.check(&admin.secret).map(|g| g.role), Some(Role::Admin));
        assert_eq!(tokens.check("tw_nope"), None);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&read.secret) && !text.contains(&admin.secret));
        assert!(parse(&path, "read nothex\n").is_err());
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn tokens_are_listed_without_secrets_and_revoked_by_name() {
        let path = temp("revoke");
        let tokens = Tokens::new(path.clone());
        let a = tokens.create(Role::Read, "a", 1_700_000_000_000).unwrap();
        let b = tokens.create(Role::Admin, "", 1_700_000_000_000).unwrap();
        assert!(b.name.starts_with("admin-") && b.name.len() == 14, "{}", b.name);
        assert!(matches!(tokens.create(Role::Read, "a", 0), Err(TokenError::Exists(_))));
        assert!(matches!(tokens.create(Role::Read, "a b", 0), Err(TokenError::BadName(_))));
        let list = tokens.list().unwrap();
        assert_eq!(
            list[0],
            TokenInfo { name: "a".into(), role: Role::Read, created: Some("2023-11-14T22:13:20.000Z".into()) }
        );
        assert_eq!(list[1].name, b.name);
        assert!(tokens.check(&a.secret).is_some());
        assert_eq!(tokens.revoke("a").unwrap().name, "a");
        assert_eq!(tokens.check(&a.secret), None, "a revoked token stops working at once");
        assert!(tokens.check(&b.secret).is_some());
        assert!(matches!(tokens.revoke("a"), Err(TokenError::NotFound(_))));
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn lines_without_name_or_time_still_work() {
        let hash = hex(&sha256(b"tw_old"));
        let entries = parse(Path::new("t"), &format!("# comment\nadmin {hash}\nread {hash} named -\n")).unwrap();
        assert_eq!(entries[0].name, format!("token-{}", &hash[..8]));
        assert_eq!((entries[1].name.as_str(), entries[1].created_ms), ("named", None));
        let err = parse(Path::new("t"), &format!("read {hash} x yesterday\n")).unwrap_err().to_string();
        assert!(err.starts_with("t:1: bad creation time"), "{err}");
        assert!(parse(Path::new("t"), &format!("root {hash}\n")).is_err());
    }
}
