//! Restore drills for MariaDB/MySQL: the scratch is a database named by the drill's `to`
//! (usually on the source's server), dropped and created empty before the restore and
//! dropped after it. Never the source's own database, nor one of the server's own schemas.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::sql::quote_name;
use super::{MariaDbSource, parse_target};
use crate::source::url::DbUrl;
use crate::engine::{Scratch, SourceError};

/// Databases the server itself lives on: a drill creates and drops its target.
const SYSTEM: &[&str] = &["mysql", "information_schema", "performance_schema", "sys"];

/// Tables counted per statement: one client run per this many tables.
const COUNT_BATCH: usize = 200;

impl MariaDbSource {
    /// The scratch database's URL, or why `target` cannot be one.
    fn scratch_url(&self, target: &str) -> Result<DbUrl, SourceError> {
        if self.is_own_database(target) {
            return Err(SourceError::Refused(format!(
                "{} is the database of source \"{}\"; a drill only uses a scratch database",
                crate::source::url::redact(target),
                self.name
            )));
        }
        let url = parse_target(target).map_err(SourceError::Refused)?;
        let db = url.database();
        if SYSTEM.iter().any(|s| s.eq_ignore_ascii_case(&db)) {
            return Err(SourceError::Refused(format!(
                "\"{db}\" is a system database of the server; a drill drops and creates its target, so give a scratch database, e.g. mysql://USER@HOST:PORT/stowage_drill"
            )));
        }
        Ok(url)
    }
}

#[async_trait]
impl Scratch for MariaDbSource {
    /// By name alone, and without case (a server with lower_case_table_names folds it): the
    /// same database reached under another host name must not pass.
    fn is_own_database(&self, target: &str) -> bool {
        match (&self.url, parse_target(target)) {
            (Some(own), Ok(t)) => own.database().eq_ignore_ascii_case(&t.database()),
            _ => false,
        }
    }

    /// Objects keep their DEFINER whatever the option says (the restore warns about it).
    fn restores_without_owners(&self) -> bool {
        false
    }

    async fn create(&self, target: &str) -> Result<(), SourceError> {
        let url = self.scratch_url(target)?;
        let name = quote_name(&url.database());
        self.rows(
            &url.with_database("information_schema"),
            &format!(
                "drop database if exists {name}; create database {name} character set utf8mb4"
            ),
        )
        .await?;
        Ok(())
    }

    async fn drop(&self, target: &str) -> Result<(), SourceError> {
        let url = self.scratch_url(target)?;
        self.rows(
            &url.with_database("information_schema"),
            &format!("drop database if exists {}", quote_name(&url.database())),
        )
        .await?;
        Ok(())
    }

    /// Exact counts (`count(*)`, not the statistics' estimates) of every base table.
    async fn row_counts(&self, target: &str) -> Result<BTreeMap<String, u64>, SourceError> {
        let url = self.scratch_url(target)?;
        let tables = self.base_tables(&url).await?;
        let mut counts = BTreeMap::new();
        for (b, batch) in tables.chunks(COUNT_BATCH).enumerate() {
            let sql = batch
                .iter()
                .enumerate()
                .map(|(i, t)| format!("select {i}, count(*) from {}", quote_name(t)))
                .collect::<Vec<_>>()
                .join(" union all ");
            for row in self.rows(&url, &sql).await? {
                let parsed = match row.as_slice() {
                    [i, n] => i
                        .trim()
                        .parse::<usize>()
                        .ok()
                        .zip(n.trim().parse::<u64>().ok()),
                    _ => None,
                };
                let Some((i, n)) = parsed.filter(|(i, _)| *i < batch.len()) else {
                    return Err(SourceError::Protocol(format!(
                        "unexpected row counts from the server: {row:?} (batch {b})"
                    )));
                };
                counts.insert(batch[i].clone(), n);
            }
        }
        Ok(counts)
    }

    async fn check(&self, target: &str, query: &str) -> Result<bool, SourceError> {
        let url = self.scratch_url(target)?;
        let rows = self.rows(&url, query).await?;
        match rows.as_slice() {
            [row] if row.len() == 1 => match row[0].trim() {
                "1" => Ok(true),
                "0" => Ok(false),
                other => Err(SourceError::Refused(format!(
                    "the check returned {other:?}, not a boolean; write it to return true or false, e.g. select count(*) > 0 from orders"
                ))),
            },
            _ => Err(SourceError::Refused(format!(
                "the check returned {} row(s); it must return one boolean, e.g. select count(*) > 0 from orders",
                rows.len()
            ))),
        }
    }
}
