//! `inject` and the generated files, with the real binary: the golden cases under
//! tests/golden/<case>/ (input.yaml + sync.yaml [+ args] → expected.yaml, or exit 2 with
//! expected-error.txt and nothing on stdout), a resource written for the original operator
//! injects exactly as its canonical spelling (canonical.yaml beside sync.yaml gives the same
//! expected.yaml), injecting twice equals injecting once, stdin
//! input, the committed CRD and the deploy/kubernetes manifests (the `inject` output of the
//! plain manifests in deploy/kubernetes/app/).
//!
//! `REFRESH_GOLDEN=1 cargo test --test it inject::` rewrites every expected file from the current
//! binary (review the diff); CI never sets it. `make lint` validates every expected.yaml with
//! `kubernetes-validate --strict` (1.31; cases named `*classic*` also 1.27).

use crate::support;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn refresh() -> bool {
    std::env::var_os("REFRESH_GOLDEN").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Runs the binary in `dir` with `args` (and `stdin`), bounded.
fn vso(dir: &Path, args: &[String], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(support::binary())
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start the binary");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input)
            .expect("writing stdin");
    }
    // inject does no I/O beyond files: a hang is a bug, and the test harness's own timeout
    // reports it.
    child.wait_with_output().expect("waiting for the binary")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Compares `actual` with the file at `path`, or rewrites it under REFRESH_GOLDEN.
fn check_golden(path: &Path, actual: &str, failures: &mut Vec<String>) {
    if refresh() {
        fs::write(path, actual).unwrap();
        return;
    }
    match fs::read_to_string(path) {
        Ok(expected) if expected == actual => {}
        Ok(expected) => failures.push(format!(
            "{} differs (REFRESH_GOLDEN=1 to regenerate, then review the diff)\n--- expected\n{expected}\n+++ actual\n{actual}",
            path.display()
        )),
        Err(e) => failures.push(format!("{}: {e}", path.display())),
    }
}

struct Case {
    name: String,
    dir: PathBuf,
    args: Vec<String>,
}

fn cases() -> Vec<Case> {
    let mut out: Vec<Case> = fs::read_dir(repo("tests/golden"))
        .expect("tests/golden")
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .map(|dir| {
            let mut args: Vec<String> = ["inject", "-f", "input.yaml", "--sync", "sync.yaml"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            if let Ok(extra) = fs::read_to_string(dir.join("args")) {
                args.extend(extra.split_whitespace().map(str::to_string));
            }
            Case {
                name: dir.file_name().unwrap().to_string_lossy().into_owned(),
                dir,
                args,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(out.len() >= 20, "the golden cases are missing");
    out
}

/// Every golden case: the output, or the exit code 2, the message and an empty stdout.
#[test]
fn golden_cases() {
    let mut failures = Vec::new();
    for case in cases() {
        let out = vso(&case.dir, &case.args, None);
        let code = out.status.code().unwrap_or(-1);
        let is_error_case = case.name.starts_with("error-");
        if is_error_case {
            if code != 2 || !out.stdout.is_empty() {
                failures.push(format!(
                    "{}: expected exit 2 and an empty stdout, got {code}:\n{}{}",
                    case.name,
                    text(&out.stdout),
                    text(&out.stderr)
                ));
                continue;
            }
            check_golden(
                &case.dir.join("expected-error.txt"),
                &text(&out.stderr),
                &mut failures,
            );
        } else {
            if code != 0 || !out.stderr.is_empty() {
                failures.push(format!(
                    "{}: expected exit 0 and nothing on stderr, got {code}:\n{}",
                    case.name,
                    text(&out.stderr)
                ));
                continue;
            }
            check_golden(
                &case.dir.join("expected.yaml"),
                &text(&out.stdout),
                &mut failures,
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// A case with canonical.yaml (the resource of sync.yaml in this project's own spelling, where
/// sync.yaml is written as for the original operator): both give the same output, so the
/// legacy spellings are normalized to exactly what they mean.
#[test]
fn legacy_spellings_inject_as_their_canonical_form() {
    let mut checked = 0;
    for case in cases() {
        let canonical = case.dir.join("canonical.yaml");
        if !canonical.exists() {
            continue;
        }
        let legacy = fs::read_to_string(case.dir.join("sync.yaml")).unwrap();
        assert_ne!(
            legacy,
            fs::read_to_string(&canonical).unwrap(),
            "{}: the two spellings are the same file",
            case.name
        );
        let mut args = case.args.clone();
        args[4] = "canonical.yaml".into();
        let out = vso(&case.dir, &args, None);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {}",
            case.name,
            text(&out.stderr)
        );
        assert_eq!(
            text(&out.stdout),
            fs::read_to_string(case.dir.join("expected.yaml")).unwrap(),
            "{}: the canonical spelling injects differently from sync.yaml",
            case.name
        );
        checked += 1;
    }
    assert!(checked >= 3, "the cases with canonical.yaml are missing");
}

/// Injecting into an injected manifest changes nothing (the annotation records the injection).
#[test]
fn injecting_twice_equals_injecting_once() {
    let mut checked = 0;
    for case in cases() {
        let expected = case.dir.join("expected.yaml");
        if !expected.exists() {
            continue;
        }
        let mut args = case.args.clone();
        args[2] = "expected.yaml".into();
        let out = vso(&case.dir, &args, None);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {}",
            case.name,
            text(&out.stderr)
        );
        assert_eq!(
            text(&out.stdout),
            fs::read_to_string(&expected).unwrap(),
            "{}: a second injection changed the output",
            case.name
        );
        checked += 1;
    }
    assert!(checked >= 10);
}

/// `-f -` reads the manifests from stdin.
#[test]
fn manifests_from_stdin() {
    let dir = repo("tests/golden/basic");
    let input = fs::read(dir.join("input.yaml")).unwrap();
    let args: Vec<String> = ["inject", "-f", "-", "--sync", "sync.yaml"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let out = vso(&dir, &args, Some(&input));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        fs::read_to_string(dir.join("expected.yaml")).unwrap()
    );
}

/// A missing input file is a usage error naming it, with nothing on stdout.
#[test]
fn a_missing_file_is_a_usage_error() {
    let dir = repo("tests/golden/basic");
    let args: Vec<String> = ["inject", "-f", "no-such.yaml", "--sync", "sync.yaml"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let out = vso(&dir, &args, None);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(
        text(&out.stderr).contains("no-such.yaml"),
        "{}",
        text(&out.stderr)
    );
}

/// The committed CRD is what the Rust types generate.
#[test]
fn committed_crd_is_current() {
    let out = vso(&repo("."), &["crd".to_string()], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let mut failures = Vec::new();
    check_golden(
        &repo("deploy/crd/podfilesystemsync.yaml"),
        &text(&out.stdout),
        &mut failures,
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// deploy/kubernetes/*.yaml (but secret.yaml) are exactly the `inject` output of the plain
/// manifests in deploy/kubernetes/app/ with the resources in deploy/kubernetes/app/sync.yaml.
#[test]
fn deploy_manifests_are_inject_output() {
    let mut failures = Vec::new();
    for (name, extra) in [
        ("deployment.yaml", None),
        (
            "deployment-classic-sidecar.yaml",
            Some("--native-sidecars=false"),
        ),
        ("statefulset.yaml", None),
    ] {
        let mut args: Vec<String> = [
            "inject",
            "-f",
            &format!("deploy/kubernetes/app/{name}"),
            "--sync",
            "deploy/kubernetes/app/sync.yaml",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.map(str::to_string));
        let out = vso(&repo("."), &args, None);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", text(&out.stderr));
        check_golden(
            &repo(&format!("deploy/kubernetes/{name}")),
            &text(&out.stdout),
            &mut failures,
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
