//! The REST API v1 on `--api-listen` (REST.md), for WWE and operators: JSON routes, live
//! events (`events.rs`), Prometheus metrics, and the OpenAPI document generated from the
//! handlers below (`openapi.rs`), so the spec cannot drift from the code.

mod cti;
mod events;
pub mod openapi;

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa::ToSchema;

use crate::app::App;
use crate::directory::calls::{CallCommand, CallView};
use crate::directory::{rfc3339, DnView, RegState};

/// The router served on `--api-listen`.
pub fn router(app: Arc<App>) -> Router {
    let mut router = Router::new()
        .route("/api/health", get(health))
        .route("/api/dn/list", get(dn_list))
        .route("/api/dn/{dn}", get(dn_one))
        .route("/api/genesys/status", get(upstream_status))
        .route("/api/calls/active", get(calls_active))
        .route("/api/calls/{call_id}", get(call_one))
        .route("/api/calls/{call_id}/hangup", post(call_hangup))
        .route("/api/calls/{call_id}/answer", post(cti::answer))
        .route("/api/calls/{call_id}/hold", post(cti::hold))
        .route("/api/calls/{call_id}/unhold", post(cti::unhold))
        .route("/api/calls/{call_id}/dtmf", post(cti::dtmf))
        .route("/api/calls/{call_id}/transfer", post(cti::transfer))
        .route("/api/dn/{dn}/calls", post(cti::dial))
        .route(
            "/api/sessions/{session_id}/disconnect",
            post(session_disconnect),
        )
        .route("/api/events", get(events::events))
        .route("/api/openapi.json", get(openapi::serve))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(app.clone(), auth));
    if let Some(cors) = cors(&app.cfg.cors_origins) {
        router = router.layer(cors);
    }
    router.with_state(app)
}

/// CORS for the configured origins; none configured: no CORS headers at all.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    let list: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    (!list.is_empty()).then(|| {
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(list))
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
    })
}

/// `{"error":{"code","message"}}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The error itself.
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable: `not_found`, `unauthorized`, …
    pub code: String,
    /// For people.
    pub message: String,
}

/// A REST error with its status.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(ErrorBody {
            error: ErrorDetail {
                code: code.to_string(),
                message: message.to_string(),
            },
        }),
    )
        .into_response()
}

async fn auth(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    if let Some(expected) = &app.cfg.api_token {
        // Health stays open for load balancers; CORS preflights carry no credentials.
        let open = req.uri().path() == "/api/health" || req.method() == Method::OPTIONS;
        if !open {
            let ok = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .is_some_and(|t| crate::auth::token_matches(t, expected));
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

/// `GET /api/health`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// `ok`, or `degraded` when the SIP upstream does not answer.
    #[schema(example = "ok")]
    pub status: &'static str,
    /// Gateway version.
    pub version: &'static str,
    /// Since start.
    pub uptime_seconds: u64,
    /// Open browser sessions.
    pub sessions: usize,
    /// Registered DNs.
    pub registrations: usize,
    /// Calls in progress.
    pub active_calls: usize,
    /// The SIP upstream.
    pub upstream: Reachability,
}

/// Whether the SIP upstream answers.
#[derive(Serialize, ToSchema)]
pub struct Reachability {
    /// Its last OPTIONS probe was answered.
    pub reachable: bool,
}

#[utoipa::path(get, path = "/api/health", tag = "health",
    responses(
        (status = 200, description = "Healthy", body = Health),
        (status = 503, description = "The SIP upstream is unreachable", body = Health),
    ))]
async fn health(State(app): State<Arc<App>>) -> Response {
    let up = app.directory.upstream();
    let ok = up.reachable;
    let body = Health {
        status: if ok { "ok" } else { "degraded" },
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: app.directory.started.elapsed().as_secs(),
        sessions: app.directory.sessions.count(),
        registrations: app.directory.registry.registered_count(),
        active_calls: app.directory.calls.len(),
        upstream: Reachability {
            reachable: up.reachable,
        },
    };
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// `GET /api/dn/list`.
#[derive(Serialize, ToSchema)]
pub struct DnList {
    /// Every DN a browser session holds, by DN.
    pub dns: Vec<DnView>,
}

/// A DN's view with the call it is in, if any.
fn with_call(app: &App, mut v: DnView) -> DnView {
    v.active_call_id = app.directory.calls.of_dn(&v.dn);
    v
}

#[utoipa::path(get, path = "/api/dn/list", tag = "dn",
    responses(
        (status = 200, body = DnList),
        (status = 401, body = ErrorBody),
    ),
    security(("bearer" = [])))]
async fn dn_list(State(app): State<Arc<App>>) -> Json<DnList> {
    let dns = app
        .directory
        .registry
        .list()
        .into_iter()
        .map(|v| with_call(&app, v))
        .collect();
    Json(DnList { dns })
}

#[utoipa::path(get, path = "/api/dn/{dn}", tag = "dn",
    params(("dn" = String, Path, description = "The extension")),
    responses(
        (status = 200, body = DnView),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ),
    security(("bearer" = [])))]
async fn dn_one(State(app): State<Arc<App>>, Path(dn): Path<String>) -> Response {
    match app.directory.registry.get(&dn) {
        Some(v) => Json(with_call(&app, v)).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("DN {dn} is not known to this gateway"),
        ),
    }
}

