//! The `mass-delete` valve's upload record as a bucket's writer may have made it: parsing
//! never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vso_core::sync::valves::mass_delete::parse_record(data);
});
