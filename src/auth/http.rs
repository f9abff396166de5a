//! The authenticators' one HTTP(S) exchange per connection (hyper's HTTP/1 client, rustls for https): the
//! connect proxy's POST and the JWKS GET. Bounded by the caller's timeout and a response-size limit; a body is
//! read only for a `200`.

use axum::http::{header, Method, Request, StatusCode, Uri};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::tls::{TlsError, TlsRoots};

/// Why a URL is not usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UrlError {
    /// Does not parse, lacks a host, or carries credentials.
    Invalid,
    /// Neither `http` nor `https`.
    Scheme,
}

/// Why an exchange gave no usable answer. Never holds a request or response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FetchError {
    Connect(std::io::ErrorKind),
    /// The TLS handshake failed (rustls's reason: an unknown issuer, a name mismatch, ...), or the trusted roots
    /// could not be loaded.
    Tls(String),
    Http,
    TooLarge,
}

/// A parsed `http://` or `https://` URL, and for https the roots its certificate must chain to.
#[derive(Clone)]
pub(crate) struct Endpoint {
    uri: Uri,
    host: String,
    port: u16,
    authority: String,
    /// Some for https.
    server_name: Option<ServerName<'static>>,
    /// For https: the configured roots; `None` means the system's, loaded on first use.
    roots: Option<TlsRoots>,
}

impl Endpoint {
    pub(crate) fn parse(url: &str) -> Result<Self, UrlError> {
        let uri: Uri = url.parse().map_err(|_| UrlError::Invalid)?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            Some(_) => return Err(UrlError::Scheme),
            None => return Err(UrlError::Invalid),
        };
        let host = uri.host().filter(|h| !h.is_empty()).ok_or(UrlError::Invalid)?;
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .ok_or(UrlError::Invalid)?;
        if authority.contains('@') {
            // Credentials in the URL would end up in logs and Debug output.
            return Err(UrlError::Invalid);
        }
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let server_name = if https {
            Some(ServerName::try_from(host.clone()).map_err(|_| UrlError::Invalid)?)
        } else {
            None
        };
        Ok(Self {
            uri,
            host,
            port,
            authority,
            server_name,
            roots: None,
        })
    }

    pub(crate) fn with_roots(mut self, roots: TlsRoots) -> Self {
        self.roots = Some(roots);
        self
    }

    pub(crate) fn is_https(&self) -> bool {
        self.server_name.is_some()
    }

    /// Scheme, authority and path: never the query string, which might carry a credential.
    pub(crate) fn display(&self) -> String {
        let scheme = if self.is_https() { "https" } else { "http" };
        format!("{scheme}://{}{}", self.authority, self.uri.path())
    }

    /// Sends one request on a new connection: the status and, for a `200`, the body (at most `limit` bytes).
    /// The caller bounds the time.
    pub(crate) async fn exchange(
        &self,
        method: Method,
        body: Option<Bytes>,
        limit: usize,
    ) -> Result<(StatusCode, Bytes), FetchError> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| FetchError::Connect(e.kind()))?;
        let _ = tcp.set_nodelay(true);
        match &self.server_name {
            None => self.over(tcp, method, body, limit).await,
            Some(name) => {
                let roots = match &self.roots {
                    Some(roots) => roots.clone(),
                    None => TlsRoots::system().map_err(|e: TlsError| FetchError::Tls(e.to_string()))?,
                };
                let tls = roots
                    .connector()
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| FetchError::Tls(e.to_string()))?;
                self.over(tls, method, body, limit).await
            }
        }
    }

    async fn over<S>(
        &self,
        io: S,
        method: Method,
        body: Option<Bytes>,
        limit: usize,
    ) -> Result<(StatusCode, Bytes), FetchError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|_| FetchError::Http)?;
        let conn = AbortOnDrop(tokio::spawn(conn));
        let path = self.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.authority)
            .header(header::ACCEPT, "application/json");
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|_| FetchError::Http)?;
        let response = sender.send_request(request).await.map_err(|_| FetchError::Http)?;
        let status = response.status();
        if status != StatusCode::OK {
            return Ok((status, Bytes::new()));
        }
        let collected = Limited::new(response.into_body(), limit).collect().await.map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                FetchError::TooLarge
            } else {
                FetchError::Http
            }
        })?;
        drop(conn);
        Ok((status, collected.to_bytes()))
    }
}

/// Stops the connection task with the exchange (a slow server must not keep a task alive).
struct AbortOnDrop(tokio::task::JoinHandle<Result<(), hyper::Error>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
