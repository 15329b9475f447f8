//! GPU utilisation, memory, temperature and power: /sys/class/drm for AMD (amdgpu) cards, named
//! as node_exporter's drm collector names them, and `nvidia-smi` for NVIDIA cards when it is
//! installed, named as utkuozdemir/nvidia_gpu_exporter names them.
//!
//! amdgpu exposes `gpu_busy_percent` and `mem_info_*` (bytes) under `cardN/device`; the cards are
//! listed once and again every [`REDISCOVER_EVERY`] collections or when one vanishes. NVIDIA has
//! no such files, so `nvidia-smi` is run once per collection, with a deadline: it is known to hang
//! when a GPU has fallen off the bus, and the sampler must not hang with it.

use std::ffi::OsStr;
use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use twinwatch_common::sample::{Metric, SeriesKey, Value};

use super::hwmon::{clean, vanished, REDISCOVER_EVERY};
use super::{list_dir, read_attr, read_into, CollectError, Collector, Roots};

/// amdgpu's numeric files under `cardN/device` and node_exporter's names for them, all plain
/// numbers (percent, bytes).
const AMD_FILES: &[(&str, &str)] = &[
    ("gpu_busy_percent", "node_drm_gpu_busy_percent"),
    ("mem_info_gtt_total", "node_drm_memory_gtt_size_bytes"),
    ("mem_info_gtt_used", "node_drm_memory_gtt_used_bytes"),
    ("mem_info_vis_vram_total", "node_drm_memory_vis_vram_size_bytes"),
    ("mem_info_vis_vram_used", "node_drm_memory_vis_vram_used_bytes"),
    ("mem_info_vram_total", "node_drm_memory_vram_size_bytes"),
    ("mem_info_vram_used", "node_drm_memory_vram_used_bytes"),
];

/// amdgpu's text files that label `node_drm_card_info`, with node_exporter's label names.
const AMD_INFO: &[(&str, &str)] = &[
    ("mem_info_vram_vendor", "memory_vendor"),
    ("power_dpm_force_performance_level", "power_performance_level"),
    ("unique_id", "unique_id"),
];

/// How long `nvidia-smi` may take before it is killed and the collection fails.
pub const NVIDIA_SMI_DEADLINE: Duration = Duration::from_secs(5);

/// The fields asked of `nvidia-smi`, in this order.
pub const NVIDIA_SMI_QUERY: &str = concat!(
    "--query-gpu=index,uuid,name,",
    "utilization.gpu,utilization.memory,memory.used,memory.total,temperature.gpu,power.draw"
);
pub const NVIDIA_SMI_FORMAT: &str = "--format=csv,noheader,nounits";

/// The value columns after index, uuid and name: series name, decimals kept in the raw integer,
/// and the scale from that integer to the named unit. Percentages become ratios, MiB bytes and
/// watts are kept to the milliwatt, all as integers for the delta codec.
const NVIDIA_FIELDS: [(&str, u32, f64); 6] = [
    ("nvidia_smi_utilization_gpu_ratio", 0, 0.01),
    ("nvidia_smi_utilization_memory_ratio", 0, 0.01),
    ("nvidia_smi_memory_used_bytes", 0, 1048576.0),
    ("nvidia_smi_memory_total_bytes", 0, 1048576.0),
    ("nvidia_smi_temperature_gpu", 0, 1.0),
    ("nvidia_smi_power_draw_watts", 3, 0.001),
];

/// Output beyond this is not kept: a GPU row is under 200 bytes.
const NVIDIA_SMI_MAX_OUTPUT: usize = 1 << 20;

/// A decimal number as an integer count of `10^-decimals` units (`"28.07"` with 3 decimals is
/// 28070), rounding away further digits. `None` for anything else (`[N/A]`, `[Not Supported]`).
fn parse_fixed(text: &str, decimals: u32) -> Option<i64> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) {
        return None;
    }
    let mut value: i64 = whole.parse().ok()?;
    let mut fraction = fraction.bytes();
    for _ in 0..decimals {
        let digit = fraction.next().map_or(0, |b| i64::from(b - b'0'));
        value = value.checked_mul(10)?.checked_add(digit)?;
    }
    if fraction.next().is_some_and(|b| b >= b'5') {
        value = value.checked_add(1)?;
    }
    Some(if negative { -value } else { value })
}

