//! The load generator's media thread: every browser peer, the far end's RTP echo and its RTCP
//! sink on one `mio` poll loop, sans-IO peers driven by the loop's clock.
//!
//! A browser peer is a full ICE agent in the controlling role (Binding requests with
//! USE-CANDIDATE toward the gateway's ICE-lite address, retransmitted until answered, then
//! consent checks every 5 s), a DTLS endpoint in the role the gateway's answer left us
//! (`media::dtls`, i.e. `rtc-dtls`), and SRTP contexts from the DTLS exporter
//! (`media::srtp`, i.e. `rtc-srtp`). Media starts when DTLS completes: one 20 ms packet every
//! 20 ms (50 per second) with an Opus-sized payload carrying a magic, the peer id, a
//! sequence number and the send time. Peers are spread over 20 one-millisecond slots so the
//! traffic is as smooth as real browsers' is.
//!
//! Loss and latency come from the packets' own sequence numbers and timestamps when they come
//! back: far end echo -> gateway -> browser peer.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use media::dtls::{DtlsCertificate, DtlsEndpoint, DtlsRole};
use media::srtp::SrtpSession;
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use rtc_rtp::header::Header;
use rtc_shared::marshal::{Marshal, MarshalSize, Unmarshal};
use rtc_stun::attributes::{
    RawAttribute, ATTR_ICE_CONTROLLING, ATTR_PRIORITY, ATTR_USERNAME, ATTR_USE_CANDIDATE,
};
use rtc_stun::crypto::providers::RingCrypto;
use rtc_stun::fingerprint::FINGERPRINT;
use rtc_stun::integrity::MessageIntegrity;
use rtc_stun::message::{
    is_stun_message, Message, Setter, TransactionId, BINDING_REQUEST, BINDING_SUCCESS,
};
use rtc_stun::textattrs::Username;

use crate::stats::Histogram;
use crate::Timeline;

static CRYPTO: RingCrypto = RingCrypto;

/// Payload bytes of one packet: 20 ms of Opus at 32 kb/s, what a browser sends for voice.
pub const PAYLOAD_LEN: usize = 80;
/// The baseline's plain packets are padded by the AEAD_AES_128_GCM tag so they are as long as
/// the SRTP ones: the same bytes cross the kernel in both runs.
pub const SRTP_TAG_LEN: usize = 16;
const MAGIC: [u8; 4] = *b"LGN1";
const SLOTS: usize = 20;
const ICE_RETRY: Duration = Duration::from_millis(100);
const ICE_MAX_TRIES: u32 = 100;
const CONSENT: Duration = Duration::from_secs(5);

const WAKER: Token = Token(0);
const ECHO: Token = Token(1);
const RTCP: Token = Token(2);
const FIRST_PEER: usize = 3;

/// What the signaling side learnt from the gateway's answer.
pub struct WebRtcSetup {
    pub local_ufrag: String,
    pub remote_ufrag: String,
    pub remote_pwd: String,
    pub remote_fingerprint: String,
    pub role: DtlsRole,
    pub pt: u8,
}

pub struct PeerSetup {
    pub id: u32,
    pub socket: std::net::UdpSocket,
    pub remote: SocketAddr,
    /// `None`: a plain RTP peer of the baseline run (sends at once, no crypto).
    pub webrtc: Option<WebRtcSetup>,
}

pub enum Cmd {
    Add(PeerSetup),
    StartWindow,
    EndWindow,
    Collect(tokio::sync::oneshot::Sender<WindowStats>),
    Stop,
}

/// What one measurement window saw.
#[derive(Clone, Default)]
pub struct WindowStats {
    /// Packets the peers sent during the window (by sequence number).
    pub expected: u64,
    /// Of those, distinct ones that came back (echoed through the far end).
    pub received: u64,
    pub duplicates: u64,
    /// Packets the far end received during the window (browser -> SIP, relayed).
    pub far_rx: u64,
    /// Packets the browser peers received during the window (SIP -> browser, relayed).
    pub browser_rx: u64,
    pub window: Duration,
    pub rtt: Histogram,
    /// Peers that gave up (ICE or DTLS failed).
    pub failed: usize,
}

/// How the signaling side talks to the media thread.
#[derive(Clone)]
pub struct MediaHandle {
    tx: mpsc::Sender<Cmd>,
    waker: Arc<Waker>,
    /// Peers whose media is flowing (DTLS done, or plain).
    pub ready: Arc<AtomicUsize>,
    pub failed: Arc<AtomicUsize>,
}

