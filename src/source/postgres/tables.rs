//! Restoring some tables of a backup (`--table`, `--exclude-table`) rather than all of it:
//! the steps of [`PostgresSource::restore_into`] once a selection was given.

use std::collections::HashSet;

use super::toc::{self, Selection, TableName};

use super::{
    Archive, DbUrl, PostgresSource, RestoreOptions, SourceError, deps, list_file, live, quote_ident,
};

/// One selective restore: the archive's table of contents and schema, read once, and the
/// selection as it grows with what the chosen tables need.
pub(super) struct Selective<'a> {
    pub src: &'a PostgresSource,
    pub archive: &'a dyn Archive,
    pub opts: &'a RestoreOptions,
    pub url: &'a DbUrl,
    pub created: bool,
    /// `pg_restore --list --verbose` of the archive.
    pub toc: String,
    /// `pg_restore --schema-only` of the archive.
    pub schema: String,
    /// Bytes of the archive read for `toc`: its header.
    pub header_len: usize,
    pub selection: Selection,
    pub filtered: toc::Filtered,
}

/// Whether table `t` is in `live` (the target's tables).
fn present(live: &[String], t: &str) -> bool {
    TableName::parse(t).is_ok_and(|want| {
        live.iter().any(|l| {
            TableName::parse(l).is_ok_and(|have| {
                have.schema
                    .as_deref()
                    .is_some_and(|schema| want.matches(schema, &have.name))
            })
        })
    })
}

