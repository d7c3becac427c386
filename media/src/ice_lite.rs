//! ICE-lite responder for the browser legs (RFC 8445 §2.5, §7.3): answers the browser's STUN
//! connectivity checks, latches the media address on USE-CANDIDATE and tracks consent
//! (RFC 7675). It never sends checks of its own, which is what makes it "lite".
//!
//! Sans-IO: bytes, the source address and the time go in, the response bytes come out in a
//! buffer the worker owns. All STUN encoding, decoding, MESSAGE-INTEGRITY and FINGERPRINT work is
//! done by `rtc-stun`.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rtc_stun::attributes::{
    AttrType, RawAttribute, ATTR_FINGERPRINT, ATTR_MESSAGE_INTEGRITY, ATTR_PRIORITY, ATTR_USERNAME,
    ATTR_USE_CANDIDATE,
};
use rtc_stun::crypto::providers::RingCrypto;
use rtc_stun::error_code::{ErrorCodeAttribute, CODE_UNKNOWN_ATTRIBUTE};
use rtc_stun::fingerprint::FINGERPRINT;
use rtc_stun::integrity::MessageIntegrity;
use rtc_stun::message::{
    is_stun_message, Message, MessageType, Setter, BINDING_ERROR, BINDING_SUCCESS, CLASS_REQUEST,
    MESSAGE_HEADER_SIZE, METHOD_BINDING,
};
use rtc_stun::uattrs::UnknownAttributes;
use rtc_stun::xoraddr::XorMappedAddress;

/// rtc-stun's default provider (ring, with RustCrypto's SHA-1 for HMAC-SHA1). A static gives the
/// `'static` borrow `MessageIntegrity` needs, so the signing key is built once per leg instead of
/// once per response.
static CRYPTO: RingCrypto = RingCrypto;

/// RFC 8445 §5.3 ice-char: ALPHA / DIGIT / "+" / "/". Exactly 64 symbols, so a random byte masked
/// to 6 bits picks one uniformly.
const ICE_CHARS: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// 8 chars = 48 random bits: RFC 8445 asks for at least 24, and the worker demultiplexes all of
/// its legs by this value, so a wider space keeps collisions negligible.
const UFRAG_LEN: usize = 8;

/// 24 chars = 144 random bits (RFC 8445 §5.3: at least 128 bits, at least 22 chars).
const PWD_LEN: usize = 24;

/// RFC 7983: a first byte in 0..=3 is STUN; the RFC 5389 magic cookie is also required, so
/// classic RFC 3489 STUN and stray bytes in that range are not mistaken for it.
pub fn is_stun(packet: &[u8]) -> bool {
    matches!(packet.first(), Some(0..=3)) && is_stun_message(packet)
}

/// The local (our) ufrag from a Binding request's USERNAME "ours:theirs", without verifying
/// integrity: the worker uses it to find which leg a packet from an unknown address belongs to,
/// and the leg's [`IceLite::handle`] then authenticates it. `None` if the packet is not a
/// parseable Binding request with such a USERNAME.
pub fn local_ufrag(packet: &[u8]) -> Option<String> {
    if !is_stun(packet) {
        return None;
    }
    let mut m = Message::default();
    m.unmarshal_binary(packet).ok()?;
    if m.typ != MessageType::new(METHOD_BINDING, CLASS_REQUEST) {
        return None;
    }
    let username = authenticated_part(&m.attributes.0)
        .iter()
        .find(|a| a.typ == ATTR_USERNAME)?;
    let (ours, _) = split_username(&username.value)?;
    let ours = std::str::from_utf8(ours).ok()?;
    (!ours.is_empty()).then(|| ours.to_owned())
}

/// Fresh local credentials `(ufrag, pwd)` from the ice-char set (RFC 8445 §5.3), drawn from the
/// thread's CSPRNG.
pub fn random_credentials() -> (String, String) {
    let mut bytes = [0u8; UFRAG_LEN + PWD_LEN];
    rand::fill(&mut bytes[..]);
    let chars: String = bytes
        .iter()
        .map(|b| char::from(ICE_CHARS[usize::from(b & 0x3f)]))
        .collect();
    let (ufrag, pwd) = chars.split_at(UFRAG_LEN);
    (ufrag.to_owned(), pwd.to_owned())
}

/// Why a STUN packet was not answered. Apart from [`IceError::Internal`] these are all the
/// peer's doing, and the packet is dropped without a response.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum IceError {
    /// Not a STUN packet (RFC 7983 range or magic cookie).
    #[error("not a STUN packet")]
    NotStun,
    /// A STUN message of another method (e.g. a TURN request).
    #[error("not a STUN Binding request")]
    NotBindingRequest,
    /// A Binding request without USERNAME.
    #[error("binding request without USERNAME")]
    MissingUsername,
    /// USERNAME is not `<our ufrag>:<their ufrag>`.
    #[error("USERNAME does not match this leg's credentials")]
    WrongUsername,
    /// A Binding request without MESSAGE-INTEGRITY.
    #[error("binding request without MESSAGE-INTEGRITY")]
    MissingIntegrity,
    /// MESSAGE-INTEGRITY does not verify with our password.
    #[error("MESSAGE-INTEGRITY does not verify")]
    BadIntegrity,
    /// FINGERPRINT is wrong or not the last attribute.
    #[error("FINGERPRINT does not verify")]
    BadFingerprint,
    /// The STUN message does not decode.
    #[error("malformed STUN message: {0}")]
    Malformed(String),
    /// Encoding our response failed (a crypto provider error); not the peer's fault.
    #[error("cannot encode the STUN response: {0}")]
    Internal(String),
}

