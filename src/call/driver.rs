//! The task that owns one call: its SIP dialog (rsipstack), its media session and its
//! [`CallState`]. Browser requests arrive as [`CallCommand`]s; everything the browser should
//! hear leaves as ready-made protocol frames on the session's inbox.

use std::sync::Arc;
use std::time::SystemTime;

use media::engine::MediaSession;
use media::sdp::Direction as SdpDirection;
use media::worker::MediaEvent;
use rsipstack::dialog::authenticate::Credential;
use rsipstack::dialog::dialog::{DialogState, TerminatedReason};
use rsipstack::dialog::invitation::InviteOption;
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::prelude::{HeadersExt, ToTypedHeader};
use rsipstack::sip::{Header, StatusCode, Uri};
use serde_json::json;
use tokio::sync::mpsc;
use tracing::{debug, info, warn, Instrument};

use super::state::{Action, CallState, Direction, Event, Input};
use super::{CallInfo, CallNote};
use crate::app::App;
use crate::state::rfc3339;
use crate::ws::protocol;

/// A request from the browser session (or REST) to a call.
#[derive(Debug)]
pub enum CallCommand {
    /// `hangup` from the browser.
    Hangup,
    /// Ended by the gateway (REST, the browser gone for good, shutdown).
    ServerHangup,
    /// `answer` with the browser's SDP answer.
    Answer {
        /// The browser's answer.
        sdp: String,
        /// The request to answer (`result`, or `error` when the SDP cannot be used).
        request_id: String,
    },
    /// `reject` with a status.
    Reject(u16),
    /// `dtmf` toward the far end.
    Dtmf {
        /// Digits (`0-9*#A-D`).
        digits: String,
        /// Per digit, ms.
        duration: u32,
        /// SIP INFO rather than RFC 4733.
        info: bool,
        /// The request to answer.
        request_id: String,
    },
    /// `hold` (true) or `unhold` (false): a re-INVITE with `a=sendonly` / `a=sendrecv`.
    Hold {
        /// Hold or take back.
        on: bool,
        /// The request to answer (`error` when the far end refused or the call is not
        /// answered).
        request_id: String,
    },
}

/// How the session reaches a call.
#[derive(Clone, Debug)]
pub struct CallHandle {
    /// The call's id in the protocol.
    pub id: String,
    cmd: mpsc::UnboundedSender<CallCommand>,
}

impl CallHandle {
    /// Sends a command; false if the call is over.
    pub fn send(&self, c: CallCommand) -> bool {
        self.cmd.send(c).is_ok()
    }
}

/// Everything an outgoing call starts with.
pub struct Outgoing {
    /// Protocol call id.
    pub id: String,
    /// The caller's DN.
    pub dn: String,
    /// Its SIP password, for 401/407 on the INVITE.
    pub password: String,
    /// Request-URI to call.
    pub target: String,
    /// Our SDP offer for the far end.
    pub sip_offer: String,
    /// Extra `X-` headers from the browser.
    pub headers: Vec<(String, String)>,
    /// The media session.
    pub media: MediaSession,
}

struct Ctx {
    app: Arc<App>,
    id: String,
    inbox: mpsc::UnboundedSender<CallNote>,
}

impl Ctx {
    fn tell(&self, kind: &str, payload: serde_json::Value) {
        let _ = self.inbox.send(CallNote {
            call_id: self.id.clone(),
            frame: protocol::frame(kind, None, payload),
            ended: kind == "hangup",
            handle: None,
        });
    }

    /// Answers a browser request through the same inbox as the call's events, so the
    /// order the protocol promises holds.
    fn reply(&self, request_id: &str, r: Result<(), String>) {
        let frame = match r {
            Ok(()) => protocol::frame("result", Some(request_id), json!({})),
            Err(m) => protocol::error(
                Some(request_id),
                protocol::ErrorCode::InvalidState,
                &m,
                None,
            ),
        };
        let _ = self.inbox.send(CallNote {
            call_id: self.id.clone(),
            frame,
            ended: false,
            handle: None,
        });
    }

