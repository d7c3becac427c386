//! Browser protocol v1 (PROTOCOL.md): the envelope, request payloads and the frames the
//! server sends. Parsing is serde's; this module only decides which error a bad frame earns.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Largest text frame accepted (PROTOCOL.md "Transport").
pub const MAX_FRAME: usize = 64 * 1024;
/// Longest request `id`.
pub const MAX_ID: usize = 64;

/// Error codes of PROTOCOL.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum ErrorCode {
    BadJson,
    BadRequest,
    TooLarge,
    Unauthorized,
    NotRegistered,
    AlreadyRegistered,
    AuthFailed,
    NoSuchCall,
    InvalidState,
    Busy,
    Timeout,
    UpstreamUnavailable,
    RateLimited,
    MediaFailed,
    Internal,
}

impl ErrorCode {
    /// The wire spelling (also the metrics label).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::NotRegistered => "not_registered",
            ErrorCode::AlreadyRegistered => "already_registered",
            ErrorCode::AuthFailed => "auth_failed",
            ErrorCode::NoSuchCall => "no_such_call",
            ErrorCode::InvalidState => "invalid_state",
            ErrorCode::Busy => "busy",
            ErrorCode::Timeout => "timeout",
            ErrorCode::UpstreamUnavailable => "upstream_unavailable",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::MediaFailed => "media_failed",
            ErrorCode::Internal => "internal",
        }
    }
}

/// `register` payload.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterPayload {
    /// The extension.
    pub dn: String,
    /// Its SIP password.
    pub password: String,
    /// Shown to WWE.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Expires to ask the registrar for.
    #[serde(default)]
    pub expires: Option<u32>,
}

/// `resume` payload.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResumePayload {
    /// The session to take back.
    pub session_id: String,
    /// Its secret from `hello`.
    pub resume_token: String,
}

/// `call` payload.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallPayload {
    /// A DN or a SIP URI.
    pub to: String,
    /// The browser's SDP offer.
    pub sdp: String,
    /// Extra `X-` headers for the INVITE.
    #[serde(default)]
    pub headers: Option<serde_json::Map<String, Value>>,
}

/// `answer` payload.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnswerPayload {
    /// The call.
    pub call_id: String,
    /// The browser's SDP answer.
    pub sdp: String,
}

/// `reject` payload.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RejectPayload {
    /// The call.
    pub call_id: String,
    /// 486 (default), 603 or 480.
    #[serde(default)]
    pub status: Option<u16>,
}

/// Payload naming one call (`hangup`, `hold`, …).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallIdPayload {
    /// The call.
    pub call_id: String,
}

/// `dtmf` payload.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DtmfPayload {
    /// The call.
    pub call_id: String,
    /// `0-9*#A-D`, up to 32.
    pub digits: String,
    /// Per digit, ms (default 100).
    #[serde(default)]
    pub duration: Option<u32>,
    /// `rfc4733` (default) or `info`.
    #[serde(default)]
    pub method: Option<String>,
}

/// `transfer` payload.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransferPayload {
    /// The call.
    pub call_id: String,
    /// A DN or a SIP URI: the transfer target.
    pub to: String,
}

/// `iceCandidate` payload.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IceCandidatePayload {
    /// The call.
    pub call_id: String,
    /// `{candidate, sdpMid, sdpMLineIndex}` or null at the end.
    pub candidate: Option<Value>,
}

/// A request, parsed.
#[derive(Debug)]
pub enum Request {
    /// `register`.
    Register(RegisterPayload),
    /// `unregister`.
    Unregister,
    /// `ping`.
    Ping,
    /// `resume`.
    Resume(ResumePayload),
    /// `call`.
    Call(CallPayload),
    /// `answer`.
    Answer(AnswerPayload),
    /// `reject`.
    Reject(RejectPayload),
    /// `hangup`.
    Hangup(CallIdPayload),
    /// `iceCandidate`.
    IceCandidate(IceCandidatePayload),
    /// `hold` (true) or `unhold` (false).
    Hold(CallIdPayload, bool),
    /// `dtmf`.
    Dtmf(DtmfPayload),
    /// `transfer`.
    Transfer(TransferPayload),
    /// `renegotiate` (v1.1): a new browser offer for a call, in the shape of `answer`'s
    /// payload (`callId`, `sdp`).
    Renegotiate(AnswerPayload),
}

