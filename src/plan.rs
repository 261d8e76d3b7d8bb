//! Parse, then validate once: the command line and the environment become a [`Plan`] (rendered
//! config, resolved rclone, parsed schedule, checked paths) before anything runs. Every problem
//! found here is a configuration error (exit 2) and nothing has started.

use std::path::PathBuf;
use std::time::Duration;

use crate::cli::{CommonArgs, RemoteToLocalArgs, SyncToRemoteArgs, default_pid_path};
use crate::config::{self, CRYPT_SECTION, ConfigFile, REMOTE_SECTION};
use crate::crypt::{self, CryptSettings, KeyCheck};
use crate::error::{Error, Result};
use crate::job::{Direction, Job, Overrides};
use crate::lease;
use crate::mass_delete::Guard;
use crate::rclone::{self, Rclone};
use crate::remote_path;
use crate::schedule::Schedule;
use crate::scrub::Scrubber;

/// A validated run: the job, how often to run it, and the config file it needs (kept alive,
/// and so on disk, exactly as long as the plan).
pub struct Plan {
    pub job: Job,
    /// Set for the long-running mode (--schedule and/or --watch).
    pub long_running: Option<LongRunningPlan>,
    pub config: ConfigFile,
    /// What the run does with the lease of the remote path ([`crate::lease`]).
    pub lease: lease::Role,
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

/// --watch and its timing.
#[derive(Debug, Clone)]
pub struct WatchSettings {
    pub debounce: Duration,
    pub min_interval: Duration,
    pub full_sync_every: Duration,
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
    if args.lease.lease_ttl < lease::MIN_TTL {
        return Err(Error::config(format!(
            "--lease-ttl must be at least {}s",
            lease::MIN_TTL.as_secs()
        )));
    }
    let role = lease::Role::Writer(lease::WriterSettings {
        ttl: args.lease.lease_ttl,
        max_skew: args.lease.lease_max_clock_skew,
        force_take_over: args.lease.force_take_over_lease,
    });
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
        && crate::safety::local_state(&plan.job.local).is_ok_and(|s| s.has_data && !s.has_marker);
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
    remote_path::validate(&remote_path, remote_flag)?;
    let env = config_environment()?;
    let env_refs = || env.iter().map(|(k, v)| (k.as_str(), v.as_str()));

    let schedule = common
        .schedule
        .schedule
        .as_deref()
        .map(Schedule::parse)
        .transpose()
        .map_err(Error::Config)?;

    // Everything that needs no process is checked before rclone is even looked up.
    let crypt_settings = CryptSettings::collect(env_refs(), &common.enc_params)?;
    let base_text = if common.no_template {
        let path = common
            .config_path
            .as_deref()
            .expect("clap: --no-template requires --config-path");
        Some(config::read_existing(path)?)
    } else {
        None
    };
    let remote_options = if base_text.is_none() {
        let options = config::collect_options(env_refs(), "REMOTE_", &common.params, "-p")?;
        if options.get("type").is_some_and(|t| t.trim().is_empty()) {
            return Err(Error::config(
                "REMOTE_TYPE (or -p type=...) is empty: name an rclone backend, e.g. REMOTE_TYPE=s3",
            ));
        }
        if !options.contains_key("type") {
            return Err(Error::config(
                "no remote configured: set REMOTE_TYPE (e.g. REMOTE_TYPE=s3) and the other REMOTE_* \
                 options, or pass -p type=..., or use an existing file with --config-path FILE --no-template",
            ));
        }
        Some(options)
    } else {
        if !common.params.is_empty() {
            return Err(Error::config(
                "-p cannot be combined with --no-template; edit the config file instead",
            ));
        }
        None
    };
    let binary = rclone::resolve_binary(common.rclone_binary.as_deref())?;

    let remote_display = format!("{REMOTE_SECTION}:{remote_path}");
    // What rclone syncs with is always a directory. Saying so with a trailing '/' stops rclone
    // from first probing whether the path is a single object: when that probe fails (wrong
    // credentials, endpoint down) rclone reports "is a file not a directory" and hides the
    // real cause. (The path is never empty: see `remote_path`.)
    let remote_dir = format!("{remote_display}/");
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
            (ConfigFile::existing(path), remote_dir, None)
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
            let mut remote = remote_dir;
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
                remote = crypt::crypt_root();
                key_check = Some(KeyCheck {
                    raw_remote: remote_display.clone(),
                });
            }
            if verbose >= 2 {
                tracing::debug!("rendered rclone config (secrets redacted):\n{redacted}");
            }
            scrubber.extend(config::secret_values(&text));
            (ConfigFile::private(&text)?, remote, key_check)
        }
    };

    let mass_delete_percent = overrides.max_delete_percent.unwrap_or(100);
    let job = Job {
        direction,
        local,
        remote,
        remote_display,
        no_delete: common.no_delete,
        dry_run: common.dry_run,
        overrides,
        rclone: Rclone::new(binary, config.path().to_path_buf(), verbose).with_scrubber(scrubber),
        user_flags: common.rclone_args,
        retries: common.retries,
        sync_timeout: common.sync_timeout,
        key_check,
        mass_delete: Guard::new(mass_delete_percent),
        last_manifest: Default::default(),
    };
    let long_running = (schedule.is_some() || watch.is_some()).then(|| LongRunningPlan {
        shutdown_timeout: common.schedule.shutdown_timeout,
        pid_path: common
            .schedule
            .pid_path
            .clone()
            .unwrap_or_else(default_pid_path),
        metrics_address: common.schedule.metrics_address.clone(),
        max_consecutive_failures: common.schedule.max_consecutive_failures,
        max_sync_age: common.schedule.max_sync_age.unwrap_or_else(|| {
            crate::schedule::default_max_sync_age(
                schedule.as_ref(),
                watch.as_ref().map(|w| w.full_sync_every),
            )
        }),
        schedule,
        watch,
    });
    Ok(Plan {
        job,
        long_running,
        config,
        lease: lease::Role::None,
    })
}