/// `GET /api/genesys/status`: the SIP upstream as the OPTIONS probe sees it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamView {
    /// Its URI.
    pub upstream: String,
    /// `udp` | `tcp`.
    pub transport: &'static str,
    /// The last probe was answered.
    pub reachable: bool,
    /// Round trip of the last answered probe.
    pub last_options_rtt_ms: Option<f64>,
    /// RFC 3339.
    pub last_checked_at: Option<String>,
    /// Unanswered probes in a row.
    pub consecutive_failures: u32,
}

#[utoipa::path(get, path = "/api/genesys/status", tag = "upstream",
    responses(
        (status = 200, body = UpstreamView),
        (status = 401, body = ErrorBody),
    ),
    security(("bearer" = [])))]
async fn upstream_status(State(app): State<Arc<App>>) -> Json<UpstreamView> {
    let up = app.directory.upstream();
    Json(UpstreamView {
        upstream: app.cfg.sip_upstream.clone(),
        transport: app.cfg.upstream_transport.as_str(),
        reachable: up.reachable,
        last_options_rtt_ms: up
            .last_rtt
            .map(|d| (d.as_secs_f64() * 1_000_000.0).round() / 1000.0),
        last_checked_at: up.last_checked_at.map(rfc3339),
        consecutive_failures: up.consecutive_failures,
    })
}

/// `GET /api/calls/active`.
#[derive(Serialize, ToSchema)]
pub struct CallList {
    /// Calls in progress, oldest first.
    pub calls: Vec<CallView>,
}

#[utoipa::path(get, path = "/api/calls/active", tag = "calls",
    responses(
        (status = 200, body = CallList),
        (status = 401, body = ErrorBody),
    ),
    security(("bearer" = [])))]
async fn calls_active(State(app): State<Arc<App>>) -> Json<CallList> {
    Json(CallList {
        calls: app.directory.calls.views(),
    })
}

#[utoipa::path(get, path = "/api/calls/{callId}", tag = "calls",
    params(("callId" = String, Path, description = "The protocol call id")),
    responses(
        (status = 200, body = CallView),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ),
    security(("bearer" = [])))]
async fn call_one(State(app): State<Arc<App>>, Path(call_id): Path<String>) -> Response {
    match app.directory.calls.view(&call_id) {
        Some(v) => Json(v).into_response(),
        None => no_call(),
    }
}

#[utoipa::path(post, path = "/api/calls/{callId}/hangup", tag = "calls",
    params(("callId" = String, Path, description = "The protocol call id")),
    responses(
        (status = 204, description = "The call ends with `by: server`"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ),
    security(("bearer" = [])))]
async fn call_hangup(State(app): State<Arc<App>>, Path(call_id): Path<String>) -> Response {
    match app.directory.calls.handle(&call_id) {
        Some(h) if h.send(CallCommand::ServerHangup) => StatusCode::NO_CONTENT.into_response(),
        _ => no_call(),
    }
}

/// Closes a browser session's WebSocket from the server side (an addition to REST.md v1):
/// the session keeps its registration and calls for the grace period, and the client's
/// `resume` takes them back.
#[utoipa::path(post, path = "/api/sessions/{sessionId}/disconnect", tag = "sessions",
    params(("sessionId" = String, Path, description = "From the session's hello")),
    responses(
        (status = 204, description = "The socket is being closed"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ),
    security(("bearer" = [])))]
async fn session_disconnect(
    State(app): State<Arc<App>>,
    Path(session_id): Path<String>,
) -> Response {
    if app.directory.sessions.disconnect(&session_id) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        error(StatusCode::NOT_FOUND, "not_found", "no such session")
    }
}

#[utoipa::path(get, path = "/metrics", tag = "metrics",
    responses(
        (status = 200, description = "Prometheus text exposition (OpenMetrics)", content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String),
        (status = 401, body = ErrorBody),
    ),
    security(("bearer" = [])))]
async fn metrics(State(app): State<Arc<App>>) -> Response {
    let mut registrations = std::collections::BTreeMap::new();
    for s in [
        RegState::Registering,
        RegState::Registered,
        RegState::Failed,
        RegState::Unregistered,
    ] {
        registrations.insert(reg_state(s), 0i64);
    }
    for v in app.directory.registry.list() {
        *registrations.entry(reg_state(v.state)).or_default() += 1;
    }
    let (phases, live) = app.directory.calls.census();
    let calls: std::collections::BTreeMap<String, i64> = phases
        .into_iter()
        .map(|(p, n)| (p.as_str().to_string(), n))
        .collect();
    let text = crate::metrics::render(&crate::metrics::Gauges {
        sessions: app.directory.sessions.count() as i64,
        registrations: registrations.into_iter().collect(),
        calls: calls.into_iter().collect(),
        live,
    });
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

fn reg_state(s: RegState) -> String {
    match s {
        RegState::Registering => "registering",
        RegState::Registered => "registered",
        RegState::Failed => "failed",
        RegState::Unregistered => "unregistered",
    }
    .to_string()
}

/// 404 for a call id that is not (or no longer) live.
fn no_call() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "no such active call")
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "no such route")
}
