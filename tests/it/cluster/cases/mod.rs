//! One file per case, each in its own namespace (see the module docs for what each checks).

pub mod automatic_encryption;
pub mod burst;
pub mod fail_closed;
pub mod install;
pub mod replication;
pub mod rollouts;
pub mod statefulset;
pub mod status;
