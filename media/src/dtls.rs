//! DTLS-SRTP for one browser leg (RFC 5763, RFC 5764), on `rtc-dtls`'s sans-IO endpoint.
//!
//! The worker owns the socket and the clock: it feeds DTLS datagrams (RFC 7983: first byte
//! 20..=63) to [`DtlsEndpoint::handle_datagram`], sends whatever [`DtlsEndpoint::poll_transmit`]
//! yields, and calls [`DtlsEndpoint::handle_timeout`] at [`DtlsEndpoint::poll_timeout`]. Once
//! [`DtlsEndpoint::is_connected`], [`DtlsEndpoint::srtp_keys`] gives the keys for
//! [`crate::srtp::SrtpSession`]; DTLS is not on the media path after that.
//!
//! Peers are authenticated the WebRTC way: the certificates are self-signed and the peer's must
//! hash to the `a=fingerprint` from its SDP (RFC 8122). No CA chain is consulted.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use rtc_dtls::config::{
    ClientAuthType, ConfigBuilder, ExtendedMasterSecretType, HandshakeConfig,
    VerifyPeerCertificateFn,
};
use rtc_dtls::crypto::Certificate;
use rtc_dtls::crypto_provider::{default_provider, RTCCryptoProvider};
use rtc_dtls::endpoint::{Endpoint, EndpointEvent};
use rtc_dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc_shared::error::Error as RtcError;
use rtc_shared::TransportProtocol;

use crate::srtp::{SrtpKeys, SrtpProfile};

/// `rtc-dtls`'s `Endpoint` keys its associations by remote address. The worker has already
/// demultiplexed by address, so each [`DtlsEndpoint`] holds exactly one association under this
/// fixed key; the real address never reaches DTLS, so an ICE path change needs no DTLS work.
const PEER_KEY: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9));

/// The SRTP profiles offered in `use_srtp`, most preferred first. A DTLS server picks the first
/// of the client's list that it supports, so as client this order decides; as server the
/// browser's order does (Chrome and Firefox both list AEAD_AES_128_GCM first).
const SRTP_PROFILES: [SrtpProtectionProfile; 2] = [
    SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
    SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
];

/// Sent in the certificate's subject and as SNI; browsers ignore both for WebRTC.
const CERTIFICATE_NAME: &str = "webrtc-gateway";

/// Why a DTLS operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DtlsError {
    /// The self-signed certificate could not be made.
    #[error("DTLS certificate generation failed: {0}")]
    Certificate(String),
    /// `rtc-dtls` rejected the handshake configuration.
    #[error("DTLS configuration rejected: {0}")]
    Config(String),
    /// The SDP `a=fingerprint` value is not `<hash-func> <hex pairs joined by ':'>`.
    #[error("malformed a=fingerprint value: {0}")]
    InvalidFingerprint(String),
    /// The SDP `a=fingerprint` uses a hash function we do not implement.
    #[error("unsupported fingerprint hash function {0:?}")]
    UnsupportedFingerprintAlgorithm(String),
    /// The datagram is not a well-formed sequence of DTLS records. It was dropped; the
    /// association is unaffected (RFC 6347 §4.1.2.7: invalid records are discarded).
    #[error("malformed DTLS datagram: {0}")]
    Malformed(&'static str),
    /// The handshake failed; the association is dead.
    #[error("DTLS handshake failed: {0}")]
    Handshake(String),
    /// The peer's certificate does not hash to its SDP fingerprint; the association is dead.
    #[error("peer certificate does not match the SDP fingerprint")]
    FingerprintMismatch,
    /// No SRTP profile both sides support was negotiated through `use_srtp`.
    #[error("no common SRTP protection profile was negotiated")]
    NoSrtpProfile,
    /// The handshake has not completed yet.
    #[error("DTLS handshake has not completed")]
    NotConnected,
    /// The association already failed or was closed; it takes no more input.
    #[error("DTLS association is closed")]
    Closed,
    /// Exporting the SRTP keying material failed.
    #[error("DTLS-SRTP key export failed: {0}")]
    KeyExport(String),
}

/// Our end of the DTLS handshake for a leg, decided from SDP `a=setup` (RFC 5763 §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DtlsRole {
    /// We send the ClientHello (`a=setup:active` on our side).
    Client,
    /// We wait for the peer's ClientHello (`a=setup:passive` on our side).
    Server,
}

/// The `a=setup` value the gateway puts in an offer it sends: the browser then chooses.
pub const OFFER_SETUP: &str = "actpass";

/// Our role and our answer's `a=setup` value for a browser offer carrying `offer_setup`.
///
/// The rule: when the offer leaves the choice to us (`actpass`, what browsers send) we take
/// `active`, i.e. DTLS client, as Janus and most SFUs do. Being client means our ClientHello can
/// go out as soon as ICE has latched the browser's address, instead of waiting a round trip for
/// the browser to notice the path and start. It also answers a browser's re-offer (`actpass`
/// again) with the same role, which RFC 5763 §5 requires while the association lives. An
/// explicit `active` or `passive` in the offer is simply mirrored.
/// `holdconn` or anything unknown gives `None`: there is no DTLS to run.
pub fn role_for_answer(offer_setup: &str) -> Option<(DtlsRole, &'static str)> {
    let setup = offer_setup.trim();
    if setup.eq_ignore_ascii_case("actpass") || setup.eq_ignore_ascii_case("passive") {
        Some((DtlsRole::Client, "active"))
    } else if setup.eq_ignore_ascii_case("active") {
        Some((DtlsRole::Server, "passive"))
    } else {
        None
    }
}

/// Our answer's `a=setup` for a browser re-offer within a live DTLS association: our role
/// stays what it is (RFC 5763 §5), so the offer must allow it; `None` when it asks for the
/// other one (a switch needs a new certificate, i.e. a new association).
pub fn keep_role(ours: DtlsRole, offer_setup: &str) -> Option<(DtlsRole, &'static str)> {
    let setup = offer_setup.trim();
    let either = setup.eq_ignore_ascii_case("actpass");
    match ours {
        DtlsRole::Client if either || setup.eq_ignore_ascii_case("passive") => {
            Some((DtlsRole::Client, "active"))
        }
        DtlsRole::Server if either || setup.eq_ignore_ascii_case("active") => {
            Some((DtlsRole::Server, "passive"))
        }
        _ => None,
    }
}

