//! The dashboard's HTTP server: `GET /` (the page), `GET /api/state` (its JSON; see the module documentation).

use super::Dashboard;
use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The page, its styles and its script: one file, compiled into the binary.
const PAGE: &str = include_str!("page.html");

/// Serves the dashboard on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    dashboard: Arc<Dashboard>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = axum::Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/api/state", get(state))
        .with_state(dashboard);
    axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await
}

/// `GET /api/state?since=SEQ&epoch=E`.
async fn state(State(dashboard): State<Arc<Dashboard>>, RawQuery(query): RawQuery) -> impl IntoResponse {
    let param = |key: &str| {
        query.as_deref().unwrap_or_default().split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == key).then(|| v.parse::<u64>().ok()).flatten()
        })
    };
    let body = dashboard.state(param("since"), param("epoch")).to_string();
    ([(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")], body)
}

/// Binds `addr` and serves the dashboard on the current runtime until `stop`; returns the bound address. A failure
/// to bind is logged and the run goes on without a dashboard.
pub async fn start(addr: &str, dashboard: Arc<Dashboard>, stop: CancellationToken) -> Option<std::net::SocketAddr> {
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(%addr, error = %e, "cannot serve the dashboard; training goes on without it");
            return None;
        }
    };
    let bound = listener.local_addr().ok()?;
    tracing::info!("dashboard on http://{bound}/");
    tokio::spawn(async move {
        if let Err(e) = serve(listener, dashboard, stop).await {
            tracing::warn!(error = %e, "the dashboard server stopped");
        }
    });
    Some(bound)
}

/// [`start`] on a thread of its own with a runtime of its own, for a process without one (`learner train`).
pub fn start_on_thread(addr: &str, dashboard: Arc<Dashboard>, stop: CancellationToken) -> Option<std::net::SocketAddr> {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the dashboard's runtime; training goes on without it");
            return None;
        }
    };
    let bound = runtime.block_on(start(addr, dashboard, stop.clone()))?;
    let spawned =
        std::thread::Builder::new().name("dashboard".into()).spawn(move || runtime.block_on(stop.cancelled()));
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the dashboard thread; training goes on without it");
        return None;
    }
    Some(bound)
}
