//! Whether the shipped WAL reaches from a base backup to the newest file without a hole:
//! recovery replays files in order and stops at the first one missing, so one lost
//! segment silently caps every point-in-time restore at that point.
//!
//! Names (16 MiB segments: `<8 hex timeline><8 hex log><8 hex seg>`, seg 00..FF) and the
//! timeline history files only: no segment is read, so a chain check costs one listing, a
//! record or two and the few small history files per destination.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use crate::repo::packing::Expect;
use crate::repo::wal::{self, WalError};
use crate::storage::Storage;

/// Segments per "log" with 16 MiB segments: the seg part runs 00000000..000000FF.
const SEGS_PER_LOG: u64 = 0x100;
/// Missing names listed at most (the rest are counted): a destination emptied by accident
/// must not yield millions of lines.
pub const NAMED: usize = 5;

/// What the chain from a base backup's first WAL file looks like.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Chain {
    /// The first missing segments, in replay order, at most [`NAMED`].
    pub missing: Vec<String>,
    /// How many are missing in all.
    pub missing_count: u64,
    /// The newest segment present (shipped whole or as the partial), if any from the first on.
    pub newest: Option<String>,
}

impl Chain {
    /// The missing names as messages give them: the first few, then how many in all.
    pub fn describe_missing(&self) -> String {
        let mut s = self.missing.join(", ");
        if self.missing_count > self.missing.len() as u64 {
            s.push_str(&format!(
                " and {} more",
                self.missing_count - self.missing.len() as u64
            ));
        }
        format!(
            "{s} missing ({} file{})",
            self.missing_count,
            if self.missing_count == 1 { "" } else { "s" }
        )
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "\"{0}\" is not the name of a WAL segment (24 hex digits, e.g. 000000010000000000000003); the base backup's WAL position is damaged"
)]
pub struct NotASegment(pub String);

/// A segment name as (timeline, segment number counted from 0/0).
pub fn parse(name: &str) -> Option<(u32, u64)> {
    if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let tli = u32::from_str_radix(&name[..8], 16).ok()?;
    let log = u64::from_str_radix(&name[8..16], 16).ok()?;
    let seg = u64::from_str_radix(&name[16..], 16).ok()?;
    // With 16 MiB segments the seg part never exceeds FF: anything else is another
    // segment size, which these names cannot be compared under.
    (seg < SEGS_PER_LOG).then_some((tli, log * SEGS_PER_LOG + seg))
}

/// The name of segment `segno` on `tli`.
pub fn name(tli: u32, segno: u64) -> String {
    format!(
        "{tli:08X}{:08X}{:08X}",
        segno / SEGS_PER_LOG,
        segno % SEGS_PER_LOG
    )
}

/// The segment after `name` on the same timeline (`…000000FF` is followed by the next log's
/// `…00000000`).
pub fn successor(name_: &str) -> Option<String> {
    let (tli, segno) = parse(name_)?;
    Some(name(tli, segno.checked_add(1)?))
}

/// The segment holding `lsn` (16 MiB segments).
fn segno_of(lsn: u64) -> u64 {
    lsn >> 24
}

/// The missing segments between `first` (a base backup's first WAL file) and the newest
/// segment shipped, from `shipped` (sorted names of whole files, history files among them)
/// and the partial segment's name. `switches` holds, per timeline, the LSN where it branched
/// off its parent (from its history file), when known: then the new timeline must start at
/// that segment and its parent reach up to it; otherwise each timeline is checked from its
/// first segment present.
pub fn check(
    shipped: &[String],
    partial: Option<&str>,
    first: &str,
    switches: &BTreeMap<u32, u64>,
) -> Result<Chain, NotASegment> {
    let (t0, s0) = parse(first).ok_or_else(|| NotASegment(first.to_string()))?;
    let mut present: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
    for n in shipped.iter().map(String::as_str).chain(partial) {
        if let Some((tli, segno)) = parse(n)
            && tli >= t0
            && segno >= s0
        {
            present.entry(tli).or_default().insert(segno);
        }
    }
    let mut timelines: Vec<u32> = present.keys().copied().filter(|&t| t > t0).collect();
    timelines.insert(0, t0);
    let mut chain = Chain::default();
    for (i, &tli) in timelines.iter().enumerate() {
        let here = present.get(&tli);
        let later = timelines.get(i + 1);
        let start = match switches.get(&tli) {
            Some(&lsn) if tli != t0 => segno_of(lsn).max(s0),
            _ if tli == t0 => s0,
            _ => match here.and_then(|h| h.first()) {
                Some(&s) => s,
                None => continue,
            },
        };
        let mut end = here.and_then(|h| h.last()).copied();
        if let Some(next) = later {
            // The parent must reach the segment before the switch; without a history
            // file, the backup's own first segment at least.
            let need = match switches.get(next) {
                Some(&lsn) => segno_of(lsn).checked_sub(1),
                // A switch at the backup's very first segment leaves it on the new
                // timeline only.
                None if tli == t0 && !present.values().any(|h| h.contains(&s0)) => Some(s0),
                None => None,
            };
            end = end.max(need.filter(|&n| n >= start));
        }
        let Some(end) = end else { continue };
        for segno in start..=end {
            if !here.is_some_and(|h| h.contains(&segno)) {
                chain.missing_count += 1;
                if chain.missing.len() < NAMED {
                    chain.missing.push(name(tli, segno));
                }
            }
        }
        if let Some(&last) = here.and_then(|h| h.last()) {
            chain.newest = Some(name(tli, last));
        }
    }
    Ok(chain)
}

