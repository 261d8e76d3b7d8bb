//! The binary's front: the command line ([`cli`]) and the dispatch of each command to the
//! crate that runs it.
//!
//! The workspace's crates are the architecture; arrows point down only:
//! - this crate (`volume-syncing-operator`): the top-level command line and the binaries;
//! - `vso-k8s` (with the `operator` feature): the PodFilesystemSync resource, `inject`, `crd`
//!   and the admission webhook; it builds command lines for the core and depends on it;
//! - [`vso_core`]: the sync core (plan, remote, sync, daemon), with its own theory of
//!   operation; it cannot import Kubernetes code, because it does not depend on it.

pub mod cli;

use cli::{Cli, Command};
use vso_core::error::Result;

/// The usage error (exit 2) of a Kubernetes command asked of the sidecar build.
#[cfg(not(feature = "operator"))]
fn not_in_this_build(command: &str) -> vso_core::error::Error {
    vso_core::error::Error::config(format!(
        "'{command}' is one of the Kubernetes commands, which this build (the sidecar's, built \
         without the operator feature) leaves out; run it with volume-syncing-operator-webhook \
         (in the image, and installed by make install) or a build with default features \
         (cargo build, cargo install --path .)"
    ))
}

/// Runs one command to completion.
pub async fn run(cli: Cli) -> Result<()> {
    let verbose = cli.verbose;
    let command = match cli.command {
        Command::SyncToRemote(args) => vso_core::Command::SyncToRemote(args),
        Command::RemoteToLocalSync(args) => vso_core::Command::RemoteToLocalSync(args),
        Command::RemoteToRemoteSync(args) => vso_core::Command::RemoteToRemoteSync(args),
        Command::Interrupt(args) => vso_core::Command::Interrupt(args),
        #[cfg(feature = "operator")]
        Command::Inject(args) => return vso_k8s::run_inject(&args),
        #[cfg(feature = "operator")]
        Command::Crd => return vso_k8s::run_crd(),
        #[cfg(feature = "operator")]
        Command::Operator(args) => return vso_k8s::operator::run::run(&args).await,
        #[cfg(not(feature = "operator"))]
        Command::Inject(_) => return Err(not_in_this_build("inject")),
        #[cfg(not(feature = "operator"))]
        Command::Crd(_) => return Err(not_in_this_build("crd")),
        #[cfg(not(feature = "operator"))]
        Command::Operator(_) => return Err(not_in_this_build("operator")),
    };
    vso_core::run(command, verbose).await
}
