//! Fails when a module cycle comes back into `mairust-actors` (`actors/src`) or the
//! `mairust` binary (`src/`): both crates are checked from here, by reading their
//! sources, so one test guards the workspace.
//!
//! Granularity: the module tree, level by level. For every module (the crate root
//! included), its child modules form a graph in which each child stands for its whole
//! subtree: child `a` depends on sibling `b` when any code inside `a` (any file or inline
//! module under it, unit tests included) names a path that resolves into `b`. That graph
//! must have no cycle. A module naming its own parent, child or any other ancestor or
//! descendant is not a cycle (`mod.rs` re-exporting its children, `use super::*` in
//! tests). So `metrics` naming `crate::smtp::session::ListenerKind` while
//! `smtp/session/actor.rs` names `crate::metrics::…` is the cycle `metrics -> smtp ->
//! metrics` under the crate root, and `smtp::listener` naming `super::session` while
//! `smtp::session` names `super::listener` is a cycle under `smtp`.
//!
//! Paths are read from the source text without compiling it: `use` trees (braces,
//! `self`, globs, renames) and paths written inline, each starting at `crate::`,
//! `super::` (resolved from the enclosing file or inline module) or `self::`. A path
//! resolves to the deepest module its leading segments name; the rest (an item, a
//! method) is ignored, except a name the module re-exports (`pub use child::Name`),
//! which resolves to where it comes from (glob re-exports are not followed). Names brought in by a `use` and then used as a path prefix are
//! covered by that `use`. Paths built by macros (`$crate`) and `#[path]` attributes
//! are not followed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// A module by its segments below the crate root: `["smtp", "session"]`; the root is `[]`.
type ModPath = Vec<String>;

/// One source file of the crate, with the module it defines.
struct SourceFile {
    module: ModPath,
    /// Where it is, for the failure message.
    display: String,
    text: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    /// `::`
    PathSep,
    Punct(char),
}

/// Splits Rust source into identifiers, `::` and punctuation with their line numbers,
/// dropping comments, whitespace and literals (strings, chars, numbers) so that a path
/// written inside a string or a comment is never taken for a reference.
fn tokenize(text: &str) -> Vec<(Token, usize)> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut line = 1;
    let mut i = 0;
    let is_ident_start = |c: char| c.is_alphabetic() || c == '_';
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
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
        } else if let Some(start) = raw_string_start(&chars, i) {
            // r"…", r#"…"#, br#"…"#: no escapes, ends at a quote followed by as many #.
            let hashes = start - i - usize::from(c == 'b') - 1;
            i = start + 1;
            loop {
                if i >= chars.len() {
                    break;
                }
                if chars[i] == '"' && (0..hashes).all(|h| chars.get(i + 1 + h) == Some(&'#')) {
                    i += 1 + hashes;
                    break;
                }
                if chars[i] == '\n' {
                    line += 1;
                }
                i += 1;
            }
        } else if c == '"' || ((c == 'b' || c == 'c') && next == Some('"')) {
            i += if c == '"' { 1 } else { 2 };
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                if chars.get(i) == Some(&'\n') {
                    line += 1;
                }
                i += 1;
            }
            i += 1;
        } else if c == '\'' || (c == 'b' && next == Some('\'')) {
            let quote = if c == '\'' { i } else { i + 1 };
            match (chars.get(quote + 1), chars.get(quote + 2)) {
                (Some('\\'), _) => {
                    // An escaped char literal: '\n', '\'', '\u{1F600}'.
                    i = quote + 3;
                    while i < chars.len() && chars[i] != '\'' {
                        i += 1;
                    }
                    i += 1;
                }
                (Some(_), Some('\'')) => i = quote + 3,
                _ => {
                    // A lifetime or label: 'a, 'static.
                    i = quote + 1;
                    while i < chars.len() && is_ident(chars[i]) {
                        i += 1;
                    }
                }
            }
        } else if c == 'r'
            && next == Some('#')
            && chars.get(i + 2).is_some_and(|&c| is_ident_start(c))
        {
            // A raw identifier, r#type.
            let start = i + 2;
            i = start;
            while i < chars.len() && is_ident(chars[i]) {
                i += 1;
            }
            tokens.push((Token::Ident(chars[start..i].iter().collect()), line));
        } else if is_ident_start(c) {
            let start = i;
            while i < chars.len() && is_ident(chars[i]) {
                i += 1;
            }
            tokens.push((Token::Ident(chars[start..i].iter().collect()), line));
        } else if c.is_ascii_digit() {
            while i < chars.len() && is_ident(chars[i]) {
                i += 1;
            }
        } else if c == ':' && next == Some(':') {
            tokens.push((Token::PathSep, line));
            i += 2;
        } else {
            tokens.push((Token::Punct(c), line));
            i += 1;
        }
    }
    tokens
}

