//! `cargo xtask`: the project's repeatable chores, in Rust rather than shell.
//!
//! - `cargo xtask quickstart [ARGS]`: build release binaries and run
//!   `twinwatch-aggregator quickstart ARGS` (an aggregator and a local agent).
//! - `cargo xtask test`: install what the tests need (Debian packages, schemathesis in a virtual
//!   environment), build the binaries and the release
//!   artefacts (`cargo xtask dist`), run every test, then fuzz the network decoders for a minute
//!   each (`cargo xtask fuzz`).
//! - `cargo xtask dist`: static binaries for x86_64 and aarch64, .debs for amd64 and arm64, the
//!   UniFi OS tarball and the Fly.io build context, under `<target dir>/dist`; see `dist.rs`.
//! - `cargo xtask bench [--seconds N]`: release binaries next to their peers (node_exporter, blackbox_exporter) in
//!   the same run, then the agent's collectors against the procfs and sysinfo crates; prints medians and ratios,
//!   writes `target/bench/*.json`.
//! - `cargo xtask dictionary`: sample this host for two minutes and train the wire's zstd
//!   dictionary, `common/src/wire.dict` (a protocol change: see `common/src/frame.rs`).
//! - `cargo xtask fuzz [--seconds N]`: run each fuzz target in `fuzz/` for N seconds (default 60),
//!   installing nightly and cargo-fuzz first if they are missing; see `fuzz.rs`.
//! - `cargo xtask fuzz-corpus`: sample this host and rewrite the fuzzers' seeds, `fuzz/corpus/`.
//! - `cargo xtask audit [--refresh DB]`: the locked dependencies against the RustSec advisories
//!   vendored in `xtask/advisories/`, offline; `--refresh` copies them again from a database
//!   checkout. `test` runs it first. See `audit.rs`.

use std::path::PathBuf;
use std::process::{exit, Command};

mod audit;
mod dist;
mod fuzz;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("quickstart") => quickstart(&args[1..]),
        Some("test") => test(&args[1..]),
        Some("bench") => bench(&args[1..]),
        Some("dist") => dist::dist(&args[1..]).map(|_| ()),
        Some("dictionary") => dictionary(),
        Some("fuzz") => fuzz::fuzz(&args[1..]),
        Some("fuzz-corpus") => fuzz::corpus(),
        Some("audit") => audit::audit(&args[1..]),
        _ => {
            eprintln!("usage: cargo xtask quickstart [--data-dir DIR] [--http-port P] [--quic-port Q]");
            eprintln!("       cargo xtask test [extra cargo test args]");
            eprintln!("       cargo xtask bench [--seconds N]");
            eprintln!("       cargo xtask dist");
            eprintln!("       cargo xtask dictionary");
            eprintln!("       cargo xtask fuzz [--seconds N]");
            eprintln!("       cargo xtask fuzz-corpus");
            eprintln!("       cargo xtask audit [--refresh PATH-TO-ADVISORY-DB]");
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
    // `cargo xtask` runs this program with cargo's package variables set; passed on to the
    // builds below, some build scripts (ring's) would see a changed environment and rebuild.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_") && !matches!(&*name, "CARGO_HOME" | "CARGO_TARGET_DIR") {
            c.env_remove(&*name);
        }
    }
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

/// Debian packages the test suite needs, installed when missing (as root, with apt): the peers
/// it compares against, iproute2 for network namespaces, and what the package tests use
/// (`systemd-analyze`; `adduser` and `deb-systemd-helper` for the .debs' scripts).
const APT_PACKAGES: &[&str] = &[
    "prometheus-node-exporter",
    "prometheus-blackbox-exporter",
    "prometheus",
    "victoria-metrics",
    "iproute2",
    "systemd",
    "adduser",
    "init-system-helpers",
];

