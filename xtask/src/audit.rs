//! `cargo xtask audit`: the versions in `Cargo.lock` against the RustSec advisories, offline.
//!
//! The advisories live in the repository, `xtask/advisories/<crate>/RUSTSEC-*.md`, copied
//! unchanged from the RustSec advisory database for the crates the lock file names, so the check
//! needs no network, no git and no build. `cargo xtask audit --refresh DB` copies them again from
//! a checkout of the database (or its bare git directory); that is the only step that sees new
//! advisories, so run it now and then and before a release.
//!
//! An advisory counts when it is not withdrawn, names a crate locked at a version that is neither
//! patched nor unaffected, and concerns Linux (our only target). Then:
//! - a vulnerability, or an `unsound` notice, fails the audit unless `xtask/audit-ignore.toml`
//!   gives its id with a reason: unsoundness is a memory-safety bug reachable from safe code, as
//!   much a defect of ours as a CVE;
//! - an `unmaintained` (or other informational) notice is a warning: nothing is broken yet, and
//!   the fix is a change of crate, which is a decision rather than a bump.
//!
//! An ignore entry that matches nothing (the crate left, or was bumped past the fix) fails the
//! audit too, so the list only ever holds reasons that are still true. Locked crates the vendored
//! set has not yet seen (added since the last refresh) are named in a warning.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use semver::{Version, VersionReq};
use serde::Deserialize;

use crate::workspace;

/// Every crate name in `Cargo.lock` at the last refresh, one a line: the crates whose advisories
/// the vendored set holds (those with none have no folder).
const COVERED: &str = "crates.txt";

/// `cargo xtask audit [--refresh DB]`.
pub fn audit(args: &[String]) -> Result<(), String> {
    let root = workspace();
    let dir = root.join("xtask/advisories");
    match args {
        [] => check(&root, &dir),
        [flag, db] if flag == "--refresh" => refresh(&root, &dir, Path::new(db)),
        _ => Err("usage: cargo xtask audit [--refresh PATH-TO-ADVISORY-DB]".into()),
    }
}

/// One advisory's front matter, as far as the check needs it.
#[derive(Debug, PartialEq)]
struct Advisory {
    id: String,
    package: String,
    title: String,
    url: Option<String>,
    /// `unmaintained`, `unsound`, `notice`; `None` for a vulnerability.
    informational: Option<String>,
    withdrawn: bool,
    patched: Vec<VersionReq>,
    unaffected: Vec<VersionReq>,
    /// Operating systems it is limited to; empty for all.
    os: Vec<String>,
}

#[derive(Deserialize)]
struct FrontMatter {
    advisory: AdvisoryTable,
    #[serde(default)]
    versions: VersionsTable,
    #[serde(default)]
    affected: AffectedTable,
}

#[derive(Deserialize)]
struct AdvisoryTable {
    id: String,
    package: String,
    title: Option<String>,
    url: Option<String>,
    informational: Option<String>,
    withdrawn: Option<toml::Value>,
}

#[derive(Deserialize, Default)]
struct VersionsTable {
    #[serde(default)]
    patched: Vec<String>,
    #[serde(default)]
    unaffected: Vec<String>,
}

#[derive(Deserialize, Default)]
struct AffectedTable {
    #[serde(default)]
    os: Vec<String>,
}

impl Advisory {
    /// Parses an advisory file: a ```` ```toml ```` block, then markdown whose first `# ` heading
    /// is the title (older files put `title` in the TOML instead).
    fn parse(text: &str) -> Result<Advisory, String> {
        let rest = text.trim_start().strip_prefix("```toml").ok_or("no ```toml front matter")?;
        let end = rest.find("\n```").ok_or("front matter not closed")?;
        let (front, body) = (&rest[..end], &rest[end + 4..]);
        let fm: FrontMatter = toml::from_str(front).map_err(|e| format!("front matter: {e}"))?;
        let title = fm
            .advisory
            .title
            .or_else(|| body.lines().find_map(|l| l.strip_prefix("# ")).map(|t| t.trim().to_owned()))
            .ok_or("no title")?;
        let reqs = |list: &[String]| -> Result<Vec<VersionReq>, String> {
            list.iter().map(|r| VersionReq::parse(r).map_err(|e| format!("version requirement {r:?}: {e}"))).collect()
        };
        Ok(Advisory {
            patched: reqs(&fm.versions.patched)?,
            unaffected: reqs(&fm.versions.unaffected)?,
            id: fm.advisory.id,
            package: fm.advisory.package,
            title,
            url: fm.advisory.url,
            informational: fm.advisory.informational,
            withdrawn: fm.advisory.withdrawn.is_some(),
            os: fm.affected.os,
        })
    }

