//! Waiting for a directory to change, by inotify: the WAL spool (the receiver writing), the
//! daemon's inbox of records from commands run by hand. Something that waits on this instead
//! of a timer does not wake while nothing happens (bench/idle.rs, bench/pitr.sh: 0 wakeups a
//! minute idle). Events are drained, not decoded: any change means "look again".

use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::path::Path;

pub use rustix::fs::inotify::WatchFlags;
use rustix::fs::inotify::{self, CreateFlags};
use tokio::io::unix::AsyncFd;

pub struct DirWatch {
    fd: AsyncFd<OwnedFd>,
}

impl DirWatch {
    /// Watch `dir` for the events in `what`. `None` when inotify cannot be had (no more
    /// watches, another kernel): the caller then looks on a timer.
    pub fn new(dir: &Path, what: WatchFlags) -> Option<DirWatch> {
        let fd = inotify::init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC).ok()?;
        inotify::add_watch(&fd, dir, what).ok()?;
        // SAFETY: an OwnedFd is a valid open descriptor that stays the same until it is
        // dropped, which the AsyncFd owning it does last.
        let fd = unsafe { AsyncFd::register(fd) }.ok()?;
        Some(DirWatch { fd })
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
    use super::{DirWatch, WatchFlags};
    use std::time::Duration;

    #[tokio::test]
    async fn a_write_is_a_change_and_quiet_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut changes =
            DirWatch::new(dir.path(), WatchFlags::CREATE | WatchFlags::MODIFY).expect("inotify");
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
