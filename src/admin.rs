//! The admin endpoints, for a listener of their own (never the public one): `/livez` and `/healthz` (the process
//! is up), `/readyz` (the server accepts connections and its bus is delivering) and `/metrics` (Prometheus text
//! from the caller's renderer).

use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::Server;

/// The Prometheus text format's content type.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

impl Server {
    /// The admin router: `/livez` and `/healthz` answer 200 while the process runs, `/readyz` 200 while
    /// [`Server::is_ready`] (503 once shutting down or while the bus is reconnecting), `/metrics` the text
    /// `render` returns (e.g. `PrometheusHandle::render`). Serve it on a separate, private listener.
    pub fn admin_router<F>(&self, render: F) -> Router
    where
        F: Fn() -> String + Send + Sync + 'static,
    {
        let server = self.clone();
        let render = Arc::new(render);
        Router::new()
            .route("/livez", get(live))
            .route("/healthz", get(live))
            .route(
                "/readyz",
                get(move || {
                    let ready = server.is_ready();
                    async move {
                        if ready {
                            (StatusCode::OK, "ready\n")
                        } else {
                            (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                        }
                    }
                }),
            )
            .route(
                "/metrics",
                get(move || {
                    let body = render();
                    async move { ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], body).into_response() }
                }),
            )
    }
}

async fn live() -> Response {
    (StatusCode::OK, "ok\n").into_response()
}
