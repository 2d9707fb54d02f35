//! What else a table restore must bring, put back or re-create, from the archives' own
//! dependency data (`pg_restore -l -v`: pg_dump's dependencies, taken from `pg_depend`).
//!
//! Three questions, each answered on the table of contents alone (pure, table-tested):
//! - **Up**: which objects the restored entries depend on are missing from the target (a
//!   base type with its shell type and I/O functions after `DROP TYPE … CASCADE`, a function,
//!   a domain): they come along.
//! - **Down**: which objects depended on a restored table and are missing from the target
//!   (views, materialized views with their data, policies and rules of other tables,
//!   functions taking its row type, partitions and inheritance children, comments and grants
//!   of all these): `DROP TABLE … CASCADE` took them, and the same backup puts them back.
//!   Those whose other dependencies are missing too cannot be put back: they are named.
//! - **Around** (`--clean` over an existing table): which objects of the *live* database
//!   depend on the tables being replaced, and so are dropped with them and must be
//!   re-created exactly as they were (from a schema dump of the live database, with their
//!   options, owner, grants, comments, rules and triggers).
//!
//! Objects are matched between archives by identity (DESC, schema, tag), never by dump id
//! (ids are per archive) and never by searching statement text.

use std::collections::{HashMap, HashSet};

use super::toc::TocEntry;

/// An object's identity across archives: (DESC, schema, tag).
pub type Identity = (String, String, String);

pub fn identity(e: &TocEntry) -> Identity {
    (e.desc.clone(), e.schema.clone(), e.tag.clone())
}

/// Entries that carry data, not a definition: included exactly when the object they fill is.
pub fn is_data(desc: &str) -> bool {
    matches!(
        desc,
        "TABLE DATA" | "MATERIALIZED VIEW DATA" | "SEQUENCE SET" | "BLOB" | "BLOBS" | "LARGE OBJECT"
    )
}

/// Kinds that may come along on their own because a restored object needs them: objects
/// that belong to no table.
fn free_standing(desc: &str) -> bool {
    matches!(
        desc,
        "SCHEMA"
            | "EXTENSION"
            | "TYPE"
            | "SHELL TYPE"
            | "DOMAIN"
            | "FUNCTION"
            | "PROCEDURE"
            | "AGGREGATE"
            | "OPERATOR"
            | "OPERATOR CLASS"
            | "OPERATOR FAMILY"
            | "COLLATION"
            | "CONVERSION"
            | "CAST"
            | "TEXT SEARCH CONFIGURATION"
            | "TEXT SEARCH DICTIONARY"
            | "TEXT SEARCH PARSER"
            | "TEXT SEARCH TEMPLATE"
            | "ACCESS METHOD"
            | "FOREIGN DATA WRAPPER"
            | "SERVER"
            | "FOREIGN SERVER"
            | "PROCEDURAL LANGUAGE"
    )
}

/// What goes with an object: its comment, grants, security label.
fn attached(desc: &str) -> bool {
    matches!(desc, "COMMENT" | "ACL" | "SECURITY LABEL")
}

/// A table of contents with its dependencies.
pub struct Graph<'a> {
    pub entries: &'a [TocEntry],
    by_id: HashMap<u32, usize>,
    dependents: HashMap<u32, Vec<u32>>,
}

impl<'a> Graph<'a> {
    pub fn new(entries: &'a [TocEntry]) -> Graph<'a> {
        let by_id = entries.iter().enumerate().map(|(i, e)| (e.id, i)).collect();
        let mut dependents: HashMap<u32, Vec<u32>> = HashMap::new();
        for e in entries {
            for d in &e.deps {
                dependents.entry(*d).or_default().push(e.id);
            }
        }
        Graph {
            entries,
            by_id,
            dependents,
        }
    }

    pub fn get(&self, id: u32) -> Option<&'a TocEntry> {
        self.by_id.get(&id).map(|i| &self.entries[*i])
    }

