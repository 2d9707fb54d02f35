//! Selective restore of a PostgreSQL custom-format archive (`pg_dump -Fc`), purely on text.
//!
//! Input: the archive's TOC list (`pg_restore -l`) and its schema-only SQL
//! (`pg_restore -s -f -`). Both read only the archive header: from a pipe, pg_restore exits
//! after the first 64 KiB or so, and the writer gets EPIPE. Output: the same list with unwanted
//! entries commented out (a leading `;`, which `pg_restore -L` ignores), for
//! `pg_restore -L <list>`. Entries are never reordered: from a non-seekable archive,
//! pg_restore can only restore in archive order ("could not find block ID ... out-of-order
//! restore request" otherwise).
//!
//! Which entry belongs to which table (a TOC line is
//! `<dumpId>; <catalog oid> <oid> <DESC> <schema> <tag> <owner>`, with unquoted names that may
//! contain spaces; the schemas and owners named in the SQL's `-- Name: ...; Type: ...;
//! Schema: ...; Owner: ...` headers split them):
//! - TABLE, TABLE DATA, TABLE ATTACH, ROW SECURITY, FOREIGN TABLE: the tag is the table.
//! - DEFAULT, CONSTRAINT, CHECK CONSTRAINT, FK CONSTRAINT, TRIGGER, POLICY, RULE: the tag is
//!   "table name"; the table is read from the statement (`ALTER TABLE ONLY public."Mixed Case"
//!   ...`), else it is the longest relation name the tag starts with.
//! - COMMENT, ACL, SECURITY LABEL: the tag names the object, quoted ("TABLE users",
//!   `COLUMN "Mixed Case"."Some Col"`, "INDEX i", "CONSTRAINT c ON t", "TRIGGER t ON x").
//! - SEQUENCE, SEQUENCE OWNED BY, SEQUENCE SET: the table of `ALTER SEQUENCE s OWNED BY t.c`
//!   or of an identity column's `ALTER TABLE t ALTER COLUMN c ADD GENERATED ... SEQUENCE NAME
//!   s`. A sequence owned by no table is an object of its own, like a function.
//! - INDEX, INDEX ATTACH: the table of `CREATE INDEX i ON [ONLY] t`; the index of a PRIMARY
//!   KEY / UNIQUE / EXCLUDE constraint is named after the constraint.
//! - STATISTICS (`CREATE STATISTICS s ON a, b FROM t`), PUBLICATION TABLE (`ALTER PUBLICATION
//!   p ADD TABLE t`): that table.
//! - VIEW, MATERIALIZED VIEW (with their data, comments, grants, indexes): objects of their own.
//!
//! A table is restored iff (`include` is empty or it matches an include) and it matches no
//! exclude. Entries that belong to no table (schemas, extensions, types, functions, views,
//! large objects, ...) are kept when `include` is empty and left out otherwise: restoring some
//! tables into an existing database must not recreate what is already there.
//!
//! An entry that would be kept is still left out, and reported in [`Filtered::dropped`], when
//! its statement names a relation of the archive (schema-qualified, as pg_dump always writes;
//! not inside literals or function bodies, and not `schema.f(...)` calls) that will not exist:
//! an FK to a table that is not restored, a TABLE ATTACH / INDEX ATTACH to a partitioned
//! table that is not restored, a view or materialized view over such a table (then, in turn,
//! whatever stands on that view), a function with a SQL-standard body reading it, an
//! inheritance child (`INHERITS (parent)`) of a parent that is not restored. This applies
//! without an include list, where the target is an empty database and tables exist only if
//! restored. With an include list the target is an existing database, and everything the
//! selection does not restore is assumed to be there already: nothing is left out for a
//! dependency (an FK of a restored table is recreated; if what it references is really
//! missing, pg_restore fails the single transaction, naming it).
//!
//! A partition is a table of its own (as for `pg_dump -t`): naming a partitioned table does
//! not select its partitions, and a partition restored without its parent stays detached.
//!
//! The test fixtures are real PostgreSQL 15 output of the databases made by
//! `toc_fixtures/*.setup.sql`:
//! ```text
//! createdb shop && psql -d shop -f pg15.setup.sql
//! pg_dump -Fc -Z0 shop | cat > shop.dump
//! pg_restore -l shop.dump > pg15.list
//! pg_restore -s -f - shop.dump > pg15.sql
//! ```
//! (and likewise `odd` from `pg15_odd.setup.sql` into `pg15_odd.list` / `pg15_odd.sql`).

use std::collections::{HashMap, HashSet};
use std::fmt;

/// A table named on the command line or in config: "name" (any schema) or "schema.name".
///
/// Like SQL (and `pg_dump -t`), an unquoted part is folded to lower case; a double-quoted part
/// (`"My Table"`, with `""` for a quote) is taken as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    pub schema: Option<String>,
    pub name: String,
}

impl TableName {
    /// Errors (lowercase text quoting the input) for empty parts, more than one dot,
    /// whitespace, other characters than letters/digits/_/$ outside double quotes, an
    /// unterminated quote.
    pub fn parse(text: &str) -> Result<TableName, String> {
        let err = |why: &str| format!("invalid table name {text:?}: {why}");
        if text.is_empty() {
            return Err(err("empty"));
        }
        let mut parts: Vec<String> = Vec::new();
        let mut chars = text.chars().peekable();
        loop {
            let mut part = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                loop {
                    match chars.next() {
                        None => return Err(err("unterminated double quote")),
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            part.push('"');
                        }
                        Some('"') => break,
                        Some(c) => part.push(c),
                    }
                }
                if part.is_empty() {
                    return Err(err("empty quoted name"));
                }
                match chars.peek() {
                    None | Some('.') => {}
                    Some(c) => {
                        return Err(err(&format!("unexpected {c:?} after a quoted name")));
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == '.' {
                        break;
                    }
                    if c.is_whitespace() {
                        return Err(err("whitespace outside double quotes"));
                    }
                    if c == '"' {
                        return Err(err("a double quote inside an unquoted name"));
                    }
                    if !(c.is_alphanumeric() || c == '_' || c == '$') {
                        return Err(err(&format!(
                            "{c:?} is not allowed in an unquoted name (letters, digits, _ and $; double-quote other names)"
                        )));
                    }
                    part.push(c.to_ascii_lowercase());
                    chars.next();
                }
                if part.is_empty() {
                    return Err(err(if parts.is_empty() {
                        "nothing before the dot"
                    } else {
                        "nothing after the dot"
                    }));
                }
            }
            parts.push(part);
            match chars.next() {
                None => break,
                Some(_dot) => {
                    if parts.len() == 2 {
                        return Err(err(
                            "more than one dot; use \"name\" or \"schema.name\" (double-quote a name that contains a dot)",
                        ));
                    }
                    if chars.peek().is_none() {
                        return Err(err("nothing after the dot"));
                    }
                }
            }
        }
        let name = parts.pop().unwrap_or_default();
        Ok(TableName {
            schema: parts.pop(),
            name,
        })
    }

    /// Table `name` of `schema`, as the catalog spells them (no quoting, no folding).
    pub fn exact(schema: &str, name: &str) -> TableName {
        TableName {
            schema: Some(schema.to_string()),
            name: name.to_string(),
        }
    }

    /// Whether this names table `name` of `schema` (names as in the archive, unquoted). An
    /// unqualified name matches in any schema.
    pub fn matches(&self, schema: &str, name: &str) -> bool {
        self.name == name && self.schema.as_deref().is_none_or(|s| s == schema)
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{}.{}", quote_ident(schema), quote_ident(&self.name)),
            None => f.write_str(&quote_ident(&self.name)),
        }
    }
}

/// `name` as [`TableName::parse`] reads it back: bare if it is lower case letters, digits,
/// `_` and `$` (not starting with a digit or `$`), else double-quoted.
fn quote_ident(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| !(c.is_ascii_digit() || c == '$'))
        && name.chars().all(|c| {
            c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || c == '_'
                || c == '$'
                || (!c.is_ascii() && c.is_alphanumeric())
        });
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// `schema.name` as [`TableName::parse`] reads it back (quoted where needed).
pub fn display_rel(schema: &str, name: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(name))
}

#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Non-empty: restore only these tables (and objects that belong to them).
    pub include: Vec<TableName>,
    /// Never restore these tables nor objects that belong to them (applied after include).
    pub exclude: Vec<TableName>,
    /// With an include list: objects of no table (sequences, types, functions) to restore
    /// too, because the target lacks them (from [`Filtered::needs`]).
    pub bring: Vec<Needed>,
}

impl Selection {
    /// Whether table `name` of `schema` is restored.
    pub fn wants(&self, schema: &str, name: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|t| t.matches(schema, name)))
            && !self.exclude.iter().any(|t| t.matches(schema, name))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filtered {
    /// The list to pass to `pg_restore -L`: same lines in the same order as the input, each
    /// unwanted entry commented out with a leading ';'.
    pub list: String,
    /// "schema.table" of every table whose TABLE entry is kept, in list order (names that need
    /// it are double-quoted, as [`TableName::parse`] reads them: `public."Mixed Case"`).
    pub tables: Vec<String>,
    /// "schema.table" of every table in the archive that was left out, in list order.
    pub skipped: Vec<String>,
    /// Patterns from include/exclude that matched no table in the archive (display form).
    pub unmatched: Vec<String>,
    /// Entries that were left out although they belong to a restored table (or, with an empty
    /// include list, to no table) because their statement needs a relation that is not
    /// restored: an FK to a table, a partition attached to a table, a view over a table or
    /// over such a view. As `<DESC> <schema> <tag> (needs <schema.relation>)`, in list order.
    pub dropped: Vec<String>,
    /// With an include list: foreign keys of tables that are not restored which reference a
    /// restored table. They belong to their own table, so they are not in the list; after a
    /// table was dropped with CASCADE they are gone from the target too, and are re-added
    /// once the table is back.
    pub referencing: Vec<ForeignKey>,
    /// With an include list: objects that belong to no restored table but that the restored
    /// entries use (a sequence in a DEFAULT, a column's type or domain, a function called by
    /// a default, check or trigger). The target must have them, or they come along through
    /// [`Selection::bring`].
    pub needs: Vec<Needed>,
}

/// An object of the archive that belongs to no table: a standalone sequence, a type or
/// domain, or a function (every overload of the name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needed {
    /// The archive's DESC: "SEQUENCE", "TYPE", "DOMAIN" or "FUNCTION".
    pub desc: String,
    pub schema: String,
    pub name: String,
}

impl Needed {
    /// As SQL names it, for messages and catalog lookups: `billing.invoice_no_seq`.
    pub fn qualified(&self) -> String {
        display_rel(&self.schema, &self.name)
    }
}

impl fmt::Display for Needed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.desc.to_lowercase(), self.qualified())
    }
}

/// A foreign key constraint as the archive defines it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignKey {
    /// The referencing table, "schema.table" as in [`Filtered::tables`].
    pub table: String,
    pub schema: String,
    pub table_name: String,
    pub name: String,
    /// Its line of the TOC list (`<dumpId>; … FK CONSTRAINT …`): a `pg_restore -L` list of
    /// this one line makes pg_restore produce exactly pg_dump's statement for the key. The
    /// statement is never taken from the schema SQL's text, where a comment or a function
    /// body can carry a forged header followed by any statement.
    pub entry: String,
}

