//! What the receiver's spool says about where `pg_receivewal` resumes, and the files set
//! aside when that point is no longer on the server's history (a restore or promotion
//! started a new timeline) or no longer on the server at all (the slot was given up).
//!
//! `pg_receivewal` resumes from the newest segment in its directory, on that segment's
//! timeline: a timeline-1 partial segment past the point where the server's timeline 2
//! branched off is "not in this server's history" and would fail every start. Files are
//! moved, never deleted: a sibling folder the shipper does not read.

use std::path::{Path, PathBuf};

use super::wal::{HistoryEntry, Lsn, SegmentSize, WalFile, classify, segment_name, segno_of};

/// A segment in the spool, whole or partial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SpoolFile {
    pub timeline: u32,
    pub segno: u64,
    pub name: String,
}

/// The segments in `spool` (whole and partial), in no particular order.
pub(super) fn segments(spool: &Path) -> std::io::Result<Vec<SpoolFile>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(spool)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        match classify(&name, SegmentSize::DEFAULT) {
            WalFile::Segment { timeline, segno } | WalFile::Partial { timeline, segno } => {
                out.push(SpoolFile {
                    timeline,
                    segno,
                    name,
                })
            }
            _ => {}
        }
    }
    Ok(out)
}

/// What to do before streaming from a server on another timeline than some spool files.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct TimelinePlan {
    /// Files no longer on the server's history: past their timeline's fork point, or on a
    /// timeline the server never had.
    pub aside: Vec<String>,
    /// Where the abandoned timeline ended (the fork point), when it is one of the server's.
    pub fork: Option<(u32, Lsn)>,
    /// An empty partial segment to create so `pg_receivewal` starts at the fork's segment on
    /// the timeline that follows it (from its start: the server's file of that segment holds
    /// the parent's WAL up to the fork too), rather than at the server's current position,
    /// which would leave the WAL between them unarchived.
    pub seed: Option<String>,
}

/// Which of `files` the server, on timeline `server` with `history` (its history file's
/// entries), can no longer continue.
pub(super) fn plan_timeline(
    files: &[SpoolFile],
    server: u32,
    history: &[HistoryEntry],
) -> TimelinePlan {
    let seg = SegmentSize::DEFAULT;
    // Each ancestor timeline: where it ends on the server's history, and its successor.
    let ancestor = |t: u32| -> Option<(Lsn, u32)> {
        let i = history.iter().position(|e| e.parent == t)?;
        let child = history.get(i + 1).map_or(server, |e| e.parent);
        Some((history[i].switch, child))
    };
    let mut plan = TimelinePlan::default();
    let mut kept = 0usize;
    let mut newest_aside: Option<&SpoolFile> = None;
    for f in files {
        let abandoned = if f.timeline == server {
            false
        } else {
            match ancestor(f.timeline) {
                Some((end, _)) => f.segno >= segno_of(end, seg),
                None => true,
            }
        };
        if abandoned {
            plan.aside.push(f.name.clone());
            if newest_aside.is_none_or(|n| (f.segno, f.timeline) > (n.segno, n.timeline)) {
                newest_aside = Some(f);
            }
        } else {
            kept += 1;
        }
    }
    plan.aside.sort();
    if let Some(n) = newest_aside
        && let Some((end, child)) = ancestor(n.timeline)
    {
        plan.fork = Some((n.timeline, end));
        if kept == 0 {
            plan.seed = Some(format!(
                "{}.partial",
                segment_name(child, segno_of(end, seg), seg)
            ));
        }
    }
    plan
}

/// Where files of `spool` are set aside: beside the job's spools, never read by the shipper.
pub(super) fn aside_dir(spool: &Path) -> PathBuf {
    let source = spool.file_name().unwrap_or_default();
    let parent = spool.parent().unwrap_or(spool);
    parent.join(".set-aside").join(source)
}

/// Move `names` out of `spool` into [`aside_dir`] (a name already there gets a suffix, so
/// nothing set aside earlier is overwritten). The folder they went to.
pub(super) fn set_aside(spool: &Path, names: &[String]) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = aside_dir(spool);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    for name in names {
        let mut to = dir.join(name);
        let mut n = 1;
        while to.symlink_metadata().is_ok() {
            to = dir.join(format!("{name}.{n}"));
            n += 1;
        }
        std::fs::rename(spool.join(name), &to)?;
    }
    Ok(dir)
}

/// Create the empty partial segment `name` (see [`TimelinePlan::seed`]); `pg_receivewal`
/// takes an empty file as one it just created.
pub(super) fn seed(spool: &Path, name: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(spool.join(name))
        .map(drop)
}