    /// A `dtmf` event.
    fn dtmf(&self, digit: char, duration: u32, method: &str) {
        info!(%digit, method, "far-end DTMF");
        self.tell(
            "dtmf",
            json!({ "callId": self.id, "digit": digit.to_string(), "duration": duration, "method": method }),
        );
    }

    /// Every request gets one reply: those still queued when the call ended get an error.
    fn refuse_pending(&self, cmds: &mut mpsc::UnboundedReceiver<CallCommand>) {
        cmds.close();
        while let Ok(cmd) = cmds.try_recv() {
            if let CallCommand::Answer { request_id, .. }
            | CallCommand::Hold { request_id, .. }
            | CallCommand::Dtmf { request_id, .. } = cmd
            {
                self.reply(&request_id, Err("the call is over".into()));
            }
        }
    }

    /// The outcome of the agent's hold or resume: the `result`, then `held`/`resumed`.
    fn held(&self, request_id: &str, r: Result<(), String>, on: bool) {
        let ok = r.is_ok();
        self.reply(request_id, r);
        if ok {
            let kind = if on { "held" } else { "resumed" };
            info!(kind, "local hold change");
            self.tell(kind, json!({ "callId": self.id, "by": "local" }));
        }
    }

    fn event(&self, e: &Event) {
        match e {
            Event::Ringing(status) => {
                self.tell("ringing", json!({ "callId": self.id, "sipStatus": status }))
            }
            Event::EarlyMedia => self.tell("earlyMedia", json!({ "callId": self.id })),
            Event::Answered => {
                self.app.shared.calls.alter(&self.id, |_, mut c: CallInfo| {
                    c.state = "answered";
                    c.answered_at = Some(SystemTime::now());
                    c
                });
                self.tell("answered", json!({ "callId": self.id }))
            }
            Event::Hangup {
                by,
                cause,
                sip_status,
            } => {
                let mut p = json!({ "callId": self.id, "by": by.as_str(), "cause": cause });
                if let Some(s) = sip_status {
                    p["sipStatus"] = json!(s);
                }
                self.tell("hangup", p)
            }
        }
    }
}

fn sdp_body(body: &[u8]) -> Option<String> {
    if body.is_empty() {
        return None;
    }
    String::from_utf8(body.to_vec()).ok()
}

/// Starts an outgoing call's task.
pub fn spawn_outgoing(
    app: Arc<App>,
    call: Outgoing,
    inbox: mpsc::UnboundedSender<CallNote>,
) -> CallHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = CallHandle {
        id: call.id.clone(),
        cmd: tx,
    };
    let span = tracing::info_span!("call", call = %call.id, dn = %call.dn, sip_call_id = tracing::field::Empty);
    tokio::spawn(run_outgoing(app, call, inbox, rx).instrument(span));
    handle
}

