//! Before each start of `pg_receivewal`: make sure it can resume. The server must use
//! 16 MiB segments; a spool left on a timeline the server abandoned (a restore or a
//! promotion) is set aside so streaming goes on on the server's timeline; a slot holding
//! more than `max_slot_wal`, or one the server invalidated, is given up and streaming
//! starts again from the server's current position, with the lost range logged.

use std::path::Path;

use tracing::{error, info, warn};

use super::PhysicalPostgres;
use super::server::SlotState;
use super::spool;
use super::wal::{Lsn, SegmentSize, segment_of};
use crate::engine::SourceError;
use crate::units::human_bytes;

/// What pg_receivewal says when the server no longer has the WAL it asks for.
const REMOVED: &str = "has already been removed";

fn spool_err(spool: &Path, what: &str, e: std::io::Error) -> SourceError {
    SourceError::io(format!("cannot {what} in the WAL spool {}", spool.display()), e)
}

impl PhysicalPostgres {
    /// Everything checked and repaired before a start of the receiver.
    pub(super) async fn prepare_receive(&self, spool: &Path) -> Result<(), SourceError> {
        self.check_segment_size().await?;
        let id = self.identify().await?;
        self.follow_timeline(spool, id.timeline).await?;
        if let Some(cap) = self.max_slot_wal
            && let SlotState::At { restart } = self.read_slot().await?
        {
            let held = id.position.0.saturating_sub(restart.0);
            if held > cap {
                self.give_up_slot(
                    spool,
                    (Some(restart), id.position, id.timeline),
                    &format!(
                        "the slot holds {} of WAL on the server, more than max_slot_wal ({})",
                        human_bytes(held),
                        human_bytes(cap)
                    ),
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Set aside the spool's files that the server's timeline `server` no longer continues.
    async fn follow_timeline(&self, spool: &Path, server: u32) -> Result<(), SourceError> {
        let files = spool::segments(spool).map_err(|e| spool_err(spool, "list files", e))?;
        if files.iter().all(|f| f.timeline == server) {
            return Ok(());
        }
        let (history_file, content, history) = if server > 1 {
            self.timeline_history(server).await?
        } else {
            (String::new(), String::new(), Vec::new())
        };
        let plan = spool::plan_timeline(&files, server, &history);
        if !history_file.is_empty() {
            spool::write_history(spool, &history_file, &content)
                .map_err(|e| spool_err(spool, "write the timeline history", e))?;
        }
        if plan.aside.is_empty() {
            return Ok(());
        }
        let dir = spool::set_aside(spool, &plan.aside)
            .map_err(|e| spool_err(spool, "set files aside", e))?;
        let why = match plan.fork {
            Some((tli, at)) => format!(
                "the server is on timeline {server}, which left timeline {tli} at {at} (a restore or a promotion)"
            ),
            None => format!("the server is on timeline {server}, whose history does not hold them"),
        };
        warn!(
            source = %self.name,
            "WAL receiver: {why}: set aside {} into {} (not shipped, not deleted); streaming goes on on timeline {server}",
            plan.aside.join(", "),
            dir.display()
        );
        if let Some(seed) = &plan.seed {
            spool::seed(spool, seed).map_err(|e| spool_err(spool, "start a segment", e))?;
            info!(source = %self.name, "WAL receiver: resuming at {seed} on timeline {server}");
        }
        Ok(())
    }

    /// Drop the slot and set aside the spool's segments: streaming then starts afresh at
    /// the server's current position, and the WAL from `from` to `to` is never archived.
    pub(super) async fn give_up_slot(
        &self,
        spool: &Path,
        (from, to, timeline): (Option<Lsn>, Lsn, u32),
        why: &str,
    ) -> Result<(), SourceError> {
        match self
            .slot_command(&["--drop-slot"], "pg_receivewal --drop-slot")
            .await
        {
            Ok(_) => {}
            // Already gone is what was wanted.
            Err(SourceError::Failed { stderr, .. }) if stderr.contains("does not exist") => {}
            Err(e) => return Err(e),
        }
        // The replacement reserves no WAL (`ensure_slot` would reserve from the last
        // checkpoint): streaming goes on from the server's current position, as logged
        // below, not from inside the range just given up.
        self.create_slot_if_missing().await?;
        let files = spool::segments(spool).map_err(|e| spool_err(spool, "list files", e))?;
        let names: Vec<String> = files.iter().map(|f| f.name.clone()).collect();
        let aside = if names.is_empty() {
            String::new()
        } else {
            let dir = spool::set_aside(spool, &names)
                .map_err(|e| spool_err(spool, "set files aside", e))?;
            format!("; set aside {} into {}", names.join(", "), dir.display())
        };
        let seg = SegmentSize::DEFAULT;
        let from = match from {
            Some(lsn) => format!("{lsn} ({})", segment_of(lsn, timeline, seg)),
            None => "the end of the shipped WAL".to_string(),
        };
        error!(
            source = %self.name,
            "WAL receiver: {why}: dropped replication slot \"{}\"; WAL from {from} to {to} ({}) is lost to point-in-time recovery until the next base backup; streaming goes on from the server's current position{aside}",
            self.slot,
            segment_of(to, timeline, seg),
        );
        Ok(())
    }

    /// After `pg_receivewal` failed with `stderr`: when the server no longer has the WAL it
    /// asked for (the slot was invalidated by `max_slot_wal_keep_size`, or never held it),
    /// waiting will not bring it back: give the slot up so the next start streams again.
    pub(super) async fn after_failure(&self, spool: &Path, stderr: &str) {
        if !stderr.contains(REMOVED) {
            return;
        }
        let files = spool::segments(spool).unwrap_or_default();
        let from = spool::resume_point(&files);
        let id = match self.identify().await {
            Ok(id) => id,
            Err(e) => {
                warn!(source = %self.name, "WAL receiver: the server no longer has the WAL to resume from, and cannot be asked where it is: {e}");
                return;
            }
        };
        if let Err(e) = self
            .give_up_slot(
                spool,
                (from, id.position, id.timeline),
                "the server no longer has the WAL the receiver resumes from (the slot was invalidated, e.g. by max_slot_wal_keep_size)",
            )
            .await
        {
            warn!(source = %self.name, "WAL receiver: cannot give up the slot: {e}");
        }
    }
}
