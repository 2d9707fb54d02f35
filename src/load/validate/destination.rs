//! `[destinations.NAME]`: its type's settings, validated by the destination type its `type`
//! names (`src/storage/<kind>/`, through `crate::storage::find`), and its retention.

use std::collections::{BTreeMap, BTreeSet};

use super::{NAME_RULE, valid_name};
use crate::config::{Destination, raw};
use crate::retention::RetentionPolicy;
use crate::section::Section;
use crate::section::words::suggest;

/// Every `[destinations.NAME]`, and the names defined (a destination whose section has
/// problems is still one a job may name).
pub(super) fn destinations(
    raw: BTreeMap<String, raw::RawDestination>,
    problems: &mut Vec<String>,
) -> (BTreeMap<String, Destination>, BTreeSet<String>) {
    let mut destinations = BTreeMap::new();
    let names = raw.keys().cloned().collect();
    for (name, d) in raw {
        if let Some(destination) = destination(name.clone(), d, problems) {
            destinations.insert(name, destination);
        }
    }
    (destinations, names)
}

/// One destination: its name, its section (validated by the type it names), its retention.
fn destination(
    name: String,
    d: raw::RawDestination,
    problems: &mut Vec<String>,
) -> Option<Destination> {
    let key = format!("destinations.{name}");
    if !valid_name(&name) {
        problems.push(format!(
            "{key}: invalid destination name \"{name}\": {NAME_RULE}"
        ));
    }
    let retention = retention(d.retention, &key, problems);
    let known = crate::storage::find(&d.kind);
    if known.is_none() {
        let kinds = crate::storage::kinds();
        problems.push(format!(
            "{key}.type: unknown value \"{}\"{}; expected one of: {}",
            d.kind,
            suggest(&d.kind, &kinds),
            kinds.join(", ")
        ));
    }
    // Under an unknown (or missing) type the rest is still read, as the first type's, so
    // that its other mistakes are listed at once; what that type says about keys of its
    // own kind ("required for type = …", "only valid for type = …") is dropped below.
    let kind = known.or_else(|| crate::storage::registered().first().copied())?;
    let start = problems.len();
    // "valid keys here" lists the keys of the type the section names (with five types, all
    // of them would bury the few that apply); under an unknown type, every type's.
    let valid = match known {
        Some(k) => [&["type", "retention"][..], k.keys()].concat(),
        None => crate::storage::table_keys(),
    };
    let owners = crate::storage::owners_of;
    let mut section = Section::new(key, name.clone(), d.rest, problems, &owners);
    section.valid_keys = Some(&valid);
    section.go_on = true;
    let settings = kind.configure(&mut section);
    section.drop_consequences();
    if known.is_none() {
        let mut index = 0;
        problems.retain(|line| {
            let keep = index < start || !line.contains("type = ");
            index += 1;
            keep
        });
        return None;
    }
    Some(Destination {
        name,
        settings: settings?,
        retention,
    })
}

fn retention(raw: raw::RawRetention, key: &str, problems: &mut Vec<String>) -> RetentionPolicy {
    let mut check = |name: &str, v: Option<u32>| {
        if v == Some(0) {
            problems.push(format!(
                "{key}.retention.{name}: must be at least 1 (remove the key to not use this rule)"
            ));
        }
        v
    };
    RetentionPolicy {
        keep_last: check("keep_last", raw.keep_last),
        keep_hourly: check("keep_hourly", raw.keep_hourly),
        keep_daily: check("keep_daily", raw.keep_daily),
        keep_weekly: check("keep_weekly", raw.keep_weekly),
        keep_monthly: check("keep_monthly", raw.keep_monthly),
        keep_yearly: check("keep_yearly", raw.keep_yearly),
        max_age: raw.max_age.as_deref().and_then(|text| {
            match humantime::parse_duration(text) {
                Ok(d) if !d.is_zero() => Some(d),
                Ok(_) => {
                    problems.push(format!("{key}.retention.max_age: must be longer than 0"));
                    None
                }
                Err(e) => {
                    problems.push(format!(
                        "{key}.retention.max_age: invalid duration \"{text}\" ({e}); use e.g. \"30d\", \"12h\" or \"8w\""
                    ));
                    None
                }
            }
        }),
    }
}
