//! What a restore takes from an archive and where it puts it, as mongorestore namespace
//! options: the `--to` URL's database (restore there, renaming the backup's database when
//! it differs), `--table` (a collection: "name" or "db.name") and `--exclude-table`.
//! Decided from the archive's prelude alone, before anything is written.

use std::collections::BTreeSet;

use super::archive::Namespace;

/// Databases that are the server's own, never "the" database of a dump.
const SERVER_DBS: &[&str] = &["admin", "config", "local"];

#[derive(Debug, PartialEq, Default)]
pub struct Selection {
    /// mongorestore options (`--nsInclude=…`, `--nsExclude=…`, `--nsFrom=…`, `--nsTo=…`).
    pub args: Vec<String>,
    /// (name in the backup, name once restored), "db.collection".
    pub restored: Vec<(String, String)>,
    /// Excluded names that are not in the backup (worth a warning, not an error).
    pub unmatched_excludes: Vec<String>,
    /// Set when the backup's database is restored under another name.
    pub rename: Option<(String, String)>,
}

impl Selection {
    pub fn target_dbs(&self) -> BTreeSet<String> {
        self.restored
            .iter()
            .filter_map(|(_, to)| to.split_once('.').map(|(db, _)| db.to_string()))
            .collect()
    }
}

/// mongorestore reads `*` as a wildcard and `\` as its escape.
fn escape(name: &str) -> Result<String, String> {
    if name.contains('$') {
        return Err(format!(
            "\"{name}\" holds '$', which mongorestore's namespace options cannot name; restore it by hand with mongorestore"
        ));
    }
    Ok(name.replace('\\', "\\\\").replace('*', "\\*"))
}

pub fn select(
    namespaces: &[Namespace],
    target_db: &str,
    tables: &[String],
    exclude: &[String],
) -> Result<Selection, String> {
    let user: Vec<&Namespace> = namespaces.iter().filter(|n| n.is_user()).collect();
    let mut sel = Selection::default();
    // Which of the backup's databases this restore takes.
    let scope = database_scope(&user, target_db, &mut sel)?;
    let candidates: Vec<&Namespace> = user
        .iter()
        .copied()
        .filter(|n| scope.is_none_or(|s| n.db == s))
        .collect();
    let mut included: Vec<&Namespace> = Vec::new();
    let mut missing = Vec::new();
    for t in tables {
        match resolve(&candidates, t)? {
            Some(n) => {
                if !included.contains(&n) {
                    included.push(n);
                }
            }
            None => missing.push(t.as_str()),
        }
    }
    if !missing.is_empty() {
        return Err(format!(
            "collection(s) not in this backup: {}; collections in this backup: {}",
            missing.join(", "),
            known(&candidates)
        ));
    }
    let mut excluded: Vec<&Namespace> = Vec::new();
    for t in exclude {
        match resolve(&candidates, t)? {
            Some(n) => excluded.push(n),
            None => sel.unmatched_excludes.push(t.clone()),
        }
    }
    let chosen: Vec<&Namespace> = candidates
        .iter()
        .copied()
        .filter(|n| included.is_empty() || included.contains(n))
        .filter(|n| !excluded.contains(n))
        .collect();
    if chosen.is_empty() && !candidates.is_empty() {
        return Err(format!(
            "no collection left to restore; collections in this backup: {}",
            known(&candidates)
        ));
    }
    namespace_args(&mut sel, &included, &excluded, scope)?;
    sel.restored = chosen
        .iter()
        .map(|n| {
            let to = match &sel.rename {
                Some((_, to)) => format!("{to}.{}", n.collection),
                None => n.name(),
            };
            (n.name(), to)
        })
        .collect();
    Ok(sel)
}

/// Which of the backup's databases (of `user`'s namespaces) a restore into `target_db`
/// takes: `None` for all; sets `sel.rename` when the backup's one database is restored
/// under another name.
fn database_scope<'a>(
    user: &[&'a Namespace],
    target_db: &'a str,
    sel: &mut Selection,
) -> Result<Option<&'a str>, String> {
    let mut dbs: Vec<&str> = user
        .iter()
        .map(|n| n.db.as_str())
        .filter(|d| !SERVER_DBS.contains(d))
        .collect();
    dbs.sort_unstable();
    dbs.dedup();
    let scope: Option<&str> = if target_db.is_empty() {
        None
    } else if user.iter().any(|n| n.db == target_db) {
        Some(target_db)
    } else {
        match dbs.as_slice() {
            [] => None,
            [only] => {
                sel.rename = Some((only.to_string(), target_db.to_string()));
                Some(only)
            }
            many => {
                return Err(format!(
                    "the backup holds databases {}; name one of them in the --to URL (e.g. mongodb://HOST:27017/{}), or give no database to restore them all under their own names",
                    many.join(", "),
                    many[0]
                ));
            }
        }
    };
    Ok(scope)
}