/// Put the server's history file into the spool when it is not there, so it is shipped
/// even if streaming on the new timeline fails: recovery needs it to follow the switch.
/// Written under a name the shipper ignores, then renamed.
pub(super) fn write_history(spool: &Path, name: &str, content: &str) -> std::io::Result<bool> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = spool.join(name);
    if path.symlink_metadata().is_ok() {
        return Ok(false);
    }
    let tmp = spool.join(format!("{name}.stowage-tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(content.as_bytes())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, &path)?;
    Ok(true)
}

/// The spool's newest position: the end of its newest whole segment, or the start of its
/// newest partial (`pg_receivewal` rewrites a partial from its start).
pub(super) fn resume_point(files: &[SpoolFile]) -> Option<Lsn> {
    let seg = SegmentSize::DEFAULT.bytes();
    files
        .iter()
        .map(|f| {
            let whole = !f.name.ends_with(".partial");
            Lsn((f.segno + u64::from(whole)) * seg)
        })
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str) -> SpoolFile {
        match classify(name, SegmentSize::DEFAULT) {
            WalFile::Segment { timeline, segno } | WalFile::Partial { timeline, segno } => {
                SpoolFile {
                    timeline,
                    segno,
                    name: name.to_string(),
                }
            }
            other => panic!("{name}: {other:?}"),
        }
    }

    fn history(text: &str) -> Vec<HistoryEntry> {
        super::super::wal::parse_history(text).expect("history")
    }

    #[test]
    fn a_partial_past_the_fork_is_set_aside_and_the_new_timeline_seeded() {
        // Timeline 2 branched off 1 at 0/5000100: segment 5 is the first of timeline 2.
        let h = history("1\t0/5000100\tbefore 2026-12-06 03:00:00+00\n");
        let files = [file("000000010000000000000007.partial")];
        let p = plan_timeline(&files, 2, &h);
        assert_eq!(p.aside, ["000000010000000000000007.partial"]);
        assert_eq!(p.fork, Some((1, Lsn(0x0500_0100))));
        assert_eq!(
            p.seed.as_deref(),
            Some("000000020000000000000005.partial")
        );
        // The fork's own segment is abandoned too, whole or partial.
        let files = [
            file("000000010000000000000004"),
            file("000000010000000000000005"),
            file("000000010000000000000006.partial"),
        ];
        let p = plan_timeline(&files, 2, &h);
        assert_eq!(
            p.aside,
            ["000000010000000000000005", "000000010000000000000006.partial"]
        );
        // Segment 4 stays: pg_receivewal goes on from there and follows the switch itself.
        assert_eq!(p.seed, None);
    }

    #[test]
    fn files_before_the_fork_or_on_the_servers_timeline_stay() {
        let h = history("1\t0/5000100\tno recovery target specified\n");
        let files = [
            file("000000010000000000000003.partial"),
            file("000000020000000000000006.partial"),
        ];
        assert_eq!(plan_timeline(&files, 2, &h), TimelinePlan::default());
        assert_eq!(plan_timeline(&[], 2, &h), TimelinePlan::default());
    }

    #[test]
    fn a_timeline_the_server_never_had_is_set_aside() {
        // The server went 1 -> 3; the spool has timeline 2 (another branch of 1).
        let h = history("1\t0/4000000\tno recovery target specified\n");
        let files = [file("000000020000000000000006.partial")];
        let p = plan_timeline(&files, 3, &h);
        assert_eq!(p.aside, ["000000020000000000000006.partial"]);
        assert_eq!(p.seed, None);
        assert_eq!(p.fork, None);
        // Two switches: the newest abandoned file is on 2, which ended at 0/9000000.
        let h = history("1\t0/4000000\ta\n2\t0/9000000\tb\n");
        let files = [
            file("000000010000000000000005"),
            file("00000002000000000000000A.partial"),
        ];
        let p = plan_timeline(&files, 3, &h);
        assert_eq!(p.aside.len(), 2);
        assert_eq!(
            p.seed.as_deref(),
            Some("000000030000000000000009.partial")
        );
    }

    #[test]
    fn set_aside_moves_without_overwriting() {
        let root = tempfile::tempdir().expect("tempdir");
        let spool = root.path().join("job").join("db");
        std::fs::create_dir_all(&spool).expect("mkdir");
        let name = "000000010000000000000007.partial".to_string();
        for round in 0..2 {
            std::fs::write(spool.join(&name), format!("{round}")).expect("write");
            let dir = set_aside(&spool, std::slice::from_ref(&name)).expect("set aside");
            assert_eq!(dir, root.path().join("job").join(".set-aside").join("db"));
            assert!(!spool.join(&name).exists());
        }
        let dir = aside_dir(&spool);
        assert_eq!(std::fs::read_to_string(dir.join(&name)).expect("first"), "0");
        assert_eq!(
            std::fs::read_to_string(dir.join(format!("{name}.1"))).expect("second"),
            "1"
        );
        seed(&spool, "000000020000000000000005.partial").expect("seed");
        assert!(seed(&spool, "000000020000000000000005.partial").is_err());
        assert!(write_history(&spool, "00000002.history", "1\t0/5000100\tx\n").expect("w"));
        assert!(!write_history(&spool, "00000002.history", "other").expect("w"));
        assert_eq!(
            std::fs::read_to_string(spool.join("00000002.history")).expect("read"),
            "1\t0/5000100\tx\n"
        );
        let files = segments(&spool).expect("list");
        assert_eq!(files.len(), 1);
        assert_eq!(resume_point(&files), Some(Lsn(0x0500_0000)));
    }
}
