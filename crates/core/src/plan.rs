//! Parse, then validate once: the command line and the environment become a [`Plan`] (rendered
//! config, resolved rclone, parsed schedule, checked paths) before anything runs. Every problem
//! found here is a configuration error (exit 2) and nothing has started.

use std::path::PathBuf;
use std::time::Duration;

use crate::cli::{
    CommonArgs, LeaseArgs, RemoteToLocalArgs, RemoteToRemoteArgs, SyncToRemoteArgs,
    default_pid_path,
};
use crate::daemon::schedule::Schedule;
use crate::daemon::watch::WatchSettings;
use crate::error::{Error, Result};
use crate::remote::config::{
    self, CRYPT_SECTION, ConfigFile, REMOTE_SECTION, SOURCE_CRYPT_SECTION, SOURCE_SECTION,
};
use crate::remote::crypt::{self, CryptSettings, KeyCheck};
use crate::remote::path::RemoteEnd;
use crate::remote::rclone::{self, Rclone};
use crate::remote::scrub::Scrubber;
use crate::sync::job::{Direction, Job, Overrides};
use crate::sync::lease;
use crate::sync::replicate::{self, Replication};
use crate::sync::valves::crypt_marker::{MarkerWriter, PlainGuard};
use crate::sync::valves::mass_delete::Guard;

/// A validated run: the job, how often to run it, and the config file it needs (kept alive,
/// and so on disk, exactly as long as the plan).
pub struct Plan {
    pub job: Job,
    /// Set for the long-running mode (--schedule and/or --watch).
    pub long_running: Option<LongRunningPlan>,
    pub config: ConfigFile,
    /// What the run does with the lease of the remote path ([`crate::sync::lease`]).
    pub lease: lease::Role,
    /// `--termination-message-path`: where the summary of the last sync goes at the end.
    pub termination_message: Option<PathBuf>,
}

/// How the long-running mode triggers syncs and reports on them.
pub struct LongRunningPlan {
    pub schedule: Option<Schedule>,
    pub watch: Option<WatchSettings>,
    pub shutdown_timeout: Duration,
    pub pid_path: PathBuf,
    pub metrics_address: Option<String>,
    pub max_consecutive_failures: u32,
    /// `--max-sync-age`, or the default derived from the triggers.
    pub max_sync_age: Duration,
}

/// Builds the plan for sync-to-remote.
pub async fn upload(args: SyncToRemoteArgs, verbose: u8) -> Result<Plan> {
    match std::fs::metadata(&args.src) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(Error::config(format!(
                "source {} is not a directory",
                args.src.display()
            )));
        }
        Err(e) => {
            return Err(Error::config(format!(
                "source directory {} cannot be read: {e}",
                args.src.display()
            )));
        }
    }
    let overrides = Overrides {
        upload_empty: args.force_even_if_remote_would_be_cleared,
        upload_partial: args.force_upload_partial_restore,
        max_delete_percent: Some(args.max_delete_percent),
        ..Overrides::default()
    };
    let watch = args.watch.watch.then(|| WatchSettings {
        debounce: args.watch.debounce,
        min_interval: args.watch.min_interval.unwrap_or(Duration::ZERO),
        full_sync_every: args.watch.full_sync_every,
    });
    let role = writer_role(&args.lease)?;
    build(
        Direction::Upload,
        args.src,
        args.dst,
        overrides,
        args.common,
        watch,
        verbose,
    )
    .await
    .map(|plan| Plan {
        lease: role,
        ..plan
    })
}

/// The lease role of a writer (sync-to-remote, and every destination of remote-to-remote-sync).
fn writer_role(args: &LeaseArgs) -> Result<lease::Role> {
    if args.lease_ttl < lease::MIN_TTL {
        return Err(Error::config(format!(
            "--lease-ttl must be at least {}s",
            lease::MIN_TTL.as_secs()
        )));
    }
    Ok(lease::Role::Writer(lease::WriterSettings {
        ttl: args.lease_ttl,
        max_skew: args.lease_max_clock_skew,
        force_take_over: args.force_take_over_lease,
    }))
}

