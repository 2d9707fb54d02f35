//! One daemon per config and per state directory. Two daemons on one config would run
//! every backup twice; two on one state directory overwrite each other's pid and state
//! files, and the one that stops first deletes them while the other runs on, unseen by
//! `stowage health`. Both are refused at start with an `flock`: the kernel drops it when
//! the holder dies however it dies (SIGKILL, OOM), so a crash never leaves a stale claim
//! to clean up by hand, unlike a pid file.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The lock file's name in the state directory.
pub const LOCK_FILE: &str = "stowage-daemon.lock";

/// Held for the daemon's lifetime; dropping it (or the process dying) releases both locks.
#[derive(Debug)]
pub struct Claim {
    _state: File,
    _config: Option<File>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error(
        "another stowage daemon ({holder}) already uses the state directory {}: stop it first, or give this daemon a state directory of its own with STOWAGE_STATE_FILE=/other/dir/stowage-state.json",
        dir.display()
    )]
    StateBusy { dir: PathBuf, holder: Holder },
    #[error(
        "another stowage daemon ({holder}) already runs the config {}: one daemon per config, or every backup would run twice; stop it first",
        path.display()
    )]
    ConfigBusy { path: PathBuf, holder: Holder },
    #[error(
        "cannot open the daemon lock file {}: {source}; the state directory must be writable (set STOWAGE_STATE_FILE to a file in a writable directory)",
        path.display()
    )]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot lock {}: {source}", path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Who holds a lock, as far as can be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder(pub Option<u32>);

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(pid) => write!(f, "pid {pid}"),
            None => f.write_str("pid unknown"),
        }
    }
}

/// The directory of the state file (`$STOWAGE_STATE_FILE`, default `/tmp`): where the
/// daemon's pid and lock files live too.
pub fn state_dir() -> PathBuf {
    let file = crate::status::state_file();
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Claim the state directory, then the config file. Fails without waiting when another
/// process holds either.
pub fn claim(config: &Path) -> Result<Claim, ClaimError> {
    let dir = state_dir();
    let path = dir.join(LOCK_FILE);
    // Not truncated on open: until the lock is ours, the pid in it is the holder's.
    let mut state = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|source| ClaimError::Open {
            path: path.clone(),
            source,
        })?;
    if !try_lock(&state).map_err(|source| ClaimError::Lock {
        path: path.clone(),
        source,
    })? {
        let holder = holder_of(&state).or_else(|| {
            std::fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.trim().parse().ok())
        });
        return Err(ClaimError::StateBusy {
            dir,
            holder: Holder(holder),
        });
    }
    // The pid in the file is only for a person looking; the lock is what counts.
    let _ = state
        .set_len(0)
        .and_then(|()| write!(state, "{}", std::process::id()));
    // The config is only read: a read-only mount still takes an flock. A config that cannot
    // be opened (it was just loaded, so only a race) leaves the state lock as the guard.
    let config_lock = match File::open(config) {
        Ok(f) => {
            if !try_lock(&f).map_err(|source| ClaimError::Lock {
                path: config.to_path_buf(),
                source,
            })? {
                return Err(ClaimError::ConfigBusy {
                    path: config.to_path_buf(),
                    holder: Holder(holder_of(&f)),
                });
            }
            Some(f)
        }
        Err(_) => None,
    };
    Ok(Claim {
        _state: state,
        _config: config_lock,
    })
}

/// The pid holding the daemon lock of the state directory, for `stowage health`, which
/// then does not depend on a pid file alone. Read from /proc/locks, never by trying the
/// lock: a probe that held it for an instant could make a daemon starting at that moment
/// refuse to start.
pub fn holder() -> Option<u32> {
    let f = File::open(state_dir().join(LOCK_FILE)).ok()?;
    holder_of(&f)
}

/// Ok(false): someone else holds it. A file system without flock (some network mounts)
/// is an error, not a pass: the guarantee would silently be gone.
#[cfg(unix)]
fn try_lock(f: &File) -> std::io::Result<bool> {
    use rustix::fs::{FlockOperation, flock};
    match flock(f, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

#[cfg(not(unix))]
fn try_lock(_: &File) -> std::io::Result<bool> {
    Ok(true)
}

/// The pid holding an flock on `f`, from /proc/locks (lines like
/// `1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF`, device in hex, inode in decimal).
#[cfg(target_os = "linux")]
fn holder_of(f: &File) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let m = f.metadata().ok()?;
    let dev = rustix::fs::Dev::from(m.dev());
    let want = format!(
        "{:02x}:{:02x}:{}",
        rustix::fs::major(dev),
        rustix::fs::minor(dev),
        m.ino()
    );
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // A blocked waiter's line starts with "1: ->"; only the holder counts.
        if fields.get(1) == Some(&"FLOCK") && fields.get(5) == Some(&want.as_str()) {
            fields.get(4)?.parse().ok()
        } else {
            None
        }
    })
}

#[cfg(not(target_os = "linux"))]
fn holder_of(_: &File) -> Option<u32> {
    None
}