impl Request {
    /// The request's `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Register(_) => "register",
            Request::Unregister => "unregister",
            Request::Ping => "ping",
            Request::Resume(_) => "resume",
            Request::Call(_) => "call",
            Request::Answer(_) => "answer",
            Request::Reject(_) => "reject",
            Request::Hangup(_) => "hangup",
            Request::IceCandidate(_) => "iceCandidate",
            Request::Hold(_, true) => "hold",
            Request::Hold(_, false) => "unhold",
            Request::Dtmf(_) => "dtmf",
            Request::Transfer(_) => "transfer",
            Request::Renegotiate(_) => "renegotiate",
        }
    }
}

/// A frame that is not a usable request, and what to answer.
#[derive(Debug, PartialEq)]
pub struct Rejection {
    /// `id` to echo, when the frame had a valid one.
    pub id: Option<String>,
    /// Error code.
    pub code: ErrorCode,
    /// Human-readable message naming the field.
    pub message: String,
}

fn bad(id: Option<&str>, message: impl Into<String>) -> Rejection {
    Rejection {
        id: id.map(str::to_string),
        code: ErrorCode::BadRequest,
        message: message.into(),
    }
}

/// Parses one text frame into `(id, request)`.
pub fn parse(text: &str) -> Result<(String, Request), Rejection> {
    let value: Value = serde_json::from_str(text).map_err(|e| Rejection {
        id: None,
        code: ErrorCode::BadJson,
        message: format!("not valid JSON: {e}"),
    })?;
    let Value::Object(mut obj) = value else {
        return Err(bad(None, "a message must be a JSON object"));
    };
    let id = match obj.remove("id") {
        Some(Value::String(id)) if !id.is_empty() && id.len() <= MAX_ID => id,
        Some(Value::String(_)) => {
            return Err(bad(
                None,
                format!("field `id` must be 1 to {MAX_ID} characters"),
            ))
        }
        Some(_) => return Err(bad(None, "field `id` must be a string")),
        None => {
            let what = match obj.get("type").and_then(Value::as_str) {
                Some(t) => format!("missing field `id` (required on request `{t}`)"),
                None => "missing field `id`".to_string(),
            };
            return Err(bad(None, what));
        }
    };
    let kind = match obj.remove("type") {
        Some(Value::String(t)) => t,
        Some(_) => return Err(bad(Some(&id), "field `type` must be a string")),
        None => return Err(bad(Some(&id), "missing field `type`")),
    };
    let payload = match obj.remove("payload") {
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(p @ Value::Object(_)) => p,
        Some(_) => return Err(bad(Some(&id), "field `payload` must be an object")),
    };
    let request = match kind.as_str() {
        "register" => {
            let p: RegisterPayload =
                serde_path_to_error::deserialize(payload).map_err(|e| payload_error(&id, &e))?;
            validate_register(&p).map_err(|m| bad(Some(&id), m))?;
            Request::Register(p)
        }
        "unregister" => Request::Unregister,
        "ping" => Request::Ping,
        "resume" => Request::Resume(decode(&id, payload)?),
        "call" => {
            let p: CallPayload = decode(&id, payload)?;
            validate_call(&p).map_err(|m| bad(Some(&id), m))?;
            Request::Call(p)
        }
        "answer" => Request::Answer(decode(&id, payload)?),
        "renegotiate" => Request::Renegotiate(decode(&id, payload)?),
        "reject" => {
            let p: RejectPayload = decode(&id, payload)?;
            if let Some(s) = p.status {
                if ![486, 603, 480].contains(&s) {
                    return Err(bad(Some(&id), "payload.status: must be 486, 603 or 480"));
                }
            }
            Request::Reject(p)
        }
        "hangup" => Request::Hangup(decode(&id, payload)?),
        "iceCandidate" => Request::IceCandidate(decode(&id, payload)?),
        "dtmf" => {
            let p: DtmfPayload = decode(&id, payload)?;
            validate_dtmf(&p).map_err(|m| bad(Some(&id), m))?;
            Request::Dtmf(p)
        }
        "hold" => Request::Hold(decode(&id, payload)?, true),
        "unhold" => Request::Hold(decode(&id, payload)?, false),
        "transfer" => {
            let p: TransferPayload = decode(&id, payload)?;
            if p.to.trim().is_empty() {
                return Err(bad(Some(&id), "payload.to: is empty"));
            }
            Request::Transfer(p)
        }
        other => {
            return Err(bad(
                Some(&id),
                format!("unknown type {other:?} in field `type`"),
            ))
        }
    };
    Ok((id, request))
}

