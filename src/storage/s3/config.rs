//! `type = "s3"` destinations: bucket, endpoint, storage class and retrieval, credentials,
//! upload sizes, Object Lock. Their section, its validation, and what the rest of stowage
//! asks of one (`Place`).

use std::fmt;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;

use crate::backend::class::{Retrieval, RetrievalTier, StorageClass};
use crate::backend::{Kind, LockMode, ObjectLock, Place, Storage};
use crate::section::{Section, serde_fields};
use crate::secret::Secret;

/// S3 rejects multipart parts under 5 MiB (except the last one).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
pub const DEFAULT_PART_SIZE: u64 = 8 * 1024 * 1024;
pub const DEFAULT_MAX_IN_FLIGHT: usize = 2;

/// The `s3` destination type.
pub struct S3;

/// `[destinations.NAME]` with `type = "s3"`, as the file has it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawS3 {
    bucket: Option<String>,
    prefix: Option<String>,
    region: Option<String>,
    endpoint: Option<String>,
    force_path_style: Option<bool>,
    storage_class: Option<String>,
    access_key_id: Option<String>,
    secret_access_key_file: Option<PathBuf>,
    /// "8MiB" style; bigger parts mean fewer requests but more memory per in-flight part.
    part_size: Option<String>,
    max_in_flight: Option<usize>,
    /// The store's limit on parts per multipart upload (10,000 on AWS and most others).
    max_parts: Option<u32>,
    /// Some S3-compatible stores reject the SDK's default request checksums.
    checksums: Option<Checksums>,
    /// Archive classes: how a retrieval is requested.
    retrieval: Option<RawRetrieval>,
    /// Let retention delete backups younger than the class's minimum storage duration.
    early_delete: Option<bool>,
    /// S3 Object Lock: every data object and manifest is written with a retain-until date.
    object_lock: Option<RawObjectLock>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawObjectLock {
    mode: Option<String>,
    days: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetrieval {
    days: Option<u32>,
    tier: Option<String>,
}

#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Checksums {
    #[default]
    WhenSupported,
    WhenRequired,
}

/// An S3 destination, validated.
#[derive(Debug, Clone)]
pub struct S3Config {
    pub bucket: String,
    /// Normalised: no leading or trailing slash, may be empty.
    pub prefix: String,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub force_path_style: bool,
    /// Of data objects (dumps, file blobs); manifests and indexes are always STANDARD.
    pub storage_class: Option<StorageClass>,
    pub retrieval: Retrieval,
    /// Retention may delete a backup younger than the class's minimum storage duration.
    pub early_delete: bool,
    pub credentials: Option<StaticCredentials>,
    pub part_size: u64,
    pub max_in_flight: usize,
    /// Parts a multipart upload may have; past a tenth of them each, parts double.
    pub max_parts: u32,
    pub checksums: Checksums,
    /// S3 Object Lock on every data object and manifest written here.
    pub object_lock: Option<ObjectLock>,
}

#[derive(Clone)]
pub struct StaticCredentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
}

impl fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StaticCredentials({}, ***)", self.access_key_id)
    }
}

impl Kind for S3 {
    fn kind(&self) -> &'static str {
        "s3"
    }

    fn keys(&self) -> &'static [&'static str] {
        serde_fields::<RawS3>()
    }

    fn configure(&self, section: &mut Section<'_>) -> Option<Arc<dyn Place>> {
        let raw: RawS3 = section.parse()?;
        Some(Arc::new(validate_s3(section, &raw)))
    }
}

