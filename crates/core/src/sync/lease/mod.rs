//! One writer per remote path: a lease object beside the data, taken before an upload changes
//! anything, renewed while the uploader runs, released after its final sync; and, on the restore
//! side, a bounded wait while a writer holds it.
//!
//! # The lease object
//! `<remote path>/.volume-syncing-operator.lease`, under [`crate::remote::path::INTERNAL_PREFIX`], so every
//! sync, listing, valve and restore already ignores it. It is read and written through exactly
//! the remote the sync uses (through crypt when encryption is on): `rclone cat`, `rclone rcat`,
//! `rclone deletefile`. It is JSON: the holder (host: `POD_NAME`, else `HOSTNAME`, else the
//! kernel's host name; pid; a random id made at start), `started`, `renewed`, `expires`.
//!
//! # Protocol (object stores without conditional writes)
//! - **Acquire**: read the lease. A lease of someone else that is live (now <= expires + the
//!   maximum clock skew) refuses the upload (exit 3, rule `remote-in-use`) unless
//!   `--force-take-over-lease`; an expired one is taken over with a warning. Then write ours,
//!   wait the settle delay `D` ([`SETTLE`]), and read it back: still ours means acquired;
//!   anything else means we lost a race and are refused as well.
//! - **Why two racers cannot both proceed**: every writer bounds the gap `G` ([`MAX_WRITE_GAP`])
//!   between the start of its read and the end of its write, and `D >= G`. Say A's write takes
//!   effect first and B's second. If B's write takes effect before A's read-back starts, A reads
//!   B's lease and gives up. Otherwise B's write took effect after A's read-back started, which
//!   is at least `D` after A's write ended; B's read started at most `G <= D` before B's write
//!   ended, so after A's write took effect: B read A's live lease and never wrote. So at most
//!   one proceeds; both may give up (they retry on their schedule). A writer whose gap exceeds
//!   `G` cannot rely on this: it reads back, deletes its lease if it is still there, and retries
//!   (a holder it may have overwritten then finds its lease gone at its next renewal and stops).
//! - **Assumptions**: read-after-write consistency for single objects (S3 has it since December
//!   2020; GCS, Azure and most others too); clocks of all writers within the maximum clock skew
//!   (`--lease-max-clock-skew`) of each other; and that every writer of a path runs this
//!   protocol with the same `G` and `D` (they are constants of the program; releases before
//!   issue 28 used 5s for both, its first builds 1s, now 750 ms: an old and a new writer
//!   started within seconds of each other are not covered, so the README says to stop the old
//!   one first).
//! - **Transport**: the acquisition's read, write, read-back (and a withdrawal) are requests to
//!   one `rclone rcd` started for it
//!   ([`RcServer`](crate::remote::rclone::rc::RcServer): its remote is created, and with crypt
//!   its key derived, before the read starts), so `G` covers two requests to the remote and no
//!   process start. A request that fails is made again as a command (`transport.rs`), its time
//!   counted in `G` as well. A long-running uploader's server exits when the acquisition ends,
//!   and its renewals and release are short rclone commands; a one-shot run keeps it
//!   ([`Lease::keep_server`]) for its renewals, release, and the run's own small objects
//!   ([`Lease::server`]: the manifest, the upload record), so one rclone process serves them
//!   all. The restore's wait is not timed by the proof and uses short commands.
//! - **Renew**: while held, every TTL/3 (a timer independent of syncs): read, check it is still
//!   ours, write it with a new expiry — one small write per renewal, none per file. A lease that
//!   is no longer ours (taken over, or deleted) is lost: the running upload is stopped at once
//!   and fails loudly; a long-running uploader must take the lease again before its next sync
//!   (refused while the new writer holds it, /healthz 503). A renewal that fails (remote unreachable) is retried; if the
//!   lease cannot be renewed before `expires` minus the time rclone needs to stop, it is
//!   treated as lost too, because from then on another writer may take it over.
//! - **Release**: after the one-shot run or the final sync, on every exit path short of
//!   SIGKILL: read, and delete if still ours. A holder killed by SIGKILL leaves its lease, which
//!   the next writer takes over once it has expired.
//! - `--force-take-over-lease` skips the liveness check only; the write, settle and read-back
//!   are the same. If the old holder is in fact alive, both upload until its next renewal
//!   (at most TTL/3), when it finds the lease taken and stops: the flag is for a holder known to
//!   be gone.
//! - `--dry-run` never writes: it reads the lease, warns if someone holds it, and goes on.
//! - **A run that writes nothing takes none**: a one-shot upload that finds the lease absent
//!   ([`Lease::look_before_writing`]) first looks, read-only, at what it would write
//!   (`crate::sync::job`'s `unchanged.rs`); when that is nothing, it ends without writing the
//!   lease. The protocol above is about writers, and this run is none: a writer that starts
//!   meanwhile leaves the remote as if that run had come first.
//!
//! # Restore side
//! `remote-to-local-sync` (one-shot) reads the lease first and, while a live lease is held,
//! waits (`--wait-for-writer`, progress logged) for it to be released or to expire; so a new
//! Pod's init container restores what the old Pod's final sync wrote. On timeout: exit 1.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Mutex, watch};
use tokio::time::Instant;

