//! Who wrote a lock or a temporary file, so that a later process can tell a crashed
//! writer's leftovers from a live writer's work in progress. A pid alone is not enough: a
//! restarted container gives its new daemon the same pid as the one that died, so the
//! process's start time (from /proc) is part of its identity.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub host: String,
    /// The kernel's boot id: a pid from another boot is not this boot's process.
    pub boot: String,
    pub pid: u32,
    /// Start time of the process, in clock ticks since boot (/proc/PID/stat field 22).
    pub start: u64,
}

impl Owner {
    pub fn current() -> &'static Owner {
        static CURRENT: OnceLock<Owner> = OnceLock::new();
        CURRENT.get_or_init(|| {
            let pid = std::process::id();
            Owner {
                host: read_trimmed("/proc/sys/kernel/hostname"),
                boot: read_trimmed("/proc/sys/kernel/random/boot_id"),
                pid,
                start: process_start(pid).unwrap_or(0),
            }
        })
    }

    /// `Some(true)`: that process is running; `Some(false)`: it is gone; `None`: it ran on
    /// another host or boot, so this host cannot tell.
    pub fn is_alive(&self) -> Option<bool> {
        let me = Owner::current();
        if self.host != me.host || self.boot != me.boot || self.boot.is_empty() {
            return None;
        }
        Some(process_start(self.pid).is_some_and(|s| s == self.start))
    }

    /// A short token for temporary file names: `<pid>-<start>`.
    pub fn token(&self) -> String {
        format!("{}-{}", self.pid, self.start)
    }
}

/// Whether the process named by a temporary file's `<pid>-<start>` token is running (on
/// this host: temporary files live on a local volume).
pub fn token_alive(token: &str) -> bool {
    let mut parts = token.split('-');
    let (Some(pid), Some(start)) = (parts.next(), parts.next()) else {
        return false;
    };
    match (pid.parse::<u32>(), start.parse::<u64>()) {
        (Ok(pid), Ok(start)) => process_start(pid).is_some_and(|s| s == start),
        _ => false,
    }
}

/// Name prefixes of the private files that hold a database password while a tool runs
/// (a MariaDB option file, a MongoDB tools config). Each is followed by the writer's
/// [`Owner::token`] and a '-', so a later start can tell a killed run's file from a live one's.
pub const SECRET_FILE_PREFIXES: &[&str] = &["stowage-my-", "stowage-mongo-"];

/// A file of a writer that predates the token in the name: removed once this old (the
/// tools read their password file when they start).
const LEGACY_SECRET_FILE_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Remove password files that killed runs left in `dir` (normally the temporary
/// directory): those whose writer is gone, and nameless legacy ones older than an hour.
/// Only regular files: a link by that name is left alone. Returns the paths removed.
pub fn remove_stale_secret_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return removed;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = SECRET_FILE_PREFIXES
            .iter()
            .find_map(|p| name.strip_prefix(p))
        else {
            continue;
        };
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.file_type().is_file() {
            continue;
        }
        let mut parts = rest.splitn(3, '-');
        let stale = match (parts.next(), parts.next(), parts.next()) {
            (Some(pid), Some(start), Some(_))
                if pid.parse::<u32>().is_ok() && start.parse::<u64>().is_ok() =>
            {
                !token_alive(&format!("{pid}-{start}"))
            }
            _ => meta
                .modified()
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age > LEGACY_SECRET_FILE_AGE),
        };
        if stale && std::fs::remove_file(&path).is_ok() {
            removed.push(path);
        }
    }
    removed
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Field 22 of /proc/PID/stat. The command name (field 2) is in parentheses and may
/// contain spaces and parentheses itself, so fields are counted after the last ')'.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start(&stat)
}

fn parse_start(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After ')': field 3 (state) is the first; starttime is field 22.
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_field_22_even_with_odd_names() {
        let stat = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 200";
        assert_eq!(parse_start(stat), Some(987654));
        assert_eq!(parse_start("garbage"), None);
    }

    #[test]
    fn stale_password_files_go_live_and_foreign_ones_stay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let me = Owner::current().token();
        let write = |name: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, "[client]\npassword=\"x\"\n").expect("write");
            p
        };
        let dead = write("stowage-my-4000000000-1-Ab12Cd.cnf");
        let dead_mongo = write("stowage-mongo-4000000000-1-Ab12Cd.yaml");
        let live = write(&format!("stowage-my-{me}-Zz99Yy.cnf"));
        let legacy_old = write("stowage-my-Qw3rty.cnf");
        std::fs::File::options()
            .write(true)
            .open(&legacy_old)
            .and_then(|f| {
                f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(7200))
            })
            .expect("age");
        let legacy_new = write("stowage-my-Zx9876.cnf");
        let other = write("other-4000000000-1-x.cnf");
        let link = dir.path().join("stowage-my-4000000000-1-link.cnf");
        std::os::unix::fs::symlink(&other, &link).expect("symlink");
        let mut removed = remove_stale_secret_files(dir.path());
        removed.sort();
        let mut want = vec![dead.clone(), dead_mongo.clone(), legacy_old.clone()];
        want.sort();
        assert_eq!(removed, want);
        for kept in [&live, &legacy_new, &other, &link] {
            assert!(std::fs::symlink_metadata(kept).is_ok(), "{kept:?} kept");
        }
    }

    #[test]
    fn this_process_is_alive_and_a_dead_one_is_not() {
        let me = Owner::current().clone();
        assert!(me.start > 0);
        assert_eq!(me.is_alive(), Some(true));
        assert!(token_alive(&me.token()));
        let restarted = Owner {
            start: me.start + 1,
            ..me.clone()
        };
        assert_eq!(restarted.is_alive(), Some(false), "same pid, other start");
        let elsewhere = Owner {
            host: format!("{}-other", me.host),
            ..me.clone()
        };
        assert_eq!(elsewhere.is_alive(), None);
        assert!(!token_alive("4000000000-1"));
        assert!(!token_alive("nonsense"));
    }
}
