//! The architecture as a test (issue 25): the workspace's crates are the layers, and what the
//! compiler does not enforce is checked here, from the sources alone (no build, no server):
//! - the sync core (`crates/core`) depends on no Kubernetes crate, nor on `vso-k8s`;
//! - in every crate, the modules form no import cycle;
//! - in the core, imports point down the layers only: `remote` (with `error`, `logging`,
//!   `duration`) ← `sync` ← `daemon` ← `cli`/`plan`/the crate root;
//! - the tree stays readable: no source file over 800 lines, no folder with more than 8 files
//!   at its top.
//!
//! A module's imports are the `crate::…`, `super::…` and `self::…` paths in its code (comments
//! and `#[cfg(test)]` modules left out) and the paths through its own child modules
//! (`use record::…` in `lease/mod.rs`), each resolved to the longest module it names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 800;
const MAX_FILES_IN_A_FOLDER: usize = 8;
/// Crates whose weight (and API) the sidecar, built from the core alone, must not carry.
const KUBERNETES_CRATES: [&str; 5] = ["kube", "k8s-openapi", "schemars", "minijinja", "vso-k8s"];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The `.rs` files under `dir`, recursively.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// `sync/lease/mod.rs` → `sync::lease`; `lib.rs`/`main.rs` → `` (the crate root).
fn module_name(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts.join("::")
}

/// The code of a file without comments and without its `#[cfg(test)]` module (at the end of
/// the file, by this project's style; a `tests.rs` file is test code as a whole).
fn code(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed == "#[cfg(test)]"
            && lines
                .peek()
                .is_some_and(|next| next.trim_start().starts_with("mod ") && next.contains('{'))
        {
            break;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        out.push_str(line.split(" // ").next().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// The `a::b::c` paths that follow `prefix` (`crate::`, `super::`, …) in `code`.
fn paths_after<'a>(code: &'a str, prefix: &str) -> Vec<Vec<&'a str>> {
    let mut out = Vec::new();
    for (at, _) in code.match_indices(prefix) {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let rest = &code[at + prefix.len()..];
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        let segments: Vec<&str> = rest[..end].split("::").filter(|s| !s.is_empty()).collect();
        out.push(segments);
    }
    out
}

/// The longest module that `base::segments…` names.
fn resolve(modules: &BTreeSet<String>, base: &str, segments: &[&str]) -> Option<String> {
    for n in (0..=segments.len()).rev() {
        let mut name = base.to_string();
        for s in &segments[..n] {
            if !name.is_empty() {
                name.push_str("::");
            }
            name.push_str(s);
        }
        if modules.contains(&name) {
            return Some(name);
        }
    }
    None
}

fn parent(module: &str) -> &str {
    module.rsplit_once("::").map_or("", |(p, _)| p)
}

/// One crate's modules and what each imports.
struct Graph {
    files: BTreeMap<String, PathBuf>,
    edges: BTreeMap<String, BTreeSet<String>>,
}

fn graph(src: &Path) -> Graph {
    let files: BTreeMap<String, PathBuf> = sources(src)
        .into_iter()
        .filter(|f| f.file_name().is_some_and(|n| n != "tests.rs"))
        .map(|f| (module_name(src, &f), f))
        .collect();
    let modules: BTreeSet<String> = files.keys().cloned().collect();
    let mut edges = BTreeMap::new();
    for (module, file) in &files {
        let code = code(&std::fs::read_to_string(file).unwrap());
        let mut deps = BTreeSet::new();
        for segments in paths_after(&code, "crate::") {
            deps.extend(resolve(&modules, "", &segments));
        }
        for segments in paths_after(&code, "self::") {
            deps.extend(resolve(&modules, module, &segments));
        }
        for segments in paths_after(&code, "super::") {
            let mut base = parent(module);
            let mut rest = &segments[..];
            while rest.first() == Some(&"super") {
                base = parent(base);
                rest = &rest[1..];
            }
            deps.extend(resolve(&modules, base, rest));
        }
        // Paths through the module's own children: `use record::Holder` in lease/mod.rs.
        let children = modules
            .iter()
            .filter(|m| parent(m) == module.as_str() && !m.is_empty() && *m != module);
        for child in children {
            let name = child.rsplit("::").next().unwrap();
            if !paths_after(&code, &format!("{name}::")).is_empty() {
                deps.insert(child.clone());
            }
        }
        deps.remove(module);
        edges.insert(module.clone(), deps);
    }
    Graph { files, edges }
}

/// A cycle of the graph, if there is one (depth-first search).
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_string(), 1);
        stack.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            match state.get(next.as_str()) {
                Some(1) => {
                    let from = stack.iter().position(|n| n == next).unwrap();
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(cycle) = visit(next, edges, state, stack) {
                        return Some(cycle);
                    }
                }
            }
        }
        stack.pop();
        state.insert(node.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in edges.keys() {
        if !state.contains_key(node.as_str()) {
            let mut stack = Vec::new();
            if let Some(cycle) = visit(node, edges, &mut state, &mut stack) {
                return Some(cycle);
            }
        }
    }
    None
}

const CRATES: [&str; 3] = ["crates/core/src", "crates/k8s/src", "src"];

