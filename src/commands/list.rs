//! `stowage list`: the published backups per destination, as text for people or, with
//! `--json`, as one JSON document for scripts (its fields are stable; see [`JsonListing`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use super::{EXIT_CONFIG, EXIT_FAILED, EXIT_OK, runtime, start};
use crate::config::{Config, Job};
use crate::logging::Console;
use crate::pipeline::shrink;
use crate::repo::Repository;
use crate::repo::manifest::{self, Manifest, SourceEntry};
use crate::storage;
use crate::units::human_bytes;

pub fn run(path: &Path, job: Option<&str>, holding: Option<&str>, json: bool) -> i32 {
    let (config, _guard) = match start(path, Console::Stderr) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Some(j) = job
        && let Err(e) = crate::restore::find_job(&config, j)
    {
        eprintln!("error: {e}");
        return EXIT_CONFIG;
    }
    let Some(rt) = runtime() else {
        return EXIT_FAILED;
    };
    let shelves = rt.block_on(collect(&config, job, holding));
    let failures = shelves.iter().map(Shelf::failures).sum::<usize>();
    if json {
        let doc = to_json(&config, &shelves, job, holding);
        match serde_json::to_string_pretty(&doc) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("error: cannot write the listing as JSON: {e}");
                return EXIT_FAILED;
            }
        }
        // The errors are in the document; say so on stderr too, for a script that only
        // looks at the exit code and its log.
        for s in &shelves {
            for e in s.errors() {
                eprintln!("error: {e}");
            }
        }
    } else {
        print!("{}", to_text(&shelves, holding));
    }
    if failures > 0 { EXIT_FAILED } else { EXIT_OK }
}

/// The listing as text, and how many destinations or manifests could not be read. With
/// `holding`, only backups whose manifest lists that table or collection (read from the
/// manifests: nothing is downloaded).
pub async fn render(
    config: &Config,
    only_job: Option<&str>,
    holding: Option<&str>,
) -> (String, usize) {
    let shelves = collect(config, only_job, holding).await;
    let failures = shelves.iter().map(Shelf::failures).sum();
    (to_text(&shelves, holding), failures)
}

/// What one destination holds for one job.
struct Shelf {
    destination: String,
    location: String,
    job: String,
    tz: crate::zone::Zone,
    /// Published backups, newest first (with `holding`: those that hold it, and those whose
    /// manifest could not be read); or why the destination could not be listed.
    backups: Result<Listed, String>,
    /// Continuously archived sources: the recoverable window, one line each.
    pitr: Vec<String>,
}

struct Listed {
    /// Every published backup, whatever `holding` says.
    published: usize,
    rows: Vec<Row>,
}

struct Row {
    id: String,
    time: DateTime<Utc>,
    manifest: Result<Manifest, String>,
    /// Against the job's auth_key_file (NotChecked without one).
    auth: manifest::Authenticity,
}

impl Shelf {
    /// Sources of the newest backup here that shrank against the backups before it (the
    /// one rule of [`shrink`]). Not under `--holding`, whose rows are a selection.
    fn warnings(&self, holding: Option<&str>) -> Vec<String> {
        let Ok(listed) = &self.backups else {
            return Vec::new();
        };
        if holding.is_some() {
            return Vec::new();
        }
        let mut sizes = listed
            .rows
            .iter()
            .filter_map(|r| r.manifest.as_ref().ok())
            .map(shrink::manifest_sizes);
        let Some(newest) = sizes.next() else {
            return Vec::new();
        };
        let earlier: Vec<_> = sizes.take(shrink::EARLIER).collect();
        shrink::warnings(&self.job, &newest, &earlier)
    }

    fn failures(&self) -> usize {
        self.errors().len()
    }

    /// One line per thing that could not be read.
    fn errors(&self) -> Vec<String> {
        match &self.backups {
            Err(e) => vec![format!(
                "job {} on destination {}: cannot list: {e}",
                self.job, self.destination
            )],
            Ok(l) => l
                .rows
                .iter()
                .filter_map(|r| r.manifest.as_ref().err().map(|e| (r, e)))
                .map(|(r, e)| {
                    format!(
                        "job {} on destination {}: backup {}: unreadable manifest: {e}",
                        self.job, self.destination, r.id
                    )
                })
                .collect(),
        }
    }
}