async fn run_outgoing(
    app: Arc<App>,
    call: Outgoing,
    inbox: mpsc::UnboundedSender<CallNote>,
    mut cmds: mpsc::UnboundedReceiver<CallCommand>,
) {
    let ctx = Ctx {
        app: app.clone(),
        id: call.id.clone(),
        inbox,
    };
    let mut media = call.media;
    let mut state = CallState::new(Direction::Outbound);
    let ua = &app.ua;

    let option = (|| -> Result<InviteOption, String> {
        let caller = Uri::try_from(ua.aor(&call.dn).as_str()).map_err(|e| e.to_string())?;
        let callee = Uri::try_from(call.target.as_str()).map_err(|e| e.to_string())?;
        let contact =
            Uri::try_from(ua.contact_uri(&call.dn).as_str()).map_err(|e| e.to_string())?;
        let headers: Vec<Header> = call
            .headers
            .iter()
            .map(|(k, v)| Header::Other(k.clone(), v.clone()))
            .collect();
        Ok(InviteOption {
            caller,
            callee,
            destination: Some(ua.upstream_addr()),
            content_type: Some("application/sdp".into()),
            offer: Some(call.sip_offer.clone().into_bytes()),
            contact,
            credential: Some(Credential {
                username: call.dn.clone(),
                password: call.password.clone(),
                realm: None,
                ..Default::default()
            }),
            headers: (!headers.is_empty()).then_some(headers),
            ..Default::default()
        })
    })();
    let option = match option {
        Ok(o) => o,
        Err(e) => {
            warn!(error = %e, "cannot build INVITE");
            finish(&ctx, &mut state, Input::SipFailed(400), None, &mut media).await;
            return;
        }
    };

    let (state_tx, mut dialog_rx) = app.dialogs.new_dialog_state_channel();
    let (dialog, join) = match app.dialogs.do_invite_async(option, state_tx) {
        Ok(x) => x,
        Err(e) => {
            warn!(error = %e, "cannot send INVITE");
            finish(&ctx, &mut state, Input::SipFailed(500), None, &mut media).await;
            return;
        }
    };
    let sip_call_id = dialog.id().call_id.clone();
    tracing::Span::current().record("sip_call_id", sip_call_id.as_str());
    app.shared.calls.alter(&call.id, |_, mut c: CallInfo| {
        c.sip_call_id = Some(sip_call_id.clone());
        c
    });
    info!(target_uri = %call.target, "INVITE sent");
    let mut join = Some(join);

    loop {
        let input = tokio::select! {
            cmd = cmds.recv() => match cmd {
                Some(CallCommand::Hangup) | None => Input::BrowserHangup,
                Some(CallCommand::ServerHangup) => Input::ServerHangup,
                Some(CallCommand::Answer { request_id, .. }) => {
                    ctx.reply(&request_id, Err("an outgoing call cannot be answered".into()));
                    continue;
                }
                Some(CallCommand::Reject(_)) => continue,
                Some(CallCommand::Hold { on, request_id }) => {
                    let r = local_hold(&dialog, &mut media, &state, on).await;
                    ctx.held(&request_id, r, on);
                    continue;
                }
                Some(CallCommand::Dtmf { digits, duration, info, request_id }) => {
                    let r = send_dtmf(&dialog, &media, &state, &digits, duration, info).await;
                    ctx.reply(&request_id, r);
                    continue;
                }
            },
            result = async { match join.as_mut() { Some(j) => j.await, None => std::future::pending().await } } => {
                join = None;
                match result {
                    Ok(Ok((_, Some(resp)))) if resp.status_code.code() >= 300 => Input::SipFailed(resp.status_code.code()),
                    Ok(Ok((_, Some(_)))) => continue,
                    Ok(Ok((_, None))) => Input::SipFailed(408),
                    Ok(Err(e)) => { debug!(error = %e, "INVITE failed"); Input::SipFailed(error_status(&e)) }
                    Err(_) => Input::SipFailed(500),
                }
            }
            ds = dialog_rx.recv() => match ds {
                Some(ds) => match on_dialog_state(&ctx, ds, &mut media, &state).await {
                    Some(i) => i,
                    None => continue,
                },
                None => continue,
            },
            ev = media.events.recv() => match ev.and_then(|e| media_input(&ctx, e)) {
                Some(i) => i,
                None => continue,
            },
        };
        let actions = state.handle(input);
        run_actions(&ctx, &actions, Some(&dialog), &mut media).await;
        if state.is_ended() {
            break;
        }
    }
    ctx.refuse_pending(&mut cmds);
    app.shared.calls.remove(&call.id);
    app.dialogs.remove_dialog(&dialog.id());
}

/// How long a hold or resume re-INVITE may take before the agent is told it failed.
const REINVITE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(8);

