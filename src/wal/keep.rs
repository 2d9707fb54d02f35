//! WAL retention: once backup retention ran on a destination, the WAL no retained base
//! backup can replay goes too. A segment is only deleted when it is strictly older than
//! the first WAL file of every retained base backup of its source (on that timeline or an
//! older one); whenever stowage is unsure (a manifest it cannot read, no base backup with a
//! WAL position) it keeps everything: WAL deleted wrongly makes backups unrecoverable,
//! WAL kept wrongly only costs space until the next run.

use chrono::{DateTime, TimeDelta, Utc};

use crate::codec::Compression;
use crate::config::Job;
use crate::engine::WalPosition;
use crate::repo::manifest::ManifestError;
use crate::repo::packing::Expect;
use crate::repo::wal::{self, WalNames, is_wal_name};
use crate::repo::{Form, Repository};
use crate::storage::{ObjectMeta, Storage, StorageError};

/// How long a partial state the pointer does not name is left alone: the shipper writes
/// the object before the pointer, so a young one may be about to be named.
pub const STALE_PARTIAL: TimeDelta = TimeDelta::hours(1);

/// Keys deleted per storage call.
const BATCH: usize = 500;

/// What one retained backup says about a source, for [`cuts`].
#[derive(Debug, Clone, Copy)]
pub enum Retained<'a> {
    /// Its manifest could not be read: nothing is known of what it needs.
    Unreadable,
    Backup {
        /// The source's WAL position in it (`None`: the source is not in it, or was not
        /// backed up physically then).
        wal: Option<&'a WalPosition>,
        /// Its manifest passes the job's `auth_key_file` (or the job has none).
        authentic: bool,
    },
}

/// The first WAL file of each retained base backup of a source: what WAL retention keeps
/// from. `None` means keep everything: a manifest was unreadable, a WAL position names no
/// file, or no authentic retained backup has one (a forged manifest alone must not decide
/// what goes; added to authentic ones it can only keep more).
pub fn cuts(retained: &[Retained]) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut authentic_cut = false;
    for r in retained {
        match r {
            Retained::Unreadable => return None,
            Retained::Backup { wal: None, .. } => {}
            Retained::Backup {
                wal: Some(w),
                authentic,
            } => {
                out.push(w.first_file()?);
                authentic_cut |= *authentic;
            }
        }
    }
    authentic_cut.then_some(out)
}

/// What the partial segment's pointer says, for [`plan`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pointer<'a> {
    /// There is no `partial.json`.
    Absent,
    /// It names this object.
    At(&'a str),
    /// It could not be read: no partial state is deleted.
    Unreadable,
}

/// One WAL file to delete: its record first, then its objects.
#[derive(Debug, Clone, PartialEq)]
pub struct Doomed {
    pub name: String,
    pub record: Option<String>,
    pub objects: Vec<String>,
}

/// What WAL retention deletes on one destination for one source.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Oldest first.
    pub files: Vec<Doomed>,
    /// Stale partial states.
    pub partials: Vec<String>,
    /// Files old enough to go but held by Object Lock or a minimum storage duration.
    pub held: usize,
}

/// (timeline, segment number) of a segment name (24 hex digits).
fn segment(name: &str) -> Option<(u32, u64)> {
    if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let tl = u32::from_str_radix(&name[..8], 16).ok()?;
    let log = u64::from_str_radix(&name[8..16], 16).ok()?;
    let seg = u64::from_str_radix(&name[16..], 16).ok()?;
    Some((tl, (log << 32) | seg))
}

/// Whether WAL file `name` is older than every cut: a segment (never a history file) on
/// the cut's timeline or an older one, before the cut's segment.
fn doomed(name: &str, cuts: &[(u32, u64)]) -> bool {
    let Some((tl, no)) = segment(name) else {
        return false;
    };
    !cuts.is_empty() && cuts.iter().all(|&(ctl, cno)| tl <= ctl && no < cno)
}

/// Every suffix a stored WAL object can have.
fn suffixes() -> Vec<String> {
    let mut out = Vec::new();
    for compression in [Compression::Zstd, Compression::Gzip, Compression::None] {
        for encrypted in [false, true] {
            out.push(
                Form {
                    compression,
                    encrypted,
                }
                .suffix(),
            );
        }
    }
    out
}

/// Whether `o` may be deleted now: old enough for the destination's Object Lock or
/// minimum storage duration (`min_age`) and for `at_least`.
fn old_enough(o: &ObjectMeta, now: DateTime<Utc>, min_age: Option<TimeDelta>) -> bool {
    match min_age {
        None => true,
        // A store that does not say when it was written: assume it was just now.
        Some(min) => o.modified.is_some_and(|m| now - m >= min),
    }
}

