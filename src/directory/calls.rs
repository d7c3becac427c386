//! The call table: one row per live call, what REST shows of it and how to reach it. The
//! call layer writes rows through these methods (the task that owns a call is the only
//! writer of its row); REST reads snapshots and sends commands through the row's handle.
//! The messages between a call and its browser session are typed here too, so both sides
//! and REST share them without importing each other.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use dashmap::DashMap;
use media::stats::{MediaCounters, MediaSnapshot};
use tokio::sync::{mpsc, oneshot};

use super::rfc3339;

/// Which way a call goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The browser called out.
    Outbound,
    /// A SIP INVITE came in for the browser's DN.
    Inbound,
}

impl Direction {
    /// As REST shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }
}

/// Where a call is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// INVITE sent (outbound) or `incomingCall` sent (inbound), no answer yet.
    Setup,
    /// The far end (outbound) or the browser (inbound) is alerting.
    Ringing,
    /// Answered.
    Answered,
    /// Over.
    Ended,
}

impl Phase {
    /// As REST and the metrics show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Setup => "setup",
            Phase::Ringing => "ringing",
            Phase::Answered => "answered",
            Phase::Ended => "ended",
        }
    }
}

/// Who asked a call for something, and where the outcome goes.
#[derive(Debug)]
pub enum Requester {
    /// The agent's browser: a `result` or `error` frame for this request id.
    Browser(String),
    /// REST call control: the outcome, to the waiting handler (`Err` says why not).
    Api(oneshot::Sender<Result<(), String>>),
}

impl Requester {
    /// Who did it, as `held.by` and `resumed.by` say: `local` or `api`.
    pub fn by(&self) -> &'static str {
        match self {
            Requester::Browser(_) => "local",
            Requester::Api(_) => "api",
        }
    }
}

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
    /// `renegotiate` with the browser's new offer (ICE restart, a reloaded page's new
    /// RTCPeerConnection); answered with our SDP, nothing goes toward SIP.
    Renegotiate {
        /// The browser's offer.
        sdp: String,
        /// The request to answer.
        request_id: String,
    },
    /// REST's answer on the agent's behalf: the SIP leg is answered and the browser asked
    /// to join (`answerRequested {by: api}`).
    AnswerFor(oneshot::Sender<Result<(), String>>),
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
        /// Who asked.
        from: Requester,
    },
    /// `hold` (true) or `unhold` (false): a re-INVITE with `a=sendonly` / `a=sendrecv`.
    Hold {
        /// Hold or take back.
        on: bool,
        /// Who asked (told of a refusal by the far end, or a call not answered).
        from: Requester,
    },
    /// `transfer`: a blind transfer of the far end to `target` (REFER).
    Transfer {
        /// Request-URI of the transfer target (with `?Replaces=` for an attended transfer).
        target: String,
        /// Who asked.
        from: Requester,
    },
    /// What an attended transfer needs of this call to replace it (RFC 3891): its far
    /// end's URI with the dialog's `Replaces` parameters; `None` unless answered.
    ReplacesTarget(oneshot::Sender<Option<String>>),
}

/// How a session or REST reaches a call.
#[derive(Clone, Debug)]
pub struct CallHandle {
    /// The call's id in the protocol.
    pub id: String,
    cmd: mpsc::UnboundedSender<CallCommand>,
}

impl CallHandle {
    /// A handle for call `id` and the receiving end the call's task reads.
    pub fn new(id: &str) -> (CallHandle, mpsc::UnboundedReceiver<CallCommand>) {
        let (cmd, rx) = mpsc::unbounded_channel();
        (
            CallHandle {
                id: id.to_string(),
                cmd,
            },
            rx,
        )
    }

    /// Sends a command; false if the call is over.
    pub fn send(&self, c: CallCommand) -> bool {
        self.cmd.send(c).is_ok()
    }
}

/// A frame for the browser session that owns the call.
#[derive(Debug, Clone)]
pub struct ToSession {
    /// Protocol call id.
    pub call_id: String,
    /// The ready-made protocol frame.
    pub frame: String,
    /// This was the call's `hangup`: the session forgets the call.
    pub ended: bool,
    /// A new incoming call: the session keeps this handle.
    pub handle: Option<CallHandle>,
}