fn decode<T: serde::de::DeserializeOwned>(id: &str, payload: Value) -> Result<T, Rejection> {
    serde_path_to_error::deserialize(payload).map_err(|e| payload_error(id, &e))
}

/// Whether `digits` are 1 to 32 of `0-9 * # A-D` (what `dtmf` may send).
pub fn dtmf_digits_ok(digits: &str) -> bool {
    !digits.is_empty()
        && digits.len() <= 32
        && digits
            .chars()
            .all(|c| c.is_ascii_digit() || "*#ABCD".contains(c))
}

/// Whether `to` can be dialled: a DN or a SIP URI of sane length, nothing that breaks a
/// header.
pub fn dial_target_ok(to: &str) -> bool {
    let to = to.trim();
    !to.is_empty()
        && to.len() <= 256
        && !to
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || "<>\"".contains(c))
}

/// Checks extra INVITE headers: `X-` names, short single-line string values. `field` names
/// the object in the error (`payload.headers`, `headers`).
pub fn check_x_headers(field: &str, h: &serde_json::Map<String, Value>) -> Result<(), String> {
    for (k, v) in h {
        let name_ok = k.len() > 2
            && k[..2].eq_ignore_ascii_case("x-")
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !name_ok {
            return Err(format!("{field}: {k:?} is not an X- header name"));
        }
        match v.as_str() {
            Some(v) if v.len() <= 1024 && !v.chars().any(char::is_control) => {}
            _ => return Err(format!("{field}.{k}: must be a short string")),
        }
    }
    Ok(())
}

fn validate_dtmf(p: &DtmfPayload) -> Result<(), String> {
    if !dtmf_digits_ok(&p.digits) {
        return Err("payload.digits: must be 1 to 32 of 0-9 * # A-D".into());
    }
    if let Some(d) = p.duration {
        if !(40..=2000).contains(&d) {
            return Err("payload.duration: must be between 40 and 2000 ms".into());
        }
    }
    match p.method.as_deref() {
        None | Some("rfc4733") | Some("info") => Ok(()),
        Some(_) => Err("payload.method: must be rfc4733 or info".into()),
    }
}

fn validate_call(p: &CallPayload) -> Result<(), String> {
    if !dial_target_ok(&p.to) {
        return Err("payload.to: must be a DN or a SIP URI".into());
    }
    if p.sdp.trim().is_empty() {
        return Err("payload.sdp: must be an SDP offer".into());
    }
    match &p.headers {
        Some(h) => check_x_headers("payload.headers", h),
        None => Ok(()),
    }
}

fn payload_error(id: &str, e: &serde_path_to_error::Error<serde_json::Error>) -> Rejection {
    let path = e.path().to_string();
    let message = if path == "." {
        format!("payload: {}", e.inner())
    } else {
        format!("payload.{path}: {}", e.inner())
    };
    bad(Some(id), message)
}

/// A DN is the user part of a SIP URI: keep it to characters that need no escaping.
fn validate_register(p: &RegisterPayload) -> Result<(), String> {
    let dn_ok = !p.dn.is_empty()
        && p.dn.len() <= 32
        && p.dn
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-._".contains(c));
    if !dn_ok {
        return Err("payload.dn: must be 1 to 32 characters of 0-9 A-Z a-z + - . _".into());
    }
    if p.password.is_empty() || p.password.len() > 256 {
        return Err("payload.password: must be 1 to 256 characters".into());
    }
    if p.password.chars().any(char::is_control) {
        return Err("payload.password: must not contain control characters".into());
    }
    if let Some(e) = p.expires {
        if !(1..=86_400).contains(&e) {
            return Err("payload.expires: must be between 1 and 86400 seconds".into());
        }
    }
    if let Some(d) = &p.display_name {
        if d.len() > 128 || d.chars().any(char::is_control) {
            return Err("payload.displayName: must be up to 128 printable characters".into());
        }
    }
    Ok(())
}

