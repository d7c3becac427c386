//! The tokio driver of one DN's [`Registration`]: builds and sends the REGISTERs it asks for,
//! feeds back responses, time-outs and upstream recoveries, keeps the shared registry in step
//! and reports to the owning browser session.

use std::sync::Arc;
use std::time::Duration;

use rsipstack::sip::{Header, Method};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{info, warn, Instrument};

use super::digest;
use super::registration::{Action, AuthToSend, Outcome, Registration, Reply};
use super::ua::{self, SipError, SipUa};
use crate::auth::Secret;
use crate::directory::{Directory, RegState};

/// How long the gateway waits for a final answer to one REGISTER before it treats the
/// registrar as not answering (the transaction's own Timer F is 32 s; a browser waits less).
const REQUEST_DEADLINE: Duration = Duration::from_secs(10);

/// What the registration tells its session.
pub type RegEvent = Outcome;

/// Everything a registration needs to start.
pub struct RegistrationParams {
    /// The extension.
    pub dn: String,
    /// Its SIP password.
    pub password: Secret,
    /// Owning session, for the registry.
    pub session_id: String,
    /// Expires to ask for.
    pub expires: u32,
    /// Pause between retries after a failure.
    pub retry: Duration,
}

/// Control of a running registration. Dropping it unregisters.
pub struct RegistrationHandle {
    cmd: mpsc::UnboundedSender<Control>,
}

/// What the owning session asks of its registration.
enum Control {
    /// REGISTER with Expires: 0; the sender completes when it is over.
    Unregister(oneshot::Sender<()>),
    /// Stop at once and leave the binding as it is: another session took the DN over and
    /// refreshes the binding itself.
    Abandon,
}

impl RegistrationHandle {
    /// Asks for Expires: 0; the returned receiver completes when the registration is over.
    pub fn unregister(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        // A closed channel means the task already finished: the receiver then errors at
        // once, which callers treat as done.
        let _ = self.cmd.send(Control::Unregister(tx));
        rx
    }

    /// Stops refreshing without unregistering: the DN now belongs to another session.
    pub fn abandon(&self) {
        let _ = self.cmd.send(Control::Abandon);
    }
}

/// Starts the registration task. Its events go to `events`.
pub fn spawn(
    ua: Arc<SipUa>,
    directory: Arc<Directory>,
    params: RegistrationParams,
    recovered: watch::Receiver<u64>,
    events: mpsc::UnboundedSender<RegEvent>,
) -> RegistrationHandle {
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let span = tracing::info_span!("registration", dn = %params.dn, session = %params.session_id);
    tokio::spawn(run(ua, directory, params, recovered, events, cmd_rx).instrument(span));
    RegistrationHandle { cmd: cmd_tx }
}

struct Dialog {
    call_id: String,
    from_tag: String,
    cseq: u32,
}

type Inflight = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<rsipstack::sip::Response, SipError>> + Send>,
>;