/// What one destination holds of a source's WAL, read once and checked against each base
/// backup there.
#[derive(Debug, Clone, PartialEq)]
pub struct Shipped {
    /// Whole files shipped (those with a record), sorted.
    pub names: Vec<String>,
    /// The partial segment's name, when one was shipped.
    pub partial: Option<String>,
    /// When the newest WAL there was shipped (the partial's, when there is one): the latest
    /// time a recovery from these files can reach.
    pub newest_at: Option<DateTime<Utc>>,
    /// Where each later timeline branched off its parent, from the shipped history files
    /// that could be read (see [`check`]).
    pub switches: BTreeMap<u32, u64>,
}

impl Shipped {
    /// The chain from a base backup's first WAL file, across the timeline switches the
    /// shipped history files name (a timeline without one is checked from its first
    /// segment).
    pub fn chain_from(&self, first: &str) -> Result<Chain, NotASegment> {
        check(&self.names, self.partial.as_deref(), first, &self.switches)
    }
}

/// The switch points a history file of timeline `timeline` names: each timeline in it
/// (and `timeline` itself) by the LSN where it left its parent.
pub fn switches_in(timeline: u32, content: &str) -> Result<BTreeMap<u32, u64>, String> {
    let entries = crate::source::postgres::physical::wal::parse_history(content)?;
    let mut out = BTreeMap::new();
    for (i, e) in entries.iter().enumerate() {
        let child = entries.get(i + 1).map_or(timeline, |n| n.parent);
        out.insert(child, e.switch.0);
    }
    Ok(out)
}

/// A history file is a line per switch: more than this is no history file.
const MAX_HISTORY: u64 = 1 << 20;

/// The switch points in the history files among `names` on `storage`, each read and checked
/// as a fetch would; one that cannot be read (encrypted without `keys`, damaged) is left out
/// with a warning, and its timeline is then checked from its first segment.
async fn read_switches(
    storage: &dyn Storage,
    job: &str,
    source: &str,
    names: &[String],
    expect: &Expect,
    keys: Option<&std::sync::Arc<crate::crypt::Keys>>,
) -> BTreeMap<u32, u64> {
    let mut out = BTreeMap::new();
    for name in names {
        let Some(tli) = name
            .strip_suffix(".history")
            .filter(|t| t.len() == 8)
            .and_then(|t| u32::from_str_radix(t, 16).ok())
        else {
            continue;
        };
        match read_history(storage, job, source, name, expect, keys).await {
            Ok(Some(text)) => match switches_in(tli, &text) {
                Ok(s) => out.extend(s),
                Err(e) => tracing::warn!(job = %job, "WAL history file {name} of {source}: {e}"),
            },
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(job = %job, "WAL history file {name} of {source} cannot be read: {e}")
            }
        }
    }
    out
}

