//! The gateway's SIP user agent on top of rsipstack: transports, the endpoint, requests
//! toward the upstream, and answers to requests from the network.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::sip::prelude::HeadersExt;
use rsipstack::sip::{self, Header, Method, Request, Response, SipMessage, StatusCode, Uri};
use rsipstack::transaction::endpoint::EndpointInnerRef;
use rsipstack::transaction::key::{TransactionKey, TransactionRole};
use rsipstack::transaction::transaction::Transaction;
use rsipstack::transaction::{make_call_id, make_tag, CallIdFormat, TransactionReceiver};
use rsipstack::transaction::{Endpoint, EndpointBuilder};
use rsipstack::transport::udp::UdpConnection;
use rsipstack::transport::{SipAddr, TcpListenerConnection, TransportLayer};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::sanity::{in_dialog, Sanity};
use super::trust::{self, TrustedSources};
use crate::config::{Config, SipTransport};

/// `User-Agent` / `Server` of every message we send.
pub const USER_AGENT: &str = concat!("browser-sip-gateway/", env!("CARGO_PKG_VERSION"));

/// Methods we answer; `Allow` must not promise more.
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, REFER, NOTIFY";

/// Why a request toward the upstream did not get a final response.
#[derive(Debug, thiserror::Error)]
pub enum SipError {
    /// No final response within the deadline (or the transaction timed out).
    #[error("no response from the upstream")]
    Timeout,
    /// The stack could not build or send the request.
    #[error("sip stack: {0}")]
    Stack(Box<rsipstack::Error>),
    /// A listen socket could not be opened.
    #[error("cannot listen for SIP on {addr} ({transport}): {reason}")]
    Listen {
        /// Address.
        addr: SocketAddr,
        /// udp or tcp.
        transport: &'static str,
        /// OS error.
        reason: String,
    },
}

impl From<rsipstack::Error> for SipError {
    fn from(e: rsipstack::Error) -> Self {
        SipError::Stack(Box::new(e))
    }
}

/// The SIP side of the gateway.
pub struct SipUa {
    endpoint: Endpoint,
    dialogs: Arc<DialogLayer>,
    cfg: Arc<Config>,
    upstream: SipAddr,
    cancel: CancellationToken,
}

