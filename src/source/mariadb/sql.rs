//! What stowage reads in mariadb-dump's SQL text, purely on bytes and streamed: the tables a
//! dump holds and the server it came from ([`Scanner`]), and the per-table sections a
//! selective restore keeps ([`Filter`]).
//!
//! mariadb-dump (and Oracle's mysqldump) writes one database as: a header of `SET`
//! statements; per table, a `-- Table structure for table `t`` section (DROP + CREATE) then a
//! `-- Dumping data for table `t`` section (INSERTs, then the table's triggers, which have no
//! header of their own); per view, a placeholder under `-- Temporary table structure for view
//! `v`` among the tables; `-- Dumping events for database` and `-- Dumping routines for
//! database`; per view, its real definition under `-- Final view structure for view `v``;
//! and a footer restoring the session (`SET …=@OLD_…`) and `-- Dump completed`.
//!
//! A marker is a comment line, and it counts only where the client that runs the restore
//! is between two statements ([`Lexer`]: every byte is read as the client reads it, strings,
//! identifiers, comments and `DELIMITER` blocks included). Text that a database role controls
//! (a table or column comment, a default, a row, a routine or trigger body, an identifier)
//! is always inside a string, an identifier, a comment or a statement there, so it can never
//! open, close or forge a section. Only line starts are matched against markers, and the
//! lexer keeps a few bytes of each statement, so memory stays bounded however long an
//! INSERT line is.

use std::fmt;

/// How much of a line is inspected. A marker names at most one identifier: 64 characters of
/// up to 4 bytes, doubled when every one is an escaped backtick, and the comment's words.
pub const HEAD_MAX: usize = 1024;

/// View definitions are held back until every one is known (a view over a table that is not
/// restored must be left out, and so must views over that view). They are small; a dump
/// whose views need more than this cannot be filtered by exclusion.
pub const VIEWS_MAX: usize = 16 * 1024 * 1024;

const TABLE: &[u8] = b"-- Table structure for table ";
const DATA: &[u8] = b"-- Dumping data for table ";
const TEMP_VIEW: &[u8] = b"-- Temporary table structure for view ";
/// Oracle's mysqldump words the placeholder section this way.
const TEMP_VIEW_MYSQL: &[u8] = b"-- Temporary view structure for view ";
const FINAL_VIEW: &[u8] = b"-- Final view structure for view ";
const EVENTS: &[u8] = b"-- Dumping events for database ";
const ROUTINES: &[u8] = b"-- Dumping routines for database ";
const SERVER_VERSION: &[u8] = b"-- Server version";
const COMPLETED: &[u8] = b"-- Dump completed";

/// A section header of the dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Marker {
    Table(String),
    Data(String),
    TempView(String),
    FinalView(String),
    Events,
    Routines,
}

/// The line without its line ending.
fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// A backtick-quoted identifier that is all of `rest` ("``" stands for one backtick).
fn quoted_name(rest: &[u8]) -> Option<String> {
    let inner = rest.strip_prefix(b"`")?.strip_suffix(b"`")?;
    let mut name = Vec::with_capacity(inner.len());
    let mut i = 0;
    while i < inner.len() {
        if inner[i] == b'`' {
            // Inside the quotes a backtick only ever comes doubled.
            if inner.get(i + 1) != Some(&b'`') {
                return None;
            }
            i += 1;
        }
        name.push(inner[i]);
        i += 1;
    }
    Some(String::from_utf8_lossy(&name).into_owned())
}

/// The identifier quoted as mariadb-dump writes it.
pub fn quote_name(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// The section a line opens, if it is a section header.
pub fn marker(line: &[u8]) -> Option<Marker> {
    let line = trim_eol(line);
    if let Some(rest) = line.strip_prefix(TABLE) {
        return quoted_name(rest).map(Marker::Table);
    }
    if let Some(rest) = line.strip_prefix(DATA) {
        return quoted_name(rest).map(Marker::Data);
    }
    if let Some(rest) = line
        .strip_prefix(TEMP_VIEW)
        .or_else(|| line.strip_prefix(TEMP_VIEW_MYSQL))
    {
        return quoted_name(rest).map(Marker::TempView);
    }
    if let Some(rest) = line.strip_prefix(FINAL_VIEW) {
        return quoted_name(rest).map(Marker::FinalView);
    }
    if line.starts_with(EVENTS) {
        return Some(Marker::Events);
    }
    if line.starts_with(ROUTINES) {
        return Some(Marker::Routines);
    }
    None
}

/// The server version of a header line "-- Server version\t10.11.14-MariaDB-0+deb12u2".
pub fn server_version(line: &[u8]) -> Option<String> {
    let rest = trim_eol(line).strip_prefix(SERVER_VERSION)?;
    let v = String::from_utf8_lossy(rest).trim().to_string();
    (!v.is_empty()).then_some(v)
}

/// Whether a line restores the session at the end of the dump ("SET TIME_ZONE=@OLD_TIME_ZONE").
fn is_footer(line: &[u8]) -> bool {
    line.starts_with(b"/*!40") && line.windows(6).any(|w| w == b"=@OLD_")
}

/// The first '\n', eight bytes at a time: every byte of a dump passes through here, most
/// of them in long INSERT lines.
fn find_newline(bytes: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    const NL: u64 = LO * b'\n' as u64;
    let mut chunks = bytes.chunks_exact(8);
    let mut at = 0;
    for c in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(c);
        let x = u64::from_le_bytes(word) ^ NL;
        // Nonzero iff some byte of x is zero, i.e. some byte was '\n'.
        if (x.wrapping_sub(LO) & !x & HI) != 0 {
            return c.iter().position(|&b| b == b'\n').map(|i| at + i);
        }
        at += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == b'\n')
        .map(|i| at + i)
}

/// Receives a stream line by line, from [`Splitter`].
pub trait Lines {
    type Route: Copy;
    /// The start of the next line: all of it (with its '\n') when it is shorter than
    /// [`HEAD_MAX`], else its first `HEAD_MAX` bytes.
    fn line(&mut self, head: &[u8]) -> Self::Route;
    /// The line's bytes (its head included), in order, routed as `line` said.
    fn emit(&mut self, route: Self::Route, bytes: &[u8]) -> Result<(), FilterError>;
}

/// Cuts a stream arriving in arbitrary chunks into lines, keeping at most [`HEAD_MAX`]
/// bytes of a line across chunk boundaries.
#[derive(Debug)]
pub struct Splitter<R> {
    head: Vec<u8>,
    /// The route of the line being passed through, once its head has been seen.
    rest: Option<R>,
}

impl<R: Copy> Default for Splitter<R> {
    fn default() -> Self {
        Splitter {
            head: Vec::new(),
            rest: None,
        }
    }
}