/// Parses `nvidia-smi --query-gpu=<NVIDIA_SMI_QUERY> --format=csv,noheader,nounits` output. Every
/// series is labelled with the GPU's uuid (lower case, without `GPU-`, as nvidia_gpu_exporter
/// does), name and index; `nvidia_smi_gpu_info` carries the same labels for dashboards that list
/// GPUs from it. Values a GPU does not report (`[N/A]`, `[Not Supported]`) are left out. A row
/// with too few fields is an error, after the good rows' metrics are added.
pub fn parse_nvidia_smi(text: &str, out: &mut Vec<Metric>) -> Result<(), CollectError> {
    let mut bad = 0;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        let values_from = cells.len().saturating_sub(NVIDIA_FIELDS.len());
        if values_from < 3 || cells[1].is_empty() {
            bad += 1;
            continue;
        }
        let index = cells[0];
        let uuid = cells[1].to_ascii_lowercase();
        let uuid = uuid.strip_prefix("gpu-").unwrap_or(&uuid);
        // A name with a comma in it spans several cells: the fixed fields are counted from both ends.
        let name = cells[2..values_from].join(", ");
        let key =
            |metric: &str| SeriesKey::new(metric).with("index", index).with("name", name.as_str()).with("uuid", uuid);
        out.push(Metric::gauge(key("nvidia_smi_gpu_info"), Value::Int(1)));
        for ((metric, decimals, scale), cell) in NVIDIA_FIELDS.iter().zip(&cells[values_from..]) {
            if let Some(raw) = parse_fixed(cell, *decimals) {
                out.push(Metric::gauge(key(metric), Value::Int(raw)).scaled(*scale));
            }
        }
    }
    if bad > 0 {
        return Err(CollectError::Parse { what: "nvidia-smi output", detail: format!("{bad} malformed rows") });
    }
    Ok(())
}

/// Whether `path` is a file someone may execute.
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Where `program` is: itself if it names a path, else the first executable of that name in the
/// directories of `path_var` (`$PATH`). `None` if there is none.
fn resolve(program: &Path, path_var: Option<&OsStr>) -> Option<PathBuf> {
    if program.components().count() > 1 || program.is_absolute() {
        return is_executable(program).then(|| program.to_owned());
    }
    if program.as_os_str().is_empty() {
        return None;
    }
    std::env::split_paths(path_var?).map(|dir| dir.join(program)).find(|p| is_executable(p))
}