use crate::duration::format_duration;
use crate::error::{Error, Result};
use crate::logging::untrusted;
use crate::remote::path::{Internal, RemoteEnd};
use crate::remote::rclone::rc::RcServer;
use crate::remote::rclone::{Abort, Rclone, STOP_GRACE, aborted};

mod errors;
mod record;
#[cfg(test)]
mod tests;
mod transport;
mod wait;

use transport::{Found, LeaseObject, Via};

use errors::is_retryable;
use record::{Expiry, add, is_live, rfc3339};
pub use record::{Holder, MAX_TTL, Record, parse_lease};

/// The safety rule of a refusal because another writer holds the lease.
pub const RULE: &str = "remote-in-use";
pub const FORCE_TAKE_OVER: &str = "--force-take-over-lease";
/// The longest allowed gap between the start of reading the lease and the end of writing ours
/// (`G` in the module doc): two small requests through an rclone that is already running
/// ([`RcServer`](crate::remote::rclone::rc::RcServer), its remote created and, with crypt,
/// its key derived before the read starts).
/// Measured (BENCHMARKS.md section 11; the `gap_ms` of the debug log): 3-9 ms against a local S3
/// server, 88-99 ms at 10 ms one way (about four round trips: connect, read, write), 3-76 ms
/// locally on a 2-core node at a load of 10-15. A read slower than half of it (a connection
/// being set up: TCP, TLS) is made again before the write, on the connection it opened
/// ([`SLOW_READ`]), so the gap is two round trips and the server's time: 750 ms leaves room
/// for endpoints about 150 ms away (one way); a slower write is withdrawn and tried again
/// (three attempts). It was 5s while each call started its own rclone (two starts and two
/// key derivations, up to 4s under load), then 1s while the first read's connection counted
/// in the gap.
pub const MAX_WRITE_GAP: Duration = Duration::from_millis(750);
/// A read of the lease slower than this is made again before the write (see [`MAX_WRITE_GAP`]).
const SLOW_READ: Duration = Duration::from_millis(375);
/// How long a new lease must stay ours before it counts as acquired (`D >= G`).
pub const SETTLE: Duration = MAX_WRITE_GAP;
/// How often an acquisition whose write was too slow is tried again before giving up.
const ACQUIRE_ATTEMPTS: u32 = 3;
/// The shortest TTL: renewals every TTL/3 must leave room for the settle delay and a retry.
pub const MIN_TTL: Duration = Duration::from_secs(15);
/// The reason given to a running rclone stopped because the lease was lost.
pub const LOST_REASON: &str = "the loss of the remote lease";

/// Lease settings of an uploader.
#[derive(Debug, Clone)]
pub struct WriterSettings {
    pub ttl: Duration,
    pub max_skew: Duration,
    pub force_take_over: bool,
}

/// What a run does with the lease.
#[derive(Debug, Clone)]
pub enum Role {
    /// An upload: acquire, renew, release.
    Writer(WriterSettings),
    /// A one-shot restore: wait up to `wait` while a live lease is held (zero: do not wait).
    Reader { wait: Duration, max_skew: Duration },
    /// No lease (a scheduled restore: mirroring a live writer is its purpose).
    None,
}

