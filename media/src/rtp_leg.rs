//! The plain RTP/AVP leg toward the SIP side: where to send, with symmetric RTP (RFC 4961
//! practice, as rtpengine and Asterisk's `rtp_symmetric`): the far end's signalled address
//! is a first guess, and the address it really sends from wins once it sends.
//!
//! This is the sans-IO half of [`crate::sip_leg::SipLeg`], which owns the sockets; keeping
//! the decisions here lets them be tested without any.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use crate::udp::Path;

/// Addressing state of one plain RTP leg's RTP.
#[derive(Debug, Default, Clone)]
pub struct RtpPeer {
    signalled: Option<SocketAddr>,
    latched: Option<SocketAddr>,
    /// Our address the latched source sends to: what we send from, so a far end that checks
    /// the source (or a NAT/firewall that keeps state) sees the address it sent to.
    local: Option<IpAddr>,
    /// Where the far end was before its last move: what it sends now is not the new far
    /// end (a media server that took the call over), so it must not win the latch.
    previous: Option<SocketAddr>,
    last_rx: Option<Instant>,
    on_hold: bool,
}

impl RtpPeer {
    /// A leg whose far end is not known yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The address from the far end's SDP; `None` (port 0 or c=0.0.0.0) means no media.
    /// A new signalled address drops the latch: after a re-INVITE the far end may really
    /// have moved, and where it was is remembered so that its last packets do not latch.
    pub fn set_signalled(&mut self, addr: Option<SocketAddr>) {
        let addr = addr.filter(|a| a.port() != 0 && !a.ip().is_unspecified());
        if self.signalled != addr {
            if addr.is_some() {
                self.previous = self.latched.or(self.signalled);
            }
            self.latched = None;
            self.local = None;
        }
        self.signalled = addr;
    }

    /// Whether we should send at all (RFC 3264 hold: sendonly/inactive from us).
    pub fn set_hold(&mut self, on_hold: bool) {
        self.on_hold = on_hold;
    }

    /// A packet arrived from `from`, sent to our address `local` (when the kernel says).
    /// Latches onto the first source after signalling, so a stray packet from elsewhere later
    /// cannot steal the stream; the signalled address itself always may, and the far end
    /// of before a move never does.
    pub fn on_receive(&mut self, from: SocketAddr, local: Option<IpAddr>, now: Instant) -> bool {
        let free = self.latched.is_none() && self.previous != Some(from);
        if free || self.signalled == Some(from) {
            self.latched = Some(from);
        }
        if self.latched == Some(from) {
            self.last_rx = Some(now);
            if local.is_some() {
                self.local = local;
            }
            true
        } else {
            false
        }
    }

    /// Our address to send from: the one the far end sends to, once it has sent; before
    /// that the kernel's choice by route.
    pub fn local(&self) -> Option<IpAddr> {
        self.local
    }

