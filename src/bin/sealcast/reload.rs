//! `sealcast serve`'s authentication modes (HS256 secret, RS256/ES256 public key file, connect proxy) and
//! SIGHUP: re-read the server key files and the JWT public key file, apply them, keep the old keys on error.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use sealcast::auth::proxy::ConnectProxy;
use sealcast::auth::{JwtAlgorithm, JwtAuthenticator, JwtKey};
use sealcast::Server;

/// Token verification and connect-proxy settings.
#[derive(Args)]
pub struct AuthArgs {
    /// JWT algorithm: HS256 (with SEALCAST_JWT_SECRET) or RS256/ES256 (with SEALCAST_JWT_PUBLIC_KEY_FILE).
    #[arg(long, env = "SEALCAST_JWT_ALGORITHM", default_value = "HS256", value_parser = parse_algorithm)]
    jwt_algorithm: JwtAlgorithm,
    /// PEM public key verifying RS256/ES256 tokens; re-read on SIGHUP.
    #[arg(long, env = "SEALCAST_JWT_PUBLIC_KEY_FILE")]
    jwt_public_key_file: Option<PathBuf>,
    /// Connect proxy: POST each `authenticate` payload to this http:// URL instead of verifying a JWT.
    #[arg(long, env = "SEALCAST_AUTH_PROXY_URL")]
    auth_proxy_url: Option<String>,
    /// Bound on one connect-proxy authentication (retries included), in milliseconds.
    #[arg(long, env = "SEALCAST_AUTH_PROXY_TIMEOUT_MS", default_value_t = 3_000)]
    auth_proxy_timeout_ms: u64,
}

fn parse_algorithm(s: &str) -> Result<JwtAlgorithm, String> {
    s.parse().map_err(|e: sealcast::auth::JwtKeyError| e.to_string())
}

/// How clients authenticate.
pub enum AuthMode {
    /// HS256 with SEALCAST_JWT_SECRET (or a generated development secret on loopback).
    Secret,
    /// RS256/ES256 verified with a public key file.
    PublicKey {
        /// The verifier (its clones follow a reload).
        authenticator: JwtAuthenticator,
        /// Re-read on SIGHUP.
        file: PathBuf,
    },
    /// The connect proxy.
    Proxy(ConnectProxy),
}

impl AuthMode {
    /// Picks the mode from the settings; `secret_set` says whether SEALCAST_JWT_SECRET is non-empty.
    pub fn from_args(args: &AuthArgs, secret_set: bool) -> Result<Self, String> {
        let alg = args.jwt_algorithm;
        match (&args.auth_proxy_url, &args.jwt_public_key_file) {
            (Some(_), Some(_)) => Err(
                "SEALCAST_AUTH_PROXY_URL and SEALCAST_JWT_PUBLIC_KEY_FILE are both set: choose one authentication mode"
                    .into(),
            ),
            (Some(_), None) if secret_set => Err(
                "SEALCAST_AUTH_PROXY_URL and SEALCAST_JWT_SECRET are both set: choose one authentication mode".into(),
            ),
            (Some(url), None) => {
                let timeout = Duration::from_millis(args.auth_proxy_timeout_ms);
                let proxy = ConnectProxy::new(url, timeout).map_err(|e| format!("SEALCAST_AUTH_PROXY_URL: {e}"))?;
                Ok(Self::Proxy(proxy))
            }
            (None, Some(_)) if alg == JwtAlgorithm::Hs256 => Err(
                "SEALCAST_JWT_PUBLIC_KEY_FILE needs SEALCAST_JWT_ALGORITHM=RS256 or ES256 (HS256 uses SEALCAST_JWT_SECRET)"
                    .into(),
            ),
            (None, Some(_)) if secret_set => Err(
                "SEALCAST_JWT_SECRET and SEALCAST_JWT_PUBLIC_KEY_FILE are both set: unset the secret for RS256/ES256"
                    .into(),
            ),
            (None, Some(file)) => Ok(Self::PublicKey {
                authenticator: JwtAuthenticator::new(read_jwt_key(alg, file)?),
                file: file.clone(),
            }),
            (None, None) if alg != JwtAlgorithm::Hs256 => {
                Err(format!("SEALCAST_JWT_ALGORITHM={alg} needs SEALCAST_JWT_PUBLIC_KEY_FILE (a PEM public key)"))
            }
            (None, None) => Ok(Self::Secret),
        }
    }

    /// True for the modes that need no SEALCAST_JWT_SECRET: they count as real authentication beyond loopback.
    pub fn is_configured(&self) -> bool {
        !matches!(self, Self::Secret)
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
        if self.server_key_files.is_empty() && self.jwt.is_none() {
            tracing::warn!("SIGHUP: no key files configured, nothing to reload");
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(alg: JwtAlgorithm, key_file: Option<&str>, proxy: Option<&str>) -> AuthArgs {
        AuthArgs {
            jwt_algorithm: alg,
            jwt_public_key_file: key_file.map(PathBuf::from),
            auth_proxy_url: proxy.map(str::to_owned),
            auth_proxy_timeout_ms: 1_000,
        }
    }

    fn error_of(args: &AuthArgs, secret_set: bool) -> String {
        match AuthMode::from_args(args, secret_set) {
            Ok(_) => panic!("accepted"),
            Err(e) => e,
        }
    }

    #[test]
    fn exactly_one_authentication_mode_is_accepted() {
        let pem = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt/rs256-a.pub.pem");
        let url = Some("http://127.0.0.1:1/auth");
        assert!(matches!(
            AuthMode::from_args(&args(JwtAlgorithm::Hs256, None, None), true),
            Ok(AuthMode::Secret)
        ));
        assert!(
            AuthMode::from_args(&args(JwtAlgorithm::Rs256, Some(pem), None), false).is_ok_and(|m| m.is_configured())
        );
        assert!(AuthMode::from_args(&args(JwtAlgorithm::Hs256, None, url), false).is_ok_and(|m| m.is_configured()));
        assert!(error_of(&args(JwtAlgorithm::Rs256, Some(pem), url), false).contains("choose one"));
        assert!(error_of(&args(JwtAlgorithm::Hs256, None, url), true).contains("choose one"));
        assert!(error_of(&args(JwtAlgorithm::Rs256, Some(pem), None), true).contains("unset the secret"));
        assert!(error_of(&args(JwtAlgorithm::Hs256, Some(pem), None), false).contains("RS256 or ES256"));
        assert!(error_of(&args(JwtAlgorithm::Es256, None, None), false).contains("SEALCAST_JWT_PUBLIC_KEY_FILE"));
        assert!(error_of(&args(JwtAlgorithm::Es256, Some(pem), None), false).contains("not a valid ES256"));
    }
}
