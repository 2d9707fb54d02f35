//! What stowage asks the server over a replication connection before it streams or backs
//! up: its timeline and position (`IDENTIFY_SYSTEM`), a timeline's history, the slot's
//! position (`READ_REPLICATION_SLOT`, PostgreSQL 15+) and the WAL segment size; and the
//! slot's creation, reserving WAL (`CREATE_REPLICATION_SLOT`, `ensure_slot`). Through
//! `psql` with `replication=true`: the same client tools as the rest, and a command line
//! built only from constants, numbers and the validated slot name.

use std::sync::atomic::Ordering;

use super::super::super::{drain_stderr, wait_child_stderr};
use super::PhysicalPostgres;
use super::wal::{HistoryEntry, Lsn, SegmentSize, parse_history};
use crate::engine::SourceError;

/// The first `server_version_num` with `READ_REPLICATION_SLOT` (PostgreSQL 15).
const READ_REPLICATION_SLOT_SINCE: u32 = 150000;

/// The slot as an identifier in a replication command. The name passed `check_slot_name`
/// (lower-case letters, digits, underscores), so the quotes change nothing today; they
/// keep a future looser check from turning a name into syntax.
fn quoted_slot(slot: &str) -> String {
    format!("\"{}\"", slot.replace('"', "\"\""))
}

/// Where the server is: its timeline and the end of the WAL it has written (flushed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Identity {
    pub timeline: u32,
    pub position: Lsn,
}

/// The replication slot as the server holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SlotState {
    /// No such slot.
    Missing,
    /// The slot reserves no WAL: created and never streamed from, or invalidated by the
    /// server's `max_slot_wal_keep_size`.
    Unreserved,
    /// The slot holds WAL from `restart` on.
    At { restart: Lsn },
    /// The server cannot say (older than PostgreSQL 15).
    Unknown,
}