/// Our role when the gateway offered [`OFFER_SETUP`] and the browser answered `answer_setup`.
///
/// An answer must pick a side (RFC 5763 §5), so `actpass` or `holdconn` in an answer gives
/// `None`.
pub fn role_from_answer(answer_setup: &str) -> Option<DtlsRole> {
    let setup = answer_setup.trim();
    if setup.eq_ignore_ascii_case("active") {
        Some(DtlsRole::Server)
    } else if setup.eq_ignore_ascii_case("passive") {
        Some(DtlsRole::Client)
    } else {
        None
    }
}

/// One self-signed ECDSA P-256 certificate per process, reused for every leg (as browsers do
/// per peer connection).
///
/// Generating a key per leg would cost a key generation per call for no security gain: the
/// binding that matters is the fingerprint in each SDP, which signalling already protects.
#[derive(Clone)]
pub struct DtlsCertificate {
    certificate: Certificate,
    provider: Arc<dyn RTCCryptoProvider>,
    fingerprint: String,
}

impl DtlsCertificate {
    /// Makes a fresh key pair and self-signed certificate, using `rtc-dtls`'s default crypto
    /// provider (ring).
    pub fn generate() -> Result<Self, DtlsError> {
        let provider = default_provider().map_err(|e| DtlsError::Certificate(e.to_string()))?;
        // rcgen's default key type is ECDSA P-256 with SHA-256, what browsers make too and what
        // every browser accepts.
        let certificate =
            Certificate::generate_self_signed(vec![CERTIFICATE_NAME.to_owned()], provider.crypto())
                .map_err(|e| DtlsError::Certificate(e.to_string()))?;
        let der = certificate
            .certificate
            .first()
            .ok_or_else(|| DtlsError::Certificate("no certificate was generated".to_owned()))?;
        let fingerprint = format!(
            "sha-256 {}",
            hex_colon(FingerprintAlgorithm::Sha256.digest(der.as_ref()).as_ref())
        );
        Ok(Self {
            certificate,
            provider,
            fingerprint,
        })
    }

    /// `"sha-256 AB:CD:..."`, the value for our SDP's `a=fingerprint`.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

impl fmt::Debug for DtlsCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtlsCertificate")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// Hash functions accepted in a peer's `a=fingerprint` (RFC 8122 §5). SHA-1 stays because
/// older SIP/WebRTC endpoints still send it; ring has all four, so they cost nothing extra.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FingerprintAlgorithm {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl FingerprintAlgorithm {
    fn from_sdp(name: &str) -> Option<Self> {
        // RFC 8122 hash-func tokens are case-insensitive.
        [
            ("sha-1", Self::Sha1),
            ("sha-256", Self::Sha256),
            ("sha-384", Self::Sha384),
            ("sha-512", Self::Sha512),
        ]
        .into_iter()
        .find(|(token, _)| name.eq_ignore_ascii_case(token))
        .map(|(_, algorithm)| algorithm)
    }

    fn ring_algorithm(self) -> &'static ring::digest::Algorithm {
        match self {
            Self::Sha1 => &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
            Self::Sha256 => &ring::digest::SHA256,
            Self::Sha384 => &ring::digest::SHA384,
            Self::Sha512 => &ring::digest::SHA512,
        }
    }

    fn digest(self, data: &[u8]) -> ring::digest::Digest {
        ring::digest::digest(self.ring_algorithm(), data)
    }
}

/// A parsed SDP `a=fingerprint` value.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Fingerprint {
    algorithm: FingerprintAlgorithm,
    digest: Vec<u8>,
}

impl Fingerprint {
    fn parse(value: &str) -> Result<Self, DtlsError> {
        let mut parts = value.split_ascii_whitespace();
        let (Some(name), Some(hex), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(DtlsError::InvalidFingerprint(value.to_owned()));
        };
        let algorithm = FingerprintAlgorithm::from_sdp(name)
            .ok_or_else(|| DtlsError::UnsupportedFingerprintAlgorithm(name.to_owned()))?;
        let digest = hex
            .split(':')
            .map(|pair| {
                if pair.len() == 2 {
                    u8::from_str_radix(pair, 16).ok()
                } else {
                    None
                }
            })
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| DtlsError::InvalidFingerprint(value.to_owned()))?;
        if digest.len() != algorithm.ring_algorithm().output_len() {
            return Err(DtlsError::InvalidFingerprint(value.to_owned()));
        }
        Ok(Self { algorithm, digest })
    }

    fn matches(&self, certificate_der: &[u8]) -> bool {
        self.algorithm.digest(certificate_der).as_ref() == self.digest.as_slice()
    }
}

fn hex_colon(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for (i, byte) in bytes.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push_str(&format!("{byte:02X}"));
    }
    out
}

/// Checks that `data` is a whole number of DTLS records before `rtc-dtls` sees it.
///
/// `rtc-dtls` reports a datagram it cannot split into records as an error indistinguishable
/// from a handshake failure, and silently drops most other nonsense. Checking the framing here
/// lets a stray or spoofed datagram be reported as [`DtlsError::Malformed`] without killing the
/// association. The rules are at least as strict as the library's own splitting, so anything
/// that passes is split by it without error.
fn validate_datagram(data: &[u8]) -> Result<(), DtlsError> {
    const RECORD_HEADER_LEN: usize = 13;
    match data.first() {
        None => return Err(DtlsError::Malformed("empty datagram")),
        Some(20..=63) => {}
        Some(_) => {
            return Err(DtlsError::Malformed(
                "first byte outside 20..=63 (RFC 7983)",
            ))
        }
    }
    let mut rest = data;
    while !rest.is_empty() {
        let Some(header) = rest.get(..RECORD_HEADER_LEN) else {
            return Err(DtlsError::Malformed("truncated record header"));
        };
        // change_cipher_spec, alert, handshake, application_data: all DTLS 1.2 carries for us.
        if !(20..=23).contains(&header[0]) {
            return Err(DtlsError::Malformed("unknown record content type"));
        }
        // DTLS versions are 0xFEFF (1.0) and 0xFEFD (1.2); records never carry anything else.
        if header[1] != 0xFE {
            return Err(DtlsError::Malformed("not a DTLS record version"));
        }
        let length = usize::from(u16::from_be_bytes([header[11], header[12]]));
        if length == 0 {
            return Err(DtlsError::Malformed("empty record"));
        }
        let Some(next) = rest.get(RECORD_HEADER_LEN + length..) else {
            return Err(DtlsError::Malformed("record longer than the datagram"));
        };
        rest = next;
    }
    Ok(())
}

