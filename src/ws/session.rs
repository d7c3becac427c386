//! One browser session: one task per socket. It owns the session's registration and, when
//! the socket goes away, keeps it for the grace period before unregistering.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn, Instrument};

use crate::protocol::{self, ErrorCode, Event, Reply, Request};
use std::collections::HashMap;

use crate::app::App;
use crate::auth::Secret;
use crate::config::Config;
use crate::directory::calls::{CallCommand, CallHandle, Requester, ToSession};
use crate::directory::rfc3339;
use crate::directory::sessions::{Attach, Presence, Resumable, ResumeRefused};
use crate::directory::AgentLink;
use crate::sip::register_task::{self, RegEvent, RegistrationHandle, RegistrationParams};
use serde_json::Value;

/// How long a session waits for its registration to finish unregistering at the end.
const UNREGISTER_WAIT: Duration = Duration::from_secs(12);
/// How long a closing session waits for its calls to send their BYEs.
const CALL_END_WAIT: Duration = Duration::from_secs(2);
/// On SIGTERM a connected session ends its calls and its registration within this, then
/// closes its socket itself: the process has 5 s in all (DESIGN.md run contract).
const SHUTDOWN_WAIT: Duration = Duration::from_secs(3);

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
    kick: Arc<tokio::sync::Notify>,
    /// Whether a socket is attached, and the signal of a DN takeover.
    presence: Arc<Presence>,
    /// Another session took the DN over while this one had no socket: end without
    /// unregistering (the binding is the new session's now).
    taken_over: bool,
    id: String,
    reg: Option<Registration>,
    reg_tx: mpsc::UnboundedSender<RegEvent>,
    call_tx: mpsc::UnboundedSender<ToSession>,
    calls: HashMap<String, CallHandle>,
    /// Set by a `resume` request: hand this socket to that session.
    handover: Option<(mpsc::UnboundedSender<Attach>, String)>,
    /// Frames produced while no socket was attached, sent after a resume.
    undelivered: Vec<String>,
    /// Where the browser connected from (`None` when the server cannot tell).
    peer_ip: Option<std::net::IpAddr>,
    /// Requests this session may still send this second.
    requests: crate::limits::TokenBucket,
}

/// Why the socket loop ended.
enum End {
    /// The socket closed or stopped answering pings: grace period applies.
    Dropped,
    /// The gateway is shutting down.
    Shutdown,
    /// This connection resumed another session; the socket goes there.
    Handover(mpsc::UnboundedSender<Attach>, String),
    /// Another connection resumed this session; continue on its socket.
    Replaced(Box<Attach>),
}

/// The `register` request's error when the registrar refuses the first REGISTER: wrong
/// credentials (after the digest was tried), no answer, or another final status.
fn refusal(dn: &str, status: u16, auth: bool) -> (ErrorCode, String, Option<u16>) {
    match (status, auth) {
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
    }
}

/// `registrationState: failed`'s reason and SIP status when a registered DN's refresh fails
/// (the REGISTER task retries on its own).
fn lost(status: u16) -> (&'static str, Option<u16>) {
    if status == 408 {
        ("registrar not answering; retrying", None)
    } else {
        ("refresh refused; retrying", Some(status))
    }
}

/// Sends frames with one flush, so a reply and the event after it leave in one TCP write
/// (two small writes would meet Nagle's algorithm and the peer's delayed ACK: 40 ms).
async fn send_all(socket: &mut WebSocket, frames: Vec<String>) -> Result<(), ()> {
    use futures_util::SinkExt;
    if frames.is_empty() {
        return Ok(());
    }
    for f in frames {
        socket.feed(Message::Text(f.into())).await.map_err(|_| ())?;
    }
    socket.flush().await.map_err(|_| ())
}

