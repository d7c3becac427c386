//! What the servers share: the call layer's [`Env`] (configuration, tables, SIP user agent,
//! media plane, shutdown) and what only the WebSocket and REST servers use.

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::call::Env;
use crate::limits::Limiter;

/// The running gateway, handed to every server and session.
pub struct App {
    /// What calls see; the servers reach it through `Deref` too (`app.cfg`, `app.directory`).
    pub env: Arc<Env>,
    /// Bumped each time the upstream answers again after an outage.
    pub recovered: watch::Receiver<u64>,
    /// Browser sessions, so shutdown can wait for their unregistrations.
    pub tasks: TaskTracker,
    /// Abuse limits' state.
    pub limiter: Limiter,
}

// The servers are the call layer's environment plus a little: reading `app.cfg` rather than
// `app.env.cfg` everywhere keeps that a detail.
impl std::ops::Deref for App {
    type Target = Env;

    fn deref(&self) -> &Env {
        &self.env
    }
}
