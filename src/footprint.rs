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
    let shedder = Shedder::start();
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
        shedder.shed();
    }
}

/// How long the shedding thread waits after a request: by then the runtime's threads that
/// were busy with the request have gone to sleep.
const SETTLE: Duration = Duration::from_secs(1);

/// Sheds on a thread of its own, once the runtime's threads sleep. Whatever code runs
/// after a shed is mapped back in (fault-around: 64 KiB a fault) and stays until the next
/// one; shedding on a worker maps back the whole path from the shed to the worker's sleep,
/// measured at 1.3 MiB of code. This thread's way back to sleep is a few pages.
struct Shedder {
    /// Full while a shed is pending; `None` if the thread could not be started.
    requests: Option<std::sync::mpsc::SyncSender<()>>,
}

impl Shedder {
    fn start() -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("stowage-shed".into())
            // Reading smaps and pagemap takes little stack; the default 2 MiB is address
            // space only, but a small one keeps what a deep call could touch small.
            .stack_size(256 * 1024)
            .spawn(move || {
                // Ends when the sender goes, with the daemon.
                while rx.recv().is_ok() {
                    std::thread::sleep(SETTLE);
                    shed();
                }
            });
        match thread {
            Ok(_) => Self { requests: Some(tx) },
            Err(e) => {
                debug!("no shedding thread ({e}); shedding on the runtime's");
                Self { requests: None }
            }
        }
    }

    fn shed(&self) {
        match &self.requests {
            Some(tx) => match tx.try_send(()) {
                // Full: one is pending already, which covers this one.
                Ok(()) | Err(std::sync::mpsc::TrySendError::Full(())) => {}
                Err(std::sync::mpsc::TrySendError::Disconnected(())) => shed(),
            },
            None => shed(),
        }
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

/// MADV_DONTNEED on the pages of every private, read-only file mapping that this process
/// has not written: the code and constants of the binary and its libraries. Those resident
/// pages are counted in the process's RSS although they are copies of the file the page
/// cache holds (shared with every other process, and the kernel's to reclaim). Dropping the
/// mappings keeps the page cache, so running that code again costs minor faults, not the
/// disk reads (and sleeps) of `MADV_PAGEOUT`, and needs no ownership of the file.
///
/// Written pages are anonymous copies (the dynamic linker's relocations, made read-only
/// afterwards) that DONTNEED would discard: a mapping holding some is dropped page by page
/// around them, as /proc/self/pagemap tells them apart (a whole megabyte of the binary's
/// relocated constants stayed resident before for 44 KiB of such pages). Read-only, no
/// page of it can become written in between.
fn drop_clean_file_pages() {
    #[cfg(target_os = "linux")]
    {
        let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
            return;
        };
        let mappings = read_only_file_mappings(&smaps);
        let pagemap = mappings
            .iter()
            .any(|m| m.anon_kib > 0)
            .then(|| std::fs::File::open("/proc/self/pagemap").ok())
            .flatten();
        for m in mappings {
            let ranges = if m.anon_kib > 0 {
                match &pagemap {
                    Some(pagemap) => unwritten_pages(pagemap, &m),
                    None => continue,
                }
            } else {
                vec![(m.start, m.end)]
            };
            for (start, end) in ranges {
                // SAFETY: the range lies in a private, read-only file mapping of this
                // process and holds none of its anonymous (written) pages; DONTNEED on it
                // only unmaps pages that are read back unchanged from the file on the next
                // access.
                unsafe {
                    libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
                }
            }
        }
    }
}

/// A private, read-only mapping of a file, from /proc/self/smaps.
#[derive(Debug, PartialEq)]
struct FileMapping {
    start: usize,
    end: usize,
    /// Its anonymous pages (KiB): copies this process wrote before the mapping became
    /// read-only.
    anon_kib: u64,
}

/// The private file mappings that are not writable.
fn read_only_file_mappings(smaps: &str) -> Vec<FileMapping> {
    let mut out = Vec::new();
    // The current mapping while it qualifies so far, until its Anonymous line.
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
            && let Some((start, end)) = candidate.take()
        {
            // Unreadable counts as all written: then nothing of it is dropped.
            let anon_kib = f.next().and_then(|v| v.parse().ok()).unwrap_or(u64::MAX);
            out.push(FileMapping {
                start,
                end,
                anon_kib,
            });
        }
    }
    out
}

/// /proc/self/pagemap's flags of a page: present, swapped, file-backed (or shared).
const PAGE_PRESENT: u64 = 1 << 63;
const PAGE_SWAPPED: u64 = 1 << 62;
const PAGE_FILE: u64 = 1 << 61;

/// The runs of pages of `m` that hold nothing this process wrote: resident pages of the
/// file, and pages not resident at all. Empty if pagemap cannot be read.
#[cfg(target_os = "linux")]
fn unwritten_pages(pagemap: &std::fs::File, m: &FileMapping) -> Vec<(usize, usize)> {
    use std::os::unix::fs::FileExt;
    let (start, end) = (m.start, m.end);
    // Not assumed 4 KiB: a Raspberry Pi 5's kernel uses 16 KiB pages, and a wrong size
    // would misread pagemap.
    let page = rustix::param::page_size();
    let mut entries = vec![0u8; (end - start) / page * 8];
    if pagemap
        .read_exact_at(&mut entries, (start / page * 8) as u64)
        .is_err()
    {
        return Vec::new();
    }
    // An entry that cannot be read counts as written (all flags set).
    let flags = entries
        .chunks_exact(8)
        .map(|e| e.try_into().map_or(u64::MAX, u64::from_ne_bytes));
    unwritten_runs(flags, start, page, m.anon_kib)
}

