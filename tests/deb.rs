//! The .deb packages, installed on this machine with `dpkg -i` as an operator would: files,
//! conffiles, the system user, the units (`systemd-analyze verify`), no start without a
//! certificate; then the operator's steps (a CA, a token, an agent certificate), both installed
//! binaries run as the package's user and the agent's host seen in the API; a reinstall that now
//! finds them configured; and `dpkg --purge`, which must leave nothing behind.
//!
//! Needs root (CI runs as root). The arm64 packages are checked for their contents.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use twinwatch_tests::dist::{self, elf_machine, is_dynamic, run_ok};
use twinwatch_tests::{get_json, http_get, wait_for, Proc, TempDir};

const PACKAGES: [&str; 2] = ["twinwatch-agent", "twinwatch-aggregator"];

fn field(deb: &Path, name: &str) -> String {
    run_ok(Command::new("dpkg-deb").arg("-f").arg(deb).arg(name)).0.trim().to_owned()
}

fn purge() {
    let _ = Command::new("dpkg").arg("--purge").args(PACKAGES).output();
}

/// As the package's user, the way its unit runs it; `setpriv` execs, so signals reach it.
const AS_TWINWATCH: [&str; 3] = ["--reuid=twinwatch", "--regid=twinwatch", "--init-groups"];

fn as_twinwatch(program: &str) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(AS_TWINWATCH).arg(program);
    cmd
}

fn spawn_as_twinwatch(program: &str, args: &[&str], log: &Path) -> Proc {
    let all: Vec<&str> = AS_TWINWATCH.iter().copied().chain([program]).chain(args.iter().copied()).collect();
    Proc::spawn(Path::new("setpriv"), &all, log.to_owned())
}

fn uid_of(user: &str) -> Option<u32> {
    let out = Command::new("getent").args(["passwd", user]).output().ok()?;
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    line.split(':').nth(2)?.parse().ok()
}

#[test]
fn both_architectures_are_packaged() {
    let dir = dist::dir();
    for (arch, machine) in [("amd64", 62), ("arm64", 183)] {
        for package in PACKAGES {
            let deb = dist::find(&dir, &format!("{package}_"), &format!("_{arch}.deb"));
            assert_eq!(field(&deb, "Package"), package);
            assert_eq!(field(&deb, "Architecture"), arch);
            assert_eq!(field(&deb, "Depends"), "adduser", "a static binary needs no libraries");
            let tmp = TempDir::new(&format!("deb-contents-{package}-{arch}"));
            run_ok(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(tmp.path()));
            let bin = tmp.path().join("usr/bin").join(package);
            assert_eq!(elf_machine(&bin), machine, "{}", bin.display());
            assert!(!is_dynamic(&bin), "{} is static", bin.display());
            let role = package.trim_start_matches("twinwatch-");
            for file in [format!("etc/twinwatch/{role}.toml"), format!("lib/systemd/system/{package}.service")] {
                assert!(tmp.path().join(&file).exists(), "{file} missing from {}", deb.display());
            }
        }
    }
}