/// One live call.
#[derive(Clone, Debug)]
pub struct CallRow {
    /// The agent's DN.
    pub dn: String,
    /// Which way it goes.
    pub direction: Direction,
    /// The far end (URI).
    pub remote: String,
    /// Where it is.
    pub phase: Phase,
    /// When the call started.
    pub started_at: SystemTime,
    /// When it was answered.
    pub answered_at: Option<SystemTime>,
    /// The SIP dialog's Call-ID.
    pub sip_call_id: Option<String>,
    /// The relayed codec.
    pub codec: Option<String>,
    /// The interaction's `X-*` and `User-to-User` headers (REST.md v1.1).
    pub headers: BTreeMap<String, String>,
    /// Media counters.
    pub counters: Arc<MediaCounters>,
    /// Control of the call.
    pub handle: CallHandle,
}

impl CallRow {
    /// A call starting now.
    pub fn new(
        handle: CallHandle,
        dn: &str,
        direction: Direction,
        remote: &str,
        counters: Arc<MediaCounters>,
    ) -> CallRow {
        CallRow {
            dn: dn.to_string(),
            direction,
            remote: remote.to_string(),
            phase: Phase::Setup,
            started_at: SystemTime::now(),
            answered_at: None,
            sip_call_id: None,
            codec: None,
            headers: BTreeMap::new(),
            counters,
            handle,
        }
    }

    /// The REST view of this call (REST.md `/api/calls/active`).
    pub fn view(&self) -> CallView {
        CallView {
            call_id: self.handle.id.clone(),
            dn: self.dn.clone(),
            direction: self.direction.as_str(),
            remote: self.remote.clone(),
            state: self.phase.as_str(),
            started_at: rfc3339(self.started_at),
            answered_at: self.answered_at.map(rfc3339),
            sip_call_id: self.sip_call_id.clone(),
            codec: self.codec.clone(),
            genesys_call_uuid: self
                .headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("X-Genesys-CallUUID"))
                .map(|(_, v)| v.clone()),
            headers: self.headers.clone(),
            media: self.counters.snapshot().into(),
        }
    }
}

/// Live calls by protocol call id.
#[derive(Default)]
pub struct Calls {
    rows: DashMap<String, CallRow>,
    /// Incoming calls being offered (not yet answered), call id -> DN: reserved when the
    /// INVITE is routed, before its task runs, so a burst of INVITEs is counted as it comes.
    offered: DashMap<String, String>,
}

/// An incoming call's place among those ringing its DN; released when the call is answered,
/// ends, or this guard is dropped (whichever comes first).
pub struct Offered {
    dir: std::sync::Arc<super::Directory>,
    id: String,
}

impl Offered {
    /// The call id the place was reserved for.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl Drop for Offered {
    fn drop(&mut self) {
        self.dir.calls.offered.remove(&self.id);
    }
}

impl Calls {
    /// A new call.
    pub fn insert(&self, row: CallRow) {
        self.rows.insert(row.handle.id.clone(), row);
    }

    /// Changes one call's row (no-op for a call that is gone).
    pub fn update(&self, id: &str, f: impl FnOnce(&mut CallRow)) {
        if let Some(mut row) = self.rows.get_mut(id) {
            f(&mut row);
        }
    }

    /// The call is answered now (the first answer counts: a call answered on the SIP leg
    /// for the agent keeps that time when the browser joins).
    pub fn answered(&self, id: &str) {
        self.offered.remove(id);
        self.update(id, |c| {
            c.phase = Phase::Answered;
            c.answered_at.get_or_insert_with(SystemTime::now);
        });
    }

    /// The call is over.
    pub fn remove(&self, id: &str) {
        self.rows.remove(id);
        self.offered.remove(id);
    }

    /// Reserves a place for incoming call `id` among those ringing `dn`, unless `limit` are
    /// ringing it already (an INVITE flood must not take every RTP port, nor bury the agent).
    pub fn offer(
        dir: &std::sync::Arc<super::Directory>,
        dn: &str,
        id: &str,
        limit: usize,
    ) -> Option<Offered> {
        let ringing = dir.calls.offered.iter().filter(|e| e.value() == dn).count();
        if ringing >= limit {
            return None;
        }
        dir.calls.offered.insert(id.to_string(), dn.to_string());
        Some(Offered {
            dir: dir.clone(),
            id: id.to_string(),
        })
    }

    /// The REST view of one call.
    pub fn view(&self, id: &str) -> Option<CallView> {
        self.rows.get(id).map(|c| c.view())
    }