/// Runs of consecutive pages whose pagemap entry shows no anonymous content: neither a
/// resident page that is not the file's, nor a swapped-out one. None at all unless the
/// entries account for the `anon_kib` smaps counted: a pagemap that hides its flags (a
/// sandbox's /proc) would make written pages look droppable, and dropping the relocated
/// ones crashes the process.
fn unwritten_runs(
    entries: impl Iterator<Item = u64>,
    start: usize,
    page: usize,
    anon_kib: u64,
) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    let mut anonymous_pages: u64 = 0;
    for (i, e) in entries.enumerate() {
        let anonymous = e & PAGE_SWAPPED != 0 || (e & PAGE_PRESENT != 0 && e & PAGE_FILE == 0);
        if anonymous {
            anonymous_pages += 1;
            continue;
        }
        let (a, b) = (start + i * page, start + (i + 1) * page);
        match runs.last_mut() {
            Some(last) if last.1 == a => last.1 = b,
            _ => runs.push((a, b)),
        }
    }
    if anonymous_pages.saturating_mul(page as u64 / 1024) < anon_kib {
        return Vec::new();
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_file_mappings_are_found_and_marked_when_written() {
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
        let m = |start, end, anon_kib| FileMapping {
            start,
            end,
            anon_kib,
        };
        assert_eq!(
            read_only_file_mappings(smaps),
            vec![
                m(0x400000, 0x500000, 0),
                m(0x500000, 0x900000, 0),
                m(0x900000, 0xa00000, 64),
                m(0x7f0000000000, 0x7f0000200000, 0),
            ]
        );
    }

    #[test]
    fn unwritten_runs_skip_anonymous_and_swapped_pages() {
        let file = PAGE_PRESENT | PAGE_FILE;
        let anon = PAGE_PRESENT;
        let absent = 0;
        let swapped = PAGE_SWAPPED;
        // Pagemap entries, the anonymous KiB smaps counted (4 KiB pages), and the runs
        // (in pages) to drop.
        type Case<'a> = (&'a [u64], u64, &'a [(usize, usize)]);
        let table: [Case<'_>; 9] = [
            (&[], 0, &[]),
            (&[file, file, absent], 0, &[(0, 3)]),
            (&[anon, anon], 8, &[]),
            (&[file, anon, file, absent, anon], 8, &[(0, 1), (2, 4)]),
            (&[swapped, file, swapped], 4, &[(1, 2)]),
            (&[u64::MAX, absent], 4, &[(1, 2)]),
            // Fewer anonymous pages than smaps counted: pagemap hides its flags (or the
            // count is unreadable); nothing is dropped.
            (&[file, file, absent], 4, &[]),
            (&[file, anon, file], 8, &[]),
            (&[file, anon], u64::MAX, &[]),
        ];
        for (entries, anon_kib, want) in table {
            let want: Vec<(usize, usize)> = want
                .iter()
                .map(|(a, b)| (0x1000 + a * 0x1000, 0x1000 + b * 0x1000))
                .collect();
            assert_eq!(
                unwritten_runs(entries.iter().copied(), 0x1000, 0x1000, anon_kib),
                want,
                "{entries:x?}, {anon_kib} KiB anonymous"
            );
        }
    }

    /// A read-only private file mapping with a page written before it became read-only
    /// (what relocations leave): shedding drops its other pages and keeps the written one.
    #[cfg(target_os = "linux")]
    #[test]
    fn shedding_keeps_written_pages_of_read_only_mappings() {
        use std::io::Write;
        let page = rustix::param::page_size();
        let pages = 16;
        let mut file = tempfile::tempfile().expect("tempfile");
        file.write_all(&vec![7u8; page * pages]).expect("write");
        let rss = |addr: usize| -> (u64, u64) {
            let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
            let header = format!("{addr:x}-");
            let block: Vec<&str> = smaps
                .lines()
                .skip_while(|l| !l.starts_with(&header))
                .skip(1)
                .take_while(|l| {
                    l.split_whitespace()
                        .next()
                        .is_some_and(|field| field.ends_with(':'))
                })
                .collect();
            let field = |name: &str| {
                block
                    .iter()
                    .find_map(|l| l.strip_prefix(name))
                    .and_then(|v| v.split_whitespace().next()?.parse().ok())
                    .expect("field")
            };
            (field("Rss:"), field("Anonymous:"))
        };
        // SAFETY: a fresh private mapping of our own file; unmapped at the end; no other
        // reference to it.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                page * pages,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE,
                std::os::fd::AsRawFd::as_raw_fd(&file),
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            let base = p as *mut u8;
            // One page written (an anonymous copy), every other one read (the file's).
            *base.add(3 * page) = 42;
            for i in 0..pages {
                std::ptr::read_volatile(base.add(i * page));
            }
            assert_eq!(libc::mprotect(p, page * pages, libc::PROT_READ), 0);
            let before = rss(p as usize);
            drop_clean_file_pages();
            let after = rss(p as usize);
            assert_eq!(before, ((page * pages / 1024) as u64, (page / 1024) as u64));
            assert_eq!(
                after,
                ((page / 1024) as u64, (page / 1024) as u64),
                "only the written page stays"
            );
            assert_eq!(*base.add(3 * page), 42, "the written page lost its content");
            assert_eq!(*base.add(3 * page + 1), 7);
            assert_eq!(
                *base.add(5 * page),
                7,
                "a dropped page reads back from the file"
            );
            libc::munmap(p, page * pages);
        }
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
