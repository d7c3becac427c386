//! One browser leg: ICE-lite, then DTLS, then SRTP, on the worker's shared UDP socket.
//! Sans-IO: datagrams in, datagrams to send out through a callback, plain RTP handed back.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::dtls::{DtlsCertificate, DtlsEndpoint, DtlsRole};
use crate::ice_lite::{IceLite, StunOutcome};
use crate::srtp::SrtpSession;

/// RFC 7675: consent is lost when the browser stops checking for this long.
pub const CONSENT_TIMEOUT: Duration = Duration::from_secs(30);

/// The browser's half of the description, known from its offer or answer.
#[derive(Clone, Debug)]
pub struct BrowserRemote {
    /// `a=ice-ufrag`.
    pub ice_ufrag: String,
    /// `a=ice-pwd`.
    pub ice_pwd: String,
    /// `a=fingerprint`, e.g. `sha-256 AB:…`.
    pub fingerprint: String,
    /// Our DTLS role, from `a=setup`.
    pub role: DtlsRole,
}

/// What a datagram from the browser turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// Handled inside the leg (STUN, DTLS) or dropped.
    Nothing,
    /// DTLS just completed: SRTP is keyed.
    Connected,
    /// A decrypted RTP packet is in the output buffer.
    Rtp,
    /// A decrypted RTCP packet is in the output buffer.
    Rtcp,
}

