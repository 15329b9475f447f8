//! The UniFi OS install, from the release tarball, in a scratch directory standing in for `/`:
//! install with certificates, the aarch64 agent run from where it was installed under
//! `qemu-aarch64-static -cpu cortex-a57` (the UDM Pro's core) against a real aggregator on
//! loopback, a firmware update that removes the unit and the boot hook that restores it, an
//! upgrade that keeps the operator's configuration, and uninstall with and without `--purge`.
//! `systemctl` is a script that records what it is asked.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use twinwatch_tests::dist::{self, elf_machine, is_dynamic, run_ok};
use twinwatch_tests::{wait_for, Aggregator, Proc, TempDir};

const QEMU: &str = "qemu-aarch64-static";

struct Scratch {
    root: PathBuf,
    unpacked: PathBuf,
    systemctl_log: PathBuf,
    recorder: PathBuf,
}

impl Scratch {
    fn new(tmp: &Path, name: &str) -> Scratch {
        let tarball = dist::find(&dist::dir(), "twinwatch-agent-", "-udm-aarch64.tar.gz");
        let unpack = tmp.join(format!("{name}-release"));
        std::fs::create_dir_all(&unpack).unwrap();
        run_ok(Command::new("tar").arg("-xzf").arg(&tarball).arg("-C").arg(&unpack));
        let unpacked = std::fs::read_dir(&unpack).unwrap().flatten().next().expect("one directory").path();
        let systemctl_log = tmp.join(format!("{name}-systemctl.log"));
        let recorder = tmp.join(format!("{name}-systemctl"));
        std::fs::write(&recorder, format!("#!/bin/sh\necho \"$*\" >> {}\n", systemctl_log.display())).unwrap();
        std::fs::set_permissions(&recorder, std::fs::Permissions::from_mode(0o755)).unwrap();
        Scratch { root: tmp.join(name), unpacked, systemctl_log, recorder }
    }

    fn data(&self) -> PathBuf {
        self.root.join("data/twinwatch")
    }

    fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new("sh");
        cmd.arg(program)
            .env("TWINWATCH_ROOT", &self.root)
            .env("SYSTEMCTL", &self.recorder)
            .env("TWINWATCH_EXEC", format!("{QEMU} -cpu cortex-a57"));
        cmd
    }

    fn install(&self, args: &[&str]) -> String {
        let (out, err) = run_ok(self.command(&self.unpacked.join("install.sh")).args(args));
        out + &err
    }

    /// What systemctl was asked since the last call.
    fn systemctl_calls(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.systemctl_log).unwrap_or_default();
        let _ = std::fs::remove_file(&self.systemctl_log);
        text.lines().map(str::to_owned).collect()
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o7777
}

