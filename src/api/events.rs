//! `GET /api/events`: Server-Sent Events of registration changes, call state changes and
//! hangups. Every subscriber reads the same broadcast ring; one that falls
//! [`EVENT_BACKLOG`](crate::directory::EVENT_BACKLOG) events behind gets a `dropped` event and is
//! disconnected, so a stuck reader costs the gateway neither memory nor time.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::Stream;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use crate::app::App;

/// Comment lines that keep idle connections (and proxies) from timing out.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

#[utoipa::path(get, path = "/api/events", tag = "events",
    responses(
        (status = 200, description = "`text/event-stream`: `event:` is the type (`registrationState`, `incomingCall`, `ringing`, `earlyMedia`, `answered`, `held`, `resumed`, `transferState`, `hangup`, or `dropped` before a subscriber that fell behind is disconnected); `data:` is a JSON object with `type` and the `dn`/`callId` it concerns", content_type = "text/event-stream", body = String),
        (status = 401, body = super::ErrorBody),
    ),
    security(("bearer" = [])))]
pub(super) async fn events(
    State(app): State<Arc<App>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = app.directory.events.subscribe();
    let shutdown = app.shutdown.clone();
    let stream = futures_util::stream::unfold(Some(rx), move |rx| {
        let shutdown = shutdown.clone();
        async move {
            let mut rx = rx?;
            let next = tokio::select! {
                r = rx.recv() => r,
                _ = shutdown.cancelled() => return None,
            };
            match next {
                Ok(ev) => Some((
                    Ok(Event::default().event(ev.kind).data(&*ev.data)),
                    Some(rx),
                )),
                Err(RecvError::Lagged(n)) => {
                    tracing::info!(missed = n, "SSE subscriber fell behind: dropped");
                    let data = json!({
                        "type": "dropped",
                        "message": format!("this subscriber fell {n} events behind and is disconnected; reconnect and re-read the REST state"),
                    });
                    Some((
                        Ok(Event::default().event("dropped").data(data.to_string())),
                        None,
                    ))
                }
                Err(RecvError::Closed) => None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
}
