//! The source tree keeps one direction of dependencies:
//! `model ← config ← route, measure ← gate ← coord ← filter ← proxy, native`, with the host
//! traits (`host`) used by `measure`, `coord` and `filter` and implemented in `proxy` (Wasm)
//! and `native` (dynamic module), and `coord` also sharing `route`'s revision table between VMs. Every `crate::<module>` path in a
//! module's files (tests included) must name a module it may use; the allowed graph has no
//! cycle, so neither can the code.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module and the modules it may use.
const ALLOWED: &[(&str, &[&str])] = &[
    ("model", &[]),
    ("host", &[]),
    ("config", &["model"]),
    ("route", &["model", "config"]),
    ("measure", &["model", "config", "host"]),
    ("gate", &["model", "config", "measure"]),
    ("coord", &["model", "config", "route", "measure", "gate", "host"]),
    ("filter", &["model", "config", "route", "measure", "gate", "coord", "host"]),
    ("proxy", &["model", "config", "route", "measure", "gate", "coord", "host", "filter"]),
    ("native", &["model", "config", "route", "measure", "gate", "coord", "host", "filter"]),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file under `src/` belongs to (`None` for `lib.rs`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let first = file.strip_prefix(src).ok()?.components().next()?.as_os_str().to_str()?.to_string();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_string();
    (name != "lib").then_some(name)
}

/// The modules named by `crate::<name>` in `text`, including `use crate::{a, b}` groups.
fn crate_paths(text: &str) -> BTreeSet<String> {
    let ident = |s: &str| s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>();
    let mut used = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            used.extend(group.split(',').map(|item| ident(item.trim())).filter(|m| !m.is_empty()));
        } else {
            used.insert(ident(rest));
        }
    }
    used
}

#[test]
fn every_module_uses_only_the_modules_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut seen = BTreeSet::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else { continue };
        seen.insert(module.clone());
        let may_use = allowed.get(module.as_str()).unwrap_or_else(|| panic!("{module} is missing from ALLOWED"));
        let text = std::fs::read_to_string(file).unwrap();
        for used in crate_paths(&text) {
            assert!(
                used == module || may_use.contains(&used.as_str()),
                "{} uses crate::{used}, which `{module}` may not use (allowed: {may_use:?})",
                file.display()
            );
        }
    }
    let listed: BTreeSet<String> = allowed.keys().map(|m| m.to_string()).collect();
    assert_eq!(seen, listed, "ALLOWED lists exactly the modules under src/");
}

#[test]
fn the_allowed_graph_has_no_cycle() {
    // Each module may use only modules listed before it: a topological order.
    for (i, (module, uses)) in ALLOWED.iter().enumerate() {
        for used in *uses {
            let position = ALLOWED.iter().position(|(m, _)| m == used);
            assert!(position.is_some_and(|p| p < i), "{module} uses {used}, which is not below it");
        }
    }
}

#[test]
fn the_scanner_sees_grouped_and_plain_paths() {
    let found = crate_paths("use crate::{model::Version, config};\nlet x = crate::gate::Gate::default();");
    assert_eq!(found, ["config", "gate", "model"].into_iter().map(String::from).collect());
}
