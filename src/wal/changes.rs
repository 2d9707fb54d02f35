//! Whether anything changed in the spool since the shipper last looked: the receiver
//! writing the segment under way, completing one, writing a history file. An idle server
//! writes nothing, and the shipper then sleeps on this instead of a timer: the daemon does
//! not wake until WAL flows (bench/pitr.sh, "idle with a stream open").

use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::inotify::{self, CreateFlags, WatchFlags};
use tokio::io::unix::AsyncFd;

pub struct Changes {
    fd: AsyncFd<OwnedFd>,
}

impl Changes {
    /// Watch `spool`. `None` when inotify cannot be had (no more watches, another kernel):
    /// the shipper then looks every `wal_flush`, as it would anyway while WAL flows.
    pub fn watch(spool: &Path) -> Option<Changes> {
        let fd = inotify::init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC).ok()?;
        // What a writer does; not the shipper's own reads and deletes.
        let what = WatchFlags::CREATE
            | WatchFlags::MODIFY
            | WatchFlags::CLOSE_WRITE
            | WatchFlags::MOVED_TO
            | WatchFlags::ATTRIB;
        inotify::add_watch(&fd, spool, what).ok()?;
        // SAFETY: an OwnedFd is a valid open descriptor that stays the same until it is
        // dropped, which the AsyncFd owning it does last.
        let fd = unsafe { AsyncFd::register(fd) }.ok()?;
        Some(Changes { fd })
    }

    /// Wait until something changed since the last call. Events are drained, not decoded:
    /// any change means "look again".
    pub async fn changed(&mut self) -> std::io::Result<()> {
        let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
        loop {
            let mut ready = self.fd.readable().await?;
            let mut any = false;
            loop {
                match rustix::io::read(self.fd.get_ref(), &mut buf) {
                    Ok((read, _)) if !read.is_empty() => any = true,
                    Ok(_) => break,
                    Err(rustix::io::Errno::AGAIN) => {
                        ready.clear_ready();
                        break;
                    }
                    Err(rustix::io::Errno::INTR) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if any {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Changes;
    use std::time::Duration;

    #[tokio::test]
    async fn a_write_in_the_spool_is_a_change_and_quiet_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut changes = Changes::watch(dir.path()).expect("inotify");
        let quiet = tokio::time::timeout(Duration::from_millis(200), changes.changed()).await;
        assert!(quiet.is_err(), "nothing changed yet");
        std::fs::write(dir.path().join("000000010000000000000001.partial"), b"wal").expect("write");
        tokio::time::timeout(Duration::from_secs(5), changes.changed())
            .await
            .expect("a change is seen")
            .expect("read");
        // Drained: the same change is not seen twice; a read is no change.
        let _ = std::fs::read(dir.path().join("000000010000000000000001.partial"));
        let again = tokio::time::timeout(Duration::from_millis(200), changes.changed()).await;
        assert!(again.is_err(), "the change was drained");
    }
}
