//! Call control over REST (REST.md v1.1 "CTI"): answer, hold, unhold, transfer, DTMF and
//! click-to-dial for desktops that drive the agent's phone. Each acts as the agent's own
//! request would; the call's task decides and says why not (409).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use utoipa::ToSchema;

use super::{error, no_call, ErrorBody};
use crate::app::App;
use crate::call::click_to_dial::{self, ClickToDial};
use crate::directory::calls::{CallCommand, Requester};
use crate::directory::RegState;
use crate::protocol;

/// How long a call may take to say whether it did what REST asked (a hold's re-INVITE has
/// 8 s).
const OUTCOME_WITHIN: Duration = Duration::from_secs(10);

/// `POST /api/calls/{callId}/transfer`: a blind (`to`) or attended (`replaces`) transfer.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TransferBody {
    /// Blind: a DN or SIP URI the far end is sent to.
    #[serde(default)]
    pub to: Option<String>,
    /// Attended: the id of another answered call of the gateway, whose far end this call's
    /// far end is joined with.
    #[serde(default)]
    pub replaces: Option<String>,
}

/// `POST /api/calls/{callId}/dtmf`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DtmfBody {
    /// `0-9 * # A-D`, 1 to 32.
    pub digits: String,
    /// `rfc4733` (default) or `info`.
    #[serde(default)]
    pub method: Option<String>,
}

/// `POST /api/dn/{dn}/calls`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DialBody {
    /// A DN or SIP URI.
    pub to: String,
    /// Extra `X-` headers for the INVITE.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub headers: Option<serde_json::Map<String, serde_json::Value>>,
}

/// `201` of click-to-dial.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Dialled {
    /// The new call's id.
    pub call_id: String,
}

/// A JSON body, or what is wrong with it, naming the field.
fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, String> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            format!("body: {}", e.inner())
        } else {
            format!("{path}: {}", e.inner())
        }
    })
}

fn bad_request(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, "bad_request", message)
}

/// Sends call `call_id` the command `make` builds and waits for its outcome: `done` on
/// success, 409 with the call's reason, 404 for no such call.
async fn ask(
    app: &App,
    call_id: &str,
    make: impl FnOnce(oneshot::Sender<Result<(), String>>) -> CallCommand,
    done: StatusCode,
) -> Response {
    let Some(call) = app.directory.calls.handle(call_id) else {
        return no_call();
    };
    let (tx, rx) = oneshot::channel();
    if !call.send(make(tx)) {
        return no_call();
    }
    match tokio::time::timeout(OUTCOME_WITHIN, rx).await {
        Ok(Ok(Ok(()))) => done.into_response(),
        Ok(Ok(Err(why))) => error(StatusCode::CONFLICT, "invalid_state", &why),
        Ok(Err(_)) => no_call(),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "the call did not say within 10 s",
        ),
    }
}

