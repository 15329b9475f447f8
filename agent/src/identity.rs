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

/// ARM core designs by `CPU implementer` and `CPU part`, for the /proc/cpuinfo of ARM hosts,
/// which names no model (the UDM Pro's Alpine v2 SoC reports 0x41/0xd07, a Cortex-A57).
const ARM_PARTS: &[(u32, u32, &str)] = &[
    (0x41, 0xd03, "ARM Cortex-A53"),
    (0x41, 0xd04, "ARM Cortex-A35"),
    (0x41, 0xd05, "ARM Cortex-A55"),
    (0x41, 0xd07, "ARM Cortex-A57"),
    (0x41, 0xd08, "ARM Cortex-A72"),
    (0x41, 0xd09, "ARM Cortex-A73"),
    (0x41, 0xd0a, "ARM Cortex-A75"),
    (0x41, 0xd0b, "ARM Cortex-A76"),
    (0x41, 0xd0c, "ARM Neoverse-N1"),
    (0x41, 0xd0d, "ARM Cortex-A77"),
    (0x41, 0xd40, "ARM Neoverse-V1"),
    (0x41, 0xd41, "ARM Cortex-A78"),
    (0x41, 0xd46, "ARM Cortex-A510"),
    (0x41, 0xd47, "ARM Cortex-A710"),
    (0x41, 0xd49, "ARM Neoverse-N2"),
    (0x41, 0xd4f, "ARM Neoverse-V2"),
    (0x61, 0x000, "Apple"),
];

/// The CPU model from /proc/cpuinfo's text: `model name` on x86 (and some ARM kernels),
/// otherwise the ARM core named from its implementer and part numbers, otherwise `Hardware`.
pub fn cpu_model(cpuinfo: &str) -> Option<String> {
    let field = |name: &str| {
        cpuinfo.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim().to_owned()).filter(|v| !v.is_empty())
        })
    };
    if let Some(model) = field("model name") {
        return Some(model);
    }
    let hex = |v: String| u32::from_str_radix(v.trim_start_matches("0x"), 16).ok();
    if let (Some(implementer), Some(part)) = (field("CPU implementer").and_then(hex), field("CPU part").and_then(hex)) {
        let known = ARM_PARTS.iter().find(|(i, p, _)| *i == implementer && (*p == part || *i == 0x61));
        return Some(match known {
            Some((_, _, name)) => (*name).to_owned(),
            None => format!("ARM implementer {implementer:#x} part {part:#x}"),
        });
    }
    field("Hardware")
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
        cpu_model: std::fs::read_to_string(proc_root.join("cpuinfo"))
            .ok()
            .and_then(|t| cpu_model(&t))
            .unwrap_or_default(),
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

    /// As a UDM Pro's kernel prints it (Annapurna Labs Alpine v2, four Cortex-A57 cores).
    const UDM_PRO_CPUINFO: &str = "processor\t: 0
BogoMIPS\t: 100.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x1
CPU part\t: 0xd07
CPU revision\t: 2

processor\t: 1
BogoMIPS\t: 100.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x1
CPU part\t: 0xd07
CPU revision\t: 2
";

    #[test]
    fn cpu_model_on_arm_and_x86() {
        assert_eq!(cpu_model(UDM_PRO_CPUINFO).as_deref(), Some("ARM Cortex-A57"));
        let x86 = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n";
        assert_eq!(cpu_model(x86).as_deref(), Some("Intel(R) Xeon(R) CPU @ 2.20GHz"));
        let unknown = "CPU implementer\t: 0x51\nCPU part\t: 0x802\n";
        assert_eq!(cpu_model(unknown).as_deref(), Some("ARM implementer 0x51 part 0x802"));
        // Cut off before the part number: nothing to name it by.
        assert_eq!(cpu_model("processor\t: 0\nCPU implementer\t: 0x41\n"), None);
    }

    #[test]
    fn this_host_has_a_name_and_a_boot_id() {
        let info = host_info(Path::new("/proc"));
        assert!(!info.hostname.is_empty());
        assert_eq!(info.boot_id.len(), 36);
    }
}
