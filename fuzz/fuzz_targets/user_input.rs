//! What a user types: remote paths, schedules and durations are refused with a message, never
//! with a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use volume_syncing_operator::{remote_path, schedule};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = remote_path::validate(text, "-d");
    let _ = schedule::Schedule::parse(text);
    if let Ok(d) = schedule::parse_duration(text) {
        let _ = schedule::format_duration(d);
    }
});
