//! The task that owns one call: its SIP leg (an rsipstack dialog, replaced when the far end
//! transfers us), its media session, its [`CallState`], its session timer and transfers.
//! Browser requests arrive as [`CallCommand`]s; everything the browser should hear leaves as
//! ready-made protocol frames on the session's inbox. Outgoing and incoming calls differ
//! only in how they start; after that one loop serves both.

use std::sync::Arc;
use std::time::Instant;

use media::engine::MediaSession;
use media::sdp::Direction as SdpDirection;
use media::worker::MediaEvent;
use rsipstack::dialog::authenticate::Credential;
use rsipstack::dialog::dialog::{DialogState, DialogStateReceiver};
use rsipstack::dialog::invitation::{InviteAsyncResult, InviteOption};
use rsipstack::sip::prelude::{HeadersExt, ToTypedHeader};
use rsipstack::sip::{Header, Method, Response, StatusCode, Uri};
use tokio::sync::mpsc;
use tokio::task::{JoinError, JoinHandle, JoinSet};
use tracing::{debug, info, warn, Instrument};

use super::agent::Agent;
use super::reliable::{self, ReliableProvisional, Step};
use super::remote_control::{self, NotifyEvent};
use super::replacement::{spawn_notifier, Replacement, ToTransferor};
use super::session_timer::{
    self, RefreshOutcome, RefreshRequest, SessionExpires, SessionTimer, TimerAction, UasDecision,
};
use super::sip_leg::{
    asking_for, build_invite, info_dtmf, invite_status, sdp_body, send_invite, terminated_input,
    SipLeg,
};
use super::state::{Action, AnsweredBy, CallState, Direction, Event, Input, Phase};
use super::transfer::{self, TargetOutcome, Transfer, TransferState};
use super::Env;
pub use crate::directory::calls::CallCommand;
use crate::directory::calls::{self, CallHandle, CallRow, Requester, ToSession};
use crate::protocol;
use crate::sip::headers;
use crate::sip::ua::ALLOW;

/// Everything an outgoing call starts with.
pub struct Outgoing {
    /// Protocol call id.
    pub id: String,
    /// The caller's DN.
    pub dn: String,
    /// Request-URI to call.
    pub target: String,
    /// Our SDP offer for the far end.
    pub sip_offer: String,
    /// Extra `X-` headers from the browser.
    pub headers: Vec<(String, String)>,
    /// The media session.
    pub media: MediaSession,
    /// When the browser asked for the call (for the set-up latency metric).
    pub requested_at: Instant,
}

/// The outcome of an in-dialog request sent in the background.
enum Done {
    /// A session refresh (UPDATE or re-INVITE).
    Refresh(rsipstack::Result<Option<Response>>),
    /// The agent's REFER.
    Refer(rsipstack::Result<Option<Response>>),
    /// Nothing to act on (NOTIFYs, the old leg's BYE).
    Nothing,
}

/// What woke the call's task.
enum Wake {
    Command(Option<CallCommand>),
    InviteDone(Result<InviteAsyncResult, JoinError>),
    Dialog(Option<DialogState>),
    Media(Option<MediaEvent>),
    Timer,
    NewLeg(Option<DialogState>),
    NewLegDone(Result<InviteAsyncResult, JoinError>),
    Done(Done),
}

/// One call.
struct Call {
    agent: Agent,
    dn: String,
    state: CallState,
    media: MediaSession,
    media_open: bool,
    leg: SipLeg,
    credential: Option<Credential>,
    /// An outgoing call's INVITE, sent again after a 422.
    invite: Option<InviteOption>,
    /// The Session-Expires we ask for after a 422.
    asked_se: Option<u32>,
    timer: Option<SessionTimer>,
    /// The far end's Allow lists UPDATE: refreshes need no SDP.
    peer_update: bool,
    /// We put the far end on hold (refresh re-INVITEs keep `sendonly`).
    local_hold: bool,
    /// The far end put us on hold.
    remote_hold: bool,
    transfer: Option<Transfer>,
    replacement: Option<Replacement>,
    background: JoinSet<Done>,
    /// An incoming call: our SDP answer and the session-timer headers of our 2xx.
    sip_answer: Option<(String, Vec<Header>)>,
    /// An incoming call: the timer to start once answered.
    pending_timer: Option<(u32, bool)>,
    /// The set-up outcome went into the metrics.
    setup_counted: bool,
    /// We put an offer in a 2xx (an INVITE or re-INVITE without one): its answer comes in
    /// the ACK (RFC 3261 §13.2.1, §14.2).
    ack_answer: Option<AckAnswer>,
    /// Our reliable 180 (the INVITE required `100rel`) and its headers, until its PRACK.
    reliable: Option<(ReliableProvisional, Vec<Header>)>,
}

/// An answer we wait for in an ACK.
#[derive(Clone, Copy, Debug)]
struct AckAnswer {
    /// The CSeq of the INVITE it acknowledges.
    cseq: u32,
    /// It answers the INVITE that made the call (a call placed for the agent), whose
    /// `c=0.0.0.0` placeholder parks the media but is no hold by the far end.
    first: bool,
}

/// Starts an outgoing call's task.
pub fn spawn_outgoing(
    env: Arc<Env>,
    call: Outgoing,
    inbox: mpsc::UnboundedSender<ToSession>,
) -> CallHandle {
    let (handle, rx) = CallHandle::new(&call.id);
    env.directory.calls.insert(CallRow::new(
        handle.clone(),
        &call.dn,
        calls::Direction::Outbound,
        &call.target,
        call.media.counters_handle(),
    ));
    let span = tracing::info_span!("call", call = %call.id, dn = %call.dn, sip_call_id = tracing::field::Empty);
    tokio::spawn(run_outgoing(env, call, inbox, rx).instrument(span));
    handle
}

async fn run_outgoing(
    env: Arc<Env>,
    call: Outgoing,
    inbox: mpsc::UnboundedSender<ToSession>,
    cmds: mpsc::UnboundedReceiver<CallCommand>,
) {
    let agent = Agent {
        env,
        id: call.id.clone(),
        dn: call.dn.clone(),
        inbox,
        headers: Default::default(),
    };
    dial(agent, call, cmds).await;
}

