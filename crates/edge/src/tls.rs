//! [`ServerTls`]: HTTPS with a required client certificate (mutual TLS), TLS 1.3 only.
//!
//! Harness's runners reach lite-engine only this way: the runner and the engine hold a
//! certificate signed by one CA made for the machine, and each checks the other's. The
//! server here checks, in the handshake, that the client sent a certificate chain
//! ending at the configured CA (and only that CA: no system roots), valid now, whose
//! extended key usage, when it has one, allows client authentication. A client that
//! sends none, or one another CA signed, gets an alert and no connection; no request
//! of it is ever read. Names in the client's certificate are not checked: the CA is
//! the machine's own, and whoever holds a certificate it signed is the controller.

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The three PEM files a TLS server is started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate, then any intermediates (PEM).
    pub cert: PathBuf,
    /// The server certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The CA (one or more certificates, PEM) that client certificates must chain to.
    pub client_ca: PathBuf,
}

/// Why the TLS files could not be used; each names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("cannot read {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why (in the message, not a source: said once).
        error: std::io::Error,
    },
    /// The file holds no PEM item of the kind it should.
    #[error("{} holds no PEM {what}", path.display())]
    NoPem {
        /// The file.
        path: PathBuf,
        /// What was looked for (`CERTIFICATE`, `PRIVATE KEY`).
        what: &'static str,
    },
    /// The file holds PEM, but what it holds is not usable.
    #[error("{}: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// A loaded server TLS configuration: cheap to clone, ready to accept connections.
#[derive(Clone)]
pub struct ServerTls {
    files: TlsFiles,
    config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for ServerTls {
    /// The files only: the configuration holds the private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads and checks the three files: each must hold what it should, and the key
    /// must belong to the certificate, so that a mistake fails at startup, naming its
    /// file, rather than in every handshake.
    pub fn from_files(files: &TlsFiles) -> Result<ServerTls, TlsError> {
        let chain = read_certs(&files.cert)?;
        let key = read_key(&files.key)?;
        let mut roots = RootCertStore::empty();
        for ca in read_certs(&files.client_ca)? {
            roots.add(ca).map_err(|e| TlsError::Invalid {
                path: files.client_ca.clone(),
                reason: format!("not a usable CA certificate: {e}"),
            })?;
        }
        // One provider, named here, rather than a process-wide default that another
        // crate could install differently.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| TlsError::Invalid {
                    path: files.client_ca.clone(),
                    reason: format!("cannot verify clients with it: {e}"),
                })?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Invalid {
                path: files.cert.clone(),
                reason: format!("no TLS 1.3 support: {e}"),
            })?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| single_cert_error(files, e))?;
        // The edge speaks HTTP/1.1 only; saying so lets a client that offers h2 first
        // (Go's does) settle on 1.1 in the handshake.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTls {
            files: files.clone(),
            config: Arc::new(config),
        })
    }

    /// The files this configuration was read from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.clone())
    }
}

/// Which file a refused certificate and key pair is the fault of.
fn single_cert_error(files: &TlsFiles, e: rustls::Error) -> TlsError {
    match e {
        rustls::Error::InconsistentKeys(_) => TlsError::Invalid {
            path: files.key.clone(),
            reason: format!("not the key of {}: {e}", files.cert.display()),
        },
        rustls::Error::InvalidCertificate(_) => TlsError::Invalid {
            path: files.cert.clone(),
            reason: format!("not a usable certificate: {e}"),
        },
        e => TlsError::Invalid {
            path: files.key.clone(),
            reason: format!("not a usable private key: {e}"),
        },
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read {
        path: path.to_owned(),
        error,
    })
}

/// Every certificate in a PEM file; at least one.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Invalid {
            path: path.to_owned(),
            reason: format!("bad PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoPem {
            path: path.to_owned(),
            what: "CERTIFICATE",
        });
    }
    Ok(certs)
}

/// The first private key in a PEM file.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoPem {
            path: path.to_owned(),
            what: "PRIVATE KEY",
        },
        e => TlsError::Invalid {
            path: path.to_owned(),
            reason: format!("bad PEM: {e}"),
        },
    })
}
