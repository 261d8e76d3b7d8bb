//! The Kubernetes side: the `PodFilesystemSync` resource and the code that turns it into
//! containers of a Pod.
//!
//! Layering: this crate uses the sync core's vocabulary (flag names from
//! [`vso_core::sync::valves::safety`], the schedule and duration syntax from
//! [`vso_core::daemon::schedule`] and [`vso_core::duration`]) so the generated command lines are
//! the ones the binary accepts; the core does not depend on this crate, so it cannot import it.
//!
//! - [`resource`]: the CRD types, the single source of the generated CRD YAML; [`status`], its
//!   status (written by the operator only);
//! - [`template`]: `remotePath` / `env` templates over the Pod (sandboxed minijinja);
//! - [`inject`]: the pure injection core (typed Pod template in, typed Pod template out), in
//!   three steps per resource: spec → validated plan → argv → containers;
//! - [`manifest`]: the `inject` command's YAML handling around the core;
//! - [`cli`]: the arguments of `inject` and `operator`;
//! - [`operator`]: the admission webhook around the same core (the `operator` command).

// The core's one error type (`vso_core::error::Error`) is returned here as everywhere: once per
// command or request, never in a hot loop, so its size (the statistics of a failed sync ride in
// it) costs nothing worth boxing it for.
#![allow(clippy::result_large_err)]

pub mod cli;
pub mod inject;
pub mod manifest;
pub mod operator;
pub mod resource;
pub mod status;
pub mod template;

use std::io::{Read, Write};
use std::path::Path;

use crate::cli::InjectArgs;
use vso_core::error::{Error, Result};

fn read_input(path: &Path) -> Result<String> {
    let name = path.display();
    let mut text = String::new();
    if path == Path::new("-") {
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| Error::config(format!("cannot read the manifests from stdin: {e}")))?;
    } else {
        text = std::fs::read_to_string(path)
            .map_err(|e| Error::config(format!("cannot read {name}: {e}")))?;
    }
    Ok(text)
}

/// `inject`: reads the manifests and the resources, prints the injected manifests; on any
/// error prints nothing to stdout and exits 2.
pub fn run_inject(args: &InjectArgs) -> Result<()> {
    if args.sync.iter().any(|p| p == Path::new("-")) && args.filename == Path::new("-") {
        return Err(Error::config(
            "--filename and --sync cannot both read stdin ('-')",
        ));
    }
    let mut syncs = Vec::new();
    for path in &args.sync {
        let text = read_input(path)?;
        syncs.extend(
            manifest::read_syncs(&text, &path.display().to_string()).map_err(Error::Config)?,
        );
    }
    let settings = inject::Settings {
        native_sidecars: args.native_sidecars,
        default_image: args.image.clone(),
    };
    let text = read_input(&args.filename)?;
    let output = manifest::inject_manifests(
        &text,
        &args.filename.display().to_string(),
        &syncs,
        &settings,
    )
    .map_err(Error::Config)?;
    write_stdout(&output)
}

/// `crd`: prints the CustomResourceDefinition.
pub fn run_crd() -> Result<()> {
    write_stdout(&resource::crd_yaml())
}

fn write_stdout(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Error::Other(anyhow::anyhow!("cannot write to stdout: {e}")))
}
