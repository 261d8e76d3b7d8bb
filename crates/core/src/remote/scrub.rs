//! Keeps secret values out of everything the program prints.
//!
//! rclone decides what it prints: a config line it cannot parse is quoted whole, an HTTP error
//! may echo a header. So every line read from rclone passes through a [`Scrubber`] before it is
//! logged or put into an error message, whatever rclone chose to print. The scrubber knows the
//! values of the secret-looking options of the rendered config ([`crate::remote::config::is_secret_key`]),
//! the crypt passphrase in plain and obscured form, and each also as Go/Rust and JSON escape it
//! and with surrounding white space trimmed (rclone's parser trims). Each occurrence becomes
//! `<redacted>`.
//!
//! Decision: every non-empty secret is scrubbed, however short — a one-letter secret makes the
//! log ugly, but the promise is "never in any output". Only the booleans `true`/`false` (e.g.
//! `env_auth = false`, whose key looks secret) are left alone: they are not secrets.

use std::borrow::Cow;

/// What replaces a secret.
pub const REDACTED: &str = "<redacted>";

/// Replaces known secret values in text.
#[derive(Debug, Clone, Default)]
pub struct Scrubber {
    /// Every form a secret may take in output, longest first (so a secret that contains
    /// another is replaced whole).
    forms: Vec<String>,
}

impl Scrubber {
    /// A scrubber for these secret values.
    pub fn new<I, S>(secrets: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut forms = Vec::new();
        for secret in secrets {
            let secret = secret.as_ref();
            if secret.is_empty()
                || secret.eq_ignore_ascii_case("true")
                || secret.eq_ignore_ascii_case("false")
            {
                continue;
            }
            let json = serde_json::to_string(secret).unwrap_or_default();
            let candidates = [
                secret.to_string(),
                secret.trim().to_string(),
                secret.escape_debug().to_string(),
                json.trim_matches('"').to_string(),
            ];
            forms.extend(candidates.into_iter().filter(|f| !f.is_empty()));
        }
        forms.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        forms.dedup();
        Scrubber { forms }
    }

    /// Adds more secrets (e.g. the crypt section's, known only after obscuring).
    pub fn extend<I, S>(&mut self, secrets: I)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let more = Scrubber::new(secrets);
        self.forms.extend(more.forms);
        self.forms
            .sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        self.forms.dedup();
    }

    /// The text with every known secret replaced by [`REDACTED`].
    pub fn scrub<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for form in &self.forms {
            if out.contains(form.as_str()) {
                out = Cow::Owned(out.replace(form.as_str(), REDACTED));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_of_a_secret_is_replaced() {
        let s = Scrubber::new(["`MySuperSecret123", " padded ", "quo\"te\\s", "x"]);
        let line = "could not parse line: secret_access_key = `MySuperSecret123";
        assert_eq!(
            s.scrub(line),
            "could not parse line: secret_access_key = <redacted>"
        );
        assert_eq!(s.scrub("key=padded;"), "key=<redacted>;");
        assert_eq!(
            s.scrub(r#"{"msg":"bad quo\"te\\s here"}"#),
            r#"{"msg":"bad <redacted> here"}"#
        );
        assert_eq!(s.scrub("a x b"), "a <redacted> b");
    }

    #[test]
    fn booleans_and_empty_values_are_not_secrets() {
        let s = Scrubber::new(["", "false", "TRUE"]);
        assert_eq!(s.scrub("env_auth false TRUE"), "env_auth false TRUE");
    }

    #[test]
    fn a_longer_secret_is_replaced_whole() {
        let s = Scrubber::new(["abc", "abcdef"]);
        assert_eq!(s.scrub("abcdef abc"), "<redacted> <redacted>");
    }
}