    /// Whether `version` has the problem: neither patched nor unaffected.
    fn affects(&self, version: &Version) -> bool {
        !self.patched.iter().chain(&self.unaffected).any(|req| req.matches(version))
    }

    fn concerns_linux(&self) -> bool {
        self.os.is_empty() || self.os.iter().any(|os| os == "linux")
    }

    /// Fails the audit unless ignored: a vulnerability or unsoundness.
    fn is_error(&self) -> bool {
        matches!(self.informational.as_deref(), None | Some("unsound"))
    }

    fn kind(&self) -> &str {
        self.informational.as_deref().unwrap_or("vulnerability")
    }
}

/// A package from `Cargo.lock` that came from a registry (workspace members have no `source`).
#[derive(Debug, PartialEq)]
struct Locked {
    name: String,
    version: Version,
    /// The locked packages that depend on it, as `name version`.
    dependents: Vec<String>,
}

#[derive(Deserialize)]
struct LockFile {
    package: Vec<LockPackage>,
}

#[derive(Deserialize)]
struct LockPackage {
    name: String,
    version: String,
    source: Option<String>,
    #[serde(default)]
    dependencies: Vec<String>,
}

fn parse_lock(text: &str) -> Result<Vec<Locked>, String> {
    let lock: LockFile = toml::from_str(text).map_err(|e| format!("Cargo.lock: {e}"))?;
    let mut out = Vec::new();
    for p in lock.package.iter().filter(|p| p.source.as_deref().is_some_and(|s| s.starts_with("registry+"))) {
        let version = Version::parse(&p.version).map_err(|e| format!("Cargo.lock: {} {}: {e}", p.name, p.version))?;
        // A dependency is written `name` when one version is locked and `name version` when more are.
        let dependents = lock
            .package
            .iter()
            .filter(|q| q.dependencies.iter().any(|d| d == &p.name || *d == format!("{} {}", p.name, p.version)))
            .map(|q| format!("{} {}", q.name, q.version))
            .collect();
        out.push(Locked { name: p.name.clone(), version, dependents });
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IgnoreFile {
    #[serde(default)]
    ignore: BTreeMap<String, IgnoreEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IgnoreEntry {
    reason: String,
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Every vendored advisory, by crate name.
fn vendored(dir: &Path) -> Result<Vec<Advisory>, String> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        if !path.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&path).map_err(|e| format!("{}: {e}", path.display()))? {
            let file = file.map_err(|e| e.to_string())?.path();
            if file.extension().is_some_and(|e| e == "md") {
                out.push(Advisory::parse(&read(&file)?).map_err(|e| format!("{}: {e}", file.display()))?);
            }
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

fn check(root: &Path, dir: &Path) -> Result<(), String> {
    let locked = parse_lock(&read(&root.join("Cargo.lock"))?)?;
    let advisories = vendored(dir)?;
    let ignore_path = root.join("xtask/audit-ignore.toml");
    let ignores: IgnoreFile =
        toml::from_str(&read(&ignore_path)?).map_err(|e| format!("{}: {e}", ignore_path.display()))?;
    let covered: BTreeSet<String> = read(&dir.join(COVERED))?.lines().map(str::to_owned).collect();

    let (mut errors, mut warnings, mut ignored) = (0, 0, 0);
    let mut matched_ids = BTreeSet::new();
    for adv in advisories.iter().filter(|a| !a.withdrawn && a.concerns_linux()) {
        for pkg in locked.iter().filter(|p| p.name == adv.package && adv.affects(&p.version)) {
            matched_ids.insert(adv.id.as_str());
            let what = format!("{} {} {} ({}): {}", adv.id, pkg.name, pkg.version, adv.kind(), adv.title);
            if let Some(entry) = ignores.ignore.get(&adv.id) {
                println!("ignored  {what}\n         reason: {}", entry.reason);
                ignored += 1;
                continue;
            }
            let level = if adv.is_error() { "error  " } else { "warning" };
            println!("{level}  {what}");
            println!("         https://rustsec.org/advisories/{}.html", adv.id);
            if let Some(url) = &adv.url {
                println!("         {url}");
            }
            if !pkg.dependents.is_empty() {
                println!("         required by {}", pkg.dependents.join(", "));
            }
            if adv.is_error() {
                errors += 1;
            } else {
                warnings += 1;
            }
        }
    }
    let stale: Vec<&String> = ignores.ignore.keys().filter(|id| !matched_ids.contains(id.as_str())).collect();
    for id in &stale {
        println!("error    {id} is ignored in xtask/audit-ignore.toml but matches no locked version: remove it");
    }
    let unseen: BTreeSet<&str> =
        locked.iter().map(|p| p.name.as_str()).filter(|name| !covered.contains(*name)).collect();
    if !unseen.is_empty() {
        let names: Vec<&str> = unseen.into_iter().collect();
        println!(
            "warning  not in the vendored advisories (run `cargo xtask audit --refresh DB`): {}",
            names.join(", ")
        );
        warnings += 1;
    }
    println!(
        "audit: {} advisories for {} locked crates: {errors} failing, {warnings} warnings, {ignored} ignored, {} stale ignores",
        advisories.len(),
        locked.len(),
        stale.len()
    );
    if errors + stale.len() > 0 {
        Err("audit failed: fix the versions above or give each a reason in xtask/audit-ignore.toml".into())
    } else {
        Ok(())
    }
}

/// Where the advisory files come from: a checkout (files) or a git directory (`git show`).
enum Db<'a> {
    Checkout(&'a Path),
    Git(&'a Path),
}

impl Db<'_> {
    fn git(&self, args: &[&str]) -> Result<String, String> {
        let mut cmd = Command::new("git");
        match self {
            Db::Checkout(p) => cmd.arg("-C").arg(p),
            Db::Git(p) => cmd.arg("--git-dir").arg(p),
        };
        let out = cmd.args(args).output().map_err(|e| format!("git: {e}"))?;
        if !out.status.success() {
            return Err(format!("git {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
        }
        String::from_utf8(out.stdout).map_err(|e| e.to_string())
    }

    /// The advisory files under `crates/<name>/`, as (file name, text).
    fn advisories(&self, name: &str) -> Result<Vec<(String, String)>, String> {
        let mut out = Vec::new();
        match self {
            Db::Checkout(root) => {
                let dir = root.join("crates").join(name);
                let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(out) };
                for entry in entries {
                    let path = entry.map_err(|e| e.to_string())?.path();
                    let file = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
                    if file.starts_with("RUSTSEC-") && file.ends_with(".md") {
                        out.push((file, read(&path)?));
                    }
                }
            }
            Db::Git(_) => {
                let listing = self.git(&["ls-tree", "--name-only", "HEAD", &format!("crates/{name}/")])?;
                for path in listing.lines() {
                    let file = path.rsplit('/').next().unwrap_or(path).to_owned();
                    if file.starts_with("RUSTSEC-") && file.ends_with(".md") {
                        out.push((file, self.git(&["show", &format!("HEAD:{path}")])?));
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

/// Rewrites `xtask/advisories` from the database at `db`: every advisory for a crate name in
/// `Cargo.lock`, unchanged, the list of names, and a README naming the source commit.
fn refresh(root: &Path, dir: &Path, db: &Path) -> Result<(), String> {
    let db = if db.join("crates").is_dir() {
        Db::Checkout(db)
    } else if db.join("HEAD").is_file() && db.join("objects").is_dir() {
        Db::Git(db)
    } else {
        return Err(format!("{}: neither a checkout of the advisory database nor its git directory", db.display()));
    };
    let commit = db.git(&["rev-parse", "HEAD"]).map(|c| c.trim().to_owned());
    let names: BTreeSet<String> = parse_lock(&read(&root.join("Cargo.lock"))?)?.into_iter().map(|p| p.name).collect();

    let mut files: Vec<(PathBuf, String)> = Vec::new();
    for name in &names {
        for (file, text) in db.advisories(name)? {
            Advisory::parse(&text).map_err(|e| format!("crates/{name}/{file}: {e}"))?;
            files.push((Path::new(name).join(file), text));
        }
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    for (path, text) in &files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().expect("crate folder")).map_err(|e| e.to_string())?;
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let listing: String = names.iter().map(|n| format!("{n}\n")).collect();
    std::fs::write(dir.join(COVERED), listing).map_err(|e| e.to_string())?;
    let source = match &commit {
        Ok(c) => format!("commit {c}"),
        Err(_) => "a copy whose commit is unknown".to_owned(),
    };
    let readme = format!(
        "RustSec advisories (https://github.com/rustsec/advisory-db, CC0-1.0) for the crates in\n\
         `Cargo.lock`, copied unchanged from {source} by\n\
         `cargo xtask audit --refresh`; `{COVERED}` lists every crate name the lock file held then.\n"
    );
    std::fs::write(dir.join("README.md"), readme).map_err(|e| e.to_string())?;
    println!("audit: {} advisories for {} crate names from {source}", files.len(), names.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"```toml
[advisory]
id = "RUSTSEC-2024-0001"
package = "demo"
date = "2024-01-01"
url = "https://example.org/demo/1"
categories = ["memory-corruption"]

[affected]
os = ["windows"]

[affected.functions]
"demo::f" = ["< 1.2.3"]

[versions]
patched = [">= 1.2.3, < 2.0.0", ">= 2.1.0"]
unaffected = ["< 0.5.0"]
```

# Demo reads past the end of a buffer

Details.
"#;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn front_matter_and_title() {
        let a = Advisory::parse(SAMPLE).unwrap();
        assert_eq!(a.id, "RUSTSEC-2024-0001");
        assert_eq!(a.package, "demo");
        assert_eq!(a.title, "Demo reads past the end of a buffer");
        assert_eq!(a.url.as_deref(), Some("https://example.org/demo/1"));
        assert_eq!(a.informational, None);
        assert!(!a.withdrawn);
        assert_eq!(a.os, ["windows"]);
        assert!(!a.concerns_linux());
        assert!(a.is_error());
    }

    #[test]
    fn versions_between_ranges() {
        let a = Advisory::parse(SAMPLE).unwrap();
        for affected in ["0.5.0", "1.2.2", "2.0.0", "2.0.9"] {
            assert!(a.affects(&v(affected)), "{affected}");
        }
        for fine in ["0.4.9", "1.2.3", "1.9.0", "2.1.0", "3.0.0"] {
            assert!(!a.affects(&v(fine)), "{fine}");
        }
    }

    #[test]
    fn unmaintained_with_no_fix_affects_every_version() {
        let text = "```toml\n[advisory]\nid = \"RUSTSEC-2025-0141\"\npackage = \"bincode\"\n\
                    date = \"2025-12-16\"\ninformational = \"unmaintained\"\n\n[versions]\npatched = []\n```\n\n\
                    # Bincode is unmaintained\n";
        let a = Advisory::parse(text).unwrap();
        assert!(a.affects(&v("2.0.1")) && a.affects(&v("1.3.3")));
        assert_eq!(a.kind(), "unmaintained");
        assert!(!a.is_error());
        assert!(a.concerns_linux());
    }

    #[test]
    fn unsound_fails_and_withdrawn_is_seen() {
        let text = "```toml\n[advisory]\nid = \"RUSTSEC-2020-0002\"\npackage = \"x\"\ndate = \"2020-01-01\"\n\
                    informational = \"unsound\"\nwithdrawn = \"2022-08-14\" # a comment\n\n\
                    [versions]\npatched = [\"^0.3.5\"]\n```\n# X is unsound\n";
        let a = Advisory::parse(text).unwrap();
        assert!(a.is_error() && a.withdrawn);
        assert!(!a.affects(&v("0.3.9")));
        assert!(a.affects(&v("0.3.4")) && a.affects(&v("0.4.0")));
    }

    #[test]
    fn malformed_front_matter_is_an_error() {
        assert!(Advisory::parse("# no front matter\n").is_err());
        assert!(Advisory::parse("```toml\n[advisory]\nid = \"X\"\n").is_err());
        let bad_req =
            "```toml\n[advisory]\nid = \"X\"\npackage = \"x\"\n[versions]\npatched = [\"about 1\"]\n```\n# t\n";
        assert!(Advisory::parse(bad_req).unwrap_err().contains("about 1"));
    }

    #[test]
    fn lock_file_registry_packages_and_dependents() {
        let lock = r#"
version = 4

[[package]]
name = "ours"
version = "0.1.0"
dependencies = ["demo 1.0.0", "other"]

[[package]]
name = "demo"
version = "1.0.0"
source = "registry+https://github.com/rust-lang/crates.io-index"

[[package]]
name = "demo"
version = "2.0.0"
source = "registry+https://github.com/rust-lang/crates.io-index"

[[package]]
name = "other"
version = "0.3.0"
source = "registry+https://github.com/rust-lang/crates.io-index"
dependencies = ["demo 2.0.0"]
"#;
        let locked = parse_lock(lock).unwrap();
        let shown: Vec<(String, String, Vec<String>)> =
            locked.into_iter().map(|p| (p.name, p.version.to_string(), p.dependents)).collect();
        assert_eq!(
            shown,
            [
                ("demo".into(), "1.0.0".into(), vec!["ours 0.1.0".to_owned()]),
                ("demo".into(), "2.0.0".into(), vec!["other 0.3.0".to_owned()]),
                ("other".into(), "0.3.0".into(), vec!["ours 0.1.0".to_owned()]),
            ]
        );
    }
}
