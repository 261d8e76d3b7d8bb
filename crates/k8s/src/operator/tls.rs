//! The webhook's TLS without cert-manager: a CA and a serving certificate kept in a Secret,
//! the CA written into the MutatingWebhookConfiguration's `caBundle`, renewed before expiry.
//!
//! Decisions:
//! - The Secret (`tls.crt`, `tls.key`, `ca.crt`, `ca.key`) is the one shared state: every
//!   replica uses what is there when it is valid (parses, covers the host names, not near its
//!   end) and otherwise writes a new one with optimistic concurrency (create, or replace at the
//!   resourceVersion read); on a conflict it reads what the other replica wrote and uses that.
//! - The CA lives 10 years and is kept across serving-certificate renewals, so a renewal never
//!   changes the caBundle; the serving certificate lives one year and is renewed 30 days before
//!   its end. Every replica re-reads the Secret periodically and swaps the certificate it
//!   serves without a restart ([`CertSlot`]).
//! - ECDSA P-256 keys (rcgen's default), generated from the OS CSPRNG. Keys are never logged.
//! - Alternative: certificates mounted from files (cert-manager); then neither the Secret nor
//!   the caBundle is touched (cert-manager's CA injector owns it), and the files are re-read.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use time::OffsetDateTime;

const CA_VALIDITY: time::Duration = time::Duration::days(3650);
const SERVING_VALIDITY: time::Duration = time::Duration::days(365);
/// A certificate this close to its end is replaced.
const RENEW_BEFORE: time::Duration = time::Duration::days(30);
/// How often the Secret (or the files) are re-read.
pub const CHECK_EVERY: Duration = Duration::from_secs(600);
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// PEM texts of one generation of certificates.
#[derive(Clone, PartialEq, Eq)]
pub struct Material {
    pub cert: String,
    pub key: String,
    pub ca: String,
    pub ca_key: String,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Material { .. }")
    }
}

/// The certificate the server presents; swapped on renewal.
#[derive(Debug)]
pub struct CertSlot(RwLock<Arc<CertifiedKey>>);

impl CertSlot {
    pub fn new(key: Arc<CertifiedKey>) -> Arc<Self> {
        Arc::new(CertSlot(RwLock::new(key)))
    }

    pub fn set(&self, key: Arc<CertifiedKey>) {
        *self.0.write().expect("cert lock") = key;
    }
}

impl ResolvesServerCert for CertSlot {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0.read().expect("cert lock")))
    }
}

/// Turns a PEM chain and key into what rustls serves.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<CertifiedKey>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot read the certificate PEM: {e}"))?;
    if certs.is_empty() {
        return Err("the certificate PEM holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("cannot read the private key PEM: {e}"))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("unsupported private key: {e}"))?;
    Ok(Arc::new(CertifiedKey::new(certs, signing)))
}

/// The DNS names the API server uses for the Service, plus `extra`.
pub fn hosts(service: &str, namespace: &str, extra: &[String]) -> Vec<String> {
    let mut h = vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ];
    h.extend(extra.iter().cloned());
    h
}

fn rcgen_err(e: rcgen::Error) -> String {
    format!("cannot generate a certificate: {e}")
}

/// A new CA and a serving certificate for `hosts` signed by it.
pub fn generate(hosts: &[String], now: OffsetDateTime) -> Result<Material, String> {
    let ca_key = KeyPair::generate().map_err(rcgen_err)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(rcgen_err)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "volume-syncing-operator webhook CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = now - time::Duration::hours(1);
    ca.not_after = now + CA_VALIDITY;
    let ca_cert = ca.self_signed(&ca_key).map_err(rcgen_err)?;
    let ca_pem = ca_cert.pem();
    let ca_key_pem = ca_key.serialize_pem();
    issue(&ca_pem, &ca_key_pem, hosts, now)
}

/// A serving certificate for `hosts` signed by the given CA.
pub fn issue(
    ca_pem: &str,
    ca_key_pem: &str,
    hosts: &[String],
    now: OffsetDateTime,
) -> Result<Material, String> {
    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(rcgen_err)?;
    let issuer = Issuer::from_ca_cert_pem(ca_pem, ca_key).map_err(rcgen_err)?;
    let key = KeyPair::generate().map_err(rcgen_err)?;
    let mut params = CertificateParams::new(hosts.to_vec()).map_err(rcgen_err)?;
    params.distinguished_name.push(
        DnType::CommonName,
        hosts.first().cloned().unwrap_or_default(),
    );
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + SERVING_VALIDITY;
    let cert = params.signed_by(&key, &issuer).map_err(rcgen_err)?;
    Ok(Material {
        cert: cert.pem(),
        key: key.serialize_pem(),
        ca: ca_pem.to_string(),
        ca_key: ca_key_pem.to_string(),
    })
}

