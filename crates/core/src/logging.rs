//! Logging set-up: text or JSON lines on stderr, level from `-v` or `RUST_LOG`.
//!
//! rclone's own log lines arrive as events with target `rclone` (see [`crate::remote::rclone`]), so one
//! filter and one format cover both programs.
//!
//! Much of what is logged comes from the remote: object names, manifest paths, a lease's host,
//! rclone's messages about them. A bucket's writer could put a line break or an escape sequence
//! there and forge a log line (`INFO sync finished result="success"`) or drive a terminal. So
//! every line passes through [`EscapingWriter`], one place for every format: in a text line each
//! control character but the final line break is written as `\xNN` (C1 controls as `\u{NN}`);
//! in a JSON line (where serde already escapes C0 controls) DEL and C1 controls become `\u00NN`,
//! which keeps the line valid JSON. On a terminal with colours on, our own colour codes (SGR,
//! `ESC [ digits ; m`) are the one thing let through.

use std::io::{self, IsTerminal, Write};

use tracing_subscriber::fmt::MakeWriter;

use tracing_subscriber::EnvFilter;

/// `--log-format`: human-readable text or one JSON object per line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The filter for `-v` / `-vv`: more of our own and rclone's output, never the runtime's
/// (`mio`/`tokio` TRACE is one line per poll: noise that buries rclone's own debug output).
fn default_filter(verbose: u8) -> &'static str {
    match verbose {
        0 => "info",
        1 => "info,volume_syncing_operator=debug,vso_core=debug,vso_k8s=debug,rclone=debug",
        _ => "info,volume_syncing_operator=trace,vso_core=trace,vso_k8s=trace,rclone=trace",
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
        .with_writer(Stderr {
            json: format == LogFormat::Json,
            ansi,
        });
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

/// Makes an [`EscapingWriter`] over stderr for each event.
struct Stderr {
    json: bool,
    ansi: bool,
}

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = EscapingWriter<io::Stderr>;

    fn make_writer(&'a self) -> Self::Writer {
        EscapingWriter {
            inner: io::stderr(),
            json: self.json,
            ansi: self.ansi,
        }
    }
}

/// Writes log lines with their control characters escaped (see the module doc). The formatter
/// writes each event with one `write_all` of the whole line.
pub struct EscapingWriter<W> {
    inner: W,
    json: bool,
    ansi: bool,
}

impl<W: Write> Write for EscapingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let escaped = if self.json {
            escape_json_line(buf)
        } else {
            escape_text_line(buf, self.ansi)
        };
        self.inner.write_all(&escaped)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A text line with every control character escaped but a final line break (and, with
/// `keep_sgr`, colour sequences).
pub fn escape_text_line(line: &[u8], keep_sgr: bool) -> Vec<u8> {
    let (body, newline) = match line.strip_suffix(b"\n") {
        Some(body) => (body, true),
        None => (line, false),
    };
    let mut out = Vec::with_capacity(line.len());
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        if b == 0x1b
            && keep_sgr
            && let Some(len) = sgr_len(&body[i..])
        {
            out.extend_from_slice(&body[i..i + len]);
            i += len;
            continue;
        }
        if b == 0xc2 && body.get(i + 1).is_some_and(|c| (0x80..=0x9f).contains(c)) {
            out.extend_from_slice(format!("\\u{{{:x}}}", body[i + 1]).as_bytes());
            i += 2;
            continue;
        }
        if (b < 0x20 && b != b'\t') || b == 0x7f {
            out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
        } else {
            out.push(b);
        }
        i += 1;
    }
    if newline {
        out.push(b'\n');
    }
    out
}

/// A JSON line with DEL and C1 controls escaped as `\u00NN` (serde_json escapes the others).
fn escape_json_line(line: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(line.len());
    let mut i = 0;
    while i < line.len() {
        let b = line[i];
        if b == 0xc2 && line.get(i + 1).is_some_and(|c| (0x80..=0x9f).contains(c)) {
            out.extend_from_slice(format!("\\u00{:02x}", line[i + 1]).as_bytes());
            i += 2;
        } else if b == 0x7f {
            out.extend_from_slice(b"\\u007f");
            i += 1;
        } else {
            out.push(b);
            i += 1;
        }
    }
    out
}

/// The length of a colour sequence (`ESC [ digits and ; m`) at the start of `s`.
fn sgr_len(s: &[u8]) -> Option<usize> {
    let rest = s.strip_prefix(b"\x1b[")?;
    let params = rest
        .iter()
        .take_while(|b| b.is_ascii_digit() || **b == b';')
        .count();
    (rest.get(params) == Some(&b'm')).then_some(2 + params + 1)
}

/// Logs a summary line: at INFO when `ok`, else at ERROR, with the same fields either way (log
/// queries and dashboards rely on every field being there, whatever the result).
macro_rules! summary_event {
    ($ok:expr, target: $target:expr, $($fields:tt)+) => {
        if $ok {
            tracing::info!(target: $target, $($fields)+)
        } else {
            tracing::error!(target: $target, $($fields)+)
        }
    };
}

/// The `target` of the summary lines in JSON logs: part of the log interface that log
/// collectors filter on, so it is fixed here rather than following the module paths (these are
/// the paths the modules had before the workspace split).
pub const SUMMARY_TARGET_SYNC: &str = "volume_syncing_operator::job";
/// The `target` of a replication pair's summary line.
pub const SUMMARY_TARGET_REPLICATION: &str = "volume_syncing_operator::replicate";
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
    fn control_characters_are_escaped_in_text_lines() {
        let forged = "INFO path=a\n2026-01-01 INFO sync finished result=\"success\"\x1b[2J\r\u{85}\x7f\tend\n";
        let out = String::from_utf8(escape_text_line(forged.as_bytes(), false)).unwrap();
        assert_eq!(
            out,
            "INFO path=a\\x0a2026-01-01 INFO sync finished result=\"success\"\\x1b[2J\\x0d\\u{85}\\x7f\tend\n"
        );
        assert_eq!(out.matches('\n').count(), 1);
        // Our own colours survive on a terminal; anything else from the same line does not.
        let coloured = escape_text_line(b"\x1b[32mINFO\x1b[0m x\x1b]0;title\x07\n", true);
        assert_eq!(coloured, b"\x1b[32mINFO\x1b[0m x\\x1b]0;title\\x07\n");
    }

    #[test]
    fn json_lines_stay_valid_json() {
        let line = serde_json::to_vec(&serde_json::json!({"p": "a\n\u{1b}\u{7f}\u{85}b"})).unwrap();
        let out = escape_json_line(&line);
        assert!(!out.iter().any(|b| *b < 0x20 || *b == 0x7f));
        let back: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(back["p"], "a\n\u{1b}\u{7f}\u{85}b");
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
/// escaped, and the text is cut at 200 characters (the rest counted). The bucket is untrusted
/// input.
pub fn untrusted(text: &str) -> String {
    const MAX: usize = 200;
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == MAX {
            out.push_str(&format!("...({} bytes in all)", text.len()));
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
        assert_eq!(
            super::untrusted(&"x".repeat(500)),
            format!("{}...(500 bytes in all)", "x".repeat(200))
        );
    }
}
