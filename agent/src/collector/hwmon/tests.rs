//! Sensor trees of an x86 desktop, an ARM board and amdgpu, and when files are listed again.

use super::super::fixture::{render, sorted, Tree};
use super::discover::explode;
use super::*;

#[test]
fn file_names_split_like_node_exporter() {
    assert_eq!(explode("temp1_input"), Some(("temp", 1, "input")));
    assert_eq!(explode("temp12_crit_alarm"), Some(("temp", 12, "crit_alarm")));
    assert_eq!(explode("in0_input"), Some(("in", 0, "input")));
    assert_eq!(explode("pwm1"), Some(("pwm", 1, "")));
    assert_eq!(explode("beep_enable"), Some(("beep_enable", 0, "")));
    assert_eq!(explode("name"), Some(("name", 0, "")));
    assert_eq!(explode("temp1x"), None);
    assert_eq!(explode("temp1_"), None);
    assert_eq!(explode("1temp"), None);
    assert_eq!(clean("Package id 0\n"), "package_id_0");
    assert_eq!(clean("coretemp.0"), "coretemp_0");
    assert_eq!(clean("0000:00:18.3"), "0000:00:18_3");
}

/// An x86 desktop: coretemp with labels, a k10temp-style PCI chip with a fan, voltages and
/// power, plus the files that must not turn into series.
fn x86(tree: &Tree) {
    let core = "sys/devices/platform/coretemp.0/hwmon/hwmon1";
    tree.put(&format!("{core}/name"), "coretemp\n");
    tree.put(&format!("{core}/temp1_input"), "45000\n");
    tree.put(&format!("{core}/temp1_label"), "Package id 0\n");
    tree.put(&format!("{core}/temp1_max"), "80000\n");
    tree.put(&format!("{core}/temp1_crit"), "100000\n");
    tree.put(&format!("{core}/temp2_input"), "44000\n");
    tree.put(&format!("{core}/temp2_label"), "Core 0\n");
    // Truncated: the sensor has no reading this time.
    tree.put(&format!("{core}/temp3_input"), "");
    // Not a number.
    tree.put(&format!("{core}/temp4_input"), "N/A\n");
    // Write-only control: never read.
    let reset = tree.put(&format!("{core}/temp1_reset_history"), "1\n");
    std::fs::set_permissions(&reset, std::os::unix::fs::PermissionsExt::from_mode(0o200)).unwrap();
    tree.put(&format!("{core}/uevent"), "DRIVER=coretemp\n");
    std::fs::create_dir_all(tree.path().join(format!("{core}/power"))).unwrap();
    tree.link(&format!("{core}/device"), "../../../coretemp.0");
    tree.link("sys/class/hwmon/hwmon1", &format!("../../{}", core.trim_start_matches("sys/")));

    let pci = "sys/devices/pci0000:00/0000:00:18.3/hwmon/hwmon2";
    tree.put(&format!("{pci}/name"), "k10temp\n");
    tree.put(&format!("{pci}/fan1_input"), "1200\n");
    tree.put(&format!("{pci}/fan1_min"), "300\n");
    tree.put(&format!("{pci}/fan1_alarm"), "0\n");
    tree.put(&format!("{pci}/in0_input"), "12000\n");
    tree.put(&format!("{pci}/power1_average"), "15000000\n");
    tree.put(&format!("{pci}/energy1_input"), "123456789\n");
    tree.put(&format!("{pci}/beep_enable"), "1\n");
    tree.link(&format!("{pci}/device"), "../../../0000:00:18.3");
    tree.link("sys/class/hwmon/hwmon2", &format!("../../{}", pci.trim_start_matches("sys/")));
}

/// A UDM-Pro-like ARM board: thermal-zone hwmon chips with a name but no device link.
fn arm(tree: &Tree) {
    for (n, name, temp) in [(0, "cpu_thermal", "52500"), (1, "soc_thermal", "-1500")] {
        let dir = format!("sys/devices/virtual/hwmon/hwmon{n}");
        tree.put(&format!("{dir}/name"), &format!("{name}\n"));
        tree.put(&format!("{dir}/temp1_input"), &format!("{temp}\n"));
        tree.link(&format!("sys/class/hwmon/hwmon{n}"), &format!("../../devices/virtual/hwmon/hwmon{n}"));
    }
}

