//! Names and positions of PostgreSQL's write-ahead log, as the server and its tools write
//! them: LSNs ("16/B374D848"), segment files (`000000010000001600000B3`…), timeline history
//! files. Pure functions, shared by the base backup, the WAL shipper and restore.

use std::fmt;
use std::str::FromStr;

/// A log sequence number: a byte position in the write-ahead log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Read an LSN as PostgreSQL writes it: two hexadecimal halves, "16/B374D848".
    pub fn parse(text: &str) -> Result<Lsn, String> {
        let bad = || {
            format!(
                "invalid LSN \"{text}\": expected two hexadecimal numbers joined by '/', e.g. \"0/3000060\""
            )
        };
        let (hi, lo) = text.split_once('/').ok_or_else(bad)?;
        let half = |s: &str| {
            if s.is_empty() || s.len() > 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            u32::from_str_radix(s, 16).map_err(|_| bad())
        };
        Ok(Lsn((u64::from(half(hi)?) << 32) | u64::from(half(lo)?)))
    }
}

impl FromStr for Lsn {
    type Err = String;
    fn from_str(s: &str) -> Result<Lsn, String> {
        Lsn::parse(s)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// The server's `wal_segment_size`: a power of two from 1 MiB to 1 GiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentSize(u64);

impl SegmentSize {
    /// PostgreSQL's default, and what `initdb` makes unless told otherwise.
    pub const DEFAULT: SegmentSize = SegmentSize(16 * 1024 * 1024);

    pub fn new(bytes: u64) -> Result<SegmentSize, String> {
        if bytes.is_power_of_two() && (1 << 20..=1 << 30).contains(&bytes) {
            Ok(SegmentSize(bytes))
        } else {
            Err(format!(
                "invalid WAL segment size {bytes}: PostgreSQL's is a power of two from 1 MiB to 1 GiB"
            ))
        }
    }

    pub fn bytes(self) -> u64 {
        self.0
    }

    /// Segments per 4 GiB "log id", the middle part of a segment name.
    fn per_id(self) -> u64 {
        0x1_0000_0000 / self.0
    }
}

impl Default for SegmentSize {
    fn default() -> SegmentSize {
        SegmentSize::DEFAULT
    }
}

/// The file name of segment `segno` on `timeline`: 24 upper-case hexadecimal digits.
pub fn segment_name(timeline: u32, segno: u64, seg: SegmentSize) -> String {
    format!(
        "{timeline:08X}{:08X}{:08X}",
        segno / seg.per_id(),
        segno % seg.per_id()
    )
}

/// The (timeline, segment number) a segment file name stands for; `None` for any other name.
pub fn parse_segment_name(name: &str, seg: SegmentSize) -> Option<(u32, u64)> {
    if name.len() != 24 || !name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F')) {
        return None;
    }
    let tli = u32::from_str_radix(&name[..8], 16).ok()?;
    let id = u64::from_str_radix(&name[8..16], 16).ok()?;
    let low = u64::from_str_radix(&name[16..], 16).ok()?;
    // Timeline 0 does not exist, and a low part past the segments of one log id is no
    // name the server writes.
    if tli == 0 || low >= seg.per_id() {
        return None;
    }
    Some((tli, id * seg.per_id() + low))
}

/// The segment number holding `lsn`.
pub fn segno_of(lsn: Lsn, seg: SegmentSize) -> u64 {
    lsn.0 / seg.bytes()
}

/// The name of the segment file holding `lsn` on `timeline`.
pub fn segment_of(lsn: Lsn, timeline: u32, seg: SegmentSize) -> String {
    segment_name(timeline, segno_of(lsn, seg), seg)
}

/// What a file in a WAL spool or archive is, by its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalFile {
    /// A complete segment, `000000010000000000000003`.
    Segment { timeline: u32, segno: u64 },
    /// The segment being written, `000000010000000000000003.partial`.
    Partial { timeline: u32, segno: u64 },
    /// A timeline's history, `00000002.history`.
    History { timeline: u32 },
    /// The record of a base backup, `000000010000000000000002.00000028.backup`: the
    /// segment and offset where it started.
    BackupHistory {
        timeline: u32,
        segno: u64,
        offset: u32,
    },
    /// Anything else (a temporary file, a stray name): never WAL.
    Other,
}

