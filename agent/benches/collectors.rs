//! What one sample of each host source costs: the agent's own collector beside the `procfs` and
//! `sysinfo` crates reading the same kernel source, on this host, in one run.
//!
//! Per sample: CPU time of the whole process (`CLOCK_PROCESS_CPUTIME_ID`, so the filesystem
//! collector's statvfs thread counts), median and p99, and heap allocations and bytes (a counting
//! global allocator around the system one). The three take turns, one sample each, 201 ms apart,
//! as the agent samples (once a second, caches cold): sysinfo also reads /proc/stat again only
//! after 200 ms. The kernel's share (generating /proc text, statvfs) is in every column alike.
//!
//! Not like for like everywhere, and the table says where: the crates fill their own structs,
//! while ours also builds the series (names and labels) the agent ships; `sysinfo` keeps less of
//! some sources (CPU usage only, nine /proc/meminfo fields) and more of others (addresses of
//! network interfaces). Results also go to `target/bench/collectors.json`.
//!
//! Run: `cargo bench -p twinwatch-agent --bench collectors [-- --rounds N]` (default 100 samples of
//! each, about 3 minutes); `cargo xtask bench` runs it after the end-to-end benchmarks.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashSet;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use procfs::{Current, CurrentSI};
use serde_json::{json, Value};
use twinwatch_agent::collector::{filesystem, user_hz, Collector, Roots, Settings, SOURCES};
use twinwatch_common::sample::Metric;

/// The system allocator, counting what passes through it.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is passed on to `System` unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }

    /// A growth is one more allocation of the new size: what a fresh buffer would have cost.
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// CPU time of the whole process, every thread.
fn process_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Between rounds: the agent's tick is a second; sysinfo wants 200 ms between CPU readings.
const PAUSE: Duration = Duration::from_millis(201);

/// One implementation's figures for one source.
struct Figures {
    samples: usize,
    cpu_median_us: f64,
    cpu_p99_us: f64,
    wall_median_us: f64,
    allocs: f64,
    bytes: f64,
}

