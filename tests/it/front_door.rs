//! The front door: README and `--help` say the same where they overlap, so neither can drift
//! without this failing (issue 29). Checks every long flag of the commands a user types, the
//! exit-code table, the environment variables the help names, and the make targets and files
//! the README's getting-started paths point at (pure text). And the README's commands run: every
//! fenced `sh` block of the three paths (shell, Docker, Kubernetes) and of the recipes, against a
//! local S3 server, the image `make image` built and offline Kubernetes tooling; what needs a
//! cluster is listed and checked instead (see "The README's commands, run" below).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use clap::CommandFactory;
use volume_syncing_operator::cli::Cli;
use vso_core::cli::MIN_RCLONE_VERSION;

fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

fn long_help(path: &[&str]) -> String {
    let mut cmd = Cli::command();
    cmd.build();
    let mut cmd = &mut cmd;
    for name in path {
        cmd = cmd.find_subcommand_mut(name).expect(name);
    }
    cmd.render_long_help().to_string()
}

#[test]
fn every_flag_of_the_help_is_in_the_readme() {
    let readme = repo_file("README.md");
    let cli = Cli::command();
    let mut missing = Vec::new();
    for sub in cli.get_subcommands().filter(|c| !c.is_hide_set()) {
        for arg in sub.get_arguments() {
            if let Some(long) = arg.get_long()
                && !readme.contains(&format!("--{long}"))
            {
                missing.push(format!("{} --{long}", sub.get_name()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "flags in --help but not in README.md: {missing:?}"
    );
}

#[test]
fn the_exit_codes_agree() {
    let readme = repo_file("README.md");
    let section = readme
        .split("\n## Exit codes\n")
        .nth(1)
        .expect("README has an Exit codes section");
    let help = long_help(&[]);
    for (code, readme_start, help_start) in [
        (0, "| 0 | success", "0  success"),
        (1, "| 1 | failure", "1  failure"),
        (
            2,
            "| 2 | usage or configuration error",
            "2  usage or configuration error",
        ),
        (
            3,
            "| 3 | refused by a safety valve",
            "3  refused by a safety valve",
        ),
    ] {
        assert!(
            section.contains(readme_start),
            "README lacks exit code {code}"
        );
        assert!(help.contains(help_start), "--help lacks exit code {code}");
    }
}

#[test]
fn the_variables_named_by_the_help_are_in_the_readme() {
    let readme = repo_file("README.md");
    let mut names = BTreeSet::new();
    for path in [
        "sync-to-remote",
        "remote-to-local-sync",
        "remote-to-remote-sync",
    ] {
        let help = long_help(&[path]);
        let vars = help
            .split("Environment variables:")
            .nth(1)
            .unwrap_or_else(|| panic!("{path} --help names no variables"));
        for word in
            vars.split(|c: char| !(c.is_ascii_uppercase() || c == '_' || c == '<' || c == '>'))
        {
            let word = word.trim_matches('_');
            if word.len() > 3
                && word.contains('_')
                && word.chars().next().unwrap().is_ascii_uppercase()
            {
                names.insert(word.to_string());
            }
        }
    }
    assert!(names.contains("REMOTE_<KEY>") && names.contains("ENCRYPTION_PASSPHRASE"));
    let missing: Vec<_> = names
        .iter()
        .filter(|n| !readme.contains(n.trim_end_matches("<KEY>")))
        .collect();
    assert!(
        missing.is_empty(),
        "variables in --help but not in README.md: {missing:?}"
    );
}

#[test]
fn the_rclone_version_needed_is_the_same_everywhere() {
    let readme = repo_file("README.md");
    assert!(
        readme.contains(&format!("rclone ≥ {MIN_RCLONE_VERSION}"))
            && readme.contains(&format!("rclone {MIN_RCLONE_VERSION} or newer")),
        "README names rclone {MIN_RCLONE_VERSION}"
    );
    let version = Cli::command().render_version().to_string();
    assert!(
        version.contains(&format!("rclone >= {MIN_RCLONE_VERSION}")),
        "{version}"
    );
}

/// The make targets and files that the README's getting-started paths name exist.
#[test]
fn the_getting_started_paths_point_at_real_things() {
    let readme = repo_file("README.md");
    let start = readme
        .find("\n## Prerequisites and costs")
        .expect("prerequisites");
    let end = readme.find("\n## Commands\n").expect("commands");
    let paths = &readme[start..end];
    let makefiles = repo_file("Makefile") + &repo_file("examples.mk");
    let mut targets = BTreeSet::new();
    for (i, _) in paths.match_indices("make ") {
        let word: String = paths[i + 5..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        if !word.is_empty() && word.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
            targets.insert(word);
        }
    }
    for example in [
        "example-upload",
        "example-refusal",
        "example-stop",
        "example-inject",
    ] {
        assert!(paths.contains(example), "the paths mention {example}");
        targets.insert(example.to_string());
    }
    assert!(targets.len() >= 8, "{targets:?}");
    for target in &targets {
        assert!(
            makefiles.contains(&format!("\n{target}:")),
            "README names `make {target}`, which no Makefile defines"
        );
    }
    for file in [
        "deploy/kubernetes/secret.yaml",
        "deploy/kubernetes/deployment.yaml",
        "deploy/operator/overlays/example/kustomization.yaml",
        "examples.mk",
    ] {
        assert!(paths.contains(file), "the paths mention {file}");
        assert!(
            Path::new(env!("CARGO_MANIFEST_DIR")).join(file).exists(),
            "{file}"
        );
    }
    // The demo's success line, as the README quotes it.
    let demo = repo_file("scripts/demo.sh");
    let line = "demo ok: uploaded, restored byte-identical, and a wipe refused as it";
    assert!(demo.contains(line) && paths.contains(line));
}

// ---------------------------------------------------------------------------------------------
// The README's commands, run (issue 29: "a test runs every command shown in the README's three
// paths, so the front door cannot rot").
//
// Every fenced `sh` block of "Path 1: shell" (with "Installing the binary"), "Path 2: Docker",
// "Path 3: Kubernetes" and "Recipes" is turned into one bash script (so `export`, `$PWD` and
// pipes work as for a reader) and run in a temp directory against a local `rclone serve s3`,
// the image `make image` built, and this test's binary in PATH. Before each command the script
// notes its README line, so a failure names it. Substituted, and nothing else:
// - the endpoint and the credentials (`REMOTE_ENDPOINT=…`, `REMOTE_ACCESS_KEY_ID=…`,
//   `REMOTE_SECRET_ACCESS_KEY=…`; in `docker run -e REMOTE_TYPE=s3 …` the `…` is the other
//   `-e` of the block's first `docker run`);
// - Docker's object names (`app-data`, `app-sync`, …: the engine is shared) and
//   `--network host` on `docker run` (the test server listens on 127.0.0.1);
// - `/var/lib/app` by a directory of the test;
// - a long-running command (`--schedule` in the foreground) runs a few seconds and gets
//   one SIGTERM, as a stop would send (`timeout --foreground`: without it timeout signals its
//   process group too, and a second SIGTERM means "stop now");
// - `make demo` runs `scripts/demo.sh` (what it runs after building) with this test's binary
//   and its own state directory (a nested `cargo build` would wait for this test's lock);
//   `make image` is checked (the image must exist: `make test` builds it before the tests);
// - `kubectl get secret NAME …` reads the Secret as a cluster would hold it, offline
//   (`kubectl label --local -f NAME.yaml none- …`, the same output flags);
// - what needs a cluster (`kubectl apply`, `scale`, `wait`, `create job`, `logs`,
//   `rollout`) is not run: the test lists it and checks what it can instead (`-f FILE`
//   parses as Kubernetes objects, `-k DIR` renders with `kubectl kustomize`, `apply -f -`
//   keeps what would be applied and checks it).

use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::support::{
    self, ACCESS_KEY, S3Server, SECRET_KEY, Sandbox, Snapshot, Vso, files_only, snapshot,
};

const IMAGE: &str = "volume-syncing-operator:dev";

/// One command of a README block: its first line (1-based) and its text, continuation lines
/// joined, comments removed.
#[derive(Debug, Clone)]
struct ReadmeCommand {
    line: usize,
    text: String,
}

/// The fenced `sh` blocks under `## heading` (its `###` subsections included), as commands.
fn readme_blocks(heading: &str) -> Vec<Vec<ReadmeCommand>> {
    let readme = repo_file("README.md");
    let mut blocks = Vec::new();
    let mut in_section = false;
    let mut block: Option<Vec<ReadmeCommand>> = None;
    let mut pending: Option<ReadmeCommand> = None;
    for (i, line) in readme.lines().enumerate() {
        if let Some(current) = block.as_mut() {
            if line.trim_start().starts_with("```") {
                assert!(pending.is_none(), "README.md:{}: a `\\` ends the block", i);
                blocks.push(block.take().unwrap());
                continue;
            }
            let code = strip_comment(line);
            if code.trim().is_empty() && pending.is_none() {
                continue;
            }
            let (code, continued) = match code.trim_end().strip_suffix('\\') {
                Some(rest) => (rest.to_string(), true),
                None => (code.trim_end().to_string(), false),
            };
            let command = match pending.take() {
                Some(mut c) => {
                    c.text.push(' ');
                    c.text.push_str(code.trim());
                    c
                }
                None => ReadmeCommand {
                    line: i + 1,
                    text: code.trim().to_string(),
                },
            };
            if continued {
                pending = Some(command);
            } else {
                current.push(command);
            }
            continue;
        }
        if let Some(title) = line.strip_prefix("## ") {
            in_section = title.trim() == heading;
        } else if in_section && line.trim() == "```sh" {
            block = Some(Vec::new());
        }
    }
    assert!(
        !blocks.is_empty(),
        "README.md has no sh block under ## {heading}"
    );
    blocks
}

/// The line without a trailing `# comment` (a `#` after a blank, outside quotes).
fn strip_comment(line: &str) -> String {
    let (mut single, mut double) = (false, false);
    let mut previous = ' ';
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && previous.is_whitespace() => return line[..i].to_string(),
            _ => {}
        }
        previous = c;
    }
    line.to_string()
}

/// What the test does with one README command.
enum Step {
    /// Run this bash text.
    Run(String),
    /// Not run (why); the test checks it otherwise.
    NotRun(String),
}

/// The README's commands of one section as a bash script, each transformed by `step`; the
/// commands not run, with their README line and why.
fn script(
    blocks: &[Vec<ReadmeCommand>],
    mut step: impl FnMut(&ReadmeCommand) -> Step,
) -> (String, Vec<String>) {
    let mut script = String::from(
        "set -euo pipefail\n\
         trap 'echo \"FAILED: the command of README.md:$readme_line\" >&2' ERR\n",
    );
    let mut not_run = Vec::new();
    for command in blocks.iter().flatten() {
        match step(command) {
            Step::Run(text) => {
                let shown = text.replace('\'', "'\\''");
                script.push_str(&format!(
                    "readme_line={}; echo '== README.md:{}: {shown}' >&2\n{text}\n",
                    command.line, command.line
                ));
            }
            Step::NotRun(why) => not_run.push(format!(
                "README.md:{}: {} ({why})",
                command.line, command.text
            )),
        }
    }
    (script, not_run)
}

/// Runs `script` with bash in `dir`, this test's binary first in PATH; panics with its output
/// (which names the README line) unless it exits 0.
#[track_caller]
fn run_script(dir: &Path, script: &str, env: &[(&str, String)]) -> String {
    for tool in ["bash", "timeout", "docker", "kubectl", "jq", "base64"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            found,
            "{tool} is not installed: the README's commands need it"
        );
    }
    let bin_dir = support::binary().parent().unwrap().to_path_buf();
    let out = Command::new("bash")
        .args(["-c", script])
        .current_dir(dir)
        .env(
            "PATH",
            format!("{}:/usr/local/bin:/usr/bin:/bin", bin_dir.display()),
        )
        .env("RCLONE_BINARY", support::rclone())
        .env("TMPDIR", dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("bash");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "a README command failed ({}):\n{all}\n--- the script:\n{script}",
        out.status
    );
    all
}

/// `--flag=VALUE` / `NAME=VALUE` words of the endpoint and credentials, set to the test's.
fn with_test_endpoint(text: &str, endpoint: &str) -> String {
    text.split(' ')
        .map(|word| {
            let (key, _) = word.split_once('=').unwrap_or((word, ""));
            match key {
                "REMOTE_ENDPOINT" => format!("REMOTE_ENDPOINT={endpoint}"),
                "REMOTE_ACCESS_KEY_ID" => format!("REMOTE_ACCESS_KEY_ID={ACCESS_KEY}"),
                "REMOTE_SECRET_ACCESS_KEY" => format!("REMOTE_SECRET_ACCESS_KEY={SECRET_KEY}"),
                _ => word.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A command that needs a cluster: not run; what can be checked is noted in `checks`.
fn cluster_only(text: &str, checks: &mut Vec<Check>) -> Option<Step> {
    let words: Vec<&str> = text.split_whitespace().collect();
    if words.first() != Some(&"kubectl") {
        return None;
    }
    let verb = words
        .iter()
        .skip(1)
        .scan(false, |skip, w| {
            let this = if *skip { None } else { Some(*w) };
            *skip = matches!(*w, "-n" | "--context" | "--namespace");
            Some(this)
        })
        .flatten()
        .find(|w| !w.starts_with('-'))
        .unwrap_or("");
    let after = |flag: &str| -> Vec<String> {
        words
            .windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].to_string())
            .collect()
    };
    Some(match verb {
        "apply" => {
            checks.extend(
                after("-f")
                    .into_iter()
                    .filter(|f| f != "-")
                    .map(Check::Parses),
            );
            checks.extend(after("-k").into_iter().map(Check::Renders));
            Step::NotRun("kubectl apply needs a cluster; the files are checked".into())
        }
        "scale" | "wait" | "create" | "logs" | "rollout" => {
            Step::NotRun(format!("kubectl {verb} needs a cluster"))
        }
        _ => return None,
    })
}

/// A check in place of a command that needs a cluster.
#[derive(Debug)]
enum Check {
    /// The file (repository-relative, or written by the script) holds Kubernetes objects.
    Parses(String),
    /// `kubectl kustomize DIR` renders Kubernetes objects.
    Renders(String),
}

impl Check {
    #[track_caller]
    fn run(&self, dir: &Path) -> Vec<serde_yaml::Value> {
        let (what, text) = match self {
            Check::Parses(file) => {
                let path = dir.join(file);
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("{file} (kubectl apply -f): {e}"));
                (file.clone(), text)
            }
            Check::Renders(kustomization) => {
                let out = Command::new("kubectl")
                    .args(["kustomize", kustomization])
                    .current_dir(dir)
                    .output()
                    .expect("kubectl");
                assert!(
                    out.status.success(),
                    "kubectl kustomize {kustomization}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                (
                    format!("kubectl kustomize {kustomization}"),
                    String::from_utf8_lossy(&out.stdout).into_owned(),
                )
            }
        };
        let mut objects = Vec::new();
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(document)
                .unwrap_or_else(|e| panic!("{what}: not YAML: {e}"));
            if value.is_null() {
                continue;
            }
            for key in ["apiVersion", "kind", "metadata"] {
                assert!(value.get(key).is_some(), "{what}: an object without {key}");
            }
            objects.push(value);
        }
        assert!(!objects.is_empty(), "{what}: no objects");
        objects
    }
}

use serde::Deserialize;

/// A temp directory for the README's commands, with the repository's `deploy/` and
/// `examples/` linked in (the commands name them relative to the repository's root).
fn workdir(sandbox: &Sandbox) -> PathBuf {
    let dir = sandbox.dir("readme");
    for linked in ["deploy", "examples"] {
        std::os::unix::fs::symlink(
            Path::new(env!("CARGO_MANIFEST_DIR")).join(linked),
            dir.join(linked),
        )
        .unwrap();
    }
    dir
}

/// Uploads `examples/data` (or `src`) to `path` on `server` with the binary: the remote a
/// reader's commands start from.
#[track_caller]
fn seed(sandbox: &Sandbox, server: &S3Server, src: &Path, path: &str, env: &[(&str, &str)]) {
    let mut vso = Vso::s3(sandbox, server);
    for (k, v) in env {
        vso.env(k, v);
    }
    vso.arg("sync-to-remote")
        .arg("-s")
        .arg(src)
        .args(["-d", path])
        .run()
        .assert_code(0);
}

fn examples_data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data")
}

