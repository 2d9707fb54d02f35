//! What a run would do, checked without doing it (`run --dry-run`, `check-config
//! --connect`): every source reachable (its tool present, its database answering, its
//! directory readable), every destination reachable and writable (a probe object written
//! and removed), and what retention would delete once the next backup is published.

use chrono::Utc;

use crate::config::{Config, FilesConfig, Job, SourceConfig};
use crate::engine::Database;
use crate::repo::Repository;
use crate::retention;
use crate::source::files::{self as tree, PathFilter};
use crate::storage::{self, JobStorage};
use crate::units::human_bytes;

#[derive(Debug, Default)]
pub struct Checked {
    /// What would happen, one line each.
    pub lines: Vec<String>,
    /// What would fail, one line each, naming the source or destination.
    pub problems: Vec<String>,
}

pub async fn check_job(config: &Config, job: &Job) -> Checked {
    let mut c = Checked::default();
    for src in &job.sources {
        match src {
            SourceConfig::Database(db) => check_database(db.as_ref(), &mut c).await,
            SourceConfig::Files(f) => check_files(f, &mut c).await,
        }
    }
    let probe_id = crate::repo::layout::new_id(Utc::now());
    let probe = crate::repo::Names::new(job, &probe_id).lock("probe");
    for js in storage::open_job(config, job).await {
        check_destination(job, &js, &probe, &mut c).await;
    }
    c
}

/// A database source: its tool present and, when it has objects, its database answering.
async fn check_database(db: &dyn Database, c: &mut Checked) {
    let tool = match db.tool_version().await {
        Ok((_, version)) => version,
        Err(e) => {
            c.problems.push(format!("source {}: {e}", db.name()));
            return;
        }
    };
    // Engines without objects (a command) have nothing to connect to here.
    let objects = if db.selects_objects() || db.own_target().is_some() {
        match db.live_objects(None).await {
            Ok(o) => format!(", {} table(s) or collection(s) now", o.len()),
            Err(e) => {
                c.problems
                    .push(format!("source {}: cannot connect: {e}", db.name()));
                return;
            }
        }
    } else {
        String::new()
    };
    c.lines.push(format!(
        "would dump {} ({}) with {tool}{objects}",
        db.name(),
        db.describe()
    ));
}

/// A files source: its tree readable, counted.
async fn check_files(f: &FilesConfig, c: &mut Checked) {
    let filter = match PathFilter::new(&f.include, &f.exclude) {
        Ok(p) => p,
        Err(e) => {
            c.problems.push(format!("source {}: {e}", f.name));
            return;
        }
    };
    let root = f.path.clone();
    // Counted as the walk goes: a tree of millions of files is never held.
    let counted = tokio::task::spawn_blocking(move || {
        let (mut count, mut bytes) = (0u64, 0u64);
        tree::walk(&root, &filter, |found| {
            if let tree::Found::File(m) = found {
                count += 1;
                bytes += m.size;
            }
            true
        })
        .map(|()| (count, bytes))
    });
    match counted.await {
        Ok(Ok((count, bytes))) => {
            c.lines.push(format!(
                "would back up files {} from {}: {count} file(s), {} (only contents no destination has are uploaded)",
                f.name,
                f.path.display(),
                human_bytes(bytes)
            ));
        }
        Ok(Err(e)) => c.problems.push(format!("source {}: {e}", f.name)),
        Err(e) => c
            .problems
            .push(format!("source {}: scan aborted: {e}", f.name)),
    }
}

/// A destination: reachable, with the Object Lock it is configured for, writable and
/// listable; and what retention would then delete.
async fn check_destination(job: &Job, js: &JobStorage<'_>, probe: &String, c: &mut Checked) {
    let jn = &job.name;
    let name = js.name;
    let st = js.storage.as_ref();
    if let Err(e) = st.preflight().await {
        c.problems
            .push(format!("destination {name} ({}): {e}", st.location()));
        return;
    }
    if !object_lock_ok(js, name, c).await {
        return;
    }
    // Writable: a small object written and removed where locks go.
    if let Err(e) = st
        .put_bytes(probe, bytes::Bytes::from_static(b"probe"))
        .await
    {
        c.problems.push(format!(
            "destination {name} ({}): cannot write: {e}",
            st.location()
        ));
        return;
    }
    let _ = st.delete(std::slice::from_ref(probe)).await;
    let listing = match Repository::new(st, jn).backups().await {
        Ok(l) => l,
        Err(e) => {
            c.problems.push(format!(
                "destination {name} ({}): cannot list: {e}",
                st.location()
            ));
            return;
        }
    };
    let (held, left_out) = match crate::pipeline::weighed(st, job, &listing.published(jn)).await {
        Ok(w) => w,
        Err(e) => {
            c.problems.push(format!(
                "destination {name} ({}): cannot read manifests: {e}",
                st.location()
            ));
            return;
        }
    };
    retention_outlook(job, js, held, &left_out, c).await;
}

