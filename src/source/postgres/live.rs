//! The target's side of a table restore: a schema-only dump of the live database, read
//! with the same TOC tools as the backup, so that what `DROP TABLE … CASCADE` takes with a
//! replaced table is re-created exactly as it was (pg_dump's own statements, with options,
//! owner, grants, comments, rules and triggers), and so that "is it there?" is asked of
//! every kind of object pg_dump knows, not of a hand-written catalog query per kind.

use std::collections::{BTreeSet, HashSet};
use std::process::Stdio;

use super::deps::{self, Identity};
use super::toc::{self, Selection, TableName, TocEntry};
use super::{BytesArchive, PostgresSource, quote_ident, sql_literal};
use crate::engine::SourceError;
use crate::source::url::DbUrl;

/// A schema-only dump of the target, with its table of contents.
pub(super) struct LiveSchema {
    archive: BytesArchive,
    pub entries: Vec<TocEntry>,
    list: String,
    sql: String,
    identities: HashSet<Identity>,
}

impl LiveSchema {
    pub fn has(&self, e: &TocEntry) -> bool {
        self.identities.contains(&deps::identity(e))
    }
}

/// What `--clean` of some tables does to the rest of the live database.
#[derive(Default)]
pub(super) struct Around {
    /// Live objects that depend on the replaced tables: dropped with them, re-created.
    pub recreate: HashSet<Identity>,
    /// The SQL that re-creates them (pg_restore's, from the live schema dump), and the
    /// REFRESH of the materialized views among them that held data.
    pub sql: String,
    /// For messages.
    pub labels: Vec<String>,
    /// Tables dropped with the replaced ones (partitions, inheritance children): restored
    /// from the backup too.
    pub children: Vec<(String, String)>,
}

impl PostgresSource {
    /// pg_restore's SQL for one entry of `archive`, without its per-run `\restrict` key.
    pub(super) async fn entry_sql(
        &self,
        archive: &dyn crate::engine::Archive,
        entries: &[TocEntry],
        id: u32,
    ) -> Result<String, SourceError> {
        let list = super::list_file(&toc::only(entries, &HashSet::from([id])))?;
        let sql = self
            .capture(
                archive,
                &["--file=-", "--use-list", &list.path().to_string_lossy()],
            )
            .await?;
        Ok(sql
            .lines()
            .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
            .collect::<Vec<_>>()
            .join("\n"))
    }

    /// [`Self::entry_sql`] of the live entry with `e`'s identity.
    pub(super) async fn live_entry_sql(
        &self,
        live: &LiveSchema,
        e: &TocEntry,
    ) -> Result<Option<String>, SourceError> {
        let want = deps::identity(e);
        match live.entries.iter().find(|l| deps::identity(l) == want) {
            Some(l) => self
                .entry_sql(&live.archive, &live.entries, l.id)
                .await
                .map(Some),
            None => Ok(None),
        }
    }

