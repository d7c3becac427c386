//! One browser leg: ICE-lite, then DTLS, then SRTP, on the worker's shared UDP socket.
//! Sans-IO: datagrams in, datagrams to send out through a callback, plain RTP handed back.
//!
//! Every datagram is handled with its [`Path`], the browser's address and the local address it
//! was sent to, and every reply goes back along the same path: on a host with several addresses
//! the kernel would otherwise pick the reply's source by route, and a browser drops a STUN
//! response that does not come from the address it checked (RFC 8445 §7.2.5.2.1).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::dtls::{DtlsCertificate, DtlsEndpoint, DtlsRole};
use crate::ice_lite::{IceLite, StunOutcome};
use crate::srtp::SrtpSession;
pub use crate::udp::Path;

/// RFC 7675: consent is lost when the browser stops checking for this long.
pub const CONSENT_TIMEOUT: Duration = Duration::from_secs(30);

/// A browser that keeps checking for this long after its first check without a word of DTLS
/// never saw our responses: its ICE is not connected (it nominates nothing, or nominated a
/// pair it never validated), whatever ours believes. A browser whose check succeeded nominates
/// and starts (or answers) DTLS within a few round trips.
pub const UNANSWERED_AFTER: Duration = Duration::from_secs(3);

/// Checks that, with [`UNANSWERED_AFTER`] of DTLS silence, show the browser still trying: a
/// browser that went away sends none, a connected one checks every few seconds at most, one
/// without an answer several times a second.
pub const UNANSWERED_CHECKS: u32 = 5;

/// Where to send a datagram: called with the bytes and the path they take.
pub type Transmit<'a> = dyn FnMut(&[u8], Path) + 'a;

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
    /// The browser keeps checking but never saw our STUN responses.
    #[error(
        "ICE: the browser keeps checking {local} from {remote} {without}: our responses do not \
         reach it (is {local} an address it can reach, and does the host answer from it?)"
    )]
    Unanswered {
        /// What it never got to: nominating, or DTLS after nominating.
        without: &'static str,
        /// Our address the browser checks.
        local: String,
        /// The browser's address.
        remote: SocketAddr,
    },
}

/// The browser's checks and nomination, to tell a browser that never hears our responses.
#[derive(Debug, Default)]
struct Nomination {
    /// The nominated path.
    path: Option<Path>,
    /// When the first valid check came.
    first_check: Option<Instant>,
    /// The path of the latest valid check.
    last_checked: Option<Path>,
    /// Valid checks since the first.
    checks: u32,
    /// A DTLS datagram came on the nominated path: the browser's ICE is connected.
    heard_dtls: bool,
}