/// Whether the destination has the Object Lock its `object_lock` asks for (true when it
/// asks for none); says which mode it writes in, or what is wrong.
async fn object_lock_ok(js: &JobStorage<'_>, name: &str, c: &mut Checked) -> bool {
    let st = js.storage.as_ref();
    if let Some(lock) = js.destination.object_lock() {
        match st.object_lock_enabled().await {
            Ok(Some(true)) => c.lines.push(format!(
                "destination {name} ({}): Object Lock enabled; objects are written locked in {} mode for {} day(s)",
                st.location(),
                lock.mode.as_str(),
                lock.days
            )),
            Ok(Some(false)) => {
                c.problems.push(format!(
                    "destination {name} ({}): object_lock is set, but the bucket does not have Object Lock enabled; create the bucket with it (aws s3api create-bucket --object-lock-enabled-for-bucket) or enable it (aws s3api put-object-lock-configuration), or remove object_lock",
                    st.location()
                ));
                return false;
            }
            Ok(None) => {
                c.problems.push(format!(
                    "destination {name} ({}): object_lock is set, but this store has no Object Lock; remove object_lock",
                    st.location()
                ));
                return false;
            }
            Err(e) => {
                c.problems.push(format!(
                    "destination {name} ({}): cannot check Object Lock: {e}",
                    st.location()
                ));
                return false;
            }
        }
    }
    true
}

/// What retention would delete once the next backup is published, of the backups `held`.
async fn retention_outlook(
    job: &Job,
    js: &JobStorage<'_>,
    mut held: Vec<(String, chrono::DateTime<Utc>)>,
    left_out: &[(String, String)],
    c: &mut Checked,
) {
    let (jn, name, st) = (&job.name, js.name, js.storage.as_ref());
    for (id, why) in left_out {
        c.lines.push(format!(
            "destination {name}: retention leaves backup {id} alone: {why}"
        ));
    }
    let now = Utc::now();
    // The next backup, as retention will see it once it is published.
    held.insert(0, (crate::repo::layout::new_id(now), now));
    let policy = &js.destination.retention;
    let min = js
        .destination
        .min_storage()
        .map(|(_, days)| chrono::TimeDelta::days(days.into()));
    let mut decisions = retention::decide(&held, policy, job.schedule.tz(), min, now);
    let doomed: Vec<(&str, chrono::DateTime<Utc>)> = decisions
        .iter()
        .filter(|d| !d.keep)
        .map(|d| (d.id.as_str(), d.time))
        .collect();
    match Repository::new(st, jn)
        .object_locks(&doomed, js.destination.object_lock())
        .await
    {
        Ok(locks) => retention::hold_locked(&mut decisions, &locks, now),
        Err(e) => {
            c.problems.push(format!(
                "destination {name} ({}): cannot read the Object Lock of backups retention would delete: {e}",
                st.location()
            ));
            return;
        }
    }
    let locked: Vec<String> = decisions
        .iter()
        .filter(|d| d.reasons.contains(&"locked"))
        .filter_map(|d| {
            d.locked_until.map(|u| {
                format!(
                    "{} (kept: locked until {})",
                    d.id,
                    u.format("%Y-%m-%d %H:%M:%S UTC")
                )
            })
        })
        .collect();
    let gone: Vec<&str> = decisions
        .iter()
        .filter(|d| !d.keep)
        .map(|d| d.id.as_str())
        .collect();
    c.lines.push(format!(
        "destination {name} ({}): reachable and writable, {} backup(s); retention ({}) would then delete {}",
        st.location(),
        held.len() - 1,
        policy.describe(),
        if gone.is_empty() {
            "nothing".to_string()
        } else {
            gone.join(", ")
        }
    ));
    if !locked.is_empty() {
        c.lines.push(format!(
            "destination {name}: retention keeps {} backup(s) its rules would delete: {}",
            locked.len(),
            locked.join(", ")
        ));
    }
}
