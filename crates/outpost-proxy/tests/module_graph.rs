//! The request path's modules form a layered graph: no module imports one that (directly or
//! through others) imports it back. Checked from the sources, so a cycle fails CI where it is
//! introduced.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

/// `crate::x` references of every module in src/ (re-exports of `node` count as `node`).
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
    let mut mods = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("rs") {
            continue;
        }
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        if name == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mut deps = BTreeSet::new();
        let mut rest = text.as_str();
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + 7..];
            let id: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let id = match id.as_str() {
                "Node" | "NodeOptions" | "ConfigSnapshot" => "node".to_string(),
                _ => id,
            };
            if id != name {
                deps.insert(id);
            }
        }
        // `use crate::{a, b::c}` groups.
        for group in text.split("use crate::{").skip(1) {
            let inner = group.split('}').next().unwrap_or("");
            for item in inner.split(',') {
                let id = item.trim().split("::").next().unwrap_or("").to_string();
                let id = if id == "Node" { "node".to_string() } else { id };
                if !id.is_empty() && id != name {
                    deps.insert(id);
                }
            }
        }
        mods.insert(name, deps);
    }
    let names: BTreeSet<String> = mods.keys().cloned().collect();
    for deps in mods.values_mut() {
        deps.retain(|d| names.contains(d));
    }
    mods
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let g = graph();
    assert!(g.len() > 10, "modules found: {:?}", g.keys());
    // Depth-first search for a back edge.
    fn visit(
        m: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(m.to_string(), 1);
        stack.push(m.to_string());
        for d in &g[m] {
            match state.get(d.as_str()).copied().unwrap_or(0) {
                1 => {
                    let start = stack.iter().position(|s| s == d).unwrap_or(0);
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(d.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(d, g, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(m.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in g.keys() {
        if state.get(m.as_str()).copied().unwrap_or(0) == 0 {
            let cycle = visit(m, &g, &mut state, &mut Vec::new());
            assert!(
                cycle.is_none(),
                "import cycle: {}",
                cycle.unwrap().join(" -> ")
            );
        }
    }
}
