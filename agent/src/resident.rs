//! Letting go of the pages of the binary that only start-up used.
//!
//! The kernel maps a file's pages 64 KiB at a time around each page a process touches
//! (fault-around), so parsing the command line and the configuration, loading certificates and
//! opening the buffer leave most of the binary resident although the steady state runs a part of
//! it. [`release_startup_pages`] drops this process's mappings of every read-only file page that
//! was never written (`MADV_DONTNEED`); what the agent still runs faults back in from the page
//! cache as it runs, and the rest stays in the page cache without counting as this process's.
//!
//! This is what the kernel's own reclaim does to clean file pages at any time, so it adds no way
//! to fail: a page dropped here reads back the same bytes. Mappings holding private copies (a
//! relocated read-only segment, anything writable) are left alone, since dropping those would
//! lose their contents.

/// A mapping `release_startup_pages` may drop: start address and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub len: usize,
}

/// The mappings in `/proc/self/smaps` text that are backed by a file, not writable, and hold no
/// private (anonymous) page.
pub fn clean_file_mappings(smaps: &str) -> Vec<Span> {
    let mut out = Vec::new();
    let mut current: Option<Span> = None;
    for line in smaps.lines() {
        let mut words = line.split_ascii_whitespace();
        let Some(first) = words.next() else { continue };
        if let Some((start, end)) = first.split_once('-').filter(|_| !first.ends_with(':')) {
            // A mapping's header: range, permissions, offset, device, inode, path.
            let perms = words.next().unwrap_or("");
            let path = words.nth(3).unwrap_or("");
            let (Ok(start), Ok(end)) = (usize::from_str_radix(start, 16), usize::from_str_radix(end, 16)) else {
                current = None;
                continue;
            };
            let readonly = perms.starts_with('r') && perms.as_bytes().get(1) == Some(&b'-');
            current = (readonly && path.starts_with('/') && end > start).then_some(Span { start, len: end - start });
        } else if first == "Anonymous:" {
            let kb = words.next().and_then(|v| v.parse::<u64>().ok());
            if let Some(span) = current.take() {
                if kb == Some(0) {
                    out.push(span);
                }
            }
        }
    }
    out
}

/// Drops this process's mappings of the clean read-only file pages it has touched; returns the
/// bytes of address space advised.
pub fn release_startup_pages() -> std::io::Result<usize> {
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mut advised = 0;
    for span in clean_file_mappings(&smaps) {
        // SAFETY: the range is a whole mapping of this process, read-only and file-backed with no
        // private page (`Anonymous: 0 kB`), so no write can have diverged it from the file:
        // MADV_DONTNEED only unmaps pages that read back identical from the file on next touch.
        // Nothing makes such a mapping writable at run time.
        let rc = unsafe { libc::madvise(span.start as *mut libc::c_void, span.len, libc::MADV_DONTNEED) };
        if rc == 0 {
            advised += span.len;
        }
    }
    Ok(advised)
}

/// Resident bytes of this process as (anonymous, file-backed), from /proc/self/status.
pub fn resident_split() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb = |key: &str| -> Option<u64> {
        status.lines().find_map(|l| l.strip_prefix(key))?.trim().trim_end_matches("kB").trim().parse().ok()
    };
    Some((kb("RssAnon:")? * 1024, (kb("RssFile:")? + kb("RssShmem:").unwrap_or(0)) * 1024))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55a4fef83000-55a4ff159000 r--p 00000000 fe:01 1234                       /usr/bin/twinwatch-agent
Size:               1880 kB
Rss:                1152 kB
Anonymous:             0 kB
55a4ff159000-55a4ff678000 r-xp 001d6000 fe:01 1234                       /usr/bin/twinwatch-agent
Size:               5244 kB
Rss:                4668 kB
Anonymous:             0 kB
55a4ff678000-55a4ff6bf000 r--p 006f5000 fe:01 1234                       /usr/bin/twinwatch-agent
Size:                284 kB
Anonymous:           284 kB
55a4ff6bf000-55a4ff6c3000 rw-p 0073c000 fe:01 1234                       /usr/bin/twinwatch-agent
Anonymous:             0 kB
55a53556d000-55a535682000 rw-p 00000000 00:00 0                          [heap]
Anonymous:          1028 kB
7efe2f6ea000-7efe3121a000 rw-p 00000000 00:00 0 
Anonymous:           188 kB
7efe31240000-7efe31396000 r-xp 00026000 fe:01 99                         /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
7ffee95b6000-7ffee95b8000 r-xp 00000000 00:00 0                          [vdso]
Anonymous:             0 kB
";

    #[test]
    fn only_clean_read_only_file_mappings_are_dropped() {
        let spans = clean_file_mappings(SMAPS);
        assert_eq!(
            spans,
            [
                Span { start: 0x55a4_fef8_3000, len: 0x1d6000 },
                Span { start: 0x55a4_ff15_9000, len: 0x51f000 },
                Span { start: 0x7efe_3124_0000, len: 0x156000 },
            ]
        );
    }

    #[test]
    fn a_path_with_spaces_or_a_deleted_binary_still_counts() {
        let text = "7f00-8f00 r-xp 00000000 fe:01 7 /opt/my tools/twinwatch-agent (deleted)\nAnonymous: 0 kB\n";
        assert_eq!(clean_file_mappings(text), [Span { start: 0x7f00, len: 0x1000 }]);
    }

    #[test]
    fn releasing_keeps_the_process_running_and_its_text_readable() {
        let before = resident_split().expect("status");
        release_startup_pages().expect("smaps");
        // Code runs on after the drop: this very test, and a fresh formatting call.
        assert_eq!(format!("{}", 6 * 7), "42");
        let after = resident_split().expect("status");
        assert!(after.1 <= before.1 + (1 << 20), "{before:?} -> {after:?}");
    }
}