/// The data files of a tree (no directories, none of our own files).
fn data_of(dir: &Path) -> Snapshot {
    files_only(&snapshot(dir))
}

#[test]
fn readme_path_1_shell_runs() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let dir = workdir(&sandbox);
    // The reader's bucket already holds the app's data.
    seed(&sandbox, &server, &examples_data(), "my-bucket/app", &[]);
    let mut saw_demo = false;
    let (script, not_run) = script(&readme_blocks("Path 1: shell"), |c| {
        let text = with_test_endpoint(&c.text, &server.endpoint());
        if text.starts_with("make demo") {
            saw_demo = true;
            return Step::Run(format!(
                "(cd '{repo}' && VSO_BINARY='{bin}' VSO_DEMO_STATE=\"$OLDPWD/demo\" scripts/demo.sh) \
                 > demo.log 2>&1 || {{ cat demo.log; false; }}\n\
                 grep -q '^demo ok: ' <(tail -n 1 demo.log) || {{ cat demo.log; false; }}",
                repo = env!("CARGO_MANIFEST_DIR"),
                bin = support::binary().display()
            ));
        }
        let mut text = text.replace("/var/lib/app", "\"$PWD/var-lib-app\"");
        if text.starts_with("volume-syncing-operator ") && text.contains("--schedule") {
            text = format!(
                "timeout --foreground --preserve-status -s TERM 15 {text} 2>&1 | tee -a scheduled.log"
            );
        }
        Step::Run(text)
    });
    assert!(saw_demo, "Path 1 shows make demo");
    assert!(not_run.is_empty(), "{not_run:?}");
    let out = run_script(&dir, &script, &[]);
    // The restore brought the data back; the scheduled sidecar synced it, and once more on
    // SIGTERM (exit 0, checked by the script).
    assert_eq!(
        data_of(&dir.join("var-lib-app")),
        data_of(&examples_data()),
        "{out}"
    );
    let log = std::fs::read_to_string(dir.join("scheduled.log")).unwrap();
    assert!(log.matches("sync finished").count() >= 2, "{log}");
    assert_eq!(
        data_of(&server.path("my-bucket/app")),
        data_of(&examples_data())
    );
}

