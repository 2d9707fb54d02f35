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
        // Right here, not on a blocking thread: whatever code runs after the page-out is
        // read back in (with read-around: 64–128 KiB a fault), so the less the better.
        shed();
    }
}

/// Returns free heap to the kernel and drops this process's resident pages of its own
/// binary. Both are only advice: a page needed again is read back (the code of a backup,
/// ~15 MiB, from the page cache or the disk: a fraction of a second once a day).
pub fn shed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator; mallinfo2 reads
    // its counters.
    unsafe {
        libc::malloc_trim(0);
        let m = libc::mallinfo2();
        debug!(
            "memory shed: heap {} KiB in use, {} KiB free kept; paging out the code",
            m.uordblks / 1024,
            m.fordblks / 1024
        );
    }
    // Last: code run after it (logging included) is read back in.
    page_out_own_code();
}

/// MADV_PAGEOUT on the read-only mappings of the executable. The kernel honours it for
/// file pages only when the process owns the file or may write it (Linux ≥ 5.4, the
/// ownership rule since 6.x), which is why the image installs the binary owned by the
/// user stowage runs as; elsewhere it is a no-op, never an error.
fn page_out_own_code() {
    #[cfg(target_os = "linux")]
    {
        let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
            return;
        };
        let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
            return;
        };
        for (start, end) in code_ranges(&maps, &exe.to_string_lossy()) {
            // SAFETY: the range is a whole mapping of this process taken from its own
            // maps; MADV_PAGEOUT changes no contents, only where the pages live.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_PAGEOUT);
            }
        }
    }
}

/// Address ranges of the mappings of `exe` that are not writable, from /proc/self/maps.
fn code_ranges(maps: &str, exe: &str) -> Vec<(usize, usize)> {
    maps.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let range = f.next()?;
            let perms = f.next()?;
            let path = f.nth(3)?;
            if path != exe || perms.contains('w') {
                return None;
            }
            let (a, b) = range.split_once('-')?;
            Some((
                usize::from_str_radix(a, 16).ok()?,
                usize::from_str_radix(b, 16).ok()?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_ranges_are_the_exe_read_only_mappings() {
        let maps = "\
55d0c0000000-55d0c0100000 r--p 00000000 fd:01 123 /usr/local/bin/stowage
55d0c0100000-55d0c0900000 r-xp 00100000 fd:01 123 /usr/local/bin/stowage
55d0c0900000-55d0c0a00000 rw-p 00900000 fd:01 123 /usr/local/bin/stowage
7f0000000000-7f0000200000 r-xp 00000000 fd:01 456 /usr/lib/x86_64-linux-gnu/libc.so.6
7f0000300000-7f0000400000 rw-p 00000000 00:00 0
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0 [stack]
";
        assert_eq!(
            code_ranges(maps, "/usr/local/bin/stowage"),
            vec![
                (0x55d0c0000000, 0x55d0c0100000),
                (0x55d0c0100000, 0x55d0c0900000)
            ]
        );
        assert!(code_ranges(maps, "/other").is_empty());
    }

    /// On this process (the test binary, run by its owner under `cargo test`): its code
    /// stops being resident, and it goes on running the paged-out code.
    #[test]
    fn shedding_pages_out_owned_code() {
        use std::os::unix::fs::MetadataExt;
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
        let owner = std::fs::metadata("/proc/self/exe").map(|m| m.uid()).ok();
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        let before = rss_file();
        shed();
        let after = rss_file();
        if owner == Some(me) {
            assert!(
                after < before,
                "RssFile {before} KiB before, {after} KiB after shedding"
            );
        } else {
            eprintln!(
                "skipped the check: the test binary is not this user's, so the kernel ignores MADV_PAGEOUT"
            );
        }
    }
}
