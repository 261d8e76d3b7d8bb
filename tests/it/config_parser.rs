//! Property test: every REMOTE_* value the project accepts is read back byte-identical by the
//! real rclone's config parser (`rclone config dump` on the file the project renders), and
//! every value it cannot represent is refused with exit 2. No value may silently change.
//!
//! The values are random (a fixed seed per round, so a failure reproduces) and built from what
//! config parsers treat specially: white space at either end (ASCII and Unicode), quotes of
//! every kind (alone, surrounding, tripled, unclosed), comment characters, `=`, `:`,
//! backslashes, non-ASCII text, line breaks, and long values.

use crate::support;

use std::process::Command;

use vso_core::remote::config::{REMOTE_SECTION, collect_options, render_section};

/// Pieces values are made of.
const PIECES: [&str; 31] = [
    "a", "Z", "0", "secret", " ", "  ", "\t", "\u{a0}", "\u{2003}", "\u{85}", "\u{3000}", "\"",
    "\"\"\"", "'", "'''", "`", "``", "#", ";", "=", ":", "\\", "\\n", "é", "日本", "🦀", "[x]",
    "%", "$HOME", "\n", "\r",
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn value(&mut self) -> String {
        let long = self.below(20) == 0;
        let len = if long {
            200 + self.below(2000)
        } else {
            self.below(8)
        };
        let mut v = String::new();
        for _ in 0..len {
            v.push_str(PIECES[self.below(PIECES.len())]);
        }
        v
    }
}

/// What rclone reads from a config file: section → key → value.
fn dump(text: &str) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rclone.conf");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(support::rclone())
        .args(["config", "dump", "--config"])
        .arg(&path)
        .env_clear()
        .output()
        .expect("cannot run rclone");
    assert!(
        out.status.success(),
        "rclone cannot parse the rendered config:\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        text
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn every_accepted_value_reads_back_byte_identical_and_the_rest_is_refused() {
    let mut accepted = 0;
    let mut refused = 0;
    for round in 0..12u64 {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (round + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
        let mut expected = Vec::new();
        let mut env = vec![("REMOTE_TYPE".to_string(), "s3".to_string())];
        for i in 0..40 {
            let value = rng.value();
            let name = format!("REMOTE_OPTION_{i}");
            match collect_options(vec![(name.as_str(), value.as_str())], "REMOTE_", &[], "-p") {
                Ok(_) => {
                    expected.push((format!("option_{i}"), value.clone()));
                    env.push((name, value));
                }
                Err(e) => {
                    assert_eq!(e.exit_code(), 2, "{value:?}: {e}");
                    assert!(
                        value.contains(['\n', '\r']),
                        "a value without a line break was refused: {value:?}: {e}"
                    );
                    refused += 1;
                }
            }
        }
        let options = collect_options(
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            "REMOTE_",
            &[],
            "-p",
        )
        .unwrap();
        let read = dump(&render_section(REMOTE_SECTION, &options));
        for (key, value) in &expected {
            assert_eq!(
                read[REMOTE_SECTION][key].as_str(),
                Some(value.as_str()),
                "round {round}: rclone read option {key} differently"
            );
            accepted += 1;
        }
    }
    assert!(
        accepted > 300 && refused > 10,
        "{accepted} accepted, {refused} refused"
    );
}

/// The same through `-p key=value`, where the key side is trimmed and lower-cased.
#[test]
fn values_from_flags_read_back_byte_identical() {
    let mut rng = Rng(42);
    let mut params = vec!["type=s3".to_string()];
    let mut expected = Vec::new();
    while expected.len() < 40 {
        let value = rng.value();
        if value.contains(['\n', '\r']) {
            continue;
        }
        let key = format!("flag_{}", expected.len());
        params.push(format!("{key}={value}"));
        expected.push((key, value));
    }
    let options = collect_options(Vec::<(&str, &str)>::new(), "REMOTE_", &params, "-p").unwrap();
    let read = dump(&render_section(REMOTE_SECTION, &options));
    for (key, value) in &expected {
        assert_eq!(
            read[REMOTE_SECTION][key].as_str(),
            Some(value.as_str()),
            "{key}"
        );
    }
}
