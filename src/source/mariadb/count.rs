//! Rows per table counted in mariadb-dump's own output as it streams by, for restore drills.
//! The counts are then exactly what the dump holds: the rows of its one consistent snapshot
//! (`--single-transaction`), with no second query that could see another state of the
//! database, and no second read of the data.
//!
//! Each top-level `INSERT INTO `t` [(columns)] VALUES (…),(…);` adds its tuples to `t`.
//! Where a statement starts is the [`Lexer`]'s decision (the reader that finds the dump's
//! sections, following strings, comments and `DELIMITER` blocks as the restoring client
//! does), so an INSERT inside a trigger, routine or event body, or text inside a string, is
//! never counted. Inside the values, strings and identifiers (with the escapes the dump's
//! sql_mode gives them, as the lexer follows it), comments and nested parentheses are
//! followed byte by byte: a `),(` inside a string is text. Whatever else turns up (an
//! executable comment, `ON DUPLICATE KEY UPDATE`, a statement the lexer and this reader
//! see ending in different places) stops the count with an error: the backup is then made
//! without counts, never with wrong ones. Memory: one line head and a few bytes of state,
//! however long an INSERT is.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use tokio_util::io::InspectReader;

use super::MariaDbSource;
use super::sql::{FilterError, Lexer, LineStart, Lines, Marker, Splitter, marker};
use crate::engine::{Database, Dump, SourceError};

/// Counts rows in a dump pushed to it in chunks of any size.
#[derive(Debug, Default)]
pub struct RowCounter {
    splitter: Splitter<()>,
    state: State,
}

#[derive(Debug, Default)]
struct State {
    lex: Lexer,
    counts: BTreeMap<String, u64>,
    insert: Option<Insert>,
    /// Right after an INSERT's `;`: the rest of its line must be blank.
    tail: bool,
    /// An INSERT ended on the line before: the next line must start a statement.
    ended: bool,
    error: Option<String>,
}

