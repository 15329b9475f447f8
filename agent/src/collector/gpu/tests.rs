//! nvidia-smi's output, fake nvidia-smi scripts (failing, hanging) and a fixture amdgpu sysfs tree.

use std::time::Instant;

use super::super::fixture::{render, sorted, Tree};
use super::nvidia_smi::{parse_fixed, NVIDIA_SMI_FORMAT, NVIDIA_SMI_QUERY};
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