/// A frame the server sends: `{"type", "id"?, "payload"}`.
pub fn frame(kind: &str, id: Option<&str>, payload: impl Serialize) -> String {
    #[derive(Serialize)]
    struct Envelope<'a, P> {
        #[serde(rename = "type")]
        kind: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        payload: P,
    }
    serde_json::to_string(&Envelope { kind, id, payload }).unwrap_or_else(|_| {
        r#"{"type":"error","payload":{"code":"internal","message":"encoding failed"}}"#.to_string()
    })
}

/// `error` payload.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorPayload<'a> {
    /// Code.
    pub code: ErrorCode,
    /// Message.
    pub message: &'a str,
    /// SIP status that caused it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sip_status: Option<u16>,
}

/// An `error` frame.
pub fn error(id: Option<&str>, code: ErrorCode, message: &str, sip_status: Option<u16>) -> String {
    crate::metrics::get().ws_error(code.as_str());
    frame(
        "error",
        id,
        ErrorPayload {
            code,
            message,
            sip_status,
        },
    )
}

/// `hello` payload.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Hello<'a> {
    /// Session id.
    pub session_id: &'a str,
    /// Secret for `resume`.
    pub resume_token: &'a str,
    /// Protocol version.
    pub version: u32,
    /// For `RTCPeerConnection`.
    pub ice_servers: &'a Value,
}

/// An event the server sends, typed once: its frame is `{"type": …, "payload": {…}}` and,
/// for the call and registration events watchers may see, the same payload goes to
/// `/api/events` with `type` and the DN.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", content = "payload", rename_all = "camelCase")]
pub enum Event {
    /// A call for the agent, with our SDP offer.
    #[serde(rename_all = "camelCase")]
    IncomingCall {
        /// Protocol call id.
        call_id: String,
        /// The caller's URI.
        from: String,
        /// The called URI.
        to: String,
        /// Our offer.
        sdp: String,
        /// The caller's display name, when the INVITE has one.
        #[serde(skip_serializing_if = "Option::is_none")]
        display_name: Option<String>,
        /// `inbound`, or `outbound` for a call placed on the agent's behalf (an INVITE
        /// without SDP: 3pcc; REST click-to-dial) (v1.1).
        direction: &'static str,
        /// Answer without the agent after this many seconds, as the INVITE asks (v1.1).
        #[serde(skip_serializing_if = "Option::is_none")]
        auto_answer: Option<u32>,
        /// The INVITE's `X-*` and `User-to-User` headers (v1.1).
        headers: BTreeMap<String, String>,
    },
    /// The SIP side (NOTIFY `Event: talk`) or REST asks the agent's phone to answer (v1.1).
    #[serde(rename_all = "camelCase")]
    AnswerRequested {
        /// Protocol call id.
        call_id: String,
        /// `remote` or `api`.
        by: &'static str,
    },
    /// A re-INVITE or NOTIFY changed the call's interaction headers (v1.1).
    #[serde(rename_all = "camelCase")]
    CallUpdated {
        /// Protocol call id.
        call_id: String,
        /// The headers now.
        headers: BTreeMap<String, String>,
    },
    /// The far end alerts.
    #[serde(rename_all = "camelCase")]
    Ringing {
        /// Protocol call id.
        call_id: String,
        /// 180 or 183.
        sip_status: u16,
    },
    /// The far end sends media before answering.
    #[serde(rename_all = "camelCase")]
    EarlyMedia {
        /// Protocol call id.
        call_id: String,
    },
    /// The call is answered.
    #[serde(rename_all = "camelCase")]
    Answered {
        /// Protocol call id.
        call_id: String,
        /// `local` (the agent), `remote` (the far end, or the SIP side's remote answer) or
        /// `api` (v1.1).
        #[serde(skip_serializing_if = "Option::is_none")]
        by: Option<&'static str>,
    },
    /// The call is on hold.
    #[serde(rename_all = "camelCase")]
    Held {
        /// Protocol call id.
        call_id: String,
        /// `local` (the agent's hold) or `remote` (the far end's).
        by: &'static str,
    },
    /// The call is off hold.
    #[serde(rename_all = "camelCase")]
    Resumed {
        /// Protocol call id.
        call_id: String,
        /// `local` or `remote`.
        by: &'static str,
    },
    /// The call is over.
    #[serde(rename_all = "camelCase")]
    Hangup {
        /// Protocol call id.
        call_id: String,
        /// `local`, `remote` or `server`.
        by: &'static str,
        /// Why, as a token (`normal`, `busy`, `media_failed`, `ice_failed`, …).
        cause: &'static str,
        /// The SIP status behind it.
        #[serde(skip_serializing_if = "Option::is_none")]
        sip_status: Option<u16>,
    },
    /// A key the far end pressed (never published to watchers: agents key in card numbers).
    #[serde(rename_all = "camelCase")]
    Dtmf {
        /// Protocol call id.
        call_id: String,
        /// `0-9*#A-D`.
        digit: String,
        /// ms.
        duration: u32,
        /// `rfc4733` or `info`.
        method: &'static str,
    },
    /// Progress of a transfer.
    #[serde(rename_all = "camelCase")]
    TransferState {
        /// Protocol call id.
        call_id: String,
        /// `trying`, `accepted`, `succeeded`, `failed`.
        state: &'static str,
        /// The SIP status reported.
        #[serde(skip_serializing_if = "Option::is_none")]
        sip_status: Option<u16>,
        /// `remote` for a transfer the far end asked for (an addition to v1).
        #[serde(skip_serializing_if = "Option::is_none")]
        by: Option<&'static str>,
        /// The new far end of such a transfer.
        #[serde(skip_serializing_if = "Option::is_none")]
        to: Option<String>,
    },
}

