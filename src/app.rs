//! What the servers share: configuration, state, the SIP user agent, shutdown.

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::sip::ua::SipUa;
use crate::state::Shared;

/// The running gateway, handed to every server and session.
pub struct App {
    /// Configuration.
    pub cfg: Arc<Config>,
    /// Registrations, upstream status, counters.
    pub shared: Arc<Shared>,
    /// The SIP user agent.
    pub ua: Arc<SipUa>,
    /// INVITE dialogs (the UA's dialog layer).
    pub dialogs: Arc<rsipstack::dialog::dialog_layer::DialogLayer>,
    /// The media plane.
    pub media: Arc<media::engine::MediaEngine>,
    /// Bumped each time the upstream answers again after an outage.
    pub recovered: watch::Receiver<u64>,
    /// Cancelled on SIGTERM/SIGINT.
    pub shutdown: CancellationToken,
    /// Browser sessions, so shutdown can wait for their unregistrations.
    pub tasks: TaskTracker,
    /// Registered agents by DN, for incoming calls.
    pub agents: dashmap::DashMap<String, crate::call::AgentLink>,
    /// Sessions by id, for `resume`.
    pub resumable: dashmap::DashMap<String, crate::ws::session::Resumable>,
}
