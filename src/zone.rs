//! IANA time zones for schedules, retention buckets and the times stowage prints, as a
//! chrono [`TimeZone`] (what croner, tokio-cron-scheduler and the rest of the code speak)
//! backed by jiff's bundled time zone database.
//!
//! Why not chrono-tz: it compiles the whole database into tables of `&'static str`
//! abbreviations, about 29,000 pointers that the loader must relocate in a
//! position-independent binary: 1.1 MiB of the daemon's anonymous memory, from start to
//! end, for the one or two zones a config names. jiff bundles the same database as
//! compact TZif bytes that stay in the page cache and parses only the zones asked for.
//! Only the bundled copy is used (no `/usr/share/zoneinfo`), so a schedule means the same
//! in the image, on the host and in the tests.

use std::fmt;

use chrono::{FixedOffset, MappedLocalTime, NaiveDate, NaiveDateTime, NaiveTime, Offset};
use jiff::tz::{AmbiguousOffset, TimeZone as JiffZone};

/// A named time zone of the IANA database.
#[derive(Clone)]
pub struct Zone(JiffZone);

impl Zone {
    pub const UTC: Zone = Zone(JiffZone::UTC);

    /// The zone of that exact name (`Europe/Stockholm`, `UTC`, `US/Eastern`); `None` for
    /// a name the database does not hold. Case must match, as it does for `TZ`: the
    /// database itself would look names up ignoring case.
    pub fn get(name: &str) -> Option<Zone> {
        let tz = jiff::tz::db().get(name).ok()?;
        (tz.iana_name() == Some(name)).then_some(Zone(tz))
    }

    /// Its IANA name.
    pub fn name(&self) -> &str {
        self.0.iana_name().unwrap_or("UTC")
    }

    /// Every name the database holds, links (`US/Eastern`) included.
    pub fn names() -> Vec<String> {
        jiff::tz::db()
            .available()
            .map(|n| n.as_str().to_owned())
            .collect()
    }

    fn offset(&self, fixed: FixedOffset, utc_secs: i64) -> ZoneOffset {
        ZoneOffset {
            zone: self.clone(),
            fixed,
            utc_secs,
        }
    }
}

impl PartialEq for Zone {
    fn eq(&self, other: &Zone) -> bool {
        self.name() == other.name()
    }
}

impl Eq for Zone {}

impl fmt::Debug for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The offset of a [`Zone`] at one instant. Displays as the zone's abbreviation there
/// ("CET", "CEST", "+0330"), which is what `%Z` prints.
#[derive(Clone)]
pub struct ZoneOffset {
    zone: Zone,
    fixed: FixedOffset,
    /// The instant it is the offset of, for the abbreviation.
    utc_secs: i64,
}

impl Offset for ZoneOffset {
    fn fix(&self) -> FixedOffset {
        self.fixed
    }
}

impl fmt::Display for ZoneOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let info = self.zone.0.to_offset_info(timestamp(self.utc_secs));
        f.write_str(info.abbreviation())
    }
}