/// The deletions for `names`' source given everything listed under its prefix (`objects`),
/// the first WAL files of the retained base backups (`cuts`, from [`cuts`]: `None` keeps
/// every file) and the partial pointer.
pub fn plan(
    names: WalNames,
    objects: &[ObjectMeta],
    cuts: Option<&[String]>,
    pointer: Pointer,
    now: DateTime<Utc>,
    min_age: Option<TimeDelta>,
) -> Plan {
    let prefix = names.prefix();
    let index = format!("{prefix}index/");
    let partial_prefix = names.partial_prefix();
    let suffixes = suffixes();
    // A cut that names no segment: unsure, keep all.
    let cuts: Vec<(u32, u64)> = cuts
        .and_then(|c| c.iter().map(|n| segment(n)).collect::<Option<Vec<_>>>())
        .unwrap_or_default();
    let mut files: std::collections::BTreeMap<String, (Doomed, bool)> = Default::default();
    let mut out = Plan::default();
    for o in objects {
        let Some(rest) = o.key.strip_prefix(&prefix) else {
            continue;
        };
        if o.key.starts_with(&partial_prefix) {
            let stale = match pointer {
                Pointer::Unreadable => false,
                Pointer::At(k) => k != o.key,
                Pointer::Absent => true,
            } && o.modified.is_some_and(|m| now - m >= STALE_PARTIAL)
                && old_enough(o, now, min_age);
            if stale {
                out.partials.push(o.key.clone());
            }
            continue;
        }
        let (name, is_record) = match rest.strip_prefix("index/") {
            Some(r) => match r.strip_suffix(".json") {
                Some(n) if is_wal_name(n) && o.key.starts_with(&index) => (n, true),
                _ => continue,
            },
            None => {
                // `<24 hex><suffix>`: a segment stored in one of the forms stowage writes.
                let Some(n) = rest.get(..24) else { continue };
                if segment(n).is_none() || !suffixes.iter().any(|s| rest[24..] == **s) {
                    continue;
                }
                (n, false)
            }
        };
        if !doomed(name, &cuts) {
            continue;
        }
        let (d, ok) = files.entry(name.to_string()).or_insert_with(|| {
            (
                Doomed {
                    name: name.to_string(),
                    record: None,
                    objects: Vec::new(),
                },
                true,
            )
        });
        *ok &= old_enough(o, now, min_age);
        if is_record {
            d.record = Some(o.key.clone());
        } else {
            d.objects.push(o.key.clone());
        }
    }
    for (_, (mut d, ok)) in files {
        if ok {
            d.objects.sort();
            out.files.push(d);
        } else {
            out.held += 1;
        }
    }
    out.partials.sort();
    out
}

/// What WAL retention did for one source on one destination.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Kept {
    pub source: String,
    /// The WAL files deleted, oldest first.
    pub deleted: Vec<String>,
    pub partials: usize,
    pub held: usize,
    /// Why nothing was weighed (every file kept), when so.
    pub kept_all: Option<String>,
}

/// WAL retention for every continuously archived source of `job` on one destination, after
/// backup retention ran there. `min_age`: the destination's Object Lock or minimum storage
/// duration, whichever is longer (nothing younger is deleted).
pub async fn apply(
    storage: &dyn Storage,
    job: &Job,
    min_age: Option<TimeDelta>,
) -> Result<Vec<Kept>, StorageError> {
    let sources = job.wal_sources();
    if sources.is_empty() {
        return Ok(Vec::new());
    }
    let repo = Repository::new(storage, &job.name);
    let listing = repo.backups().await?;
    let mut manifests = Vec::new();
    for p in listing.published(&job.name) {
        match repo.manifest(&p.id).await {
            Ok(m) => {
                let authentic = m.authenticity(job.auth_key.as_deref()).accepted();
                manifests.push(Some((m, authentic)));
            }
            // Deleted since the listing (by retention): it retains nothing.
            Err(ManifestError::Storage(StorageError::NotFound(_))) => {}
            Err(ManifestError::Storage(e)) => return Err(e),
            Err(_) => manifests.push(None),
        }
    }
    let expect = Expect::of(job, false);
    let mut out = Vec::new();
    for source in sources {
        let retained: Vec<Retained> = manifests
            .iter()
            .map(|m| match m {
                None => Retained::Unreadable,
                Some((m, authentic)) => Retained::Backup {
                    wal: m
                        .sources
                        .iter()
                        .find(|s| s.name == source)
                        .and_then(|s| s.wal.as_ref()),
                    authentic: *authentic,
                },
            })
            .collect();
        let cuts = cuts(&retained);
        let names = WalNames::new(&job.name, source);
        let objects = storage.list(&names.prefix()).await?;
        // A pointer that fails its checks is not trusted to say which state is current.
        let pointed = match wal::read_pointer(storage, &job.name, source, &expect).await {
            Ok(v) => Some(v),
            Err(wal::WalError::Storage(e)) => return Err(e),
            Err(_) => None,
        };
        let pointer = match &pointed {
            Some(Some(v)) => Pointer::At(&v.record.key),
            Some(None) => Pointer::Absent,
            None => Pointer::Unreadable,
        };
        let plan = plan(
            names,
            &objects,
            cuts.as_deref(),
            pointer,
            Utc::now(),
            min_age,
        );
        // Records first: a file half deleted is an object nobody points at (deleted by
        // the next run, as it is still older than the cut), never a record of nothing.
        let records: Vec<String> = plan.files.iter().filter_map(|d| d.record.clone()).collect();
        for chunk in records.chunks(BATCH) {
            storage.delete(chunk).await?;
        }
        let objects: Vec<String> = plan
            .files
            .iter()
            .flat_map(|d| d.objects.iter().cloned())
            .chain(plan.partials.iter().cloned())
            .collect();
        for chunk in objects.chunks(BATCH) {
            storage.delete(chunk).await?;
        }
        out.push(Kept {
            source: source.to_string(),
            deleted: plan.files.into_iter().map(|d| d.name).collect(),
            partials: plan.partials.len(),
            held: plan.held,
            kept_all: cuts.is_none().then(|| {
                if retained.iter().any(|r| matches!(r, Retained::Unreadable)) {
                    "a retained backup's manifest is unreadable".to_string()
                } else {
                    "no retained base backup has a WAL position for it".to_string()
                }
            }),
        });
    }
    Ok(out)
}

