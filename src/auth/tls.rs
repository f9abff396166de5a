//! Which certificate authorities the authenticators' https endpoints (the connect proxy, the JWKS URL) must
//! chain to: the operating system's store, or only the CA certificates an operator configured.
//!
//! TLS is rustls on the `ring` provider (in every build of the crate, with or without its `aws-lc` feature),
//! TLS 1.2 and 1.3, ALPN `http/1.1`, certificate and host name checked by webpki. Session tickets are
//! kept per [`TlsRoots`] (every clone shares them), so the connection per request that the authenticators open
//! resumes instead of running a full handshake each time.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

/// Largest CA file read ([`TlsRoots::from_ca_file`]): a bundle of a few hundred certificates fits.
pub const MAX_CA_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Why the trusted certificate authorities could not be set up. Never holds key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The operating system's store has no usable CA certificate (e.g. a minimal container image).
    #[error("no usable CA certificate in the operating system's store: install one (ca-certificates) or configure a CA file")]
    NoSystemRoots,
    /// The CA file could not be read.
    #[error("cannot read the CA file {path}: {kind}")]
    Read {
        /// The file.
        path: String,
        /// What went wrong.
        kind: std::io::ErrorKind,
    },
    /// The CA file is larger than [`MAX_CA_FILE_BYTES`].
    #[error("the CA file {0} is larger than {MAX_CA_FILE_BYTES} bytes")]
    TooLarge(String),
    /// The PEM text holds no `-----BEGIN CERTIFICATE-----` block.
    #[error("no CA certificate (\"-----BEGIN CERTIFICATE-----\") in the PEM")]
    NoCertificate,
    /// A PEM block does not decode.
    #[error("the CA PEM is not valid: {0}")]
    InvalidPem(String),
    /// A certificate is not usable as a trust anchor.
    #[error("a CA certificate is not usable as a trust anchor: {0}")]
    InvalidCertificate(String),
    /// rustls refused the configuration.
    #[error("TLS setup failed: {0}")]
    Config(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    System,
    Configured,
}

/// The trusted certificate authorities for an https endpoint, with the TLS client configuration built on them.
/// Cheap to clone.
///
/// ```
/// use sealcast::auth::tls::TlsRoots;
///
/// // Only the CA in this PEM is trusted (here none: the text holds no certificate).
/// assert!(TlsRoots::from_ca_pem(b"not a certificate").is_err());
/// ```
#[derive(Clone)]
pub struct TlsRoots {
    config: Arc<ClientConfig>,
    source: Source,
    anchors: usize,
}

impl std::fmt::Debug for TlsRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsRoots")
            .field("source", &self.source)
            .field("anchors", &self.anchors)
            .finish()
    }
}

impl TlsRoots {
    /// The operating system's trusted CA certificates (`rustls-native-certs`: on Linux the distribution's bundle,
    /// or the files `SSL_CERT_FILE` / `SSL_CERT_DIR` name). Read once per process, on first use; later calls
    /// share that result, so a change to the store needs a restart.
    pub fn system() -> Result<Self, TlsError> {
        static SYSTEM: OnceLock<Result<TlsRoots, TlsError>> = OnceLock::new();
        SYSTEM
            .get_or_init(|| {
                let found = rustls_native_certs::load_native_certs();
                let mut roots = RootCertStore::empty();
                // Certificates the store holds but webpki cannot use (or files it could not read) are skipped, as
                // every TLS client does with the system store; an empty result is the error.
                let (added, _ignored) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    return Err(TlsError::NoSystemRoots);
                }
                Self::build(roots, Source::System)
            })
            .clone()
    }

    /// Only the CA certificates in `pem` (one or more `-----BEGIN CERTIFICATE-----` blocks; other blocks are
    /// ignored): the operating system's store is not consulted.
    pub fn from_ca_pem(pem: &[u8]) -> Result<Self, TlsError> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| TlsError::InvalidPem(e.to_string()))?;
            roots
                .add(cert)
                .map_err(|e| TlsError::InvalidCertificate(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(TlsError::NoCertificate);
        }
        Self::build(roots, Source::Configured)
    }

    /// [`Self::from_ca_pem`] on the contents of a file (at most [`MAX_CA_FILE_BYTES`]).
    pub fn from_ca_file(path: &Path) -> Result<Self, TlsError> {
        use std::io::Read as _;
        let read_error = |e: std::io::Error| TlsError::Read {
            path: path.display().to_string(),
            kind: e.kind(),
        };
        let file = std::fs::File::open(path).map_err(read_error)?;
        let mut pem = Vec::new();
        file.take(MAX_CA_FILE_BYTES + 1)
            .read_to_end(&mut pem)
            .map_err(read_error)?;
        if pem.len() as u64 > MAX_CA_FILE_BYTES {
            return Err(TlsError::TooLarge(path.display().to_string()));
        }
        Self::from_ca_pem(&pem)
    }

    /// True when these are the operating system's roots ([`Self::system`]).
    pub fn is_system(&self) -> bool {
        self.source == Source::System
    }

    fn build(roots: RootCertStore, source: Source) -> Result<Self, TlsError> {
        let anchors = roots.len();
        // An explicit provider: `ClientConfig::builder()` would panic if another crate in the application enabled
        // a second rustls provider without installing a process default.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            config: Arc::new(config),
            source,
            anchors,
        })
    }

    pub(crate) fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.config.clone())
    }
}