impl SipUa {
    /// Opens UDP and TCP on `--sip-listen` and starts the endpoint. Incoming requests are
    /// returned for [`serve_incoming`]; the caller decides where they go.
    pub async fn start(cfg: Arc<Config>) -> Result<(Arc<SipUa>, TransactionReceiver), SipError> {
        let cancel = CancellationToken::new();
        let mut transport_layer = TransportLayer::new(cancel.child_token());
        let external = Some(cfg.sip_public_addr());

        let udp =
            UdpConnection::create_connection(cfg.sip_listen, external, Some(cancel.child_token()))
                .await
                .map_err(|e| SipError::Listen {
                    addr: cfg.sip_listen,
                    transport: "udp",
                    reason: e.to_string(),
                })?;
        transport_layer.add_transport(udp.into());

        // rsipstack binds its TCP listener in a background task and only logs a failure;
        // try the bind here first so a taken port stops start-up with a clear line.
        std::net::TcpListener::bind(cfg.sip_listen).map_err(|e| SipError::Listen {
            addr: cfg.sip_listen,
            transport: "tcp",
            reason: e.to_string(),
        })?;
        let tcp = TcpListenerConnection::new(cfg.sip_listen, external).await?;
        transport_layer.add_transport(tcp.into());

        let upstream = SipAddr {
            r#type: Some(match cfg.upstream_transport {
                SipTransport::Udp => sip::Transport::Udp,
                SipTransport::Tcp => sip::Transport::Tcp,
            }),
            addr: sip::HostWithPort::try_from(format!(
                "{}:{}",
                cfg.upstream_host, cfg.upstream_port
            ))
            .map_err(rsipstack::Error::from)?,
        };
        // The upstream is our outbound proxy (RFC 3261 §8.1.2): every request we send, in a
        // dialog or not, CANCEL included, leaves toward it, whatever its Request-URI says.
        transport_layer.outbound = Some(upstream.clone());

        // Trusted before the first packet is read, so the upstream's first INVITE is not
        // refused; a name is looked up again in the background.
        let trust = Arc::new(TrustedSources::new(cfg.sip_trusted.clone()));
        let resolved = trust::refresh_upstream(&trust, &cfg.upstream_host, cfg.upstream_port).await;
        tokio::spawn(trust::track_upstream(
            trust.clone(),
            cfg.upstream_host.clone(),
            cfg.upstream_port,
            resolved,
            cancel.child_token(),
        ));
        rsipstack::transport::connection::set_unparsed_hook(super::sanity::unknown_method_reply);

        let endpoint = EndpointBuilder::new()
            .with_user_agent(USER_AGENT)
            .with_transport_layer(transport_layer)
            .with_cancel_token(cancel.clone())
            .with_allows(vec![
                Method::Invite,
                Method::Ack,
                Method::Cancel,
                Method::Bye,
                Method::Options,
                Method::Info,
                Method::Update,
                Method::Refer,
                Method::Notify,
            ])
            .with_transport_inspector(Box::new(Sanity::new(trust)))
            .with_inspector(Box::new(crate::metrics::SipCounter))
            .build();
        let incoming = endpoint.incoming_transactions()?;
        let dialogs = Arc::new(DialogLayer::new(endpoint.inner.clone()));
        let inner = endpoint.inner.clone();
        tokio::spawn(async move {
            if let Err(e) = inner.serve().await {
                warn!(error = %e, "SIP endpoint stopped");
            }
        });

        info!(listen = %cfg.sip_listen, public = %cfg.sip_public_addr(), upstream = %cfg.sip_upstream, "SIP user agent started");
        Ok((
            Arc::new(SipUa {
                endpoint,
                dialogs,
                cfg,
                upstream,
                cancel,
            }),
            incoming,
        ))
    }

    /// Stops the endpoint and its transports.
    pub fn shutdown(&self) {
        self.endpoint.shutdown();
        self.cancel.cancel();
    }

    /// The dialog layer (INVITE dialogs of calls).
    pub fn dialogs(&self) -> &Arc<DialogLayer> {
        &self.dialogs
    }

    /// Where requests to the upstream go.
    pub fn upstream_addr(&self) -> SipAddr {
        self.upstream.clone()
    }

    fn inner(&self) -> &EndpointInnerRef {
        &self.endpoint.inner
    }

    /// The configuration this UA runs with.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Our address as the upstream should see it, with the upstream's transport.
    fn local_addr(&self) -> SipAddr {
        SipAddr {
            r#type: self.upstream.r#type,
            addr: self.cfg.sip_public_addr().into(),
        }
    }

    /// The registrar's Request-URI: the domain, with the upstream's port when the domain is
    /// the upstream itself (Kamailio only takes a request as its own when the port matches).
    pub fn registrar_uri(&self) -> String {
        if self.cfg.sip_domain == self.cfg.upstream_host && self.cfg.upstream_port != 5060 {
            format!("sip:{}:{}", self.cfg.sip_domain, self.cfg.upstream_port)
        } else {
            format!("sip:{}", self.cfg.sip_domain)
        }
    }

    /// The Contact we register for `dn`.
    pub fn contact_uri(&self, dn: &str) -> String {
        let addr = self.cfg.sip_public_addr();
        match self.cfg.upstream_transport {
            SipTransport::Udp => format!("sip:{dn}@{addr}"),
            SipTransport::Tcp => format!("sip:{dn}@{addr};transport=tcp"),
        }
    }

    /// The Request-URI for a dialled `to`: a SIP URI as given, or a number at our domain.
    /// `None` when the result is not a valid SIP URI.
    pub fn target_uri(&self, to: &str) -> Option<String> {
        let to = to.trim();
        let target = if to.starts_with("sip:") || to.starts_with("sips:") {
            to.to_string()
        } else {
            format!("sip:{to}@{}", self.cfg.sip_domain)
        };
        (!to.is_empty() && Uri::try_from(target.as_str()).is_ok()).then_some(target)
    }

    /// The AOR of `dn`.
    pub fn aor(&self, dn: &str) -> String {
        format!("sip:{dn}@{}", self.cfg.sip_domain)
    }

    /// A new Call-ID.
    pub fn new_call_id(&self) -> String {
        make_call_id(None, CallIdFormat::default())
            .value()
            .to_string()
    }

    /// A new tag.
    pub fn new_tag(&self) -> String {
        make_tag().to_string()
    }

    /// Builds an out-of-dialog request with fresh Via branch. `from`/`to` are URIs.
    #[allow(clippy::too_many_arguments)]
    pub fn build_request(
        &self,
        method: Method,
        request_uri: &str,
        from: &str,
        from_tag: &str,
        to: &str,
        call_id: &str,
        cseq: u32,
    ) -> Result<Request, SipError> {
        let uri = Uri::try_from(request_uri).map_err(rsipstack::Error::from)?;
        let from_uri = Uri::try_from(from).map_err(rsipstack::Error::from)?;
        let to_uri = Uri::try_from(to).map_err(rsipstack::Error::from)?;
        let via = self.inner().get_via(Some(self.local_addr()), None)?;
        let from = sip::typed::From {
            display_name: None,
            uri: from_uri,
            params: vec![],
        }
        .with_tag(from_tag.to_string().into());
        let to = sip::typed::To {
            display_name: None,
            uri: to_uri,
            params: vec![],
        };
        Ok(self.inner().make_request(
            method,
            uri,
            via,
            from,
            to,
            cseq,
            Some(sip::headers::CallId::new(call_id)),
        ))
    }

    /// Sends `req` to the upstream in a new client transaction and waits up to `deadline`
    /// for its final response.
    pub async fn send(&self, req: Request, deadline: Duration) -> Result<Response, SipError> {
        let key = TransactionKey::from_request(&req, TransactionRole::Client)?;
        if tracing::enabled!(tracing::Level::DEBUG) {
            debug!(method = %req.method, message = %req, "SIP request out");
        }
        let mut tx = Transaction::new_client(key, req, self.inner().clone(), None);
        tx.destination = Some(self.upstream.clone());
        let exchange = async {
            tx.send().await?;
            while let Some(msg) = tx.receive().await {
                if let SipMessage::Response(resp) = msg {
                    if resp.status_code.code() >= 200 {
                        return Ok(resp);
                    }
                }
            }
            Err(SipError::Timeout)
        };
        match tokio::time::timeout(deadline, exchange).await {
            Ok(result) => result,
            Err(_) => Err(SipError::Timeout),
        }
    }
}

