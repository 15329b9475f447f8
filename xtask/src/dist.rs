//! `cargo xtask dist`: everything an operator installs, from one command.
//!
//! Static release binaries for x86_64 and aarch64 (musl, the size-tuned release profile), then,
//! under `<target dir>/dist/`:
//!
//! - `x86_64/`, `aarch64/`: the two binaries of each target;
//! - `twinwatch-{agent,aggregator}_<version>_{amd64,arm64}.deb`: binary, default configuration
//!   in `/etc/twinwatch/` (a conffile), the hardened unit from `systemd/`, and the maintainer
//!   scripts of `packaging/deb/` (a system user, state in `/var/lib/twinwatch/`, no start
//!   without a certificate), built with `dpkg-deb`;
//! - `twinwatch-agent-<version>-udm-aarch64.tar.gz`: the aarch64 agent with
//!   `packaging/udm/install.sh`, for UniFi OS consoles;
//! - `fly/`: a Fly.io build context, `packaging/fly/` with the x86_64 binaries beside it.
//!
//! It installs what it lacks first: the musl and aarch64 C toolchains and qemu (apt) and the two
//! Rust targets (rustup).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{cargo, ensure_apt_packages, run, target_dir, workspace};

/// Rust target, Debian architecture, short name.
pub const TARGETS: &[(&str, &str, &str)] =
    &[("x86_64-unknown-linux-musl", "amd64", "x86_64"), ("aarch64-unknown-linux-musl", "arm64", "aarch64")];
/// What the cross builds and the aarch64 runs need. The aarch64 C compiler builds ring and
/// zstd against the cross C library's headers, which apt only recommends.
pub const APT_PACKAGES: &[&str] = &["musl-tools", "gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross", "qemu-user-static"];
const VERSION: &str = env!("CARGO_PKG_VERSION");

struct Package {
    role: &'static str,
    other: &'static str,
    summary: &'static str,
    description: &'static str,
    not_ready: &'static str,
}

const PACKAGES: &[Package] = &[
    Package {
        role: "agent",
        other: "aggregator",
        summary: "twinwatch agent: samples this host and probes endpoints for a twinwatch aggregator",
        description: "A small static agent that samples CPU, memory, load, network, disks, filesystems, \
            sensors and processes, probes HTTP, TCP, DNS and TLS endpoints and whole OpenAPI \
            services, buffers what it reads, and ships compressed deltas over QUIC with mutual TLS \
            to a twinwatch aggregator.",
        not_ready: "it has no certificate yet. On the aggregator, `twinwatch-aggregator certs issue --agent NAME \
            --dc DC`; copy ca.crt, agent.crt and agent.key here with `install -o twinwatch -g twinwatch -m 0600 \
            -t /var/lib/twinwatch/agent/certs ...`, and set `aggregator` and `server_name` in \
            /etc/twinwatch/agent.toml.",
    },
    Package {
        role: "aggregator",
        other: "agent",
        summary: "twinwatch aggregator: the twin of every host and endpoint, with history and a REST API",
        description: "Receives twinwatch agents over QUIC with mutual TLS, reconciles each host's and \
            endpoint's state across data centres, keeps history with rollups, and serves it over a \
            REST API, Prometheus exposition and remote write.",
        not_ready: "it has no CA yet: `sudo twinwatch-aggregator certs init --name aggregator.example.net` \
            (the names agents reach it by), then `sudo twinwatch-aggregator tokens create --role admin`.",
    },
];

