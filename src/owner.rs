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
