//! The `operator` command: the admission webhook around the injection core ([`crate::inject`]),
//! run as Pods of the cluster with their own service account.
//!
//! - [`run`]: the command — the API client, the resource watch, the request handler;
//! - [`cache`]: the watched resources, read one by one (one that cannot be read refuses only
//!   its namespace's labelled Pods);
//! - [`webhook`]: AdmissionReview → injection core → JSON Patch;
//! - [`keys`]: the generated encryption passphrases (`automaticEncryption`), one Secret per key;
//! - [`tls`]: the CA and serving certificate (generated and shared through a Secret, or mounted);
//! - [`server`]: HTTPS (admission, `/healthz`, `/readyz`, `/metrics`);
//! - [`status`]: the resources' status, from the injected Pods' sidecars (the elected leader).

pub mod cache;
pub mod keys;
pub mod run;
pub mod server;
pub mod status;
pub mod tls;
pub mod webhook;
