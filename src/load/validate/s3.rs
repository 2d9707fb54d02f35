//! `type = "s3"` destinations: bucket, endpoint, storage class and retrieval, credentials,
//! upload sizes, Object Lock.

use crate::config::{
    DEFAULT_MAX_IN_FLIGHT, DEFAULT_PART_SIZE, LockMode, MIN_PART_SIZE, ObjectLock, S3Config,
    StaticCredentials, raw,
};
use crate::storage::class::{Retrieval, RetrievalTier, StorageClass};

use crate::section::read_secret;

pub(super) fn validate_s3(
    key: &str,
    s: &raw::RawDestination,
    problems: &mut Vec<String>,
) -> S3Config {
    let bucket = bucket(key, s.bucket.as_deref(), problems);
    if let Some(ep) = &s.endpoint {
        match url::Url::parse(ep) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
            _ => problems.push(format!(
                "{key}.endpoint: \"{ep}\" is not an http(s) URL; use e.g. \"http://minio:9000\""
            )),
        }
    }
    let storage_class = storage_class(key, s.storage_class.as_deref(), problems);
    let retrieval = s
        .retrieval
        .as_ref()
        .map(|r| retrieval(key, r, storage_class, problems))
        .unwrap_or_default();
    let credentials = credentials(key, s, problems);
    let (part_size, max_in_flight, max_parts) = upload(key, s, problems);
    let object_lock = s
        .object_lock
        .as_ref()
        .and_then(|l| object_lock(key, l, problems));
    S3Config {
        object_lock,
        bucket,
        prefix: s
            .prefix
            .as_deref()
            .unwrap_or("")
            .trim_matches('/')
            .to_string(),
        region: s.region.clone(),
        endpoint: s.endpoint.clone(),
        force_path_style: s.force_path_style.unwrap_or(false),
        storage_class,
        retrieval,
        early_delete: s.early_delete.unwrap_or(false),
        credentials,
        part_size,
        max_in_flight,
        max_parts,
        checksums: s.checksums.unwrap_or_default(),
    }
}

