//! Retention: deciding which backups of one destination to keep.
//!
//! [`apply`] is a pure function of (backups, policy, timezone, now) so that a
//! dry run, the real prune and the tests all see exactly the same decisions.
//! The semantics follow restic's `forget`, with a few deliberate safety
//! deviations:
//!
//! * Backups are ordered newest first; equal timestamps are ordered by id
//!   descending so the result never depends on input order.
//! * `keep_last = N` keeps the N newest backups.
//! * `keep_hourly/daily/weekly/monthly/yearly = N`: walking newest to oldest,
//!   a backup is kept by that rule when its bucket differs from the bucket of
//!   the previous backup kept by the same rule, until N buckets are taken. In
//!   effect the newest backup of each of the N most recent non-empty buckets
//!   is kept; empty periods do not use up a slot (restic semantics). Every
//!   rule looks at every backup independently, so one backup can be kept by
//!   several rules.
//! * Buckets are computed in the job's timezone, because "one per day" is
//!   meant in the user's days, not UTC's. Day, month and year are the local
//!   calendar values; week is the ISO 8601 (year, week) pair, so the days
//!   around New Year land in the correct week. The hour bucket also includes
//!   the UTC offset: the hour repeated when DST ends is two real hours, and
//!   restic's wall-clock key would merge them into one.
//! * `max_age = D` keeps every backup with `time >= now - D`. Unlike restic's
//!   `--keep-within` it is measured from `now`, not from the newest backup.
//! * `Some(0)` for any rule is a rule that takes nothing; it is not "unset".
//!   Only a policy with every field `None` keeps everything (reason `"all"`).
//! * Backups newer than `now` are kept with reason `"future"` and take no
//!   part in the rules: a skewed clock on the host that made them must not
//!   cause deletions, nor may it push real recent backups out of
//!   `keep_last`/bucket slots.
//! * The newest backup that is not in the future is always kept (reason
//!   `"newest"` if no rule kept it), whatever the policy says, so that a
//!   misconfigured policy can never leave a destination with no backup at
//!   all. The newest backup overall is kept too: either it is that one or it
//!   is a future one.
//! * `reasons` lists every rule that kept a backup, in the fixed order
//!   `last, hourly, daily, weekly, monthly, yearly, max_age`, then
//!   `future` / `newest`; it is empty exactly when the backup is removed.
//!   [`hold_minimum`] and [`hold_locked`] then add `min_storage` / `locked`
//!   to a backup the rules would remove.

use crate::zone::Zone;
use chrono::{DateTime, Datelike, Offset, TimeDelta, Timelike, Utc};

/// Policy for one destination. All None = keep everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RetentionPolicy {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    pub max_age: Option<std::time::Duration>,
}

impl RetentionPolicy {
    /// True when no rule is set. `Some(0)` counts as set.
    pub fn is_keep_all(&self) -> bool {
        self.counted_rules().iter().all(|(_, v)| v.is_none()) && self.max_age.is_none()
    }

    /// Human-readable summary for logs and `status` output, e.g.
    /// `"keep_daily=7 keep_weekly=4 keep_monthly=6 max_age=30d"` or `"keep all"`.
    pub fn describe(&self) -> String {
        if self.is_keep_all() {
            return "keep all".to_string();
        }
        let mut parts: Vec<String> = self
            .counted_rules()
            .iter()
            .filter_map(|(name, v)| v.map(|n| format!("keep_{name}={n}")))
            .collect();
        if let Some(d) = self.max_age {
            parts.push(format!("max_age={}", format_duration(d)));
        }
        parts.join(" ")
    }

