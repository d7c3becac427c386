//! The agent's side of a call: the events and replies its browser session hears, as
//! protocol frames on the session's inbox, and the call events published to `/api/events`.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::info;

use super::remote_control;
use super::state::Event as CallEvent;
use super::transfer::TransferState;
use super::Env;
use crate::directory::calls::{CallCommand, CallHandle, Requester, ToSession};
use crate::protocol::{self, Event};

/// The agent's side of a call: where its browser session hears events and replies, and the
/// live event bus that watchers of the DN see.
pub(super) struct Agent {
    pub(super) env: Arc<Env>,
    pub(super) id: String,
    pub(super) dn: String,
    pub(super) inbox: mpsc::UnboundedSender<ToSession>,
    /// The interaction's headers (`X-*`, `User-to-User`) as the SIP side last sent them:
    /// every event watchers see carries them and `genesysCallUuid` (REST.md v1.1).
    pub(super) headers: BTreeMap<String, String>,
}

impl Agent {
    /// Sends an event to the browser and, unless it is private, to `/api/events` watchers.
    pub(super) fn emit(&self, event: Event) {
        self.send(event, None);
    }

    /// Offers a new incoming call (`incomingCall`) with the handle its session keeps.
    pub(super) fn offer(&self, event: Event, handle: CallHandle) {
        self.send(event, Some(handle));
    }

    fn send(&self, event: Event, handle: Option<CallHandle>) {
        if let Some(mut live) = event.live(&self.dn) {
            if let Some(o) = live.as_object_mut() {
                let uuid = remote_control::genesys_call_uuid(&self.headers);
                o.insert("genesysCallUuid".into(), uuid.into());
                o.entry("headers")
                    .or_insert_with(|| serde_json::json!(self.headers));
            }
            self.env.directory.events.publish(event.kind(), live);
        }
        let _ = self.inbox.send(ToSession {
            call_id: self.id.clone(),
            frame: event.frame(),
            ended: matches!(event, Event::Hangup { .. }),
            handle,
        });
    }

    /// `held` or `resumed`.
    pub(super) fn hold_changed(&self, held: bool, by: &'static str) {
        let call_id = self.id.clone();
        self.emit(if held {
            Event::Held { call_id, by }
        } else {
            Event::Resumed { call_id, by }
        });
    }

    /// Answers a browser request through the same inbox as the call's events, so the
    /// order the protocol promises holds.
    pub(super) fn reply(&self, request_id: &str, r: Result<(), String>) {
        let frame = match r {
            Ok(()) => protocol::result(request_id, protocol::Reply::Done {}),
            Err(m) => protocol::error(
                Some(request_id),
                protocol::ErrorCode::InvalidState,
                &m,
                None,
            ),
        };
        let _ = self.inbox.send(ToSession {
            call_id: self.id.clone(),
            frame,
            ended: false,
            handle: None,
        });
    }

    /// The `renegotiate` reply: our answer, or why the offer cannot be used (the call goes on
    /// as it was).
    pub(super) fn renegotiated(
        &self,
        request_id: &str,
        r: Result<String, media::engine::MediaError>,
    ) {
        use media::engine::MediaError;
        let frame = match r {
            Ok(sdp) => protocol::result(request_id, protocol::Reply::Renegotiated { sdp: &sdp }),
            Err(e) => {
                let code = match &e {
                    MediaError::Sdp(_) | MediaError::Setup(_) | MediaError::NoCommonCodec => {
                        protocol::ErrorCode::BadRequest
                    }
                    MediaError::NotConnected => protocol::ErrorCode::InvalidState,
                    _ => protocol::ErrorCode::MediaFailed,
                };
                info!(error = %e, "renegotiate refused");
                protocol::error(Some(request_id), code, &format!("payload.sdp: {e}"), None)
            }
        };
        let _ = self.inbox.send(ToSession {
            call_id: self.id.clone(),
            frame,
            ended: false,
            handle: None,
        });
    }