impl fmt::Debug for ZoneOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// jiff's range is years −9999 to 9999, chrono's far wider: clamp, so that a far-off
/// instant gets the zone's offset at the edge of the range instead of a panic.
fn timestamp(secs: i64) -> jiff::Timestamp {
    let clamped = secs.clamp(
        jiff::Timestamp::MIN.as_second(),
        jiff::Timestamp::MAX.as_second(),
    );
    jiff::Timestamp::from_second(clamped).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

fn fixed(offset: jiff::tz::Offset) -> FixedOffset {
    // Real zones stay within a day of UTC; chrono cannot hold more.
    FixedOffset::east_opt(offset.seconds()).unwrap_or_else(|| chrono::Utc.fix())
}

fn civil(local: &NaiveDateTime) -> Option<jiff::civil::DateTime> {
    use chrono::{Datelike, Timelike};
    jiff::civil::DateTime::new(
        i16::try_from(local.year()).ok()?,
        i8::try_from(local.month()).ok()?,
        i8::try_from(local.day()).ok()?,
        i8::try_from(local.hour()).ok()?,
        i8::try_from(local.minute()).ok()?,
        i8::try_from(local.second()).ok()?,
        // chrono counts a leap second as nanoseconds past 1e9; jiff has none.
        i32::try_from(local.nanosecond().min(999_999_999)).ok()?,
    )
    .ok()
}

impl chrono::TimeZone for Zone {
    type Offset = ZoneOffset;

    fn from_offset(offset: &ZoneOffset) -> Zone {
        offset.zone.clone()
    }

    fn offset_from_local_date(&self, local: &NaiveDate) -> MappedLocalTime<ZoneOffset> {
        self.offset_from_local_datetime(&local.and_time(NaiveTime::MIN))
    }

    fn offset_from_local_datetime(&self, local: &NaiveDateTime) -> MappedLocalTime<ZoneOffset> {
        let wall = local.and_utc().timestamp();
        let at = |o: jiff::tz::Offset| self.offset(fixed(o), wall - i64::from(o.seconds()));
        let Some(dt) = civil(local) else {
            // Outside jiff's years: the offset at the nearest edge.
            let edge = if local.and_utc().timestamp() < 0 {
                jiff::Timestamp::MIN
            } else {
                jiff::Timestamp::MAX
            };
            return MappedLocalTime::Single(at(self.0.to_offset(edge)));
        };
        match self.0.to_ambiguous_timestamp(dt).offset() {
            AmbiguousOffset::Unambiguous { offset } => MappedLocalTime::Single(at(offset)),
            AmbiguousOffset::Gap { .. } => MappedLocalTime::None,
            // `before` is the offset in force before the clocks went back: the larger one,
            // so the earlier instant, which chrono wants first.
            AmbiguousOffset::Fold { before, after } => {
                MappedLocalTime::Ambiguous(at(before), at(after))
            }
        }
    }

    fn offset_from_utc_date(&self, utc: &NaiveDate) -> ZoneOffset {
        self.offset_from_utc_datetime(&utc.and_time(NaiveTime::MIN))
    }

    fn offset_from_utc_datetime(&self, utc: &NaiveDateTime) -> ZoneOffset {
        let secs = utc.and_utc().timestamp();
        self.offset(fixed(self.0.to_offset(timestamp(secs))), secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> chrono::DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    fn local(z: &Zone, y: i32, mo: u32, d: u32, h: u32, mi: u32) -> NaiveDateTime {
        let _ = z;
        NaiveDate::from_ymd_opt(y, mo, d)
            .unwrap()
            .and_hms_opt(h, mi, 0)
            .unwrap()
    }

    #[test]
    fn names_must_match_exactly() {
        assert_eq!(
            Zone::get("Europe/Stockholm").unwrap().name(),
            "Europe/Stockholm"
        );
        assert_eq!(Zone::get("UTC").unwrap(), Zone::UTC);
        assert!(Zone::get("US/Eastern").is_some(), "links are names too");
        assert!(Zone::get("europe/stockholm").is_none());
        assert!(Zone::get("Europe/Stockholmm").is_none());
        assert!(Zone::get("").is_none());
        let names = Zone::names();
        assert!(names.len() > 400, "{} names", names.len());
        assert!(names.iter().any(|n| n == "America/New_York"));
    }

    #[test]
    fn offsets_and_abbreviations_follow_daylight_saving() {
        let sto = Zone::get("Europe/Stockholm").unwrap();
        let winter = utc(2026, 1, 10, 12, 0).with_timezone(&sto);
        let summer = utc(2026, 7, 10, 12, 0).with_timezone(&sto);
        assert_eq!(winter.format("%H:%M %Z %z").to_string(), "13:00 CET +0100");
        assert_eq!(summer.format("%H:%M %Z %z").to_string(), "14:00 CEST +0200");
        let tehran = Zone::get("Asia/Tehran").unwrap();
        assert_eq!(
            utc(2026, 1, 10, 12, 0)
                .with_timezone(&tehran)
                .format("%H:%M %Z")
                .to_string(),
            "15:30 +0330"
        );
        assert_eq!(
            utc(2026, 1, 10, 12, 0)
                .with_timezone(&Zone::UTC)
                .format("%Z")
                .to_string(),
            "UTC"
        );
    }

    #[test]
    fn local_times_in_a_gap_or_a_fold() {
        let ny = Zone::get("America/New_York").unwrap();
        // 2026-03-08 02:30 does not exist in New York; 2026-11-01 01:30 happens twice.
        assert!(matches!(
            ny.from_local_datetime(&local(&ny, 2026, 3, 8, 2, 30)),
            MappedLocalTime::None
        ));
        match ny.from_local_datetime(&local(&ny, 2026, 11, 1, 1, 30)) {
            MappedLocalTime::Ambiguous(first, second) => {
                assert_eq!(first.to_utc(), utc(2026, 11, 1, 5, 30));
                assert_eq!(second.to_utc(), utc(2026, 11, 1, 6, 30));
                assert_eq!(first.format("%Z").to_string(), "EDT");
                assert_eq!(second.format("%Z").to_string(), "EST");
            }
            other => panic!("not a fold: {other:?}"),
        }
        match ny.from_local_datetime(&local(&ny, 2026, 6, 1, 9, 0)) {
            MappedLocalTime::Single(t) => assert_eq!(t.to_utc(), utc(2026, 6, 1, 13, 0)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn far_off_instants_do_not_panic() {
        let sto = Zone::get("Europe/Stockholm").unwrap();
        let far = NaiveDate::from_ymd_opt(200_000, 1, 1)
            .unwrap()
            .and_time(NaiveTime::MIN);
        let _ = sto.offset_from_utc_datetime(&far).to_string();
        assert!(matches!(
            sto.from_local_datetime(&far),
            MappedLocalTime::Single(_)
        ));
        let _ = chrono::DateTime::<Utc>::MIN_UTC
            .with_timezone(&sto)
            .to_string();
    }
}