#[test]
fn x86_chips_are_named_by_device_with_labels_fans_and_units() {
    let tree = Tree::new("hwmon-x86");
    x86(&tree);
    let mut hwmon = Hwmon::new(&tree.roots());
    let mut out = Vec::new();
    hwmon.collect(&mut out).unwrap();
    assert_eq!(
        render(&out),
        sorted([
            r#"node_hwmon_beep_enabled{chip="pci0000:00_0000:00:18_3",sensor="beep_enable0"} 1"#,
            r#"node_hwmon_chip_names{chip="pci0000:00_0000:00:18_3",chip_name="k10temp"} 1"#,
            r#"node_hwmon_chip_names{chip="platform_coretemp_0",chip_name="coretemp"} 1"#,
            r#"node_hwmon_energy_joule_total{chip="pci0000:00_0000:00:18_3",sensor="energy1"} 123.456789"#,
            r#"node_hwmon_fan_alarm{chip="pci0000:00_0000:00:18_3",sensor="fan1"} 0"#,
            r#"node_hwmon_fan_min_rpm{chip="pci0000:00_0000:00:18_3",sensor="fan1"} 300"#,
            r#"node_hwmon_fan_rpm{chip="pci0000:00_0000:00:18_3",sensor="fan1"} 1200"#,
            r#"node_hwmon_in_volts{chip="pci0000:00_0000:00:18_3",sensor="in0"} 12"#,
            r#"node_hwmon_power_average_watt{chip="pci0000:00_0000:00:18_3",sensor="power1"} 15"#,
            r#"node_hwmon_sensor_label{chip="platform_coretemp_0",label="Core 0",sensor="temp2"} 1"#,
            r#"node_hwmon_sensor_label{chip="platform_coretemp_0",label="Package id 0",sensor="temp1"} 1"#,
            r#"node_hwmon_temp_celsius{chip="platform_coretemp_0",sensor="temp1"} 45"#,
            r#"node_hwmon_temp_celsius{chip="platform_coretemp_0",sensor="temp2"} 44"#,
            r#"node_hwmon_temp_crit_celsius{chip="platform_coretemp_0",sensor="temp1"} 100"#,
            r#"node_hwmon_temp_max_celsius{chip="platform_coretemp_0",sensor="temp1"} 80"#,
        ])
    );
    // Integers with a scale, not floats: the delta codec sends them as small varints.
    let temp = out.iter().find(|m| m.key.name == "node_hwmon_temp_celsius").unwrap();
    assert_eq!((temp.value, temp.scale), (Value::Int(45000), 0.001));
    let energy = out.iter().find(|m| m.key.name == "node_hwmon_energy_joule_total").unwrap();
    assert_eq!(energy.kind, Kind::Counter);
}

#[test]
fn arm_chips_without_a_device_are_named_by_their_name_file() {
    let tree = Tree::new("hwmon-arm");
    arm(&tree);
    let mut out = Vec::new();
    Hwmon::new(&tree.roots()).collect(&mut out).unwrap();
    assert_eq!(
        render(&out),
        sorted([
            r#"node_hwmon_chip_names{chip="cpu_thermal",chip_name="cpu_thermal"} 1"#,
            r#"node_hwmon_chip_names{chip="soc_thermal",chip_name="soc_thermal"} 1"#,
            r#"node_hwmon_temp_celsius{chip="cpu_thermal",sensor="temp1"} 52.5"#,
            r#"node_hwmon_temp_celsius{chip="soc_thermal",sensor="temp1"} -1.5"#,
        ])
    );
}