/// What [`IceLite::handle`] did with a valid STUN packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StunOutcome {
    /// A response was written to `out`; send it back to the source address. `nominated` is true
    /// when the request carried USE-CANDIDATE and its source is now the selected address
    /// (compare [`IceLite::selected`] before and after to see whether it changed).
    Respond {
        /// USE-CANDIDATE was present and `from` got selected.
        nominated: bool,
    },
    /// A Binding response or indication (keepalive); nothing to send.
    Ignored,
}

/// The remote side's ICE credentials from its SDP.
struct RemoteCredentials {
    ufrag: String,
    pwd: String,
}

/// The ICE-lite state of one browser leg: our credentials, the browser's, the selected address
/// and when consent was last refreshed.
pub struct IceLite {
    local_ufrag: String,
    local_pwd: String,
    remote: Option<RemoteCredentials>,
    /// Signs every response; holds its own copy of `local_pwd` as the HMAC key.
    integrity: MessageIntegrity<'static>,
    selected: Option<SocketAddr>,
    /// Last valid check from `selected`; always `Some` when `selected` is.
    consent_at: Option<Instant>,
    /// Reused for every request so its buffers keep their capacity.
    request: Message,
    /// Reused for every response; its `raw` is swapped with the caller's `out` while encoding.
    response: Message,
}

impl fmt::Debug for IceLite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Passwords stay out of logs.
        f.debug_struct("IceLite")
            .field("local_ufrag", &self.local_ufrag)
            .field(
                "remote_ufrag",
                &self.remote.as_ref().map(|r| r.ufrag.as_str()),
            )
            .field("selected", &self.selected)
            .field("consent_at", &self.consent_at)
            .finish_non_exhaustive()
    }
}

impl IceLite {
    /// A responder for one leg with our credentials (put the same ones in our SDP); see
    /// [`random_credentials`]. The ufrag must be unique among the legs sharing a socket.
    pub fn new(local_ufrag: String, local_pwd: String) -> Self {
        let integrity =
            MessageIntegrity::new_short_term_integrity_with_provider(local_pwd.clone(), &CRYPTO);
        IceLite {
            local_ufrag,
            local_pwd,
            remote: None,
            integrity,
            selected: None,
            consent_at: None,
            request: Message::default(),
            response: Message::default(),
        }
    }

    /// New credentials of ours (an ICE restart, RFC 8445 §9): checks signed with the old
    /// password fail from now on. The selected address and its consent stay until the
    /// browser nominates again with the new ones.
    pub fn set_local_credentials(&mut self, ufrag: String, pwd: String) {
        self.integrity =
            MessageIntegrity::new_short_term_integrity_with_provider(pwd.clone(), &CRYPTO);
        self.local_ufrag = ufrag;
        self.local_pwd = pwd;
    }

    /// Our ufrag, as put in our SDP.
    pub fn local_ufrag(&self) -> &str {
        &self.local_ufrag
    }

    /// Our password, as put in our SDP.
    pub fn local_pwd(&self) -> &str {
        &self.local_pwd
    }

    /// The browser's credentials from its SDP (`a=ice-ufrag`/`a=ice-pwd`). Until they are set,
    /// checks are still answered when USERNAME's first part matches ours, because when we made
    /// the offer the browser may check before its answer reaches us (RFC 8445 §7.3 lets an
    /// agent answer checks before it has the peer's SDP); the remote part is then not verified.
    /// Setting them again (ICE restart) replaces them.
    pub fn set_remote_credentials(&mut self, ufrag: &str, pwd: &str) {
        self.remote = Some(RemoteCredentials {
            ufrag: ufrag.to_owned(),
            pwd: pwd.to_owned(),
        });
    }

    /// The browser's `(ufrag, pwd)` if known, e.g. to detect an ICE restart in a new offer. A
    /// lite agent sends no checks, so the password itself is never used here.
    pub fn remote_credentials(&self) -> Option<(&str, &str)> {
        self.remote
            .as_ref()
            .map(|r| (r.ufrag.as_str(), r.pwd.as_str()))
    }