/// `cargo xtask dist`: builds everything and prints what it wrote, with sizes.
pub fn dist(args: &[String]) -> Result<PathBuf, String> {
    if !args.is_empty() {
        return Err(format!("dist: unexpected arguments {args:?}; usage: cargo xtask dist"));
    }
    ensure_apt_packages(APT_PACKAGES)?;
    ensure_rust_targets()?;
    for (triple, _, _) in TARGETS {
        let mut build = cargo();
        build.args(["build", "--release", "--target", triple, "--bins", "-p", "twinwatch-agent"]);
        build.args(["-p", "twinwatch-aggregator"]);
        run(build)?;
    }

    let out = target_dir().join("dist");
    if out.exists() {
        std::fs::remove_dir_all(&out).map_err(|e| format!("clearing {}: {e}", out.display()))?;
    }
    let mut written = Vec::new();
    for (triple, deb_arch, short) in TARGETS {
        let dir = out.join(short);
        for bin in ["twinwatch-agent", "twinwatch-aggregator"] {
            let built = target_dir().join(triple).join("release").join(bin);
            written.push(copy(&built, &dir.join(bin), 0o755)?);
        }
        for package in PACKAGES {
            written.push(deb(package, &dir, deb_arch, &out)?);
        }
    }
    written.push(udm_tarball(&out.join("aarch64/twinwatch-agent"), &out)?);
    written.push(fly_context(&out.join("x86_64"), &out.join("fly"))?);

    let mut table = String::from("xtask dist:\n");
    for path in &written {
        let size = if path.is_dir() { dir_size(path) } else { std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) };
        let shown = path.strip_prefix(&out).unwrap_or(path).display().to_string();
        let _ = writeln!(table, "  {shown:<52} {:>6.2} MiB", size as f64 / (1 << 20) as f64);
    }
    let _ = write!(table, "  in {}", out.display());
    println!("{table}");
    Ok(out)
}

fn ensure_rust_targets() -> Result<(), String> {
    let installed =
        Command::new("rustup").args(["target", "list", "--installed"]).output().map_err(|e| format!("rustup: {e}"))?;
    let installed = String::from_utf8_lossy(&installed.stdout).into_owned();
    let missing: Vec<&str> =
        TARGETS.iter().map(|t| t.0).filter(|t| !installed.lines().any(|l| l.trim() == *t)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut add = Command::new("rustup");
    add.args(["target", "add"]).args(&missing);
    run(add)
}

fn copy(from: &Path, to: &Path, mode: u32) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::copy(from, to).map_err(|e| format!("copying {} to {}: {e}", from.display(), to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("{}: {e}", to.display()))?;
    Ok(to.to_owned())
}

fn write(path: &Path, text: &str, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// One .deb: the staging tree, `DEBIAN/` with control, conffiles, md5sums and the maintainer
/// scripts, then `dpkg-deb --root-owner-group --build`.
fn deb(p: &Package, bins: &Path, arch: &str, out: &Path) -> Result<PathBuf, String> {
    let name = format!("twinwatch-{}", p.role);
    let root = target_dir().join("dist-staging").join(format!("{name}_{arch}"));
    if root.exists() {
        std::fs::remove_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
    }
    let ws = workspace();
    copy(&bins.join(&name), &root.join("usr/bin").join(&name), 0o755)?;
    copy(&ws.join(format!("packaging/{}.toml", p.role)), &root.join(format!("etc/twinwatch/{}.toml", p.role)), 0o640)?;
    copy(&ws.join(format!("systemd/{name}.service")), &root.join(format!("lib/systemd/system/{name}.service")), 0o644)?;
    let doc = root.join("usr/share/doc").join(&name);
    write(
        &doc.join("copyright"),
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
         Upstream-Name: twinwatch\nSource: https://github.com/twinwatch/twinwatch\n\n\
         Files: *\nCopyright: the twinwatch authors\nLicense: Apache-2.0\n \
         On Debian systems, the full text of the Apache License 2.0 is in\n \
         /usr/share/common-licenses/Apache-2.0.\n",
        0o644,
    )?;
    copy(&ws.join("README.md"), &doc.join("README.md"), 0o644)?;

    let debian = root.join("DEBIAN");
    let installed_kib = dir_size(&root).div_ceil(1024);
    let description = wrap_description(p.description);
    write(
        &debian.join("control"),
        &format!(
            "Package: {name}\nVersion: {VERSION}\nArchitecture: {arch}\nMaintainer: twinwatch <maintainers@twinwatch.invalid>\n\
             Installed-Size: {installed_kib}\nDepends: adduser\nSection: net\nPriority: optional\n\
             Homepage: https://github.com/twinwatch/twinwatch\nDescription: {}\n{description}",
            p.summary
        ),
        0o644,
    )?;
    write(&debian.join("conffiles"), &format!("/etc/twinwatch/{}.toml\n", p.role), 0o644)?;
    for script in ["postinst", "prerm", "postrm"] {
        let template = std::fs::read_to_string(ws.join("packaging/deb").join(script))
            .map_err(|e| format!("packaging/deb/{script}: {e}"))?;
        let text = template.replace("@ROLE@", p.role).replace("@OTHER@", p.other).replace("@NOT_READY@", p.not_ready);
        write(&debian.join(script), &text, 0o755)?;
    }
    write(&debian.join("md5sums"), &md5sums(&root)?, 0o644)?;

    let deb = out.join(format!("{name}_{VERSION}_{arch}.deb"));
    let mut build = Command::new("dpkg-deb");
    build.args(["--root-owner-group", "-Zxz", "--build"]).arg(&root).arg(&deb);
    run(build)?;
    Ok(deb)
}

/// A Debian long description: lines of at most 72 characters, each indented by one space.
fn wrap_description(text: &str) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > 72 {
            let _ = writeln!(out, " {line}");
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        let _ = writeln!(out, " {line}");
    }
    out
}

/// `md5sum` of every file outside `DEBIAN/`, paths relative to the root.
fn md5sums(root: &Path) -> Result<String, String> {
    let mut files = Vec::new();
    collect_files(root, root, &mut files);
    files.retain(|f| !f.starts_with("DEBIAN"));
    files.sort();
    let output = Command::new("md5sum").current_dir(root).args(&files).output().map_err(|e| format!("md5sum: {e}"))?;
    if !output.status.success() {
        return Err(format!("md5sum failed: {}", String::from_utf8_lossy(&output.stderr)));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files(root, &path, out);
        } else if let Ok(relative) = path.strip_prefix(root) {
            out.push(relative.to_owned());
        }
    }
}

