//! Every command line `inject` writes is one the binary's own CLI accepts: the args of each
//! restore initContainer and backup sidecar in every golden `expected.yaml`
//! (tests/golden/<case>/) are parsed with [`volume_syncing_operator::cli::Cli`], so a flag
//! added, renamed or removed in the CLI cannot leave injected Pods failing at start.
//!
//! The golden files are checked against `inject`'s real output by the `inject` module, so
//! parsing them here covers what `inject` generates without running it; the test therefore
//! also runs in the sidecar build (`cargo test --no-default-features`), whose CLI lacks
//! `inject`, `crd` and `operator` but has every sync command these containers run.

use std::fs;
use std::path::{Path, PathBuf};

use clap::Parser;
use serde::Deserialize;
use serde_yaml::Value;
use volume_syncing_operator::cli::Cli;

/// The name prefixes of the containers `inject` adds (crates/k8s: `RESTORE_CONTAINER`,
/// `SIDECAR_CONTAINER`); a second resource on the same Pod gets a suffix.
const OURS: [&str; 2] = ["init-volume-restore", "volume-syncing-sidecar"];

/// The golden cases with an expected output (the `error-*` cases have only an expected error).
fn golden_outputs() -> Vec<(String, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut cases: Vec<(String, PathBuf)> = fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|dir| dir.join("expected.yaml").is_file())
        .map(|dir| {
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            (name, dir.join("expected.yaml"))
        })
        .collect();
    cases.sort();
    cases
}

/// Every container named like ours in `containers` or `initContainers` of any Pod spec in
/// `value`, at any depth: a Pod, the template of a Deployment or StatefulSet, the job template
/// of a CronJob, the items of a List.
fn our_containers<'a>(value: &'a Value, found: &mut Vec<&'a Value>) {
    match value {
        Value::Mapping(map) => {
            for (key, child) in map {
                let is_list = matches!(key.as_str(), Some("containers" | "initContainers"));
                if is_list && let Value::Sequence(containers) = child {
                    found.extend(containers.iter().filter(|c| {
                        c["name"]
                            .as_str()
                            .is_some_and(|n| OURS.iter().any(|p| n.starts_with(p)))
                    }));
                }
                our_containers(child, found);
            }
        }
        Value::Sequence(items) => items.iter().for_each(|v| our_containers(v, found)),
        Value::Tagged(tagged) => our_containers(&tagged.value, found),
        _ => {}
    }
}

#[test]
fn every_generated_argv_parses_with_the_cli() {
    let cases = golden_outputs();
    assert!(
        cases.len() >= 15,
        "the golden cases with an expected.yaml are missing: {cases:?}"
    );
    let mut total = 0;
    let mut failures = Vec::new();
    for (case, path) in &cases {
        let text = fs::read_to_string(path).unwrap();
        let documents: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
            .map(|doc| {
                Value::deserialize(doc).unwrap_or_else(|e| panic!("{case}: expected.yaml: {e}"))
            })
            .collect();
        let mut found = Vec::new();
        for doc in &documents {
            our_containers(doc, &mut found);
        }
        assert!(
            !found.is_empty(),
            "{case}: no {OURS:?} container in expected.yaml"
        );
        for container in found {
            let name = container["name"].as_str().unwrap();
            let args: Vec<String> = match &container["args"] {
                Value::Sequence(args) => args
                    .iter()
                    .map(|a| {
                        a.as_str()
                            .unwrap_or_else(|| {
                                panic!("{case}: {name}: an arg is not a string: {a:?}")
                            })
                            .to_string()
                    })
                    .collect(),
                other => panic!("{case}: {name} has no args: {other:?}"),
            };
            assert!(
                container["command"].is_null(),
                "{case}: {name}: the image's entrypoint runs the args, no command"
            );
            let argv = std::iter::once("volume-syncing-operator".to_string()).chain(args.clone());
            if let Err(e) = Cli::try_parse_from(argv) {
                failures.push(format!("{case}: {name}: {args:?} does not parse:\n{e}"));
            }
            total += 1;
        }
    }
    eprintln!(
        "{total} injected containers in {} golden cases parse",
        cases.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(
        total > 20,
        "only {total} injected containers in {} golden cases",
        cases.len()
    );
}
