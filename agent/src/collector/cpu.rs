//! CPU time per core and mode, context switches, interrupts, forks and run queue, from /proc/stat.

use twinwatch_common::sample::{Metric, SeriesKey, Value};

use super::{num, CollectError};

const MODES: [&str; 8] = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"];

/// Parses /proc/stat. CPU times stay in kernel ticks with a scale of `1 / user_hz`, so they travel
/// as small integer deltas and read as seconds.
pub fn parse(text: &str, user_hz: f64, out: &mut Vec<Metric>) -> Result<(), CollectError> {
    let scale = 1.0 / user_hz;
    let mut cores = 0;
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(head) = fields.next() else { continue };
        if let Some(core) = head.strip_prefix("cpu").filter(|c| !c.is_empty()) {
            cores += 1;
            for (mode, field) in MODES.iter().zip(fields.by_ref()) {
                let ticks = num(Some(field), "/proc/stat cpu line")?;
                let key = SeriesKey::new("node_cpu_seconds_total").with("cpu", core).with("mode", *mode);
                out.push(Metric::counter(key, Value::Int(ticks as i64)).scaled(scale));
            }
            // guest and guest_nice are already included in user and nice.
            for (mode, field) in ["user", "nice"].iter().zip(fields) {
                let ticks = num(Some(field), "/proc/stat cpu line")?;
                let key = SeriesKey::new("node_cpu_guest_seconds_total").with("cpu", core).with("mode", *mode);
                out.push(Metric::counter(key, Value::Int(ticks as i64)).scaled(scale));
            }
            continue;
        }
        let (name, counter) = match head {
            "ctxt" => ("node_context_switches_total", true),
            "intr" => ("node_intr_total", true),
            "processes" => ("node_forks_total", true),
            "procs_running" => ("node_procs_running", false),
            "procs_blocked" => ("node_procs_blocked", false),
            "btime" => ("node_boot_time_seconds", false),
            _ => continue,
        };
        let value = Value::Int(num(fields.next(), "/proc/stat")? as i64);
        let key = SeriesKey::new(name);
        out.push(if counter { Metric::counter(key, value) } else { Metric::gauge(key, value) });
    }
    if cores == 0 {
        return Err(CollectError::Parse { what: "/proc/stat", detail: "no per-core cpu lines".into() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  2255 34 2290 22625563 6290 127 456 0 0 0
cpu0 1132 34 1441 11311718 3675 127 438 0 0 0
cpu1 1123 0 849 11313845 2614 0 18 0 5 1
intr 114930548 113199788 3 0 5 263 0 4 [...]
ctxt 1990473
btime 1062191376
processes 2915
procs_running 1
procs_blocked 0
softirq 183433 0 21755 12 39 1137 231 21459 2263
";

    #[test]
    fn per_core_modes_in_seconds_and_kernel_counters() {
        let mut out = Vec::new();
        parse(STAT, 100.0, &mut out).unwrap();
        let find = |name: &str, cpu: Option<&str>, mode: Option<&str>| {
            out.iter()
                .find(|m| m.key.name == name && m.key.label("cpu") == cpu && m.key.label("mode") == mode)
                .map(|m| m.real())
        };
        assert_eq!(find("node_cpu_seconds_total", Some("1"), Some("system")), Some(8.49));
        assert_eq!(find("node_cpu_seconds_total", Some("0"), Some("idle")), Some(113117.18));
        assert_eq!(find("node_cpu_guest_seconds_total", Some("1"), Some("user")), Some(0.05));
        assert_eq!(find("node_context_switches_total", None, None), Some(1990473.0));
        assert_eq!(find("node_intr_total", None, None), Some(114930548.0));
        assert_eq!(find("node_forks_total", None, None), Some(2915.0));
        assert_eq!(find("node_boot_time_seconds", None, None), Some(1062191376.0));
        assert_eq!(out.iter().filter(|m| m.key.name == "node_cpu_seconds_total").count(), 16);
    }

    #[test]
    fn truncated_file_is_an_error_not_a_panic() {
        let mut out = Vec::new();
        assert!(parse("cpu  1 2 3\ncpu0 1 2 x", 100.0, &mut out).is_err());
        assert!(parse("", 100.0, &mut Vec::new()).is_err());
    }
}
