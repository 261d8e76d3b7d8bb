//! The metadata manifest as a bucket's writer may have made it: parsing never panics, and what
//! it accepts has only safe relative paths within the documented bounds.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vso_core::sync::fidelity::parse(data);
});