fn bucket(key: &str, raw: Option<&str>, problems: &mut Vec<String>) -> String {
    let Some(bucket) = raw else {
        problems.push(format!(
            "{key}.bucket: required for type = \"s3\"; e.g. bucket = \"my-backups\""
        ));
        return String::new();
    };
    let ok = (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if !ok {
        problems.push(format!(
            "{key}.bucket: \"{bucket}\" is not a valid bucket name (3-63 characters: a-z, 0-9, '-', '.')"
        ));
    }
    bucket.to_string()
}

fn storage_class(key: &str, raw: Option<&str>, problems: &mut Vec<String>) -> Option<StorageClass> {
    let c = raw?;
    let class = StorageClass::parse(c);
    if class.is_none() {
        problems.push(format!(
            "{key}.storage_class: unknown storage class \"{c}\"; expected one of: {}",
            StorageClass::ALL.map(StorageClass::as_str).join(", ")
        ));
    }
    class
}

/// `retrieval = { days, tier }`, which only the archive classes take.
fn retrieval(
    key: &str,
    r: &raw::RawRetrieval,
    storage_class: Option<StorageClass>,
    problems: &mut Vec<String>,
) -> Retrieval {
    let mut retrieval = Retrieval::default();
    match r.days {
        Some(0) => problems.push(format!(
            "{key}.retrieval.days: 0 leaves no time to download a retrieved copy; give the days it stays readable, e.g. 3"
        )),
        Some(d) => retrieval.days = d,
        None => {}
    }
    if let Some(t) = &r.tier {
        match RetrievalTier::parse(t) {
            Some(tier) => retrieval.tier = tier,
            None => problems.push(format!(
                "{key}.retrieval.tier: unknown tier \"{t}\"; expected one of: {}",
                RetrievalTier::ALL.map(RetrievalTier::as_str).join(", ")
            )),
        }
    }
    match storage_class {
        Some(c) if c.needs_retrieval() => {
            if retrieval.tier.usual_delay(c).is_none() {
                problems.push(format!(
                    "{key}.retrieval.tier: {c} has no {} retrieval; use \"Standard\" (within 12 hours) or \"Bulk\" (within 48 hours)",
                    retrieval.tier
                ));
            }
        }
        _ => problems.push(format!(
            "{key}.retrieval: only storage classes GLACIER and DEEP_ARCHIVE need a retrieval{}; remove it",
            storage_class
                .map(|c| format!(" ({c} is read directly)"))
                .unwrap_or_default()
        )),
    }
    retrieval
}

/// `access_key_id` with `secret_access_key_file`, or neither (the AWS credential chain).
fn credentials(
    key: &str,
    s: &raw::RawDestination,
    problems: &mut Vec<String>,
) -> Option<StaticCredentials> {
    match (&s.access_key_id, &s.secret_access_key_file) {
        (Some(id), Some(file)) => {
            read_secret(file, &format!("{key}.secret_access_key_file"), problems).map(|secret| {
                StaticCredentials {
                    access_key_id: id.clone(),
                    secret_access_key: secret,
                }
            })
        }
        (Some(_), None) => {
            problems.push(format!(
                "{key}.access_key_id: needs secret_access_key_file as well (or remove both to use the AWS credential chain)"
            ));
            None
        }
        (None, Some(_)) => {
            problems.push(format!(
                "{key}.secret_access_key_file: needs access_key_id as well (or remove both to use the AWS credential chain)"
            ));
            None
        }
        (None, None) => None,
    }
}

/// `part_size`, `max_in_flight` and `max_parts`.
fn upload(key: &str, s: &raw::RawDestination, problems: &mut Vec<String>) -> (u64, usize, u32) {
    let part_size = match s.part_size.as_deref().map(|t| (t, parse_size(t))) {
        None => DEFAULT_PART_SIZE,
        Some((_, Some(n))) if n >= MIN_PART_SIZE => n,
        Some((t, Some(_))) => {
            problems.push(format!(
                "{key}.part_size: \"{t}\" is below S3's minimum part size of 5MiB"
            ));
            DEFAULT_PART_SIZE
        }
        Some((t, None)) => {
            problems.push(format!(
                "{key}.part_size: \"{t}\" is not a size; use e.g. \"8MiB\""
            ));
            DEFAULT_PART_SIZE
        }
    };
    let max_in_flight = match s.max_in_flight {
        None => DEFAULT_MAX_IN_FLIGHT,
        Some(n) if (1..=16).contains(&n) => n,
        Some(n) => {
            problems.push(format!("{key}.max_in_flight: {n} is out of range (1..=16)"));
            DEFAULT_MAX_IN_FLIGHT
        }
    };
    let max_parts = match s.max_parts {
        None => 10_000,
        Some(n) if (2..=10_000).contains(&n) => n,
        Some(n) => {
            problems.push(format!(
                "{key}.max_parts: {n} is out of range (2..=10000; AWS allows 10000)"
            ));
            10_000
        }
    };
    (part_size, max_in_flight, max_parts)
}

/// Days above this are a typo (S3 itself allows up to 100 years): a lock cannot be taken back.
const MAX_LOCK_DAYS: u32 = 36_500;

fn object_lock(
    key: &str,
    l: &raw::RawObjectLock,
    problems: &mut Vec<String>,
) -> Option<ObjectLock> {
    let key = format!("{key}.object_lock");
    let mode = match l.mode.as_deref() {
        None => {
            problems.push(format!(
                "{key}.mode: required; give mode = \"GOVERNANCE\" (an account with s3:BypassGovernanceRetention can still delete) or \"COMPLIANCE\" (nobody can)"
            ));
            None
        }
        Some(m) if m.eq_ignore_ascii_case("GOVERNANCE") => Some(LockMode::Governance),
        Some(m) if m.eq_ignore_ascii_case("COMPLIANCE") => Some(LockMode::Compliance),
        Some(m) => {
            problems.push(format!(
                "{key}.mode: unknown mode \"{m}\"; expected \"GOVERNANCE\" or \"COMPLIANCE\""
            ));
            None
        }
    };
    let days = match l.days {
        None => {
            problems.push(format!(
                "{key}.days: required; give the days each object stays locked, e.g. days = 30 (at least as long as retention keeps backups)"
            ));
            None
        }
        Some(0) => {
            problems.push(format!(
                "{key}.days: 0 locks nothing; give the days each object stays locked, e.g. days = 30, or remove object_lock"
            ));
            None
        }
        Some(d) if d > MAX_LOCK_DAYS => {
            problems.push(format!(
                "{key}.days: {d} is more than {MAX_LOCK_DAYS} (100 years); a lock cannot be shortened once written, so check the value"
            ));
            None
        }
        Some(d) => Some(d),
    };
    Some(ObjectLock {
        mode: mode?,
        days: days?,
    })
}

/// Parse "8MiB", "16MB", "5242880" into bytes.
fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        "g" | "gb" | "gib" => 1024 * 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("8MiB"), Some(8 << 20));
        assert_eq!(parse_size("5242880"), Some(5 << 20));
        assert_eq!(parse_size("1 GB"), Some(1 << 30));
        assert_eq!(parse_size("lots"), None);
    }
}
