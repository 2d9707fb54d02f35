//! Progress of long work (a dump, a restore, a verify): a bar with bytes, rate and ETA when
//! stderr is a terminal, and otherwise a log line every ~10 s (`docker logs` shows a long
//! restore moving instead of a start line and, much later, an end line).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::codec::Reader;
use crate::units::human_bytes;

/// How often a progress line is logged when there is no terminal; `STOWAGE_PROGRESS_INTERVAL`
/// ("10s", "500ms") changes it.
fn interval() -> Duration {
    std::env::var("STOWAGE_PROGRESS_INTERVAL")
        .ok()
        .and_then(|v| humantime::parse_duration(&v).ok())
        .unwrap_or(Duration::from_secs(10))
}

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Bytes,
    Objects,
}

pub struct Progress {
    what: String,
    unit: Unit,
    total: Option<u64>,
    done: AtomicU64,
    started: Instant,
    bar: Option<indicatif::ProgressBar>,
    next_log: Mutex<Instant>,
    every: Duration,
}

impl Progress {
    /// `total`: bytes expected, when known (then a percentage and an ETA are shown).
    pub fn new(what: impl Into<String>, total: Option<u64>) -> Arc<Progress> {
        Self::counting(what, total, Unit::Bytes)
    }

    /// Objects rather than bytes (retrieval requests).
    pub fn objects(what: impl Into<String>, total: u64) -> Arc<Progress> {
        Self::counting(what, Some(total), Unit::Objects)
    }

    fn counting(what: impl Into<String>, total: Option<u64>, unit: Unit) -> Arc<Progress> {
        let what = what.into();
        let every = interval();
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = match total {
                Some(t) => indicatif::ProgressBar::new(t).with_style(
                    indicatif::ProgressStyle::with_template(match unit {
                        Unit::Bytes => {
                            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}, ETA {eta}"
                        }
                        Unit::Objects => "{msg} [{bar:30}] {pos}/{len} objects, ETA {eta}",
                    })
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                    .progress_chars("=> "),
                ),
                None => indicatif::ProgressBar::new_spinner().with_style(
                    indicatif::ProgressStyle::with_template(
                        "{spinner} {msg} {bytes} {bytes_per_sec} {elapsed}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
                ),
            };
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            bar.set_message(what.clone());
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Arc::new(Progress {
            what,
            unit,
            total,
            done: AtomicU64::new(0),
            started: Instant::now(),
            bar,
            next_log: Mutex::new(Instant::now() + every),
            every,
        })
    }

    pub fn add(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        if let Some(bar) = &self.bar {
            bar.set_position(done);
            return;
        }
        let now = Instant::now();
        let Ok(mut next) = self.next_log.lock() else {
            return;
        };
        if now >= *next {
            *next = now + self.every;
            drop(next);
            tracing::info!(progress = true, "{}", self.line(done));
        }
    }

    /// Start counting again (a second pass over the same object).
    pub fn restart(&self) {
        self.done.store(0, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.set_position(0);
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    /// "restore db: 1.2 GiB of 3.4 GiB (35%), 45.1 MiB/s, about 48s left"
    fn line(&self, done: u64) -> String {
        if self.unit == Unit::Objects {
            let total = self.total.unwrap_or(0).max(1);
            return format!(
                "{}: {done} of {} object(s) ({}%)",
                self.what,
                total,
                done.min(total) * 100 / total
            );
        }
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = done as f64 / secs;
        let mut line = format!("{}: {}", self.what, human_bytes(done));
        if let Some(total) = self.total.filter(|t| *t > 0) {
            line.push_str(&format!(
                " of {} ({}%)",
                human_bytes(total),
                (done.min(total) * 100 / total)
            ));
            line.push_str(&format!(", {}/s", human_bytes(rate as u64)));
            if rate > 0.0 && done < total {
                let left = Duration::from_secs(((total - done) as f64 / rate) as u64);
                line.push_str(&format!(
                    ", about {} left",
                    humantime::format_duration(left)
                ));
            }
        } else {
            line.push_str(&format!(", {}/s", human_bytes(rate as u64)));
        }
        line
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// `r`, counting what is read into `p`.
pub fn counted(r: Reader, p: Arc<Progress>) -> Reader {
    Box::new(tokio_util::io::InspectReader::new(r, move |b: &[u8]| {
        p.add(b.len() as u64)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_say_how_far_how_fast_and_how_long() {
        let p = Progress {
            what: "restore db".into(),
            unit: Unit::Bytes,
            total: Some(4 * 1024 * 1024),
            done: AtomicU64::new(0),
            started: Instant::now() - Duration::from_secs(2),
            bar: None,
            next_log: Mutex::new(Instant::now()),
            every: Duration::from_secs(10),
        };
        let line = p.line(1024 * 1024);
        assert!(
            line.starts_with("restore db: 1.0 MiB of 4.0 MiB (25%), "),
            "{line}"
        );
        assert!(line.contains("/s, about "), "{line}");
        let unknown = Progress {
            what: "backup app db".into(),
            unit: Unit::Bytes,
            total: None,
            done: AtomicU64::new(0),
            started: Instant::now(),
            bar: None,
            next_log: Mutex::new(Instant::now()),
            every: Duration::from_secs(10),
        };
        assert!(unknown.line(2048).starts_with("backup app db: 2.0 KiB, "));
        let objects = Progress {
            what: "retrieval requests".into(),
            unit: Unit::Objects,
            total: Some(40),
            done: AtomicU64::new(0),
            started: Instant::now(),
            bar: None,
            next_log: Mutex::new(Instant::now()),
            every: Duration::from_secs(10),
        };
        assert_eq!(
            objects.line(12),
            "retrieval requests: 12 of 40 object(s) (30%)"
        );
    }
}