impl<R: Copy> Splitter<R> {
    pub fn push<L: Lines<Route = R>>(
        &mut self,
        to: &mut L,
        mut input: &[u8],
    ) -> Result<(), FilterError> {
        while !input.is_empty() {
            if let Some(route) = self.rest {
                match find_newline(input) {
                    Some(i) => {
                        to.emit(route, &input[..=i])?;
                        self.rest = None;
                        input = &input[i + 1..];
                    }
                    None => return to.emit(route, input),
                }
                continue;
            }
            let room = HEAD_MAX - self.head.len();
            let window = &input[..input.len().min(room)];
            match find_newline(window) {
                Some(i) => {
                    self.head.extend_from_slice(&input[..=i]);
                    input = &input[i + 1..];
                    let route = to.line(&self.head);
                    to.emit(route, &self.head)?;
                    self.head.clear();
                }
                None if window.len() == room => {
                    self.head.extend_from_slice(window);
                    input = &input[room..];
                    let route = to.line(&self.head);
                    to.emit(route, &self.head)?;
                    self.head.clear();
                    self.rest = Some(route);
                }
                None => {
                    self.head.extend_from_slice(window);
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The end of the stream: a last line without '\n'.
    pub fn finish<L: Lines<Route = R>>(&mut self, to: &mut L) -> Result<(), FilterError> {
        self.rest = None;
        if self.head.is_empty() {
            return Ok(());
        }
        let route = to.line(&self.head);
        let r = to.emit(route, &self.head);
        self.head.clear();
        r
    }
}

/// The statement delimiters mariadb-dump writes: `;`, and `;;` inside `DELIMITER ;;` blocks
/// (trigger, routine and event bodies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delimiter {
    Semi,
    Double,
}

/// The parts of the session's sql_mode that change how the client reads strings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Quoting {
    /// NO_BACKSLASH_ESCAPES: a backslash in a string is a plain character.
    no_backslash_escapes: bool,
    /// ANSI_QUOTES (and the modes that include it): a backslash in "…" is plain.
    ansi_quotes: bool,
}

impl Quoting {
    fn of_mode(value: &str) -> Quoting {
        let upper = value.to_ascii_uppercase();
        let words: Vec<&str> = upper.split(',').map(str::trim).collect();
        Quoting {
            no_backslash_escapes: words.contains(&"NO_BACKSLASH_ESCAPES"),
            ansi_quotes: words.iter().any(|w| {
                matches!(
                    *w,
                    "ANSI_QUOTES" | "ANSI" | "DB2" | "MAXDB" | "MSSQL" | "ORACLE" | "POSTGRESQL"
                )
            }),
        }
    }
}

/// Where a line starts, as the client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineStart {
    /// Between statements with the plain `;` delimiter, outside any string or comment:
    /// the only place a section header of the dump can be.
    Boundary,
    /// Inside a statement, a string, an identifier, a comment or a `DELIMITER ;;` block.
    Inside,
    /// A `DELIMITER` command of the client (the line is not SQL).
    Delimiter,
}

/// How much of a statement is kept to recognise `SET sql_mode = …`.
const STATEMENT_HEAD: usize = 1024;

/// Reads a dump the way the `mariadb` client that restores it does (`--batch
/// --binary-mode`; `add_line` and `read_and_execute` in MariaDB's client/mysql.cc), so that
/// a section header only counts where the client itself is between two statements: strings
/// ('…', "…") with backslash escapes (none under NO_BACKSLASH_ESCAPES, none in "…" under
/// ANSI_QUOTES, both followed through the dump's own `SET sql_mode` statements), `…`
/// identifiers, `#` and `-- ` comments to the end of the line, `/* … */` comments (where
/// `/*!…*/` and `/*M!…*/` are code), the current delimiter, and `DELIMITER` lines. Text in
/// a routine body, a trigger, a comment, a default or a row can then never open a section,
/// however it is worded. What this reader cannot follow exactly (another delimiter, a
/// backslash command, a sql_mode set in an unknown way) is refused, not guessed.
#[derive(Debug)]
pub struct Lexer {
    delimiter: Delimiter,
    /// The quote of the string or identifier being read, or 0.
    in_string: u8,
    ml_comment: bool,
    /// Inside `/*! … */` on this line (the client resets it with each line).
    ss_comment: bool,
    /// A statement has begun (the client's statement buffer is not empty).
    pending: bool,
    /// The rest of the line is a comment or a client command.
    skip_line: bool,
    quoting: Quoting,
    /// User variables holding a saved sql_mode (`SET @saved_sql_mode = @@sql_mode`).
    saved: Vec<(String, Quoting)>,
    statement: Vec<u8>,
    carry: Vec<u8>,
    error: Option<FilterError>,
}

impl Default for Lexer {
    fn default() -> Self {
        Lexer {
            delimiter: Delimiter::Semi,
            in_string: 0,
            ml_comment: false,
            ss_comment: false,
            pending: false,
            skip_line: false,
            quoting: Quoting::default(),
            saved: Vec::new(),
            statement: Vec::new(),
            carry: Vec::new(),
            error: None,
        }
    }
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

impl Lexer {
    /// The first error met, if any: a filter must not go on after it.
    pub fn error(&self) -> Option<&FilterError> {
        self.error.as_ref()
    }

    fn fail(&mut self, why: String) {
        if self.error.is_none() {
            self.error = Some(FilterError(format!(
                "{why}; stowage cannot tell where this backup's statements begin and end, so it restores no part of it by table: restore it whole (without --table and --exclude-table)"
            )));
        }
    }

    /// Whether the lexer is inside a string, an identifier or a `/* */` comment.
    pub fn in_text(&self) -> bool {
        self.in_string != 0 || self.ml_comment
    }

    /// Whether a backslash escapes the next byte of a string or identifier opened with
    /// `quote`, under the sql_mode the dump has set so far (for `count`, which follows the
    /// values of INSERT statements itself).
    pub fn backslash_escapes(&self, quote: u8) -> bool {
        quote != b'`'
            && !(quote == b'"' && self.quoting.ansi_quotes)
            && !self.quoting.no_backslash_escapes
    }

    /// Called with the start of each line (see [`Lines::line`]) before its bytes are fed.
    pub fn line_start(&mut self, head: &[u8]) -> LineStart {
        if self.pending || self.ml_comment || self.in_string != 0 {
            return LineStart::Inside;
        }
        let text = trim_eol(head);
        let start = text.iter().position(|b| !is_space(*b)).unwrap_or(text.len());
        let word = &text[start..];
        if word.len() >= 9 && word[..9].eq_ignore_ascii_case(b"delimiter") {
            // The client takes the whole line as its command.
            self.skip_line = true;
            let arg = word[9..].trim_ascii();
            let spaced = word.get(9).is_some_and(|b| *b == b' ' || *b == b'\t');
            if !head.ends_with(b"\n") && head.len() >= HEAD_MAX {
                self.fail("a DELIMITER line is too long".to_string());
            } else if spaced && arg == b";" {
                self.delimiter = Delimiter::Semi;
            } else if spaced && arg == b";;" {
                self.delimiter = Delimiter::Double;
            } else {
                self.fail(format!(
                    "the backup has the client command \"{}\", which mariadb-dump never writes",
                    String::from_utf8_lossy(word).escape_debug()
                ));
            }
            return LineStart::Delimiter;
        }
        if self.delimiter == Delimiter::Semi {
            LineStart::Boundary
        } else {
            LineStart::Inside
        }
    }

