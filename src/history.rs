//! A job's history as its destinations hold it: the published manifests, not the daemon's
//! memory, so the status page and `/metrics` are right after a restart and after backups
//! made by `stowage run`. Manifests never change once published, so each is read once and
//! kept; a refresh lists the destinations and reads only the new ones.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::{Config, Job};
use crate::repo::Repository;
use crate::repo::manifest::Manifest;
use crate::storage;

/// How many of the newest backups the page plots.
pub const PLOTTED: usize = 30;

/// One published backup, as its manifest describes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    pub id: String,
    pub time: DateTime<Utc>,
    /// Bytes it added to the destination (compressed; shared blobs not counted again).
    pub stored: u64,
    /// Bytes its sources produced.
    pub raw: u64,
    /// From its start to its manifest.
    pub duration_s: f64,
    /// What each source produced.
    #[serde(default)]
    pub sources: Vec<crate::pipeline::shrink::SourceSize>,
}

#[derive(Debug, Clone, Default)]
pub struct JobHistory {
    pub job: String,
    pub refreshed: Option<DateTime<Utc>>,
    /// Per destination, in the job's order: published backups held, or why it could not
    /// be listed.
    pub held: Vec<(String, Result<usize, Arc<storage::StorageError>>)>,
    /// Newest first, at most [`PLOTTED`], from the first destination that holds backups.
    pub backups: Vec<Point>,
    /// Start of the newest published backup on any destination.
    pub newest_published: Option<DateTime<Utc>>,
    /// Per destination (in the job's order) and continuously archived source: how far
    /// back and up to when a point-in-time recovery reaches.
    pub windows: Vec<Window>,
}

/// The recoverable window of one continuously archived source on one destination, as
/// `stowage list` and the status page show it.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub destination: String,
    pub source: String,
    /// When the oldest base backup with a WAL position ended: the earliest point a
    /// recovery reaches.
    pub from: Option<DateTime<Utc>>,
    /// When the newest WAL there was shipped, or why it could not be read.
    pub to: Result<Option<DateTime<Utc>>, String>,
}

impl Window {
    /// "from … (oldest base backup) to … (newest WAL, 8 s ago)", times written by `at`.
    pub fn describe(&self, now: DateTime<Utc>, at: impl Fn(DateTime<Utc>) -> String) -> String {
        match (self.from, &self.to) {
            (Some(from), Ok(Some(to))) => format!(
                "from {} (oldest base backup) to {} (newest WAL, {} ago)",
                at(from),
                at(*to),
                ago(now - *to)
            ),
            (None, _) => "none: no base backup with a WAL position".to_string(),
            (Some(from), Ok(None)) => format!(
                "from {} (oldest base backup) to the end of its base backup (no WAL shipped here)",
                at(from)
            ),
            (Some(from), Err(e)) => format!(
                "from {} (oldest base backup) to ? (cannot read the newest WAL record: {e})",
                at(from)
            ),
        }
    }
}

/// When a base backup's copy of `source` ended, if it has a WAL position (a physical one).
pub fn base_end(m: &Manifest, source: &str) -> Option<DateTime<Utc>> {
    m.sources
        .iter()
        .find(|s| s.name == source)?
        .wal
        .as_ref()
        .map(|w| w.stop_time)
}

/// When the newest WAL of `source` was shipped to `st`: the partial pointer's, else the
/// newest record's (one or two small reads).
pub async fn newest_wal(
    st: &dyn storage::Storage,
    job: &str,
    source: &str,
    expect: &crate::repo::packing::Expect,
) -> Result<Option<DateTime<Utc>>, crate::repo::wal::WalError> {
    if let Some(p) = crate::repo::wal::read_pointer(st, job, source, expect).await? {
        return Ok(Some(p.record.shipped_at));
    }
    let names = crate::repo::wal::shipped(st, job, source).await?;
    // History files sort after segments of their timeline but are not newer WAL.
    let Some(name) = names.iter().rev().find(|n| !n.ends_with(".history")) else {
        return Ok(None);
    };
    Ok(crate::repo::wal::read_record(st, job, source, name, expect)
        .await?
        .map(|v| v.record.shipped_at))
}

