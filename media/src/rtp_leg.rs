//! The plain RTP/AVP leg toward the SIP side: where to send and whose packets to take, with
//! strict source checks as Asterisk's `strictrtp` and rtpengine's strict-source do, so that a
//! stranger who sends to the call's port ("RTP bleed") neither hears the agent nor is heard.
//!
//! - The **signalled** address (the far end's SDP) is preferred: its packets are always
//!   taken, and once it sends RTP it is the latch, whatever was learned before.
//! - **Another source** (a far end behind NAT whose SDP names an address it does not send
//!   from: symmetric RTP, RFC 4961 practice) is learned only from a run of [`PROBATION`]
//!   valid RTP packets of one SSRC in sequence (RFC 3550 §A.1), and only while the far end
//!   we use has been silent for [`LEARN_AFTER`] since we started sending to it.
//! - Nothing that is not RTP is ever latched (RTCP, STUN, garbage).
//! - A re-INVITE to a new address keeps the old source's packets flowing until the new one
//!   proves itself; sending goes to the newly signalled address at once.
//! - A new far end (the target of a REFER) drops the old one for good: its addresses are
//!   never taken or learned again.
//!
//! This is the sans-IO half of [`crate::sip_leg::SipLeg`], which owns the sockets; keeping
//! the decisions here lets them be tested without any.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::udp::Path;

/// Valid RTP packets in sequence, of one SSRC and from one address, that a source other than
/// the signalled one must send before it is learned. RFC 3550 §A.1 asks for 2 (its
/// `MIN_SEQUENTIAL`); Asterisk's `strictrtp` probation default is 4. 4 packets are 80 ms of
/// 20 ms audio: nothing a real far end notices, and a source must keep a stream going (not
/// send one lucky packet) to be learned.
pub const PROBATION: u8 = 4;

/// How long the far end we send to must have been silent (no packet from the signalled
/// address nor from the learned source), counted from our first packet to it, before another
/// source may be learned. A real far end answers our media within a round trip or two, so a
/// stranger who sprays the port while the call is set up finds learning closed; a far end
/// whose SDP address is unreachable (NAT) is learned after about this long plus the
/// probation run. Counting from our first packet, not from the SDP, keeps learning closed
/// while a call rings or the browser connects.
pub const LEARN_AFTER: Duration = Duration::from_secs(1);

/// How many addresses of replaced far ends are remembered (RTP: where it was signalled, its
/// source, the source kept across its last re-INVITE).
const BANNED: usize = 3;

/// Whether `p` is a plausible RTP packet (RFC 3550 §5.1): version 2, not an RTCP packet type
/// (RFC 5761 §4), and long enough for its CSRCs, header extension and padding. Cheap, no
/// allocation: it runs for every packet of a source on probation.
pub fn valid_rtp(p: &[u8]) -> bool {
    if p.len() < 12 || p[0] >> 6 != 2 || (192..=223).contains(&p[1]) {
        return false;
    }
    let mut end = 12 + 4 * usize::from(p[0] & 0x0f);
    if p[0] & 0x10 != 0 {
        let Some(ext) = p.get(end + 2..end + 4) else {
            return false;
        };
        end += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
    }
    let padding = if p[0] & 0x20 != 0 {
        match p.last() {
            Some(&0) | None => return false,
            Some(&n) => usize::from(n),
        }
    } else {
        0
    };
    end + padding <= p.len()
}

fn ssrc_seq(p: &[u8]) -> (u32, u16) {
    (
        u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
        u16::from_be_bytes([p[2], p[3]]),
    )
}

/// A source on probation: its address, SSRC, last sequence number and run length.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    from: SocketAddr,
    ssrc: u32,
    seq: u16,
    run: u8,
}

/// Addressing state of one plain RTP leg's RTP.
#[derive(Debug, Default, Clone)]
pub struct RtpPeer {
    /// The far end's address from its latest SDP that named one.
    signalled: Option<SocketAddr>,
    /// False while the latest SDP named no address (port 0, `c=0.0.0.0`): no media.
    active: bool,
    /// The source we send to and take packets from: the signalled address once it sent RTP,
    /// or a source learned on probation.
    source: Option<SocketAddr>,
    /// The source of before the last re-INVITE: its packets are still taken until the new
    /// source proves itself (the far end may be the same, behind NAT).
    kept: Option<SocketAddr>,
    /// Addresses of far ends that were replaced (a REFER's transferor): never taken again.
    banned: [Option<SocketAddr>; BANNED],
    /// Our address the source sends to: what we send from, so a far end that checks the
    /// source (or a NAT/firewall that keeps state) sees the address it sent to.
    local: Option<IpAddr>,
    /// The far end's last sign of life, or our first packet to it since it was signalled:
    /// learning another source opens [`LEARN_AFTER`] later. `None` until we send.
    quiet_since: Option<Instant>,
    candidate: Option<Candidate>,
    last_rx: Option<Instant>,
    on_hold: bool,
}