    /// Read the next bytes of the stream (in order, lines whole or in pieces).
    pub fn feed(&mut self, mut input: &[u8]) {
        while !self.carry.is_empty() && !input.is_empty() {
            let n = input.len().min(16);
            let mut joint = std::mem::take(&mut self.carry);
            let old = joint.len();
            joint.extend_from_slice(&input[..n]);
            let used = self.run(&joint, false);
            if used >= old {
                input = &input[used - old..];
            } else {
                self.carry = joint[used..].to_vec();
                input = &input[n..];
            }
        }
        if input.is_empty() {
            return;
        }
        let used = self.run(input, false);
        self.carry = input[used..].to_vec();
    }

    /// The end of the stream.
    pub fn finish(&mut self) {
        let rest = std::mem::take(&mut self.carry);
        self.run(&rest, true);
    }

    /// Lex `buf`; returns how many bytes were read (fewer when a decision needs bytes
    /// beyond its end, at most 3).
    fn run(&mut self, buf: &[u8], at_end: bool) -> usize {
        // The byte `k` after `i`: 0 past the end of the line (the client reads a line as a C
        // string); None when it has not arrived yet.
        let peek = |i: usize, k: usize| -> Option<u8> {
            for j in 1..=k {
                match buf.get(i + j) {
                    None if at_end => return Some(0),
                    None => return None,
                    Some(b'\n') => return Some(0),
                    Some(b) if j == k => return Some(*b),
                    Some(_) => {}
                }
            }
            Some(0)
        };
        let mut i = 0;
        while i < buf.len() {
            let c = buf[i];
            if c == b'\n' {
                self.skip_line = false;
                self.ss_comment = false;
                if self.pending {
                    self.keep(c);
                }
                i += 1;
                continue;
            }
            if self.skip_line {
                i += match buf[i..].iter().position(|b| *b == b'\n') {
                    Some(n) => n,
                    None => buf.len() - i,
                };
                continue;
            }
            // Inside a string, nothing but its quote and a backslash matters.
            if self.in_string != 0 && c != self.in_string && c != b'\\' {
                self.keep(c);
                i += 1;
                continue;
            }
            let need = match c {
                b'/' => 3,
                b'-' => 2,
                b'\\' | b';' | b'*' => 1,
                _ => 0,
            };
            if need > 0 && peek(i, need).is_none() {
                return i;
            }
            let p = |k: usize| peek(i, k).unwrap_or(0);
            let q = self.in_string;
            if !self.ml_comment
                && c == b'\\'
                && q != b'`'
                && !(q == b'"' && self.quoting.ansi_quotes)
                && !(q != 0 && self.quoting.no_backslash_escapes)
            {
                i += self.backslash(q, p(1));
                continue;
            }
            let delim = match self.delimiter {
                Delimiter::Semi => (c == b';').then_some(1),
                Delimiter::Double => (c == b';' && p(1) == b';').then_some(2),
            };
            if !self.ml_comment && q == 0 && delim.is_some() {
                self.end_statement();
                i += delim.unwrap_or(1);
                continue;
            }
            i += self.comment_or_text(c, q, p);
        }
        buf.len()
    }

    /// A backslash that the client reads as its own (outside a comment), followed by
    /// `next` (0 at the end of the line) in quote `q` (0 outside a string): the escape or
    /// client command it starts. Returns how many bytes it takes.
    fn backslash(&mut self, q: u8, next: u8) -> usize {
        if next == 0 {
            // The client stops reading the line here.
            self.skip_line = true;
            return 1;
        }
        if q != 0 || next == b'N' {
            self.keep(b'\\');
            self.keep(next);
            return 2;
        }
        if next == b'-' {
            // `\-`: the client's sandbox command, which mariadb-dump puts first
            // ("/*M!999999\- enable the sandbox mode */"); it takes no argument.
            return 2;
        }
        self.fail(format!(
            "the backup has the client command \"\\{}\" outside a string",
            (next as char).escape_debug()
        ));
        self.skip_line = true;
        2
    }

    /// Byte `c` in quote `q` (0 outside a string), `p(k)` the byte `k` after it: comments,
    /// strings and the statement's own bytes. Returns how many bytes it takes.
    fn comment_or_text(&mut self, c: u8, q: u8, p: impl Fn(usize) -> u8) -> usize {
        if !self.ml_comment
            && q == 0
            && (c == b'#'
                || (c == b'-' && p(1) == b'-' && (is_space(p(2)) || p(2) == 0 || !self.pending)))
        {
            self.skip_line = true;
            return 1;
        }
        if q == 0 && c == b'/' && p(1) == b'*' && !(p(2) == b'!' || (p(2) == b'M' && p(3) == b'!'))
        {
            self.ml_comment = true;
            return 2;
        }
        if self.ml_comment && !self.ss_comment && c == b'*' && p(1) == b'/' {
            self.ml_comment = false;
            return 2;
        }
        if q == 0 && c == b'/' && p(1) == b'*' && p(2) == b'!' {
            self.ss_comment = true;
        } else if q == 0 && self.ss_comment && c == b'*' && p(1) == b'/' {
            self.ss_comment = false;
        }
        if c == q {
            self.in_string = 0;
        } else if !self.ml_comment && q == 0 && matches!(c, b'\'' | b'"' | b'`') {
            self.in_string = c;
        }
        if !self.ml_comment && (self.pending || !is_space(c)) {
            self.pending = true;
            self.keep(c);
        }
        1
    }

    fn keep(&mut self, c: u8) {
        if self.statement.len() < STATEMENT_HEAD {
            self.statement.push(c);
        }
    }