/// The lease of a remote path, through the remote the sync uses.
pub struct Lease {
    /// The lease object and the calls on it.
    remote: LeaseObject,
    display: String,
    me: Holder,
    role: Role,
    dry_run: bool,
    /// The lease we hold, if any. The async mutex also serialises acquire, renew and release.
    held: Mutex<Option<Held>>,
    /// Mirrors `held.is_some()` for synchronous readers (the health state).
    holding: AtomicBool,
    /// How often the lease was acquired: a change tells the user of the lease that another
    /// writer may have written the path meanwhile ([`Lease::acquisitions`]).
    acquisitions: AtomicU64,
    lost: watch::Sender<Option<String>>,
    /// Counts the leases this process wrote in acquisitions ([`Lease::written`]).
    written: watch::Sender<u64>,
    /// Whether the acquisition's rclone server is kept until the release ([`Lease::keep_server`]).
    keep_server: AtomicBool,
    /// That server, while the lease is held.
    server: std::sync::Mutex<Option<Arc<RcServer>>>,
    /// A server started before the acquisition ([`Lease::look_before_writing`]), for it to use.
    early: std::sync::Mutex<Option<Arc<RcServer>>>,
}

#[derive(Debug, Clone)]
struct Held {
    started: DateTime<Utc>,
    expires: DateTime<Utc>,
    /// When the next renewal is due.
    renew_at: Instant,
}

impl Lease {
    /// The lease of the remote path `end` (through its crypt remote when encrypted). `None`
    /// when the role needs none.
    pub fn new(
        rclone: &Rclone,
        end: &RemoteEnd,
        dry_run: bool,
        role: Role,
    ) -> Result<Option<Lease>> {
        if matches!(role, Role::None) {
            return Ok(None);
        }
        Ok(Some(Lease {
            remote: LeaseObject::new(
                rclone.for_single_objects(),
                end.object(Internal::Lease),
                end.shown_object(Internal::Lease),
            ),
            display: end.shown_object(Internal::Lease),
            me: Holder::me()?,
            role,
            dry_run,
            held: Mutex::new(None),
            holding: AtomicBool::new(false),
            acquisitions: AtomicU64::new(0),
            lost: watch::channel(None).0,
            written: watch::channel(0).0,
            keep_server: AtomicBool::new(false),
            server: std::sync::Mutex::new(None),
            early: std::sync::Mutex::new(None),
        }))
    }