/// Read every (destination, job) pair the listing shows, destinations in config order.
async fn collect(config: &Config, only_job: Option<&str>, holding: Option<&str>) -> Vec<Shelf> {
    let mut shelves = Vec::new();
    for dest in config.destinations.values() {
        let jobs: Vec<&Job> = config
            .jobs
            .values()
            .filter(|j| only_job.is_none_or(|o| o == j.name))
            .filter(|j| j.destinations.contains(&dest.name))
            .collect();
        if jobs.is_empty() {
            continue;
        }
        let st = storage::open(dest).await;
        for job in jobs {
            let repo = Repository::new(st.as_ref(), &job.name);
            let backups = match repo.backups().await {
                Ok(listing) => {
                    let published = listing.published(&job.name);
                    let mut rows = Vec::new();
                    for p in &published {
                        match repo.manifest(&p.id).await {
                            Ok(m) if holding.is_some_and(|h| !holds(&m, h)) => {}
                            Ok(m) => rows.push(Row {
                                id: p.id.clone(),
                                time: p.time,
                                auth: m.authenticity(job.auth_key.as_deref()),
                                manifest: Ok(m),
                            }),
                            // Retention in a running daemon may delete a backup between the
                            // listing and this read: it is simply gone, not an error.
                            Err(crate::repo::manifest::ManifestError::Storage(
                                crate::storage::StorageError::NotFound(_),
                            )) => {}
                            Err(e) => rows.push(Row {
                                id: p.id.clone(),
                                time: p.time,
                                manifest: Err(e.to_string()),
                                auth: manifest::Authenticity::NotChecked,
                            }),
                        }
                    }
                    Ok(Listed {
                        published: published.len(),
                        rows,
                    })
                }
                Err(e) => Err(e.to_string()),
            };
            let pitr = match &backups {
                Ok(l) => pitr_lines(st.as_ref(), job, &dest.name, l).await,
                Err(_) => Vec::new(),
            };
            shelves.push(Shelf {
                destination: dest.name.clone(),
                location: st.location(),
                job: job.name.clone(),
                tz: job.schedule.tz().clone(),
                backups,
                pitr,
            });
        }
    }
    shelves
}

/// "point-in-time recovery of db on local: from … (oldest base backup) to … (newest WAL, 8 s
/// ago)" for each continuously archived source of `job` (one or two small reads each).
/// With `holding`, `listed` may not hold every backup: the window is then of those shown.
async fn pitr_lines(
    st: &dyn storage::Storage,
    job: &Job,
    destination: &str,
    listed: &Listed,
) -> Vec<String> {
    let tz = job.schedule.tz();
    let at = |t: DateTime<Utc>| t.with_timezone(tz).format("%Y-%m-%d %H:%M:%S").to_string();
    let expect = crate::repo::packing::Expect::of(job, false);
    let now = Utc::now();
    let mut out = Vec::new();
    for source in job
        .sources
        .iter()
        .filter(|s| s.database().is_some_and(|d| d.wal_source().is_some()))
        .map(|s| s.name())
    {
        let window = crate::history::Window {
            destination: destination.to_string(),
            source: source.to_string(),
            from: listed
                .rows
                .iter()
                .filter_map(|r| r.manifest.as_ref().ok())
                .filter_map(|m| crate::history::base_end(m, source))
                .min(),
            to: crate::history::newest_wal(st, &job.name, source, &expect)
                .await
                .map_err(|e| e.to_string()),
        };
        out.push(format!(
            "point-in-time recovery of {source} on {destination}: {}",
            window.describe(now, at)
        ));
    }
    out
}