/// The agent's hold (`on`) or resume: a re-INVITE offering `a=sendonly` / `a=sendrecv`
/// (RFC 3264 §8.4), then the far end's answer applied and `held`/`resumed` told.
async fn local_hold(
    dialog: &InviteDialog,
    media: &mut MediaSession,
    state: &CallState,
    on: bool,
) -> Result<(), String> {
    if state.phase() != super::state::Phase::Answered {
        return Err("the call is not answered".into());
    }
    let direction = if on {
        SdpDirection::SendOnly
    } else {
        SdpDirection::SendRecv
    };
    let offer = media.sip_reoffer(direction).map_err(|e| e.to_string())?;
    let headers = vec![Header::ContentType("application/sdp".into())];
    let sent = dialog.reinvite_with_glare_retry(Some(headers), Some(offer.into_bytes()), 2);
    let resp = match tokio::time::timeout(REINVITE_DEADLINE, sent).await {
        Ok(Ok(Some(resp))) => resp,
        Ok(Ok(None)) => return Err("the dialog is not confirmed".into()),
        Ok(Err(e)) => return Err(format!("re-INVITE failed: {e}")),
        Err(_) => return Err("no answer to the re-INVITE".into()),
    };
    let status = resp.status_code.code();
    if !(200..300).contains(&status) {
        return Err(format!("the far end answered {status}"));
    }
    if let Some(answer) = sdp_body(&resp.body) {
        if let Err(e) = media.set_sip_remote(&answer) {
            warn!(error = %e, "re-INVITE answer unusable");
        }
    }
    media.set_hold(on).map_err(|e| e.to_string())
}

/// The agent's key presses toward the far end: RFC 4733 events in the media, or one SIP
/// INFO (`application/dtmf-relay`) per digit.
async fn send_dtmf(
    dialog: &InviteDialog,
    media: &MediaSession,
    state: &CallState,
    digits: &str,
    duration: u32,
    info: bool,
) -> Result<(), String> {
    if state.phase() != super::state::Phase::Answered {
        return Err("the call is not answered".into());
    }
    if !info {
        return media.send_dtmf(digits, duration).map_err(|e| e.to_string());
    }
    for digit in digits.chars() {
        let body = format!("Signal={digit}\r\nDuration={duration}\r\n");
        let headers = vec![Header::ContentType("application/dtmf-relay".into())];
        let sent = dialog.info(Some(headers), Some(body.into_bytes()));
        match tokio::time::timeout(REINVITE_DEADLINE, sent).await {
            Ok(Ok(Some(resp))) if resp.status_code.code() < 300 => {}
            Ok(Ok(Some(resp))) => return Err(format!("INFO answered {}", resp.status_code.code())),
            Ok(Ok(None)) => return Err("the dialog is not confirmed".into()),
            Ok(Err(e)) => return Err(format!("INFO failed: {e}")),
            Err(_) => return Err("no answer to INFO".into()),
        }
    }
    Ok(())
}

/// A media event as an input for the call (logged once here); key presses go straight to
/// the browser as `dtmf` events.
fn media_input(ctx: &Ctx, ev: MediaEvent) -> Option<Input> {
    Some(match ev {
        MediaEvent::BrowserConnected => {
            info!("browser media connected");
            Input::MediaConnected
        }
        MediaEvent::BrowserFailed(why) => {
            warn!(%why, "browser media failed");
            Input::MediaFailed
        }
        MediaEvent::Timeout { leg } => {
            info!(leg, "media timeout");
            Input::MediaTimeout
        }
        MediaEvent::Dtmf(press) => {
            ctx.dtmf(press.digit, press.duration_ms, "rfc4733");
            return None;
        }
    })
}

/// A key press carried by SIP INFO (`application/dtmf-relay`: `Signal=5`, `Duration=160`).
fn info_dtmf(body: &[u8]) -> Option<(char, u32)> {
    let text = std::str::from_utf8(body).ok()?;
    let mut signal = None;
    let mut duration = 100;
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        match k.trim().to_ascii_lowercase().as_str() {
            "signal" => {
                signal = v
                    .trim()
                    .chars()
                    .next()
                    .map(|c| c.to_ascii_uppercase())
                    .filter(|c| c.is_ascii_digit() || "*#ABCD".contains(*c));
            }
            "duration" => duration = v.trim().parse().unwrap_or(100),
            _ => {}
        }
    }
    signal.map(|s| (s, duration))
}

fn error_status(e: &rsipstack::Error) -> u16 {
    match e {
        rsipstack::Error::DialogError(_, _, status) => status.code(),
        _ => 500,
    }
}

