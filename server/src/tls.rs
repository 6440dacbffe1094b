//! Optional TLS (`--tls-cert`, `--tls-key`): PEM files loaded once at
//! startup into a rustls server config. Without them the server speaks plain
//! HTTP, as behind a TLS-terminating proxy.
//!
//! Loading fails with a message naming the file and what is wrong with it
//! (unreadable, no certificate, no key, key not the certificate's), so a
//! misconfigured server refuses to start instead of failing every handshake.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why the TLS files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {flag} {}: {source}", path.display())]
    Read {
        flag: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{flag} {} holds no PEM {what} (expected a \"-----BEGIN {what_upper}\" block){detail}", path.display(), what_upper = what.to_uppercase())]
    Pem {
        flag: &'static str,
        path: PathBuf,
        what: &'static str,
        detail: String,
    },
    #[error("the private key in {} is not the key of the certificate in {} (the first certificate in the file must be the server's own)", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("cannot serve the certificate in {} with the key in {}: {source}", cert.display(), key.display())]
    Unusable {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
}

/// A rustls server config for the certificate chain and key in PEM files
/// (the leaf certificate first, as `certbot`'s `fullchain.pem`). HTTP/1.1
/// only, like the plain listener.
///
/// # Errors
/// [`TlsError`] naming the file and the problem.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let read = |flag, path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            flag,
            path: path.to_path_buf(),
            source,
        })
    };
    let cert_pem = read("--tls-cert", cert)?;
    let key_pem = read("--tls-key", key)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            flag: "--tls-cert",
            path: cert.to_path_buf(),
            what: "certificate",
            detail: format!(": {e}"),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Pem {
            flag: "--tls-cert",
            path: cert.to_path_buf(),
            what: "certificate",
            detail: String::new(),
        });
    }
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Pem {
        flag: "--tls-key",
        path: key.to_path_buf(),
        what: "private key",
        detail: match e {
            rustls::pki_types::pem::Error::NoItemsFound => String::new(),
            other => format!(": {other}"),
        },
    })?;
    // An explicit provider: the process-wide default is ambiguous when more
    // than one rustls backend is compiled in, and panics then.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let unusable = |source| match source {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
            TlsError::KeyMismatch {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
            }
        }
        source => TlsError::Unusable {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            source,
        },
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(unusable)?
        .with_no_client_auth()
        // Checks that the key is the leaf certificate's.
        .with_single_cert(chain, private)
        .map_err(unusable)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
