//! The SIP leg of a call as a transport of its own, the way mediasoup has a PlainTransport
//! beside its WebRtcTransport: the RTP and RTCP sockets toward the far end, where to send on
//! them ([`crate::rtp_leg`] decides), and the statistics its RTCP reports are made of. What
//! goes between this leg and the browser's (rewriting, transcoding, DTMF) is the worker's.

use std::io;
use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use mio::{Registry, Token};

use crate::relay::header;
use crate::rtcp::{PeerReport, Reception, SendStats};
use crate::rtp_leg::{RtcpPeer, RtpPeer};
use crate::stats::ReceiveStats;
use crate::udp::{Batch, Path, Socket};

/// Why a SIP leg's sockets could not be taken on; the text names the socket.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// The RTP socket.
    #[error("RTP socket: {0}")]
    Rtp(#[source] io::Error),
    /// The RTCP socket.
    #[error("RTCP socket: {0}")]
    Rtcp(#[source] io::Error),
}

/// One call's plain RTP/AVP leg toward the far end: its sockets and their state.
pub struct SipLeg {
    rtp: Socket,
    rtcp: Socket,
    peer: RtpPeer,
    rtcp_peer: RtcpPeer,
    in_ssrc: Option<u32>,
    rx: ReceiveStats,
    sent: SendStats,
    /// The far end's last sender report, for the LSR/DLSR of ours.
    report: Option<PeerReport>,
    /// When RTCP last came: a far end that only sends comfort noise now and then (Genesys
    /// does, every 45 s) still reports every few seconds, and is alive.
    rtcp_rx: Option<Instant>,
}

impl SipLeg {
    /// Takes over a bound RTP socket and its RTCP socket (the RTP port + 1), made
    /// non-blocking for the worker's poll.
    pub fn new(rtp: std::net::UdpSocket, rtcp: std::net::UdpSocket) -> Result<Self, SocketError> {
        Ok(SipLeg {
            rtp: Socket::new(rtp).map_err(SocketError::Rtp)?,
            rtcp: Socket::new(rtcp).map_err(SocketError::Rtcp)?,
            peer: RtpPeer::new(),
            rtcp_peer: RtcpPeer::new(),
            rtcp_rx: None,
            in_ssrc: None,
            rx: ReceiveStats::default(),
            sent: SendStats::default(),
            report: None,
        })
    }

    /// Registers both sockets for reading; on failure neither stays registered.
    pub fn register(
        &mut self,
        registry: &Registry,
        rtp: Token,
        rtcp: Token,
    ) -> Result<(), SocketError> {
        self.rtcp
            .register(registry, rtcp)
            .map_err(SocketError::Rtcp)?;
        if let Err(e) = self.rtp.register(registry, rtp) {
            self.rtcp.deregister(registry);
            return Err(SocketError::Rtp(e));
        }
        Ok(())
    }

    /// Undoes [`SipLeg::register`]; the sockets close when the leg is dropped.
    pub fn deregister(&mut self, registry: &Registry) {
        self.rtp.deregister(registry);
        self.rtcp.deregister(registry);
    }

    /// The far end's addresses from its SDP: RTP (`None` for none: hold, port 0) and RTCP
    /// (`a=rtcp`, else the RTP port + 1).
    pub fn set_remote(&mut self, rtp: Option<SocketAddr>, rtcp: Option<SocketAddr>) {
        self.peer.set_signalled(rtp);
        self.rtcp_peer.set_signalled(rtcp);
    }

    /// A new far end (the target of a REFER) in place of the old one, whose packets are
    /// dropped from now on and whose addresses are never learned again.
    pub fn replace_remote(&mut self, rtp: Option<SocketAddr>, rtcp: Option<SocketAddr>) {
        self.peer.replace_far_end(rtp);
        self.rtcp_peer.replace_far_end(rtcp);
        // Its numbering and reports start afresh; the old far end's say nothing of it.
        self.in_ssrc = None;
        self.rx = ReceiveStats::default();
        self.report = None;
    }

    /// While held by either side we send the far end nothing, RTP or RTCP.
    pub fn set_hold(&mut self, held: bool) {
        self.peer.set_hold(held);
        self.rtcp_peer.set_hold(held);
    }

    /// Reads what the RTP socket has into `batch`.
    pub(crate) fn recv_rtp(&self, batch: &mut Batch) -> io::Result<usize> {
        self.rtp.recv(batch)
    }

    /// Reads what the RTCP socket has into `batch`.
    pub(crate) fn recv_rtcp(&self, batch: &mut Batch) -> io::Result<usize> {
        self.rtcp.recv(batch)
    }

    /// A datagram on the RTP socket came along `from`: whether it is the far end's, to be
    /// relayed; anything else is dropped (see [`crate::rtp_leg`] for who is the far end).
    #[inline]
    pub fn accept(&mut self, packet: &[u8], from: Path, now: Instant) -> bool {
        self.peer.on_receive(packet, from.remote, from.local, now)
    }

    /// An accepted RTP packet, for our reception reports: its SSRC and sequence/timing.
    #[inline]
    pub fn on_rtp(&mut self, packet: &[u8], now: Instant, clock_rate: u32) {
        self.in_ssrc = Some(header::ssrc(packet));
        self.rx
            .on_packet(header::seq(packet), header::ts(packet), now, clock_rate);
    }

    /// A datagram on the RTCP socket came along `from`: if it is the far end's (it follows
    /// the RTP latch), our RTCP goes back along that path, its sender report is kept and it
    /// counts as a sign of life. A stranger's is dropped: `false`.
    pub fn on_rtcp(&mut self, packet: &[u8], from: Path, now: Instant) -> bool {
        if !self.rtcp_peer.on_receive(from, &self.peer) {
            return false;
        }
        if crate::browser_leg::is_rtcp(packet) {
            self.rtcp_rx = Some(now);
            self.peer.alive(now);
        }
        if let Some((_, lsr)) = crate::rtcp::sender_report(packet) {
            self.report = Some(PeerReport { lsr, at: now });
        }
        true
    }

    /// Where our RTP goes, and from which of our addresses: `None` before the far end's
    /// address is known and while held.
    #[inline]
    pub fn rtp_path(&self) -> Option<Path> {
        self.peer.path()
    }

    /// Sends one RTP packet (header included) to the far end, from the local address it
    /// sends to; counted for our sender reports when it left. `false` when it did not
    /// (nowhere to send, or the socket refused).
    #[inline]
    pub fn send_rtp(&mut self, packet: &[u8], now: Instant) -> bool {
        let Some(to) = self.peer.path() else {
            return false;
        };
        if self.rtp.send(packet, to).is_err() {
            return false;
        }
        self.peer.on_sent(now);
        self.sent
            .on_sent(packet.len() - header::LEN, header::ts(packet), now);
        true
    }

    /// Our RTCP to the far end, unless held or nowhere to send: a sender report for what we
    /// sent as `ssrc` on `clock_rate`, with a reception block for what it sent us.
    pub fn send_report(&mut self, ssrc: u32, clock_rate: u32, now: Instant, wall: SystemTime) {
        let Some(to) = self.rtcp_peer.destination(&self.peer) else {
            return;
        };
        let reception = self.in_ssrc.map(|ssrc| Reception {
            ssrc,
            stats: &mut self.rx,
            peer: self.report,
        });
        if let Some(report) = crate::rtcp::build(
            ssrc, "gateway", &self.sent, clock_rate, reception, now, wall,
        ) {
            let _ = self.rtcp.send(&report, to);
        }
    }

    /// What we received from the far end.
    pub fn rx(&self) -> &ReceiveStats {
        &self.rx
    }

    /// When the far end was last heard: RTP (comfort noise included) or RTCP.
    pub fn last_rx(&self) -> Option<Instant> {
        self.peer.last_rx().max(self.rtcp_rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket as StdSocket;
    use std::time::Duration;

    /// A loopback socket; the far end's block briefly on reads.
    fn bound() -> StdSocket {
        let s = StdSocket::bind("127.0.0.1:0").expect("bind");
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        s
    }

    fn addr(s: &StdSocket) -> SocketAddr {
        s.local_addr().expect("address")
    }

    fn rtp(seq: u16) -> Vec<u8> {
        let mut p = vec![0x80, 0];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        p.extend_from_slice(&0x0bad_cafe_u32.to_be_bytes());
        p.extend_from_slice(&[0xd5; 160]);
        p
    }

    fn recv(s: &StdSocket) -> Vec<u8> {
        let mut buf = [0u8; 1500];
        let n = s.recv(&mut buf).expect("a datagram");
        buf[..n].to_vec()
    }

    #[test]
    fn sends_rtp_and_rtcp_only_where_the_latches_say() {
        let mut leg = SipLeg::new(bound(), bound()).expect("leg");
        let (far_rtp, far_rtcp) = (bound(), bound());
        let now = Instant::now();
        assert!(!leg.send_rtp(&rtp(1), now), "no address yet");
        assert_eq!(leg.rtp_path(), None);

        leg.set_remote(Some(addr(&far_rtp)), Some(addr(&far_rtcp)));
        assert!(leg.send_rtp(&rtp(2), now));
        assert_eq!(recv(&far_rtp), rtp(2));

        assert!(
            !leg.accept(&rtp(7), Path::to(addr(&bound())), now),
            "a stranger"
        );
        assert!(leg.accept(&rtp(7), Path::to(addr(&far_rtp)), now));
        leg.on_rtp(&rtp(7), now, 8000);
        assert_eq!(leg.rx().received(), 1);
        assert_eq!(leg.last_rx(), Some(now));

        leg.send_report(42, 8000, now, SystemTime::now());
        let report = recv(&far_rtcp);
        assert!(
            crate::rtcp::sender_report(&report).is_some(),
            "a sender report: we sent RTP"
        );

        // A stranger's RTCP moves nothing; the far end's own is taken.
        let stranger = bound();
        assert!(!leg.on_rtcp(&report, Path::to(addr(&stranger)), now));
        assert!(leg.on_rtcp(&report, Path::to(addr(&far_rtcp)), now));
        leg.send_report(42, 8000, now, SystemTime::now());
        assert!(crate::rtcp::sender_report(&recv(&far_rtcp)).is_some());

        // A REFER's target replaces the far end: the old one is neither heard nor sent to.
        let (new_rtp, new_rtcp) = (bound(), bound());
        leg.replace_remote(Some(addr(&new_rtp)), Some(addr(&new_rtcp)));
        assert!(!leg.accept(&rtp(8), Path::to(addr(&far_rtp)), now));
        assert!(!leg.on_rtcp(&report, Path::to(addr(&far_rtcp)), now));
        assert!(leg.send_rtp(&rtp(9), now));
        assert_eq!(recv(&new_rtp), rtp(9));
        leg.send_report(42, 8000, now, SystemTime::now());
        assert!(crate::rtcp::sender_report(&recv(&new_rtcp)).is_some());

        leg.set_hold(true);
        assert!(!leg.send_rtp(&rtp(3), now), "held: nothing to the far end");
        assert_eq!(leg.rtp_path(), None);
    }
}