    /// A statement ended: follow what it does to the way strings are read.
    fn end_statement(&mut self) {
        let statement = std::mem::take(&mut self.statement);
        self.pending = false;
        let text = String::from_utf8_lossy(&statement);
        let mut t = text.trim();
        // "/*!50003 SET …*/" and "/*M!100100 SET …*/" run as the statement they hold.
        if let Some(rest) = t.strip_prefix("/*M!").or_else(|| t.strip_prefix("/*!")) {
            t = rest.trim_start_matches(|c: char| c.is_ascii_digit());
            t = t.trim_end().strip_suffix("*/").unwrap_or(t).trim();
        }
        let lower = t.to_ascii_lowercase();
        if lower.starts_with("delimiter") {
            self.fail("a statement of the backup is read by the client as a DELIMITER command".to_string());
            return;
        }
        if !lower.contains("sql_mode") {
            return;
        }
        let Some(list) = lower.strip_prefix("set").filter(|r| r.starts_with(is_space_char)) else {
            // e.g. a CREATE … statement naming sql_mode in text: not a change of mode.
            return;
        };
        if statement.len() >= STATEMENT_HEAD {
            self.fail("a statement that sets sql_mode is too long to follow".to_string());
            return;
        }
        // The original text for the literal's case does not matter: modes are matched
        // without case.
        for (lhs, rhs) in assignments(list) {
            let var = lhs
                .trim_start_matches("@@session.")
                .trim_start_matches("@@local.")
                .trim_start_matches("session ")
                .trim_start_matches("local ")
                .trim_start_matches("@@")
                .trim();
            let reads_mode = matches!(rhs.as_str(), "@@sql_mode" | "@@session.sql_mode" | "@@local.sql_mode");
            if var == "sql_mode" {
                if let Some(lit) = rhs.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
                    self.quoting = Quoting::of_mode(lit);
                } else if let Some(v) = rhs.strip_prefix('@').filter(|v| !v.starts_with('@')) {
                    self.quoting = self
                        .saved
                        .iter()
                        .find(|(n, _)| n == v)
                        .map(|(_, q)| *q)
                        .unwrap_or_default();
                } else if !reads_mode {
                    self.fail(format!("the backup sets sql_mode to {rhs}"));
                    return;
                }
            } else if let Some(v) = var.strip_prefix('@') {
                if reads_mode {
                    let q = self.quoting;
                    self.saved.retain(|(n, _)| n != v);
                    self.saved.push((v.to_string(), q));
                }
            } else if var.contains("sql_mode") {
                self.fail(format!("the backup sets {var}"));
                return;
            }
        }
    }
}

fn is_space_char(c: char) -> bool {
    c.is_ascii_whitespace()
}

/// `a = b, c = 'x,y'` as (a, b), (c, 'x,y'): commas inside quotes do not split.
fn assignments(list: &str) -> Vec<(String, String)> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    for ch in list.chars() {
        match quote {
            Some(q) if ch == q => quote = None,
            Some(_) => {}
            None if ch == '\'' || ch == '"' => quote = Some(ch),
            None if ch == ',' => {
                parts.push(std::mem::take(&mut cur));
                continue;
            }
            None => {}
        }
        cur.push(ch);
    }
    parts.push(cur);
    parts
        .into_iter()
        .filter_map(|p| {
            let (l, r) = p.split_once(":=").or_else(|| p.split_once('='))?;
            Some((l.trim().to_string(), r.trim().replace('"', "'")))
        })
        .collect()
}

/// What a dump says about itself, read as it streams by.
#[derive(Debug, Default)]
pub struct Scanner {
    splitter: Splitter<()>,
    state: ScanState,
}

#[derive(Debug, Default)]
struct ScanState {
    lex: Lexer,
    tables: Vec<String>,
    server_version: Option<String>,
    /// Whether the last non-blank line is mariadb-dump's "-- Dump completed".
    completed: bool,
}

/// What [`Scanner`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scanned {
    pub tables: Vec<String>,
    pub server_version: Option<String>,
    pub completed: bool,
}

impl Lines for ScanState {
    type Route = ();
    fn line(&mut self, head: &[u8]) {
        let text = self.lex.in_text();
        let top = self.lex.line_start(head) == LineStart::Boundary;
        if top && let Some(Marker::Table(t)) = marker(head) {
            self.tables.push(t);
        } else if !text
            && self.server_version.is_none()
            && let Some(v) = server_version(head)
        {
            // In the dump's header, inside its first statement (after the sandbox line).
            self.server_version = Some(v);
        }
        if !trim_eol(head).trim_ascii().is_empty() {
            self.completed = top && head.starts_with(COMPLETED);
        }
    }
    fn emit(&mut self, _: (), bytes: &[u8]) -> Result<(), FilterError> {
        self.lex.feed(bytes);
        Ok(())
    }
}

impl Scanner {
    pub fn push(&mut self, bytes: &[u8]) {
        // Scanning never fails: only filters hold anything back.
        let _ = self.splitter.push(&mut self.state, bytes);
    }

    /// Tables seen so far.
    pub fn tables(&self) -> &[String] {
        &self.state.tables
    }

    pub fn finish(mut self) -> Scanned {
        let _ = self.splitter.finish(&mut self.state);
        self.state.lex.finish();
        Scanned {
            tables: self.state.tables,
            server_version: self.state.server_version,
            completed: self.state.completed,
        }
    }
}

/// A filter that cannot go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError(pub String);

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FilterError {}

/// Which tables a selective restore keeps.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only these (all when empty). Views, events and routines are then left out: they go
    /// with the database, and selected tables go into an existing one.
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

impl Selection {
    pub fn wants(&self, table: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|t| t == table))
            && !self.exclude.iter().any(|t| t == table)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Out,
    Drop,
    /// Held back with the view definitions, part `n`.
    View(usize),
}

#[derive(Debug)]
struct ViewPart {
    name: String,
    is_final: bool,
    body: Vec<u8>,
}

/// Keeps the sections of the selected tables in a dump streamed through it (header, footer
/// and, unless tables are named with `include`, views, events and routines too).
#[derive(Debug)]
pub struct Filter {
    splitter: Splitter<Route>,
    state: FilterState,
}

#[derive(Debug)]
struct FilterState {
    selection: Selection,
    section: Route,
    lex: Lexer,
    in_footer: bool,
    views: Vec<ViewPart>,
    view_bytes: usize,
    out: Vec<u8>,
    report: FilterReport,
}

/// What a filter kept and left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterReport {
    /// Tables restored, in dump order.
    pub tables: Vec<String>,
    /// Tables in the dump that were left out.
    pub skipped: Vec<String>,
    /// Views left out, because they are not wanted with `include` or stand on a table (or
    /// view) that is not restored.
    pub views_left_out: Vec<String>,
    /// Whether events and routines were left out.
    pub left_out_routines: bool,
    /// With tables named: the views' definitions were too big to hold ([`VIEWS_MAX`]), so
    /// none is available to put back.
    pub views_not_held: bool,
}

impl Filter {
    pub fn new(selection: Selection) -> Filter {
        Filter {
            splitter: Splitter::default(),
            state: FilterState {
                selection,
                section: Route::Out,
                lex: Lexer::default(),
                in_footer: false,
                views: Vec::new(),
                view_bytes: 0,
                out: Vec::new(),
                report: FilterReport::default(),
            },
        }
    }