    /// Before a run: a writer acquires the lease (a no-op while held), a reader waits for the
    /// writer. Temporary rclone failures are retried `retries` times, as the sync's are; a
    /// signal (`abort`) stops either.
    pub async fn before_run(&self, abort: &mut Abort, retries: u32) -> Result<()> {
        let mut backoff = Duration::from_secs(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let work = async {
                match &self.role {
                    Role::Writer(settings) => self.acquire(settings).await,
                    Role::Reader { wait, max_skew } => self.wait_for_writer(*wait, *max_skew).await,
                    Role::None => Ok(()),
                }
            };
            let result = tokio::select! {
                reason = aborted(abort) => {
                    // A signal between writing our lease and holding it would leave the lease
                    // to block others until it expires.
                    if matches!(self.role, Role::Writer(_)) && !self.dry_run {
                        self.withdraw().await;
                    }
                    Err(Error::Interrupted(reason))
                }
                result = work => result,
            };
            match result {
                Err(e) if is_retryable(&e) && attempt <= retries => {
                    tracing::warn!(
                        attempt,
                        retries,
                        "the lease step failed with a temporary error: {e}; retrying in {}",
                        format_duration(backoff)
                    );
                    tokio::select! {
                        reason = aborted(abort) => return Err(Error::Interrupted(reason)),
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                }
                other => return other,
            }
        }
    }

    /// Whether uploads may go on: the lease is held (or this is a dry run, which never takes
    /// it). Readable without waiting for a lease call in progress.
    pub fn may_upload(&self) -> bool {
        self.dry_run || self.holding.load(Ordering::Relaxed)
    }

    /// Sets the lease we hold; without one, a kept server has nothing left to do and exits.
    fn set_held(&self, slot: &mut Option<Held>, value: Option<Held>) {
        self.holding.store(value.is_some(), Ordering::Relaxed);
        if value.is_none() {
            self.server_slot().take();
        }
        *slot = value;
    }

    /// How many times this process acquired the lease. When it changes across a run's lease
    /// step, the lease was (re)taken: after a loss another writer may have written the path, so
    /// what the process remembers of the remote (the manifest it wrote, the upload record) is
    /// no longer true.
    pub fn acquisitions(&self) -> u64 {
        self.acquisitions.load(Ordering::Relaxed)
    }

    /// Changes when an acquisition has written our lease and waits the settle delay: from then
    /// on, until it is acquired or given up, read-only work of the run may overlap the wait.
    pub fn written(&self) -> watch::Receiver<u64> {
        self.written.subscribe()
    }

    /// For a one-shot run: the acquisition's rclone server stays up until the release, so the
    /// renewals, the release and the run's small objects ([`Lease::server`]) cost a request each
    /// instead of a process start. A long-running uploader does not keep it: the server would
    /// sit idle between syncs.
    pub fn keep_server(&self) {
        self.keep_server.store(true, Ordering::Relaxed);
    }

    /// The rclone server kept since the acquisition ([`Lease::keep_server`]), while held.
    pub fn server(&self) -> Option<Arc<RcServer>> {
        self.server_slot().clone()
    }

    fn server_slot(&self) -> std::sync::MutexGuard<'_, Option<Arc<RcServer>>> {
        self.server.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// For a one-shot upload that may write nothing at all: when this process would take the
    /// lease now (a one-shot writer, not a dry run, not holding it) and nobody holds it (the
    /// object is absent), the rclone server the acquisition will use, started now, for the
    /// run's read-only look at the remote. `None` otherwise, and when the server cannot start:
    /// the run then takes the lease as usual. A lease written after this read is another
    /// writer's business: a run that writes nothing needs no lease.
    pub async fn look_before_writing(&self) -> Option<Arc<RcServer>> {
        let writer = matches!(self.role, Role::Writer(_)) && !self.dry_run;
        if !writer
            || !self.keep_server.load(Ordering::Relaxed)
            || self.holding.load(Ordering::Relaxed)
        {
            return None;
        }
        let server = Arc::new(self.remote.start_server().await?);
        *self.early.lock().unwrap_or_else(|p| p.into_inner()) = Some(server.clone());
        match self.remote.read(Via::Rc(&server)).await {
            Ok(Found::Nothing) => Some(server),
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(
                    lease = self.display,
                    "cannot read the lease ({e}); taking it as usual"
                );
                None
            }
        }
    }

    /// Receives `Some(why)` once a held lease is lost.
    pub fn lost(&self) -> watch::Receiver<Option<String>> {
        self.lost.subscribe()
    }

    fn settings(&self) -> Option<&WriterSettings> {
        match &self.role {
            Role::Writer(s) => Some(s),
            _ => None,
        }
    }