/// The names of `candidates`, for messages.
fn known(candidates: &[&Namespace]) -> String {
    if candidates.is_empty() {
        "none".to_string()
    } else {
        candidates
            .iter()
            .map(|n| n.name())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The namespace of `candidates` that `wanted` ("db.name" or "name") names, if any.
fn resolve<'a>(candidates: &[&'a Namespace], wanted: &str) -> Result<Option<&'a Namespace>, String> {
    if let Some(n) = candidates.iter().find(|n| n.name() == wanted) {
        return Ok(Some(n));
    }
    let by_name: Vec<&&Namespace> = candidates
        .iter()
        .filter(|n| n.collection == wanted)
        .collect();
    match by_name.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one)),
        many => Err(format!(
            "collection \"{wanted}\" is in several databases of the backup ({}); name one as DB.COLLECTION",
            many.iter().map(|n| n.name()).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// The mongorestore options for the namespaces included, excluded and renamed.
fn namespace_args(
    sel: &mut Selection,
    included: &[&Namespace],
    excluded: &[&Namespace],
    scope: Option<&str>,
) -> Result<(), String> {
    if !included.is_empty() {
        for n in included {
            if !excluded.contains(n) {
                sel.args.push(format!("--nsInclude={}", escape(&n.name())?));
            }
        }
    } else if let Some(db) = scope {
        sel.args.push(format!("--nsInclude={}.*", escape(db)?));
    }
    for n in excluded {
        sel.args.push(format!("--nsExclude={}", escape(&n.name())?));
    }
    if let Some((from, to)) = &sel.rename {
        sel.args.push(format!("--nsFrom={}.*", escape(from)?));
        sel.args.push(format!("--nsTo={}.*", escape(to)?));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(list: &[&str]) -> Vec<Namespace> {
        list.iter()
            .map(|s| {
                let (db, c) = s.split_once('.').expect("db.coll");
                Namespace {
                    db: db.into(),
                    collection: c.into(),
                }
            })
            .collect()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    const SHOP: &[&str] = &["shop.users", "shop.orders", "shop.a*b"];

    #[test]
    fn same_database_whole() {
        let s = select(&ns(SHOP), "shop", &[], &[]).expect("ok");
        assert_eq!(s.args, strings(&["--nsInclude=shop.*"]));
        assert_eq!(s.rename, None);
        assert_eq!(s.restored.len(), 3);
        assert_eq!(s.target_dbs(), BTreeSet::from(["shop".to_string()]));
    }

    #[test]
    fn another_database_renames() {
        let s = select(&ns(SHOP), "shop_copy", &[], &[]).expect("ok");
        assert_eq!(
            s.args,
            strings(&[
                "--nsInclude=shop.*",
                "--nsFrom=shop.*",
                "--nsTo=shop_copy.*"
            ])
        );
        assert!(
            s.restored
                .contains(&("shop.users".into(), "shop_copy.users".into()))
        );
        assert_eq!(s.target_dbs(), BTreeSet::from(["shop_copy".to_string()]));
    }

    #[test]
    fn no_database_restores_everything_as_it_was() {
        let all = ns(&["a.x", "b.y", "admin.system.users"]);
        let s = select(&all, "", &[], &[]).expect("ok");
        assert!(s.args.is_empty());
        assert_eq!(
            s.restored,
            vec![("a.x".into(), "a.x".into()), ("b.y".into(), "b.y".into())]
        );
        let e = select(&all, "c", &[], &[]).expect_err("which one?");
        assert!(
            e.contains("holds databases a, b") && e.contains("/a"),
            "{e}"
        );
        let s = select(&all, "b", &[], &[]).expect("one of them");
        assert_eq!(s.args, strings(&["--nsInclude=b.*"]));
    }

    #[test]
    fn tables_are_collections() {
        let s = select(&ns(SHOP), "shop_copy", &strings(&["orders", "a*b"]), &[]).expect("ok");
        assert_eq!(
            s.args,
            strings(&[
                "--nsInclude=shop.orders",
                "--nsInclude=shop.a\\*b",
                "--nsFrom=shop.*",
                "--nsTo=shop_copy.*"
            ])
        );
        assert_eq!(s.restored.len(), 2);
        let s = select(&ns(SHOP), "shop", &strings(&["shop.users"]), &[]).expect("full name");
        assert_eq!(s.args, strings(&["--nsInclude=shop.users"]));
        let e = select(&ns(SHOP), "shop", &strings(&["user", "orders"]), &[]).expect_err("typo");
        assert!(
            e.contains("not in this backup: user") && e.contains("shop.orders"),
            "{e}"
        );
    }

    #[test]
    fn excludes() {
        let s = select(&ns(SHOP), "shop", &[], &strings(&["orders", "nope"])).expect("ok");
        assert_eq!(
            s.args,
            strings(&["--nsInclude=shop.*", "--nsExclude=shop.orders"])
        );
        assert_eq!(s.unmatched_excludes, strings(&["nope"]));
        assert_eq!(s.restored.len(), 2);
        let e = select(&ns(&["shop.users"]), "shop", &[], &strings(&["users"])).expect_err("all");
        assert!(e.contains("no collection left"), "{e}");
    }

    #[test]
    fn ambiguous_and_unnameable() {
        let e = select(&ns(&["a.x", "b.x"]), "", &strings(&["x"]), &[]).expect_err("two");
        assert!(
            e.contains("several databases") && e.contains("a.x, b.x"),
            "{e}"
        );
        let e = select(&ns(&["a.x$y"]), "", &strings(&["x$y"]), &[]).expect_err("$");
        assert!(e.contains("holds '$'"), "{e}");
    }

    #[test]
    fn collection_names_with_dots() {
        let s = select(
            &ns(&["shop.logs.2024"]),
            "shop",
            &strings(&["logs.2024"]),
            &[],
        )
        .expect("dotted name");
        assert_eq!(s.args, strings(&["--nsInclude=shop.logs.2024"]));
    }

    #[test]
    fn empty_backup() {
        let s = select(&[], "shop", &[], &[]).expect("nothing to do");
        assert!(s.restored.is_empty() && s.args.is_empty());
    }
}