/// The end of validity and the DNS/IP names of a PEM certificate.
fn inspect(pem: &str) -> Result<(OffsetDateTime, Vec<String>), String> {
    let der = CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| format!("cannot read the certificate PEM: {e}"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| format!("cannot parse the certificate: {e}"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(d) => names.push(d.to_string()),
                x509_parser::extensions::GeneralName::IPAddress(ip) => {
                    let text = match ip.len() {
                        4 => std::net::IpAddr::from(<[u8; 4]>::try_from(*ip).unwrap()).to_string(),
                        16 => {
                            std::net::IpAddr::from(<[u8; 16]>::try_from(*ip).unwrap()).to_string()
                        }
                        _ => continue,
                    };
                    names.push(text);
                }
                _ => {}
            }
        }
    }
    Ok((cert.validity().not_after.to_datetime(), names))
}

/// Why `m` cannot be used as it is (None: it can), and whether the CA itself must be replaced.
pub fn check(m: &Material, hosts: &[String], now: OffsetDateTime) -> Option<(String, bool)> {
    match inspect(&m.ca) {
        Err(e) => return Some((format!("CA: {e}"), true)),
        Ok((end, _)) if end - now < SERVING_VALIDITY + RENEW_BEFORE => {
            return Some(("the CA ends before a new certificate would".into(), true));
        }
        Ok(_) => {}
    }
    if KeyPair::from_pem(&m.ca_key).is_err() {
        return Some(("the CA key does not parse".into(), true));
    }
    if let Err(e) = certified_key(m.cert.as_bytes(), m.key.as_bytes()) {
        return Some((e, false));
    }
    match inspect(&m.cert) {
        Err(e) => Some((e, false)),
        Ok((end, _)) if end - now < RENEW_BEFORE => Some(("it ends within 30 days".into(), false)),
        Ok((_, names)) => hosts
            .iter()
            .find(|h| !names.contains(h))
            .map(|h| (format!("it does not cover {h}"), false)),
    }
}

fn from_secret(secret: &Secret) -> Option<Material> {
    let data = secret.data.as_ref()?;
    let get = |k: &str| {
        data.get(k)
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
    };
    Some(Material {
        cert: get("tls.crt")?,
        key: get("tls.key")?,
        ca: get("ca.crt")?,
        ca_key: get("ca.key")?,
    })
}

fn secret_data(m: &Material) -> std::collections::BTreeMap<String, ByteString> {
    [
        ("tls.crt", &m.cert),
        ("tls.key", &m.key),
        ("ca.crt", &m.ca),
        ("ca.key", &m.ca_key),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), ByteString(v.clone().into_bytes())))
    .collect()
}

async fn bounded<T>(
    what: &str,
    fut: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(r) => r.map_err(|e| format!("{what}: {e}")),
        Err(_) => Err(format!(
            "{what}: no answer from the API server within {CALL_TIMEOUT:?}"
        )),
    }
}

/// The valid material of Secret `name`, creating or renewing it when needed.
pub async fn ensure_secret(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    hosts: &[String],
) -> Result<Material, String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let where_ = format!("TLS Secret {namespace}/{name}");
    // Two rounds: a lost race is followed by reading (and checking) what won.
    for _ in 0..3 {
        let now = OffsetDateTime::now_utc();
        let existing = bounded(&format!("cannot read {where_}"), api.get_opt(name)).await?;
        let current = existing.as_ref().and_then(from_secret);
        let fresh = match &current {
            Some(m) => match check(m, hosts, now) {
                None => return Ok(m.clone()),
                Some((why, true)) => {
                    tracing::info!(secret = %where_, "new CA and certificate: {why}");
                    generate(hosts, now)?
                }
                Some((why, false)) => {
                    tracing::info!(secret = %where_, "new serving certificate: {why}");
                    issue(&m.ca, &m.ca_key, hosts, now)?
                }
            },
            None => {
                tracing::info!(secret = %where_, "generating a CA and serving certificate");
                generate(hosts, now)?
            }
        };
        let result = match existing {
            Some(mut secret) => {
                // Replace at the resourceVersion read: a concurrent writer makes this conflict.
                secret.data = Some(secret_data(&fresh));
                secret.string_data = None;
                bounded(
                    &format!("cannot update {where_}"),
                    api.replace(name, &PostParams::default(), &secret),
                )
                .await
            }
            None => {
                let secret = Secret {
                    metadata: ObjectMeta {
                        name: Some(name.to_string()),
                        namespace: Some(namespace.to_string()),
                        ..Default::default()
                    },
                    data: Some(secret_data(&fresh)),
                    type_: Some("Opaque".into()),
                    ..Default::default()
                };
                bounded(
                    &format!("cannot create {where_}"),
                    api.create(&PostParams::default(), &secret),
                )
                .await
            }
        };
        match result {
            Ok(_) => return Ok(fresh),
            Err(e)
                if e.contains("409") || e.contains("AlreadyExists") || e.contains("Conflict") =>
            {
                tracing::info!(secret = %where_, "another replica wrote it first; reading theirs");
            }
            Err(e) => return Err(e),
        }
    }
    Err(format!("{where_}: kept changing under concurrent writers"))
}