    /// Handles one STUN packet from `from` at `now`. `out` is cleared, and holds the response
    /// when the outcome is [`StunOutcome::Respond`]; its allocation is reused across calls.
    ///
    /// A Binding request must carry USERNAME `<our ufrag>:<their ufrag>` and MESSAGE-INTEGRITY
    /// keyed with our password (short-term credentials); FINGERPRINT is checked when present.
    /// The answer is a Binding success response with the same transaction id, XOR-MAPPED-ADDRESS
    /// = `from`, MESSAGE-INTEGRITY and FINGERPRINT. USE-CANDIDATE makes `from` the selected
    /// address, and a later nomination from elsewhere (TURN relay or network change) switches to
    /// it. A valid check from the selected address refreshes consent.
    ///
    /// Invalid requests return an error and write nothing. RFC 5389 §10.1.2 would answer 400 or
    /// 401, but for ICE short-term credentials browsers, libnice and Janus silently discard, and
    /// so do we: an unauthenticated peer learns nothing and gets no reflected traffic.
    pub fn handle(
        &mut self,
        packet: &[u8],
        from: SocketAddr,
        now: Instant,
        out: &mut Vec<u8>,
    ) -> Result<StunOutcome, IceError> {
        out.clear();
        if !is_stun(packet) {
            return Err(IceError::NotStun);
        }
        self.request
            .unmarshal_binary(packet)
            .map_err(|e| IceError::Malformed(e.to_string()))?;
        // Over UDP a datagram is exactly one message, and rtc-stun's FINGERPRINT check assumes
        // the message ends the buffer, so trailing bytes must not get that far.
        if MESSAGE_HEADER_SIZE + self.request.length as usize != packet.len() {
            return Err(IceError::Malformed(format!(
                "{} bytes after the message",
                packet
                    .len()
                    .saturating_sub(MESSAGE_HEADER_SIZE + self.request.length as usize)
            )));
        }
        if self.request.typ.method != METHOD_BINDING {
            return Err(IceError::NotBindingRequest);
        }
        if self.request.typ.class != CLASS_REQUEST {
            // Indications are the browser's keepalives; responses answer requests we never
            // send. Neither needs anything from us.
            return Ok(StunOutcome::Ignored);
        }

        let check = self.inspect_request()?;
        // Checked after USERNAME, as RFC 5389 §10.1.2 orders it, so an unknown username costs
        // no HMAC.
        MessageIntegrity::check(&mut self.request, self.local_pwd.as_bytes(), &CRYPTO)
            .map_err(|_| IceError::BadIntegrity)?;

        if let Some(unknown) = check.unknown {
            // RFC 5389 §7.3.1: an unknown comprehension-required attribute gets a 420 and the
            // request is not processed further (no nomination, no consent).
            self.encode(out, |m, integrity| {
                m.typ = BINDING_ERROR;
                m.write_header();
                ErrorCodeAttribute {
                    code: CODE_UNKNOWN_ATTRIBUTE,
                    reason: b"Unknown Attribute".to_vec(),
                }
                .add_to(m)?;
                UnknownAttributes(unknown).add_to(m)?;
                integrity.add_to(m)?;
                FINGERPRINT.add_to(m)
            })?;
            return Ok(StunOutcome::Respond { nominated: false });
        }

        // A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; the browser sent to our
        // IPv4 address and expects to see its IPv4 address mapped back.
        let mapped = XorMappedAddress {
            ip: from.ip().to_canonical(),
            port: from.port(),
        };
        self.encode(out, |m, integrity| {
            m.typ = BINDING_SUCCESS;
            m.write_header();
            mapped.add_to(m)?;
            integrity.add_to(m)?;
            FINGERPRINT.add_to(m)
        })?;

        // RFC 7675 has the sender of checks judge consent from their responses; as a lite
        // agent we send none, so the browser's own authenticated checks (it sends them at
        // least every few seconds as consent checks) are our evidence that it is still there.
        if check.use_candidate {
            self.selected = Some(from);
            self.consent_at = Some(now);
        } else if self.selected == Some(from) {
            self.consent_at = Some(now);
        }
        Ok(StunOutcome::Respond {
            nominated: check.use_candidate,
        })
    }

    /// The address media goes to: the source of the latest nominating check.
    pub fn selected(&self) -> Option<SocketAddr> {
        self.selected
    }

    /// RFC 7675: consent is lost when no valid check came from the selected address for
    /// `timeout` (the gateway uses 30 s). False while nothing is selected: how long a leg may
    /// wait for its first nomination is the worker's setup timeout, not consent.
    pub fn consent_expired(&self, now: Instant, timeout: Duration) -> bool {
        match (self.selected, self.consent_at) {
            (Some(_), Some(at)) => now.saturating_duration_since(at) >= timeout,
            _ => false,
        }
    }

    /// The checks that need only the decoded request: FINGERPRINT, USERNAME, presence of
    /// MESSAGE-INTEGRITY, and the attributes that matter for the answer.
    fn inspect_request(&self) -> Result<RequestCheck, IceError> {
        let attrs = &self.request.attributes.0;
        if let Some(i) = attrs.iter().position(|a| a.typ == ATTR_FINGERPRINT) {
            if i + 1 != attrs.len() {
                return Err(IceError::BadFingerprint);
            }
            FINGERPRINT
                .check(&self.request)
                .map_err(|_| IceError::BadFingerprint)?;
        }
        let signed = authenticated_part(attrs);
        let username = signed
            .iter()
            .find(|a| a.typ == ATTR_USERNAME)
            .ok_or(IceError::MissingUsername)?;
        if signed.len() == attrs.len() {
            return Err(IceError::MissingIntegrity);
        }
        let (ours, theirs) = split_username(&username.value).ok_or(IceError::WrongUsername)?;
        let theirs_ok = match &self.remote {
            Some(remote) => theirs == remote.ufrag.as_bytes(),
            None => true,
        };
        if ours != self.local_ufrag.as_bytes() || !theirs_ok {
            return Err(IceError::WrongUsername);
        }

        let mut use_candidate = false;
        let mut unknown: Option<Vec<AttrType>> = None;
        for a in signed {
            match a.typ {
                ATTR_USE_CANDIDATE => use_candidate = true,
                // PRIORITY only matters to an agent that forms pairs (a full agent's
                // peer-reflexive candidates); USERNAME is checked above.
                ATTR_USERNAME | ATTR_PRIORITY => {}
                // ICE-CONTROLLING and ICE-CONTROLLED are comprehension-optional and fall through
                // here too: a lite agent is always controlled (RFC 8445 §6.1.1) and does no role
                // conflict resolution, so even a peer that claims ICE-CONTROLLED is answered.
                // Browser extensions (GOOG-NETWORK-INFO and the like) are ignored likewise.
                t if t.optional() => {}
                t => unknown.get_or_insert_with(Vec::new).push(t),
            }
        }
        Ok(RequestCheck {
            use_candidate,
            unknown,
        })
    }