#[test]
fn the_udm_install_survives_a_firmware_update_and_its_agent_runs_under_qemu() {
    let tmp = TempDir::new("udm");
    let agg = Aggregator::start(&tmp.path().join("agg"));
    let certs = tmp.path().join("issued");
    agg.issue("udm-pro", "dc1", &certs);
    let s = Scratch::new(tmp.path(), "root");
    let data = s.data();

    // Install: binary, configuration with the aggregator's address, certificates, unit, hook.
    let quic = format!("127.0.0.1:{}", agg.quic_port);
    let said = s.install(&["--certs", certs.to_str().unwrap(), "--aggregator", &quic, "--server-name", "localhost"]);
    assert!(said.contains("certificate: agent \"udm-pro\" in dc \"dc1\""), "{said}");
    assert!(said.contains("twinwatch: started") && !said.contains("not started"), "{said}");
    let agent = data.join("bin/twinwatch-agent");
    assert_eq!(elf_machine(&agent), 183, "the installed agent is aarch64");
    assert!(!is_dynamic(&agent), "the installed agent is static");
    assert_eq!(mode(&agent), 0o755);
    assert_eq!(mode(&data.join("certs/agent.key")), 0o600);
    assert_eq!(mode(&data.join("state")), 0o700);
    let config = std::fs::read_to_string(data.join("agent.toml")).unwrap();
    assert!(config.contains(&format!("aggregator = \"{quic}\"")), "{config}");
    assert!(config.contains("server_name = \"localhost\""), "{config}");
    let unit = std::fs::read(s.unpacked.join("twinwatch-agent.service")).unwrap();
    let installed_unit = s.root.join("etc/systemd/system/twinwatch-agent.service");
    assert_eq!(std::fs::read(&installed_unit).unwrap(), unit);
    assert_eq!(std::fs::read(data.join("twinwatch-agent.service")).unwrap(), unit);
    let hook = s.root.join("data/on_boot.d/10-twinwatch-agent.sh");
    assert_eq!(mode(&hook), 0o755);
    assert_eq!(
        s.systemctl_calls(),
        ["daemon-reload", "enable twinwatch-agent.service", "restart twinwatch-agent.service"]
    );

    // The installed agent, as the unit would run it, on the UDM Pro's CPU.
    let mut agent_proc = Proc::spawn(
        Path::new(QEMU),
        &["-cpu", "cortex-a57", agent.to_str().unwrap(), "--config", data.join("agent.toml").to_str().unwrap(), "run"],
        tmp.path().join("agent.log"),
    );
    let host = wait_for("the aarch64 agent's host in the API", Duration::from_secs(90), || {
        agg.get("/api/v1/hosts/udm-pro").filter(|h| h["memory"].is_object())
    });
    assert_eq!(host["dc"], "dc1", "{host}");
    assert_eq!(host["identity"]["arch"], "aarch64", "{}", host["identity"]);
    assert!(std::fs::read_dir(data.join("state")).unwrap().count() > 0, "the buffer lives under /data/twinwatch/state");
    // The host can be in the API before the agent logs its connection: wait for the line.
    wait_for("the agent's connected line", Duration::from_secs(10), || {
        agent_proc.log_text().contains("connected to aggregator").then_some(())
    });
    agent_proc.terminate();

    // A firmware update wipes /etc: at boot, the hook puts the unit back and starts it.
    std::fs::remove_dir_all(s.root.join("etc")).unwrap();
    run_ok(&mut s.command(&hook));
    assert_eq!(std::fs::read(&installed_unit).unwrap(), unit);
    assert_eq!(
        s.systemctl_calls(),
        ["daemon-reload", "enable twinwatch-agent.service", "start twinwatch-agent.service"]
    );
    // Nothing removed: nothing to reload.
    run_ok(&mut s.command(&hook));
    assert_eq!(s.systemctl_calls(), ["enable twinwatch-agent.service", "start twinwatch-agent.service"]);

    // An upgrade keeps what the operator changed.
    let edited = config.replace("top = 5", "top = 8");
    std::fs::write(data.join("agent.toml"), &edited).unwrap();
    let said = s.install(&[]);
    assert!(said.contains("keeping"), "{said}");
    assert_eq!(std::fs::read_to_string(data.join("agent.toml")).unwrap(), edited);

    // Uninstall keeps configuration, certificates and buffer; --purge removes them.
    s.systemctl_calls();
    s.install(&["uninstall"]);
    assert_eq!(s.systemctl_calls(), ["disable --now twinwatch-agent.service", "daemon-reload"]);
    for gone in [agent.clone(), installed_unit.clone(), hook.clone(), data.join("twinwatch-agent.service")] {
        assert!(!gone.exists(), "{} is left behind", gone.display());
    }
    for kept in ["agent.toml", "certs/agent.key", "state"] {
        assert!(data.join(kept).exists(), "{kept} was not kept");
    }
    s.install(&["uninstall", "--purge"]);
    assert!(!data.exists(), "--purge leaves {}", data.display());
}

#[test]
fn a_udm_install_without_certificates_is_not_started() {
    let tmp = TempDir::new("udm-unready");
    let s = Scratch::new(tmp.path(), "root");
    let said = s.install(&[]);
    assert!(said.contains("not started"), "{said}");
    assert!(said.contains("certs/ca.crt: "), "the reason names the missing certificate: {said}");
    assert_eq!(s.systemctl_calls(), ["daemon-reload", "enable twinwatch-agent.service"]);
    assert!(s.data().join("bin/twinwatch-agent").exists());
    // Unknown options are refused before anything is changed.
    let refused = s.command(&s.unpacked.join("install.sh")).arg("--bogus").output().unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("unknown option --bogus"));
}