/// Writes `ca_pem` into the caBundle of every webhook of the configuration `name`.
pub async fn write_ca_bundle(
    client: &kube::Client,
    name: &str,
    ca_pem: &str,
) -> Result<(), String> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let where_ = format!("MutatingWebhookConfiguration {name}");
    let config = bounded(&format!("cannot read {where_}"), api.get(name)).await?;
    let bundle = ByteString(ca_pem.as_bytes().to_vec());
    let webhooks = config.webhooks.unwrap_or_default();
    if webhooks.is_empty() {
        return Err(format!("{where_} has no webhooks"));
    }
    if webhooks
        .iter()
        .all(|w| w.client_config.ca_bundle.as_ref() == Some(&bundle))
    {
        return Ok(());
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    // A JSON patch of the caBundle fields only, guarded by a test of each webhook's name so a
    // concurrent reordering fails instead of writing the wrong entry.
    let mut ops = Vec::new();
    for (i, w) in webhooks.iter().enumerate() {
        ops.push(serde_json::json!({"op": "test", "path": format!("/webhooks/{i}/name"), "value": w.name}));
        ops.push(serde_json::json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": encoded}));
    }
    let patch: json_patch::Patch =
        serde_json::from_value(serde_json::Value::Array(ops)).expect("a valid JSON patch");
    bounded(
        &format!("cannot patch the caBundle of {where_}"),
        api.patch(name, &PatchParams::default(), &Patch::Json::<()>(patch)),
    )
    .await?;
    tracing::info!(configuration = name, "wrote the CA into the caBundle");
    Ok(())
}

/// Where the certificate comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Generated, in this Secret, for these names, CA into this webhook configuration.
    Secret {
        namespace: String,
        name: String,
        hosts: Vec<String>,
        webhook_configuration: String,
    },
    /// Mounted files (cert-manager).
    Files { cert: PathBuf, key: PathBuf },
}

/// Loads the current certificate from `source` (creating/renewing a generated one and writing
/// its CA into the caBundle).
pub async fn load(client: &kube::Client, source: &Source) -> Result<Arc<CertifiedKey>, String> {
    match source {
        Source::Secret {
            namespace,
            name,
            hosts,
            webhook_configuration,
        } => {
            let m = ensure_secret(client, namespace, name, hosts).await?;
            write_ca_bundle(client, webhook_configuration, &m.ca).await?;
            certified_key(m.cert.as_bytes(), m.key.as_bytes())
        }
        Source::Files { cert, key } => {
            let c = tokio::fs::read(cert)
                .await
                .map_err(|e| format!("cannot read --tls-cert-file {}: {e}", cert.display()))?;
            let k = tokio::fs::read(key)
                .await
                .map_err(|e| format!("cannot read --tls-key-file {}: {e}", key.display()))?;
            certified_key(&c, &k)
        }
    }
}

/// Re-reads the source every [`CHECK_EVERY`] and swaps the served certificate (renewal, another
/// replica's renewal, rotated files). A failed check is logged and retried; the current
/// certificate keeps serving.
pub async fn maintain(client: kube::Client, source: Source, slot: Arc<CertSlot>) {
    loop {
        tokio::time::sleep(CHECK_EVERY).await;
        match load(&client, &source).await {
            Ok(key) => slot.set(key),
            Err(e) => tracing::warn!("TLS certificate check failed (kept the current one): {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_material_is_valid_and_renewal_is_detected() {
        let hosts = hosts("vso", "ops", &["127.0.0.1".into()]);
        let now = OffsetDateTime::now_utc();
        let m = generate(&hosts, now).unwrap();
        assert!(check(&m, &hosts, now).is_none());
        let later = now + SERVING_VALIDITY - time::Duration::days(10);
        let (why, ca) = check(&m, &hosts, later).unwrap();
        assert!(!ca, "{why}");
        let renewed = issue(&m.ca, &m.ca_key, &hosts, later).unwrap();
        assert!(check(&renewed, &hosts, later).is_none());
        assert_eq!(
            renewed.ca, m.ca,
            "a renewal keeps the CA (and the caBundle)"
        );
        let more = [hosts.clone(), vec!["other.example".into()]].concat();
        assert!(check(&m, &more, now).unwrap().0.contains("other.example"));
    }
}