#[async_trait]
impl Place for S3Config {
    fn kind(&self) -> &'static str {
        "s3"
    }

    /// One line: bucket, endpoint, class and its costs, lock, credentials.
    fn describe(&self) -> String {
        let mut t = format!("s3://{}", self.bucket);
        if !self.prefix.is_empty() {
            t.push('/');
            t.push_str(&self.prefix);
        }
        if let Some(ep) = &self.endpoint {
            let _ = write!(t, " at {ep}");
        }
        if let Some(r) = &self.region {
            let _ = write!(t, ", region {r}");
        }
        if let Some(c) = &self.storage_class {
            let _ = write!(t, ", class {c}");
            if c.needs_retrieval() {
                let _ = write!(
                    t,
                    " (retrieval: {} tier, {} days)",
                    self.retrieval.tier, self.retrieval.days
                );
            }
            if c.min_storage_days() > 0 {
                let _ = write!(
                    t,
                    ", minimum storage {} days{}",
                    c.min_storage_days(),
                    if self.early_delete {
                        " (early_delete)"
                    } else {
                        ""
                    }
                );
            }
        }
        if let Some(l) = &self.object_lock {
            let _ = write!(t, ", object lock {} {} days", l.mode.as_str(), l.days);
        }
        if self.checksums == Checksums::WhenRequired {
            t.push_str(", checksums only where required");
        }
        t.push_str(match &self.credentials {
            Some(_) => ", credentials from config",
            None => ", credentials from the AWS chain",
        });
        t
    }

    fn storage_class(&self) -> Option<StorageClass> {
        self.storage_class
    }

    fn object_lock(&self) -> Option<ObjectLock> {
        self.object_lock
    }

    /// The class's minimum storage duration, unless `early_delete = true`.
    fn min_storage(&self) -> Option<(StorageClass, u32)> {
        if self.early_delete {
            return None;
        }
        self.storage_class
            .filter(|c| c.min_storage_days() > 0)
            .map(|c| (c, c.min_storage_days()))
    }

    fn retrieval(&self) -> Option<Retrieval> {
        Some(self.retrieval)
    }

    async fn open(&self) -> Box<dyn Storage> {
        Box::new(super::S3Storage::new(self.clone()).await)
    }
}

fn validate_s3(section: &mut Section<'_>, s: &RawS3) -> S3Config {
    let bucket = bucket(section, s.bucket.as_deref());
    if let Some(ep) = &s.endpoint {
        match url::Url::parse(ep) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
            _ => section.problem(
                "endpoint",
                format!(
                    "\"{ep}\" is not an http(s) URL; use e.g. \"http://minio:9000\""
                ),
            ),
        }
    }
    let storage_class = storage_class(section, s.storage_class.as_deref());
    let retrieval = s
        .retrieval
        .as_ref()
        .map(|r| retrieval(section, r, storage_class))
        .unwrap_or_default();
    let credentials = credentials(section, s);
    let (part_size, max_in_flight, max_parts) = upload(section, s);
    let object_lock = s
        .object_lock
        .as_ref()
        .and_then(|l| object_lock(section, l));
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