/// Docker objects of one test, removed when it ends.
struct DockerNames {
    prefix: String,
}

impl DockerNames {
    fn new(test: &str) -> DockerNames {
        DockerNames {
            prefix: format!("vso-readme-{}-{test}", std::process::id()),
        }
    }

    fn name(&self, readme_name: &str) -> String {
        format!("{}-{readme_name}", self.prefix)
    }
}

impl Drop for DockerNames {
    fn drop(&mut self) {
        for kind in ["container", "volume"] {
            let list = Command::new("docker")
                .args([
                    kind,
                    "ls",
                    "-q",
                    "--filter",
                    &format!("name={}", self.prefix),
                ])
                .args(if kind == "container" {
                    vec!["-a"]
                } else {
                    vec![]
                })
                .output();
            if let Ok(list) = list {
                for id in String::from_utf8_lossy(&list.stdout).split_whitespace() {
                    let _ = Command::new("docker").args([kind, "rm", "-f", id]).output();
                }
            }
        }
    }
}

#[track_caller]
fn assert_image() {
    let out = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", IMAGE])
        .output()
        .expect("cannot run docker: the README's Docker path needs the Docker CLI and engine");
    assert!(
        out.status.success(),
        "image {IMAGE} not found: run `make image` (make test does, before the tests): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `docker run` words with the test's network, names and endpoint; a lone `…` is the `-e` of
/// the block's first `docker run` that this one lacks.
fn docker_command(text: &str, names: &DockerNames, first_env: &mut Vec<String>) -> String {
    let readme_names = ["app-data", "app-sync", "app-data-restored"];
    let mut words: Vec<String> = Vec::new();
    let split: Vec<&str> = text.split(' ').collect();
    for (i, word) in split.iter().enumerate() {
        let (head, tail) = word.split_once(':').unwrap_or((word, ""));
        if readme_names.contains(&head) {
            let tail = if word.contains(':') {
                format!(":{tail}")
            } else {
                String::new()
            };
            words.push(format!("{}{tail}", names.name(head)));
        } else if *word == "…" {
            let present: Vec<&str> = split.iter().map(|w| w.split('=').next().unwrap()).collect();
            for pair in first_env.chunks(2) {
                let key = pair[1].split('=').next().unwrap();
                if !present.contains(&key) {
                    words.extend(pair.iter().cloned());
                }
            }
        } else {
            words.push(word.to_string());
        }
        if i == 1 && split[0] == "docker" && *word == "run" {
            words.push("--network".into());
            words.push("host".into());
        }
    }
    if first_env.is_empty() && split.starts_with(&["docker", "run"]) {
        for w in words.windows(2) {
            if w[0] == "-e" {
                first_env.extend([w[0].clone(), w[1].clone()]);
            }
        }
    }
    words.join(" ")
}

#[test]
fn readme_path_2_docker_runs() {
    assert_image();
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let dir = workdir(&sandbox);
    let names = DockerNames::new("path2");
    let mut first_env = Vec::new();
    let blocks = readme_blocks("Path 2: Docker");
    let (script, not_run) = script(&blocks, |c| {
        let text = with_test_endpoint(&c.text, &server.endpoint());
        if text == "make image" {
            return Step::Run(format!("docker image inspect {IMAGE} > /dev/null"));
        }
        let mut text = docker_command(&text, &names, &mut first_env);
        if c.text.starts_with("docker volume create app-data") {
            // The app's data in the new volume (the app would write it).
            text.push_str(&format!(
                "\ndocker run --rm --network none --entrypoint rclone -v {volume}:/data \
                 -v '{data}:/seed:ro' {IMAGE} --config /dev/null copy /seed /data",
                volume = names.name("app-data"),
                data = examples_data().display()
            ));
        }
        if c.text.starts_with("docker stop") {
            // The final sync ran and succeeded (exit 0).
            let container = names.name("app-sync");
            text.push_str(&format!(
                "\ntest \"$(docker inspect -f '{{{{.State.ExitCode}}}}' {container})\" = 0 \
                 || {{ docker logs {container}; false; }}\n\
                 docker logs {container} 2>&1 | grep 'sync finished' > /dev/null"
            ));
        }
        Step::Run(text)
    });
    assert!(not_run.is_empty(), "{not_run:?}");
    let out = run_script(&dir, &script, &[]);
    assert_eq!(
        data_of(&server.path("my-bucket/app")),
        data_of(&examples_data()),
        "the sidecar uploaded the volume:\n{out}"
    );
    // The restored volume holds the files (listed by the image's rclone).
    let listing = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            "rclone",
            "-v",
        ])
        .arg(format!("{}:/data", names.name("app-data-restored")))
        .args([
            IMAGE,
            "--config",
            "/dev/null",
            "lsf",
            "-R",
            "--files-only",
            "/data",
        ])
        .output()
        .unwrap();
    let mut restored: Vec<String> = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .filter(|l| !l.starts_with(".volume-syncing-operator."))
        .map(str::to_string)
        .collect();
    restored.sort();
    let expected: Vec<String> = data_of(&examples_data()).into_keys().collect();
    assert_eq!(
        restored,
        expected,
        "{}",
        String::from_utf8_lossy(&listing.stderr)
    );
}

