//! The DN table: who owns each extension, where its registration stands, and, once it is
//! registered, where its incoming calls go (the session's inbox) with its SIP password.
//!
//! Written by the owning session (claim, link) and its REGISTER client (state, release);
//! REST only sees [`DnView`] snapshots, so a shared store can replace the map later without
//! touching handlers.

use std::time::{Duration, SystemTime};

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use serde::Serialize;
use tokio::sync::mpsc;

use super::calls::ToSession;
use super::rfc3339;
use crate::auth::Secret;

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

/// Where an agent's incoming calls go: its browser session.
#[derive(Clone, Debug)]
pub struct AgentLink {
    /// The owning session.
    pub session_id: String,
    /// The session's inbox.
    pub inbox: mpsc::UnboundedSender<ToSession>,
}

#[derive(Clone, Debug)]
struct DnEntry {
    display_name: Option<String>,
    state: RegState,
    contact: Option<String>,
    expires_at: Option<SystemTime>,
    registered_at: Option<SystemTime>,
    session_id: String,
    /// The DN's SIP password: the REGISTER client's, and for 401/407 on the DN's INVITEs.
    password: Secret,
    /// Set while registered: incoming calls are routed here.
    link: Option<AgentLink>,
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
        password: Secret,
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
                    password,
                    link: None,
                });
                Ok(())
            }
        }
    }

    /// The session that owns `dn`, if any.
    pub fn owner(&self, dn: &str) -> Option<String> {
        self.dns.get(dn).map(|e| e.session_id.clone())
    }

    /// Moves `dn` from session `from` to `session_id` if `from` still owns it and `password`
    /// is the one it registered with (compared in constant time): the v1.1 takeover of a DN
    /// whose browser is gone. The binding at the registrar stays; the new session refreshes it.
    pub fn take_over(
        &self,
        dn: &str,
        from: &str,
        session_id: &str,
        display_name: Option<String>,
        password: Secret,
    ) -> Result<(), AlreadyClaimed> {
        let Some(mut e) = self.dns.get_mut(dn) else {
            return Err(AlreadyClaimed);
        };
        if e.session_id != from
            || !crate::auth::token_matches(password.expose(), e.password.expose())
        {
            return Err(AlreadyClaimed);
        }
        e.session_id = session_id.to_string();
        e.display_name = display_name;
        e.password = password;
        e.link = None;
        Ok(())
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

    /// Routes the DN's incoming calls to `link` (its session, once registered).
    pub fn link(&self, dn: &str, link: AgentLink) {
        if let Some(mut e) = self.dns.get_mut(dn) {
            if e.session_id == link.session_id {
                e.link = Some(link);
            }
        }
    }

    /// Stops routing the DN's calls to `session_id` (its registration ended or failed).
    pub fn unlink(&self, dn: &str, session_id: &str) {
        if let Some(mut e) = self.dns.get_mut(dn) {
            if e.session_id == session_id {
                e.link = None;
            }
        }
    }

    /// Where the DN's incoming calls go, if it is registered.
    pub fn agent(&self, dn: &str) -> Option<AgentLink> {
        self.dns.get(dn).and_then(|e| e.link.clone())
    }

    /// The DN's SIP password, for digest authentication of its requests.
    pub fn password(&self, dn: &str) -> Option<Secret> {
        self.dns.get(dn).map(|e| e.password.clone())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pw() -> Secret {
        Secret::new("pass5001".into())
    }

    #[test]
    fn only_a_registered_owner_gets_calls() {
        let r = Registry::default();
        r.claim("5001", "s1", None, pw()).expect("free");
        let (inbox, _rx) = mpsc::unbounded_channel();
        assert!(r.agent("5001").is_none(), "claimed is not registered");
        r.link(
            "5001",
            AgentLink {
                session_id: "s2".into(),
                inbox: inbox.clone(),
            },
        );
        assert!(r.agent("5001").is_none(), "only the owner links");
        r.link(
            "5001",
            AgentLink {
                session_id: "s1".into(),
                inbox,
            },
        );
        assert_eq!(r.agent("5001").map(|l| l.session_id), Some("s1".into()));
        assert_eq!(
            r.password("5001").map(|p| p.expose().to_string()),
            Some("pass5001".into())
        );
        r.unlink("5001", "s2");
        assert!(r.agent("5001").is_some(), "only the owner unlinks");
        r.unlink("5001", "s1");
        assert!(r.agent("5001").is_none());
    }

    #[test]
    fn one_owner_per_dn() {
        let r = Registry::default();
        assert!(r.claim("5001", "s1", None, pw()).is_ok());
        assert_eq!(r.claim("5001", "s2", None, pw()), Err(AlreadyClaimed));
        r.release("5001", "s2");
        assert!(r.get("5001").is_some(), "only the owner releases");
        r.release("5001", "s1");
        assert!(r.claim("5001", "s2", None, pw()).is_ok());
    }

    #[test]
    fn registered_view_has_expiry() {
        let r = Registry::default();
        r.claim("5001", "s1", Some("Alice".into()), pw())
            .expect("free");
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