/// Turns a dialog state change into an input for the call, updating media on the way.
async fn on_dialog_state(
    ctx: &Ctx,
    ds: DialogState,
    media: &mut MediaSession,
    state: &CallState,
) -> Option<Input> {
    match ds {
        DialogState::Early(_, resp) => {
            let sdp = sdp_body(&resp.body);
            let has_sdp = match &sdp {
                Some(s) => media.set_sip_remote(s).is_ok(),
                None => false,
            };
            Some(Input::SipProvisional {
                status: resp.status_code.code(),
                sdp: has_sdp,
            })
        }
        DialogState::Confirmed(_, resp) if state.phase() != super::state::Phase::Answered => {
            if let Some(sdp) = sdp_body(&resp.body) {
                if let Err(e) = media.set_sip_remote(&sdp) {
                    warn!(error = %e, "far end's answer SDP unusable");
                }
            }
            ctx.app.shared.calls.alter(&ctx.id, |_, mut c: CallInfo| {
                c.codec = media.codec().map(str::to_string);
                c
            });
            Some(Input::SipAnswered)
        }
        DialogState::Updated(_, req, handle) => {
            // A re-INVITE (or UPDATE) from the far end: RFC 3264 answer, held/resumed events.
            let Some(offer) = sdp_body(&req.body) else {
                let _ = handle.reply(StatusCode::OK).await;
                return None;
            };
            match media.set_sip_remote(&offer) {
                Ok(direction) => {
                    let answer_dir = direction.reversed();
                    let held = matches!(direction, SdpDirection::SendOnly | SdpDirection::Inactive);
                    let answer = media.sip_reoffer(answer_dir).ok();
                    let headers = vec![Header::ContentType("application/sdp".into())];
                    let _ = handle
                        .respond(
                            StatusCode::OK,
                            Some(headers),
                            answer.map(String::into_bytes),
                        )
                        .await;
                    let kind = if held { "held" } else { "resumed" };
                    ctx.tell(kind, json!({ "callId": ctx.id, "by": "remote" }));
                }
                Err(e) => {
                    warn!(error = %e, "re-INVITE SDP unusable");
                    let _ = handle.reply(StatusCode::NotAcceptableHere).await;
                }
            }
            None
        }
        DialogState::Terminated(_, reason) => Some(match reason {
            TerminatedReason::UasBye | TerminatedReason::UacBye => Input::SipBye,
            TerminatedReason::UacCancel => Input::SipCancelled,
            TerminatedReason::UasBusy | TerminatedReason::UacBusy => Input::SipFailed(486),
            TerminatedReason::UasDecline => Input::SipFailed(603),
            TerminatedReason::Timeout => Input::SipFailed(408),
            TerminatedReason::ProxyAuthRequired => Input::SipFailed(407),
            TerminatedReason::ProxyError(s)
            | TerminatedReason::UacOther(s)
            | TerminatedReason::UasOther(s) => Input::SipFailed(s.code()),
        }),
        DialogState::Info(_, req, handle) => {
            let is_dtmf = req.headers.iter().any(|h| {
                matches!(h, Header::ContentType(ct) if ct.value().to_ascii_lowercase().contains("dtmf-relay"))
            });
            match info_dtmf(&req.body).filter(|_| is_dtmf) {
                Some((digit, duration)) => {
                    ctx.dtmf(digit, duration, "info");
                    let _ = handle.reply(StatusCode::OK).await;
                }
                None => {
                    let _ = handle.reply(StatusCode::UnsupportedMediaType).await;
                }
            }
            None
        }
        DialogState::Options(_, _, handle)
        | DialogState::Message(_, _, handle)
        | DialogState::Notify(_, _, handle)
        | DialogState::Publish(_, _, handle) => {
            let _ = handle.reply(StatusCode::OK).await;
            None
        }
        DialogState::Refer(_, _, handle) => {
            let _ = handle.reply(StatusCode::Forbidden).await;
            None
        }
        _ => None,
    }
}