/// "1 backup", "2 backups".
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn to_text(shelves: &[Shelf], holding: Option<&str>) -> String {
    let mut out = String::new();
    let mut current: Option<&str> = None;
    for shelf in shelves {
        if current != Some(shelf.destination.as_str()) {
            let _ = writeln!(
                out,
                "destination {} ({})",
                shelf.destination, shelf.location
            );
            current = Some(&shelf.destination);
        }
        let listed = match &shelf.backups {
            Ok(l) => l,
            Err(e) => {
                let _ = writeln!(out, "  job {}: cannot list: {e}", shelf.job);
                continue;
            }
        };
        let held = match holding {
            Some(h) => format!(", {} holding {h}", listed.rows.len()),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "  job {} ({}{held})",
            shelf.job,
            count(listed.published, "backup", "backups")
        );
        for line in &shelf.pitr {
            let _ = writeln!(out, "    {line}");
        }
        for w in shelf.warnings(holding) {
            let _ = writeln!(out, "    warning: {w}");
        }
        if listed.rows.is_empty() {
            continue;
        }
        let tz = &shelf.tz;
        let _ = writeln!(
            out,
            "    {:<22}  {:<25}  {:>10}  SOURCES",
            "ID",
            format!("TIME ({tz})"),
            "SIZE"
        );
        for row in &listed.rows {
            let local = row
                .time
                .with_timezone(tz)
                .format("%Y-%m-%d %H:%M:%S %Z")
                .to_string();
            match &row.manifest {
                Ok(m) => {
                    let mut sources = m
                        .sources
                        .iter()
                        .map(describe_source)
                        .collect::<Vec<_>>()
                        .join(", ");
                    if let Some(scheme) = &m.encryption {
                        sources.push_str(&format!(" [encrypted: {scheme}]"));
                    }
                    // Restores, heals and retention ignore it; say so where people look.
                    match &row.auth {
                        manifest::Authenticity::NotChecked | manifest::Authenticity::Authentic => {}
                        manifest::Authenticity::Unsigned => {
                            sources.push_str(" [UNAUTHENTICATED: no MAC]")
                        }
                        manifest::Authenticity::OtherKey { key_id } => sources.push_str(&format!(
                            " [UNAUTHENTICATED: signed with another key, {key_id}]"
                        )),
                        manifest::Authenticity::Forged => {
                            sources.push_str(" [UNAUTHENTICATED: MAC does not match, forged]")
                        }
                    }
                    let _ = writeln!(
                        out,
                        "    {:<22}  {:<25}  {:>10}  {}",
                        row.id,
                        local,
                        human_bytes(m.stored_size()),
                        sources
                    );
                }
                Err(e) => {
                    let _ = writeln!(
                        out,
                        "    {:<22}  {:<25}  {:>10}  unreadable manifest: {e}",
                        row.id, local, "?"
                    );
                }
            }
        }
    }
    out
}

/// "db (postgres, 1.2 MiB)" or "uploads (files: 2000 files, 10 new, 1.2 MiB of 7.8 MiB uploaded)":
/// for files, how much this backup uploaded against what it references shows the dedup.
fn describe_source(s: &SourceEntry) -> String {
    match &s.files {
        Some(f) => format!(
            "{} (files: {}, {} new, {} of {} uploaded)",
            s.name,
            count(f.count as usize, "file", "files"),
            f.new_files,
            human_bytes(f.new_bytes),
            human_bytes(f.bytes)
        ),
        None => match &s.objects {
            Some(o) => format!(
                "{} ({}, {}, {})",
                s.name,
                s.kind,
                human_bytes(s.size),
                count(o.len(), "object", "objects")
            ),
            None => format!("{} ({}, {})", s.name, s.kind, human_bytes(s.size)),
        },
    }
}

/// Whether a backup holds a table or collection: "orders" matches "orders" and any
/// "<schema or database>.orders"; "public.orders" matches only itself.
fn holds(m: &Manifest, name: &str) -> bool {
    m.sources.iter().any(|s| {
        s.objects.as_ref().is_some_and(|objs| {
            objs.iter().any(|o| {
                o == name
                    || (!name.contains('.') && o.rsplit_once('.').is_some_and(|(_, t)| t == name))
            })
        })
    })
}

// ---------------------------------------------------------------------------------------------
// `list --json`: the document. Every field here is documented in the README ("list --json")
// and stable: within `version` 1 fields are only ever added, never renamed, removed or
// changed in meaning.
// ---------------------------------------------------------------------------------------------

/// The layout version of the `list --json` document.
pub const JSON_VERSION: u32 = 1;

/// `stowage list --json`.
#[derive(Debug, Serialize)]
pub struct JsonListing {
    /// Layout version of this document ([`JSON_VERSION`]).
    pub version: u32,
    /// The `--holding` filter, or null.
    pub holding: Option<String>,
    /// Jobs in name order (only the one named on the command line, if any).
    pub jobs: Vec<JsonJob>,
}

