//! The source layout's rules, checked by reading the source: which folders are sans-IO, and
//! which folders may not import which, so that imports follow the data flow
//! (ingest -> twin -> store -> views -> API).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Folders whose code does no I/O and reads no clock: time comes in as an argument.
const SANS_IO: &[&str] = &["twin", "views", "history"];

/// Words that mean I/O, a runtime or a clock read; none may stand in a sans-IO folder's code.
const IO_WORDS: &[&str] = &[
    "tokio",
    "quinn",
    "sled",
    "axum",
    "hyper",
    "reqwest",
    "SystemTime",
    "Instant::now",
    "time::now_ms",
    "std::fs",
    "std::net",
];

/// For each folder, the top-level modules its files may not import (`crate::<module>`).
const FORBIDDEN: &[(&str, &[&str])] = &[
    ("twin", &["api", "quic", "store", "views", "access", "remote_write", "local_agent", "config"]),
    ("views", &["api", "quic", "store", "access", "remote_write", "local_agent"]),
    ("history", &["twin", "views", "api", "quic", "store", "access", "remote_write", "local_agent"]),
    ("store", &["api", "quic", "views", "access", "local_agent"]),
    ("access", &["api", "quic", "store", "views", "remote_write"]),
    ("quic", &["api", "views", "local_agent"]),
    ("api", &["quic", "local_agent"]),
    ("remote_write", &["api", "quic", "twin", "access", "local_agent"]),
    // The binary's subcommands: they see only the library's public items.
    ("cli", &[]),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("source folder reads") {
        let path = entry.expect("source entry reads").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The files under `src/<folder>`, with their code: comments removed, string literals kept.
fn code_of(folder: &str) -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    rust_files(&src().join(folder), &mut files);
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("source file reads");
            let code: Vec<&str> = text.lines().map(|l| l.split("//").next().unwrap_or("")).collect();
            (path, code.join("\n"))
        })
        .collect()
}

/// The top-level modules `code` names after `crate::`, including inside `crate::{a::x, b}`.
fn crate_roots(code: &str) -> BTreeSet<String> {
    let mut roots = BTreeSet::new();
    let ident = |s: &str| s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level items of the group: split on commas outside nested braces.
            let mut depth = 0;
            let mut start = 0;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        roots.insert(ident(group[start..i].trim()));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        roots.insert(ident(group[start..i].trim()));
                        start = i + 1;
                    }
                    _ => {}
                }
            }
        } else {
            roots.insert(ident(rest));
        }
    }
    roots.remove("");
    roots
}

fn io_violations(folder: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (path, code) in code_of(folder) {
        for word in IO_WORDS {
            if code.contains(word) {
                found.push(format!("{} names {word}", path.display()));
            }
        }
    }
    found
}

fn import_violations(folder: &str, forbidden: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for (path, code) in code_of(folder) {
        for root in crate_roots(&code) {
            if forbidden.contains(&root.as_str()) {
                found.push(format!("{} imports crate::{root}", path.display()));
            }
        }
    }
    found
}

#[test]
fn sans_io_folders_name_no_io_runtime_or_clock() {
    let found: Vec<String> = SANS_IO.iter().flat_map(|f| io_violations(f)).collect();
    assert!(found.is_empty(), "sans-IO folders must stay sans-IO:\n{}", found.join("\n"));
}

#[test]
fn imports_follow_the_data_flow() {
    let found: Vec<String> = FORBIDDEN.iter().flat_map(|(folder, no)| import_violations(folder, no)).collect();
    assert!(found.is_empty(), "imports against the data flow:\n{}", found.join("\n"));
}

#[test]
fn every_folder_has_rules() {
    let known: BTreeSet<&str> = FORBIDDEN.iter().map(|(f, _)| *f).collect();
    for entry in std::fs::read_dir(src()).expect("src reads") {
        let path = entry.expect("entry reads").path();
        if path.is_dir() {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
            assert!(known.contains(name.as_str()), "src/{name}/ has no rules in layout.rs: add them");
        }
    }
}

#[test]
fn crate_paths_are_read_in_groups_too() {
    let roots = crate_roots("use crate::{api::x, store::{a, b}, twin};\nlet t = crate::views::hosts::detail();");
    assert_eq!(roots.into_iter().collect::<Vec<_>>(), ["api", "store", "twin", "views"]);
}