    /// The REST views of all calls, oldest first.
    pub fn views(&self) -> Vec<CallView> {
        let mut rows: Vec<(SystemTime, CallView)> =
            self.rows.iter().map(|c| (c.started_at, c.view())).collect();
        rows.sort_by_key(|(t, _)| *t);
        rows.into_iter().map(|(_, v)| v).collect()
    }

    /// The DN's oldest live call, if any.
    pub fn of_dn(&self, dn: &str) -> Option<String> {
        self.rows
            .iter()
            .filter(|c| c.dn == dn)
            .min_by_key(|c| c.started_at)
            .map(|c| c.handle.id.clone())
    }

    /// How to reach call `id`.
    pub fn handle(&self, id: &str) -> Option<CallHandle> {
        self.rows.get(id).map(|c| c.handle.clone())
    }

    /// Live calls.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether no call is live.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Calls by phase and the media counters of all of them, for the metrics.
    pub fn census(&self) -> (Vec<(Phase, i64)>, MediaSnapshot) {
        let mut phases = vec![(Phase::Setup, 0), (Phase::Ringing, 0), (Phase::Answered, 0)];
        let mut live = MediaSnapshot::default();
        for c in self.rows.iter() {
            if let Some(n) = phases.iter_mut().find(|(p, _)| *p == c.phase) {
                n.1 += 1;
            }
            let m = c.counters.snapshot();
            live.packets_in += m.packets_in;
            live.packets_out += m.packets_out;
            live.bytes_in += m.bytes_in;
            live.bytes_out += m.bytes_out;
            live.lost += m.lost;
            live.rejected += m.rejected;
        }
        (phases, live)
    }
}

/// A call as REST shows it.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallView {
    /// Protocol call id.
    pub call_id: String,
    /// The agent's DN.
    pub dn: String,
    /// `inbound` | `outbound`.
    #[schema(example = "outbound")]
    pub direction: &'static str,
    /// The far end's URI.
    pub remote: String,
    /// `setup` | `ringing` | `answered`.
    #[schema(example = "answered")]
    pub state: &'static str,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339, null until answered.
    pub answered_at: Option<String>,
    /// The SIP dialog's Call-ID.
    pub sip_call_id: Option<String>,
    /// The relayed codec.
    pub codec: Option<String>,
    /// The interaction's `X-*` and `User-to-User` headers, as the INVITE (or a later
    /// re-INVITE or NOTIFY) sent them; `{}` when none.
    pub headers: BTreeMap<String, String>,
    /// `X-Genesys-CallUUID`: the id WWE knows the interaction by.
    #[schema(example = "TTL7J9EM750GP936CFL0EOACN8000002")]
    pub genesys_call_uuid: Option<String>,
    /// Media counters.
    pub media: MediaView,
}

/// Media counters of a call (both legs together).
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MediaView {
    /// RTP packets received from either leg.
    pub packets_in: u64,
    /// RTP packets sent to either leg.
    pub packets_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Packets lost on the way in.
    pub lost: u64,
    /// Interarrival jitter, ms.
    pub jitter_ms: f64,
}

impl From<MediaSnapshot> for MediaView {
    fn from(m: MediaSnapshot) -> MediaView {
        MediaView {
            packets_in: m.packets_in,
            packets_out: m.packets_out,
            bytes_in: m.bytes_in,
            bytes_out: m.bytes_out,
            lost: m.lost,
            jitter_ms: m.jitter_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_change_through_their_owner_and_rest_sees_views() {
        let calls = Calls::default();
        let (handle, mut rx) = CallHandle::new("c1");
        calls.insert(CallRow::new(
            handle,
            "5001",
            Direction::Outbound,
            "sip:1003@127.0.0.1",
            Arc::default(),
        ));
        assert_eq!(calls.view("c1").map(|v| v.state), Some("setup"));
        calls.answered("c1");
        let v = calls.view("c1").expect("live");
        assert_eq!((v.state, v.direction), ("answered", "outbound"));
        assert!(v.answered_at.is_some());
        assert!(calls
            .handle("c1")
            .is_some_and(|h| h.send(CallCommand::ServerHangup)));
        assert!(matches!(rx.try_recv(), Ok(CallCommand::ServerHangup)));
        let (phases, _) = calls.census();
        assert!(phases.contains(&(Phase::Answered, 1)));
        calls.remove("c1");
        assert!(calls.view("c1").is_none() && calls.is_empty());
    }
}