/// "8 s", "5 min", "3 h", "2 days".
pub fn ago(d: chrono::TimeDelta) -> String {
    let s = d.num_seconds().max(0);
    match s {
        0..120 => format!("{s} s"),
        120..7200 => format!("{} min", s / 60),
        7200..172_800 => format!("{} h", s / 3600),
        _ => format!("{} days", s / 86_400),
    }
}

impl JobHistory {
    pub fn newest(&self) -> Option<&Point> {
        self.backups.first()
    }

    /// The newest backup is much smaller than the ones before it: the classic silent
    /// failure (an empty database dumped, a mount gone). One sentence per source that
    /// shrank ([`crate::pipeline::shrink`], the run's own warning); empty when none did,
    /// or there is too little history.
    pub fn shrunk_sources(&self) -> Vec<String> {
        let Some((newest, earlier)) = self.backups.split_first() else {
            return Vec::new();
        };
        if newest.sources.is_empty() {
            return self.shrunk_total().into_iter().collect();
        }
        let earlier: Vec<Vec<crate::pipeline::shrink::SourceSize>> =
            earlier.iter().map(|p| p.sources.clone()).collect();
        crate::pipeline::shrink::warnings(&self.job, &newest.sources, &earlier)
    }

    /// [`JobHistory::shrunk_sources`] in one line, `None` when nothing shrank.
    pub fn shrunk(&self) -> Option<String> {
        let all = self.shrunk_sources();
        (!all.is_empty()).then(|| all.join("; "))
    }

    /// The whole backup, for points that do not say what each source produced.
    fn shrunk_total(&self) -> Option<String> {
        let (newest, earlier) = self.backups.split_first()?;
        let sizes: Vec<u64> = earlier.iter().map(|p| p.raw).collect();
        let median = crate::pipeline::shrink::shrunk(newest.raw, &sizes)?;
        Some(format!(
            "the newest backup's sources produced {}, {}% of the usual {}: check that the database and files it reads are all there",
            crate::units::human_bytes(newest.raw),
            newest.raw * 100 / median,
            crate::units::human_bytes(median)
        ))
    }
}

/// (source, when its base backup ended) of one backup's physical sources.
type BaseEnds = Vec<(String, DateTime<Utc>)>;

#[derive(Default)]
pub struct History {
    jobs: Mutex<BTreeMap<String, JobHistory>>,
    /// (job, id) → what its manifest says; manifests never change.
    points: Mutex<HashMap<(String, String), Point>>,
    /// (job, id) → when each of its base backups with a WAL position ended, by source.
    bases: Mutex<HashMap<(String, String), BaseEnds>>,
}

impl History {
    pub fn get(&self, job: &str) -> JobHistory {
        self.jobs
            .lock()
            .map(|j| j.get(job).cloned().unwrap_or_default())
            .unwrap_or_default()
    }