fn random_hex() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Runs a session on an upgraded socket until it and its registration are over.
pub async fn run(socket: WebSocket, app: Arc<App>, peer_ip: Option<std::net::IpAddr>) {
    let id = random_hex();
    let span = tracing::info_span!("session", session = %id, dn = tracing::field::Empty);
    let (reg_tx, reg_rx) = mpsc::unbounded_channel();
    let (call_tx, call_rx) = mpsc::unbounded_channel();
    let (attach_tx, attach_rx) = mpsc::unbounded_channel();
    let token = random_hex();
    let kick = Arc::new(tokio::sync::Notify::new());
    let presence = Arc::new(Presence::default());
    app.directory.sessions.open(
        &id,
        Resumable {
            token: token.clone(),
            attach: attach_tx,
            kick: kick.clone(),
            presence: presence.clone(),
        },
    );
    let session = Session {
        app: app.clone(),
        kick,
        presence,
        taken_over: false,
        id: id.clone(),
        reg: None,
        reg_tx,
        call_tx,
        calls: HashMap::new(),
        handover: None,
        undelivered: Vec::new(),
        peer_ip,
        requests: {
            let rate = f64::from(app.cfg.limits.requests_per_second);
            crate::limits::TokenBucket::new(rate, rate * 2.0, std::time::Instant::now())
        },
    };
    session
        .serve(socket, token, reg_rx, attach_rx, call_rx)
        .instrument(span)
        .await;
    app.directory.sessions.close(&id);
}

impl Session {
    async fn serve(
        mut self,
        mut socket: WebSocket,
        resume_token: String,
        mut reg_rx: mpsc::UnboundedReceiver<RegEvent>,
        mut attach_rx: mpsc::UnboundedReceiver<Attach>,
        mut call_rx: mpsc::UnboundedReceiver<ToSession>,
    ) {
        info!("browser connected");
        let ice_servers = ice_servers_for(&self.app.cfg, &self.id, SystemTime::now());
        let hello = protocol::frame(
            "hello",
            None,
            protocol::Hello {
                session_id: &self.id,
                resume_token: &resume_token,
                version: 1,
                ice_servers: &ice_servers,
            },
        );
        let mut end = if socket.send(Message::Text(hello.into())).await.is_err() {
            End::Dropped
        } else {
            self.connected(&mut socket, &mut reg_rx, &mut attach_rx, &mut call_rx)
                .await
        };
        loop {
            let attach = match end {
                End::Handover(target, request_id) => {
                    info!("connection resumes another session");
                    let _ = target.send(Attach { socket, request_id });
                    return;
                }
                End::Replaced(attach) => {
                    info!("session resumed from a new connection; closing the old one");
                    // A distinct code, so the old page does not resume it straight back.
                    let close = CloseFrame {
                        code: 4000,
                        reason: "session resumed by another connection".into(),
                    };
                    let _ = socket.send(Message::Close(Some(close))).await;
                    *attach
                }
                End::Dropped => {
                    let _ = socket.send(Message::Close(None)).await;
                    // Release the connection now: a browser waiting for the TCP close would
                    // otherwise notice only after its own closing time-out.
                    drop(socket);
                    match self.grace(&mut reg_rx, &mut attach_rx, &mut call_rx).await {
                        Some(attach) => attach,
                        None => break,
                    }
                }
                End::Shutdown => {
                    self.shut_down(socket, &mut reg_rx, &mut call_rx).await;
                    info!("session ended");
                    return;
                }
            };
            socket = attach.socket;
            let mut frames = vec![self.resume_result(&attach.request_id)];
            frames.append(&mut self.undelivered);
            end = match send_all(&mut socket, frames).await {
                Ok(()) => {
                    self.connected(&mut socket, &mut reg_rx, &mut attach_rx, &mut call_rx)
                        .await
                }
                Err(()) => End::Dropped,
            };
        }
        self.finish(&mut reg_rx, &mut call_rx).await;
        info!("session ended");
    }

    fn resume_result(&self, request_id: &str) -> String {
        let mut calls: Vec<&str> = self.calls.keys().map(String::as_str).collect();
        calls.sort();
        let dn = self.reg.as_ref().map(|r| r.dn.as_str());
        // Fresh TURN credentials: the page may have outlived the old ones' lifetime.
        let ice_servers = ice_servers_for(&self.app.cfg, &self.id, SystemTime::now());
        protocol::result(
            request_id,
            Reply::Resumed {
                calls,
                dn,
                ice_servers: &ice_servers,
            },
        )
    }