async fn run_actions(
    ctx: &Ctx,
    actions: &[Action],
    dialog: Option<&InviteDialog>,
    media: &mut MediaSession,
) {
    for a in actions {
        match a {
            Action::Browser(e) => ctx.event(e),
            Action::SipCancel => {
                if let Some(d) = dialog {
                    if let Err(e) = d.cancel().await {
                        debug!(error = %e, "CANCEL failed");
                    }
                }
            }
            Action::SipBye => {
                if let Some(d) = dialog {
                    if let Err(e) = d.bye().await {
                        debug!(error = %e, "BYE failed");
                    }
                }
            }
            Action::SipAccept | Action::SipReject(_) => {
                // Incoming calls answer through their server dialog (see `incoming`).
            }
            Action::StopMedia => {
                media.stop();
            }
        }
    }
}

async fn finish(
    ctx: &Ctx,
    state: &mut CallState,
    input: Input,
    dialog: Option<&InviteDialog>,
    media: &mut MediaSession,
) {
    let actions = state.handle(input);
    run_actions(ctx, &actions, dialog, media).await;
    ctx.app.shared.calls.remove(&ctx.id);
}

/// Handles an incoming INVITE for `dn`, whose session listens on `inbox`.
pub fn spawn_incoming(
    app: Arc<App>,
    tx: rsipstack::transaction::transaction::Transaction,
    dn: String,
    inbox: mpsc::UnboundedSender<CallNote>,
) {
    let id = format!("{:032x}", rand::random::<u128>());
    let span =
        tracing::info_span!("call", call = %id, dn = %dn, sip_call_id = tracing::field::Empty);
    tokio::spawn(run_incoming(app, tx, id, dn, inbox).instrument(span));
}

