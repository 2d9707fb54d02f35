//! Giving memory back between runs, so that an idle daemon costs about what the cron
//! container it replaces does.
//!
//! Measured on the daemon after a backup (bench/idle.rs, before this module): 15–21 MiB of
//! resident code (the pages of the binary a backup touched: the S3 SDK, zstd, TLS, …) and
//! 4–8 MiB of anonymous memory (glibc keeps freed memory in one arena per thread that ever
//! allocated). Neither is in use between runs, and neither goes back by itself: the
//! kernel only reclaims clean code pages under memory pressure, and glibc only returns
//! the top of the main heap.

use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// How long after the last piece of work the daemon sheds: long enough for the runtime's
/// idle blocking threads (10 s) and pooled connections to go first, so that what they
/// held is free by then.
const QUIET: Duration = Duration::from_secs(60);

/// One malloc arena. glibc otherwise makes one per thread that allocates (up to 8 per
/// core), and `malloc_trim` never gives back the top of an arena other than the main one:
/// measured, 4.5 MiB stayed resident that way after a backup. Threads then share the main
/// arena (each keeps its own small cache in front of it); what that costs a streaming
/// backup is in bench/README.md ("Idle footprint"). Call before any thread starts.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tunable of the allocator; called before other threads run.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Sheds once the daemon has been quiet for [`QUIET`] after `work_done` was last
/// notified; ends with `stop`.
pub async fn shed_when_quiet(work_done: std::sync::Arc<Notify>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = work_done.notified() => {}
            _ = stop.cancelled() => return,
        }
        // More work within the quiet time starts the wait again.
        loop {
            tokio::select! {
                _ = work_done.notified() => continue,
                _ = tokio::time::sleep(QUIET) => break,
                _ = stop.cancelled() => return,
            }
        }
        // Right here, not on a blocking thread: whatever code runs after the shed is
        // mapped back in (fault-around: up to 64 KiB a fault), so the less the better.
        shed();
    }
}

/// Returns free heap to the kernel and drops this process's mappings of file pages it has
/// not changed (its own binary, the shared libraries). Both are only advice: a page needed
/// again comes back from the page cache as a minor fault (no disk read, no sleep), or from
/// the disk if the kernel has reclaimed it since.
pub fn shed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator; mallinfo2 reads
    // its counters.
    unsafe {
        libc::malloc_trim(0);
        let m = libc::mallinfo2();
        debug!(
            "memory shed: heap {} KiB in use, {} KiB free kept; dropping mapped code",
            m.uordblks / 1024,
            m.fordblks / 1024
        );
    }
    // Last: code run after it (logging included) is mapped again.
    drop_clean_file_pages();
}

/// MADV_DONTNEED on every private, read-only file mapping none of whose pages this process
/// has written: the code and constants of the binary and its libraries. Their resident
/// pages are counted in the process's RSS although they are copies of the file the page
/// cache holds (shared with every other process, and the kernel's to reclaim). Dropping the
/// mappings keeps the page cache, so running that code again costs minor faults, not the
/// disk reads (and sleeps) of `MADV_PAGEOUT`, and needs no ownership of the file.
///
/// A mapping with anonymous pages is skipped: those are written copies (the dynamic
/// linker's relocations, made read-only afterwards) that DONTNEED would discard.
fn drop_clean_file_pages() {
    #[cfg(target_os = "linux")]
    {
        let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
            return;
        };
        for (start, end) in clean_file_ranges(&smaps) {
            // SAFETY: the range is a whole private, read-only file mapping of this process
            // with no written (anonymous) page; DONTNEED on it only unmaps pages that are
            // read back unchanged from the file on the next access.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
            }
        }
    }
}

/// Address ranges, from /proc/self/smaps, of the private file mappings that are not
/// writable and hold no anonymous page.
fn clean_file_ranges(smaps: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    // The current mapping's range while it qualifies so far, until its Anonymous line.
    let mut candidate: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let Some(first) = f.next() else { continue };
        if let Some((a, b)) = first.split_once('-') {
            // A mapping's header: range perms offset dev inode [path].
            let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
            else {
                candidate = None;
                continue;
            };
            let perms = f.next().unwrap_or("");
            let path = f.nth(3).unwrap_or("");
            let private_read_only = perms.ends_with('p') && !perms.contains('w');
            candidate = (private_read_only && path.starts_with('/')).then_some((a, b));
        } else if first == "Anonymous:"
            && let Some(range) = candidate.take()
            && f.next() == Some("0")
        {
            out.push(range);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_file_ranges_are_unwritten_read_only_file_mappings() {
        let smaps = "\
00400000-00500000 r--p 00000000 fd:01 123 /usr/local/bin/stowage
Rss:                 400 kB
Anonymous:             0 kB
00500000-00900000 r-xp 00100000 fd:01 123 /usr/local/bin/stowage
Anonymous:             0 kB
00900000-00a00000 r--p 00900000 fd:01 123 /usr/local/bin/stowage
Anonymous:            64 kB
00a00000-00b00000 rw-p 00a00000 fd:01 123 /usr/local/bin/stowage
Anonymous:             8 kB
7f0000000000-7f0000200000 r-xp 00000000 fd:01 456 /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
7f0000200000-7f0000210000 r--s 00000000 fd:01 789 /dev/shm/shared
Anonymous:             0 kB
7f0000300000-7f0000400000 r--p 00000000 00:00 0
Anonymous:             0 kB
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0 [stack]
Anonymous:           132 kB
7ffc00100000-7ffc00102000 r-xp 00000000 00:00 0 [vdso]
Anonymous:             0 kB
";
        assert_eq!(
            clean_file_ranges(smaps),
            vec![
                (0x400000, 0x500000),
                (0x500000, 0x900000),
                (0x7f0000000000, 0x7f0000200000)
            ]
        );
    }

    /// On this process (the test binary): its mapped code stops being resident, it goes
    /// on running that code, and what it had written in a relocated mapping is intact.
    #[test]
    fn shedding_drops_mapped_code_and_keeps_running() {
        let rss_file = || {
            std::fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("RssFile:"))
                        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                })
                .unwrap_or(0)
        };
        let before = rss_file();
        shed();
        let after = rss_file();
        assert!(
            after < before,
            "RssFile {before} KiB before, {after} KiB after shedding"
        );
        // Code, constants and relocated tables work as before their pages went.
        use sha2::Digest;
        let digest = sha2::Sha256::digest(b"abc");
        assert_eq!(
            hex::encode(digest),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