    /// The socket loop: requests, registration events, pings.
    async fn connected(
        &mut self,
        socket: &mut WebSocket,
        reg_rx: &mut mpsc::UnboundedReceiver<RegEvent>,
        attach_rx: &mut mpsc::UnboundedReceiver<Attach>,
        call_rx: &mut mpsc::UnboundedReceiver<ToSession>,
    ) -> End {
        // A disconnect asked for while no socket was attached (the grace period) must not
        // close the socket that resumed the session.
        let _ = futures_util::FutureExt::now_or_never(self.kick.notified());
        self.presence.set_connected(true);
        let ping_every = self.app.cfg.ws_ping_interval;
        let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
        let mut last_heard = Instant::now();
        loop {
            tokio::select! {
                msg = socket.recv() => {
                    let msg = match msg {
                        Some(Ok(msg)) => msg,
                        Some(Err(e)) => {
                            if let Some(close) = super::close_for(e) {
                                info!(code = close.code, reason = close.reason.as_str(), "closing the socket");
                                // The `End::Dropped` path's own close is then a no-op.
                                let _ = socket.send(Message::Close(Some(close))).await;
                            }
                            return End::Dropped;
                        }
                        None => return End::Dropped,
                    };
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
                    if let Some((target, id)) = self.handover.take() {
                        return End::Handover(target, id);
                    }
                    if send_all(socket, replies).await.is_err() {
                        return End::Dropped;
                    }
                }
                Some(ev) = reg_rx.recv() => {
                    let frames = self.on_reg_event(ev);
                    if send_all(socket, frames).await.is_err() {
                        return End::Dropped;
                    }
                }
                Some(attach) = attach_rx.recv() => return End::Replaced(Box::new(attach)),
                Some(note) = call_rx.recv() => {
                    let frames = self.on_call_note(note);
                    if send_all(socket, frames).await.is_err() {
                        return End::Dropped;
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
                _ = self.kick.notified() => {
                    info!("socket closed by the server on request");
                    return End::Dropped;
                }
            }
        }
    }

    /// Dropped socket: keep the session (and its registration) for the grace period, or
    /// until a `resume` brings a new socket.
    async fn grace(
        &mut self,
        reg_rx: &mut mpsc::UnboundedReceiver<RegEvent>,
        attach_rx: &mut mpsc::UnboundedReceiver<Attach>,
        call_rx: &mut mpsc::UnboundedReceiver<ToSession>,
    ) -> Option<Attach> {
        let grace = self.app.cfg.grace_period;
        info!(
            ?grace,
            "browser gone; keeping the session for the grace period"
        );
        self.presence.set_connected(false);
        let presence = self.presence.clone();
        let until = Instant::now() + grace;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return None,
                _ = presence.taken_over() => {
                    info!("DN taken over by a new session; ending this one");
                    self.taken_over = true;
                    return None;
                }
                _ = self.app.shutdown.cancelled() => return None,
                Some(attach) = attach_rx.recv() => return Some(attach),
                Some(ev) = reg_rx.recv() => {
                    let mut frames = self.on_reg_event(ev);
                    self.undelivered.append(&mut frames);
                }
                Some(note) = call_rx.recv() => {
                    let mut frames = self.on_call_note(note);
                    self.undelivered.append(&mut frames);
                }
            }
        }
    }

    /// Hangs up the session's calls, then unregisters, waiting (bounded) for both.
    async fn finish(
        &mut self,
        reg_rx: &mut mpsc::UnboundedReceiver<RegEvent>,
        call_rx: &mut mpsc::UnboundedReceiver<ToSession>,
    ) {
        let started = Instant::now();
        self.end_calls(call_rx, None).await;
        if self.taken_over {
            if let Some(reg) = self.reg.take() {
                reg.handle.abandon();
            }
            return;
        }
        // A session in its grace period when SIGTERM came keeps to the shutdown's time too.
        let wait = if self.app.shutdown.is_cancelled() {
            SHUTDOWN_WAIT.saturating_sub(started.elapsed())
        } else {
            UNREGISTER_WAIT
        };
        self.end_registration(reg_rx, wait).await;
    }

    /// The gateway is stopping (SIGTERM/SIGINT) while the browser is connected: its calls
    /// end with BYE and it hears each `hangup` (`by: server`) on the open socket, then its
    /// DN is unregistered and it hears `unregistered`, then the socket closes.
    async fn shut_down(
        &mut self,
        mut socket: WebSocket,
        reg_rx: &mut mpsc::UnboundedReceiver<RegEvent>,
        call_rx: &mut mpsc::UnboundedReceiver<ToSession>,
    ) {
        info!(
            calls = self.calls.len(),
            "gateway shutting down: ending the session"
        );
        let started = Instant::now();
        let mut open = self.end_calls(call_rx, Some(&mut socket)).await;
        let left = SHUTDOWN_WAIT.saturating_sub(started.elapsed());
        let frames = self.end_registration(reg_rx, left).await;
        if open {
            open = send_all(&mut socket, frames).await.is_ok();
        }
        if open {
            let close = CloseFrame {
                code: 1001,
                reason: "the gateway is shutting down".into(),
            };
            let _ = socket.send(Message::Close(Some(close))).await;
        }
    }

