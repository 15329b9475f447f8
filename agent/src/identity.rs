//! What the host is: name, kernel, OS, architecture, machine and boot ids.

use std::path::Path;

use twinwatch_common::message::HostInfo;

fn read_trimmed(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path).map(|s| s.trim().to_owned()).unwrap_or_default()
}

/// `PRETTY_NAME` from an os-release file's text.
pub fn pretty_name(os_release: &str) -> Option<String> {
    os_release.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=")).map(|v| v.trim().trim_matches('"').to_owned())
}

pub fn host_info(proc_root: &Path) -> HostInfo {
    let uname = nix::sys::utsname::uname().ok();
    let field = |f: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
        uname.as_ref().map(|u| f(u).to_string_lossy().into_owned()).unwrap_or_default()
    };
    let os_release = std::fs::read_to_string("/etc/os-release")
        .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
        .unwrap_or_default();
    HostInfo {
        hostname: nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default(),
        kernel: field(|u| u.release()),
        os: pretty_name(&os_release).unwrap_or_else(|| field(|u| u.sysname())),
        arch: field(|u| u.machine()),
        cpu_count: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        machine_id: read_trimmed("/etc/machine-id"),
        boot_id: read_trimmed(proc_root.join("sys/kernel/random/boot_id")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_name_is_unquoted() {
        let text = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n";
        assert_eq!(pretty_name(text).as_deref(), Some("Debian GNU/Linux 12 (bookworm)"));
        assert_eq!(pretty_name("ID=x\n"), None);
    }

    #[test]
    fn this_host_has_a_name_and_a_boot_id() {
        let info = host_info(Path::new("/proc"));
        assert!(!info.hostname.is_empty());
        assert_eq!(info.boot_id.len(), 36);
    }
}
