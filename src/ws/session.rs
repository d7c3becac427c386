//! One browser session: one task per socket. It owns the session's registration and, when
//! the socket goes away, keeps it for the grace period before unregistering.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::ws::{Message, WebSocket};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn, Instrument};

use super::protocol::{self, ErrorCode, Request};
use crate::app::App;
use crate::sip::registrar::{self, RegEvent, RegistrationHandle, RegistrationParams, Secret};
use crate::state::rfc3339;

/// How long a session waits for its registration to finish unregistering at the end.
const UNREGISTER_WAIT: Duration = Duration::from_secs(12);

struct Registration {
    dn: String,
    handle: RegistrationHandle,
    /// The `register` request still waiting for the registrar's first answer.
    pending_register: Option<String>,
    /// `unregister` requests waiting for the registration to end.
    pending_unregister: Vec<String>,
    /// The state last told to the browser: events go out on changes only, not on refreshes.
    told: Option<&'static str>,
}

struct Session {
    app: Arc<App>,
    id: String,
    reg: Option<Registration>,
    reg_tx: mpsc::UnboundedSender<RegEvent>,
}

/// Why the socket loop ended.
enum End {
    /// The socket closed or stopped answering pings: grace period applies.
    Dropped,
    /// The gateway is shutting down.
    Shutdown,
}

fn random_hex() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Runs a session on an upgraded socket until it and its registration are over.
pub async fn run(socket: WebSocket, app: Arc<App>) {
    let id = random_hex();
    let span = tracing::info_span!("session", session = %id, dn = tracing::field::Empty);
    app.shared.sessions.fetch_add(1, Ordering::Relaxed);
    let (reg_tx, reg_rx) = mpsc::unbounded_channel();
    let session = Session {
        app: app.clone(),
        id,
        reg: None,
        reg_tx,
    };
    session.serve(socket, reg_rx).instrument(span).await;
    app.shared.sessions.fetch_sub(1, Ordering::Relaxed);
}

impl Session {
    async fn serve(mut self, mut socket: WebSocket, mut reg_rx: mpsc::UnboundedReceiver<RegEvent>) {
        info!("browser connected");
        let resume_token = random_hex();
        let hello = protocol::frame(
            "hello",
            None,
            protocol::Hello {
                session_id: &self.id,
                resume_token: &resume_token,
                version: 1,
                ice_servers: &self.app.cfg.ice_servers,
            },
        );
        let end = if socket.send(Message::Text(hello.into())).await.is_err() {
            End::Dropped
        } else {
            self.connected(&mut socket, &mut reg_rx).await
        };
        let _ = socket.send(Message::Close(None)).await;
        drop(socket);

        if self.reg.is_some() {
            if let End::Dropped = end {
                self.grace(&mut reg_rx).await;
            }
            self.finish(&mut reg_rx).await;
        }
        info!("session ended");
    }

    /// The socket loop: requests, registration events, pings.
    async fn connected(
        &mut self,
        socket: &mut WebSocket,
        reg_rx: &mut mpsc::UnboundedReceiver<RegEvent>,
    ) -> End {
        let ping_every = self.app.cfg.ws_ping_interval;
        let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
        let mut last_heard = Instant::now();
        loop {
            tokio::select! {
                msg = socket.recv() => {
                    let Some(Ok(msg)) = msg else { return End::Dropped };
                    last_heard = Instant::now();
                    let replies = match msg {
                        Message::Text(text) => self.on_text(text.as_str()),
                        Message::Binary(_) => vec![protocol::error(
                            None,
                            ErrorCode::BadRequest,
                            "binary frames are not part of the protocol; send JSON text frames",
                            None,
                        )],
                        Message::Close(_) => return End::Dropped,
                        Message::Ping(_) | Message::Pong(_) => Vec::new(),
                    };
                    for r in replies {
                        if socket.send(Message::Text(r.into())).await.is_err() {
                            return End::Dropped;
                        }
                    }
                }
                Some(ev) = reg_rx.recv() => {
                    for r in self.on_reg_event(ev) {
                        if socket.send(Message::Text(r.into())).await.is_err() {
                            return End::Dropped;
                        }
                    }
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() > ping_every * 2 {
                        info!("browser stopped answering pings");
                        return End::Dropped;
                    }
                    if socket.send(Message::Ping(Default::default())).await.is_err() {
                        return End::Dropped;
                    }
                }
                _ = self.app.shutdown.cancelled() => return End::Shutdown,
            }
        }
    }

