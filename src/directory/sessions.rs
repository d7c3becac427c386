//! Browser sessions by id, so a reconnecting browser's `resume` finds its session and an
//! operator can disconnect one. A session is in the table from its first socket to its end
//! (grace period included), so the table's size is the number of open sessions.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::ws::WebSocket;
use dashmap::DashMap;
use tokio::sync::{mpsc, Notify};

/// A socket handed to an existing session by `resume`, with the request to answer.
pub struct Attach {
    /// The new connection.
    pub socket: WebSocket,
    /// The `resume` request's id.
    pub request_id: String,
}

/// How a new connection reaches a session to resume.
pub struct Resumable {
    /// The session's resume token (from its `hello`).
    pub token: String,
    /// Where a resuming socket goes.
    pub attach: mpsc::UnboundedSender<Attach>,
    /// Wakes the session to close its socket.
    pub kick: Arc<Notify>,
    /// Whether a socket is attached, and the DN takeover signal.
    pub presence: Arc<Presence>,
}

/// What other sessions may know of one: whether its browser is there, and a way to end it
/// when a new session takes its DN over (PROTOCOL.md v1.1).
#[derive(Default)]
pub struct Presence {
    connected: AtomicBool,
    taken_over: Notify,
}

impl Presence {
    /// The session's socket came (true) or went (false).
    pub fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Release);
    }

    /// Resolves when another session took this one's DN over.
    pub async fn taken_over(&self) {
        self.taken_over.notified().await
    }
}

impl Resumable {
    /// Closes the session's socket from the server side; the session enters its grace
    /// period, and a `resume` takes it back (operators use it to move a browser).
    pub fn disconnect(&self) {
        self.kick.notify_one();
    }
}

/// Why a `resume` cannot attach.
#[derive(Debug, PartialEq, Eq)]
pub enum ResumeRefused {
    /// No such session (never was, or its grace period is over).
    Unknown,
    /// The token is not the session's.
    WrongToken,
}

/// Open sessions by id.
#[derive(Default)]
pub struct Sessions {
    by_id: DashMap<String, Resumable>,
}

impl Sessions {
    /// A session starts.
    pub fn open(&self, id: &str, r: Resumable) {
        self.by_id.insert(id.to_string(), r);
    }

    /// A session is over.
    pub fn close(&self, id: &str) {
        self.by_id.remove(id);
    }

    /// Where to attach a socket resuming session `id` with `token` (compared in constant
    /// time).
    pub fn attach_to(
        &self,
        id: &str,
        token: &str,
    ) -> Result<mpsc::UnboundedSender<Attach>, ResumeRefused> {
        match self.by_id.get(id) {
            Some(r) if crate::auth::token_matches(token, &r.token) => Ok(r.attach.clone()),
            Some(_) => Err(ResumeRefused::WrongToken),
            None => Err(ResumeRefused::Unknown),
        }
    }

    /// Ends session `id`, which is in its grace period (no socket), because another session
    /// took its DN over; false if it is connected or gone.
    pub fn take_over(&self, id: &str) -> bool {
        match self.by_id.get(id) {
            Some(r) if !r.presence.connected.load(Ordering::Acquire) => {
                // notify_one keeps the permit if the session is not waiting right now.
                r.presence.taken_over.notify_one();
                true
            }
            _ => false,
        }
    }

    /// Whether session `id` is open with no socket (its grace period).
    pub fn in_grace(&self, id: &str) -> bool {
        self.by_id
            .get(id)
            .is_some_and(|r| !r.presence.connected.load(Ordering::Acquire))
    }

    /// Closes session `id`'s socket; false if there is no such session.
    pub fn disconnect(&self, id: &str) -> bool {
        self.by_id.get(id).map(|r| r.disconnect()).is_some()
    }

    /// Open sessions (connected or in their grace period).
    pub fn count(&self) -> usize {
        self.by_id.len()
    }
}
