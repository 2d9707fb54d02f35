//! Cron schedules evaluated in a real IANA timezone.
//!
//! tokio-cron-scheduler freezes the UTC offset when a cron job is created, so
//! a job armed in winter fires an hour off all summer. The daemon therefore
//! asks this module for each next fire instant and arms a one-shot job.
//!
//! # DST semantics (Vixie cron)
//!
//! A schedule is *wildcard* when its second (6-field form), minute or hour
//! field starts with `*`, otherwise it is *fixed-time*; this is the same
//! split Vixie cron makes.
//!
//! * Spring forward (wall-clock times that do not exist): a fixed-time
//!   schedule fires once, at the first instant after the gap (02:30 in
//!   Europe/Stockholm on 2026-03-29 fires at 03:00 CEST = 01:00 UTC; several
//!   times inside the same gap collapse into that one fire). A wildcard
//!   schedule simply has no fires in the gap, so `0 * * * *` still fires once
//!   per real hour.
//! * Fall back (wall-clock times that happen twice): a fixed-time schedule
//!   fires only on the first pass (02:30 fires at 00:30 UTC, not again at
//!   01:30 UTC). A wildcard schedule fires on both passes, so `0 * * * *`
//!   fires at every real UTC hour, including both 02:00s.
//! * Anything else stays on local wall-clock time: a daily 03:00 job fires at
//!   03:00 local on both sides of a change, so its UTC instant moves.
//!
//! croner 3.0.1 is used only to parse expressions and to step through
//! matching wall-clock times. It is driven in UTC (which has no DST) and the
//! mapping from wall-clock to real instants is done here, because croner's
//! own timezone handling disagrees with the rules above: started on a real
//! timezone, `find_next_occurrence` skips the repeated hour for wildcard
//! jobs, can return an instant *before* its start when started in the second
//! pass of a repeated hour, skips gap times for fixed jobs with several hour
//! values (`0 2,14 * * *`), and its iterator yields repeated-hour fires out
//! of order.
//!
//! Day-of-month and day-of-week follow Vixie cron too: when both are
//! restricted a day matching either one fires; when either field starts with
//! `*` (e.g. `*/2`) both must match. croner only applies the AND rule to a
//! bare `*`, so such fields are rewritten to croner's explicit AND form.

use crate::zone::Zone;
use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, TimeZone, Timelike, Utc};
use croner::Cron;
use croner::errors::CronError;
use croner::parser::{CronParser, Seconds, Year};

/// Expansions are written out here rather than left to croner so that
/// `@midnight` works and every alias goes through the same 5-field path.
const ALIASES: [(&str, &str); 7] = [
    ("@hourly", "0 * * * *"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@weekly", "0 0 * * 0"),
    ("@monthly", "0 0 1 * *"),
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
];

const FIELD_NAMES: [&str; 6] = [
    "second",
    "minute",
    "hour",
    "day-of-month",
    "month",
    "day-of-week",
];

const FIELD_ACCEPTS: [&str; 6] = [
    "0-59",
    "0-59",
    "0-23",
    "1-31",
    "1-12 or jan-dec",
    "0-7 or sun-sat",
];

/// Enough fires to see a short month or a DST day, cheap enough for yearly
/// schedules.
const PERIOD_SAMPLE: usize = 8;
/// Enough fires to cover a week of an hourly-on-weekdays job.
const GAP_SAMPLE: usize = 200;

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ScheduleError {
    #[error(
        "invalid schedule {expr:?}: expected 5 fields (minute hour day month weekday), 6 fields (with seconds first) or one of @hourly, @daily, @weekly, @monthly, @yearly"
    )]
    FieldCount { expr: String },

    #[error(
        "invalid schedule {expr:?}: unknown alias, expected one of @hourly, @daily, @midnight, @weekly, @monthly, @yearly, @annually"
    )]
    UnknownAlias { expr: String },

    #[error("invalid schedule {expr:?}: {field} field {value:?}: {reason}")]
    InvalidField {
        expr: String,
        field: &'static str,
        value: String,
        reason: String,
    },

    /// croner rejected the expression but no single field on its own; kept
    /// so an unforeseen croner error still reaches the user readably.
    #[error("invalid schedule {expr:?}: {reason}")]
    Invalid { expr: String, reason: String },

    #[error(
        "invalid schedule {expr:?}: never fires, no date matches its day-of-month, month and day-of-week fields"
    )]
    NeverFires { expr: String },

    #[error(
        "unknown timezone {name:?}: use an IANA name such as \"Europe/Stockholm\" or \"UTC\"{}",
        did_you_mean(.suggestion)
    )]
    UnknownTimezone {
        name: String,
        suggestion: Option<String>,
    },
}