    async fn acquire(&self, settings: &WriterSettings) -> Result<()> {
        let mut held = self.held.lock().await;
        if held.is_some() {
            return Ok(());
        }
        // The calls whose gap is bounded go through one running rclone (a dry run only reads).
        let early = self.early.lock().unwrap_or_else(|p| p.into_inner()).take();
        let server = match early {
            _ if self.dry_run => None,
            Some(early) => Some(early),
            None => self.remote.start_server().await.map(Arc::new),
        };
        let via = server.as_deref().map_or(Via::Process, Via::Rc);
        for attempt in 1..=ACQUIRE_ATTEMPTS {
            let mut start = Instant::now();
            let mut now = Utc::now();
            let mut found = self.remote.read(via).await?;
            // A dry run only reads: its read is not timed by the protocol.
            if start.elapsed() > SLOW_READ && !self.dry_run {
                tracing::debug!(
                    lease = self.display,
                    read_ms = start.elapsed().as_millis() as u64,
                    "a slow read of the lease (a new connection?): reading it again"
                );
                start = Instant::now();
                now = Utc::now();
                found = self.remote.read(via).await?;
            }
            match found {
                Found::Nothing => {}
                Found::Lease(record) if record.holder.id == self.me.id => {}
                Found::Lease(record) => {
                    let expires = self
                        .judged_expiry(&record, now, settings.max_skew, via)
                        .await?;
                    let live = is_live(expires, now, settings.max_skew);
                    if live && self.dry_run {
                        tracing::warn!(
                            holder = %record.holder,
                            expires = rfc3339(expires),
                            "dry run: {} is held by another writer; a real upload would be refused (rule '{RULE}')",
                            self.display
                        );
                        return Ok(());
                    } else if live && !settings.force_take_over {
                        return Err(self.in_use(&record, expires));
                    } else if live {
                        tracing::warn!(
                            holder = %record.holder,
                            expires = rfc3339(expires),
                            "{FORCE_TAKE_OVER}: taking over the live lease {} of {}; if that writer \
                             is still running, it stops at its next renewal",
                            self.display,
                            record.holder
                        );
                    } else {
                        tracing::warn!(
                            holder = %record.holder,
                            expired = rfc3339(expires),
                            "taking over the expired lease {} of {} (it did not release it: \
                             killed, or its node was lost)",
                            self.display,
                            record.holder
                        );
                    }
                }
                Found::Unreadable(why) if !settings.force_take_over && !self.dry_run => {
                    // Not a lease, but maybe another release's: held for the longest TTL after
                    // it was written, then replaced (never a block for ever).
                    let written = self.remote.written_at(now, via).await?;
                    let until = add(written, MAX_TTL).unwrap_or(DateTime::<Utc>::MAX_UTC);
                    if is_live(until, now, settings.max_skew) {
                        return Err(Error::refused(
                            RULE,
                            format!(
                                "the lease object {} cannot be read as a lease ({why}); written \
                                 {}, it counts as held until {} (the longest --lease-ttl after \
                                 it was written)",
                                self.display,
                                rfc3339(written),
                                rfc3339(until)
                            ),
                            FORCE_TAKE_OVER,
                        ));
                    }
                    tracing::warn!(
                        "replacing the unreadable lease {} ({why}): written {}, more than the \
                         longest --lease-ttl ({}) ago",
                        self.display,
                        rfc3339(written),
                        format_duration(MAX_TTL)
                    );
                }
                Found::Unreadable(why) => {
                    tracing::warn!("replacing the unreadable lease {} ({why})", self.display);
                }
            }
            if self.dry_run {
                tracing::info!("dry run: the lease {} is not written", self.display);
                return Ok(());
            }
            let (record, expires) = Record::new(self.me.clone(), now, now, settings.ttl)?;
            self.remote.write(&record, via).await?;
            let gap = start.elapsed();
            tracing::debug!(
                lease = self.display,
                gap_ms = gap.as_millis() as u64,
                "wrote the lease; it settles for {}",
                format_duration_ms(SETTLE)
            );
            self.written.send_modify(|n| *n += 1);
            tokio::time::sleep(SETTLE).await;
            match self.remote.read(via).await? {
                Found::Lease(back) if back.holder.id == self.me.id => {
                    if gap <= MAX_WRITE_GAP {
                        tracing::info!(
                            lease = self.display,
                            expires = record.expires,
                            "acquired the lease: this process is the only writer of the remote path"
                        );
                        let acquired = Held {
                            started: now,
                            expires,
                            // Written SETTLE ago.
                            renew_at: Instant::now() + (settings.ttl / 3).saturating_sub(SETTLE),
                        };
                        self.set_held(&mut held, Some(acquired));
                        self.acquisitions.fetch_add(1, Ordering::Relaxed);
                        if self.keep_server.load(Ordering::Relaxed) {
                            *self.server_slot() = server.clone();
                        }
                        return Ok(());
                    }
                    tracing::warn!(
                        attempt,
                        "writing the lease took {}, more than the {} the protocol allows; \
                         withdrawing it and trying again",
                        format_duration_ms(gap),
                        format_duration_ms(MAX_WRITE_GAP)
                    );
                    self.remote.delete(via).await?;
                    // Racers that gave up together should not retry together.
                    let jitter = u64::from(self.me.id.as_bytes()[0] % 16) * 125;
                    tokio::time::sleep(SETTLE + Duration::from_millis(jitter)).await;
                }
                Found::Lease(other) => {
                    return Err(Error::refused_with_hint(
                        RULE,
                        format!(
                            "{} was taken by another writer, {}, at the same time (lease \
                             expires {})",
                            self.display,
                            other.holder,
                            untrusted(&other.expires)
                        ),
                        "Only one uploader may write to a remote path; this one gave way and \
                         will not upload.",
                    ));
                }
                Found::Nothing | Found::Unreadable(_) => {
                    return Err(Error::refused_with_hint(
                        RULE,
                        format!(
                            "the lease {} changed while it was being taken (another writer is \
                             starting)",
                            self.display
                        ),
                        "Only one uploader may write to a remote path; try again later.",
                    ));
                }
            }
        }
        Err(Error::Other(anyhow::anyhow!(
            "cannot take the lease {}: writing it took longer than {} {ACQUIRE_ATTEMPTS} times \
             (remote too slow or node overloaded)",
            self.display,
            format_duration_ms(MAX_WRITE_GAP)
        )))
    }