/// Sends an outgoing call's INVITE and runs the call: the browser leg is the agent's
/// (already negotiated), the SIP leg starts here.
pub(super) async fn dial(agent: Agent, call: Outgoing, cmds: mpsc::UnboundedReceiver<CallCommand>) {
    let env = agent.env.clone();
    let mut media = call.media;
    let credential = Credential {
        username: call.dn.clone(),
        password: env
            .directory
            .registry
            .password(&call.dn)
            .map(|p| p.expose().to_string())
            .unwrap_or_default(),
        realm: None,
        ..Default::default()
    };
    let extra: Vec<Header> = call
        .headers
        .iter()
        .map(|(k, v)| Header::Other(k.clone(), v.clone()))
        .collect();
    let sent = build_invite(
        &env,
        &call.dn,
        &call.target,
        call.sip_offer.clone(),
        Some(credential.clone()),
        None,
        extra,
    )
    .and_then(|option| send_invite(&env, option.clone()).map(|leg| (option, leg)));
    let (option, leg) = match sent {
        Ok(x) => x,
        Err(e) => {
            warn!(error = %e, "cannot send INVITE");
            let mut state = CallState::new(Direction::Outbound);
            let actions = state.handle(Input::SipFailed(500));
            for a in &actions {
                match a {
                    Action::Browser(e) => agent.on_call_event(e),
                    Action::StopMedia => media.stop(),
                    _ => {}
                }
            }
            env.directory.calls.remove(&call.id);
            return;
        }
    };
    crate::metrics::get()
        .invite_latency
        .observe(call.requested_at.elapsed().as_secs_f64());
    info!(target_uri = %call.target, "INVITE sent");
    let mut c = Call::new(agent, call.dn, Direction::Outbound, media, leg);
    c.credential = Some(credential);
    c.invite = Some(option);
    c.record_sip_call_id();
    c.run(cmds).await;
}

/// Handles an incoming INVITE for `dn`, whose session listens on `inbox`.
pub fn spawn_incoming(
    env: Arc<Env>,
    tx: rsipstack::transaction::transaction::Transaction,
    dn: String,
    inbox: mpsc::UnboundedSender<ToSession>,
    offered: calls::Offered,
) {
    let id = offered.id().to_string();
    let span =
        tracing::info_span!("call", call = %id, dn = %dn, sip_call_id = tracing::field::Empty);
    tokio::spawn(
        async move {
            // Held until the call task ends; answering releases the place earlier.
            let _offered = offered;
            run_incoming(env, tx, id, dn, inbox).await
        }
        .instrument(span),
    );
}

async fn run_incoming(
    env: Arc<Env>,
    mut tx: rsipstack::transaction::transaction::Transaction,
    id: String,
    dn: String,
    inbox: mpsc::UnboundedSender<ToSession>,
) {
    let interaction = remote_control::interaction_headers(&tx.original.headers.0);
    let auto_answer = remote_control::auto_answer(&tx.original.headers.0);
    let agent = Agent {
        env: env.clone(),
        id: id.clone(),
        dn: dn.clone(),
        inbox,
        headers: interaction.clone(),
    };
    // RFC 4028 §9: an interval below our Min-SE is refused before anything else.
    let se = headers::value(tx.original.headers.iter(), "Session-Expires")
        .and_then(SessionExpires::parse);
    let supported = headers::lists(tx.original.headers.iter(), "Supported", "timer");
    let timer = session_timer::on_invite(env.cfg.session_timer, se, supported);
    if let UasDecision::TooSmall { min_se } = timer {
        info!(
            min_se,
            "incoming INVITE's Session-Expires is too small: 422"
        );
        let h = vec![headers::other("Min-SE", min_se.to_string())];
        let _ = tx
            .reply_with(StatusCode::SessionIntervalTooSmall, h, None)
            .await;
        return;
    }
    let peer_update = headers::lists(tx.original.headers.iter(), "Allow", "UPDATE");
    // RFC 3262: a caller that requires 100rel gets a reliable 180, retransmitted until PRACK.
    let reliable = headers::lists(tx.original.headers.iter(), "Require", "100rel");

    let contact = Uri::try_from(env.ua.contact_uri(&dn).as_str()).ok();
    let (state_tx, events) = env.dialogs.new_dialog_state_channel();
    let dialog = match env
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
    let offer = sdp_body(&tx.original.body);
    let invite_cseq = tx.original.cseq_header().ok().and_then(|c| c.seq().ok());
    let from = tx.original.from_header().ok().and_then(|f| f.typed().ok());
    let from_uri = from.as_ref().map(|f| f.uri.to_string()).unwrap_or_default();
    let display = from.as_ref().and_then(|f| f.display_name.clone());
    let to_uri = tx.original.uri.to_string();

    // An INVITE without SDP (Genesys' 3pcc MakeCall) is a call placed on the agent's behalf:
    // our offer goes in the 2xx and the answer comes in the ACK.
    let media = match &offer {
        Some(offer) => env
            .media
            .inbound(offer)
            .map(|i| (i.browser_offer, i.sip_answer, i.session)),
        None => env
            .media
            .offerless()
            .map(|o| (o.browser_offer, o.sip_offer, o.session)),
    };
    let (browser_offer, sip_answer, session) = match media {
        Ok(m) => m,
        Err(e) => {
            info!(error = %e, "incoming offer unusable");
            let mut d = dialog.clone();
            let _ = d.reject(Some(StatusCode::NotAcceptableHere), None);
            let _ = d.handle(&mut tx).await;
            env.dialogs.remove_dialog(&dialog.id());
            return;
        }
    };
    let (handle, cmds) = CallHandle::new(&id);
    let mut row = CallRow::new(
        handle.clone(),
        &dn,
        calls::Direction::Inbound,
        &from_uri,
        session.counters_handle(),
    );
    row.sip_call_id = Some(sip_call_id);
    row.phase = calls::Phase::Ringing;
    row.headers = interaction.clone();
    env.directory.calls.insert(row);

    // The INVITE server transaction runs beside us: it takes our responses and the ACK.
    let mut tx_dialog = dialog.clone();
    let server = tokio::spawn(async move {
        let _ = tx_dialog.handle(&mut tx).await;
    });
    let mut ringing_headers = vec![allow_events()];
    if reliable {
        ringing_headers.push(headers::other("Require", "100rel"));
        ringing_headers.push(headers::other("RSeq", reliable::RSEQ.to_string()));
    }
    let _ = dialog.ringing(Some(ringing_headers.clone()), None);
    agent.offer(
        protocol::Event::IncomingCall {
            call_id: id.clone(),
            from: from_uri.clone(),
            to: to_uri,
            sdp: browser_offer,
            display_name: display,
            direction: if offer.is_some() {
                "inbound"
            } else {
                "outbound"
            },
            auto_answer,
            headers: interaction,
        },
        handle,
    );
    info!(from = %from_uri, offerless = offer.is_none(), ?auto_answer, "incoming call offered to the browser");

    let leg = SipLeg {
        dialog: dialog.clone(),
        events: Some(events),
        invite: None,
    };
    let mut c = Call::new(agent, dn, Direction::Inbound, session, leg);
    c.peer_update = peer_update;
    if offer.is_none() {
        c.ack_answer = invite_cseq.map(|cseq| AckAnswer { cseq, first: true });
    }
    if reliable {
        c.reliable = Some((ReliableProvisional::sent(Instant::now()), ringing_headers));
    }
    let mut answer_headers = vec![
        Header::ContentType("application/sdp".into()),
        Header::Allow(ALLOW.into()),
        Header::Supported("timer".into()),
        allow_events(),
    ];
    if let UasDecision::Timer {
        answer,
        require,
        we_refresh,
    } = timer
    {
        for (k, v) in session_timer::answer_headers(answer, require) {
            answer_headers.push(headers::other(k, v));
        }
        c.pending_timer = Some((answer.delta, we_refresh));
    }
    c.sip_answer = Some((sip_answer, answer_headers));
    c.credential = env.directory.registry.password(&c.dn).map(|p| Credential {
        username: c.dn.clone(),
        password: p.expose().to_string(),
        realm: None,
        ..Default::default()
    });
    c.run(cmds).await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), server).await;
}