/// The index of the opening quote when a raw string (`r"`, `r#"`, `br##"`…) starts at `i`.
fn raw_string_start(chars: &[char], i: usize) -> Option<usize> {
    let mut j = i;
    if chars.get(j) == Some(&'b') {
        j += 1;
    }
    if chars.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    while chars.get(j) == Some(&'#') {
        j += 1;
    }
    (chars.get(j) == Some(&'"')).then_some(j)
}

/// Where a path starts before its named segments.
#[derive(Debug, Clone, Copy)]
enum Anchor {
    Crate,
    /// `super::` written this many times.
    Super(usize),
    SelfModule,
}

/// A path as written, before it is resolved against the module tree.
#[derive(Clone)]
struct RawPath {
    /// The module (file or inline) the path is written in.
    scope: ModPath,
    anchor: Anchor,
    segments: Vec<String>,
    line: usize,
}

/// What one file declares and names.
#[derive(Default)]
struct FileScan {
    /// `mod name;` declarations: child modules kept in their own files.
    file_children: Vec<String>,
    /// `mod name { … }` declarations, with their full paths.
    inline_modules: Vec<ModPath>,
    paths: Vec<RawPath>,
    /// `pub use` (any visibility) of a named item: the name it is known by in the
    /// module that re-exports it, and the path it comes from.
    reexports: Vec<(String, RawPath)>,
}

fn ident(tokens: &[(Token, usize)], i: usize) -> Option<&str> {
    match tokens.get(i) {
        Some((Token::Ident(name), _)) => Some(name),
        _ => None,
    }
}

fn is(tokens: &[(Token, usize)], i: usize, token: &Token) -> bool {
    tokens.get(i).is_some_and(|(t, _)| t == token)
}

