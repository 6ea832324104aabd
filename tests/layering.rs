//! The module graph has no import circle (issue 13): for every top-level module of `src/`,
//! who it names through `crate::`, and no module reaches itself again through those names.
//!
//! A circle means two modules can only be understood (and changed) together; breaking one
//! moves the shared type down into a lower module that both use (see `schema`).
//!
//! What counts as an edge: every `crate::NAME` path in a module's files (`use` lines, paths
//! in code, `use crate::{a::X, b}` groups), at top-level-module granularity (`input/detect.rs`
//! is `input`). Not counted: comments and string literals, items under `#[cfg(test)]` and
//! files named `tests.rs` (test code may reach anywhere), `lib.rs` and the binaries (the root
//! names everything). A name the root re-exports (`crate::Exit`) counts as its module.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

/// Edges left in on purpose, each with the change that removes it. An entry whose edge is
/// gone fails the test, so the list cannot go stale.
const ALLOWED: &[(&str, &str, &str)] = &[];

/// One edge: `from` names `to`, first seen at `at` (file:line).
type Graph = BTreeMap<String, BTreeMap<String, String>>;

#[test]
fn the_module_graph_has_no_import_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph = module_graph(&src);
    assert!(
        graph
            .get("validate")
            .is_some_and(|to| to.contains_key("store"))
            && graph.values().map(BTreeMap::len).sum::<usize>() > 40,
        "the parser found too few edges to be reading the sources: {graph:#?}"
    );
    for (from, to, why) in ALLOWED {
        let edge = graph.get_mut(*from).and_then(|edges| edges.remove(*to));
        assert!(
            edge.is_some(),
            "{from} -> {to} is allowed ({why}) but no longer exists: delete its ALLOWED entry"
        );
    }
    let circles = circles(&graph);
    assert!(
        circles.is_empty(),
        "import circles in src/ (each edge with where it is named):\n{}",
        circles.join("\n")
    );
}

/// The checker itself: it finds the names a real file would use, and nothing in comments,
/// strings or test code, and it reports a circle.
#[test]
fn the_layering_check_sees_through_groups_and_skips_tests_comments_and_strings() {
    let text = r####"
        //! See [`crate::doc_only`].
        use crate::{a::X, b, c::{self, Y}};
        use crate::d;
        pub(crate) fn f() -> crate::e::T { let _ = "crate::in_string"; let _ = r#"crate::raw"#; let _ = '"'; crate::f::g() }
        /* crate::block_comment */
        fn lifetime<'a>(x: &'a str) -> &'a str { x }
        #[cfg(test)]
        mod tests { use crate::test_only; fn h() { let _ = '{'; } }
        #[cfg(test)]
        use crate::test_use;
        fn after() { crate::g::h(); $crate::macro_path::x(); }
    "####;
    let names: Vec<String> = names(&without_tests(&code_only(text)))
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["a", "b", "c", "d", "e", "f", "g"]);

    let mut graph = Graph::new();
    for (from, to) in [("x", "y"), ("y", "z"), ("z", "x"), ("z", "w")] {
        graph
            .entry(from.into())
            .or_default()
            .insert(to.into(), format!("{from}.rs:1"));
    }
    let found = circles(&graph);
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(found[0].starts_with("x -> y (x.rs:1) -> z (y.rs:1) -> x (z.rs:1)"));
}

