//! A media worker: one thread that owns its sockets and its calls' media state, and relays
//! packets between browser legs and plain RTP legs. Signaling talks to it only through
//! [`Command`]s drained between batches; it answers with [`MediaEvent`]s. Per packet there is
//! no lock, no channel, no task wake-up and no allocation in our code.

use rustc_hash::FxHashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token, Waker};
use quinn_udp::BATCH_SIZE;
use tokio::sync::mpsc::UnboundedSender;

use crate::browser_leg::{BrowserLeg, BrowserRemote, LegError, Received};
use crate::dtls::DtlsCertificate;
use crate::ice_tcp::BrowserSockets;
use crate::relay::{header, PtMap, StreamRewriter};
use crate::rtcp::{PeerReport, Reception, SendStats};
use crate::sip_leg::SipLeg;
use crate::stats::{MediaCounters, ReceiveStats};
use crate::transcode::{LawMap, TranscodePlan, Transcoder, G711};
use crate::udp::{Batch, Path, Socket, MTU};

mod tcp;

const WAKER: Token = Token(0);
const BROWSER: Token = Token(1);
/// Housekeeping cadence: DTLS timers, time-outs, stats publication.
const TICK: Duration = Duration::from_millis(20);

/// How many failed receive calls in a row end a read (ICMP errors are reported once each).
///
/// A read also ends after a short batch, without the extra call that would only say
/// `WouldBlock`: `recvmmsg` returned less than it could because the queue was empty, and
/// with edge-triggered epoll every datagram that arrives after that raises a new event.
/// On a SIP-leg socket (one packet per wake-up) this halves the receive system calls.
const RECV_ERRORS: usize = 8;
/// How long a browser leg may take to complete ICE and DTLS.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// What a call's media reports to its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// ICE and DTLS completed; SRTP is keyed.
    BrowserConnected,
    /// The browser leg failed (DTLS error, consent lost, connect time-out).
    BrowserFailed(String),
    /// The browser nominated a pair but never saw our answers on it: its ICE did not connect.
    IceFailed(String),
    /// A key press the far end sent as RFC 4733 telephone-events.
    Dtmf(crate::dtmf::KeyPress),
    /// No media from a leg for the configured time.
    Timeout {
        /// Which leg went silent: `browser` or `sip`.
        leg: &'static str,
    },
}

/// The codec plan between the legs, set when both sides' SDP is known.
#[derive(Debug, Clone, Copy)]
pub struct RelayPlan {
    /// Browser payload types to SIP payload types.
    pub to_sip: PtMap,
    /// SIP payload types to browser payload types.
    pub to_browser: PtMap,
    /// RTP clock rate of the SIP leg's stream.
    pub clock_rate: u32,
    /// RTP clock rate of the browser leg's stream: the same as `clock_rate` for passthrough,
    /// 48000 when the browser leg is transcoded Opus.
    pub browser_clock_rate: u32,
    /// The far end's telephone-event payload type, if negotiated.
    pub sip_dtmf: Option<u8>,
    /// Opus <-> G.711 transcoding, when the legs share no codec.
    pub transcode: Option<TranscodePlan>,
    /// µ-law <-> A-law, when the legs carry the two G.711 laws.
    pub recode: Option<Recode>,
}

/// The two G.711 laws of a recoded call and their payload types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recode {
    /// The browser leg's payload type.
    pub browser_pt: u8,
    /// The SIP leg's payload type.
    pub sip_pt: u8,
    /// The browser leg's law.
    pub browser: G711,
    /// The SIP leg's law.
    pub sip: G711,
}

/// The byte maps of a [`Recode`], one per direction.
struct LawMaps {
    plan: Recode,
    to_sip: LawMap,
    to_browser: LawMap,
}

impl LawMaps {
    fn new(plan: Recode) -> Box<Self> {
        Box::new(LawMaps {
            plan,
            to_sip: LawMap::new(plan.browser, plan.sip),
            to_browser: LawMap::new(plan.sip, plan.browser),
        })
    }
}

/// Maps the payload of an audio packet of payload type `pt` with `map` (events, comfort
/// noise and anything else pass untouched).
#[inline]
fn recode_payload(packet: &mut [u8], pt: u8, map: &LawMap) {
    if header::pt(packet) == pt {
        if let Ok(range) = crate::transcode::payload_range(packet) {
            map.apply(&mut packet[range]);
        }
    }
}