    /// List the job's destinations and read the manifests not seen yet.
    pub async fn refresh(&self, config: &Config, job: &Job) -> JobHistory {
        let mut h = JobHistory {
            job: job.name.clone(),
            refreshed: Some(Utc::now()),
            ..Default::default()
        };
        let mut ids: Option<(Box<dyn storage::Storage>, Vec<String>)> = None;
        for js in storage::open_job(config, job).await {
            match Repository::new(js.storage.as_ref(), &job.name)
                .backups()
                .await
            {
                Ok(listing) => {
                    let published = listing.published(&job.name);
                    h.held.push((js.name.to_string(), Ok(published.len())));
                    let all: Vec<&str> = published.iter().map(|p| p.id.as_str()).collect();
                    h.windows
                        .extend(self.windows(job, js.name, js.storage.as_ref(), &all).await);
                    h.newest_published = h.newest_published.max(published.first().map(|p| p.time));
                    if ids.is_none() && !published.is_empty() {
                        ids = Some((
                            js.storage,
                            published.into_iter().take(PLOTTED).map(|p| p.id).collect(),
                        ));
                    }
                }
                Err(e) => h.held.push((js.name.to_string(), Err(Arc::new(e)))),
            }
        }
        if let Some((st, ids)) = ids {
            for id in ids {
                let key = (job.name.clone(), id.clone());
                let known = self.points.lock().ok().and_then(|p| p.get(&key).cloned());
                let point = match known {
                    Some(p) => p,
                    None => match Repository::new(st.as_ref(), &job.name).manifest(&id).await {
                        Ok(m) => {
                            let p = Point {
                                id: id.clone(),
                                time: m.started_at,
                                stored: m.stored_size(),
                                raw: m.raw_size(),
                                duration_s: (m.finished_at - m.started_at)
                                    .to_std()
                                    .map(|d| d.as_secs_f64())
                                    .unwrap_or(0.0),
                                sources: crate::pipeline::shrink::manifest_sizes(&m),
                            };
                            if let Ok(mut points) = self.points.lock() {
                                points.insert(key, p.clone());
                            }
                            p
                        }
                        // Removed by retention since the listing, or unreadable: not plotted.
                        Err(_) => continue,
                    },
                };
                h.backups.push(point);
            }
        }
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.insert(job.name.clone(), h.clone());
        }
        h
    }

    /// The recoverable window of each continuously archived source of `job` on `st`, whose
    /// published backups are `ids` (newest first): the oldest one with a WAL position for
    /// the source, and the newest WAL shipped there. Manifests are read oldest first until
    /// every source has its base, each once per process.
    async fn windows(
        &self,
        job: &Job,
        destination: &str,
        st: &dyn storage::Storage,
        ids: &[&str],
    ) -> Vec<Window> {
        let sources = job.wal_sources();
        if sources.is_empty() {
            return Vec::new();
        }
        let mut from: BTreeMap<&str, DateTime<Utc>> = BTreeMap::new();
        for id in ids.iter().rev() {
            if sources.iter().all(|s| from.contains_key(s)) {
                break;
            }
            let key = (job.name.clone(), id.to_string());
            let known = self.bases.lock().ok().and_then(|b| b.get(&key).cloned());
            let ends = match known {
                Some(e) => e,
                None => match Repository::new(st, &job.name).manifest(id).await {
                    Ok(m) => {
                        let e: BaseEnds = sources
                            .iter()
                            .filter_map(|s| Some((s.to_string(), base_end(&m, s)?)))
                            .collect();
                        if let Ok(mut b) = self.bases.lock() {
                            b.insert(key, e.clone());
                        }
                        e
                    }
                    // Removed by retention since the listing, or unreadable: not a base.
                    Err(_) => continue,
                },
            };
            for (source, end) in &ends {
                if let Some(s) = sources.iter().find(|s| **s == source.as_str()) {
                    from.entry(*s).or_insert(*end);
                }
            }
        }
        let expect = crate::repo::packing::Expect::of(job, false);
        let mut out = Vec::new();
        for source in sources {
            out.push(Window {
                destination: destination.to_string(),
                source: source.to_string(),
                from: from.get(source).copied(),
                to: newest_wal(st, &job.name, source, &expect)
                    .await
                    .map_err(|e| e.to_string()),
            });
        }
        out
    }
}

