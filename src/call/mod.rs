//! The B2BUA: one call = a browser leg + a SIP leg + their media, owned by one task
//! (`driver.rs`), whose decisions come from the sans-IO [`state::CallState`].

pub mod driver;
pub mod session_timer;
pub mod state;
pub mod transfer;

use std::sync::Arc;
use std::time::SystemTime;

use media::stats::MediaCounters;

use rsipstack::sip::StatusCode;
use rsipstack::transaction::transaction::Transaction;
use tokio::sync::mpsc;

use crate::app::App;
use crate::state::rfc3339;

/// Where an agent's incoming calls go: its browser session.
#[derive(Clone, Debug)]
pub struct AgentLink {
    /// The owning session.
    pub session_id: String,
    /// The session's inbox.
    pub inbox: mpsc::UnboundedSender<CallNote>,
    /// The DN's SIP password, for INVITEs the agent's calls send (a transfer's new leg).
    pub password: crate::sip::registrar::Secret,
}

/// Routes an initial INVITE to the agent whose DN is the Request-URI's user: a call for a
/// registered agent, 480 for a DN with no live registration, 404 for a DN we do not know,
/// 503 once the gateway is shutting down.
pub fn route_invite(app: &Arc<App>, mut tx: Transaction) {
    let dn = tx.original.uri.user().unwrap_or_default().to_string();
    if app.shutdown.is_cancelled() {
        // Stopping: no new calls (RFC 3261 §21.5.4).
        tracing::info!(%dn, "incoming INVITE while shutting down: 503");
        tokio::spawn(async move {
            let _ = tx.reply(StatusCode::ServiceUnavailable).await;
        });
        return;
    }
    let link = app.agents.get(&dn).map(|l| l.value().clone());
    match link {
        Some(link) => driver::spawn_incoming(app.clone(), tx, dn, link.inbox),
        None => {
            let status = if app.shared.registry.get(&dn).is_some() {
                StatusCode::TemporarilyUnavailable
            } else {
                StatusCode::NotFound
            };
            tracing::info!(%dn, status = status.code(), "incoming INVITE for no registered agent");
            tokio::spawn(async move {
                let _ = tx.reply(status).await;
            });
        }
    }
}

/// A frame for the browser session that owns the call.
#[derive(Debug, Clone)]
pub struct CallNote {
    /// Protocol call id.
    pub call_id: String,
    /// The ready-made protocol frame.
    pub frame: String,
    /// This was the call's `hangup`: the session forgets the call.
    pub ended: bool,
    /// A new incoming call: the session keeps this handle.
    pub handle: Option<driver::CallHandle>,
}

/// A call as REST shows it (REST.md `/api/calls/active`).
#[derive(Clone, Debug)]
pub struct CallInfo {
    /// Protocol call id.
    pub call_id: String,
    /// The agent's DN.
    pub dn: String,
    /// `inbound` | `outbound`.
    pub direction: &'static str,
    /// The far end (URI).
    pub remote: String,
    /// `setup`, `ringing`, `answered`.
    pub state: &'static str,
    /// When the call started.
    pub started_at: SystemTime,
    /// When it was answered.
    pub answered_at: Option<SystemTime>,
    /// The SIP dialog's Call-ID.
    pub sip_call_id: Option<String>,
    /// The relayed codec.
    pub codec: Option<String>,
    /// Media counters.
    pub counters: Option<Arc<MediaCounters>>,
    /// Control of the call, for REST hangup.
    pub handle: Option<driver::CallHandle>,
}

impl CallInfo {
    /// The REST view of this call (REST.md `/api/calls/active`).
    pub fn view(&self) -> CallView {
        let m = self
            .counters
            .as_ref()
            .map(|c| c.snapshot())
            .unwrap_or_default();
        CallView {
            call_id: self.call_id.clone(),
            dn: self.dn.clone(),
            direction: self.direction,
            remote: self.remote.clone(),
            state: self.state,
            started_at: rfc3339(self.started_at),
            answered_at: self.answered_at.map(rfc3339),
            sip_call_id: self.sip_call_id.clone(),
            codec: self.codec.clone(),
            media: MediaView {
                packets_in: m.packets_in,
                packets_out: m.packets_out,
                bytes_in: m.bytes_in,
                bytes_out: m.bytes_out,
                lost: m.lost,
                jitter_ms: m.jitter_ms,
            },
        }
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
