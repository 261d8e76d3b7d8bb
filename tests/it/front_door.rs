//! The front door: README and `--help` say the same where they overlap, so neither can drift
//! without this failing (issue 29). Checks every long flag of the commands a user types, the
//! exit-code table, the environment variables the help names, and the make targets and files
//! the README's getting-started paths point at. Pure text: no binary, no server.

use std::collections::BTreeSet;
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