/// An inline SVG of stored size and duration over the backups (oldest left), no external
/// assets. The newest point is red when [`JobHistory::shrunk`] says so.
pub fn plot(h: &JobHistory) -> String {
    const W: f64 = 560.0;
    const H: f64 = 140.0;
    const PAD: f64 = 30.0;
    let points: Vec<&Point> = h.backups.iter().rev().collect();
    if points.is_empty() {
        return String::new();
    }
    let n = points.len();
    let x = |i: usize| {
        if n == 1 {
            PAD + (W - 2.0 * PAD) / 2.0
        } else {
            PAD + (W - 2.0 * PAD) * i as f64 / (n - 1) as f64
        }
    };
    let line = |values: Vec<f64>| -> (String, f64) {
        let max = values
            .iter()
            .cloned()
            .fold(0.0_f64, f64::max)
            .max(f64::MIN_POSITIVE);
        let pts: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x(i), H - PAD - (H - 2.0 * PAD) * v / max))
            .collect();
        (pts.join(" "), max)
    };
    let (sizes, max_size) = line(points.iter().map(|p| p.raw as f64).collect());
    let (durations, max_dur) = line(points.iter().map(|p| p.duration_s).collect());
    let last_y = {
        let v = points[n - 1].raw as f64;
        H - PAD - (H - 2.0 * PAD) * v / max_size.max(f64::MIN_POSITIVE)
    };
    let flag = if h.shrunk().is_some() {
        format!(
            "<circle cx=\"{:.1}\" cy=\"{last_y:.1}\" r=\"6\" fill=\"#c00\"><title>shrunk</title></circle>",
            x(n - 1)
        )
    } else {
        String::new()
    };
    format!(
        "<svg class=\"plot\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"dump size and duration of the last {n} backups\">\
         <rect x=\"0\" y=\"0\" width=\"{W}\" height=\"{H}\" fill=\"#fafafa\" stroke=\"#ddd\"/>\
         <line x1=\"{PAD}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#999\"/>\
         <polyline fill=\"none\" stroke=\"#1f6feb\" stroke-width=\"2\" points=\"{sizes}\"/>\
         <polyline fill=\"none\" stroke=\"#e3a008\" stroke-width=\"2\" stroke-dasharray=\"4 3\" points=\"{durations}\"/>\
         {flag}\
         <text x=\"{PAD}\" y=\"16\" font-size=\"11\" fill=\"#1f6feb\">size (max {})</text>\
         <text x=\"{mid}\" y=\"16\" font-size=\"11\" fill=\"#b07a00\">duration (max {max_dur:.1}s)</text>\
         <text x=\"{PAD}\" y=\"{t}\" font-size=\"10\" fill=\"#666\">oldest of {n}</text>\
         <text x=\"{r}\" y=\"{t}\" font-size=\"10\" fill=\"#666\" text-anchor=\"end\">newest</text>\
         </svg>",
        crate::units::human_bytes(max_size as u64),
        b = H - PAD,
        r = W - PAD,
        mid = W / 2.0,
        t = H - 10.0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(raws: &[u64]) -> JobHistory {
        JobHistory {
            backups: raws
                .iter()
                .enumerate()
                .map(|(i, r)| Point {
                    id: format!("{i}"),
                    time: Utc::now(),
                    stored: r / 3,
                    raw: *r,
                    duration_s: 1.0 + i as f64,
                    sources: Vec::new(),
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_dump_that_suddenly_shrinks_is_flagged() {
        // Newest first.
        assert!(history(&[400, 1000, 1010, 990]).shrunk().is_some());
        assert!(history(&[900, 1000, 1010, 990]).shrunk().is_none());
        assert!(
            history(&[10, 1000]).shrunk().is_none(),
            "too little history"
        );
        assert!(history(&[]).shrunk().is_none());
        let msg = history(&[400, 1000, 1010, 990])
            .shrunk()
            .unwrap_or_default();
        assert!(msg.contains("40% of the usual"), "{msg}");
    }

    #[test]
    fn each_source_is_compared_with_itself() {
        use crate::pipeline::shrink::SourceSize;
        let point = |db: u64, files: u64| Point {
            id: "x".into(),
            time: Utc::now(),
            stored: 1,
            raw: db + files,
            duration_s: 1.0,
            sources: vec![
                SourceSize {
                    name: "db".into(),
                    files: false,
                    raw: db,
                },
                SourceSize {
                    name: "uploads".into(),
                    files: true,
                    raw: files,
                },
            ],
        };
        // The whole backup barely moved (a large files source), the database dump did.
        let h = JobHistory {
            job: "app".into(),
            backups: vec![
                point(10, 100_000),
                point(1000, 100_000),
                point(1000, 100_000),
            ],
            ..Default::default()
        };
        let w = h.shrunk_sources();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("the dump of app/db is 10 B, 1% of the usual 1000 B"),
            "{w:?}"
        );
        assert_eq!(h.shrunk(), Some(w[0].clone()));
    }

    #[test]
    fn the_plot_is_inline_svg_with_both_lines_and_the_flag() {
        let svg = plot(&history(&[400, 1000, 1010, 990]));
        assert!(svg.starts_with("<svg class=\"plot\""));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("<title>shrunk</title>"));
        assert!(!svg.contains("http://") || svg.contains("xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(plot(&history(&[])).is_empty());
        assert!(!plot(&history(&[5])).contains("shrunk"));
    }
}
