//! The media plane's command API, used by signaling: create a call's media from the first
//! SDP (a browser offer or a SIP offer), complete it with the other side's SDP, hold, stop.
//! SDP work happens here, in the caller's thread; packets are the workers' business.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::browser_leg::BrowserRemote;
use crate::dtls::{keep_role, role_for_answer, role_from_answer, DtlsCertificate};
use crate::ports::PortPool;
use crate::relay::PtMap;
use crate::sdp::{self, Codec, CodecChoice, Direction};
use crate::stats::{MediaCounters, MediaSnapshot};
use crate::transcode::{TranscodeError, TranscodePlan, Transcoder, G711};
use crate::worker::{self, Command, MediaEvent, NewCall, Recode, RelayPlan, WorkerHandle};

/// Settings of the media plane.
#[derive(Clone, Debug)]
pub struct MediaConfig {
    /// Address the sockets bind to.
    pub bind_ip: IpAddr,
    /// Address written into the SDP toward SIP (`c=`, `o=`).
    pub sip_ip: IpAddr,
    /// Addresses offered to browsers as host candidates, most preferred first (at least one).
    /// Replies leave from the address a browser sent to, so with a wildcard `bind_ip` any
    /// number of them works on a multi-homed host.
    pub browser_ips: Vec<IpAddr>,
    /// Port range for SIP-side RTP (and the workers' browser ports, taken first).
    pub rtp_ports: (u16, u16),
    /// Worker threads.
    pub workers: usize,
    /// Silence on a leg that ends the call.
    pub media_timeout: Duration,
    /// How long a call waits for a browser leg that went quiet (consent lost, no media) to
    /// come back through `renegotiate` before it fails.
    pub restart_grace: Duration,
    /// Where to listen for ICE-TCP (RFC 6544 passive candidates), if at all. An unspecified
    /// IP gives a candidate on every one of `browser_ips`.
    pub ice_tcp_listen: Option<SocketAddr>,
}