fn scan(file: &SourceFile) -> FileScan {
    let tokens = tokenize(&file.text);
    let mut out = FileScan::default();
    // Inline modules we are inside of, with the brace depth their body opened at.
    let mut scopes: Vec<(ModPath, usize)> = vec![(file.module.clone(), 0)];
    let mut depth = 0;
    let mut i = 0;
    while i < tokens.len() {
        let scope = scopes.last().map(|(m, _)| m.clone()).unwrap_or_default();
        match &tokens[i].0 {
            Token::Punct('{') => {
                depth += 1;
                i += 1;
            }
            Token::Punct('}') => {
                if scopes.len() > 1 && scopes.last().is_some_and(|(_, d)| *d == depth) {
                    scopes.pop();
                }
                depth -= 1;
                i += 1;
            }
            Token::Ident(word) if word == "mod" && ident(&tokens, i + 1).is_some() => {
                let name = ident(&tokens, i + 1).unwrap_or_default().to_string();
                if is(&tokens, i + 2, &Token::Punct(';')) {
                    if scopes.len() > 1 {
                        panic!(
                            "{}:{}: `mod {name};` inside an inline module is not followed",
                            file.display, tokens[i].1
                        );
                    }
                    out.file_children.push(name);
                    i += 3;
                } else if is(&tokens, i + 2, &Token::Punct('{')) {
                    let mut module = scope.clone();
                    module.push(name);
                    out.inline_modules.push(module.clone());
                    depth += 1;
                    scopes.push((module, depth));
                    i += 3;
                } else {
                    i += 1;
                }
            }
            // `use` declarations; not the `use<'a>` bound of an `impl Trait`.
            Token::Ident(word)
                if word == "use"
                    && matches!(
                        tokens.get(i + 1),
                        Some((Token::Ident(_) | Token::PathSep | Token::Punct('{'), _))
                    ) =>
            {
                let line = tokens[i].1;
                let end = (i..tokens.len())
                    .find(|&j| is(&tokens, j, &Token::Punct(';')))
                    .unwrap_or(tokens.len());
                let mut leaves = Vec::new();
                use_tree(&tokens[i + 1..end], Vec::new(), &mut leaves);
                // `pub use`, `pub(crate) use`, `pub(super) use`, `pub(in …) use`.
                let public = ident(&tokens, i.wrapping_sub(1)) == Some("pub")
                    || (is(&tokens, i.wrapping_sub(1), &Token::Punct(')'))
                        && (2..8).any(|back| ident(&tokens, i.wrapping_sub(back)) == Some("pub")));
                for leaf in leaves {
                    // `pub use child::Name` is relative to the module itself.
                    let relative = || {
                        let mut anchored = vec!["self".to_string()];
                        anchored.extend(leaf.iter().cloned());
                        raw_path(&scope, &anchored, line)
                    };
                    if public
                        && let Some(name) = leaf.last()
                        && let Some(origin) = raw_path(&scope, &leaf, line).or_else(relative)
                    {
                        out.reexports.push((name.clone(), origin));
                    }
                    if let Some(path) = raw_path(&scope, &leaf, line) {
                        out.paths.push(path);
                    }
                }
                i = end + 1;
            }
            Token::Ident(word)
                if matches!(word.as_str(), "crate" | "super" | "self")
                    && is(&tokens, i + 1, &Token::PathSep)
                    && !(i > 0
                        && (is(&tokens, i - 1, &Token::PathSep)
                            || is(&tokens, i - 1, &Token::Punct('$')))) =>
            {
                let line = tokens[i].1;
                let mut segments = vec![word.clone()];
                let mut j = i + 1;
                while is(&tokens, j, &Token::PathSep) {
                    match ident(&tokens, j + 1) {
                        Some(name) => segments.push(name.to_string()),
                        None => break,
                    }
                    j += 2;
                }
                if let Some(path) = raw_path(&scope, &segments, line) {
                    out.paths.push(path);
                }
                i = j;
            }
            _ => i += 1,
        }
    }
    out
}

/// Expands a `use` tree into its leaf paths (`a::{b, c::{self, d}}` → `a::b`, `a::c`,
/// `a::c::d`). A glob leaf stands for its prefix; a rename keeps the path it renames.
fn use_tree(tokens: &[(Token, usize)], prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let mut path = prefix;
    let mut i = 0;
    if is(tokens, 0, &Token::PathSep) {
        // `use ::name`: another crate.
        return;
    }
    while i < tokens.len() {
        match &tokens[i].0 {
            Token::Ident(name) if name == "self" && !path.is_empty() => i += 1,
            Token::Ident(name) if name == "as" => break,
            Token::Ident(name) => {
                path.push(name.clone());
                i += 1;
            }
            Token::PathSep => i += 1,
            Token::Punct('*') => break,
            Token::Punct('{') => {
                // Split the group at its top-level commas.
                let mut depth = 0;
                let mut start = i + 1;
                for j in i..tokens.len() {
                    match tokens[j].0 {
                        Token::Punct('{') => depth += 1,
                        Token::Punct('}') => {
                            depth -= 1;
                            if depth == 0 {
                                use_tree(&tokens[start..j], path.clone(), out);
                                return;
                            }
                        }
                        Token::Punct(',') if depth == 1 => {
                            use_tree(&tokens[start..j], path.clone(), out);
                            start = j + 1;
                        }
                        _ => {}
                    }
                }
                return;
            }
            _ => i += 1,
        }
    }
    if !path.is_empty() {
        out.push(path);
    }
}

