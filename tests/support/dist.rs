//! The release artefacts of `cargo xtask dist`: static binaries, .debs, the UniFi OS tarball and
//! the Fly.io build context, as an operator receives them.
//!
//! `cargo xtask test` builds them before the tests and names their directory in
//! `TWINWATCH_DIST`; a test run without it builds them here, once.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The directory `cargo xtask dist` wrote, building it first when `TWINWATCH_DIST` is unset.
pub fn dir() -> PathBuf {
    static BUILD: std::sync::Once = std::sync::Once::new();
    if let Some(dir) = std::env::var_os("TWINWATCH_DIST") {
        return PathBuf::from(dir);
    }
    // target/<profile>/deps/<test>-<hash>
    let exe = std::env::current_exe().expect("test executable path");
    let target = exe.ancestors().nth(3).expect("target directory").to_owned();
    BUILD.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut dist = Command::new(cargo);
        dist.args(["run", "--quiet", "--package", "xtask", "--", "dist"]).env("CARGO_TARGET_DIR", &target);
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            let ours = name.starts_with("CARGO_") && !matches!(&*name, "CARGO_HOME" | "CARGO_TARGET_DIR");
            if ours || name == "LD_LIBRARY_PATH" || name == "OUT_DIR" {
                dist.env_remove(&*name);
            }
        }
        let status = dist.status().expect("running cargo xtask dist");
        assert!(status.success(), "cargo xtask dist failed");
    });
    target.join("dist")
}

/// The one file in `dir` whose name starts with `prefix` and ends with `suffix`.
pub fn find(dir: &Path, prefix: &str, suffix: &str) -> PathBuf {
    let found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with(prefix) && name.ends_with(suffix)
        })
        .collect();
    assert_eq!(found.len(), 1, "expected one {prefix}*{suffix} in {}: {found:?}", dir.display());
    found.into_iter().next().expect("one")
}

/// The ELF machine of an executable: 62 for x86_64, 183 for aarch64.
pub fn elf_machine(path: &Path) -> u16 {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..4], b"\x7fELF", "{} is not ELF", path.display());
    u16::from_le_bytes([bytes[18], bytes[19]])
}

/// Whether an ELF executable asks for a dynamic loader (a `PT_INTERP` program header).
pub fn is_dynamic(path: &Path) -> bool {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes")) as usize;
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| u32::from_le_bytes(b[phoff + i * phentsize..][..4].try_into().expect("4 bytes")) == 3)
}

/// Runs a command, panicking with its output unless it succeeds; returns stdout and stderr.
pub fn run_ok(cmd: &mut Command) -> (String, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "{cmd:?} failed ({}):\n{stdout}\n{stderr}", out.status);
    (stdout, stderr)
}
