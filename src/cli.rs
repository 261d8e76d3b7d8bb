//! The command line of the binary: the top-level `Cli` and its `Command`s, with the help
//! texts. The arguments of each command live with the crate that runs it
//! ([`vso_core::cli`] for the sync commands, `vso_k8s::cli` for `inject` and `operator`), so
//! the sidecar build (without the `operator` feature) has no Kubernetes command at all.
//! Doc comments are the `--help` text.

use clap::{Parser, Subcommand};

pub use vso_core::cli::{
    InterruptArgs, RemoteToLocalArgs, RemoteToRemoteArgs, SyncToRemoteArgs, default_pid_path,
};
pub use vso_core::logging::LogFormat;
#[cfg(feature = "operator")]
pub use vso_k8s::cli::{InjectArgs, OperatorArgs};

// The help texts after the options. Macros, not consts, because `concat!` (which builds the
// long help from the short one) takes literals only. `-h` shows `after_help`, `--help`
// `after_long_help`; tests below check that they say what the README says.

/// The exit codes of every command (README, "Exit codes").
macro_rules! exit_codes_help {
    () => {
        "\
Exit codes:
  0  success (also: --if-local-empty skipped a restore; a scheduled process whose final
     sync succeeded)
  1  failure: rclone failed, a timeout or a signal cut the sync, a lease was lost, I/O error
  2  usage or configuration error: nothing ran (bad flags or variables, rclone not found, ...)
  3  refused by a safety valve: nothing changed at either end"
    };
}

/// The variables of the destination remote (`[remote]`) and its encryption.
macro_rules! remote_variables_help {
    () => {
        "\
Environment variables:
  REMOTE_<KEY>=VALUE     becomes `<key> = VALUE` in section [remote] of a private rclone.conf:
                         REMOTE_TYPE=s3 (required unless --config-path), REMOTE_PROVIDER,
                         REMOTE_ENDPOINT, REMOTE_ACCESS_KEY_ID, REMOTE_SECRET_ACCESS_KEY, ...
                         (any option of the rclone backend); -p key=value wins over it
  ENCRYPTION_PASSPHRASE  switches on end-to-end encryption (rclone crypt) with this key, as
                         plain text; ENCRYPTION_SALT is an optional second password
  ENCRYPTED_<KEY>=VALUE  any other crypt option: ENCRYPTED_PASSWORD (an rclone-obscured key),
                         ENCRYPTED_FILENAME_ENCRYPTION, ...; -e key=value wins over it
  RCLONE_BINARY          the rclone executable (rclone >= 1.70), as --rclone-binary
  LOG_FORMAT             text or json, as --log-format"
    };
}

/// One line in `-h` of the sync commands pointing at the variables of `--help`.
macro_rules! variables_pointer {
    () => {
        "The remote is configured by REMOTE_* variables, encryption by ENCRYPTION_PASSPHRASE or \
         ENCRYPTED_*; --help lists them, and the exit codes."
    };
}

macro_rules! top_examples {
    () => {
        "\
Examples:
  export REMOTE_TYPE=s3 REMOTE_PROVIDER=AWS REMOTE_ACCESS_KEY_ID=... REMOTE_SECRET_ACCESS_KEY=...
  volume-syncing-operator sync-to-remote -s /data -d my-bucket/app
  volume-syncing-operator remote-to-local-sync -s my-bucket/app -d /data

'volume-syncing-operator COMMAND --help' shows each command's examples and variables."
    };
}

macro_rules! sync_to_remote_examples {
    () => {
        "\
Examples:
  # upload once
  export REMOTE_TYPE=s3 REMOTE_PROVIDER=AWS REMOTE_ACCESS_KEY_ID=... REMOTE_SECRET_ACCESS_KEY=...
  volume-syncing-operator sync-to-remote -s /data -d my-bucket/app
  # the sidecar: now, every 5 minutes, and one final sync on SIGTERM
  volume-syncing-operator sync-to-remote -s /data -d my-bucket/app --schedule '@every 5m'
  # on change, encrypted, with /metrics and /healthz
  ENCRYPTION_PASSPHRASE='...' volume-syncing-operator sync-to-remote -s /data -d my-bucket/app \\
    --watch --metrics-address 0.0.0.0:9090
  # what would change, with an extra rclone flag
  volume-syncing-operator sync-to-remote --dry-run -v -s /data -d my-bucket/app -- --transfers 16"
    };
}

