//! Fixture sysfs trees for the sensor collectors' tests.

use std::path::{Path, PathBuf};

use twinwatch_common::sample::Metric;

/// A directory under the system temp dir, unique to this process and test, removed on drop.
pub struct Tree(pub PathBuf);

impl Tree {
    pub fn new(test: &str) -> Tree {
        let dir = std::env::temp_dir().join(format!("twinwatch-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Tree(dir)
    }

    /// Writes `text` to `rel`, creating its directories.
    pub fn put(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.0.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Makes `rel` a symbolic link to `target` (relative to the link's directory, as sysfs does).
    pub fn link(&self, rel: &str, target: &str) {
        let path = self.0.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, path).unwrap();
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn roots(&self) -> super::Roots {
        super::Roots { proc: self.0.join("proc"), sys: self.0.join("sys") }
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every series as `name{label=value,...} value`, sorted, for exact comparison.
pub fn render(out: &[Metric]) -> Vec<String> {
    let mut lines: Vec<String> = out
        .iter()
        .map(|m| {
            let labels: Vec<String> = m.key.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            format!("{}{{{}}} {}", m.key.name, labels.join(","), m.real())
        })
        .collect();
    lines.sort();
    lines
}

/// Expected lines, sorted as [`render`] sorts.
pub fn sorted<S: Into<String>>(lines: impl IntoIterator<Item = S>) -> Vec<String> {
    let mut lines: Vec<String> = lines.into_iter().map(Into::into).collect();
    lines.sort();
    lines
}