/// Filters the TOC `list` (`pg_restore -l`) by `sel`, using the archive's schema-only SQL
/// (`pg_restore -s -f -`) to learn which table each index and sequence belongs to, and what
/// each statement refers to. Without the SQL (empty), indexes and sequences belong to no table.
pub fn filter(list: &str, schema_sql: &str, sel: &Selection) -> Filtered {
    let sql = SchemaSql::parse(schema_sql);
    let lines: Vec<&str> = list.split_inclusive('\n').collect();
    let mut entries = Vec::new();
    let mut entry_lines = Vec::new();
    let mut line_entry = Vec::with_capacity(lines.len());
    for line in &lines {
        let text = line.trim_end_matches(['\n', '\r']);
        match parse_toc_line(text, &sql.known) {
            Some(e) => {
                line_entry.push(Some(entries.len()));
                entries.push(e);
                entry_lines.push(text);
            }
            None => line_entry.push(None),
        }
    }
    // pg_restore -l prints each entry on one line (PostgreSQL 15 turns a line break in a
    // name into a space), but an older pg_restore printed names as they are: a table named
    // "x\n123; 0 0 FK CONSTRAINT …" then makes a second line that looks like an entry.
    // pg_restore -L selects by dump id alone, so a forged line must not be believed: every
    // line whose dump id appears more than once is an entry of unknown kind (it belongs to
    // no table, is left out of a table restore, and is never re-added on its own).
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for l in &entry_lines {
        *seen.entry(dump_id(l)).or_default() += 1;
    }
    for (e, l) in entries.iter_mut().zip(&entry_lines) {
        if seen.get(dump_id(l)).copied().unwrap_or(0) > 1 {
            *e = Entry {
                desc: "",
                schema: "-",
                tag: "",
                owner: "",
            };
        }
    }
    let mut model = Model::new(entries, &sql, sel);
    model.lines = entry_lines;
    let n = model.entries.len();
    let keep: Vec<bool> = (0..n).map(|i| model.keep(i)).collect();

    let mut out = String::with_capacity(list.len() + n);
    for (line, entry) in lines.iter().zip(&line_entry) {
        if let Some(i) = entry
            && !keep[*i]
        {
            out.push(';');
        }
        out.push_str(line);
    }

    let mut tables = Vec::new();
    let mut skipped = Vec::new();
    let mut dropped = Vec::new();
    for (i, e) in model.entries.iter().enumerate() {
        if is_table_desc(e.desc) {
            let name = display_rel(e.schema, e.tag);
            if keep[i] {
                tables.push(name);
            } else {
                skipped.push(name);
            }
        }
        if let Some((schema, name)) = &model.blocked[i] {
            dropped.push(format!(
                "{} {} {} (needs {})",
                e.desc,
                e.schema,
                e.tag,
                display_rel(schema, name)
            ));
        }
    }

    let (referencing, needs) = if sel.include.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        (model.referencing(&keep), model.needs(&keep))
    };

    let mut unmatched: Vec<String> = Vec::new();
    for pattern in sel.include.iter().chain(&sel.exclude) {
        let hit = model
            .tables()
            .any(|(schema, name)| pattern.matches(schema, name));
        let shown = pattern.to_string();
        if !hit && !unmatched.contains(&shown) {
            unmatched.push(shown);
        }
    }

    Filtered {
        list: out,
        tables,
        skipped,
        unmatched,
        dropped,
        referencing,
        needs,
    }
}

/// One entry of a TOC list, with the dump ids it depends on: the archive's own dependency
/// data (pg_dump's, from `pg_depend`), printed by `pg_restore -l -v` as a `;\tdepends on: …`
/// line after the entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TocEntry {
    pub id: u32,
    /// The entry's line, as `pg_restore -L` reads it.
    pub line: String,
    /// Empty when the line could not be read, or when its dump id is not unique (see
    /// [`filter`]): such an entry is never put back on its own.
    pub desc: String,
    pub schema: String,
    pub tag: String,
    pub deps: Vec<u32>,
}

/// Every entry of `list` (`pg_restore -l`, with `-v` for the dependencies), in list order.
pub fn entries(list: &str, schema_sql: &str) -> Vec<TocEntry> {
    let sql = SchemaSql::parse(schema_sql);
    let mut out: Vec<TocEntry> = Vec::new();
    for raw in list.lines() {
        let text = raw.trim_end_matches('\r');
        if let Some(deps) = text
            .strip_prefix(';')
            .map(str::trim_start)
            .and_then(|t| t.strip_prefix("depends on:"))
        {
            if let Some(last) = out.last_mut() {
                last.deps
                    .extend(deps.split_whitespace().filter_map(|d| d.parse::<u32>().ok()));
            }
            continue;
        }
        let Some(e) = parse_toc_line(text, &sql.known) else {
            continue;
        };
        let Ok(id) = dump_id(text).parse::<u32>() else {
            continue;
        };
        out.push(TocEntry {
            id,
            line: text.to_string(),
            desc: e.desc.to_string(),
            schema: e.schema.to_string(),
            tag: e.tag.to_string(),
            deps: Vec::new(),
        });
    }
    let mut seen: HashMap<u32, usize> = HashMap::new();
    for e in &out {
        *seen.entry(e.id).or_default() += 1;
    }
    for e in &mut out {
        if seen.get(&e.id).copied().unwrap_or(0) > 1 {
            e.desc.clear();
            e.deps.clear();
        }
    }
    out
}

/// Dump ids of the entries `list` keeps (entry lines not commented out).
pub fn kept_ids(list: &str) -> HashSet<u32> {
    list.lines()
        .filter(|l| !l.trim_start().starts_with(';'))
        .filter_map(|l| dump_id(l).parse::<u32>().ok())
        .collect()
}

/// `list` with the entries of `ids` kept (their leading `;` removed), everything else as it was.
pub fn keep_also(list: &str, ids: &HashSet<u32>) -> String {
    list.split_inclusive('\n')
        .map(|line| match line.strip_prefix(';') {
            Some(rest) if dump_id(rest).parse::<u32>().is_ok_and(|id| ids.contains(&id)) => rest,
            _ => line,
        })
        .collect()
}

/// `list` with the entry lines of `ids` moved to its end, in their order. Only for entries
/// without data: pg_restore reads data blocks of a non-seekable archive in archive order,
/// but applies definitions in list order.
pub fn move_to_end(list: &str, ids: &HashSet<u32>) -> String {
    let (moved, rest): (Vec<&str>, Vec<&str>) = list
        .split_inclusive('\n')
        .partition(|line| dump_id(line).parse::<u32>().is_ok_and(|id| ids.contains(&id)));
    let mut out: String = rest.concat();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    for line in moved {
        out.push_str(line);
        if !line.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

/// A list of only the entries `ids`, in the order of `all`: for a `pg_restore -L` of
/// exactly those entries.
pub fn only(all: &[TocEntry], ids: &HashSet<u32>) -> String {
    all.iter()
        .filter(|e| ids.contains(&e.id))
        .map(|e| format!("{}\n", e.line))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// TOC list lines

/// Every DESC pg_dump writes (PostgreSQL 9.x to 18); only the multi-word ones matter for
/// parsing, the rest document what the filter has seen.
const KNOWN_DESCS: &[&str] = &[
    "ACCESS METHOD",
    "ACL",
    "ACL LANGUAGE",
    "AGGREGATE",
    "BLOB",
    "BLOB COMMENTS",
    "BLOB METADATA",
    "BLOBS",
    "CAST",
    "CHECK CONSTRAINT",
    "COLLATION",
    "COMMENT",
    "CONSTRAINT",
    "CONVERSION",
    "DATABASE",
    "DATABASE PROPERTIES",
    "DEFAULT",
    "DEFAULT ACL",
    "DOMAIN",
    "DUMMY TYPE",
    "ENCODING",
    "EVENT TRIGGER",
    "EXTENSION",
    "FK CONSTRAINT",
    "FOREIGN DATA WRAPPER",
    "FOREIGN SERVER",
    "FOREIGN TABLE",
    "FUNCTION",
    "INDEX",
    "INDEX ATTACH",
    "LARGE OBJECT",
    "MATERIALIZED VIEW",
    "MATERIALIZED VIEW DATA",
    "OPERATOR",
    "OPERATOR CLASS",
    "OPERATOR FAMILY",
    "POLICY",
    "PROCEDURAL LANGUAGE",
    "PROCEDURE",
    "PUBLICATION",
    "PUBLICATION TABLE",
    "PUBLICATION TABLES IN SCHEMA",
    "ROW SECURITY",
    "RULE",
    "SCHEMA",
    "SEARCHPATH",
    "SECURITY LABEL",
    "SEQUENCE",
    "SEQUENCE OWNED BY",
    "SEQUENCE SET",
    "SERVER",
    "SHELL TYPE",
    "STATISTICS",
    "STATISTICS DATA",
    "STDSTRINGS",
    "SUBSCRIPTION",
    "SUBSCRIPTION TABLE",
    "TABLE",
    "TABLE ATTACH",
    "TABLE DATA",
    "TABLESPACE",
    "TEXT SEARCH CONFIGURATION",
    "TEXT SEARCH DICTIONARY",
    "TEXT SEARCH PARSER",
    "TEXT SEARCH TEMPLATE",
    "TRANSFORM",
    "TRIGGER",
    "TYPE",
    "USER MAPPING",
    "VIEW",
];

/// One entry line of the TOC list: `<dumpId>; <catalog oid> <oid> <DESC> <schema> <tag> <owner>`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry<'a> {
    desc: &'a str,
    /// "-" when none.
    schema: &'a str,
    tag: &'a str,
    owner: &'a str,
}

/// Names seen in the schema SQL's headers, to split TOC lines whose fields contain spaces.
#[derive(Debug, Default)]
struct Known {
    schemas: HashSet<String>,
    owners: HashSet<String>,
}

/// `None` for what is not an entry (comments, blank lines). A line with a dump id whose rest
/// cannot be read is an entry with an empty DESC (it then belongs to no table).
fn parse_toc_line<'a>(line: &'a str, known: &Known) -> Option<Entry<'a>> {
    let line = line.trim_start();
    let (id, rest) = line.split_once(';')?;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let unknown = Entry {
        desc: "",
        schema: "-",
        tag: "",
        owner: "",
    };
    let rest = rest.trim_start_matches(' ');
    let Some(rest) = skip_number(rest).and_then(skip_number) else {
        return Some(unknown);
    };
    if rest.is_empty() {
        return Some(unknown);
    }

    // DESC: the longest known one followed by a known schema, else the longest known one,
    // else the first word.
    let followed = |len: usize| rest.len() == len || rest.as_bytes()[len] == b' ';
    let mut descs: Vec<&str> = KNOWN_DESCS
        .iter()
        .copied()
        .filter(|d| rest.starts_with(d) && followed(d.len()))
        .collect();
    descs.sort_by_key(|d| std::cmp::Reverse(d.len()));
    let schema_after = |len: usize| -> Option<&'a str> {
        let after = rest.get(len + 1..)?;
        known_prefix(after, |s| s == "-" || known.schemas.contains(s))
    };
    let desc_len = descs
        .iter()
        .find(|d| schema_after(d.len()).is_some())
        .or(descs.first())
        .map(|d| d.len())
        .unwrap_or_else(|| rest.find(' ').unwrap_or(rest.len()));
    let desc = &rest[..desc_len];
    let after = rest.get(desc_len + 1..).unwrap_or("");

    let schema = schema_after(desc_len).unwrap_or_else(|| after.split(' ').next().unwrap_or(""));
    let remainder = after.get(schema.len() + 1..).unwrap_or("");

    // Owner: empty when the line ends with the separator space (pg_restore prints "" for
    // none); else the longest owner known from the SQL that ends the line (role names may
    // contain spaces too); else the last word.
    let (tag, owner) = match remainder.strip_suffix(' ') {
        Some(tag) => (tag, ""),
        None => remainder
            .match_indices(' ')
            .map(|(at, _)| (&remainder[..at], &remainder[at + 1..]))
            .find(|(_, owner)| known.owners.contains(*owner))
            .or_else(|| remainder.rsplit_once(' '))
            .unwrap_or((remainder, "")),
    };
    Some(Entry {
        desc,
        schema: if schema.is_empty() { "-" } else { schema },
        tag,
        owner,
    })
}

/// The dump id of an entry line ("123" of "123; …"), as `pg_restore -L` reads it.
fn dump_id(line: &str) -> &str {
    line.trim_start().split_once(';').map_or("", |(id, _)| id)
}

/// "rest" of "123 rest".
fn skip_number(s: &str) -> Option<&str> {
    let (num, rest) = s.split_once(' ')?;
    (!num.is_empty() && num.bytes().all(|b| b.is_ascii_digit())).then_some(rest)
}

/// The longest prefix of `text` ending before a space that `known` accepts.
fn known_prefix(text: &str, known: impl Fn(&str) -> bool) -> Option<&str> {
    text.match_indices(' ')
        .map(|(at, _)| &text[..at])
        .filter(|p| known(p))
        .last()
}

// ---------------------------------------------------------------------------------------------
// SQL lexing

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// An unquoted word (identifier or keyword) as written.
    Word(String),
    /// A double-quoted identifier, unescaped.
    Quoted(String),
    /// A string constant ('…' or E'…'), its value unescaped: only ever compared (the
    /// sequence name of `nextval('s'::regclass)`), never spliced into SQL.
    Str(String),
    /// A dollar-quoted string, bit/hex string or number: content never matters here.
    Literal,
    Punct(char),
    /// A `--` comment, without the line end.
    Comment(String),
}

