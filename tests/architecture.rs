//! Imports between top-level modules flow one way (issue 26). This reads every `src/**/*.rs`,
//! collects which top-level module (a file or folder directly under `src/`) names which other
//! one through `crate::…` or a `super::…` chain that climbs out of its folder, and fails on an
//! edge that climbs the layering below or closes a circle, unless that edge is in
//! `STILL_TO_BREAK` (which may only shrink: a listed edge that no longer exists fails too).
//!
//! It reads source text, not the compiler's view: comments, strings and char literals are
//! skipped, `use` groups are followed through nested braces, and paths in code count as much
//! as `use` lines. Test-only modules (`#[cfg(test)] mod …`) count too: a lower module's tests
//! reaching up are still a circle for the reader.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The target order, top first: a module may name modules in a later layer (or, when no circle
/// results, its own layer), never an earlier one. A new top-level module must be placed here.
const LAYERS: &[&[&str]] = &[
    // the CLI
    &["commands"],
    // the long-running process, and what it and the CLI call first
    &["daemon"],
    &["server", "instance", "notify", "preflight"],
    &["status", "history", "recover"],
    &["heal", "verify", "drill", "curate"],
    // the data paths
    &["restore", "pipeline", "wal"],
    // test-only stand-ins (a storage, a database) the data paths' unit tests run on
    &["testkit"],
    // the repository: locks, blobs, how objects are packed, manifests, key names
    &["repo"],
    // reads and validates the config file: hands each source's section to its engine and
    // each destination's to its type, through the registries below
    &["load"],
    // a job's and a source's before/after commands, which the pipeline runs; they use the
    // sources' child-process helpers. The containers held while a job's files are read
    // (the Docker Engine API), which the pipeline also runs around its sources.
    &["hook", "containers"],
    // where bytes go to and come from: the storage and engine registries and implementations
    &["storage", "source"],
    &["progress", "logging"],
    // config types: a job keeps its databases, a destination its settings, as trait objects
    // of the interfaces below
    &["config"],
    // the engine and storage interfaces, which the config types hold (a job's databases, a
    // destination's settings) and the engines and storages implement
    &["engine", "backend"],
    // what an engine or a destination type sees of its config section: parsing, problems,
    // secrets, priority
    &["section"],
    // what config builds its values with: encryption keys, schedules, retention policies
    &["crypt", "schedule", "retention", "footprint", "ticker"],
    // leaves: they name nothing else of stowage
    &[
        "codec",
        "dirwatch",
        "units",
        "secret",
        "owner",
        "pathfilter",
        "names",
        "zone",
    ],
];

/// Edges that still climb the layering or close a circle, each with why it is there. Remove a
/// line when its edge is gone (the test says so); never add one to make a new edge pass.
/// Empty since issue 26 (config reading moved above the registries, storages own their config).
const STILL_TO_BREAK: &[(&str, &str, &str)] = &[];

#[test]
fn imports_between_top_level_modules_flow_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = module_graph(&src);
    let layer = layer_of();

    let mut problems = Vec::new();
    for module in graph.keys() {
        if !layer.contains_key(module.as_str()) {
            problems.push(format!(
                "top-level module `{module}` has no place in LAYERS (tests/architecture.rs): add it where it belongs"
            ));
        }
    }
    if !problems.is_empty() {
        panic!("{}", problems.join("\n"));
    }

    let allowed: BTreeSet<(String, String)> = STILL_TO_BREAK
        .iter()
        .map(|(a, b, _)| (a.to_string(), b.to_string()))
        .collect();
    let all_edges: BTreeSet<(String, String)> = edges(&graph).into_iter().collect();

    for (a, b) in &allowed {
        if !all_edges.contains(&(a.clone(), b.clone())) {
            problems.push(format!(
                "`{a} -> {b}` is gone: remove it from STILL_TO_BREAK in tests/architecture.rs"
            ));
        }
    }

    // Edges that climb to an earlier layer.
    for (a, b) in &all_edges {
        if layer[b.as_str()] < layer[a.as_str()] && !allowed.contains(&(a.clone(), b.clone())) {
            problems.push(format!(
                "`{a}` (layer {}) names `{b}` (layer {}), which is above it; at:\n{}",
                layer[a.as_str()],
                layer[b.as_str()],
                sites(&graph, a, b)
            ));
        }
    }

    // Circles among what is left once the listed edges are taken out (same-layer edges can
    // still close one).
    let rest: Graph = graph
        .iter()
        .map(|(a, targets)| {
            let kept = targets
                .iter()
                .filter(|(b, _)| !allowed.contains(&(a.clone(), (*b).clone())))
                .map(|(b, s)| (b.clone(), s.clone()))
                .collect();
            (a.clone(), kept)
        })
        .collect();
    for component in cycles(&rest) {
        problems.push(format!(
            "import circle between {}; its edges:\n{}",
            component.join(", "),
            component_edges(&rest, &component)
        ));
    }

    let report = report(&graph, &layer);
    println!("{report}");
    if !problems.is_empty() {
        panic!("{}\n\n{report}", problems.join("\n\n"));
    }
}