/// A written path as a [`RawPath`] when it starts inside this crate.
fn raw_path(scope: &ModPath, segments: &[String], line: usize) -> Option<RawPath> {
    let (anchor, rest) = match segments.first().map(String::as_str) {
        Some("crate") => (Anchor::Crate, &segments[1..]),
        Some("self") => (Anchor::SelfModule, &segments[1..]),
        Some("super") => {
            let supers = segments.iter().take_while(|s| *s == "super").count();
            (Anchor::Super(supers), &segments[supers..])
        }
        _ => return None,
    };
    Some(RawPath {
        scope: scope.clone(),
        anchor,
        segments: rest.to_vec(),
        line,
    })
}

/// One dependency between sibling modules, with the reference that makes it.
struct Witness {
    file: String,
    line: usize,
    path: String,
}

/// Sibling dependencies: `(from, to)` → the first reference found.
type Edges = BTreeMap<(ModPath, ModPath), Witness>;

fn show(module: &[String]) -> String {
    if module.is_empty() {
        "crate".to_string()
    } else {
        module.join("::")
    }
}

/// The module a path resolves to: the deepest module its leading segments name, or,
/// where a segment is a name some module re-exports (`pub use child::Name`), the module
/// the name comes from (followed through at most a few re-exports).
fn resolve(
    raw: &RawPath,
    modules: &BTreeSet<ModPath>,
    reexports: &BTreeMap<(ModPath, String), RawPath>,
    hops: usize,
) -> ModPath {
    let mut target = match raw.anchor {
        Anchor::Crate => Vec::new(),
        Anchor::SelfModule => raw.scope.clone(),
        Anchor::Super(n) => raw.scope[..raw.scope.len().saturating_sub(n)].to_vec(),
    };
    for segment in &raw.segments {
        let mut child = target.clone();
        child.push(segment.clone());
        if modules.contains(&child) {
            target = child;
            continue;
        }
        if hops > 0
            && let Some(origin) = reexports.get(&(target.clone(), segment.clone()))
        {
            target = resolve(origin, modules, reexports, hops - 1);
        }
        break;
    }
    target
}

/// Resolves every path and lifts each reference to the pair of siblings under the two
/// modules' deepest common ancestor.
fn sibling_edges(files: &[SourceFile]) -> Edges {
    let scans: Vec<FileScan> = files.iter().map(scan).collect();
    let mut modules: BTreeSet<ModPath> = files.iter().map(|f| f.module.clone()).collect();
    for scan in &scans {
        modules.extend(scan.inline_modules.iter().cloned());
    }
    let mut reexports = BTreeMap::new();
    for scan in &scans {
        for (name, origin) in &scan.reexports {
            reexports.insert((origin.scope.clone(), name.clone()), origin.clone());
        }
    }
    let mut edges = Edges::new();
    for (file, scan) in files.iter().zip(&scans) {
        for raw in &scan.paths {
            let target = resolve(raw, &modules, &reexports, 4);
            let from = &raw.scope;
            let common = from.iter().zip(&target).take_while(|(a, b)| a == b).count();
            if common == from.len() || common == target.len() {
                // An ancestor, a descendant or itself.
                continue;
            }
            let key = (from[..=common].to_vec(), target[..=common].to_vec());
            edges.entry(key).or_insert_with(|| Witness {
                file: file.display.clone(),
                line: raw.line,
                path: format!("{} (in {})", show(&target), show(from)),
            });
        }
    }
    edges
}

type Graph<'a> = BTreeMap<&'a ModPath, Vec<&'a ModPath>>;

/// The modules `start` reaches, itself included.
fn reachable<'a>(graph: &Graph<'a>, start: &'a ModPath) -> BTreeSet<&'a ModPath> {
    let mut seen = BTreeSet::from([start]);
    let mut pending = vec![start];
    while let Some(node) = pending.pop() {
        for &to in graph.get(node).into_iter().flatten() {
            if seen.insert(to) {
                pending.push(to);
            }
        }
    }
    seen
}

