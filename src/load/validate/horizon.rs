//! Warnings about retention against what a destination keeps anyway: an archive class's
//! minimum storage duration, an Object Lock.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};

use crate::config::{Destination, Job};

/// About how long destination `d`'s retention keeps backups: the most frequent job writing
/// to it decides how young its oldest kept backup is. None when it keeps them for ever, or no
/// job writes there.
fn retention_horizon(
    d: &Destination,
    jobs: &BTreeMap<String, Job>,
    now: DateTime<Utc>,
) -> Option<TimeDelta> {
    let gap = jobs
        .values()
        .filter(|j| j.destinations.contains(&d.name))
        .filter_map(|j| j.schedule.period(now))
        .min()?;
    crate::retention::horizon(&d.retention, gap)
}

/// Destinations in a class with a minimum storage duration whose retention would delete
/// backups younger than it: they are kept that long anyway (or, with early_delete, deleted
/// and billed as if kept), which is rarely what the rule's author meant.
pub(super) fn early_delete_warnings(
    destinations: &BTreeMap<String, Destination>,
    jobs: &BTreeMap<String, Job>,
    now: DateTime<Utc>,
) -> Vec<String> {
    let mut out = Vec::new();
    for d in destinations.values() {
        let Some(class) = d.storage_class() else {
            continue;
        };
        let days = class.min_storage_days();
        if days == 0 {
            continue;
        }
        let Some(horizon) = retention_horizon(d, jobs, now) else {
            continue;
        };
        if horizon >= TimeDelta::days(days.into()) {
            continue;
        }
        let then = if d.min_storage().is_some() {
            format!(
                "they are kept {days} days instead (early_delete = true deletes them earlier and still pays for {days} days)"
            )
        } else {
            format!(
                "early_delete = true deletes them earlier, and each is still billed for {days} days"
            )
        };
        out.push(format!(
            "destinations.{}: {class} bills every object for at least {days} days, but retention ({}) keeps backups only about {} days: {then}. The usual pattern: recent backups on a local or STANDARD destination, monthly ones in the archive tier with their own retention, e.g. retention = {{ keep_monthly = 12 }}",
            d.name,
            d.retention.describe(),
            horizon.num_days().max(1)
        ));
    }
    out
}

/// A lock longer than what retention keeps: retention keeps the locked backups anyway.
pub(super) fn object_lock_warnings(
    destinations: &BTreeMap<String, Destination>,
    jobs: &BTreeMap<String, Job>,
    now: DateTime<Utc>,
) -> Vec<String> {
    let mut out = Vec::new();
    for d in destinations.values() {
        let Some(lock) = d.object_lock() else {
            continue;
        };
        let Some(horizon) = retention_horizon(d, jobs, now) else {
            continue;
        };
        if horizon >= TimeDelta::days(lock.days.into()) {
            continue;
        }
        out.push(format!(
            "destinations.{}.object_lock: every backup is locked for {} days, but retention ({}) keeps backups only about {} days: retention keeps each backup until its lock ends (run --dry-run lists them), so expect about {} days of backups; lower days or widen retention to match",
            d.name,
            lock.days,
            d.retention.describe(),
            horizon.num_days().max(1),
            lock.days
        ));
    }
    out
}