/// Every top-level module and the modules it names, with where each edge was first seen.
fn module_graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    walk(src, &mut files);
    files.sort();
    let module_of = |path: &Path| -> String {
        let rel = path.strip_prefix(src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        first.trim_end_matches(".rs").to_string()
    };
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(f)).collect();
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let reexports = reexports(&code_only(&lib));
    let mut graph = Graph::new();
    for file in &files {
        let module = module_of(file);
        let stem = file.file_stem().unwrap().to_string_lossy();
        if ["lib", "main", "bin"].contains(&module.as_str()) || stem == "tests" {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        let edges = graph.entry(module.clone()).or_default();
        for (name, line) in names(&without_tests(&code_only(&text))) {
            let to = if modules.contains(&name) {
                name
            } else if let Some(to) = reexports.get(&name) {
                to.clone()
            } else {
                continue; // a function of the root, such as `crate::run`
            };
            if to != module {
                let at = format!("{}:{line}", file.strip_prefix(src).unwrap().display());
                edges.entry(to).or_insert(at);
            }
        }
    }
    graph
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// Each circle, as one line per edge that lies on one: the edge, then the shortest way back.
fn circles(graph: &Graph) -> Vec<String> {
    let mut out = Vec::new();
    for (from, edges) in graph {
        for (to, at) in edges {
            if let Some(back) = path(graph, to, from) {
                let mut line = format!("{from} -> {to} ({at})");
                for pair in back.windows(2) {
                    line += &format!(" -> {} ({})", pair[1], graph[&pair[0]][&pair[1]]);
                }
                out.push(line);
            }
        }
    }
    out
}

/// The shortest path of modules from `start` to `goal`, both included.
fn path(graph: &Graph, start: &str, goal: &str) -> Option<Vec<String>> {
    let mut came_from: BTreeMap<String, String> = BTreeMap::new();
    let mut queue = VecDeque::from([start.to_string()]);
    while let Some(at) = queue.pop_front() {
        if at == goal {
            let mut path = vec![at];
            while let Some(prev) = came_from.get(path.last().unwrap()) {
                path.push(prev.clone());
            }
            path.reverse();
            return Some(path);
        }
        for next in graph.get(&at).into_iter().flat_map(BTreeMap::keys) {
            if next != start && !came_from.contains_key(next) {
                came_from.insert(next.clone(), at.clone());
                queue.push_back(next.clone());
            }
        }
    }
    None
}

/// The source with comments, string and character literals blanked (line breaks kept, so
/// line numbers still hold).
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |out: &mut String, c: char| out.push(if c == '\n' { '\n' } else { ' ' });
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
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
                    blank(&mut out, chars[i]);
                    i += 1;
                }
            }
        } else if c == 'r'
            && matches!(next, Some('"' | '#'))
            && (i == 0
                || !ident(chars[i - 1])
                || (chars[i - 1] == 'b' && (i < 2 || !ident(chars[i - 2]))))
            && chars[i + 1..].iter().find(|&&c| c != '#') == Some(&'"')
        {
            let hashes = chars[i + 1..].iter().take_while(|&&c| c == '#').count();
            i += 2 + hashes;
            let closing: Vec<char> = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            while i < chars.len() && !chars[i..].starts_with(&closing) {
                blank(&mut out, chars[i]);
                i += 1;
            }
            i += closing.len();
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                if let Some(&c) = chars.get(i) {
                    blank(&mut out, c);
                }
                i += 1;
            }
            i += 1;
        } else if c == '\'' && next == Some('\\') {
            // '\n', '\'', '\u{..}'
            i += 3;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
        } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
            i += 3; // 'x'
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// `code` without the items under `#[cfg(test)]`: from the attribute to the end of the item
/// (its closing brace, or its `;` when that comes first).
fn without_tests(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let item = &rest[at..];
        let mut depth = 0;
        let mut end = item.len();
        for (i, c) in item.char_indices() {
            match c {
                ';' if depth == 0 => {
                    end = i + 1;
                    break;
                }
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        // Keep the line breaks, so line numbers after the item still hold.
        out.extend(item[..end].chars().filter(|&c| c == '\n'));
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

/// The first segment of every `crate::` path in `code`, with its line (1-based); a group
/// `crate::{a::X, b}` gives each of its members.
fn names(code: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(found) = code[from..].find("crate::") {
        let at = from + found;
        from = at + "crate::".len();
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$' || c == ':') {
            continue;
        }
        let line = code[..at].matches('\n').count() + 1;
        let rest = code[from..].trim_start();
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut member = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.extend(first_ident(&member).map(|n| (n, line)));
                        member.clear();
                        continue;
                    }
                    _ => {}
                }
                member.push(c);
            }
            out.extend(first_ident(&member).map(|n| (n, line)));
        } else {
            out.extend(first_ident(rest).map(|n| (n, line)));
        }
    }
    out
}

fn first_ident(text: &str) -> Option<String> {
    let ident: String = text
        .trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!ident.is_empty() && ident != "self").then_some(ident)
}

/// What the root re-exports: item name -> the module it comes from (`pub use exit::Exit;`).
fn reexports(lib: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for statement in lib.split(';') {
        let Some(path) = statement.trim().strip_prefix("pub use ") else {
            continue;
        };
        let path = path.trim().trim_start_matches("crate::");
        let Some((module, items)) = path.split_once("::") else {
            continue;
        };
        let items = items.trim().trim_start_matches('{').trim_end_matches('}');
        for item in items.split(',') {
            // `run as validate`: the name callers use is the last word.
            if let Some(name) = item.split_whitespace().last() {
                out.insert(name.to_string(), module.to_string());
            }
        }
    }
    out
}
