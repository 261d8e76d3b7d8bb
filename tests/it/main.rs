//! The integration tests: one test binary, one module per promise, one shared [`support`].
//!
//! Each module used to be a test binary of its own (tests/<module>.rs), and each compiled and
//! linked `support` and the whole dependency graph again; one binary compiles `support` once
//! and links once. Filter by module: `cargo test --test it safety::` (or `inject::` ...).
//!
//! The tests of all modules now run as threads of one process, so none may change
//! process-wide state: no `std::env::set_var` (a child's variables are set on its `Command`,
//! as [`support::Vso`] does with a cleared environment), no `set_current_dir` (children get
//! `Command::current_dir`), no signal handlers in the test process, and a temp dir or a port
//! of its own per test ([`support::Sandbox`], [`support::S3Server`]).

mod support;

mod architecture;
mod bounded;
// A real single-node Kubernetes (issue 26): builds with everything, runs as root.
mod cluster;
mod config_parser;
mod container;
mod core;
mod counts;
mod data_loss;
mod encryption;
mod fidelity;
mod first_run;
// The README's commands include `inject` (the operator build's).
#[cfg(feature = "operator")]
mod front_door;
mod inject;
mod inject_argv;
mod lease;
mod observability;
mod operator;
mod replicate;
mod roundtrip;
mod safety;
mod schedule;
mod termination_message;
mod trust_encryption;
mod trust_restore;
mod trust_writer;
mod watch;