#[test]
fn the_amd64_packages_install_run_and_purge_cleanly() {
    assert!(nix::unistd::geteuid().is_root(), "dpkg -i needs root (CI runs as root)");
    let dir = dist::dir();
    let debs: Vec<_> = PACKAGES.iter().map(|p| dist::find(&dir, &format!("{p}_"), "_amd64.deb")).collect();
    purge();
    // A user left by an earlier, interrupted run would hide whether purge removes it.
    if uid_of("twinwatch").is_some() {
        let _ = Command::new("deluser").args(["--system", "--quiet", "twinwatch"]).status();
        let _ = Command::new("delgroup").args(["--system", "--quiet", "twinwatch"]).status();
    }
    assert_eq!(uid_of("twinwatch"), None, "a twinwatch user exists before the packages are installed");

    // A fresh install: nothing configured, so nothing started, and it says why.
    let (_, said) = run_ok(Command::new("dpkg").arg("-i").args(&debs));
    assert!(said.contains("twinwatch-agent: installed and enabled, not started"), "{said}");
    assert!(said.contains("twinwatch-aggregator: installed and enabled, not started"), "{said}");
    for package in PACKAGES {
        let role = package.trim_start_matches("twinwatch-");
        assert!(Path::new("/usr/bin").join(package).exists());
        let config = format!("/etc/twinwatch/{role}.toml");
        let meta = std::fs::metadata(&config).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o640, "{config}");
        let conffiles = run_ok(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", package])).0;
        assert!(conffiles.contains(&config), "{config} is not a conffile: {conffiles}");
        let state = std::fs::metadata(format!("/var/lib/twinwatch/{role}")).unwrap();
        assert_eq!(state.permissions().mode() & 0o777, 0o700);
        assert_eq!(Some(state.uid()), uid_of("twinwatch"));
        let wants = format!("/etc/systemd/system/multi-user.target.wants/{package}.service");
        assert!(Path::new(&wants).exists(), "{wants}: the unit is not enabled");
    }
    let passwd = run_ok(Command::new("getent").args(["passwd", "twinwatch"])).0;
    assert!(passwd.trim_end().ends_with(":/usr/sbin/nologin"), "{passwd}");
    assert!(uid_of("twinwatch").is_some_and(|uid| uid < 1000), "a system user: {passwd}");
    // Unknown or malformed settings are only warnings: nothing may be said at all.
    let (_, said) = run_ok(Command::new("systemd-analyze").args([
        "verify",
        "/lib/systemd/system/twinwatch-agent.service",
        "/lib/systemd/system/twinwatch-aggregator.service",
    ]));
    assert!(said.trim().is_empty(), "systemd-analyze verify: {said}");

    // The operator: a CA (as root, with sudo; the files go to the service's user), a token, an
    // agent certificate installed for the agent's user.
    let tmp = TempDir::new("deb");
    run_ok(Command::new("twinwatch-aggregator").args(["certs", "init", "--name", "aggregator.test"]));
    let key = std::fs::metadata("/var/lib/twinwatch/aggregator/certs/server.key").unwrap();
    assert_eq!(Some(key.uid()), uid_of("twinwatch"), "certs init under sudo hands the key to the service's user");
    let token =
        run_ok(Command::new("twinwatch-aggregator").args(["tokens", "create", "--role", "read", "--name", "t"])).0;
    let token = token.trim().to_owned();
    let issued = tmp.path().join("issued");
    run_ok(
        Command::new("twinwatch-aggregator")
            .args(["certs", "issue", "--agent", "deb-host", "--dc", "dc2", "--out"])
            .arg(&issued),
    );
    let mut install = Command::new("install");
    install.args(["-D", "-o", "twinwatch", "-g", "twinwatch", "-m", "0600", "-t", "/var/lib/twinwatch/agent/certs"]);
    run_ok(install.args(["ca.crt", "agent.crt", "agent.key"].map(|f| issued.join(f))));
    run_ok(as_twinwatch("twinwatch-aggregator").arg("check"));
    let checked = run_ok(as_twinwatch("twinwatch-agent").arg("check")).0;
    assert!(checked.contains("certificate: agent \"deb-host\" in dc \"dc2\""), "{checked}");

    // Both installed binaries, as the units run them (the package's user, the packaged
    // configuration), on loopback ports of their own choosing.
    let mut aggregator = spawn_as_twinwatch(
        "/usr/bin/twinwatch-aggregator",
        &["run", "--quic-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"],
        &tmp.path().join("aggregator.log"),
    );
    let quic_addr = aggregator.wait_logged_addr("aggregator listening", "quic").to_string();
    let http = aggregator.wait_logged_addr("aggregator listening", "http").port();
    wait_for("the installed aggregator", Duration::from_secs(20), || {
        matches!(http_get(http, "/health/ready", None), Ok((200, _))).then_some(())
    });
    let mut agent = spawn_as_twinwatch(
        "/usr/bin/twinwatch-agent",
        &["run", "--aggregator", &quic_addr, "--server-name", "localhost"],
        &tmp.path().join("agent.log"),
    );
    let host = wait_for("the installed agent's host", Duration::from_secs(30), || {
        get_json(http, "/api/v1/hosts/deb-host", &token).filter(|h| h["memory"].is_object())
    });
    assert_eq!(host["dc"], "dc2");
    agent.terminate();
    aggregator.terminate();

    // Configured now: a reinstall (an upgrade's path) finds both ready.
    let (_, said) = run_ok(Command::new("dpkg").arg("-i").args(&debs));
    assert!(!said.contains("not started"), "{said}");

    // Purge leaves nothing: binaries, configuration, state, units' enablement, the user.
    run_ok(Command::new("dpkg").arg("--purge").args(PACKAGES));
    for gone in [
        "/usr/bin/twinwatch-agent",
        "/usr/bin/twinwatch-aggregator",
        "/etc/twinwatch",
        "/var/lib/twinwatch",
        "/lib/systemd/system/twinwatch-agent.service",
        "/etc/systemd/system/multi-user.target.wants/twinwatch-agent.service",
        "/etc/systemd/system/multi-user.target.wants/twinwatch-aggregator.service",
    ] {
        assert!(!Path::new(gone).exists(), "{gone} is left after purge");
    }
    assert_eq!(uid_of("twinwatch"), None, "the twinwatch user is left after purge");
}