fn did_you_mean(suggestion: &Option<String>) -> String {
    match suggestion {
        Some(name) => format!(" (did you mean {name:?}?)"),
        None => String::new(),
    }
}

#[derive(Debug, Clone)]
pub struct Schedule {
    expr: String,
    cron: Cron,
    tz: Zone,
    wildcard: bool,
}

impl Schedule {
    /// Parses a 5-field cron expression (seconds = 0), a 6-field one with
    /// seconds first, or an `@` alias. Surrounding whitespace is ignored.
    pub fn parse(expr: &str, tz: Zone) -> Result<Schedule, ScheduleError> {
        let text = expr.trim();
        let expanded = if text.starts_with('@') {
            ALIASES
                .iter()
                .find(|(alias, _)| alias.eq_ignore_ascii_case(text))
                .map(|(_, expansion)| *expansion)
                .ok_or_else(|| ScheduleError::UnknownAlias {
                    expr: text.to_owned(),
                })?
        } else {
            text
        };

        let user_fields: Vec<&str> = expanded.split_whitespace().collect();
        // croner would also take a 7th (year) field; that is not cron as
        // users know it, so only 5 and 6 are accepted.
        let mut fields: Vec<String> = match user_fields.len() {
            5 => std::iter::once("0")
                .chain(user_fields.iter().copied())
                .map(str::to_owned)
                .collect(),
            6 => user_fields.iter().map(|f| (*f).to_owned()).collect(),
            _ => {
                return Err(ScheduleError::FieldCount {
                    expr: text.to_owned(),
                });
            }
        };
        // Offset from croner's 6-field layout back to what the user typed,
        // so errors quote their field, not the implicit seconds.
        let user_offset = 6 - user_fields.len();

        let wildcard = fields[..3].iter().any(|f| f.starts_with('*'));

        let starred_restriction = |f: &str| f.starts_with('*') && f != "*";
        if (starred_restriction(&fields[3]) || starred_restriction(&fields[5]))
            && !fields[5].starts_with('+')
        {
            // Vixie ANDs day-of-month and day-of-week whenever either field
            // starts with `*`; croner only does so for a bare `*` unless the
            // day-of-week field carries its `+` AND marker.
            fields[5].insert(0, '+');
        }

        let cron = parser()
            .parse(&fields.join(" "))
            .map_err(|err| diagnose(text, &fields, &user_fields, user_offset, err))?;

        // Some expressions parse but can never match (`0 0 31 2 *`); better
        // to refuse them at config time than to silently never back up.
        // croner walks forward until year 5000, so every calendar pattern
        // (which repeats every 400 years) is covered.
        if cron
            .find_next_occurrence(&DateTime::<Utc>::UNIX_EPOCH, true)
            .is_err()
        {
            return Err(ScheduleError::NeverFires {
                expr: text.to_owned(),
            });
        }

        Ok(Schedule {
            expr: text.to_owned(),
            cron,
            tz,
            wildcard,
        })
    }

    /// The expression as the user wrote it, minus surrounding whitespace.
    pub fn expr(&self) -> &str {
        &self.expr
    }

    pub fn tz(&self) -> &Zone {
        &self.tz
    }

    /// First fire time strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let tz = &self.tz;
        let wall_exact = after.with_timezone(tz).naive_local();
        // croner matches whole seconds; a fractional start still has to
        // consider the second it falls in, `> after` below does the rest.
        let mut start = wall_exact.with_nanosecond(0)?;

        // When `after` is in the first pass of a repeated hour, the second
        // pass of wall-clock times *earlier* than now is still in the future.
        if self.wildcard
            && let LocalResult::Ambiguous(first, second) = tz.from_local_datetime(&wall_exact)
            && first.to_utc() == after
        {
            start = start.checked_sub_signed(second.signed_duration_since(first))?;
        }