async fn run(
    ua: Arc<SipUa>,
    directory: Arc<Directory>,
    params: RegistrationParams,
    mut recovered: watch::Receiver<u64>,
    events: mpsc::UnboundedSender<RegEvent>,
    mut cmd_rx: mpsc::UnboundedReceiver<Control>,
) {
    let mut machine = Registration::new(params.expires, params.retry);
    // RFC 3261 §10.2.4: one Call-ID for all REGISTERs of a binding, CSeq increasing.
    let mut dialog = Dialog {
        call_id: ua.new_call_id(),
        from_tag: ua.new_tag(),
        cseq: 0,
    };
    let contact = ua.contact_uri(&params.dn);
    let mut inflight: Option<Inflight> = None;
    let mut waiters: Vec<oneshot::Sender<()>> = Vec::new();
    let mut cmd_open = true;
    recovered.mark_unchanged();

    let mut actions = machine.start();
    loop {
        for action in actions.drain(..) {
            match action {
                Action::Send { expires, auth } => {
                    match register_request(&ua, &params, &mut dialog, &contact, expires, auth) {
                        Ok(req) => {
                            let ua = ua.clone();
                            inflight =
                                Some(Box::pin(
                                    async move { ua.send(req, REQUEST_DEADLINE).await },
                                ));
                        }
                        Err(e) => {
                            warn!(error = %e, "cannot build REGISTER");
                            inflight = Some(Box::pin(async move { Err(e) }));
                        }
                    }
                }
                Action::Report(outcome) => {
                    match &outcome {
                        Outcome::Registered { expires } => {
                            info!(expires, "registered");
                            directory.registry.set_registered(
                                &params.dn,
                                &contact,
                                Duration::from_secs(u64::from(*expires)),
                            );
                        }
                        Outcome::Rejected { status, auth } => {
                            info!(status, auth, "registration rejected");
                        }
                        Outcome::Lost { status } => {
                            warn!(status, retry_in = ?params.retry, "registration refresh failed; retrying");
                            directory.registry.set_state(&params.dn, RegState::Failed);
                        }
                        Outcome::Unregistered => {
                            info!("unregistered");
                            directory
                                .registry
                                .set_state(&params.dn, RegState::Unregistered);
                        }
                    }
                    let _ = events.send(outcome);
                }
            }
        }
        if machine.is_done() {
            break;
        }

        let deadline = machine.deadline();
        tokio::select! {
            result = async { match inflight.as_mut() { Some(f) => f.await, None => std::future::pending().await } } => {
                inflight = None;
                let now = std::time::Instant::now();
                actions = match result {
                    Ok(resp) => machine.on_reply(&Reply {
                        status: resp.status_code.code(),
                        challenges: ua::challenges(&resp),
                        granted: ua::granted_expires(&resp, &contact),
                        min_expires: ua::min_expires(&resp),
                    }, now),
                    Err(e) => {
                        info!(error = %e, "REGISTER got no final response");
                        machine.on_timeout(now)
                    }
                };
            }
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(Instant::from_std(d)).await, None => std::future::pending().await } } => {
                actions = machine.on_timer(std::time::Instant::now());
            }
            cmd = cmd_rx.recv(), if cmd_open => {
                match cmd {
                    Some(Control::Unregister(waiter)) => waiters.push(waiter),
                    Some(Control::Abandon) => {
                        info!("DN taken over by another session; its registration goes on there");
                        return;
                    }
                    // The handle is gone: nobody owns this DN any more.
                    None => cmd_open = false,
                }
                actions = machine.unregister();
            }
            changed = recovered.changed() => {
                actions = match changed {
                    Ok(()) => {
                        info!("upstream is back; registering again");
                        machine.upstream_recovered()
                    }
                    Err(_) => Vec::new(),
                };
            }
        }
    }
    directory.registry.release(&params.dn, &params.session_id);
    for w in waiters {
        let _ = w.send(());
    }
}

fn register_request(
    ua: &SipUa,
    params: &RegistrationParams,
    dialog: &mut Dialog,
    contact: &str,
    expires: u32,
    auth: Option<AuthToSend>,
) -> Result<rsipstack::sip::Request, SipError> {
    dialog.cseq += 1;
    let aor = ua.aor(&params.dn);
    let request_uri = ua.registrar_uri();
    let mut req = ua.build_request(
        Method::Register,
        &request_uri,
        &aor,
        &dialog.from_tag,
        &aor,
        &dialog.call_id,
        dialog.cseq,
    )?;
    req.headers
        .push(Header::Contact(format!("<{contact}>").into()));
    req.headers.push(Header::Expires(expires.into()));
    req.headers.push(Header::Allow(ua::ALLOW.into()));
    if let Some(auth) = auth {
        let cnonce = format!("{:032x}", rand::random::<u128>());
        let value = digest::authorization(
            &auth.challenge,
            &params.dn,
            params.password.expose(),
            "REGISTER",
            &request_uri,
            auth.nc,
            &cnonce,
        );
        req.headers.push(if auth.proxy {
            Header::ProxyAuthorization(value.into())
        } else {
            Header::Authorization(value.into())
        });
    }
    req.headers.push(Header::ContentLength(0u32.into()));
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2".into());
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