#[test]
fn a_chip_with_neither_device_nor_name_is_named_by_its_directory() {
    let tree = Tree::new("hwmon-bare");
    tree.put("sys/devices/virtual/hwmon/hwmon7/temp1_input", "30000\n");
    tree.link("sys/class/hwmon/hwmon7", "../../devices/virtual/hwmon/hwmon7");
    let mut out = Vec::new();
    Hwmon::new(&tree.roots()).collect(&mut out).unwrap();
    assert_eq!(render(&out), [r#"node_hwmon_temp_celsius{chip="hwmon7",sensor="temp1"} 30"#]);
}

#[test]
fn no_hwmon_class_is_no_metrics_and_no_error() {
    let tree = Tree::new("hwmon-none");
    let mut out = Vec::new();
    Hwmon::new(&tree.roots()).collect(&mut out).unwrap();
    assert!(out.is_empty());
}

#[test]
fn files_are_listed_once_and_again_after_one_vanishes() {
    let tree = Tree::new("hwmon-rediscover");
    arm(&tree);
    let mut hwmon = Hwmon::new(&tree.roots());
    let temps = |hwmon: &mut Hwmon| {
        let mut out = Vec::new();
        hwmon.collect(&mut out).unwrap();
        out.iter().filter(|m| m.key.name == "node_hwmon_temp_celsius").map(|m| m.real()).collect::<Vec<_>>()
    };
    assert_eq!(temps(&mut hwmon), [52.5, -1.5]);
    // A new sensor is not seen while the list is fresh: the directory is not read every tick.
    tree.put("sys/devices/virtual/hwmon/hwmon1/temp2_input", "20000\n");
    tree.put("sys/devices/virtual/hwmon/hwmon0/temp1_input", "53000\n");
    assert_eq!(temps(&mut hwmon), [53.0, -1.5]);
    // A vanished file is skipped silently, and the next collection lists the files again.
    std::fs::remove_file(tree.path().join("sys/devices/virtual/hwmon/hwmon0/temp1_input")).unwrap();
    assert_eq!(temps(&mut hwmon), [-1.5]);
    assert_eq!(temps(&mut hwmon), [-1.5, 20.0]);
}

#[test]
fn files_are_listed_again_every_so_many_collections() {
    let tree = Tree::new("hwmon-periodic");
    arm(&tree);
    let mut hwmon = Hwmon::new(&tree.roots());
    let mut out = Vec::new();
    hwmon.collect(&mut out).unwrap();
    tree.put("sys/devices/virtual/hwmon/hwmon1/fan1_input", "900\n");
    let fans = |hwmon: &mut Hwmon| {
        let mut out = Vec::new();
        hwmon.collect(&mut out).unwrap();
        out.iter().filter(|m| m.key.name == "node_hwmon_fan_rpm").count()
    };
    for _ in 1..REDISCOVER_EVERY {
        assert_eq!(fans(&mut hwmon), 0);
    }
    assert_eq!(fans(&mut hwmon), 1);
}

#[test]
fn bare_values_special_types_and_clocks_follow_node_exporter() {
    let tree = Tree::new("hwmon-special");
    let dir = "sys/devices/pci0000:00/0000:03:00.0/hwmon/hwmon3";
    tree.put(&format!("{dir}/name"), "amdgpu\n");
    tree.put(&format!("{dir}/pwm1"), "128\n");
    tree.put(&format!("{dir}/pwm1_enable"), "2\n");
    tree.put(&format!("{dir}/fan1_input"), "0\n");
    tree.put(&format!("{dir}/fan1"), "7\n");
    tree.put(&format!("{dir}/freq1_input"), "1800000000\n");
    tree.put(&format!("{dir}/freq1_label"), "sclk\n");
    tree.put(&format!("{dir}/freq2_input"), "96000000\n");
    tree.put(&format!("{dir}/power1_input"), "5000000\n");
    tree.put(&format!("{dir}/power1_average_interval"), "1000\n");
    tree.put(&format!("{dir}/curr1_input"), "2500\n");
    tree.put(&format!("{dir}/update_interval"), "500\n");
    tree.put(&format!("{dir}/temp1_crit_alarm"), "1\n");
    tree.put(&format!("{dir}/temp1_type"), "4\n");
    tree.link(&format!("{dir}/device"), "../../../0000:03:00.0");
    tree.link("sys/class/hwmon/hwmon3", "../../devices/pci0000:00/0000:03:00.0/hwmon/hwmon3");
    let mut out = Vec::new();
    Hwmon::new(&tree.roots()).collect(&mut out).unwrap();
    let chip = "pci0000:00_0000:03:00_0";
    assert_eq!(
        render(&out),
        sorted([
            format!(r#"node_hwmon_chip_names{{chip="{chip}",chip_name="amdgpu"}} 1"#),
            format!(r#"node_hwmon_curr_amps{{chip="{chip}",sensor="curr1"}} 2.5"#),
            format!(r#"node_hwmon_fan{{chip="{chip}",sensor="fan1"}} 7"#),
            format!(r#"node_hwmon_fan_input_rpm{{chip="{chip}",sensor="fan1"}} 0"#),
            format!(r#"node_hwmon_freq_freq_mhz{{chip="{chip}",sensor="sclk"}} 1800"#),
            format!(r#"node_hwmon_power_average_interval_seconds{{chip="{chip}",sensor="power1"}} 1"#),
            format!(r#"node_hwmon_power_watt{{chip="{chip}",sensor="power1"}} 5"#),
            format!(r#"node_hwmon_pwm{{chip="{chip}",sensor="pwm1"}} 128"#),
            format!(r#"node_hwmon_pwm_enable{{chip="{chip}",sensor="pwm1"}} 2"#),
            format!(r#"node_hwmon_sensor_label{{chip="{chip}",label="sclk",sensor="freq1"}} 1"#),
            format!(r#"node_hwmon_temp_crit_alarm_celsius{{chip="{chip}",sensor="temp1"}} 0.001"#),
            format!(r#"node_hwmon_temp_type{{chip="{chip}",sensor="temp1"}} 4"#),
            format!(r#"node_hwmon_update_interval_seconds{{chip="{chip}",sensor="update_interval0"}} 0.5"#),
        ])
    );
}
