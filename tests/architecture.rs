//! The house rules of docs/DESIGN.md ("Layers"), read from the source: data flows one way, so
//! imports do too. A module may import only modules of its own layer or below, no import circle
//! exists, and the stage steps (the `impl Session` blocks in `checks/`) never import each other.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Layer of each module above the ground floor (vocabulary, engines, protocol, store, log).
const LAYERS: &[(&str, u8)] = &[
    ("config", 1),
    ("config::values", 1),
    ("config::smtpf", 1),
    ("config::import", 1),
    ("policy", 2),
    ("shared", 3),
    ("session", 4),
    ("checks::listing", 5),
    ("checks::mx", 5),
    ("checks::greylist", 5),
    ("checks::dupmsg", 5),
    ("checks::uribl", 5),
    ("server", 6),
    ("policy_door", 6),
    ("admin", 6),
    ("manpages", 6),
    ("metrics_http", 6),
    ("report", 6),
    ("daemon", 7),
];

fn layer(module: &str) -> u8 {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l).unwrap_or(0)
}

/// Every library module (`a::b`) with its source file, tests excluded.
fn modules() -> BTreeMap<String, String> {
    fn walk(dir: &Path, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if !path.ends_with("bin") {
                    walk(&path, out);
                }
                continue;
            }
            let rel = path.strip_prefix("src").unwrap().with_extension("");
            let rel = rel.to_string_lossy().to_string();
            if rel == "lib" || rel == "main" {
                continue;
            }
            let name = rel.trim_end_matches("/mod").replace('/', "::");
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or("").to_string();
            out.insert(name, code);
        }
    }
    let mut out = BTreeMap::new();
    walk(Path::new("src"), &mut out);
    out
}

/// The modules a source text names through `crate::` paths (in `use` lines, braces expanded, and
/// inline), comments ignored.
fn imports(code: &str, known: &BTreeSet<String>, me: &str) -> BTreeSet<String> {
    let code: String = code.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
    // `super::x` names a sibling of this module (or of this file's own module for `mod.rs`
    // files, which the caller folds into the parent name): written as `crate::parent::x`.
    let parent = me.rsplit_once("::").map(|(p, _)| p).unwrap_or("");
    let code = code.replace("super::", &if parent.is_empty() { "crate::".to_string() } else { format!("crate::{parent}::") });
    let mut paths = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':' || c == '{')).unwrap_or(rest.len());
        let head = &rest[..end];
        match head.find('{') {
            // `crate::a::{b, c::D}`: every item inside the braces, one level deep is enough here.
            Some(b) => {
                let close = rest[b..].find('}').map(|c| b + c).unwrap_or(rest.len());
                for item in rest[b + 1..close].split(',') {
                    let item: String = item.chars().filter(|c| !c.is_whitespace()).collect();
                    paths.push(format!("{}{}", &head[..b], item.trim_start_matches('{')));
                }
            }
            None => paths.push(head.to_string()),
        }
    }
    let mut out = BTreeSet::new();
    for p in paths {
        let segs: Vec<&str> = p.split("::").filter(|s| !s.is_empty()).collect();
        for k in (1..=segs.len()).rev() {
            let cand = segs[..k].join("::");
            if known.contains(&cand) {
                if cand != me && !me.starts_with(&format!("{cand}::")) {
                    out.insert(cand);
                }
                break;
            }
        }
    }
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mods = modules();
    let known: BTreeSet<String> = mods.keys().cloned().collect();
    mods.iter().map(|(m, code)| (m.clone(), imports(code, &known, m))).collect()
}

#[test]
fn the_graph_is_read() {
    let g = graph();
    // Sanity: the reader sees the imports it must see, or the rules below would pass vacuously.
    assert!(g["session"].contains("policy"), "{:?}", g["session"]);
    assert!(g["checks::greylist"].contains("session"));
    assert!(g["daemon"].contains("server"));
    assert!(g.len() > 30);
}

#[test]
fn no_upward_import() {
    let mut bad = Vec::new();
    for (m, deps) in graph() {
        for d in deps {
            if layer(&d) > layer(&m) {
                bad.push(format!("{m} (layer {}) imports {d} (layer {})", layer(&m), layer(&d)));
            }
        }
    }
    assert!(bad.is_empty(), "upward imports:\n{}", bad.join("\n"));
}

#[test]
fn stage_steps_do_not_import_each_other() {
    let g = graph();
    for (m, _) in LAYERS.iter().filter(|(_, l)| *l == 5) {
        for d in &g[*m] {
            assert_ne!(layer(d), 5, "{m} imports {d}: share through a vocabulary module instead");
        }
    }
}

#[test]
fn no_import_circle() {
    let g = graph();
    // Depth-first search with colours; a grey node reached again closes a circle.
    fn visit<'a>(
        n: &'a str,
        g: &'a BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<&'a str, u8>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match state.get(n) {
            Some(1) => {
                let from = path.iter().position(|p| *p == n).unwrap();
                return Some(path[from..].iter().map(|s| s.to_string()).chain([n.to_string()]).collect());
            }
            Some(_) => return None,
            None => {}
        }
        state.insert(n, 1);
        path.push(n);
        for d in &g[n] {
            if let Some(c) = visit(d, g, state, path) {
                return Some(c);
            }
        }
        path.pop();
        state.insert(n, 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in g.keys() {
        if let Some(circle) = visit(n, &g, &mut state, &mut Vec::new()) {
            panic!("import circle: {}", circle.join(" -> "));
        }
    }
}

#[test]
fn the_design_module_table_matches_the_tree() {
    let design = std::fs::read_to_string("docs/DESIGN.md").unwrap();
    let table = design.split("## Modules").nth(1).and_then(|t| t.split("\n## ").next()).expect("a Modules section");
    let named: Vec<String> = table.split('`').skip(1).step_by(2).map(str::to_string).collect();
    // Every file of the tree is named, itself or through its directory (`store/`).
    fn files(dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files(&path, out);
            } else {
                out.push(path.strip_prefix("src").unwrap().to_string_lossy().to_string());
            }
        }
    }
    let mut tree = Vec::new();
    files(Path::new("src"), &mut tree);
    for file in tree.iter().filter(|f| !matches!(f.as_str(), "lib.rs" | "main.rs")) {
        // A directory's mod.rs only declares what the table lists inside it.
        let dir_of_mod = file.strip_suffix("mod.rs");
        let covered = named.iter().any(|n| {
            n == file || (n.ends_with('/') && file.starts_with(n.as_str())) || dir_of_mod.is_some_and(|d| n.starts_with(d))
        });
        assert!(covered, "src/{file} is not in docs/DESIGN.md's module table");
    }
    // And every path the table names exists.
    for n in named.iter().filter(|n| n.contains('/') && (n.ends_with(".rs") || n.ends_with('/'))) {
        assert!(Path::new("src").join(n).exists(), "docs/DESIGN.md names {n}, which is not in src/");
    }
}