/// What the whole graph looks like today (printed with --nocapture; the figures of issue 26).
fn report(graph: &Graph, layer: &BTreeMap<&str, usize>) -> String {
    let mut out = String::new();
    let circles = cycles(graph);
    let biggest = circles.iter().map(Vec::len).max().unwrap_or(0);
    let back: Vec<(String, String)> = edges(graph)
        .into_iter()
        .filter(|(a, b)| layer.get(b.as_str()) < layer.get(a.as_str()))
        .collect();
    out.push_str(&format!(
        "{} top-level modules, {} edges; {} circle(s), the biggest of {} modules; {} edge(s) climbing the layers\n",
        graph.len(),
        edges(graph).len(),
        circles.len(),
        biggest,
        back.len()
    ));
    for component in &circles {
        out.push_str(&format!("circle: {}\n", component.join(", ")));
    }
    for (a, b) in &back {
        let n = graph[a][b].len();
        out.push_str(&format!("back: {a} -> {b} ({n} site(s))\n"));
    }
    out
}

type Graph = BTreeMap<String, BTreeMap<String, Vec<String>>>;

fn layer_of() -> BTreeMap<&'static str, usize> {
    let mut map = BTreeMap::new();
    for (i, names) in LAYERS.iter().enumerate() {
        for name in *names {
            assert!(
                map.insert(*name, i).is_none(),
                "`{name}` is twice in LAYERS"
            );
        }
    }
    map
}

fn edges(graph: &Graph) -> Vec<(String, String)> {
    graph
        .iter()
        .flat_map(|(a, targets)| targets.keys().map(move |b| (a.clone(), b.clone())))
        .collect()
}

