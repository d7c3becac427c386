//! Dependencies point one way. Reads the sources of `src/` and `media/src/`, collects which
//! module refers to which (`crate::x`, `use crate::{x, y}`, `gateway::x` in `main.rs`), and
//! fails on an import cycle, naming it, and on a `src/` module that reaches above its layer
//! (ARCHITECTURE.md draws the same layers).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// `src/` from the top: a module may use modules of lower layers only.
const LAYERS: &[&[&str]] = &[
    &["main"],
    &["ws", "api"],
    &["app"],
    &["call"],
    &["sip"],
    &["directory"],
    &["protocol", "limits", "tls", "listener"],
    &["config", "metrics"],
    &["auth"],
];

/// module -> (module it uses -> where, for the message)
type Graph = BTreeMap<String, BTreeMap<String, String>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read source dir").flatten() {
        let p = entry.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file belongs to: `src/call/driver.rs` -> `call`, `src/config.rs`
/// -> `config`.
fn module_of(root: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(root).expect("under root");
    let first = rel.components().next().expect("a component");
    let name = first.as_os_str().to_string_lossy();
    name.strip_suffix(".rs").unwrap_or(&name).to_string()
}

/// Code without comments, so prose naming `crate::x` does not count.
fn code_of(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first identifier of each top-level item of a `{a::b, c, d::{e, f}}` group.
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let (mut depth, mut item) = (0, String::new());
    for ch in group.chars() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                heads.push(std::mem::take(&mut item));
                continue;
            }
            _ => {}
        }
        item.push(ch);
    }
    heads.push(item);
    heads
        .iter()
        .filter_map(|h| {
            let id: String = h
                .trim()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            (!id.is_empty()).then_some(id)
        })
        .collect()
}

/// Every module named after `prefix` (`crate::`, `gateway::`) in `code`.
fn references(code: &str, prefix: &str) -> Vec<(String, usize)> {
    let mut found = Vec::new();
    let mut rest = code;
    let mut offset = 0;
    while let Some(i) = rest.find(prefix) {
        let before = code[..offset + i].chars().last();
        let after = &rest[i + prefix.len()..];
        let line = code[..offset + i].matches('\n').count() + 1;
        if !before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            if let Some(group) = after.strip_prefix('{') {
                let mut depth = 1;
                let end = group
                    .char_indices()
                    .find(|&(_, c)| {
                        match c {
                            '{' => depth += 1,
                            '}' => depth -= 1,
                            _ => {}
                        }
                        depth == 0
                    })
                    .map_or(group.len(), |(j, _)| j);
                for head in group_heads(&group[..end]) {
                    found.push((head, line));
                }
            } else {
                let id: String = after
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !id.is_empty() {
                    found.push((id, line));
                }
            }
        }
        offset += i + prefix.len();
        rest = &code[offset..];
    }
    found
}

fn graph(root: &Path, binary_prefix: Option<&str>) -> Graph {
    let mut files = Vec::new();
    rust_files(root, &mut files);
    let mut g = Graph::new();
    for file in files {
        let from = module_of(root, &file);
        if from == "lib" {
            continue;
        }
        let code = code_of(&std::fs::read_to_string(&file).expect("read source"));
        let mut refs = references(&code, "crate::");
        if let Some(prefix) = binary_prefix.filter(|_| from == "main") {
            refs.extend(references(&code, prefix));
        }
        let edges = g.entry(from.clone()).or_default();
        for (to, line) in refs {
            if to != from && to != "self" && to != "super" {
                let rel = file
                    .strip_prefix(root)
                    .unwrap_or(&file)
                    .display()
                    .to_string();
                edges.entry(to).or_insert(format!("{rel}:{line}"));
            }
        }
    }
    g
}

/// A cycle, as the modules on it, if there is one.
fn find_cycle(g: &Graph) -> Option<Vec<String>> {
    fn visit(
        g: &Graph,
        m: &str,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == m) {
            let mut cycle = stack[i..].to_vec();
            cycle.push(m.to_string());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        stack.push(m.to_string());
        for next in g.get(m).into_iter().flat_map(|e| e.keys()) {
            if let Some(c) = visit(g, next, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|m| visit(g, m, &mut Vec::new(), &mut done))
}

fn explain(g: &Graph, cycle: &[String]) -> String {
    cycle
        .windows(2)
        .map(|w| format!("{} -> {} ({})", w[0], w[1], g[&w[0]][&w[1]]))
        .collect::<Vec<_>>()
        .join("\n  ")
}

fn root(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

#[test]
fn no_import_cycle_in_the_gateway_or_the_media_crate() {
    for (dir, prefix) in [("src", Some("gateway::")), ("media/src", None)] {
        let g = graph(&root(dir), prefix);
        assert!(g.len() > 5, "{dir}: read {} modules", g.len());
        if let Some(cycle) = find_cycle(&g) {
            panic!("{dir}: import cycle:\n  {}", explain(&g, &cycle));
        }
    }
}

#[test]
fn gateway_modules_use_only_lower_layers() {
    let layer_of = |m: &str| LAYERS.iter().position(|l| l.contains(&m));
    let g = graph(&root("src"), Some("gateway::"));
    let mut wrong = Vec::new();
    for (from, edges) in &g {
        let Some(mine) = layer_of(from) else {
            wrong.push(format!("{from}: in no layer of tests/it/layers.rs"));
            continue;
        };
        for (to, at) in edges {
            match layer_of(to) {
                Some(theirs) if theirs > mine => {}
                Some(_) => wrong.push(format!("{from} uses {to}, not below it ({at})")),
                None => wrong.push(format!("{to} (used at {at}) is in no layer")),
            }
        }
    }
    assert!(wrong.is_empty(), "layering:\n  {}", wrong.join("\n  "));
}

#[test]
fn the_checker_sees_groups_paths_and_cycles() {
    let code = code_of(
        "use crate::{a::B, c, d::{e, f}};\nlet x = crate::g::h(); // crate::comment\nfoocrate::no",
    );
    let names: Vec<String> = references(&code, "crate::")
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(names, ["a", "c", "d", "g"]);
    let mut g = Graph::new();
    g.entry("a".into())
        .or_default()
        .insert("b".into(), "x".into());
    g.entry("b".into())
        .or_default()
        .insert("c".into(), "y".into());
    assert_eq!(find_cycle(&g), None);
    g.entry("c".into())
        .or_default()
        .insert("a".into(), "z".into());
    assert_eq!(
        find_cycle(&g),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}
