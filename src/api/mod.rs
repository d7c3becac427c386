//! The REST API v1 on `--api-listen` (REST.md), for WWE and operators.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::app::App;
use crate::state::rfc3339;

/// The router served on `--api-listen`.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/api/health", get(health))
        .route("/api/dn/list", get(dn_list))
        .route("/api/dn/{dn}", get(dn_one))
        .route("/api/genesys/status", get(upstream_status))
        .route("/api/calls/active", get(calls_active))
        .route("/api/calls/{call_id}", get(call_one))
        .route("/api/calls/{call_id}/hangup", post(call_hangup))
        .route(
            "/api/sessions/{session_id}/disconnect",
            post(session_disconnect),
        )
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(app.clone(), auth))
        .with_state(app)
}

/// A REST error: `{"error":{"code","message"}}` with its status.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({ "error": { "code": code, "message": message } })),
    )
        .into_response()
}

/// Compares a presented token with the configured one in time independent of where they
/// differ, so the token cannot be guessed byte by byte.
pub fn token_matches(given: &str, expected: &str) -> bool {
    let (g, e) = (given.as_bytes(), expected.as_bytes());
    if g.len() != e.len() {
        return false;
    }
    g.iter().zip(e).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

async fn auth(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    if let Some(expected) = &app.cfg.api_token {
        if req.uri().path() != "/api/health" {
            let ok = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .is_some_and(|t| token_matches(t, expected));
            if !ok {
                return error(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "missing or wrong bearer token",
                );
            }
        }
    }
    next.run(req).await
}

async fn health(State(app): State<Arc<App>>) -> Response {
    let up = app.shared.upstream();
    let ok = up.reachable;
    let body = json!({
        "status": if ok { "ok" } else { "degraded" },
        "version": env!("CARGO_PKG_VERSION"),
        "uptimeSeconds": app.shared.started.elapsed().as_secs(),
        "sessions": app.shared.session_count(),
        "registrations": app.shared.registry.registered_count(),
        "activeCalls": app.shared.calls.len(),
        "upstream": { "reachable": up.reachable },
    });
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn dn_list(State(app): State<Arc<App>>) -> Response {
    Json(json!({ "dns": app.shared.registry.list() })).into_response()
}

async fn dn_one(State(app): State<Arc<App>>, Path(dn): Path<String>) -> Response {
    match app.shared.registry.get(&dn) {
        Some(v) => Json(v).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("DN {dn} is not known to this gateway"),
        ),
    }
}

async fn upstream_status(State(app): State<Arc<App>>) -> Response {
    let up = app.shared.upstream();
    Json(json!({
        "upstream": app.cfg.sip_upstream,
        "transport": app.cfg.upstream_transport.as_str(),
        "reachable": up.reachable,
        "lastOptionsRttMs": up.last_rtt.map(|d| (d.as_secs_f64() * 1_000_000.0).round() / 1000.0),
        "lastCheckedAt": up.last_checked_at.map(rfc3339),
        "consecutiveFailures": up.consecutive_failures,
    }))
    .into_response()
}

async fn calls_active(State(app): State<Arc<App>>) -> Response {
    let mut calls: Vec<_> = app.shared.calls.iter().map(|c| c.value().clone()).collect();
    calls.sort_by_key(|c| c.started_at);
    let calls: Vec<_> = calls.iter().map(|c| c.to_json()).collect();
    Json(json!({ "calls": calls })).into_response()
}

async fn call_one(State(app): State<Arc<App>>, Path(call_id): Path<String>) -> Response {
    match app.shared.calls.get(&call_id) {
        Some(c) => Json(c.to_json()).into_response(),
        None => error(StatusCode::NOT_FOUND, "not_found", "no such active call"),
    }
}

async fn call_hangup(State(app): State<Arc<App>>, Path(call_id): Path<String>) -> Response {
    let handle = app
        .shared
        .calls
        .get(&call_id)
        .and_then(|c| c.handle.clone());
    match handle {
        Some(h) if h.send(crate::call::driver::CallCommand::ServerHangup) => {
            StatusCode::NO_CONTENT.into_response()
        }
        _ => error(StatusCode::NOT_FOUND, "not_found", "no such active call"),
    }
}

/// Closes a browser session's WebSocket from the server side (an addition to REST.md v1):
/// the session keeps its registration and calls for the grace period, and the client's
/// `resume` takes them back.
async fn session_disconnect(
    State(app): State<Arc<App>>,
    Path(session_id): Path<String>,
) -> Response {
    match app.resumable.get(&session_id) {
        Some(r) => {
            r.disconnect();
            StatusCode::NO_CONTENT.into_response()
        }
        None => error(StatusCode::NOT_FOUND, "not_found", "no such session"),
    }
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "no such route")
}

#[cfg(test)]
mod tests {
    use super::token_matches;

    #[test]
    fn tokens_compare_exactly() {
        assert!(token_matches("abc", "abc"));
        assert!(!token_matches("abd", "abc"));
        assert!(!token_matches("ab", "abc"));
    }
}