/// Why the leg failed.
#[derive(Debug, thiserror::Error)]
pub enum LegError {
    /// DTLS failed (fingerprint mismatch, handshake error, time-out).
    #[error("DTLS: {0}")]
    Dtls(#[from] crate::dtls::DtlsError),
    /// SRTP contexts could not be built from the DTLS keys.
    #[error("SRTP: {0}")]
    Srtp(#[from] crate::srtp::SrtpError),
}

/// ICE + DTLS + SRTP state of one browser.
pub struct BrowserLeg {
    ice: IceLite,
    dtls: Option<DtlsEndpoint>,
    srtp: Option<SrtpSession>,
    stun_out: Vec<u8>,
}

/// RFC 7983 §7: first byte 20..=63 is DTLS, 128..=191 is RTP/RTCP.
fn is_dtls(b: u8) -> bool {
    (20..=63).contains(&b)
}

fn is_rtp_or_rtcp(b: u8) -> bool {
    (128..=191).contains(&b)
}

/// RFC 5761 §4: with rtcp-mux, packet types 192..=223 in the second byte are RTCP.
pub fn is_rtcp(packet: &[u8]) -> bool {
    packet.len() >= 2 && (192..=223).contains(&packet[1])
}

impl BrowserLeg {
    /// A leg with our ICE credentials; the browser's part may come later (incoming calls).
    pub fn new(local_ufrag: String, local_pwd: String) -> Self {
        BrowserLeg {
            ice: IceLite::new(local_ufrag, local_pwd),
            dtls: None,
            srtp: None,
            stun_out: Vec::with_capacity(256),
        }
    }

    /// Our ICE ufrag.
    pub fn local_ufrag(&self) -> &str {
        self.ice.local_ufrag()
    }

    /// The browser's description: ICE credentials and the DTLS endpoint.
    pub fn set_remote(
        &mut self,
        remote: &BrowserRemote,
        cert: &DtlsCertificate,
        now: Instant,
    ) -> Result<(), LegError> {
        self.ice
            .set_remote_credentials(&remote.ice_ufrag, &remote.ice_pwd);
        if self.dtls.is_none() {
            self.dtls = Some(DtlsEndpoint::new(
                remote.role,
                cert,
                &remote.fingerprint,
                now,
            )?);
        }
        Ok(())
    }

    /// The address ICE selected (the browser nominated it).
    pub fn selected(&self) -> Option<SocketAddr> {
        self.ice.selected()
    }

    /// Whether SRTP is keyed.
    pub fn is_connected(&self) -> bool {
        self.srtp.is_some()
    }

    /// Whether the browser stopped its consent checks.
    pub fn consent_expired(&self, now: Instant) -> bool {
        self.ice.consent_expired(now, CONSENT_TIMEOUT)
    }

    /// Handles one datagram from `from`. Replies (STUN responses, DTLS flights) go out
    /// through `send`; decrypted media lands in `out`.
    pub fn on_datagram(
        &mut self,
        data: &[u8],
        from: SocketAddr,
        now: Instant,
        out: &mut Vec<u8>,
        send: &mut dyn FnMut(&[u8], SocketAddr),
    ) -> Result<Received, LegError> {
        let Some(&first) = data.first() else {
            return Ok(Received::Nothing);
        };
        if crate::ice_lite::is_stun(data) {
            self.stun_out.clear();
            if let Ok(StunOutcome::Respond { .. }) =
                self.ice.handle(data, from, now, &mut self.stun_out)
            {
                send(&self.stun_out, from);
                // A DTLS client waits for ICE before its first flight.
                self.flush_dtls(send);
            }
            return Ok(Received::Nothing);
        }
        if Some(from) != self.ice.selected() {
            // Only the address the browser nominated may carry DTLS and media.
            return Ok(Received::Nothing);
        }
        if is_dtls(first) {
            let Some(dtls) = self.dtls.as_mut() else {
                return Ok(Received::Nothing);
            };
            let result = dtls.handle_datagram(data, now);
            self.flush_dtls(send);
            match result {
                // One mangled datagram is dropped; the handshake goes on.
                Err(crate::dtls::DtlsError::Malformed(_)) => return Ok(Received::Nothing),
                other => other?,
            }
            return self.maybe_connected();
        }
        if is_rtp_or_rtcp(first) {
            let Some(srtp) = self.srtp.as_mut() else {
                return Ok(Received::Nothing);
            };
            return Ok(if is_rtcp(data) {
                match srtp.unprotect_rtcp(data, out) {
                    Ok(()) => Received::Rtcp,
                    Err(_) => Received::Nothing,
                }
            } else {
                match srtp.unprotect_rtp(data, out) {
                    Ok(()) => Received::Rtp,
                    // Replays and forgeries are dropped, as SRTP requires.
                    Err(_) => Received::Nothing,
                }
            });
        }
        Ok(Received::Nothing)
    }

    /// Protects a plain RTP packet for the browser into `out`; false if not keyed yet.
    pub fn protect_rtp(&mut self, packet: &[u8], out: &mut Vec<u8>) -> bool {
        match self.srtp.as_mut() {
            Some(s) => s.protect_rtp(packet, out).is_ok(),
            None => false,
        }
    }

    /// Protects a plain RTCP packet for the browser into `out`.
    pub fn protect_rtcp(&mut self, packet: &[u8], out: &mut Vec<u8>) -> bool {
        match self.srtp.as_mut() {
            Some(s) => s.protect_rtcp(packet, out).is_ok(),
            None => false,
        }
    }

    /// When the DTLS timer is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.dtls.as_ref().and_then(|d| d.poll_timeout())
    }

    /// Runs the DTLS retransmission timer.
    pub fn handle_timeout(
        &mut self,
        now: Instant,
        send: &mut dyn FnMut(&[u8], SocketAddr),
    ) -> Result<Received, LegError> {
        if let Some(d) = self.dtls.as_mut() {
            let result = d.handle_timeout(now);
            self.flush_dtls(send);
            result?;
        }
        self.maybe_connected()
    }

    /// Ends DTLS politely (close_notify).
    pub fn close(&mut self, now: Instant, send: &mut dyn FnMut(&[u8], SocketAddr)) {
        if let Some(d) = self.dtls.as_mut() {
            d.close(now);
        }
        self.flush_dtls(send);
    }

    fn flush_dtls(&mut self, send: &mut dyn FnMut(&[u8], SocketAddr)) {
        let (Some(dtls), Some(to)) = (self.dtls.as_mut(), self.ice.selected()) else {
            return;
        };
        while let Some(datagram) = dtls.poll_transmit() {
            send(&datagram, to);
        }
    }

    fn maybe_connected(&mut self) -> Result<Received, LegError> {
        if self.srtp.is_some() {
            return Ok(Received::Nothing);
        }
        match self.dtls.as_ref() {
            Some(d) if d.is_connected() => {
                let keys = d.srtp_keys()?;
                self.srtp = Some(SrtpSession::new(&keys)?);
                Ok(Received::Connected)
            }
            _ => Ok(Received::Nothing),
        }
    }
}
