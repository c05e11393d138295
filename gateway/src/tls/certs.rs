//! Loading certificates and keys from PEM files into what rustls serves, and choosing one by
//! the SNI name a client asks for.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::crypto::ring::sign::any_supported_type;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{CertFiles, TlsConfig};

/// Every certificate of the TLS listener, as one snapshot (swapped whole on reload).
#[derive(Debug)]
pub struct CertStore {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `(".example.com", key)` for `*.example.com`.
    wildcard: Vec<(String, Arc<CertifiedKey>)>,
    default: Arc<CertifiedKey>,
    /// Each certificate file and when its leaf certificate expires (Unix seconds), for
    /// `corral_tls_cert_expiry_timestamp_seconds`: an alert fires well before a renewal that
    /// did not happen takes the listener down.
    pub expiry: Vec<(String, i64)>,
}

impl CertStore {
    /// Loads every file named by the config; the first error names the file.
    pub fn load(config: &TlsConfig) -> Result<CertStore, String> {
        let default = load_pair(&config.default_cert)?;
        let mut expiry = vec![not_after(&config.default_cert, &default)?];
        let mut exact = HashMap::new();
        let mut wildcard = Vec::new();
        for sni in &config.certificates {
            let key = load_pair(&sni.files)?;
            expiry.push(not_after(&sni.files, &key)?);
            for name in &sni.server_names {
                match name.strip_prefix('*') {
                    Some(suffix) => wildcard.push((suffix.to_string(), Arc::clone(&key))),
                    None => {
                        exact.insert(name.clone(), Arc::clone(&key));
                    }
                }
            }
        }
        Ok(CertStore {
            exact,
            wildcard,
            default,
            expiry,
        })
    }

    /// Sets `corral_tls_cert_expiry_timestamp_seconds` to this snapshot's certificates (those
    /// no longer configured are dropped).
    pub fn export_expiry(&self, metrics: &crate::metrics::Metrics) {
        metrics.tls_cert_expiry.reset();
        for (file, at) in &self.expiry {
            metrics
                .tls_cert_expiry
                .with_label_values(&[file.as_str()])
                .set(*at);
        }
    }

    /// The certificate for `server_name`: exact name, then the longest wildcard, then default.
    pub fn pick(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = server_name.map(str::to_ascii_lowercase) else {
            return Arc::clone(&self.default);
        };
        if let Some(key) = self.exact.get(&name) {
            return Arc::clone(key);
        }
        self.wildcard
            .iter()
            .filter(|(suffix, _)| {
                name.ends_with(suffix.as_str()) && !name[..name.len() - suffix.len()].contains('.')
            })
            .max_by_key(|(suffix, _)| suffix.len())
            .map_or_else(|| Arc::clone(&self.default), |(_, key)| Arc::clone(key))
    }
}

/// The leaf certificate's `notAfter`, with its file's name.
fn not_after(files: &CertFiles, key: &CertifiedKey) -> Result<(String, i64), String> {
    let path = files.cert_file.display().to_string();
    let leaf = key
        .cert
        .first()
        .ok_or_else(|| format!("{path}: no certificate found"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| format!("{path}: cannot read the certificate's validity: {e}"))?;
    Ok((path, cert.validity().not_after.timestamp()))
}

fn load_pair(files: &CertFiles) -> Result<Arc<CertifiedKey>, String> {
    let cert_path = files.cert_file.display().to_string();
    let key_path = files.key_file.display().to_string();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert_file)
        .map_err(|e| format!("{cert_path}: cannot read certificates: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{cert_path}: bad PEM: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{cert_path}: no certificate found"));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key_file)
        .map_err(|e| format!("{key_path}: cannot read a private key: {e}"))?;
    let signing = any_supported_type(&key)
        .map_err(|e| format!("{key_path}: unsupported private key: {e}"))?;
    let certified = CertifiedKey::new(certs, signing);
    certified
        .keys_match()
        .map_err(|e| format!("{key_path}: the key does not match {cert_path}: {e}"))?;
    Ok(Arc::new(certified))
}