/// A request from signaling.
pub enum Command {
    /// A new call's media.
    Add(Box<NewCall>),
    /// The browser's description is known.
    SetBrowserRemote {
        /// Call.
        id: u64,
        /// Its description.
        remote: BrowserRemote,
    },
    /// The far end's address and the codec plan.
    SetSipRemote {
        /// Call.
        id: u64,
        /// Where the far end wants media; `None` = none (hold, port 0).
        addr: Option<SocketAddr>,
        /// Where its RTCP goes (`a=rtcp`, else the RTP port + 1).
        rtcp: Option<SocketAddr>,
        /// Codec plan.
        plan: RelayPlan,
        /// Fresh codec state when `plan` starts a (different) transcoding; `None` keeps the
        /// call's current codecs (or none, for passthrough).
        transcoder: Option<Box<Transcoder>>,
        /// A new far end replaces the old one (a REFER's target answered): the old one's
        /// packets are dropped from now on, rather than kept until the new one sends.
        replaces: bool,
    },
    /// A new browser description for a running call (`renegotiate`): an ICE restart when
    /// `local` brings new credentials of ours, a new DTLS handshake when the browser's
    /// fingerprint changed.
    RenewBrowser {
        /// Call.
        id: u64,
        /// The browser's new description.
        remote: BrowserRemote,
        /// Our new ICE ufrag and password, on a restart.
        local: Option<(String, String)>,
    },
    /// Hold state: while held, nothing is sent to the far end and silence is no time-out.
    Hold {
        /// Call.
        id: u64,
        /// Held by either side.
        held: bool,
    },
    /// Sends key presses to the far end as RFC 4733 telephone-events.
    SendDtmf {
        /// Call.
        id: u64,
        /// Digits (`0-9*#A-D`).
        digits: String,
        /// Per digit.
        duration_ms: u32,
    },
    /// Ends a call's media; `done` is signalled once its sockets are closed.
    Remove {
        /// Call.
        id: u64,
        /// Completion.
        done: Option<mpsc::Sender<()>>,
    },
    /// An ICE-TCP connection whose first check names a call of this worker.
    AdoptTcp(Box<crate::ice_tcp::TcpHandoff>),
    /// Stops the worker.
    Shutdown,
}

/// Everything a worker needs to take on a call.
pub struct NewCall {
    /// Engine-wide call id.
    pub id: u64,
    /// Our ICE credentials.
    pub ice_ufrag: String,
    /// Our ICE password.
    pub ice_pwd: String,
    /// The browser's description, when it came first (outgoing calls).
    pub remote: Option<BrowserRemote>,
    /// The SIP leg's RTP socket (bound from the port range).
    pub rtp: std::net::UdpSocket,
    /// Its RTCP socket (the RTP port + 1).
    pub rtcp: std::net::UdpSocket,
    /// SSRC we send to the browser.
    pub ssrc_to_browser: u32,
    /// SSRC we send to the SIP side.
    pub ssrc_to_sip: u32,
    /// Silence that ends the call.
    pub media_timeout: Duration,
    /// How long the call waits for a browser that went quiet to come back (ICE restart,
    /// reload) beyond consent loss and the media time-out.
    pub restart_grace: Duration,
    /// Where events go.
    pub events: UnboundedSender<MediaEvent>,
    /// Counters read by REST.
    pub counters: Arc<MediaCounters>,
}

/// One call on a worker: its two legs, and the relay between them.
struct Call {
    id: u64,
    leg: BrowserLeg,
    /// The browser's nominated path, as last seen by the demultiplexer.
    browser_path: Option<Path>,
    sip: SipLeg,
    browser_in_ssrc: Option<u32>,
    sent_to_browser: SendStats,
    browser_report: Option<PeerReport>,
    next_rtcp: Instant,
    to_sip: StreamRewriter,
    to_browser: StreamRewriter,
    plan: Option<RelayPlan>,
    /// Opus and G.711 codec state of a transcoded call.
    transcoder: Option<Box<Transcoder>>,
    /// The byte maps of a µ-law <-> A-law call.
    law_maps: Option<Box<LawMaps>>,
    dtmf: crate::dtmf::Detector,
    dtmf_out: crate::dtmf::Sender,
    browser_rx: ReceiveStats,
    counters: Arc<MediaCounters>,
    events: UnboundedSender<MediaEvent>,
    /// Since when the browser leg has been trying to connect: from the browser's description
    /// (an outgoing call's offer, an incoming call's answer), not from the call's start, so
    /// an incoming call may ring as long as its caller lets it.
    connecting_since: Option<Instant>,
    media_timeout: Duration,
    restart_grace: Duration,
    /// RFC 7675: false once the browser's consent expired; nothing is sent to it until it
    /// checks again. Updated every tick, read per packet.
    consent: bool,
    last_browser_rx: Option<Instant>,
    sip_since: Option<Instant>,
    held: bool,
    finished: bool,
}