macro_rules! remote_to_local_examples {
    () => {
        "\
Examples:
  # restore once
  export REMOTE_TYPE=s3 REMOTE_PROVIDER=AWS REMOTE_ACCESS_KEY_ID=... REMOTE_SECRET_ACCESS_KEY=...
  volume-syncing-operator remote-to-local-sync -s my-bucket/app -d /data
  # an init container: restore only into an empty volume
  volume-syncing-operator remote-to-local-sync --if-local-empty -s my-bucket/app -d /data
  # an encrypted remote
  ENCRYPTION_PASSPHRASE='...' volume-syncing-operator remote-to-local-sync -s my-bucket/app -d /data"
    };
}

macro_rules! remote_to_remote_examples {
    () => {
        "\
Examples:
  export SOURCE_TYPE=s3 SOURCE_ENDPOINT=https://s3.dc1.example SOURCE_ACCESS_KEY_ID=... ...
  export REMOTE_TYPE=s3 REMOTE_ENDPOINT=https://s3.dc2.example REMOTE_ACCESS_KEY_ID=... ...
  volume-syncing-operator remote-to-remote-sync -s app-data -d app-data
  # two pairs, nightly at 05:00
  volume-syncing-operator remote-to-remote-sync -s app-data -d app-data -s media -d media \\
    --schedule '0 0 5 * * *'"
    };
}

macro_rules! remote_to_remote_variables_help {
    () => {
        "\
Environment variables:
  SOURCE_<KEY>=VALUE     section [source], the remote replicated from (as REMOTE_<KEY>);
                         --source-param key=value wins over it
  SOURCE_ENCRYPTION_PASSPHRASE, SOURCE_ENCRYPTED_<KEY>
                         the source's encryption (as ENCRYPTION_PASSPHRASE, ENCRYPTED_<KEY>)
  REMOTE_<KEY>=VALUE     section [remote], the destination: REMOTE_TYPE=s3, REMOTE_ENDPOINT,
                         REMOTE_ACCESS_KEY_ID, ...; -p key=value wins over it
  ENCRYPTION_PASSPHRASE  encrypts the destination (rclone crypt); ENCRYPTION_SALT and
  ENCRYPTED_<KEY>=VALUE  any other crypt option as for sync-to-remote; -e wins over them
  RCLONE_BINARY          the rclone executable (rclone >= 1.70), as --rclone-binary
  LOG_FORMAT             text or json, as --log-format"
    };
}

macro_rules! interrupt_examples {
    () => {
        "\
Examples:
  volume-syncing-operator sync-to-remote -s /data -d my-bucket/app --schedule '@every 5m' &
  volume-syncing-operator interrupt     # its final sync, then both exit
  # a Kubernetes preStop hook, with the sidecar's --pid-path
  volume-syncing-operator interrupt --pid-path /tmp/vso.pid --timeout 5m"
    };
}

#[cfg(feature = "operator")]
macro_rules! inject_examples {
    () => {
        "\
Examples:
  volume-syncing-operator inject -f deployment.yaml --sync sync.yaml > injected.yaml
  kubectl kustomize . | volume-syncing-operator inject -f - --sync sync.yaml | kubectl apply -f -"
    };
}

#[cfg(feature = "operator")]
macro_rules! operator_examples {
    () => {
        "\
Examples:
  # in a cluster it is deployed by kubectl apply -k deploy/operator (README.md)
  volume-syncing-operator operator --namespace volume-syncing-operator
  # with a certificate mounted from cert-manager
  volume-syncing-operator operator --namespace vso --tls-cert-file /tls/tls.crt \\
    --tls-key-file /tls/tls.key"
    };
}

/// `--version`: the program's and the rclone it needs (a separate executable).
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (needs rclone >= 1.70)");