#[derive(Debug, Serialize)]
pub struct JsonJob {
    pub job: String,
    /// The job's schedule timezone (IANA name), the one the text listing shows times in.
    pub timezone: String,
    /// The job's destinations, in the job's order (the order restore tries them in).
    pub destinations: Vec<JsonDestination>,
}

#[derive(Debug, Serialize)]
pub struct JsonDestination {
    pub destination: String,
    /// "/var/backups/stowage" or "s3://bucket/prefix".
    pub location: String,
    /// Why the destination could not be listed (then `backups` is empty), or null.
    pub error: Option<String>,
    /// One sentence per source of the newest backup here that is under half its usual
    /// size (the median of up to 10 backups before it); empty with `--holding`.
    pub warnings: Vec<String>,
    /// Published backups, newest first.
    pub backups: Vec<JsonBackup>,
}

#[derive(Debug, Serialize)]
pub struct JsonBackup {
    pub id: String,
    /// When the backup started, from its id: RFC 3339, UTC, milliseconds, "Z".
    pub time: String,
    /// Why the manifest could not be read, or null. When not null, only `id`, `time` and
    /// `error` are present.
    pub error: Option<String>,
    #[serde(flatten)]
    pub details: Option<JsonBackupDetails>,
}

#[derive(Debug, Serialize)]
pub struct JsonBackupDetails {
    /// When the dump started and when the backup was published: RFC 3339, UTC, "Z", with
    /// the fractional seconds recorded in the manifest.
    pub started_at: String,
    pub finished_at: String,
    /// Bytes this backup added to the destination (file blobs it shares with other
    /// backups not counted): the text listing's SIZE.
    pub stored_bytes: u64,
    /// Bytes its sources produced before compression (files: the tree's total size).
    pub raw_bytes: u64,
    /// "zstd", "gzip" or "none".
    pub compression: String,
    pub encrypted: bool,
    /// "age" when encrypted, else null.
    pub encryption: Option<String>,
    /// Tool versions recorded at backup time, e.g. {"stowage": "0.1.0", "pg_dump": "…"}.
    pub tools: BTreeMap<String, String>,
    /// In the order the job dumped them.
    pub sources: Vec<JsonSource>,
    /// With the job's auth_key_file: whether the manifest's MAC checks out (a false one is
    /// refused by restore, heal, drill, download and verify, and ignored by retention);
    /// null when the job has no auth_key_file.
    pub authenticated: Option<bool>,
}

#[derive(Debug, Serialize)]
pub struct JsonSource {
    pub name: String,
    /// The engine ("postgres", "mariadb", …) or "files".
    #[serde(rename = "type")]
    pub kind: String,
    /// What the object holds once decompressed, e.g. "pg_dump custom".
    pub format: String,
    /// The stored object's key, relative to the destination's root (files: the index).
    pub key: String,
    /// Bytes stored (after compression and encryption).
    pub size: u64,
    /// Bytes before compression: what `stowage download` writes.
    pub raw_size: u64,
    /// sha256 of the stored bytes, hex.
    pub sha256: String,
    /// Databases: dump tool and version, when recorded; else null.
    pub tool: Option<String>,
    /// Databases: server version, when the engine can tell; else null.
    pub server_version: Option<String>,
    /// Databases: tables or collections in the dump; null when unknown (and for files).
    pub objects: Option<Vec<String>>,
    /// Databases: tables dumped but skipped by default on restore.
    pub exclude_tables: Vec<String>,
    /// Databases: rows per table in the dump's snapshot, when counted; else null.
    pub rows: Option<BTreeMap<String, u64>>,
    /// Files sources: counts and sizes; null for databases.
    pub files: Option<JsonFiles>,
}

#[derive(Debug, Serialize)]
pub struct JsonFiles {
    /// Files in the index.
    pub count: u64,
    /// Their total size.
    pub bytes: u64,
    /// Files whose content this backup uploaded.
    pub new_files: u64,
    /// Raw size of that new content.
    pub new_bytes: u64,
    /// Bytes stored for the new content (compressed).
    pub uploaded_bytes: u64,
}