/// A handle to a running worker.
pub struct WorkerHandle {
    commands: mpsc::Sender<Command>,
    waker: Arc<Waker>,
    /// The worker's browser-facing UDP port.
    pub browser_port: u16,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WorkerHandle {
    /// Sends a command and wakes the worker.
    pub fn send(&self, cmd: Command) -> bool {
        if self.commands.send(cmd).is_err() {
            return false;
        }
        self.waker.wake().is_ok()
    }

    /// A sender for other threads (the ICE-TCP acceptor).
    pub fn mailbox(&self) -> Mailbox {
        Mailbox {
            commands: self.commands.clone(),
            waker: self.waker.clone(),
        }
    }
}

/// Sends commands to a worker from another thread; the worker may be gone.
#[derive(Clone)]
pub struct Mailbox {
    commands: mpsc::Sender<Command>,
    waker: Arc<Waker>,
}

impl Mailbox {
    /// Sends a command and wakes the worker; false if it stopped.
    pub fn send(&self, cmd: Command) -> bool {
        self.commands.send(cmd).is_ok() && self.waker.wake().is_ok()
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Shutdown);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts a worker whose browser socket is `browser_socket`.
pub fn spawn(
    name: String,
    browser_socket: std::net::UdpSocket,
    cert: Arc<DtlsCertificate>,
) -> io::Result<WorkerHandle> {
    let browser_port = browser_socket.local_addr()?.port();
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let mut browser = Socket::new(browser_socket)?;
    browser.register(poll.registry(), BROWSER)?;
    let (tx, rx) = mpsc::channel();
    let mut worker = Worker {
        poll,
        browser: BrowserSockets::new(browser),
        batch: Batch::new(),
        cert,
        commands: rx,
        calls: Vec::new(),
        by_id: FxHashMap::default(),
        by_ufrag: FxHashMap::default(),
        by_addr: FxHashMap::default(),
        scratch: Vec::with_capacity(MTU + 64),
        running: true,
    };
    let thread = std::thread::Builder::new()
        .name(name)
        .spawn(move || worker.run())?;
    Ok(WorkerHandle {
        commands: tx,
        waker,
        browser_port,
        thread: Some(thread),
    })
}

struct Worker {
    poll: Poll,
    /// The browser-facing UDP socket and ICE-TCP connections.
    browser: BrowserSockets,
    batch: Batch,
    cert: Arc<DtlsCertificate>,
    commands: mpsc::Receiver<Command>,
    calls: Vec<Option<Call>>,
    by_id: FxHashMap<u64, usize>,
    by_ufrag: FxHashMap<String, usize>,
    // Looked up for every browser packet; keys are addresses that passed ICE and ufrags we
    // made, so a fast non-keyed hash is safe here.
    by_addr: FxHashMap<SocketAddr, usize>,
    scratch: Vec<u8>,
    running: bool,
}

fn rtp_token(slot: usize) -> Token {
    Token(2 + 2 * slot)
}

fn rtcp_token(slot: usize) -> Token {
    Token(3 + 2 * slot)
}

impl Worker {
    fn run(&mut self) {
        let mut events = Events::with_capacity(256);
        let mut next_tick = Instant::now() + TICK;
        while self.running {
            let timeout = next_tick.saturating_duration_since(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(error = %e, "media worker poll failed");
                    return;
                }
            }
            for event in events.iter() {
                match event.token() {
                    WAKER => self.drain_commands(),
                    BROWSER => self.read_browser(),
                    t if t.0 >= crate::ice_tcp::connections::TOKEN_BASE => {
                        self.on_tcp_event(t, event.is_readable(), event.is_writable())
                    }
                    Token(t) if (t - 2) % 2 == 0 => self.read_rtp((t - 2) / 2),
                    Token(t) => self.read_rtcp((t - 3) / 2),
                }
            }
            let now = Instant::now();
            if now >= next_tick {
                self.tick(now);
                next_tick = now + TICK;
            }
        }
        let now = Instant::now();
        for slot in 0..self.calls.len() {
            self.remove_slot(slot, now);
        }
    }

