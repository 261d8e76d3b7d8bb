//! What a user types: remote paths, schedules and durations are refused with a message, never
//! with a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vso_core::daemon::schedule;
use vso_core::duration;
use vso_core::remote::path as remote_path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = remote_path::validate(text, "-d");
    let _ = schedule::Schedule::parse(text);
    if let Ok(d) = duration::parse_duration(text) {
        let _ = duration::format_duration(d);
    }
});