/// Installs those of `packages` that are missing.
pub(crate) fn ensure_apt_packages(packages: &[&str]) -> Result<(), String> {
    let missing: Vec<&str> = packages
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

/// schemathesis, at the versions `tests/schemathesis/requirements.txt` pins, in a virtual
/// environment under the target directory (made again when the pins change); returns its `st`.
fn ensure_schemathesis() -> Result<PathBuf, String> {
    let pins = workspace().join("tests/schemathesis/requirements.txt");
    let wanted = std::fs::read_to_string(&pins).map_err(|e| format!("{}: {e}", pins.display()))?;
    let venv = target_dir().join("schemathesis");
    let st = venv.join("bin/st");
    let stamp = venv.join("installed-requirements.txt");
    if st.exists() && std::fs::read_to_string(&stamp).is_ok_and(|had| had == wanted) {
        return Ok(st);
    }
    let _ = std::fs::remove_dir_all(&venv);
    let mut make = Command::new("python3");
    make.args(["-m", "venv"]).arg(&venv);
    run(make)?;
    let mut install = Command::new(venv.join("bin/pip"));
    install.args(["install", "--quiet", "--disable-pip-version-check", "--no-input", "-r"]).arg(&pins);
    run(install)?;
    std::fs::write(&stamp, wanted).map_err(|e| format!("{}: {e}", stamp.display()))?;
    Ok(st)
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
    // Reads two files and builds nothing: a known advisory fails the run before any build.
    audit::audit(&[])?;
    ensure_apt_packages(APT_PACKAGES)?;
    // End-to-end tests start the real binaries: build them first, and the release artefacts the
    // packaging tests install and run.
    let mut build = cargo();
    build.args(["build", "--bins", "-p", "twinwatch-agent", "-p", "twinwatch-aggregator"]);
    run(build)?;
    let dist = dist::dist(&[])?;
    let schemathesis = ensure_schemathesis()?;
    let mut test = cargo();
    test.args(["test", "--workspace"])
        .args(args)
        .env("TWINWATCH_DIST", dist)
        .env("TWINWATCH_SCHEMATHESIS", schemathesis);
    let total = run_counting(test)?;
    // The fuzzers run once the tests pass, and the count still ends the run.
    let fuzzed = fuzz::fuzz(&[]);
    println!("{total}");
    fuzzed
}

/// Runs `cargo test`, passing its output through, and totals every harness's `test result:`
/// line in one line: printed here if the tests fail, returned for the caller to end with if not.
fn run_counting(mut cmd: Command) -> Result<String, String> {
    use std::io::{BufRead, BufReader};
    let shown = format!("{cmd:?}");
    let mut child = cmd.stdout(std::process::Stdio::piped()).spawn().map_err(|e| format!("{shown}: {e}"))?;
    let (mut passed, mut failed, mut ignored) = (0u64, 0u64, 0u64);
    for line in BufReader::new(child.stdout.take().expect("piped stdout")).lines() {
        let line = line.map_err(|e| e.to_string())?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let count = |word: &str| {
                rest.split(';')
                    .find_map(|part| {
                        part.trim().trim_start_matches("ok. ").trim_start_matches("FAILED. ").strip_suffix(word)
                    })
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .unwrap_or(0)
            };
            passed += count(" passed");
            failed += count(" failed");
            ignored += count(" ignored");
        }
    }
    let status = child.wait().map_err(|e| format!("{shown}: {e}"))?;
    let total = format!("all tests: {passed} passed, {failed} failed, {ignored} skipped");
    if status.success() {
        Ok(total)
    } else {
        println!("{total}");
        Err(format!("{shown} failed: {status}"))
    }
}

fn bench(args: &[String]) -> Result<(), String> {
    ensure_apt_packages(APT_PACKAGES)?;
    let mut build = cargo();
    build.args(["build", "--release", "--bins", "-p", "twinwatch-agent", "-p", "twinwatch-aggregator"]);
    run(build)?;
    for name in ["host", "probes", "replay", "history", "prometheus", "fleet"] {
        let mut bench = cargo();
        bench.args(["bench", "-p", "twinwatch-tests", "--bench", name, "--"]).args(args);
        run(bench)?;
    }
    // The thousand agents. Not in a 256 MiB cgroup (`--memory-limit-mib 256`), the VM the
    // aggregator is meant for, until it fits one: it peaks above 256 MiB there now (README).
    let mut thousand = cargo();
    thousand.args(["bench", "-p", "twinwatch-tests", "--bench", "fleet", "--"]);
    thousand.args(["--agents", "1000", "--readers", "0", "--loadgen-threads", "2"]);
    run(thousand)?;
    // The agent's collectors against the procfs and sysinfo crates: in-process, its own budget.
    let mut collectors = cargo();
    collectors.args(["bench", "-p", "twinwatch-agent", "--bench", "collectors"]);
    run(collectors)
}

fn dictionary() -> Result<(), String> {
    let mut train = cargo();
    train.args(["run", "--release", "-p", "twinwatch-agent", "--example", "train_dictionary", "--"]);
    train.arg(workspace().join("common/src/wire.dict"));
    run(train)
}
