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
}

#[derive(Debug, Clone, Default)]
pub struct JobHistory {
    pub refreshed: Option<DateTime<Utc>>,
    /// Per destination, in the job's order: published backups held, or why it could not
    /// be listed.
    pub held: Vec<(String, Result<usize, Arc<storage::StorageError>>)>,
    /// Newest first, at most [`PLOTTED`], from the first destination that holds backups.
    pub backups: Vec<Point>,
    /// Start of the newest published backup on any destination.
    pub newest_published: Option<DateTime<Utc>>,
}

impl JobHistory {
    pub fn newest(&self) -> Option<&Point> {
        self.backups.first()
    }

    /// The newest backup is much smaller than the ones before it: the classic silent
    /// failure (an empty database dumped, a mount gone). Under half the median of up to
    /// ten earlier backups; `None` when it is not, or there is too little history.
    pub fn shrunk(&self) -> Option<String> {
        let (newest, earlier) = self.backups.split_first()?;
        let mut sizes: Vec<u64> = earlier.iter().take(10).map(|p| p.raw).collect();
        if sizes.len() < 2 {
            return None;
        }
        sizes.sort_unstable();
        let median = sizes[sizes.len() / 2];
        (median > 0 && newest.raw * 2 < median).then(|| {
            format!(
                "the newest backup's sources produced {}, {}% of the usual {}: check that the database and files it reads are all there",
                crate::units::human_bytes(newest.raw),
                newest.raw * 100 / median,
                crate::units::human_bytes(median)
            )
        })
    }
}

#[derive(Default)]
pub struct History {
    jobs: Mutex<BTreeMap<String, JobHistory>>,
    /// (job, id) → what its manifest says; manifests never change.
    points: Mutex<HashMap<(String, String), Point>>,
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
