//! `sealcast serve`'s authentication modes (HS256 secret, RS256/ES256 public key file or JWKS, connect proxy)
//! and SIGHUP: re-read the server key files and the JWT public key file, apply them, keep the old keys on error;
//! fetch the JWKS again (a failed fetch keeps the last good set).

use std::path::{Path, PathBuf};
use std::time::Duration;

use sealcast::auth::proxy::ConnectProxy;
use sealcast::auth::tls::TlsRoots;
use sealcast::auth::{JwksAuthenticator, JwtAlgorithm, JwtAuthenticator, JwtKey};
use sealcast::Server;
use sealcast_server::settings::AuthSettings;

/// How clients authenticate.
pub enum AuthMode {
    /// HS256 with `auth.jwt_secret` (or a generated development secret on loopback).
    Secret,
    /// RS256/ES256 verified with a public key file.
    PublicKey {
        /// The verifier (its clones follow a reload).
        authenticator: JwtAuthenticator,
        /// Re-read on SIGHUP.
        file: PathBuf,
    },
    /// RS256/ES256 verified with the keys of a JWKS URL (fetched and refreshed by the authenticator itself).
    Jwks(JwksAuthenticator),
    /// The connect proxy.
    Proxy(ConnectProxy),
}

impl AuthMode {
    /// The mode of validated settings ([`sealcast_server::Settings::validate`] refused every ambiguous combination);
    /// reads the public key file, and for an https URL the CA file or the system's trusted roots (so that a bad
    /// CA file stops the start, not the first authentication). Fetches nothing.
    pub fn from_settings(auth: &AuthSettings) -> Result<Self, String> {
        if let Some(url) = &auth.jwks_url {
            let mut builder = JwksAuthenticator::builder(url.expose(), auth.jwt_algorithm)
                .map_err(|e| format!("`auth.jwks_url`: {e}"))?
                .refresh_interval(Duration::from_secs(auth.jwks_refresh_secs));
            if let Some(roots) = tls_roots(url.expose(), auth.jwks_ca_file.as_deref(), "auth.jwks_ca_file")? {
                builder = builder.tls_roots(roots);
            }
            return builder
                .build()
                .map(Self::Jwks)
                .map_err(|e| format!("`auth.jwks_url`: {e}"));
        }
        if let Some(url) = &auth.proxy_url {
            let timeout = Duration::from_millis(auth.proxy_timeout_ms);
            let mut proxy = ConnectProxy::new(url.expose(), timeout).map_err(|e| format!("`auth.proxy_url`: {e}"))?;
            if let Some(roots) = tls_roots(url.expose(), auth.proxy_ca_file.as_deref(), "auth.proxy_ca_file")? {
                proxy = proxy.tls_roots(roots);
            }
            return Ok(Self::Proxy(proxy));
        }
        match &auth.jwt_public_key_file {
            Some(file) => Ok(Self::PublicKey {
                authenticator: JwtAuthenticator::new(read_jwt_key(auth.jwt_algorithm, file)?),
                file: file.clone(),
            }),
            None => Ok(Self::Secret),
        }
    }
}

/// The roots for `url` if it is https: only the CA file's certificates, or the system's.
fn tls_roots(url: &str, ca_file: Option<&Path>, ca_key: &str) -> Result<Option<TlsRoots>, String> {
    let https = url.get(..8).is_some_and(|s| s.eq_ignore_ascii_case("https://"));
    match ca_file {
        Some(file) => TlsRoots::from_ca_file(file)
            .map(Some)
            .map_err(|e| format!("`{ca_key}`: {e}")),
        None if https => TlsRoots::system()
            .map(Some)
            .map_err(|e| format!("{e} (`{ca_key}` names one)")),
        None => Ok(None),
    }
}

/// Reads a JWT public key file (the text is zeroized after parsing).
fn read_jwt_key(alg: JwtAlgorithm, path: &Path) -> Result<JwtKey, String> {
    let pem = zeroize::Zeroizing::new(
        std::fs::read(path).map_err(|e| format!("cannot read JWT public key file {}: {e}", path.display()))?,
    );
    JwtKey::from_public_key_pem(alg, &pem).map_err(|e| format!("JWT public key file {}: {e}", path.display()))
}

/// What SIGHUP re-reads.
pub struct Reloader {
    /// The running server.
    pub server: Server,
    /// SEALCAST_SERVER_KEY_FILE (empty in development mode: nothing to re-read).
    pub server_key_files: Vec<PathBuf>,
    /// The JWT verifier and its key file, in public-key mode.
    pub jwt: Option<(JwtAuthenticator, PathBuf)>,
    /// The JWKS authenticator, in JWKS mode.
    pub jwks: Option<JwksAuthenticator>,
}

impl Reloader {
    /// Registers SIGHUP now and applies a reload on each one, until the server stops.
    pub fn spawn(self) -> std::io::Result<()> {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = self.server.stopped() => return,
                    got = hup.recv() => if got.is_none() { return },
                }
                self.reload();
            }
        });
        Ok(())
    }

    /// Re-reads and applies every configured key file; one that fails leaves its old keys in place.
    fn reload(&self) {
        if self.server_key_files.is_empty() && self.jwt.is_none() && self.jwks.is_none() {
            tracing::warn!("SIGHUP: no key files configured, nothing to reload");
        }
        if let Some(jwks) = self.jwks.clone() {
            // Not rate-limited like a token's fetch: the operator asked for it. A failure is logged by `refresh`.
            tokio::spawn(async move {
                if let Ok(keys) = jwks.refresh().await {
                    tracing::info!(keys, "SIGHUP: JWKS fetched again");
                }
            });
        }
        if !self.server_key_files.is_empty() {
            let applied = crate::load_keys(&self.server_key_files)
                .map_err(|e| e.to_string())
                .and_then(|keys| self.server.reload_static_keys(keys).map_err(|e| e.to_string()));
            match applied {
                Ok(()) => {
                    let kid = self.server.static_keys().map(|k| k.current().kid_b64u());
                    tracing::info!(
                        kid = kid.as_deref().unwrap_or(""),
                        "SIGHUP: server static keys reloaded"
                    );
                }
                Err(error) => tracing::error!(%error, "SIGHUP: server static keys NOT reloaded; keeping the old ones"),
            }
        }
        if let Some((authenticator, file)) = &self.jwt {
            match read_jwt_key(authenticator.algorithm(), file) {
                Ok(key) => {
                    authenticator.reload(key);
                    tracing::info!(file = %file.display(), "SIGHUP: JWT public key reloaded");
                }
                Err(error) => tracing::error!(%error, "SIGHUP: JWT public key NOT reloaded; keeping the old one"),
            }
        }
    }
}