/// What to do with a new INVITE (the call layer's router).
pub type InviteRouter = Arc<dyn Fn(Transaction) + Send + Sync>;

/// Answers requests from the network: in-dialog requests go to their dialog, new INVITEs
/// to `on_invite`, the rest are answered here.
pub async fn serve_incoming(
    mut incoming: TransactionReceiver,
    dialogs: Arc<DialogLayer>,
    on_invite: InviteRouter,
) {
    while let Some(mut tx) = incoming.recv().await {
        // Requests inside a dialog (BYE, re-INVITE, INFO, ACK, CANCEL of a pending INVITE)
        // belong to that dialog.
        if let Some(mut dialog) = dialogs.match_dialog(&tx) {
            tokio::spawn(async move {
                if let Err(e) = dialog.handle(&mut tx).await {
                    debug!(error = %e, "in-dialog request failed");
                }
            });
            continue;
        }
        // A request for a dialog we do not have (a NOTIFY talk for a call that is over, a
        // BYE that crossed ours): 481 (RFC 3261 §12.2.2). ACKs get no response.
        if in_dialog(&tx.original) && tx.original.method != Method::Ack {
            tokio::spawn(async move {
                debug!(method = %tx.original.method, "request for no dialog of ours: 481");
                if let Err(e) = tx.reply(StatusCode::CallTransactionDoesNotExist).await {
                    debug!(error = %e, "could not answer request");
                }
            });
            continue;
        }
        if tx.original.method == Method::Invite {
            on_invite(tx);
            continue;
        }
        tokio::spawn(async move {
            let method = tx.original.method;
            let result = match method {
                Method::Options => {
                    let headers = vec![
                        Header::Allow(ALLOW.into()),
                        Header::Accept("application/sdp".into()),
                        Header::Other("Accept-Language".into(), "en".into()),
                    ];
                    tx.reply_with(StatusCode::OK, headers, None).await
                }
                Method::Ack => Ok(()),
                Method::Invite => tx.reply(StatusCode::TemporarilyUnavailable).await,
                // A NOTIFY outside any dialog belongs to no subscription of ours (we never
                // SUBSCRIBE; REFER and Genesys talk/hold NOTIFYs come in their dialog):
                // RFC 6665 §4.1.3 says 481, not 200.
                Method::Bye | Method::Cancel | Method::Notify => {
                    tx.reply(StatusCode::CallTransactionDoesNotExist).await
                }
                _ => {
                    tx.reply_with(
                        StatusCode::MethodNotAllowed,
                        vec![Header::Allow(ALLOW.into())],
                        None,
                    )
                    .await
                }
            };
            if let Err(e) = result {
                debug!(%method, error = %e, "could not answer request");
            }
        });
    }
}

/// Expiry granted to `contact` in a 2xx to REGISTER: the matching Contact's `expires`
/// parameter, else the `Expires` header (RFC 3261 §10.2.4).
pub fn granted_expires(resp: &Response, contact: &str) -> Option<u32> {
    let ours = Uri::try_from(contact).ok();
    let contacts = resp.typed_contact_headers().unwrap_or_default();
    let matching = contacts.iter().find(|c| match &ours {
        Some(o) => {
            c.uri.user() == o.user()
                && c.uri.host_with_port.host == o.host_with_port.host
                && c.uri.host_with_port.port.as_ref().map(|p| p.value())
                    == o.host_with_port.port.as_ref().map(|p| p.value())
        }
        None => false,
    });
    if let Some(exp) = matching.and_then(|c| c.expires()) {
        return Some(exp);
    }
    resp.expires_header()
        .and_then(|e| e.value().trim().parse().ok())
}

/// `WWW-Authenticate` (or, for a 407, `Proxy-Authenticate`) values of a response.
pub fn challenges(resp: &Response) -> Vec<String> {
    resp.headers
        .iter()
        .filter_map(|h| match h {
            Header::WwwAuthenticate(v) => Some(v.value().to_string()),
            Header::ProxyAuthenticate(v) => Some(v.value().to_string()),
            _ => None,
        })
        .collect()
}

/// `Min-Expires` of a 423.
pub fn min_expires(resp: &Response) -> Option<u32> {
    resp.headers.iter().find_map(|h| match h {
        Header::MinExpires(v) => v.value().trim().parse().ok(),
        _ => None,
    })
}
