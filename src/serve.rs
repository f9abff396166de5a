//! Serving an app over TCP with the connection limits applied from the moment a socket is accepted.
//!
//! `axum::serve` hands a socket to hyper with no time limit on the request head and counts nothing until a
//! request reaches a handler: a client that sends a header line now and then holds a descriptor for as long as it
//! likes, and such half-open sockets escape `max_connections` and `max_connections_per_ip`. [`Server::serve`]
//! claims the connection's limiter slot when it accepts the socket (refusing with 503 or 429 at once), serves
//! HTTP/1.1 with hyper's request-head timeout, and hands the slot to the WebSocket connection when the request
//! upgrades, so a connection is counted once from accept to close.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;

use crate::limits::{Accepted, Refusal, Slot};
use crate::server::Server;
use crate::shared::Shared;

/// How long a refused socket may take to receive its refusal and close: its request is read and discarded
/// meanwhile, so that closing does not reset the connection before the client has read the answer.
const REFUSAL_GRACE: Duration = Duration::from_secs(1);
/// Most request bytes read from a refused socket.
const REFUSAL_DRAIN: usize = 16 * 1024;
/// Accept-queue length asked of the kernel for [`Server::listen`] (Linux caps it at `net.core.somaxconn`).
const LISTEN_BACKLOG: u32 = 4_096;
/// Pause after an accept error that is not about one connection (e.g. out of file descriptors), so the loop does
/// not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

impl Server {
    /// A listener for [`Server::serve`] on `addr`, with `SO_REUSEADDR` and an accept queue of 4,096 connections
    /// (the kernel caps it at `net.core.somaxconn`, 4,096 by default on Linux ≥ 5.4). Must be called inside a
    /// tokio runtime.
    ///
    /// `tokio::net::TcpListener::bind` asks for 128, as the standard library does. When a thousand clients
    /// connect at once (a reconnect storm after a deploy) while the server is busy with handshakes, that queue
    /// overflows, and every connection the kernel drops costs its client a one-second SYN retransmission.
    ///
    /// ```no_run
    /// # async fn run(server: sealcast::Server) -> std::io::Result<()> {
    /// let listener = sealcast::Server::listen("127.0.0.1:8080".parse().expect("an address"))?;
    /// server.serve(listener, server.router()).await;
    /// # Ok(()) }
    /// ```
    pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    }

    /// Serves `app` (which should include [`Server::router`]) on `listener` until [`Server::shutdown`] starts;
    /// then it stops accepting, waits for each HTTP connection to finish the request it is serving (a request
    /// head still has `request_head_timeout` to arrive) and returns; [`Server::shutdown`] waits for the WebSocket
    /// connections. Use it instead of `axum::serve` to bound what a socket can hold before its upgrade:
    ///
    /// - every accepted socket counts against `max_connections`, `max_connections_per_ip` and
    ///   `connection_rate_per_ip` until it closes or, when it upgrades, until its WebSocket connection ends; over
    ///   a limit it gets `503` or `429` and is closed at once;
    /// - a request head must arrive complete within `request_head_timeout` of the connection's start (or, on a
    ///   kept-alive connection, of the previous response), else the socket is closed.
    ///
    /// Handlers see the peer address as `ConnectInfo<SocketAddr>`; sockets get `TCP_NODELAY`. HTTP/1.1 only.
    ///
    /// ```no_run
    /// # async fn run(server: sealcast::Server) -> std::io::Result<()> {
    /// let listener = sealcast::Server::listen("127.0.0.1:8080".parse().expect("an address"))?;
    /// let stopper = server.clone();
    /// tokio::spawn(async move {
    ///     let _ = tokio::signal::ctrl_c().await;
    ///     stopper.shutdown().await;
    /// });
    /// server.serve(listener, server.router()).await;
    /// // `serve` returned because the shutdown started; this waits for the WebSocket connections too.
    /// server.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn serve(&self, listener: TcpListener, app: Router) {
        let shared = self.shared();
        let connections = TaskTracker::new();
        loop {
            let accepted = tokio::select! {
                biased;
                () = shared.shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_per_connection(&e) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            // Small frames must not wait for Nagle.
            let _ = tcp.set_nodelay(true);
            match shared.limits.acquire(Some(peer.ip()), Instant::now()) {
                Ok(slot) => {
                    connections.spawn(serve_connection(shared.clone(), app.clone(), tcp, peer, slot));
                }
                Err(refusal) => {
                    shared.telemetry.refused(refusal.reason());
                    tokio::spawn(refuse(tcp, refusal));
                }
            }
        }
        // Refuse new connections at once rather than leave them in the backlog while the rest finish.
        drop(listener);
        connections.close();
        connections.wait().await;
    }
}

/// Errors of one connection that never became ours: the listener itself is fine.
fn is_per_connection(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// Serves one socket's requests; its slot goes to the WebSocket connection if a request upgrades, and is
/// released with the socket otherwise.
async fn serve_connection(shared: Arc<Shared>, app: Router, tcp: TcpStream, peer: SocketAddr, slot: Slot) {
    let accepted = Accepted::new(slot);
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        req.extensions_mut().insert(accepted.clone());
        let mut app = app.clone();
        async move { tower_service::Service::call(&mut app, req).await }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(shared.config.request_head_timeout);
    let conn = builder.serve_connection(TokioIo::new(tcp), service).with_upgrades();
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        () = shared.shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Answers a refused socket with its status without serving it, then closes it.
async fn refuse(mut tcp: TcpStream, refusal: Refusal) {
    let answer = match refusal {
        Refusal::Global => "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        Refusal::PerIp | Refusal::Rate => {
            "HTTP/1.1 429 Too Many Requests\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        }
    };
    let _ = tokio::time::timeout(REFUSAL_GRACE, async {
        tcp.write_all(answer.as_bytes()).await?;
        tcp.shutdown().await?;
        let mut sink = [0u8; 1024];
        let mut read = 0;
        while read < REFUSAL_DRAIN {
            match tcp.read(&mut sink).await? {
                0 => break,
                n => read += n,
            }
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
}
