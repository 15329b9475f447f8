//! Measuring processes for the benchmarks: CPU from schedstat, resident memory, medians.

/// CPU time in nanoseconds (the sum of every thread's schedstat, far finer than the 10 ms ticks
/// of /proc/PID/stat), and resident bytes, of one process.
pub fn usage(pid: i32) -> Option<(u64, u64)> {
    let mut cpu_ns = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let schedstat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        cpu_ns += schedstat.split_ascii_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches(" kB").trim();
    Some((cpu_ns, rss_kb.parse::<u64>().ok()? * 1024))
}

/// CPU seconds a process has spent, threads that have exited included (`utime + stime` of
/// /proc/PID/stat), and its age in seconds: [`usage`]'s schedstat sum misses exited threads.
pub fn cpu_seconds(pid: i32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command, which may hold spaces, from field 3 (state) on.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_ascii_whitespace().collect();
    let tick = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<f64>().ok());
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime").ok()?.split_ascii_whitespace().next()?.parse().ok()?;
    Some(((tick(14)? + tick(15)?) / hz, uptime - tick(22)? / hz))
}

/// The threads of a process.
pub fn threads(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.count()).unwrap_or(0)
}

/// The 1, 5 and 15 minute load averages, as /proc/loadavg words them.
pub fn loadavg() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_ascii_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// The median (the mean of the middle two for an even count); NaN for none.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// The value at quantile `p` (0 to 1) of `sorted`, ascending; NaN for none.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// `RssAnon` and `RssFile` of a process, in bytes.
pub fn rss_split(pid: i32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (kb("RssAnon:"), kb("RssFile:") + kb("RssShmem:"))
}

/// Resident bytes of the guest program that `qemu-aarch64-static` runs as process `pid`, anonymous
/// and file-backed, from `/proc/PID/smaps`: the mappings below 16 TiB, where qemu puts the guest
/// (its binary at its link address, its stack and `mmap`s near 0x55_0000_0000); qemu's own
/// binary, heap and translated code live above.
pub fn guest_rss_split(pid: i32) -> (u64, u64) {
    const GUEST_END: u64 = 1 << 44;
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let (mut anon, mut file, mut guest, mut rss) = (0u64, 0u64, false, 0u64);
    for line in smaps.lines() {
        let kb = |l: &str| l.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) * 1024;
        if let Some(start) = line.split('-').next().filter(|s| s.len() >= 8 && s.chars().all(|c| c.is_ascii_hexdigit()))
        {
            if line.contains(' ') && !line.ends_with(':') && line.split_whitespace().count() >= 5 {
                guest = u64::from_str_radix(start, 16).map(|a| a < GUEST_END).unwrap_or(false);
                continue;
            }
        }
        if !guest {
            continue;
        }
        if line.starts_with("Rss:") {
            rss = kb(line);
        } else if line.starts_with("Anonymous:") {
            let a = kb(line).min(rss);
            anon += a;
            file += rss - a;
        }
    }
    (anon, file)
}

/// Where benchmark reports go: `target/bench/`.
pub fn report_dir() -> std::path::PathBuf {
    let out = std::env::current_exe()
        .ok()
        .and_then(|e| e.ancestors().nth(3).map(|t| t.join("bench")))
        .unwrap_or_else(|| "bench".into());
    let _ = std::fs::create_dir_all(&out);
    out
}

/// The value of `--seconds N` on the command line, at least `min`; `default` without one.
pub fn seconds_arg(default: usize, min: usize) -> usize {
    std::env::args().skip_while(|a| a != "--seconds").nth(1).and_then(|s| s.parse().ok()).unwrap_or(default).max(min)
}

/// `/proc/PID/io` of one process, by field name (`rchar`, `wchar`, `write_bytes`, ...).
pub fn io_counters(pid: i32) -> Option<std::collections::BTreeMap<String, u64>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    Some(
        text.lines()
            .filter_map(|l| l.split_once(':'))
            .filter_map(|(k, v)| Some((k.into(), v.trim().parse().ok()?)))
            .collect(),
    )
}

/// Bytes of the files under `dir`, recursively (apparent sizes).
pub fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}