fn bucket(section: &mut Section<'_>, raw: Option<&str>) -> String {
    let Some(bucket) = raw else {
        section.problem(
            "bucket",
            "required for type = \"s3\"; e.g. bucket = \"my-backups\"",
        );
        return String::new();
    };
    let ok = (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if !ok {
        section.problem(
            "bucket",
            format!(
                "\"{bucket}\" is not a valid bucket name (3-63 characters: a-z, 0-9, '-', '.')"
            ),
        );
    }
    bucket.to_string()
}

fn storage_class(section: &mut Section<'_>, raw: Option<&str>) -> Option<StorageClass> {
    let c = raw?;
    let class = StorageClass::parse(c);
    if class.is_none() {
        section.problem(
            "storage_class",
            format!(
                "unknown storage class \"{c}\"; expected one of: {}",
                StorageClass::ALL.map(StorageClass::as_str).join(", ")
            ),
        );
    }
    class
}

/// `retrieval = { days, tier }`, which only the archive classes take.
fn retrieval(
    section: &mut Section<'_>,
    r: &RawRetrieval,
    storage_class: Option<StorageClass>,
) -> Retrieval {
    let mut retrieval = Retrieval::default();
    match r.days {
        Some(0) => section.problem(
            "retrieval.days",
            "0 leaves no time to download a retrieved copy; give the days it stays readable, e.g. 3",
        ),
        Some(d) => retrieval.days = d,
        None => {}
    }
    if let Some(t) = &r.tier {
        match RetrievalTier::parse(t) {
            Some(tier) => retrieval.tier = tier,
            None => section.problem(
                "retrieval.tier",
                format!(
                    "unknown tier \"{t}\"; expected one of: {}",
                    RetrievalTier::ALL.map(RetrievalTier::as_str).join(", ")
                ),
            ),
        }
    }
    match storage_class {
        Some(c) if c.needs_retrieval() => {
            if retrieval.tier.usual_delay(c).is_none() {
                section.problem(
                    "retrieval.tier",
                    format!(
                        "{c} has no {} retrieval; use \"Standard\" (within 12 hours) or \"Bulk\" (within 48 hours)",
                        retrieval.tier
                    ),
                );
            }
        }
        _ => section.problem(
            "retrieval",
            format!(
                "only storage classes GLACIER and DEEP_ARCHIVE need a retrieval{}; remove it",
                storage_class
                .map(|c| format!(" ({c} is read directly)"))
                .unwrap_or_default()
            ),
        ),
    }
    retrieval
}

/// `access_key_id` with `secret_access_key_file`, or neither (the AWS credential chain).
fn credentials(
    section: &mut Section<'_>,
    s: &RawS3,
) -> Option<StaticCredentials> {
    match (&s.access_key_id, &s.secret_access_key_file) {
        (Some(id), Some(file)) => {
            section.secret("secret_access_key_file", file).map(|secret| {
                StaticCredentials {
                    access_key_id: id.clone(),
                    secret_access_key: secret,
                }
            })
        }
        (Some(_), None) => {
            section.problem(
                "access_key_id",
                "needs secret_access_key_file as well (or remove both to use the AWS credential chain)",
            );
            None
        }
        (None, Some(_)) => {
            section.problem(
                "secret_access_key_file",
                "needs access_key_id as well (or remove both to use the AWS credential chain)",
            );
            None
        }
        (None, None) => None,
    }
}

/// `part_size`, `max_in_flight` and `max_parts`.
fn upload(section: &mut Section<'_>, s: &RawS3) -> (u64, usize, u32) {
    let part_size = match s.part_size.as_deref().map(|t| (t, parse_size(t))) {
        None => DEFAULT_PART_SIZE,
        Some((_, Some(n))) if n >= MIN_PART_SIZE => n,
        Some((t, Some(_))) => {
            section.problem(
                "part_size",
                format!(
                    "\"{t}\" is below S3's minimum part size of 5MiB"
                ),
            );
            DEFAULT_PART_SIZE
        }
        Some((t, None)) => {
            section.problem(
                "part_size",
                format!(
                    "\"{t}\" is not a size; use e.g. \"8MiB\""
                ),
            );
            DEFAULT_PART_SIZE
        }
    };
    let max_in_flight = match s.max_in_flight {
        None => DEFAULT_MAX_IN_FLIGHT,
        Some(n) if (1..=16).contains(&n) => n,
        Some(n) => {
            section.problem(
                "max_in_flight",
                format!(
                    "{n} is out of range (1..=16)"
                ),
            );
            DEFAULT_MAX_IN_FLIGHT
        }
    };
    let max_parts = match s.max_parts {
        None => 10_000,
        Some(n) if (2..=10_000).contains(&n) => n,
        Some(n) => {
            section.problem(
                "max_parts",
                format!(
                    "{n} is out of range (2..=10000; AWS allows 10000)"
                ),
            );
            10_000
        }
    };
    (part_size, max_in_flight, max_parts)
}

/// Days above this are a typo (S3 itself allows up to 100 years): a lock cannot be taken back.
const MAX_LOCK_DAYS: u32 = 36_500;

fn object_lock(section: &mut Section<'_>, l: &RawObjectLock) -> Option<ObjectLock> {
    let mode = match l.mode.as_deref() {
        None => {
            section.problem(
                "object_lock.mode",
                "required; give mode = \"GOVERNANCE\" (an account with s3:BypassGovernanceRetention can still delete) or \"COMPLIANCE\" (nobody can)",
            );
            None
        }
        Some(m) if m.eq_ignore_ascii_case("GOVERNANCE") => Some(LockMode::Governance),
        Some(m) if m.eq_ignore_ascii_case("COMPLIANCE") => Some(LockMode::Compliance),
        Some(m) => {
            section.problem(
                "object_lock.mode",
                format!(
                    "unknown mode \"{m}\"; expected \"GOVERNANCE\" or \"COMPLIANCE\""
                ),
            );
            None
        }
    };
    let days = match l.days {
        None => {
            section.problem(
                "object_lock.days",
                "required; give the days each object stays locked, e.g. days = 30 (at least as long as retention keeps backups)",
            );
            None
        }
        Some(0) => {
            section.problem(
                "object_lock.days",
                "0 locks nothing; give the days each object stays locked, e.g. days = 30, or remove object_lock",
            );
            None
        }
        Some(d) if d > MAX_LOCK_DAYS => {
            section.problem(
                "object_lock.days",
                format!(
                    "{d} is more than {MAX_LOCK_DAYS} (100 years); a lock cannot be shortened once written, so check the value"
                ),
            );
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
    fn settings_and_what_they_mean() {
        use crate::storage::configure_section;
        let d = configure_section(
            "s3",
            "bucket = \"backups\"\nprefix = \"/app/\"\nstorage_class = \"glacier_ir\"\n\
             object_lock = { mode = \"governance\", days = 30 }",
        )
        .expect("valid");
        assert_eq!(
            d.describe(),
            "s3://backups/app, class GLACIER_IR, minimum storage 90 days, object lock GOVERNANCE 30 days, credentials from the AWS chain"
        );
        assert_eq!(d.min_storage(), Some((StorageClass::GlacierIr, 90)));
        assert_eq!(
            d.object_lock(),
            Some(ObjectLock {
                mode: LockMode::Governance,
                days: 30
            })
        );
        assert!(!d.is_nearby());

        let d = configure_section(
            "s3",
            "bucket = \"backups\"\nstorage_class = \"GLACIER_IR\"\nearly_delete = true",
        )
        .expect("valid");
        assert_eq!(d.min_storage(), None);
    }

    #[test]
    fn a_misspelt_or_mistyped_key_is_reported_once() {
        use crate::storage::configure_section;
        // No "bucket: required" after a "did you mean" or a value of the wrong type.
        let e = configure_section("s3", "bukcet = \"b\"").expect_err("typo");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("destinations.d.bukcet: unknown key \"bukcet\" (did you mean \"bucket\"?); valid keys here: type, retention, path, bucket,"), "{e:?}");
        let e = configure_section("s3", "bucket = 5\nobject_lock = { mod = \"GOVERNANCE\", days = 3 }")
            .expect_err("types");
        assert_eq!(
            e,
            [
                "destinations.d.bucket: expected a string, found the number 5",
                "destinations.d.object_lock.mod: unknown key \"mod\" (did you mean \"mode\"?); valid keys here: mode, days",
            ]
        );
        let e = configure_section("s3", "bucket = \"backups\"\npath = \"/x\"").expect_err("local key");
        assert_eq!(
            e,
            ["destinations.d.path: only valid for type = \"local\" or \"sftp\"; remove it or change the type"]
        );
    }

    #[test]
    fn checksums_for_stores_that_reject_the_sdk_defaults() {
        use crate::storage::configure_section;
        let d = configure_section(
            "s3",
            "bucket = \"backups\"\nendpoint = \"http://127.0.0.1:9000\"\nchecksums = \"when_required\"",
        )
        .expect("valid");
        assert_eq!(
            d.describe(),
            "s3://backups at http://127.0.0.1:9000, checksums only where required, credentials from the AWS chain"
        );
        let d = configure_section("s3", "bucket = \"backups\"\nchecksums = \"when_supported\"")
            .expect("valid");
        assert_eq!(d.describe(), "s3://backups, credentials from the AWS chain");
        let e = configure_section("s3", "bucket = \"backups\"\nchecksums = \"never\"")
            .expect_err("unknown mode");
        assert_eq!(
            e,
            ["destinations.d.checksums: unknown value \"never\"; expected one of: when_supported, when_required"]
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("8MiB"), Some(8 << 20));
        assert_eq!(parse_size("5242880"), Some(5 << 20));
        assert_eq!(parse_size("1 GB"), Some(1 << 30));
        assert_eq!(parse_size("lots"), None);
    }
}