/// Classify a spool or archive file name.
pub fn classify(name: &str, seg: SegmentSize) -> WalFile {
    if let Some((tli, segno)) = parse_segment_name(name, seg) {
        return WalFile::Segment {
            timeline: tli,
            segno,
        };
    }
    if let Some(base) = name.strip_suffix(".partial")
        && let Some((timeline, segno)) = parse_segment_name(base, seg)
    {
        return WalFile::Partial { timeline, segno };
    }
    if let Some(base) = name.strip_suffix(".history")
        && let Some(timeline) = parse_timeline(base)
    {
        return WalFile::History { timeline };
    }
    if let Some(base) = name.strip_suffix(".backup")
        && let Some((segment, offset)) = base.split_once('.')
        && let Some((timeline, segno)) = parse_segment_name(segment, seg)
        && offset.len() == 8
        && offset.bytes().all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F'))
        && let Ok(offset) = u32::from_str_radix(offset, 16)
        && u64::from(offset) < seg.bytes()
    {
        return WalFile::BackupHistory {
            timeline,
            segno,
            offset,
        };
    }
    WalFile::Other
}

/// The name of a timeline's history file, `00000002.history`.
pub fn history_name(timeline: u32) -> String {
    format!("{timeline:08X}.history")
}

fn parse_timeline(text: &str) -> Option<u32> {
    if text.len() != 8 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F')) {
        return None;
    }
    u32::from_str_radix(text, 16).ok().filter(|t| *t != 0)
}

/// One line of a timeline history file: the timeline this one branched from, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The parent timeline.
    pub parent: u32,
    /// The first LSN of the parent that is no longer on the new timeline.
    pub switch: Lsn,
    /// Why the server switched, as it wrote it ("no recovery target specified").
    pub reason: String,
}

/// Read a timeline history file (`1\t0/3000060\tno recovery target specified` per line;
/// blank lines and `#` comments skipped, as the server does). Timelines must increase.
pub fn parse_history(text: &str) -> Result<Vec<HistoryEntry>, String> {
    let mut entries: Vec<HistoryEntry> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: &str| {
            format!(
                "timeline history line {}: {why} in {line:?}; expected \"<timeline>\\t<LSN>\\t<reason>\"",
                n + 1
            )
        };
        let mut parts = line.splitn(3, ['\t', ' ']);
        let parent = parts
            .next()
            .and_then(|t| t.parse::<u32>().ok())
            .filter(|t| *t != 0)
            .ok_or_else(|| bad("no timeline number"))?;
        let switch = parts
            .next()
            .map(|l| Lsn::parse(l.trim()))
            .transpose()
            .map_err(|e| bad(&e))?
            .ok_or_else(|| bad("no switch point"))?;
        if let Some(prev) = entries.last()
            && (parent <= prev.parent || switch < prev.switch)
        {
            return Err(bad("timelines or switch points out of order"));
        }
        entries.push(HistoryEntry {
            parent,
            switch,
            reason: parts.next().unwrap_or("").trim().to_string(),
        });
    }
    Ok(entries)
}