/// Builds the plan for remote-to-local-sync.
pub async fn restore(args: RemoteToLocalArgs, verbose: u8) -> Result<Plan> {
    if args.dst.exists() && !args.dst.is_dir() {
        return Err(Error::config(format!(
            "destination {} exists and is not a directory",
            args.dst.display()
        )));
    }
    let overrides = Overrides {
        restore: args.force_delete_local_dir,
        if_local_empty: args.if_local_empty,
        skip_if_never_uploaded: args.skip_if_never_uploaded,
        skip_objects_under_links: args.skip_objects_under_links,
        restore_setid_bits: args.restore_setid_bits,
        ..Overrides::default()
    };
    let plan = build(
        Direction::Restore,
        args.dst,
        args.src,
        overrides,
        args.common,
        None,
        verbose,
    )
    .await?;
    // A scheduled restore mirrors a live writer on purpose: it does not wait for it. Nor does
    // a restore that --if-local-empty will skip (a recreated Pod keeping its volume).
    let skipped = args.if_local_empty
        && crate::sync::valves::safety::local_state(&plan.job.local)
            .is_ok_and(|s| s.has_data && !s.has_marker);
    let lease = if plan.long_running.is_some() || skipped {
        lease::Role::None
    } else {
        lease::Role::Reader {
            wait: args.wait_for_writer,
            max_skew: args.lease_max_clock_skew,
        }
    };
    Ok(Plan { lease, ..plan })
}

/// The environment as text. A variable that configures the remote but is not valid UTF-8 is an
/// error (skipping it would silently change the configuration); others are passed over.
fn config_environment() -> Result<Vec<(String, String)>> {
    let mut env = Vec::new();
    for (name, value) in std::env::vars_os() {
        let Ok(name) = name.into_string() else {
            continue;
        };
        match value.into_string() {
            Ok(value) => env.push((name, value)),
            Err(_)
                if rclone::PRIVATE_ENV_PREFIXES
                    .iter()
                    .any(|p| name.starts_with(p)) =>
            {
                return Err(Error::config(format!(
                    "{name} is not valid UTF-8; rclone.conf values must be text"
                )));
            }
            Err(_) => {}
        }
    }
    Ok(env)
}

/// The options of one section from `<prefix>*` variables and `flag` (e.g. `-p`), which must
/// name a backend type. `what` names the section in messages ("remote", "source").
fn section_options<'a>(
    env: impl IntoIterator<Item = (&'a str, &'a str)>,
    prefix: &str,
    params: &[String],
    flag: &str,
    what: &str,
) -> Result<config::Options> {
    let options = config::collect_options(env, prefix, params, flag)?;
    if options.get("type").is_some_and(|t| t.trim().is_empty()) {
        return Err(Error::config(format!(
            "{prefix}TYPE (or {flag} type=...) is empty: name an rclone backend, e.g. {prefix}TYPE=s3"
        )));
    }
    if !options.contains_key("type") {
        return Err(Error::config(format!(
            "no {what} configured: set {prefix}TYPE (e.g. {prefix}TYPE=s3) and the other {prefix}* \
             options, or pass {flag} type=..., or use an existing file with --config-path FILE \
             --no-template"
        )));
    }
    Ok(options)
}

/// Options on the command line cannot be added to a user's config file.
fn no_params_with_file(params: &[String], flag: &str) -> Result<()> {
    if params.is_empty() {
        Ok(())
    } else {
        Err(Error::config(format!(
            "{flag} cannot be combined with --no-template; edit the config file instead"
        )))
    }
}

/// `--schedule`, parsed.
fn parse_schedule(common: &CommonArgs) -> Result<Option<Schedule>> {
    common
        .schedule
        .schedule
        .as_deref()
        .map(Schedule::parse)
        .transpose()
        .map_err(Error::Config)
}

/// The long-running mode's settings, when a schedule or watch is given.
fn long_running_plan(
    common: &CommonArgs,
    schedule: Option<Schedule>,
    watch: Option<WatchSettings>,
) -> Option<LongRunningPlan> {
    (schedule.is_some() || watch.is_some()).then(|| LongRunningPlan {
        shutdown_timeout: common.schedule.shutdown_timeout,
        pid_path: common
            .schedule
            .pid_path
            .clone()
            .unwrap_or_else(default_pid_path),
        metrics_address: common.schedule.metrics_address.clone(),
        max_consecutive_failures: common.schedule.max_consecutive_failures,
        max_sync_age: common.schedule.max_sync_age.unwrap_or_else(|| {
            crate::daemon::schedule::default_max_sync_age(
                schedule.as_ref(),
                watch.as_ref().map(|w| w.full_sync_every),
            )
        }),
        schedule,
        watch,
    })
}

