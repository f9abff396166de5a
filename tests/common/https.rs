//! A real HTTPS server on a loopback port (hyper + tokio-rustls) for the connect-proxy and JWKS tests, with a
//! test CA and a server certificate for `127.0.0.1` and `localhost` made with rcgen at test time (never
//! committed, never valid anywhere else).

use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sealcast::auth::tls::TlsRoots;

/// A throwaway certificate authority and the server certificate it issued.
pub struct TestCa {
    /// The CA certificate, PEM: what a client configured with this CA trusts.
    pub pem: String,
    server: Arc<rustls::ServerConfig>,
}

impl TestCa {
    /// A new CA named `name` and a server certificate for 127.0.0.1 and localhost.
    pub fn new(name: &str) -> Self {
        Self::for_names(name, &["127.0.0.1", "localhost"])
    }

    /// A new CA named `name` and a server certificate for `names` (host names or IP addresses) only.
    pub fn for_names(name: &str, names: &[&str]) -> Self {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, name);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf_params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        let leaf = leaf_params.signed_by(&leaf_key, &ca).unwrap();
        let chain: Vec<CertificateDer<'static>> = vec![leaf.der().clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let server = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        Self {
            pem: ca.pem(),
            server: Arc::new(server),
        }
    }

    /// Roots that trust this CA only.
    pub fn roots(&self) -> TlsRoots {
        TlsRoots::from_ca_pem(self.pem.as_bytes()).unwrap()
    }
}

/// Serves `app` over TLS with `ca`'s server certificate on a free loopback port.
pub async fn serve_https(app: axum::Router, ca: &TestCa) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(ca.server.clone());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                // A client that does not trust the CA aborts the handshake: nothing to serve then.
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let mut app = app.clone();
                    async move { tower_service::Service::call(&mut app, req.map(axum::body::Body::new)).await }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}