#[derive(Debug)]
struct Insert {
    table: String,
    /// Bytes of the statement's first line still to pass before its values begin.
    skip: usize,
    values: Values,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Comment {
    None,
    /// `#` or `-- ` to the end of the line.
    Line,
    /// `/* … */`; `fresh` right after its opening (an executable `/*!` is refused), `star`
    /// after a `*`.
    Block { fresh: bool, m: bool, star: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    None,
    Slash,
    Dash,
    DashDash,
}

/// The values list of one INSERT, read byte by byte.
#[derive(Debug)]
struct Values {
    /// Whether a backslash escapes in '…', "…" (from the lexer's sql_mode).
    escapes_single: bool,
    escapes_double: bool,
    quote: u8,
    escaped: bool,
    depth: u64,
    comment: Comment,
    held: Held,
    /// At depth 0: a tuple is due (after VALUES or a comma), else a comma or the end.
    want_tuple: bool,
    rows: u64,
}

enum Step {
    More,
    /// The statement's `;`, at this index of the bytes given.
    End(usize),
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

impl Values {
    fn new(lex: &Lexer) -> Values {
        Values {
            escapes_single: lex.backslash_escapes(b'\''),
            escapes_double: lex.backslash_escapes(b'"'),
            quote: 0,
            escaped: false,
            depth: 0,
            comment: Comment::None,
            held: Held::None,
            want_tuple: true,
            rows: 0,
        }
    }

    fn escapes(&self) -> bool {
        match self.quote {
            b'\'' => self.escapes_single,
            b'"' => self.escapes_double,
            _ => false,
        }
    }

    fn feed(&mut self, bytes: &[u8]) -> Result<Step, String> {
        let mut i = 0;
        while i < bytes.len() {
            // Most bytes of a dump are inside strings: skip to the next that matters.
            if self.quote != 0 && !self.escaped {
                let q = self.quote;
                let esc = self.escapes();
                match bytes[i..]
                    .iter()
                    .position(|&b| b == q || (esc && b == b'\\'))
                {
                    Some(n) => i += n,
                    None => return Ok(Step::More),
                }
            }
            if self.step(bytes[i])? {
                return Ok(Step::End(i));
            }
            i += 1;
        }
        Ok(Step::More)
    }

    /// One byte; true at the statement's end.
    fn step(&mut self, c: u8) -> Result<bool, String> {
        match self.comment {
            Comment::Line => {
                if c == b'\n' {
                    self.comment = Comment::None;
                }
                return Ok(false);
            }
            Comment::Block { fresh, m, star } => {
                if (fresh || m) && c == b'!' {
                    return Err("an executable comment (/*! … */) inside its values".into());
                }
                self.comment = if star && c == b'/' {
                    Comment::None
                } else {
                    Comment::Block {
                        fresh: false,
                        m: fresh && c == b'M',
                        star: c == b'*',
                    }
                };
                return Ok(false);
            }
            Comment::None => {}
        }
        if self.quote != 0 {
            if self.escaped {
                self.escaped = false;
            } else if c == b'\\' && self.escapes() {
                self.escaped = true;
            } else if c == self.quote {
                self.quote = 0;
            }
            return Ok(false);
        }
        match std::mem::replace(&mut self.held, Held::None) {
            Held::None => {}
            Held::Slash => {
                if c == b'*' {
                    self.comment = Comment::Block {
                        fresh: true,
                        m: false,
                        star: false,
                    };
                    return Ok(false);
                }
                self.token(b'/')?;
            }
            Held::Dash => {
                if c == b'-' {
                    self.held = Held::DashDash;
                    return Ok(false);
                }
                self.token(b'-')?;
            }
            Held::DashDash => {
                // As the client and server read it: "--" then a space or a control
                // character is a comment; "--1" is two minus signs.
                if c <= b' ' {
                    if c != b'\n' {
                        self.comment = Comment::Line;
                    }
                    return Ok(false);
                }
                self.token(b'-')?;
                self.token(b'-')?;
            }
        }
        match c {
            b'/' => self.held = Held::Slash,
            b'-' => self.held = Held::Dash,
            b'#' => self.comment = Comment::Line,
            _ => return self.token(c),
        }
        Ok(false)
    }

    /// A byte outside strings and comments; true at the statement's end.
    fn token(&mut self, c: u8) -> Result<bool, String> {
        if self.depth > 0 {
            match c {
                b'(' => self.depth += 1,
                b')' => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        self.want_tuple = false;
                    }
                }
                b'\'' | b'"' | b'`' => self.quote = c,
                b';' => return Err("a ';' inside a row, outside any string".into()),
                b'\\' => return Err("a backslash outside a string".into()),
                _ => {}
            }
            return Ok(false);
        }
        match c {
            b'(' if self.want_tuple => {
                self.rows += 1;
                self.depth = 1;
            }
            b',' if !self.want_tuple => self.want_tuple = true,
            b';' if !self.want_tuple => return Ok(true),
            c if is_space(c) => {}
            c => {
                return Err(format!(
                    "{:?} where {} was expected",
                    c as char,
                    if self.want_tuple {
                        "a row \"(…)\""
                    } else {
                        "',' or ';'"
                    }
                ));
            }
        }
        Ok(false)
    }
}

/// The word at `at` (ASCII letters, matched without case) and where it ends.
fn word(head: &[u8], at: usize, w: &str) -> Option<usize> {
    let end = at + w.len();
    let got = head.get(at..end)?;
    (got.eq_ignore_ascii_case(w.as_bytes())
        && !head.get(end).is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_'))
    .then_some(end)
}

fn skip_space(head: &[u8], mut at: usize) -> usize {
    while head.get(at).is_some_and(|b| is_space(*b) && *b != b'\n') {
        at += 1;
    }
    at
}

/// A backtick-quoted identifier at `at`: its name and where it ends.
fn identifier(head: &[u8], at: usize) -> Option<(String, usize)> {
    if head.get(at) != Some(&b'`') {
        return None;
    }
    let mut name = Vec::new();
    let mut i = at + 1;
    loop {
        match head.get(i)? {
            b'`' if head.get(i + 1) == Some(&b'`') => {
                name.push(b'`');
                i += 2;
            }
            b'`' => return Some((String::from_utf8_lossy(&name).into_owned(), i + 1)),
            b'\n' => return None,
            b => {
                name.push(*b);
                i += 1;
            }
        }
    }
}

/// A line that starts a statement: when it is an INSERT (or REPLACE), its table and where
/// its values begin; an error for a form this reader does not follow.
fn insert_start(head: &[u8]) -> Option<Result<(String, usize), String>> {
    let at = word(head, 0, "INSERT").or_else(|| word(head, 0, "REPLACE"))?;
    let shown = || {
        let text = String::from_utf8_lossy(&head[..head.len().min(120)]);
        format!("an INSERT statement it cannot read: \"{}\"", text.trim_end())
    };
    let mut at = skip_space(head, at);
    if let Some(e) = word(head, at, "IGNORE") {
        at = skip_space(head, e);
    }
    let Some(e) = word(head, at, "INTO") else {
        return Some(Err(shown()));
    };
    at = skip_space(head, e);
    let Some((table, e)) = identifier(head, at) else {
        return Some(Err(shown()));
    };
    at = skip_space(head, e);
    if head.get(at) == Some(&b'(') {
        // --complete-insert's column list: identifiers and commas.
        at += 1;
        loop {
            at = skip_space(head, at);
            match head.get(at) {
                Some(b')') => {
                    at += 1;
                    break;
                }
                Some(b',') => at += 1,
                Some(b'`') => match identifier(head, at) {
                    Some((_, e)) => at = e,
                    None => return Some(Err(shown())),
                },
                _ => return Some(Err(shown())),
            }
        }
        at = skip_space(head, at);
    }
    let Some(e) = word(head, at, "VALUES").or_else(|| word(head, at, "VALUE")) else {
        return Some(Err(shown()));
    };
    Some(Ok((table, e)))
}

impl State {
    fn fail(&mut self, why: String) {
        if self.error.is_none() {
            self.error = Some(why);
        }
        self.insert = None;
    }
}

impl Lines for State {
    type Route = ();

    fn line(&mut self, head: &[u8]) {
        let start = self.lex.line_start(head);
        if self.error.is_some() {
            return;
        }
        let ended = std::mem::take(&mut self.ended);
        if self.insert.is_some() {
            if start != LineStart::Inside {
                let table = self.insert.as_ref().map(|i| i.table.clone());
                self.fail(format!(
                    "the INSERT into {} ends where stowage's SQL reader does not expect it",
                    table.unwrap_or_default()
                ));
            }
            return;
        }
        if ended && start == LineStart::Inside {
            self.fail("an INSERT statement ends where stowage's SQL reader does not expect it".into());
            return;
        }
        if start != LineStart::Boundary {
            return;
        }
        if let Some(Marker::Table(t)) = marker(head) {
            self.counts.entry(t).or_insert(0);
            return;
        }
        match insert_start(head) {
            None => {}
            Some(Err(e)) => self.fail(e),
            Some(Ok((table, skip))) => {
                self.counts.entry(table.clone()).or_insert(0);
                self.insert = Some(Insert {
                    table,
                    skip,
                    values: Values::new(&self.lex),
                });
            }
        }
    }

    fn emit(&mut self, _: (), bytes: &[u8]) -> Result<(), FilterError> {
        self.lex.feed(bytes);
        if self.error.is_some() {
            return Ok(());
        }
        let mut rest: &[u8] = bytes;
        if let Some(ins) = &mut self.insert {
            let n = ins.skip.min(bytes.len());
            ins.skip -= n;
            let values = &bytes[n..];
            match ins.values.feed(values) {
                Ok(Step::More) => return Ok(()),
                Ok(Step::End(i)) => {
                    let rows = ins.values.rows;
                    let table = ins.table.clone();
                    *self.counts.entry(table).or_insert(0) += rows;
                    self.insert = None;
                    self.tail = true;
                    rest = &values[i + 1..];
                }
                Err(e) => {
                    let table = ins.table.clone();
                    self.fail(format!("the INSERT into {table} has {e}"));
                    return Ok(());
                }
            }
        }
        if self.tail {
            for &b in rest {
                if b == b'\n' {
                    self.tail = false;
                    self.ended = true;
                    break;
                }
                if !is_space(b) {
                    self.fail("another statement follows an INSERT on its line".into());
                    break;
                }
            }
        }
        Ok(())
    }
}

impl RowCounter {
    pub fn push(&mut self, bytes: &[u8]) {
        // Counting never holds anything back: its errors are kept for `finish`.
        let _ = self.splitter.push(&mut self.state, bytes);
    }

    /// Rows per table (every table of the dump, 0 for one without rows), or why the dump
    /// could not be counted.
    pub fn finish(mut self) -> Result<BTreeMap<String, u64>, String> {
        let _ = self.splitter.finish(&mut self.state);
        self.state.lex.finish();
        if let Some(e) = self.state.error {
            return Err(e);
        }
        if let Some(e) = self.state.lex.error() {
            return Err(e.to_string());
        }
        if let Some(ins) = &self.state.insert {
            return Err(format!("the dump ends inside the INSERT into {}", ins.table));
        }
        Ok(self.state.counts)
    }
}

/// `dump_counting_rows`: the source's dump, its rows counted as they stream through. A
/// dump that cannot be counted is still a backup: it is kept, without counts (the drill
/// then compares tables only and says so).
pub(super) async fn dump(source: &MariaDbSource) -> Result<Dump, SourceError> {
    let inner = source.dump().await?;
    let counter = Arc::new(Mutex::new(Some(RowCounter::default())));
    let seen = counter.clone();
    let reader = InspectReader::new(inner.reader, move |b: &[u8]| {
        if let Ok(mut c) = seen.lock()
            && let Some(c) = c.as_mut()
        {
            c.push(b);
        }
    });
    let name = source.name.clone();
    let finish = inner.finish;
    Ok(Dump {
        reader: Box::new(reader),
        finish: async move {
            let mut info = finish.await?;
            let counted = counter
                .lock()
                .ok()
                .and_then(|mut c| c.take())
                .map(RowCounter::finish);
            match counted {
                Some(Ok(rows)) => info.rows = Some(rows),
                Some(Err(e)) => tracing::warn!(
                    source = %name,
                    "cannot count the rows of the dump for the drill ({e}); the backup records no row counts"
                ),
                None => {}
            }
            Ok(info)
        }
        .boxed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(dump: &[u8]) -> Result<BTreeMap<String, u64>, String> {
        let mut c = RowCounter::default();
        c.push(dump);
        c.finish()
    }

    /// The same dump pushed in pieces of every size from 1 byte gives the same counts.
    fn count_in_pieces(dump: &[u8]) -> Result<BTreeMap<String, u64>, String> {
        let whole = count(dump);
        for size in [1, 2, 3, 5, 7, 64, 1000] {
            let mut c = RowCounter::default();
            for piece in dump.chunks(size) {
                c.push(piece);
            }
            assert_eq!(c.finish(), whole, "pieces of {size}");
        }
        whole
    }

    fn map(v: &[(&str, u64)]) -> BTreeMap<String, u64> {
        v.iter().map(|(k, n)| (k.to_string(), *n)).collect()
    }

    const HEAD: &str = "/*!40101 SET @OLD_SQL_MODE=@@SQL_MODE, SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */;\n\n--\n-- Table structure for table `t`\n--\n\nCREATE TABLE `t` (\n  `id` int(11) NOT NULL,\n  `s` text\n);\n\n--\n-- Dumping data for table `t`\n--\n\n";

    fn one_table(inserts: &str) -> Result<BTreeMap<String, u64>, String> {
        count_in_pieces(format!("{HEAD}{inserts}\n-- Dump completed on 2026-01-01\n").as_bytes())
    }

    #[test]
    fn the_fixture_dump() {
        let dump = include_bytes!("fixtures/app.sql");
        assert_eq!(
            count_in_pieces(dump),
            Ok(map(&[
                ("customers", 2),
                ("empty", 0),
                ("odd`name", 1),
                ("orders", 2)
            ]))
        );
    }

    #[test]
    fn strings_that_look_like_row_separators_are_text() {
        let cases: &[(&str, u64)] = &[
            ("INSERT INTO `t` VALUES (1,'a),(b'),(2,'c');", 2),
            // Escaped quotes, both ways, and a backslash before the closing quote.
            (r"INSERT INTO `t` VALUES (1,'it\'s ),( here'),(2,'x''),(y'),(3,'\\');", 3),
            (r#"INSERT INTO `t` VALUES (1,"dq ),( \" ),("),(2,'');"#, 2),
            // Binary and hex literals.
            (
                "INSERT INTO `t` VALUES (1,0x292C28),(2,X'292c28'),(3,_binary '),('),(4,b'0101');",
                4,
            ),
            // Nested parentheses: function calls inside a row.
            (
                "INSERT INTO `t` VALUES (1,ST_GeomFromText('POINT(1 2)')),(2,concat('(',')'));",
                2,
            ),
            // Comments, with a separator inside them; "--1" is not a comment.
            (
                "INSERT INTO `t` VALUES (1,'a') /* ),( */,(2,--1) -- ),(\n,(3,'b') # ),(\n;",
                3,
            ),
            // A row per statement (--skip-extended-insert), a column list, REPLACE, IGNORE.
            (
                "INSERT INTO `t` VALUES (1,'a');\nINSERT INTO `t` (`id`, `s`) VALUES (2,'b');\nREPLACE INTO `t` VALUES (3,'c');\nINSERT IGNORE INTO `t` VALUES (4,'d'),(5,'e');",
                5,
            ),
            // Newlines and control bytes inside strings, a statement over several lines.
            ("INSERT INTO `t` VALUES\n(1,'line\nbreak'),\n(2,'\0\x1a')\n;", 2),
            // Raw bytes that are not UTF-8.
            ("INSERT INTO `t` VALUES (1,'\u{ff}\u{fe}),(');", 1),
        ];
        for (inserts, want) in cases {
            assert_eq!(one_table(inserts), Ok(map(&[("t", *want)])), "{inserts}");
        }
    }

    #[test]
    fn no_backslash_escapes_is_followed() {
        let dump = format!(
            "{HEAD}/*!40101 SET SQL_MODE='NO_BACKSLASH_ESCAPES' */;\nINSERT INTO `t` VALUES (1,'a\\'),(2,'b');\n"
        );
        // With backslash escapes this would be one row.
        assert_eq!(count_in_pieces(dump.as_bytes()), Ok(map(&[("t", 2)])));
    }

    #[test]
    fn inserts_in_bodies_and_strings_are_not_counted() {
        let dump = format!(
            "{HEAD}INSERT INTO `t` VALUES (1,'\nINSERT INTO `t` VALUES (9),(9);\n');\nDELIMITER ;;\n/*!50003 CREATE*/ /*!50003 TRIGGER `tr` AFTER INSERT ON `t` FOR EACH ROW\nINSERT INTO `t` VALUES (7),(8) */;;\nDELIMITER ;\n/* INSERT INTO `t` VALUES (5) */\n"
        );
        assert_eq!(count_in_pieces(dump.as_bytes()), Ok(map(&[("t", 1)])));
    }

    #[test]
    fn what_it_cannot_follow_is_an_error_not_a_count() {
        for bad in [
            "INSERT INTO `t` VALUES (1,'a') ON DUPLICATE KEY UPDATE s = 'b';",
            "INSERT INTO `t` VALUES (1,'a') /*!ON DUPLICATE KEY UPDATE s = 1*/;",
            "INSERT INTO `t` VALUES (1,'a'),;",
            "INSERT INTO `t` VALUES (1,'a')(2,'b');",
            "INSERT INTO `t` SELECT * FROM `u`;",
            "INSERT INTO t VALUES (1);",
            "INSERT INTO `t` VALUES (1,'a'); INSERT INTO `t` VALUES (2,'b');",
            "INSERT INTO `t` VALUES (1,'unterminated);",
        ] {
            let got = one_table(bad);
            assert!(got.is_err(), "{bad}: {got:?}");
        }
    }

    #[test]
    fn memory_stays_bounded_on_a_long_insert() {
        let mut c = RowCounter::default();
        c.push(HEAD.as_bytes());
        c.push(b"INSERT INTO `t` VALUES ");
        let row = b"(1,'),(),(),(),(),(),(),(),(),(),(),(),(),(),(),(),(),(),(),(),(),()'),";
        for _ in 0..100_000 {
            c.push(row);
        }
        c.push(b"(2,'end');\n");
        let heap = format!("{:?}", c.state.lex).len() + c.splitter_len();
        assert!(heap < 16 * 1024, "{heap}");
        assert_eq!(c.finish(), Ok(map(&[("t", 100_001)])));
    }

    /// A figure, not a check: `cargo test --lib count::tests::throughput -- --ignored
    /// --nocapture` (the dump's section scanner for comparison: both read every byte).
    #[test]
    #[ignore]
    fn throughput() {
        let mut dump = HEAD.as_bytes().to_vec();
        let mut i = 0u64;
        while dump.len() < 64 << 20 {
            dump.extend_from_slice(b"INSERT INTO `t` VALUES ");
            for _ in 0..2000 {
                i += 1;
                dump.extend_from_slice(
                    format!("({i},'name {i} it\\'s ),( text',0x{i:016X},NULL),").as_bytes(),
                );
            }
            dump.extend_from_slice(b"(0,'',0x00,NULL);\n");
        }
        let mb = dump.len() as f64 / 1e6;
        let t = std::time::Instant::now();
        let mut scanner = super::super::sql::Scanner::default();
        for c in dump.chunks(256 * 1024) {
            scanner.push(c);
        }
        scanner.finish();
        let scan = t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        let mut c = RowCounter::default();
        for piece in dump.chunks(256 * 1024) {
            c.push(piece);
        }
        let rows = c.finish().expect("counted")["t"];
        let count = t.elapsed().as_secs_f64();
        println!(
            "{mb:.0} MB, {rows} rows: scanner {:.0} MB/s, row counter {:.0} MB/s",
            mb / scan,
            mb / count
        );
    }

    impl RowCounter {
        fn splitter_len(&self) -> usize {
            format!("{:?}", self.splitter).len()
        }
    }
}