/// The shortest way from `start` back to itself, `start` first and last.
fn shortest_cycle<'a>(graph: &Graph<'a>, start: &'a ModPath) -> Option<Vec<&'a ModPath>> {
    let mut previous: BTreeMap<&ModPath, &ModPath> = BTreeMap::new();
    let mut frontier = vec![start];
    while !frontier.is_empty() {
        let mut next = Vec::new();
        for node in frontier {
            for &to in graph.get(node).into_iter().flatten() {
                if to == start {
                    let mut cycle = vec![start];
                    let mut at = node;
                    while at != start {
                        cycle.push(at);
                        at = previous[at];
                    }
                    cycle[1..].reverse();
                    cycle.push(start);
                    return Some(cycle);
                }
                if !previous.contains_key(to) {
                    previous.insert(to, node);
                    next.push(to);
                }
            }
        }
        frontier = next;
    }
    None
}

/// One text per group of siblings that reach each other (a strongly connected group):
/// its shortest cycle with the reference behind each step, and every member.
fn cycles(edges: &Edges) -> Vec<String> {
    let mut graph = Graph::new();
    for (from, to) in edges.keys() {
        graph.entry(from).or_default().push(to);
    }
    let reach: BTreeMap<&ModPath, BTreeSet<&ModPath>> = graph
        .keys()
        .map(|&node| (node, reachable(&graph, node)))
        .collect();
    let mut grouped: BTreeSet<&ModPath> = BTreeSet::new();
    let mut found = Vec::new();
    for &start in graph.keys() {
        if grouped.contains(start) {
            continue;
        }
        let group: Vec<&ModPath> = reach[start]
            .iter()
            .copied()
            .filter(|&other| reach.get(other).is_some_and(|r| r.contains(start)))
            .collect();
        grouped.extend(group.iter().copied());
        let Some(cycle) = group
            .iter()
            .filter_map(|&node| shortest_cycle(&graph, node))
            .min_by_key(Vec::len)
        else {
            continue;
        };
        let name = |m: &ModPath| m[m.len() - 1].clone();
        let names: Vec<String> = cycle.iter().map(|m| name(m)).collect();
        let mut text = format!(
            "cycle under `{}`: {}",
            show(&start[..start.len() - 1]),
            names.join(" -> ")
        );
        for (k, pair) in cycle.windows(2).enumerate() {
            let witness = &edges[&(pair[0].clone(), pair[1].clone())];
            let _ = write!(
                text,
                "\n    {} -> {}: {}:{} names {}",
                names[k],
                names[k + 1],
                witness.file,
                witness.line,
                witness.path
            );
        }
        if group.len() + 1 > cycle.len() {
            let members: Vec<String> = group.iter().map(|m| name(m)).collect();
            let _ = write!(
                text,
                "\n    (all of {} reach each other)",
                members.join(", ")
            );
        }
        found.push(text);
    }
    found
}

/// Reads a crate's module tree by following `mod name;` from its root file; files are
/// shown relative to `base`.
fn load_crate(root_file: &Path, base: &Path) -> Vec<SourceFile> {
    let mut files = Vec::new();
    let mut pending: Vec<(ModPath, PathBuf)> = vec![(Vec::new(), root_file.to_path_buf())];
    while let Some((module, path)) = pending.pop() {
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let file = SourceFile {
            module: module.clone(),
            display: path
                .strip_prefix(base)
                .unwrap_or(&path)
                .display()
                .to_string(),
            text,
        };
        // lib.rs, main.rs and mod.rs keep their children beside them; `name.rs` keeps
        // them in `name/`.
        let dir = path.parent().unwrap_or(Path::new("."));
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let children_dir = if module.is_empty() || stem == "mod" {
            dir.to_path_buf()
        } else {
            dir.join(stem)
        };
        for child in scan(&file).file_children {
            let flat = children_dir.join(format!("{child}.rs"));
            let nested = children_dir.join(&child).join("mod.rs");
            let child_path = if flat.exists() { flat } else { nested };
            let mut child_module = module.clone();
            child_module.push(child);
            pending.push((child_module, child_path));
        }
        files.push(file);
    }
    files
}

