//! The systemd units, as `systemd-analyze` judges them: each loads without complaint and its
//! exposure score (`systemd-analyze security`, 0 safest to 10) is at most [`MAX_EXPOSURE`].
//! The packaged units' scores are in README.md.

use std::path::{Path, PathBuf};
use std::process::Command;

use twinwatch_tests::TempDir;

const MAX_EXPOSURE: f64 = 2.0;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace").to_owned()
}

/// `systemd-analyze security --offline=yes`'s overall exposure of a unit file.
fn exposure(unit: &Path) -> f64 {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(unit)
        .output()
        .expect("systemd-analyze (cargo xtask test installs systemd)");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no overall exposure for {}:\n{text}", unit.display()));
    let score = line.split(':').nth(1).and_then(|s| s.split_whitespace().next()).expect("a score");
    score.parse().unwrap_or_else(|_| panic!("bad score in {line:?}"))
}

#[test]
fn every_unit_is_hardened() {
    let ws = workspace();
    for unit in [
        "systemd/twinwatch-agent.service",
        "systemd/twinwatch-aggregator.service",
        "packaging/udm/twinwatch-agent.service",
    ] {
        let score = exposure(&ws.join(unit));
        eprintln!("{unit}: exposure {score}");
        assert!(score <= MAX_EXPOSURE, "{unit}: exposure {score} > {MAX_EXPOSURE}");
    }
}

#[test]
fn a_unit_missing_its_sandbox_scores_worse() {
    // The measurement itself: the same unit without its hardening is far more exposed.
    let tmp = TempDir::new("units");
    let text = std::fs::read_to_string(workspace().join("systemd/twinwatch-agent.service")).unwrap();
    let bare: String = text
        .lines()
        .filter(|l| {
            let key = l.split('=').next().unwrap_or("");
            !key.starts_with("Protect")
                && !key.starts_with("Private")
                && !key.starts_with("Restrict")
                && !key.starts_with("SystemCall")
                && !key.starts_with("Capability")
                && key != "User"
        })
        .collect::<Vec<_>>()
        .join("\n");
    let unit = tmp.path().join("twinwatch-agent.service");
    std::fs::write(&unit, bare).unwrap();
    assert!(exposure(&unit) > 5.0, "a unit without a sandbox should score above 5");
}

#[test]
fn the_udm_unit_verifies_in_its_layout() {
    // `systemd-analyze verify` checks that ExecStart exists and that the targets it names load:
    // give it the UDM layout and this machine's own system units in a scratch root.
    let tmp = TempDir::new("units-udm");
    let root = tmp.path();
    std::fs::create_dir_all(root.join("usr/lib/systemd")).unwrap();
    let copied = Command::new("cp").arg("-r").arg("/usr/lib/systemd/system").arg(root.join("usr/lib/systemd")).status();
    assert!(copied.unwrap().success(), "copying the system's units");
    let bin = root.join("data/twinwatch/bin/twinwatch-agent");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::create_dir_all(root.join("data/twinwatch/state")).unwrap();
    std::fs::write(&bin, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let units = root.join("etc/systemd/system");
    std::fs::create_dir_all(&units).unwrap();
    std::fs::copy(workspace().join("packaging/udm/twinwatch-agent.service"), units.join("twinwatch-agent.service"))
        .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg(units.join("twinwatch-agent.service"))
        .output()
        .unwrap();
    // Unknown or malformed settings are warnings, not failures: nothing may be said at all.
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
}