/// Keeps a directory and an rclone remote in sync, and refuses any run that would wipe data.
///
/// A wrapper around the rclone executable (rclone >= 1.70) for shells, containers and
/// Kubernetes (a restore init container plus a backup sidecar).
///
/// The remote is configured from REMOTE_* environment variables (REMOTE_TYPE=s3 becomes
/// `type = s3` in section [remote] of a private, temporary rclone.conf) and -p key=value.
/// Encryption is switched on by ENCRYPTED_* / ENCRYPTION_PASSPHRASE variables or -e key=value.
#[derive(Debug, Parser)]
#[command(
    name = "volume-syncing-operator",
    version = VERSION,
    propagate_version = true,
    after_help = concat!(top_examples!(), "\n--help also shows the exit codes."),
    after_long_help = concat!(top_examples!(), "\n\n", exit_codes_help!())
)]
pub struct Cli {
    /// More output: -v logs every transferred file, -vv adds debug output.
    ///
    /// -vv also logs the rendered rclone config, with secret values redacted.
    #[arg(short, long, action = clap::ArgAction::Count, global = true,
          help_heading = "Global options")]
    pub verbose: u8,

    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, value_enum, env = "LOG_FORMAT", default_value_t = LogFormat::Text, global = true,
          help_heading = "Global options")]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Upload LOCAL_DIR to remote:REMOTE_PATH (rclone sync; with -x rclone copy).
    #[command(
        after_help = concat!(sync_to_remote_examples!(), "\n\n", variables_pointer!()),
        after_long_help = concat!(sync_to_remote_examples!(), "\n\n", remote_variables_help!(),
                                  "\n\n", exit_codes_help!())
    )]
    SyncToRemote(SyncToRemoteArgs),
    /// Restore remote:REMOTE_PATH into LOCAL_DIR (rclone sync; with -x rclone copy).
    #[command(
        after_help = concat!(remote_to_local_examples!(), "\n\n", variables_pointer!()),
        after_long_help = concat!(remote_to_local_examples!(), "\n\n", remote_variables_help!(),
                                  "\n\n", exit_codes_help!())
    )]
    RemoteToLocalSync(RemoteToLocalArgs),
    /// Replicate remote paths to remote paths: source:SOURCE_PATH (SOURCE_*) to
    /// remote:REMOTE_PATH (REMOTE_*), server to server (rclone sync; with -x rclone copy).
    ///
    /// Several pairs per run: repeat -s and -d (the n-th -s goes to the n-th -d). Each pair
    /// has its own safety valves, lease and summary line; a failing pair does not stop the
    /// others, and the exit code is the worst of them (3, then 2, then 1).
    #[command(
        after_help = concat!(remote_to_remote_examples!(), "\n\n",
                             "The source is configured by SOURCE_* variables, the destination by \
                              REMOTE_* (encryption: ENCRYPTION_PASSPHRASE, ENCRYPTED_*); --help \
                              lists them, and the exit codes."),
        after_long_help = concat!(remote_to_remote_examples!(), "\n\n",
                                  remote_to_remote_variables_help!(), "\n\n", exit_codes_help!())
    )]
    RemoteToRemoteSync(RemoteToRemoteArgs),
    /// Ask a running scheduled instance to do its final sync and exit; wait until it has.
    ///
    /// Meant as the Kubernetes preStop hook: it returns only after the process has exited,
    /// and exits 0 only if that process's final sync succeeded.
    #[command(after_help = interrupt_examples!())]
    Interrupt(InterruptArgs),
    /// Add the restore init container and the sync sidecar of PodFilesystemSync resources to
    /// the pod templates of Kubernetes manifests, offline; prints the manifests.
    ///
    /// Reads multi-document YAML (Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job,
    /// CronJob, and the items of a List; other kinds pass through unchanged). Bad input exits 2
    /// and prints nothing on stdout.
    #[cfg(feature = "operator")]
    #[command(after_help = inject_examples!())]
    Inject(InjectArgs),
    /// Print the CustomResourceDefinition of PodFilesystemSync (YAML).
    #[cfg(feature = "operator")]
    #[command(hide = true)]
    Crd,
    /// Run the Kubernetes admission webhook: inject PodFilesystemSync resources into labelled
    /// Pods as they are created (HTTPS; /mutate, /healthz, /readyz, /metrics).
    ///
    /// Talks to the API server from its in-cluster service account (or KUBECONFIG). Without
    /// --tls-cert-file it keeps a CA and serving certificate in the Secret --tls-secret and writes
    /// the CA into the caBundle of --webhook-configuration.
    #[cfg(feature = "operator")]
    #[command(after_help = operator_examples!())]
    Operator(OperatorArgs),
    /// `inject`, `crd` or `operator` asked of the sidecar build, which leaves the Kubernetes
    /// commands out (no kube, k8s-openapi, minijinja in every Pod): exit 2, naming the binary
    /// that has them.
    #[cfg(not(feature = "operator"))]
    #[command(name = "inject", hide = true, disable_help_flag = true)]
    Inject(KubernetesCommand),
    #[cfg(not(feature = "operator"))]
    #[command(name = "crd", hide = true, disable_help_flag = true)]
    Crd(KubernetesCommand),
    #[cfg(not(feature = "operator"))]
    #[command(name = "operator", hide = true, disable_help_flag = true)]
    Operator(KubernetesCommand),
}