    fn drain_commands(&mut self) {
        while let Ok(cmd) = self.commands.try_recv() {
            let now = Instant::now();
            match cmd {
                Command::Add(new) => self.add(*new, now),
                Command::SetBrowserRemote { id, remote } => {
                    let cert = self.cert.clone();
                    if let Some(call) = self.call_mut(id) {
                        call.connecting_since = Some(now);
                        if let Err(e) = call.leg.set_remote(&remote, &cert, now) {
                            call.fail(e);
                        }
                    }
                }
                Command::SetSipRemote {
                    id,
                    addr,
                    rtcp,
                    plan,
                    transcoder,
                    replaces,
                } => {
                    if let Some(call) = self.call_mut(id) {
                        if replaces {
                            call.sip.replace_remote(addr, rtcp);
                        } else {
                            call.sip.set_remote(addr, rtcp);
                        }
                        // Each rewriter works on its receiver's clock: 8 kHz toward SIP and
                        // 48 kHz toward the browser when transcoding, so a re-anchor's
                        // wall-clock gap is counted on the right clock.
                        if call.plan.is_none_or(|p| p.clock_rate != plan.clock_rate) {
                            call.to_sip.set_clock_rate(plan.clock_rate);
                        }
                        if call
                            .plan
                            .is_none_or(|p| p.browser_clock_rate != plan.browser_clock_rate)
                        {
                            call.to_browser.set_clock_rate(plan.browser_clock_rate);
                        }
                        if plan.transcode.is_none() {
                            call.transcoder = None;
                        } else if transcoder.is_some() {
                            call.transcoder = transcoder;
                        }
                        call.law_maps = match (plan.recode, call.law_maps.take()) {
                            (Some(r), Some(maps)) if maps.plan == r => Some(maps),
                            (Some(r), _) => Some(LawMaps::new(r)),
                            (None, _) => None,
                        };
                        call.plan = Some(plan);
                        call.sip_since = Some(now);
                        // A new offer/answer may restart either sender's numbering.
                        call.to_sip.reanchor();
                        call.to_browser.reanchor();
                    }
                }
                Command::RenewBrowser { id, remote, local } => self.renew(id, remote, local, now),
                Command::Hold { id, held } => {
                    if let Some(call) = self.call_mut(id) {
                        if call.held != held {
                            call.to_sip.reanchor();
                            call.to_browser.reanchor();
                        }
                        call.held = held;
                        call.sip.set_hold(held);
                        // Silence during hold is expected; the clock restarts on resume.
                        call.sip_since = Some(now);
                        call.last_browser_rx = call.last_browser_rx.map(|_| now);
                    }
                }
                Command::SendDtmf {
                    id,
                    digits,
                    duration_ms,
                } => {
                    if let Some(call) = self.call_mut(id) {
                        let clock = call.plan.map_or(8000, |p| p.clock_rate);
                        call.dtmf_out.queue(&digits, duration_ms, clock);
                    }
                }
                Command::Remove { id, done } => {
                    if let Some(&slot) = self.by_id.get(&id) {
                        self.remove_slot(slot, now);
                    }
                    if let Some(done) = done {
                        let _ = done.send(());
                    }
                }
                Command::AdoptTcp(handoff) => self.adopt_tcp(*handoff, now),
                Command::Shutdown => self.running = false,
            }
        }
    }

    fn renew(
        &mut self,
        id: u64,
        remote: BrowserRemote,
        local: Option<(String, String)>,
        now: Instant,
    ) {
        let Some(&slot) = self.by_id.get(&id) else {
            return;
        };
        let Some(call) = self.calls.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if let Some((ufrag, _)) = &local {
            self.by_ufrag.remove(call.leg.local_ufrag());
            self.by_ufrag.insert(ufrag.clone(), slot);
        }
        match call.leg.renew(&remote, local, &self.cert, now) {
            Ok(true) => {
                // A new browser: its handshake gets the set-up time, and its first packets
                // restart the numbering toward it.
                call.connecting_since = Some(now);
                call.last_browser_rx = None;
                call.to_browser.reanchor();
                call.to_sip.reanchor();
                if let Some(old) = call.browser_path.take() {
                    self.by_addr.remove(&old.remote);
                }
            }
            Ok(false) => {}
            Err(e) => call.fail(e),
        }
    }