/// Splits SQL into tokens, skipping whitespace and block comments. Never fails: an
/// unterminated literal or comment runs to the end.
fn lex(sql: &str) -> Vec<Tok> {
    let b = sql.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    let is_word_start = |c: u8| c.is_ascii_alphabetic() || c == b'_' || c >= 0x80;
    let is_word = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'-' && b.get(i + 1) == Some(&b'-') {
            let end = sql[i..].find('\n').map_or(b.len(), |n| i + n);
            toks.push(Tok::Comment(sql[i..end].trim_end_matches('\r').to_string()));
            i = end;
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let mut depth = 0usize;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == b'\'' {
            let (end, value) = read_string(sql, i + 1, false);
            i = end;
            toks.push(Tok::Str(value));
        } else if c == b'"' {
            let mut s = Vec::new();
            i += 1;
            while i < b.len() {
                if b[i] == b'"' {
                    if b.get(i + 1) == Some(&b'"') {
                        s.push(b'"');
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                s.push(b[i]);
                i += 1;
            }
            toks.push(Tok::Quoted(String::from_utf8_lossy(&s).into_owned()));
        } else if c == b'$' {
            // $tag$...$tag$ or $$...$$; otherwise a parameter like $1.
            let mut j = i + 1;
            if b.get(j)
                .is_some_and(|&c| c.is_ascii_alphabetic() || c == b'_' || c >= 0x80)
            {
                while b
                    .get(j)
                    .is_some_and(|&c| c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80)
                {
                    j += 1;
                }
            }
            if b.get(j) == Some(&b'$') {
                let delim = &sql[i..=j];
                i = sql[j + 1..]
                    .find(delim)
                    .map_or(b.len(), |n| j + 1 + n + delim.len());
                toks.push(Tok::Literal);
            } else {
                toks.push(Tok::Punct('$'));
                i += 1;
            }
        } else if is_word_start(c) {
            let start = i;
            while i < b.len() && is_word(b[i]) {
                i += 1;
            }
            let word = &sql[start..i];
            if b.get(i) == Some(&b'\'') {
                // E'...', X'...', N'...': a literal with a prefix.
                let escapes = word.eq_ignore_ascii_case("e");
                let (end, value) = read_string(sql, i + 1, escapes);
                i = end;
                toks.push(if escapes || word.eq_ignore_ascii_case("n") {
                    Tok::Str(value)
                } else {
                    Tok::Literal
                });
            } else {
                toks.push(Tok::Word(word.to_string()));
            }
        } else if c.is_ascii_digit() {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.' || b[i] == b'_') {
                i += 1;
            }
            toks.push(Tok::Literal);
        } else {
            toks.push(Tok::Punct(c as char));
            i += 1;
        }
    }
    toks
}

/// Index just past the string literal whose content starts at `i`, and its value: `''` is a
/// quote; with `backslash` (E'…'), a backslash escapes the next character (\n, \t, \r,
/// \b, \f stand for control characters; octal, hex and unicode escapes are kept as
/// written: the value only serves to compare names, and pg_dump writes none there).
fn read_string(sql: &str, mut i: usize, backslash: bool) -> (usize, String) {
    let b = sql.as_bytes();
    let mut value = Vec::new();
    while i < b.len() {
        match b[i] {
            b'\\' if backslash => {
                match b.get(i + 1) {
                    Some(b'n') => value.push(b'\n'),
                    Some(b't') => value.push(b'\t'),
                    Some(b'r') => value.push(b'\r'),
                    Some(b'b') => value.push(0x08),
                    Some(b'f') => value.push(0x0c),
                    Some(&c) => value.push(c),
                    None => {}
                }
                i += 2;
            }
            b'\'' if b.get(i + 1) == Some(&b'\'') => {
                value.push(b'\'');
                i += 2;
            }
            b'\'' => return (i + 1, String::from_utf8_lossy(&value).into_owned()),
            c => {
                value.push(c);
                i += 1;
            }
        }
    }
    (b.len(), String::from_utf8_lossy(&value).into_owned())
}

fn is_kw(tok: Option<&Tok>, kw: &str) -> bool {
    matches!(tok, Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw))
}

/// The dotted name starting at `toks[i]`, unquoted parts folded to lower case, and the index
/// after it.
fn qualified_name(toks: &[Tok], mut i: usize) -> Option<(Vec<String>, usize)> {
    let mut parts = Vec::new();
    loop {
        match toks.get(i) {
            Some(Tok::Word(w)) => parts.push(w.to_ascii_lowercase()),
            Some(Tok::Quoted(q)) => parts.push(q.clone()),
            _ => return None,
        }
        i += 1;
        if toks.get(i) == Some(&Tok::Punct('.'))
            && matches!(toks.get(i + 1), Some(Tok::Word(_) | Tok::Quoted(_)))
        {
            i += 1;
        } else {
            return Some((parts, i));
        }
    }
}

/// Position of the first keyword `kw` at or after `from`.
fn find_kw(toks: &[Tok], from: usize, kw: &str) -> Option<usize> {
    (from..toks.len()).find(|&i| is_kw(toks.get(i), kw))
}