#[test]
fn readme_path_3_kubernetes_runs_or_is_checked() {
    let sandbox = Sandbox::new();
    let dir = workdir(&sandbox);
    let mut checks = Vec::new();
    let (script, not_run) = script(&readme_blocks("Path 3: Kubernetes"), |c| {
        if let Some(step) = cluster_only(&c.text, &mut checks) {
            return step;
        }
        assert!(
            c.text.starts_with("volume-syncing-operator inject "),
            "README.md:{}: a command this test does not know: {}",
            c.line,
            c.text
        );
        Step::Run(c.text.clone())
    });
    run_script(&dir, &script, &[]);
    eprintln!("not run (no cluster here):\n  {}", not_run.join("\n  "));
    assert!(not_run.len() >= 4, "{not_run:?}");
    assert!(checks.len() >= 5, "{checks:?}");
    for check in &checks {
        let objects = check.run(&dir);
        if let Check::Parses(file) = check
            && file == "app-injected.yaml"
        {
            let text = std::fs::read_to_string(dir.join(file)).unwrap();
            assert!(
                text.contains("init-volume-restore")
                    && text.contains("registry.example.com/volume-syncing-operator:0.1.0"),
                "{text}"
            );
        }
        if let Check::Renders(kustomization) = check {
            let text = serde_yaml::to_string(&objects).unwrap();
            assert!(
                !text.contains("volume-syncing-operator:dev"),
                "{kustomization} leaves the image no registry holds"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Recipes

use vso_k8s::resource::PASSPHRASE_KEY;

/// Standard base64 with padding, as a Secret's `data` holds values.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A Secret as the API server returns it (base64 `data`, server-set metadata), in
/// `dir/secrets/NAME.yaml`, for `kubectl get secret NAME` read offline.
fn cluster_secret(dir: &Path, name: &str, data: &[(String, String)]) {
    let secrets = dir.join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    let mut yaml = format!(
        "apiVersion: v1\nkind: Secret\ntype: Opaque\nmetadata:\n  name: {name}\n  namespace: apps\n  \
         uid: 0b6f4c7e-0000-4000-8000-{:012}\n  resourceVersion: \"4711\"\n  \
         creationTimestamp: \"2026-01-01T00:00:00Z\"\n  labels:\n    \
         riotkit.org/generated-by: volume-syncing-operator\ndata:\n",
        name.len()
    );
    for (key, value) in data {
        yaml.push_str(&format!("  {key}: {}\n", base64(value.as_bytes())));
    }
    std::fs::write(secrets.join(format!("{name}.yaml")), yaml).unwrap();
}

/// `kubectl [-n NS] [--context C] get secret NAME… REST` → the same output flags over the
/// Secret files (`kubectl label --local` with no change reads and prints them, offline).
fn offline_get_secret(text: &str) -> Option<String> {
    let at = text.find(" get secret ")?;
    if !text.starts_with("kubectl ") && !text[..at].contains("$(kubectl ") {
        return None;
    }
    let start = text[..at].rfind("kubectl ").unwrap();
    let rest = &text[at + " get secret ".len()..];
    let mut files = String::new();
    let mut remainder = rest;
    loop {
        let trimmed = remainder.trim_start();
        let word = trimmed.split_whitespace().next().unwrap_or("");
        if word.is_empty() || word.starts_with('-') {
            break;
        }
        files.push_str(&format!(" -f secrets/{word}.yaml"));
        remainder = &trimmed[word.len()..];
    }
    Some(format!(
        "{}kubectl label --local{files} none-{remainder}",
        &text[..start]
    ))
}

/// A pipeline's last stage `kubectl … apply -f -` keeps what it would apply in `file`.
fn capture_apply_stdin(text: &str, file: &str) -> Option<String> {
    let (head, last) = text.rsplit_once(" | ")?;
    let last = last.trim();
    (last.starts_with("kubectl ") && last.ends_with(" apply -f -"))
        .then(|| format!("{head} | cat >> {file}"))
}

#[test]
fn readme_recipe_restore_on_a_laptop_runs() {
    assert_image();
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let dir = workdir(&sandbox);
    // The Pod's sidecar uploaded its volume, encrypted with the generated key.
    let key = "Yk3q2m0x7V1b9TnRcLwZpE4sHfJdGaUoKiQ8yX5vB6c";
    let path = "my-bucket/app/app-stateful-0";
    seed(
        &sandbox,
        &server,
        &examples_data(),
        path,
        &[(PASSPHRASE_KEY, key)],
    );
    cluster_secret(&dir, "volume-syncing-remote", &server.remote_env());
    cluster_secret(
        &dir,
        "volume-syncing-encryption",
        &[(PASSPHRASE_KEY.to_string(), key.to_string())],
    );
    let names = DockerNames::new("recipe-laptop");
    let blocks: Vec<_> = readme_blocks("Recipes")
        .into_iter()
        .filter(|b| b.iter().any(|c| c.text.contains("remote-to-local-sync")))
        .collect();
    assert_eq!(blocks.len(), 1, "one block restores");
    let mut saw_key = false;
    let (script, not_run) = script(&blocks, |c| {
        let mut text = c.text.clone();
        if let Some(offline) = offline_get_secret(&text) {
            saw_key |= text.contains(&format!("jsonpath='{{.data.{PASSPHRASE_KEY}}}'"));
            text = offline;
        }
        if text.starts_with("docker run") {
            text = text.replacen(
                "docker run",
                &format!("docker run --network host --name {}", names.name("laptop")),
                1,
            );
        }
        Step::Run(text)
    });
    assert!(
        saw_key,
        "the recipe reads the key {PASSPHRASE_KEY} of the Secret"
    );
    assert!(not_run.is_empty(), "{not_run:?}");
    let out = run_script(&dir, &script, &[]);
    assert_eq!(
        data_of(&dir.join("restored")),
        data_of(&examples_data()),
        "{out}"
    );
    assert!(
        !dir.join("vso.env").exists(),
        "the recipe removes its env file"
    );
}

#[test]
fn readme_recipe_move_a_service_runs_or_is_checked() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let dir = workdir(&sandbox);
    let key = "mQ7v0cX2nB5zL8kJ4hG1fD6sA9pO3iU0yT7rE2wQ5e";
    let path = "my-bucket/app/app-stateful-0";
    seed(
        &sandbox,
        &server,
        &examples_data(),
        path,
        &[(PASSPHRASE_KEY, key)],
    );
    cluster_secret(&dir, "volume-syncing-remote", &server.remote_env());
    cluster_secret(
        &dir,
        "volume-syncing-encryption",
        &[(PASSPHRASE_KEY.to_string(), key.to_string())],
    );
    let blocks: Vec<_> = readme_blocks("Recipes")
        .into_iter()
        .filter(|b| b.iter().any(|c| c.text.contains("--context new")))
        .collect();
    assert_eq!(blocks.len(), 1, "one block moves a service");
    let mut checks = Vec::new();
    let mut captured = Vec::new();
    let (script, not_run) = script(&blocks, |c| {
        if let Some(text) = offline_get_secret(&c.text) {
            let text = capture_apply_stdin(&text, "applied.json").unwrap_or(text);
            if text.contains("applied.json") {
                captured.push(format!(
                    "README.md:{}: kubectl apply -f - (needs a cluster; what it would apply is checked)",
                    c.line
                ));
            }
            return Step::Run(text);
        }
        if let Some(step) = cluster_only(&c.text, &mut checks) {
            return step;
        }
        Step::Run(c.text.clone())
    });
    run_script(&dir, &script, &[]);
    eprintln!(
        "not run (no cluster here):\n  {}\n  {}",
        not_run.join("\n  "),
        captured.join("\n  ")
    );
    assert!(not_run.len() >= 3 && !captured.is_empty(), "{not_run:?}");
    for check in &checks {
        check.run(&dir);
    }
    // What would reach the new cluster: both Secrets, the same data, nothing server-set.
    let applied = std::fs::read_to_string(dir.join("applied.json")).unwrap();
    let mut secrets = BTreeMap::new();
    for object in serde_json::Deserializer::from_str(&applied).into_iter::<serde_json::Value>() {
        let object = object.unwrap();
        assert_eq!(object["kind"], "Secret", "{object}");
        let meta = object["metadata"].as_object().unwrap();
        for server_set in ["resourceVersion", "uid", "creationTimestamp", "namespace"] {
            assert!(
                !meta.contains_key(server_set),
                "{server_set} would be applied: {object}"
            );
        }
        secrets.insert(meta["name"].as_str().unwrap().to_string(), object.clone());
    }
    assert_eq!(
        secrets.keys().collect::<Vec<_>>(),
        ["volume-syncing-encryption", "volume-syncing-remote"]
    );
    let decoded = |secret: &str, key: &str| -> String {
        let value = secrets[secret]["data"][key].as_str().unwrap();
        let out = Command::new("base64")
            .arg("-d")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child.stdin.take().unwrap().write_all(value.as_bytes())?;
                child.wait_with_output()
            })
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(decoded("volume-syncing-encryption", PASSPHRASE_KEY), key);
    // The first start in the new cluster: the StatefulSet's own restore, with what was copied,
    // into the new (empty) volume.
    let manifest =
        serde_yaml::Deserializer::from_str(&repo_file("deploy/kubernetes/statefulset.yaml"))
            .map(|d| serde_yaml::Value::deserialize(d).unwrap())
            .find(|d| d["kind"] == "StatefulSet")
            .expect("a StatefulSet");
    let init = manifest["spec"]["template"]["spec"]["initContainers"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "init-volume-restore")
        .expect("the StatefulSet restores in init-volume-restore");
    let manifest_text = serde_yaml::to_string(init).unwrap();
    assert!(
        manifest_text.contains("volume-syncing-encryption")
            && manifest_text.contains("volume-syncing-remote")
    );
    let volume = sandbox.dir("new-volume");
    let mut vso = Vso::new(&sandbox);
    for (k, _) in server.remote_env() {
        vso.env(&k, decoded("volume-syncing-remote", &k));
    }
    vso.env(
        PASSPHRASE_KEY,
        decoded("volume-syncing-encryption", PASSPHRASE_KEY),
    );
    for arg in init["args"].as_sequence().unwrap() {
        let arg = arg
            .as_str()
            .unwrap()
            .replace("$(VSO_POD_NAME)", "app-stateful-0");
        if arg == "/data" {
            vso.arg(&volume);
        } else {
            vso.arg(arg);
        }
    }
    vso.run().assert_code(0);
    assert_eq!(data_of(&volume), data_of(&examples_data()));
}

#[test]
fn readme_recipe_nightly_replica_is_checked_and_its_cronjob_runs() {
    let sandbox = Sandbox::new();
    let dir = workdir(&sandbox);
    let blocks: Vec<_> = readme_blocks("Recipes")
        .into_iter()
        .filter(|b| b.iter().any(|c| c.text.contains("cronjob")))
        .collect();
    assert_eq!(blocks.len(), 1, "one block replicates");
    let mut checks = Vec::new();
    let (script, not_run) = script(&blocks, |c| {
        cluster_only(&c.text, &mut checks).unwrap_or_else(|| {
            panic!(
                "README.md:{}: a command this test does not know: {}",
                c.line, c.text
            )
        })
    });
    assert_eq!(script.lines().count(), 2, "nothing to run here");
    eprintln!("not run (no cluster here):\n  {}", not_run.join("\n  "));
    assert!(checks.len() >= 2, "{checks:?}");
    for check in &checks {
        check.run(&dir);
    }

    // What the CronJob runs: its own args and its Secret's variables, against two servers.
    const SOURCE_SECRET: &str = "source-secret-key-0123456789-abcdef";
    let source = S3Server::start_with_secret(SOURCE_SECRET);
    let destination = S3Server::start();
    let cronjob: serde_yaml::Value =
        serde_yaml::from_str(&repo_file("deploy/replication/cronjob.yaml")).unwrap();
    let container = &cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<String> = container["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let sources: Vec<&String> = args
        .windows(2)
        .filter(|w| w[0] == "-s")
        .map(|w| &w[1])
        .collect();
    assert!(sources.len() >= 2, "{args:?}");
    for bucket in &sources {
        seed(
            &sandbox,
            &source,
            &examples_data(),
            bucket,
            &[("REMOTE_SECRET_ACCESS_KEY", SOURCE_SECRET)],
        );
    }
    let secret: serde_yaml::Value =
        serde_yaml::Deserializer::from_str(&repo_file("deploy/replication/secret.yaml"))
            .map(|d| serde_yaml::Value::deserialize(d).unwrap())
            .find(|d| d["kind"] == "Secret")
            .unwrap();
    let mut vso = Vso::new(&sandbox);
    for (key, value) in secret["stringData"].as_mapping().unwrap() {
        let key = key.as_str().unwrap();
        let value = match key {
            "SOURCE_ENDPOINT" => source.endpoint(),
            "REMOTE_ENDPOINT" => destination.endpoint(),
            "SOURCE_ACCESS_KEY_ID" | "REMOTE_ACCESS_KEY_ID" => ACCESS_KEY.to_string(),
            "SOURCE_SECRET_ACCESS_KEY" => SOURCE_SECRET.to_string(),
            "REMOTE_SECRET_ACCESS_KEY" => SECRET_KEY.to_string(),
            _ => value.as_str().unwrap().to_string(),
        };
        vso.env(key, value);
    }
    let out = vso.args(&args).run();
    out.assert_code(0)
        .assert_contains(&format!("pair=\"{n}/{n}\"", n = sources.len()))
        .assert_contains("replication of every pair finished");
    let files = data_of(&examples_data()).len();
    assert_eq!(
        out.all()
            .lines()
            .filter(|l| l.contains("replication finished"))
            .filter(|l| l.contains(&format!("transferred_files={files} ")))
            .count(),
        sources.len(),
        "each pair counts its files (the manifest apart):\n{}",
        out.all()
    );
    out.assert_contains(&format!("transferred_files={} ", files * sources.len()))
        .assert_contains("internal_files=1 ");
    for bucket in &sources {
        assert_eq!(
            data_of(&destination.path(bucket)),
            data_of(&examples_data()),
            "{bucket}"
        );
    }
}