        // Wall-clock candidates come in increasing order. Their first-pass
        // instants are non-decreasing, and so are their second-pass instants,
        // but the two sequences interleave during a repeated hour. So keep
        // the first second-pass instant after `after` (the earliest of its
        // sequence), stop at the first first-pass instant after `after`, and
        // answer with the smaller of the two.
        let mut cursor = start.and_utc();
        let mut inclusive = true;
        let mut second_pass: Option<DateTime<Utc>> = None;
        loop {
            // croner fails only past year 5000 or on arithmetic overflow;
            // both mean "no next fire" to callers.
            let candidate = self.cron.find_next_occurrence(&cursor, inclusive).ok()?;
            inclusive = false;
            cursor = candidate;
            let wall = candidate.naive_utc();

            let (first, repeat) = match tz.from_local_datetime(&wall) {
                LocalResult::Single(t) => (t.to_utc(), None),
                LocalResult::Ambiguous(a, b) => (a.to_utc(), self.wildcard.then(|| b.to_utc())),
                LocalResult::None if self.wildcard => continue,
                LocalResult::None => (gap_end(tz, wall)?, None),
            };
            if first > after {
                return Some(second_pass.map_or(first, |s| s.min(first)));
            }
            if second_pass.is_none() {
                second_pass = repeat.filter(|t| *t > after);
            }
        }
    }

    /// Next `n` fire times strictly after `after`, in the schedule's timezone.
    pub fn upcoming(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Zone>> {
        self.fires_after(after)
            .take(n)
            .map(|t| t.with_timezone(&self.tz))
            .collect()
    }

    /// Smallest gap between the next few fires after `after`. Being the
    /// minimum, a daily schedule whose sample spans spring forward reports
    /// 23h; staleness checks would rather be early than late.
    pub fn period(&self, after: DateTime<Utc>) -> Option<Duration> {
        let fires: Vec<DateTime<Utc>> = self.fires_after(after).take(PERIOD_SAMPLE).collect();
        fires
            .windows(2)
            .map(|pair| pair[1].signed_duration_since(pair[0]))
            .min()
    }

    /// Longest gap between the fires of the coming weeks: a weekday-only job's Friday to
    /// Monday, so that a staleness limit derived from it does not cry wolf every weekend.
    pub fn longest_gap(&self, after: DateTime<Utc>) -> Option<Duration> {
        let fires: Vec<DateTime<Utc>> = self.fires_after(after).take(GAP_SAMPLE).collect();
        fires
            .windows(2)
            .map(|pair| pair[1].signed_duration_since(pair[0]))
            .max()
    }

    fn fires_after(&self, after: DateTime<Utc>) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        std::iter::successors(self.next_after(after), move |t| self.next_after(*t))
    }
}

fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Required)
        .year(Year::Disallowed)
        .dom_and_dow(false)
        .build()
}

/// First instant after the DST gap that swallowed `wall`.
fn gap_end(tz: &Zone, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
    // The longest real gap is a day (Samoa skipped 2011-12-30) and no two
    // gaps are that close, so over this window wall-clock times are invalid
    // up to the end of the gap and valid after it: binary-searchable.
    let mut invalid = wall;
    let mut valid = wall.checked_add_signed(Duration::hours(26))?;
    if matches!(tz.from_local_datetime(&valid), LocalResult::None) {
        return None;
    }
    loop {
        let span = valid.signed_duration_since(invalid).num_seconds();
        if span <= 1 {
            break;
        }
        let mid = invalid.checked_add_signed(Duration::seconds(span / 2))?;
        if matches!(tz.from_local_datetime(&mid), LocalResult::None) {
            invalid = mid;
        } else {
            valid = mid;
        }
    }
    tz.from_local_datetime(&valid)
        .earliest()
        .map(|t| t.to_utc())
}

/// croner's errors do not say which field is wrong, so each field is re-parsed
/// alone (others `*`) to find the culprit.
fn diagnose(
    expr: &str,
    fields: &[String],
    user_fields: &[&str],
    user_offset: usize,
    err: CronError,
) -> ScheduleError {
    let parser = parser();
    for (i, field) in fields.iter().enumerate() {
        let mut probe = ["*"; 6];
        probe[i] = field;
        let Err(field_err) = parser.parse(&probe.join(" ")) else {
            continue;
        };
        // The implicit seconds field is always "0" and never fails, so `i`
        // is a user field whenever we get here.
        let value = i
            .checked_sub(user_offset)
            .and_then(|u| user_fields.get(u))
            .map_or(field.as_str(), |v| *v);
        return ScheduleError::InvalidField {
            expr: expr.to_owned(),
            field: FIELD_NAMES[i],
            value: value.to_owned(),
            reason: format!(
                "{} (accepted: {})",
                readable(&field_err, value),
                FIELD_ACCEPTS[i]
            ),
        };
    }
    ScheduleError::Invalid {
        expr: expr.to_owned(),
        reason: readable(&err, expr),
    }
}

