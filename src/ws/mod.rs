//! The browser side: the WebSocket endpoint on `--ws-listen` (PROTOCOL.md).

pub mod session;

use std::sync::Arc;

use axum::extract::ws::{close_code, CloseFrame, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use crate::app::App;

/// Frames (and fragmented messages) above this size close the connection with 1009; up to
/// it, frames above `protocol::MAX_FRAME` get a `too_large` error and the session goes on
/// (PROTOCOL.md). The WebSocket layer refuses a frame on its declared length, before reading
/// any of it, so no session ever buffers more than this.
pub const HARD_LIMIT: usize = 1024 * 1024;
/// Initial WebSocket read buffer per session (see `upgrade`).
const READ_BUFFER: usize = 4 * 1024;

/// The close frame a failed read calls for: 1009 for a frame above [`HARD_LIMIT`], 1007 for
/// a text frame that is not UTF-8 (RFC 6455 §7.4.1); `None` when the connection just broke
/// and nobody is left to tell.
pub fn close_for(err: axum::Error) -> Option<CloseFrame> {
    let inner = err.into_inner();
    let (code, reason) = match inner.downcast_ref::<tungstenite::Error>()? {
        tungstenite::Error::Capacity(_) => (
            close_code::SIZE,
            format!("frame larger than {} KiB", HARD_LIMIT / 1024),
        ),
        tungstenite::Error::Utf8(_) => (
            close_code::INVALID,
            "text frame is not valid UTF-8".to_string(),
        ),
        _ => return None,
    };
    Some(CloseFrame {
        code,
        reason: reason.into(),
    })
}

/// The router served on `--ws-listen`: the WebSocket at `/`, and the demo agent phone and
/// the client library beside it (same origin as the socket).
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(upgrade))
        .route("/{file}", get(web_file))
        .with_state(app)
}

/// The files of `web/`, built into the binary so the gateway ships as one file.
const WEB: &[(&str, &str, &[u8])] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../../web/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("../../web/style.css"),
    ),
    (
        "gateway-client.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/gateway-client.js"),
    ),
];

fn web_response(name: &str) -> Response {
    match WEB.iter().find(|(n, _, _)| *n == name) {
        Some((_, mime, body)) => (
            [
                (header::CONTENT_TYPE, *mime),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

async fn web_file(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    web_response(&file)
}

#[derive(Deserialize)]
struct Params {
    token: Option<String>,
}

async fn upgrade(
    State(app): State<Arc<App>>,
    Query(params): Query<Params>,
    extensions: axum::http::Extensions,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let Ok(ws) = ws else {
        // A plain GET of `/` is a person with a browser: the demo agent phone.
        return web_response("index.html");
    };
    if let Some(expected) = &app.cfg.api_token {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let given = params.token.as_deref().or(bearer);
        if !given.is_some_and(|g| crate::auth::token_matches(g, expected)) {
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
    // The client address, set for every connection by `listener::accept`.
    let peer_ip = extensions
        .get::<axum::extract::ConnectInfo<crate::listener::ClientAddr>>()
        .map(|c| c.0 .0.ip());
    if let Some(ip) = peer_ip {
        let allowed = app
            .limiter
            .connect(ip, &app.cfg.limits, std::time::Instant::now());
        if !allowed {
            tracing::info!(%ip, "WebSocket connect rate-limited");
            return (
                StatusCode::TOO_MANY_REQUESTS,
                "too many connections from this address; retry later\n",
            )
                .into_response();
        }
    }
    let tasks = app.tasks.clone();
    ws.max_message_size(HARD_LIMIT)
        .max_frame_size(HARD_LIMIT)
        // tungstenite's default 128 KiB read buffer is zero-filled on the first read, so it
        // is resident for every session; our frames are a few hundred bytes (an SDP a few
        // KiB), and the buffer grows for a larger one.
        .read_buffer_size(READ_BUFFER)
        .on_upgrade(move |socket| tasks.track_future(session::run(socket, app, peer_ip)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_errors_map_to_close_codes() {
        let too_big = axum::Error::new(tungstenite::Error::Capacity(
            tungstenite::error::CapacityError::MessageTooLong {
                size: 5 << 20,
                max_size: HARD_LIMIT,
            },
        ));
        let close = close_for(too_big).expect("a close frame");
        assert_eq!(close.code, 1009);
        assert_eq!(close.reason.as_str(), "frame larger than 1024 KiB");

        let bad_text = axum::Error::new(tungstenite::Error::Utf8("invalid byte 0xff".into()));
        assert_eq!(close_for(bad_text).expect("a close frame").code, 1007);

        let reset = axum::Error::new(tungstenite::Error::ConnectionClosed);
        assert!(close_for(reset).is_none());
    }
}