#[test]
fn no_crate_has_an_import_cycle() {
    for src in CRATES {
        let g = graph(&repo().join(src));
        assert!(g.files.len() >= 2, "{src}: no modules found");
        if let Some(cycle) = find_cycle(&g.edges) {
            panic!(
                "{src}: an import cycle: {}; move what both need below both (see README, \
                 \"Source layout\")",
                cycle.join(" -> ")
            );
        }
    }
}

/// The core's layers, lowest first: a module may import its own layer and the ones below.
fn core_layer(module: &str) -> usize {
    match module.split("::").next().unwrap() {
        "remote" | "error" | "logging" | "duration" => 0,
        "sync" => 1,
        "daemon" => 2,
        "cli" | "plan" | "" => 3,
        other => panic!(
            "crates/core/src: module {other} belongs to no layer; add it to the list in \
             tests/it/architecture.rs (and to README, \"Source layout\")"
        ),
    }
}

#[test]
fn the_core_imports_point_down_the_layers() {
    let g = graph(&repo().join("crates/core/src"));
    let mut wrong = Vec::new();
    for (module, deps) in &g.edges {
        for dep in deps {
            if core_layer(dep) > core_layer(module) {
                wrong.push(format!("{module} imports {dep}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "crates/core/src: imports that point up the layers (remote <- sync <- daemon <- \
         cli/plan):\n{}",
        wrong.join("\n")
    );
    // The check sees real imports: the daemon runs the sync, the sync uses the remote.
    assert!(g.edges["daemon::supervisor"].contains("sync::task"));
    assert!(g.edges["sync::job"].contains("remote::rclone"));
}

/// The `[dependencies]` table of a Cargo.toml (not dev-dependencies), one name per line.
fn dependencies(manifest: &str) -> Vec<String> {
    let text = std::fs::read_to_string(repo().join(manifest)).unwrap();
    let mut names = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with('[') {
            inside = line.trim() == "[dependencies]";
            continue;
        }
        if inside && let Some((name, _)) = line.split_once('=') {
            let name = name.trim().trim_end_matches(".workspace").to_string();
            if !name.is_empty() && !name.starts_with('#') {
                names.push(name);
            }
        }
    }
    names
}

#[test]
fn the_core_depends_on_no_kubernetes_crate() {
    let core = dependencies("crates/core/Cargo.toml");
    assert!(core.contains(&"tokio".to_string()), "parsed: {core:?}");
    for name in KUBERNETES_CRATES {
        assert!(
            !core.contains(&name.to_string()),
            "crates/core depends on {name}: the sidecar would carry it and the core could \
             import Kubernetes code; put that code in crates/k8s"
        );
    }
    let k8s = dependencies("crates/k8s/Cargo.toml");
    assert!(k8s.contains(&"vso-core".to_string()), "parsed: {k8s:?}");
}

#[test]
fn files_and_folders_stay_small() {
    let mut problems = Vec::new();
    let mut folders: BTreeMap<PathBuf, usize> = BTreeMap::new();
    for src in CRATES {
        for file in sources(&repo().join(src)) {
            let lines = std::fs::read_to_string(&file).unwrap().lines().count();
            if lines > MAX_LINES {
                problems.push(format!("{}: {lines} lines", file.display()));
            }
            *folders
                .entry(file.parent().unwrap().to_path_buf())
                .or_default() += 1;
        }
    }
    for (folder, files) in folders {
        if files > MAX_FILES_IN_A_FOLDER {
            problems.push(format!("{}: {files} files at its top", folder.display()));
        }
    }
    assert!(
        problems.is_empty(),
        "at most {MAX_LINES} lines a file and {MAX_FILES_IN_A_FOLDER} files a folder (split by \
         concern):\n{}",
        problems.join("\n")
    );
}

/// The checks above can fail: a planted cycle (through `crate::`, `super::` and a child
/// module) and a planted upward import are found.
#[test]
fn a_planted_cycle_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("sync/lease")).unwrap();
    std::fs::write(src.join("lib.rs"), "pub mod remote;\npub mod sync;\n").unwrap();
    std::fs::write(
        src.join("remote.rs"),
        "//! crate::sync in a comment is no import\nuse crate::sync::lease::Lease;\n",
    )
    .unwrap();
    std::fs::write(src.join("sync/mod.rs"), "pub mod lease;\n").unwrap();
    std::fs::write(
        src.join("sync/lease/mod.rs"),
        "mod record;\npub use record::Lease;\n",
    )
    .unwrap();
    std::fs::write(
        src.join("sync/lease/record.rs"),
        "use super::super::super::remote::Thing;\n#[cfg(test)]\nmod tests {\n    use crate::sync;\n}\n",
    )
    .unwrap();
    let g = graph(src);
    assert_eq!(
        g.edges["sync::lease"],
        BTreeSet::from(["sync::lease::record".to_string()])
    );
    assert_eq!(
        g.edges["sync::lease::record"],
        BTreeSet::from(["remote".to_string()])
    );
    let cycle = find_cycle(&g.edges).expect("remote -> sync::lease -> record -> remote");
    assert!(cycle.contains(&"remote".to_string()), "{cycle:?}");
    assert!(core_layer("sync::lease") > core_layer("remote"));
}