    /// New interaction headers from a re-INVITE or NOTIFY: kept, and `callUpdated` when
    /// they differ (Genesys reuses a dialog for another interaction).
    pub(super) fn headers_changed(&mut self, headers: BTreeMap<String, String>) {
        if headers.is_empty() || headers == self.headers {
            return;
        }
        info!(?headers, "interaction headers changed");
        self.headers = headers.clone();
        self.env
            .directory
            .calls
            .update(&self.id, |c| c.headers = headers.clone());
        self.emit(Event::CallUpdated {
            call_id: self.id.clone(),
            headers,
        });
    }

    /// The outcome of a request to whoever asked: the browser's `result`/`error`, or the
    /// waiting REST handler.
    pub(super) fn answer_to(&self, from: Requester, r: Result<(), String>) {
        match from {
            Requester::Browser(request_id) => self.reply(&request_id, r),
            Requester::Api(tx) => {
                let _ = tx.send(r);
            }
        }
    }

    /// A `dtmf` event.
    pub(super) fn dtmf(&self, digit: char, duration: u32, method: &'static str) {
        info!(%digit, method, "far-end DTMF");
        self.emit(Event::Dtmf {
            call_id: self.id.clone(),
            digit: digit.to_string(),
            duration,
            method,
        });
    }

    /// A `transferState` event. `by: remote` (an addition to PROTOCOL.md v1) marks a transfer
    /// the far end asked for, with the new far end in `to`.
    pub(super) fn transfer_state(
        &self,
        state: TransferState,
        sip_status: Option<u16>,
        remote: Option<&str>,
    ) {
        info!(state = state.as_str(), sip_status, "transfer");
        self.emit(Event::TransferState {
            call_id: self.id.clone(),
            state: state.as_str(),
            sip_status,
            by: remote.map(|_| "remote"),
            to: remote.map(str::to_string),
        });
    }

    /// Every request gets one reply: those still queued when the call ended get an error.
    pub(super) fn refuse_pending(&self, cmds: &mut mpsc::UnboundedReceiver<CallCommand>) {
        cmds.close();
        let over = || Err("the call is over".to_string());
        while let Ok(cmd) = cmds.try_recv() {
            match cmd {
                CallCommand::Answer { request_id, .. }
                | CallCommand::Renegotiate { request_id, .. } => self.reply(&request_id, over()),
                CallCommand::Hold { from, .. }
                | CallCommand::Dtmf { from, .. }
                | CallCommand::Transfer { from, .. } => self.answer_to(from, over()),
                CallCommand::AnswerFor(tx) => {
                    let _ = tx.send(over());
                }
                CallCommand::ReplacesTarget(tx) => {
                    let _ = tx.send(None);
                }
                CallCommand::Hangup | CallCommand::ServerHangup | CallCommand::Reject(_) => {}
            }
        }
    }

    /// The outcome of a hold or resume the agent or REST asked for: the reply, then
    /// `held`/`resumed` by `local` or `api`.
    pub(super) fn held(&self, from: Requester, r: Result<(), String>, on: bool) {
        let ok = r.is_ok();
        let by = from.by();
        self.answer_to(from, r);
        if ok {
            info!(held = on, by, "hold change");
            self.hold_changed(on, by);
        }
    }

    /// What the call's state machine has the browser hear.
    pub(super) fn on_call_event(&self, e: &CallEvent) {
        let call_id = self.id.clone();
        self.emit(match *e {
            CallEvent::Ringing(sip_status) => Event::Ringing {
                call_id,
                sip_status,
            },
            CallEvent::EarlyMedia => Event::EarlyMedia { call_id },
            CallEvent::Answered(by) => {
                self.env.directory.calls.answered(&self.id);
                Event::Answered {
                    call_id,
                    by: Some(by.as_str()),
                }
            }
            CallEvent::AnswerRequested(by) => {
                // The SIP leg is answered: REST says so before the browser has joined.
                self.env.directory.calls.answered(&self.id);
                info!(by = by.as_str(), "the agent's phone is asked to answer");
                Event::AnswerRequested {
                    call_id,
                    by: by.as_str(),
                }
            }
            CallEvent::Hangup {
                by,
                cause,
                sip_status,
            } => Event::Hangup {
                call_id,
                by: by.as_str(),
                cause,
                sip_status,
            },
        });
    }
}