    /// Where to send, if anywhere.
    pub fn destination(&self) -> Option<SocketAddr> {
        if self.on_hold {
            return None;
        }
        self.latched.or(self.signalled)
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

/// Where our RTCP to the far end goes: the signalled address (`a=rtcp`, else the RTP port
/// plus one) until the far end's own RTCP arrives, then the path that came along, until the
/// far end moves (a new signalled address, as [`RtpPeer`]); the same address signalled
/// again (a refresh, a hold) keeps the latch.
#[derive(Debug, Default, Clone)]
pub struct RtcpPeer {
    to: Option<Path>,
    signalled: Option<SocketAddr>,
    latched: bool,
    /// Where the far end's RTCP came from before its last move.
    previous: Option<SocketAddr>,
    on_hold: bool,
}

impl RtcpPeer {
    /// A leg whose far end is not known yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The address from the far end's SDP; `None` means none. Replaces the previous one
    /// until the latch, and the latch when it is a new address (the far end moved).
    pub fn set_signalled(&mut self, addr: Option<SocketAddr>) {
        // `c=0.0.0.0` (old-style hold) names no address: the latch stays for the retrieve.
        let addr = addr.filter(|a| a.port() != 0 && !a.ip().is_unspecified());
        let moved = addr.is_some() && self.signalled.is_some() && addr != self.signalled;
        if moved && self.latched {
            self.previous = self.to.map(|p| p.remote);
            self.latched = false;
        }
        if addr.is_some() {
            self.signalled = addr;
        }
        if !self.latched {
            self.to = addr.map(Path::to);
        }
    }

    /// Whether we should send at all (RFC 3264 hold, as for RTP).
    pub fn set_hold(&mut self, on_hold: bool) {
        self.on_hold = on_hold;
    }

    /// RTCP arrived along `path`: the first such packet fixes the destination, so a stray
    /// one later cannot divert our reports.
    pub fn on_receive(&mut self, path: Path) {
        if !self.latched && self.previous != Some(path.remote) {
            self.to = Some(path);
            self.latched = true;
        }
    }

    /// Where to send, if anywhere, and from which of our addresses.
    pub fn destination(&self) -> Option<Path> {
        if self.on_hold {
            return None;
        }
        self.to
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }

    #[test]
    fn latches_to_the_real_source_and_keeps_it() {
        let mut p = RtpPeer::new();
        assert_eq!(p.destination(), None);
        p.set_signalled(Some(addr("10.0.0.1:4000")));
        assert_eq!(p.destination(), Some(addr("10.0.0.1:4000")));
        let now = Instant::now();
        assert_eq!(p.local(), None, "the kernel picks until the far end sends");
        let ours: IpAddr = "203.0.113.5".parse().expect("ip");
        assert!(p.on_receive(addr("192.0.2.7:5004"), Some(ours), now));
        assert_eq!(p.destination(), Some(addr("192.0.2.7:5004")));
        assert_eq!(p.local(), Some(ours), "reply from the address it sent to");
        let other: IpAddr = "198.51.100.2".parse().expect("ip");
        assert!(
            !p.on_receive(addr("198.51.100.1:9"), Some(other), now),
            "no hijack"
        );
        assert_eq!(p.destination(), Some(addr("192.0.2.7:5004")));
        assert_eq!(p.local(), Some(ours), "a stray packet moves nothing");
        assert_eq!(p.last_rx(), Some(now));
    }

    #[test]
    fn resignalling_resets_the_latch_and_hold_stops_sending() {
        let mut p = RtpPeer::new();
        p.set_signalled(Some(addr("10.0.0.1:4000")));
        p.on_receive(
            addr("10.0.0.1:4000"),
            "10.0.0.9".parse().ok(),
            Instant::now(),
        );
        p.set_signalled(Some(addr("10.0.0.2:4002")));
        assert_eq!(p.destination(), Some(addr("10.0.0.2:4002")));
        assert_eq!(
            p.local(),
            None,
            "a new far end may reach another address of ours"
        );
        assert!(p.on_receive(addr("10.0.0.2:4002"), None, Instant::now()));
        p.set_hold(true);
        assert_eq!(p.destination(), None);
        p.set_hold(false);
        p.set_signalled(Some(addr("0.0.0.0:4002")));
        assert_eq!(p.destination(), None, "c=0.0.0.0 is old-style hold");
    }

    #[test]
    fn path_sends_from_the_address_the_far_end_sent_to() {
        let mut p = RtpPeer::new();
        assert_eq!(p.path(), None);
        p.set_signalled(Some(addr("10.0.0.1:4000")));
        assert_eq!(p.path(), Some(Path::to(addr("10.0.0.1:4000"))));
        let ours: IpAddr = "203.0.113.5".parse().expect("ip");
        p.on_receive(addr("192.0.2.7:5004"), Some(ours), Instant::now());
        assert_eq!(
            p.path(),
            Some(Path::udp(addr("192.0.2.7:5004"), Some(ours)))
        );
        p.set_hold(true);
        assert_eq!(p.path(), None);
    }

    fn path(remote: &str, local: &str) -> Path {
        Path::udp(addr(remote), local.parse().ok())
    }

    #[test]
    fn rtcp_goes_to_the_signalled_address_until_the_far_ends_rtcp_arrives() {
        let mut p = RtcpPeer::new();
        assert_eq!(p.destination(), None, "nothing signalled yet");
        p.set_signalled(Some(addr("10.0.0.1:4001")));
        assert_eq!(p.destination(), Some(Path::to(addr("10.0.0.1:4001"))));
        let from = path("192.0.2.7:5005", "203.0.113.5");
        p.on_receive(from);
        assert_eq!(
            p.destination(),
            Some(from),
            "where it came from, from our address it came to"
        );
    }

    #[test]
    fn rtcp_latch_is_not_moved_by_a_stray_packet_or_the_same_signalling() {
        let mut p = RtcpPeer::new();
        p.set_signalled(Some(addr("10.0.0.1:4001")));
        let first = path("192.0.2.7:5005", "203.0.113.5");
        p.on_receive(first);
        p.on_receive(path("198.51.100.1:9", "198.51.100.2"));
        assert_eq!(p.destination(), Some(first), "no hijack");
        p.set_signalled(Some(addr("10.0.0.1:4001")));
        assert_eq!(p.destination(), Some(first), "a refresh signals it again");
        p.set_signalled(None);
        assert_eq!(p.destination(), Some(first));
    }

    #[test]
    fn rtcp_follows_a_far_end_that_moved_and_ignores_where_it_was() {
        let mut p = RtcpPeer::new();
        p.set_signalled(Some(addr("10.0.0.1:4001")));
        let first = path("192.0.2.7:5005", "203.0.113.5");
        p.on_receive(first);
        p.set_signalled(Some(addr("10.0.0.2:4003")));
        assert_eq!(p.destination(), Some(Path::to(addr("10.0.0.2:4003"))));
        p.on_receive(first);
        assert_eq!(
            p.destination(),
            Some(Path::to(addr("10.0.0.2:4003"))),
            "the old far end's last reports do not take it back"
        );
        let media_server = path("10.0.0.2:4003", "203.0.113.5");
        p.on_receive(media_server);
        assert_eq!(p.destination(), Some(media_server));
        p.set_signalled(Some(addr("0.0.0.0:4003")));
        p.set_signalled(Some(addr("10.0.0.2:4003")));
        assert_eq!(
            p.destination(),
            Some(media_server),
            "hold and retrieve keep it"
        );
    }

    #[test]
    fn a_far_end_that_moved_is_not_taken_back_by_its_last_packets() {
        let mut p = RtpPeer::new();
        p.set_signalled(Some(addr("10.0.0.1:4000")));
        let now = Instant::now();
        assert!(
            p.on_receive(addr("192.0.2.7:5004"), None, now),
            "NAT source"
        );
        p.set_signalled(Some(addr("10.0.0.2:4002")));
        assert!(
            !p.on_receive(addr("192.0.2.7:5004"), None, now),
            "the old far end still sending"
        );
        assert_eq!(p.destination(), Some(addr("10.0.0.2:4002")));
        assert!(p.on_receive(addr("10.0.0.2:4002"), None, now));
        assert_eq!(p.destination(), Some(addr("10.0.0.2:4002")));
        // Hold with c=0.0.0.0 and back to the same address: the far end is still welcome.
        p.set_signalled(Some(addr("0.0.0.0:4002")));
        p.set_signalled(Some(addr("10.0.0.2:4002")));
        assert!(p.on_receive(addr("10.0.0.2:4002"), None, now));
    }

    #[test]
    fn rtcp_resignalling_before_the_latch_replaces_the_address() {
        let mut p = RtcpPeer::new();
        p.set_signalled(Some(addr("10.0.0.1:4001")));
        p.set_signalled(Some(addr("10.0.0.2:4003")));
        assert_eq!(p.destination(), Some(Path::to(addr("10.0.0.2:4003"))));
        p.set_signalled(None);
        assert_eq!(p.destination(), None, "no RTCP address any more");
        p.set_signalled(Some(addr("10.0.0.3:4005")));
        p.on_receive(path("10.0.0.3:4005", "10.0.0.9"));
        assert_eq!(p.destination(), Some(path("10.0.0.3:4005", "10.0.0.9")));
    }

    #[test]
    fn rtcp_hold_stops_sending_and_keeps_the_latch() {
        let mut p = RtcpPeer::new();
        p.set_signalled(Some(addr("10.0.0.1:4001")));
        p.set_hold(true);
        assert_eq!(p.destination(), None);
        let from = path("192.0.2.7:5005", "203.0.113.5");
        p.on_receive(from);
        assert_eq!(p.destination(), None, "still held");
        p.set_hold(false);
        assert_eq!(p.destination(), Some(from), "latched while held");
    }
}
