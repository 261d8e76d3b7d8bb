//! Logging set-up: text or JSON lines on stderr, level from `-v` or `RUST_LOG`.
//!
//! rclone's own log lines arrive as events with target `rclone` (see [`crate::rclone`]), so one
//! filter and one format cover both programs.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// The filter for `-v` / `-vv`: more of our own and rclone's output, never the runtime's
/// (`mio`/`tokio` TRACE is one line per poll: noise that buries rclone's own debug output).
fn default_filter(verbose: u8) -> &'static str {
    match verbose {
        0 => "info",
        1 => "info,volume_syncing_operator=debug,rclone=debug",
        _ => "info,volume_syncing_operator=trace,rclone=trace",
    }
}

/// Colours only on a terminal: when either output goes to a pipe or file (`2>&1 | tee`,
/// `docker logs`, a log collector), escape codes would end up as raw text. `NO_COLOR` turns
/// them off too (no-color.org).
fn use_ansi(stdout_tty: bool, stderr_tty: bool, no_color: bool) -> bool {
    stdout_tty && stderr_tty && !no_color
}

/// Installs the global subscriber. `RUST_LOG` wins over `-v`.
pub fn init(verbose: u8, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(default_filter(verbose)));
    let ansi = use_ansi(
        std::io::stdout().is_terminal(),
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_target(false).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_target(true)
            .init(),
    }
}

/// Logs a summary line: at INFO when `ok`, else at ERROR, with the same fields either way (log
/// queries and dashboards rely on every field being there, whatever the result).
macro_rules! summary_event {
    ($ok:expr, $($fields:tt)+) => {
        if $ok {
            tracing::info!($($fields)+)
        } else {
            tracing::error!($($fields)+)
        }
    };
}
pub(crate) use summary_event;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_only_when_both_outputs_are_terminals_and_no_color_is_unset() {
        assert!(use_ansi(true, true, false));
        assert!(!use_ansi(false, true, false));
        assert!(!use_ansi(true, false, false));
        assert!(!use_ansi(true, true, true));
    }

    #[test]
    fn verbosity_never_turns_on_the_runtime_trace() {
        for v in 0..=3 {
            let f = default_filter(v);
            assert!(f.starts_with("info"), "{f}");
            assert!(!f.contains("mio") && !f.contains("tokio"), "{f}");
        }
    }
}

/// Text read from the remote (a lease's holder, a record's content), made safe to log: control
/// characters (newlines, escape sequences that would forge log lines or drive a terminal) are
/// escaped, and the text is cut at 200 characters. The bucket is untrusted input.
pub fn untrusted(text: &str) -> String {
    const MAX: usize = 200;
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == MAX {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod untrusted_tests {
    #[test]
    fn control_characters_are_escaped_and_long_text_cut() {
        assert_eq!(super::untrusted("h\nost\u{1b}[31m"), "h\\nost\\u{1b}[31m");
        assert_eq!(super::untrusted(&"x".repeat(500)).chars().count(), 201);
    }
}