/// Whatever follows a Kubernetes command in the sidecar build.
#[cfg(not(feature = "operator"))]
#[derive(Debug, clap::Args)]
pub struct KubernetesCommand {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    pub args: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use vso_core::cli::MIN_RCLONE_VERSION;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("volume-syncing-operator").chain(args.iter().copied()))
    }

    #[test]
    fn valid_and_invalid_command_lines() {
        let ok = [
            "sync-to-remote -s /data -d b/p",
            "sync-to-remote -s /data -d b/p -x --dry-run -vv",
            "sync-to-remote -s /d -d b -- --transfers 16",
            "remote-to-local-sync -s b/p -d /data --if-local-empty",
            "remote-to-local-sync -s b -d /d --skip-objects-under-links --restore-setid-bits",
            "remote-to-local-sync -s b -d /d -c f --no-template",
            "sync-to-remote -s /d -d b --schedule @hourly",
            "sync-to-remote -s /d -d b --schedule @daily --shutdown-timeout 30s",
            "sync-to-remote -s /d -d b --watch --debounce 1s --min-interval 1m",
            "sync-to-remote -s /d -d b --watch --schedule @hourly --pid-path /p",
            "sync-to-remote -s /d -d b --watch --metrics-address 127.0.0.1:0",
            "remote-to-local-sync -s b -d /d --schedule @hourly --metrics-address :9090",
            "sync-to-remote -s /d -d b --force-take-over-lease --lease-ttl 30s",
            "sync-to-remote -s /d -d b --lease-max-clock-skew 5s --schedule @hourly",
            "remote-to-local-sync -s b -d /d --wait-for-writer 0",
            "remote-to-local-sync -s b -d /d --wait-for-writer 1m --lease-max-clock-skew 1m",
            "remote-to-remote-sync -s a -d b",
            "remote-to-remote-sync -s a -d b -s c -d d -x --dry-run --source-param type=s3",
            "remote-to-remote-sync -s a -d b --schedule @daily --metrics-address :9090",
            "remote-to-remote-sync -s a -d b --force-even-if-destination-would-be-cleared",
            "remote-to-remote-sync -s a -d b --max-delete-percent 100",
            "sync-to-remote -s /d -d b --lease-ttl 1d --retries 100",
            "sync-to-remote -s /d -d b --schedule @daily --max-sync-age 366d",
            "sync-to-remote -s /d -d b --schedule @daily --max-consecutive-failures 10000",
            "remote-to-local-sync -s b -d /d --wait-for-writer 1d --lease-max-clock-skew 1h",
            "interrupt",
            "interrupt --pid-path /tmp/x.pid --timeout 1m",
            "inject -f app.yaml --sync s.yaml",
            "inject -f - --sync a.yaml --sync b.yaml --native-sidecars=false --image i:1",
            "crd",
        ];
        for line in ok {
            assert!(
                parse(&line.split_whitespace().collect::<Vec<_>>()).is_ok(),
                "should parse: {line}"
            );
        }
        let bad = [
            "sync-to-remote -s /data",
            "sync-to-remote -d b",
            "sync-to-remote -s /d -d b -c f",
            "sync-to-remote -s /d -d b --no-template",
            "sync-to-remote -s /d -d b --shutdown-timeout 1m",
            "sync-to-remote -s /d -d b --pid-path /x",
            "sync-to-remote -s /d -d b --metrics-address 127.0.0.1:9090",
            "sync-to-remote -s /d -d b --debounce 1s",
            "remote-to-local-sync -s b -d /d --watch",
            "sync-to-remote -s /d -d b --restore-setid-bits",
            "sync-to-remote -s /d -d b --skip-objects-under-links",
            "sync-to-remote -s /d -d b --schedule @daily --max-consecutive-failures 0",
            "sync-to-remote -s /d -d b --if-local-empty",
            "remote-to-local-sync -s b -d /d --force-even-if-remote-would-be-cleared",
            "interrupt --timeout soon",
            "sync-to-remote -s /d -d b --wait-for-writer 1m",
            "remote-to-local-sync -s b -d /d --force-take-over-lease",
            "sync-to-remote -s /d -d b --lease-ttl soon",
            "sync-to-remote -s /d -d b --lease-ttl 100000000d",
            "sync-to-remote -s /d -d b --lease-ttl 5000000d",
            "sync-to-remote -s /d -d b --lease-ttl 14s",
            "sync-to-remote -s /d -d b --lease-ttl 25h",
            "sync-to-remote -s /d -d b --lease-max-clock-skew 2h",
            "sync-to-remote -s /d -d b --retries 101",
            "sync-to-remote -s /d -d b --sync-timeout 367d",
            "sync-to-remote -s /d -d b --watch --debounce 2h",
            "sync-to-remote -s /d -d b --watch --min-interval 2d",
            "sync-to-remote -s /d -d b --watch --full-sync-every 400d",
            "sync-to-remote -s /d -d b --schedule @daily --shutdown-timeout 2d",
            "sync-to-remote -s /d -d b --schedule @daily --max-sync-age 18446744073709551615s",
            "sync-to-remote -s /d -d b --schedule @daily --max-consecutive-failures 10001",
            "remote-to-local-sync -s b -d /d --wait-for-writer 2d",
            "remote-to-remote-sync -s a -d b --max-delete-percent 101",
            "interrupt --timeout 100000000d",
            "remote-to-remote-sync -s a",
            "remote-to-remote-sync -d b",
            "remote-to-remote-sync -s a -d b --watch",
            "remote-to-remote-sync -s a -d b --shutdown-timeout 1m",
            "no-such-command",
            "inject -f app.yaml",
            "inject --sync s.yaml",
            "inject -f a --sync s --native-sidecars=maybe",
        ];
        for line in bad {
            let err = parse(&line.split_whitespace().collect::<Vec<_>>()).expect_err(line);
            assert_eq!(err.exit_code(), 2, "usage errors exit 2: {line}");
        }
    }

    /// The long (`--help`) and short (`-h`) help of a command path, e.g. `["sync-to-remote"]`.
    fn helps(path: &[&str]) -> (String, String) {
        let mut cmd = Cli::command();
        cmd.build();
        let mut cmd = &mut cmd;
        for name in path {
            cmd = cmd.find_subcommand_mut(name).expect(name);
        }
        (
            cmd.render_long_help().to_string(),
            cmd.render_help().to_string(),
        )
    }

    fn subcommand_paths() -> Vec<Vec<&'static str>> {
        let mut paths = vec![
            vec!["sync-to-remote"],
            vec!["remote-to-local-sync"],
            vec!["remote-to-remote-sync"],
            vec!["interrupt"],
            vec!["inject"],
        ];
        if cfg!(feature = "operator") {
            paths.push(vec!["operator"]);
        }
        paths
    }

    /// Splits an example line the way a shell would for the cases the examples use: words,
    /// '...' quoting; stops at a comment, a pipe, a redirection or `&`.
    fn shell_words(line: &str) -> Vec<String> {
        let (mut words, mut word, mut quoted, mut in_word) =
            (Vec::new(), String::new(), false, false);
        for c in line.chars() {
            match c {
                '\'' => {
                    quoted = !quoted;
                    in_word = true;
                }
                c if quoted => word.push(c),
                '#' | '|' | '>' | '&' if !in_word => break,
                c if c.is_whitespace() => {
                    if in_word {
                        words.push(std::mem::take(&mut word));
                        in_word = false;
                    }
                }
                c => {
                    word.push(c);
                    in_word = true;
                }
            }
        }
        if in_word {
            words.push(word);
        }
        words
    }

    #[test]
    fn help_says_what_it_promises() {
        let (long, short) = helps(&[]);
        for code in [
            "Exit codes:",
            "0  success",
            "1  failure",
            "2  usage or configuration error",
            "3  refused by a safety valve",
        ] {
            assert!(long.contains(code), "--help lacks {code:?}:\n{long}");
        }
        assert!(long.contains("rclone >= 1.70"), "{long}");
        assert!(
            short.contains("Examples:") && !short.contains("Exit codes:"),
            "{short}"
        );
        assert!(short.lines().count() < long.lines().count());
        assert!(
            VERSION.contains(&format!("rclone >= {MIN_RCLONE_VERSION}")),
            "--version names the rclone needed: {VERSION}"
        );
        let version = Cli::command().render_version().to_string();
        assert!(version.contains(VERSION), "{version}");

        for path in subcommand_paths() {
            let (long, short) = helps(&path);
            assert!(long.contains("Examples:"), "{path:?} --help:\n{long}");
            assert!(short.contains("Examples:"), "{path:?} -h:\n{short}");
            assert!(
                short.lines().count() < long.lines().count() || path == ["interrupt"],
                "{path:?}: -h is as long as --help"
            );
        }
        for path in [
            ["sync-to-remote"],
            ["remote-to-local-sync"],
            ["remote-to-remote-sync"],
        ] {
            let (long, short) = helps(&path);
            for promised in [
                "REMOTE_<KEY>",
                "REMOTE_TYPE",
                "ENCRYPTED_<KEY>",
                "ENCRYPTION_PASSPHRASE",
                "RCLONE_BINARY",
                "Exit codes:",
                "3  refused by a safety valve",
                "version 1.70 or newer",
            ] {
                assert!(
                    long.contains(promised),
                    "{path:?} --help lacks {promised:?}"
                );
            }
            assert!(short.contains("REMOTE_*") && short.contains("ENCRYPTION_PASSPHRASE"));
        }
        let (long, _) = helps(&["remote-to-remote-sync"]);
        assert!(long.contains("SOURCE_<KEY>") && long.contains("SOURCE_ENCRYPTION_PASSPHRASE"));
    }

    /// Every command line shown under "Examples:" parses (so the help cannot show a flag that
    /// was renamed).
    #[test]
    fn the_examples_in_the_help_parse() {
        let mut checked = 0;
        for path in std::iter::once(vec![]).chain(subcommand_paths()) {
            let (long, _) = helps(&path);
            let examples = long.split("Examples:").nth(1).expect("examples");
            let examples = examples.replace("\\\n", " ");
            for line in examples.lines() {
                let Some(at) = line.find("volume-syncing-operator ") else {
                    continue;
                };
                if line[at..].starts_with("volume-syncing-operator COMMAND") {
                    continue;
                }
                let words = shell_words(&line[at..]);
                Cli::try_parse_from(&words)
                    .unwrap_or_else(|e| panic!("example does not parse: {words:?}\n{e}"));
                checked += 1;
            }
        }
        assert!(checked >= 15, "only {checked} examples found");
    }

    #[test]
    fn a_duration_out_of_bounds_names_the_flag_and_the_bound() {
        let err = parse(&[
            "sync-to-remote",
            "-s",
            "/d",
            "-d",
            "b",
            "--lease-ttl",
            "5000000d",
        ])
        .expect_err("out of bounds")
        .to_string();
        assert!(
            err.contains("--lease-ttl") && err.contains("must be between 15s and 1d"),
            "{err}"
        );
    }
}
