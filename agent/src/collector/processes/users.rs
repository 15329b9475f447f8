//! Process owners' names, from /etc/passwd.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::SystemTime;

/// User names by uid from a passwd file, parsed again only when its mtime or length changes.
pub(super) struct Users {
    path: PathBuf,
    /// The modification time and length of the file when it was last parsed.
    parsed: Option<(Option<SystemTime>, u64)>,
    names: HashMap<u32, String>,
}

impl Users {
    pub(super) fn new(path: PathBuf) -> Self {
        Users { path, parsed: None, names: HashMap::new() }
    }

    pub(super) fn refresh(&mut self) {
        let stamp = std::fs::metadata(&self.path).ok().map(|m| (m.modified().ok(), m.len()));
        if stamp.is_some() && stamp == self.parsed {
            return;
        }
        self.names.clear();
        self.parsed = None;
        let Some(stamp) = stamp else { return };
        // An unreadable file leaves uids numeric and is tried again next time.
        let Ok(bytes) = std::fs::read(&self.path) else { return };
        parse_passwd(&String::from_utf8_lossy(&bytes), &mut self.names);
        self.parsed = Some(stamp);
    }

    pub(super) fn name(&self, uid: u32) -> String {
        self.names.get(&uid).cloned().unwrap_or_else(|| uid.to_string())
    }
}

/// `name:password:uid:...` lines; the first name for a uid wins, as getpwuid would answer.
pub(super) fn parse_passwd(text: &str, names: &mut HashMap<u32, String>) {
    for line in text.lines() {
        let mut fields = line.split(':');
        let (Some(name), Some(_), Some(uid)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        // NIS compat entries (`+name`, `-name`) and comments name nobody.
        if name.is_empty() || name.starts_with(['#', '+', '-']) {
            continue;
        }
        if let Ok(uid) = uid.trim().parse::<u32>() {
            names.entry(uid).or_insert_with(|| name.to_owned());
        }
    }
}