    fn call_mut(&mut self, id: u64) -> Option<&mut Call> {
        let slot = *self.by_id.get(&id)?;
        self.calls.get_mut(slot)?.as_mut()
    }

    fn add(&mut self, new: NewCall, now: Instant) {
        let slot = match self.calls.iter().position(Option::is_none) {
            Some(s) => s,
            None => {
                self.calls.push(None);
                self.calls.len() - 1
            }
        };
        let fail = |events: &UnboundedSender<MediaEvent>, why: String| {
            let _ = events.send(MediaEvent::BrowserFailed(why));
        };
        let mut sip = match SipLeg::new(new.rtp, new.rtcp) {
            Ok(sip) => sip,
            Err(e) => return fail(&new.events, e.to_string()),
        };
        if let Err(e) = sip.register(self.poll.registry(), rtp_token(slot), rtcp_token(slot)) {
            return fail(&new.events, e.to_string());
        }
        let mut leg = BrowserLeg::new(new.ice_ufrag.clone(), new.ice_pwd);
        if let Some(remote) = &new.remote {
            if let Err(e) = leg.set_remote(remote, &self.cert, now) {
                sip.deregister(self.poll.registry());
                return fail(&new.events, e.to_string());
            }
        }
        self.by_id.insert(new.id, slot);
        self.by_ufrag.insert(new.ice_ufrag, slot);
        self.calls[slot] = Some(Call {
            id: new.id,
            leg,
            browser_path: None,
            sip,
            browser_in_ssrc: None,
            sent_to_browser: SendStats::default(),
            browser_report: None,
            next_rtcp: now + crate::rtcp::INTERVAL,
            to_sip: StreamRewriter::new(new.ssrc_to_sip, 8000),
            to_browser: StreamRewriter::new(new.ssrc_to_browser, 8000),
            plan: None,
            transcoder: None,
            law_maps: None,
            dtmf: crate::dtmf::Detector::default(),
            dtmf_out: crate::dtmf::Sender::default(),
            browser_rx: ReceiveStats::default(),
            counters: new.counters,
            events: new.events,
            connecting_since: new.remote.is_some().then_some(now),
            media_timeout: new.media_timeout,
            restart_grace: new.restart_grace,
            consent: true,
            last_browser_rx: None,
            sip_since: None,
            held: false,
            finished: false,
        });
    }

    fn remove_slot(&mut self, slot: usize, now: Instant) {
        let Some(mut call) = self.calls.get_mut(slot).and_then(Option::take) else {
            return;
        };
        let browser = &mut self.browser;
        call.leg.close(now, &mut |data, path| {
            let _ = browser.send(data, path);
        });
        call.sip.deregister(self.poll.registry());
        self.by_id.remove(&call.id);
        self.by_ufrag.remove(call.leg.local_ufrag());
        if let Some(path) = call.browser_path {
            self.by_addr.remove(&path.remote);
        }
        self.browser.tcp.close_owned_by(slot, self.poll.registry());
    }