/// (schema, name) from a dotted name, with `schema` for an unqualified one.
fn rel_of(parts: &[String], schema: &str) -> Option<(String, String)> {
    match parts {
        [name] => Some((schema.to_string(), name.clone())),
        [schema, name, ..] => Some((schema.clone(), name.clone())),
        [] => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Schema SQL

/// The statements of `pg_restore -s` output, keyed by their header comment
/// `-- Name: <tag>; Type: <DESC>; Schema: <schema>; Owner: <owner>`.
#[derive(Debug, Default)]
struct SchemaSql {
    stmts: HashMap<(String, String, String), Vec<Tok>>,
    known: Known,
}

impl SchemaSql {
    fn parse(sql: &str) -> SchemaSql {
        let mut out = SchemaSql::default();
        let mut sections: Vec<((String, String, String), Vec<Tok>)> = Vec::new();
        for tok in lex(sql) {
            if let Tok::Comment(text) = &tok {
                if let Some((name, desc, schema, owner)) = parse_header(text) {
                    out.known.schemas.insert(schema.to_string());
                    if !owner.is_empty() && owner != "-" {
                        out.known.owners.insert(owner.to_string());
                    }
                    let key = (desc.to_string(), schema.to_string(), name.to_string());
                    sections.push((key, Vec::new()));
                }
                continue;
            }
            if let Some((_, toks)) = sections.last_mut() {
                toks.push(tok);
            }
        }
        for (key, toks) in sections {
            out.stmts.entry(key).or_default().extend(toks);
        }
        out.known.schemas.remove("-");
        out.known.schemas.insert("public".to_string());
        out.known.schemas.insert("pg_catalog".to_string());
        out
    }

    fn stmt(&self, e: &Entry) -> &[Tok] {
        self.stmts
            .get(&(e.desc.to_string(), e.schema.to_string(), e.tag.to_string()))
            .map_or(&[], |v| v.as_slice())
    }
}

/// (name, desc, schema, owner) from `-- Name: n; Type: t; Schema: s; Owner: o[; Tablespace: x]`
/// (or `-- Data for Name: ...`).
fn parse_header(comment: &str) -> Option<(&str, &str, &str, &str)> {
    let body = comment.strip_prefix("-- ")?;
    let body = body
        .strip_prefix("Name: ")
        .or_else(|| body.strip_prefix("Data for Name: "))?;
    let (name, rest) = body.split_once("; Type: ")?;
    let mut fields = rest.split("; ");
    let desc = fields.next()?;
    let mut schema = None;
    let mut owner = "";
    for field in fields {
        if let Some(s) = field.strip_prefix("Schema: ") {
            schema = Some(s);
        } else if let Some(o) = field.strip_prefix("Owner:") {
            owner = o.trim_start();
        }
    }
    Some((name, desc, schema?, owner))
}

// ---------------------------------------------------------------------------------------------
// The decision

fn is_table_desc(desc: &str) -> bool {
    matches!(desc, "TABLE" | "FOREIGN TABLE")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Table,
    /// Views and materialized views.
    View,
    Sequence,
    Index,
}

#[derive(Debug, Clone)]
struct Rel {
    kind: Kind,
    /// The entry that creates it.
    def: Option<usize>,
    /// For a sequence: the table owning it; for an index: its table or materialized view.
    owner: Option<(String, String)>,
    /// For a table: whether the selection wants it.
    wanted: bool,
}

type Key = (String, String);

/// What an entry belongs to.
#[derive(Debug, Clone)]
enum Belongs {
    /// Session settings and the database itself: always kept.
    Header,
    Rel(Key),
    Nothing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Unknown,
    Busy,
    Keep,
    Drop,
}

struct Model<'a> {
    entries: Vec<Entry<'a>>,
    /// Each entry's line of the TOC list, as read.
    lines: Vec<&'a str>,
    /// Each entry's statement from the schema SQL (empty if none).
    stmt: Vec<&'a [Tok]>,
    rels: HashMap<String, HashMap<String, Rel>>,
    belongs: Vec<Belongs>,
    /// Relations each entry's statement names, other than the one it belongs to.
    refs: Vec<Vec<Key>>,
    include_all: bool,
    state: Vec<State>,
    /// Why an entry that would otherwise be kept is dropped.
    blocked: Vec<Option<Key>>,
    bring: Vec<Needed>,
}

impl<'a> Model<'a> {
    fn new(entries: Vec<Entry<'a>>, sql: &'a SchemaSql, sel: &Selection) -> Model<'a> {
        let n = entries.len();
        let stmt = entries.iter().map(|e| sql.stmt(e)).collect();
        let mut model = Model {
            entries,
            lines: Vec::new(),
            stmt,
            rels: HashMap::new(),
            belongs: Vec::with_capacity(n),
            refs: Vec::with_capacity(n),
            include_all: sel.include.is_empty(),
            state: vec![State::Unknown; n],
            blocked: vec![None; n],
            bring: sel.bring.clone(),
        };
        model.collect_relations(sel);
        for i in 0..n {
            let belongs = model.belongs_to(i);
            let own = match &belongs {
                Belongs::Rel(k) => Some(model.anchor(k)),
                _ => None,
            };
            let mut refs: Vec<Key> = Vec::new();
            let toks = model.stmt[i];
            let mut at = 0;
            while at < toks.len() {
                match qualified_name(toks, at) {
                    Some((parts, next)) => {
                        // `public.f(...)` is a function call, except `REFERENCES public.t(id)`.
                        let call = toks.get(next) == Some(&Tok::Punct('('))
                            && !(at > 0 && is_kw(toks.get(at - 1), "REFERENCES"));
                        if parts.len() >= 2 && !call {
                            let key = (parts[0].clone(), parts[1].clone());
                            if model.rel(&key).is_some()
                                && own.as_ref() != Some(&model.anchor(&key))
                                && !refs.contains(&key)
                            {
                                refs.push(key);
                            }
                        }
                        at = next;
                    }
                    None => at += 1,
                }
            }
            model.belongs.push(belongs);
            model.refs.push(refs);
        }
        model
    }

    fn rel(&self, (schema, name): &Key) -> Option<&Rel> {
        self.rels.get(schema)?.get(name)
    }

    fn has_rel(&self, schema: &str, name: &str) -> bool {
        self.rels.get(schema).is_some_and(|m| m.contains_key(name))
    }

    fn add_rel(&mut self, schema: &str, name: &str, rel: Rel) {
        self.rels
            .entry(schema.to_string())
            .or_default()
            .entry(name.to_string())
            .or_insert(rel);
    }

    fn tables(&self) -> impl Iterator<Item = (&str, &str)> {
        self.rels.iter().flat_map(|(schema, m)| {
            m.iter()
                .filter(|(_, r)| r.kind == Kind::Table)
                .map(move |(name, _)| (schema.as_str(), name.as_str()))
        })
    }

    fn collect_relations(&mut self, sel: &Selection) {
        // Relations named by the TOC itself.
        for i in 0..self.entries.len() {
            let e = self.entries[i].clone();
            let kind = match e.desc {
                "TABLE" | "FOREIGN TABLE" => Kind::Table,
                "VIEW" | "MATERIALIZED VIEW" => Kind::View,
                "SEQUENCE" => Kind::Sequence,
                "INDEX" => Kind::Index,
                _ => continue,
            };
            let rel = Rel {
                kind,
                def: Some(i),
                owner: None,
                wanted: kind == Kind::Table && sel.wants(e.schema, e.tag),
            };
            self.add_rel(e.schema, e.tag, rel);
        }
        // Indexes made by constraints, owners of sequences and indexes, from the statements.
        for i in 0..self.entries.len() {
            let e = self.entries[i].clone();
            let toks = self.stmt[i];
            match e.desc {
                "CONSTRAINT" => {
                    let makes_index = toks.iter().any(|t| {
                        ["PRIMARY", "UNIQUE", "EXCLUDE"]
                            .iter()
                            .any(|kw| is_kw(Some(t), kw))
                    });
                    let table = alter_table_target(toks, e.schema);
                    let con = find_kw(toks, 0, "CONSTRAINT")
                        .and_then(|at| qualified_name(toks, at + 1))
                        .and_then(|(p, _)| p.last().cloned());
                    if let (true, Some(table), Some(con)) = (makes_index, table, con)
                        && self.rel(&table).is_some()
                    {
                        let rel = Rel {
                            kind: Kind::Index,
                            def: Some(i),
                            owner: Some(table),
                            wanted: false,
                        };
                        self.add_rel(e.schema, &con, rel);
                    }
                }
                "INDEX" => {
                    let target = find_kw(toks, 0, "ON").and_then(|at| {
                        let at = if is_kw(toks.get(at + 1), "ONLY") {
                            at + 2
                        } else {
                            at + 1
                        };
                        qualified_name(toks, at)
                    });
                    if let Some(table) = target.and_then(|(p, _)| rel_of(&p, e.schema))
                        && self.rel(&table).is_some()
                    {
                        self.set_owner(e.schema, e.tag, table);
                    }
                }
                "SEQUENCE OWNED BY" => {
                    // ALTER SEQUENCE s OWNED BY t.c
                    let seq = find_kw(toks, 0, "SEQUENCE")
                        .and_then(|at| qualified_name(toks, at + 1))
                        .and_then(|(p, _)| rel_of(&p, e.schema));
                    let table = find_kw(toks, 0, "BY")
                        .and_then(|at| qualified_name(toks, at + 1))
                        .and_then(|(p, _)| match p.as_slice() {
                            [table, _column] => Some((e.schema.to_string(), table.clone())),
                            [schema, table, _column, ..] => Some((schema.clone(), table.clone())),
                            _ => None,
                        });
                    if let (Some((s, n)), Some(table)) = (seq, table) {
                        self.set_owner(&s, &n, table);
                    }
                }
                "SEQUENCE" => {
                    // Identity: ALTER TABLE t ALTER COLUMN c ADD GENERATED ... (SEQUENCE NAME s ...)
                    let table = alter_table_target(toks, e.schema);
                    let seq = (0..toks.len())
                        .find(|&at| {
                            is_kw(toks.get(at), "SEQUENCE") && is_kw(toks.get(at + 1), "NAME")
                        })
                        .and_then(|at| qualified_name(toks, at + 2))
                        .and_then(|(p, _)| rel_of(&p, e.schema));
                    if let (Some(table), Some((s, n))) = (table, seq) {
                        self.set_owner(&s, &n, table);
                    }
                }
                _ => {}
            }
        }
    }

    /// Sets the owner of a sequence or index, if the owner is a relation of the archive.
    fn set_owner(&mut self, schema: &str, name: &str, owner: Key) {
        let owner_ok = match self.rel(&owner) {
            Some(r) => matches!(r.kind, Kind::Table | Kind::View),
            None => false,
        };
        if owner_ok
            && let Some(rel) = self.rels.get_mut(schema).and_then(|m| m.get_mut(name))
            && matches!(rel.kind, Kind::Sequence | Kind::Index)
        {
            rel.owner = Some(owner);
        }
    }

    /// The relation whose fate `key` shares: an owned sequence's table, an index's table.
    fn anchor(&self, key: &Key) -> Key {
        let mut key = key.clone();
        for _ in 0..4 {
            match self.rel(&key).and_then(|r| r.owner.clone()) {
                Some(owner) => key = owner,
                None => break,
            }
        }
        key
    }

    fn belongs_to(&self, i: usize) -> Belongs {
        let e = &self.entries[i];
        let toks = self.stmt[i];
        let known = |schema: &str, name: &str| {
            if self.has_rel(schema, name) {
                Belongs::Rel((schema.to_string(), name.to_string()))
            } else {
                Belongs::Nothing
            }
        };
        match e.desc {
            "ENCODING" | "STDSTRINGS" | "SEARCHPATH" | "DATABASE" | "DATABASE PROPERTIES" => {
                Belongs::Header
            }
            "TABLE"
            | "TABLE DATA"
            | "TABLE ATTACH"
            | "ROW SECURITY"
            | "FOREIGN TABLE"
            | "VIEW"
            | "MATERIALIZED VIEW"
            | "MATERIALIZED VIEW DATA"
            | "SEQUENCE"
            | "SEQUENCE SET"
            | "SEQUENCE OWNED BY"
            | "INDEX"
            | "INDEX ATTACH"
            | "STATISTICS DATA" => known(e.schema, e.tag),
            "DEFAULT" | "CONSTRAINT" | "CHECK CONSTRAINT" | "FK CONSTRAINT" | "TRIGGER"
            | "POLICY" | "RULE" => {
                let from_stmt = match e.desc {
                    "TRIGGER" | "POLICY" => find_kw(toks, 0, "ON")
                        .and_then(|at| qualified_name(toks, at + 1))
                        .and_then(|(p, _)| rel_of(&p, e.schema)),
                    "RULE" => find_kw(toks, 0, "ON")
                        .and_then(|at| find_kw(toks, at, "TO"))
                        .and_then(|at| qualified_name(toks, at + 1))
                        .and_then(|(p, _)| rel_of(&p, e.schema)),
                    _ => alter_table_target(toks, e.schema),
                };
                match from_stmt {
                    Some(key) if self.rel(&key).is_some() => Belongs::Rel(key),
                    _ => match known_prefix(e.tag, |p| self.has_rel(e.schema, p)) {
                        Some(table) => known(e.schema, table),
                        None => Belongs::Nothing,
                    },
                }
            }
            "STATISTICS" => {
                // CREATE STATISTICS s ON a, b FROM t
                match find_kw(toks, 0, "FROM")
                    .and_then(|at| qualified_name(toks, at + 1))
                    .and_then(|(p, _)| rel_of(&p, e.schema))
                {
                    Some((schema, name)) => known(&schema, &name),
                    None => Belongs::Nothing,
                }
            }
            "PUBLICATION TABLE" => {
                // ALTER PUBLICATION p ADD TABLE ONLY t; the tag is "p t".
                let from_stmt = find_kw(toks, 0, "TABLE")
                    .map(|at| {
                        if is_kw(toks.get(at + 1), "ONLY") {
                            at + 2
                        } else {
                            at + 1
                        }
                    })
                    .and_then(|at| qualified_name(toks, at))
                    .and_then(|(p, _)| rel_of(&p, e.schema));
                match from_stmt {
                    Some(key) if self.rel(&key).is_some() => Belongs::Rel(key),
                    _ => match e
                        .tag
                        .match_indices(' ')
                        .map(|(at, _)| &e.tag[at + 1..])
                        .find(|t| self.has_rel(e.schema, t))
                    {
                        Some(table) => known(e.schema, table),
                        None => Belongs::Nothing,
                    },
                }
            }
            "COMMENT" | "ACL" | "SECURITY LABEL" => {
                let toks = lex(e.tag);
                let mut at = 0;
                while matches!(toks.get(at), Some(Tok::Word(w)) if w.chars().all(|c| c.is_ascii_uppercase()))
                    && !matches!(toks.get(at + 1), Some(Tok::Punct('.')))
                {
                    at += 1;
                }
                let kind: Vec<&str> = toks[..at]
                    .iter()
                    .filter_map(|t| match t {
                        Tok::Word(w) => Some(w.as_str()),
                        _ => None,
                    })
                    .collect();
                let object = match kind.as_slice() {
                    ["TABLE"]
                    | ["FOREIGN", "TABLE"]
                    | ["VIEW"]
                    | ["MATERIALIZED", "VIEW"]
                    | ["SEQUENCE"]
                    | ["INDEX"]
                    | ["COLUMN"] => qualified_name(&toks, at),
                    ["CONSTRAINT"] | ["TRIGGER"] | ["POLICY"] | ["RULE"] => {
                        find_kw(&toks, at + 1, "ON").and_then(|on| qualified_name(&toks, on + 1))
                    }
                    _ => None,
                };
                match object.and_then(|(p, _)| p.first().cloned()) {
                    Some(name) => known(e.schema, &name),
                    None => Belongs::Nothing,
                }
            }
            _ => Belongs::Nothing,
        }
    }

    /// Whether entry `i` stays in the list.
    fn keep(&mut self, i: usize) -> bool {
        match self.state[i] {
            State::Keep | State::Busy => return true,
            State::Drop => return false,
            State::Unknown => {}
        }
        self.state[i] = State::Busy;
        let base = match self.belongs[i].clone() {
            Belongs::Header => true,
            Belongs::Nothing => self.include_all || self.brought(i),
            Belongs::Rel(key) => {
                let anchor = self.anchor(&key);
                let brought = self.bring.iter().any(|b| {
                    b.desc == "SEQUENCE" && b.schema == anchor.0 && b.name == anchor.1
                });
                match self.rel(&anchor).map(|r| (r.kind, r.def, r.wanted)) {
                    Some((Kind::Sequence, _, _)) if brought => true,
                    Some((_, Some(def), _)) if def != i => self.keep(def),
                    Some((Kind::Table, _, wanted)) => wanted,
                    _ => self.include_all,
                }
            }
        };
        let keep = base && {
            let refs = self.refs[i].clone();
            let missing = refs
                .iter()
                .find(|r| !self.available(r))
                .map(|r| self.anchor(r));
            self.blocked[i] = missing;
            self.blocked[i].is_none()
        };
        self.state[i] = if keep { State::Keep } else { State::Drop };
        keep
    }

    /// Whether entry `i` (of no table) defines an object of [`Selection::bring`].
    fn brought(&self, i: usize) -> bool {
        let e = &self.entries[i];
        self.bring
            .iter()
            .any(|b| b.desc == e.desc && b.schema == e.schema && object_name(e) == b.name)
    }

    /// Whether `key`'s fate is that of a table the selection restores.
    fn restored_table(&self, key: &Key) -> bool {
        let anchor = self.anchor(key);
        self.rel(&anchor)
            .is_some_and(|r| r.kind == Kind::Table && r.wanted)
    }

    /// See [`Filtered::referencing`].
    fn referencing(&self, keep: &[bool]) -> Vec<ForeignKey> {
        let mut out = Vec::new();
        for (i, e) in self.entries.iter().enumerate() {
            if e.desc != "FK CONSTRAINT" || keep[i] {
                continue;
            }
            let Belongs::Rel(own) = &self.belongs[i] else {
                continue;
            };
            let owner = self.anchor(own);
            if self.restored_table(&owner)
                || !self.refs[i].iter().any(|r| self.restored_table(r))
            {
                continue;
            }
            let name = e
                .tag
                .strip_prefix(owner.1.as_str())
                .and_then(|t| t.strip_prefix(' '))
                .unwrap_or(e.tag);
            if let Some(line) = self.lines.get(i) {
                out.push(ForeignKey {
                    table: display_rel(&owner.0, &owner.1),
                    schema: owner.0.clone(),
                    table_name: owner.1.clone(),
                    name: name.to_string(),
                    entry: line.to_string(),
                });
            }
        }
        out
    }

    /// See [`Filtered::needs`].
    fn needs(&self, keep: &[bool]) -> Vec<Needed> {
        let defines = |desc: &[&str], schema: &str, name: &str| {
            self.entries
                .iter()
                .find(|e| desc.contains(&e.desc) && e.schema == schema && object_name(e) == name)
                .map(|e| e.desc.to_string())
        };
        let mut out: Vec<Needed> = Vec::new();
        let mut add = |n: Needed| {
            if !out.contains(&n) {
                out.push(n);
            }
        };
        let sequence = |key: &Key| {
            self.rel(key).is_some_and(|r| r.kind == Kind::Sequence) && !self.restored_table(key)
        };
        for (i, e) in self.entries.iter().enumerate() {
            let Belongs::Rel(own) = &self.belongs[i] else {
                continue;
            };
            if !keep[i] || !self.restored_table(own) {
                continue;
            }
            let toks = self.stmt[i];
            let mut at = 0;
            while at < toks.len() {
                let Some((parts, next)) = qualified_name(toks, at) else {
                    at += 1;
                    continue;
                };
                if let [schema, name] = parts.as_slice() {
                    let key = (schema.clone(), name.clone());
                    let references = at > 0 && is_kw(toks.get(at - 1), "REFERENCES");
                    let call = toks.get(next) == Some(&Tok::Punct('(')) && !references;
                    let found = if references {
                        // A foreign key to a table the selection does not restore: it must
                        // be in the target (tables are never brought along: rows are data).
                        (self.rel(&key).is_some_and(|r| r.kind == Kind::Table)
                            && !self.restored_table(&key))
                        .then(|| "TABLE".to_string())
                    } else if call {
                        defines(&["FUNCTION"], schema, name)
                    } else if self.rel(&key).is_none() {
                        defines(&["TYPE", "DOMAIN"], schema, name)
                    } else if sequence(&key) {
                        Some("SEQUENCE".to_string())
                    } else {
                        None
                    };
                    if let Some(desc) = found {
                        add(Needed {
                            desc,
                            schema: schema.clone(),
                            name: name.clone(),
                        });
                    }
                }
                at = next;
            }
            // A sequence in a default is a string literal: `nextval('s'::regclass)`, read
            // from the statement's tokens (a literal that only mentions `nextval(` is one
            // token, never a call).
            if matches!(e.desc, "TABLE" | "DEFAULT") {
                for key in nextval_names(toks) {
                    if sequence(&key) {
                        add(Needed {
                            desc: "SEQUENCE".to_string(),
                            schema: key.0,
                            name: key.1,
                        });
                    }
                }
            }
        }
        out
    }

    /// Whether statements may rely on relation `key` existing after the restore: with an
    /// include list, always (see below); otherwise iff it is restored.
    fn available(&mut self, key: &Key) -> bool {
        // With an include list the target is an existing database: what the selection does
        // not restore is assumed to be there (an FK of a restored table to another table is
        // recreated; if that table is really missing, pg_restore fails the transaction
        // naming it, rather than the FK being silently lost).
        if !self.include_all {
            return true;
        }
        let anchor = self.anchor(key);
        match self.rel(&anchor).map(|r| (r.kind, r.def, r.wanted)) {
            Some((Kind::Table, Some(def), _)) => self.keep(def),
            Some((Kind::Table, None, wanted)) => wanted,
            _ if !self.include_all => true,
            Some((_, Some(def), _)) => self.keep(def),
            _ => true,
        }
    }
}

