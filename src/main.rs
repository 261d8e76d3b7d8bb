//! Entry point: parse the command line, set up logging, run, map the result to an exit code.

use std::process::ExitCode;

use clap::Parser;
use volume_syncing_operator::cli::{Cli, LogFormat};
use volume_syncing_operator::run;
use vso_core::error::report;
use vso_core::{logging, remote};

fn main() -> ExitCode {
    // First: a panic anywhere later still removes the private rclone.conf (see remote::config).
    remote::config::remove_secrets_on_panic();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version exit 0, usage errors 2.
            let _ = e.print();
            return ExitCode::from(e.exit_code() as u8);
        }
    };
    logging::init(cli.verbose, cli.log_format);
    let json_log = cli.log_format == LogFormat::Json;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("cannot start the async runtime");
    report(runtime.block_on(run(cli)), json_log)
}
