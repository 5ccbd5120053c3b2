//! [`TlsSet`]: a CA, a server certificate and a client certificate, written as PEM
//! files to a temporary directory, for servers that require mutual TLS.
//!
//! The certificates are made as Harness's runners make them for lite-engine (one
//! CA per machine, ECDSA P-256 keys, no extended key usage), so a server that accepts
//! these accepts a runner's: whatever key usage a verifier demands of a client or a
//! server certificate, a certificate without the extension passes it.
//!
//! ```no_run
//! # async fn f() {
//! let set = runlog_testkit::tls::TlsSet::new(&["engine.test"]);
//! // Serve with set.server_tls() (or the files set.server_cert, set.server_key,
//! // set.ca_cert); then:
//! let client = set.client().build().expect("client");
//! # }
//! ```

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

/// A CA and two certificates it signed, as PEM files that live as long as the set.
pub struct TlsSet {
    dir: tempfile::TempDir,
    /// The CA's certificate: the server's `--tls-client-ca`, and the root a client trusts.
    pub ca_cert: PathBuf,
    /// The server's certificate, for `localhost`, `127.0.0.1` and the names given.
    pub server_cert: PathBuf,
    /// The server certificate's key (PKCS#8).
    pub server_key: PathBuf,
    /// A client certificate the CA signed.
    pub client_cert: PathBuf,
    /// The client certificate's key (PKCS#8).
    pub client_key: PathBuf,
}

impl TlsSet {
    /// A new CA, a server certificate valid for `localhost`, `127.0.0.1` and
    /// `server_names`, and a client certificate, all in a new temporary directory.
    pub fn new(server_names: &[&str]) -> TlsSet {
        let dir = tempfile::tempdir().expect("temp dir for certificates");
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params
            .distinguished_name
            .push(DnType::OrganizationName, "runlog test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
            KeyUsagePurpose::KeyAgreement,
        ];
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA certificate");
        let ca_cert = write(dir.path(), "ca-cert.pem", &ca.pem());

        let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        names.extend(server_names.iter().map(|n| (*n).to_owned()));
        let (cert, key) = leaf(names, "runlog test server", &ca);
        let server_cert = write(dir.path(), "server-cert.pem", &cert);
        let server_key = write(dir.path(), "server-key.pem", &key);
        let (cert, key) = leaf(Vec::new(), "runlog test client", &ca);
        let client_cert = write(dir.path(), "client-cert.pem", &cert);
        let client_key = write(dir.path(), "client-key.pem", &key);
        TlsSet {
            dir,
            ca_cert,
            server_cert,
            server_key,
            client_cert,
            client_key,
        }
    }

    /// The server's files: its certificate and key, and the CA as the client CA.
    pub fn files(&self) -> runlog_edge::TlsFiles {
        runlog_edge::TlsFiles {
            cert: self.server_cert.clone(),
            key: self.server_key.clone(),
            client_ca: self.ca_cert.clone(),
        }
    }

    /// The server's TLS, loaded from [`TlsSet::files`] (for `EngineConfig::tls`, or
    /// `runlog_edge::serve_tls`).
    pub fn server_tls(&self) -> runlog_edge::ServerTls {
        runlog_edge::ServerTls::from_files(&self.files()).expect("the set's own files load")
    }

    /// The directory holding the files (to put other files beside them).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The client certificate and its key, as a client presents them.
    pub fn client_identity(&self) -> reqwest::Identity {
        identity(&self.client_cert, &self.client_key)
    }

    /// The server's own certificate and key as a client identity: Harness's runners
    /// present the very certificate the engine serves.
    pub fn server_identity(&self) -> reqwest::Identity {
        identity(&self.server_cert, &self.server_key)
    }

    /// The CA's certificate, for a client's roots.
    pub fn ca(&self) -> reqwest::Certificate {
        let pem = std::fs::read(&self.ca_cert).expect("CA file");
        reqwest::Certificate::from_pem(&pem).expect("CA PEM")
    }

    /// A client builder that trusts this CA alone and presents the client certificate;
    /// TLS 1.3, as a Harness runner insists.
    pub fn client(&self) -> reqwest::ClientBuilder {
        self.client_without_identity()
            .identity(self.client_identity())
    }

    /// [`TlsSet::client`] without a client certificate.
    pub fn client_without_identity(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(self.ca())
            .min_tls_version(reqwest::tls::Version::TLS_1_3)
    }
}

/// A certificate for `names` signed by `ca`, made as lite-engine's runners make theirs
/// (no extended key usage); its PEM and its key's PEM.
fn leaf(
    names: Vec<String>,
    organization: &str,
    ca: &CertifiedIssuer<'_, KeyPair>,
) -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(names).expect("certificate params");
    params
        .distinguished_name
        .push(DnType::OrganizationName, organization);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::KeyAgreement,
    ];
    let cert = params.signed_by(&key, ca).expect("signed certificate");
    (cert.pem(), key.serialize_pem())
}

fn write(dir: &Path, name: &str, pem: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, pem).expect("write a PEM file");
    path
}

fn identity(cert: &Path, key: &Path) -> reqwest::Identity {
    let mut pem = std::fs::read(cert).expect("certificate file");
    pem.extend(std::fs::read(key).expect("key file"));
    reqwest::Identity::from_pem(&pem).expect("identity PEM")
}