impl PhysicalPostgres {
    /// The source's URL as a physical replication connection.
    fn replication_conninfo(&self) -> Result<String, SourceError> {
        let mut url = url::Url::parse(self.url.conninfo()).map_err(|e| SourceError::Internal {
            context: "the source URL does not parse again".to_string(),
            source: Box::new(e),
        })?;
        let kept: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(k, _)| k != "replication")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        url.query_pairs_mut()
            .clear()
            .extend_pairs(kept)
            .append_pair("replication", "true");
        Ok(url.to_string())
    }

    /// Run one replication command; its rows as CSV fields (NULL and "" both empty).
    async fn replication_command(&self, command: &str) -> Result<Vec<Vec<String>>, SourceError> {
        let mut cmd = self.command("psql");
        cmd.args(["-X", "-q", "-t", "--csv", "-v", "ON_ERROR_STOP=1", "-c", command])
            .arg("-d")
            .arg(self.replication_conninfo()?);
        let mut child = cmd.spawn().map_err(|e| self.spawn_err("psql", e))?;
        let (Some(mut stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(SourceError::Protocol("psql started without pipes".into()));
        };
        let stderr = drain_stderr(stderr);
        let mut out = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut stdout, &mut out)
            .await
            .map_err(|e| SourceError::io(format!("reading psql's answer to {command}"), e))?;
        wait_child_stderr(&format!("psql {command}"), child, stderr).await?;
        Ok(parse_csv(&String::from_utf8_lossy(&out)))
    }

    /// `IDENTIFY_SYSTEM`: the server's timeline and WAL position.
    pub(super) async fn identify(&self) -> Result<Identity, SourceError> {
        let rows = self.replication_command("IDENTIFY_SYSTEM").await?;
        let bad = || {
            SourceError::Protocol(format!(
                "IDENTIFY_SYSTEM answered {rows:?}, not \"systemid,timeline,position,dbname\""
            ))
        };
        let row = rows.first().ok_or_else(bad)?;
        let timeline = row
            .get(1)
            .and_then(|t| t.parse::<u32>().ok())
            .ok_or_else(bad)?;
        let position = row
            .get(2)
            .and_then(|p| Lsn::parse(p).ok())
            .ok_or_else(bad)?;
        Ok(Identity { timeline, position })
    }

    /// `TIMELINE_HISTORY tli`: the file's name, its content, and the content read.
    pub(super) async fn timeline_history(
        &self,
        timeline: u32,
    ) -> Result<(String, String, Vec<HistoryEntry>), SourceError> {
        let rows = self
            .replication_command(&format!("TIMELINE_HISTORY {timeline}"))
            .await?;
        let (Some(name), Some(content)) = (
            rows.first().and_then(|r| r.first()),
            rows.first().and_then(|r| r.get(1)),
        ) else {
            return Err(SourceError::Protocol(format!(
                "TIMELINE_HISTORY {timeline} answered no file"
            )));
        };
        // PostgreSQL 16 sends the content as bytea, shown in hex.
        let content = match content.strip_prefix("\\x") {
            Some(hex) => String::from_utf8_lossy(&decode_hex(hex).ok_or_else(|| {
                SourceError::Protocol(format!(
                    "TIMELINE_HISTORY {timeline}: the content is not hex"
                ))
            })?)
            .into_owned(),
            None => content.clone(),
        };
        if name != &super::wal::history_name(timeline) {
            return Err(SourceError::Protocol(format!(
                "TIMELINE_HISTORY {timeline} answered file \"{}\"",
                name.escape_debug()
            )));
        }
        let entries = parse_history(&content).map_err(SourceError::Protocol)?;
        Ok((name.clone(), content, entries))
    }

    /// `server_version_num` (150004 for 15.4); 0 when the server does not say.
    async fn server_version(&self) -> Result<u32, SourceError> {
        Ok(self
            .replication_command("SHOW server_version_num")
            .await?
            .first()
            .and_then(|r| r.first())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0))
    }

    /// The slot's restart position (`READ_REPLICATION_SLOT`, PostgreSQL 15+). An older
    /// server cannot say: a warning the first time, then [`SlotState::Unknown`].
    pub(super) async fn read_slot(&self) -> Result<SlotState, SourceError> {
        let version = self.server_version().await?;
        if version < READ_REPLICATION_SLOT_SINCE {
            if !self.slot_warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    source = %self.name,
                    "max_slot_wal is not enforced: the server (version {version}) is older than PostgreSQL 15 and cannot report the slot's position to a replication connection; cap the slot on the server with max_slot_wal_keep_size instead"
                );
            }
            return Ok(SlotState::Unknown);
        }
        self.read_slot_15().await
    }

    /// `READ_REPLICATION_SLOT`, on a server known to have it.
    async fn read_slot_15(&self) -> Result<SlotState, SourceError> {
        let rows = self
            .replication_command(&format!("READ_REPLICATION_SLOT {}", quoted_slot(&self.slot)))
            .await?;
        let row = rows.first().cloned().unwrap_or_default();
        Ok(match (row.first().map(String::as_str), row.get(1)) {
            (None | Some(""), _) => SlotState::Missing,
            (Some(_), None) => SlotState::Unreserved,
            (Some(_), Some(l)) if l.is_empty() => SlotState::Unreserved,
            (Some(_), Some(l)) => SlotState::At {
                restart: Lsn::parse(l).map_err(SourceError::Protocol)?,
            },
        })
    }

    /// Make sure the slot exists, created holding WAL from the server's last checkpoint on.
    /// Called before the receiver starts and before a base backup, which run concurrently
    /// (at the daemon's start the catch-up backup and the receiver start together): a slot
    /// created without reserving WAL (`pg_receivewal --create-slot` does that) holds
    /// nothing until the receiver first streams, and pg_receivewal with an empty spool
    /// starts at the slot's restart position, which is then the server's *current* one.
    /// A base backup that started before that would need WAL the receiver never asks for.
    /// Reserved here, the backup's start (its own checkpoint, later than the last one) is
    /// held by the slot whichever of the two comes first, and received from there.
    ///
    /// An existing slot is left as it is: one that holds WAL is where the receiver
    /// resumes; one that holds none (invalidated by the server, or created by an older
    /// stowage and never streamed from) is the business of `after_failure`.
    pub(super) async fn ensure_slot(&self) -> Result<(), SourceError> {
        if self.server_version().await? < READ_REPLICATION_SLOT_SINCE {
            // Before PostgreSQL 15, pg_receivewal cannot read a slot's position and starts
            // an empty spool at the server's current position whatever the slot holds: a
            // reservation would only keep WAL nobody asks for. Such servers keep the race.
            return self.create_slot_if_missing().await;
        }
        if self.read_slot_15().await? != SlotState::Missing {
            return Ok(());
        }
        let create = format!(
            "CREATE_REPLICATION_SLOT {} PHYSICAL (RESERVE_WAL true)",
            quoted_slot(&self.slot)
        );
        match self.replication_command(&create).await {
            Ok(_) => {
                tracing::info!(source = %self.name, "created replication slot \"{}\", holding WAL from the last checkpoint", self.slot);
                Ok(())
            }
            // The base backup and the receiver ensure the slot at the same time: the one
            // that lost the race finds it created.
            Err(e) => match self.read_slot_15().await {
                Ok(SlotState::Missing) | Err(_) => Err(e),
                Ok(_) => Ok(()),
            },
        }
    }

    /// `pg_receivewal --create-slot --if-not-exists`: a slot reserving no WAL until the
    /// receiver first streams from it.
    pub(super) async fn create_slot_if_missing(&self) -> Result<(), SourceError> {
        self.slot_command(
            &["--create-slot", "--if-not-exists"],
            "pg_receivewal --create-slot",
        )
        .await?;
        Ok(())
    }

    /// Refuse a server whose WAL segments are not 16 MiB: segment names, the chain check
    /// and retention all count in 16 MiB segments.
    pub(super) async fn check_segment_size(&self) -> Result<(), SourceError> {
        let rows = self.replication_command("SHOW wal_segment_size").await?;
        let shown = rows
            .first()
            .and_then(|r| r.first())
            .cloned()
            .unwrap_or_default();
        check_segment_size(&shown).map_err(SourceError::Refused)
    }
}