    /// Every entry that depends, directly or through others, on one of `seeds`, not passing
    /// through an entry for which `stop` is true (which is not included either).
    pub fn dependents_of(
        &self,
        seeds: &HashSet<u32>,
        stop: impl Fn(&TocEntry) -> bool,
    ) -> HashSet<u32> {
        let mut out = HashSet::new();
        let mut todo: Vec<u32> = seeds.iter().copied().collect();
        while let Some(id) = todo.pop() {
            for d in self.dependents.get(&id).into_iter().flatten() {
                if seeds.contains(d) || out.contains(d) {
                    continue;
                }
                let Some(e) = self.get(*d) else { continue };
                if e.desc.is_empty() || stop(e) {
                    continue;
                }
                out.insert(*d);
                todo.push(*d);
            }
        }
        out
    }
}

/// What a table restore does besides the tables' own entries.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Dump ids to restore too, from the same backup (in its order).
    pub extra: HashSet<u32>,
    /// Objects brought because restored ones need them and the target lacks them.
    pub brought: Vec<String>,
    /// Objects that depended on a restored table, were missing, and are put back.
    pub put_back: Vec<String>,
    /// Tables that depended on a restored table and are missing (partitions, inheritance
    /// children): to be restored as tables, with their data and own entries.
    pub tables: Vec<(String, String)>,
    /// What depended on a restored table, is missing, and cannot be put back: the object
    /// and why.
    pub cannot: Vec<String>,
}

/// An entry for messages: "view public.v", "comment on view public.v".
pub fn label(e: &TocEntry) -> String {
    let desc = e.desc.to_lowercase();
    match e.schema.as_str() {
        "-" | "" => format!("{desc} {}", e.tag),
        s if attached(&e.desc) => format!("{desc} on {} (schema {s})", e.tag.to_lowercase()),
        s => format!("{desc} {s}.{}", e.tag),
    }
}

