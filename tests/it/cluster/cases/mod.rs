//! One file per case, each in its own namespace (see the module docs for what each checks).

pub mod fail_closed;
pub mod install;
pub mod statefulset;