fn readable(err: &CronError, value: &str) -> String {
    match err {
        CronError::IllegalCharacters(msg) => {
            // croner reports the upper-cased character; show the user's own.
            let upper = msg
                .split('\'')
                .nth(1)
                .and_then(|s| s.chars().next())
                .unwrap_or('?');
            let shown = value
                .chars()
                .find(|c| c.to_ascii_uppercase() == upper)
                .unwrap_or(upper);
            format!("unexpected character '{shown}'")
        }
        CronError::ComponentError(msg) | CronError::InvalidPattern(msg) => match msg.as_str() {
            "Number out of bounds." => "value out of range".to_owned(),
            "Range out of bounds." => "range is reversed or out of range".to_owned(),
            "Range is out of bounds in stepping." => {
                "stepped range is reversed or out of range".to_owned()
            }
            other => sentence_fragment(other),
        },
        other => sentence_fragment(&other.to_string()),
    }
}

/// Turns croner's "Capitalised sentence." into a fragment that fits after a
/// colon in our lowercase messages.
fn sentence_fragment(msg: &str) -> String {
    let trimmed = msg.trim().trim_end_matches('.');
    let mut chars = trimmed.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Parses an IANA timezone name (surrounding whitespace ignored; case must
/// match, as it does for `TZ`).
pub fn parse_timezone(name: &str) -> Result<Zone, ScheduleError> {
    let name = name.trim();
    Zone::get(name).ok_or_else(|| ScheduleError::UnknownTimezone {
        name: name.to_owned(),
        suggestion: suggest_timezone(name),
    })
}

fn suggest_timezone(input: &str) -> Option<String> {
    fn normalise(s: &str) -> String {
        s.to_lowercase().replace(' ', "_")
    }
    let wanted = normalise(input);
    if wanted.is_empty() {
        return None;
    }
    let all = Zone::names();
    let names = || all.iter().map(String::as_str);
    // People often write only the city ("Stockholm"), so compare against the
    // last path segment too when no region was given.
    let key = |name: &str| -> String {
        if wanted.contains('/') {
            normalise(name)
        } else {
            normalise(name.rsplit('/').next().unwrap_or(name))
        }
    };

    if let Some(exact) = names().find(|n| key(n) == wanted) {
        return Some(exact.to_owned());
    }
    // Allow roughly one typo per five characters; more than that and the
    // "suggestion" is usually an unrelated zone.
    let budget = (wanted.chars().count() / 5).clamp(1, 3);
    names()
        .map(|n| (edit_distance(&key(n), &wanted), n))
        .filter(|(d, _)| *d <= budget)
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n.to_owned())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = substitution.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    fn stockholm() -> Zone {
        Zone::get("Europe/Stockholm").unwrap()
    }

    fn new_york() -> Zone {
        Zone::get("America/New_York").unwrap()
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    fn sched(expr: &str, tz: Zone) -> Schedule {
        Schedule::parse(expr, tz).unwrap()
    }

    fn fires(expr: &str, tz: Zone, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        sched(expr, tz)
            .upcoming(after, n)
            .into_iter()
            .map(|t| t.to_utc())
            .collect()
    }

    fn local_strings(expr: &str, tz: Zone, after: DateTime<Utc>, n: usize) -> Vec<String> {
        sched(expr, tz)
            .upcoming(after, n)
            .iter()
            .map(|t| t.to_rfc3339())
            .collect()
    }

    fn parse_err(expr: &str) -> String {
        Schedule::parse(expr, Zone::UTC).unwrap_err().to_string()
    }

    fn tz_err(name: &str) -> String {
        parse_timezone(name).unwrap_err().to_string()
    }

    #[test]
    fn five_field_fires_on_whole_minutes() {
        let s = sched("30 4 * * *", Zone::UTC);
        assert_eq!(
            s.next_after(utc(2026, 1, 10, 12, 0, 0)),
            Some(utc(2026, 1, 11, 4, 30, 0))
        );
        assert_eq!(
            sched("* * * * *", Zone::UTC).next_after(utc(2026, 1, 10, 12, 0, 30)),
            Some(utc(2026, 1, 10, 12, 1, 0))
        );
    }

    #[test]
    fn next_after_is_strictly_after() {
        let s = sched("30 4 * * *", Zone::UTC);
        assert_eq!(
            s.next_after(utc(2026, 1, 11, 4, 30, 0)),
            Some(utc(2026, 1, 12, 4, 30, 0))
        );
        let fraction = utc(2026, 1, 10, 12, 0, 0) + Duration::milliseconds(500);
        assert_eq!(
            sched("* * * * * *", Zone::UTC).next_after(fraction),
            Some(utc(2026, 1, 10, 12, 0, 1))
        );
    }

    #[test]
    fn six_field_has_seconds_first() {
        assert_eq!(
            sched("15 30 4 * * *", Zone::UTC).next_after(utc(2026, 1, 10, 12, 0, 0)),
            Some(utc(2026, 1, 11, 4, 30, 15))
        );
        assert_eq!(
            fires("*/10 * * * * *", Zone::UTC, utc(2026, 1, 10, 12, 0, 5), 3),
            vec![
                utc(2026, 1, 10, 12, 0, 10),
                utc(2026, 1, 10, 12, 0, 20),
                utc(2026, 1, 10, 12, 0, 30),
            ]
        );
    }

    #[test]
    fn aliases() {
        // Saturday.
        let after = utc(2026, 1, 10, 12, 34, 56);
        let cases = [
            ("@hourly", utc(2026, 1, 10, 13, 0, 0)),
            ("@daily", utc(2026, 1, 11, 0, 0, 0)),
            ("@midnight", utc(2026, 1, 11, 0, 0, 0)),
            ("@weekly", utc(2026, 1, 11, 0, 0, 0)),
            ("@monthly", utc(2026, 2, 1, 0, 0, 0)),
            ("@yearly", utc(2027, 1, 1, 0, 0, 0)),
            ("@annually", utc(2027, 1, 1, 0, 0, 0)),
        ];
        for (alias, expected) in cases {
            assert_eq!(
                sched(alias, Zone::UTC).next_after(after),
                Some(expected),
                "{alias}"
            );
        }
        assert_eq!(
            sched("@weekly", Zone::UTC).next_after(utc(2026, 1, 11, 0, 0, 0)),
            Some(utc(2026, 1, 18, 0, 0, 0))
        );
    }

    #[test]
    fn whitespace_is_trimmed_and_expr_kept_as_written() {
        let s = sched("  @Daily \n", stockholm());
        assert_eq!(s.expr(), "@Daily");
        assert_eq!(s.tz(), &stockholm());
        let s = sched("\t0  3 * *\t* ", Zone::UTC);
        assert_eq!(s.expr(), "0  3 * *\t*");
        assert_eq!(
            s.next_after(utc(2026, 1, 10, 12, 0, 0)),
            Some(utc(2026, 1, 11, 3, 0, 0))
        );
    }

    #[test]
    fn timezones_shift_the_utc_instant() {
        let winter = utc(2026, 1, 10, 12, 0, 0);
        let summer = utc(2026, 7, 10, 12, 0, 0);
        let cases = [
            (Zone::UTC, winter, utc(2026, 1, 11, 3, 0, 0)),
            (stockholm(), winter, utc(2026, 1, 11, 2, 0, 0)),
            (new_york(), winter, utc(2026, 1, 11, 8, 0, 0)),
            (Zone::UTC, summer, utc(2026, 7, 11, 3, 0, 0)),
            (stockholm(), summer, utc(2026, 7, 11, 1, 0, 0)),
            (new_york(), summer, utc(2026, 7, 11, 7, 0, 0)),
        ];
        for (tz, after, expected) in cases {
            assert_eq!(
                sched("0 3 * * *", tz.clone()).next_after(after),
                Some(expected),
                "{tz}"
            );
        }
        assert_eq!(
            local_strings("0 3 * * *", new_york(), winter, 1),
            vec!["2026-01-11T03:00:00-05:00"]
        );
    }

    #[test]
    fn spring_forward_fixed_time_in_gap_runs_once_after_gap() {
        // Stockholm 2026-03-29: 02:00 CET -> 03:00 CEST, 02:30 does not exist.
        assert_eq!(
            fires("30 2 * * *", stockholm(), utc(2026, 3, 27, 12, 0, 0), 4),
            vec![
                utc(2026, 3, 28, 1, 30, 0),
                utc(2026, 3, 29, 1, 0, 0),
                utc(2026, 3, 30, 0, 30, 0),
                utc(2026, 3, 31, 0, 30, 0),
            ]
        );
        assert_eq!(
            local_strings("30 2 * * *", stockholm(), utc(2026, 3, 28, 12, 0, 0), 2),
            vec!["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]
        );
        // Asking again right at the post-gap fire must not fire it twice.
        assert_eq!(
            sched("30 2 * * *", stockholm()).next_after(utc(2026, 3, 29, 1, 0, 0)),
            Some(utc(2026, 3, 30, 0, 30, 0))
        );
    }

    #[test]
    fn spring_forward_several_gap_times_collapse_into_one_fire() {
        assert_eq!(
            fires("0,30 2 * * *", stockholm(), utc(2026, 3, 28, 12, 0, 0), 3),
            vec![
                utc(2026, 3, 29, 1, 0, 0),
                utc(2026, 3, 30, 0, 0, 0),
                utc(2026, 3, 30, 0, 30, 0),
            ]
        );
        // croner itself skips 02:00 here because the hour field has two
        // values; Vixie (and we) still run it after the gap.
        assert_eq!(
            fires("0 2,14 * * *", stockholm(), utc(2026, 3, 28, 12, 0, 0), 3),
            vec![
                utc(2026, 3, 28, 13, 0, 0),
                utc(2026, 3, 29, 1, 0, 0),
                utc(2026, 3, 29, 12, 0, 0),
            ]
        );
    }

    #[test]
    fn spring_forward_hourly_fires_every_real_hour() {
        assert_eq!(
            local_strings("0 * * * *", stockholm(), utc(2026, 3, 28, 22, 30, 0), 4),
            vec![
                "2026-03-29T00:00:00+01:00",
                "2026-03-29T01:00:00+01:00",
                "2026-03-29T03:00:00+02:00",
                "2026-03-29T04:00:00+02:00",
            ]
        );
        assert_eq!(
            fires("0 * * * *", stockholm(), utc(2026, 3, 28, 22, 30, 0), 4),
            vec![
                utc(2026, 3, 28, 23, 0, 0),
                utc(2026, 3, 29, 0, 0, 0),
                utc(2026, 3, 29, 1, 0, 0),
                utc(2026, 3, 29, 2, 0, 0),
            ]
        );
    }

    #[test]
    fn fall_back_fixed_time_runs_once_on_first_pass() {
        // Stockholm 2026-10-25: 03:00 CEST -> 02:00 CET, 02:30 happens twice.
        assert_eq!(
            fires("30 2 * * *", stockholm(), utc(2026, 10, 23, 12, 0, 0), 4),
            vec![
                utc(2026, 10, 24, 0, 30, 0),
                utc(2026, 10, 25, 0, 30, 0),
                utc(2026, 10, 26, 1, 30, 0),
                utc(2026, 10, 27, 1, 30, 0),
            ]
        );
        let s = sched("30 2 * * *", stockholm());
        // Just after the first 02:30 and inside the second pass (e.g. after a
        // daemon restart): no second run, and never an instant in the past
        // (croner alone returns 00:30 UTC for the latter).
        assert_eq!(
            s.next_after(utc(2026, 10, 25, 0, 30, 0)),
            Some(utc(2026, 10, 26, 1, 30, 0))
        );
        assert_eq!(
            s.next_after(utc(2026, 10, 25, 1, 10, 0)),
            Some(utc(2026, 10, 26, 1, 30, 0))
        );
        assert_eq!(
            s.next_after(utc(2026, 10, 25, 0, 10, 0)),
            Some(utc(2026, 10, 25, 0, 30, 0))
        );
    }

    #[test]
    fn fall_back_hourly_fires_every_real_hour_including_both_2am() {
        assert_eq!(
            fires("0 * * * *", stockholm(), utc(2026, 10, 24, 22, 30, 0), 6),
            vec![
                utc(2026, 10, 24, 23, 0, 0),
                utc(2026, 10, 25, 0, 0, 0),
                utc(2026, 10, 25, 1, 0, 0),
                utc(2026, 10, 25, 2, 0, 0),
                utc(2026, 10, 25, 3, 0, 0),
                utc(2026, 10, 25, 4, 0, 0),
            ]
        );
        assert_eq!(
            local_strings("0 * * * *", stockholm(), utc(2026, 10, 24, 23, 30, 0), 3),
            vec![
                "2026-10-25T02:00:00+02:00",
                "2026-10-25T02:00:00+01:00",
                "2026-10-25T03:00:00+01:00",
            ]
        );
    }

    #[test]
    fn fall_back_sub_hourly_stays_in_order_through_repeated_hour() {
        let expected: Vec<DateTime<Utc>> = (0..10)
            .map(|i| utc(2026, 10, 24, 23, 40, 0) + Duration::minutes(20 * i))
            .collect();
        assert_eq!(
            fires(
                "*/20 * * * *",
                stockholm(),
                utc(2026, 10, 24, 23, 30, 0),
                10
            ),
            expected
        );
        // Starting in the first pass must still see the second pass of
        // wall-clock times already passed.
        assert_eq!(
            sched("*/20 * * * *", stockholm()).next_after(utc(2026, 10, 25, 0, 50, 0)),
            Some(utc(2026, 10, 25, 1, 0, 0))
        );
    }

    #[test]
    fn daily_0300_keeps_local_time_across_both_changes() {
        assert_eq!(
            fires("0 3 * * *", stockholm(), utc(2026, 3, 27, 12, 0, 0), 3),
            vec![
                utc(2026, 3, 28, 2, 0, 0),
                utc(2026, 3, 29, 1, 0, 0),
                utc(2026, 3, 30, 1, 0, 0),
            ]
        );
        assert_eq!(
            fires("0 3 * * *", stockholm(), utc(2026, 10, 23, 12, 0, 0), 3),
            vec![
                utc(2026, 10, 24, 1, 0, 0),
                utc(2026, 10, 25, 2, 0, 0),
                utc(2026, 10, 26, 2, 0, 0),
            ]
        );
    }

    #[test]
    fn new_york_transitions() {
        // 2026-03-08 02:00 EST -> 03:00 EDT.
        assert_eq!(
            fires("30 2 * * *", new_york(), utc(2026, 3, 7, 0, 0, 0), 3),
            vec![
                utc(2026, 3, 7, 7, 30, 0),
                utc(2026, 3, 8, 7, 0, 0),
                utc(2026, 3, 9, 6, 30, 0),
            ]
        );
        // 2026-11-01 02:00 EDT -> 01:00 EST, 01:30 happens twice.
        assert_eq!(
            fires("30 1 * * *", new_york(), utc(2026, 10, 31, 12, 0, 0), 2),
            vec![utc(2026, 11, 1, 5, 30, 0), utc(2026, 11, 2, 6, 30, 0)]
        );
    }

    #[test]
    fn day_of_month_and_day_of_week_use_vixie_rules() {
        // Both restricted: the 13th OR any Friday.
        assert_eq!(
            fires("0 0 13 * 5", Zone::UTC, utc(2026, 1, 1, 0, 0, 0), 4),
            vec![
                utc(2026, 1, 2, 0, 0, 0),
                utc(2026, 1, 9, 0, 0, 0),
                utc(2026, 1, 13, 0, 0, 0),
                utc(2026, 1, 16, 0, 0, 0),
            ]
        );
        // A field starting with `*` makes Vixie AND them: odd-day Mondays.
        assert_eq!(
            fires("0 0 */2 * mon", Zone::UTC, utc(2026, 1, 1, 0, 0, 0), 4),
            vec![
                utc(2026, 1, 5, 0, 0, 0),
                utc(2026, 1, 19, 0, 0, 0),
                utc(2026, 2, 9, 0, 0, 0),
                utc(2026, 2, 23, 0, 0, 0),
            ]
        );
        // Only one restricted: that one alone.
        assert_eq!(
            fires("0 0 * * 1", Zone::UTC, utc(2026, 1, 1, 0, 0, 0), 2),
            vec![utc(2026, 1, 5, 0, 0, 0), utc(2026, 1, 12, 0, 0, 0)]
        );
    }

    #[test]
    fn period_is_min_gap_between_upcoming_fires() {
        let after = utc(2026, 1, 10, 12, 0, 0);
        let cases = [
            ("0 * * * *", Duration::hours(1)),
            ("@daily", Duration::days(1)),
            ("0 3 * * 1", Duration::weeks(1)),
            ("*/10 * * * * *", Duration::seconds(10)),
        ];
        for (expr, expected) in cases {
            assert_eq!(
                sched(expr, stockholm()).period(after),
                Some(expected),
                "{expr}"
            );
        }
        // Spanning spring forward, a daily job's shortest gap is 23 hours.
        assert_eq!(
            sched("0 3 * * *", stockholm()).period(utc(2026, 3, 27, 12, 0, 0)),
            Some(Duration::hours(23))
        );
    }

    #[test]
    fn upcoming_returns_requested_count_in_schedule_tz() {
        let s = sched("0 12 * * *", stockholm());
        assert!(s.upcoming(utc(2026, 1, 10, 0, 0, 0), 0).is_empty());
        assert_eq!(
            s.upcoming(utc(2026, 1, 10, 0, 0, 0), 2)
                .iter()
                .map(|t| t.to_rfc3339())
                .collect::<Vec<_>>(),
            vec!["2026-01-10T12:00:00+01:00", "2026-01-11T12:00:00+01:00"]
        );
    }

    #[test]
    fn wrong_field_count_errors() {
        let tail = "expected 5 fields (minute hour day month weekday), 6 fields (with seconds first) or one of @hourly, @daily, @weekly, @monthly, @yearly";
        assert_eq!(
            parse_err("0 3 * *"),
            format!("invalid schedule \"0 3 * *\": {tail}")
        );
        assert_eq!(parse_err("   "), format!("invalid schedule \"\": {tail}"));
        assert_eq!(
            parse_err("0 0 0 1 1 * 2030"),
            format!("invalid schedule \"0 0 0 1 1 * 2030\": {tail}")
        );
        assert_eq!(
            Schedule::parse("0 3 * *", Zone::UTC).unwrap_err(),
            ScheduleError::FieldCount {
                expr: "0 3 * *".to_owned()
            }
        );
    }

    #[test]
    fn field_errors_name_the_field_and_accepted_values() {
        let cases = [
            (
                "0 25 * * *",
                "invalid schedule \"0 25 * * *\": hour field \"25\": value out of range (accepted: 0-23)",
            ),
            (
                "61 * * * *",
                "invalid schedule \"61 * * * *\": minute field \"61\": value out of range (accepted: 0-59)",
            ),
            (
                "60 0 0 * * *",
                "invalid schedule \"60 0 0 * * *\": second field \"60\": value out of range (accepted: 0-59)",
            ),
            (
                "*/0 * * * *",
                "invalid schedule \"*/0 * * * *\": minute field \"*/0\": step cannot be zero (accepted: 0-59)",
            ),
            (
                "0 0 20-10 * *",
                "invalid schedule \"0 0 20-10 * *\": day-of-month field \"20-10\": range is reversed or out of range (accepted: 1-31)",
            ),
            (
                "0 0 * 13 *",
                "invalid schedule \"0 0 * 13 *\": month field \"13\": value out of range (accepted: 1-12 or jan-dec)",
            ),
            (
                "0 0 * * mo",
                "invalid schedule \"0 0 * * mo\": day-of-week field \"mo\": unexpected character 'm' (accepted: 0-7 or sun-sat)",
            ),
            (
                "0 0 * * 8",
                "invalid schedule \"0 0 * * 8\": day-of-week field \"8\": value out of range (accepted: 0-7 or sun-sat)",
            ),
        ];
        for (expr, expected) in cases {
            assert_eq!(parse_err(expr), expected);
        }
    }

    #[test]
    fn alias_and_never_fires_errors() {
        assert_eq!(
            parse_err("@fortnightly"),
            "invalid schedule \"@fortnightly\": unknown alias, expected one of @hourly, @daily, @midnight, @weekly, @monthly, @yearly, @annually"
        );
        assert_eq!(
            parse_err("0 0 31 2 *"),
            "invalid schedule \"0 0 31 2 *\": never fires, no date matches its day-of-month, month and day-of-week fields"
        );
        // Leap days are rare, not impossible.
        assert_eq!(
            sched("0 0 29 2 *", Zone::UTC).next_after(utc(2026, 1, 1, 0, 0, 0)),
            Some(utc(2028, 2, 29, 0, 0, 0))
        );
    }

    #[test]
    fn timezone_parsing() {
        assert_eq!(parse_timezone("Europe/Stockholm"), Ok(stockholm()));
        assert_eq!(parse_timezone(" UTC "), Ok(Zone::UTC));
        assert_eq!(
            tz_err("Europe/Stokholm"),
            "unknown timezone \"Europe/Stokholm\": use an IANA name such as \"Europe/Stockholm\" or \"UTC\" (did you mean \"Europe/Stockholm\"?)"
        );
        assert_eq!(
            tz_err("america/new york"),
            "unknown timezone \"america/new york\": use an IANA name such as \"Europe/Stockholm\" or \"UTC\" (did you mean \"America/New_York\"?)"
        );
        assert_eq!(
            tz_err("Stockholm"),
            "unknown timezone \"Stockholm\": use an IANA name such as \"Europe/Stockholm\" or \"UTC\" (did you mean \"Europe/Stockholm\"?)"
        );
        assert_eq!(
            tz_err("Mars/Olympus_Mons"),
            "unknown timezone \"Mars/Olympus_Mons\": use an IANA name such as \"Europe/Stockholm\" or \"UTC\""
        );
        assert_eq!(
            parse_timezone(""),
            Err(ScheduleError::UnknownTimezone {
                name: String::new(),
                suggestion: None
            })
        );
    }
}