impl Kept {
    /// One line for the log: "db: deleted 3 WAL files (0000…01..0000…03), 1 stale partial".
    pub fn describe(&self) -> String {
        let mut s = match (&self.kept_all, self.deleted.as_slice()) {
            (Some(why), _) => format!("{}: kept all WAL ({why})", self.source),
            (None, []) => format!("{}: no WAL old enough to delete", self.source),
            (None, [one]) => format!("{}: deleted 1 WAL file ({one})", self.source),
            (None, [first, .., last]) => format!(
                "{}: deleted {} WAL files ({first}..{last})",
                self.source,
                self.deleted.len()
            ),
        };
        if self.partials > 0 {
            s.push_str(&format!(", {} stale partial state(s)", self.partials));
        }
        if self.held > 0 {
            s.push_str(&format!(
                ", {} kept for Object Lock or minimum storage duration",
                self.held
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T1_1: &str = "000000010000000000000001";
    const T1_2: &str = "000000010000000000000002";
    const T1_3: &str = "000000010000000000000003";
    const T1_X: &str = "0000000100000001000000FF";
    const T2_2: &str = "000000020000000000000002";
    const T2_4: &str = "000000020000000000000004";
    const T3_1: &str = "000000030000000000000001";

    fn names() -> WalNames<'static> {
        WalNames::new("app", "db")
    }

    fn meta(key: String, age: TimeDelta, now: DateTime<Utc>) -> ObjectMeta {
        ObjectMeta {
            key,
            size: 1,
            modified: Some(now - age),
        }
    }

    /// Objects and records of `files`, all a day old, plus the pointer.
    fn listing(files: &[&str], now: DateTime<Utc>) -> Vec<ObjectMeta> {
        let zst = Form::from(Compression::Zstd);
        let mut out = vec![meta(names().pointer(), TimeDelta::zero(), now)];
        for f in files {
            out.push(meta(names().object(f, zst), TimeDelta::days(1), now));
            out.push(meta(names().record(f), TimeDelta::days(1), now));
        }
        out
    }

    fn deleted(p: &Plan) -> Vec<&str> {
        p.files.iter().map(|d| d.name.as_str()).collect()
    }

    fn pos(timeline: u32, start: &str) -> WalPosition {
        WalPosition {
            timeline,
            start_lsn: start.into(),
            stop_lsn: start.into(),
            stop_time: Utc::now(),
        }
    }

    #[test]
    fn segments_before_the_cut_go_history_stays() {
        let now = Utc::now();
        let objs = listing(&[T1_1, T1_2, T1_3, "00000002.history", T1_X], now);
        let cuts = vec![T1_3.to_string()];
        let p = plan(names(), &objs, Some(&cuts), Pointer::Absent, now, None);
        assert_eq!(deleted(&p), [T1_1, T1_2]);
        let d = &p.files[0];
        assert_eq!(d.record.as_deref(), Some(names().record(T1_1).as_str()));
        assert_eq!(
            d.objects,
            [names().object(T1_1, Form::from(Compression::Zstd))]
        );
        assert!(p.partials.is_empty() && p.held == 0);
    }

    #[test]
    fn mixed_timelines() {
        let now = Utc::now();
        let objs = listing(&[T1_1, T1_2, T1_3, T2_2, T2_4, T3_1, T1_X], now);
        // The oldest retained backup starts on timeline 2 at segment 4: older timelines'
        // earlier segments go, later timelines' stay, as do older timelines' later ones.
        let cuts = vec![T2_4.to_string()];
        let p = plan(names(), &objs, Some(&cuts), Pointer::Absent, now, None);
        assert_eq!(deleted(&p), [T1_1, T1_2, T1_3, T2_2]);
        // Two retained backups: only what both can do without goes.
        let cuts = vec![T2_4.to_string(), T1_2.to_string()];
        let p = plan(names(), &objs, Some(&cuts), Pointer::Absent, now, None);
        assert_eq!(deleted(&p), [T1_1]);
    }

    #[test]
    fn unsure_keeps_everything() {
        let now = Utc::now();
        let objs = listing(&[T1_1, T1_2, T1_3], now);
        for cuts in [None, Some(vec![]), Some(vec!["nonsense".to_string()])] {
            let p = plan(names(), &objs, cuts.as_deref(), Pointer::Absent, now, None);
            assert!(p.files.is_empty(), "{cuts:?}");
        }
        let w = pos(1, "0/3000028");
        let authentic = Retained::Backup {
            wal: Some(&w),
            authentic: true,
        };
        assert_eq!(cuts(&[authentic]), Some(vec![T1_3.to_string()]));
        let none = Retained::Backup {
            wal: None,
            authentic: true,
        };
        // No WAL position anywhere, an unreadable manifest, a forged one alone: keep all.
        assert_eq!(cuts(&[none]), None);
        assert_eq!(cuts(&[]), None);
        assert_eq!(cuts(&[authentic, Retained::Unreadable]), None);
        let forged = Retained::Backup {
            wal: Some(&w),
            authentic: false,
        };
        assert_eq!(cuts(&[forged]), None);
        assert_eq!(cuts(&[none, authentic, forged]).map(|c| c.len()), Some(2));
        let bad = pos(1, "not an lsn");
        let bad = Retained::Backup {
            wal: Some(&bad),
            authentic: true,
        };
        assert_eq!(cuts(&[authentic, bad]), None);
    }

    #[test]
    fn partials() {
        let now = Utc::now();
        let p = |ms: i64| names().partial(T1_3, ms, Form::from(Compression::Zstd));
        let objs = vec![
            meta(p(1), TimeDelta::hours(3), now),
            meta(p(2), TimeDelta::hours(2), now),
            meta(p(3), TimeDelta::minutes(5), now),
            meta(names().pointer(), TimeDelta::zero(), now),
        ];
        let named = p(2);
        let plan_with =
            |ptr: Pointer| plan(names(), &objs, Some(&[T1_1.to_string()]), ptr, now, None);
        // The one named stays, a young one stays (it may be about to be named).
        assert_eq!(plan_with(Pointer::At(&named)).partials, [p(1)]);
        assert_eq!(plan_with(Pointer::Absent).partials, [p(1), p(2)]);
        assert!(plan_with(Pointer::Unreadable).partials.is_empty());
    }

    #[test]
    fn locks_hold_young_files_and_strays_are_ignored() {
        let now = Utc::now();
        let mut objs = listing(&[T1_1, T1_2], now);
        // T1_2's record is younger than the lock: the whole file stays.
        objs.push(meta(names().record(T1_2), TimeDelta::hours(1), now));
        objs.retain(|o| {
            !(o.key == names().record(T1_2) && o.modified != Some(now - TimeDelta::hours(1)))
        });
        objs.push(meta(
            format!("{}{T1_1}.zst.x", names().prefix()),
            TimeDelta::days(9),
            now,
        ));
        objs.push(meta(
            "app/wal/dbx/000000010000000000000001.zst".into(),
            TimeDelta::days(9),
            now,
        ));
        let cuts = vec![T1_3.to_string()];
        let p = plan(
            names(),
            &objs,
            Some(&cuts),
            Pointer::Absent,
            now,
            Some(TimeDelta::hours(12)),
        );
        assert_eq!(deleted(&p), [T1_1]);
        assert_eq!(p.files[0].objects.len(), 1);
        assert_eq!(p.held, 1);
        // An object alone (its record deleted by an earlier, interrupted run) goes too.
        let objs: Vec<ObjectMeta> = listing(&[T1_1], now)
            .into_iter()
            .filter(|o| !o.key.contains("/index/"))
            .collect();
        let p = plan(names(), &objs, Some(&cuts), Pointer::Absent, now, None);
        assert_eq!(p.files[0].record, None);
        assert_eq!(p.files[0].objects.len(), 1);
    }
}