/// Fails naming every cycle in the crate whose root file is `root` (relative to the
/// workspace).
fn assert_no_cycle(root: &str) {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let files = load_crate(&workspace.join(root), &workspace);
    assert!(files.len() > 1, "{root} declares no module");
    let found = cycles(&sibling_edges(&files));
    assert!(
        found.is_empty(),
        "module cycles in the crate of {root} (break each by moving what both sides \
         need into a module that names neither, or by turning one reference around):\n{}",
        found.join("\n")
    );
}

#[test]
fn actors_crate_has_no_module_cycle() {
    assert_no_cycle("actors/src/lib.rs");
}

#[test]
fn binary_crate_has_no_module_cycle() {
    assert_no_cycle("src/main.rs");
}

/// Builds an in-memory crate from `("a::b", source)` pairs (`""` is the root).
fn sources(modules: &[(&str, &str)]) -> Vec<SourceFile> {
    modules
        .iter()
        .map(|(module, text)| SourceFile {
            module: module
                .split("::")
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            display: format!("{module}.rs"),
            text: text.to_string(),
        })
        .collect()
}

/// The one cycle reported for `files`.
fn only_cycle(files: &[SourceFile]) -> String {
    let mut found = cycles(&sibling_edges(files));
    assert_eq!(found.len(), 1, "{found:?}");
    found.remove(0)
}

#[test]
fn a_cycle_between_subtrees_is_named_at_their_level() {
    let files = sources(&[
        ("", "mod metrics; mod smtp;"),
        ("metrics", "use crate::smtp::session::ListenerKind;"),
        ("smtp", "pub mod session;"),
        ("smtp::session", "fn f() { crate::metrics::record(); }"),
    ]);
    let found = only_cycle(&files);
    assert!(
        found.starts_with("cycle under `crate`: metrics -> smtp -> metrics"),
        "{found}"
    );
    assert!(
        found.contains("smtp::session.rs:1 names metrics"),
        "{found}"
    );
}

#[test]
fn super_paths_and_use_groups_resolve_to_siblings() {
    let files = sources(&[
        ("smtp", "mod listener; mod session;"),
        (
            "smtp::listener",
            "use super::{session::{self, Session}, proto};",
        ),
        (
            "smtp::session",
            "fn f() -> super::listener::Phase { todo!() }",
        ),
    ]);
    let found = only_cycle(&files);
    assert!(
        found.starts_with("cycle under `smtp`: listener -> session -> listener"),
        "{found}"
    );
}

#[test]
fn parents_children_comments_and_strings_are_not_cycles() {
    let files = sources(&[
        ("", "mod storage; mod health;"),
        (
            "storage",
            "pub mod actor; pub use actor::StorageActor; // crate::health::x\n\
             const S: &str = \"crate::health::y\"; const R: &str = r#\"super::health\"#;",
        ),
        (
            "storage::actor",
            "use super::*; use crate::health::Report;\n\
             #[cfg(test)] mod tests { use super::super::StorageActor; fn f<'a>(c: char) { let _ = '\"'; } }",
        ),
        (
            "health",
            "pub struct Report; fn f() { let _ = \"crate::storage\"; }",
        ),
    ]);
    let found = cycles(&sibling_edges(&files));
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn names_reexported_by_a_parent_resolve_to_their_origin() {
    let files = sources(&[
        (
            "hooks",
            "mod dispatcher; mod test_call; pub use test_call::{ManualClock, TestFailure};",
        ),
        (
            "hooks::dispatcher",
            "#[cfg(test)] mod tests { use crate::hooks::TestFailure; }",
        ),
        ("hooks::test_call", "use super::dispatcher::HookDispatcher;"),
    ]);
    let found = only_cycle(&files);
    assert!(
        found.starts_with("cycle under `hooks`: dispatcher -> test_call -> dispatcher"),
        "{found}"
    );
}
