//! `cargo xtask`: the project's repeatable chores, in Rust rather than shell.
//!
//! - `cargo xtask quickstart [ARGS]`: build release binaries and run
//!   `twinwatch-aggregator quickstart ARGS` (an aggregator and a local agent).
//! - `cargo xtask test`: install what the tests need, build the binaries, run every test.

use std::path::PathBuf;
use std::process::{exit, Command};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("quickstart") => quickstart(&args[1..]),
        Some("test") => test(&args[1..]),
        _ => {
            eprintln!("usage: cargo xtask quickstart [--data-dir DIR] [--http-port P] [--quic-port Q]");
            eprintln!("       cargo xtask test [extra cargo test args]");
            exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("xtask: {e}");
        exit(1);
    }
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_owned()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace().join("target"))
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(workspace());
    c
}

fn run(mut cmd: Command) -> Result<(), String> {
    let shown = format!("{cmd:?}");
    let status = cmd.status().map_err(|e| format!("{shown}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{shown} failed: {status}"))
    }
}

/// Debian packages the test suite needs, installed when missing (as root, with apt).
const APT_PACKAGES: &[&str] = &[];

fn ensure_apt_packages() -> Result<(), String> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    let mut update = Command::new("apt-get");
    update.arg("update").arg("-qq");
    run(update)?;
    let mut install = Command::new("apt-get");
    install
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive");
    run(install)
}

fn quickstart(args: &[String]) -> Result<(), String> {
    let mut build = cargo();
    build.args(["build", "--release", "--bins", "-p", "twinwatch-agent", "-p", "twinwatch-aggregator"]);
    run(build)?;
    let exe = target_dir().join("release/twinwatch-aggregator");
    let mut cmd = Command::new(exe);
    cmd.arg("quickstart").args(args);
    run(cmd)
}

fn test(args: &[String]) -> Result<(), String> {
    ensure_apt_packages()?;
    // End-to-end tests start the real binaries: build them first.
    let mut build = cargo();
    build.args(["build", "--bins", "-p", "twinwatch-agent", "-p", "twinwatch-aggregator"]);
    run(build)?;
    let mut test = cargo();
    test.args(["test", "--workspace"]).args(args);
    run(test)
}