impl Selective<'_> {
    /// Refuses a selection whose included tables are not all in the backup, or that leaves
    /// no table; warns of excluded tables that are not in it.
    pub fn refuse_unmatched(&self) -> Result<(), SourceError> {
        let (toc, schema, selection, filtered) =
            (&self.toc, &self.schema, &self.selection, &self.filtered);
        let unmatched_includes: Vec<&String> = filtered
            .unmatched
            .iter()
            .filter(|u| selection.include.iter().any(|t| t.to_string() == **u))
            .collect();
        if !unmatched_includes.is_empty() || filtered.tables.is_empty() {
            let all = toc::filter(toc, schema, &Selection::default()).tables;
            return Err(SourceError::Refused(if unmatched_includes.is_empty() {
                format!("no table left to restore; {} tables in this backup", all.len())
            } else {
                unmatched_includes
                    .iter()
                    .map(|u| {
                        format!(
                            "table {u} is not in this backup ({})",
                            crate::names::closest_hint(u, &all, "tables", "in this backup")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            }));
        }
        for u in filtered
            .unmatched
            .iter()
            .filter(|u| !unmatched_includes.contains(u))
        {
            tracing::warn!("excluded table {u} is not in this backup");
        }
        Ok(())
    }

    /// The whole backup but the excluded tables, into an empty database.
    pub async fn restore_excluding(&self, lines: &mut Vec<String>) -> Result<(), SourceError> {
        let (opts, url, filtered) = (self.opts, self.url, &self.filtered);
        lines.push(format!(
            "{}: {} table(s); skipped: {}",
            self.src.name,
            filtered.tables.len(),
            if filtered.skipped.is_empty() {
                "none".to_string()
            } else {
                filtered.skipped.join(", ")
            }
        ));
        if !filtered.dropped.is_empty() {
            lines.push(format!(
                "{}: left out because they need a table that is not restored: {}",
                self.src.name,
                filtered.dropped.join("; ")
            ));
        }
        let list = list_file(&filtered.list)?;
        // A dry run checks what the restore would check, and fails where it would.
        if !self.created {
            self.src.check_empty(opts, url).await?;
        }
        if opts.dry_run {
            lines.push(self.src.would(opts, url));
            return Ok(());
        }
        self.src
            .apply_verified(self.archive, opts, url, Some(list.path()), None, 0)
            .await?;
        Ok(())
    }

    /// Only the included tables (and what they need), into an existing database.
    pub async fn restore_tables(&mut self, lines: &mut Vec<String>) -> Result<(), SourceError> {
        let (opts, url) = (self.opts, self.url);
        let asked = self.filtered.tables.clone();
        lines.push(format!(
            "{}: only table(s) {}",
            self.src.name,
            self.filtered.tables.join(", ")
        ));

        // Selected tables go into an existing database: what they need must be there or come
        // along, what depended on them and is missing comes back with them, and with --clean
        // what depends on them in the target is re-created as it was.
        // A dry run's --create: the database does not exist yet, so there is nothing to
        // look at in it.
        let not_yet = self.created && opts.dry_run;
        let live = if not_yet {
            Vec::new()
        } else {
            self.src.tables_in(url).await?
        };
        if !opts.clean {
            self.refuse_clash(&live)?;
        }
        if !self.filtered.needs.is_empty() && !not_yet {
            self.bring_needed(lines).await?;
        }

        let entries = toc::entries(&self.toc, &self.schema);
        let graph = deps::Graph::new(&entries);
        let live_schema = if not_yet {
            None
        } else {
            Some(self.src.live_schema(url).await?)
        };
        let mut around = live::Around::default();
        let mut plan = deps::Plan::default();
        if let Some(live_schema) = &live_schema {
            (around, plan) = self
                .pull_dependents(&entries, &graph, live_schema, lines)
                .await?;
        }
        // A table that depends on a restored one without being its partition or child (a
        // column of its row type) stays, but DROP … CASCADE took that column: said, never
        // guessed at. Both definitions come from pg_restore, compared as they are.
        if let Some(live_schema) = &live_schema
            && !opts.clean
        {
            self.check_row_type_dependents(&entries, &graph, live_schema, &mut plan)
                .await?;
        }
        self.report_plan(&plan, lines);
        let (final_list, kept) = self.ordered_list(&entries, &graph, &plan);
        let list = list_file(&final_list)?;
        let drops = self.drops(&entries, &kept, &live);
        if opts.dry_run {
            self.report_dry_run(&around, &plan, lines);
            return Ok(());
        }
        let (before, after) = transaction_sql(&drops, &around);
        // The archive's header, as read and checked in the restore's own pass, for
        // re-adding the foreign keys below: never a second, unchecked read.
        let keep = if self.filtered.referencing.is_empty() {
            0
        } else {
            self.header_len
        };
        let header = self
            .src
            .apply_verified(
                self.archive,
                opts,
                url,
                Some(list.path()),
                Some((&before, &after)),
                keep,
            )
            .await?;
        self.note_default_privileges(lines).await;
        if !around.labels.is_empty() {
            lines.push(format!(
                "{}: dropped and re-created as they were, in the same transaction (they depend on the replaced table(s)): {}",
                self.src.name,
                around.labels.join(", ")
            ));
        }
        let (added, failed) = self
            .src
            .readd_foreign_keys(url, &self.filtered.referencing, header)
            .await?;
        if !added.is_empty() {
            lines.push(format!(
                "{}: re-added foreign key(s) of other tables: {}",
                self.src.name,
                added.join(", ")
            ));
        }
        report_incomplete(&asked, &plan, &failed, lines)
    }

    /// Without --clean: refuses tables that already exist in the target.
    fn refuse_clash(&self, live: &[String]) -> Result<(), SourceError> {
        let clash: Vec<&String> = self
            .filtered
            .tables
            .iter()
            .filter(|t| present(live, t))
            .collect();
        if !clash.is_empty() {
            return Err(SourceError::Refused(format!(
                "table(s) {} already exist in target database \"{}\"; pass --clean to replace them (what depends on them in the target is dropped with them and re-created as it was, in the same transaction), or drop them first",
                clash.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                self.url.database()
            )));
        }
        Ok(())
    }

    /// Objects of no table that the tables need and the target lacks: brought along, or
    /// refused when they are tables.
    async fn bring_needed(&mut self, lines: &mut Vec<String>) -> Result<(), SourceError> {
        let (opts, url) = (self.opts, self.url);
        let (tables, missing): (Vec<toc::Needed>, Vec<toc::Needed>) = self
            .src
            .missing_in(url, &self.filtered.needs)
            .await?
            .into_iter()
            .partition(|n| n.desc == "TABLE");
        if !tables.is_empty() {
            let names: Vec<String> = tables.iter().map(|t| t.qualified()).collect();
            let holders = self.fk_holders(&tables);
            return Err(SourceError::Refused(format!(
                "table(s) {} have foreign keys to {}, which target database \"{}\" lacks; nothing was changed. Restore {} too (--table {}), or the whole backup into an empty database",
                holders.join(", "),
                names.join(", "),
                url.database(),
                if names.len() == 1 { "it" } else { "them" },
                names.join(" --table ")
            )));
        }
        if !missing.is_empty() {
            lines.push(format!(
                "{}: {} {} too (the tables need them and the target lacks them)",
                self.src.name,
                if opts.dry_run { "would restore" } else { "restoring" },
                missing
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            self.selection.bring = missing;
            self.filtered = toc::filter(&self.toc, &self.schema, &self.selection);
        }
        Ok(())
    }

    /// The restored tables whose kept foreign keys point at `tables` (which the target
    /// lacks).
    fn fk_holders(&self, tables: &[toc::Needed]) -> Vec<String> {
        // Name the tables whose kept foreign keys point there, from the archive's
        // dependency data; all of the selection only when that says nothing.
        let entries = toc::entries(&self.toc, &self.schema);
        let graph = deps::Graph::new(&entries);
        let kept = toc::kept_ids(&self.filtered.list);
        let lacking = |d: &toc::TocEntry| {
            d.desc == "TABLE" && tables.iter().any(|t| t.schema == d.schema && t.name == d.tag)
        };
        let mut holders: Vec<String> = Vec::new();
        for fk in entries
            .iter()
            .filter(|e| e.desc == "FK CONSTRAINT" && kept.contains(&e.id))
            .filter(|e| e.deps.iter().filter_map(|d| graph.get(*d)).any(lacking))
        {
            for t in fk.deps.iter().filter_map(|d| graph.get(*d)) {
                let name = toc::display_rel(&t.schema, &t.tag);
                if t.desc == "TABLE" && kept.contains(&t.id) && !holders.contains(&name) {
                    holders.push(name);
                }
            }
        }
        if holders.is_empty() {
            holders = self.filtered.tables.clone();
        }
        holders
    }

    /// Adds to the selection the tables that hang on the selected ones, until none is
    /// left; returns what --clean does around them and the plan for their dependents.
    async fn pull_dependents(
        &mut self,
        entries: &[toc::TocEntry],
        graph: &deps::Graph<'_>,
        live_schema: &live::LiveSchema,
        lines: &mut Vec<String>,
    ) -> Result<(live::Around, deps::Plan), SourceError> {
        let (opts, url) = (self.opts, self.url);
        let in_backup = |s: &str, n: &str| {
            entries
                .iter()
                .any(|e| e.desc == "TABLE" && e.schema == s && e.tag == n)
        };
        let mut around = live::Around::default();
        let mut plan = deps::Plan::default();
        // Tables that hung on the restored ones (partitions, inheritance children) come
        // with them; each round may find more.
        for _ in 0..16 {
            let kept = toc::kept_ids(&self.filtered.list);
            let kept_tables: Vec<(String, String)> = entries
                .iter()
                .filter(|e| {
                    matches!(e.desc.as_str(), "TABLE" | "FOREIGN TABLE") && kept.contains(&e.id)
                })
                .map(|e| (e.schema.clone(), e.tag.clone()))
                .collect();
            let mut more: Vec<(String, String)> = Vec::new();
            if opts.clean {
                around = self
                    .src
                    .around(url, live_schema, &kept_tables, &in_backup)
                    .await?;
                more.extend(around.children.iter().cloned());
            }
            let replaced = |e: &toc::TocEntry| around.recreate.contains(&deps::identity(e));
            plan = deps::plan(
                graph,
                &kept,
                &|e| live_schema.has(e),
                &replaced,
                &|e| e.desc == "FK CONSTRAINT",
            );
            more.extend(plan.tables.iter().cloned());
            more.retain(|(s, n)| !kept_tables.contains(&(s.clone(), n.clone())));
            if more.is_empty() {
                break;
            }
            lines.push(format!(
                "{}: {} table(s) {} too (partitions or children of the restored ones, or tables that depend on them{})",
                self.src.name,
                if opts.dry_run { "would restore" } else { "restoring" },
                more.iter()
                    .map(|(s, n)| format!("{}.{}", quote_ident(s), quote_ident(n)))
                    .collect::<Vec<_>>()
                    .join(", "),
                if opts.clean { "" } else { ", missing from the target" }
            ));
            self.selection
                .include
                .extend(more.iter().map(|(s, n)| TableName::exact(s, n)));
            self.filtered = toc::filter(&self.toc, &self.schema, &self.selection);
        }
        Ok((around, plan))
    }

    /// Without --clean: a live table that depends on a restored one and differs from the
    /// backup's goes into `plan.cannot`.
    async fn check_row_type_dependents(
        &self,
        entries: &[toc::TocEntry],
        graph: &deps::Graph<'_>,
        live_schema: &live::LiveSchema,
        plan: &mut deps::Plan,
    ) -> Result<(), SourceError> {
        let kept = toc::kept_ids(&self.filtered.list);
        for x in entries.iter().filter(|x| {
            x.desc == "TABLE"
                && !kept.contains(&x.id)
                && live_schema.has(x)
                && x.deps
                    .iter()
                    .any(|d| kept.contains(d) && graph.get(*d).is_some_and(|t| t.desc == "TABLE"))
        }) {
            let then = self.src.entry_sql(self.archive, entries, x.id).await?;
            let now = self.src.live_entry_sql(live_schema, x).await?;
            if now.as_deref() != Some(then.as_str()) {
                plan.cannot.push(format!(
                    "{}: depends on a restored table and differs from the backup (DROP … CASCADE drops a column of a table's row type): restore it too, with --table {} --clean, if it should be as in the backup",
                    deps::label(x),
                    toc::display_rel(&x.schema, &x.tag)
                ));
            }
        }
        Ok(())
    }

    /// Says what comes along besides the tables: brought, or put back.
    fn report_plan(&self, plan: &deps::Plan, lines: &mut Vec<String>) {
        let opts = self.opts;
        if !plan.brought.is_empty() {
            lines.push(format!(
                "{}: {} {} too (restored objects need them and the target lacks them)",
                self.src.name,
                if opts.dry_run { "would restore" } else { "restoring" },
                plan.brought.join(", ")
            ));
        }
        if !plan.put_back.is_empty() {
            lines.push(format!(
                "{}: {}putting back what depended on the table(s) and is missing: {}",
                self.src.name,
                if opts.dry_run { "would be " } else { "" },
                plan.put_back.join(", ")
            ));
        }
    }

    /// The list for `pg_restore -L`, with the plan's extra entries, and the dump ids it
    /// keeps.
    fn ordered_list(
        &self,
        entries: &[toc::TocEntry],
        graph: &deps::Graph<'_>,
        plan: &deps::Plan,
    ) -> (String, HashSet<u32>) {
        let mut final_list = toc::keep_also(&self.filtered.list, &plan.extra);
        // A partition restored into an existing partitioned table: attached last, once its
        // own indexes exist. Attached first (archive order), it would get an index made
        // for it by the parent's partitioned index, under the name of its own index, whose
        // CREATE then fails.
        let kept = toc::kept_ids(&final_list);
        let late: HashSet<u32> = entries
            .iter()
            .filter(|e| {
                kept.contains(&e.id) && matches!(e.desc.as_str(), "TABLE ATTACH" | "INDEX ATTACH")
            })
            .filter(|e| {
                e.deps.iter().filter_map(|d| graph.get(*d)).any(|d| {
                    matches!(d.desc.as_str(), "TABLE" | "INDEX")
                        && d.tag != e.tag
                        && !kept.contains(&d.id)
                })
            })
            .map(|e| e.id)
            .collect();
        if !late.is_empty() {
            final_list = toc::move_to_end(&final_list, &late);
        }
        (final_list, kept)
    }

    /// With --clean: (DROP statement, name) of the replaced tables that are in the target.
    fn drops<'e>(
        &self,
        entries: &'e [toc::TocEntry],
        kept: &HashSet<u32>,
        live: &[String],
    ) -> Vec<(&'e str, String)> {
        // (DROP statement, name) of the replaced tables: foreign tables have their own.
        // Moving entries to the end keeps the same set: `kept` still holds.
        if self.opts.clean {
            entries
                .iter()
                .filter(|e| kept.contains(&e.id))
                .filter_map(|e| match e.desc.as_str() {
                    "TABLE" => Some(("TABLE", e)),
                    "FOREIGN TABLE" => Some(("FOREIGN TABLE", e)),
                    _ => None,
                })
                .filter(|(_, e)| present(live, &toc::display_rel(&e.schema, &e.tag)))
                .map(|(kind, e)| {
                    (
                        kind,
                        format!("{}.{}", quote_ident(&e.schema), quote_ident(&e.tag)),
                    )
                })
                .collect()
        } else {
            Vec::new()
        }
    }

    /// A dry run's last lines: what would be re-created, what could not be put back.
    fn report_dry_run(&self, around: &live::Around, plan: &deps::Plan, lines: &mut Vec<String>) {
        if !around.labels.is_empty() {
            lines.push(format!(
                "{}: would drop and re-create as they are, in the same transaction: {}",
                self.src.name,
                around.labels.join(", ")
            ));
        }
        if !plan.cannot.is_empty() {
            lines.push(format!(
                "{}: could not put back: {}",
                self.src.name,
                plan.cannot.join("; ")
            ));
        }
        lines.push(self.src.would(self.opts, self.url));
    }

    /// Says so when the restoring role has default privileges in the target.
    async fn note_default_privileges(&self, lines: &mut Vec<String>) {
        // Objects created one by one get the creating role's default privileges, which a
        // whole restore sets only after everything else (pg_dump puts them last). Said, not
        // undone: revoking them would guess at grants the backup does not record.
        let defaults = self
            .src
            .query(
                self.url,
                &["select pg_catalog.count(*) from pg_catalog.pg_default_acl d \
                   where d.defaclrole = (select r.oid from pg_catalog.pg_roles r where r.rolname = current_user)"],
            )
            .await
            .ok()
            .and_then(|r| r.first()?.first()?.parse::<u64>().ok())
            .unwrap_or(0);
        if defaults > 0 {
            let warning = format!(
                "{}: note: the target has default privileges (ALTER DEFAULT PRIVILEGES) for the restoring role; the objects this restore created got those grants too, in addition to their own (check them with \\dp)",
                self.src.name
            );
            tracing::warn!("{warning}");
            lines.push(warning);
        }
    }
}

/// The SQL psql runs before and after pg_restore's, in our own transaction.
fn transaction_sql(drops: &[(&str, String)], around: &live::Around) -> (String, String) {
    // Our own transaction: the replaced tables dropped with everything that depends on
    // them, the backup's entries, then the live dependents re-created from the target's
    // own schema dump; COMMIT only after the archive was checked.
    let mut before = String::from("BEGIN;\n");
    for kind in ["TABLE", "FOREIGN TABLE"] {
        let names: Vec<&str> = drops
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, n)| n.as_str())
            .collect();
        if !names.is_empty() {
            before.push_str(&format!(
                "DROP {kind} IF EXISTS {} CASCADE;\n",
                names.join(", ")
            ));
        }
    }
    let mut after = around.sql.clone();
    after.push_str("\nCOMMIT;\n");
    (before, after)
}

/// Fails, as incomplete, when dependents could not be put back or foreign keys re-added.
fn report_incomplete(
    asked: &[String],
    plan: &deps::Plan,
    failed: &[String],
    lines: &[String],
) -> Result<(), SourceError> {
    let mut incomplete = Vec::new();
    if !plan.cannot.is_empty() {
        incomplete.push(format!(
            "{} object(s) that depended on them could not be put back:\n{}",
            plan.cannot.len(),
            plan.cannot
                .iter()
                .map(|c| format!("- {c}"))
                .collect::<Vec<_>>()
                .join("\n")
        ));
    }
    if !failed.is_empty() {
        incomplete.push(format!(
            "{} foreign key(s) of other tables that point at them could not be re-added:\n{}\nfix or remove the rows that break them, then run the statement(s) above with psql",
            failed.len(),
            failed.join("\n")
        ));
    }
    if !incomplete.is_empty() {
        for l in lines.iter() {
            tracing::info!("{l}");
        }
        return Err(SourceError::Incomplete(format!(
            "restored table(s) {}, but {}",
            asked.join(", "),
            incomplete.join("\nand ")
        )));
    }
    Ok(())
}
