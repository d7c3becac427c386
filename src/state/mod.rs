//! Shared views of registrations and of the upstream, read by REST and written by the SIP side.
//!
//! DashMap for now; the REST layer only sees [`DnView`] snapshots, so a shared store can
//! replace the map later without touching handlers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use serde::Serialize;

/// Where a DN's registration stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RegState {
    /// The first REGISTER is in flight.
    Registering,
    /// The registrar accepted our binding.
    Registered,
    /// A refresh failed; retrying.
    Failed,
    /// Expires: 0 is in flight or done.
    Unregistered,
}

/// One DN as REST shows it (REST.md `/api/dn/list`).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DnView {
    /// The extension.
    pub dn: String,
    /// Display name the browser gave, if any.
    pub display_name: Option<String>,
    /// Registration state.
    pub state: RegState,
    /// The Contact we registered.
    pub contact: Option<String>,
    /// When the current binding expires at the registrar (RFC 3339).
    pub expires_at: Option<String>,
    /// When the DN last became registered (RFC 3339).
    pub registered_at: Option<String>,
    /// Owning browser session.
    pub session_id: String,
    /// The DN's active call, once calls exist.
    pub active_call_id: Option<String>,
}

#[derive(Clone, Debug)]
struct DnEntry {
    display_name: Option<String>,
    state: RegState,
    contact: Option<String>,
    expires_at: Option<SystemTime>,
    registered_at: Option<SystemTime>,
    session_id: String,
}

/// Formats a time the way REST.md asks: RFC 3339 UTC with milliseconds.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// DN registrations by DN. One session owns a DN at a time.
#[derive(Default)]
pub struct Registry {
    dns: DashMap<String, DnEntry>,
}

/// Why a DN could not be claimed.
#[derive(Debug, PartialEq, Eq)]
pub struct AlreadyClaimed;

impl Registry {
    /// Claims `dn` for `session_id`, atomically: two sockets racing for one DN get one winner.
    pub fn claim(
        &self,
        dn: &str,
        session_id: &str,
        display_name: Option<String>,
    ) -> Result<(), AlreadyClaimed> {
        match self.dns.entry(dn.to_string()) {
            Entry::Occupied(_) => Err(AlreadyClaimed),
            Entry::Vacant(v) => {
                v.insert(DnEntry {
                    display_name,
                    state: RegState::Registering,
                    contact: None,
                    expires_at: None,
                    registered_at: None,
                    session_id: session_id.to_string(),
                });
                Ok(())
            }
        }
    }

    /// Releases `dn` if `session_id` still owns it.
    pub fn release(&self, dn: &str, session_id: &str) {
        self.dns.remove_if(dn, |_, e| e.session_id == session_id);
    }

    /// Records a granted binding.
    pub fn set_registered(&self, dn: &str, contact: &str, expires: Duration) {
        if let Some(mut e) = self.dns.get_mut(dn) {
            let now = SystemTime::now();
            if e.state != RegState::Registered {
                e.registered_at = Some(now);
            }
            e.state = RegState::Registered;
            e.contact = Some(contact.to_string());
            e.expires_at = Some(now + expires);
        }
    }

    /// Records a failed refresh or an outage; the binding is assumed gone.
    pub fn set_state(&self, dn: &str, state: RegState) {
        if let Some(mut e) = self.dns.get_mut(dn) {
            e.state = state;
            if state != RegState::Registered {
                e.expires_at = None;
            }
        }
    }

    /// A snapshot of one DN.
    pub fn get(&self, dn: &str) -> Option<DnView> {
        self.dns.get(dn).map(|e| view(e.key(), e.value()))
    }

    /// A snapshot of all DNs, sorted by DN for stable output.
    pub fn list(&self) -> Vec<DnView> {
        let mut v: Vec<DnView> = self.dns.iter().map(|e| view(e.key(), e.value())).collect();
        v.sort_by(|a, b| a.dn.cmp(&b.dn));
        v
    }