/// `SHOW wal_segment_size` ("16MB", "1GB", "512kB") in bytes.
fn parse_shown_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit {
        "B" => 1,
        "kB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

fn check_segment_size(shown: &str) -> Result<(), String> {
    match parse_shown_size(shown) {
        Some(b) if b == SegmentSize::DEFAULT.bytes() => Ok(()),
        Some(_) => Err(format!(
            "the server's WAL segment size is {shown}; stowage supports 16 MiB segments only (initdb's default); archive this server's WAL by other means or use mode = \"logical\""
        )),
        None => Err(format!(
            "the server reports wal_segment_size \"{}\", which stowage cannot read; stowage supports 16 MiB segments only",
            shown.escape_debug()
        )),
    }
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// psql's `--csv` output: fields separated by commas, quoted with `"` (doubled inside) when
/// they hold a comma, a quote or a line break.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        any = true;
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                c => field.push(c),
            }
            continue;
        }
        match c {
            '"' => quoted = true,
            ',' => row.push(std::mem::take(&mut field)),
            '\n' => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
                any = false;
            }
            '\r' => {}
            c => field.push(c),
        }
    }
    if any {
        row.push(field);
        rows.push(row);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_segment_sizes() {
        assert_eq!(parse_shown_size("16MB"), Some(16 << 20));
        assert_eq!(parse_shown_size("1GB"), Some(1 << 30));
        assert_eq!(parse_shown_size("512kB"), Some(512 << 10));
        assert_eq!(parse_shown_size("16"), None);
        assert_eq!(parse_shown_size("MB"), None);
        assert_eq!(parse_shown_size("16 MB"), None);
        assert!(check_segment_size("16MB").is_ok());
        let e = check_segment_size("64MB").expect_err("64 MiB");
        assert!(
            e.starts_with("the server's WAL segment size is 64MB; stowage supports 16 MiB segments only"),
            "{e}"
        );
        let e = check_segment_size("lots").expect_err("unreadable");
        assert!(e.contains("\"lots\""), "{e}");
    }

    #[test]
    fn slot_names_are_quoted_as_identifiers() {
        assert_eq!(quoted_slot("stowage_1"), "\"stowage_1\"");
        assert_eq!(quoted_slot("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn csv_rows_with_quoted_line_breaks() {
        assert_eq!(
            parse_csv("7716032618196479643,2,0/3000108,\n"),
            [["7716032618196479643", "2", "0/3000108", ""]]
        );
        assert_eq!(
            parse_csv("00000002.history,\"1\t0/3000000\tno recovery target specified\n\"\n"),
            [[
                "00000002.history",
                "1\t0/3000000\tno recovery target specified\n"
            ]]
        );
        assert_eq!(parse_csv("a,\"b \"\"c\"\", d\"\n"), [["a", "b \"c\", d"]]);
        assert_eq!(parse_csv(",,\n"), [["", "", ""]]);
        assert!(parse_csv("").is_empty());
        assert_eq!(decode_hex("3109"), Some(vec![0x31, 0x09]));
        assert_eq!(decode_hex("310"), None);
    }
}