/// `Allow-Events` of our 18x and 2xx: the remote control we accept by NOTIFY in the
/// INVITE's dialog (Genesys SIP Server's `sip-cti-control`).
fn allow_events() -> Header {
    headers::other("Allow-Events", "talk, hold")
}

async fn recv_opt(rx: &mut Option<DialogStateReceiver>) -> Option<DialogState> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn join_opt(
    j: &mut Option<JoinHandle<InviteAsyncResult>>,
) -> Result<InviteAsyncResult, JoinError> {
    match j {
        Some(j) => j.await,
        None => std::future::pending().await,
    }
}

/// What the transfer target's leg reports, if there is one.
async fn replacement_wake(r: &mut Option<Replacement>) -> Wake {
    let Some(r) = r else {
        return std::future::pending().await;
    };
    tokio::select! {
        ds = recv_opt(&mut r.leg.events), if r.leg.events.is_some() => Wake::NewLeg(ds),
        j = join_opt(&mut r.leg.invite), if r.leg.invite.is_some() => Wake::NewLegDone(j),
        else => std::future::pending().await,
    }
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// How long a hold or resume re-INVITE may take before the agent is told it failed.
const REINVITE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(8);

impl Call {
    fn new(
        agent: Agent,
        dn: String,
        direction: Direction,
        media: MediaSession,
        leg: SipLeg,
    ) -> Self {
        Call {
            agent,
            dn,
            state: CallState::new(direction),
            media,
            media_open: true,
            leg,
            credential: None,
            invite: None,
            asked_se: None,
            timer: None,
            peer_update: false,
            local_hold: false,
            remote_hold: false,
            transfer: None,
            replacement: None,
            background: JoinSet::new(),
            sip_answer: None,
            pending_timer: None,
            setup_counted: false,
            ack_answer: None,
            reliable: None,
        }
    }

    /// The set-up outcome metric, once per call: 200 when answered, else the final status
    /// of the hangup before the answer (0 when none was exchanged).
    fn count_setup(&mut self, actions: &[Action]) {
        if self.setup_counted {
            return;
        }
        let status = actions.iter().find_map(|a| match a {
            Action::Browser(Event::Answered(_) | Event::AnswerRequested(_)) => Some(200),
            Action::Browser(Event::Hangup { sip_status, .. }) => Some(sip_status.unwrap_or(0)),
            _ => None,
        });
        if let Some(status) = status {
            self.setup_counted = true;
            crate::metrics::get().call_setup(self.state.direction().as_str(), status);
        }
    }

    fn env(&self) -> &Arc<Env> {
        &self.agent.env
    }

    fn record_sip_call_id(&self) {
        let sip_call_id = self.leg.dialog.id().call_id.clone();
        tracing::Span::current().record("sip_call_id", sip_call_id.as_str());
        self.env()
            .directory
            .calls
            .update(&self.agent.id, |c| c.sip_call_id = Some(sip_call_id));
    }

    fn next_deadline(&self) -> Option<Instant> {
        let timer = self.timer.as_ref().map(SessionTimer::next_wakeup);
        let transfer = self.transfer.as_ref().map(Transfer::deadline);
        let reliable = self.reliable.as_ref().map(|(r, _)| r.next_wakeup());
        [timer, transfer, reliable].into_iter().flatten().min()
    }

    async fn run(mut self, mut cmds: mpsc::UnboundedReceiver<CallCommand>) {
        loop {
            let deadline = self.next_deadline();
            let wake = tokio::select! {
                cmd = cmds.recv() => Wake::Command(cmd),
                r = join_opt(&mut self.leg.invite), if self.leg.invite.is_some() => Wake::InviteDone(r),
                ds = recv_opt(&mut self.leg.events), if self.leg.events.is_some() => Wake::Dialog(ds),
                ev = self.media.events.recv(), if self.media_open => Wake::Media(ev),
                _ = sleep_opt(deadline), if deadline.is_some() => Wake::Timer,
                w = replacement_wake(&mut self.replacement) => w,
                Some(done) = self.background.join_next(), if !self.background.is_empty() => match done {
                    Ok(done) => Wake::Done(done),
                    Err(_) => Wake::Done(Done::Nothing),
                },
            };
            let input = match wake {
                Wake::Command(cmd) => self.on_command(cmd).await,
                Wake::InviteDone(r) => {
                    self.leg.invite = None;
                    self.on_invite_done(r)
                }
                Wake::Dialog(Some(ds)) => self.on_dialog_state(ds).await,
                Wake::Dialog(None) => {
                    self.leg.events = None;
                    None
                }
                Wake::Media(Some(ev)) => media_input(&self.agent, ev),
                Wake::Media(None) => {
                    self.media_open = false;
                    None
                }
                Wake::Timer => self.on_timer(),
                Wake::NewLeg(ds) => self.on_new_leg_state(ds),
                Wake::NewLegDone(r) => self.on_new_leg_done(r),
                Wake::Done(done) => self.on_done(done),
            };
            if let Some(input) = input {
                let actions = self.state.handle(input);
                self.count_setup(&actions);
                self.run_actions(&actions).await;
            }
            if self.state.is_ended() {
                break;
            }
        }
        self.agent.refuse_pending(&mut cmds);
        crate::metrics::get().call_media(&self.media.counters_handle().snapshot());
        let env = self.env().clone();
        env.directory.calls.remove(&self.agent.id);
        if let Some(r) = self.replacement.take() {
            let _ = r.leg.dialog.hangup().await;
            env.dialogs.remove_dialog(&r.leg.dialog.id());
        }
        env.dialogs.remove_dialog(&self.leg.dialog.id());
    }

    async fn on_command(&mut self, cmd: Option<CallCommand>) -> Option<Input> {
        let inbound = self.state.direction() == Direction::Inbound;
        match cmd {
            Some(CallCommand::Hangup) | None => Some(Input::BrowserHangup),
            Some(CallCommand::ServerHangup) => Some(Input::ServerHangup),
            Some(CallCommand::Reject(s)) if inbound => Some(Input::BrowserReject(s)),
            Some(CallCommand::Reject(_)) => None,
            Some(CallCommand::Answer { request_id, .. }) if !inbound => {
                self.agent.reply(
                    &request_id,
                    Err("an outgoing call cannot be answered".into()),
                );
                None
            }
            Some(CallCommand::Answer { sdp, request_id }) => {
                match self.media.set_browser_answer(&sdp) {
                    // The `result` goes first, then the `answered` event (PROTOCOL.md).
                    Ok(()) => {
                        self.agent.reply(&request_id, Ok(()));
                        self.codec_changed();
                        Some(Input::BrowserAnswer)
                    }
                    Err(e) => {
                        self.agent.reply(&request_id, Err(e.to_string()));
                        None
                    }
                }
            }
            Some(CallCommand::Renegotiate { sdp, request_id }) => {
                let result = self.media.renegotiate(&sdp);
                if result.is_ok() {
                    self.codec_changed();
                }
                self.agent.renegotiated(&request_id, result);
                None
            }
            Some(CallCommand::AnswerFor(tx)) => {
                let ringing =
                    inbound && matches!(self.state.phase(), Phase::Setup | Phase::Ringing);
                let _ = tx.send(if ringing {
                    Ok(())
                } else {
                    Err("the call is not ringing here".into())
                });
                ringing.then_some(Input::AnswerFor(AnsweredBy::Api))
            }
            Some(CallCommand::ReplacesTarget(tx)) => {
                let _ = tx.send(self.replaces_target());
                None
            }
            Some(CallCommand::Hold { on, from }) => {
                let r = self.hold(on).await;
                self.agent.held(from, r, on);
                None
            }
            Some(CallCommand::Dtmf {
                digits,
                duration,
                info,
                from,
            }) => {
                let r = self.send_dtmf(&digits, duration, info).await;
                self.agent.answer_to(from, r);
                None
            }
            Some(CallCommand::Transfer { target, from }) => {
                self.start_transfer(target, from);
                None
            }
        }
    }

    /// The agent's hold (`on`) or resume: a re-INVITE offering `a=sendonly` / `a=sendrecv`
    /// (RFC 3264 §8.4), then the far end's answer applied.
    async fn hold(&mut self, on: bool) -> Result<(), String> {
        if self.state.phase() != Phase::Answered {
            return Err("the call is not answered".into());
        }
        if self.replacement.is_some() {
            return Err("the far end is transferring the call".into());
        }
        let direction = if on {
            SdpDirection::SendOnly
        } else {
            SdpDirection::SendRecv
        };
        let offer = self
            .media
            .sip_reoffer(direction)
            .map_err(|e| e.to_string())?;
        let headers = vec![Header::ContentType("application/sdp".into())];
        let sent =
            self.leg
                .dialog
                .reinvite_with_glare_retry(Some(headers), Some(offer.into_bytes()), 2);
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
            match self.media.set_sip_remote(&answer) {
                Ok(_) => self.codec_changed(),
                Err(e) => warn!(error = %e, "re-INVITE answer unusable"),
            }
        }
        // A re-INVITE is a session refresh too (RFC 4028 §7.4).
        if let Some(t) = self.timer.as_mut() {
            t.refreshed(Instant::now(), None);
        }
        self.local_hold = on;
        self.media.set_hold(on).map_err(|e| e.to_string())
    }

    /// The agent's key presses toward the far end: RFC 4733 events in the media, or one SIP
    /// INFO (`application/dtmf-relay`) per digit.
    async fn send_dtmf(&self, digits: &str, duration: u32, info: bool) -> Result<(), String> {
        if self.state.phase() != Phase::Answered {
            return Err("the call is not answered".into());
        }
        if !info {
            return self
                .media
                .send_dtmf(digits, duration)
                .map_err(|e| e.to_string());
        }
        for digit in digits.chars() {
            let body = format!("Signal={digit}\r\nDuration={duration}\r\n");
            let headers = vec![Header::ContentType("application/dtmf-relay".into())];
            let sent = self.leg.dialog.info(Some(headers), Some(body.into_bytes()));
            match tokio::time::timeout(REINVITE_DEADLINE, sent).await {
                Ok(Ok(Some(resp))) if resp.status_code.code() < 300 => {}
                Ok(Ok(Some(resp))) => {
                    return Err(format!("INFO answered {}", resp.status_code.code()))
                }
                Ok(Ok(None)) => return Err("the dialog is not confirmed".into()),
                Ok(Err(e)) => return Err(format!("INFO failed: {e}")),
                Err(_) => return Err("no answer to INFO".into()),
            }
        }
        Ok(())
    }

    /// This call as an attended transfer's target: its far end with our dialog as
    /// `Replaces`; `None` unless answered.
    fn replaces_target(&self) -> Option<String> {
        if self.state.phase() != Phase::Answered {
            return None;
        }
        let id = self.leg.dialog.id();
        let remote = self.leg.dialog.snapshot().remote_uri.to_string();
        Some(transfer::replaces_target(
            &remote,
            &id.call_id,
            &id.local_tag,
            &id.remote_tag,
        ))
    }

    /// The agent's blind transfer: `result`, `transferState trying`, then a REFER whose
    /// outcome and NOTIFYs drive the rest.
    fn start_transfer(&mut self, target: String, from: Requester) {
        if self.state.phase() != Phase::Answered {
            self.agent
                .answer_to(from, Err("the call is not answered".into()));
            return;
        }
        if self.transfer.is_some() || self.replacement.is_some() {
            self.agent
                .answer_to(from, Err("a transfer is already in progress".into()));
            return;
        }
        self.agent.answer_to(from, Ok(()));
        self.agent.transfer_state(TransferState::Trying, None, None);
        info!(to = %target, "REFER");
        self.transfer = Some(Transfer::start(Instant::now()));
        let dialog = self.leg.dialog.clone();
        let referred_by = format!("<{}>", self.env().ua.aor(&self.dn));
        self.background.spawn(async move {
            let headers = vec![Header::ReferredBy(referred_by.into())];
            let refer_to = format!("<{target}>");
            Done::Refer(dialog.refer(refer_to, Some(headers), None).await)
        });
    }

    fn on_invite_done(&mut self, r: Result<InviteAsyncResult, JoinError>) -> Option<Input> {
        if let Ok(Ok((_, Some(resp)))) = &r {
            let retry = (resp.status_code.code() == 422)
                .then(|| {
                    session_timer::retry_after_422(
                        self.env().cfg.session_timer,
                        self.asked_se,
                        self.state.phase() == Phase::Answered,
                        headers::value(resp.headers.iter(), "Min-SE"),
                    )
                })
                .flatten();
            if let Some(leg) = retry.and_then(|asked| self.invite_again(asked)) {
                let old = std::mem::replace(&mut self.leg, leg);
                self.env().dialogs.remove_dialog(&old.dialog.id());
                self.record_sip_call_id();
                return None;
            }
        }
        invite_status(r).map(Input::SipFailed)
    }

    /// RFC 4028 §7.4: after 422, the same INVITE again asking for `asked` seconds.
    fn invite_again(&mut self, asked: u32) -> Option<SipLeg> {
        let option = asking_for(self.invite.as_ref()?, asked);
        self.asked_se = Some(asked);
        self.invite = Some(option.clone());
        info!(
            min_se = asked,
            "422: INVITE again with a longer session interval"
        );
        match send_invite(self.env(), option) {
            Ok(leg) => Some(leg),
            Err(e) => {
                warn!(error = %e, "cannot send INVITE after 422");
                None
            }
        }
    }

    /// Turns a dialog state change of the current leg into an input for the call.
    async fn on_dialog_state(&mut self, ds: DialogState) -> Option<Input> {
        let answered = self.state.phase() == Phase::Answered;
        match ds {
            DialogState::Early(_, resp) => {
                let has_sdp = match sdp_body(&resp.body) {
                    Some(s) => self.media.set_sip_remote(&s).is_ok(),
                    None => false,
                };
                Some(Input::SipProvisional {
                    status: resp.status_code.code(),
                    sdp: has_sdp,
                })
            }
            DialogState::Confirmed(_, resp)
                if !answered && self.state.direction() == Direction::Outbound =>
            {
                if let Some(sdp) = sdp_body(&resp.body) {
                    if let Err(e) = self.media.set_sip_remote(&sdp) {
                        warn!(error = %e, "far end's answer SDP unusable");
                    }
                }
                self.answered_by(&resp);
                Some(Input::SipAnswered)
            }
            DialogState::Updated(_, req, handle) => {
                self.on_far_end_offer(req, handle).await;
                None
            }
            DialogState::Terminated(_, reason) => {
                if let Some(r) = self.replacement.as_mut() {
                    // The transferor hangs up while we call the target: expected (RFC 5589).
                    info!("transferor ended its dialog");
                    r.old_gone = true;
                    return None;
                }
                let input = terminated_input(reason);
                // A 422 is retried by `on_invite_done`, which sees the same response.
                if input == Input::SipFailed(422) && self.invite.is_some() && !answered {
                    return None;
                }
                Some(input)
            }
            DialogState::Info(_, req, handle) => {
                let is_dtmf = headers::value(req.headers.iter(), "Content-Type")
                    .is_some_and(|ct| ct.to_ascii_lowercase().contains("dtmf-relay"));
                match info_dtmf(&req.body).filter(|_| is_dtmf) {
                    Some((digit, duration)) => {
                        self.agent.dtmf(digit, duration, "info");
                        let _ = handle.reply(StatusCode::OK).await;
                    }
                    None => {
                        let _ = handle.reply(StatusCode::UnsupportedMediaType).await;
                    }
                }
                None
            }
            DialogState::Confirmed(..) => self.on_ack(),
            DialogState::Notify(_, req, handle) => self.on_notify(req, handle).await,
            DialogState::Refer(_, req, handle) => {
                self.on_refer(&req, handle).await;
                None
            }
            DialogState::Options(_, _, handle)
            | DialogState::Message(_, _, handle)
            | DialogState::Publish(_, _, handle) => {
                let _ = handle.reply(StatusCode::OK).await;
                None
            }
            _ => None,
        }
    }

    /// The 2xx of our INVITE (first call or transfer target): session timer and UPDATE
    /// support as the far end answered, REST's codec.
    fn answered_by(&mut self, resp: &Response) {
        let se =
            headers::value(resp.headers.iter(), "Session-Expires").and_then(SessionExpires::parse);
        self.timer = session_timer::on_answer(se)
            .map(|(delta, we_refresh)| SessionTimer::new(delta, we_refresh, Instant::now()));
        if let Some(t) = &self.timer {
            info!(
                interval_s = t.interval().as_secs(),
                we_refresh = t.we_refresh(),
                "session timer"
            );
        }
        self.peer_update = headers::lists(resp.headers.iter(), "Allow", "UPDATE");
        self.codec_changed();
    }

    /// A re-INVITE or UPDATE from the far end: an RFC 3264 answer (`held`/`resumed` for the
    /// browser) and, as a session refresh, the RFC 4028 headers of our 2xx.
    async fn on_far_end_offer(
        &mut self,
        req: rsipstack::sip::Request,
        handle: rsipstack::dialog::dialog::TransactionHandle,
    ) {
        let mut headers = vec![Header::Supported("timer".into())];
        let se =
            headers::value(req.headers.iter(), "Session-Expires").and_then(SessionExpires::parse);
        let now = Instant::now();
        match session_timer::on_refresh_request(self.env().cfg.session_timer, se) {
            RefreshRequest::TooSmall { min_se } => {
                let h = vec![headers::other("Min-SE", min_se.to_string())];
                let _ = handle
                    .respond(StatusCode::SessionIntervalTooSmall, Some(h), None)
                    .await;
                return;
            }
            RefreshRequest::Renew { answer, we_refresh } => {
                // The peer refreshing supports timers: `Require: timer` in our 2xx as ever.
                for (k, v) in session_timer::answer_headers(answer, true) {
                    headers.push(headers::other(k, v));
                }
                let renewed = (answer.delta, we_refresh);
                match self.timer.as_mut() {
                    Some(t) => t.refreshed(now, Some(renewed)),
                    None => self.timer = Some(SessionTimer::new(renewed.0, renewed.1, now)),
                }
            }
            RefreshRequest::KeepCurrent => {
                if let Some(t) = self.timer.as_mut() {
                    t.refreshed(now, None);
                }
            }
        }

        if req.method == Method::Invite {
            self.agent
                .headers_changed(remote_control::interaction_headers(&req.headers.0));
            headers.push(allow_events());
        }
        let Some(offer) = sdp_body(&req.body) else {
            // UPDATE without SDP (a pure refresh) or an offerless re-INVITE, which needs a
            // full offer in the 2xx; its answer comes in the ACK (Genesys retrieves a held
            // call and reconnects the agent to a new party this way).
            let body = if req.method == Method::Invite {
                let dir = if self.local_hold {
                    SdpDirection::SendOnly
                } else {
                    SdpDirection::SendRecv
                };
                self.media.sip_offer_all(dir).ok()
            } else {
                None
            };
            if body.is_some() {
                headers.push(Header::ContentType("application/sdp".into()));
                self.ack_answer = req
                    .cseq_header()
                    .ok()
                    .and_then(|c| c.seq().ok())
                    .map(|cseq| AckAnswer { cseq, first: false });
            }
            let _ = handle
                .respond(StatusCode::OK, Some(headers), body.map(String::into_bytes))
                .await;
            return;
        };
        match self.media.answer_sip_offer(&offer) {
            Ok((answer, remote)) => {
                headers.push(Header::ContentType("application/sdp".into()));
                let _ = handle
                    .respond(StatusCode::OK, Some(headers), Some(answer.into_bytes()))
                    .await;
                self.codec_changed();
                self.remote_hold_is(remote.held);
            }
            Err(e) => {
                warn!(error = %e, "re-INVITE SDP unusable");
                let _ = handle.reply(StatusCode::NotAcceptableHere).await;
            }
        }
    }

    /// The far end holds the call (or takes it back): `held`/`resumed` by `remote`.
    fn remote_hold_is(&mut self, held: bool) {
        if held != self.remote_hold {
            self.remote_hold = held;
            self.agent.hold_changed(held, "remote");
        }
    }

    /// REST's `codec` follows what the legs carry.
    fn codec_changed(&self) {
        let codec = self.media.codec().map(str::to_string);
        self.env()
            .directory
            .calls
            .update(&self.agent.id, |c| c.codec = codec);
    }

    /// An ACK confirmed the dialog: if we put an offer in the 2xx it acknowledges, the
    /// answer is in it, and a missing or unusable one ends the call (RFC 3264 §5: the offer
    /// stands only with an answer). A `c=0.0.0.0` placeholder answer (Genesys when the
    /// destination of a 3pcc call is slow) parks the media until the next offer.
    fn on_ack(&mut self) -> Option<Input> {
        let expected = self.ack_answer?;
        let ack = self.leg.dialog.last_remote_ack()?;
        if ack.cseq_header().ok().and_then(|c| c.seq().ok()) != Some(expected.cseq) {
            return None;
        }
        self.ack_answer = None;
        self.agent
            .headers_changed(remote_control::interaction_headers(&ack.headers.0));
        let Some(answer) = sdp_body(&ack.body) else {
            warn!("the ACK has no answer to the offer in our 2xx");
            return Some(Input::SipAnswerUnusable);
        };
        match self.media.set_sip_remote(&answer) {
            Ok(remote) => {
                self.codec_changed();
                if !expected.first {
                    self.remote_hold_is(remote.held);
                }
                info!(held = remote.held, "answer from the ACK applied");
                None
            }
            Err(e) => {
                warn!(error = %e, "the ACK's answer cannot be used");
                Some(Input::SipAnswerUnusable)
            }
        }
    }

    /// A NOTIFY in the call's dialog: remote control (`talk` answers a ringing call or
    /// takes a held one back, `hold` holds it), our REFER's progress, or 489 for any other
    /// event package (RFC 6665 §8.2.1).
    async fn on_notify(
        &mut self,
        req: rsipstack::sip::Request,
        handle: rsipstack::dialog::dialog::TransactionHandle,
    ) -> Option<Input> {
        let event = remote_control::notify_event(&req.headers.0);
        if let NotifyEvent::Other(package) = &event {
            info!(event = %package, "NOTIFY for an event we do not support: 489");
            let _ = handle
                .respond(StatusCode::BadEvent, Some(vec![allow_events()]), None)
                .await;
            return None;
        }
        // 200 at once: SIP Server retransmits an unanswered NOTIFY and then gives up. What
        // the NOTIFY asks (an answer, a re-INVITE) follows once the 200 has left.
        let _ = handle.reply(StatusCode::OK).await;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), handle.closed()).await;
        if event != NotifyEvent::Refer {
            self.agent
                .headers_changed(remote_control::interaction_headers(&req.headers.0));
        }
        let phase = self.state.phase();
        match event {
            NotifyEvent::Refer => self.on_refer_notify(&req),
            NotifyEvent::Talk if phase != Phase::Answered => {
                info!("NOTIFY talk: answering for the agent");
                (self.state.direction() == Direction::Inbound)
                    .then_some(Input::AnswerFor(AnsweredBy::Remote))
            }
            NotifyEvent::Talk => {
                if self.local_hold {
                    info!("NOTIFY talk on a held call: taking it back");
                    self.remote_control_hold(false).await;
                }
                None
            }
            NotifyEvent::Hold => {
                if phase == Phase::Answered && !self.local_hold {
                    info!("NOTIFY hold: holding the call");
                    self.remote_control_hold(true).await;
                }
                None
            }
            NotifyEvent::Other(_) => None,
        }
    }

    /// Hold or take back because the SIP side asked by NOTIFY: the same re-INVITE as the
    /// agent's own, told to the browser as `by: remote`.
    async fn remote_control_hold(&mut self, on: bool) {
        match self.hold(on).await {
            Ok(()) => self.agent.hold_changed(on, "remote"),
            Err(e) => warn!(error = %e, held = on, "remote hold change failed"),
        }
    }

    /// A NOTIFY of the agent's transfer (RFC 3515 sipfrag).
    fn on_refer_notify(&mut self, req: &rsipstack::sip::Request) -> Option<Input> {
        let t = self.transfer.as_mut()?;
        let terminated = headers::value(req.headers.iter(), "Subscription-State")
            .is_some_and(|s| s.trim().to_ascii_lowercase().starts_with("terminated"));
        let step = t.on_notify(transfer::sipfrag_status(&req.body), terminated)?;
        self.agent.transfer_state(step.state, step.sip_status, None);
        if step.done {
            self.transfer = None;
        }
        (step.state == TransferState::Succeeded).then_some(Input::Transferred)
    }

    /// A REFER from the far end: call its target from the agent's DN and move the agent's
    /// media there when it answers (blind transfer, RFC 5589 §6), or 403 by configuration.
    async fn on_refer(
        &mut self,
        req: &rsipstack::sip::Request,
        handle: rsipstack::dialog::dialog::TransactionHandle,
    ) {
        let situation = transfer::ReferContext {
            enabled: self.env().cfg.accept_refer,
            answered: self.state.phase() == Phase::Answered,
            busy: self.transfer.is_some() || self.replacement.is_some(),
        };
        let refer_to = headers::value(req.headers.iter(), "Refer-To");
        let target = match transfer::accept_refer(situation, refer_to, |u| Uri::try_from(u).is_ok())
        {
            Ok(t) => t,
            Err(refused) => {
                info!(status = refused.status, why = %refused.why, "REFER refused");
                let _ = handle.reply(StatusCode::from(refused.status)).await;
                return;
            }
        };
        let offer = match self.media.sip_reoffer(SdpDirection::SendRecv) {
            Ok(o) => o,
            Err(e) => {
                warn!(error = %e, "no offer for the transfer target");
                let _ = handle.reply(StatusCode::ServerInternalError).await;
                return;
            }
        };
        let mut extra = Vec::new();
        if let Some(by) = headers::value(req.headers.iter(), "Referred-By") {
            extra.push(Header::ReferredBy(by.to_string().into()));
        }
        let leg = build_invite(
            self.env(),
            &self.dn,
            &target,
            offer,
            self.credential.clone(),
            None,
            extra,
        )
        .and_then(|o| send_invite(self.env(), o));
        let leg = match leg {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %e, "cannot call the transfer target");
                let _ = handle.reply(StatusCode::ServerInternalError).await;
                return;
            }
        };
        let _ = handle.reply(StatusCode::Accepted).await;
        info!(to = %target, "REFER accepted: calling the transfer target");
        let notifier = spawn_notifier(self.leg.dialog.clone(), self.env().clone());
        let _ = notifier.send(ToTransferor::Progress(100));
        self.agent
            .transfer_state(TransferState::Trying, None, Some(&target));
        self.replacement = Some(Replacement {
            leg,
            target,
            old_gone: false,
            notifier,
        });
    }

    /// The transfer target's leg: when it answers, it becomes the call's SIP leg.
    fn on_new_leg_state(&mut self, ds: Option<DialogState>) -> Option<Input> {
        let r = self.replacement.as_mut()?;
        let Some(ds) = ds else {
            r.leg.events = None;
            return None;
        };
        match ds {
            DialogState::Confirmed(_, resp) => {
                // The transferor may go on sending until its BYE: as a new far end, not a
                // re-INVITE's move, the target's media drops the transferor's at once, so
                // neither its packets nor its address can win the latch back.
                if let Some(sdp) = sdp_body(&resp.body) {
                    if let Err(e) = self.media.replace_sip_remote(&sdp) {
                        warn!(error = %e, "transfer target's answer SDP unusable");
                    }
                }
                let r = self.replacement.take()?;
                let old = std::mem::replace(&mut self.leg, r.leg);
                match transfer::target_outcome(None, r.old_gone) {
                    // The old leg hears 200, then (if the transferor does not) our BYE.
                    TargetOutcome::Replace {
                        notify_transferor: true,
                    } => {
                        let _ = r.notifier.send(ToTransferor::Succeeded);
                    }
                    _ => self.env().dialogs.remove_dialog(&old.dialog.id()),
                }
                self.answered_by(&resp);
                self.record_sip_call_id();
                let remote = r.target.clone();
                self.env()
                    .directory
                    .calls
                    .update(&self.agent.id, |c| c.remote = remote);
                self.agent
                    .transfer_state(TransferState::Succeeded, Some(200), Some(&r.target));
                if self.remote_hold {
                    self.remote_hold = false;
                    self.agent.hold_changed(false, "remote");
                }
                None
            }
            DialogState::Updated(_, _, handle)
            | DialogState::Info(_, _, handle)
            | DialogState::Notify(_, _, handle)
            | DialogState::Options(_, _, handle) => {
                tokio::spawn(async move {
                    let _ = handle.reply(StatusCode::OK).await;
                });
                None
            }
            _ => None,
        }
    }

    /// The transfer target's INVITE ended: a failure keeps the old leg (if it is still there).
    fn on_new_leg_done(&mut self, r: Result<InviteAsyncResult, JoinError>) -> Option<Input> {
        let status = invite_status(r);
        let rep = self.replacement.as_mut()?;
        rep.leg.invite = None;
        let status = status?;
        let rep = self.replacement.take()?;
        self.env().dialogs.remove_dialog(&rep.leg.dialog.id());
        self.agent
            .transfer_state(TransferState::Failed, Some(status), Some(&rep.target));
        match transfer::target_outcome(Some(status), rep.old_gone) {
            TargetOutcome::End => Some(Input::TransferFailed(status)),
            _ => {
                let _ = rep.notifier.send(ToTransferor::Failed(status));
                None
            }
        }
    }

    fn on_timer(&mut self) -> Option<Input> {
        let now = Instant::now();
        if let Some((r, headers)) = self.reliable.as_mut() {
            let ringing = matches!(self.state.phase(), Phase::Setup | Phase::Ringing);
            let pracked = self.leg.dialog.pracked_rseq() >= reliable::RSEQ;
            match r.poll(now, pracked || !ringing) {
                Step::Wait => {}
                Step::Resend => {
                    debug!("reliable 180 again (no PRACK yet)");
                    let _ = self.leg.dialog.ringing(Some(headers.clone()), None);
                }
                Step::Done => self.reliable = None,
                Step::GiveUp => {
                    self.reliable = None;
                    warn!("no PRACK for our reliable 180 within 64*T1: 500");
                    return Some(Input::NoPrack);
                }
            }
        }
        if let Some(step) = self.transfer.as_ref().and_then(|t| t.expired(now)) {
            self.agent.transfer_state(step.state, step.sip_status, None);
            self.transfer = None;
        }
        match self.timer.as_mut()?.poll(now)? {
            TimerAction::Expire => {
                info!("session timer expired");
                Some(Input::SessionExpired)
            }
            TimerAction::Refresh => {
                self.send_refresh();
                None
            }
        }
    }

    /// RFC 4028 §7.4: an UPDATE without SDP if the far end allows it, else a re-INVITE with
    /// our current SDP.
    fn send_refresh(&mut self) {
        let Some(t) = &self.timer else { return };
        let mut headers = vec![Header::Supported("timer".into())];
        for (k, v) in session_timer::refresh_headers(self.env().cfg.session_timer, t.interval()) {
            headers.push(headers::other(k, v));
        }
        let dialog = self.leg.dialog.clone();
        if self.peer_update {
            debug!("session refresh: UPDATE");
            self.background
                .spawn(async move { Done::Refresh(dialog.update(Some(headers), None).await) });
            return;
        }
        let dir = if self.local_hold {
            SdpDirection::SendOnly
        } else {
            SdpDirection::SendRecv
        };
        let offer = self.media.sip_reoffer(dir).ok().map(String::into_bytes);
        headers.push(Header::ContentType("application/sdp".into()));
        debug!("session refresh: re-INVITE");
        self.background
            .spawn(async move { Done::Refresh(dialog.reinvite(Some(headers), offer).await) });
    }

    fn on_done(&mut self, done: Done) -> Option<Input> {
        match done {
            Done::Nothing => None,
            Done::Refresh(r) => {
                let status = match &r {
                    Ok(Some(resp)) => resp.status_code.code(),
                    Ok(None) => return None,
                    Err(e) => {
                        info!(error = %e, "session refresh got no answer");
                        408
                    }
                };
                match session_timer::refresh_outcome(status) {
                    RefreshOutcome::Refreshed => {
                        if let Ok(Some(resp)) = &r {
                            if let Some(sdp) = sdp_body(&resp.body) {
                                let _ = self.media.set_sip_remote(&sdp);
                            }
                            let se = headers::value(resp.headers.iter(), "Session-Expires")
                                .and_then(SessionExpires::parse);
                            if let Some(t) = self.timer.as_mut() {
                                t.refreshed(Instant::now(), session_timer::on_answer(se));
                            }
                        }
                        debug!("session refreshed");
                        None
                    }
                    RefreshOutcome::Gone => Some(Input::SessionExpired),
                    RefreshOutcome::Refused => {
                        info!(status, "session refresh refused");
                        None
                    }
                }
            }
            Done::Refer(r) => {
                let status = match r {
                    Ok(Some(resp)) => resp.status_code.code(),
                    Ok(None) => 481,
                    Err(e) => {
                        info!(error = %e, "REFER failed");
                        408
                    }
                };
                let t = self.transfer.as_mut()?;
                let step = t.on_refer_response(status, Instant::now());
                self.agent.transfer_state(step.state, step.sip_status, None);
                if step.done {
                    self.transfer = None;
                }
                None
            }
        }
    }

    async fn run_actions(&mut self, actions: &[Action]) {
        for a in actions {
            match a {
                Action::Browser(e) => self.agent.on_call_event(e),
                Action::SipCancel => {
                    if let Err(e) = self.leg.dialog.cancel().await {
                        debug!(error = %e, "CANCEL failed");
                    }
                }
                Action::SipBye => {
                    if let Err(e) = self.leg.dialog.bye().await {
                        debug!(error = %e, "BYE failed");
                    }
                }
                Action::SipByeReason(status) => {
                    let reason =
                        format!("SIP;cause={status};text=\"{}\"", StatusCode::from(*status));
                    if let Err(e) = self.leg.dialog.bye_with_reason(reason).await {
                        debug!(error = %e, "BYE failed");
                    }
                }
                Action::SipAccept => {
                    let Some((answer, headers)) = self.sip_answer.clone() else {
                        continue;
                    };
                    if let Err(e) = self
                        .leg
                        .dialog
                        .accept(Some(headers), Some(answer.into_bytes()))
                    {
                        warn!(error = %e, "cannot send 200 OK");
                    }
                    self.timer = self
                        .pending_timer
                        .take()
                        .map(|(delta, we)| SessionTimer::new(delta, we, Instant::now()));
                }
                Action::SipReject(status) => {
                    let _ = self
                        .leg
                        .dialog
                        .reject(Some(StatusCode::from(*status)), None);
                }
                Action::StopMedia => self.media.stop(),
            }
        }
    }
}

/// A media event as an input for the call (logged once here); key presses go straight to
/// the browser as `dtmf` events.
fn media_input(agent: &Agent, ev: MediaEvent) -> Option<Input> {
    Some(match ev {
        MediaEvent::BrowserConnected => {
            info!("browser media connected");
            Input::MediaConnected
        }
        MediaEvent::BrowserFailed(why) => {
            warn!(%why, "browser media failed");
            Input::MediaFailed("media_failed")
        }
        MediaEvent::IceFailed(why) => {
            warn!(%why, "browser ICE failed");
            Input::MediaFailed("ice_failed")
        }
        MediaEvent::Timeout { leg } => {
            info!(leg, "media timeout");
            Input::MediaTimeout
        }
        MediaEvent::Dtmf(press) => {
            agent.dtmf(press.digit, press.duration_ms, "rfc4733");
            return None;
        }
    })
}
