//! The learner's modules depend on each other without cycles, and candle appears only in the candle backend.
//! The graph is read from the sources (`crate::<module>` paths outside test code) and printed, so a run with
//! `--nocapture` shows it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Where the candle crates may be named.
const CANDLE_HOME: &str = "update/backend/candle/";

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The file's code without its unit-test module (everything from `#[cfg(test)]` followed by `mod tests`).
fn non_test_code(text: &str) -> &str {
    let mut rest = text;
    let mut at = 0;
    while let Some(i) = rest.find("#[cfg(test)]") {
        let after = rest[i..].lines().skip(1).find(|l| !l.trim_start().starts_with("#["));
        if after.is_some_and(|l| l.trim_start().trim_start_matches("pub(crate) ").starts_with("mod tests")) {
            return &text[..at + i];
        }
        at += i + 1;
        rest = &rest[i + 1..];
    }
    text
}

/// Files declared as test-only modules (`#[cfg(test)] mod name;`), by module name.
fn test_only_modules(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    lines
        .windows(2)
        .filter(|w| w[0].trim() == "#[cfg(test)]")
        .filter_map(|w| w[1].trim().strip_prefix("mod ")?.strip_suffix(';').map(str::to_string))
        .collect()
}

/// Top-level module -> the top-level modules it names, and the files that name candle.
fn graph(src: &Path) -> (BTreeMap<String, BTreeSet<String>>, Vec<String>) {
    let mut files = Vec::new();
    sources(src, &mut files);
    let test_only: BTreeSet<String> =
        files.iter().flat_map(|f| test_only_modules(&std::fs::read_to_string(f).unwrap())).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut candle = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(src).unwrap().to_string_lossy().replace('\\', "/");
        let stem = file.file_stem().unwrap().to_string_lossy().to_string();
        let top = rel.split('/').next().unwrap().trim_end_matches(".rs").to_string();
        if ["lib", "test_support"].contains(&top.as_str()) || test_only.contains(&stem) {
            continue;
        }
        let full = std::fs::read_to_string(file).unwrap();
        let code = non_test_code(&full);
        for (i, _) in code.match_indices("crate::") {
            let name: String = code[i + 7..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
            if !name.is_empty() && name != top {
                edges.entry(top.clone()).or_default().insert(name);
            }
        }
        if (code.contains("candle_core") || code.contains("candle_nn")) && !rel.starts_with(CANDLE_HOME) {
            candle.push(rel);
        }
        edges.entry(top).or_default();
    }
    (edges, candle)
}

/// A cycle through `graph`, if any (depth-first search).
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn learner_modules_form_no_cycle_and_candle_stays_in_its_folder() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let (edges, candle) = graph(&src);
    for (from, to) in &edges {
        println!("{from} -> {}", to.iter().cloned().collect::<Vec<_>>().join(", "));
    }
    assert!(edges.contains_key("config") && edges.contains_key("update"), "the scan found the modules: {edges:?}");
    assert_eq!(find_cycle(&edges), None, "module cycle");
    assert!(candle.is_empty(), "candle named outside {CANDLE_HOME}: {candle:?}");
}

/// The check finds a cycle and a stray candle use when there is one.
#[test]
fn the_check_sees_cycles() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("config".into()).or_default().insert("server".into());
    g.entry("server".into()).or_default().insert("run".into());
    assert_eq!(find_cycle(&g), None);
    g.entry("run".into()).or_default().insert("config".into());
    assert_eq!(find_cycle(&g).unwrap(), ["config", "server", "run", "config"]);
    let text = "use crate::a;\n#[cfg(test)]\n#[allow(x)]\nmod tests {\n use crate::b;\n}\n";
    assert_eq!(non_test_code(text), "use crate::a;\n");
    assert_eq!(test_only_modules("#[cfg(test)]\nmod flood;\n"), ["flood"]);
}