async fn read_history(
    storage: &dyn Storage,
    job: &str,
    source: &str,
    name: &str,
    expect: &Expect,
    keys: Option<&std::sync::Arc<crate::crypt::Keys>>,
) -> Result<Option<String>, Box<dyn std::error::Error + Send + Sync>> {
    use tokio::io::AsyncReadExt;
    let Some(v) = wal::read_record(storage, job, source, name, expect).await? else {
        return Ok(None);
    };
    if v.form.encrypted && keys.is_none() {
        return Ok(None);
    }
    let r = &v.record;
    let packing = crate::repo::packing::Packing {
        compression: v.form.compression,
        encrypted: v.form.encrypted,
        keys: keys.cloned(),
    };
    let object = crate::repo::Recorded {
        key: &r.key,
        sha256: &r.sha256,
        size: r.size,
    };
    let reader = crate::repo::Repository::new(storage, job)
        .open_verified(object, &packing, None)
        .await
        .map_err(|e| e.into_inner())?;
    let reader = crate::codec::Verify::new(reader, &r.raw_sha256, r.raw_size, &r.key);
    let mut bytes = Vec::new();
    reader.take(MAX_HISTORY).read_to_end(&mut bytes).await?;
    Ok(Some(String::from_utf8(bytes)?))
}

#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
}

/// Read what `storage` holds of `source`'s WAL of `job`: the listing, the partial's record
/// and the newest whole file's (each checked as a fetch would), and the switch points of
/// the history files that are not encrypted (see [`shipped_on_with`]).
pub async fn shipped_on(
    storage: &dyn Storage,
    job: &str,
    source: &str,
    expect: &Expect,
) -> Result<Shipped, ChainError> {
    shipped_on_with(storage, job, source, expect, None).await
}

/// [`shipped_on`], reading encrypted history files with `keys` (the job's).
pub async fn shipped_on_with(
    storage: &dyn Storage,
    job: &str,
    source: &str,
    expect: &Expect,
    keys: Option<&std::sync::Arc<crate::crypt::Keys>>,
) -> Result<Shipped, ChainError> {
    let names = wal::shipped(storage, job, source).await?;
    let pointer = wal::read_pointer(storage, job, source, expect).await?;
    let whole_at = match names.last() {
        Some(n) => wal::read_record(storage, job, source, n, expect)
            .await?
            .map(|v| v.record.shipped_at),
        None => None,
    };
    let newest_at = whole_at.max(pointer.as_ref().map(|p| p.record.shipped_at));
    let switches = read_switches(storage, job, source, &names, expect, keys).await;
    Ok(Shipped {
        names,
        partial: pointer.map(|p| p.record.name),
        newest_at,
        switches,
    })
}

