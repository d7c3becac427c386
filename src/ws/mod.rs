//! The browser side: the WebSocket endpoint on `--ws-listen` (PROTOCOL.md).

pub mod protocol;
pub mod session;

use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use crate::app::App;

/// Frames above this size close the connection in the WebSocket layer itself; up to it,
/// oversized frames get a `too_large` error and the session goes on.
const HARD_LIMIT: usize = 4 * 1024 * 1024;

/// The router served on `--ws-listen`.
pub fn router(app: Arc<App>) -> Router {
    Router::new().route("/", get(upgrade)).with_state(app)
}

#[derive(Deserialize)]
struct Params {
    token: Option<String>,
}

async fn upgrade(
    State(app): State<Arc<App>>,
    Query(params): Query<Params>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let Ok(ws) = ws else {
        return (
            StatusCode::UPGRADE_REQUIRED,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "browser SIP gateway: connect a WebSocket here (protocol v1)\n",
        )
            .into_response();
    };
    if let Some(expected) = &app.cfg.api_token {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let given = params.token.as_deref().or(bearer);
        if !given.is_some_and(|g| crate::api::token_matches(g, expected)) {
            return (StatusCode::UNAUTHORIZED, "missing or wrong token\n").into_response();
        }
    }
    if !app.cfg.allowed_origins.is_empty() {
        let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
        let allowed = origin.is_some_and(|o| {
            app.cfg
                .allowed_origins
                .iter()
                .any(|a| a == o.trim_end_matches('/'))
        });
        if !allowed {
            return (StatusCode::FORBIDDEN, "origin not allowed\n").into_response();
        }
    }
    if app.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    let tasks = app.tasks.clone();
    ws.max_message_size(HARD_LIMIT)
        .max_frame_size(HARD_LIMIT)
        .on_upgrade(move |socket| tasks.track_future(session::run(socket, app)))
}