    fn counted_rules(&self) -> [(&'static str, Option<u32>); 6] {
        [
            ("last", self.keep_last),
            ("hourly", self.keep_hourly),
            ("daily", self.keep_daily),
            ("weekly", self.keep_weekly),
            ("monthly", self.keep_monthly),
            ("yearly", self.keep_yearly),
        ]
    }
}

/// Largest exact unit wins so config round-trips read naturally ("30d", not
/// "2592000s"); sub-second durations fall back to fractional seconds.
fn format_duration(d: std::time::Duration) -> String {
    const HOUR: u64 = 3600;
    const DAY: u64 = 24 * HOUR;
    let secs = d.as_secs();
    if d.subsec_nanos() != 0 {
        let mut s = format!("{secs}.{:09}", d.subsec_nanos());
        while s.ends_with('0') {
            s.pop();
        }
        s.push('s');
        return s;
    }
    if secs != 0 && secs.is_multiple_of(DAY) {
        format!("{}d", secs / DAY)
    } else if secs != 0 && secs.is_multiple_of(HOUR) {
        format!("{}h", secs / HOUR)
    } else {
        format!("{secs}s")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub id: String,
    pub time: DateTime<Utc>,
    pub keep: bool,
    /// why kept, e.g. ["last", "daily", "weekly"], or ["newest"] / ["all"]; empty when removed
    pub reasons: Vec<&'static str>,
    /// Its S3 Object Lock retain-until date, where one was read and has not passed.
    pub locked_until: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy)]
enum Period {
    Hour,
    Day,
    Week,
    Month,
    Year,
}

/// Bucket identity; only equality matters, so unused slots are zero.
type BucketKey = (i32, u32, u32, i32);

impl Period {
    fn key(self, t: DateTime<Utc>, tz: &Zone) -> BucketKey {
        let local = t.with_timezone(tz);
        match self {
            Period::Hour => (
                local.year(),
                local.ordinal(),
                local.hour(),
                local.offset().fix().local_minus_utc(),
            ),
            Period::Day => (local.year(), local.ordinal(), 0, 0),
            Period::Week => {
                let w = local.iso_week();
                (w.year(), w.week(), 0, 0)
            }
            Period::Month => (local.year(), local.month(), 0, 0),
            Period::Year => (local.year(), 0, 0, 0),
        }
    }
}

/// `backups`: (id, time) in any order. Returns one Decision per backup, newest first.
/// Buckets (hour/day/ISO week/month/year) are computed in `tz` (the job's timezone).
pub fn apply(
    backups: &[(String, DateTime<Utc>)],
    policy: &RetentionPolicy,
    tz: &Zone,
    now: DateTime<Utc>,
) -> Vec<Decision> {
    let mut decisions: Vec<Decision> = backups
        .iter()
        .map(|(id, time)| Decision {
            id: id.clone(),
            time: *time,
            keep: false,
            reasons: Vec::new(),
            locked_until: None,
        })
        .collect();
    decisions.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.id.cmp(&a.id)));

    if policy.is_keep_all() {
        for d in &mut decisions {
            d.keep = true;
            d.reasons.push("all");
        }
        return decisions;
    }

    // Indices (newest first) of the backups the rules are allowed to see.
    let mut eligible = Vec::with_capacity(decisions.len());
    for (i, d) in decisions.iter_mut().enumerate() {
        if d.time > now {
            d.reasons.push("future");
        } else {
            eligible.push(i);
        }
    }

    if let Some(n) = policy.keep_last {
        for &i in eligible.iter().take(to_usize(n)) {
            decisions[i].reasons.push("last");
        }
    }

    let bucket_rules = [
        (policy.keep_hourly, Period::Hour, "hourly"),
        (policy.keep_daily, Period::Day, "daily"),
        (policy.keep_weekly, Period::Week, "weekly"),
        (policy.keep_monthly, Period::Month, "monthly"),
        (policy.keep_yearly, Period::Year, "yearly"),
    ];
    for (count, period, reason) in bucket_rules {
        let Some(mut remaining) = count else { continue };
        let mut last_kept: Option<BucketKey> = None;
        for &i in &eligible {
            if remaining == 0 {
                break;
            }
            let key = period.key(decisions[i].time, tz);
            if last_kept != Some(key) {
                decisions[i].reasons.push(reason);
                last_kept = Some(key);
                remaining -= 1;
            }
        }
    }

    if let Some(max_age) = policy.max_age {
        // A max_age too large to represent reaches before any possible
        // timestamp, so it keeps everything rather than failing.
        let cutoff = TimeDelta::from_std(max_age)
            .ok()
            .and_then(|age| now.checked_sub_signed(age));
        for &i in &eligible {
            if cutoff.is_none_or(|c| decisions[i].time >= c) {
                decisions[i].reasons.push("max_age");
            }
        }
    }

    if let Some(&newest) = eligible.first()
        && decisions[newest].reasons.is_empty()
    {
        decisions[newest].reasons.push("newest");
    }

    for d in &mut decisions {
        d.keep = !d.reasons.is_empty();
    }
    decisions
}

/// About how far back `policy` keeps backups made every `gap`: the age of the oldest
/// backup its rules would keep once enough backups exist. None: forever (keep all, or a
/// `max_age` too large to represent).
pub fn horizon(policy: &RetentionPolicy, gap: TimeDelta) -> Option<TimeDelta> {
    if policy.is_keep_all() {
        return None;
    }
    let times = |n: Option<u32>, period: TimeDelta| -> TimeDelta {
        n.map(|n| period.max(gap) * i32::try_from(n).unwrap_or(i32::MAX))
            .unwrap_or_default()
    };
    let rules = [
        times(policy.keep_last, gap),
        times(policy.keep_hourly, TimeDelta::hours(1)),
        times(policy.keep_daily, TimeDelta::days(1)),
        times(policy.keep_weekly, TimeDelta::weeks(1)),
        times(policy.keep_monthly, TimeDelta::days(30)),
        times(policy.keep_yearly, TimeDelta::days(365)),
    ];
    let age = match policy.max_age {
        Some(a) => Some(TimeDelta::from_std(a).ok()?),
        None => None,
    };
    rules.into_iter().chain(age).max()
}