/// Sequences named by `nextval('schema.seq'::regclass)` calls among `toks`: the string
/// literal token right after `nextval` `(`.
fn nextval_names(toks: &[Tok]) -> Vec<Key> {
    toks.windows(3)
        .filter_map(|w| match w {
            [Tok::Word(f), Tok::Punct('('), Tok::Str(name)] if f.eq_ignore_ascii_case("nextval") => {
                match TableName::parse(name) {
                    Ok(TableName {
                        schema: Some(schema),
                        name,
                    }) => Some((schema, name)),
                    _ => None,
                }
            }
            _ => None,
        })
        .collect()
}

/// The object an entry of no table defines: its tag, without a function's argument list.
fn object_name<'e>(e: &Entry<'e>) -> &'e str {
    match e.desc {
        "FUNCTION" | "PROCEDURE" | "AGGREGATE" => e.tag.split('(').next().unwrap_or(e.tag),
        _ => e.tag,
    }
}

/// The table of `ALTER TABLE [ONLY] t ...`.
fn alter_table_target(toks: &[Tok], schema: &str) -> Option<Key> {
    if !(is_kw(toks.first(), "ALTER") && is_kw(toks.get(1), "TABLE")) {
        return None;
    }
    let mut at = 2;
    if is_kw(toks.get(at), "IF") && is_kw(toks.get(at + 1), "EXISTS") {
        at += 2;
    }
    if is_kw(toks.get(at), "ONLY") {
        at += 1;
    }
    qualified_name(toks, at).and_then(|(p, _)| rel_of(&p, schema))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `pg_restore -l` and `pg_restore -s -f -` of a PostgreSQL 15 dump of `pg15.setup.sql`.
    const LIST: &str = include_str!("toc_fixtures/pg15.list");
    const SQL: &str = include_str!("toc_fixtures/pg15.sql");

    fn sel(include: &[&str], exclude: &[&str]) -> Selection {
        let parse = |names: &[&str]| {
            names
                .iter()
                .map(|n| TableName::parse(n).unwrap())
                .collect::<Vec<_>>()
        };
        Selection {
            include: parse(include),
            exclude: parse(exclude),
            bring: Vec::new(),
        }
    }

    fn id_of(line: &str) -> Option<u32> {
        line.split_once(';')?.0.parse().ok()
    }

    /// Dump ids of the entries left in (`true`) or commented out (`false`).
    fn ids(list: &str, kept: bool) -> Vec<u32> {
        list.lines()
            .filter_map(|l| match l.strip_prefix(';') {
                Some(rest) if !kept => id_of(rest),
                None if kept => id_of(l),
                _ => None,
            })
            .collect()
    }

    fn all_ids() -> Vec<u32> {
        ids(LIST, true)
    }

    /// The filtered list is the input with some entry lines commented out: nothing else
    /// changed, nothing moved.
    fn assert_same_lines(f: &Filtered, input: &str) {
        let restored: Vec<&str> = f
            .list
            .split_inclusive('\n')
            .map(|l| match l.strip_prefix(';') {
                Some(rest) if id_of(rest).is_some() => rest,
                _ => l,
            })
            .collect();
        assert_eq!(restored.concat(), input);
    }

    fn run_on(list: &str, sql: &str, include: &[&str], exclude: &[&str]) -> Filtered {
        let f = filter(list, sql, &sel(include, exclude));
        assert_same_lines(&f, list);
        // Filtering again changes nothing: commented lines stay, kept lines stay.
        assert_eq!(filter(&f.list, sql, &sel(include, exclude)).list, f.list);
        f
    }

    fn run(include: &[&str], exclude: &[&str]) -> Filtered {
        run_on(LIST, SQL, include, exclude)
    }

    fn sorted(mut v: Vec<u32>) -> Vec<u32> {
        v.sort_unstable();
        v
    }

    const ALL_TABLES: [&str; 10] = [
        "billing.audit_log",
        "billing.invoices",
        "public.\"Mixed Case\"",
        "public.audit_log",
        "public.events",
        "public.events_2023",
        "public.events_2024",
        "public.events_default",
        "public.orders",
        "public.users",
    ];

    fn all_but(skip: &[&str]) -> Vec<String> {
        ALL_TABLES
            .iter()
            .filter(|t| !skip.contains(t))
            .map(|t| t.to_string())
            .collect()
    }

    // --- the fixtures themselves

    #[test]
    fn fixture_lines_all_parse() {
        let sql = SchemaSql::parse(SQL);
        let mut n = 0;
        for line in LIST.lines() {
            if line.starts_with(';') || line.trim().is_empty() {
                assert!(parse_toc_line(line, &sql.known).is_none(), "{line}");
                continue;
            }
            let e = parse_toc_line(line, &sql.known).unwrap();
            assert!(KNOWN_DESCS.contains(&e.desc), "{line}");
            n += 1;
        }
        assert_eq!(n, 100);
        assert_eq!(all_ids().len(), 100);
    }

    #[test]
    fn parses_real_lines() {
        let sql = SchemaSql::parse(SQL);
        let p = |l| parse_toc_line(l, &sql.known).unwrap();
        let e = |desc, schema, tag, owner| Entry {
            desc,
            schema,
            tag,
            owner,
        };
        assert_eq!(
            p("3388; 2606 16621 CONSTRAINT public Mixed Case Mixed Case_pkey postgres"),
            e(
                "CONSTRAINT",
                "public",
                "Mixed Case Mixed Case_pkey",
                "postgres"
            )
        );
        assert_eq!(
            p("3553; 0 16518 TABLE DATA public orders postgres"),
            e("TABLE DATA", "public", "orders", "postgres")
        );
        assert_eq!(
            p("3590; 0 0 SEQUENCE OWNED BY public users_id_seq postgres"),
            e("SEQUENCE OWNED BY", "public", "users_id_seq", "postgres")
        );
        assert_eq!(
            p("2; 3079 16389 EXTENSION - citext "),
            e("EXTENSION", "-", "citext", "")
        );
        assert_eq!(
            p("3576; 0 0 COMMENT - EXTENSION citext "),
            e("COMMENT", "-", "EXTENSION citext", "")
        );
        assert_eq!(p("3568; 0 0 BLOBS - BLOBS "), e("BLOBS", "-", "BLOBS", ""));
        assert_eq!(
            p("3580; 0 0 COMMENT public COLUMN \"Mixed Case\".\"Some Col\" postgres"),
            e(
                "COMMENT",
                "public",
                "COLUMN \"Mixed Case\".\"Some Col\"",
                "postgres"
            )
        );
        assert_eq!(
            p("3566; 0 16636 MATERIALIZED VIEW DATA public invoice_totals postgres"),
            e(
                "MATERIALIZED VIEW DATA",
                "public",
                "invoice_totals",
                "postgres"
            )
        );
        assert_eq!(
            p("281; 1255 16503 FUNCTION public touch_updated_at() postgres"),
            e("FUNCTION", "public", "touch_updated_at()", "postgres")
        );
    }

    #[test]
    fn reads_schema_sql_headers() {
        let sql = SchemaSql::parse(SQL);
        let key = |d: &str, s: &str, n: &str| (d.to_string(), s.to_string(), n.to_string());
        let stmt = &sql.stmts[&key("INDEX", "public", "Mixed Case_some_col_idx")];
        assert_eq!(stmt[2], Tok::Quoted("Mixed Case_some_col_idx".into()));
        assert!(
            sql.stmts
                .contains_key(&key("COMMENT", "-", "EXTENSION citext"))
        );
        assert!(
            sql.stmts
                .contains_key(&key("ACL", "public", "COLUMN users.email"))
        );
        // The function body is one literal: nothing inside it is read.
        let f = &sql.stmts[&key("FUNCTION", "public", "touch_updated_at()")];
        assert!(!f.iter().any(|t| matches!(t, Tok::Word(w) if w == "new")));
        assert!(sql.known.schemas.contains("billing"));
        assert_eq!(
            sql.known.owners.iter().collect::<Vec<_>>(),
            vec![&"postgres".to_string()]
        );
    }

    // --- selections on the real fixture

    #[test]
    fn no_selection_keeps_everything() {
        let f = run(&[], &[]);
        assert_eq!(f.list, LIST);
        assert_eq!(f.tables, all_but(&[]));
        assert!(f.skipped.is_empty() && f.unmatched.is_empty() && f.dropped.is_empty());
    }

    #[test]
    fn exclude_one_table() {
        let f = run(&[], &["users"]);
        assert_eq!(
            sorted(ids(&f.list, false)),
            sorted(vec![
                217, 3551, // TABLE, TABLE DATA
                216, 3590, 3597, 3350, // serial: SEQUENCE, OWNED BY, SET; DEFAULT
                3361, 3364, 3362, // unique + primary key constraints, expression index
                3584, 3585, 3586, 3587, // comments and grants on the table and a column
                3397, 3399, // FKs of orders and events to users
                233, 3588, 3589, // the view over users, its comment and grant
            ])
        );
        assert_eq!(f.tables, all_but(&["public.users"]));
        assert_eq!(f.skipped, ["public.users"]);
        assert!(f.unmatched.is_empty());
        assert_eq!(
            f.dropped,
            [
                "VIEW public order_totals (needs public.users)",
                "FK CONSTRAINT public events events_user_id_fkey (needs public.users)",
                "FK CONSTRAINT public orders orders_user_id_fkey (needs public.users)",
            ]
        );
    }

    #[test]
    fn exclude_a_table_with_identity_trigger_and_referrers() {
        let f = run(&[], &["public.orders"]);
        assert_eq!(
            sorted(ids(&f.list, false)),
            sorted(vec![
                219, 3553, 3583, // TABLE, DATA, column comment
                218, 3596, // identity sequence and its SET
                3366, 3367, 3401, 3397, // pkey, index, trigger, its own FK
                3398, 3400, // FKs of billing.invoices and "Mixed Case" to orders
                233, 3588, 3589, // the view over orders
            ])
        );
        assert_eq!(
            f.dropped,
            [
                "VIEW public order_totals (needs public.orders)",
                "FK CONSTRAINT billing invoices invoices_order_id_fkey (needs public.orders)",
                "FK CONSTRAINT public Mixed Case Mixed Case_order_id_fkey (needs public.orders)",
            ]
        );
        // The trigger function, the enum type and the other tables stay.
        let kept = ids(&f.list, true);
        assert!(kept.contains(&281) && kept.contains(&907) && kept.contains(&3551));
    }

    #[test]
    fn exclude_second_schema_table_drops_the_materialized_view_over_it() {
        let f = run(&[], &["billing.invoices"]);
        assert_eq!(
            sorted(ids(&f.list, false)),
            sorted(vec![
                222, 3556, 3578, // TABLE, DATA, grant
                221, 3593, // identity sequence
                3370, 3368, 3398, // pkey, index, FK
                235, 3390, 3566, // materialized view, its index, its data
            ])
        );
        // The standalone sequence used by a default is not the table's.
        assert!(ids(&f.list, true).contains(&220) && ids(&f.list, true).contains(&3592));
        assert_eq!(
            f.dropped,
            ["MATERIALIZED VIEW public invoice_totals (needs billing.invoices)"]
        );
    }

    #[test]
    fn exclude_partitioned_parent_keeps_partitions_unattached() {
        let f = run(&[], &["events"]);
        assert_eq!(
            sorted(ids(&f.list, false)),
            sorted(vec![
                227, 3376, 3377, 3399, // parent TABLE, pkey, index, FK
                3347, 3348, 3349, // TABLE ATTACH of each partition
                3391, 3392, 3393, 3394, 3395, 3396, // INDEX ATTACH
            ])
        );
        assert_eq!(f.skipped, ["public.events"]);
        assert_eq!(f.dropped.len(), 9);
        assert_eq!(
            f.dropped[0],
            "TABLE ATTACH public events_2023 (needs public.events)"
        );
        assert_eq!(
            f.dropped[3],
            "INDEX ATTACH public events_2023_pkey (needs public.events)"
        );
    }

    #[test]
    fn exclude_one_partition() {
        let f = run(&[], &["events_2023"]);
        assert_eq!(
            sorted(ids(&f.list, false)),
            sorted(vec![228, 3561, 3347, 3379, 3380, 3391, 3392])
        );
        assert!(f.dropped.is_empty());
    }

    #[test]
    fn include_one_table() {
        let f = run(&["orders"], &[]);
        // Into an existing database: its FK to users is kept (users is assumed to be there).
        assert_eq!(
            ids(&f.list, true),
            [219, 3583, 218, 3553, 3596, 3366, 3367, 3401, 3397]
        );
        assert_eq!(f.tables, ["public.orders"]);
        assert_eq!(f.skipped, all_but(&["public.orders"]));
        assert!(f.dropped.is_empty());
    }

    #[test]
    fn include_leaves_out_schemas_functions_views_and_blobs() {
        let f = run(&["users"], &[]);
        assert_eq!(
            ids(&f.list, true),
            [
                217, 3584, 3585, 3586, 3587, 216, 3590, 3350, 3551, 3597, 3361, 3364, 3362
            ]
        );
        let commented = ids(&f.list, false);
        for id in [7, 3575, 2, 3576, 907, 281, 233, 234, 235, 3567, 3568, 220] {
            assert!(commented.contains(&id), "{id}");
        }
        assert!(f.dropped.is_empty());
    }

    #[test]
    fn include_referencing_and_referenced_tables_keeps_the_fk() {
        let f = run(&["orders", "users"], &[]);
        assert!(ids(&f.list, true).contains(&3397));
        assert!(f.dropped.is_empty());
        assert_eq!(f.tables, ["public.orders", "public.users"]);
    }

    fn fks(f: &Filtered) -> Vec<(&str, &str)> {
        f.referencing
            .iter()
            .map(|k| (k.table.as_str(), k.name.as_str()))
            .collect()
    }

    fn needed(f: &Filtered) -> Vec<String> {
        f.needs
            .iter()
            .map(|n| format!("{} {}", n.desc, n.qualified()))
            .collect()
    }

    #[test]
    fn restoring_a_referenced_table_names_the_foreign_keys_pointing_at_it() {
        let f = run(&["users"], &[]);
        assert_eq!(
            fks(&f),
            [
                ("public.events", "events_user_id_fkey"),
                ("public.orders", "orders_user_id_fkey")
            ]
        );
        // Re-added by its TOC entry (pg_restore -L of this one line), never from the text.
        assert_eq!(
            f.referencing[1].entry,
            "3397; 2606 16525 FK CONSTRAINT public orders orders_user_id_fkey postgres"
        );
        assert_eq!(
            (f.referencing[1].schema.as_str(), f.referencing[1].table_name.as_str()),
            ("public", "orders")
        );

        let f = run(&["orders"], &[]);
        assert_eq!(
            fks(&f),
            [
                ("billing.invoices", "invoices_order_id_fkey"),
                ("public.\"Mixed Case\"", "Mixed Case_order_id_fkey")
            ]
        );
        // Restored together, the FK between them is part of the restore, not re-added.
        let f = run(&["orders", "billing.invoices"], &[]);
        assert_eq!(
            fks(&f),
            [("public.\"Mixed Case\"", "Mixed Case_order_id_fkey")]
        );
        // A table nothing references.
        assert!(run(&["billing.invoices"], &[]).referencing.is_empty());
        // A whole restore re-adds nothing by hand.
        assert!(run(&[], &[]).referencing.is_empty());
    }

    #[test]
    fn names_the_sequences_types_and_functions_a_table_uses() {
        // `number integer DEFAULT nextval('billing.invoice_no_seq'::regclass)`: a sequence
        // not owned by the table, so not restored with it.
        // Its foreign key to orders: the target must have that table (it is not brought).
        assert_eq!(
            needed(&run(&["billing.invoices"], &[])),
            ["SEQUENCE billing.invoice_no_seq", "TABLE public.orders"]
        );
        // `status public.order_status`, a trigger calling touch_updated_at(), an FK to users.
        assert_eq!(
            needed(&run(&["orders"], &[])),
            [
                "TYPE public.order_status",
                "FUNCTION public.touch_updated_at",
                "TABLE public.users"
            ]
        );
        // Restored together, orders is no longer a need of invoices.
        assert!(
            !needed(&run(&["orders", "billing.invoices"], &[]))
                .contains(&"TABLE public.orders".to_string())
        );
        // Its own identity/serial sequence is not a need: it comes with the table.
        assert!(needed(&run(&["users"], &[])).is_empty());
    }

    #[test]
    fn brought_objects_are_restored_with_the_table() {
        let mut s = sel(&["billing.invoices"], &[]);
        assert!(!ids(&filter(LIST, SQL, &s).list, true).contains(&220));
        s.bring = vec![Needed {
            desc: "SEQUENCE".into(),
            schema: "billing".into(),
            name: "invoice_no_seq".into(),
        }];
        let f = filter(LIST, SQL, &s);
        let kept = ids(&f.list, true);
        // The sequence and its current value.
        assert!(kept.contains(&220), "{kept:?}");
        assert!(kept.contains(&3592), "{kept:?}");
        // Other sequences are still left out.
        assert!(!kept.contains(&225), "{kept:?}");
        assert_eq!(f.tables, ["billing.invoices"]);

        let mut s = sel(&["orders"], &[]);
        s.bring = vec![
            Needed {
                desc: "TYPE".into(),
                schema: "public".into(),
                name: "order_status".into(),
            },
            Needed {
                desc: "FUNCTION".into(),
                schema: "public".into(),
                name: "touch_updated_at".into(),
            },
        ];
        let kept = ids(&filter(LIST, SQL, &s).list, true);
        assert!(kept.contains(&907) && kept.contains(&281), "{kept:?}");
    }

    #[test]
    fn unqualified_name_matches_in_every_schema() {
        let f = run(&["audit_log"], &[]);
        assert_eq!(f.tables, ["billing.audit_log", "public.audit_log"]);
        assert_eq!(
            ids(&f.list, true),
            [
                226, 225, 3577, 224, 223, 3582, 3356, 3354, 3560, 3558, 3591, 3595, 3374, 3372,
                3544, 3548, 3549
            ]
        );
    }

    #[test]
    fn qualified_name_matches_one_schema() {
        let f = run(&["billing.audit_log"], &[]);
        assert_eq!(f.tables, ["billing.audit_log"]);
        // Row security and the policy follow the table; the rule of public.audit_log does not.
        assert_eq!(
            ids(&f.list, true),
            [226, 225, 3577, 3356, 3560, 3591, 3374, 3548, 3549]
        );
    }

    #[test]
    fn include_then_exclude() {
        let f = run(&["audit_log", "users"], &["billing.audit_log"]);
        assert_eq!(f.tables, ["public.audit_log", "public.users"]);
        assert!(!ids(&f.list, true).contains(&3549));
        assert!(ids(&f.list, true).contains(&3544));
        assert!(f.unmatched.is_empty());
    }

    #[test]
    fn quoted_table_name() {
        let f = run(&["\"Mixed Case\""], &[]);
        assert_eq!(f.tables, ["public.\"Mixed Case\""]);
        assert_eq!(
            ids(&f.list, true),
            [
                232, 3579, 3580, 231, 3581, 3358, 3565, 3594, 3388, 3389, 3400
            ]
        );
        assert!(f.dropped.is_empty());

        let f = run(&["public.\"Mixed Case\"", "orders"], &[]);
        assert!(ids(&f.list, true).contains(&3400));

        let f = run(&[], &["\"Mixed Case\""]);
        assert_eq!(
            sorted(ids(&f.list, false)),
            sorted(vec![
                232, 3579, 3580, 231, 3581, 3358, 3565, 3594, 3388, 3389, 3400
            ])
        );
        assert!(f.dropped.is_empty());
    }

    #[test]
    fn unmatched_patterns_are_reported() {
        let f = run(
            &["nope", "billing.users", "\"mixed case\"", "Users"],
            &["public.invoices", "nope"],
        );
        assert_eq!(
            f.unmatched,
            ["nope", "billing.users", "\"mixed case\"", "public.invoices"]
        );
        // "Users" folds to users, as in SQL.
        assert_eq!(f.tables, ["public.users"]);

        let f = run(&["nothing"], &[]);
        assert!(f.tables.is_empty());
        assert_eq!(ids(&f.list, true), Vec::<u32>::new());
        assert_eq!(f.skipped, all_but(&[]));
    }

    #[test]
    fn exclude_everything() {
        let tables: Vec<String> = ALL_TABLES.iter().map(|t| t.to_string()).collect();
        let names: Vec<&str> = tables.iter().map(String::as_str).collect();
        let f = run(&[], &names);
        assert!(f.tables.is_empty());
        // What is left belongs to no table: schema, extension, type, function, the unowned
        // sequence, the large object.
        assert_eq!(
            ids(&f.list, true),
            [7, 3575, 2, 3576, 907, 281, 220, 3567, 3592, 3568]
        );
    }

    // --- the second fixture: awkward names and rarer objects

    /// The same for `pg15_odd.setup.sql`.
    const ODD_LIST: &str = include_str!("toc_fixtures/pg15_odd.list");
    const ODD_SQL: &str = include_str!("toc_fixtures/pg15_odd.sql");

    fn odd(include: &[&str], exclude: &[&str]) -> Filtered {
        run_on(ODD_LIST, ODD_SQL, include, exclude)
    }

    #[test]
    fn odd_fixture_names_with_spaces() {
        let sql = SchemaSql::parse(ODD_SQL);
        let p = |l| parse_toc_line(l, &sql.known).unwrap();
        let mut n = 0;
        for line in ODD_LIST.lines().filter(|l| id_of(l).is_some()) {
            assert!(KNOWN_DESCS.contains(&p(line).desc), "{line}");
            n += 1;
        }
        assert_eq!(n, 48);
        let e = p("217; 1259 19785 TABLE My Schema My Table Data Team");
        assert_eq!(
            (e.desc, e.schema, e.tag, e.owner),
            ("TABLE", "My Schema", "My Table", "Data Team")
        );
        let e = p("3247; 2606 19789 CONSTRAINT My Schema My Table My Table_pkey Data Team");
        assert_eq!((e.schema, e.tag), ("My Schema", "My Table My Table_pkey"));
        let e = p("7; 2615 19779 SCHEMA - My Schema postgres");
        assert_eq!((e.schema, e.tag, e.owner), ("-", "My Schema", "postgres"));
        let f = odd(&[], &[]);
        assert_eq!(
            f.tables,
            [
                "public.t",
                "\"My Schema\".\"My\"",
                "\"My Schema\".\"My Table\"",
                "public.\"Order\"",
                "public.parent",
                "public.child",
                "public.ft",
                "public.\"odd.name\"",
            ]
        );
        assert_eq!(f.list, ODD_LIST);
    }

    #[test]
    fn odd_relation_name_that_prefixes_another() {
        // "My" and "My Table": "My Table My Table_pkey" belongs to "My Table".
        let f = odd(&[], &["\"My Schema\".\"My\""]);
        assert_eq!(sorted(ids(&f.list, false)), [216, 3244, 3256, 3406]);
        assert_eq!(
            f.dropped,
            ["FK CONSTRAINT My Schema My Table My Table_my_fkey (needs \"My Schema\".\"My\")"]
        );
        let f = odd(&[], &["\"My Schema\".\"My Table\""]);
        assert_eq!(sorted(ids(&f.list, false)), [217, 3245, 3247, 3256, 3407]);
        assert!(f.dropped.is_empty());
    }

    #[test]
    fn odd_exclude_table_with_everything_attached() {
        let f = odd(&[], &["t"]);
        assert_eq!(
            sorted(ids(&f.list, false)),
            sorted(vec![
                220, 3410, // TABLE, DATA
                3242, 3254, 3420, // NOT VALID check (dumped apart), pkey, comment on pkey
                3252, 3421, 3255, // index, comment on index, extended statistics
                3401, 3422, 3258, 3423, 3402,
                3424, // rule, trigger, policy and their comments
                3404, // publication membership
                241,  // the function whose SQL-standard body reads t
            ])
        );
        assert_eq!(f.dropped, ["FUNCTION public count_t() (needs public.t)"]);
        // The domain's own check constraint, the trigger function and the publication stay.
        let kept = ids(&f.list, true);
        assert!(kept.contains(&867) && kept.contains(&229) && kept.contains(&3403));
    }

    #[test]
    fn odd_include_table_with_everything_attached() {
        let f = odd(&["t"], &[]);
        assert_eq!(
            ids(&f.list, true),
            [
                220, 3410, 3242, 3254, 3420, 3252, 3421, 3255, 3401, 3422, 3258, 3423, 3402, 3424,
                3404
            ]
        );
        let f = odd(&["\"Order\""], &[]);
        // The self-referencing FK needs nothing else.
        assert_eq!(ids(&f.list, true), [219, 3409, 3251, 3257, 3405]);
        let f = odd(&["ft"], &[]);
        assert_eq!(ids(&f.list, true), [223]);
        assert_eq!(f.tables, ["public.ft"]);
    }

    #[test]
    fn odd_inheritance_child_needs_its_parent() {
        let f = odd(&[], &["parent"]);
        assert_eq!(sorted(ids(&f.list, false)), [221, 222, 3411, 3412]);
        assert_eq!(f.skipped, ["public.parent", "public.child"]);
        assert_eq!(f.dropped, ["TABLE public child (needs public.parent)"]);
        // Into an existing database the parent is assumed to be there.
        let f = odd(&["child"], &[]);
        assert_eq!(f.tables, ["public.child"]);
        assert!(f.dropped.is_empty());
        let f = odd(&["child", "parent"], &[]);
        assert_eq!(ids(&f.list, true), [221, 222, 3412, 3411]);
    }

    #[test]
    fn odd_dotted_name() {
        let f = odd(&["\"odd.name\""], &[]);
        assert_eq!(ids(&f.list, true), [218, 3408, 3249]);
        assert_eq!(f.tables, ["public.\"odd.name\""]);
        // Unquoted, it is table "name" in schema "odd".
        let f = odd(&["odd.name"], &[]);
        assert_eq!(f.unmatched, ["odd.name"]);
        assert!(f.tables.is_empty());
    }

    // --- robustness on synthetic input

    #[test]
    fn without_schema_sql_tables_still_filter() {
        let f = filter(LIST, "", &sel(&[], &["users"]));
        let commented = ids(&f.list, false);
        for id in [217, 3551, 3584, 3586, 3350, 3361, 3364] {
            assert!(commented.contains(&id), "{id}");
        }
        // Without the SQL, the index and sequences of users belong to no table.
        assert!(ids(&f.list, true).contains(&3362));
        assert_eq!(f.skipped, ["public.users"]);
    }

    #[test]
    fn crlf_blank_and_foreign_lines_are_kept() {
        let list = "; comment\r\n\r\n10; 1259 1 TABLE public a postgres\r\n11; 0 1 TABLE DATA public a postgres\r\nnot an entry\r\n12; 1259 2 TABLE public b postgres";
        let f = filter(list, "", &sel(&[], &["b"]));
        assert_eq!(
            f.list,
            "; comment\r\n\r\n10; 1259 1 TABLE public a postgres\r\n11; 0 1 TABLE DATA public a postgres\r\nnot an entry\r\n;12; 1259 2 TABLE public b postgres"
        );
        assert_eq!(f.tables, ["public.a"]);
        assert_eq!(f.skipped, ["public.b"]);
    }

    #[test]
    fn unreadable_entry_belongs_to_no_table() {
        let list = "5;\n6; x\n7; 1 2\n8; 0 0 WEIRD THING\n9; 1259 1 TABLE public a postgres\n";
        let f = filter(list, "", &sel(&[], &[]));
        assert_eq!(f.list, list);
        let f = filter(list, "", &sel(&["a"], &[]));
        assert_eq!(ids(&f.list, true), [9]);
        assert_eq!(ids(&f.list, false), [5, 6, 7, 8]);
    }

    #[test]
    fn names_with_spaces_split_with_the_sql() {
        let sql = "--\n-- Name: My Table; Type: TABLE; Schema: My Schema; Owner: Some Role\n--\n\n\
                   CREATE TABLE \"My Schema\".\"My Table\" (id integer);\n\n\
                   --\n-- Name: My Table My Table_pkey; Type: CONSTRAINT; Schema: My Schema; Owner: Some Role\n--\n\n\
                   ALTER TABLE ONLY \"My Schema\".\"My Table\"\n    ADD CONSTRAINT \"My Table_pkey\" PRIMARY KEY (id);\n";
        let list = "1; 1259 1 TABLE My Schema My Table Some Role\n\
                    2; 0 1 TABLE DATA My Schema My Table Some Role\n\
                    3; 2606 2 CONSTRAINT My Schema My Table My Table_pkey Some Role\n\
                    4; 1259 3 TABLE public other Some Role\n";
        let known = SchemaSql::parse(sql).known;
        assert_eq!(
            parse_toc_line(
                "3; 2606 2 CONSTRAINT My Schema My Table My Table_pkey Some Role",
                &known
            ),
            Some(Entry {
                desc: "CONSTRAINT",
                schema: "My Schema",
                tag: "My Table My Table_pkey",
                owner: "Some Role",
            })
        );
        let f = filter(list, sql, &sel(&["\"My Schema\".\"My Table\""], &[]));
        assert_eq!(ids(&f.list, true), [1, 2, 3]);
        assert_eq!(f.tables, ["\"My Schema\".\"My Table\""]);
        assert!(f.unmatched.is_empty());
    }

    #[test]
    fn desc_is_chosen_by_the_schema_that_follows() {
        // A schema named "DATA": "TABLE DATA x" is then a TABLE in it, not TABLE DATA of x.
        let sql = "-- Name: x; Type: TABLE; Schema: DATA; Owner: o\nCREATE TABLE \"DATA\".x ();\n";
        let known = SchemaSql::parse(sql).known;
        let e = parse_toc_line("1; 1259 1 TABLE DATA x o", &known).unwrap();
        assert_eq!((e.desc, e.schema, e.tag), ("TABLE", "DATA", "x"));
        let e = parse_toc_line("2; 0 1 TABLE DATA DATA x o", &known).unwrap();
        assert_eq!((e.desc, e.schema, e.tag), ("TABLE DATA", "DATA", "x"));
    }

    #[test]
    fn owner_with_spaces_or_absent() {
        let known = SchemaSql::parse(
            "-- Name: t; Type: TABLE; Schema: public; Owner: Data Team\nCREATE TABLE public.t ();\n",
        )
        .known;
        let e = parse_toc_line("1; 1259 1 TABLE public t Data Team", &known).unwrap();
        assert_eq!((e.tag, e.owner), ("t", "Data Team"));
        // An owner the SQL does not know: the last word.
        let e = parse_toc_line("2; 1259 2 TABLE public u x y", &known).unwrap();
        assert_eq!((e.tag, e.owner), ("u x", "y"));
        // No owner, and the trailing space trimmed by an editor: a single word is the tag.
        let e = parse_toc_line("3; 3079 3 EXTENSION - citext", &known).unwrap();
        assert_eq!((e.tag, e.owner), ("citext", ""));
    }

    #[test]
    fn view_chain_follows_its_base_table() {
        let sql = "-- Name: t; Type: TABLE; Schema: public; Owner: o\nCREATE TABLE public.t (id int);\n\
                   -- Name: v1; Type: VIEW; Schema: public; Owner: o\nCREATE VIEW public.v1 AS SELECT t.id FROM public.t;\n\
                   -- Name: v2; Type: VIEW; Schema: public; Owner: o\nCREATE VIEW public.v2 AS SELECT v1.id FROM public.v1;\n\
                   -- Name: VIEW v2; Type: COMMENT; Schema: public; Owner: o\nCOMMENT ON VIEW public.v2 IS 'public.t';\n\
                   -- Name: f(); Type: FUNCTION; Schema: public; Owner: o\nCREATE FUNCTION public.f() RETURNS int LANGUAGE sql AS $_$select count(*) from public.t$_$;\n";
        let list = "1; 1259 1 TABLE public t o\n2; 1259 2 VIEW public v1 o\n3; 1259 3 VIEW public v2 o\n\
                    4; 0 0 COMMENT public VIEW v2 o\n5; 1255 4 FUNCTION public f() o\n6; 0 1 TABLE DATA public t o\n";
        let f = filter(list, sql, &sel(&[], &["t"]));
        assert_eq!(ids(&f.list, true), [5]);
        assert_eq!(
            f.dropped,
            [
                "VIEW public v1 (needs public.t)",
                "VIEW public v2 (needs public.v1)"
            ]
        );
        // With an include list, views are assumed to exist in the target: nothing depends on
        // them being restored.
        let f = filter(list, sql, &sel(&["t"], &[]));
        assert_eq!(ids(&f.list, true), [1, 6]);
        assert!(f.dropped.is_empty());
    }

    #[test]
    fn comment_and_grant_tags_name_their_object() {
        let sql = "-- Name: t; Type: TABLE; Schema: s; Owner: o\nCREATE TABLE s.t (id int);\n\
                   -- Name: i; Type: INDEX; Schema: s; Owner: o\nCREATE INDEX i ON s.t USING btree (id);\n\
                   -- Name: t tg; Type: TRIGGER; Schema: s; Owner: o\nCREATE TRIGGER tg AFTER INSERT ON s.t FOR EACH ROW EXECUTE FUNCTION s.f();\n\
                   -- Name: t c; Type: CONSTRAINT; Schema: s; Owner: o\nALTER TABLE ONLY s.t ADD CONSTRAINT c CHECK (id > 0);\n";
        let list = "1; 1259 1 TABLE s t o\n2; 1259 2 INDEX s i o\n3; 2620 3 TRIGGER s t tg o\n4; 2606 4 CONSTRAINT s t c o\n\
                    10; 0 0 COMMENT s INDEX i o\n11; 0 0 COMMENT s TRIGGER tg ON t o\n12; 0 0 COMMENT s CONSTRAINT c ON t o\n\
                    13; 0 0 SECURITY LABEL s TABLE t o\n14; 0 0 COMMENT s COLUMN t.id o\n15; 0 0 COMMENT s FUNCTION f() o\n\
                    16; 0 0 COMMENT - LARGE OBJECT 123 o\n17; 0 0 ACL s TABLE t o\n";
        let f = filter(list, sql, &sel(&[], &["s.t"]));
        assert_eq!(ids(&f.list, true), [15, 16]);
        let f = filter(list, sql, &sel(&["t"], &[]));
        assert_eq!(ids(&f.list, true), [1, 2, 3, 4, 10, 11, 12, 13, 14, 17]);
    }

    #[test]
    fn statements_mentioning_names_in_strings_do_not_count() {
        // A default whose sequence is only named inside a string, and a policy whose USING
        // clause names another table.
        let sql = "-- Name: a; Type: TABLE; Schema: public; Owner: o\nCREATE TABLE public.a (id int);\n\
                   -- Name: b; Type: TABLE; Schema: public; Owner: o\nCREATE TABLE public.b (id int);\n\
                   -- Name: a id; Type: DEFAULT; Schema: public; Owner: o\nALTER TABLE ONLY public.a ALTER COLUMN id SET DEFAULT nextval('public.b'::regclass);\n\
                   -- Name: a p; Type: POLICY; Schema: public; Owner: o\nCREATE POLICY p ON public.a USING ((id IN ( SELECT b.id FROM public.b)));\n";
        let list = "1; 1259 1 TABLE public a o\n2; 1259 2 TABLE public b o\n3; 2604 3 DEFAULT public a id o\n4; 3256 4 POLICY public a p o\n";
        let f = filter(list, sql, &sel(&[], &["b"]));
        assert_eq!(ids(&f.list, true), [1, 3]);
        assert_eq!(f.dropped, ["POLICY public a p (needs public.b)"]);
    }

    #[test]
    fn empty_list() {
        let f = filter("", "", &sel(&["a"], &["b"]));
        assert_eq!(f.list, "");
        assert!(f.tables.is_empty() && f.skipped.is_empty() && f.dropped.is_empty());
        assert_eq!(f.unmatched, ["a", "b"]);
    }

    #[test]
    fn newer_descs_follow_their_table() {
        // PostgreSQL 18 writes statistics as data entries of tables and indexes.
        let sql = "-- Name: t; Type: TABLE; Schema: public; Owner: o\nCREATE TABLE public.t (id int);\n\
                   -- Name: i; Type: INDEX; Schema: public; Owner: o\nCREATE INDEX i ON public.t USING btree (id);\n";
        let list = "1; 1259 1 TABLE public t o\n2; 0 1 TABLE DATA public t o\n3; 1259 2 INDEX public i o\n\
                    4; 0 0 STATISTICS DATA public t o\n5; 0 0 STATISTICS DATA public i o\n\
                    6; 0 0 BLOB METADATA - 16384..16390 o\n";
        let f = filter(list, sql, &sel(&[], &["t"]));
        assert_eq!(ids(&f.list, true), [6]);
        let f = filter(list, sql, &sel(&["t"], &[]));
        assert_eq!(ids(&f.list, true), [1, 2, 3, 4, 5]);
    }

    #[test]
    fn selection_wants() {
        let s = sel(&[], &[]);
        assert!(s.wants("public", "t"));
        let s = sel(&["t", "billing.u"], &["x.t"]);
        assert!(s.wants("public", "t") && s.wants("billing", "u"));
        assert!(!s.wants("x", "t") && !s.wants("public", "u"));
    }

    // --- TableName

    #[test]
    fn table_name_parse() {
        let ok = |text: &str, schema: Option<&str>, name: &str| {
            assert_eq!(
                TableName::parse(text),
                Ok(TableName {
                    schema: schema.map(str::to_string),
                    name: name.to_string()
                }),
                "{text}"
            );
        };
        ok("users", None, "users");
        ok("public.users", Some("public"), "users");
        ok("Public.Users", Some("public"), "users");
        ok("t$1_x", None, "t$1_x");
        ok("2024_data", None, "2024_data");
        ok("\"Mixed Case\"", None, "Mixed Case");
        ok("public.\"Mixed Case\"", Some("public"), "Mixed Case");
        ok("\"My Schema\".\"a.b\"", Some("My Schema"), "a.b");
        ok("\"say \"\"hi\"\"\"", None, "say \"hi\"");
        ok("données.café", Some("données"), "café");
    }

    #[test]
    fn table_name_errors() {
        let err = |text: &str, why: &str| {
            let e = TableName::parse(text).unwrap_err();
            assert!(e.starts_with("invalid table name "), "{e}");
            assert!(e.contains(&format!("{text:?}")), "{e}");
            assert!(e.contains(why), "{text}: {e}");
            let reason = e.replace(&format!("{text:?}"), "");
            assert_eq!(reason, reason.to_lowercase(), "{e}");
        };
        err("", "empty");
        err(".users", "nothing before the dot");
        err("public.", "nothing after the dot");
        err("a..b", "nothing after the dot");
        err("a.b.c", "more than one dot");
        err("my table", "whitespace");
        err(" users", "whitespace");
        err("users\n", "whitespace");
        err("a-b", "'-' is not allowed");
        err("a*", "'*' is not allowed");
        err("\"abc", "unterminated double quote");
        err("\"\"", "empty quoted name");
        err("\"a\"b", "unexpected 'b' after a quoted name");
        err("ab\"c\"", "double quote inside an unquoted name");
    }

    #[test]
    fn table_name_display_round_trips() {
        for text in [
            "users",
            "public.users",
            "public.\"Mixed Case\"",
            "\"Users\"",
            "\"1abc\"",
            "\"a.b\".c",
            "\"say \"\"hi\"\"\"",
            "café",
        ] {
            let t = TableName::parse(text).unwrap();
            assert_eq!(t.to_string(), text);
            assert_eq!(TableName::parse(&t.to_string()), Ok(t));
        }
        assert_eq!(TableName::parse("Users").unwrap().to_string(), "users");
    }

    #[test]
    fn table_name_matches() {
        let t = TableName::parse("users").unwrap();
        assert!(t.matches("public", "users") && t.matches("billing", "users"));
        assert!(!t.matches("public", "Users"));
        let t = TableName::parse("billing.users").unwrap();
        assert!(t.matches("billing", "users") && !t.matches("public", "users"));
    }

    // --- lexer

    #[test]
    fn lexer_skips_literals_and_comments() {
        let toks = lex(
            "SELECT 'a''b', E'x\\'y', $f$ public.t $f$, $$ $x$ $$, /* a /* b */ public.t */ \"q\"\"x\".y -- c\n$1 1.5e3",
        );
        assert_eq!(
            toks,
            vec![
                Tok::Word("SELECT".into()),
                Tok::Str("a'b".into()),
                Tok::Punct(','),
                Tok::Str("x'y".into()),
                Tok::Punct(','),
                Tok::Literal,
                Tok::Punct(','),
                Tok::Literal,
                Tok::Punct(','),
                Tok::Quoted("q\"x".into()),
                Tok::Punct('.'),
                Tok::Word("y".into()),
                Tok::Comment("-- c".into()),
                Tok::Punct('$'),
                Tok::Literal,
                Tok::Literal,
            ]
        );
        assert_eq!(
            qualified_name(&lex("Public.\"T\".c x"), 0),
            Some((vec!["public".into(), "T".into(), "c".into()], 5))
        );
        // Unterminated constructs end the input instead of failing.
        assert_eq!(lex("'abc"), vec![Tok::Str("abc".into())]);
        assert_eq!(lex("$a$ x"), vec![Tok::Literal]);
        assert_eq!(lex("/* x"), vec![]);
        assert_eq!(lex("\"ab"), vec![Tok::Quoted("ab".into())]);
    }

    #[test]
    fn header_comments() {
        assert_eq!(
            parse_header(
                "-- Name: users users_pkey; Type: CONSTRAINT; Schema: public; Owner: postgres"
            ),
            Some(("users users_pkey", "CONSTRAINT", "public", "postgres"))
        );
        assert_eq!(
            parse_header("-- Name: EXTENSION citext; Type: COMMENT; Schema: -; Owner: "),
            Some(("EXTENSION citext", "COMMENT", "-", ""))
        );
        assert_eq!(
            parse_header("-- Name: t; Type: TABLE; Schema: public; Owner: o; Tablespace: fast"),
            Some(("t", "TABLE", "public", "o"))
        );
        assert_eq!(
            parse_header("-- Data for Name: t; Type: TABLE DATA; Schema: public; Owner: o"),
            Some(("t", "TABLE DATA", "public", "o"))
        );
        assert_eq!(parse_header("-- Dumped by pg_dump version 15"), None);
    }

    // --- forged text (issue 23)

    /// A header block for FK `child child_parent_fkey`, as a role allowed to write a table
    /// comment or a function body would forge it.
    const FORGED: &str = "\n--\n-- Name: child child_parent_fkey; Type: FK CONSTRAINT; Schema: public; Owner: postgres\n--\n\nCREATE TABLE public.pwned();\n\n--\n";

    fn forged_schema(wrap: &str) -> String {
        format!(
            "--\n-- Name: parent; Type: TABLE; Schema: public; Owner: postgres\n--\n\n\
             CREATE TABLE public.parent (id integer NOT NULL);\n\n\
             --\n-- Name: child; Type: TABLE; Schema: public; Owner: postgres\n--\n\n\
             CREATE TABLE public.child (id integer DEFAULT nextval('public.child_seq'::regclass), parent_id integer);\n\n\
             --\n-- Name: child_seq; Type: SEQUENCE; Schema: public; Owner: postgres\n--\n\n\
             CREATE SEQUENCE public.child_seq;\n\n\
             --\n-- Name: TABLE parent; Type: COMMENT; Schema: public; Owner: postgres\n--\n\n\
             COMMENT ON TABLE public.parent IS {wrap};\n\n\
             --\n-- Name: child child_parent_fkey; Type: FK CONSTRAINT; Schema: public; Owner: postgres\n--\n\n\
             ALTER TABLE ONLY public.child\n    ADD CONSTRAINT child_parent_fkey FOREIGN KEY (parent_id) REFERENCES public.parent(id);\n"
        )
    }

    const FORGED_LIST: &str = "10; 1259 1 TABLE public parent postgres\n\
                               11; 1259 2 TABLE public child postgres\n\
                               12; 1259 3 SEQUENCE public child_seq postgres\n\
                               13; 0 0 COMMENT public TABLE parent postgres\n\
                               14; 0 1 TABLE DATA public parent postgres\n\
                               15; 0 2 TABLE DATA public child postgres\n\
                               16; 2606 4 FK CONSTRAINT public child child_parent_fkey postgres\n";

    #[test]
    fn forged_headers_in_literals_bodies_and_comments_are_not_headers() {
        let quoted = |s: &str| format!("'{}'", s.replace('\'', "''"));
        let wraps = [
            // A plain string, with a quote before the forged block.
            quoted(&format!("it's{FORGED}")),
            // E'…' with an escaped quote and backslashes before the block.
            format!("E'x\\\\\\'y{}'", FORGED.replace('\'', "\\'")),
            // Dollar quotes, as in a function body, with a lookalike inner delimiter.
            format!("$body$ $b$ {FORGED} $body$"),
            format!("$${FORGED}$$"),
            // A block comment (nested) and a line comment around a string.
            format!("/* a /* b */ {FORGED} */ 'x'"),
        ];
        for wrap in &wraps {
            let sql = forged_schema(wrap);
            let parsed = SchemaSql::parse(&sql);
            let fk = parsed
                .stmts
                .get(&(
                    "FK CONSTRAINT".to_string(),
                    "public".to_string(),
                    "child child_parent_fkey".to_string(),
                ))
                .expect("the real FK statement");
            assert!(
                !fk.iter().any(|t| *t == Tok::Word("pwned".into())
                    || *t == Tok::Word("CREATE".into())),
                "{wrap}: {fk:?}"
            );
            // The comment entry's statement ends at its own semicolon: one literal or none.
            assert!(
                !parsed.stmts.keys().any(|k| k.2.contains("pwned")),
                "{wrap}"
            );
            let f = filter(FORGED_LIST, &sql, &sel(&["parent"], &[]));
            assert_eq!(f.referencing.len(), 1, "{wrap}");
            assert_eq!(
                f.referencing[0].entry,
                "16; 2606 4 FK CONSTRAINT public child child_parent_fkey postgres"
            );
            // nextval's sequence comes from the tokens of the child's statement.
            let f = filter(FORGED_LIST, &sql, &sel(&["child"], &[]));
            assert!(
                f.needs.iter().any(|n| n.desc == "SEQUENCE" && n.name == "child_seq"),
                "{wrap}: {:?}",
                f.needs
            );
        }
    }

    #[test]
    fn nextval_inside_a_literal_is_not_a_call() {
        let sql = "-- Name: a; Type: TABLE; Schema: public; Owner: o\n\
                   CREATE TABLE public.a (id int DEFAULT nextval('public.s1'::regclass), note text DEFAULT 'nextval(''public.s2''::regclass)', e text DEFAULT E'nextval(\\'public.s2\\')', f text DEFAULT NEXTVAL(E'public.s3'));\n\
                   -- Name: s1; Type: SEQUENCE; Schema: public; Owner: o\nCREATE SEQUENCE public.s1;\n\
                   -- Name: s2; Type: SEQUENCE; Schema: public; Owner: o\nCREATE SEQUENCE public.s2;\n\
                   -- Name: s3; Type: SEQUENCE; Schema: public; Owner: o\nCREATE SEQUENCE public.s3;\n";
        let list = "1; 1259 1 TABLE public a o\n2; 1259 2 SEQUENCE public s1 o\n\
                    3; 1259 3 SEQUENCE public s2 o\n4; 1259 4 SEQUENCE public s3 o\n";
        let f = filter(list, sql, &sel(&["a"], &[]));
        assert_eq!(needed(&f), ["SEQUENCE public.s1", "SEQUENCE public.s3"]);
    }

    #[test]
    fn lexer_string_values() {
        assert_eq!(
            lex("'a''b' E'c\\\\d\\'e\\n' e'x' N'n' X'ff' B'01' U&'u'"),
            vec![
                Tok::Str("a'b".into()),
                Tok::Str("c\\d'e\n".into()),
                Tok::Str("x".into()),
                Tok::Str("n".into()),
                Tok::Literal,
                Tok::Literal,
                Tok::Word("U".into()),
                Tok::Punct('&'),
                Tok::Str("u".into()),
            ]
        );
        // Standard strings: a backslash is an ordinary character, the quote ends the string.
        assert_eq!(
            lex("'a\\' -- x"),
            vec![Tok::Str("a\\".into()), Tok::Comment("-- x".into())]
        );
        // An identifier with a dollar inside starts no dollar quote.
        assert_eq!(
            lex("a$b$ -- c"),
            vec![Tok::Word("a$b$".into()), Tok::Comment("-- c".into())]
        );
    }

    #[test]
    fn a_forged_toc_line_is_not_believed() {
        // As an old pg_restore -l would print a table named
        // "x\n16; 0 0 FK CONSTRAINT public child child_parent_fkey postgres": the second line
        // reuses a dump id (here the table's own), so neither line is believed.
        let list = "10; 1259 1 TABLE public parent postgres\n\
                    11; 1259 2 TABLE public child postgres\n\
                    17; 1259 5 TABLE public x\n\
                    17; 0 0 FK CONSTRAINT public child child_parent_fkey postgres postgres\n\
                    16; 2606 4 FK CONSTRAINT public child child_parent_fkey postgres\n";
        let sql = forged_schema("'c'");
        let f = filter(list, &sql, &sel(&["parent"], &[]));
        assert_eq!(
            f.referencing
                .iter()
                .map(|k| k.entry.as_str())
                .collect::<Vec<_>>(),
            ["16; 2606 4 FK CONSTRAINT public child child_parent_fkey postgres"]
        );
        // Both forged-id lines are left out of a table restore.
        assert!(!ids(&f.list, true).contains(&17));
        // The table "x" is not known by a line that cannot be trusted.
        let f = filter(list, &sql, &sel(&[], &[]));
        assert!(!f.tables.iter().any(|t| t.contains('x')), "{:?}", f.tables);
    }
}