async fn run_incoming(
    app: Arc<App>,
    mut tx: rsipstack::transaction::transaction::Transaction,
    id: String,
    dn: String,
    inbox: mpsc::UnboundedSender<CallNote>,
) {
    let ctx = Ctx {
        app: app.clone(),
        id: id.clone(),
        inbox,
    };
    let contact = Uri::try_from(app.ua.contact_uri(&dn).as_str()).ok();
    let (state_tx, mut dialog_rx) = app.dialogs.new_dialog_state_channel();
    let mut dialog = match app
        .dialogs
        .get_or_create_server_invite(&tx, state_tx, None, contact)
    {
        Ok(d) => d,
        Err(e) => {
            warn!(error = %e, "cannot create the server dialog");
            let _ = tx.reply(StatusCode::ServerInternalError).await;
            return;
        }
    };
    let sip_call_id = dialog.id().call_id.clone();
    tracing::Span::current().record("sip_call_id", sip_call_id.as_str());
    let offer = sdp_body(&tx.original.body).unwrap_or_default();
    let from = tx.original.from_header().ok().and_then(|f| f.typed().ok());
    let from_uri = from.as_ref().map(|f| f.uri.to_string()).unwrap_or_default();
    let display = from.as_ref().and_then(|f| f.display_name.clone());
    let to_uri = tx.original.uri.to_string();

    let inbound = match app.media.inbound(&offer) {
        Ok(i) => i,
        Err(e) => {
            info!(error = %e, "incoming offer unusable");
            let _ = dialog.reject(Some(StatusCode::NotAcceptableHere), None);
            let _ = dialog.handle(&mut tx).await;
            app.dialogs.remove_dialog(&dialog.id());
            return;
        }
    };
    let mut media = inbound.session;
    let (cmd_tx, mut cmds) = mpsc::unbounded_channel();
    let handle = CallHandle {
        id: id.clone(),
        cmd: cmd_tx,
    };
    let mut info = call_info(&id, &dn, "inbound", &from_uri);
    info.sip_call_id = Some(sip_call_id);
    info.counters = Some(media.counters_handle());
    info.handle = Some(handle.clone());
    info.state = "ringing";
    app.shared.calls.insert(id.clone(), info);

    // The INVITE server transaction runs beside us: it takes our responses and the ACK.
    let mut tx_dialog = dialog.clone();
    let server = tokio::spawn(async move {
        let _ = tx_dialog.handle(&mut tx).await;
    });
    let _ = dialog.ringing(None, None);
    let mut payload = json!({
        "callId": id, "from": from_uri, "to": to_uri, "sdp": inbound.browser_offer,
    });
    if let Some(d) = display {
        payload["displayName"] = json!(d);
    }
    let _ = ctx.inbox.send(CallNote {
        call_id: id.clone(),
        frame: protocol::frame("incomingCall", None, payload),
        ended: false,
        handle: Some(handle),
    });
    info!(from = %from_uri, "incoming call offered to the browser");

    let mut state = CallState::new(Direction::Inbound);
    let sip_answer = inbound.sip_answer;
    loop {
        let input = tokio::select! {
            cmd = cmds.recv() => match cmd {
                Some(CallCommand::Hangup) | None => Input::BrowserHangup,
                Some(CallCommand::ServerHangup) => Input::ServerHangup,
                Some(CallCommand::Reject(s)) => Input::BrowserReject(s),
                Some(CallCommand::Answer { sdp, request_id }) => match media.set_browser_answer(&sdp) {
                    // The `result` goes first, then the `answered` event (PROTOCOL.md).
                    Ok(()) => { ctx.reply(&request_id, Ok(())); Input::BrowserAnswer }
                    Err(e) => { ctx.reply(&request_id, Err(e.to_string())); continue }
                },
                Some(CallCommand::Hold { on, request_id }) => {
                    let r = local_hold(&dialog, &mut media, &state, on).await;
                    ctx.held(&request_id, r, on);
                    continue;
                }
                Some(CallCommand::Dtmf { digits, duration, info, request_id }) => {
                    let r = send_dtmf(&dialog, &media, &state, &digits, duration, info).await;
                    ctx.reply(&request_id, r);
                    continue;
                }
            },
            ds = dialog_rx.recv() => match ds {
                Some(ds) => match on_dialog_state(&ctx, ds, &mut media, &state).await {
                    Some(Input::SipAnswered) => continue,
                    Some(i) => i,
                    None => continue,
                },
                None => continue,
            },
            ev = media.events.recv() => match ev.and_then(|e| media_input(&ctx, e)) {
                Some(i) => i,
                None => continue,
            },
        };
        let actions = state.handle(input);
        for a in &actions {
            match a {
                Action::SipAccept => {
                    let headers = vec![Header::ContentType("application/sdp".into())];
                    if let Err(e) =
                        dialog.accept(Some(headers), Some(sip_answer.clone().into_bytes()))
                    {
                        warn!(error = %e, "cannot send 200 OK");
                    }
                }
                Action::SipReject(status) => {
                    let _ = dialog.reject(Some(StatusCode::from(*status)), None);
                }
                _ => {}
            }
        }
        run_actions(&ctx, &actions, Some(&dialog), &mut media).await;
        if state.is_ended() {
            break;
        }
    }
    ctx.refuse_pending(&mut cmds);
    app.shared.calls.remove(&id);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), server).await;
    app.dialogs.remove_dialog(&dialog.id());
}

/// A new call's entry in the REST view.
pub fn call_info(id: &str, dn: &str, direction: &'static str, remote: &str) -> CallInfo {
    CallInfo {
        call_id: id.to_string(),
        dn: dn.to_string(),
        direction,
        remote: remote.to_string(),
        state: "setup",
        started_at: SystemTime::now(),
        answered_at: None,
        sip_call_id: None,
        codec: None,
        counters: None,
        handle: None,
    }
}

/// RFC 3339 of an optional time.
pub fn time_opt(t: Option<SystemTime>) -> Option<String> {
    t.map(rfc3339)
}

#[cfg(test)]
mod tests {
    use super::info_dtmf;

    #[test]
    fn dtmf_relay_bodies() {
        assert_eq!(info_dtmf(b"Signal=5\r\nDuration=160\r\n"), Some(('5', 160)));
        assert_eq!(info_dtmf(b"signal= #\nduration=80"), Some(('#', 80)));
        assert_eq!(info_dtmf(b"Signal=x"), None);
        assert_eq!(info_dtmf(b"\xff\xfe"), None);
        assert_eq!(info_dtmf(b"Duration=100"), None);
    }
}