    fn in_use(&self, record: &Record, expires: DateTime<Utc>) -> Error {
        Error::refused(
            RULE,
            format!(
                "{} is in use: another writer, {}, holds its lease (started {}, renewed {}, \
                 expires {}); two uploaders to one path delete each other's files",
                self.display,
                record.holder,
                untrusted(&record.started),
                untrusted(&record.renewed),
                rfc3339(expires)
            ),
            &format!(
                "{FORCE_TAKE_OVER} (only if that writer is gone; else stop it, or wait for the \
                 lease to expire)"
            ),
        )
    }

    /// Renews the lease every TTL/3 while held; on loss, tells [`Lease::lost`]. Meant to be
    /// spawned once per process; it runs until the process ends.
    pub async fn keep(self: std::sync::Arc<Self>) {
        let Some(settings) = self.settings().cloned() else {
            return;
        };
        let retry = (settings.ttl / 10).clamp(Duration::from_millis(500), Duration::from_secs(5));
        loop {
            let due = self.held.lock().await.as_ref().map(|h| h.renew_at);
            match due {
                // Not held (yet, or any more): look again soon; costs no remote call.
                None => tokio::time::sleep(Duration::from_millis(500)).await,
                Some(at) => tokio::time::sleep_until(at).await,
            }
            let mut held = self.held.lock().await;
            let Some(current) = held.clone() else {
                continue;
            };
            if Instant::now() < current.renew_at {
                continue; // re-acquired or renewed meanwhile
            }
            match self.renew(&settings, &current).await {
                Ok(next) => *held = Some(next),
                Err(Renewal::Lost(why)) => {
                    self.set_held(&mut held, None);
                    tracing::error!(
                        lease = self.display,
                        "lost the lease: {why}; stopping the upload so as not to overwrite the \
                         new writer's data"
                    );
                    self.lost.send_replace(Some(why));
                }
                Err(Renewal::Failed(e)) => {
                    let margin = STOP_GRACE.min(settings.ttl / 3);
                    let deadline = chrono::Duration::from_std(margin)
                        .ok()
                        .and_then(|m| current.expires.checked_sub_signed(m))
                        .unwrap_or(current.expires);
                    if Utc::now() >= deadline {
                        self.set_held(&mut held, None);
                        let why = format!(
                            "it could not be renewed before it expires at {} ({e:#}); another \
                             writer may take it over from then on",
                            rfc3339(current.expires)
                        );
                        tracing::error!(lease = self.display, "lost the lease: {why}");
                        self.lost.send_replace(Some(why));
                        continue;
                    }
                    tracing::warn!(
                        lease = self.display,
                        "cannot renew the lease ({e:#}); retrying in {}",
                        format_duration_ms(retry)
                    );
                    *held = Some(Held {
                        renew_at: Instant::now() + retry,
                        ..current
                    });
                }
            }
        }
    }