    /// How many DNs are registered right now.
    pub fn registered_count(&self) -> usize {
        self.dns
            .iter()
            .filter(|e| e.state == RegState::Registered)
            .count()
    }
}

fn view(dn: &str, e: &DnEntry) -> DnView {
    DnView {
        dn: dn.to_string(),
        display_name: e.display_name.clone(),
        state: e.state,
        contact: e.contact.clone(),
        expires_at: e.expires_at.map(rfc3339),
        registered_at: e.registered_at.map(rfc3339),
        session_id: e.session_id.clone(),
        active_call_id: None,
    }
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

/// Everything the servers share.
pub struct Shared {
    /// DN registrations.
    pub registry: Registry,
    /// Upstream status, written by the OPTIONS probe.
    pub upstream: Mutex<UpstreamStatus>,
    /// Open browser sessions (connected or in their grace period).
    pub sessions: AtomicUsize,
    /// Process start, for uptime.
    pub started: Instant,
    /// Active calls by protocol call id.
    pub calls: DashMap<String, crate::call::CallInfo>,
    /// Live events for `/api/events` subscribers.
    pub events: tokio::sync::broadcast::Sender<LiveEvent>,
    /// Rate limits' state.
    pub limiter: crate::ws::limits::Limiter,
}

/// Events one `/api/events` subscriber may fall behind by before it is dropped: a slow
/// reader must never slow the gateway, and memory per subscriber stays bounded.
pub const EVENT_BACKLOG: usize = 1024;

/// A live event: its `type` (the SSE `event:` name) and its JSON (`data:`).
#[derive(Clone, Debug)]
pub struct LiveEvent {
    /// `registrationState`, `ringing`, `answered`, `hangup`, …
    pub kind: String,
    /// The JSON object, with `type` in it.
    pub data: std::sync::Arc<str>,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            registry: Registry::default(),
            upstream: Mutex::new(UpstreamStatus::default()),
            sessions: AtomicUsize::new(0),
            started: Instant::now(),
            calls: DashMap::new(),
            events: tokio::sync::broadcast::channel(EVENT_BACKLOG).0,
            limiter: Default::default(),
        }
    }
}

impl Shared {
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

    /// Number of open sessions.
    /// Publishes a live event (nobody listening is fine). `payload` must be a JSON object; it
    /// gets `type: kind` added.
    pub fn publish(&self, kind: &str, mut payload: serde_json::Value) {
        if self.events.receiver_count() == 0 {
            return;
        }
        if let Some(o) = payload.as_object_mut() {
            o.insert("type".into(), serde_json::Value::from(kind));
        }
        let _ = self.events.send(LiveEvent {
            kind: kind.to_string(),
            data: payload.to_string().into(),
        });
    }

    pub fn session_count(&self) -> usize {
        self.sessions.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_owner_per_dn() {
        let r = Registry::default();
        assert!(r.claim("5001", "s1", None).is_ok());
        assert_eq!(r.claim("5001", "s2", None), Err(AlreadyClaimed));
        r.release("5001", "s2");
        assert!(r.get("5001").is_some(), "only the owner releases");
        r.release("5001", "s1");
        assert!(r.claim("5001", "s2", None).is_ok());
    }

    #[test]
    fn registered_view_has_expiry() {
        let r = Registry::default();
        r.claim("5001", "s1", Some("Alice".into())).expect("free");
        r.set_registered("5001", "sip:5001@127.0.0.1:5070", Duration::from_secs(60));
        let v = r.get("5001").expect("present");
        assert_eq!(v.state, RegState::Registered);
        assert!(v.expires_at.is_some_and(|t| t.ends_with('Z')));
        assert_eq!(r.registered_count(), 1);
        r.set_state("5001", RegState::Failed);
        assert_eq!(r.registered_count(), 0);
        assert!(r.get("5001").expect("present").expires_at.is_none());
    }
}