    /// Datagrams on the shared browser socket: demultiplexed by address, or for a new
    /// address by the ICE username of its STUN check.
    fn read_browser(&mut self) {
        let mut batch = std::mem::take(&mut self.batch);
        let mut errors = 0;
        while errors < RECV_ERRORS {
            let n = match self.browser.recv(&mut batch) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    errors += 1;
                    continue;
                }
            };
            let now = Instant::now();
            let mut count = 0;
            for i in 0..n {
                let (path, ranges) = batch.datagrams(i);
                for r in ranges {
                    self.on_browser_datagram(&batch.storage[r], path, now);
                    count += 1;
                }
            }
            // One clock read per batch: every packet of it is counted with the time the whole
            // batch took, an upper bound on its own time in the relay.
            crate::stats::RELAY_LATENCY.record(now.elapsed(), count);
            if n < BATCH_SIZE {
                break;
            }
        }
        self.batch = batch;
    }

    /// One datagram on the shared browser socket: demultiplexed by address, or for a new
    /// address by the ICE username of its STUN check.
    fn on_browser_datagram(&mut self, data: &[u8], path: Path, now: Instant) {
        let slot = match self.by_addr.get(&path.remote) {
            Some(&s) => s,
            None => {
                let found = crate::ice_lite::is_stun(data)
                    .then(|| crate::ice_lite::local_ufrag(data))
                    .flatten()
                    .and_then(|u| self.by_ufrag.get(&u).copied());
                match found {
                    Some(s) => s,
                    None => return,
                }
            }
        };
        self.on_leg_datagram(slot, data, path, now);
    }

    /// One datagram (or ICE-TCP frame) for the call in `slot`, along `path`.
    fn on_leg_datagram(&mut self, slot: usize, data: &[u8], path: Path, now: Instant) {
        let Some(call) = self.calls.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let browser = &mut self.browser;
        let mut send = |data: &[u8], path: Path| {
            let _ = browser.send(data, path);
        };
        let result = call
            .leg
            .on_datagram(data, path, now, &mut self.scratch, &mut send);
        // Follow the browser to the path it nominated. Only UDP paths are found by address:
        // a TCP connection's frames come with their call.
        let selected = call.leg.selected();
        if selected != call.browser_path {
            if let Some(old) = call.browser_path.take() {
                if old.transport == crate::udp::Transport::Udp {
                    self.by_addr.remove(&old.remote);
                }
            }
            if let Some(new) = selected {
                if new.transport == crate::udp::Transport::Udp {
                    self.by_addr.insert(new.remote, slot);
                } else {
                    tracing::info!(
                        call = call.id,
                        remote = %new.remote,
                        "media: the browser's path is an ICE-TCP connection"
                    );
                }
                call.browser_path = Some(new);
            }
        }
        match result {
            Ok(Received::Connected) => {
                let _ = call.events.send(MediaEvent::BrowserConnected);
            }
            Ok(Received::Rtp) => call.relay_to_sip(&mut self.scratch, now),
            Ok(Received::Rtcp) => {
                if let Some((_, lsr)) = crate::rtcp::sender_report(&self.scratch) {
                    call.browser_report = Some(PeerReport { lsr, at: now });
                }
            }
            Ok(Received::Nothing) => {}
            Err(e) => call.fail(e),
        }
    }

    /// Datagrams on a call's SIP-side RTP socket.
    fn read_rtp(&mut self, slot: usize) {
        let mut batch = std::mem::take(&mut self.batch);
        let mut errors = 0;
        while errors < RECV_ERRORS {
            let Some(call) = self.calls.get_mut(slot).and_then(Option::as_mut) else {
                break;
            };
            let n = match call.sip.recv_rtp(&mut batch) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    errors += 1;
                    continue;
                }
            };
            let now = Instant::now();
            let mut count = 0;
            for i in 0..n {
                let (path, ranges) = batch.datagrams(i);
                for r in ranges {
                    call.relay_to_browser(
                        &mut batch.storage[r],
                        path,
                        now,
                        &mut self.browser,
                        &mut self.scratch,
                    );
                    count += 1;
                }
            }
            crate::stats::RELAY_LATENCY.record(now.elapsed(), count);
            if n < BATCH_SIZE {
                break;
            }
        }
        self.batch = batch;
    }

    /// RTCP on the SIP leg: the far end's is kept (its sender report, where ours go); a
    /// stranger's only counted.
    fn read_rtcp(&mut self, slot: usize) {
        let mut batch = std::mem::take(&mut self.batch);
        let mut errors = 0;
        while errors < RECV_ERRORS {
            let Some(call) = self.calls.get_mut(slot).and_then(Option::as_mut) else {
                break;
            };
            let n = match call.sip.recv_rtcp(&mut batch) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    errors += 1;
                    continue;
                }
            };
            let now = Instant::now();
            for i in 0..n {
                let (path, ranges) = batch.datagrams(i);
                for r in ranges {
                    if !call.sip.on_rtcp(&batch.storage[r], path, now) {
                        call.counters.rejected();
                    }
                }
            }
            if n < BATCH_SIZE {
                break;
            }
        }
        self.batch = batch;
    }

    fn tick(&mut self, now: Instant) {
        for slot in 0..self.calls.len() {
            let Some(call) = self.calls[slot].as_mut() else {
                continue;
            };
            if call.leg.poll_timeout().is_some_and(|t| t <= now) {
                let browser = &mut self.browser;
                let mut send = |data: &[u8], path: Path| {
                    let _ = browser.send(data, path);
                };
                match call.leg.handle_timeout(now, &mut send) {
                    Ok(Received::Connected) => {
                        let _ = call.events.send(MediaEvent::BrowserConnected);
                    }
                    Ok(_) => {}
                    Err(e) => call.fail(e),
                }
            }
            call.consent = !call.leg.consent_expired(now, Duration::ZERO);
            call.check_timeouts(now);
            call.send_dtmf(now);
            if now >= call.next_rtcp {
                call.next_rtcp = now + crate::rtcp::INTERVAL;
                call.send_reports(&mut self.browser, &mut self.scratch, now);
            }
            if let Some(plan) = call.plan {
                call.counters.publish(call.sip.rx(), plan.clock_rate);
            }
        }
        self.browser.tcp.sweep(self.poll.registry());
    }
}

