//! Optional TLS for the TCP sources (Fluent forward, syslog), with rustls and ring.

use std::path::PathBuf;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::contract::BuildError;

/// Server certificate and key, PEM files.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain, PEM.
    pub cert_file: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1), PEM.
    pub key_file: PathBuf,
}

/// Builds an acceptor; `key` names the config section in errors.
pub fn acceptor(cfg: &TlsConfig, key: &str) -> Result<TlsAcceptor, BuildError> {
    let err = BuildError::Tls;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cfg.cert_file)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| err(format!("{key}.cert_file {}: {e}", cfg.cert_file.display())))?;
    if certs.is_empty() {
        return Err(err(format!(
            "{key}.cert_file {}: no certificate found",
            cfg.cert_file.display()
        )));
    }
    let private = PrivateKeyDer::from_pem_file(&cfg.key_file)
        .map_err(|e| err(format!("{key}.key_file {}: {e}", cfg.key_file.display())))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err(format!("{key}: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, private)
        .map_err(|e| err(format!("{key}: certificate and key do not match: {e}")))?;
    Ok(TlsAcceptor::from(Arc::new(server)))
}