fn sites(graph: &Graph, a: &str, b: &str) -> String {
    graph[a][b]
        .iter()
        .map(|s| format!("    {s}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn component_edges(graph: &Graph, component: &[String]) -> String {
    let inside: BTreeSet<&String> = component.iter().collect();
    let mut out = Vec::new();
    for a in component {
        for (b, at) in &graph[a] {
            if inside.contains(b) {
                out.push(format!("    {a} -> {b} (first at {})", at[0]));
            }
        }
    }
    out.join("\n")
}

/// Strongly connected components with more than one module (Tarjan), each sorted.
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct State<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'g>(s: &mut State<'g>, v: &'g str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        let graph = s.graph;
        for w in graph[v].keys() {
            let w = w.as_str();
            if !graph.contains_key(w) {
                continue;
            }
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            loop {
                let w = s.stack.pop().expect("v is on the stack");
                s.on_stack.remove(w);
                component.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out.sort();
    s.out
}

/// Top-level module → (named top-level module → "file:line" of each site).
fn module_graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    collect_rs(src, &mut files);
    files.sort();
    let tops: BTreeSet<String> = files
        .iter()
        .filter_map(|f| module_path(src, f).first().cloned())
        .collect();
    let mut graph: Graph = BTreeMap::new();
    for file in &files {
        let path = module_path(src, file);
        let Some(top) = path.first().cloned() else {
            continue; // lib.rs (only `mod` lines) and main.rs (a separate crate)
        };
        graph.entry(top.clone()).or_default();
        let text = std::fs::read_to_string(file).expect("read a source file");
        let rel = file
            .strip_prefix(src.parent().unwrap())
            .unwrap()
            .display()
            .to_string();
        for (target, line) in references(&path, &text) {
            if target != top && tops.contains(&target) {
                graph
                    .entry(top.clone())
                    .or_default()
                    .entry(target)
                    .or_default()
                    .push(format!("{rel}:{line}"));
            }
        }
    }
    graph
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src/") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            collect_rs(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/a/b/mod.rs` → [a, b]; `src/a/b.rs` → [a, b]; `src/lib.rs`, `src/main.rs` → [].
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("under src/");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    if parts.is_empty() && (stem == "lib" || stem == "main") {
        return Vec::new();
    }
    if stem != "mod" {
        parts.push(stem.to_string());
    }
    parts
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Punct(char),
    PathSep,
}

/// Tokens with their line numbers; comments, strings, chars and lifetimes are dropped.
fn tokens(text: &str) -> Vec<(Tok, usize)> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line = 1;
    let n = chars.len();
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    while i < n {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && at(i + 1) == '/' {
            while i < n && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < n {
                if chars[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if chars[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if c == '"' {
            i += 1;
            while i < n && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                if at(i) == '\n' {
                    line += 1;
                }
                i += 1;
            }
            i += 1;
        } else if (c == 'r' || c == 'b' || c == 'c')
            && raw_string_start(&chars, i).is_some()
            && !prev_is_ident(&chars, i)
        {
            let (hashes, body) = raw_string_start(&chars, i).unwrap();
            i = body;
            loop {
                if i >= n {
                    break;
                }
                if chars[i] == '"' && (0..hashes).all(|k| at(i + 1 + k) == '#') {
                    i += 1 + hashes;
                    break;
                }
                if chars[i] == '\n' {
                    line += 1;
                }
                i += 1;
            }
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime/label ('a): skip either.
            if at(i + 1) == '\\' {
                i += 2;
                while i < n && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if at(i + 2) == '\'' {
                i += 3;
            } else {
                i += 1;
                while i < n && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
            }
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < n && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            // `$crate` in a macro is `crate`.
            out.push((Tok::Ident(word), line));
        } else if c.is_ascii_digit() {
            while i < n && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '.') {
                i += 1;
            }
        } else if c == ':' && at(i + 1) == ':' {
            out.push((Tok::PathSep, line));
            i += 2;
        } else {
            out.push((Tok::Punct(c), line));
            i += 1;
        }
    }
    out
}

/// `r"`, `r#"`, `br"`, `cr#"`…: (number of #, index after the opening quote).
fn raw_string_start(chars: &[char], i: usize) -> Option<(usize, usize)> {
    let mut j = i;
    if chars[j] == 'b' || chars[j] == 'c' {
        j += 1;
    }
    if chars.get(j) != Some(&'r') {
        // b"…" / c"…" are ordinary strings after the prefix: let the '"' branch take them.
        return None;
    }
    j += 1;
    let mut hashes = 0;
    while chars.get(j) == Some(&'#') {
        hashes += 1;
        j += 1;
    }
    (chars.get(j) == Some(&'"')).then_some((hashes, j + 1))
}

fn prev_is_ident(chars: &[char], i: usize) -> bool {
    i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')
}

/// (top-level module named, line) for each `crate::x…` path and each `super::…` chain that
/// climbs to the crate root. `path` is the file's module path; inline `mod x { … }` blocks
/// deepen it, so `super` inside `mod tests` stays in the file.
fn references(path: &[String], text: &str) -> Vec<(String, usize)> {
    let toks = tokens(text);
    let mut out = Vec::new();
    // The brace depth at which each enclosing inline `mod x {` opened.
    let mut inline: Vec<usize> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    let ident = |k: usize| match toks.get(k) {
        Some((Tok::Ident(s), _)) => Some(s.as_str()),
        _ => None,
    };
    let is = |k: usize, t: &Tok| toks.get(k).map(|(x, _)| x) == Some(t);
    while i < toks.len() {
        match &toks[i].0 {
            Tok::Punct('{') => {
                depth += 1;
                i += 1;
                continue;
            }
            Tok::Punct('}') => {
                if inline.last() == Some(&depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
                i += 1;
                continue;
            }
            _ => {}
        }
        if ident(i) == Some("mod") && ident(i + 1).is_some() && is(i + 2, &Tok::Punct('{')) {
            inline.push(depth + 1);
            i += 2;
            continue;
        }
        // A path starts here unless the previous token joins it to something before
        // (`x::crate` does not occur; `a::super` does not either).
        let starts_path = i == 0 || !is(i - 1, &Tok::PathSep);
        if starts_path && ident(i) == Some("crate") && is(i + 1, &Tok::PathSep) {
            collect_after_root(&toks, i + 2, &mut out);
            i += 2;
            continue;
        }
        if starts_path && ident(i) == Some("super") {
            // Count the chain of `super::`.
            let mut k = i;
            let mut ups = 0;
            while ident(k) == Some("super") && is(k + 1, &Tok::PathSep) {
                ups += 1;
                k += 2;
            }
            let here = path.len() + inline.len();
            if ups >= here && ups > 0 {
                collect_after_root(&toks, k, &mut out);
            }
            i = k.max(i + 1);
            continue;
        }
        i += 1;
    }
    out
}

/// After `crate::`: either `name` or a `{ a::…, b, … }` group (nested braces inside items do
/// not name top-level modules).
fn collect_after_root(toks: &[(Tok, usize)], k: usize, out: &mut Vec<(String, usize)>) {
    match toks.get(k) {
        Some((Tok::Ident(name), line)) => out.push((name.clone(), *line)),
        Some((Tok::Punct('{'), _)) => {
            let mut depth = 1;
            let mut j = k + 1;
            let mut item_start = true;
            while j < toks.len() && depth > 0 {
                match &toks[j].0 {
                    Tok::Punct('{') => depth += 1,
                    Tok::Punct('}') => depth -= 1,
                    Tok::Punct(',') if depth == 1 => {
                        item_start = true;
                        j += 1;
                        continue;
                    }
                    Tok::Ident(name) if depth == 1 && item_start && name != "self" => {
                        out.push((name.clone(), toks[j].1));
                    }
                    _ => {}
                }
                item_start = false;
                j += 1;
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod parser {
    use super::*;

    fn refs(path: &[&str], text: &str) -> Vec<String> {
        let path: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        references(&path, text)
            .into_iter()
            .map(|(m, _)| m)
            .collect()
    }

    #[test]
    fn use_groups_nested_and_multiline() {
        let text = "pub use crate::{\n  a::{b, c::{d}},\n  e,\n  self,\n};\nuse crate::f::g as h;";
        assert_eq!(refs(&["x"], text), ["a", "e", "f"]);
    }

    #[test]
    fn paths_in_code_count_and_comments_and_strings_do_not() {
        let text = r####"
            // crate::a::b
            /* crate::c /* nested crate::d */ crate::e */
            let s = "crate::f \" crate::g";
            let r = r#"crate::h "quoted" "#;
            let c = '"'; let l: &'static str = "x";
            fn f<'a>(x: &'a str) { crate::i::j(x); <crate::k::T as Tr>::m() }
            pub(crate) fn g() {}
        "####;
        assert_eq!(refs(&["x"], text), ["i", "k"]);
    }

    #[test]
    fn super_climbs_out_only_past_the_top() {
        // In src/a/b.rs: super:: is a (inside), super::super:: is the crate root.
        assert_eq!(
            refs(&["a", "b"], "use super::c; use super::super::z::w;"),
            ["z"]
        );
        // In src/a.rs: super:: is the root.
        assert_eq!(refs(&["a"], "use super::z;"), ["z"]);
        // Inside an inline module, super:: is the file.
        assert_eq!(
            refs(&["a"], "mod tests { use super::*; use super::super::y; }"),
            ["y"]
        );
        // `$crate` in a macro.
        assert_eq!(
            refs(&["a"], "macro_rules! m { () => { $crate::q::r!() } }"),
            ["q"]
        );
    }
}