/// Makes a pipe's reads return at once when it is empty, so the child can be watched and read in
/// one loop without a thread.
fn set_nonblocking(fd: std::os::fd::RawFd) -> std::io::Result<()> {
    // SAFETY: fcntl on a descriptor this process owns, with flags only added.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Reads what the pipe holds now into `out`, up to the output limit.
fn drain(pipe: &mut ChildStdout, out: &mut Vec<u8>) -> std::io::Result<()> {
    let mut chunk = [0u8; 4096];
    while out.len() < NVIDIA_SMI_MAX_OUTPUT {
        match pipe.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Kills the child and everything it started: it leads its own process group, so a wrapper
/// script's `nvidia-smi` (or `sleep`) dies with it instead of holding on.
fn kill_group(child: &mut Child) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill has no memory preconditions; the group is the child's own and the child
        // has not been reaped, so the id cannot have been reused.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
}

/// What a run of `nvidia-smi` ended as.
enum Run {
    Exited(ExitStatus, Vec<u8>),
    /// Killed at the deadline; the child if it has not been reaped yet.
    TimedOut(Option<Child>),
}

/// Runs `program` with the query, collecting its standard output, for at most `deadline`.
fn run(program: &Path, deadline: Duration) -> std::io::Result<Run> {
    use std::os::fd::AsRawFd;
    let mut child = Command::new(program)
        .args([NVIDIA_SMI_QUERY, NVIDIA_SMI_FORMAT])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()?;
    let started = Instant::now();
    let mut output = Vec::new();
    let mut pipe = child.stdout.take();
    if let Some(pipe) = &pipe {
        if let Err(e) = set_nonblocking(pipe.as_raw_fd()) {
            kill_and_reap(&mut child);
            return Err(e);
        }
    }
    let mut pause = Duration::from_millis(2);
    loop {
        let exited = match poll(&mut child, pipe.as_mut(), &mut output) {
            Ok(exited) => exited,
            Err(e) => {
                kill_and_reap(&mut child);
                return Err(e);
            }
        };
        if let Some(status) = exited {
            return Ok(Run::Exited(status, output));
        }
        let left = deadline.saturating_sub(started.elapsed());
        if left.is_zero() {
            let reaped = kill_and_reap(&mut child);
            return Ok(Run::TimedOut((!reaped).then_some(child)));
        }
        std::thread::sleep(pause.min(left));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Takes in what the child has written; its exit status once it has exited (and its last output
/// has been read).
fn poll(
    child: &mut Child,
    mut pipe: Option<&mut ChildStdout>,
    output: &mut Vec<u8>,
) -> std::io::Result<Option<ExitStatus>> {
    if let Some(pipe) = pipe.as_deref_mut() {
        drain(pipe, output)?;
    }
    let Some(status) = child.try_wait()? else { return Ok(None) };
    // Whatever it wrote before exiting is in the pipe now.
    if let Some(pipe) = pipe {
        drain(pipe, output)?;
    }
    Ok(Some(status))
}

/// Kills the child's group and reaps the child if it dies within 100 ms. SIGKILL takes effect
/// when a process next leaves the kernel; one stuck in the driver may take longer, and waiting
/// for it here would hang the sampler. Returns whether it was reaped.
fn kill_and_reap(child: &mut Child) -> bool {
    kill_group(child);
    for _ in 0..20 {
        if !matches!(child.try_wait(), Ok(None)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// One amdgpu card: its name, the device files it has with finished keys, and its info files.
struct Card {
    name: String,
    chip: Option<String>,
    numbers: Vec<(PathBuf, SeriesKey)>,
    info: Vec<(&'static str, PathBuf)>,
}

pub struct Gpu {
    drm: PathBuf,
    cards: Vec<Card>,
    collections: u64,
    stale: bool,
    /// `nvidia-smi`, found at construction; `None`: no NVIDIA driver here, nothing to ask.
    nvidia_smi: Option<PathBuf>,
    deadline: Duration,
    /// An `nvidia-smi` killed at the deadline that had not yet died: no other is started until it
    /// has, so a GPU that hangs every call costs one process, not one per collection.
    lingering: Option<Child>,
    buf: String,
}

impl Gpu {
    pub fn new(roots: &Roots, nvidia_smi: Option<PathBuf>) -> Self {
        let path_var = std::env::var_os("PATH");
        Gpu {
            drm: roots.sys.join("class/drm"),
            cards: Vec::new(),
            collections: 0,
            stale: true,
            nvidia_smi: nvidia_smi.and_then(|p| resolve(&p, path_var.as_deref())),
            deadline: NVIDIA_SMI_DEADLINE,
            lingering: None,
            buf: String::with_capacity(32),
        }
    }

    /// Lists `cardN` (not the `cardN-DP-1` connectors) driven by amdgpu.
    fn discover(&mut self) -> Result<(), CollectError> {
        self.cards.clear();
        let mut cards: Vec<(String, PathBuf)> = list_dir(&self.drm)?
            .into_iter()
            .filter(|(name, _)| {
                name.strip_prefix("card").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            })
            .collect();
        cards.sort();
        for (name, dir) in cards {
            let device = dir.join("device");
            let amd = read_attr(&device.join("uevent"), &mut self.buf).is_some()
                && self.buf.lines().any(|l| l.trim() == "DRIVER=amdgpu");
            if !amd {
                continue;
            }
            // node_exporter's chip label: the device's bus address and its parent's.
            let chip = std::fs::canonicalize(&device).ok().and_then(|real| {
                let part = |p: &Path| p.file_name().map(|n| clean(&n.to_string_lossy())).filter(|n| !n.is_empty());
                let name = part(&real)?;
                Some(match real.parent().and_then(part) {
                    Some(bus) => format!("{bus}_{name}"),
                    None => name,
                })
            });
            let numbers = AMD_FILES
                .iter()
                .map(|(file, metric)| (device.join(file), SeriesKey::new(*metric).with("card", name.as_str())))
                .filter(|(path, _)| path.is_file())
                .collect();
            let info = AMD_INFO.iter().map(|(file, label)| (*label, device.join(file))).collect();
            self.cards.push(Card { name, chip, numbers, info });
        }
        Ok(())
    }

    fn collect_amd(&mut self, out: &mut Vec<Metric>) -> Result<(), CollectError> {
        if self.stale || self.collections % REDISCOVER_EVERY == 0 {
            self.stale = false;
            self.discover()?;
        }
        self.collections += 1;
        for card in &self.cards {
            let mut info = SeriesKey::new("node_drm_card_info").with("card", card.name.as_str()).with("vendor", "amd");
            if let Some(chip) = &card.chip {
                info = info.with("chip", chip.as_str());
            }
            for (label, path) in &card.info {
                if read_attr(path, &mut self.buf).is_some() && !self.buf.trim().is_empty() {
                    info = info.with(label, self.buf.trim());
                }
            }
            out.push(Metric::gauge(info, Value::Int(1)));
            for (path, key) in &card.numbers {
                // gpu_busy_percent refuses reads while the GPU sleeps: left out this time.
                if let Err(e) = read_into(path, &mut self.buf) {
                    self.stale |= vanished(&e);
                    continue;
                }
                let Ok(value) = self.buf.trim().parse::<i64>() else { continue };
                out.push(Metric::gauge(key.clone(), Value::Int(value)));
            }
        }
        Ok(())
    }

    fn collect_nvidia(&mut self, out: &mut Vec<Metric>) -> Result<(), CollectError> {
        let Some(program) = &self.nvidia_smi else { return Ok(()) };
        let failed = |source: std::io::Error| CollectError::Read { path: program.clone(), source };
        if let Some(child) = &mut self.lingering {
            match child.try_wait() {
                Ok(None) => {
                    let msg = "the nvidia-smi killed at the last deadline has still not exited";
                    return Err(failed(std::io::Error::new(std::io::ErrorKind::TimedOut, msg)));
                }
                Ok(Some(_)) | Err(_) => self.lingering = None,
            }
        }
        match run(program, self.deadline).map_err(failed)? {
            Run::TimedOut(child) => {
                self.lingering = child;
                let msg = format!("no answer within {:?}; killed", self.deadline);
                Err(failed(std::io::Error::new(std::io::ErrorKind::TimedOut, msg)))
            }
            Run::Exited(status, output) => {
                let text = String::from_utf8_lossy(&output);
                if !status.success() {
                    // nvidia-smi explains itself on standard output ("couldn't communicate with
                    // the NVIDIA driver").
                    let said = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
                    return Err(failed(std::io::Error::other(format!("{status}: {said}"))));
                }
                parse_nvidia_smi(&text, out)
            }
        }
    }
}

impl Collector for Gpu {
    fn collect(&mut self, out: &mut Vec<Metric>) -> Result<(), CollectError> {
        // An AMD failure does not keep NVIDIA cards from being read; the first error is reported.
        let amd = self.collect_amd(out);
        let nvidia = self.collect_nvidia(out);
        amd.and(nvidia)
    }
}

#[cfg(test)]
mod tests {
    use super::super::hwmon::fixture::{render, sorted, Tree};
    use super::*;

    /// Captured from a two-GPU host, the second an older card that reports no utilisation or
    /// power, plus a GPU whose name has a comma.
    const CSV: &str = "\
0, GPU-df6e7a7c-7314-46f8-abc4-b88b36dcf3aa, NVIDIA GeForce RTX 2080 SUPER, 42, 7, 674, 8192, 34, 28.07
1, GPU-0A1B2C3D-0000-1111-2222-333344445555, Tesla K80, [N/A], [N/A], 0, 11441, 30, [Not Supported]
2, GPU-99999999-8888-7777-6666-555555555555, Acme, Turbo, 100, 0, 1, 2, 45, 300.1235
";

    fn expected_csv() -> Vec<String> {
        let a = r#"index="0",name="NVIDIA GeForce RTX 2080 SUPER",uuid="df6e7a7c-7314-46f8-abc4-b88b36dcf3aa""#;
        let b = r#"index="1",name="Tesla K80",uuid="0a1b2c3d-0000-1111-2222-333344445555""#;
        let c = r#"index="2",name="Acme, Turbo",uuid="99999999-8888-7777-6666-555555555555""#;
        let mut lines = vec![
            format!("nvidia_smi_gpu_info{{{a}}} 1"),
            format!("nvidia_smi_memory_total_bytes{{{a}}} 8589934592"),
            format!("nvidia_smi_memory_used_bytes{{{a}}} 706740224"),
            format!("nvidia_smi_power_draw_watts{{{a}}} 28.07"),
            format!("nvidia_smi_temperature_gpu{{{a}}} 34"),
            format!("nvidia_smi_utilization_gpu_ratio{{{a}}} 0.42"),
            format!("nvidia_smi_utilization_memory_ratio{{{a}}} 0.07"),
            format!("nvidia_smi_gpu_info{{{b}}} 1"),
            format!("nvidia_smi_memory_total_bytes{{{b}}} 11996758016"),
            format!("nvidia_smi_memory_used_bytes{{{b}}} 0"),
            format!("nvidia_smi_temperature_gpu{{{b}}} 30"),
            format!("nvidia_smi_gpu_info{{{c}}} 1"),
            format!("nvidia_smi_memory_total_bytes{{{c}}} 2097152"),
            format!("nvidia_smi_memory_used_bytes{{{c}}} 1048576"),
            format!("nvidia_smi_power_draw_watts{{{c}}} 300.124"),
            format!("nvidia_smi_temperature_gpu{{{c}}} 45"),
            format!("nvidia_smi_utilization_gpu_ratio{{{c}}} 1"),
            format!("nvidia_smi_utilization_memory_ratio{{{c}}} 0"),
        ];
        lines.sort();
        lines
    }

    #[test]
    fn fixed_point_numbers() {
        assert_eq!(parse_fixed("28.07", 3), Some(28070));
        assert_eq!(parse_fixed("28", 3), Some(28000));
        assert_eq!(parse_fixed("0.0005", 3), Some(1));
        assert_eq!(parse_fixed("-4.5", 0), Some(-5));
        assert_eq!(parse_fixed("42", 0), Some(42));
        for bad in ["[N/A]", "[Not Supported]", "", ".5", "1.2.3", "4 W", "-", "99999999999999999999"] {
            assert_eq!(parse_fixed(bad, 3), None, "{bad}");
        }
    }

    #[test]
    fn nvidia_smi_csv_with_unavailable_values() {
        let mut out = Vec::new();
        parse_nvidia_smi(CSV, &mut out).unwrap();
        assert_eq!(render(&out), expected_csv());
        let power = out.iter().find(|m| m.key.name == "nvidia_smi_power_draw_watts").unwrap();
        assert_eq!((power.value, power.scale), (Value::Int(28070), 0.001));
        let used = out.iter().find(|m| m.key.name == "nvidia_smi_memory_used_bytes").unwrap();
        assert_eq!((used.value, used.scale), (Value::Int(674), 1048576.0));
    }

    #[test]
    fn a_short_row_is_an_error_after_the_good_ones() {
        let mut out = Vec::new();
        let text = "0, GPU-a, T4, 1, 2, 3, 4, 5, 6.5\n1, GPU-b, T4, 1, 2\n\n";
        assert!(parse_nvidia_smi(text, &mut out).is_err());
        assert_eq!(out.iter().filter(|m| m.key.label("uuid") == Some("a")).count(), 7);
        assert!(parse_nvidia_smi("", &mut Vec::new()).is_ok());
    }

    #[test]
    fn programs_are_looked_up_in_path() {
        let tree = Tree::new("gpu-path");
        let bin = tree.path().join("bin");
        let smi = tree.put("bin/nvidia-smi", "#!/bin/sh\n");
        let not_executable = tree.put("bin/plain", "");
        std::fs::set_permissions(&smi, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let path_var = std::env::join_paths([tree.path().join("nowhere"), bin]).unwrap();
        assert_eq!(resolve(Path::new("nvidia-smi"), Some(&path_var)), Some(smi.clone()));
        assert_eq!(resolve(Path::new("plain"), Some(&path_var)), None);
        assert_eq!(resolve(Path::new("absent"), Some(&path_var)), None);
        assert_eq!(resolve(Path::new("nvidia-smi"), None), None);
        assert_eq!(resolve(&smi, None), Some(smi.clone()));
        assert_eq!(resolve(&not_executable, None), None);
        assert_eq!(resolve(&tree.path().join("bin/absent"), None), None);
    }

    #[test]
    fn no_nvidia_smi_is_no_metrics_and_no_error() {
        let tree = Tree::new("gpu-none");
        for program in [None, Some(PathBuf::from("twinwatch-no-such-nvidia-smi")), Some(tree.path().join("absent"))] {
            let mut gpu = Gpu::new(&tree.roots(), program);
            assert!(gpu.nvidia_smi.is_none());
            let mut out = Vec::new();
            gpu.collect(&mut out).unwrap();
            assert!(out.is_empty());
        }
    }

    #[test]
    fn amd_cards_from_sysfs_without_connectors_or_other_drivers() {
        let tree = Tree::new("gpu-amd");
        let dev = "sys/devices/pci0000:00/0000:00:01.1/0000:02:00.0/0000:03:00.0";
        tree.put(&format!("{dev}/uevent"), "DRIVER=amdgpu\nPCI_CLASS=30000\n");
        tree.put(&format!("{dev}/gpu_busy_percent"), "4\n");
        tree.put(&format!("{dev}/mem_info_vram_total"), "8573157376\n");
        tree.put(&format!("{dev}/mem_info_vram_used"), "1018744832\n");
        tree.put(&format!("{dev}/mem_info_vis_vram_total"), "268435456\n");
        tree.put(&format!("{dev}/mem_info_vis_vram_used"), "100000\n");
        tree.put(&format!("{dev}/mem_info_gtt_total"), "8573157376\n");
        tree.put(&format!("{dev}/mem_info_gtt_used"), "14565376\n");
        tree.put(&format!("{dev}/mem_info_vram_vendor"), "samsung\n");
        tree.put(&format!("{dev}/power_dpm_force_performance_level"), "auto\n");
        tree.put(&format!("{dev}/drm/card0/dev"), "226:0\n");
        tree.link("sys/class/drm/card0", &format!("../../{}/drm/card0", dev.trim_start_matches("sys/")));
        tree.link(&format!("{dev}/drm/card0/device"), "../../../0000:03:00.0");
        // The card's connector, and an Intel card: neither is an amdgpu card.
        tree.put(&format!("{dev}/drm/card0-DP-1/status"), "connected\n");
        tree.link("sys/class/drm/card0-DP-1", &format!("../../{}/drm/card0-DP-1", dev.trim_start_matches("sys/")));
        tree.put("sys/devices/pci0000:00/0000:00:02.0/uevent", "DRIVER=i915\n");
        tree.put("sys/devices/pci0000:00/0000:00:02.0/drm/card1/dev", "226:1\n");
        tree.link("sys/devices/pci0000:00/0000:00:02.0/drm/card1/device", "../../../0000:00:02.0");
        tree.link("sys/class/drm/card1", "../../devices/pci0000:00/0000:00:02.0/drm/card1");
        let mut gpu = Gpu::new(&tree.roots(), None);
        let mut out = Vec::new();
        gpu.collect(&mut out).unwrap();
        assert_eq!(
            render(&out),
            sorted([
                concat!(
                    r#"node_drm_card_info{card="card0",chip="0000:02:00_0_0000:03:00_0","#,
                    r#"memory_vendor="samsung",power_performance_level="auto",vendor="amd"} 1"#
                ),
                r#"node_drm_gpu_busy_percent{card="card0"} 4"#,
                r#"node_drm_memory_gtt_size_bytes{card="card0"} 8573157376"#,
                r#"node_drm_memory_gtt_used_bytes{card="card0"} 14565376"#,
                r#"node_drm_memory_vis_vram_size_bytes{card="card0"} 268435456"#,
                r#"node_drm_memory_vis_vram_used_bytes{card="card0"} 100000"#,
                r#"node_drm_memory_vram_size_bytes{card="card0"} 8573157376"#,
                r#"node_drm_memory_vram_used_bytes{card="card0"} 1018744832"#,
            ])
        );
        // A busy file that refuses a read costs only that series.
        std::fs::write(tree.path().join(format!("{dev}/gpu_busy_percent")), "").unwrap();
        let mut out = Vec::new();
        gpu.collect(&mut out).unwrap();
        assert_eq!(out.len(), 7);
    }

    /// Writes an executable script. Another test's fork can briefly hold the new file open for
    /// writing (ETXTBSY on exec), so callers retry on that.
    fn script(tree: &Tree, name: &str, body: &str) -> PathBuf {
        let path = tree.put(name, &format!("#!/bin/sh\n{body}"));
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        path
    }

    fn collect_retrying(gpu: &mut Gpu, out: &mut Vec<Metric>) -> Result<(), CollectError> {
        for _ in 0..50 {
            match gpu.collect(out) {
                Err(CollectError::Read { source, .. }) if source.raw_os_error() == Some(libc::ETXTBSY) => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                result => return result,
            }
        }
        panic!("script stayed busy");
    }

    #[test]
    fn a_real_nvidia_smi_run_is_parsed() {
        let tree = Tree::new("gpu-nvidia-run");
        let csv = tree.put("out.csv", CSV);
        // The fake checks it was asked the right question.
        let body = format!(
            "[ \"$1\" = '{NVIDIA_SMI_QUERY}' ] && [ \"$2\" = '{NVIDIA_SMI_FORMAT}' ] || exit 2\ncat '{}'\n",
            csv.display()
        );
        let smi = script(&tree, "nvidia-smi", &body);
        let mut gpu = Gpu::new(&tree.roots(), Some(smi));
        let mut out = Vec::new();
        collect_retrying(&mut gpu, &mut out).unwrap();
        assert_eq!(render(&out), expected_csv());
    }

    #[test]
    fn a_failing_nvidia_smi_is_an_error() {
        let tree = Tree::new("gpu-nvidia-fail");
        let body = "echo \"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\"\nexit 9\n";
        let smi = script(&tree, "nvidia-smi", body);
        let mut gpu = Gpu::new(&tree.roots(), Some(smi));
        let mut out = Vec::new();
        let err = collect_retrying(&mut gpu, &mut out).unwrap_err().to_string();
        assert!(err.contains("exit status: 9") && err.contains("couldn't communicate"), "{err}");
        assert!(out.is_empty());
    }

    #[test]
    fn a_hung_nvidia_smi_is_killed_at_the_deadline() {
        let tree = Tree::new("gpu-nvidia-hang");
        let pid_file = tree.path().join("sleeper.pid");
        // The script's child holds the output pipe too: it must die with the script.
        let body = format!("sleep 30 &\necho $! > '{}'\nwait\n", pid_file.display());
        let smi = script(&tree, "nvidia-smi", &body);
        let mut gpu = Gpu::new(&tree.roots(), Some(smi));
        gpu.deadline = Duration::from_secs(1);
        let started = Instant::now();
        let err = collect_retrying(&mut gpu, &mut Vec::new()).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(4), "took {:?}", started.elapsed());
        match &err {
            CollectError::Read { source, .. } => assert_eq!(source.kind(), std::io::ErrorKind::TimedOut, "{err}"),
            other => panic!("{other}"),
        }
        // The whole group was killed: the sleeper is gone (or a zombie waiting for init).
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        let stat = format!("/proc/{}/stat", pid.trim());
        let dead = || match std::fs::read_to_string(&stat) {
            Ok(s) => s.rsplit(')').next().unwrap().trim().starts_with('Z'),
            Err(_) => true,
        };
        let waited = Instant::now();
        while !dead() && waited.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(dead(), "sleep {pid} survived");
    }
}