/// Plan a table restore.
///
/// - `kept`: the entries the table filter keeps (the tables and what belongs to them);
/// - `present`: whether the target has an object (by identity; data entries never count);
/// - `later`: objects re-created after the backup's entries (`--clean`'s live
///   dependents): an entry needing one of them cannot be put back in the same pass;
/// - `elsewhere`: entries handled on their own after the restore (foreign keys of other
///   tables, re-added one by one so that bad rows fail only that key).
pub fn plan(
    g: &Graph,
    kept: &HashSet<u32>,
    present: &dyn Fn(&TocEntry) -> bool,
    later: &dyn Fn(&TocEntry) -> bool,
    elsewhere: &dyn Fn(&TocEntry) -> bool,
) -> Plan {
    let mut plan = Plan::default();
    let exists = |e: &TocEntry| !is_data(&e.desc) && present(e);

    // Down: what hung on the restored entries and is missing. A present object is a wall:
    // what depends on it was not taken by the drop.
    let down = g.dependents_of(kept, |e| exists(e) || elsewhere(e));
    let mut candidates: HashSet<u32> = HashSet::new();
    for e in g.entries.iter().filter(|e| down.contains(&e.id)) {
        if matches!(e.desc.as_str(), "TABLE" | "FOREIGN TABLE") {
            plan.tables.push((e.schema.clone(), e.tag.clone()));
        } else {
            candidates.insert(e.id);
        }
    }
    if !plan.tables.is_empty() {
        // The tables are restored as tables (with their own entries); what hangs on them
        // is planned in the next round.
        return plan;
    }

    // Up: missing free-standing objects that kept or put-back entries need, transitively,
    // with their comments and grants.
    let mut brought: HashSet<u32> = HashSet::new();
    let mut todo: Vec<u32> = kept.iter().chain(candidates.iter()).copied().collect();
    while let Some(id) = todo.pop() {
        let Some(e) = g.get(id) else { continue };
        for d in &e.deps {
            if kept.contains(d) || candidates.contains(d) || brought.contains(d) {
                continue;
            }
            let Some(dep) = g.get(*d) else { continue };
            if free_standing(&dep.desc) && !exists(dep) {
                brought.insert(*d);
                todo.push(*d);
            }
        }
    }
    let attachments = g.dependents_of(&brought, |e| !attached(&e.desc) || exists(e));
    brought.extend(attachments);

    // In archive order, which is dependency order: an entry goes in when everything it
    // depends on is there, comes along, or is restored before it.
    let mut ok: HashSet<u32> = HashSet::new();
    for e in g.entries {
        let is_candidate = candidates.contains(&e.id);
        if !is_candidate && !brought.contains(&e.id) {
            continue;
        }
        if is_data(&e.desc) {
            // Data only with its object (a materialized view's REFRESH with the view).
            let object = e.deps.iter().filter_map(|d| g.get(*d)).find(|o| {
                o.schema == e.schema && o.tag == e.tag && !is_data(&o.desc)
            });
            if !object.is_some_and(|o| ok.contains(&o.id) || kept.contains(&o.id)) {
                continue;
            }
        }
        // A dependency is met when it is restored before this entry, or there and staying;
        // another table's data entry is no dependency of a definition.
        let met = |d: &TocEntry| {
            kept.contains(&d.id)
                || ok.contains(&d.id)
                || (exists(d) && !later(d))
                || (is_data(&d.desc) && !candidates.contains(&d.id))
        };
        let missing = e.deps.iter().filter_map(|d| g.get(*d)).find(|d| !met(d));
        match missing {
            None => {
                ok.insert(e.id);
                if is_candidate {
                    plan.put_back.push(label(e));
                } else {
                    plan.brought.push(label(e));
                }
            }
            Some(d) if is_candidate => plan.cannot.push(format!(
                "{}: needs {}, which {}",
                label(e),
                label(d),
                if later(d) {
                    "is re-created only after it"
                } else {
                    "the target lacks and this restore does not bring"
                }
            )),
            Some(_) => {}
        }
    }
    plan.extra = ok;
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(id: u32, desc: &str, schema: &str, tag: &str, deps: &[u32]) -> TocEntry {
        TocEntry {
            id,
            line: format!("{id}; 0 0 {desc} {schema} {tag} postgres"),
            desc: desc.into(),
            schema: schema.into(),
            tag: tag.into(),
            deps: deps.to_vec(),
        }
    }

    /// a (restored) ← va ← vb, comment on va; b has an FK to a and a policy over a;
    /// mv over a with its data; fa(a); a base type with shell type and I/O functions.
    fn toc() -> Vec<TocEntry> {
        vec![
            e(1, "SHELL TYPE", "public", "money2", &[]),
            e(2, "FUNCTION", "public", "money2_in(cstring)", &[1]),
            e(3, "FUNCTION", "public", "money2_out(public.money2)", &[1]),
            e(4, "TYPE", "public", "money2", &[2, 3]),
            e(10, "TABLE", "public", "a", &[4]),
            e(11, "FUNCTION", "public", "fa(public.a)", &[10]),
            e(12, "TABLE", "public", "b", &[]),
            e(13, "MATERIALIZED VIEW", "public", "mv", &[10]),
            e(14, "VIEW", "public", "va", &[10]),
            e(15, "COMMENT", "public", "VIEW va", &[14]),
            e(16, "VIEW", "public", "vb", &[14]),
            e(17, "VIEW", "public", "vz", &[14, 30]),
            e(20, "TABLE DATA", "public", "a", &[10]),
            e(21, "TABLE DATA", "public", "b", &[12]),
            e(22, "CONSTRAINT", "public", "a a_pkey", &[10]),
            e(23, "FK CONSTRAINT", "public", "b b_a_fkey", &[12, 10, 22]),
            e(24, "POLICY", "public", "b p", &[12, 10]),
            e(25, "MATERIALIZED VIEW DATA", "public", "mv", &[13, 999]),
            e(30, "TABLE", "public", "z", &[]),
        ]
    }

    fn ids(v: &[u32]) -> HashSet<u32> {
        v.iter().copied().collect()
    }

    fn sorted(s: &HashSet<u32>) -> Vec<u32> {
        let mut v: Vec<u32> = s.iter().copied().collect();
        v.sort();
        v
    }

    #[test]
    fn everything_cascade_took_comes_back_and_what_cannot_is_named() {
        let toc = toc();
        let g = Graph::new(&toc);
        // a restored; b and the type exist; z does not; va, vb, mv, fa, the policy are gone.
        let live = ["b", "money2", "money2_in(cstring)", "money2_out(public.money2)"];
        let present = |e: &TocEntry| {
            live.contains(&e.tag.as_str()) && !e.desc.contains("DATA") && e.desc != "SHELL TYPE"
        };
        let plan = plan(
            &g,
            &ids(&[10, 20, 22]),
            &present,
            &|_| false,
            &|e| e.desc == "FK CONSTRAINT",
        );
        assert_eq!(sorted(&plan.extra), vec![11, 13, 14, 15, 16, 24, 25]);
        assert_eq!(plan.cannot.len(), 1, "{:?}", plan.cannot);
        assert!(plan.cannot[0].starts_with("view public.vz: needs table public.z"));
        assert!(plan.tables.is_empty());
        assert!(plan.brought.is_empty(), "{:?}", plan.brought);
    }

    #[test]
    fn a_base_type_comes_with_its_shell_type_and_functions() {
        let toc = toc();
        let g = Graph::new(&toc);
        // DROP TYPE money2 CASCADE took the type and its I/O functions; then a was dropped.
        let present = |e: &TocEntry| e.tag == "b" || e.tag == "z";
        let plan = plan(&g, &ids(&[10, 20, 22]), &present, &|_| false, &|_| false);
        for id in [1, 2, 3, 4] {
            assert!(plan.extra.contains(&id), "{id} not brought: {plan:?}");
        }
        assert_eq!(plan.brought.len(), 4);
    }

    #[test]
    fn present_objects_are_walls_and_data_follows_its_object() {
        let toc = toc();
        let g = Graph::new(&toc);
        // Everything but a is there: nothing to put back, not even mv's data.
        let present = |e: &TocEntry| e.tag != "a" && e.tag != "a a_pkey";
        let plan = plan(&g, &ids(&[10, 20, 22]), &present, &|_| false, &|_| false);
        assert!(plan.extra.is_empty(), "{plan:?}");
        assert!(plan.cannot.is_empty());
    }

    #[test]
    fn missing_dependent_tables_are_restored_as_tables() {
        let mut toc = toc();
        toc.push(e(40, "TABLE", "public", "a_child", &[10]));
        let g = Graph::new(&toc);
        let plan = plan(&g, &ids(&[10, 20, 22]), &|e| e.tag == "b", &|_| false, &|_| false);
        assert_eq!(plan.tables, vec![("public".into(), "a_child".into())]);
        assert!(plan.extra.is_empty());
    }

    #[test]
    fn an_entry_needing_a_later_object_is_named() {
        let mut toc = toc();
        toc.push(e(41, "VIEW", "public", "vy", &[10, 14]));
        let g = Graph::new(&toc);
        // --clean: va exists live and is re-created after the backup's entries; vy is missing
        // and needs both a and va.
        let present = |e: &TocEntry| !matches!(e.tag.as_str(), "a" | "a a_pkey" | "vy");
        let plan = plan(
            &g,
            &ids(&[10, 20, 22]),
            &present,
            &|e| e.tag == "va",
            &|_| false,
        );
        assert!(!plan.extra.contains(&41));
        assert!(plan.cannot[0].contains("re-created only after it"), "{:?}", plan.cannot);
    }
}
