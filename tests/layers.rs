//! Fitness test for the layout (design §2): every module of `src/` belongs to the layer of
//! its top folder, and may import only from layers below its own; `backend` and `relay`
//! stand side by side and never import each other; and no two modules import each other,
//! directly or around a circle. Reads the source itself, so it needs no build of the crate.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The layers from the bottom up; a layer may import those with a lower rank only.
const LAYERS: &[(&str, u8)] = &[
    ("proto", 0),
    ("config", 1),
    ("shared", 2),
    ("backend", 3),
    ("relay", 3),
    ("ingress", 4),
    ("control", 5),
];

fn rank(layer: &str) -> Option<u8> {
    LAYERS.iter().find(|(l, _)| *l == layer).map(|(_, r)| *r)
}

/// A module's path from its file: `src/relay/mod.rs` → `relay`, `src/backend/client/tests.rs`
/// → `backend::client::tests`; `lib.rs` and `main.rs` are the root (empty).
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts
        .last()
        .is_some_and(|p| p == "mod" || p == "lib" || p == "main")
    {
        parts.pop();
    }
    parts
}

/// The source without comments (doc links name modules without importing them) and
/// without string literals.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut in_str = false;
        let mut prev = ' ';
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            if !in_str && c == '/' && chars.peek() == Some(&'/') {
                break;
            }
            if c == '"' && prev != '\\' {
                in_str = !in_str;
            } else if !in_str {
                out.push(c);
            }
            prev = c;
        }
        out.push('\n');
    }
    out
}

/// Every `crate::a::b…` path the code names, as segment lists (a `use crate::{x, y::z}`
/// group gives one path per entry, nested groups included).
fn crate_paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().last();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `$crate::` or a longer identifier
        }
        expand(rest, Vec::new(), &mut out);
    }
    out
}

/// Reads a path (or a brace group) at the start of `s`, with `prefix` already read.
fn expand(s: &str, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let s = s.trim_start();
    if let Some(group) = s.strip_prefix('{') {
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    expand(&group[start..i], prefix.clone(), out);
                    return;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(&group[start..i], prefix.clone(), out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        return;
    }
    let ident: String = s
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    if ident.is_empty() || ident == "self" {
        if !prefix.is_empty() {
            out.push(prefix);
        }
        return;
    }
    let mut path = prefix;
    path.push(ident.clone());
    let after = &s[ident.len()..];
    match after.strip_prefix("::") {
        Some(more) => expand(more, path, out),
        None => out.push(path),
    }
}

/// What the check found wrong, one line each.
fn check(files: &[(std::path::PathBuf, String)]) -> Vec<String> {
    let modules: BTreeSet<Vec<String>> = files.iter().map(|(p, _)| module_of(p)).collect();
    let mut problems = Vec::new();
    // Module → the modules it imports (the longest existing prefix of each path).
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (path, text) in files {
        let from = module_of(path);
        let Some(from_layer) = from.first() else {
            continue; // lib.rs and main.rs wire the layers together
        };
        let Some(from_rank) = rank(from_layer) else {
            problems.push(format!(
                "{}: folder `{from_layer}` is not a layer",
                path.display()
            ));
            continue;
        };
        for target in crate_paths(&code_only(text)) {
            let to_layer = &target[0];
            let Some(to_rank) = rank(to_layer) else {
                continue; // a re-export at the crate root, such as `crate::Config`
            };
            if to_layer != from_layer && to_rank >= from_rank {
                problems.push(format!(
                    "{}: `{}` ({from_layer}) imports `crate::{}` from layer `{to_layer}`, which is not below it",
                    path.display(),
                    from.join("::"),
                    target.join("::")
                ));
            }
            let to = (1..=target.len())
                .rev()
                .map(|n| target[..n].to_vec())
                .find(|m| modules.contains(m))
                .unwrap_or_else(|| vec![to_layer.clone()]);
            // A module and its own parent or child are one unit (`mod.rs` declares its children).
            if !to.starts_with(&from) && !from.starts_with(&to) {
                edges.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    problems.extend(cycles(&edges));
    problems
}

/// Each circle of imports, once.
fn cycles(edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<String> {
    let mut found = BTreeSet::new();
    for start in edges.keys() {
        // Depth-first from `start`, looking for a way back to it.
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((node, path)) = stack.pop() {
            for next in edges.get(&node).into_iter().flatten() {
                if next == start {
                    let mut circle: Vec<String> = path.iter().map(|m| m.join("::")).collect();
                    let min = (0..circle.len())
                        .min_by_key(|&i| circle[i].clone())
                        .unwrap_or(0);
                    circle.rotate_left(min);
                    found.insert(circle.join(" → "));
                } else if seen.insert(next.clone()) {
                    let mut p = path.clone();
                    p.push(next.clone());
                    stack.push((next.clone(), p));
                }
            }
        }
    }
    found
        .into_iter()
        .map(|c| format!("import cycle: {c} → (back)"))
        .collect()
}

fn read_tree(root: &Path) -> Vec<(std::path::PathBuf, String)> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("src/ is readable") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("source file is UTF-8");
                let rel = path.strip_prefix(root).expect("under src/").to_path_buf();
                out.push((rel, text));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn imports_only_go_down_and_form_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = read_tree(&src);
    assert!(
        files.len() > 20,
        "expected the crate's sources under {src:?}"
    );
    let problems = check(&files);
    assert!(
        problems.is_empty(),
        "layout broken:\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_folder_under_src_is_a_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            assert!(rank(&name).is_some(), "src/{name} is not a layer");
        }
    }
}

fn file(path: &str, text: &str) -> (std::path::PathBuf, String) {
    (path.into(), text.into())
}

#[test]
fn the_check_sees_an_upward_import() {
    let files = [
        file("proto/frame.rs", "use crate::shared::state::ProxyState;\n"),
        file("shared/state.rs", "pub struct ProxyState;\n"),
    ];
    let problems = check(&files);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("proto::frame"), "{problems:?}");
}

#[test]
fn the_check_sees_grouped_imports_and_sideways_layers() {
    let files = [
        file(
            "relay/hop.rs",
            "use crate::{proto::frame, backend::{dial::connect, open}};\n",
        ),
        file("backend/dial.rs", ""),
        file("backend/open.rs", ""),
        file("proto/frame.rs", ""),
    ];
    let problems = check(&files);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems.iter().all(|p| p.contains("layer `backend`")));
}

#[test]
fn the_check_sees_a_cycle_within_a_layer() {
    let files = [
        file("shared/routes.rs", "use crate::shared::pool::Pool;\n"),
        file("shared/pool.rs", "use crate::shared::metrics::X;\n"),
        file(
            "shared/metrics.rs",
            "fn f() { crate::shared::routes::g(); }\n",
        ),
        file(
            "shared/mod.rs",
            "pub mod routes; pub mod pool; pub mod metrics;\n",
        ),
    ];
    let problems = check(&files);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("import cycle: shared::metrics"),
        "{problems:?}"
    );
}

#[test]
fn comments_and_strings_are_not_imports() {
    let files = [
        file(
            "proto/path.rs",
            "//! See [`crate::control::run`].\nconst S: &str = \"crate::ingress\"; // crate::relay\n",
        ),
        file("control/mod.rs", ""),
    ];
    assert_eq!(check(&files), Vec::<String>::new());
}
