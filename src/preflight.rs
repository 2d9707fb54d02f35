//! What a run would do, checked without doing it (`run --dry-run`, `check-config
//! --connect`): every source reachable (its tool present, its database answering, its
//! directory readable), every destination reachable and writable (a probe object written
//! and removed), and what retention would delete once the next backup is published.

use chrono::Utc;

use crate::config::{Config, Job, SourceConfig};
use crate::manifest::JobListing;
use crate::pipeline::human_bytes;
use crate::retention;
use crate::source::files::{self as tree, PathFilter};
use crate::storage;

#[derive(Debug, Default)]
pub struct Checked {
    /// What would happen, one line each.
    pub lines: Vec<String>,
    /// What would fail, one line each, naming the source or destination.
    pub problems: Vec<String>,
}

pub async fn check_job(config: &Config, job: &Job) -> Checked {
    let mut c = Checked::default();
    let jn = &job.name;
    for src in &job.sources {
        match src {
            SourceConfig::Database(db) => {
                let tool = match db.tool_version().await {
                    Ok((_, version)) => version,
                    Err(e) => {
                        c.problems.push(format!("source {}: {e}", db.name()));
                        continue;
                    }
                };
                // Engines without objects (a command) have nothing to connect to here.
                let objects = if db.selects_objects() || db.own_target().is_some() {
                    match db.live_objects(None).await {
                        Ok(o) => format!(", {} table(s) or collection(s) now", o.len()),
                        Err(e) => {
                            c.problems
                                .push(format!("source {}: cannot connect: {e}", db.name()));
                            continue;
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
            SourceConfig::Files(f) => {
                let filter = match PathFilter::new(&f.include, &f.exclude) {
                    Ok(p) => p,
                    Err(e) => {
                        c.problems.push(format!("source {}: {e}", f.name));
                        continue;
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
        }
    }
    let probe_id = crate::layout::new_id(Utc::now());
    let probe = crate::layout::lock_key(jn, &probe_id, "probe");
    for js in storage::open_job(config, job).await {
        let name = js.name;
        let st = js.storage.as_ref();
        if let Err(e) = st.preflight().await {
            c.problems
                .push(format!("destination {name} ({}): {e}", st.location()));
            continue;
        }
        // Writable: a small object written and removed where locks go.
        if let Err(e) = st
            .put_bytes(&probe, bytes::Bytes::from_static(b"probe"))
            .await
        {
            c.problems.push(format!(
                "destination {name} ({}): cannot write: {e}",
                st.location()
            ));
            continue;
        }
        let _ = st.delete(std::slice::from_ref(&probe)).await;
        let listing = match JobListing::read_backups(st, jn).await {
            Ok(l) => l,
            Err(e) => {
                c.problems.push(format!(
                    "destination {name} ({}): cannot list: {e}",
                    st.location()
                ));
                continue;
            }
        };
        let (mut held, left_out) =
            match crate::pipeline::weighed(st, job, &listing.published(jn)).await {
                Ok(w) => w,
                Err(e) => {
                    c.problems.push(format!(
                        "destination {name} ({}): cannot read manifests: {e}",
                        st.location()
                    ));
                    continue;
                }
            };
        for (id, why) in &left_out {
            c.lines.push(format!(
                "destination {name}: retention leaves backup {id} alone: {why}"
            ));
        }
        let now = Utc::now();
        // The next backup, as retention will see it once it is published.
        held.insert(0, (crate::layout::new_id(now), now));
        let policy = &js.destination.retention;
        let min = js
            .destination
            .min_storage()
            .map(|(_, days)| chrono::TimeDelta::days(days.into()));
        let decisions = retention::decide(&held, policy, job.schedule.tz(), min, now);
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
    }
    c
}