    /// Encodes a response to the current request straight into the caller's buffer: `out`'s
    /// allocation is lent to the reused response message for the duration. `body` sets the
    /// type, writes the header and adds the attributes.
    ///
    /// `E` is rtc-stun's error type, which it does not re-export; inferring it spares a direct
    /// dependency on rtc-shared.
    fn encode<E: fmt::Display>(
        &mut self,
        out: &mut Vec<u8>,
        body: impl FnOnce(&mut Message, &MessageIntegrity<'static>) -> Result<(), E>,
    ) -> Result<(), IceError> {
        std::mem::swap(out, &mut self.response.raw);
        self.response.reset();
        self.response.transaction_id = self.request.transaction_id;
        let result = body(&mut self.response, &self.integrity);
        std::mem::swap(out, &mut self.response.raw);
        result.map_err(|e| {
            out.clear();
            IceError::Internal(e.to_string())
        })
    }
}

/// What [`IceLite::inspect_request`] found in an acceptable request.
struct RequestCheck {
    use_candidate: bool,
    /// Unknown comprehension-required attributes, if any (rare, so allocated only then).
    unknown: Option<Vec<AttrType>>,
}

/// The attributes before MESSAGE-INTEGRITY: RFC 5389 §15.4 says to ignore everything after it
/// but FINGERPRINT, which keeps an on-path attacker from appending e.g. USE-CANDIDATE to a
/// captured check.
fn authenticated_part(attrs: &[RawAttribute]) -> &[RawAttribute] {
    let end = attrs
        .iter()
        .position(|a| a.typ == ATTR_MESSAGE_INTEGRITY)
        .unwrap_or(attrs.len());
    &attrs[..end]
}

/// Splits USERNAME "ours:theirs" (RFC 8445 §7.2.2, from the receiver's side) at the first colon;
/// ufrags are ice-chars, which exclude ':'.
fn split_username(value: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = value.iter().position(|&b| b == b':')?;
    Some((&value[..colon], &value[colon + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc_stun::attributes::{
        ATTR_ERROR_CODE, ATTR_ICE_CONTROLLED, ATTR_ICE_CONTROLLING, ATTR_NETWORK_COST,
        ATTR_UNKNOWN_ATTRIBUTES, ATTR_XORMAPPED_ADDRESS,
    };
    use rtc_stun::message::{
        Getter, TransactionId, BINDING_REQUEST, CLASS_ERROR_RESPONSE, CLASS_INDICATION,
        CLASS_SUCCESS_RESPONSE, METHOD_ALLOCATE,
    };
    use rtc_stun::textattrs::Username;

    const OUR_UFRAG: &str = "ourUfrag";
    const OUR_PWD: &str = "ourPasswordOurPassword24";
    const THEIR_UFRAG: &str = "Th1r";
    const THEIR_PWD: &str = "theirPasswordTheirPassw";

    fn browser() -> SocketAddr {
        "198.51.100.7:54321".parse().unwrap()
    }

    fn other() -> SocketAddr {
        "203.0.113.9:3478".parse().unwrap()
    }

    fn lite() -> IceLite {
        IceLite::new(OUR_UFRAG.into(), OUR_PWD.into())
    }

    fn attr(typ: AttrType, value: &[u8]) -> RawAttribute {
        RawAttribute {
            typ,
            length: 0,
            value: value.to_vec(),
        }
    }

    /// What the request under test looks like; defaults to a browser's nominating check.
    struct Req {
        typ: MessageType,
        username: Option<String>,
        pwd: Option<&'static str>,
        use_candidate: bool,
        role: AttrType,
        extra: Vec<RawAttribute>,
        after_integrity: Vec<RawAttribute>,
        fingerprint: bool,
    }

    impl Default for Req {
        fn default() -> Self {
            Req {
                typ: BINDING_REQUEST,
                username: Some(format!("{OUR_UFRAG}:{THEIR_UFRAG}")),
                pwd: Some(OUR_PWD),
                use_candidate: false,
                role: ATTR_ICE_CONTROLLING,
                extra: Vec::new(),
                after_integrity: Vec::new(),
                fingerprint: true,
            }
        }
    }

    impl Req {
        fn nominating() -> Self {
            Req {
                use_candidate: true,
                ..Req::default()
            }
        }

        /// Builds it the way a browser does: USERNAME, ICE-CONTROLLING, PRIORITY,
        /// [USE-CANDIDATE], MESSAGE-INTEGRITY, FINGERPRINT.
        fn build(&self) -> (Vec<u8>, TransactionId) {
            let tid = TransactionId::new();
            let mut m = Message::new();
            m.build(&[Box::new(self.typ), Box::new(tid)]).unwrap();
            if let Some(u) = &self.username {
                Username::new(ATTR_USERNAME, u.clone())
                    .add_to(&mut m)
                    .unwrap();
            }
            attr(self.role, &0x0123_4567_89ab_cdef_u64.to_be_bytes())
                .add_to(&mut m)
                .unwrap();
            attr(ATTR_PRIORITY, &0x6e7f_1eff_u32.to_be_bytes())
                .add_to(&mut m)
                .unwrap();
            if self.use_candidate {
                attr(ATTR_USE_CANDIDATE, &[]).add_to(&mut m).unwrap();
            }
            for a in &self.extra {
                a.add_to(&mut m).unwrap();
            }
            if let Some(pwd) = self.pwd {
                MessageIntegrity::new_short_term_integrity_with_provider(pwd.into(), &CRYPTO)
                    .add_to(&mut m)
                    .unwrap();
            }
            for a in &self.after_integrity {
                a.add_to(&mut m).unwrap();
            }
            if self.fingerprint {
                FINGERPRINT.add_to(&mut m).unwrap();
            }
            (m.raw, tid)
        }

        fn bytes(&self) -> Vec<u8> {
            self.build().0
        }
    }

    fn decode(bytes: &[u8]) -> Message {
        let mut m = Message::new();
        m.unmarshal_binary(bytes).unwrap();
        m
    }

    fn mapped_address(m: &Message) -> SocketAddr {
        let mut xor = XorMappedAddress::default();
        xor.get_from(m).unwrap();
        SocketAddr::new(xor.ip, xor.port)
    }

    fn assert_signed_by_us(m: &mut Message) {
        MessageIntegrity::check(m, OUR_PWD.as_bytes(), &CRYPTO).unwrap();
        FINGERPRINT.check(m).unwrap();
        assert!(MessageIntegrity::check(m, THEIR_PWD.as_bytes(), &CRYPTO).is_err());
    }

    #[test]
    fn good_check_is_answered() {
        let mut ice = lite();
        let (req, tid) = Req::default().build();
        let mut out = Vec::new();
        let outcome = ice.handle(&req, browser(), Instant::now(), &mut out);
        assert_eq!(outcome, Ok(StunOutcome::Respond { nominated: false }));

        assert!(is_stun(&out));
        let mut resp = decode(&out);
        assert_eq!(resp.typ, BINDING_SUCCESS);
        assert_eq!(resp.typ.class, CLASS_SUCCESS_RESPONSE);
        assert_eq!(resp.transaction_id, tid);
        assert_eq!(mapped_address(&resp), browser());
        assert_signed_by_us(&mut resp);
        let order: Vec<AttrType> = resp.attributes.0.iter().map(|a| a.typ).collect();
        assert_eq!(
            order,
            [
                ATTR_XORMAPPED_ADDRESS,
                ATTR_MESSAGE_INTEGRITY,
                ATTR_FINGERPRINT
            ]
        );
        // Not nominated: nothing selected yet.
        assert_eq!(ice.selected(), None);
    }

    #[test]
    fn ipv6_source_is_mapped_back() {
        let mut ice = lite();
        let from: SocketAddr = "[2001:db8::1]:40000".parse().unwrap();
        let mut out = Vec::new();
        ice.handle(&Req::default().bytes(), from, Instant::now(), &mut out)
            .unwrap();
        let mut resp = decode(&out);
        assert_eq!(mapped_address(&resp), from);
        assert_signed_by_us(&mut resp);
    }

    #[test]
    fn v4_mapped_source_is_answered_as_ipv4_but_latched_as_is() {
        let mut ice = lite();
        let from: SocketAddr = "[::ffff:198.51.100.7]:54321".parse().unwrap();
        let mut out = Vec::new();
        ice.handle(&Req::nominating().bytes(), from, Instant::now(), &mut out)
            .unwrap();
        assert_eq!(mapped_address(&decode(&out)), browser());
        assert_eq!(ice.selected(), Some(from));
    }

    #[test]
    fn request_without_fingerprint_is_answered() {
        let mut ice = lite();
        let req = Req {
            fingerprint: false,
            ..Req::default()
        };
        let mut out = Vec::new();
        let outcome = ice.handle(&req.bytes(), browser(), Instant::now(), &mut out);
        assert_eq!(outcome, Ok(StunOutcome::Respond { nominated: false }));
        assert_signed_by_us(&mut decode(&out));
    }

    #[test]
    fn bad_integrity_is_dropped_silently() {
        let mut ice = lite();
        let req = Req {
            pwd: Some(THEIR_PWD),
            ..Req::nominating()
        };
        let mut out = b"stale bytes from the last packet".to_vec();
        let outcome = ice.handle(&req.bytes(), browser(), Instant::now(), &mut out);
        assert_eq!(outcome, Err(IceError::BadIntegrity));
        assert!(out.is_empty());
        assert_eq!(ice.selected(), None);
    }

    #[test]
    fn tampered_request_fails_integrity() {
        let mut ice = lite();
        let req = Req {
            fingerprint: false,
            ..Req::default()
        };
        let mut bytes = req.bytes();
        // Last byte of PRIORITY, which MESSAGE-INTEGRITY covers.
        let priority_end = bytes.len() - 24;
        bytes[priority_end - 1] ^= 1;
        let mut out = Vec::new();
        let outcome = ice.handle(&bytes, browser(), Instant::now(), &mut out);
        assert_eq!(outcome, Err(IceError::BadIntegrity));
        assert!(out.is_empty());
    }

    #[test]
    fn bad_fingerprint_is_rejected() {
        let mut ice = lite();
        let mut bytes = Req::default().bytes();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        let mut out = Vec::new();
        let outcome = ice.handle(&bytes, browser(), Instant::now(), &mut out);
        assert_eq!(outcome, Err(IceError::BadFingerprint));
        assert!(out.is_empty());
    }

    #[test]
    fn fingerprint_not_last_is_rejected() {
        let mut ice = lite();
        let mut m = decode(&Req::default().bytes());
        attr(AttrType(0x8055), &[1, 2, 3, 4])
            .add_to(&mut m)
            .unwrap();
        let mut out = Vec::new();
        let outcome = ice.handle(&m.raw, browser(), Instant::now(), &mut out);
        assert_eq!(outcome, Err(IceError::BadFingerprint));
    }

    #[test]
    fn wrong_local_ufrag_is_rejected() {
        let mut ice = lite();
        let req = Req {
            username: Some(format!("someoneElse:{THEIR_UFRAG}")),
            ..Req::nominating()
        };
        let mut out = Vec::new();
        let outcome = ice.handle(&req.bytes(), browser(), Instant::now(), &mut out);
        assert_eq!(outcome, Err(IceError::WrongUsername));
        assert!(out.is_empty());
        assert_eq!(ice.selected(), None);
    }

    #[test]
    fn username_without_colon_is_rejected() {
        let mut ice = lite();
        let req = Req {
            username: Some(OUR_UFRAG.into()),
            ..Req::default()
        };
        let mut out = Vec::new();
        let outcome = ice.handle(&req.bytes(), browser(), Instant::now(), &mut out);
        assert_eq!(outcome, Err(IceError::WrongUsername));
    }

    #[test]
    fn remote_ufrag_is_checked_once_known() {
        let mut ice = lite();
        let stranger = Req {
            username: Some(format!("{OUR_UFRAG}:zzzz")),
            ..Req::default()
        };
        let mut out = Vec::new();
        // Before the browser's SDP is known, any remote part is accepted.
        assert!(ice
            .handle(&stranger.bytes(), browser(), Instant::now(), &mut out)
            .is_ok());

        ice.set_remote_credentials(THEIR_UFRAG, THEIR_PWD);
        assert_eq!(ice.remote_credentials(), Some((THEIR_UFRAG, THEIR_PWD)));
        let outcome = ice.handle(&stranger.bytes(), browser(), Instant::now(), &mut out);
        assert_eq!(outcome, Err(IceError::WrongUsername));
        assert!(out.is_empty());

        let outcome = ice.handle(&Req::default().bytes(), browser(), Instant::now(), &mut out);
        assert_eq!(outcome, Ok(StunOutcome::Respond { nominated: false }));
    }

    #[test]
    fn missing_integrity_is_rejected() {
        let mut ice = lite();
        let req = Req {
            pwd: None,
            ..Req::nominating()
        };
        let mut out = Vec::new();
        let outcome = ice.handle(&req.bytes(), browser(), Instant::now(), &mut out);
        assert_eq!(outcome, Err(IceError::MissingIntegrity));
        assert!(out.is_empty());
        assert_eq!(ice.selected(), None);
    }

    #[test]
    fn missing_username_is_rejected() {
        let mut ice = lite();
        let req = Req {
            username: None,
            ..Req::default()
        };
        let mut out = Vec::new();
        let outcome = ice.handle(&req.bytes(), browser(), Instant::now(), &mut out);
        assert_eq!(outcome, Err(IceError::MissingUsername));
    }

    #[test]
    fn username_after_integrity_does_not_count() {
        let mut ice = lite();
        let req = Req {
            username: None,
            after_integrity: vec![attr(
                ATTR_USERNAME,
                format!("{OUR_UFRAG}:{THEIR_UFRAG}").as_bytes(),
            )],
            ..Req::default()
        };
        let mut out = Vec::new();
        let outcome = ice.handle(&req.bytes(), browser(), Instant::now(), &mut out);
        assert_eq!(outcome, Err(IceError::MissingUsername));
    }

    #[test]
    fn use_candidate_latches_and_later_nomination_switches() {
        let mut ice = lite();
        let now = Instant::now();
        let mut out = Vec::new();

        let outcome = ice.handle(&Req::nominating().bytes(), browser(), now, &mut out);
        assert_eq!(outcome, Ok(StunOutcome::Respond { nominated: true }));
        assert_eq!(ice.selected(), Some(browser()));

        // A plain check from elsewhere is answered but does not move media.
        let outcome = ice.handle(&Req::default().bytes(), other(), now, &mut out);
        assert_eq!(outcome, Ok(StunOutcome::Respond { nominated: false }));
        assert_eq!(mapped_address(&decode(&out)), other());
        assert_eq!(ice.selected(), Some(browser()));

        // A nomination from elsewhere (TURN relay, network change) does.
        let outcome = ice.handle(&Req::nominating().bytes(), other(), now, &mut out);
        assert_eq!(outcome, Ok(StunOutcome::Respond { nominated: true }));
        assert_eq!(ice.selected(), Some(other()));
    }

    #[test]
    fn use_candidate_after_integrity_is_ignored() {
        let mut ice = lite();
        let req = Req {
            after_integrity: vec![attr(ATTR_USE_CANDIDATE, &[])],
            ..Req::default()
        };
        let mut out = Vec::new();
        let outcome = ice.handle(&req.bytes(), other(), Instant::now(), &mut out);
        assert_eq!(outcome, Ok(StunOutcome::Respond { nominated: false }));
        assert_eq!(ice.selected(), None);
    }

    #[test]
    fn consent_expires_without_checks_and_is_refreshed_by_them() {
        let timeout = Duration::from_secs(30);
        let t0 = Instant::now();
        let mut ice = lite();
        let mut out = Vec::new();
        // Nothing selected yet: no consent to lose.
        assert!(!ice.consent_expired(t0 + timeout * 10, timeout));

        ice.handle(&Req::nominating().bytes(), browser(), t0, &mut out)
            .unwrap();
        assert!(!ice.consent_expired(t0 + Duration::from_secs(29), timeout));
        assert!(ice.consent_expired(t0 + timeout, timeout));

        // A plain check from the selected address refreshes it.
        let t1 = t0 + Duration::from_secs(20);
        ice.handle(&Req::default().bytes(), browser(), t1, &mut out)
            .unwrap();
        assert!(!ice.consent_expired(t0 + Duration::from_secs(45), timeout));
        assert!(ice.consent_expired(t1 + timeout, timeout));

        // Checks from another address, invalid checks and indications do not.
        let t2 = t1 + Duration::from_secs(25);
        ice.handle(&Req::default().bytes(), other(), t2, &mut out)
            .unwrap();
        let forged = Req {
            pwd: Some(THEIR_PWD),
            ..Req::default()
        };
        assert!(ice
            .handle(&forged.bytes(), browser(), t2, &mut out)
            .is_err());
        let keepalive = Req {
            typ: MessageType::new(METHOD_BINDING, CLASS_INDICATION),
            ..Req::default()
        };
        assert_eq!(
            ice.handle(&keepalive.bytes(), browser(), t2, &mut out),
            Ok(StunOutcome::Ignored)
        );
        assert!(ice.consent_expired(t1 + timeout, timeout));

        // A time before the last check (out-of-order clocks) does not underflow.
        assert!(!ice.consent_expired(t0, timeout));
    }

    #[test]
    fn peer_claiming_controlled_is_still_answered() {
        let mut ice = lite();
        let req = Req {
            role: ATTR_ICE_CONTROLLED,
            ..Req::nominating()
        };
        let mut out = Vec::new();
        let outcome = ice.handle(&req.bytes(), browser(), Instant::now(), &mut out);
        assert_eq!(outcome, Ok(StunOutcome::Respond { nominated: true }));
        assert_eq!(decode(&out).typ, BINDING_SUCCESS);
    }

    #[test]
    fn unknown_optional_attributes_are_ignored() {
        let mut ice = lite();
        let req = Req {
            extra: vec![
                attr(ATTR_NETWORK_COST, &[0, 1, 0, 10]),
                attr(AttrType(0xC059), b"x"),
            ],
            ..Req::nominating()
        };
        let mut out = Vec::new();
        let outcome = ice.handle(&req.bytes(), browser(), Instant::now(), &mut out);
        assert_eq!(outcome, Ok(StunOutcome::Respond { nominated: true }));
    }

    #[test]
    fn unknown_required_attribute_gets_420() {
        let mut ice = lite();
        let (req, tid) = Req {
            extra: vec![attr(AttrType(0x7F01), &[9, 9, 9, 9])],
            ..Req::nominating()
        }
        .build();
        let mut out = Vec::new();
        let outcome = ice.handle(&req, browser(), Instant::now(), &mut out);
        assert_eq!(outcome, Ok(StunOutcome::Respond { nominated: false }));
        assert_eq!(ice.selected(), None);

        let mut resp = decode(&out);
        assert_eq!(resp.typ, BINDING_ERROR);
        assert_eq!(resp.typ.class, CLASS_ERROR_RESPONSE);
        assert_eq!(resp.transaction_id, tid);
        let mut code = ErrorCodeAttribute::default();
        code.get_from(&resp).unwrap();
        assert_eq!(code.code.0, CODE_UNKNOWN_ATTRIBUTE.0);
        let mut unknown = UnknownAttributes(Vec::new());
        unknown.get_from(&resp).unwrap();
        assert_eq!(unknown.0, [AttrType(0x7F01)]);
        assert!(resp.contains(ATTR_ERROR_CODE) && resp.contains(ATTR_UNKNOWN_ATTRIBUTES));
        assert_signed_by_us(&mut resp);
    }

    #[test]
    fn responses_and_indications_are_ignored() {
        let mut ice = lite();
        let mut out = Vec::new();
        for class in [
            CLASS_INDICATION,
            CLASS_SUCCESS_RESPONSE,
            CLASS_ERROR_RESPONSE,
        ] {
            let req = Req {
                typ: MessageType::new(METHOD_BINDING, class),
                ..Req::nominating()
            };
            let outcome = ice.handle(&req.bytes(), browser(), Instant::now(), &mut out);
            assert_eq!(outcome, Ok(StunOutcome::Ignored));
            assert!(out.is_empty());
        }
        assert_eq!(ice.selected(), None);
    }

    #[test]
    fn other_methods_are_rejected() {
        let mut ice = lite();
        let req = Req {
            typ: MessageType::new(METHOD_ALLOCATE, CLASS_REQUEST),
            ..Req::default()
        };
        let mut out = Vec::new();
        let outcome = ice.handle(&req.bytes(), browser(), Instant::now(), &mut out);
        assert_eq!(outcome, Err(IceError::NotBindingRequest));
    }

    #[test]
    fn non_stun_is_rejected() {
        let mut ice = lite();
        let mut out = Vec::new();
        for packet in [rtp_packet(), dtls_packet(), Vec::new()] {
            let outcome = ice.handle(&packet, browser(), Instant::now(), &mut out);
            assert_eq!(outcome, Err(IceError::NotStun));
        }
    }

    #[test]
    fn trailing_bytes_are_malformed() {
        let mut ice = lite();
        let mut bytes = Req::default().bytes();
        bytes.extend_from_slice(&[0; 8]);
        let mut out = Vec::new();
        let outcome = ice.handle(&bytes, browser(), Instant::now(), &mut out);
        assert!(
            matches!(outcome, Err(IceError::Malformed(_))),
            "{outcome:?}"
        );
    }

    #[test]
    fn output_buffer_is_reused() {
        let mut ice = lite();
        let mut out = Vec::with_capacity(512);
        let ptr = out.as_ptr();
        for _ in 0..3 {
            ice.handle(&Req::default().bytes(), browser(), Instant::now(), &mut out)
                .unwrap();
            assert_eq!(out.as_ptr(), ptr);
            assert_eq!(out.capacity(), 512);
        }
    }

    fn rtp_packet() -> Vec<u8> {
        let mut p = vec![0x80, 0x00, 0x12, 0x34, 0, 0, 0, 160, 0xde, 0xad, 0xbe, 0xef];
        p.extend_from_slice(&[0xd5; 160]);
        p
    }

    fn dtls_packet() -> Vec<u8> {
        // A ClientHello record header: content type 22, DTLS 1.2, then a body.
        let mut p = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 60];
        p.extend_from_slice(&[0x21; 60]);
        p
    }

    #[test]
    fn demultiplexing_helpers() {
        let check = Req::default().bytes();
        assert!(is_stun(&check));
        assert_eq!(local_ufrag(&check).as_deref(), Some(OUR_UFRAG));

        // local_ufrag does not verify integrity: that is handle()'s job.
        let forged = Req {
            pwd: Some(THEIR_PWD),
            ..Req::default()
        };
        assert_eq!(local_ufrag(&forged.bytes()).as_deref(), Some(OUR_UFRAG));

        for packet in [rtp_packet(), dtls_packet()] {
            assert!(!is_stun(&packet));
            assert_eq!(local_ufrag(&packet), None);
        }
        for first in 20..=63u8 {
            let mut p = dtls_packet();
            p[0] = first;
            assert!(!is_stun(&p));
        }
        // The RTP range, even with a magic cookie where STUN has it.
        let mut rtp = check.clone();
        rtp[0] = 0x80;
        assert!(!is_stun(&rtp));
        assert_eq!(local_ufrag(&rtp), None);

        assert!(!is_stun(&[]));
        assert!(!is_stun(&check[..19]));
        assert_eq!(local_ufrag(&[]), None);

        let response = {
            let mut ice = lite();
            let mut out = Vec::new();
            ice.handle(&check, browser(), Instant::now(), &mut out)
                .unwrap();
            out
        };
        assert!(is_stun(&response));
        assert_eq!(local_ufrag(&response), None, "not a request");

        let no_username = Req {
            username: None,
            ..Req::default()
        };
        assert_eq!(local_ufrag(&no_username.bytes()), None);
        let empty_ours = Req {
            username: Some(format!(":{THEIR_UFRAG}")),
            ..Req::default()
        };
        assert_eq!(local_ufrag(&empty_ours.bytes()), None);
    }

    #[test]
    fn random_credentials_follow_rfc8445() {
        let (ufrag, pwd) = random_credentials();
        assert!(ufrag.len() >= 4 && pwd.len() >= 22);
        for c in ufrag.bytes().chain(pwd.bytes()) {
            assert!(ICE_CHARS.contains(&c), "{c}");
        }
        assert_ne!(random_credentials(), (ufrag.clone(), pwd.clone()));

        let mut ice = IceLite::new(ufrag.clone(), pwd.clone());
        assert_eq!((ice.local_ufrag(), ice.local_pwd()), (&*ufrag, &*pwd));
        let mut m = Message::new();
        m.build(&[
            Box::new(BINDING_REQUEST),
            Box::new(TransactionId::new()),
            Box::new(Username::new(ATTR_USERNAME, format!("{ufrag}:abcd"))),
            Box::new(MessageIntegrity::new_short_term_integrity_with_provider(
                pwd.clone(),
                &CRYPTO,
            )),
            Box::new(FINGERPRINT),
        ])
        .unwrap();
        let mut out = Vec::new();
        assert!(ice
            .handle(&m.raw, browser(), Instant::now(), &mut out)
            .is_ok());
        let debug = format!("{ice:?}");
        assert!(debug.contains(&ufrag) && !debug.contains(&pwd));
    }

    /// Runs `packet` through every entry point; only a panic fails.
    fn feed(ice: &mut IceLite, packet: &[u8], out: &mut Vec<u8>) {
        let _ = is_stun(packet);
        let _ = local_ufrag(packet);
        let _ = ice.handle(packet, browser(), Instant::now(), out);
    }

    #[test]
    fn hostile_input_never_panics() {
        let mut ice = lite();
        ice.set_remote_credentials(THEIR_UFRAG, THEIR_PWD);
        let mut out = Vec::new();
        let valid = Req::nominating().bytes();

        for len in 0..valid.len() {
            feed(&mut ice, &valid[..len], &mut out);
        }
        for i in 0..valid.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut p = valid.clone();
                p[i] ^= flip;
                let mut fresh = lite();
                feed(&mut fresh, &p, &mut out);
                // Only a flip in FINGERPRINT's type leaves a valid request: the attribute
                // becomes an unknown one after MESSAGE-INTEGRITY, which RFC 5389 §15.4 ignores.
                let fingerprint_type = valid.len() - 8..valid.len() - 6;
                assert_eq!(
                    fresh.selected().is_some(),
                    fingerprint_type.contains(&i),
                    "flip {flip:#x} at {i}"
                );
            }
        }
        // Header lengths that lie in both directions.
        for length in [0u16, 4, 7, 8, 24, 0xfffc, 0xffff] {
            let mut p = valid.clone();
            p[2..4].copy_from_slice(&length.to_be_bytes());
            feed(&mut ice, &p, &mut out);
        }
        // Attribute lengths that lie, and a MESSAGE-INTEGRITY of every short size.
        for value_len in 0..24u16 {
            let mut m = decode(&Req::default().bytes());
            m.reset();
            m.write_header();
            attr(
                ATTR_USERNAME,
                format!("{OUR_UFRAG}:{THEIR_UFRAG}").as_bytes(),
            )
            .add_to(&mut m)
            .unwrap();
            attr(ATTR_MESSAGE_INTEGRITY, &vec![0; usize::from(value_len)])
                .add_to(&mut m)
                .unwrap();
            feed(&mut ice, &m.raw, &mut out);
            let mut p = m.raw.clone();
            p[22..24].copy_from_slice(&0xfff0u16.to_be_bytes());
            feed(&mut ice, &p, &mut out);
        }
        // Deterministic garbage that passes the RFC 7983 and magic cookie checks.
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for round in 0..2000 {
            let len = 20 + round % 200;
            let mut p: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            p[0] &= 0x01;
            p[4..8].copy_from_slice(&rtc_stun::message::MAGIC_COOKIE.to_be_bytes());
            if round % 2 == 0 {
                p[2..4].copy_from_slice(&((len as u16 - 20) & !3).to_be_bytes());
            }
            feed(&mut ice, &p, &mut out);
        }
        // Huge: bigger than any UDP datagram.
        let mut huge = valid.clone();
        huge.resize(200_000, 0);
        feed(&mut ice, &huge, &mut out);
        let mut huge = vec![0u8; 70_000];
        huge[2..4].copy_from_slice(&0xfffcu16.to_be_bytes());
        huge[4..8].copy_from_slice(&rtc_stun::message::MAGIC_COOKIE.to_be_bytes());
        feed(&mut ice, &huge, &mut out);

        // None of that disturbed the leg.
        assert_eq!(ice.selected(), None);
        let outcome = ice.handle(&valid, browser(), Instant::now(), &mut out);
        assert_eq!(outcome, Ok(StunOutcome::Respond { nominated: true }));
    }
}
