//! Browser sessions by id, so a reconnecting browser's `resume` finds its session and an
//! operator can disconnect one. A session is in the table from its first socket to its end
//! (grace period included), so the table's size is the number of open sessions.

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

    /// Closes session `id`'s socket; false if there is no such session.
    pub fn disconnect(&self, id: &str) -> bool {
        self.by_id.get(id).map(|r| r.disconnect()).is_some()
    }

    /// Open sessions (connected or in their grace period).
    pub fn count(&self) -> usize {
        self.by_id.len()
    }
}