impl Call {
    /// One datagram on the SIP leg's RTP port: the far end's (see [`crate::rtp_leg`]) is
    /// counted, rewritten, protected and sent to the browser; a stranger's only counted.
    fn relay_to_browser(
        &mut self,
        packet: &mut [u8],
        from: Path,
        now: Instant,
        browser: &mut BrowserSockets,
        scratch: &mut Vec<u8>,
    ) {
        if !self.sip.accept(packet, from, now) {
            self.counters.rejected();
            return;
        }
        self.counters.received(packet.len());
        if crate::browser_leg::is_rtcp(packet) || !header::is_rtp(packet) {
            return;
        }
        let Some(plan) = self.plan else { return };
        if plan.sip_dtmf == Some(header::pt(packet)) {
            if let Some(press) =
                self.dtmf
                    .on_payload(&packet[header::LEN..], header::ts(packet), plan.clock_rate)
            {
                let _ = self.events.send(MediaEvent::Dtmf(press));
            }
        }
        self.sip.on_rtp(packet, now, plan.clock_rate);
        // Transcoding: the packet to send is the transcoder's, with the same header fields
        // on the browser's clock; then the same rewrite as passthrough.
        let packet = if plan.transcode.is_some() {
            let Some(t) = self.transcoder.as_mut() else {
                return;
            };
            match t.to_browser.process(packet) {
                Ok(p) => p,
                Err(_) => return,
            }
        } else {
            if let Some(maps) = &self.law_maps {
                recode_payload(packet, maps.plan.sip_pt, &maps.to_browser);
            }
            packet
        };
        if self
            .to_browser
            .rewrite(packet, &plan.to_browser, now)
            .is_err()
        {
            return;
        }
        let Some(to) = self.browser_path.filter(|_| self.consent) else {
            return;
        };
        if self.leg.protect_rtp(packet, scratch) && browser.send(scratch, to).is_ok() {
            self.counters.sent(scratch.len());
            self.sent_to_browser
                .on_sent(packet.len() - header::LEN, header::ts(packet), now);
        }
    }

    fn relay_to_sip(&mut self, plain: &mut [u8], now: Instant) {
        self.counters.received(plain.len());
        self.last_browser_rx = Some(now);
        let Some(plan) = self.plan else { return };
        self.browser_in_ssrc = Some(header::ssrc(plain));
        self.browser_rx.on_packet(
            crate::relay::header::seq(plain),
            crate::relay::header::ts(plain),
            now,
            plan.browser_clock_rate,
        );
        // While we send an event, the browser's audio toward the far end pauses (RFC 4733
        // §2.5.1.2), so the far end does not hear the tone and the event at once.
        if self.dtmf_out.is_active() {
            if let Some(t) = self.transcoder.as_mut() {
                t.to_sip.skip(plain);
            }
            return;
        }
        if plan.transcode.is_some() {
            // One packet in, one out (more after a loss: concealment first), each rewritten
            // and sent as a relayed one would be.
            let Call {
                transcoder,
                to_sip,
                sip,
                counters,
                ..
            } = self;
            let Some(t) = transcoder.as_mut() else {
                return;
            };
            let _ = t.to_sip.process(plain, |packet| {
                if to_sip.rewrite(packet, &plan.to_sip, now).is_err() {
                    return;
                }
                if sip.send_rtp(packet, now) {
                    counters.sent(packet.len());
                }
            });
            return;
        }
        if let Some(maps) = &self.law_maps {
            recode_payload(plain, maps.plan.browser_pt, &maps.to_sip);
        }
        if self.to_sip.rewrite(plain, &plan.to_sip, now).is_err() {
            return;
        }
        if self.sip.send_rtp(plain, now) {
            self.counters.sent(plain.len());
        }
    }

