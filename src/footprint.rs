//! Giving memory back between runs, so that an idle daemon costs about what the cron
//! container it replaces does.
//!
//! Measured on the daemon after a backup (bench/idle.rs): 4–8 MiB of anonymous memory
//! that glibc kept (one arena per thread that ever allocated, and freed memory inside
//! them). That is what a container's memory figure (`docker stats`, a cgroup's
//! `memory.max`) counts of it. The binary's and libraries' resident code is not: those
//! are page-cache pages, shared and reclaimable, counted in VmRSS only. Unmapping them
//! (as this module once did) moved VmRSS and nothing a container limit sees, and risked
//! the process: where smaps lies about a mapping's written pages (qemu-user), dropping it
//! discards relocated data and the daemon crashes. So code pages are left alone.

use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// How long after the last piece of work the daemon trims: long enough for the runtime's
/// idle blocking threads (10 s) and pooled connections to go first, so that what they
/// held is free by then.
const QUIET: Duration = Duration::from_secs(60);

/// One malloc arena. glibc otherwise makes one per thread that allocates (up to 8 per
/// core), and `malloc_trim` never gives back the top of an arena other than the main one:
/// measured, 4.5 MiB stayed resident that way after a backup. Threads then share the main
/// arena (each keeps its own small cache in front of it); what that costs a streaming
/// backup is in bench/README.md ("Idle footprint"), which is why only the long-lived
/// daemon asks for it and a one-off `stowage run` or restore keeps glibc's default. Call
/// before any thread starts.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tunable of the allocator; called before other threads run.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Blocks of 1 MiB and more (the S3 part buffers, 8 MiB each; zstd's window) get a mapping
/// of their own, handed back to the kernel when freed. glibc otherwise raises this threshold
/// to the size of the largest block freed (up to 32 MiB), after which the part buffers come
/// from the heap: a part stays resident there after its upload, a freed part's pages are
/// all resident when the next one reuses them however little it has filled, and a small
/// block left in a freed part's place makes the next part grow the heap. A 1 GiB backup
/// peaked at 58–65 MiB that way with 24 MiB of parts in flight (bench/README.md, "Peak RSS
/// of the 1 GiB backup"). The price: each part's pages are faulted in afresh, 2,048 minor
/// faults per 8 MiB part. For every command; call before any thread starts.
pub fn map_large_blocks() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tunable of the allocator; called before other threads run.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// Trims once the daemon has been quiet for [`QUIET`] after `work_done` was last
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
        shed();
    }
}

/// Returns the allocator's free memory to the kernel. Touches nothing that is mapped
/// from a file.
pub fn shed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator; mallinfo2 reads
    // its counters.
    unsafe {
        libc::malloc_trim(0);
        let m = libc::mallinfo2();
        debug!(
            "memory trimmed: heap {} KiB in use, {} KiB free kept",
            m.uordblks / 1024,
            m.fordblks / 1024
        );
    }
}

#[cfg(test)]
mod tests {
    /// The resident KiB of the mapping that starts at `addr`, from /proc/self/smaps.
    #[cfg(target_os = "linux")]
    fn rss_of_mapping(addr: usize) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
        let header = format!("{addr:x}-");
        smaps
            .lines()
            .skip_while(|l| !l.starts_with(&header))
            .skip(1)
            .take_while(|l| {
                l.split_whitespace()
                    .next()
                    .is_some_and(|field| field.ends_with(':'))
            })
            .find_map(|l| l.strip_prefix("Rss:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("Rss of the mapping")
    }

    /// Shedding gives back heap only: the pages of a private, read-only file mapping (what
    /// the binary's code and constants are) stay resident and intact. The shedding of old
    /// unmapped them with MADV_DONTNEED.
    #[cfg(target_os = "linux")]
    #[test]
    fn shedding_leaves_mapped_file_pages_alone() {
        use std::io::Write;
        let page = rustix::param::page_size();
        let pages = 16;
        let mut file = tempfile::tempfile().expect("tempfile");
        file.write_all(&vec![7u8; page * pages]).expect("write");
        // SAFETY: a fresh private mapping of our own file; unmapped at the end; no other
        // reference to it.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                page * pages,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                std::os::fd::AsRawFd::as_raw_fd(&file),
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            let base = p as *const u8;
            for i in 0..pages {
                std::ptr::read_volatile(base.add(i * page));
            }
            let before = rss_of_mapping(p as usize);
            super::shed();
            let after = rss_of_mapping(p as usize);
            assert_eq!(before, (page * pages / 1024) as u64);
            assert_eq!(after, before, "shedding unmapped pages of a file mapping");
            assert_eq!(*base.add(5 * page), 7);
            libc::munmap(p, page * pages);
        }
    }

    /// Looks at the block itself: glibc marks a block it mapped on its own with `IS_MMAPPED`
    /// (0x2) in the size word just before the pointer. In a process of its own (this test
    /// binary again, running only the probe below): in the test process, other tests' threads
    /// leave free space in the arenas that a 2 MiB block may be served from whatever the
    /// threshold, as it would be in the daemon; the probe needs an arena nothing else used.
    #[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
    #[test]
    fn large_blocks_stay_mapped_after_a_larger_one_was_freed() {
        let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "footprint::tests::probe_large_blocks",
                "--exact",
                "--ignored",
                "--test-threads=1",
                "--nocapture",
            ])
            .env("STOWAGE_FOOTPRINT_PROBE", "1")
            .output()
            .expect("run the probe");
        let said = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "probe failed:\n{said}");
        assert!(said.contains("1 passed"), "the probe did not run:\n{said}");
    }

    /// Run by the test above in a process of its own.
    #[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
    #[test]
    #[ignore = "run by large_blocks_stay_mapped_after_a_larger_one_was_freed in a process of its own"]
    fn probe_large_blocks() {
        if std::env::var_os("STOWAGE_FOOTPRINT_PROBE").is_none() {
            return;
        }
        fn mapped_on_its_own(block: &[u8]) -> bool {
            // SAFETY: every glibc malloc chunk has its size word in the 8 bytes before the
            // pointer it hands out; it is only read.
            let size_word = unsafe { *(block.as_ptr() as *const usize).sub(1) };
            size_word & 0x2 != 0
        }
        super::map_large_blocks();
        // With glibc's moving threshold, freeing this raises it to 8 MiB, and the parts
        // that follow come from the heap.
        drop(std::hint::black_box(vec![1u8; 8 << 20]));
        let part = std::hint::black_box(vec![1u8; 2 << 20]);
        assert!(
            mapped_on_its_own(&part),
            "a 2 MiB block came from the heap after an 8 MiB one was freed"
        );
    }
}