impl MediaHandle {
    pub fn send(&self, cmd: Cmd) {
        if self.tx.send(cmd).is_ok() {
            let _ = self.waker.wake();
        }
    }

    pub async fn collect(&self) -> WindowStats {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Cmd::Collect(tx));
        rx.await.unwrap_or_default()
    }
}

struct Rtc {
    username: String,
    remote_pwd: String,
    tid: TransactionId,
    tiebreaker: u64,
    ice_ok: bool,
    next_check: Instant,
    tries: u32,
    dtls: DtlsEndpoint,
    srtp: Option<SrtpSession>,
}

struct Peer {
    id: u32,
    sock: UdpSocket,
    remote: SocketAddr,
    rtc: Option<Rtc>,
    ssrc: u32,
    pt: u8,
    rtp_seq: u16,
    rtp_ts: u32,
    next_seq: u64,
    win_first: u64,
    win_end: u64,
    /// Highest sequence number seen + 1 (0: none) and a bit mask of the 64 below it.
    top: u64,
    mask: u64,
    failed: bool,
}

impl Peer {
    fn sending(&self) -> bool {
        !self.failed && self.rtc.as_ref().is_none_or(|r| r.srtp.is_some())
    }
}

struct Loop {
    peers: Vec<Peer>,
    slots: Vec<Vec<usize>>,
    echo: UdpSocket,
    rtcp: UdpSocket,
    cert: Option<DtlsCertificate>,
    timeline: Timeline,
    ready: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    t0: Instant,
    window_open: bool,
    window_start: Instant,
    stats: WindowStats,
    buf: Vec<u8>,
    plain: Vec<u8>,
    out: Vec<u8>,
    echo_batch: MmsgBatch,
}

/// Starts the media thread. `echo` is the far end's RTP socket (it echoes every packet to its
/// source), `rtcp` the far end's RTCP port (drained).
pub fn spawn(
    echo: std::net::UdpSocket,
    rtcp: std::net::UdpSocket,
    cert: Option<DtlsCertificate>,
    timeline: Timeline,
) -> std::io::Result<(MediaHandle, std::thread::JoinHandle<()>)> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (tx, rx) = mpsc::channel();
    echo.set_nonblocking(true)?;
    rtcp.set_nonblocking(true)?;
    let mut echo = UdpSocket::from_std(echo);
    let mut rtcp = UdpSocket::from_std(rtcp);
    poll.registry()
        .register(&mut echo, ECHO, Interest::READABLE)?;
    poll.registry()
        .register(&mut rtcp, RTCP, Interest::READABLE)?;
    let ready = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let now = Instant::now();
    let mut lp = Loop {
        peers: Vec::new(),
        slots: vec![Vec::new(); SLOTS],
        echo,
        rtcp,
        cert,
        timeline,
        ready: ready.clone(),
        failed: failed.clone(),
        t0: now,
        window_open: false,
        window_start: now,
        stats: WindowStats::default(),
        buf: vec![0; 2048],
        plain: Vec::with_capacity(2048),
        out: Vec::with_capacity(2048),
        echo_batch: MmsgBatch::new(),
    };
    let handle = std::thread::Builder::new()
        .name("loadgen-media".into())
        .spawn(move || {
            below_caller_priority();
            lp.run(poll, rx)
        })?;
    Ok((
        MediaHandle {
            tx,
            waker,
            ready,
            failed,
        },
        handle,
    ))
}

impl Loop {
    fn run(&mut self, mut poll: Poll, rx: mpsc::Receiver<Cmd>) {
        let mut events = Events::with_capacity(1024);
        let mut done_ms: u64 = 0;
        let mut last_timers = Instant::now();
        loop {
            let _ = poll.poll(&mut events, Some(Duration::from_millis(1)));
            for ev in events.iter() {
                match ev.token() {
                    WAKER => {}
                    ECHO => self.drain_echo(),
                    RTCP => self.drain_rtcp(),
                    Token(t) => self.drain_peer(t - FIRST_PEER),
                }
            }
            loop {
                match rx.try_recv() {
                    Ok(Cmd::Add(setup)) => self.add(setup, &poll),
                    Ok(Cmd::StartWindow) => self.start_window(),
                    Ok(Cmd::EndWindow) => self.end_window(),
                    Ok(Cmd::Collect(reply)) => {
                        let _ = reply.send(self.collect());
                    }
                    Ok(Cmd::Stop) | Err(mpsc::TryRecvError::Disconnected) => return,
                    Err(mpsc::TryRecvError::Empty) => break,
                }
            }
            let now = Instant::now();
            let now_ms = now.duration_since(self.t0).as_millis() as u64;
            while done_ms < now_ms {
                done_ms += 1;
                let slot = (done_ms % SLOTS as u64) as usize;
                for k in 0..self.slots[slot].len() {
                    let i = self.slots[slot][k];
                    self.send_media(i);
                }
            }
            if now.duration_since(last_timers) >= Duration::from_millis(10) {
                last_timers = now;
                for i in 0..self.peers.len() {
                    self.timers(i, now);
                }
            }
        }
    }