/// The segments of `timeline` from `from` to `to` (both included) that `names` lacks, in
/// order. Only whole segments count: a `.partial` does not fill a gap.
pub fn gaps(names: &[String], timeline: u32, from: u64, to: u64, seg: SegmentSize) -> Vec<String> {
    let have: std::collections::HashSet<u64> = names
        .iter()
        .filter_map(|n| parse_segment_name(n, seg))
        .filter(|(t, _)| *t == timeline)
        .map(|(_, s)| s)
        .collect();
    (from..=to)
        .filter(|s| !have.contains(s))
        .map(|s| segment_name(timeline, s, seg))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_read_and_write_as_postgresql_does() {
        for (text, value, shown) in [
            ("0/0", 0u64, "0/0"),
            ("0/2000028", 0x0200_0028, "0/2000028"),
            ("16/B374D848", 0x16_B374_D848, "16/B374D848"),
            ("16/b374d848", 0x16_B374_D848, "16/B374D848"),
            ("FFFFFFFF/FFFFFFFF", u64::MAX, "FFFFFFFF/FFFFFFFF"),
        ] {
            let lsn = Lsn::parse(text).expect(text);
            assert_eq!(lsn, Lsn(value), "{text}");
            assert_eq!(lsn.to_string(), shown);
        }
        for bad in ["", "0", "/1", "1/", "1/2/3", "x/1", "123456789/0", "+1/0", " 0/1"] {
            let e = Lsn::parse(bad).expect_err(bad);
            assert!(e.starts_with(&format!("invalid LSN \"{bad}\"")), "{e}");
        }
        assert!(Lsn::parse("1/0").unwrap() > Lsn::parse("0/FFFFFFFF").unwrap());
    }

    #[test]
    fn segment_names_and_numbers() {
        let seg = SegmentSize::DEFAULT;
        for (tli, segno, name) in [
            (1, 0, "000000010000000000000000"),
            (1, 3, "000000010000000000000003"),
            (1, 255, "0000000100000000000000FF"),
            (1, 256, "000000010000000100000000"),
            (2, 0x16B3, "0000000200000016000000B3"),
        ] {
            assert_eq!(segment_name(tli, segno, seg), name);
            assert_eq!(parse_segment_name(name, seg), Some((tli, segno)));
        }
        let big = SegmentSize::new(1 << 30).unwrap();
        assert_eq!(segment_name(1, 5, big), "000000010000000100000001");
        assert_eq!(parse_segment_name("000000010000000000000004", big), None);
        for bad in [
            "00000001000000000000000",
            "0000000100000000000000001",
            "000000010000000000000a03",
            "000000000000000000000003",
            "000000010000000000000100",
            "00000001000000000000000G",
        ] {
            assert_eq!(parse_segment_name(bad, seg), None, "{bad}");
        }
        for bad in [0, 1000, 1 << 19, 3 << 20, 1 << 31] {
            assert!(SegmentSize::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_segment_holding_an_lsn() {
        let seg = SegmentSize::DEFAULT;
        for (lsn, tli, name) in [
            ("0/2000028", 1, "000000010000000000000002"),
            ("0/2FFFFFF", 1, "000000010000000000000002"),
            ("0/3000000", 1, "000000010000000000000003"),
            ("16/B374D848", 3, "0000000300000016000000B3"),
        ] {
            assert_eq!(segment_of(Lsn::parse(lsn).unwrap(), tli, seg), name, "{lsn}");
        }
    }

    #[test]
    fn file_names_are_classified() {
        let seg = SegmentSize::DEFAULT;
        for (name, kind) in [
            (
                "000000010000000000000003",
                WalFile::Segment {
                    timeline: 1,
                    segno: 3,
                },
            ),
            (
                "000000020000000100000000.partial",
                WalFile::Partial {
                    timeline: 2,
                    segno: 256,
                },
            ),
            ("00000002.history", WalFile::History { timeline: 2 }),
            (
                "000000010000000000000002.00000028.backup",
                WalFile::BackupHistory {
                    timeline: 1,
                    segno: 2,
                    offset: 0x28,
                },
            ),
            ("00000000.history", WalFile::Other),
            ("0000002.history", WalFile::Other),
            ("000000010000000000000003.tmp", WalFile::Other),
            ("000000010000000000000003.partial.tmp", WalFile::Other),
            ("000000010000000000000002.0028.backup", WalFile::Other),
            ("000000010000000000000002.01000000.backup", WalFile::Other),
            ("archive_status", WalFile::Other),
            ("", WalFile::Other),
        ] {
            assert_eq!(classify(name, seg), kind, "{name}");
        }
        assert_eq!(history_name(10), "0000000A.history");
    }

    #[test]
    fn timeline_histories() {
        let text = "1\t0/3000060\tno recovery target specified\n\n# comment\n\
                    2\t0/5000000\tbefore 2026-12-05 08:14:03+00\n";
        assert_eq!(
            parse_history(text).unwrap(),
            vec![
                HistoryEntry {
                    parent: 1,
                    switch: Lsn(0x0300_0060),
                    reason: "no recovery target specified".into(),
                },
                HistoryEntry {
                    parent: 2,
                    switch: Lsn(0x0500_0000),
                    reason: "before 2026-12-05 08:14:03+00".into(),
                },
            ]
        );
        assert_eq!(parse_history("").unwrap(), vec![]);
        assert_eq!(parse_history("1\t0/10").unwrap()[0].reason, "");
        for (bad, why) in [
            ("x\t0/1\tr", "no timeline number"),
            ("0\t0/1\tr", "no timeline number"),
            ("1\tzz\tr", "invalid LSN"),
            ("1", "no switch point"),
            ("2\t0/5\tr\n1\t0/6\tr", "out of order"),
            ("1\t0/5\tr\n2\t0/4\tr", "out of order"),
        ] {
            let e = parse_history(bad).expect_err(bad);
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn gaps_between_two_segments() {
        let seg = SegmentSize::DEFAULT;
        let names: Vec<String> = [
            "000000010000000000000002",
            "000000010000000000000003",
            "000000010000000000000005.partial",
            "000000020000000000000004",
            "000000010000000000000006",
            "00000002.history",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            gaps(&names, 1, 2, 7, seg),
            vec![
                "000000010000000000000004",
                "000000010000000000000005",
                "000000010000000000000007"
            ]
        );
        assert_eq!(gaps(&names, 1, 2, 3, seg), Vec::<String>::new());
        assert_eq!(gaps(&names, 1, 3, 2, seg), Vec::<String>::new());
        assert_eq!(
            gaps(&names, 2, 3, 4, seg),
            vec!["000000020000000000000003"]
        );
    }
}
