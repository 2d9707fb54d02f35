//! `[destinations.NAME]`: its type's settings (S3 ones in `s3`) and its retention.

use std::collections::BTreeMap;

use super::{NAME_RULE, s3, valid_name};
use crate::config::{Destination, DestinationKind, LocalConfig, raw};
use crate::retention::RetentionPolicy;

pub(super) fn destinations(
    raw: BTreeMap<String, raw::RawDestination>,
    problems: &mut Vec<String>,
) -> BTreeMap<String, Destination> {
    let mut destinations = BTreeMap::new();
    for (name, d) in raw {
        let destination = destination(name.clone(), d, problems);
        destinations.insert(name, destination);
    }
    destinations
}

fn destination(name: String, d: raw::RawDestination, problems: &mut Vec<String>) -> Destination {
    let key = format!("destinations.{name}");
    if !valid_name(&name) {
        problems.push(format!(
            "{key}: invalid destination name \"{name}\": {NAME_RULE}"
        ));
    }
    let kind = match d.kind {
        raw::DestinationType::Local => local(&key, &d, problems),
        raw::DestinationType::S3 => {
            only_for(&key, "local", &[("path", d.path.is_some())], problems);
            DestinationKind::S3(s3::validate_s3(&key, &d, problems))
        }
    };
    let retention = retention(d.retention, &key, problems);
    Destination {
        name,
        kind,
        retention,
    }
}

/// `type = "local"`: a path, and none of the S3 keys.
fn local(key: &str, d: &raw::RawDestination, problems: &mut Vec<String>) -> DestinationKind {
    only_for(
        key,
        "s3",
        &[
            ("bucket", d.bucket.is_some()),
            ("prefix", d.prefix.is_some()),
            ("region", d.region.is_some()),
            ("endpoint", d.endpoint.is_some()),
            ("force_path_style", d.force_path_style.is_some()),
            ("storage_class", d.storage_class.is_some()),
            ("access_key_id", d.access_key_id.is_some()),
            ("secret_access_key_file", d.secret_access_key_file.is_some()),
            ("part_size", d.part_size.is_some()),
            ("max_in_flight", d.max_in_flight.is_some()),
            ("max_parts", d.max_parts.is_some()),
            ("checksums", d.checksums.is_some()),
            ("retrieval", d.retrieval.is_some()),
            ("early_delete", d.early_delete.is_some()),
            ("object_lock", d.object_lock.is_some()),
        ],
        problems,
    );
    match &d.path {
        None => problems.push(format!(
            "{key}.path: required for type = \"local\"; e.g. path = \"/var/backups/stowage\""
        )),
        Some(p) if !p.is_absolute() => problems.push(format!(
            "{key}.path: {p:?} must be an absolute path (a mounted volume such as \"/var/backups/stowage\")"
        )),
        Some(_) => {}
    }
    DestinationKind::Local(LocalConfig {
        path: d.path.clone().unwrap_or_default(),
    })
}

/// Keys that belong to another destination type are errors, not silently ignored.
fn only_for(key: &str, other: &str, keys: &[(&str, bool)], problems: &mut Vec<String>) {
    for (k, present) in keys {
        if *present {
            problems.push(format!(
                "{key}.{k}: only valid for type = \"{other}\"; remove it or change the type"
            ));
        }
    }
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