impl RtpPeer {
    /// A leg whose far end is not known yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The address from the far end's SDP; `None` (port 0 or c=0.0.0.0) means no media, and
    /// keeps what was learned for the address that comes back. A new address (the far end
    /// moved, or says it did) is sent to at once; the source of before is still taken until
    /// the new one proves itself, and may be learned again if the new address stays silent
    /// (a far end behind NAT whose re-INVITE changed its SDP but not its source).
    pub fn set_signalled(&mut self, addr: Option<SocketAddr>) {
        let Some(addr) = addr.filter(|a| a.port() != 0 && !a.ip().is_unspecified()) else {
            self.active = false;
            self.quiet_since = None;
            self.candidate = None;
            return;
        };
        self.active = true;
        if self.signalled == Some(addr) {
            return;
        }
        self.signalled = Some(addr);
        if self.source != Some(addr) {
            if self.source.is_some() {
                self.kept = self.source.take();
            }
            self.local = None;
        }
        self.quiet_since = None;
        self.candidate = None;
    }

    /// A new far end replaces the old one (the target of a REFER): the old one's addresses
    /// are dropped for good, so its packets are neither heard nor learned, and nothing more
    /// is sent there.
    pub fn replace_far_end(&mut self, addr: Option<SocketAddr>) {
        let old = [self.signalled, self.source, self.kept];
        self.banned = old.map(|a| a.filter(|a| Some(*a) != addr));
        self.signalled = None;
        self.source = None;
        self.kept = None;
        self.local = None;
        self.quiet_since = None;
        self.candidate = None;
        self.set_signalled(addr);
    }

    /// Whether we should send at all (RFC 3264 hold: sendonly/inactive from us). Nothing is
    /// learned while held: neither side sends, and silence proves nothing.
    pub fn set_hold(&mut self, on_hold: bool) {
        if self.on_hold != on_hold {
            self.quiet_since = None;
            self.candidate = None;
        }
        self.on_hold = on_hold;
    }

    /// A packet arrived from `from`, sent to our address `local` (when the kernel says):
    /// whether to take it. Per packet: a few compares for the far end's packets; a stranger's
    /// go through probation (see the module's documentation).
    #[inline]
    pub fn on_receive(
        &mut self,
        packet: &[u8],
        from: SocketAddr,
        local: Option<IpAddr>,
        now: Instant,
    ) -> bool {
        if self.source == Some(from) {
            self.heard_from_source(local, now);
            return true;
        }
        if self.signalled == Some(from) {
            if valid_rtp(packet) {
                self.source = Some(from);
                self.kept = None;
                self.candidate = None;
                self.heard_from_source(local, now);
            } else {
                self.last_rx = Some(now);
            }
            return true;
        }
        if self.kept == Some(from) {
            self.last_rx = Some(now);
            // Kept, not preferred: it must pass probation like anyone to be sent to again.
            if self.probation(packet, from, now) {
                self.learn(from, local, now);
            }
            return true;
        }
        if self.probation(packet, from, now) {
            self.learn(from, local, now);
            return true;
        }
        false
    }

    #[inline]
    fn heard_from_source(&mut self, local: Option<IpAddr>, now: Instant) {
        self.last_rx = Some(now);
        self.quiet_since = Some(now);
        if local.is_some() {
            self.local = local;
        }
    }

    /// One more packet of a stranger (or of the kept source): whether its run is complete.
    fn probation(&mut self, packet: &[u8], from: SocketAddr, now: Instant) -> bool {
        let open = self.active
            && !self.on_hold
            && self.signalled.is_some()
            && self
                .quiet_since
                .is_some_and(|t| now.saturating_duration_since(t) >= LEARN_AFTER)
            && !self.banned.contains(&Some(from));
        if !open || !valid_rtp(packet) {
            return false;
        }
        let (ssrc, seq) = ssrc_seq(packet);
        let run = match self.candidate {
            Some(c) if c.from == from && c.ssrc == ssrc && c.seq.wrapping_add(1) == seq => {
                c.run.saturating_add(1)
            }
            _ => 1,
        };
        self.candidate = Some(Candidate {
            from,
            ssrc,
            seq,
            run,
        });
        run >= PROBATION
    }

