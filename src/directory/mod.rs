//! The bottom layer: the tables the gateway shares, each written through its own module
//! (REST only reads them): DNs with their agents' inboxes and passwords ([`dns`]), calls
//! ([`calls`]), browser sessions ([`sessions`]), the live event bus ([`events`]), and the
//! upstream's status. It imports nothing above it.

pub mod calls;
pub mod dns;
pub mod events;
pub mod sessions;

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

pub use dns::{AgentLink, AlreadyClaimed, DnView, RegState, Registry};
pub use events::{LiveEvent, EVENT_BACKLOG};

/// Formats a time the way REST.md asks: RFC 3339 UTC with milliseconds.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// The SIP upstream as the OPTIONS probe last saw it (REST.md `/api/genesys/status`).
#[derive(Clone, Debug, Default)]
pub struct UpstreamStatus {
    /// The last probe got a response.
    pub reachable: bool,
    /// Round trip of the last successful probe.
    pub last_rtt: Option<Duration>,
    /// When the last probe finished.
    pub last_checked_at: Option<SystemTime>,
    /// Probes failed in a row.
    pub consecutive_failures: u32,
}

/// The shared tables.
pub struct Directory {
    /// DNs: owners, registration state, where their calls go.
    pub registry: Registry,
    /// Live calls.
    pub calls: calls::Calls,
    /// Open browser sessions (connected or in their grace period).
    pub sessions: sessions::Sessions,
    /// Live events for `/api/events` subscribers.
    pub events: events::EventBus,
    /// Upstream status, written by the OPTIONS probe.
    upstream: Mutex<UpstreamStatus>,
    /// Process start, for uptime.
    pub started: Instant,
}

impl Default for Directory {
    fn default() -> Self {
        Directory {
            registry: Registry::default(),
            calls: calls::Calls::default(),
            sessions: sessions::Sessions::default(),
            events: events::EventBus::default(),
            upstream: Mutex::new(UpstreamStatus::default()),
            started: Instant::now(),
        }
    }
}

impl Directory {
    /// A copy of the upstream status; a poisoned lock still yields the last value.
    pub fn upstream(&self) -> UpstreamStatus {
        match self.upstream.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Replaces the upstream status.
    pub fn set_upstream(&self, s: UpstreamStatus) {
        match self.upstream.lock() {
            Ok(mut g) => *g = s,
            Err(p) => *p.into_inner() = s,
        }
    }
}
