//! The plain RTP/AVP leg toward the SIP side: where to send, with symmetric RTP (RFC 4961
//! practice, as rtpengine and Asterisk's `rtp_symmetric`): the far end's signalled address
//! is a first guess, and the address it really sends from wins once it sends.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// Addressing state of one plain RTP leg. Sockets live in the worker; this is the logic.
#[derive(Debug, Default, Clone)]
pub struct RtpPeer {
    signalled: Option<SocketAddr>,
    latched: Option<SocketAddr>,
    /// Our address the latched source sends to: what we send from, so a far end that checks
    /// the source (or a NAT/firewall that keeps state) sees the address it sent to.
    local: Option<IpAddr>,
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
    /// have moved.
    pub fn set_signalled(&mut self, addr: Option<SocketAddr>) {
        if self.signalled != addr {
            self.latched = None;
            self.local = None;
        }
        self.signalled = addr.filter(|a| a.port() != 0 && !a.ip().is_unspecified());
    }

    /// Whether we should send at all (RFC 3264 hold: sendonly/inactive from us).
    pub fn set_hold(&mut self, on_hold: bool) {
        self.on_hold = on_hold;
    }

    /// A packet arrived from `from`, sent to our address `local` (when the kernel says).
    /// Latches onto the first source after signalling, so a stray packet from elsewhere later
    /// cannot steal the stream.
    pub fn on_receive(&mut self, from: SocketAddr, local: Option<IpAddr>, now: Instant) -> bool {
        if self.latched.is_none() {
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

    /// When media last arrived from the far end.
    pub fn last_rx(&self) -> Option<Instant> {
        self.last_rx
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
}