impl Event {
    /// The frame's `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::IncomingCall { .. } => "incomingCall",
            Event::Ringing { .. } => "ringing",
            Event::EarlyMedia { .. } => "earlyMedia",
            Event::Answered { .. } => "answered",
            Event::AnswerRequested { .. } => "answerRequested",
            Event::CallUpdated { .. } => "callUpdated",
            Event::Held { .. } => "held",
            Event::Resumed { .. } => "resumed",
            Event::Hangup { .. } => "hangup",
            Event::Dtmf { .. } => "dtmf",
            Event::TransferState { .. } => "transferState",
        }
    }

    /// The frame for the browser.
    pub fn frame(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"type":"error","payload":{"code":"internal","message":"encoding failed"}}"#
                .to_string()
        })
    }

    /// What `/api/events` watchers see of it: the payload with the agent's DN, without the
    /// SDP; `None` for what stays between the agent and the gateway (key presses).
    pub fn live(&self, dn: &str) -> Option<Value> {
        if matches!(self, Event::Dtmf { .. }) {
            return None;
        }
        let mut payload = serde_json::to_value(self).ok()?.get_mut("payload")?.take();
        let o = payload.as_object_mut()?;
        o.remove("sdp");
        o.insert("dn".into(), Value::from(dn));
        Some(payload)
    }
}

/// `registrationState` payload.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationState<'a> {
    /// The DN.
    pub dn: &'a str,
    /// `registered` | `unregistered` | `failed`.
    pub state: &'a str,
    /// Why, for `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    /// SIP status, for `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sip_status: Option<u16>,
}

impl RegistrationState<'_> {
    /// The frame for the browser.
    pub fn frame(&self) -> String {
        frame("registrationState", None, self)
    }

    /// What `/api/events` watchers see: every field (absent ones as null) and the owning
    /// session.
    pub fn live(&self, session_id: &str) -> Value {
        serde_json::json!({
            "dn": self.dn,
            "state": self.state,
            "reason": self.reason,
            "sipStatus": self.sip_status,
            "sessionId": session_id,
        })
    }
}

/// The payload of a `result`, typed per request.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Reply<'a> {
    /// Nothing to say beyond success (`unregister`, `answer`, `hold`, …).
    Done {},
    /// `register`: the DN and the Expires the registrar granted.
    Registered {
        /// The DN.
        dn: &'a str,
        /// Seconds.
        expires: u32,
    },
    /// `call`: the call's id and our SDP answer.
    #[serde(rename_all = "camelCase")]
    Calling {
        /// Protocol call id.
        call_id: &'a str,
        /// Our answer to the browser's offer.
        sdp: &'a str,
    },
    /// `renegotiate`: our answer to the browser's new offer.
    Renegotiated {
        /// The answer.
        sdp: &'a str,
    },
    /// `ping`: the server's clock.
    Pong {
        /// RFC 3339.
        time: String,
    },
    /// `resume`: the session's calls and its DN.
    #[serde(rename_all = "camelCase")]
    Resumed {
        /// Live call ids, sorted.
        calls: Vec<&'a str>,
        /// The session's DN, if it registered one.
        #[serde(skip_serializing_if = "Option::is_none")]
        dn: Option<&'a str>,
        /// Fresh `iceServers` (v1.1: per-session TURN credentials are renewed).
        ice_servers: &'a Value,
    },
}

