//! The lease object as a bucket's writer may have made it: parsing never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vso_core::sync::lease::parse_lease(data);
});