    /// Ends every call of the session (`ServerHangup`: BYE, CANCEL or a final response as
    /// the call's state needs) and waits, bounded, for their `hangup` frames, which go to
    /// `socket` when there is one. Returns whether that socket is still usable.
    async fn end_calls(
        &mut self,
        call_rx: &mut mpsc::UnboundedReceiver<ToSession>,
        mut socket: Option<&mut WebSocket>,
    ) -> bool {
        for call in self.calls.values() {
            call.send(CallCommand::ServerHangup);
        }
        let deadline = Instant::now() + CALL_END_WAIT;
        while !self.calls.is_empty() {
            match tokio::time::timeout_at(deadline, call_rx.recv()).await {
                Ok(Some(note)) => {
                    let frames = self.on_call_note(note);
                    if let Some(s) = socket.as_deref_mut() {
                        if send_all(s, frames).await.is_err() {
                            socket = None;
                        }
                    }
                }
                _ => {
                    warn!(calls = self.calls.len(), "calls did not end in time");
                    break;
                }
            }
        }
        if let Some(s) = socket.as_deref_mut() {
            // A far end that does not answer our BYE keeps its call's task waiting for the
            // transaction; the browser still gets the call's one `hangup` now. The task's own
            // later `hangup` finds no socket.
            let frames: Vec<String> = self
                .calls
                .drain()
                .map(|(call_id, _)| {
                    Event::Hangup {
                        call_id,
                        by: "server",
                        cause: "shutdown",
                        sip_status: None,
                    }
                    .frame()
                })
                .collect();
            if send_all(s, frames).await.is_err() {
                socket = None;
            }
        }
        socket.is_some()
    }

    /// Unregisters the session's DN (Expires: 0), waiting for it up to `wait`; returns the
    /// frames that produced for the browser.
    async fn end_registration(
        &mut self,
        reg_rx: &mut mpsc::UnboundedReceiver<RegEvent>,
        wait: Duration,
    ) -> Vec<String> {
        let mut frames = Vec::new();
        let Some(reg) = self.reg.as_ref() else {
            return frames;
        };
        let done = reg.handle.unregister();
        if tokio::time::timeout(wait, done).await.is_err() {
            warn!(dn = %reg.dn, "unregister did not finish in time");
        }
        while let Ok(ev) = reg_rx.try_recv() {
            frames.append(&mut self.on_reg_event(ev));
        }
        if let Some(reg) = self.reg.take() {
            self.app.directory.registry.unlink(&reg.dn, &self.id);
        }
        frames
    }

