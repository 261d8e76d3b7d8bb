//! The generated encryption passphrases of `automaticEncryption`: the Secret `secretName` in the
//! Pod's namespace, got or created.
//!
//! Decisions:
//! - 32 bytes (256 bits) from the OS CSPRNG, base64 (URL-safe, no padding) as the passphrase.
//! - Create first; on AlreadyExists read what is there: two Pods admitted at once race on the
//!   create and the API server keeps exactly one, so both end up with the same key.
//! - A Secret that exists without the key is an error, never overwritten: it may be the user's.
//! - No ownerReference: the key must outlive the resource and the Pods (data encrypted with it
//!   is unreadable without it). The value is never logged.

use std::time::Duration;

use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};

use crate::resource::PASSPHRASE_KEY;

/// Bound of each API call made while a Pod waits for admission.
const CALL_TIMEOUT: Duration = Duration::from_secs(4);

/// Label on the Secrets this creates (so they can be found and backed up).
pub const GENERATED_LABEL: &str = "riotkit.org/generated-by";

fn passphrase() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("the OS random source failed: {e}"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

fn has_key(secret: &Secret) -> bool {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(PASSPHRASE_KEY))
        .is_some_and(|v| !v.0.is_empty())
}

async fn bounded<T>(
    what: &str,
    fut: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, kube::Error> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(r) => r,
        Err(_) => Err(kube::Error::Service(
            format!("{what}: no answer from the API server within {CALL_TIMEOUT:?}").into(),
        )),
    }
}

/// Makes sure Secret `name` in `namespace` holds a passphrase; on a dry run only checks that
/// an existing one has the key (nothing is created).
pub async fn ensure(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    dry_run: bool,
) -> Result<(), String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let where_ = format!("Secret {namespace}/{name} (automaticEncryption.secretName)");
    let existing = bounded("get", api.get_opt(name))
        .await
        .map_err(|e| format!("cannot read {where_}: {e}"))?;
    if let Some(secret) = existing {
        return check(&secret, &where_);
    }
    if dry_run {
        return Ok(());
    }
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(
                [(
                    GENERATED_LABEL.to_string(),
                    "volume-syncing-operator".to_string(),
                )]
                .into(),
            ),
            annotations: Some(
                [(
                    "riotkit.org/note".to_string(),
                    "encryption passphrase of a PodFilesystemSync: back it up, data encrypted \
                     with it cannot be read without it"
                        .to_string(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        data: Some(
            [(
                PASSPHRASE_KEY.to_string(),
                ByteString(passphrase()?.into_bytes()),
            )]
            .into(),
        ),
        type_: Some("Opaque".into()),
        ..Default::default()
    };
    match bounded("create", api.create(&PostParams::default(), &secret)).await {
        Ok(_) => {
            tracing::info!(
                namespace,
                secret = name,
                "generated an encryption passphrase"
            );
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 409 => {
            // Another admission created it first: use what won.
            let secret = bounded("get", api.get(name))
                .await
                .map_err(|e| format!("cannot read {where_} after a concurrent create: {e}"))?;
            check(&secret, &where_)
        }
        Err(e) => Err(format!("cannot create {where_}: {e}")),
    }
}

fn check(secret: &Secret, where_: &str) -> Result<(), String> {
    if has_key(secret) {
        Ok(())
    } else {
        Err(format!(
            "{where_} exists but has no key {PASSPHRASE_KEY}; it is not overwritten: add the key \
             or name another Secret"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passphrases_are_256_bits_and_differ() {
        let a = passphrase().unwrap();
        let b = passphrase().unwrap();
        assert_ne!(a, b);
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&a)
            .unwrap();
        assert_eq!(bytes.len(), 32);
    }
}