    fn learn(&mut self, from: SocketAddr, local: Option<IpAddr>, now: Instant) {
        tracing::debug!(%from, signalled = ?self.signalled, "media: far end learned on probation");
        self.source = Some(from);
        self.kept = None;
        self.candidate = None;
        self.local = None;
        self.heard_from_source(local, now);
    }

    /// We sent the far end a packet: the first one after it was signalled starts the clock
    /// of [`LEARN_AFTER`].
    #[inline]
    pub fn on_sent(&mut self, now: Instant) {
        if self.quiet_since.is_none() {
            self.quiet_since = Some(now);
        }
    }

    /// The far end showed it is alive some other way (its RTCP): learning stays closed, as
    /// for its RTP; a far end that only sends comfort noise now and then still reports.
    pub fn alive(&mut self, now: Instant) {
        if self.quiet_since.is_some() {
            self.quiet_since = Some(now);
        }
    }

    /// The source we take packets from and send to, once one sent RTP.
    pub fn source(&self) -> Option<SocketAddr> {
        self.source
    }

    /// The far end's signalled address, if its latest SDP named one.
    pub fn signalled(&self) -> Option<SocketAddr> {
        self.signalled.filter(|_| self.active)
    }

    /// Whether the source was learned on probation rather than signalled (behind NAT).
    pub fn is_learned(&self) -> bool {
        self.source.is_some() && self.source != self.signalled
    }

    /// Whether `addr` belonged to a far end that was replaced.
    pub fn is_banned(&self, addr: SocketAddr) -> bool {
        self.banned.contains(&Some(addr))
    }

    /// Our address to send from: the one the far end sends to, once it has sent; before
    /// that the kernel's choice by route.
    pub fn local(&self) -> Option<IpAddr> {
        self.local
    }

    /// Where to send, if anywhere: the source once it sent, else the signalled address.
    pub fn destination(&self) -> Option<SocketAddr> {
        if self.on_hold || !self.active {
            return None;
        }
        self.source.or(self.signalled)
    }

    /// Where to send and from which of our addresses, if anywhere.
    pub fn path(&self) -> Option<Path> {
        self.destination()
            .map(|remote| Path::udp(remote, self.local))
    }

    /// When media last arrived from the far end.
    pub fn last_rx(&self) -> Option<Instant> {
        self.last_rx
    }
}

/// Where our RTCP to the far end goes, and whose RTCP we take: it follows the RTP latch.
/// Taken are the signalled RTCP address (`a=rtcp`, else the RTP port plus one), the port
/// above the RTP source, and, for a source learned behind NAT, any port of its IP (a NAT
/// maps the RTCP port as it likes). Our reports go where the far end's own RTCP came from,
/// else to the signalled address while the source is the signalled one, else to the port
/// above the learned source. A stranger's RTCP is ignored.
#[derive(Debug, Default, Clone)]
pub struct RtcpPeer {
    /// The signalled RTCP address of the latest SDP that named one.
    signalled: Option<SocketAddr>,
    /// Where the far end's RTCP came from (and our address it came to), once taken.
    heard: Option<Path>,
    /// RTCP addresses of far ends that were replaced.
    banned: [Option<SocketAddr>; 2],
    on_hold: bool,
}

impl RtcpPeer {
    /// A leg whose far end is not known yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The RTCP address from the far end's SDP; `None` (hold with `c=0.0.0.0`) keeps the one
    /// of before for the retrieve. A new address forgets where RTCP came from: the far end
    /// moved.
    pub fn set_signalled(&mut self, addr: Option<SocketAddr>) {
        let Some(addr) = addr.filter(|a| a.port() != 0 && !a.ip().is_unspecified()) else {
            return;
        };
        if self.signalled != Some(addr) {
            self.heard = None;
        }
        self.signalled = Some(addr);
    }

    /// A new far end replaces the old one: the old one's RTCP addresses are dropped for good.
    pub fn replace_far_end(&mut self, addr: Option<SocketAddr>) {
        let old = [self.signalled, self.heard.map(|p| p.remote)];
        self.banned = old.map(|a| a.filter(|a| Some(*a) != addr));
        self.signalled = None;
        self.heard = None;
        self.set_signalled(addr);
    }

    /// Whether we should send at all (RFC 3264 hold, as for RTP).
    pub fn set_hold(&mut self, on_hold: bool) {
        self.on_hold = on_hold;
    }

