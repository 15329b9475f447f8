//! `cargo xtask fuzz` and `cargo xtask fuzz-corpus`: the decoders of network input under libFuzzer.
//!
//! The targets live in `fuzz/`, a cargo-fuzz workspace of its own, built with nightly. A run
//! first installs what it lacks: the nightly toolchain (through rustup) and cargo-fuzz (into the
//! target directory, which CI keeps between runs). It then fuzzes each target for a bounded time
//! with bounded input length and memory; a panic, a sanitizer report, a leak, an input that takes
//! longer than [`TIMEOUT_SECS`] or an allocation larger than [`MALLOC_LIMIT_MB`] fails the run.
//!
//! The nightly build, cargo-fuzz and the inputs the fuzzer found worth keeping live under
//! `<target dir>/fuzz` (`$CARGO_TARGET_DIR/fuzz` when set), outside the clone; kept there, those
//! inputs let the next run start where this one stopped. The committed seeds, `fuzz/corpus/<target>/seed-*`, are
//! only read; `fuzz-corpus` rewrites them from this host's real frames, and every run builds the
//! program that does so, lest a change to the messages leave it behind. A crashing input is saved
//! under `fuzz/artifacts/<target>/` with the command that reproduces it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::{cargo, run, target_dir, workspace};

/// The fuzz targets and the shortest input length each may grow to; a target's longest seed
/// raises its limit.
const TARGETS: &[(&str, usize)] = &[("frame", 32 << 10), ("delta", 64 << 10)];
const DEFAULT_SECONDS: u64 = 60;
const NIGHTLY: &str = "nightly";
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// One input taking longer than this is a hang.
const TIMEOUT_SECS: u32 = 10;
/// Twice the largest payload a frame may declare (`MAX_RAW_LEN`, 16 MiB): the decoders may
/// allocate that much at once, and nothing should allocate more.
const MALLOC_LIMIT_MB: u32 = 32;
/// The whole process, AddressSanitizer's shadow and quarantine included; runs peak near 350 MB.
const RSS_LIMIT_MB: u32 = 1024;

/// `cargo xtask fuzz [--seconds N]`: every target for N seconds (default 60) each.
pub fn fuzz(args: &[String]) -> Result<(), String> {
    let seconds = match args {
        [] => DEFAULT_SECONDS,
        [flag, n] if flag == "--seconds" => n.parse().map_err(|_| format!("--seconds {n}: not a whole number"))?,
        _ => return Err(format!("fuzz: unexpected arguments {args:?}; usage: cargo xtask fuzz [--seconds N]")),
    };
    let root = target_dir().join("fuzz");
    ensure_nightly()?;
    let cargo_fuzz = ensure_cargo_fuzz(&root)?;

    // The seeds must stay regenerable: their generator builds against the messages as they are.
    let mut seed = seed_generator("build");
    seed.arg("--target-dir").arg(target_dir());
    run(seed)?;

    let started = Instant::now();
    let mut build = cargo_fuzz_command(&cargo_fuzz, "build");
    build.arg("--target-dir").arg(root.join("target"));
    run(build)?;
    eprintln!("xtask: fuzz targets built in {:.0?}", started.elapsed());

    let mut summary = Vec::new();
    for &(target, min_len) in TARGETS {
        let seeds = workspace().join("fuzz/corpus").join(target);
        let found = root.join("corpus").join(target);
        std::fs::create_dir_all(&found).map_err(|e| format!("creating {}: {e}", found.display()))?;
        let max_len = longest_file(&seeds)?.max(min_len);
        let mut cmd = cargo_fuzz_command(&cargo_fuzz, "run");
        cmd.arg("--target-dir").arg(root.join("target")).arg(target).arg(&found).arg(&seeds).arg("--").args([
            format!("-max_total_time={seconds}"),
            format!("-max_len={max_len}"),
            format!("-rss_limit_mb={RSS_LIMIT_MB}"),
            format!("-malloc_limit_mb={MALLOC_LIMIT_MB}"),
            format!("-timeout={TIMEOUT_SECS}"),
            "-print_final_stats=1".into(),
        ]);
        let started = Instant::now();
        let stats = run_fuzzer(cmd)?;
        summary.push(format!("{target}: {stats} in {:.0?}", started.elapsed()));
    }
    eprintln!("xtask: fuzzed without a crash: {}", summary.join("; "));
    Ok(())
}

