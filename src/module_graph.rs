//! Test-only: the library's top-level modules import each other in one direction (no cycles), so that data and
//! dependencies flow one way (socket → parse → route → deliver → socket) and each module can be read, tested
//! and changed on its own terms.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module → the top-level modules its non-test code names through `crate::`.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap();
            let top = rel.components().next().unwrap().as_os_str().to_str().unwrap();
            let top = top.trim_end_matches(".rs").to_owned();
            if top == "lib" || top == "module_graph" || path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            // Test modules may reach anywhere; only what ships counts.
            let code = text.split("#[cfg(test)]").next().unwrap();
            let deps = graph.entry(top.clone()).or_default();
            for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for (i, _) in line.match_indices("crate::") {
                    let name: String = line[i + 7..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if name != top && name.chars().next().is_some_and(|c| c.is_ascii_lowercase()) {
                        deps.insert(name);
                    }
                }
            }
        }
    }
    graph
}

/// A cycle through `from`, if any (depth-first search).
fn cycle_from(
    graph: &BTreeMap<String, BTreeSet<String>>,
    from: &str,
    path: &mut Vec<String>,
    done: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    if let Some(at) = path.iter().position(|m| m == from) {
        let mut cycle = path[at..].to_vec();
        cycle.push(from.to_owned());
        return Some(cycle);
    }
    if done.contains(from) {
        return None;
    }
    path.push(from.to_owned());
    for dep in graph.get(from).into_iter().flatten() {
        if let Some(cycle) = cycle_from(graph, dep, path, done) {
            return Some(cycle);
        }
    }
    path.pop();
    done.insert(from.to_owned());
    None
}

#[test]
fn the_library_modules_import_each_other_without_cycles() {
    let graph = graph();
    assert!(
        graph.contains_key("connection") && graph.contains_key("server"),
        "{graph:?}"
    );
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        if let Some(cycle) = cycle_from(&graph, module, &mut Vec::new(), &mut done) {
            panic!("import cycle: {}", cycle.join(" → "));
        }
    }
}

#[test]
fn the_pure_modules_depend_on_no_runtime_module() {
    let graph = graph();
    let runtime = [
        "connection",
        "server",
        "shared",
        "registry",
        "mailbox",
        "bus",
        "api",
        "admin",
    ];
    for pure in ["protocol", "crypto", "limits", "config", "redact"] {
        let deps = graph.get(pure).cloned().unwrap_or_default();
        for r in runtime {
            assert!(!deps.contains(r), "{pure} imports {r}");
        }
    }
}