    /// One text frame in, frames out.
    fn on_text(&mut self, text: &str) -> Vec<String> {
        if !self.requests.take(std::time::Instant::now()) {
            let id = protocol::parse(text).ok().map(|(id, _)| id);
            return vec![protocol::error(
                id.as_deref(),
                ErrorCode::RateLimited,
                &format!(
                    "more than {} requests per second; slow down",
                    self.app.cfg.limits.requests_per_second
                ),
                None,
            )];
        }
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
        crate::metrics::get().ws_message(request.kind());
        match request {
            Request::Ping => vec![protocol::result(
                &id,
                Reply::Pong {
                    time: rfc3339(SystemTime::now()),
                },
            )],
            Request::Register(p) => self.register(id, p),
            Request::Unregister => self.unregister(id),
            Request::Resume(p) => self.resume(id, p),
            Request::Call(p) => self.call(id, p),
            Request::Answer(p) => self.answer(id, p),
            Request::Renegotiate(p) => {
                let sdp = p.sdp;
                self.call_request(id, &p.call_id, |request_id| CallCommand::Renegotiate {
                    sdp,
                    request_id,
                })
            }
            Request::Reject(p) => {
                self.call_command(id, &p.call_id, CallCommand::Reject(p.status.unwrap_or(486)))
            }
            Request::Hangup(p) => self.call_command(id, &p.call_id, CallCommand::Hangup),
            Request::IceCandidate(p) => self.ice_candidate(id, p),
            Request::Dtmf(p) => {
                let digits = p.digits;
                let duration = p.duration.unwrap_or(100);
                let info = p.method.as_deref() == Some("info");
                self.call_request(id, &p.call_id, |request_id| CallCommand::Dtmf {
                    digits,
                    duration,
                    info,
                    from: Requester::Browser(request_id),
                })
            }
            Request::Hold(p, on) => {
                self.call_request(id, &p.call_id, |request_id| CallCommand::Hold {
                    on,
                    from: Requester::Browser(request_id),
                })
            }
            Request::Transfer(p) => match self.app.ua.target_uri(&p.to) {
                Some(target) => {
                    self.call_request(id, &p.call_id, |request_id| CallCommand::Transfer {
                        target,
                        from: Requester::Browser(request_id),
                    })
                }
                None => vec![protocol::error(
                    Some(&id),
                    ErrorCode::BadRequest,
                    "payload.to: not a valid SIP URI",
                    None,
                )],
            },
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
        if let Some(ip) = self.peer_ip {
            let limited = self.app.limiter.register(
                ip,
                &p.dn,
                &self.app.cfg.limits,
                std::time::Instant::now(),
            );
            if let Err(wait) = limited {
                info!(dn = %p.dn, %ip, "register attempt rate-limited");
                return vec![protocol::error(
                    Some(&id),
                    ErrorCode::RateLimited,
                    &format!(
                        "too many register attempts for DN {} from this address; retry in {} s",
                        p.dn,
                        wait.as_secs().max(1)
                    ),
                    None,
                )];
            }
        }
        let claimed = self
            .app
            .directory
            .registry
            .claim(
                &p.dn,
                &self.id,
                p.display_name.clone(),
                Secret::new(p.password.clone()),
            )
            .is_ok();
        if !claimed && !self.take_over(&p) {
            return vec![protocol::error(
                Some(&id),
                ErrorCode::AlreadyRegistered,
                &format!("DN {} is registered by another session", p.dn),
                None,
            )];
        }
        tracing::Span::current().record("dn", p.dn.as_str());
        info!(dn = %p.dn, "registering");
        let handle = register_task::spawn(
            self.app.ua.clone(),
            self.app.directory.clone(),
            RegistrationParams {
                dn: p.dn.clone(),
                password: Secret::new(p.password.clone()),
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

    /// v1.1: a DN held by a session whose browser is gone (its grace period) goes to this
    /// session when the password is the one it registered with; the old session ends, its
    /// calls with it. A DN whose session is connected stays where it is.
    fn take_over(&mut self, p: &protocol::RegisterPayload) -> bool {
        let dir = &self.app.directory;
        let Some(owner) = dir.registry.owner(&p.dn) else {
            return false;
        };
        if owner == self.id || !dir.sessions.in_grace(&owner) {
            return false;
        }
        let moved = dir.registry.take_over(
            &p.dn,
            &owner,
            &self.id,
            p.display_name.clone(),
            Secret::new(p.password.clone()),
        );
        if moved.is_err() {
            info!(dn = %p.dn, "DN takeover refused: wrong password or the owner changed");
            return false;
        }
        dir.sessions.take_over(&owner);
        info!(dn = %p.dn, from = %owner, "DN taken over from a session in its grace period");
        true
    }

    fn resume(&mut self, id: String, p: protocol::ResumePayload) -> Vec<String> {
        let refuse = |code, message: &str| vec![protocol::error(Some(&id), code, message, None)];
        if p.session_id == self.id {
            return refuse(
                ErrorCode::InvalidState,
                "this connection already is that session",
            );
        }
        if self.reg.is_some() || !self.calls.is_empty() {
            return refuse(
                ErrorCode::InvalidState,
                "this session has its own registration; resume from a new connection",
            );
        }
        let target = match self
            .app
            .directory
            .sessions
            .attach_to(&p.session_id, &p.resume_token)
        {
            Ok(attach) => attach,
            Err(ResumeRefused::WrongToken) => {
                return refuse(ErrorCode::Unauthorized, "wrong resumeToken")
            }
            Err(ResumeRefused::Unknown) => {
                return refuse(
                    ErrorCode::InvalidState,
                    "no such session to resume (unknown, or its grace period is over)",
                )
            }
        };
        self.handover = Some((target, id));
        Vec::new()
    }

    fn call(&mut self, id: String, p: protocol::CallPayload) -> Vec<String> {
        let requested_at = std::time::Instant::now();
        let refuse = |code, message: &str| vec![protocol::error(Some(&id), code, message, None)];
        let Some(reg) = self.reg.as_ref() else {
            return refuse(ErrorCode::NotRegistered, "register a DN before calling");
        };
        if reg.told != Some("registered") {
            return refuse(
                ErrorCode::NotRegistered,
                "the DN is not registered right now",
            );
        }
        let Some(target) = self.app.ua.target_uri(&p.to) else {
            return refuse(ErrorCode::BadRequest, "payload.to: not a valid SIP URI");
        };
        let out = match self.app.media.outbound(&p.sdp) {
            Ok(out) => out,
            Err(media::engine::MediaError::Sdp(e)) => {
                return refuse(ErrorCode::BadRequest, &format!("payload.sdp: {e}"));
            }
            Err(e) => return refuse(ErrorCode::MediaFailed, &e.to_string()),
        };
        let call_id = random_hex();
        let headers = p
            .headers
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, v)| v.as_str().map(|v| (k, v.to_string())))
            .collect();
        info!(call = %call_id, to = %target, "outgoing call");
        let handle = crate::call::driver::spawn_outgoing(
            self.app.env.clone(),
            crate::call::driver::Outgoing {
                id: call_id.clone(),
                dn: reg.dn.clone(),
                target,
                sip_offer: out.sip_offer,
                headers,
                media: out.session,
                requested_at,
            },
            self.call_tx.clone(),
        );
        self.calls.insert(call_id.clone(), handle);
        vec![protocol::frame(
            "result",
            Some(&id),
            Reply::Calling {
                call_id: &call_id,
                sdp: &out.browser_answer,
            },
        )]
    }

    fn answer(&mut self, id: String, p: protocol::AnswerPayload) -> Vec<String> {
        let sdp = p.sdp;
        self.call_request(id, &p.call_id, |request_id| CallCommand::Answer {
            sdp,
            request_id,
        })
    }

    /// A request the call answers itself, through the session's call inbox, in order with
    /// the call's events.
    fn call_request(
        &mut self,
        id: String,
        call_id: &str,
        make: impl FnOnce(String) -> CallCommand,
    ) -> Vec<String> {
        match self.calls.get(call_id) {
            Some(call) if call.send(make(id.clone())) => Vec::new(),
            _ => vec![protocol::error(
                Some(&id),
                ErrorCode::NoSuchCall,
                "no such call",
                None,
            )],
        }
    }

    fn call_command(&mut self, id: String, call_id: &str, cmd: CallCommand) -> Vec<String> {
        match self.calls.get(call_id) {
            Some(call) if call.send(cmd) => vec![protocol::result(&id, Reply::Done {})],
            _ => vec![protocol::error(
                Some(&id),
                ErrorCode::NoSuchCall,
                "no such call",
                None,
            )],
        }
    }

    /// The gateway is ICE-lite and learns the browser's address from its checks, so
    /// trickled candidates need no action; they are accepted for protocol completeness.
    fn ice_candidate(&mut self, id: String, p: protocol::IceCandidatePayload) -> Vec<String> {
        if !self.calls.contains_key(&p.call_id) {
            return vec![protocol::error(
                Some(&id),
                ErrorCode::NoSuchCall,
                "no such call",
                None,
            )];
        }
        vec![protocol::result(&id, Reply::Done {})]
    }

    fn on_call_note(&mut self, note: ToSession) -> Vec<String> {
        if let Some(handle) = note.handle {
            self.calls.insert(note.call_id.clone(), handle);
        }
        if note.ended {
            self.calls.remove(&note.call_id);
        }
        vec![note.frame]
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
        let app = self.app.clone();
        let session_id = self.id.clone();
        let Some(reg) = self.reg.as_mut() else {
            return Vec::new();
        };
        let dn = reg.dn.clone();
        let state = |state: &str, reason: Option<&str>, sip_status: Option<u16>| {
            let reg = protocol::RegistrationState {
                dn: &dn,
                state,
                reason,
                sip_status,
            };
            app.directory
                .events
                .publish("registrationState", reg.live(&session_id));
            reg.frame()
        };
        match ev {
            RegEvent::Registered { expires } => {
                if let Some(ip) = self.peer_ip {
                    self.app.limiter.auth_ok(ip, &dn);
                }
                let mut out = Vec::new();
                if let Some(id) = reg.pending_register.take() {
                    out.push(protocol::result(
                        &id,
                        Reply::Registered { dn: &dn, expires },
                    ));
                }
                if reg.told.replace("registered") != Some("registered") {
                    out.push(state("registered", None, None));
                }
                self.app.directory.registry.link(
                    &dn,
                    AgentLink {
                        session_id: self.id.clone(),
                        inbox: self.call_tx.clone(),
                    },
                );
                out
            }
            RegEvent::Rejected { status, auth } => {
                if let (true, Some(ip)) = (auth, self.peer_ip) {
                    self.app
                        .limiter
                        .auth_failed(ip, &dn, std::time::Instant::now());
                }
                let mut out = Vec::new();
                if let Some(id) = reg.pending_register.take() {
                    let (code, message, sip) = refusal(&dn, status, auth);
                    out.push(protocol::error(Some(&id), code, &message, sip));
                }
                self.app.directory.registry.unlink(&dn, &self.id);
                self.reg = None;
                out
            }
            RegEvent::Lost { status } => {
                let (reason, sip) = lost(status);
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
                    out.push(protocol::result(&id, Reply::Done {}));
                }
                out.push(state("unregistered", None, None));
                self.app.directory.registry.unlink(&dn, &self.id);
                self.reg = None;
                out
            }
        }
    }
}

/// The ICE servers a session hands to `RTCPeerConnection`: the configured list, and with a
/// TURN shared secret an entry with credentials made for this session, valid for the
/// configured lifetime from `now`.
pub(crate) fn ice_servers_for(cfg: &Config, session_id: &str, now: SystemTime) -> Value {
    let mut list = cfg.ice_servers.as_array().cloned().unwrap_or_default();
    if let Some(turn) = &cfg.turn {
        let expires = now
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .saturating_add(turn.ttl)
            .as_secs();
        let (username, credential) =
            crate::auth::turn_credentials(&turn.secret, session_id, expires);
        list.push(serde_json::json!({
            "urls": turn.urls,
            "username": username,
            "credential": credential,
        }));
    }
    Value::Array(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrar_refusals_say_what_went_wrong_without_the_password() {
        let (code, message, sip) = refusal("5001", 403, true);
        assert_eq!((code.as_str(), sip), ("auth_failed", Some(403)));
        assert!(message.contains("5001"));
        let (code, _, sip) = refusal("5001", 408, false);
        assert_eq!((code.as_str(), sip), ("timeout", None));
        let (code, message, sip) = refusal("5001", 503, false);
        assert_eq!((code.as_str(), sip), ("upstream_unavailable", Some(503)));
        assert!(message.contains("503"));
    }

    #[test]
    fn a_lost_registration_says_whether_the_registrar_answered() {
        assert_eq!(lost(408), ("registrar not answering; retrying", None));
        assert_eq!(lost(500), ("refresh refused; retrying", Some(500)));
    }

    #[test]
    fn ice_servers_carry_per_session_turn_credentials_valid_for_the_ttl() {
        let cli = crate::config::Cli {
            ice_servers: Some(r#"[{"urls":"stun:stun.example.com"}]"#.into()),
            turn_secret: Some("north".into()),
            turn_urls: Some("turns:turn.example.com:443?transport=tcp".into()),
            turn_ttl: Some("3600".into()),
            ..Default::default()
        };
        let cfg = Config::resolve(cli).expect("config");
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let list = ice_servers_for(&cfg, "s1", now);
        assert_eq!(list[0]["urls"], "stun:stun.example.com");
        assert_eq!(
            list[1]["urls"][0],
            "turns:turn.example.com:443?transport=tcp"
        );
        assert_eq!(list[1]["username"], "1800003600:s1");
        let (_, expected) =
            crate::auth::turn_credentials(&Secret::new("north".into()), "s1", 1_800_003_600);
        assert_eq!(list[1]["credential"], expected.as_str());
        assert!(!list.to_string().contains("north"));
        let other = ice_servers_for(&cfg, "s2", now);
        assert_ne!(other[1]["credential"], list[1]["credential"]);
    }
}