/// The UniFi OS tarball: one directory with the agent, its installer, boot hook, unit and
/// configuration template.
fn udm_tarball(agent: &Path, out: &Path) -> Result<PathBuf, String> {
    let base = format!("twinwatch-agent-{VERSION}-udm");
    let staging = target_dir().join("dist-staging");
    let dir = staging.join(&base);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let udm = workspace().join("packaging/udm");
    copy(agent, &dir.join("twinwatch-agent"), 0o755)?;
    for (file, mode) in
        [("install.sh", 0o755), ("on_boot.sh", 0o755), ("agent.toml", 0o644), ("twinwatch-agent.service", 0o644)]
    {
        copy(&udm.join(file), &dir.join(file), mode)?;
    }
    let tarball = out.join(format!("{base}-aarch64.tar.gz"));
    let mut tar = Command::new("tar");
    tar.arg("--owner=0").arg("--group=0").arg("-czf").arg(&tarball).arg("-C").arg(&staging).arg(&base);
    run(tar)?;
    Ok(tarball)
}

/// `packaging/fly/` with the static x86_64 binaries beside its Dockerfile.
fn fly_context(bins: &Path, dir: &Path) -> Result<PathBuf, String> {
    let fly = workspace().join("packaging/fly");
    for entry in std::fs::read_dir(&fly).map_err(|e| format!("{}: {e}", fly.display()))?.flatten() {
        let mode = if entry.file_name() == "entrypoint.sh" { 0o755 } else { 0o644 };
        copy(&entry.path(), &dir.join(entry.file_name()), mode)?;
    }
    for bin in ["twinwatch-aggregator", "twinwatch-agent"] {
        copy(&bins.join(bin), &dir.join(bin), 0o755)?;
    }
    Ok(dir.to_owned())
}