    /// Whether RTCP from `from` is the far end's, given the RTP latch `rtp`.
    fn is_far_end(&self, from: SocketAddr, rtp: &RtpPeer) -> bool {
        if self.banned.contains(&Some(from)) || rtp.is_banned(from) {
            return false;
        }
        if self.signalled == Some(from) {
            return true;
        }
        let Some(source) = rtp.source() else {
            return false;
        };
        let learned = rtp.is_learned();
        source.ip() == from.ip() && (learned || source.port().wrapping_add(1) == from.port())
    }

    /// RTCP arrived along `path`: whether it is the far end's (its reports count, and ours
    /// go back along that path); anything else is dropped.
    pub fn on_receive(&mut self, path: Path, rtp: &RtpPeer) -> bool {
        if !self.is_far_end(path.remote, rtp) {
            return false;
        }
        self.heard = Some(path);
        true
    }

    /// Where to send, if anywhere, and from which of our addresses.
    pub fn destination(&self, rtp: &RtpPeer) -> Option<Path> {
        if self.on_hold {
            return None;
        }
        if let Some(heard) = self.heard.filter(|h| self.is_far_end(h.remote, rtp)) {
            return Some(heard);
        }
        match rtp.source() {
            Some(s) if rtp.is_learned() => Some(Path::udp(
                SocketAddr::new(s.ip(), s.port().wrapping_add(1)),
                rtp.local(),
            )),
            _ => self.signalled.map(Path::to),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }

    /// A 20 ms PCMU packet of `ssrc` numbered `seq`.
    fn rtp(ssrc: u32, seq: u16) -> [u8; 172] {
        let mut p = [0xd5u8; 172];
        p[0] = 0x80;
        p[1] = 0;
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        p[8..12].copy_from_slice(&ssrc.to_be_bytes());
        p
    }

    const FAR: u32 = 0x0bad_cafe;
    const EVIL: u32 = 0x0e71_0e71;

    /// Sends `count` packets of `ssrc` from `from` starting at `seq`, 20 ms apart from `at`:
    /// which of them were taken.
    fn stream(
        p: &mut RtpPeer,
        from: &str,
        ssrc: u32,
        seq: u16,
        count: u16,
        at: Instant,
    ) -> Vec<bool> {
        (0..count)
            .map(|i| {
                let now = at + Duration::from_millis(20 * u64::from(i));
                p.on_receive(&rtp(ssrc, seq.wrapping_add(i)), addr(from), None, now)
            })
            .collect()
    }

    /// The far end at `far` and a stranger at `evil` send `count` packets each, interleaved
    /// 10 ms apart from `at`: whether all of the far end's and any of the stranger's were
    /// taken.
    fn both(
        p: &mut RtpPeer,
        far: &str,
        evil: &str,
        seq: u16,
        count: u16,
        at: Instant,
    ) -> (bool, bool) {
        let (mut far_taken, mut evil_taken) = (true, false);
        for i in 0..count {
            let now = at + Duration::from_millis(20 * u64::from(i));
            let seq = seq.wrapping_add(i);
            far_taken &= p.on_receive(&rtp(FAR, seq), addr(far), None, now);
            let now = now + Duration::from_millis(10);
            evil_taken |= p.on_receive(&rtp(EVIL, seq), addr(evil), None, now);
        }
        (far_taken, evil_taken)
    }

    #[test]
    fn valid_rtp_needs_version_2_a_whole_header_and_no_rtcp_type() {
        assert!(valid_rtp(&rtp(1, 1)));
        assert!(!valid_rtp(&rtp(1, 1)[..11]), "short");
        let mut p = rtp(1, 1);
        p[0] = 0x40;
        assert!(!valid_rtp(&p), "version 1");
        p[0] = 0x80;
        p[1] = 200;
        assert!(!valid_rtp(&p), "an RTCP sender report");
        p[1] = 0;
        p[0] = 0x8f;
        assert!(valid_rtp(&p), "15 CSRCs fit in 172 bytes");
        assert!(!valid_rtp(&p[..60]), "15 CSRCs do not fit in 60");
        p[0] = 0x90;
        p[12..16].copy_from_slice(&[0xbe, 0xde, 0xff, 0xff]);
        assert!(!valid_rtp(&p), "an extension longer than the packet");
        p[0] = 0xa0;
        p[171] = 0;
        assert!(!valid_rtp(&p), "padding of 0");
        p[171] = 200;
        assert!(!valid_rtp(&p), "padding longer than the packet");
        p[171] = 4;
        assert!(valid_rtp(&p));
        assert!(!valid_rtp(b"\x00\x01\x00\x08\x21\x12\xa4\x42 STUN-ish...."));
        assert!(!valid_rtp(&[]));
    }

    #[test]
    fn the_signalled_far_end_is_taken_and_a_stranger_is_not() {
        let mut p = RtpPeer::new();
        let t0 = Instant::now();
        assert_eq!(p.destination(), None);
        assert_eq!(
            stream(&mut p, "192.0.2.66:7000", EVIL, 1, 10, t0),
            [false; 10],
            "nothing signalled yet"
        );
        p.set_signalled(Some(addr("10.0.0.1:4000")));
        assert_eq!(p.destination(), Some(addr("10.0.0.1:4000")));
        // The stranger sprays before the far end sends, and for a long time: we have not
        // sent yet, so learning is closed.
        let evil = stream(&mut p, "192.0.2.66:7000", EVIL, 100, 200, t0);
        assert!(evil.iter().all(|taken| !taken));
        p.on_sent(t0 + Duration::from_secs(4));
        let t = t0 + Duration::from_secs(4) + Duration::from_millis(40);
        let ours: IpAddr = "203.0.113.5".parse().expect("ip");
        assert_eq!(p.local(), None, "the kernel picks until the far end sends");
        assert!(p.on_receive(&rtp(FAR, 1), addr("10.0.0.1:4000"), Some(ours), t));
        assert_eq!(p.source(), Some(addr("10.0.0.1:4000")));
        assert_eq!(p.local(), Some(ours), "reply from the address it sent to");
        // Still spraying, for long after: the far end talks, learning stays closed.
        let (far, evil) = both(&mut p, "10.0.0.1:4000", "192.0.2.66:7000", 2, 200, t);
        assert!(far && !evil);
        assert_eq!(p.destination(), Some(addr("10.0.0.1:4000")));
        assert_eq!(p.last_rx(), Some(t + Duration::from_millis(20 * 199)));
    }

    #[test]
    fn a_far_end_behind_nat_is_learned_after_a_quiet_second_and_a_probation_run() {
        let mut p = RtpPeer::new();
        let t0 = Instant::now();
        // The SDP names a private address we cannot reach; the far end sends from its NAT's.
        p.set_signalled(Some(addr("10.0.0.1:4000")));
        p.on_sent(t0);
        let nat = "192.0.2.7:5004";
        let early = stream(&mut p, nat, FAR, 1, 49, t0 + Duration::from_millis(20));
        assert!(early.iter().all(|taken| !taken), "within LEARN_AFTER");
        assert_eq!(p.destination(), Some(addr("10.0.0.1:4000")));
        let t1 = t0 + LEARN_AFTER;
        let ours: IpAddr = "203.0.113.5".parse().expect("ip");
        for seq in 50..50 + u16::from(PROBATION) - 1 {
            assert!(!p.on_receive(&rtp(FAR, seq), addr(nat), Some(ours), t1));
        }
        assert!(p.on_receive(&rtp(FAR, 53), addr(nat), Some(ours), t1));
        assert_eq!(p.destination(), Some(addr(nat)));
        assert!(p.is_learned());
        assert_eq!(p.local(), Some(ours));
        // Learned, it keeps the latch against a stranger while it talks.
        let (far, evil) = both(&mut p, nat, "192.0.2.66:7000", 54, 100, t1);
        assert!(far && !evil, "the far end went on");
        let t2 = t1 + Duration::from_secs(2);
        // The signalled address itself wins at its first RTP packet.
        assert!(p.on_receive(&rtp(FAR, 1), addr("10.0.0.1:4000"), None, t2));
        assert_eq!(p.destination(), Some(addr("10.0.0.1:4000")));
        assert!(!p.is_learned());
    }

    #[test]
    fn probation_wants_one_ssrc_in_sequence_and_never_takes_anything_else() {
        let mut p = RtpPeer::new();
        let t0 = Instant::now();
        p.set_signalled(Some(addr("10.0.0.1:4000")));
        p.on_sent(t0);
        let t = t0 + LEARN_AFTER;
        let nat = addr("192.0.2.7:5004");
        let take = |p: &mut RtpPeer, packet: &[u8]| p.on_receive(packet, nat, None, t);
        // A gap, a new SSRC, a repeat: each starts the run again.
        for (ssrc, seq) in [(FAR, 1), (FAR, 2), (FAR, 4), (FAR, 5), (FAR, 6)] {
            assert!(!take(&mut p, &rtp(ssrc, seq)));
        }
        assert!(!take(&mut p, &rtp(EVIL, 7)));
        assert!(!take(&mut p, &rtp(EVIL, 8)));
        assert!(!take(&mut p, &rtp(EVIL, 8)));
        // Non-RTP in between is never taken (and a stranger's RTCP or STUN never latches).
        let mut sr = rtp(EVIL, 9);
        sr[1] = 200;
        for junk in [
            &sr[..],
            &[0u8; 40][..],
            b"\x00\x01\x00\x00\x21\x12\xa4\x42xxxxxxxxxxxx",
        ] {
            assert!(!take(&mut p, junk));
        }
        assert_eq!(p.source(), None);
        // Sequence numbers wrap.
        for seq in [65534u16, 65535, 0] {
            assert!(!take(&mut p, &rtp(FAR, seq)));
        }
        assert!(take(&mut p, &rtp(FAR, 1)));
        assert_eq!(p.source(), Some(nat));
    }

    #[test]
    fn nothing_is_learned_while_held_and_the_clock_restarts_after() {
        let mut p = RtpPeer::new();
        let t0 = Instant::now();
        p.set_signalled(Some(addr("10.0.0.1:4000")));
        p.on_sent(t0);
        p.set_hold(true);
        assert_eq!(p.destination(), None);
        let t = t0 + Duration::from_secs(10);
        let evil = stream(&mut p, "192.0.2.66:7000", EVIL, 1, 10, t);
        assert!(evil.iter().all(|taken| !taken), "held");
        p.set_hold(false);
        let evil = stream(&mut p, "192.0.2.66:7000", EVIL, 20, 10, t);
        assert!(evil.iter().all(|taken| !taken), "resumed, nothing sent yet");
        p.on_sent(t);
        let evil = stream(&mut p, "192.0.2.66:7000", EVIL, 40, 10, t);
        assert!(
            evil.iter().all(|taken| !taken),
            "resumed less than a second ago"
        );
    }

    #[test]
    fn the_far_ends_rtcp_keeps_learning_closed() {
        let mut p = RtpPeer::new();
        let t0 = Instant::now();
        p.set_signalled(Some(addr("10.0.0.1:4000")));
        p.on_sent(t0);
        assert!(p.on_receive(&rtp(FAR, 1), addr("10.0.0.1:4000"), None, t0));
        // Comfort noise once in a long while, RTCP every 5 s (as Genesys' media does).
        for s in 1..10u64 {
            p.alive(t0 + Duration::from_millis(990 * s));
        }
        let t = t0 + Duration::from_millis(990 * 9 + 500);
        let evil = stream(&mut p, "192.0.2.66:7000", EVIL, 1, 20, t);
        assert!(evil[..20].iter().all(|taken| !taken));
    }

    #[test]
    fn a_reinvite_keeps_the_old_source_until_the_new_one_proves_itself() {
        let mut p = RtpPeer::new();
        let t0 = Instant::now();
        p.set_signalled(Some(addr("10.0.0.1:4000")));
        p.on_sent(t0);
        assert!(p.on_receive(
            &rtp(FAR, 1),
            addr("10.0.0.1:4000"),
            "10.0.0.9".parse().ok(),
            t0
        ));
        // The far end moves (a media server takes the call over).
        p.set_signalled(Some(addr("10.0.0.2:4002")));
        assert_eq!(
            p.destination(),
            Some(addr("10.0.0.2:4002")),
            "sent to at once"
        );
        assert_eq!(
            p.local(),
            None,
            "a new far end may reach another address of ours"
        );
        let t = t0 + Duration::from_millis(20);
        assert!(
            p.on_receive(&rtp(FAR, 2), addr("10.0.0.1:4000"), None, t),
            "the old source's packets still flow"
        );
        assert_eq!(
            p.destination(),
            Some(addr("10.0.0.2:4002")),
            "but it is not sent to"
        );
        assert!(p.on_receive(&rtp(7, 100), addr("10.0.0.2:4002"), None, t));
        assert_eq!(p.source(), Some(addr("10.0.0.2:4002")));
        // Proven: the old far end's last packets are a stranger's now.
        let old = stream(&mut p, "10.0.0.1:4000", FAR, 3, 10, t);
        assert!(old.iter().all(|taken| !taken));
        // Hold with c=0.0.0.0 keeps what was learned for the retrieve.
        p.set_signalled(Some(addr("0.0.0.0:4002")));
        assert_eq!(p.destination(), None, "c=0.0.0.0 is old-style hold");
        assert!(p.on_receive(&rtp(7, 101), addr("10.0.0.2:4002"), None, t));
        p.set_signalled(Some(addr("10.0.0.2:4002")));
        assert_eq!(p.destination(), Some(addr("10.0.0.2:4002")));
        assert_eq!(p.source(), Some(addr("10.0.0.2:4002")));
    }

    #[test]
    fn a_far_end_behind_nat_that_reinvites_to_an_unreachable_address_is_learned_again() {
        let mut p = RtpPeer::new();
        let t0 = Instant::now();
        let nat = "192.0.2.7:5004";
        p.set_signalled(Some(addr("10.0.0.1:4000")));
        p.on_sent(t0);
        stream(&mut p, nat, FAR, 1, 60, t0 + Duration::from_millis(20));
        assert_eq!(p.source(), Some(addr(nat)));
        // Its re-INVITE names another private port; it goes on sending from its NAT's.
        p.set_signalled(Some(addr("10.0.0.1:4010")));
        let t1 = t0 + Duration::from_secs(2);
        p.on_sent(t1);
        let kept = stream(&mut p, nat, FAR, 61, 100, t1);
        assert!(kept.iter().all(|taken| *taken), "its audio never stops");
        assert_eq!(
            p.destination(),
            Some(addr(nat)),
            "learned again after a quiet second"
        );
    }

    #[test]
    fn a_replaced_far_end_is_never_taken_again() {
        let mut p = RtpPeer::new();
        let t0 = Instant::now();
        let old = "10.0.0.1:4000";
        p.set_signalled(Some(addr(old)));
        p.on_sent(t0);
        assert!(p.on_receive(&rtp(FAR, 1), addr(old), None, t0));
        // A REFER's target answered: its address replaces the transferor's, which goes on
        // sending.
        p.replace_far_end(Some(addr("10.0.0.2:4002")));
        assert_eq!(p.destination(), Some(addr("10.0.0.2:4002")));
        p.on_sent(t0);
        let t = t0 + Duration::from_secs(3);
        let old_packets = stream(&mut p, old, FAR, 2, 100, t0);
        assert!(old_packets.iter().all(|taken| !taken), "not heard");
        let old_packets = stream(&mut p, old, FAR, 200, 100, t);
        assert!(
            old_packets.iter().all(|taken| !taken),
            "not learned either, though the target is silent"
        );
        assert_eq!(p.destination(), Some(addr("10.0.0.2:4002")));
        assert!(p.on_receive(&rtp(9, 1), addr("10.0.0.2:4002"), None, t));
    }

    #[test]
    fn path_sends_from_the_address_the_far_end_sent_to() {
        let mut p = RtpPeer::new();
        assert_eq!(p.path(), None);
        p.set_signalled(Some(addr("10.0.0.1:4000")));
        assert_eq!(p.path(), Some(Path::to(addr("10.0.0.1:4000"))));
        let ours: IpAddr = "203.0.113.5".parse().expect("ip");
        p.on_receive(
            &rtp(FAR, 1),
            addr("10.0.0.1:4000"),
            Some(ours),
            Instant::now(),
        );
        assert_eq!(p.path(), Some(Path::udp(addr("10.0.0.1:4000"), Some(ours))));
        p.set_hold(true);
        assert_eq!(p.path(), None);
    }

    fn path(remote: &str, local: &str) -> Path {
        Path::udp(addr(remote), local.parse().ok())
    }

    /// An RTP peer whose source is the signalled `rtp` address.
    fn signalled_source(rtp_addr: &str) -> RtpPeer {
        let mut p = RtpPeer::new();
        p.set_signalled(Some(addr(rtp_addr)));
        p.on_receive(&rtp(FAR, 1), addr(rtp_addr), None, Instant::now());
        p
    }

    #[test]
    fn rtcp_goes_to_the_signalled_address_until_the_far_ends_rtcp_arrives() {
        let mut p = RtcpPeer::new();
        let r = signalled_source("10.0.0.1:4000");
        assert_eq!(p.destination(&r), None, "nothing signalled yet");
        p.set_signalled(Some(addr("10.0.0.1:4001")));
        assert_eq!(p.destination(&r), Some(Path::to(addr("10.0.0.1:4001"))));
        let from = path("10.0.0.1:4001", "203.0.113.5");
        assert!(p.on_receive(from, &r));
        assert_eq!(
            p.destination(&r),
            Some(from),
            "where it came from, from our address it came to"
        );
    }

    #[test]
    fn a_strangers_rtcp_is_ignored() {
        let mut p = RtcpPeer::new();
        let r = signalled_source("10.0.0.1:4000");
        p.set_signalled(Some(addr("10.0.0.1:4001")));
        assert!(!p.on_receive(path("198.51.100.1:9", "198.51.100.2"), &r));
        assert!(
            !p.on_receive(path("10.0.0.1:4009", "203.0.113.5"), &r),
            "another port of the far end's IP"
        );
        assert_eq!(p.destination(&r), Some(Path::to(addr("10.0.0.1:4001"))));
        let first = path("10.0.0.1:4001", "203.0.113.5");
        assert!(p.on_receive(first, &r));
        p.set_signalled(Some(addr("10.0.0.1:4001")));
        assert_eq!(p.destination(&r), Some(first), "a refresh signals it again");
        p.set_signalled(None);
        assert_eq!(p.destination(&r), Some(first), "c=0.0.0.0 keeps it");
        // Nothing taken before the RTP source is known, but the signalled RTCP address.
        let mut q = RtcpPeer::new();
        q.set_signalled(Some(addr("10.0.0.1:4001")));
        assert!(!q.on_receive(path("10.0.0.1:4005", "203.0.113.5"), &RtpPeer::new()));
    }

    #[test]
    fn rtcp_follows_a_source_learned_behind_nat() {
        let mut r = RtpPeer::new();
        let t0 = Instant::now();
        r.set_signalled(Some(addr("10.0.0.1:4000")));
        r.on_sent(t0);
        let ours: IpAddr = "203.0.113.5".parse().expect("ip");
        for seq in 1..=u16::from(PROBATION) {
            r.on_receive(
                &rtp(FAR, seq),
                addr("192.0.2.7:6100"),
                Some(ours),
                t0 + LEARN_AFTER,
            );
        }
        assert!(r.is_learned());
        let mut p = RtcpPeer::new();
        p.set_signalled(Some(addr("10.0.0.1:4001")));
        assert_eq!(
            p.destination(&r),
            Some(path("192.0.2.7:6101", "203.0.113.5")),
            "the port above the learned source until its RTCP comes"
        );
        let mapped = path("192.0.2.7:7333", "203.0.113.5");
        assert!(
            p.on_receive(mapped, &r),
            "a NAT maps the RTCP port as it likes"
        );
        assert_eq!(p.destination(&r), Some(mapped));
        assert!(!p.on_receive(path("192.0.2.8:7333", "203.0.113.5"), &r));
    }

    #[test]
    fn rtcp_follows_a_far_end_that_moved_and_drops_one_that_was_replaced() {
        let mut r = signalled_source("10.0.0.1:4000");
        let mut p = RtcpPeer::new();
        p.set_signalled(Some(addr("10.0.0.1:4001")));
        let first = path("10.0.0.1:4001", "203.0.113.5");
        assert!(p.on_receive(first, &r));
        r.set_signalled(Some(addr("10.0.0.2:4002")));
        p.set_signalled(Some(addr("10.0.0.2:4003")));
        assert_eq!(p.destination(&r), Some(Path::to(addr("10.0.0.2:4003"))));
        assert!(!p.on_receive(first, &r), "the old far end's last reports");
        assert_eq!(p.destination(&r), Some(Path::to(addr("10.0.0.2:4003"))));
        let media_server = path("10.0.0.2:4003", "203.0.113.5");
        assert!(p.on_receive(media_server, &r));
        assert_eq!(p.destination(&r), Some(media_server));
        // A REFER's target on the same host as the transferor, one port pair up.
        r.replace_far_end(Some(addr("10.0.0.2:4004")));
        p.replace_far_end(Some(addr("10.0.0.2:4005")));
        r.on_receive(&rtp(5, 1), addr("10.0.0.2:4004"), None, Instant::now());
        assert!(!p.on_receive(media_server, &r), "the transferor's reports");
        assert_eq!(p.destination(&r), Some(Path::to(addr("10.0.0.2:4005"))));
    }

    #[test]
    fn rtcp_hold_stops_sending_and_keeps_the_latch() {
        let r = signalled_source("10.0.0.1:4000");
        let mut p = RtcpPeer::new();
        p.set_signalled(Some(addr("10.0.0.1:4001")));
        p.set_hold(true);
        assert_eq!(p.destination(&r), None);
        let from = path("10.0.0.1:4001", "203.0.113.5");
        assert!(p.on_receive(from, &r));
        assert_eq!(p.destination(&r), None, "still held");
        p.set_hold(false);
        assert_eq!(p.destination(&r), Some(from), "latched while held");
    }
}