/// Why media could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The SDP could not be used.
    #[error("SDP: {0}")]
    Sdp(#[from] sdp::SdpError),
    /// The browser asked for a DTLS role we cannot take.
    #[error("unsupported a=setup {0:?}")]
    Setup(String),
    /// No codec both legs can carry, even with Opus <-> G.711 transcoding.
    #[error("no common codec")]
    NoCommonCodec,
    /// The Opus codecs for a transcoded call could not be set up.
    #[error("transcoding: {0}")]
    Transcode(#[from] TranscodeError),
    /// The port range is used up.
    #[error("{0}")]
    Ports(#[from] crate::ports::Exhausted),
    /// A socket could not be opened.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// The ICE-TCP listener could not be opened.
    #[error("cannot listen for ICE-TCP on {addr}: {source}")]
    IceTcp {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// DTLS set-up failed.
    #[error("DTLS: {0}")]
    Dtls(#[from] crate::dtls::DtlsError),
    /// The far end did not negotiate telephone-event.
    #[error("the far end did not negotiate telephone-event; use method info")]
    NoTelephoneEvent,
    /// The browser leg has no description yet (an incoming call not answered).
    #[error("the browser has not answered this call yet")]
    NotConnected,
    /// The call is unknown or its worker is gone.
    #[error("media session is gone")]
    Gone,
}

/// The media plane: workers, the DTLS certificate, the port pool.
pub struct MediaEngine {
    cfg: MediaConfig,
    cert: Arc<DtlsCertificate>,
    /// The ICE-TCP listener (stopped before the workers it hands connections to).
    ice_tcp: Option<IceTcp>,
    workers: Vec<WorkerHandle>,
    ports: Arc<Mutex<PortPool>>,
    next_worker: AtomicUsize,
    next_id: AtomicU64,
}

/// The ICE-TCP listener and the candidates it makes.
struct IceTcp {
    acceptor: crate::ice_tcp::Acceptor,
    /// Addresses of the passive candidates.
    ips: Vec<IpAddr>,
}

/// The addresses to put in passive candidates for a listener on `listen`: every browser
/// address for a wildcard; else the listen address if it is one of them, and if it is not
/// (a private address behind a 1:1 NAT, the browser addresses being public) all of them.
fn tcp_candidate_ips(listen: IpAddr, browser_ips: &[IpAddr]) -> Vec<IpAddr> {
    if !listen.is_unspecified() && browser_ips.contains(&listen) {
        vec![listen]
    } else {
        browser_ips.to_vec()
    }
}

/// One call's media, owned by the call.
pub struct MediaSession {
    id: u64,
    port: u16,
    engine: Arc<MediaEngine>,
    worker: usize,
    /// Events from the worker.
    pub events: mpsc::UnboundedReceiver<MediaEvent>,
    counters: Arc<MediaCounters>,
    /// The browser leg's codecs in its sending preference (browser payload types): our
    /// answer to its offer, or our offer to it until its answer replaces them.
    browser_codecs: Vec<Codec>,
    /// Codecs we offered or answered toward SIP (SIP payload types).
    sip_codecs: Vec<Codec>,
    /// The far end's last description, to re-plan when the browser's answer arrives.
    sip_remote: Option<sdp::PlainDescription>,
    /// What the legs carry, as REST shows it, once both sides are known.
    chosen: Option<String>,
    /// The transcoding the worker has codecs for, if any.
    transcoding: Option<TranscodePlan>,
    /// The far end's telephone-event payload type, once known.
    far_dtmf: Option<u8>,
    /// The browser's ICE credentials, fingerprint and our DTLS role, once known.
    browser_remote: Option<BrowserRemote>,
    /// Our ICE ufrag and password toward the browser.
    local_ice: (String, String),
    /// The SSRC we send to the browser with.
    browser_ssrc: u32,
    /// How many m-lines the browser leg's descriptions have.
    browser_mlines: usize,
    sdp_version: u64,
    session_id: u64,
    direction: Direction,
    stopped: bool,
}

/// Media for an outgoing call, made from the browser's offer.
pub struct Outbound {
    /// Our answer for the browser.
    pub browser_answer: String,
    /// Our offer for the SIP INVITE.
    pub sip_offer: String,
    /// The session.
    pub session: MediaSession,
}

/// Media for an incoming call, made from the SIP offer.
pub struct Inbound {
    /// Our offer for the browser (`incomingCall`).
    pub browser_offer: String,
    /// Our answer for the SIP 200 OK.
    pub sip_answer: String,
    /// The session.
    pub session: MediaSession,
}

/// Media for an incoming INVITE without SDP (RFC 3261 §13.2.1; Genesys' 3pcc MakeCall):
/// we offer on both legs, and the far end's answer comes in the ACK.
pub struct Offerless {
    /// Our offer for the browser (`incomingCall`).
    pub browser_offer: String,
    /// Our offer for the SIP 200 OK.
    pub sip_offer: String,
    /// The session.
    pub session: MediaSession,
}

/// What the far end's description says for the call, once applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SipRemote {
    /// Its direction as written (`c=0.0.0.0` counts as not receiving).
    pub direction: Direction,
    /// It holds the call: it does not receive, or it gave no address to send to
    /// (RFC 3264 §8.4; RFC 2543 `c=0.0.0.0`).
    pub held: bool,
}

impl SipRemote {
    fn of(desc: &sdp::PlainDescription) -> Self {
        SipRemote {
            direction: desc.direction,
            held: desc.is_hold() || desc.port == 0 || desc.addr.is_unspecified(),
        }
    }
}

/// Our SIP answer's codec with telephone-event at its clock rate, as the offer has them.
fn with_dtmf(mut codecs: Vec<Codec>, all: &[Codec]) -> Vec<Codec> {
    let clock = codecs.first().map(|c| c.clock_rate).unwrap_or(8000);
    if let Some(te) = all
        .iter()
        .find(|c| c.name.eq_ignore_ascii_case("telephone-event") && c.clock_rate == clock)
        .or_else(|| {
            all.iter()
                .find(|c| c.name.eq_ignore_ascii_case("telephone-event"))
        })
    {
        codecs.push(te.clone());
    }
    codecs
}

impl MediaEngine {
    /// Starts the workers, each with a browser port from the range.
    pub fn start(cfg: MediaConfig) -> Result<Arc<MediaEngine>, MediaError> {
        let cert = Arc::new(DtlsCertificate::generate()?);
        let mut pool = PortPool::new(cfg.rtp_ports.0, cfg.rtp_ports.1);
        let mut workers = Vec::new();
        for i in 0..cfg.workers.max(1) {
            let socket = loop {
                let port = pool.allocate()?;
                match UdpSocket::bind(SocketAddr::new(cfg.bind_ip, port)) {
                    Ok(s) => break s,
                    // Taken by someone else: leave it out of the pool and try the next.
                    Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
                    Err(e) => return Err(e.into()),
                }
            };
            workers.push(worker::spawn(format!("media-{i}"), socket, cert.clone())?);
        }
        let ice_tcp = match cfg.ice_tcp_listen {
            Some(addr) => {
                let acceptor = std::net::TcpListener::bind(addr)
                    .and_then(|l| {
                        let routes = workers
                            .iter()
                            .map(|w| {
                                let mailbox = w.mailbox();
                                Box::new(move |h| mailbox.send(Command::AdoptTcp(Box::new(h))))
                                    as crate::ice_tcp::acceptor::Route
                            })
                            .collect();
                        crate::ice_tcp::Acceptor::spawn(l, routes)
                    })
                    .map_err(|source| MediaError::IceTcp { addr, source })?;
                tracing::info!(listen = %acceptor.local_addr(), "ICE-TCP: listening for browsers");
                Some(IceTcp {
                    ips: tcp_candidate_ips(addr.ip(), &cfg.browser_ips),
                    acceptor,
                })
            }
            None => None,
        };
        Ok(Arc::new(MediaEngine {
            cfg,
            cert,
            ice_tcp,
            workers,
            ports: Arc::new(Mutex::new(pool)),
            next_worker: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
        }))
    }

    /// The ICE-TCP candidates to offer browsers, when ICE-TCP is on.
    fn passive_tcp(&self) -> Option<sdp::PassiveTcp<'_>> {
        self.ice_tcp.as_ref().map(|t| sdp::PassiveTcp {
            ips: &t.ips,
            port: t.acceptor.local_addr().port(),
        })
    }

    /// Fresh local ICE credentials for a call on `worker`: the ufrag names the worker, so an
    /// ICE-TCP connection can be routed to it (see `crate::ice_tcp`).
    pub fn ice_credentials(worker: usize) -> (String, String) {
        let (ufrag, pwd) = crate::ice_lite::random_credentials();
        (crate::ice_tcp::ufrag_for_worker(worker, &ufrag), pwd)
    }

    /// The DTLS fingerprint every browser leg presents.
    pub fn fingerprint(&self) -> &str {
        self.cert.fingerprint()
    }

    /// An RTP/RTCP socket pair on an even port and the one above it (RFC 3550 §11).
    fn bind_rtp(&self) -> Result<(u16, UdpSocket, UdpSocket), MediaError> {
        let mut pool = match self.ports.lock() {
            Ok(p) => p,
            Err(p) => p.into_inner(),
        };
        for _ in 0..pool.available().max(1) {
            let port = pool.allocate()?;
            let pair = UdpSocket::bind(SocketAddr::new(self.cfg.bind_ip, port)).and_then(|rtp| {
                UdpSocket::bind(SocketAddr::new(self.cfg.bind_ip, port + 1)).map(|rtcp| (rtp, rtcp))
            });
            match pair {
                Ok((rtp, rtcp)) => return Ok((port, rtp, rtcp)),
                // Taken by someone else: leave it out of the pool and try the next.
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
                Err(e) => {
                    pool.release(port);
                    return Err(e.into());
                }
            }
        }
        Err(crate::ports::Exhausted {
            low: self.cfg.rtp_ports.0,
            high: self.cfg.rtp_ports.1,
        }
        .into())
    }

    fn new_session(
        self: &Arc<Self>,
        remote: Option<BrowserRemote>,
        browser_codecs: Vec<Codec>,
        sip_codecs: Vec<Codec>,
    ) -> Result<(MediaSession, String, String, u32), MediaError> {
        let (port, rtp, rtcp) = self.bind_rtp()?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let worker = self.next_worker.fetch_add(1, Ordering::Relaxed) % self.workers.len();
        let (tx, rx) = mpsc::unbounded_channel();
        let counters = Arc::new(MediaCounters::default());
        let (ufrag, pwd) = Self::ice_credentials(worker);
        let ssrc_to_browser = rand::random::<u32>();
        let sent = self.workers[worker].send(Command::Add(Box::new(NewCall {
            id,
            ice_ufrag: ufrag.clone(),
            ice_pwd: pwd.clone(),
            remote: remote.clone(),
            rtp,
            rtcp,
            ssrc_to_browser,
            ssrc_to_sip: rand::random::<u32>(),
            media_timeout: self.cfg.media_timeout,
            restart_grace: self.cfg.restart_grace,
            events: tx,
            counters: counters.clone(),
        })));
        let session = MediaSession {
            id,
            port,
            engine: self.clone(),
            worker,
            events: rx,
            counters,
            browser_codecs,
            sip_codecs,
            sip_remote: None,
            chosen: None,
            transcoding: None,
            far_dtmf: None,
            browser_remote: remote.clone(),
            local_ice: (ufrag.clone(), pwd.clone()),
            browser_ssrc: ssrc_to_browser,
            browser_mlines: 1,
            sdp_version: 1,
            session_id: rand::random::<u32>().into(),
            direction: Direction::SendRecv,
            stopped: false,
        };
        if !sent {
            return Err(MediaError::Gone);
        }
        Ok((session, ufrag, pwd, ssrc_to_browser))
    }

    /// Media for an outgoing call: the browser's offer in, its answer and our SIP offer out.
    pub fn outbound(self: &Arc<Self>, browser_offer: &str) -> Result<Outbound, MediaError> {
        let offer = sdp::parse_webrtc(browser_offer)?;
        let (role, setup) =
            role_for_answer(&offer.setup).ok_or_else(|| MediaError::Setup(offer.setup.clone()))?;
        // Toward the browser: what can pass through; toward SIP: that, then what we can
        // transcode the browser's Opus to.
        let codecs = sdp::browser_answer_codecs(&offer.codecs);
        if !codecs.iter().any(Codec::is_primary) {
            return Err(MediaError::NoCommonCodec);
        }
        let sip_codecs = sdp::sip_offer_codecs(&codecs);
        let remote = BrowserRemote {
            ice_ufrag: offer.ice_ufrag.clone(),
            ice_pwd: offer.ice_pwd.clone(),
            fingerprint: offer.fingerprint.clone(),
            role,
        };
        let (mut session, ufrag, pwd, ssrc) =
            self.new_session(Some(remote), codecs.clone(), sip_codecs)?;
        session.browser_mlines = offer.mlines;
        let worker_port = self.workers[session.worker].browser_port;
        let browser_answer = sdp::build_webrtc_answer(&sdp::WebRtcAnswerParams {
            offer: browser_offer,
            ips: &self.cfg.browser_ips,
            port: worker_port,
            tcp: self.passive_tcp(),
            ice_ufrag: &ufrag,
            ice_pwd: &pwd,
            fingerprint: self.cert.fingerprint(),
            setup,
            codecs: &codecs,
            direction: Direction::SendRecv,
            ssrc,
            cname: "gateway",
        })?;
        let sip_offer = session.sip_description()?;
        Ok(Outbound {
            browser_answer,
            sip_offer,
            session,
        })
    }

    /// Media for an incoming call: the SIP offer in, our SIP answer and browser offer out.
    pub fn inbound(self: &Arc<Self>, sip_offer: &str) -> Result<Inbound, MediaError> {
        let offer = sdp::parse_plain(sip_offer)?;
        let candidates = sdp::passthrough_candidates(&offer.codecs);
        let Some(first) = candidates.into_iter().find(Codec::is_primary) else {
            return Err(MediaError::NoCommonCodec);
        };
        let sip_codecs = with_dtmf(vec![first], &offer.codecs);
        // Toward the browser we use the far end's payload types for its codec (nothing to
        // remap), and offer Opus besides when we can transcode it to that.
        let browser_codecs = sdp::browser_offer_codecs(&sip_codecs);
        let (mut session, ufrag, pwd, ssrc) = self.new_session(None, browser_codecs, sip_codecs)?;
        session.direction = offer.direction.reversed();
        let browser_offer = self.browser_offer(&session, &ufrag, &pwd, ssrc)?;
        let sip_answer = session.sip_answer_to(sip_offer, &offer)?;
        session.apply_sip(&offer)?;
        Ok(Inbound {
            browser_offer,
            sip_answer,
            session,
        })
    }

    /// Media for an incoming INVITE without an offer: our G.711 offer (PCMU, PCMA and
    /// telephone-event, what every SIP peer speaks) for the 200 OK, and the browser offered
    /// those and Opus, as for an incoming call. The ACK's answer goes to
    /// [`MediaSession::set_sip_remote`].
    pub fn offerless(self: &Arc<Self>) -> Result<Offerless, MediaError> {
        let sip_codecs = vec![
            Codec::pcmu(),
            Codec::pcma(),
            Codec::telephone_event(101, 8000),
        ];
        let browser_codecs = sdp::browser_offer_codecs(&sip_codecs);
        let (session, ufrag, pwd, ssrc) = self.new_session(None, browser_codecs, sip_codecs)?;
        let browser_offer = self.browser_offer(&session, &ufrag, &pwd, ssrc)?;
        let sip_offer = session.sip_description()?;
        Ok(Offerless {
            browser_offer,
            sip_offer,
            session,
        })
    }

    /// Our offer to the browser for `session` (an incoming call's, or one placed for the
    /// agent): its codecs and direction, our ICE credentials and the worker's candidates.
    fn browser_offer(
        &self,
        session: &MediaSession,
        ufrag: &str,
        pwd: &str,
        ssrc: u32,
    ) -> Result<String, MediaError> {
        Ok(sdp::build_webrtc_offer(&sdp::WebRtcOfferParams {
            ips: &self.cfg.browser_ips,
            port: self.workers[session.worker].browser_port,
            tcp: self.passive_tcp(),
            ice_ufrag: ufrag,
            ice_pwd: pwd,
            fingerprint: self.cert.fingerprint(),
            codecs: &session.browser_codecs,
            direction: session.direction,
            ssrc,
            cname: "gateway",
            session_id: session.session_id,
            session_version: session.sdp_version,
        })?)
    }

    fn release_port(&self, port: u16) {
        match self.ports.lock() {
            Ok(mut p) => p.release(port),
            Err(p) => p.into_inner().release(port),
        }
    }
}

impl MediaSession {
    /// Engine-wide id of this media session.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The SIP leg's local RTP port.
    pub fn rtp_port(&self) -> u16 {
        self.port
    }

    /// The live counters, for views that outlive a borrow of the session.
    pub fn counters_handle(&self) -> Arc<MediaCounters> {
        self.counters.clone()
    }

    /// Packet counters.
    pub fn counters(&self) -> MediaSnapshot {
        self.counters.snapshot()
    }

    /// What the legs carry, once known: the relayed codec's name (`PCMU`), or both sides
    /// when transcoding (`opus/48000 <-> PCMU/8000`).
    pub fn codec(&self) -> Option<&str> {
        self.chosen.as_deref()
    }

    /// Whether the media plane transcodes this call (Opus <-> G.711).
    pub fn is_transcoding(&self) -> bool {
        self.transcoding.is_some()
    }

    fn send(&self, cmd: Command) -> Result<(), MediaError> {
        if self.engine.workers[self.worker].send(cmd) {
            Ok(())
        } else {
            Err(MediaError::Gone)
        }
    }

    /// The far end's SDP answer to our offer: address, codec, hold state. A description
    /// that cannot be used leaves the relay as it was.
    pub fn set_sip_remote(&mut self, sip_sdp: &str) -> Result<SipRemote, MediaError> {
        let desc = sdp::parse_plain(sip_sdp)?;
        self.apply_sip(&desc)?;
        Ok(SipRemote::of(&desc))
    }

    /// The SDP answer of a new far end that takes the old one's place on this call (the
    /// target of a REFER from the far end): as [`MediaSession::set_sip_remote`], and the old
    /// far end's packets are dropped from now on, even while it goes on sending.
    pub fn replace_sip_remote(&mut self, sip_sdp: &str) -> Result<SipRemote, MediaError> {
        let desc = sdp::parse_plain(sip_sdp)?;
        self.apply_sip_as(&desc, true)?;
        Ok(SipRemote::of(&desc))
    }

    /// The far end's new offer (a re-INVITE or UPDATE): it may move the media to another
    /// address and codec (Genesys moves calls to a media server, possibly on PCMA). Our SIP
    /// codec is chosen again from it, transcoding when the browser leg lacks it; our answer
    /// never holds back (RFC 3264 §8.4: held SDP is not answered with held SDP).
    pub fn answer_sip_offer(&mut self, sip_sdp: &str) -> Result<(String, SipRemote), MediaError> {
        let offer = sdp::parse_plain(sip_sdp)?;
        let theirs = sdp::passthrough_candidates(&offer.codecs);
        let ours = sdp::sip_offer_codecs(&self.browser_codecs);
        let choice = sdp::choose_legs(&self.browser_codecs, &ours, &theirs)
            .ok_or(MediaError::NoCommonCodec)?;
        let sip = match choice {
            CodecChoice::Passthrough { sip, .. }
            | CodecChoice::Transcode { sip, .. }
            | CodecChoice::Recode { sip, .. } => sip,
        };
        let previous = std::mem::replace(&mut self.sip_codecs, with_dtmf(vec![sip], &offer.codecs));
        if let Err(e) = self.apply_sip(&offer) {
            self.sip_codecs = previous;
            return Err(e);
        }
        self.sdp_version += 1;
        self.direction = offer.direction.reversed();
        let answer = self.sip_answer_to(sip_sdp, &offer)?;
        Ok((answer, SipRemote::of(&offer)))
    }

    /// Our answer to the far end's `offer` (its text and what we read of it): our codecs and
    /// direction, on the offer's m-lines and packet time.
    fn sip_answer_to(
        &self,
        offer_sdp: &str,
        offer: &sdp::PlainDescription,
    ) -> Result<String, MediaError> {
        let params = self.plain_params(offer.ptime.unwrap_or(20));
        Ok(sdp::build_plain_answer(offer_sdp, &params)?)
    }

    /// A full offer toward SIP for a request that came without one (an offerless re-INVITE,
    /// RFC 3261 §14.2): every codec we can carry for the browser leg, so the answer in the
    /// ACK may pick another one; same session id, next version (RFC 3264 §8).
    pub fn sip_offer_all(&mut self, direction: Direction) -> Result<String, MediaError> {
        self.sip_codecs = sdp::sip_offer_codecs(&self.browser_codecs);
        self.sip_reoffer(direction)
    }

    /// The relay plan for the far end's description `desc`: passthrough when the legs share
    /// a codec, else Opus <-> G.711 transcoding (codecs made here, off the worker thread).
    fn apply_sip(&mut self, desc: &sdp::PlainDescription) -> Result<(), MediaError> {
        self.apply_sip_as(desc, false)
    }

    /// [`MediaSession::apply_sip`]; `replaces` when `desc` is a new far end's, whose media
    /// replaces the old one's for good.
    fn apply_sip_as(
        &mut self,
        desc: &sdp::PlainDescription,
        replaces: bool,
    ) -> Result<(), MediaError> {
        let choice = sdp::choose_legs(&self.browser_codecs, &self.sip_codecs, &desc.codecs)
            .ok_or(MediaError::NoCommonCodec)?;
        let mut to_sip = PtMap::new();
        let mut to_browser = PtMap::new();
        let mut sip_dtmf = None;
        let mut recode = None;
        let (plan_clock, browser_clock, transcode) = match &choice {
            CodecChoice::Passthrough { browser, sip } | CodecChoice::Recode { browser, sip } => {
                if let (CodecChoice::Recode { .. }, Some(b), Some(s)) = (
                    &choice,
                    G711::from_name(&browser.name),
                    G711::from_name(&sip.name),
                ) {
                    recode = Some(Recode {
                        browser_pt: browser.pt,
                        sip_pt: sip.pt,
                        browser: b,
                        sip: s,
                    });
                }
                let _ = to_sip.insert(browser.pt, sip.pt);
                let _ = to_browser.insert(sip.pt, browser.pt);
                if let Some((b_te, s_te)) =
                    sdp::common_dtmf(&self.browser_codecs, &desc.codecs, sip.clock_rate)
                {
                    let _ = to_sip.insert(b_te.pt, s_te.pt);
                    let _ = to_browser.insert(s_te.pt, b_te.pt);
                    sip_dtmf = Some(s_te.pt);
                }
                (sip.clock_rate, browser.clock_rate, None)
            }
            CodecChoice::Transcode { browser, sip } => {
                let law = G711::from_name(&sip.name).ok_or(MediaError::NoCommonCodec)?;
                let _ = to_sip.insert(browser.pt, sip.pt);
                let _ = to_browser.insert(sip.pt, browser.pt);
                // Events pass through between the far end's 8 kHz telephone-event and the
                // browser's, preferably at Opus' clock; the worker rescales them.
                let s_te = desc
                    .codecs
                    .iter()
                    .find(|c| c.is_telephone_event() && c.clock_rate == sip.clock_rate);
                let b_te = self
                    .browser_codecs
                    .iter()
                    .filter(|c| c.is_telephone_event())
                    .max_by_key(|c| c.clock_rate == browser.clock_rate);
                let mut browser_dtmf = None;
                if let Some(s_te) = s_te {
                    sip_dtmf = Some(s_te.pt);
                    if let Some(b_te) = b_te {
                        let _ = to_sip.insert(b_te.pt, s_te.pt);
                        let _ = to_browser.insert(s_te.pt, b_te.pt);
                        browser_dtmf = Some((b_te.pt, b_te.clock_rate));
                    }
                }
                let plan = TranscodePlan {
                    opus_pt: browser.pt,
                    g711_pt: sip.pt,
                    law,
                    browser_dtmf,
                    sip_dtmf,
                };
                (sip.clock_rate, browser.clock_rate, Some(plan))
            }
        };
        // New codecs only when the transcoding changes: a re-INVITE that keeps it keeps the
        // decoder's and encoder's state.
        let transcoder = match transcode {
            Some(plan) if self.transcoding != Some(plan) => Some(Box::new(Transcoder::new(plan)?)),
            _ => None,
        };
        let label = choice.label();
        if (transcode.is_some() || recode.is_some())
            && self.chosen.as_deref() != Some(label.as_str())
        {
            tracing::info!(codec = %label, "media: transcoding");
        }
        let addr = (desc.port != 0).then_some(SocketAddr::new(desc.addr, desc.port));
        let rtcp = addr.map(|a| match desc.rtcp {
            Some((ip, port)) => SocketAddr::new(ip.unwrap_or(a.ip()), port),
            None => SocketAddr::new(a.ip(), a.port().saturating_add(1)),
        });
        let held =
            matches!(desc.direction, Direction::SendOnly | Direction::Inactive) || addr.is_none();
        self.chosen = Some(label);
        self.transcoding = transcode;
        self.far_dtmf = sip_dtmf;
        self.sip_remote = Some(desc.clone());
        self.send(Command::SetSipRemote {
            id: self.id,
            addr,
            rtcp,
            plan: RelayPlan {
                to_sip,
                to_browser,
                clock_rate: plan_clock,
                browser_clock_rate: browser_clock,
                sip_dtmf,
                transcode,
                recode,
            },
            transcoder,
            replaces,
        })?;
        self.send(Command::Hold { id: self.id, held })
    }

    /// The browser's answer to our offer (incoming calls). Its codecs decide the relay: the
    /// far end's codec passes through if the browser sends it, Opus is transcoded.
    pub fn set_browser_answer(&mut self, answer: &str) -> Result<(), MediaError> {
        let desc = sdp::parse_webrtc(answer)?;
        let role =
            role_from_answer(&desc.setup).ok_or_else(|| MediaError::Setup(desc.setup.clone()))?;
        // Only codecs we offered count (an answer may not add any, RFC 3264 §6).
        let answered: Vec<Codec> = desc
            .codecs
            .iter()
            .filter(|c| {
                self.browser_codecs
                    .iter()
                    .any(|o| o.pt == c.pt && o.same_format(c))
            })
            .cloned()
            .collect();
        let offered = std::mem::replace(&mut self.browser_codecs, answered);
        if let Some(remote) = self.sip_remote.clone() {
            if let Err(e) = self.apply_sip(&remote) {
                self.browser_codecs = offered;
                return Err(e);
            }
        }
        let remote = BrowserRemote {
            ice_ufrag: desc.ice_ufrag,
            ice_pwd: desc.ice_pwd,
            fingerprint: desc.fingerprint,
            role,
        };
        self.browser_remote = Some(remote.clone());
        self.send(Command::SetBrowserRemote {
            id: self.id,
            remote,
        })
    }

    /// A new offer from the browser for this call (`renegotiate`), answered without a word
    /// toward SIP: an ICE restart (new ufrag and password in the offer) gets new credentials
    /// of ours, a new certificate (a fresh RTCPeerConnection after a page reload) a new DTLS
    /// handshake and new SRTP keys, and a plain re-offer keeps everything. The call's codec
    /// must still be offered; its payload type may change.
    pub fn renegotiate(&mut self, offer_sdp: &str) -> Result<String, MediaError> {
        let offer = sdp::parse_webrtc(offer_sdp)?;
        let Some(current) = self.browser_remote.clone() else {
            return Err(MediaError::NotConnected);
        };
        if offer.mlines != self.browser_mlines {
            return Err(MediaError::Sdp(sdp::SdpError::Unsupported(format!(
                "the re-offer has {} m-lines where the call has {}",
                offer.mlines, self.browser_mlines
            ))));
        }
        let new_dtls = offer.fingerprint != current.fingerprint;
        let (role, setup) = if new_dtls {
            role_for_answer(&offer.setup).ok_or_else(|| MediaError::Setup(offer.setup.clone()))?
        } else {
            // The same association keeps its roles (RFC 5763 §5): an answer that switched
            // them would ask for a new handshake the browser does not expect.
            keep_role(current.role, &offer.setup)
                .ok_or_else(|| MediaError::Setup(offer.setup.clone()))?
        };
        let codecs = self.codecs_in(&offer.codecs)?;
        let restart = offer.ice_ufrag != current.ice_ufrag || offer.ice_pwd != current.ice_pwd;
        // New credentials name the call's worker too: ICE-TCP routes a connection by them.
        let local = restart.then(|| MediaEngine::ice_credentials(self.worker));
        let (ufrag, pwd) = local.as_ref().unwrap_or(&self.local_ice);
        let answer = sdp::build_webrtc_answer(&sdp::WebRtcAnswerParams {
            offer: offer_sdp,
            ips: &self.engine.cfg.browser_ips,
            port: self.engine.workers[self.worker].browser_port,
            ice_ufrag: ufrag,
            ice_pwd: pwd,
            fingerprint: self.engine.cert.fingerprint(),
            setup,
            codecs: &codecs,
            direction: Direction::SendRecv.answer_to(offer.direction),
            ssrc: self.browser_ssrc,
            cname: "gateway",
            tcp: self.engine.passive_tcp(),
        })?;
        if codecs != self.browser_codecs {
            let previous = std::mem::replace(&mut self.browser_codecs, codecs);
            if let Some(remote) = self.sip_remote.clone() {
                if let Err(e) = self.apply_sip(&remote) {
                    self.browser_codecs = previous;
                    return Err(e);
                }
            }
        }
        let remote = BrowserRemote {
            ice_ufrag: offer.ice_ufrag,
            ice_pwd: offer.ice_pwd,
            fingerprint: offer.fingerprint,
            role,
        };
        if let Some(l) = &local {
            self.local_ice = l.clone();
        }
        self.browser_remote = Some(remote.clone());
        tracing::info!(
            "media: browser renegotiated: {}",
            match (new_dtls, restart) {
                (true, _) => "a new peer connection (ICE and DTLS start over)",
                (false, true) => "an ICE restart (DTLS and its keys stay)",
                (false, false) => "a re-offer (nothing changes on the wire)",
            }
        );
        self.send(Command::RenewBrowser {
            id: self.id,
            remote,
            local,
        })?;
        Ok(answer)
    }

    /// The call's browser codecs as `offered` carries them (its payload types and fmtp): the
    /// relayed one must be there, events and other codecs follow when offered.
    fn codecs_in(&self, offered: &[Codec]) -> Result<Vec<Codec>, MediaError> {
        let mut out = Vec::new();
        for ours in &self.browser_codecs {
            match offered.iter().find(|c| c.same_format(ours)) {
                Some(c) => out.push(c.clone()),
                None if out.is_empty() && ours.is_primary() => {
                    return Err(MediaError::Sdp(sdp::SdpError::Unsupported(format!(
                        "the re-offer lacks the call's codec {}/{}",
                        ours.name, ours.clock_rate
                    ))))
                }
                None => {}
            }
        }
        Ok(out)
    }

    /// Sends `digits` to the far end as RFC 4733 telephone-events of `duration_ms` each.
    pub fn send_dtmf(&self, digits: &str, duration_ms: u32) -> Result<(), MediaError> {
        if self.far_dtmf.is_none() {
            return Err(MediaError::NoTelephoneEvent);
        }
        self.send(Command::SendDtmf {
            id: self.id,
            digits: digits.to_string(),
            duration_ms,
        })
    }

    /// Hold from our side or theirs: nothing flows, silence is no time-out.
    pub fn set_hold(&self, held: bool) -> Result<(), MediaError> {
        self.send(Command::Hold { id: self.id, held })
    }

    /// Our SDP offer for a re-INVITE toward SIP (hold: `sendonly`, resume: `sendrecv`).
    pub fn sip_reoffer(&mut self, direction: Direction) -> Result<String, MediaError> {
        self.sdp_version += 1;
        self.direction = direction;
        self.sip_description()
    }

    /// Our plain RTP/AVP description toward SIP as it stands: our codecs, direction and
    /// SDP version.
    fn sip_description(&self) -> Result<String, MediaError> {
        Ok(sdp::build_plain(&self.plain_params(20))?)
    }

    /// What our SIP descriptions say: our address, port, codecs, direction and version.
    fn plain_params(&self, ptime: u32) -> sdp::PlainParams<'_> {
        sdp::PlainParams {
            ip: self.engine.cfg.sip_ip,
            port: self.port,
            codecs: &self.sip_codecs,
            direction: self.direction,
            session_id: self.session_id,
            session_version: self.sdp_version,
            ptime,
        }
    }

    /// Stops the media and waits (briefly) for the worker to close its sockets, so the
    /// port can be reused at once.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let (tx, rx) = std::sync::mpsc::channel();
        if self
            .send(Command::Remove {
                id: self.id,
                done: Some(tx),
            })
            .is_ok()
        {
            let _ = rx.recv_timeout(Duration::from_millis(500));
        }
        self.engine.release_port(self.port);
    }
}

impl Drop for MediaSession {
    fn drop(&mut self) {
        self.stop();
    }
}