    fn add(&mut self, setup: PeerSetup, poll: &Poll) {
        let index = self.peers.len();
        if setup.socket.set_nonblocking(true).is_err() {
            self.failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut sock = UdpSocket::from_std(setup.socket);
        if poll
            .registry()
            .register(&mut sock, Token(FIRST_PEER + index), Interest::READABLE)
            .is_err()
        {
            self.failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let now = Instant::now();
        let mut pt = 111;
        let rtc = match (setup.webrtc, &self.cert) {
            (Some(w), Some(cert)) => {
                pt = w.pt;
                match DtlsEndpoint::new(w.role, cert, &w.remote_fingerprint, now) {
                    Ok(dtls) => Some(Rtc {
                        username: format!("{}:{}", w.remote_ufrag, w.local_ufrag),
                        remote_pwd: w.remote_pwd,
                        tid: TransactionId::new(),
                        tiebreaker: rand::random(),
                        ice_ok: false,
                        next_check: now,
                        tries: 0,
                        dtls,
                        srtp: None,
                    }),
                    Err(e) => {
                        eprintln!("peer {}: DTLS: {e}", setup.id);
                        self.failed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            }
            _ => None,
        };
        let plain = rtc.is_none();
        self.peers.push(Peer {
            id: setup.id,
            sock,
            remote: setup.remote,
            rtc,
            ssrc: rand::random(),
            pt,
            rtp_seq: rand::random(),
            rtp_ts: rand::random(),
            next_seq: 0,
            win_first: 0,
            win_end: 0,
            top: 0,
            mask: 0,
            failed: false,
        });
        self.slots[rand::random_range(0..SLOTS)].push(index);
        if plain {
            self.ready.fetch_add(1, Ordering::Relaxed);
        } else {
            self.timers(index, now);
        }
    }

    fn fail(&mut self, i: usize, why: &str) {
        let p = &mut self.peers[i];
        if !p.failed {
            p.failed = true;
            eprintln!("peer {}: {why}", p.id);
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn timers(&mut self, i: usize, now: Instant) {
        let p = &mut self.peers[i];
        if p.failed {
            return;
        }
        let Some(rtc) = p.rtc.as_mut() else {
            return;
        };
        if now >= rtc.next_check {
            if !rtc.ice_ok {
                rtc.tries += 1;
                if rtc.tries > ICE_MAX_TRIES {
                    self.fail(i, "ICE: no answer to our checks");
                    return;
                }
                rtc.next_check = now + ICE_RETRY;
            } else {
                rtc.next_check = now + CONSENT;
            }
            match binding_request(rtc) {
                Ok(bytes) => {
                    let _ = p.sock.send_to(&bytes, p.remote);
                }
                Err(e) => {
                    self.fail(i, &format!("STUN: {e}"));
                    return;
                }
            }
        }
        if rtc.ice_ok && rtc.srtp.is_none() {
            if let Some(at) = rtc.dtls.poll_timeout() {
                if now >= at {
                    if let Err(e) = rtc.dtls.handle_timeout(now) {
                        self.fail(i, &format!("DTLS: {e}"));
                        return;
                    }
                }
            }
            self.flush_dtls(i);
        }
    }

    /// Sends what DTLS has queued, and notes when our last flight left: the gateway's INVITE
    /// follows its own handshake completing, which our last flight triggers.
    fn flush_dtls(&mut self, i: usize) {
        let p = &mut self.peers[i];
        let mut sent = false;
        if let Some(rtc) = p.rtc.as_mut() {
            while let Some(d) = rtc.dtls.poll_transmit() {
                let _ = p.sock.send_to(&d, p.remote);
                sent = true;
            }
        }
        if sent {
            let now = Instant::now();
            if let Ok(mut t) = self.timeline.lock() {
                if let Some(c) = t.get_mut(p.id as usize) {
                    c.dtls_tx = Some(now);
                }
            }
        }
    }

    fn send_media(&mut self, i: usize) {
        let p = &mut self.peers[i];
        if !p.sending() {
            return;
        }
        let header = Header {
            version: 2,
            payload_type: p.pt,
            sequence_number: p.rtp_seq,
            timestamp: p.rtp_ts,
            ssrc: p.ssrc,
            ..Default::default()
        };
        p.rtp_seq = p.rtp_seq.wrapping_add(1);
        p.rtp_ts = p.rtp_ts.wrapping_add(960);
        let hlen = header.marshal_size();
        let pad = if p.rtc.is_none() { SRTP_TAG_LEN } else { 0 };
        self.plain.clear();
        self.plain.resize(hlen + PAYLOAD_LEN + pad, 0);
        if header.marshal_to(&mut self.plain[..hlen]).is_err() {
            return;
        }
        let seq = p.next_seq;
        p.next_seq += 1;
        let sent_ns = self.t0.elapsed().as_nanos() as u64;
        let payload = &mut self.plain[hlen..];
        payload[0..4].copy_from_slice(&MAGIC);
        payload[4..8].copy_from_slice(&p.id.to_be_bytes());
        payload[8..16].copy_from_slice(&seq.to_be_bytes());
        payload[16..24].copy_from_slice(&sent_ns.to_be_bytes());
        let wire: &[u8] = match p.rtc.as_mut().and_then(|r| r.srtp.as_mut()) {
            Some(srtp) => {
                if srtp.protect_rtp(&self.plain, &mut self.out).is_err() {
                    return;
                }
                &self.out
            }
            None => &self.plain,
        };
        let _ = p.sock.send_to(wire, p.remote);
    }

    /// The far end's echo: every call's packets arrive on this one socket, so it reads and
    /// answers in batches (`recvmmsg`/`sendmmsg`, up to 64 datagrams per system call).
    fn drain_echo(&mut self) {
        use std::os::fd::AsRawFd;
        let fd = self.echo.as_raw_fd();
        loop {
            match self.echo_batch.recv(fd) {
                Ok(0) => return,
                Ok(n) => {
                    if self.window_open {
                        self.stats.far_rx += n as u64;
                    }
                    self.echo_batch.echo(fd, n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        }
    }

    fn drain_rtcp(&mut self) {
        loop {
            match self.rtcp.recv_from(&mut self.buf) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => continue,
            }
        }
    }

    fn drain_peer(&mut self, i: usize) {
        if i >= self.peers.len() {
            return;
        }
        loop {
            let n = match self.peers[i].sock.recv_from(&mut self.buf) {
                Ok((n, _)) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => continue,
            };
            let now = Instant::now();
            match self.buf.first().copied() {
                Some(0..=3) if is_stun_message(&self.buf[..n]) => self.on_stun(i, n),
                Some(20..=63) => self.on_dtls(i, n, now),
                Some(128..=191) => {
                    // RFC 5761: payload types 64-95 (with the marker bit: 192-223) are RTCP.
                    if matches!(self.buf.get(1), Some(192..=223)) {
                        continue;
                    }
                    self.on_rtp(i, n, now);
                }
                _ => {}
            }
        }
    }

    fn on_stun(&mut self, i: usize, n: usize) {
        let p = &mut self.peers[i];
        let Some(rtc) = p.rtc.as_mut() else {
            return;
        };
        let mut m = Message::new();
        if m.unmarshal_binary(&self.buf[..n]).is_err()
            || m.typ != BINDING_SUCCESS
            || m.transaction_id != rtc.tid
            || MessageIntegrity::check(&mut m, rtc.remote_pwd.as_bytes(), &CRYPTO).is_err()
        {
            return;
        }
        if !rtc.ice_ok {
            rtc.ice_ok = true;
            rtc.next_check = Instant::now() + CONSENT;
            self.flush_dtls(i);
        }
    }

    fn on_dtls(&mut self, i: usize, n: usize, now: Instant) {
        let p = &mut self.peers[i];
        let Some(rtc) = p.rtc.as_mut() else {
            return;
        };
        if let Err(e) = rtc.dtls.handle_datagram(&self.buf[..n], now) {
            if rtc.srtp.is_none() {
                let e = e.to_string();
                self.flush_dtls(i);
                self.fail(i, &format!("DTLS: {e}"));
            }
            return;
        }
        if rtc.srtp.is_none() && rtc.dtls.is_connected() {
            match rtc.dtls.srtp_keys().map(|k| SrtpSession::new(&k)) {
                Ok(Ok(s)) => {
                    rtc.srtp = Some(s);
                    let id = p.id as usize;
                    if let Ok(mut t) = self.timeline.lock() {
                        if let Some(c) = t.get_mut(id) {
                            c.media_up = Some(now);
                        }
                    }
                    self.ready.fetch_add(1, Ordering::Relaxed);
                }
                _ => {
                    self.flush_dtls(i);
                    self.fail(i, "SRTP keys");
                    return;
                }
            }
        }
        self.flush_dtls(i);
    }

    fn on_rtp(&mut self, i: usize, n: usize, now: Instant) {
        let p = &mut self.peers[i];
        let packet: &[u8] = match p.rtc.as_mut() {
            Some(rtc) => match rtc.srtp.as_mut() {
                Some(srtp) => {
                    if srtp.unprotect_rtp(&self.buf[..n], &mut self.plain).is_err() {
                        return;
                    }
                    &self.plain
                }
                None => return,
            },
            None => &self.buf[..n],
        };
        let mut reader = packet;
        let Ok(h) = Header::unmarshal(&mut reader) else {
            return;
        };
        let Some(payload) = packet.get(h.marshal_size()..) else {
            return;
        };
        if payload.len() < 24 || payload[0..4] != MAGIC {
            return;
        }
        if self.window_open {
            self.stats.browser_rx += 1;
        }
        let (Ok(seq), Ok(sent)) = (payload[8..16].try_into(), payload[16..24].try_into()) else {
            return;
        };
        let seq = u64::from_be_bytes(seq);
        let sent = u64::from_be_bytes(sent);
        if seq < p.win_first || seq >= p.win_end {
            return;
        }
        // Duplicate check over the last 64 sequence numbers.
        let fresh = if seq >= p.top {
            let shift = seq + 1 - p.top;
            p.mask = if shift >= 64 { 0 } else { p.mask << shift };
            p.mask |= 1;
            p.top = seq + 1;
            true
        } else {
            let back = p.top - 1 - seq;
            if back >= 64 {
                true
            } else if p.mask & (1 << back) != 0 {
                false
            } else {
                p.mask |= 1 << back;
                true
            }
        };
        if !fresh {
            self.stats.duplicates += 1;
            return;
        }
        self.stats.received += 1;
        let now_ns = now.duration_since(self.t0).as_nanos() as u64;
        self.stats.rtt.record(now_ns.saturating_sub(sent));
    }

    fn start_window(&mut self) {
        for p in &mut self.peers {
            p.win_first = p.next_seq;
            p.win_end = u64::MAX;
        }
        self.stats.expected = 0;
        self.stats.received = 0;
        self.stats.duplicates = 0;
        self.stats.far_rx = 0;
        self.stats.browser_rx = 0;
        self.stats.rtt.clear();
        self.window_open = true;
        self.window_start = Instant::now();
    }

    fn end_window(&mut self) {
        self.window_open = false;
        self.stats.window = self.window_start.elapsed();
        self.stats.expected = 0;
        for p in &mut self.peers {
            if p.win_end == u64::MAX {
                p.win_end = p.next_seq;
            }
            self.stats.expected += p.win_end - p.win_first;
        }
    }

    fn collect(&mut self) -> WindowStats {
        let mut s = self.stats.clone();
        s.failed = self.failed.load(Ordering::Relaxed);
        s
    }
}

fn binding_request(rtc: &mut Rtc) -> Result<Vec<u8>, String> {
    rtc.tid = TransactionId::new();
    let mut m = Message::new();
    let e = |e: rtc_shared::error::Error| e.to_string();
    m.build(&[Box::new(BINDING_REQUEST), Box::new(rtc.tid)])
        .map_err(e)?;
    Username::new(ATTR_USERNAME, rtc.username.clone())
        .add_to(&mut m)
        .map_err(e)?;
    let raw = |typ, value: &[u8]| RawAttribute {
        typ,
        length: 0,
        value: value.to_vec(),
    };
    raw(ATTR_ICE_CONTROLLING, &rtc.tiebreaker.to_be_bytes())
        .add_to(&mut m)
        .map_err(e)?;
    // Host candidate priority (RFC 8445 §5.1.2.1: type pref 126, local pref 65535, component 1).
    raw(ATTR_PRIORITY, &0x7eff_ffffu32.to_be_bytes())
        .add_to(&mut m)
        .map_err(e)?;
    raw(ATTR_USE_CANDIDATE, &[]).add_to(&mut m).map_err(e)?;
    MessageIntegrity::new_short_term_integrity_with_provider(rtc.remote_pwd.clone(), &CRYPTO)
        .add_to(&mut m)
        .map_err(e)?;
    FINGERPRINT.add_to(&mut m).map_err(e)?;
    Ok(m.raw)
}

/// Shared record of when each call reached each milestone.
pub fn new_timeline(n: usize) -> Timeline {
    Arc::new(Mutex::new(vec![crate::CallTimes::default(); n]))
}

const MMSG: usize = 64;
const MMSG_SLOT: usize = 2048;

/// Buffers for `recvmmsg`/`sendmmsg` on one socket, reused for every batch.
struct MmsgBatch {
    data: Vec<u8>,
    addrs: Vec<libc::sockaddr_storage>,
    iov: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers in the headers only ever point into the batch's own heap buffers
// (moved along with it) and are rewritten by `prepare` before every use.
unsafe impl Send for MmsgBatch {}

impl MmsgBatch {
    fn new() -> Self {
        // SAFETY: all-zero is a valid value of these plain C structs.
        let (addr, iov, hdr) = unsafe {
            (
                std::mem::zeroed::<libc::sockaddr_storage>(),
                std::mem::zeroed::<libc::iovec>(),
                std::mem::zeroed::<libc::mmsghdr>(),
            )
        };
        Self {
            data: vec![0; MMSG * MMSG_SLOT],
            addrs: vec![addr; MMSG],
            iov: vec![iov; MMSG],
            hdrs: vec![hdr; MMSG],
        }
    }

    /// Points every header at its buffer and address (the vectors never reallocate, but the
    /// pointers are refreshed each time anyway).
    fn prepare(&mut self) {
        let base = self.data.as_mut_ptr();
        for i in 0..MMSG {
            self.iov[i] = libc::iovec {
                // SAFETY: i * MMSG_SLOT is within `data` (MMSG * MMSG_SLOT bytes).
                iov_base: unsafe { base.add(i * MMSG_SLOT) }.cast(),
                iov_len: MMSG_SLOT,
            };
            let h = &mut self.hdrs[i];
            h.msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
            h.msg_hdr.msg_iov = &mut self.iov[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = std::ptr::null_mut();
            h.msg_hdr.msg_controllen = 0;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
    }

    /// Receives up to 64 datagrams without blocking; their lengths and sources stay in the
    /// headers for [`Self::echo`].
    fn recv(&mut self, fd: i32) -> std::io::Result<usize> {
        self.prepare();
        // SAFETY: the headers point at live buffers owned by `self` for the whole call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                MMSG as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Sends the `n` datagrams just received back to where each came from.
    fn echo(&mut self, fd: i32, n: usize) {
        for i in 0..n {
            self.iov[i].iov_len = self.hdrs[i].msg_len as usize;
        }
        let mut done = 0;
        while done < n {
            // SAFETY: as in `recv`; the names and lengths are those recvmmsg filled in.
            let sent = unsafe {
                libc::sendmmsg(
                    fd,
                    self.hdrs[done..].as_mut_ptr(),
                    (n - done) as u32,
                    libc::MSG_DONTWAIT,
                )
            };
            if sent <= 0 {
                // Full send buffer or an error: the rest is lost, as a real far end's would be.
                return;
            }
            done += sent as usize;
        }
    }
}

/// Under a real-time policy (`scripts/bench` runs the load generator with `chrt -f`), the media
/// thread takes one priority step below the signaling thread: a saturated media loop would
/// otherwise never yield (SCHED_FIFO does not time-slice) and the signaling thread's timers,
/// which open and close the measurement windows, would fire late.
fn below_caller_priority() {
    // SAFETY: plain system calls on the calling thread with a local struct.
    unsafe {
        let policy = libc::sched_getscheduler(0);
        if policy != libc::SCHED_FIFO && policy != libc::SCHED_RR {
            return;
        }
        let mut param: libc::sched_param = std::mem::zeroed();
        if libc::sched_getparam(0, &mut param) == 0 && param.sched_priority > 1 {
            param.sched_priority -= 1;
            libc::sched_setscheduler(0, policy, &param);
        }
    }
}