async fn build(
    direction: Direction,
    local: PathBuf,
    remote_path: String,
    overrides: Overrides,
    common: CommonArgs,
    watch: Option<WatchSettings>,
    verbose: u8,
) -> Result<Plan> {
    let remote_flag = match direction {
        Direction::Upload => "-d/--dst",
        Direction::Restore => "-s/--src",
    };
    let end = RemoteEnd::new(REMOTE_SECTION, &remote_path, remote_flag)?;
    let env = config_environment()?;
    let env_refs = || env.iter().map(|(k, v)| (k.as_str(), v.as_str()));

    let schedule = parse_schedule(&common)?;

    // Everything that needs no process is checked before rclone is even looked up.
    let crypt_settings = CryptSettings::collect(env_refs(), &common.enc_params)?;
    let base_text = if common.no_template {
        let path = common
            .config_path
            .as_deref()
            .expect("clap: --no-template requires --config-path");
        Some(config::read_existing(path, &[REMOTE_SECTION])?)
    } else {
        None
    };
    let remote_options = if base_text.is_none() {
        Some(section_options(
            env_refs(),
            "REMOTE_",
            &common.params,
            "-p",
            "remote",
        )?)
    } else {
        no_params_with_file(&common.params, "-p")?;
        None
    };
    let binary = rclone::resolve_binary(common.rclone_binary.as_deref())?;

    // rclone's output is scrubbed of every secret of the config, and of the plain passphrase.
    let mut scrubber = Scrubber::new(
        crypt_settings
            .as_ref()
            .map(CryptSettings::plain_secrets)
            .unwrap_or_default(),
    );
    let (config, remote, key_check) = match (crypt_settings, remote_options, base_text) {
        (None, None, Some(base)) => {
            scrubber.extend(config::secret_values(&base));
            let path = common.config_path.as_deref().expect("checked above");
            (ConfigFile::existing(path), end, None)
        }
        (crypt, options, base) => {
            let mut text = match (&options, base) {
                (Some(options), _) => config::render_section(REMOTE_SECTION, options),
                (None, Some(base)) => base,
                (None, None) => unreachable!("either REMOTE_* options or an existing file"),
            };
            let mut redacted = options
                .as_ref()
                .map(|o| config::render_redacted(REMOTE_SECTION, o))
                .unwrap_or_else(|| "(existing config file)\n".into());
            let mut key_check = None;
            let mut remote = end;
            if let Some(crypt) = crypt {
                // Obscuring a passphrase needs rclone, but no config yet.
                let obscurer = Rclone::new(binary.clone(), PathBuf::from("/dev/null"), verbose)
                    .with_scrubber(scrubber.clone());
                let section = crypt.section(&obscurer, &remote_path).await?;
                text.push_str(&format!(
                    "\n{}",
                    config::render_section(CRYPT_SECTION, &section)
                ));
                redacted.push_str(&format!(
                    "\n{}",
                    config::render_redacted(CRYPT_SECTION, &section)
                ));
                remote = remote.encrypted_by(crypt::crypt_root());
                key_check = Some(KeyCheck {
                    end: remote.clone(),
                });
            }
            if verbose >= 2 {
                config::log_redacted(&redacted);
            }
            scrubber.extend(config::secret_values(&text));
            (ConfigFile::private(&text)?, remote, key_check)
        }
    };

    let long_running = long_running_plan(&common, schedule, watch);
    let termination_message = common.termination_message_path.clone();
    let mass_delete_percent = overrides.max_delete_percent.unwrap_or(100);
    let job = Job {
        direction,
        local,
        plain_guard: key_check.is_none().then(|| PlainGuard::new(remote.clone())),
        remote,
        no_delete: common.no_delete,
        dry_run: common.dry_run,
        overrides,
        rclone: Rclone::new(binary, config.path().to_path_buf(), verbose).with_scrubber(scrubber),
        user_flags: common.rclone_args,
        retries: common.retries,
        sync_timeout: common.sync_timeout,
        key_check,
        encryption_marker: MarkerWriter::default(),
        mass_delete: Guard::new(mass_delete_percent),
        last_manifest: Default::default(),
    };
    Ok(Plan {
        job,
        long_running,
        config,
        lease: lease::Role::None,
        termination_message,
    })
}

