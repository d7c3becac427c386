//! Click-to-dial (REST `POST /api/dn/{dn}/calls`): a call placed on the agent's behalf. The
//! agent's browser is offered it first (`incomingCall {direction: outbound, autoAnswer: 0}`,
//! which the client library answers by itself); once it has answered, the INVITE goes out
//! with what the browser sends, and the call goes on as the agent's own outgoing call.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use media::sdp::Direction as SdpDirection;
use tokio::sync::mpsc;
use tracing::{info, Instrument};

use super::agent::Agent;
use super::driver::{dial, Outgoing};
use super::state::{By, Event};
use super::Env;
use crate::directory::calls::{self, CallCommand, CallHandle, CallRow, ToSession};
use crate::protocol;

/// How long the agent's browser may take to join before the call is given up.
const JOIN_WITHIN: Duration = Duration::from_secs(30);

/// What REST asks for.
pub struct ClickToDial {
    /// The agent's DN.
    pub dn: String,
    /// Request-URI to call.
    pub target: String,
    /// Extra `X-` headers for the INVITE.
    pub headers: BTreeMap<String, String>,
}

/// Offers the call to the agent's browser (on `inbox`) and starts its task; the call's id.
pub fn spawn(
    env: Arc<Env>,
    call: ClickToDial,
    inbox: mpsc::UnboundedSender<ToSession>,
) -> Result<String, media::engine::MediaError> {
    let id = format!("{:032x}", rand::random::<u128>());
    let offer = env.media.offerless()?;
    let (handle, cmds) = CallHandle::new(&id);
    let mut row = CallRow::new(
        handle.clone(),
        &call.dn,
        calls::Direction::Outbound,
        &call.target,
        offer.session.counters_handle(),
    );
    row.headers = call.headers.clone();
    env.directory.calls.insert(row);
    let agent = Agent {
        env: env.clone(),
        id: id.clone(),
        dn: call.dn.clone(),
        inbox,
        headers: call.headers.clone(),
    };
    agent.offer(
        protocol::Event::IncomingCall {
            call_id: id.clone(),
            from: call.target.clone(),
            to: env.ua.aor(&call.dn),
            sdp: offer.browser_offer,
            display_name: None,
            direction: "outbound",
            auto_answer: Some(0),
            headers: call.headers.clone(),
        },
        handle,
    );
    let span =
        tracing::info_span!("call", call = %id, dn = %call.dn, sip_call_id = tracing::field::Empty);
    tokio::spawn(run(agent, call, offer.session, cmds).instrument(span));
    Ok(id)
}

async fn run(
    agent: Agent,
    call: ClickToDial,
    mut media: media::engine::MediaSession,
    mut cmds: mpsc::UnboundedReceiver<CallCommand>,
) {
    info!(to = %call.target, "click-to-dial: offered to the agent's browser");
    let requested_at = Instant::now();
    let deadline = tokio::time::Instant::now() + JOIN_WITHIN;
    let ended = loop {
        let cmd = match tokio::time::timeout_at(deadline, cmds.recv()).await {
            Ok(cmd) => cmd,
            Err(_) => break Some((By::Server, "unanswered")),
        };
        match cmd {
            Some(CallCommand::Answer { sdp, request_id }) => match media.set_browser_answer(&sdp) {
                Ok(()) => {
                    agent.reply(&request_id, Ok(()));
                    break None;
                }
                Err(e) => agent.reply(&request_id, Err(e.to_string())),
            },
            Some(CallCommand::Reject(_)) | Some(CallCommand::Hangup) | None => {
                break Some((By::Local, "rejected"))
            }
            Some(CallCommand::ServerHangup) => break Some((By::Server, "cancelled")),
            Some(CallCommand::ReplacesTarget(tx)) => {
                let _ = tx.send(None);
            }
            Some(CallCommand::AnswerFor(tx)) => {
                let _ = tx.send(Err("the call is not ringing here".into()));
            }
            Some(CallCommand::Renegotiate { request_id, .. }) => agent.reply(
                &request_id,
                Err("the browser has not answered this call yet".into()),
            ),
            Some(
                CallCommand::Hold { from, .. }
                | CallCommand::Dtmf { from, .. }
                | CallCommand::Transfer { from, .. },
            ) => agent.answer_to(from, Err("the call is not answered".into())),
        }
    };
    if let Some((by, cause)) = ended {
        info!(cause, "click-to-dial: the agent did not join");
        agent.on_call_event(&Event::Hangup {
            by,
            cause,
            sip_status: None,
        });
        agent.refuse_pending(&mut cmds);
        media.stop();
        agent.env.directory.calls.remove(&agent.id);
        return;
    }
    // The far end is offered what the browser sends, and what we can transcode it to.
    let sip_offer = match media.sip_offer_all(SdpDirection::SendRecv) {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(error = %e, "click-to-dial: no SIP offer");
            agent.on_call_event(&Event::Hangup {
                by: By::Server,
                cause: "media_failed",
                sip_status: None,
            });
            media.stop();
            agent.env.directory.calls.remove(&agent.id);
            return;
        }
    };
    let outgoing = Outgoing {
        id: agent.id.clone(),
        dn: call.dn,
        target: call.target,
        sip_offer,
        headers: call.headers.into_iter().collect(),
        media,
        requested_at,
    };
    dial(agent, outgoing, cmds).await;
}
