//! The safety valves: each a named rule with its override flag, checked before anything
//! changes; a refusal exits 3 and names both.
//!
//! - [`safety`]: the emptiness, ownership and link rules of the local and remote ends;
//! - [`mass_delete`]: an upload that would delete most of the remote (the upload record);
//! - [`crypt_marker`]: encrypted data never synced without its key (the plain marker).

pub mod crypt_marker;
pub mod mass_delete;
pub mod safety;