impl Figures {
    fn json(&self) -> Value {
        json!({
            "samples": self.samples,
            "cpu_us_median": self.cpu_median_us,
            "cpu_us_p99": self.cpu_p99_us,
            "wall_us_median": self.wall_median_us,
            "allocations_per_sample": self.allocs,
            "bytes_allocated_per_sample": self.bytes,
        })
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Runs the three implementations of one source in turn, one sample each, `rounds` times after 10
/// warm-up rounds, pausing [`PAUSE`] between rounds (outside the measured calls). Taking turns
/// puts each under the same host (processes coming and going, other work), and each round starts
/// with the next of the three: the first call after a pause finds colder caches.
fn measure(rounds: usize, samplers: [&mut dyn FnMut(); 3]) -> [Figures; 3] {
    let mut samplers = samplers;
    for _ in 0..10 {
        for sample in samplers.iter_mut() {
            sample();
        }
    }
    let mut cpu: [Vec<f64>; 3] = Default::default();
    let mut wall: [Vec<f64>; 3] = Default::default();
    let mut allocs = [0u64; 3];
    let mut bytes = [0u64; 3];
    for round in 0..rounds {
        std::thread::sleep(PAUSE);
        for i in (0..3).map(|k| (k + round) % 3) {
            let sample = &mut samplers[i];
            let (a, b) = (ALLOCS.load(Ordering::Relaxed), BYTES.load(Ordering::Relaxed));
            let (c, w) = (process_cpu(), Instant::now());
            sample();
            wall[i].push(w.elapsed().as_secs_f64() * 1e6);
            cpu[i].push(process_cpu().saturating_sub(c).as_secs_f64() * 1e6);
            allocs[i] += ALLOCS.load(Ordering::Relaxed) - a;
            bytes[i] += BYTES.load(Ordering::Relaxed) - b;
        }
    }
    std::array::from_fn(|i| {
        cpu[i].sort_by(f64::total_cmp);
        wall[i].sort_by(f64::total_cmp);
        Figures {
            samples: rounds,
            cpu_median_us: percentile(&cpu[i], 0.5),
            cpu_p99_us: percentile(&cpu[i], 0.99),
            wall_median_us: percentile(&wall[i], 0.5),
            allocs: allocs[i] as f64 / rounds as f64,
            bytes: bytes[i] as f64 / rounds as f64,
        }
    })
}

/// The agent's collector for `name`, built from the same table the sampler uses.
fn ours(name: &str) -> Box<dyn Collector> {
    let (_, _, build) = SOURCES.iter().find(|(n, _, _)| *n == name).expect("a source of the agent");
    build(&Roots::default(), &Settings::default(), user_hz())
}

/// Runs our collector once per sample into a reused vector, as the sampler does.
fn ours_sample(collector: &mut dyn Collector, out: &mut Vec<Metric>) {
    out.clear();
    let _ = black_box(collector.collect(out));
    black_box(&out);
}

struct Case {
    source: &'static str,
    reads: &'static str,
    /// What the crates gather compared with ours.
    note: String,
    ours: Figures,
    procfs: Figures,
    sysinfo: Figures,
}

impl Case {
    fn new(source: &'static str, reads: &'static str, note: impl Into<String>, figures: [Figures; 3]) -> Case {
        let [ours, procfs, sysinfo] = figures;
        Case { source, reads, note: note.into(), ours, procfs, sysinfo }
    }
}

fn main() {
    // `cargo bench` passes `--bench`, and `cargo xtask bench` its `--seconds`: both ignored here.
    let load_before = load_average();
    let rounds: usize =
        std::env::args().skip_while(|a| a != "--rounds").nth(1).and_then(|s| s.parse().ok()).unwrap_or(100).max(2);
    let mut out: Vec<Metric> = Vec::with_capacity(512);
    let mut cases = Vec::new();

    // The agent's own mount list, so that procfs's mounts are statted exactly as ours are.
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("/proc/self/mounts");
    let our_mounts: HashSet<String> = filesystem::parse_mounts(&mounts).into_iter().map(|m| m.mountpoint).collect();

    let mut sys = sysinfo::System::new().expect("sysinfo on Linux");
    let mut networks = sysinfo::Networks::new().expect("sysinfo networks");
    let mut disks = sysinfo::Disks::new().expect("sysinfo disks");

    let mut c = ours("cpu");
    cases.push(Case::new(
        "cpu",
        "/proc/stat",
        "sysinfo keeps a usage ratio per core, not the ten mode counters",
        measure(
            rounds,
            [
                &mut || ours_sample(&mut *c, &mut out),
                &mut || {
                    black_box(procfs::KernelStats::current().ok());
                },
                &mut || {
                    sys.refresh_cpu_usage();
                    black_box(sys.global_cpu_usage());
                },
            ],
        ),
    ));

    let mut c = ours("memory");
    cases.push(Case::new(
        "memory",
        "/proc/meminfo",
        "sysinfo keeps 9 of the ~55 fields",
        measure(
            rounds,
            [
                &mut || ours_sample(&mut *c, &mut out),
                &mut || {
                    black_box(procfs::Meminfo::current().ok());
                },
                &mut || {
                    sys.refresh_memory();
                    black_box(sys.used_memory());
                },
            ],
        ),
    ));

    let mut c = ours("load");
    cases.push(Case::new(
        "load",
        "/proc/loadavg",
        "the same three numbers",
        measure(
            rounds,
            [
                &mut || ours_sample(&mut *c, &mut out),
                &mut || {
                    black_box(procfs::LoadAverage::current().ok());
                },
                &mut || {
                    black_box(sysinfo::System::load_average().ok());
                },
            ],
        ),
    ));

    let mut c = ours("network");
    cases.push(Case::new(
        "network",
        "/proc/net/dev",
        "sysinfo reads 6 counters, speed, MTU and state per interface from /sys/class/net, and the addresses",
        measure(
            rounds,
            [
                &mut || ours_sample(&mut *c, &mut out),
                &mut || {
                    black_box(procfs::net::dev_status().ok());
                },
                &mut || {
                    networks.refresh(true);
                    black_box(networks.len());
                },
            ],
        ),
    ));

    let mut c = ours("disk");
    let io = sysinfo::DiskRefreshKind::nothing().with_io_usage();
    cases.push(Case::new(
        "disks",
        "/proc/diskstats",
        "sysinfo: bytes read and written of mounted disks only, after reading the mount table again",
        measure(
            rounds,
            [
                &mut || ours_sample(&mut *c, &mut out),
                &mut || {
                    black_box(procfs::diskstats().ok());
                },
                &mut || {
                    disks.refresh_specifics(true, io);
                    black_box(disks.len());
                },
            ],
        ),
    ));

    let storage = sysinfo::DiskRefreshKind::nothing().with_storage();
    let mut c = ours("filesystem");
    // How many filesystems each one stats: the crates do not choose the same mounts as ours.
    ours_sample(&mut *c, &mut out);
    let ours_count = out.iter().filter(|m| m.key.name == "node_filesystem_size_bytes").count();
    disks.refresh_specifics(true, storage);
    let note = format!(
        "statvfs of {ours_count} mounts (ours, procfs) and {} (sysinfo, which skips tmpfs); ours hands \
         each statvfs to its watchdog thread",
        disks.len()
    );
    let mut procfs_filesystems = || {
        let Ok(mounts) = procfs::mounts() else { return };
        for m in mounts.iter().filter(|m| our_mounts.contains(&m.fs_file)) {
            black_box(filesystem::statvfs(&m.fs_file).ok());
        }
    };
    let mut sysinfo_filesystems = || {
        disks.refresh_specifics(true, storage);
        black_box(disks.len());
    };
    cases.push(Case::new(
        "filesystems",
        "/proc/self/mounts + statvfs",
        note,
        measure(rounds, [&mut || ours_sample(&mut *c, &mut out), &mut procfs_filesystems, &mut sysinfo_filesystems]),
    ));
    // Our parser with statvfs inline: what the watchdog thread costs, and our mount parsing
    // against procfs's on equal terms.
    let mut text = String::new();
    cases.push(Case::new(
        "filesystems, no watchdog",
        "/proc/self/mounts + statvfs",
        "ours: the same parser and statvfs on the calling thread, as procfs's row does",
        measure(
            rounds,
            [
                &mut || {
                    text.clear();
                    let Ok(mut f) = std::fs::File::open("/proc/self/mounts") else { return };
                    let _ = std::io::Read::read_to_string(&mut f, &mut text);
                    for m in filesystem::parse_mounts(&text) {
                        black_box(filesystem::statvfs(&m.mountpoint).ok());
                    }
                },
                &mut procfs_filesystems,
                &mut sysinfo_filesystems,
            ],
        ),
    ));

    let mut c = ours("processes");
    let kind = sysinfo::ProcessRefreshKind::nothing().with_cpu().with_memory().without_tasks();
    cases.push(Case::new(
        "processes",
        "/proc/[pid]/stat",
        "the crates keep every process; ours keeps counts by state and the top 5 by CPU and by memory",
        measure(
            rounds,
            [
                &mut || ours_sample(&mut *c, &mut out),
                &mut || {
                    let Ok(all) = procfs::process::all_processes() else { return };
                    let mut states = [0u64; 128];
                    let mut threads = 0i64;
                    for stat in all.filter_map(|p| p.ok()?.stat().ok()) {
                        states[usize::from(stat.state as u8 & 0x7f)] += 1;
                        threads += stat.num_threads;
                    }
                    black_box((states, threads));
                },
                &mut || {
                    sys.refresh_processes_specifics(sysinfo::ProcessesToUpdate::All, true, kind);
                    black_box(sys.processes().len());
                },
            ],
        ),
    ));

    report(&cases, rounds, &load_before);
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn report(cases: &[Case], rounds: usize, load_before: &str) {
    let load = load_average();
    println!("load average before the run: {load_before}; after: {load}");
    println!(
        "{:<25} {:>24} {:>24} {:>24} {:>14}",
        "source", "ours µs (p99) allocs", "procfs µs (p99) allocs", "sysinfo µs (p99) allocs", "procfs/sysinfo"
    );
    let cell = |f: &Figures| format!("{:.1} ({:.1}) {:.0}", f.cpu_median_us, f.cpu_p99_us, f.allocs);
    for c in cases {
        println!(
            "{:<25} {:>24} {:>24} {:>24} {:>6.1}x/{:.1}x",
            c.source,
            cell(&c.ours),
            cell(&c.procfs),
            cell(&c.sysinfo),
            c.procfs.cpu_median_us / c.ours.cpu_median_us,
            c.sysinfo.cpu_median_us / c.ours.cpu_median_us,
        );
    }
    for c in cases {
        println!(
            "{:<25} bytes per sample: ours {:.0}, procfs {:.0}, sysinfo {:.0}",
            c.source, c.ours.bytes, c.procfs.bytes, c.sysinfo.bytes
        );
    }
    let report = json!({
        "samples_each": rounds,
        "pause_ms": PAUSE.as_millis() as u64,
        "load_average_before": load_before,
        "load_average_after": load,
        "processes_on_host": std::fs::read_dir("/proc").map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit())).count()).unwrap_or(0),
        "sources": cases.iter().map(|c| json!({
            "source": c.source,
            "reads": c.reads,
            "note": c.note,
            "ours": c.ours.json(),
            "procfs": c.procfs.json(),
            "sysinfo": c.sysinfo.json(),
            "cpu_ratio_procfs_to_ours": c.procfs.cpu_median_us / c.ours.cpu_median_us,
            "cpu_ratio_sysinfo_to_ours": c.sysinfo.cpu_median_us / c.ours.cpu_median_us,
        })).collect::<Vec<_>>(),
    });
    let dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.ancestors().nth(3).map(|t| t.join("bench")))
        .unwrap_or_else(|| "bench".into());
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("collectors.json"), serde_json::to_string_pretty(&report).unwrap_or_default());
    println!("wrote {}", dir.join("collectors.json").display());
}