#[utoipa::path(post, path = "/api/calls/{callId}/answer", tag = "cti",
    params(("callId" = String, Path, description = "The protocol call id")),
    responses(
        (status = 202, description = "The SIP leg is answered; the browser hears `answerRequested {by: api}`, then `answered`"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub(super) async fn answer(State(app): State<Arc<App>>, Path(call_id): Path<String>) -> Response {
    ask(&app, &call_id, CallCommand::AnswerFor, StatusCode::ACCEPTED).await
}

#[utoipa::path(post, path = "/api/calls/{callId}/hold", tag = "cti",
    params(("callId" = String, Path, description = "The protocol call id")),
    responses(
        (status = 204, description = "Held (`held {by: api}`)"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub(super) async fn hold(State(app): State<Arc<App>>, Path(call_id): Path<String>) -> Response {
    hold_change(&app, &call_id, true).await
}

#[utoipa::path(post, path = "/api/calls/{callId}/unhold", tag = "cti",
    params(("callId" = String, Path, description = "The protocol call id")),
    responses(
        (status = 204, description = "Taken back (`resumed {by: api}`)"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub(super) async fn unhold(State(app): State<Arc<App>>, Path(call_id): Path<String>) -> Response {
    hold_change(&app, &call_id, false).await
}

async fn hold_change(app: &App, call_id: &str, on: bool) -> Response {
    let make = |tx| CallCommand::Hold {
        on,
        from: Requester::Api(tx),
    };
    ask(app, call_id, make, StatusCode::NO_CONTENT).await
}

#[utoipa::path(post, path = "/api/calls/{callId}/dtmf", tag = "cti",
    params(("callId" = String, Path, description = "The protocol call id")),
    request_body = DtmfBody,
    responses(
        (status = 204, description = "Sent"),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub(super) async fn dtmf(
    State(app): State<Arc<App>>,
    Path(call_id): Path<String>,
    bytes: Bytes,
) -> Response {
    let b: DtmfBody = match body(&bytes) {
        Ok(b) => b,
        Err(why) => return bad_request(&why),
    };
    if !protocol::dtmf_digits_ok(&b.digits) {
        return bad_request("digits: must be 1 to 32 of 0-9 * # A-D");
    }
    let info = match b.method.as_deref() {
        None | Some("rfc4733") => false,
        Some("info") => true,
        Some(_) => return bad_request("method: must be rfc4733 or info"),
    };
    let make = |tx| CallCommand::Dtmf {
        digits: b.digits,
        duration: 100,
        info,
        from: Requester::Api(tx),
    };
    ask(&app, &call_id, make, StatusCode::NO_CONTENT).await
}

#[utoipa::path(post, path = "/api/calls/{callId}/transfer", tag = "cti",
    params(("callId" = String, Path, description = "The protocol call id")),
    request_body = TransferBody,
    responses(
        (status = 202, description = "REFER sent; progress as `transferState`"),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub(super) async fn transfer(
    State(app): State<Arc<App>>,
    Path(call_id): Path<String>,
    bytes: Bytes,
) -> Response {
    let b: TransferBody = match body(&bytes) {
        Ok(b) => b,
        Err(why) => return bad_request(&why),
    };
    let target = match (b.to, b.replaces) {
        (Some(to), None) => match app
            .ua
            .target_uri(&to)
            .filter(|_| protocol::dial_target_ok(&to))
        {
            Some(t) => t,
            None => return bad_request("to: must be a DN or a SIP URI"),
        },
        (None, Some(other)) if other == call_id => {
            return bad_request("replaces: a call cannot replace itself")
        }
        (None, Some(other)) => {
            let Some(call) = app.directory.calls.handle(&other) else {
                return error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "replaces: no such active call",
                );
            };
            let (tx, rx) = oneshot::channel();
            call.send(CallCommand::ReplacesTarget(tx));
            match tokio::time::timeout(OUTCOME_WITHIN, rx).await {
                Ok(Ok(Some(t))) => t,
                _ => {
                    return error(
                        StatusCode::CONFLICT,
                        "invalid_state",
                        "replaces: that call is not answered",
                    )
                }
            }
        }
        _ => return bad_request("body: exactly one of `to` and `replaces`"),
    };
    let make = |tx| CallCommand::Transfer {
        target,
        from: Requester::Api(tx),
    };
    ask(&app, &call_id, make, StatusCode::ACCEPTED).await
}

#[utoipa::path(post, path = "/api/dn/{dn}/calls", tag = "cti",
    params(("dn" = String, Path, description = "A DN registered on this gateway")),
    request_body = DialBody,
    responses(
        (status = 201, body = Dialled, description = "The agent's browser is offered the call (`incomingCall {direction: outbound, autoAnswer: 0}`); once it answers, the INVITE goes out"),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub(super) async fn dial(
    State(app): State<Arc<App>>,
    Path(dn): Path<String>,
    bytes: Bytes,
) -> Response {
    let b: DialBody = match body(&bytes) {
        Ok(b) => b,
        Err(why) => return bad_request(&why),
    };
    let Some(target) = app
        .ua
        .target_uri(&b.to)
        .filter(|_| protocol::dial_target_ok(&b.to))
    else {
        return bad_request("to: must be a DN or a SIP URI");
    };
    let headers = b.headers.unwrap_or_default();
    if let Err(e) = protocol::check_x_headers("headers", &headers) {
        return bad_request(&e);
    }
    let registered = app
        .directory
        .registry
        .get(&dn)
        .is_some_and(|d| d.state == RegState::Registered);
    let link = app.directory.registry.agent(&dn).filter(|_| registered);
    let Some(link) = link else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "the DN is not registered here",
        );
    };
    if app.shutdown.is_cancelled() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the gateway is stopping",
        );
    }
    let headers: BTreeMap<String, String> = headers
        .into_iter()
        .filter_map(|(k, v)| v.as_str().map(|v| (k, v.to_string())))
        .collect();
    let call = ClickToDial {
        dn,
        target,
        headers,
    };
    match click_to_dial::spawn(app.env.clone(), call, link.inbox) {
        Ok(call_id) => (StatusCode::CREATED, Json(Dialled { call_id })).into_response(),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "media_failed",
            &e.to_string(),
        ),
    }
}