/// A `result` frame for request `id`.
pub fn result(id: &str, reply: Reply<'_>) -> String {
    frame("result", Some(id), reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(text: &str) -> Rejection {
        match parse(text) {
            Err(r) => r,
            Ok(ok) => panic!("accepted {text}: {ok:?}"),
        }
    }

    #[test]
    fn register_parses() {
        let (id, r) = parse(
            r#"{"type":"register","id":"m1","payload":{"dn":"5001","password":"p","expires":60,"extra":1}}"#,
        )
        .expect("valid");
        assert_eq!(id, "m1");
        match r {
            Request::Register(p) => {
                assert_eq!(p.dn, "5001");
                assert_eq!(p.expires, Some(60));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_name_the_field() {
        let r = rejected("{nope");
        assert_eq!((r.code, r.id), (ErrorCode::BadJson, None));

        let r = rejected(r#"{"type":"register","id":"m2","payload":{"password":"p"}}"#);
        assert_eq!(r.code, ErrorCode::BadRequest);
        assert_eq!(r.id.as_deref(), Some("m2"));
        assert!(r.message.contains("dn"), "{}", r.message);

        let r = rejected(r#"{"type":"register","id":"m3","payload":{"dn":5001,"password":"p"}}"#);
        assert!(r.message.contains("payload.dn"), "{}", r.message);

        let r = rejected(r#"{"type":"fly","id":"m4"}"#);
        assert!(
            r.message.contains("type") && r.message.contains("fly"),
            "{}",
            r.message
        );
        assert_eq!(r.id.as_deref(), Some("m4"));

        let r = rejected(r#"{"type":"ping"}"#);
        assert!(r.message.contains("`id`"), "{}", r.message);

        let r = rejected(r#"{"type":"ping","id":7}"#);
        assert!(r.message.contains("`id`"), "{}", r.message);

        let r = rejected(&format!(r#"{{"type":"ping","id":"{}"}}"#, "x".repeat(65)));
        assert!(r.message.contains("`id`"), "{}", r.message);

        let r = rejected("[1,2]");
        assert_eq!(r.code, ErrorCode::BadRequest);

        let r =
            rejected(r#"{"type":"register","id":"m5","payload":{"dn":"50 01","password":"p"}}"#);
        assert!(r.message.contains("payload.dn"), "{}", r.message);

        let r = rejected(r#"{"type":"register","id":"m6","payload":"x"}"#);
        assert!(r.message.contains("payload"), "{}", r.message);
    }

    #[test]
    fn error_codes_spell_as_serde_does() {
        for c in [
            ErrorCode::BadJson,
            ErrorCode::RateLimited,
            ErrorCode::UpstreamUnavailable,
        ] {
            assert_eq!(
                serde_json::to_value(c).unwrap(),
                serde_json::json!(c.as_str())
            );
        }
    }

    #[test]
    fn call_control_payloads_are_checked() {
        assert!(matches!(
            parse(r#"{"type":"transfer","id":"c","payload":{"callId":"x","to":"5002"}}"#),
            Ok((_, Request::Transfer(p))) if p.to == "5002" && p.call_id == "x"
        ));
        let r = rejected(r#"{"type":"transfer","id":"c","payload":{"callId":"x"}}"#);
        assert!(r.message.contains("to"), "{}", r.message);
        let r = rejected(r#"{"type":"transfer","id":"c","payload":{"callId":"x","to":" "}}"#);
        assert!(r.message.contains("payload.to"), "{}", r.message);
        let r = rejected(r#"{"type":"dtmf","id":"c","payload":{"callId":"x","digits":"12E"}}"#);
        assert!(r.message.contains("payload.digits"), "{}", r.message);
        let r = rejected(
            r#"{"type":"dtmf","id":"c","payload":{"callId":"x","digits":"1","method":"sms"}}"#,
        );
        assert!(r.message.contains("payload.method"), "{}", r.message);
        let r = rejected(r#"{"type":"call","id":"c","payload":{"to":"1003"}}"#);
        assert!(r.message.contains("sdp"), "{}", r.message);
        let r = rejected(r#"{"type":"call","id":"c","payload":{"to":"10 03","sdp":"v=0"}}"#);
        assert!(r.message.contains("payload.to"), "{}", r.message);
        let r = rejected(
            r#"{"type":"call","id":"c","payload":{"to":"1003","sdp":"v=0","headers":{"Via":"x"}}}"#,
        );
        assert!(r.message.contains("X-"), "{}", r.message);
        let r = rejected(r#"{"type":"reject","id":"c","payload":{"callId":"x","status":200}}"#);
        assert!(r.message.contains("status"), "{}", r.message);
    }

    #[test]
    fn frames_are_enveloped() {
        let f = error(Some("m1"), ErrorCode::AuthFailed, "no", Some(403));
        let v: Value = serde_json::from_str(&f).expect("json");
        assert_eq!(v["type"], "error");
        assert_eq!(v["id"], "m1");
        assert_eq!(v["payload"]["code"], "auth_failed");
        assert_eq!(v["payload"]["sipStatus"], 403);
        let f = error(None, ErrorCode::BadJson, "x", None);
        let v: Value = serde_json::from_str(&f).expect("json");
        assert!(v.get("id").is_none());
        assert!(v["payload"].get("sipStatus").is_none());
    }

    #[test]
    fn events_encode_as_frames_and_as_what_watchers_see() {
        let hangup = Event::Hangup {
            call_id: "c1".into(),
            by: "server",
            cause: "ice_failed",
            sip_status: None,
        };
        let v: Value = serde_json::from_str(&hangup.frame()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type": "hangup", "payload": {"callId": "c1", "by": "server", "cause": "ice_failed"}})
        );
        assert_eq!(hangup.kind(), "hangup");
        let call = Event::IncomingCall {
            call_id: "c2".into(),
            from: "sip:1003@x".into(),
            to: "sip:5001@x".into(),
            sdp: "v=0".into(),
            display_name: Some("Bob".into()),
            direction: "inbound",
            auto_answer: None,
            headers: BTreeMap::from([("X-Genesys-CallUUID".to_string(), "U1".to_string())]),
        };
        let live = call.live("5001").unwrap();
        assert_eq!(
            live,
            serde_json::json!({"callId": "c2", "from": "sip:1003@x", "to": "sip:5001@x", "displayName": "Bob",
                "direction": "inbound", "headers": {"X-Genesys-CallUUID": "U1"}, "dn": "5001"}),
            "no SDP for watchers"
        );
        let dtmf = Event::Dtmf {
            call_id: "c1".into(),
            digit: "5".into(),
            duration: 160,
            method: "rfc4733",
        };
        assert_eq!(dtmf.live("5001"), None, "key presses stay private");
        let t = Event::TransferState {
            call_id: "c1".into(),
            state: "trying",
            sip_status: None,
            by: Some("remote"),
            to: Some("sip:1004@x".into()),
        };
        let v: Value = serde_json::from_str(&t.frame()).unwrap();
        assert_eq!(v["payload"]["to"], "sip:1004@x");
        assert!(v["payload"].get("sipStatus").is_none());
    }

    #[test]
    fn results_are_typed_per_request() {
        let v = |f: String| serde_json::from_str::<Value>(&f).unwrap();
        assert_eq!(
            v(result("1", Reply::Done {})),
            serde_json::json!({"type": "result", "id": "1", "payload": {}})
        );
        assert_eq!(
            v(result(
                "2",
                Reply::Calling {
                    call_id: "c1",
                    sdp: "v=0"
                }
            ))["payload"],
            serde_json::json!({"callId": "c1", "sdp": "v=0"})
        );
        assert_eq!(
            v(result(
                "3",
                Reply::Resumed {
                    calls: vec!["a"],
                    dn: None,
                    ice_servers: &serde_json::json!([]),
                }
            ))["payload"],
            serde_json::json!({"calls": ["a"], "iceServers": []})
        );
        let reg = RegistrationState {
            dn: "5001",
            state: "registered",
            reason: None,
            sip_status: None,
        };
        assert_eq!(
            v(reg.frame())["payload"],
            serde_json::json!({"dn": "5001", "state": "registered"})
        );
        assert_eq!(
            reg.live("s1")["reason"],
            Value::Null,
            "watchers see every field"
        );
    }
}