/// Keep (reason `"min_storage"`) every backup that `decisions` would remove and that is
/// younger than `min` at `now`: archive storage classes bill a minimum storage duration, so
/// deleting earlier saves nothing and loses a backup. Pure, like [`apply`].
/// `apply`, then `hold_minimum` when the destination's class has a minimum storage
/// duration: what a run's retention (and `run --dry-run`) decides.
pub fn decide(
    backups: &[(String, DateTime<Utc>)],
    policy: &RetentionPolicy,
    tz: &Zone,
    min_storage: Option<TimeDelta>,
    now: DateTime<Utc>,
) -> Vec<Decision> {
    let mut decisions = apply(backups, policy, tz, now);
    if let Some(min) = min_storage {
        hold_minimum(&mut decisions, min, now);
    }
    decisions
}

pub fn hold_minimum(decisions: &mut [Decision], min: TimeDelta, now: DateTime<Utc>) {
    for d in decisions.iter_mut().filter(|d| !d.keep) {
        if now.signed_duration_since(d.time) < min {
            d.keep = true;
            d.reasons.push("min_storage");
        }
    }
}

/// Keep (reason `"locked"`) every backup that `decisions` would remove and whose Object
/// Lock has not passed at `now`: `locks` holds (id, retain-until) as read from the store.
/// A delete would not fail on a versioned bucket: it would hide the backup behind a delete
/// marker while its bytes stay, billed, until the lock ends. So retention plans around the
/// lock instead, and removes the backup on the first run after it. Pure, like [`apply`].
pub fn hold_locked(
    decisions: &mut [Decision],
    locks: &[(String, DateTime<Utc>)],
    now: DateTime<Utc>,
) {
    for d in decisions.iter_mut() {
        let until = locks
            .iter()
            .filter(|(id, until)| *id == d.id && *until > now)
            .map(|(_, until)| *until)
            .max();
        let Some(until) = until else { continue };
        d.locked_until = Some(until);
        if !d.keep {
            d.keep = true;
            d.reasons.push("locked");
        }
    }
}