    /// Filter the next chunk; what is kept is appended to [`Filter::output`].
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), FilterError> {
        self.splitter.push(&mut self.state, bytes)
    }

    /// The end of the stream: held-back views are released.
    pub fn finish(&mut self) -> Result<(), FilterError> {
        self.splitter.finish(&mut self.state)?;
        self.state.lex.finish();
        if let Some(e) = self.state.lex.error() {
            return Err(e.clone());
        }
        if self.state.lex.in_string != 0 || self.state.lex.ml_comment {
            return Err(FilterError(
                "the backup ends inside a string or a comment; it is not a whole mariadb-dump output".to_string(),
            ));
        }
        self.state.release_views();
        Ok(())
    }

    /// The output so far; the caller takes from it.
    pub fn output(&mut self) -> &mut Vec<u8> {
        &mut self.state.out
    }

    pub fn report(&self) -> &FilterReport {
        &self.state.report
    }

    /// With tables named (`Selection::include`): each view's definition section from the
    /// dump (name, bytes: `DROP VIEW IF EXISTS`, then `CREATE … VIEW` with its algorithm,
    /// definer, SQL SECURITY and check option, between the session settings it needs), none
    /// of it written to the output.
    pub fn held_views(&self) -> Vec<(String, Vec<u8>)> {
        self.state
            .views
            .iter()
            .filter(|v| v.is_final)
            .map(|v| (v.name.clone(), v.body.clone()))
            .collect()
    }
}

impl FilterState {
    fn with_routines(&self) -> bool {
        self.selection.include.is_empty()
    }

    fn view_part(&mut self, name: String, is_final: bool) -> Route {
        if !self.with_routines() {
            if !is_final {
                return Route::Drop;
            }
            // Held, never written: the restore puts back from these the views over the
            // restored tables that are missing from the target (`Filter::held_views`).
            self.report.views_left_out.push(name.clone());
            if self.report.views_not_held {
                return Route::Drop;
            }
        }
        self.views.push(ViewPart {
            name,
            is_final,
            body: Vec::new(),
        });
        Route::View(self.views.len() - 1)
    }

    /// Write out the view parts, placeholders first, leaving out every view that stands on
    /// a table or view that is not restored.
    fn release_views(&mut self) {
        if self.views.is_empty() || !self.with_routines() {
            return;
        }
        let mut gone: Vec<String> = self.report.skipped.clone();
        gone.extend(self.selection.exclude.iter().cloned());
        let mut dropped: Vec<String> = Vec::new();
        loop {
            let mut more = false;
            for v in self.views.iter().filter(|v| v.is_final) {
                if dropped.contains(&v.name) {
                    continue;
                }
                let reads = view_reads(&v.body);
                if gone.iter().any(|g| reads.contains(g)) {
                    dropped.push(v.name.clone());
                    gone.push(v.name.clone());
                    more = true;
                }
            }
            if !more {
                break;
            }
        }
        let views = std::mem::take(&mut self.views);
        for v in views.iter().filter(|v| !v.is_final) {
            if !dropped.contains(&v.name) {
                self.out.extend_from_slice(&v.body);
            }
        }
        for v in views.iter().filter(|v| v.is_final) {
            if !dropped.contains(&v.name) {
                self.out.extend_from_slice(&v.body);
            }
        }
        self.view_bytes = 0;
        self.report.views_left_out.extend(dropped);
    }
}

/// A token of a view definition, for [`view_reads`].
#[derive(Debug, PartialEq, Eq)]
enum Token {
    /// A `…`-quoted identifier, unquoted.
    Ident(String),
    /// A bare word (a keyword: mariadb-dump and the server quote every identifier).
    Word(String),
    /// A string literal (its contents do not matter).
    Str,
    Punct(u8),
}

