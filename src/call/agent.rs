//! The agent's side of a call: the events and replies its browser session hears, as
//! protocol frames on the session's inbox, and the call events published to `/api/events`.

use std::sync::Arc;

use serde_json::json;
use tokio::sync::mpsc;
use tracing::info;

use super::state::Event;
use super::transfer::TransferState;
use super::Env;
use crate::directory::calls::{CallCommand, CallNote};
use crate::protocol;

/// The agent's side of a call: where its browser session hears events and replies, and the
/// live event bus that watchers of the DN see.
pub(super) struct Agent {
    pub(super) env: Arc<Env>,
    pub(super) id: String,
    pub(super) dn: String,
    pub(super) inbox: mpsc::UnboundedSender<CallNote>,
}

/// Call events that `/api/events` subscribers see too (DTMF stays private: agents key in
/// card numbers).
const LIVE: &[&str] = &[
    "ringing",
    "earlyMedia",
    "answered",
    "held",
    "resumed",
    "transferState",
    "hangup",
];

impl Agent {
    pub(super) fn tell(&self, kind: &str, payload: serde_json::Value) {
        if LIVE.contains(&kind) {
            let mut live = payload.clone();
            live["dn"] = json!(self.dn);
            self.env.directory.events.publish(kind, live);
        }
        let _ = self.inbox.send(CallNote {
            call_id: self.id.clone(),
            frame: protocol::frame(kind, None, payload),
            ended: kind == "hangup",
            handle: None,
        });
    }

    /// Answers a browser request through the same inbox as the call's events, so the
    /// order the protocol promises holds.
    pub(super) fn reply(&self, request_id: &str, r: Result<(), String>) {
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
    pub(super) fn dtmf(&self, digit: char, duration: u32, method: &str) {
        info!(%digit, method, "far-end DTMF");
        self.tell(
            "dtmf",
            json!({ "callId": self.id, "digit": digit.to_string(), "duration": duration, "method": method }),
        );
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
        let mut p = json!({ "callId": self.id, "state": state.as_str() });
        if let Some(s) = sip_status {
            p["sipStatus"] = json!(s);
        }
        if let Some(to) = remote {
            p["by"] = json!("remote");
            p["to"] = json!(to);
        }
        self.tell("transferState", p);
    }

    /// Every request gets one reply: those still queued when the call ended get an error.
    pub(super) fn refuse_pending(&self, cmds: &mut mpsc::UnboundedReceiver<CallCommand>) {
        cmds.close();
        while let Ok(cmd) = cmds.try_recv() {
            if let CallCommand::Answer { request_id, .. }
            | CallCommand::Hold { request_id, .. }
            | CallCommand::Dtmf { request_id, .. }
            | CallCommand::Transfer { request_id, .. } = cmd
            {
                self.reply(&request_id, Err("the call is over".into()));
            }
        }
    }

    /// The outcome of the agent's hold or resume: the `result`, then `held`/`resumed`.
    pub(super) fn held(&self, request_id: &str, r: Result<(), String>, on: bool) {
        let ok = r.is_ok();
        self.reply(request_id, r);
        if ok {
            let kind = if on { "held" } else { "resumed" };
            info!(kind, "local hold change");
            self.tell(kind, json!({ "callId": self.id, "by": "local" }));
        }
    }

    pub(super) fn event(&self, e: &Event) {
        match e {
            Event::Ringing(status) => {
                self.tell("ringing", json!({ "callId": self.id, "sipStatus": status }))
            }
            Event::EarlyMedia => self.tell("earlyMedia", json!({ "callId": self.id })),
            Event::Answered => {
                self.env.directory.calls.answered(&self.id);
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
