//! The text of a message people read (email, ntfy): a subject that says what happened to
//! which job where, and a body with the run's figures, its errors and warnings, and what to
//! do next. Nothing secret goes in: destinations by name, errors as the run reported them.

use crate::pipeline::{Outcome, RunReport};

/// What a run's message tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum What {
    /// Failed, or published on only some destinations.
    Failed,
    /// The first success after a failure.
    Recovered,
    /// A success with warnings.
    Warning,
    /// A success like the one before (sent only to notifiers with `on_success`).
    Succeeded,
}

impl What {
    pub fn of(report: &RunReport, previous_failed: bool) -> What {
        match report.outcome {
            Outcome::Success if previous_failed => What::Recovered,
            Outcome::Success if !report.warnings.is_empty() => What::Warning,
            Outcome::Success | Outcome::Cancelled => What::Succeeded,
            Outcome::Failed | Outcome::Partial => What::Failed,
        }
    }
}

/// One message: `subject` is an email's subject and an ntfy title.
#[derive(Debug, Clone)]
pub struct Message {
    pub what: Option<What>,
    pub subject: String,
    pub body: String,
}

impl Message {
    pub fn run(what: What, r: &RunReport, host: &str) -> Message {
        let job = &r.job;
        let (headline, verdict) = match (what, r.outcome) {
            (What::Failed, Outcome::Partial) => {
                ("PARTLY FAILED", "published on some destinations only")
            }
            (What::Failed, _) => ("FAILED", "failed: no new backup was published"),
            (What::Recovered, _) => ("recovered", "succeeded again after a failure"),
            (What::Warning, _) => ("succeeded with warnings", "succeeded, with warnings"),
            (What::Succeeded, _) => ("succeeded", "succeeded"),
        };
        let subject = format!("stowage: job {job} {headline} on {host}");
        let mut body = format!("The backup of job {job} on {host} {verdict}.\n\n");
        body.push_str(super::summary(r).lines().next().unwrap_or_default());
        body.push('\n');
        if !r.errors.is_empty() {
            body.push_str("\nErrors:\n");
            for (what, why) in &r.errors {
                body.push_str(&format!("- {what}: {why}\n"));
            }
        }
        if !r.warnings.is_empty() {
            body.push_str("\nWarnings:\n");
            for w in &r.warnings {
                body.push_str(&format!("- {w}\n"));
            }
        }
        body.push_str("\nWhat to do next:\n");
        body.push_str(&next_steps(what, job));
        Message {
            what: Some(what),
            subject,
            body,
        }
    }

    /// A pass beside the backups (`event`: heal, verify, drill) that people should read:
    /// `headline` after the job's name in the subject ("drill FAILED"), `lines` the report.
    pub fn pass(
        what: What,
        job: &str,
        headline: &str,
        lines: &[String],
        next: &str,
        host: &str,
    ) -> Message {
        let mut body = String::new();
        for l in lines {
            body.push_str(l);
            body.push('\n');
        }
        body.push_str("\nWhat to do next:\n");
        body.push_str(next);
        Message {
            what: Some(what),
            subject: format!("stowage: job {job} {headline} on {host}"),
            body,
        }
    }

    /// Say that the failed run is tried again: retry `next` of `retries` in `delay`.
    pub fn retries_follow(&mut self, next: u32, retries: u32, delay: std::time::Duration) {
        self.body.push_str(&format!(
            "\nstowage tries again in {} (retry {next} of {retries}). No further message \
             is sent if the retries fail too; one saying \"recovered\" if one succeeds.\n",
            humantime::format_duration(delay)
        ));
    }
}

fn next_steps(what: What, job: &str) -> String {
    match what {
        What::Failed => format!(
            "- read the errors above, and the log around run time: `docker logs stowage` \
             (lines with job={job}), or the files in the [log] dir\n\
             - check the job's sources and destinations without a backup: `stowage run --dry-run {job}`\n\
             - once fixed, back up now: `stowage run {job}`, and see the backups: `stowage list {job}`\n\
             The daemon tries again at the next scheduled time; you get a message when it succeeds.\n"
        ),
        What::Recovered => format!(
            "- nothing: the job is healthy again. The backups are listed by `stowage list {job}`.\n"
        ),
        What::Warning => format!(
            "- the backup is published; look at why the warnings above came up (a database \
             much smaller than before may mean lost data)\n\
             - compare with earlier backups: `stowage list {job}`\n"
        ),
        What::Succeeded => format!("- nothing. The backups are listed by `stowage list {job}`.\n"),
    }
}