/// `cargo xtask fuzz-corpus`: rewrites the seeds from this host's real frames.
pub fn corpus() -> Result<(), String> {
    let mut seed = seed_generator("run");
    seed.arg("--target-dir").arg(target_dir()).arg("--").arg(workspace().join("fuzz/corpus"));
    run(seed)
}

/// `cargo <subcommand>` of the seed generator, `fuzz/seed`, with the stable toolchain.
fn seed_generator(subcommand: &str) -> Command {
    let mut cmd = cargo();
    cmd.args([subcommand, "--manifest-path", "fuzz/Cargo.toml", "-p", "twinwatch-fuzz-seed"]);
    cmd
}

/// cargo-fuzz's `fuzz <subcommand>` with the nightly toolchain, outside this process's cargo
/// environment.
fn cargo_fuzz_command(cargo_fuzz: &Path, subcommand: &str) -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", NIGHTLY]).arg(cargo_fuzz).args(["fuzz", subcommand]);
    cmd.current_dir(workspace());
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if (name.starts_with("CARGO_") && name != "CARGO_HOME") || matches!(&*name, "CARGO" | "RUSTUP_TOOLCHAIN") {
            cmd.env_remove(&*name);
        }
    }
    cmd
}

fn ensure_nightly() -> Result<(), String> {
    let listed = Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .map_err(|e| format!("rustup, which installs the nightly toolchain the fuzzers need: {e}"))?;
    if String::from_utf8_lossy(&listed.stdout).lines().any(|l| l.starts_with(&format!("{NIGHTLY}-"))) {
        return Ok(());
    }
    eprintln!("xtask: installing the {NIGHTLY} toolchain");
    let started = Instant::now();
    let mut install = Command::new("rustup");
    install.args(["toolchain", "install", NIGHTLY, "--profile", "minimal"]);
    run(install)?;
    eprintln!("xtask: {NIGHTLY} installed in {:.0?}", started.elapsed());
    Ok(())
}

/// The cargo-fuzz installed under `root` by an earlier run, else one on the PATH, else a fresh
/// install under `root`.
fn ensure_cargo_fuzz(root: &Path) -> Result<PathBuf, String> {
    let install_root = root.join("cargo-fuzz");
    let cached = install_root.join("bin/cargo-fuzz");
    if cached.is_file() {
        return Ok(cached);
    }
    if Command::new("cargo-fuzz").arg("--version").output().is_ok_and(|o| o.status.success()) {
        return Ok(PathBuf::from("cargo-fuzz"));
    }
    eprintln!("xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION} into {}", install_root.display());
    let started = Instant::now();
    let mut install = cargo();
    install.args(["install", "cargo-fuzz", "--locked", "--version", CARGO_FUZZ_VERSION, "--root"]);
    // Built in a temporary directory, not among the workspace's artifacts.
    install.arg(&install_root).env_remove("CARGO_TARGET_DIR");
    run(install)?;
    eprintln!("xtask: cargo-fuzz installed in {:.0?}", started.elapsed());
    Ok(cached)
}

fn longest_file(dir: &Path) -> Result<usize, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("{}: {e} (cargo xtask fuzz-corpus writes it)", dir.display()))?;
    Ok(entries.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len() as usize).max().unwrap_or(0))
}

/// Runs one fuzzer, passing its output through, and returns its run count and peak memory from
/// libFuzzer's final statistics.
fn run_fuzzer(mut cmd: Command) -> Result<String, String> {
    let shown = format!("{cmd:?}");
    let mut child = cmd.stderr(Stdio::piped()).spawn().map_err(|e| format!("{shown}: {e}"))?;
    let (mut runs, mut rss) = (String::from("?"), String::from("?"));
    // Split on bytes: a crash report may quote the input, which need not be UTF-8.
    for line in BufReader::new(child.stderr.take().expect("piped stderr")).split(b'\n') {
        let line = line.map_err(|e| e.to_string())?;
        let line = String::from_utf8_lossy(&line);
        eprintln!("{line}");
        if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
            runs = n.trim().to_owned();
        } else if let Some(mb) = line.strip_prefix("stat::peak_rss_mb:") {
            rss = mb.trim().to_owned();
        }
    }
    let status = child.wait().map_err(|e| format!("{shown}: {e}"))?;
    if status.success() {
        Ok(format!("{runs} runs, peak RSS {rss} MB"))
    } else {
        Err(format!("{shown} failed: {status}"))
    }
}