/// RFC 3339 in UTC ("Z"), always with milliseconds: the precision of backup ids.
fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// RFC 3339 in UTC ("Z"), with the fractional seconds the manifest recorded.
fn rfc3339_exact(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn to_json(
    config: &Config,
    shelves: &[Shelf],
    only_job: Option<&str>,
    holding: Option<&str>,
) -> JsonListing {
    let jobs = config
        .jobs
        .values()
        .filter(|j| only_job.is_none_or(|o| o == j.name))
        .map(|job| JsonJob {
            job: job.name.clone(),
            timezone: job.schedule.tz().name().to_string(),
            destinations: job
                .destinations
                .iter()
                .filter_map(|d| {
                    shelves
                        .iter()
                        .find(|s| s.job == job.name && &s.destination == d)
                })
                .map(|s| json_destination(s, holding))
                .collect(),
        })
        .collect();
    JsonListing {
        version: JSON_VERSION,
        holding: holding.map(str::to_string),
        jobs,
    }
}

fn json_destination(shelf: &Shelf, holding: Option<&str>) -> JsonDestination {
    let (error, backups) = match &shelf.backups {
        Err(e) => (Some(e.clone()), Vec::new()),
        Ok(l) => (None, l.rows.iter().map(json_backup).collect()),
    };
    JsonDestination {
        destination: shelf.destination.clone(),
        location: shelf.location.clone(),
        error,
        warnings: shelf.warnings(holding),
        backups,
    }
}

fn json_backup(row: &Row) -> JsonBackup {
    let (error, details) = match &row.manifest {
        Err(e) => (Some(e.clone()), None),
        Ok(m) => (
            None,
            Some(JsonBackupDetails {
                started_at: rfc3339_exact(m.started_at),
                finished_at: rfc3339_exact(m.finished_at),
                stored_bytes: m.stored_size(),
                raw_bytes: m.raw_size(),
                compression: m.compression.as_str().to_string(),
                encrypted: m.encryption.is_some(),
                encryption: m.encryption.clone(),
                tools: m.tools.clone(),
                sources: m.sources.iter().map(json_source).collect(),
                authenticated: match row.auth {
                    manifest::Authenticity::NotChecked => None,
                    ref a => Some(a.accepted()),
                },
            }),
        ),
    };
    JsonBackup {
        id: row.id.clone(),
        time: rfc3339(row.time),
        error,
        details,
    }
}

fn json_source(s: &SourceEntry) -> JsonSource {
    JsonSource {
        name: s.name.clone(),
        kind: s.kind.clone(),
        format: s.format.clone(),
        key: s.key.clone(),
        size: s.size,
        raw_size: s.raw_size,
        sha256: s.sha256.clone(),
        tool: s.tool.clone(),
        server_version: s.server_version.clone(),
        objects: s.objects.clone(),
        exclude_tables: s.exclude_tables.clone(),
        rows: s.rows.clone(),
        files: s.files.as_ref().map(|f| JsonFiles {
            count: f.count,
            bytes: f.bytes,
            new_files: f.new_files,
            new_bytes: f.new_bytes,
            uploaded_bytes: f.uploaded,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            format: 1,
            job: "app".into(),
            id: "20260102T030405.000Z".into(),
            started_at: manifest::parse_id("20260102T030405.000Z").expect("id"),
            finished_at: manifest::parse_id("20260102T030407.500Z").expect("id"),
            compression: crate::codec::Compression::Zstd,
            encryption: None,
            sources: vec![
                SourceEntry {
                    name: "db".into(),
                    kind: "postgres".into(),
                    format: "pg_dump custom".into(),
                    key: "app/20260102T030405.000Z/db.pgdump.zst".into(),
                    size: 100,
                    raw_size: 400,
                    sha256: "ab".repeat(32),
                    objects: Some(vec!["public.orders".into()]),
                    ..Default::default()
                },
                SourceEntry {
                    name: "uploads".into(),
                    kind: "files".into(),
                    format: "stowage files index".into(),
                    key: "app/20260102T030405.000Z/uploads.files.json.zst".into(),
                    size: 10,
                    raw_size: 30,
                    sha256: "cd".repeat(32),
                    files: Some(manifest::FilesStats {
                        count: 1,
                        bytes: 5000,
                        new_files: 1,
                        new_bytes: 5000,
                        uploaded: 900,
                    }),
                    ..Default::default()
                },
            ],
            tools: BTreeMap::from([("stowage".to_string(), "0.1.0".to_string())]),
            auth: None,
            proof: Default::default(),
        }
    }

    #[test]
    fn counts_are_singular_or_plural() {
        assert_eq!(count(1, "backup", "backups"), "1 backup");
        assert_eq!(count(0, "backup", "backups"), "0 backups");
        assert_eq!(count(2, "backup", "backups"), "2 backups");
        let m = manifest();
        assert_eq!(
            describe_source(&m.sources[0]),
            "db (postgres, 100 B, 1 object)"
        );
        assert!(
            describe_source(&m.sources[1]).starts_with("uploads (files: 1 file, 1 new, "),
            "{}",
            describe_source(&m.sources[1])
        );
    }

    #[test]
    fn text_and_json_show_the_same_backups() {
        let m = manifest();
        let shelf = Shelf {
            destination: "local".into(),
            location: "/backups".into(),
            job: "app".into(),
            tz: crate::zone::Zone::UTC,
            backups: Ok(Listed {
                published: 2,
                rows: vec![
                    Row {
                        id: m.id.clone(),
                        time: m.started_at,
                        manifest: Ok(m.clone()),
                        auth: manifest::Authenticity::NotChecked,
                    },
                    Row {
                        id: "20260101T030405.000Z".into(),
                        time: manifest::parse_id("20260101T030405.000Z").expect("id"),
                        manifest: Err("manifest is not valid: eof".into()),
                        auth: manifest::Authenticity::NotChecked,
                    },
                ],
            }),
            pitr: vec!["point-in-time recovery of db on local: from x to y".into()],
        };
        let text = to_text(std::slice::from_ref(&shelf), None);
        assert!(
            text.contains(
                "  job app (2 backups)\n    point-in-time recovery of db on local: from x to y\n"
            ),
            "{text}"
        );
        assert!(text.contains("  job app (2 backups)\n"), "{text}");
        assert!(
            text.contains("unreadable manifest: manifest is not valid"),
            "{text}"
        );
        let one = Shelf {
            backups: Ok(Listed {
                published: 1,
                rows: Vec::new(),
            }),
            ..shelf
        };
        let text = to_text(std::slice::from_ref(&one), Some("orders"));
        assert!(
            text.contains("  job app (1 backup, 0 holding orders)\n"),
            "{text}"
        );

        let v = serde_json::to_value(json_backup(&Row {
            id: m.id.clone(),
            time: m.started_at,
            manifest: Ok(m.clone()),
            auth: manifest::Authenticity::NotChecked,
        }))
        .expect("json");
        assert_eq!(v["id"], "20260102T030405.000Z");
        assert_eq!(v["time"], "2026-01-02T03:04:05.000Z");
        assert_eq!(v["finished_at"], "2026-01-02T03:04:07.500Z");
        assert_eq!(v["error"], serde_json::Value::Null);
        assert_eq!(v["stored_bytes"], 100 + 10 + 900);
        assert_eq!(v["raw_bytes"], 400 + 5000);
        assert_eq!(v["compression"], "zstd");
        assert_eq!(v["encrypted"], false);
        assert_eq!(v["encryption"], serde_json::Value::Null);
        assert_eq!(v["sources"][0]["type"], "postgres");
        assert_eq!(v["sources"][0]["objects"][0], "public.orders");
        assert_eq!(v["sources"][0]["files"], serde_json::Value::Null);
        assert_eq!(v["sources"][0]["rows"], serde_json::Value::Null);
        assert_eq!(v["sources"][1]["objects"], serde_json::Value::Null);
        assert_eq!(v["sources"][1]["files"]["uploaded_bytes"], 900);

        let broken = serde_json::to_value(json_backup(&Row {
            id: "X".into(),
            time: m.started_at,
            manifest: Err("bad".into()),
            auth: manifest::Authenticity::NotChecked,
        }))
        .expect("json");
        let mut keys: Vec<&String> = broken.as_object().expect("object").keys().collect();
        keys.sort();
        assert_eq!(keys, ["error", "id", "time"]);
    }
}