    async fn renew(&self, settings: &WriterSettings, current: &Held) -> Result<Held, Renewal> {
        let server = self.server();
        let via = server.as_deref().map_or(Via::Process, Via::Rc);
        match self.remote.read(via).await.map_err(Renewal::Failed)? {
            Found::Lease(record) if record.holder.id == self.me.id => {}
            Found::Lease(record) => {
                return Err(Renewal::Lost(format!(
                    "{} took it over (its lease expires {})",
                    record.holder,
                    untrusted(&record.expires)
                )));
            }
            Found::Nothing => return Err(Renewal::Lost("the lease object was deleted".into())),
            Found::Unreadable(why) => {
                return Err(Renewal::Lost(format!(
                    "the lease object was replaced ({why})"
                )));
            }
        }
        let now = Utc::now();
        let (record, expires) = Record::new(self.me.clone(), current.started, now, settings.ttl)
            .map_err(Renewal::Failed)?;
        self.remote
            .write(&record, via)
            .await
            .map_err(Renewal::Failed)?;
        tracing::debug!(
            lease = self.display,
            expires = record.expires,
            "renewed the lease"
        );
        Ok(Held {
            started: current.started,
            expires,
            renew_at: Instant::now() + settings.ttl / 3,
        })
    }

    /// Deletes the lease if we hold it and it is still ours. Failures are logged: the lease
    /// then expires on its own.
    pub async fn release(&self) {
        let mut held = self.held.lock().await;
        if held.is_none() {
            return;
        }
        // The kept server (a one-shot run's) makes the release's calls, then exits.
        let server = self.server_slot().take();
        self.set_held(&mut held, None);
        let via = server.as_deref().map_or(Via::Process, Via::Rc);
        let result = async {
            match self.remote.read(via).await? {
                Found::Lease(record) if record.holder.id == self.me.id => {
                    self.remote.delete(via).await?;
                    // Debug: the run's summary stays the last line of a successful run.
                    tracing::debug!(lease = self.display, "released the lease");
                }
                _ => tracing::warn!(
                    lease = self.display,
                    "the lease is no longer ours at release; leaving it alone"
                ),
            }
            Ok::<(), Error>(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(
                lease = self.display,
                "cannot release the lease ({e}); it expires on its own"
            );
        }
    }

    /// Deletes a lease of ours that an interrupted acquisition may have written.
    async fn withdraw(&self) {
        let mut held = self.held.lock().await;
        if held.is_some() {
            return; // acquired: released at the end as usual
        }
        if let Ok(Found::Lease(record)) = self.remote.read(Via::Process).await
            && record.holder.id == self.me.id
        {
            match self.remote.delete(Via::Process).await {
                Ok(()) => tracing::info!(lease = self.display, "withdrew the lease"),
                Err(e) => tracing::warn!(
                    lease = self.display,
                    "cannot withdraw the lease ({e}); it expires on its own"
                ),
            }
        }
        self.set_held(&mut held, None);
    }

    /// When another writer's `record` counts as expiring ([`Record::expiry`]); warns when its
    /// own expiry is not believed. Costs one more call only for a lease without a usable
    /// renewal time.
    async fn judged_expiry(
        &self,
        record: &Record,
        now: DateTime<Utc>,
        max_skew: Duration,
        via: Via<'_>,
    ) -> Result<DateTime<Utc>> {
        let (expires, why) = match record.expiry(now, max_skew) {
            Expiry::Stated(expires) => return Ok(expires),
            Expiry::Capped(expires, why) => (expires, why),
            Expiry::Unanchored(why) => {
                let written = self.remote.written_at(now, via).await?;
                let expires = add(written, MAX_TTL).unwrap_or(DateTime::<Utc>::MAX_UTC);
                (
                    expires,
                    format!("{why}; the object was written {}", rfc3339(written)),
                )
            }
        };
        tracing::warn!(
            holder = %record.holder,
            "the lease {} of another writer is not plausible ({why}); treating it as expiring \
             at {}, the longest --lease-ttl ({}) after it was written",
            self.display,
            rfc3339(expires),
            format_duration(MAX_TTL)
        );
        Ok(expires)
    }
}

enum Renewal {
    /// The lease is someone else's now.
    Lost(String),
    /// The renewal failed (remote unreachable); the lease may still be ours.
    Failed(Error),
}

fn format_duration_ms(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}