/// Where the association stands, as far as the worker cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Handshaking,
    Connected,
    /// The handshake or the association failed; `rtc-dtls` does not recover from its errors.
    Failed,
    /// Closed by either side with close_notify.
    Closed,
}

/// One leg's DTLS association: the handshake and, after it, the SRTP key export.
pub struct DtlsEndpoint {
    endpoint: Endpoint,
    role: DtlsRole,
    phase: Phase,
}

impl DtlsEndpoint {
    /// Starts the association. As [`DtlsRole::Client`] the ClientHello is queued at once for
    /// [`Self::poll_transmit`], so create the endpoint when ICE has latched the browser's
    /// address; as [`DtlsRole::Server`] it waits for the browser's ClientHello.
    ///
    /// `remote_fingerprint` is the browser's SDP value, e.g. `"sha-256 12:AB:..."` (sha-1,
    /// sha-256, sha-384 and sha-512 are accepted). The peer certificate must match it or the
    /// handshake fails with [`DtlsError::FingerprintMismatch`].
    ///
    /// The server side has no timer until the first datagram: bound the wait for the browser
    /// with the leg's own setup timeout. Once running, `rtc-dtls` retransmits a flight every
    /// second and gives up after 7 retransmissions.
    pub fn new(
        role: DtlsRole,
        cert: &DtlsCertificate,
        remote_fingerprint: &str,
        now: Instant,
    ) -> Result<Self, DtlsError> {
        let config = Arc::new(handshake_config(role, cert, remote_fingerprint)?);
        let endpoint = match role {
            DtlsRole::Client => {
                let mut endpoint = Endpoint::new(PEER_KEY, TransportProtocol::UDP, None);
                endpoint
                    .connect(now, PEER_KEY, config, None)
                    .map_err(|e| DtlsError::Handshake(e.to_string()))?;
                endpoint
            }
            // rtc-dtls creates the server side of the association on the first datagram.
            DtlsRole::Server => Endpoint::new(PEER_KEY, TransportProtocol::UDP, Some(config)),
        };
        Ok(Self {
            endpoint,
            role,
            phase: Phase::Handshaking,
        })
    }

    /// Our role in the handshake.
    pub fn role(&self) -> DtlsRole {
        self.role
    }

    /// Feeds one received DTLS datagram (RFC 7983: first byte 20..=63).
    ///
    /// [`DtlsError::Malformed`] drops just that datagram. Any other error means the association
    /// failed (a fatal alert for the peer may be waiting in [`Self::poll_transmit`]), and every
    /// later datagram gets [`DtlsError::Closed`]. Application data (there are no data channels
    /// here) is dropped.
    pub fn handle_datagram(&mut self, data: &[u8], now: Instant) -> Result<(), DtlsError> {
        if matches!(self.phase, Phase::Failed | Phase::Closed) {
            return Err(DtlsError::Closed);
        }
        validate_datagram(data)?;
        match self
            .endpoint
            .read(now, PEER_KEY, None, BytesMut::from(data))
        {
            Ok(events) => {
                for event in events {
                    match event {
                        EndpointEvent::HandshakeComplete => self.phase = Phase::Connected,
                        EndpointEvent::PeerClosed => self.phase = Phase::Closed,
                        _ => {}
                    }
                }
                Ok(())
            }
            Err(error) => {
                self.phase = Phase::Failed;
                Err(map_handshake_error(error))
            }
        }
    }

    /// The next datagram to send to the peer; call until `None` after every other call.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.endpoint
            .poll_transmit()
            .map(|transmit| Vec::from(transmit.message))
    }

    /// When [`Self::handle_timeout`] is next due, while the handshake is running.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.phase == Phase::Handshaking {
            self.endpoint.poll_timeout(&PEER_KEY)
        } else {
            None
        }
    }

    /// Retransmits the last flight if its timer has expired at `now`. Fails with
    /// [`DtlsError::Handshake`] once the retransmissions are exhausted.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsError> {
        if self.phase != Phase::Handshaking
            || self.endpoint.get_connection_state(PEER_KEY).is_none()
        {
            // A server has no association (and nothing to retransmit) before the ClientHello.
            return Ok(());
        }
        self.endpoint
            .handle_timeout(PEER_KEY, now)
            .map_err(|error| {
                self.phase = Phase::Failed;
                match error {
                    // What rtc-dtls reports when the retransmission budget is spent.
                    RtcError::ErrInvalidFsmTransition => DtlsError::Handshake(
                        "no answer from the peer after the last retransmission".to_owned(),
                    ),
                    other => map_handshake_error(other),
                }
            })
    }

    /// Whether the handshake has completed (and the association has not been closed since).
    pub fn is_connected(&self) -> bool {
        self.phase == Phase::Connected
    }

    /// Whether the association has failed or been closed by either side: it is finished.
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Failed | Phase::Closed)
    }

    /// Queues a close_notify for the peer (see [`Self::poll_transmit`]) and ends the
    /// association. The SRTP keys already taken stay valid.
    pub fn close(&mut self, now: Instant) {
        if !self.is_closed() {
            // `stop` hands back the association; it is finished, so it is dropped.
            let _ = self.endpoint.stop(now, PEER_KEY);
            self.phase = Phase::Closed;
        }
    }

    /// After connection: the SRTP keys and the negotiated profile. Our role decides which half
    /// is local (RFC 5764 §4.2): the client_write key protects what the client sends.
    pub fn srtp_keys(&self) -> Result<SrtpKeys, DtlsError> {
        if self.phase != Phase::Connected {
            return Err(DtlsError::NotConnected);
        }
        let state = self
            .endpoint
            .get_connection_state(PEER_KEY)
            .ok_or(DtlsError::NotConnected)?;
        let profile = match state.srtp_protection_profile() {
            SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm => SrtpProfile::AeadAes128Gcm,
            SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80 => SrtpProfile::Aes128CmHmacSha1_80,
            _ => return Err(DtlsError::NoSrtpProfile),
        };
        // rtc-srtp's own RFC 5764 split, so the key layout matches what rtc's peer connection
        // does with the same material.
        let mut config = rtc_srtp::config::Config {
            profile: profile.protection_profile(),
            ..Default::default()
        };
        let material = state
            .export_keying_material(
                rtc_srtp::config::LABEL_EXTRACTOR_DTLS_SRTP,
                &[],
                config.keying_material_len(),
            )
            .map_err(|e| DtlsError::KeyExport(e.to_string()))?;
        config
            .set_session_keys_from_keying_material(material.as_ref(), state.is_client())
            .map_err(|e| DtlsError::KeyExport(e.to_string()))?;
        let keys = config.keys;
        Ok(SrtpKeys {
            profile,
            local_key: keys.local_master_key,
            local_salt: keys.local_master_salt,
            remote_key: keys.remote_master_key,
            remote_salt: keys.remote_master_salt,
        })
    }
}