/// The tokens of one SQL statement as mariadb-dump or `information_schema.views` writes a
/// view: `/*!NNNNN … */` is code, other comments are skipped, strings end where the server
/// ends them (backslash escapes and doubled quotes).
fn tokens(text: &[u8]) -> Vec<Token> {
    let mut out = Vec::new();
    let mut i = 0;
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80;
    while i < text.len() {
        let c = text[i];
        let next = text.get(i + 1).copied().unwrap_or(0);
        if is_space(c) {
            i += 1;
        } else if c == b'/' && next == b'*' {
            let code = text.get(i + 2) == Some(&b'!')
                || (text.get(i + 2) == Some(&b'M') && text.get(i + 3) == Some(&b'!'));
            if code {
                i += if text[i + 2] == b'M' { 4 } else { 3 };
                while i < text.len() && text[i].is_ascii_digit() {
                    i += 1;
                }
            } else {
                i = match text[i + 2..].windows(2).position(|w| w == b"*/") {
                    Some(n) => i + 2 + n + 2,
                    None => text.len(),
                };
            }
        } else if c == b'*' && next == b'/' {
            // The end of a `/*!` code comment.
            i += 2;
        } else if c == b'#' || (c == b'-' && next == b'-' && is_space(text.get(i + 2).copied().unwrap_or(b' '))) {
            i = match text[i..].iter().position(|b| *b == b'\n') {
                Some(n) => i + n + 1,
                None => text.len(),
            };
        } else if c == b'`' {
            let mut name = Vec::new();
            i += 1;
            while i < text.len() {
                if text[i] == b'`' {
                    if text.get(i + 1) == Some(&b'`') {
                        name.push(b'`');
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                name.push(text[i]);
                i += 1;
            }
            out.push(Token::Ident(String::from_utf8_lossy(&name).into_owned()));
        } else if c == b'\'' || c == b'"' {
            i += 1;
            while i < text.len() {
                if text[i] == b'\\' {
                    i += 2;
                    continue;
                }
                if text[i] == c {
                    if text.get(i + 1) == Some(&c) {
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                i += 1;
            }
            out.push(Token::Str);
        } else if word(c) {
            let start = i;
            while i < text.len() && word(text[i]) {
                i += 1;
            }
            out.push(Token::Word(
                String::from_utf8_lossy(&text[start..i]).to_ascii_uppercase(),
            ));
        } else {
            out.push(Token::Punct(c));
            i += 1;
        }
    }
    out
}

/// The names a view's query may read: every quoted identifier of its `SELECT` (after
/// `VIEW name AS` in a dump, the whole text of an `information_schema.views` definition)
/// but the aliases it gives (after `AS`) and the definer (`user`@`host`). Tables, views,
/// table aliases and columns alike: a column named like a table makes a view count as
/// reading that table, which errs on the side of checking (or putting back) one view too many.
pub fn view_reads(definition: &[u8]) -> Vec<String> {
    let toks = tokens(definition);
    let start = toks
        .windows(3)
        .position(|w| {
            matches!(
                w,
                [Token::Word(v), Token::Ident(_), Token::Word(a)] if v == "VIEW" && a == "AS"
            )
        })
        .map(|p| p + 3)
        .unwrap_or(0);
    let mut reads: Vec<String> = Vec::new();
    for (k, t) in toks.iter().enumerate().skip(start) {
        let Token::Ident(name) = t else { continue };
        let after_as = k > 0 && matches!(&toks[k - 1], Token::Word(w) if w == "AS");
        let at = |j: Option<usize>| {
            j.and_then(|j| toks.get(j)) == Some(&Token::Punct(b'@'))
        };
        if after_as || at(k.checked_sub(1)) || at(Some(k + 1)) {
            continue;
        }
        if !reads.contains(name) {
            reads.push(name.clone());
        }
    }
    reads
}

impl Lines for FilterState {
    type Route = Route;

    fn line(&mut self, head: &[u8]) -> Route {
        // Every line goes through the lexer, whatever becomes of it.
        let start = self.lex.line_start(head);
        if self.in_footer {
            return Route::Out;
        }
        if start != LineStart::Boundary {
            return self.section;
        }
        if let Some(m) = marker(head) {
            self.section = match m {
                Marker::Table(t) => {
                    if self.selection.wants(&t) {
                        self.report.tables.push(t);
                        Route::Out
                    } else {
                        self.report.skipped.push(t);
                        Route::Drop
                    }
                }
                Marker::Data(t) => {
                    if self.selection.wants(&t) {
                        Route::Out
                    } else {
                        Route::Drop
                    }
                }
                Marker::TempView(v) => self.view_part(v, false),
                Marker::FinalView(v) => self.view_part(v, true),
                Marker::Events | Marker::Routines => {
                    if self.with_routines() {
                        Route::Out
                    } else {
                        self.report.left_out_routines = true;
                        Route::Drop
                    }
                }
            };
            return self.section;
        }
        if is_footer(head) {
            self.in_footer = true;
            self.release_views();
            return Route::Out;
        }
        self.section
    }

    fn emit(&mut self, route: Route, bytes: &[u8]) -> Result<(), FilterError> {
        self.lex.feed(bytes);
        if let Some(e) = self.lex.error() {
            return Err(e.clone());
        }
        match route {
            Route::Out => self.out.extend_from_slice(bytes),
            Route::Drop => {}
            Route::View(n) => {
                if self.report.views_not_held {
                    return Ok(());
                }
                self.view_bytes += bytes.len();
                if self.view_bytes > VIEWS_MAX && !self.with_routines() {
                    // Named tables restore without the views: holding them is only for
                    // putting back the missing ones, which is given up (and said) here.
                    self.report.views_not_held = true;
                    self.views.clear();
                    return Ok(());
                }
                if self.view_bytes > VIEWS_MAX {
                    return Err(FilterError(format!(
                        "the backup's view definitions exceed {} MiB, too much to hold back while leaving out tables; restore the whole backup instead",
                        VIEWS_MAX / (1024 * 1024)
                    )));
                }
                if let Some(v) = self.views.get_mut(n) {
                    v.body.extend_from_slice(bytes);
                }
            }
        }
        Ok(())
    }
}

/// Check a table name given in config or on the command line.
pub fn check_table_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty table name".to_string());
    }
    if name.contains('.') {
        return Err(format!(
            "\"{name}\": give the table name without its database, e.g. \"{}\"",
            name.rsplit('.').next().unwrap_or(name)
        ));
    }
    if name.chars().count() > 64 {
        return Err(format!(
            "\"{name}\" is longer than 64 characters, the limit for a table name"
        ));
    }
    if name.chars().any(char::is_control) || name.ends_with(' ') {
        return Err(format!(
            "\"{}\" is not a valid table name (control characters or a trailing space)",
            name.escape_debug()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real mariadb-dump 10.11 output (`--routines --triggers --events --hex-blob`) of a
    /// database with a view over a view, a trigger, a procedure, an event, a foreign key
    /// and a table whose name holds a backtick (fixtures/app.setup.sql).
    const DUMP: &str = include_str!("fixtures/app.sql");

    fn scan(text: &[u8], chunk: usize) -> Scanned {
        let mut s = Scanner::default();
        for c in text.chunks(chunk) {
            s.push(c);
        }
        s.finish()
    }

    fn filter(text: &[u8], sel: Selection, chunk: usize) -> (String, FilterReport) {
        let mut f = Filter::new(sel);
        let mut out = Vec::new();
        for c in text.chunks(chunk) {
            f.push(c).expect("push");
            out.append(f.output());
        }
        f.finish().expect("finish");
        out.append(f.output());
        (String::from_utf8(out).expect("utf8"), f.report().clone())
    }

    fn sel(include: &[&str], exclude: &[&str]) -> Selection {
        Selection {
            include: include.iter().map(|s| s.to_string()).collect(),
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn newlines_are_found_anywhere() {
        for len in 0..40 {
            for nl in 0..len {
                let mut v = vec![b'x'; len];
                v[nl] = b'\n';
                if nl + 3 < len {
                    v[nl + 3] = b'\n';
                }
                assert_eq!(find_newline(&v), Some(nl), "len {len} at {nl}");
            }
            assert_eq!(find_newline(&vec![0x8a; len]), None);
            assert_eq!(find_newline(&vec![0x0b; len]), None);
        }
    }

    #[test]
    fn markers_and_names() {
        assert_eq!(
            marker(b"-- Table structure for table `odd``name`\n"),
            Some(Marker::Table("odd`name".into()))
        );
        assert_eq!(
            marker(b"-- Dumping data for table `caf\xc3\xa9`\r\n"),
            Some(Marker::Data("café".into()))
        );
        assert_eq!(
            marker(b"-- Temporary view structure for view `v`"),
            Some(Marker::TempView("v".into()))
        );
        assert_eq!(marker(b"-- Table structure for table `a`b`"), None);
        assert_eq!(marker(b"-- Table structure for table `a` extra"), None);
        assert_eq!(marker(b"--  Table structure for table `a`"), None);
        assert_eq!(
            marker(b"-- Dumping routines for database 'app'"),
            Some(Marker::Routines)
        );
        assert_eq!(quote_name("odd`name"), "`odd``name`");
        assert_eq!(
            server_version(b"-- Server version\t10.11.14-MariaDB-0+deb12u2\n").as_deref(),
            Some("10.11.14-MariaDB-0+deb12u2")
        );
        assert_eq!(server_version(b"-- Server version\t\n"), None);
    }

    #[test]
    fn scanner_reads_tables_version_and_completion_at_any_chunking() {
        let want = Scanned {
            tables: vec![
                "customers".into(),
                "empty".into(),
                "odd`name".into(),
                "orders".into(),
            ],
            server_version: Some("10.11.14-MariaDB-0+deb12u2".into()),
            completed: true,
        };
        for chunk in [1, 2, 3, 7, 64, 1000, 1 << 20] {
            assert_eq!(scan(DUMP.as_bytes(), chunk), want, "chunk {chunk}");
        }
        let cut = &DUMP.as_bytes()[..DUMP.len() / 2];
        assert!(
            !scan(cut, 100).completed,
            "a truncated dump is not complete"
        );
    }

    #[test]
    fn marker_text_inside_a_routine_body_is_not_a_section() {
        let text = "-- Table structure for table `a`\nCREATE TABLE a (x int);\n\
                    DELIMITER ;;\nCREATE PROCEDURE p()\nBEGIN\n\
                    -- Table structure for table `ghost`\nSELECT 1;\nEND ;;\nDELIMITER ;\n\
                    -- Dump completed on 2026-01-01\n";
        let s = scan(text.as_bytes(), 5);
        assert_eq!(s.tables, vec!["a".to_string()]);
        assert!(s.completed);
    }

    /// Section headers written by a database role into strings, comments, identifiers
    /// and bodies (where mariadb-dump keeps newlines as they are) open nothing, at any
    /// chunking, and the client's view of strings follows the dump's `SET sql_mode`.
    #[test]
    fn forged_headers_inside_text_open_no_section() {
        let forged = "\nDELIMITER ;\n-- Table structure for table `a`\nCREATE TABLE pwned (x int);\n\
                      -- Dumping routines for database 'x'\nCREATE TABLE pwned2 (x int);\n";
        let header = "/*M!999999\\- enable the sandbox mode */ \n-- Server version\t10.11.14-MariaDB\n\
                      /*!40101 SET @OLD_SQL_MODE=@@SQL_MODE, SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */;\n";
        let sections = |body: &str| {
            format!(
                "{header}--\n-- Table structure for table `a`\n--\nCREATE TABLE `a` (x int);\n\
                 --\n-- Table structure for table `b`\n--\n{body}\n\
                 /*!40101 SET SQL_MODE=@OLD_SQL_MODE */;\n-- Dump completed\n"
            )
        };
        let bodies = [
            // A string in a trigger body, in a DELIMITER block.
            format!(
                "/*!50003 SET sql_mode = 'STRICT_TRANS_TABLES' */ ;\nDELIMITER ;;\n\
                 /*!50003 CREATE*/ /*!50003 TRIGGER t BEFORE INSERT ON b FOR EACH ROW SET @n = '{}' */;;\n\
                 DELIMITER ;\n/*!50003 SET sql_mode = @OLD_SQL_MODE */ ;",
                forged.replace('\'', "\\'")
            ),
            // The same under NO_BACKSLASH_ESCAPES, where "\'" ends the string: the forged
            // lines are still inside it, behind a doubled quote.
            format!(
                "/*!50003 SET @saved_sql_mode = @@sql_mode */ ;\n\
                 /*!50003 SET sql_mode = 'NO_BACKSLASH_ESCAPES,STRICT_TRANS_TABLES' */ ;\n\
                 DELIMITER ;;\nCREATE PROCEDURE p() SELECT 'c:\\', '{}' ;;\nDELIMITER ;\n\
                 /*!50003 SET sql_mode = @saved_sql_mode */ ;\nINSERT INTO b VALUES ('it\\'s');",
                forged.replace('\'', "''")
            ),
            // A comment, a quoted identifier and a "…" string.
            format!("CREATE TABLE `b` (x int /* {forged} */);"),
            format!("CREATE TABLE `b` (`{}` int);", forged.replace('`', "``")),
            format!("INSERT INTO b VALUES (\"{}\");", forged.replace('\'', "\\'")),
        ];
        for body in &bodies {
            let text = sections(body);
            for chunk in [1, 2, 3, 7, 4096] {
                let s = scan(text.as_bytes(), chunk);
                assert_eq!(s.tables, vec!["a".to_string(), "b".into()], "{body}");
                assert!(s.completed, "{body}");
                assert_eq!(s.server_version.as_deref(), Some("10.11.14-MariaDB"));
                let (out, report) = filter(text.as_bytes(), sel(&["a"], &[]), chunk);
                assert!(!out.contains("pwned"), "chunk {chunk}, {body}:\n{out}");
                assert_eq!(report.tables, vec!["a".to_string()]);
                let (out, _) = filter(text.as_bytes(), sel(&[], &["b"]), chunk);
                assert!(!out.contains("pwned"), "chunk {chunk}, {body}:\n{out}");
            }
        }
    }

    #[test]
    fn what_the_lexer_cannot_follow_is_refused() {
        for bad in [
            "DELIMITER //\nCREATE TABLE x (y int)//\n",
            "SELECT 1;\n\\! touch /tmp/x\n",
            "SET sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES');\n",
            "SET GLOBAL sql_mode = 'ANSI';\n",
        ] {
            let mut f = Filter::new(sel(&["a"], &[]));
            let r = f.push(bad.as_bytes()).and_then(|()| f.finish());
            let e = r.expect_err(bad);
            assert!(e.0.contains("restore it whole"), "{e}");
        }
        let mut f = Filter::new(sel(&["a"], &[]));
        let r = f.push(b"INSERT INTO a VALUES ('open\n").and_then(|()| f.finish());
        assert!(r.is_err(), "a dump ending inside a string");
    }

    #[test]
    fn long_lines_pass_through_whole_and_are_never_markers() {
        let mut text = b"-- Table structure for table `t`\nINSERT INTO `t` VALUES ('".to_vec();
        let filler = "-- Table structure for table `x`\\n".repeat(HEAD_MAX);
        text.extend_from_slice(filler.as_bytes());
        text.extend_from_slice(b"');\n-- Table structure for table `u`\nCREATE TABLE u;\n");
        for chunk in [1, 13, 4096, 1 << 20] {
            assert_eq!(
                scan(&text, chunk).tables,
                vec!["t".to_string(), "u".to_string()]
            );
            let (out, _) = filter(&text, sel(&["t"], &[]), chunk);
            assert!(out.len() > filler.len(), "chunk {chunk}");
            assert!(out.ends_with("');\n"), "chunk {chunk}");
            assert!(!out.contains("CREATE TABLE u"));
        }
    }

    #[test]
    fn selected_table_keeps_header_footer_data_and_triggers_only() {
        let (out, report) = filter(DUMP.as_bytes(), sel(&["orders"], &[]), 4096);
        assert_eq!(report.tables, vec!["orders".to_string()]);
        assert_eq!(report.skipped.len(), 3);
        assert_eq!(
            report.views_left_out,
            vec!["customer_names".to_string(), "named_orders".to_string()]
        );
        assert!(report.left_out_routines);
        // Header and footer.
        assert!(out.starts_with("/*M!999999\\- enable the sandbox mode */"));
        assert!(out.contains("SET NAMES utf8mb4"));
        assert!(out.contains("SET FOREIGN_KEY_CHECKS=@OLD_FOREIGN_KEY_CHECKS"));
        assert!(
            out.trim_end().ends_with(
                DUMP.trim_end()
                    .lines()
                    .last()
                    .expect("last line of the fixture")
            )
        );
        // The table, its rows and its trigger; nothing else.
        assert!(out.contains("CREATE TABLE `orders`"));
        assert!(out.contains("INSERT INTO `orders` VALUES"));
        assert!(out.contains("trigger orders_touch before insert on orders"));
        for gone in [
            "CREATE TABLE `customers`",
            "INSERT INTO `customers`",
            "`odd``name`",
            "VIEW",
            "PROCEDURE",
            "EVENT",
        ] {
            assert!(!out.contains(gone), "{gone} kept:\n{out}");
        }
        // Any chunking gives the same bytes.
        for chunk in [1, 2, 5, 333] {
            assert_eq!(filter(DUMP.as_bytes(), sel(&["orders"], &[]), chunk).0, out);
        }
    }

    #[test]
    fn excluding_a_table_leaves_out_the_views_standing_on_it() {
        let (out, report) = filter(DUMP.as_bytes(), sel(&[], &["customers"]), 777);
        assert_eq!(
            report.tables,
            vec!["empty".to_string(), "odd`name".into(), "orders".into()]
        );
        assert_eq!(report.skipped, vec!["customers".to_string()]);
        // customer_names reads customers; named_orders reads customer_names.
        assert_eq!(
            report.views_left_out,
            vec!["customer_names".to_string(), "named_orders".to_string()]
        );
        assert!(!report.left_out_routines);
        assert!(!out.contains("CREATE TABLE `customers`"));
        assert!(!out.contains("VIEW `customer_names`"));
        assert!(!out.contains("VIEW `named_orders`"));
        assert!(out.contains("PROCEDURE `order_count`"));
        assert!(out.contains("EVENT `nightly`"));
        assert!(out.contains("CREATE TABLE `orders`"));

        // Excluding a table no view reads keeps every view, placeholders before definitions.
        let (out, report) = filter(DUMP.as_bytes(), sel(&[], &["empty"]), 1);
        assert!(report.views_left_out.is_empty(), "{report:?}");
        let placeholder = out
            .find("Temporary table structure for view `named_orders`")
            .expect("placeholder kept");
        let definition = out
            .find("Final view structure for view `customer_names`")
            .expect("definition kept");
        assert!(placeholder < definition);
        assert!(out.contains("VIEW `named_orders` AS"));
        assert!(
            out.trim_end().ends_with(
                DUMP.trim_end()
                    .lines()
                    .last()
                    .expect("last line of the fixture")
            )
        );
    }

    #[test]
    fn excluding_an_absent_table_keeps_every_line() {
        // Only the view placeholders move (next to the definitions they stand in for).
        let (out, report) = filter(DUMP.as_bytes(), sel(&[], &["nope"]), 50);
        assert!(report.skipped.is_empty() && report.views_left_out.is_empty());
        let sorted = |t: &str| {
            let mut l: Vec<String> = t.lines().map(str::to_string).collect();
            l.sort();
            l
        };
        assert_eq!(sorted(&out), sorted(DUMP));
        // Without views, not even that.
        let plain = "/*!40101 SET NAMES utf8mb4 */;\n--\n-- Table structure for table `a`\n--\n\
                     CREATE TABLE `a` (x int);\n--\n-- Dumping data for table `a`\n--\n\
                     INSERT INTO `a` VALUES (1);\n/*!40101 SET SQL_MODE=@OLD_SQL_MODE */;\n\
                     -- Dump completed";
        assert_eq!(filter(plain.as_bytes(), sel(&[], &["nope"]), 9).0, plain);
        let (out, _) = filter(plain.as_bytes(), sel(&[], &["a"]), 9);
        assert_eq!(
            out,
            "/*!40101 SET NAMES utf8mb4 */;\n--\n/*!40101 SET SQL_MODE=@OLD_SQL_MODE */;\n-- Dump completed"
        );
    }

    #[test]
    fn view_definitions_are_bounded() {
        let mut text = b"-- Final view structure for view `v`\n".to_vec();
        let line = vec![b'x'; 1 << 20];
        let mut f = Filter::new(sel(&[], &["t"]));
        f.push(&text).expect("marker");
        text.clear();
        let mut failed = None;
        for _ in 0..(VIEWS_MAX >> 20) + 2 {
            if let Err(e) = f.push(&line) {
                failed = Some(e);
                break;
            }
        }
        let e = failed.expect("held-back views must stay bounded");
        assert!(e.0.contains("view definitions exceed"), "{e}");

        // With tables named, the views are only held to put back missing ones: past the
        // bound, that is given up, and the restore goes on.
        let mut f = Filter::new(sel(&["t"], &[]));
        f.push(b"-- Final view structure for view `v`\n").expect("marker");
        for _ in 0..(VIEWS_MAX >> 20) + 2 {
            f.push(&line).expect("named tables restore whatever the views' size");
        }
        f.push(b"\n-- Final view structure for view `w`\nCREATE VIEW w;\n").expect("next");
        f.finish().expect("finish");
        assert!(f.report().views_not_held);
        assert!(f.held_views().is_empty());
    }

    #[test]
    fn what_a_view_reads_comes_from_its_tokens() {
        // As mariadb-dump writes it: the definer, the view's own name and its column aliases
        // are not read; a name in a string or a comment is not either.
        let dumped = b"/*!50001 DROP VIEW IF EXISTS `v`*/;\n/*!50001 CREATE ALGORITHM=UNDEFINED */\n\
            /*!50013 DEFINER=`orders`@`localhost` SQL SECURITY DEFINER */\n\
            /*!50001 VIEW `v` AS select `c`.`id` AS `customers`,'`ghost`' AS `x` /* `ghost2` */ \
            from (`odd``name` `c` join `paid orders` `o` on(`o`.`cid` = `c`.`id`)) */\n\
            /*!50002 WITH CASCADED CHECK OPTION */;";
        assert_eq!(
            view_reads(dumped),
            vec!["c", "id", "odd`name", "paid orders", "o", "cid"]
        );
        // As information_schema.views holds it: qualified, no VIEW prefix.
        let live = b"select `app`.`orders`.`id` AS `id` from `app`.`orders` where `app`.`orders`.`note` = 'it\\'s `x`'";
        assert_eq!(view_reads(live), vec!["app", "orders", "id", "note"]);
    }

    #[test]
    fn table_names() {
        assert!(check_table_name("orders").is_ok());
        assert!(check_table_name("odd`name").is_ok());
        let e = check_table_name("app.orders").expect_err("dotted");
        assert!(e.contains("\"orders\""), "{e}");
        assert!(check_table_name("").is_err());
        assert!(check_table_name(&"x".repeat(65)).is_err());
        assert!(check_table_name("a\nb").is_err());
    }
}