/// For a point-in-time restore from a base backup whose first WAL file is `first`: a warning
/// naming the first missing file when the chain on `storage` has a hole (recovery replays up
/// to it, not past it), or saying the WAL could not be checked; `None` when it is whole.
pub async fn gap_warning(
    storage: &dyn Storage,
    job: &str,
    source: &str,
    first: &str,
    expect: &Expect,
    keys: Option<&std::sync::Arc<crate::crypt::Keys>>,
) -> Option<String> {
    let chain = match shipped_on_with(storage, job, source, expect, keys).await {
        Ok(on) => on.chain_from(first).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match chain {
        Ok(chain) if chain.missing_count == 0 => None,
        Ok(chain) => Some(format!(
            "warning: database {source}: the shipped WAL has a gap: {}; recovery will stop before {} (the data up to there is recoverable, nothing after it)",
            chain.describe_missing(),
            chain.missing[0]
        )),
        Err(e) => Some(format!(
            "warning: database {source}: the shipped WAL could not be checked for gaps: {e}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    }

    const A1: &str = "000000010000000000000001";
    const A2: &str = "000000010000000000000002";
    const A3: &str = "000000010000000000000003";
    const A4: &str = "000000010000000000000004";
    const A5: &str = "000000010000000000000005";

    #[test]
    fn successor_rolls_over_into_the_next_log() {
        assert_eq!(successor(A1).as_deref(), Some(A2));
        assert_eq!(
            successor("0000000100000000000000FF").as_deref(),
            Some("000000010000000100000000")
        );
        assert_eq!(
            successor("0000000200000003000000FE").as_deref(),
            Some("0000000200000003000000FF")
        );
        assert_eq!(successor("00000001.history"), None);
        assert_eq!(successor("000000010000000000000100"), None);
        assert_eq!(successor("00000001000000000000000G"), None);
    }

    #[test]
    fn chains() {
        let none = BTreeMap::new();
        // (shipped, partial, first, missing, count, newest)
        #[allow(clippy::type_complexity)]
        let table: &[(&[&str], Option<&str>, &str, &[&str], u64, Option<&str>)] = &[
            // whole
            (&[A1, A2, A3], None, A1, &[], 0, Some(A3)),
            (&[A1, A2], Some(A3), A1, &[], 0, Some(A3)),
            // nothing shipped yet: nothing to miss
            (&[], None, A2, &[], 0, None),
            // older than the backup does not count
            (&[A1, A3, A4], None, A3, &[], 0, Some(A4)),
            // a hole
            (&[A1, A2, A4, A5], None, A1, &[A3], 1, Some(A5)),
            // the backup's own first file gone
            (&[A3, A4], None, A2, &[A2], 1, Some(A4)),
            // a hole before the partial
            (&[A1], Some(A3), A1, &[A2], 1, Some(A3)),
            // across a log boundary
            (
                &["0000000100000000000000FE", "000000010000000100000001"],
                None,
                "0000000100000000000000FE",
                &["0000000100000000000000FF", "000000010000000100000000"],
                2,
                Some("000000010000000100000001"),
            ),
            // history files are not segments
            (&[A1, A2, "00000002.history"], None, A1, &[], 0, Some(A2)),
            // the first segment only on the next timeline (a switch right there)
            (
                &["000000020000000000000001", "000000020000000000000002"],
                None,
                A1,
                &[],
                0,
                Some("000000020000000000000002"),
            ),
            // nowhere at all
            (
                &["000000020000000000000002"],
                None,
                A1,
                &[A1],
                1,
                Some("000000020000000000000002"),
            ),
            // a later timeline, no switch point known: checked from its first segment
            (
                &[
                    A1,
                    A2,
                    "000000020000000000000002",
                    "000000020000000000000004",
                    "00000002.history",
                ],
                None,
                A1,
                &["000000020000000000000003"],
                1,
                Some("000000020000000000000004"),
            ),
        ];
        for (shipped, partial, first, missing, count, newest) in table {
            let c = check(&names(shipped), *partial, first, &none).expect("valid first");
            assert_eq!(c.missing, *missing, "{shipped:?} {partial:?} from {first}");
            assert_eq!(c.missing_count, *count, "{shipped:?}");
            assert_eq!(c.newest.as_deref(), *newest, "{shipped:?}");
        }
    }

    #[test]
    fn a_known_switch_point_checks_where_the_new_timeline_starts() {
        // Timeline 2 branched at 0/4000060: it must start at segment 4, and 1 reach 3.
        let switches = BTreeMap::from([(2u32, 0x0400_0060u64)]);
        let shipped = names(&[A1, A2, "000000020000000000000005", "00000002.history"]);
        let c = check(&shipped, None, A1, &switches).expect("valid");
        assert_eq!(c.missing, [A3, "000000020000000000000004"]);
        assert_eq!(c.missing_count, 2);
        let shipped = names(&[A1, A2, A3, "000000020000000000000004"]);
        let c = check(&shipped, Some("000000020000000000000005"), A1, &switches).expect("valid");
        assert_eq!(c.missing_count, 0);
        assert_eq!(c.newest.as_deref(), Some("000000020000000000000005"));
    }

    #[test]
    fn switch_points_from_history_files() {
        let s = switches_in(3, "1\t0/4000060\ta\n\n2\t0/9000000\tb\n").expect("valid");
        assert_eq!(s, BTreeMap::from([(2, 0x0400_0060), (3, 0x0900_0000)]));
        assert!(switches_in(2, "garbage").is_err());
        // With them, a timeline that does not start at its switch has a hole; without,
        // the same files look whole.
        let shipped = names(&[A1, A2, A3, "000000020000000000000005", "00000002.history"]);
        let mut on = Shipped {
            names: shipped,
            partial: None,
            newest_at: None,
            switches: switches_in(2, "1\t0/4000060\tx\n").expect("valid"),
        };
        let c = on.chain_from(A1).expect("valid");
        assert_eq!(c.missing, ["000000020000000000000004"]);
        on.switches.clear();
        assert_eq!(on.chain_from(A1).expect("valid").missing_count, 0);
    }

    #[test]
    fn many_missing_are_counted_not_listed() {
        let shipped = names(&[A1, "000000010000000100000000"]);
        let c = check(&shipped, None, A1, &BTreeMap::new()).expect("valid");
        assert_eq!(c.missing.len(), NAMED);
        assert_eq!(c.missing_count, 0xFE);
        assert_eq!(c.missing[0], A2);
        assert!(
            c.describe_missing()
                .ends_with("and 249 more missing (254 files)"),
            "{}",
            c.describe_missing()
        );
    }

    #[test]
    fn a_damaged_first_name_is_refused() {
        let e = check(&[], None, "nonsense", &BTreeMap::new()).expect_err("bad");
        assert!(e.to_string().contains("\"nonsense\""), "{e}");
    }
}