impl fmt::Debug for DtlsEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtlsEndpoint")
            .field("role", &self.role)
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

fn map_handshake_error(error: RtcError) -> DtlsError {
    match error {
        RtcError::ErrNoMatchingCertificateFingerprint => DtlsError::FingerprintMismatch,
        RtcError::ErrServerNoMatchingSrtpProfile | RtcError::ErrClientNoMatchingSrtpProfile => {
            DtlsError::NoSrtpProfile
        }
        other => DtlsError::Handshake(other.to_string()),
    }
}

fn handshake_config(
    role: DtlsRole,
    cert: &DtlsCertificate,
    remote_fingerprint: &str,
) -> Result<HandshakeConfig, DtlsError> {
    let expected = Fingerprint::parse(remote_fingerprint)?;
    let verify: VerifyPeerCertificateFn = Arc::new(move |certificates: &[Vec<u8>], _chains| {
        // The leaf is the certificate the SDP fingerprint names (RFC 8122 §5).
        let leaf = certificates.first().ok_or(RtcError::ErrNonCertificate)?;
        if expected.matches(leaf) {
            Ok(())
        } else {
            Err(RtcError::ErrNoMatchingCertificateFingerprint)
        }
    });
    let is_client = role == DtlsRole::Client;
    ConfigBuilder::default()
        .with_crypto_provider(cert.provider.clone())
        .with_certificates(vec![cert.certificate.clone()])
        .with_srtp_protection_profiles(SRTP_PROFILES.to_vec())
        // As server, make the browser present its certificate: the fingerprint check is the only
        // authentication there is.
        .with_client_auth(ClientAuthType::RequireAnyClientCert)
        // Self-signed on both sides: no CA chain to verify, the fingerprint callback decides.
        .with_insecure_skip_verify(true)
        .with_verify_peer_certificate(Some(verify))
        // RFC 7627; every current browser sends it, and it closes the triple-handshake attack.
        .with_extended_master_secret(ExtendedMasterSecretType::Require)
        // Without a name rtc-dtls logs a warning per client handshake; nobody checks it.
        .with_server_name(CERTIFICATE_NAME.to_owned())
        .build(is_client, None)
        .map_err(|e| DtlsError::Config(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::srtp::SrtpSession;
    use rtc_shared::marshal::Marshal;
    use std::time::Duration;

    /// The address the in-memory "browser" sees us at.
    const GATEWAY_ADDR: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 40000));

    /// A browser stand-in built directly on rtc-dtls, configured the way rtc's own peer
    /// connection configures it.
    struct Peer {
        endpoint: Endpoint,
        certificate: Certificate,
        connected: bool,
        failed: Option<RtcError>,
    }

    fn sha256_fingerprint(der: &[u8]) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let hex: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
        format!("sha-256 {}", hex.join(":"))
    }

    impl Peer {
        fn new(
            is_client: bool,
            expected_fingerprint: &str,
            profiles: Vec<SrtpProtectionProfile>,
            now: Instant,
        ) -> Self {
            let provider = default_provider().unwrap();
            let certificate =
                Certificate::generate_self_signed(vec!["browser".to_owned()], provider.crypto())
                    .unwrap();
            let expected = expected_fingerprint.to_owned();
            let verify: VerifyPeerCertificateFn = Arc::new(move |certs: &[Vec<u8>], _| {
                if sha256_fingerprint(&certs[0]) == expected {
                    Ok(())
                } else {
                    Err(RtcError::ErrNoMatchingCertificateFingerprint)
                }
            });
            let config = Arc::new(
                ConfigBuilder::default()
                    .with_crypto_provider(provider)
                    .with_certificates(vec![certificate.clone()])
                    .with_srtp_protection_profiles(profiles)
                    .with_client_auth(ClientAuthType::RequireAnyClientCert)
                    .with_insecure_skip_verify(true)
                    .with_verify_peer_certificate(Some(verify))
                    .with_extended_master_secret(ExtendedMasterSecretType::Require)
                    .with_server_name("gateway".to_owned())
                    .build(is_client, None)
                    .unwrap(),
            );
            let local = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 50000));
            let endpoint = if is_client {
                let mut endpoint = Endpoint::new(local, TransportProtocol::UDP, None);
                endpoint.connect(now, GATEWAY_ADDR, config, None).unwrap();
                endpoint
            } else {
                Endpoint::new(local, TransportProtocol::UDP, Some(config))
            };
            Self {
                endpoint,
                certificate,
                connected: false,
                failed: None,
            }
        }

        fn fingerprint(&self) -> String {
            sha256_fingerprint(self.certificate.certificate[0].as_ref())
        }

        fn receive(&mut self, datagram: &[u8], now: Instant) {
            match self
                .endpoint
                .read(now, GATEWAY_ADDR, None, BytesMut::from(datagram))
            {
                Ok(events) => {
                    for event in events {
                        if let EndpointEvent::HandshakeComplete = event {
                            self.connected = true;
                        }
                    }
                }
                Err(error) => self.failed = Some(error),
            }
        }

        fn transmits(&mut self) -> Vec<Vec<u8>> {
            let mut out = Vec::new();
            while let Some(transmit) = self.endpoint.poll_transmit() {
                out.push(transmit.message.to_vec());
            }
            out
        }

        fn poll_timeout(&self) -> Option<Instant> {
            self.endpoint.poll_timeout(&GATEWAY_ADDR)
        }

        fn handle_timeout(&mut self, now: Instant) {
            if self.endpoint.get_connection_state(GATEWAY_ADDR).is_some() {
                if let Err(error) = self.endpoint.handle_timeout(GATEWAY_ADDR, now) {
                    self.failed = Some(error);
                }
            }
        }

        fn srtp_keys(&self) -> SrtpKeys {
            let state = self.endpoint.get_connection_state(GATEWAY_ADDR).unwrap();
            let profile = match state.srtp_protection_profile() {
                SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm => SrtpProfile::AeadAes128Gcm,
                SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80 => {
                    SrtpProfile::Aes128CmHmacSha1_80
                }
                other => panic!("unexpected profile {other:?}"),
            };
            // Split by hand, independently of the code under test (RFC 5764 §4.2).
            let (key_len, salt_len) = (16, profile.salt_len());
            let material = state
                .export_keying_material("EXTRACTOR-dtls_srtp", &[], 2 * (key_len + salt_len))
                .unwrap();
            let m = material.as_ref();
            let client_key = m[..key_len].to_vec();
            let server_key = m[key_len..2 * key_len].to_vec();
            let client_salt = m[2 * key_len..2 * key_len + salt_len].to_vec();
            let server_salt = m[2 * key_len + salt_len..].to_vec();
            if state.is_client() {
                SrtpKeys {
                    profile,
                    local_key: client_key,
                    local_salt: client_salt,
                    remote_key: server_key,
                    remote_salt: server_salt,
                }
            } else {
                SrtpKeys {
                    profile,
                    local_key: server_key,
                    local_salt: server_salt,
                    remote_key: client_key,
                    remote_salt: client_salt,
                }
            }
        }
    }

    /// What happened to the datagrams of one run.
    #[derive(Default)]
    struct Run {
        our_error: Option<DtlsError>,
        timeouts_fired: usize,
    }

    /// Shuttles datagrams until both sides are done, firing timers when nothing is in flight.
    /// `drop_ours` decides per datagram (by index among all we sent) whether the network loses it.
    fn drive(
        ours: &mut DtlsEndpoint,
        peer: &mut Peer,
        mut now: Instant,
        drop_ours: impl Fn(usize) -> bool,
    ) -> Run {
        let mut run = Run::default();
        let mut sent = 0;
        for _ in 0..200 {
            let mut progressed = false;
            while let Some(datagram) = ours.poll_transmit() {
                progressed = true;
                if !drop_ours(sent) {
                    peer.receive(&datagram, now);
                }
                sent += 1;
            }
            for datagram in peer.transmits() {
                progressed = true;
                if let Err(error) = ours.handle_datagram(&datagram, now) {
                    run.our_error.get_or_insert(error);
                }
            }
            let done = (ours.is_connected() && peer.connected)
                || ours.is_closed()
                || peer.failed.is_some();
            if done && !progressed {
                return run;
            }
            if !progressed {
                let next = [ours.poll_timeout(), peer.poll_timeout()]
                    .into_iter()
                    .flatten()
                    .min();
                let Some(next) = next else { return run };
                now = now.max(next);
                if ours.poll_timeout().is_some_and(|t| t <= now) {
                    run.timeouts_fired += 1;
                    if let Err(error) = ours.handle_timeout(now) {
                        run.our_error.get_or_insert(error);
                    }
                }
                if peer.poll_timeout().is_some_and(|t| t <= now) {
                    peer.handle_timeout(now);
                }
            }
        }
        panic!("handshake did not settle");
    }

    fn all_profiles() -> Vec<SrtpProtectionProfile> {
        SRTP_PROFILES.to_vec()
    }

    fn pair(
        role: DtlsRole,
        profiles: Vec<SrtpProtectionProfile>,
        now: Instant,
    ) -> (DtlsEndpoint, Peer, DtlsCertificate) {
        let cert = DtlsCertificate::generate().unwrap();
        let peer = Peer::new(role == DtlsRole::Server, cert.fingerprint(), profiles, now);
        let ours = DtlsEndpoint::new(role, &cert, &peer.fingerprint(), now).unwrap();
        (ours, peer, cert)
    }

    fn rtp_packet(seq: u16) -> Vec<u8> {
        let packet = rtc_rtp::Packet {
            header: rtc_rtp::Header {
                version: 2,
                payload_type: 111,
                sequence_number: seq,
                timestamp: 960 * u32::from(seq),
                ssrc: 0x1234_5678,
                ..Default::default()
            },
            payload: bytes::Bytes::from_static(&[0xAB; 80]),
        };
        packet.marshal().unwrap().to_vec()
    }

    fn rtcp_packet() -> Vec<u8> {
        let report = rtc_rtcp::receiver_report::ReceiverReport {
            ssrc: 0x1234_5678,
            ..Default::default()
        };
        report.marshal().unwrap().to_vec()
    }

    /// Our keys and the peer's match crosswise, and media flows both ways on them.
    fn assert_media_flows(ours: &DtlsEndpoint, peer: &Peer, profile: SrtpProfile) {
        let our_keys = ours.srtp_keys().unwrap();
        let peer_keys = peer.srtp_keys();
        assert_eq!(our_keys.profile, profile);
        assert_eq!(peer_keys.profile, profile);
        assert_eq!(our_keys.local_key, peer_keys.remote_key);
        assert_eq!(our_keys.local_salt, peer_keys.remote_salt);
        assert_eq!(our_keys.remote_key, peer_keys.local_key);
        assert_eq!(our_keys.remote_salt, peer_keys.local_salt);
        assert_ne!(our_keys.local_key, our_keys.remote_key);

        let mut our_session = SrtpSession::new(&our_keys).unwrap();
        let mut peer_session = SrtpSession::new(&peer_keys).unwrap();
        assert_one_way(&mut our_session, &mut peer_session);
        assert_one_way(&mut peer_session, &mut our_session);
    }

    fn assert_one_way(from: &mut SrtpSession, to: &mut SrtpSession) {
        let (mut wire, mut plain) = (Vec::new(), Vec::new());
        for seq in 1..=3 {
            let rtp = rtp_packet(seq);
            from.protect_rtp(&rtp, &mut wire).unwrap();
            assert_ne!(wire, rtp);
            to.unprotect_rtp(&wire, &mut plain).unwrap();
            assert_eq!(plain, rtp);
        }
        let rtcp = rtcp_packet();
        from.protect_rtcp(&rtcp, &mut wire).unwrap();
        to.unprotect_rtcp(&wire, &mut plain).unwrap();
        assert_eq!(plain, rtcp);
    }

    #[test]
    fn handshake_as_server_with_each_profile() {
        for (forced, profile) in [
            (
                SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
                SrtpProfile::AeadAes128Gcm,
            ),
            (
                SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
                SrtpProfile::Aes128CmHmacSha1_80,
            ),
        ] {
            let now = Instant::now();
            let (mut ours, mut peer, _) = pair(DtlsRole::Server, vec![forced], now);
            let run = drive(&mut ours, &mut peer, now, |_| false);
            assert!(run.our_error.is_none(), "{:?}", run.our_error);
            assert!(ours.is_connected() && peer.connected);
            assert_media_flows(&ours, &peer, profile);
        }
    }

    #[test]
    fn handshake_as_client_with_each_profile() {
        for (forced, profile) in [
            (
                SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
                SrtpProfile::AeadAes128Gcm,
            ),
            (
                SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
                SrtpProfile::Aes128CmHmacSha1_80,
            ),
        ] {
            let now = Instant::now();
            let (mut ours, mut peer, _) = pair(DtlsRole::Client, vec![forced], now);
            let run = drive(&mut ours, &mut peer, now, |_| false);
            assert!(run.our_error.is_none(), "{:?}", run.our_error);
            assert!(ours.is_connected() && peer.connected);
            assert_media_flows(&ours, &peer, profile);
        }
    }

    #[test]
    fn gcm_is_preferred_when_both_are_offered() {
        for role in [DtlsRole::Client, DtlsRole::Server] {
            let now = Instant::now();
            let (mut ours, mut peer, _) = pair(role, all_profiles(), now);
            drive(&mut ours, &mut peer, now, |_| false);
            assert!(ours.is_connected() && peer.connected);
            assert_media_flows(&ours, &peer, SrtpProfile::AeadAes128Gcm);
        }
    }

    #[test]
    fn wrong_remote_fingerprint_fails_with_fingerprint_mismatch() {
        for role in [DtlsRole::Client, DtlsRole::Server] {
            let now = Instant::now();
            let cert = DtlsCertificate::generate().unwrap();
            let mut peer = Peer::new(
                role == DtlsRole::Server,
                cert.fingerprint(),
                all_profiles(),
                now,
            );
            // A well-formed fingerprint of some other certificate.
            let other = DtlsCertificate::generate().unwrap();
            let mut ours = DtlsEndpoint::new(role, &cert, other.fingerprint(), now).unwrap();
            let run = drive(&mut ours, &mut peer, now, |_| false);
            assert!(
                matches!(run.our_error, Some(DtlsError::FingerprintMismatch)),
                "{role:?}: {:?}",
                run.our_error
            );
            assert!(!ours.is_connected());
            assert!(ours.is_closed());
            assert!(matches!(ours.srtp_keys(), Err(DtlsError::NotConnected)));
            assert!(matches!(
                ours.handle_datagram(&[22, 0xFE, 0xFD, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0], now),
                Err(DtlsError::Closed)
            ));
        }
    }

    #[test]
    fn peer_rejecting_our_certificate_fails_the_handshake() {
        let now = Instant::now();
        let cert = DtlsCertificate::generate().unwrap();
        let other = DtlsCertificate::generate().unwrap();
        // The browser expects some other certificate; it sends a fatal alert.
        let mut peer = Peer::new(true, other.fingerprint(), all_profiles(), now);
        let mut ours =
            DtlsEndpoint::new(DtlsRole::Server, &cert, &peer.fingerprint(), now).unwrap();
        let run = drive(&mut ours, &mut peer, now, |_| false);
        assert!(peer.failed.is_some());
        assert!(!ours.is_connected());
        // We learn it from the peer's alert, unless the alert is what got lost.
        if let Some(error) = run.our_error {
            assert!(matches!(error, DtlsError::Handshake(_)), "{error:?}");
        }
    }

    #[test]
    fn lost_first_flight_is_retransmitted_at_poll_timeout() {
        for role in [DtlsRole::Client, DtlsRole::Server] {
            let now = Instant::now();
            let (mut ours, mut peer, _) = pair(role, all_profiles(), now);
            // Lose our first flight: the ClientHello as client, HelloVerifyRequest as server.
            let run = drive(&mut ours, &mut peer, now, |index| index == 0);
            assert!(run.our_error.is_none(), "{role:?}: {:?}", run.our_error);
            assert!(run.timeouts_fired >= 1, "{role:?}: no timeout fired");
            assert!(ours.is_connected() && peer.connected, "{role:?}");
            assert_media_flows(&ours, &peer, SrtpProfile::AeadAes128Gcm);
        }
    }

    #[test]
    fn every_lost_flight_is_recovered() {
        // Our flights are one datagram each here: as client ClientHello, ClientHello with the
        // cookie, then Certificate..Finished; as server HelloVerifyRequest,
        // ServerHello..ServerHelloDone, then ChangeCipherSpec+Finished.
        for role in [DtlsRole::Client, DtlsRole::Server] {
            for lost in 0..3 {
                let now = Instant::now();
                let (mut ours, mut peer, _) = pair(role, all_profiles(), now);
                let run = drive(&mut ours, &mut peer, now, |index| index == lost);
                assert!(
                    run.our_error.is_none(),
                    "{role:?} {lost}: {:?}",
                    run.our_error
                );
                assert!(
                    ours.is_connected() && peer.connected,
                    "{role:?} lost {lost}"
                );
                if !(role == DtlsRole::Server && lost == 2) {
                    // Our last server flight is resent when the client repeats its own
                    // (RFC 6347 §4.2.4), not on our timer; every other loss is on our timer.
                    assert!(run.timeouts_fired >= 1, "{role:?} lost {lost}");
                }
                assert_media_flows(&ours, &peer, SrtpProfile::AeadAes128Gcm);
            }
        }
    }

    #[test]
    fn poll_timeout_is_a_second_out_and_nothing_fires_early() {
        let now = Instant::now();
        let cert = DtlsCertificate::generate().unwrap();
        let mut ours = DtlsEndpoint::new(DtlsRole::Client, &cert, cert.fingerprint(), now).unwrap();
        let first: Vec<_> = std::iter::from_fn(|| ours.poll_transmit()).collect();
        assert_eq!(first.len(), 1, "one ClientHello");
        let due = ours.poll_timeout().unwrap();
        assert_eq!(due, now + Duration::from_secs(1));
        ours.handle_timeout(now + Duration::from_millis(999))
            .unwrap();
        assert!(ours.poll_transmit().is_none());
        ours.handle_timeout(due).unwrap();
        assert!(ours.poll_transmit().is_some(), "ClientHello retransmitted");
    }

    #[test]
    fn unanswered_handshake_gives_up() {
        let mut now = Instant::now();
        let cert = DtlsCertificate::generate().unwrap();
        let mut ours = DtlsEndpoint::new(DtlsRole::Client, &cert, cert.fingerprint(), now).unwrap();
        let mut sent = 0;
        let mut result = Ok(());
        for _ in 0..20 {
            sent += std::iter::from_fn(|| ours.poll_transmit()).count();
            let Some(due) = ours.poll_timeout() else {
                break;
            };
            now = due;
            result = ours.handle_timeout(now);
            if result.is_err() {
                break;
            }
        }
        assert!(matches!(result, Err(DtlsError::Handshake(_))), "{result:?}");
        assert!(ours.is_closed());
        assert_eq!(ours.poll_timeout(), None);
        assert_eq!(sent, 8, "the ClientHello and 7 retransmissions");
    }

    #[test]
    fn server_without_client_hello_has_no_timer() {
        let now = Instant::now();
        let cert = DtlsCertificate::generate().unwrap();
        let mut ours = DtlsEndpoint::new(DtlsRole::Server, &cert, cert.fingerprint(), now).unwrap();
        assert_eq!(ours.poll_timeout(), None);
        ours.handle_timeout(now + Duration::from_secs(5)).unwrap();
        assert!(ours.poll_transmit().is_none());
        assert!(matches!(ours.srtp_keys(), Err(DtlsError::NotConnected)));
    }

    #[test]
    fn garbage_datagrams_are_errors_not_panics() {
        let now = Instant::now();
        for role in [DtlsRole::Client, DtlsRole::Server] {
            let cert = DtlsCertificate::generate().unwrap();
            let mut ours = DtlsEndpoint::new(role, &cert, cert.fingerprint(), now).unwrap();
            let cases: &[&[u8]] = &[
                &[],
                &[0],
                &[19, 0xFE, 0xFD],
                &[64; 20],
                &[0x80, 0x6F, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1],
                &[22],
                &[22, 0xFE, 0xFD, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                &[22, 0xFE, 0xFD, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                &[22, 0xFE, 0xFD, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 1, 2],
                &[22, 0x03, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1],
                &[30, 0xFE, 0xFD, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1],
                &[22, 0xFE, 0xFD, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 22],
            ];
            for case in cases {
                assert!(
                    matches!(
                        ours.handle_datagram(case, now),
                        Err(DtlsError::Malformed(_))
                    ),
                    "{case:?}"
                );
            }
            // Framing errors do not hurt the association.
            assert!(!ours.is_closed());
        }
    }

    /// A tiny deterministic generator, so the fuzz cases are the same on every run.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn mangled_handshake_datagrams_never_panic() {
        // Record the real datagrams of a handshake, then feed damaged copies to fresh endpoints.
        let now = Instant::now();
        let (mut ours, mut peer, cert) = pair(DtlsRole::Client, all_profiles(), now);
        let client_hello = ours.poll_transmit().unwrap();
        peer.receive(&client_hello, now);
        let peer_flights = peer.transmits();
        assert!(!peer_flights.is_empty());

        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for round in 0..400 {
            let source = if round % 2 == 0 {
                &client_hello
            } else {
                &peer_flights[round % peer_flights.len()]
            };
            let mut datagram = source.clone();
            match rng.next() % 3 {
                0 => datagram.truncate((rng.next() as usize) % datagram.len().max(1)),
                1 => {
                    for _ in 0..1 + rng.next() % 4 {
                        let i = (rng.next() as usize) % datagram.len();
                        datagram[i] ^= 1 << (rng.next() % 8);
                    }
                }
                _ => {
                    let i = 13 + (rng.next() as usize) % (datagram.len() - 13);
                    datagram[i] = rng.next() as u8;
                }
            }
            let role = if round % 2 == 0 {
                DtlsRole::Server
            } else {
                DtlsRole::Client
            };
            let mut target = DtlsEndpoint::new(role, &cert, &peer.fingerprint(), now).unwrap();
            let _ = target.handle_datagram(&datagram, now);
            while target.poll_transmit().is_some() {}
            let _ = target.handle_timeout(now + Duration::from_secs(1));
        }
    }

    fn mangle(datagram: &mut Vec<u8>, rng: &mut XorShift) {
        match rng.next() % 4 {
            0 => datagram.truncate((rng.next() as usize) % datagram.len().max(1)),
            1 => {
                for _ in 0..1 + rng.next() % 4 {
                    let i = (rng.next() as usize) % datagram.len();
                    datagram[i] ^= 1 << (rng.next() % 8);
                }
            }
            2 => {
                // Past the record header, where the handshake parsers work.
                let i = 13 + (rng.next() as usize) % datagram.len().saturating_sub(13).max(1);
                if let Some(byte) = datagram.get_mut(i) {
                    *byte = rng.next() as u8;
                }
            }
            _ => {
                let i = 13 + (rng.next() as usize) % datagram.len().saturating_sub(13).max(1);
                if let Some(byte) = datagram.get_mut(i) {
                    *byte = 0xFF;
                }
                if let Some(byte) = datagram.get_mut(i + 1) {
                    *byte = 0xFF;
                }
            }
        }
    }

    #[test]
    fn mangled_flights_mid_handshake_never_panic() {
        // A real handshake in which one datagram the peer sends us is damaged on the way, so
        // the damage reaches the parsers of every flight, not just the first.
        // DTLS_FUZZ_ROUNDS raises the count for a longer local run.
        let rounds: u64 = std::env::var("DTLS_FUZZ_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(60);
        let mut rng = XorShift(0xD1B5_4A32_D192_ED03);
        for round in 0..rounds {
            let role = if round % 2 == 0 {
                DtlsRole::Client
            } else {
                DtlsRole::Server
            };
            let mut now = Instant::now();
            let (mut ours, mut peer, _) = pair(role, all_profiles(), now);
            let target = rng.next() % 3;
            let mut received = 0;
            for _ in 0..30 {
                while let Some(datagram) = ours.poll_transmit() {
                    peer.receive(&datagram, now);
                }
                for mut datagram in peer.transmits() {
                    if received == target {
                        mangle(&mut datagram, &mut rng);
                    }
                    received += 1;
                    let _ = ours.handle_datagram(&datagram, now);
                }
                now += Duration::from_secs(1);
                let _ = ours.handle_timeout(now);
                peer.handle_timeout(now);
                if ours.is_closed() || (ours.is_connected() && peer.connected) {
                    break;
                }
            }
            if ours.is_connected() {
                // Whatever got through, a completed handshake has consistent keys.
                assert!(ours.srtp_keys().is_ok());
            }
        }
    }

    #[test]
    fn fingerprint_parsing() {
        let cert = DtlsCertificate::generate().unwrap();
        let fp = cert.fingerprint();
        assert!(fp.starts_with("sha-256 "));
        assert_eq!(fp.len(), "sha-256 ".len() + 32 * 3 - 1);
        let parsed = Fingerprint::parse(fp).unwrap();
        assert_eq!(parsed.algorithm, FingerprintAlgorithm::Sha256);
        assert!(parsed.matches(cert.certificate.certificate[0].as_ref()));
        // Case and surrounding whitespace do not matter.
        let lower = format!("  SHA-256\t{} ", fp["sha-256 ".len()..].to_lowercase());
        assert_eq!(Fingerprint::parse(&lower).unwrap(), parsed);

        let der = cert.certificate.certificate[0].as_ref();
        for (name, algorithm) in [
            ("sha-1", &ring::digest::SHA1_FOR_LEGACY_USE_ONLY),
            ("sha-384", &ring::digest::SHA384),
            ("sha-512", &ring::digest::SHA512),
        ] {
            let value = format!(
                "{name} {}",
                hex_colon(ring::digest::digest(algorithm, der).as_ref())
            );
            assert!(Fingerprint::parse(&value).unwrap().matches(der), "{name}");
        }

        assert!(matches!(
            Fingerprint::parse("md5 AA:BB"),
            Err(DtlsError::UnsupportedFingerprintAlgorithm(name)) if name == "md5"
        ));
        for bad in [
            "",
            "sha-256",
            "sha-256 AB:CD",
            "sha-256 AB:CD extra",
            &fp.replace(':', ""),
            &fp.replacen("sha-256 ", "sha-256 G", 1),
            &format!("{fp}:00"),
            &fp.replacen(':', "::", 1),
        ] {
            assert!(
                matches!(
                    Fingerprint::parse(bad),
                    Err(DtlsError::InvalidFingerprint(_))
                ),
                "{bad:?}"
            );
        }
        let cert_only = DtlsEndpoint::new(DtlsRole::Client, &cert, "sha-257 00", Instant::now());
        assert!(matches!(
            cert_only,
            Err(DtlsError::UnsupportedFingerprintAlgorithm(_))
        ));
    }

    #[test]
    fn certificate_is_ecdsa_p256_and_shared_across_legs() {
        use rtc_dtls::crypto_provider::SignatureScheme;
        let cert = DtlsCertificate::generate().unwrap();
        assert!(cert
            .certificate
            .private_key
            .signing_key
            .supports(SignatureScheme::EcdsaP256Sha256));
        assert!(format!("{cert:?}").contains(cert.fingerprint()));
        // Clones share the key, so every leg presents the same fingerprint.
        let clone = cert.clone();
        assert_eq!(clone.fingerprint(), cert.fingerprint());
        assert_eq!(clone.certificate, cert.certificate);
    }

    #[test]
    fn setup_roles() {
        assert_eq!(
            role_for_answer("actpass"),
            Some((DtlsRole::Client, "active"))
        );
        assert_eq!(
            role_for_answer(" ACTPASS\r"),
            Some((DtlsRole::Client, "active"))
        );
        assert_eq!(
            role_for_answer("passive"),
            Some((DtlsRole::Client, "active"))
        );
        assert_eq!(
            role_for_answer("active"),
            Some((DtlsRole::Server, "passive"))
        );
        assert_eq!(role_for_answer("holdconn"), None);
        assert_eq!(role_for_answer(""), None);
        assert_eq!(role_from_answer("active"), Some(DtlsRole::Server));
        assert_eq!(role_from_answer("passive"), Some(DtlsRole::Client));
        assert_eq!(role_from_answer("actpass"), None);
        assert_eq!(OFFER_SETUP, "actpass");
    }

    #[test]
    fn close_sends_close_notify_and_the_peer_sees_it() {
        let now = Instant::now();
        let (mut ours, mut peer, _) = pair(DtlsRole::Client, all_profiles(), now);
        drive(&mut ours, &mut peer, now, |_| false);
        assert!(ours.is_connected());
        let keys = ours.srtp_keys().unwrap();
        ours.close(now);
        assert!(ours.is_closed() && !ours.is_connected());
        let notify: Vec<_> = std::iter::from_fn(|| ours.poll_transmit()).collect();
        assert_eq!(notify.len(), 1);
        let events = peer
            .endpoint
            .read(now, GATEWAY_ADDR, None, BytesMut::from(&notify[0][..]))
            .unwrap();
        assert!(events
            .iter()
            .any(|e| matches!(e, EndpointEvent::PeerClosed)));
        // Keys taken before closing remain usable.
        assert!(SrtpSession::new(&keys).is_ok());
    }

    #[test]
    fn peer_close_notify_closes_us() {
        let now = Instant::now();
        let (mut ours, mut peer, _) = pair(DtlsRole::Server, all_profiles(), now);
        drive(&mut ours, &mut peer, now, |_| false);
        assert!(ours.is_connected());
        let _ = peer.endpoint.stop(now, GATEWAY_ADDR);
        for datagram in peer.transmits() {
            ours.handle_datagram(&datagram, now).unwrap();
        }
        assert!(ours.is_closed());
        assert!(matches!(ours.srtp_keys(), Err(DtlsError::NotConnected)));
    }

    #[test]
    fn types_cross_threads() {
        fn assert_send<T: Send>() {}
        assert_send::<DtlsEndpoint>();
        assert_send::<DtlsCertificate>();
        fn assert_sync<T: Sync>() {}
        assert_sync::<DtlsCertificate>();
    }

    #[test]
    fn a_reoffer_keeps_our_role_or_is_refused() {
        assert_eq!(
            keep_role(DtlsRole::Client, "actpass"),
            Some((DtlsRole::Client, "active"))
        );
        assert_eq!(
            keep_role(DtlsRole::Server, "actpass"),
            Some((DtlsRole::Server, "passive"))
        );
        assert_eq!(
            keep_role(DtlsRole::Server, "active"),
            Some((DtlsRole::Server, "passive"))
        );
        assert_eq!(keep_role(DtlsRole::Client, "active"), None);
        assert_eq!(keep_role(DtlsRole::Server, "passive"), None);
        assert_eq!(keep_role(DtlsRole::Client, "holdconn"), None);
    }
}