/// Counts beyond the number of backups behave identically, so saturating on
/// (hypothetical) 16-bit targets cannot change a decision.
fn to_usize(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::time::Duration;

    const NOW: &str = "2025-06-15T12:00:00Z";
    const UTC: Zone = Zone::UTC;

    fn sto() -> Zone {
        Zone::get("Europe/Stockholm").unwrap()
    }

    fn ts(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .unwrap_or_else(|e| panic!("bad timestamp {s}: {e}"))
            .with_timezone(&Utc)
    }

    fn now() -> DateTime<Utc> {
        ts(NOW)
    }

    fn backups(list: &[(&str, &str)]) -> Vec<(String, DateTime<Utc>)> {
        list.iter().map(|(id, t)| (id.to_string(), ts(t))).collect()
    }

    fn kept(ds: &[Decision]) -> BTreeSet<String> {
        ds.iter().filter(|d| d.keep).map(|d| d.id.clone()).collect()
    }

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn minimum_storage_duration_holds_young_backups() {
        // Daily backups for 200 days before NOW, keep_last = 3, on a 180-day class.
        let list: Vec<(String, DateTime<Utc>)> = (0..200)
            .map(|d| (format!("b{d:03}"), now() - TimeDelta::days(d)))
            .collect();
        let policy = RetentionPolicy {
            keep_last: Some(3),
            ..RetentionPolicy::default()
        };
        let table = [
            // (minimum days, backups kept)
            (0, 3),
            (30, 30),
            (90, 90),
            (180, 180),
        ];
        for (days, n) in table {
            let mut ds = apply(&list, &policy, &UTC, now());
            hold_minimum(&mut ds, TimeDelta::days(days), now());
            assert_eq!(ds.iter().filter(|d| d.keep).count(), n, "{days} days");
            // The oldest held one is just younger than the minimum; the rules' reasons
            // stay as they were.
            let held: Vec<&Decision> = ds.iter().filter(|d| d.reasons == ["min_storage"]).collect();
            assert_eq!(held.len(), n.saturating_sub(3), "{days} days");
            assert!(held.iter().all(|d| now() - d.time < TimeDelta::days(days)));
            assert_eq!(ds[0].reasons, ["last"]);
        }
        // Exactly at the minimum a backup may go; one second younger it stays.
        let edge = backups(&[
            ("new", NOW),
            ("at", "2025-03-17T12:00:00Z"),
            ("under", "2025-03-17T12:00:01Z"),
        ]);
        let mut ds = apply(&edge, &policy_last(1), &UTC, now());
        hold_minimum(&mut ds, TimeDelta::days(90), now());
        assert_eq!(kept(&ds), set(&["new", "under"]));
    }

    #[test]
    fn locked_backups_are_kept_until_their_lock_passes() {
        let list = backups(&[
            ("d", "2025-06-15T11:00:00Z"),
            ("c", "2025-06-14T12:00:00Z"),
            ("b", "2025-06-13T12:00:00Z"),
            ("a", "2025-06-01T12:00:00Z"),
        ]);
        type Row<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str], &'a [&'a str]);
        let table: [Row; 6] = [
            // (locks, kept, kept because locked)
            (&[], &["d"], &[]),
            // Locked until after now: kept, whatever keep_last says.
            (&[("b", "2025-06-20T00:00:00Z")], &["d", "b"], &["b"]),
            // A lock that passed, or ends exactly now, holds nothing.
            (&[("b", "2025-06-15T11:59:59Z")], &["d"], &[]),
            (&[("b", NOW)], &["d"], &[]),
            (&[("b", "2025-06-15T12:00:01Z")], &["d", "b"], &["b"]),
            // The rules keep d anyway: its lock is noted, not a reason; a and c held.
            (
                &[
                    ("a", "2026-01-01T00:00:00Z"),
                    ("c", "2025-07-01T00:00:00Z"),
                    ("d", "2025-07-15T00:00:00Z"),
                    ("x", "2030-01-01T00:00:00Z"),
                ],
                &["d", "c", "a"],
                &["c", "a"],
            ),
        ];
        for (locks, want_kept, want_locked) in table {
            let locks: Vec<(String, DateTime<Utc>)> = locks
                .iter()
                .map(|(id, t)| (id.to_string(), ts(t)))
                .collect();
            let mut ds = decide(&list, &policy_last(1), &UTC, None, now());
            hold_locked(&mut ds, &locks, now());
            assert_eq!(kept(&ds), set(want_kept), "{locks:?}");
            let held: Vec<&str> = ds
                .iter()
                .filter(|d| d.reasons.contains(&"locked"))
                .map(|d| d.id.as_str())
                .collect();
            assert_eq!(held, want_locked, "{locks:?}");
            for d in &ds {
                let lock = locks.iter().find(|(id, _)| *id == d.id).map(|(_, t)| *t);
                assert_eq!(d.locked_until, lock.filter(|t| *t > now()), "{}", d.id);
                if d.reasons.contains(&"locked") {
                    assert_eq!(d.reasons, ["locked"], "{}", d.id);
                }
            }
        }
        // Held by a minimum storage duration already: the lock is noted, not a second reason.
        let mut ds = decide(
            &list,
            &policy_last(1),
            &UTC,
            Some(TimeDelta::days(7)),
            now(),
        );
        hold_locked(&mut ds, &[("b".into(), ts("2025-06-20T00:00:00Z"))], now());
        let b = ds.iter().find(|d| d.id == "b").map(|d| d.reasons.clone());
        assert_eq!(b, Some(vec!["min_storage"]));
        let a = ds.iter().find(|d| d.id == "a").map(|d| d.keep);
        assert_eq!(a, Some(false));
    }

    #[test]
    fn horizons() {
        let day = TimeDelta::days(1);
        let p = |f: fn(&mut RetentionPolicy)| {
            let mut p = RetentionPolicy::default();
            f(&mut p);
            p
        };
        let table: [(RetentionPolicy, TimeDelta, Option<TimeDelta>); 8] = [
            (RetentionPolicy::default(), day, None),
            (policy_last(5), day, Some(day * 5)),
            (
                policy_last(5),
                TimeDelta::hours(1),
                Some(TimeDelta::hours(5)),
            ),
            (p(|p| p.keep_daily = Some(7)), day, Some(day * 7)),
            // Weekly backups under keep_daily = 7: seven of them, seven weeks.
            (p(|p| p.keep_daily = Some(7)), day * 7, Some(day * 49)),
            (
                p(|p| {
                    p.keep_daily = Some(7);
                    p.keep_monthly = Some(6);
                }),
                day,
                Some(day * 180),
            ),
            (p(|p| p.keep_yearly = Some(2)), day, Some(day * 730)),
            (
                p(|p| p.max_age = Some(Duration::from_secs(100 * 86_400))),
                day,
                Some(day * 100),
            ),
        ];
        for (policy, gap, want) in table {
            assert_eq!(horizon(&policy, gap), want, "{}", policy.describe());
        }
    }

    fn policy_last(n: u32) -> RetentionPolicy {
        RetentionPolicy {
            keep_last: Some(n),
            ..RetentionPolicy::default()
        }
    }

    fn reasons_of<'a>(ds: &'a [Decision], id: &str) -> &'a [&'static str] {
        &ds.iter()
            .find(|d| d.id == id)
            .unwrap_or_else(|| panic!("no decision for {id}"))
            .reasons
    }

    /// Structural invariants every result must satisfy.
    fn check_invariants(input: &[(String, DateTime<Utc>)], ds: &[Decision], ctx: &str) {
        assert_eq!(ds.len(), input.len(), "{ctx}: one decision per backup");
        for w in ds.windows(2) {
            assert!(
                (w[0].time, &w[0].id) > (w[1].time, &w[1].id),
                "{ctx}: not newest first: {} then {}",
                w[0].id,
                w[1].id
            );
        }
        for d in ds {
            assert_eq!(d.keep, !d.reasons.is_empty(), "{ctx}: {}", d.id);
        }
        if let Some(first) = ds.first() {
            assert!(first.keep, "{ctx}: newest must be kept");
        }
    }

    fn daily_backups(days: i64) -> Vec<(String, DateTime<Utc>)> {
        let newest = ts("2025-06-15T02:00:00Z");
        (0..days)
            .map(|d| {
                let t = newest - TimeDelta::days(d);
                (format!("b-{}", t.format("%Y-%m-%d")), t)
            })
            .collect()
    }

    struct Case {
        name: &'static str,
        tz: Zone,
        policy: RetentionPolicy,
        backups: Vec<(String, DateTime<Utc>)>,
        kept: &'static [&'static str],
    }

    fn cases() -> Vec<Case> {
        [counting_cases(), edge_cases(), zone_cases(), future_cases()]
            .into_iter()
            .flatten()
            .collect()
    }

    /// Counting and calendar buckets in UTC.
    fn counting_cases() -> Vec<Case> {
        let p = RetentionPolicy::default;
        vec![
            Case {
                name: "keep_last 2",
                tz: UTC,
                policy: RetentionPolicy {
                    keep_last: Some(2),
                    ..p()
                },
                backups: backups(&[
                    ("a", "2025-06-15T10:00:00Z"),
                    ("b", "2025-06-15T09:00:00Z"),
                    ("c", "2025-06-15T08:00:00Z"),
                    ("d", "2025-06-14T08:00:00Z"),
                ]),
                kept: &["a", "b"],
            },
            Case {
                name: "keep_last larger than count keeps all",
                tz: UTC,
                policy: RetentionPolicy {
                    keep_last: Some(10),
                    ..p()
                },
                backups: backups(&[("a", "2025-06-15T10:00:00Z"), ("b", "2025-06-14T10:00:00Z")]),
                kept: &["a", "b"],
            },
            Case {
                name: "GFS daily7 weekly4 monthly6 over 400 days",
                tz: UTC,
                policy: RetentionPolicy {
                    keep_daily: Some(7),
                    keep_weekly: Some(4),
                    keep_monthly: Some(6),
                    ..p()
                },
                backups: daily_backups(400),
                // 2025-06-15 is a Sunday, so the weekly picks are Sundays.
                kept: &[
                    // daily
                    "b-2025-06-15",
                    "b-2025-06-14",
                    "b-2025-06-13",
                    "b-2025-06-12",
                    "b-2025-06-11",
                    "b-2025-06-10",
                    "b-2025-06-09",
                    // weekly (06-15 already counted)
                    "b-2025-06-08",
                    "b-2025-06-01",
                    "b-2025-05-25",
                    // monthly: last day of each month (06-15 already counted)
                    "b-2025-05-31",
                    "b-2025-04-30",
                    "b-2025-03-31",
                    "b-2025-02-28",
                    "b-2025-01-31",
                ],
            },
            Case {
                name: "yearly stops when buckets run out",
                tz: UTC,
                policy: RetentionPolicy {
                    keep_yearly: Some(5),
                    ..p()
                },
                backups: daily_backups(400),
                kept: &["b-2025-06-15", "b-2024-12-31"],
            },
            Case {
                name: "hourly keeps newest in each hour",
                tz: UTC,
                policy: RetentionPolicy {
                    keep_hourly: Some(3),
                    ..p()
                },
                backups: backups(&[
                    ("h11-40", "2025-06-15T11:40:00Z"),
                    ("h11-10", "2025-06-15T11:10:00Z"),
                    ("h10-55", "2025-06-15T10:55:00Z"),
                    ("h10-35", "2025-06-15T10:35:00Z"),
                    ("h10-05", "2025-06-15T10:05:00Z"),
                    ("h09-20", "2025-06-15T09:20:00Z"),
                    ("h08-59", "2025-06-15T08:59:00Z"),
                    ("h08-01", "2025-06-15T08:01:00Z"),
                ]),
                kept: &["h11-40", "h10-55", "h09-20"],
            },
            Case {
                name: "hourly skips empty hours without using a slot",
                tz: UTC,
                policy: RetentionPolicy {
                    keep_hourly: Some(2),
                    ..p()
                },
                backups: backups(&[
                    ("a", "2025-06-15T11:30:00Z"),
                    ("b", "2025-06-15T03:30:00Z"),
                    ("c", "2025-06-15T03:10:00Z"),
                ]),
                kept: &["a", "b"],
            },
        ]
    }

    /// Ages, zero rules, empty policies and input order.
    fn edge_cases() -> Vec<Case> {
        let p = RetentionPolicy::default;
        vec![
            Case {
                name: "max_age 30d is inclusive at the cutoff",
                tz: UTC,
                policy: RetentionPolicy {
                    max_age: Some(Duration::from_secs(30 * 86400)),
                    ..p()
                },
                backups: backups(&[
                    ("d1", "2025-06-14T12:00:00Z"),
                    ("d29", "2025-05-17T12:00:00Z"),
                    ("d30", "2025-05-16T12:00:00Z"),
                    ("d30+1s", "2025-05-16T11:59:59Z"),
                    ("d60", "2025-04-16T12:00:00Z"),
                ]),
                kept: &["d1", "d29", "d30"],
            },
            Case {
                name: "max_age combined with keep_last",
                tz: UTC,
                policy: RetentionPolicy {
                    keep_last: Some(1),
                    max_age: Some(Duration::from_secs(2 * 3600)),
                    ..p()
                },
                backups: backups(&[
                    ("a", "2025-06-15T11:00:00Z"),
                    ("b", "2025-06-15T10:00:00Z"),
                    ("c", "2025-06-15T09:59:00Z"),
                ]),
                kept: &["a", "b"],
            },
            Case {
                name: "keep_last 0 still keeps newest",
                tz: UTC,
                policy: RetentionPolicy {
                    keep_last: Some(0),
                    ..p()
                },
                backups: backups(&[
                    ("a", "2025-06-15T10:00:00Z"),
                    ("b", "2025-06-14T10:00:00Z"),
                    ("c", "2025-06-13T10:00:00Z"),
                ]),
                kept: &["a"],
            },
            Case {
                name: "all bucket rules 0 still keep newest",
                tz: UTC,
                policy: RetentionPolicy {
                    keep_hourly: Some(0),
                    keep_daily: Some(0),
                    keep_weekly: Some(0),
                    keep_monthly: Some(0),
                    keep_yearly: Some(0),
                    ..p()
                },
                backups: backups(&[("a", "2025-06-15T10:00:00Z"), ("b", "2025-06-14T10:00:00Z")]),
                kept: &["a"],
            },
            Case {
                name: "max_age excluding everything still keeps newest",
                tz: UTC,
                policy: RetentionPolicy {
                    max_age: Some(Duration::from_secs(3600)),
                    ..p()
                },
                backups: backups(&[
                    ("a", "2025-06-10T10:00:00Z"),
                    ("b", "2025-06-09T10:00:00Z"),
                    ("c", "2025-06-08T10:00:00Z"),
                ]),
                kept: &["a"],
            },
            Case {
                name: "empty policy keeps everything",
                tz: UTC,
                policy: p(),
                backups: backups(&[
                    ("a", "2025-06-15T10:00:00Z"),
                    ("b", "2020-01-01T00:00:00Z"),
                    ("c", "2030-01-01T00:00:00Z"),
                ]),
                kept: &["a", "b", "c"],
            },
            Case {
                name: "unsorted input",
                tz: UTC,
                policy: RetentionPolicy {
                    keep_last: Some(2),
                    ..p()
                },
                backups: backups(&[
                    ("c", "2025-06-13T10:00:00Z"),
                    ("a", "2025-06-15T10:00:00Z"),
                    ("d", "2025-06-12T10:00:00Z"),
                    ("b", "2025-06-14T10:00:00Z"),
                ]),
                kept: &["a", "b"],
            },
            Case {
                name: "equal times break ties by id descending",
                tz: UTC,
                policy: RetentionPolicy {
                    keep_last: Some(1),
                    keep_daily: Some(1),
                    ..p()
                },
                backups: backups(&[
                    ("x1", "2025-06-15T10:00:00Z"),
                    ("x2", "2025-06-15T10:00:00Z"),
                    ("x0", "2025-06-15T09:00:00Z"),
                ]),
                kept: &["x2"],
            },
            // 22:30Z is 00:30 next day in Stockholm (CEST, +2), 21:30Z is 23:30 same day.
        ]
    }

    /// Buckets in the policy's time zone, across DST and the ISO new year.
    fn zone_cases() -> Vec<Case> {
        let p = RetentionPolicy::default;
        vec![
            Case {
                name: "daily bucket uses local day (Stockholm)",
                tz: sto(),
                policy: RetentionPolicy {
                    keep_daily: Some(2),
                    ..p()
                },
                backups: backups(&[
                    ("a", "2025-06-14T22:30:00Z"),
                    ("b", "2025-06-14T21:30:00Z"),
                    ("c", "2025-06-14T10:00:00Z"),
                    ("d", "2025-06-13T12:00:00Z"),
                ]),
                kept: &["a", "b"],
            },
            Case {
                name: "same backups, daily bucket in UTC",
                tz: UTC,
                policy: RetentionPolicy {
                    keep_daily: Some(2),
                    ..p()
                },
                backups: backups(&[
                    ("a", "2025-06-14T22:30:00Z"),
                    ("b", "2025-06-14T21:30:00Z"),
                    ("c", "2025-06-14T10:00:00Z"),
                    ("d", "2025-06-13T12:00:00Z"),
                ]),
                kept: &["a", "d"],
            },
            // Sunday 2025-06-08 22:30Z is Monday 00:30 local: a new ISO week.
            Case {
                name: "weekly bucket uses local week (Stockholm)",
                tz: sto(),
                policy: RetentionPolicy {
                    keep_weekly: Some(2),
                    ..p()
                },
                backups: backups(&[
                    ("a", "2025-06-08T22:30:00Z"),
                    ("b", "2025-06-08T21:30:00Z"),
                    ("c", "2025-06-08T10:00:00Z"),
                    ("d", "2025-06-01T10:00:00Z"),
                ]),
                kept: &["a", "b"],
            },
            // 2024-12-30 (Mon) belongs to ISO week 2025-W01, same as 2025-01-02.
            Case {
                name: "weekly uses ISO year across New Year",
                tz: UTC,
                policy: RetentionPolicy {
                    keep_weekly: Some(2),
                    ..p()
                },
                backups: backups(&[
                    ("jan02", "2025-01-02T12:00:00Z"),
                    ("dec30", "2024-12-30T12:00:00Z"),
                    ("dec29", "2024-12-29T12:00:00Z"),
                    ("dec28", "2024-12-28T12:00:00Z"),
                ]),
                kept: &["jan02", "dec29"],
            },
            // DST ends 2024-10-27 01:00Z: local 03:00 CEST -> 02:00 CET, so local
            // 02:xx happens twice. They are two real hours and two buckets.
            Case {
                name: "hourly across DST end (Stockholm)",
                tz: sto(),
                policy: RetentionPolicy {
                    keep_hourly: Some(3),
                    ..p()
                },
                backups: backups(&[
                    ("cet03-10", "2024-10-27T02:10:00Z"),
                    ("cet02-50", "2024-10-27T01:50:00Z"),
                    ("cet02-10", "2024-10-27T01:10:00Z"),
                    ("cest02-50", "2024-10-27T00:50:00Z"),
                    ("cest02-10", "2024-10-27T00:10:00Z"),
                    ("cest01-30", "2024-10-26T23:30:00Z"),
                ]),
                kept: &["cet03-10", "cet02-50", "cest02-50"],
            },
            // The 25-hour local day 2024-10-27 is one daily bucket.
            Case {
                name: "daily on 25h DST-end day (Stockholm)",
                tz: sto(),
                policy: RetentionPolicy {
                    keep_daily: Some(3),
                    ..p()
                },
                backups: backups(&[
                    ("28th-00-30", "2024-10-27T23:30:00Z"),
                    ("27th-23-30", "2024-10-27T22:30:00Z"),
                    ("27th-00-30", "2024-10-26T22:30:00Z"),
                    ("26th-23-30", "2024-10-26T21:30:00Z"),
                ]),
                kept: &["28th-00-30", "27th-23-30", "26th-23-30"],
            },
            // DST starts 2025-03-30 01:00Z; the 23-hour local day is one bucket.
            Case {
                name: "daily on 23h DST-start day (Stockholm)",
                tz: sto(),
                policy: RetentionPolicy {
                    keep_daily: Some(3),
                    ..p()
                },
                backups: backups(&[
                    ("31st-00-30", "2025-03-30T22:30:00Z"),
                    ("30th-23-30", "2025-03-30T21:30:00Z"),
                    ("30th-00-30", "2025-03-29T23:30:00Z"),
                    ("29th-23-30", "2025-03-29T22:30:00Z"),
                ]),
                kept: &["31st-00-30", "30th-23-30", "29th-23-30"],
            },
        ]
    }

    /// Backups dated after `now` (a clock set back).
    fn future_cases() -> Vec<Case> {
        let p = RetentionPolicy::default;
        vec![
            Case {
                name: "future backup kept and does not use keep_last slot",
                tz: UTC,
                policy: RetentionPolicy {
                    keep_last: Some(1),
                    ..p()
                },
                backups: backups(&[
                    ("future", "2025-06-15T13:00:00Z"),
                    ("a", "2025-06-15T11:00:00Z"),
                    ("b", "2025-06-15T10:00:00Z"),
                ]),
                kept: &["future", "a"],
            },
            Case {
                name: "future backup survives max_age; newest past one kept too",
                tz: UTC,
                policy: RetentionPolicy {
                    max_age: Some(Duration::from_secs(60)),
                    ..p()
                },
                backups: backups(&[
                    ("future", "2026-01-01T00:00:00Z"),
                    ("a", "2025-06-10T11:00:00Z"),
                    ("b", "2025-06-09T10:00:00Z"),
                ]),
                kept: &["future", "a"],
            },
            Case {
                name: "backup exactly at now is not future",
                tz: UTC,
                policy: RetentionPolicy {
                    keep_last: Some(1),
                    ..p()
                },
                backups: backups(&[("now", NOW), ("older", "2025-06-15T11:00:00Z")]),
                kept: &["now"],
            },
        ]
    }

    #[test]
    fn table() {
        for case in cases() {
            let ds = apply(&case.backups, &case.policy, &case.tz, now());
            check_invariants(&case.backups, &ds, case.name);
            assert_eq!(kept(&ds), set(case.kept), "case: {}", case.name);
        }
    }

    #[test]
    fn table_is_input_order_independent() {
        for case in cases() {
            let mut reversed = case.backups.clone();
            reversed.reverse();
            let a = apply(&case.backups, &case.policy, &case.tz, now());
            let b = apply(&reversed, &case.policy, &case.tz, now());
            assert_eq!(a, b, "case: {}", case.name);
        }
    }

    #[test]
    fn empty_input_returns_empty() {
        let policies = [
            RetentionPolicy::default(),
            RetentionPolicy {
                keep_last: Some(3),
                ..Default::default()
            },
            RetentionPolicy {
                max_age: Some(Duration::from_secs(1)),
                ..Default::default()
            },
        ];
        for p in &policies {
            assert!(apply(&[], p, &UTC, now()).is_empty(), "{}", p.describe());
        }
    }

    #[test]
    fn gfs_exact_count_and_reasons() {
        let input = daily_backups(400);
        let policy = RetentionPolicy {
            keep_last: Some(3),
            keep_daily: Some(7),
            keep_weekly: Some(4),
            keep_monthly: Some(6),
            ..Default::default()
        };
        let ds = apply(&input, &policy, &sto(), now());
        assert_eq!(ds.iter().filter(|d| d.keep).count(), 15);
        assert_eq!(
            reasons_of(&ds, "b-2025-06-15"),
            ["last", "daily", "weekly", "monthly"]
        );
        assert_eq!(reasons_of(&ds, "b-2025-06-13"), ["last", "daily"]);
        assert_eq!(reasons_of(&ds, "b-2025-06-08"), ["weekly"]);
        assert_eq!(reasons_of(&ds, "b-2025-05-31"), ["monthly"]);
        assert_eq!(reasons_of(&ds, "b-2025-05-30"), [] as [&str; 0]);
        assert!(
            !ds.iter()
                .any(|d| d.keep && d.time < ts("2025-01-31T00:00:00Z"))
        );
    }

    #[test]
    fn output_is_newest_first_with_id_tiebreak() {
        let input = backups(&[
            ("m", "2025-06-14T10:00:00Z"),
            ("a", "2025-06-15T10:00:00Z"),
            ("z", "2025-06-13T10:00:00Z"),
            ("b", "2025-06-15T10:00:00Z"),
        ]);
        let ds = apply(&input, &RetentionPolicy::default(), &UTC, now());
        let order: Vec<&str> = ds.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(order, ["b", "a", "m", "z"]);
    }

    #[test]
    fn special_reasons() {
        let input = backups(&[
            ("future", "2025-06-16T00:00:00Z"),
            ("a", "2025-06-15T10:00:00Z"),
            ("b", "2025-06-14T10:00:00Z"),
        ]);
        let all = apply(&input, &RetentionPolicy::default(), &UTC, now());
        assert!(all.iter().all(|d| d.reasons == ["all"]));

        let none = RetentionPolicy {
            keep_last: Some(0),
            ..Default::default()
        };
        let ds = apply(&input, &none, &UTC, now());
        assert_eq!(reasons_of(&ds, "future"), ["future"]);
        assert_eq!(reasons_of(&ds, "a"), ["newest"]);
        assert!(reasons_of(&ds, "b").is_empty());

        let ds = apply(&input[1..], &none, &UTC, now());
        assert_eq!(reasons_of(&ds, "a"), ["newest"]);

        let within = RetentionPolicy {
            keep_last: Some(1),
            max_age: Some(Duration::from_secs(86400)),
            ..Default::default()
        };
        let ds = apply(&input, &within, &UTC, now());
        assert_eq!(reasons_of(&ds, "a"), ["last", "max_age"]);
        assert!(reasons_of(&ds, "b").is_empty());
    }

    #[test]
    fn huge_max_age_keeps_everything() {
        let input = backups(&[("a", "2025-06-15T10:00:00Z"), ("b", "1970-01-01T00:00:00Z")]);
        let policy = RetentionPolicy {
            max_age: Some(Duration::from_secs(u64::MAX)),
            ..Default::default()
        };
        let ds = apply(&input, &policy, &UTC, now());
        assert_eq!(kept(&ds), set(&["a", "b"]));
    }

    #[test]
    fn is_keep_all() {
        assert!(RetentionPolicy::default().is_keep_all());
        let zero = RetentionPolicy {
            keep_yearly: Some(0),
            ..Default::default()
        };
        assert!(!zero.is_keep_all());
        let age = RetentionPolicy {
            max_age: Some(Duration::ZERO),
            ..Default::default()
        };
        assert!(!age.is_keep_all());
    }

    #[test]
    fn describe() {
        let d = |p: RetentionPolicy| p.describe();
        let age = |secs: u64| RetentionPolicy {
            max_age: Some(Duration::from_secs(secs)),
            ..Default::default()
        };
        assert_eq!(d(RetentionPolicy::default()), "keep all");
        assert_eq!(
            d(RetentionPolicy {
                keep_daily: Some(7),
                keep_weekly: Some(4),
                keep_monthly: Some(6),
                ..Default::default()
            }),
            "keep_daily=7 keep_weekly=4 keep_monthly=6"
        );
        assert_eq!(
            d(RetentionPolicy {
                keep_last: Some(0),
                keep_hourly: Some(24),
                keep_yearly: Some(2),
                max_age: Some(Duration::from_secs(30 * 86400)),
                ..Default::default()
            }),
            "keep_last=0 keep_hourly=24 keep_yearly=2 max_age=30d"
        );
        assert_eq!(d(age(36 * 3600)), "max_age=36h");
        assert_eq!(d(age(90)), "max_age=90s");
        assert_eq!(d(age(0)), "max_age=0s");
        let frac = RetentionPolicy {
            max_age: Some(Duration::from_millis(1500)),
            ..Default::default()
        };
        assert_eq!(d(frac), "max_age=1.5s");
    }
}