    /// The next RFC 4733 packet toward the far end, if one is due.
    fn send_dtmf(&mut self, now: Instant) {
        // Nowhere to send (held, or no address yet): the events wait rather than play out
        // unheard.
        let (Some(plan), Some(_)) = (self.plan, self.sip.rtp_path()) else {
            return;
        };
        let Some(pt) = plan.sip_dtmf else { return };
        let mut packet = [0u8; 16];
        if let Some(n) = self.dtmf_out.poll(now, &mut self.to_sip, pt, &mut packet) {
            if self.sip.send_rtp(&packet[..n], now) {
                self.counters.sent(n);
            }
        }
    }

    /// Our RTCP on both legs: SR for what we sent, a reception block for what we got.
    fn send_reports(&mut self, browser: &mut BrowserSockets, scratch: &mut Vec<u8>, now: Instant) {
        let Some(plan) = self.plan else { return };
        let wall = std::time::SystemTime::now();
        self.sip
            .send_report(self.to_sip.out_ssrc(), plan.clock_rate, now, wall);
        if let (Some(to), true) = (self.browser_path, self.leg.is_connected() && self.consent) {
            let reception = self.browser_in_ssrc.map(|ssrc| Reception {
                ssrc,
                stats: &mut self.browser_rx,
                peer: self.browser_report,
            });
            if let Some(report) = crate::rtcp::build(
                self.to_browser.out_ssrc(),
                "gateway",
                &self.sent_to_browser,
                plan.browser_clock_rate,
                reception,
                now,
                wall,
            ) {
                if self.leg.protect_rtcp(&report, scratch) {
                    let _ = browser.send(scratch, to);
                }
            }
        }
    }

    fn fail(&mut self, why: impl Into<Failure>) {
        if !self.finished {
            self.finished = true;
            let _ = self.events.send(match why.into() {
                Failure::Ice(why) => MediaEvent::IceFailed(why),
                Failure::Other(why) => MediaEvent::BrowserFailed(why),
            });
        }
    }

    fn check_timeouts(&mut self, now: Instant) {
        if self.finished {
            return;
        }
        if !self.leg.is_connected() {
            if self
                .connecting_since
                .is_some_and(|t| now.saturating_duration_since(t) > CONNECT_TIMEOUT)
            {
                self.fail("ICE/DTLS did not complete");
            }
            return;
        }
        if self.leg.consent_expired(now, self.restart_grace) {
            self.fail("ICE consent lost and no ICE restart came");
            return;
        }
        if self.held {
            return;
        }
        let silent = |since: Option<Instant>, limit: Duration| {
            since.is_some_and(|t| now.saturating_duration_since(t) > limit)
        };
        let browser_since = self.last_browser_rx.or(self.connecting_since);
        let sip_since = self.sip.last_rx().or(self.sip_since);
        let leg = if self.sip_since.is_some() && silent(sip_since, self.media_timeout) {
            Some("sip")
        } else if silent(browser_since, self.media_timeout + self.restart_grace) {
            Some("browser")
        } else {
            None
        };
        if let Some(leg) = leg {
            self.finished = true;
            let _ = self.events.send(MediaEvent::Timeout { leg });
        }
    }
}

/// Why a browser leg failed, as the call is told.
enum Failure {
    /// ICE never connected on the browser's side.
    Ice(String),
    /// Anything else (DTLS, consent, time-out).
    Other(String),
}

impl From<LegError> for Failure {
    fn from(e: LegError) -> Failure {
        match e {
            LegError::Unanswered { .. } => Failure::Ice(e.to_string()),
            other => Failure::Other(other.to_string()),
        }
    }
}

impl From<&str> for Failure {
    fn from(why: &str) -> Failure {
        Failure::Other(why.to_string())
    }
}