    pub(super) async fn live_schema(&self, url: &DbUrl) -> Result<LiveSchema, SourceError> {
        let mut cmd = self.command("pg_dump", url);
        cmd.args(["--schema-only", "--format=custom", "--dbname"])
            .arg(url.conninfo())
            .stdout(Stdio::piped());
        let out = cmd
            .output()
            .await
            .map_err(|e| self.spawn_err("pg_dump", e))?;
        if !out.status.success() {
            return Err(SourceError::Failed {
                tool: "pg_dump (schema of the target)".to_string(),
                status: crate::source::describe_status(out.status),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        let archive = BytesArchive(out.stdout);
        let list = self.capture(&archive, &["--list", "--verbose"]).await?;
        let sql = self
            .capture(&archive, &["--schema-only", "--file=-"])
            .await?;
        let entries = toc::entries(&list, &sql);
        let identities = entries
            .iter()
            .filter(|e| !e.desc.is_empty())
            .map(deps::identity)
            .collect();
        Ok(LiveSchema {
            archive,
            entries,
            list,
            sql,
            identities,
        })
    }

    /// What replacing `tables` (schema, name) takes with it in the live database, and the
    /// SQL that puts it back. Refused when it would take what cannot be put back from the
    /// live schema: a table that is not a partition or child of a replaced one (a column
    /// of another table has a replaced table's row type), or a partition or child that the
    /// backup does not have (its rows would be lost).
    pub(super) async fn around(
        &self,
        url: &DbUrl,
        live: &LiveSchema,
        tables: &[(String, String)],
        in_backup: &(dyn Fn(&str, &str) -> bool + Sync),
    ) -> Result<Around, SourceError> {
        let mut replaced: BTreeSet<(String, String)> = tables
            .iter()
            .filter(|(s, n)| {
                live.entries
                    .iter()
                    .any(|e| {
                        matches!(e.desc.as_str(), "TABLE" | "FOREIGN TABLE")
                            && e.schema == *s
                            && e.tag == *n
                    })
            })
            .cloned()
            .collect();
        if replaced.is_empty() {
            return Ok(Around::default());
        }
        // Partitions and inheritance children go with their parent: they are replaced too.
        let children = self.descendants(url, &replaced).await?;
        let mut around = Around::default();
        for (s, n) in children {
            if !in_backup(&s, &n) {
                return Err(SourceError::Refused(format!(
                    "replacing table(s) {} would drop table {}.{} (a partition or inheritance child of one), which is not in this backup: its rows would be lost; nothing was changed. Detach it first (ALTER TABLE … DETACH PARTITION / NO INHERIT), or restore without --clean into a database that lacks the table",
                    show(&replaced),
                    quote_ident(&s),
                    quote_ident(&n)
                )));
            }
            if replaced.insert((s.clone(), n.clone())) {
                around.children.push((s, n));
            }
        }
        let sel = Selection {
            include: replaced
                .iter()
                .map(|(s, n)| TableName::exact(s, n))
                .collect(),
            ..Selection::default()
        };
        let own = toc::kept_ids(&toc::filter(&live.list, &live.sql, &sel).list);
        let g = deps::Graph::new(&live.entries);
        let taken = g.dependents_of(&own, |e| own.contains(&e.id));
        if let Some(t) = live
            .entries
            .iter()
            .find(|e| taken.contains(&e.id) && matches!(e.desc.as_str(), "TABLE" | "FOREIGN TABLE"))
        {
            return Err(SourceError::Refused(format!(
                "replacing table(s) {} would change table {}.{}, which depends on them (a column of its row type, or one whose default or check uses them): dropping them takes that column; nothing was changed. Restore the table under another name, or restore the whole backup into an empty database",
                show(&replaced),
                quote_ident(&t.schema),
                quote_ident(&t.tag)
            )));
        }
        if taken.is_empty() {
            return Ok(around);
        }
        around.recreate = live
            .entries
            .iter()
            .filter(|e| taken.contains(&e.id))
            .map(deps::identity)
            .collect();
        around.labels = live
            .entries
            .iter()
            .filter(|e| taken.contains(&e.id) && !matches!(e.desc.as_str(), "COMMENT" | "ACL"))
            .map(deps::label)
            .collect();
        let list = super::list_file(&toc::only(&live.entries, &taken))?;
        around.sql = self
            .capture(
                &live.archive,
                &["--file=-", "--use-list", &list.path().to_string_lossy()],
            )
            .await?;
        // A schema dump has no materialized view data: refill those that had it.
        let views: Vec<String> = live
            .entries
            .iter()
            .filter(|e| taken.contains(&e.id) && e.desc == "MATERIALIZED VIEW")
            .map(|e| format!("{}.{}", quote_ident(&e.schema), quote_ident(&e.tag)))
            .collect();
        if !views.is_empty() {
            let names = views
                .iter()
                .map(|v| format!("pg_catalog.to_regclass({})", sql_literal(v)))
                .collect::<Vec<_>>()
                .join(", ");
            let rows = self
                .query(
                    url,
                    &[
                        "set search_path = ''",
                        &format!(
                            "select format('REFRESH MATERIALIZED VIEW %s;', c.oid::pg_catalog.regclass) \
                             from pg_catalog.pg_class c where c.relispopulated and c.oid = any (array[{names}])"
                        ),
                    ],
                )
                .await?;
            for r in rows {
                if let Some(stmt) = r.first() {
                    around.sql.push_str(stmt);
                    around.sql.push('\n');
                }
            }
        }
        Ok(around)
    }

    /// Partitions and inheritance children (at any depth) of `tables` in the live database.
    async fn descendants(
        &self,
        url: &DbUrl,
        tables: &BTreeSet<(String, String)>,
    ) -> Result<Vec<(String, String)>, SourceError> {
        let oids = tables
            .iter()
            .map(|(s, n)| {
                format!(
                    "pg_catalog.to_regclass({})",
                    sql_literal(&format!("{}.{}", quote_ident(s), quote_ident(n)))
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "with recursive d(oid) as ( \
               select i.inhrelid from pg_catalog.pg_inherits i where i.inhparent = any (array[{oids}]) \
               union select i.inhrelid from pg_catalog.pg_inherits i join d on i.inhparent = d.oid) \
             select n.nspname, c.relname from d join pg_catalog.pg_class c on c.oid = d.oid \
             join pg_catalog.pg_namespace n on n.oid = c.relnamespace \
             where c.relkind in ('r', 'p', 'f') order by 1, 2"
        );
        Ok(self
            .query(url, &[&sql])
            .await?
            .into_iter()
            .filter_map(|r| match <[String; 2]>::try_from(r) {
                Ok([s, n]) => Some((s, n)),
                Err(_) => None,
            })
            .collect())
    }
}

fn show(tables: &BTreeSet<(String, String)>) -> String {
    tables
        .iter()
        .map(|(s, n)| format!("{}.{}", quote_ident(s), quote_ident(n)))
        .collect::<Vec<_>>()
        .join(", ")
}