/// ICE + DTLS + SRTP state of one browser.
pub struct BrowserLeg {
    ice: IceLite,
    dtls: Option<DtlsEndpoint>,
    /// The fingerprint `dtls` checks the browser's certificate against.
    remote_fingerprint: Option<String>,
    srtp: Option<SrtpSession>,
    stun_out: Vec<u8>,
    nomination: Nomination,
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
            remote_fingerprint: None,
            srtp: None,
            stun_out: Vec::with_capacity(256),
            nomination: Nomination::default(),
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
            self.start_dtls(remote, cert, now)?;
        }
        Ok(())
    }

    /// A new description from the browser for a running leg (`renegotiate`): new ICE
    /// credentials of ours when `local` is given (an ICE restart), the browser's from
    /// `remote`, and when its certificate changed (a fresh RTCPeerConnection after a page
    /// reload) a new DTLS handshake whose keys replace the SRTP contexts. Returns whether
    /// DTLS starts over; until it completes, no media flows either way.
    pub fn renew(
        &mut self,
        remote: &BrowserRemote,
        local: Option<(String, String)>,
        cert: &DtlsCertificate,
        now: Instant,
    ) -> Result<bool, LegError> {
        if let Some((ufrag, pwd)) = local {
            self.ice.set_local_credentials(ufrag, pwd);
        }
        self.ice
            .set_remote_credentials(&remote.ice_ufrag, &remote.ice_pwd);
        if self.remote_fingerprint.as_deref() == Some(remote.fingerprint.as_str()) {
            return Ok(false);
        }
        self.start_dtls(remote, cert, now)?;
        self.srtp = None;
        // The old browser is gone: its path carries nothing of the new one's, and a new
        // browser that never hears us must be told apart again.
        self.nomination = Nomination::default();
        Ok(true)
    }

    /// A DTLS endpoint for the browser's certificate and our role in `remote`.
    fn start_dtls(
        &mut self,
        remote: &BrowserRemote,
        cert: &DtlsCertificate,
        now: Instant,
    ) -> Result<(), LegError> {
        self.dtls = Some(DtlsEndpoint::new(
            remote.role,
            cert,
            &remote.fingerprint,
            now,
        )?);
        self.remote_fingerprint = Some(remote.fingerprint.clone());
        Ok(())
    }

    /// The path ICE selected (the browser nominated it): media goes to its remote address,
    /// from its local one.
    pub fn selected(&self) -> Option<Path> {
        self.nomination.path
    }

    /// Whether SRTP is keyed.
    pub fn is_connected(&self) -> bool {
        self.srtp.is_some()
    }

    /// Whether the browser's consent checks stopped [`CONSENT_TIMEOUT`] + `grace` ago: with
    /// no grace, nothing may be sent to it any more (RFC 7675 §5.1); the grace is how long
    /// the call then waits for it to come back (an ICE restart, a reloaded page).
    pub fn consent_expired(&self, now: Instant, grace: Duration) -> bool {
        self.ice.consent_expired(now, CONSENT_TIMEOUT + grace)
    }

    /// Handles one datagram that came along `path`. Replies (STUN responses, DTLS flights)
    /// go out through `send`, along the same path; decrypted media lands in `out`.
    pub fn on_datagram(
        &mut self,
        data: &[u8],
        path: Path,
        now: Instant,
        out: &mut Vec<u8>,
        send: &mut Transmit<'_>,
    ) -> Result<Received, LegError> {
        let Some(&first) = data.first() else {
            return Ok(Received::Nothing);
        };
        let from = path.remote;
        if crate::ice_lite::is_stun(data) {
            self.stun_out.clear();
            if let Ok(StunOutcome::Respond { nominated }) =
                self.ice.handle(data, from, now, &mut self.stun_out)
            {
                send(&self.stun_out, path);
                self.on_check(path, nominated, now);
                // A DTLS client waits for ICE before its first flight.
                self.flush_dtls(send);
                self.check_answered(now)?;
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
            self.nomination.heard_dtls = true;
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

    /// When [`Self::handle_timeout`] is next due: the DTLS timer, or the moment a nominated
    /// path without DTLS counts as unanswered.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let dtls = self.dtls.as_ref().and_then(|d| d.poll_timeout());
        // Before enough checks came, the next check (not a timer) decides.
        let unanswered = self
            .unanswered_deadline()
            .filter(|_| self.nomination.checks >= UNANSWERED_CHECKS);
        match (dtls, unanswered) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs the DTLS retransmission timer and the unanswered-path check.
    pub fn handle_timeout(
        &mut self,
        now: Instant,
        send: &mut Transmit<'_>,
    ) -> Result<Received, LegError> {
        if let Some(d) = self.dtls.as_mut() {
            if d.poll_timeout().is_some_and(|t| t <= now) {
                let result = d.handle_timeout(now);
                self.flush_dtls(send);
                result?;
            }
        }
        self.check_answered(now)?;
        self.maybe_connected()
    }

    /// Ends DTLS politely (close_notify).
    pub fn close(&mut self, now: Instant, send: &mut Transmit<'_>) {
        if let Some(d) = self.dtls.as_mut() {
            d.close(now);
        }
        self.flush_dtls(send);
    }

    /// A valid check came along `path`: count it, and follow a nomination (the first, or a
    /// switch to a TURN relay or a new network).
    fn on_check(&mut self, path: Path, nominated: bool, now: Instant) {
        let n = &mut self.nomination;
        n.first_check.get_or_insert(now);
        n.last_checked = Some(path);
        n.checks = n.checks.saturating_add(1);
        if nominated {
            n.path = Some(path);
        }
    }

    fn unanswered_deadline(&self) -> Option<Instant> {
        let n = &self.nomination;
        if n.heard_dtls || self.srtp.is_some() || self.dtls.is_none() {
            return None;
        }
        n.first_check.map(|at| at + UNANSWERED_AFTER)
    }

    /// Fails a leg whose browser keeps checking with no DTLS to show for it: it never saw our
    /// responses (a reply from the wrong address, a one-way firewall), so waiting for the DTLS
    /// handshake or the set-up time-out would only keep the agent in silence longer.
    fn check_answered(&self, now: Instant) -> Result<(), LegError> {
        let n = &self.nomination;
        match (self.unanswered_deadline(), n.path.or(n.last_checked)) {
            (Some(deadline), Some(path)) if now >= deadline && n.checks >= UNANSWERED_CHECKS => {
                Err(LegError::Unanswered {
                    without: if n.path.is_some() {
                        "without starting DTLS on the pair it nominated"
                    } else {
                        "without nominating a pair"
                    },
                    local: path
                        .local
                        .map_or_else(|| "our address".to_string(), |ip| ip.to_string()),
                    remote: path.remote,
                })
            }
            _ => Ok(()),
        }
    }

    fn flush_dtls(&mut self, send: &mut Transmit<'_>) {
        let (Some(dtls), Some(to)) = (self.dtls.as_mut(), self.nomination.path) else {
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

#[cfg(test)]
mod tests {
    use super::*;
    use rtc_stun::attributes::{
        AttrType, RawAttribute, ATTR_ICE_CONTROLLING, ATTR_PRIORITY, ATTR_USERNAME,
        ATTR_USE_CANDIDATE,
    };
    use rtc_stun::crypto::providers::RingCrypto;
    use rtc_stun::fingerprint::FINGERPRINT;
    use rtc_stun::integrity::MessageIntegrity;
    use rtc_stun::message::{Message, Setter, TransactionId, BINDING_REQUEST};
    use rtc_stun::textattrs::Username;

    static CRYPTO: RingCrypto = RingCrypto;
    const OUR_UFRAG: &str = "ourUfrag";
    const OUR_PWD: &str = "ourPasswordOurPassword24";

    fn raw(typ: AttrType, value: &[u8]) -> RawAttribute {
        RawAttribute {
            typ,
            length: 0,
            value: value.to_vec(),
        }
    }

    /// A browser's connectivity check, signed with our password.
    fn check(nominate: bool) -> Vec<u8> {
        check_as(OUR_UFRAG, OUR_PWD, "brws", nominate)
    }

    /// A check for our credentials `ufrag`/`pwd` from the browser's `theirs`.
    fn check_as(ufrag: &str, pwd: &str, theirs: &str, nominate: bool) -> Vec<u8> {
        let mut m = Message::new();
        m.build(&[Box::new(BINDING_REQUEST), Box::new(TransactionId::new())])
            .unwrap();
        Username::new(ATTR_USERNAME, format!("{ufrag}:{theirs}"))
            .add_to(&mut m)
            .unwrap();
        raw(ATTR_ICE_CONTROLLING, &7u64.to_be_bytes())
            .add_to(&mut m)
            .unwrap();
        raw(ATTR_PRIORITY, &0x6e7f_1eff_u32.to_be_bytes())
            .add_to(&mut m)
            .unwrap();
        if nominate {
            raw(ATTR_USE_CANDIDATE, &[]).add_to(&mut m).unwrap();
        }
        MessageIntegrity::new_short_term_integrity_with_provider(pwd.into(), &CRYPTO)
            .add_to(&mut m)
            .unwrap();
        FINGERPRINT.add_to(&mut m).unwrap();
        m.raw
    }

    fn path(remote: &str, local: &str) -> Path {
        Path::udp(remote.parse().unwrap(), Some(local.parse().unwrap()))
    }

    /// A leg whose remote is known, taking `role` in DTLS.
    fn leg(role: DtlsRole, now: Instant) -> BrowserLeg {
        let cert = DtlsCertificate::generate().unwrap();
        let mut leg = BrowserLeg::new(OUR_UFRAG.into(), OUR_PWD.into());
        let remote = BrowserRemote {
            ice_ufrag: "brws".into(),
            ice_pwd: "browserPasswordBrowserPw".into(),
            fingerprint: cert.fingerprint().to_string(),
            role,
        };
        leg.set_remote(&remote, &cert, now).unwrap();
        leg
    }

    /// Datagrams a leg sent, each with the path it took.
    type Sent = Vec<(Vec<u8>, Path)>;

    /// Feeds one datagram; returns what was sent, with the path it took.
    fn feed(
        leg: &mut BrowserLeg,
        data: &[u8],
        along: Path,
        now: Instant,
    ) -> (Result<Received, LegError>, Sent) {
        let mut sent = Vec::new();
        let mut out = Vec::new();
        let result = leg.on_datagram(data, along, now, &mut out, &mut |d: &[u8], p: Path| {
            sent.push((d.to_vec(), p))
        });
        (result, sent)
    }

    #[test]
    fn an_ice_restart_takes_new_credentials_and_keeps_the_association() {
        let now = Instant::now();
        let cert = DtlsCertificate::generate().unwrap();
        let mut leg = leg(DtlsRole::Client, now);
        let first = path("198.51.100.7:50000", "192.0.2.10");
        assert!(feed(&mut leg, &check(true), first, now).0.is_ok());
        let same_cert = leg.remote_fingerprint.clone().unwrap();
        let restarted = BrowserRemote {
            ice_ufrag: "brw2".into(),
            ice_pwd: "browserPasswordNumberTwo".into(),
            fingerprint: same_cert,
            role: DtlsRole::Client,
        };
        let renewed = leg.renew(
            &restarted,
            Some(("newUfrag".into(), "newPasswordNewPassword24".into())),
            &cert,
            now,
        );
        assert!(!renewed.unwrap(), "the same certificate keeps DTLS");
        // Checks with the old credentials go unanswered; the new ones are answered, and a
        // nomination from the browser's new address moves the path there.
        let (_, sent) = feed(&mut leg, &check(true), first, now);
        assert!(sent.is_empty(), "old credentials answered");
        let moved = path("203.0.113.9:41000", "192.0.2.10");
        let new_check = check_as("newUfrag", "newPasswordNewPassword24", "brw2", true);
        let (result, sent) = feed(&mut leg, &new_check, moved, now);
        assert!(result.is_ok());
        assert!(crate::ice_lite::is_stun(&sent[0].0));
        assert_eq!(leg.selected(), Some(moved));
    }

    #[test]
    fn a_new_certificate_starts_dtls_over_on_the_next_nomination() {
        let now = Instant::now();
        let mut leg = leg(DtlsRole::Client, now);
        let first = path("198.51.100.7:50000", "192.0.2.10");
        assert!(feed(&mut leg, &check(true), first, now).0.is_ok());
        let other = DtlsCertificate::generate().unwrap();
        let fresh = BrowserRemote {
            ice_ufrag: "brws".into(),
            ice_pwd: "browserPasswordBrowserPw".into(),
            fingerprint: other.fingerprint().to_string(),
            role: DtlsRole::Client,
        };
        assert!(leg.renew(&fresh, None, &other, now).unwrap());
        assert!(!leg.is_connected());
        assert_eq!(leg.selected(), None, "the old browser's path is forgotten");
        // The new browser's nomination gets our new ClientHello along its path.
        let reloaded = path("198.51.100.7:50002", "192.0.2.10");
        let (_, sent) = feed(&mut leg, &check(true), reloaded, now);
        assert!(sent.len() >= 2, "{} datagrams", sent.len());
        assert!(sent.iter().all(|(_, p)| *p == reloaded));
    }

    #[test]
    fn replies_leave_along_the_path_they_came_and_dtls_along_the_nominated_one() {
        let now = Instant::now();
        let mut leg = leg(DtlsRole::Client, now);
        let first = path("198.51.100.7:50000", "192.0.2.10");
        let (result, sent) = feed(&mut leg, &check(true), first, now);
        assert!(result.is_ok());
        assert_eq!(leg.selected(), Some(first));
        // The STUN response, then our ClientHello: both from the address the browser checked.
        assert!(sent.len() >= 2, "{} datagrams", sent.len());
        assert!(crate::ice_lite::is_stun(&sent[0].0));
        assert!(sent.iter().all(|(_, p)| *p == first), "{sent:?}");

        // The same browser address checking our other address is answered from that one; the
        // nominated path stays.
        let other = path("198.51.100.7:50000", "10.1.2.3");
        let (_, sent) = feed(&mut leg, &check(false), other, now);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].1, other);
        assert_eq!(leg.selected(), Some(first));

        // A DTLS retransmission follows the nominated path.
        let mut resent = Vec::new();
        let due = leg.poll_timeout().expect("DTLS timer");
        leg.handle_timeout(due, &mut |d: &[u8], p: Path| resent.push((d.to_vec(), p)))
            .unwrap();
        assert!(!resent.is_empty(), "ClientHello retransmitted");
        assert!(resent.iter().all(|(_, p)| *p == first));
    }

    #[test]
    fn a_nominated_path_checked_on_without_dtls_fails_fast_with_its_addresses() {
        let t0 = Instant::now();
        let mut leg = leg(DtlsRole::Server, t0);
        let p = path("198.51.100.7:50000", "192.0.2.10");
        feed(&mut leg, &check(true), p, t0).0.unwrap();
        assert_eq!(
            leg.poll_timeout(),
            None,
            "no verdict from a timer before the checks"
        );
        for i in 1..=UNANSWERED_CHECKS {
            let at = t0 + Duration::from_millis(100 * u64::from(i));
            feed(&mut leg, &check(true), p, at).0.unwrap();
        }
        assert_eq!(leg.poll_timeout(), Some(t0 + UNANSWERED_AFTER));
        let mut sink = |_: &[u8], _: Path| {};
        assert!(leg
            .handle_timeout(t0 + UNANSWERED_AFTER - Duration::from_millis(1), &mut sink)
            .is_ok());
        let err = leg
            .handle_timeout(t0 + UNANSWERED_AFTER, &mut sink)
            .expect_err("unanswered");
        assert!(matches!(err, LegError::Unanswered { .. }));
        let text = err.to_string();
        assert!(
            text.contains("192.0.2.10") && text.contains("198.51.100.7:50000"),
            "{text}"
        );
    }

    #[test]
    fn a_check_after_the_deadline_decides_too() {
        let t0 = Instant::now();
        let mut leg = leg(DtlsRole::Server, t0);
        let p = path("198.51.100.7:50000", "192.0.2.10");
        feed(&mut leg, &check(true), p, t0).0.unwrap();
        for i in 1..UNANSWERED_CHECKS - 1 {
            feed(
                &mut leg,
                &check(false),
                p,
                t0 + Duration::from_millis(u64::from(i)),
            )
            .0
            .unwrap();
        }
        assert_eq!(
            leg.poll_timeout(),
            None,
            "too few checks for a timer verdict"
        );
        let late = t0 + UNANSWERED_AFTER + Duration::from_secs(1);
        let (result, sent) = feed(&mut leg, &check(false), p, late);
        assert_eq!(sent.len(), 1, "the check is still answered");
        assert!(matches!(result, Err(LegError::Unanswered { .. })));
    }

    #[test]
    fn dtls_from_the_browser_or_silence_is_no_unanswered_path() {
        let t0 = Instant::now();
        let p = path("198.51.100.7:50000", "192.0.2.10");
        let mut sink = |_: &[u8], _: Path| {};

        // DTLS arrived (even a mangled record): the browser's ICE is connected.
        let mut heard = leg(DtlsRole::Server, t0);
        feed(&mut heard, &check(true), p, t0).0.unwrap();
        feed(&mut heard, &[22, 254, 253, 0, 0], p, t0).0.unwrap();
        for i in 1..=2 * UNANSWERED_CHECKS {
            feed(
                &mut heard,
                &check(false),
                p,
                t0 + Duration::from_millis(u64::from(i)),
            )
            .0
            .unwrap();
        }
        assert!(heard
            .handle_timeout(t0 + 2 * UNANSWERED_AFTER, &mut sink)
            .is_ok());

        // A browser that nominated and went quiet is for consent and the connect time-out.
        let mut quiet = leg(DtlsRole::Server, t0);
        feed(&mut quiet, &check(true), p, t0).0.unwrap();
        assert!(quiet
            .handle_timeout(t0 + 10 * UNANSWERED_AFTER, &mut sink)
            .is_ok());

        // Silence after the first checks: the browser went away, no verdict here.
        let mut gone = leg(DtlsRole::Server, t0);
        for i in 0..UNANSWERED_CHECKS - 1 {
            let at = t0 + Duration::from_millis(u64::from(i));
            feed(&mut gone, &check(false), p, at).0.unwrap();
        }
        assert!(gone
            .handle_timeout(t0 + 10 * UNANSWERED_AFTER, &mut sink)
            .is_ok());
    }

    #[test]
    fn a_browser_checking_without_ever_nominating_fails_fast_too() {
        // What Chromium does when no response reaches it: it checks every 125 ms and never
        // nominates, so only the DTLS time-out (of a handshake never begun) would end it.
        let t0 = Instant::now();
        let mut leg = leg(DtlsRole::Client, t0);
        let p = path("198.51.100.7:50000", "192.0.2.10");
        let mut result = Ok(Received::Nothing);
        let mut at = t0;
        while result.is_ok() && at <= t0 + 2 * UNANSWERED_AFTER {
            let (r, sent) = feed(&mut leg, &check(false), p, at);
            assert_eq!(
                sent.len(),
                1,
                "each check is answered, no DTLS before nomination"
            );
            result = r;
            at += Duration::from_millis(125);
        }
        let err = result.expect_err("unanswered");
        assert!(at - t0 >= UNANSWERED_AFTER, "not before the deadline");
        assert!(at - t0 <= UNANSWERED_AFTER + Duration::from_millis(250));
        assert!(err.to_string().contains("without nominating"), "{err}");
        assert_eq!(leg.selected(), None);
    }
}