    /// Dropped socket: keep the registration for the grace period.
    async fn grace(&mut self, reg_rx: &mut mpsc::UnboundedReceiver<RegEvent>) {
        let grace = self.app.cfg.grace_period;
        info!(
            ?grace,
            "browser gone; keeping its registration for the grace period"
        );
        let until = Instant::now() + grace;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return,
                _ = self.app.shutdown.cancelled() => return,
                ev = reg_rx.recv() => {
                    let Some(ev) = ev else { return };
                    self.on_reg_event(ev);
                    if self.reg.is_none() { return }
                }
            }
        }
    }

    /// Unregisters and waits (bounded) for it to finish.
    async fn finish(&mut self, reg_rx: &mut mpsc::UnboundedReceiver<RegEvent>) {
        let Some(reg) = self.reg.as_ref() else { return };
        let done = reg.handle.unregister();
        if tokio::time::timeout(UNREGISTER_WAIT, done).await.is_err() {
            warn!(dn = %reg.dn, "unregister did not finish in time");
        }
        while let Ok(ev) = reg_rx.try_recv() {
            self.on_reg_event(ev);
        }
        self.reg = None;
    }

    /// One text frame in, frames out.
    fn on_text(&mut self, text: &str) -> Vec<String> {
        if text.len() > protocol::MAX_FRAME {
            return vec![protocol::error(
                None,
                ErrorCode::TooLarge,
                &format!(
                    "frame of {} bytes exceeds {} bytes",
                    text.len(),
                    protocol::MAX_FRAME
                ),
                None,
            )];
        }
        let (id, request) = match protocol::parse(text) {
            Ok(ok) => ok,
            Err(r) => {
                debug!(code = ?r.code, message = %r.message, "bad frame");
                return vec![protocol::error(r.id.as_deref(), r.code, &r.message, None)];
            }
        };
        match request {
            Request::Ping => vec![protocol::frame(
                "result",
                Some(&id),
                json!({ "time": rfc3339(SystemTime::now()) }),
            )],
            Request::Register(p) => self.register(id, p),
            Request::Unregister => self.unregister(id),
            Request::NotYet(kind) => vec![protocol::error(
                Some(&id),
                ErrorCode::BadRequest,
                &format!("request type {kind:?} is not supported by this server version yet"),
                None,
            )],
        }
    }

    fn register(&mut self, id: String, p: protocol::RegisterPayload) -> Vec<String> {
        if let Some(reg) = &self.reg {
            return vec![protocol::error(
                Some(&id),
                ErrorCode::InvalidState,
                &format!(
                    "this session already registers DN {}; unregister first",
                    reg.dn
                ),
                None,
            )];
        }
        if self.app.shutdown.is_cancelled() {
            return vec![protocol::error(
                Some(&id),
                ErrorCode::UpstreamUnavailable,
                "the gateway is shutting down",
                None,
            )];
        }
        if self
            .app
            .shared
            .registry
            .claim(&p.dn, &self.id, p.display_name.clone())
            .is_err()
        {
            return vec![protocol::error(
                Some(&id),
                ErrorCode::AlreadyRegistered,
                &format!("DN {} is registered by another session", p.dn),
                None,
            )];
        }
        tracing::Span::current().record("dn", p.dn.as_str());
        info!(dn = %p.dn, "registering");
        let handle = registrar::spawn(
            self.app.ua.clone(),
            self.app.shared.clone(),
            RegistrationParams {
                dn: p.dn.clone(),
                password: Secret::new(p.password),
                session_id: self.id.clone(),
                expires: p.expires.unwrap_or(self.app.cfg.register_expires),
                retry: self.app.cfg.register_retry,
            },
            self.app.recovered.clone(),
            self.reg_tx.clone(),
        );
        self.reg = Some(Registration {
            dn: p.dn,
            handle,
            pending_register: Some(id),
            pending_unregister: Vec::new(),
            told: None,
        });
        Vec::new()
    }

    fn unregister(&mut self, id: String) -> Vec<String> {
        match &mut self.reg {
            None => vec![protocol::error(
                Some(&id),
                ErrorCode::NotRegistered,
                "this session has no registration",
                None,
            )],
            Some(reg) => {
                // Completion is reported by the registration's Unregistered event.
                drop(reg.handle.unregister());
                reg.pending_unregister.push(id);
                Vec::new()
            }
        }
    }

    /// A registration event in, frames out.
    fn on_reg_event(&mut self, ev: RegEvent) -> Vec<String> {
        let Some(reg) = self.reg.as_mut() else {
            return Vec::new();
        };
        let dn = reg.dn.clone();
        let state = |state: &str, reason: Option<&str>, sip_status: Option<u16>| {
            protocol::frame(
                "registrationState",
                None,
                protocol::RegistrationState {
                    dn: &dn,
                    state,
                    reason,
                    sip_status,
                },
            )
        };
        match ev {
            RegEvent::Registered { expires } => {
                let mut out = Vec::new();
                if let Some(id) = reg.pending_register.take() {
                    out.push(protocol::frame(
                        "result",
                        Some(&id),
                        json!({ "dn": dn, "expires": expires }),
                    ));
                }
                if reg.told.replace("registered") != Some("registered") {
                    out.push(state("registered", None, None));
                }
                out
            }
            RegEvent::Rejected { status, auth } => {
                let mut out = Vec::new();
                if let Some(id) = reg.pending_register.take() {
                    let (code, message, sip) = match (status, auth) {
                        (_, true) => (
                            ErrorCode::AuthFailed,
                            format!("the registrar refused the credentials for DN {dn}"),
                            Some(status),
                        ),
                        (408, false) => (
                            ErrorCode::Timeout,
                            "the registrar did not answer".to_string(),
                            None,
                        ),
                        _ => (
                            ErrorCode::UpstreamUnavailable,
                            format!("the registrar answered {status}"),
                            Some(status),
                        ),
                    };
                    out.push(protocol::error(Some(&id), code, &message, sip));
                }
                self.reg = None;
                out
            }
            RegEvent::Lost { status } => {
                let sip = (status != 408).then_some(status);
                let reason = if status == 408 {
                    "registrar not answering; retrying"
                } else {
                    "refresh refused; retrying"
                };
                if reg.told.replace("failed") == Some("failed") {
                    return Vec::new();
                }
                vec![state("failed", Some(reason), sip)]
            }
            RegEvent::Unregistered => {
                let mut out = Vec::new();
                if let Some(id) = reg.pending_register.take() {
                    out.push(protocol::error(
                        Some(&id),
                        ErrorCode::InvalidState,
                        "unregistered before the registrar answered",
                        None,
                    ));
                }
                for id in reg.pending_unregister.drain(..) {
                    out.push(protocol::frame("result", Some(&id), json!({})));
                }
                out.push(state("unregistered", None, None));
                self.reg = None;
                out
            }
        }
    }
}