/// Refuses pairs whose source and destination overlap on the same remote
/// ([`replicate::check_overlap`]), and two pairs whose destinations overlap: one would delete
/// or overwrite what the other wrote, and their leases (taken together) would be one object.
fn check_overlaps(
    pairs: (&[String], &[String]),
    source: &config::Options,
    remote: &config::Options,
) -> Result<()> {
    for (src, dst) in pairs.0.iter().zip(pairs.1) {
        replicate::check_overlap(source, remote, src, dst)?;
    }
    for (i, a) in pairs.1.iter().enumerate() {
        if let Some(b) = pairs.1[i + 1..]
            .iter()
            .find(|b| replicate::paths_overlap(a, b))
        {
            return Err(Error::config(format!(
                "-d/--dst {a} and -d/--dst {b} overlap: one pair would delete or overwrite what \
                 the other replicated; give each pair a destination of its own"
            )));
        }
    }
    Ok(())
}

/// The options of section `[name]` of an rclone.conf text (`key = value` lines up to the next
/// section), as rendered from variables would hold them; for comparing two sections only.
fn section_in(text: &str, name: &str) -> config::Options {
    let header = format!("[{name}]");
    text.lines()
        .map(str::trim)
        .skip_while(|l| *l != header)
        .skip(1)
        .take_while(|l| !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect()
}

/// A validated `remote-to-remote-sync`: the pairs, how often to run them, and the config file
/// with both remotes (kept alive, and so on disk, exactly as long as the plan).
pub struct ReplicationPlan {
    pub replication: Replication,
    pub long_running: Option<LongRunningPlan>,
    pub config: ConfigFile,
    /// `--termination-message-path`: where the summary of the last run goes at the end.
    pub termination_message: Option<PathBuf>,
}

/// Builds the plan for remote-to-remote-sync. The config holds `[remote]` (the destinations,
/// `REMOTE_*`), `[source]` (`SOURCE_*`), and per pair a crypt section for each encrypted side:
/// a crypt remote wraps one path (`crypt` wraps `remote:<path>` exactly as sync-to-remote's
/// does, so a replica restores with the same settings), hence one per pair, numbered from the
/// second (`crypt-2`, `source-crypt-2`, …).
pub async fn replicate(args: RemoteToRemoteArgs, verbose: u8) -> Result<ReplicationPlan> {
    let common = args.common;
    if args.src.len() != args.dst.len() {
        return Err(Error::config(format!(
            "give one -d/--dst per -s/--src (got {} -s and {} -d): the n-th source path is \
             replicated to the n-th destination path",
            args.src.len(),
            args.dst.len()
        )));
    }
    let sources = (args.src.iter())
        .map(|path| RemoteEnd::new(SOURCE_SECTION, path, "-s/--src"))
        .collect::<Result<Vec<_>>>()?;
    let destinations = (args.dst.iter())
        .map(|path| RemoteEnd::new(REMOTE_SECTION, path, "-d/--dst"))
        .collect::<Result<Vec<_>>>()?;
    for (index, path) in args.dst.iter().enumerate() {
        if args.dst[..index].contains(path) {
            return Err(Error::config(format!(
                "the destination path {path} is given twice (-d/--dst): the second pair would \
                 replace what the first replicated"
            )));
        }
    }
    let role = writer_role(&args.lease)?;
    let env = config_environment()?;
    let env_refs = || env.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    // SOURCE_ENCRYPTED_* and SOURCE_ENCRYPTION_* configure the source's crypt, not [source].
    let source_env = || {
        env_refs().filter(|(k, _)| {
            !k.starts_with("SOURCE_ENCRYPTED_") && !k.starts_with("SOURCE_ENCRYPTION_")
        })
    };
    let schedule = parse_schedule(&common)?;
    let destination_crypt = CryptSettings::collect(env_refs(), &common.enc_params)?;
    let source_crypt = CryptSettings::collect_prefixed(
        env_refs(),
        "SOURCE_",
        &args.source_enc_params,
        "--source-enc-param",
    )?;
    let (mut text, mut redacted) = if common.no_template {
        let path = common
            .config_path
            .as_deref()
            .expect("clap: --no-template requires --config-path");
        no_params_with_file(&common.params, "-p")?;
        no_params_with_file(&args.source_params, "--source-param")?;
        let text = config::read_existing(path, &[REMOTE_SECTION, SOURCE_SECTION])?;
        check_overlaps(
            (&args.src, &args.dst),
            &section_in(&text, SOURCE_SECTION),
            &section_in(&text, REMOTE_SECTION),
        )?;
        (text, "(existing config file)\n".to_string())
    } else {
        let remote = section_options(env_refs(), "REMOTE_", &common.params, "-p", "remote")?;
        let source = section_options(
            source_env(),
            "SOURCE_",
            &args.source_params,
            "--source-param",
            "source",
        )?;
        check_overlaps((&args.src, &args.dst), &source, &remote)?;
        (
            format!(
                "{}\n{}",
                config::render_section(REMOTE_SECTION, &remote),
                config::render_section(SOURCE_SECTION, &source)
            ),
            format!(
                "{}\n{}",
                config::render_redacted(REMOTE_SECTION, &remote),
                config::render_redacted(SOURCE_SECTION, &source)
            ),
        )
    };
    let binary = rclone::resolve_binary(common.rclone_binary.as_deref())?;
    let mut scrubber = Scrubber::new(
        [&destination_crypt, &source_crypt]
            .into_iter()
            .flatten()
            .flat_map(CryptSettings::plain_secrets)
            .collect::<Vec<_>>(),
    );
    // Obscuring a passphrase needs rclone, but no config yet.
    let obscurer = Rclone::new(binary.clone(), PathBuf::from("/dev/null"), verbose)
        .with_scrubber(scrubber.clone());
    let destination_crypt = match destination_crypt {
        Some(settings) => Some(settings.obscured(&obscurer).await?),
        None => None,
    };
    let source_crypt = match source_crypt {
        Some(settings) => Some(settings.obscured(&obscurer).await?),
        None => None,
    };
    let mut ends = Vec::new();
    for (index, (src, dst)) in sources.into_iter().zip(destinations).enumerate() {
        let suffix = if index == 0 {
            String::new()
        } else {
            format!("-{}", index + 1)
        };
        let mut end = |remote: RemoteEnd, crypt: &Option<config::Options>, section: &str| {
            let Some(options) = crypt else {
                return replicate::End {
                    plain_guard: Some(PlainGuard::new(remote.clone())),
                    remote,
                    key_check: None,
                    encryption_marker: MarkerWriter::default(),
                };
            };
            let name = format!("{section}{suffix}");
            let options = crypt::wrap(options, remote.shown());
            text.push_str(&format!("\n{}", config::render_section(&name, &options)));
            redacted.push_str(&format!("\n{}", config::render_redacted(&name, &options)));
            let remote = remote.encrypted_by(format!("{name}:"));
            replicate::End {
                key_check: Some(KeyCheck {
                    end: remote.clone(),
                }),
                remote,
                plain_guard: None,
                encryption_marker: MarkerWriter::default(),
            }
        };
        let source = end(src, &source_crypt, SOURCE_CRYPT_SECTION);
        let destination = end(dst, &destination_crypt, CRYPT_SECTION);
        ends.push((source, destination));
    }
    if verbose >= 2 {
        config::log_redacted(&redacted);
    }
    scrubber.extend(config::secret_values(&text));
    let config = if common.no_template && destination_crypt.is_none() && source_crypt.is_none() {
        ConfigFile::existing(common.config_path.as_deref().expect("checked above"))
    } else {
        ConfigFile::private(&text)?
    };
    let rclone = Rclone::new(binary, config.path().to_path_buf(), verbose).with_scrubber(scrubber);
    let mut pairs = Vec::new();
    for (source, destination) in ends {
        let lease = lease::Lease::new(&rclone, &destination.remote, common.dry_run, role.clone())?
            .expect("a writer's role has a lease");
        pairs.push(replicate::Pair {
            source,
            destination,
            lease: std::sync::Arc::new(lease),
            guard: Guard::new(args.max_delete_percent),
        });
    }
    let long_running = long_running_plan(&common, schedule, None);
    let termination_message = common.termination_message_path.clone();
    Ok(ReplicationPlan {
        replication: Replication {
            pairs,
            rclone,
            no_delete: common.no_delete,
            dry_run: common.dry_run,
            force_empty_source: args.force_even_if_destination_would_be_cleared,
            user_flags: common.rclone_args,
            retries: common.retries,
            sync_timeout: common.sync_timeout,
        },
        long_running,
        config,
        termination_message,
    })
}
