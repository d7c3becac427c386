//! SDP for both legs of a call, read and written with `rtc-sdp`.
//!
//! Toward the browser the gateway is an ICE-lite, DTLS-SRTP endpoint with one audio m-line
//! (DESIGN.md "Media plane"); toward the PBX it is a plain RTP/AVP user agent. This module
//! turns either side's SDP into the few facts the media plane needs, writes our own offers
//! and answers, and picks codecs so that packets pass through untouched whenever both legs
//! share one. It knows SDP only: which leg belongs to which call is the caller's business.
//!
//! Parsing and printing are `rtc-sdp`'s; this module only reads attribute values that the
//! crate leaves as text (`a=rtpmap`, `a=fmtp`, `a=rtcp`, ...). `rtc-sdp`'s own codec map is
//! not used because it loses the m-line order (a `HashMap`) and drops any `a=fmtp` whose
//! parameters contain a space.

use std::io::Cursor;
use std::net::IpAddr;

use rtc_sdp::description::common::{Address, Attribute, ConnectionInformation};
use rtc_sdp::description::media::{MediaName, RangedPort};
use rtc_sdp::description::session::{
    Origin, TimeDescription, Timing, ATTR_KEY_CANDIDATE, ATTR_KEY_CONNECTION_SETUP,
    ATTR_KEY_END_OF_CANDIDATES, ATTR_KEY_GROUP, ATTR_KEY_ICELITE, ATTR_KEY_INACTIVE, ATTR_KEY_MID,
    ATTR_KEY_MSID, ATTR_KEY_MSID_SEMANTIC, ATTR_KEY_RECV_ONLY, ATTR_KEY_RTCPMUX,
    ATTR_KEY_SEND_ONLY, ATTR_KEY_SEND_RECV, ATTR_KEY_SSRC,
};
use rtc_sdp::{MediaDescription, SessionDescription};

const ATTR_ICE_UFRAG: &str = "ice-ufrag";
const ATTR_ICE_PWD: &str = "ice-pwd";
const ATTR_FINGERPRINT: &str = "fingerprint";
const ATTR_RTPMAP: &str = "rtpmap";
const ATTR_FMTP: &str = "fmtp";
const ATTR_PTIME: &str = "ptime";
const ATTR_MAXPTIME: &str = "maxptime";
const ATTR_RTCP: &str = "rtcp";
const ATTR_BUNDLE_ONLY: &str = "bundle-only";

/// Name of the RFC 4733 DTMF payload format.
pub const TELEPHONE_EVENT: &str = "telephone-event";

/// RFC 8445 §5.1.2.1 host-candidate priority for component 1 with the highest local
/// preference; each further address of ours gets a local preference one lower.
const HOST_CANDIDATE_PRIORITY: u32 = 2_130_706_431;

/// Why an SDP could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SdpError {
    /// Not syntactically valid SDP (the message comes from `rtc-sdp`).
    #[error("malformed SDP: {0}")]
    Parse(String),
    /// The SDP has no usable audio m-line.
    #[error("SDP has no audio m-line")]
    NoAudio,
    /// A WebRTC description lacks `a=ice-ufrag` or `a=ice-pwd` (named in the payload).
    #[error("SDP has no a={0}")]
    MissingIce(&'static str),
    /// A WebRTC description lacks a usable `a=fingerprint`.
    #[error("SDP has no usable a=fingerprint")]
    MissingFingerprint,
    /// A plain description has no `c=` line for its audio.
    #[error("SDP has no connection address (c=) for its audio")]
    MissingConnection,
    /// No codec can be used on this leg.
    #[error("no codec in common")]
    NoCommonCodec,
    /// Valid SDP that asks for something the gateway does not do.
    #[error("unsupported SDP: {0}")]
    Unsupported(String),
    /// A value handed to a builder cannot be written into SDP.
    #[error("invalid SDP parameter: {0}")]
    InvalidParam(String),
}

/// One RTP payload format of an m-line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Codec {
    /// RTP payload type as used on this leg.
    pub pt: u8,
    /// Encoding name as written in the SDP (`opus`, `PCMU`, `PCMA`, `G722`, `telephone-event`).
    pub name: String,
    /// RTP clock rate as written in the SDP (so 8000 for G.722, RFC 3551 §4.5.2).
    pub clock_rate: u32,
    /// Channel count; 1 where the SDP leaves it out.
    pub channels: u8,
    /// The `a=fmtp` parameters, verbatim.
    pub fmtp: Option<String>,
}

impl Codec {
    /// A codec without format parameters.
    pub fn new(pt: u8, name: &str, clock_rate: u32, channels: u8) -> Self {
        Codec {
            pt,
            name: name.to_owned(),
            clock_rate,
            channels,
            fmtp: None,
        }
    }

    /// The same codec with `a=fmtp` parameters.
    pub fn with_fmtp(mut self, fmtp: &str) -> Self {
        self.fmtp = Some(fmtp.to_owned());
        self
    }

    /// G.711 µ-law, static payload type 0.
    pub fn pcmu() -> Self {
        Codec::new(0, "PCMU", 8000, 1)
    }

    /// G.711 A-law, static payload type 8.
    pub fn pcma() -> Self {
        Codec::new(8, "PCMA", 8000, 1)
    }

    /// G.722, static payload type 9, whose SDP clock rate is 8000 although it samples at 16 kHz.
    pub fn g722() -> Self {
        Codec::new(9, "G722", 8000, 1)
    }

    /// Opus as browsers offer it (RFC 7587: always `/48000/2`), with in-band FEC.
    pub fn opus(pt: u8) -> Self {
        Codec::new(pt, "opus", 48000, 2).with_fmtp("minptime=10;useinbandfec=1")
    }

    /// RFC 4733 DTMF events 0-16 at the given clock rate, which must match the audio codec's.
    pub fn telephone_event(pt: u8, clock_rate: u32) -> Self {
        Codec::new(pt, TELEPHONE_EVENT, clock_rate, 1).with_fmtp("0-16")
    }

    /// Whether this is RFC 4733 `telephone-event`.
    pub fn is_telephone_event(&self) -> bool {
        self.name.eq_ignore_ascii_case(TELEPHONE_EVENT)
    }

    /// Same payload format regardless of payload type: name (case-insensitive), clock rate
    /// and channels (RFC 3264 §6.1 matches formats this way, not by number).
    pub fn same_format(&self, other: &Codec) -> bool {
        self.name.eq_ignore_ascii_case(&other.name)
            && self.clock_rate == other.clock_rate
            && self.channels == other.channels
    }

    /// Whether this carries audio itself, as opposed to DTMF, comfort noise or redundancy,
    /// which ride alongside an audio codec and can never be the one chosen.
    pub fn is_primary(&self) -> bool {
        ![
            "telephone-event",
            "CN",
            "red",
            "rtx",
            "ulpfec",
            "flexfec-03",
        ]
        .iter()
        .any(|n| self.name.eq_ignore_ascii_case(n))
    }
}

/// The codecs the gateway offers a browser (incoming SIP call), with our own payload types.
///
/// `telephone-event` comes at both clock rates because RFC 4733 events must use the clock of
/// the audio codec they accompany: 8000 for G.711/G.722, 48000 for Opus (browsers will not
/// send DTMF with Opus otherwise).
pub fn default_webrtc_codecs() -> Vec<Codec> {
    vec![
        Codec::opus(111),
        Codec::pcmu(),
        Codec::pcma(),
        Codec::g722(),
        Codec::telephone_event(101, 8000),
        Codec::telephone_event(110, 48000),
    ]
}

/// Media direction of an m-line (RFC 3264 §5.1), from the point of view of its writer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// `a=sendrecv`, also the default when no direction attribute is present.
    SendRecv,
    /// `a=sendonly`.
    SendOnly,
    /// `a=recvonly`.
    RecvOnly,
    /// `a=inactive`.
    Inactive,
}

impl Direction {
    /// The direction an answer mirrors without further preference (RFC 3264 §6.1): the
    /// offerer's sending is the answerer's receiving.
    pub fn reversed(self) -> Self {
        match self {
            Direction::SendRecv => Direction::SendRecv,
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            Direction::Inactive => Direction::Inactive,
        }
    }

    /// Whether the writer of this direction sends media.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether the writer of this direction receives media.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    /// The direction made of the two flags.
    pub fn from_flags(sends: bool, receives: bool) -> Self {
        match (sends, receives) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }

    /// The direction to answer an offer of `self` with when we would like `wanted`
    /// (RFC 3264 §6.1): we may only send what they receive and receive what they send.
    pub fn answer_to(self, wanted: Direction) -> Self {
        Direction::from_flags(
            self.receives() && wanted.sends(),
            self.sends() && wanted.receives(),
        )
    }

    /// The attribute name that writes this direction.
    pub fn attribute(self) -> &'static str {
        match self {
            Direction::SendRecv => ATTR_KEY_SEND_RECV,
            Direction::SendOnly => ATTR_KEY_SEND_ONLY,
            Direction::RecvOnly => ATTR_KEY_RECV_ONLY,
            Direction::Inactive => ATTR_KEY_INACTIVE,
        }
    }

    fn from_attribute(key: &str) -> Option<Self> {
        match key {
            ATTR_KEY_SEND_RECV => Some(Direction::SendRecv),
            ATTR_KEY_SEND_ONLY => Some(Direction::SendOnly),
            ATTR_KEY_RECV_ONLY => Some(Direction::RecvOnly),
            ATTR_KEY_INACTIVE => Some(Direction::Inactive),
            _ => None,
        }
    }
}

/// What the gateway needs from a browser's offer (or answer).
#[derive(Clone, Debug, PartialEq)]
pub struct WebRtcDescription {
    /// Index of the audio m-line used, for trickled candidates' `sdpMLineIndex`.
    pub mline_index: usize,
    /// `a=ice-ufrag`, media-level or else session-level.
    pub ice_ufrag: String,
    /// `a=ice-pwd`, media-level or else session-level.
    pub ice_pwd: String,
    /// `a=fingerprint` value, `"<algorithm> <hex>"`; sha-256 preferred when several are given.
    pub fingerprint: String,
    /// `a=setup`: `actpass`, `active`, `passive` or `holdconn` (RFC 4145 default `active`).
    pub setup: String,
    /// `a=mid` of the audio m-line.
    pub mid: Option<String>,
    /// The m-line's codecs in the writer's order of preference.
    pub codecs: Vec<Codec>,
    /// Media direction as written by the browser.
    pub direction: Direction,
    /// Whether `a=rtcp-mux` is present.
    pub rtcp_mux: bool,
    /// Raw `a=candidate` values of the audio m-line.
    pub candidates: Vec<String>,
    /// First SSRC announced by `a=ssrc` on the audio m-line.
    pub ssrc: Option<u32>,
}

/// What the gateway needs from a plain RTP/AVP description (the PBX's offer or answer).
#[derive(Clone, Debug, PartialEq)]
pub struct PlainDescription {
    /// Index of the audio m-line used, so an answer can mirror the offer's m-lines.
    pub mline_index: usize,
    /// Where to send RTP; a media-level `c=` overrides the session-level one.
    pub addr: IpAddr,
    /// RTP port; 0 means the stream is rejected or disabled.
    pub port: u16,
    /// The m-line's codecs in the writer's order of preference.
    pub codecs: Vec<Codec>,
    /// Media direction as written; `c=0.0.0.0` (RFC 2543 hold) turns off receiving.
    pub direction: Direction,
    /// `a=rtcp` (RFC 3605): port and optional address, when RTCP is not on port + 1.
    pub rtcp: Option<(Option<IpAddr>, u16)>,
    /// `a=ptime` in milliseconds.
    pub ptime: Option<u32>,
    /// `a=maxptime` in milliseconds.
    pub maxptime: Option<u32>,
}

impl PlainDescription {
    /// Whether the writer has put the call on hold (it sends at most music, RFC 3264 §8.4).
    pub fn is_hold(&self) -> bool {
        !self.direction.receives()
    }
}

/// Everything needed to answer a browser's offer.
#[derive(Clone, Debug)]
pub struct WebRtcAnswerParams<'a> {
    /// The browser's offer, whose m-lines the answer mirrors.
    pub offer: &'a str,
    /// Our addresses, one host candidate each in this order of preference; the first is also
    /// written in `c=` and `o=`.
    pub ips: &'a [IpAddr],
    /// Our UDP port for this leg.
    pub port: u16,
    /// Our ICE username fragment.
    pub ice_ufrag: &'a str,
    /// Our ICE password.
    pub ice_pwd: &'a str,
    /// Our certificate fingerprint, `"sha-256 AB:CD:..."`.
    pub fingerprint: &'a str,
    /// Our DTLS role: `active` or `passive` (an answer may not say `actpass`).
    pub setup: &'a str,
    /// The chosen codec first, then `telephone-event` if offered, all with the offer's
    /// payload types and fmtp.
    pub codecs: &'a [Codec],
    /// Our direction, already reconciled with the offer's (see [`Direction::answer_to`]).
    pub direction: Direction,
    /// The SSRC we send with.
    pub ssrc: u32,
    /// Our RTCP CNAME; also used as the MediaStream id.
    pub cname: &'a str,
}

/// Everything needed to offer a call to a browser.
#[derive(Clone, Debug)]
pub struct WebRtcOfferParams<'a> {
    /// Our addresses, one host candidate each in this order of preference; the first is also
    /// written in `c=` and `o=`.
    pub ips: &'a [IpAddr],
    /// Our UDP port for this leg.
    pub port: u16,
    /// Our ICE username fragment.
    pub ice_ufrag: &'a str,
    /// Our ICE password.
    pub ice_pwd: &'a str,
    /// Our certificate fingerprint, `"sha-256 AB:CD:..."`.
    pub fingerprint: &'a str,
    /// Codecs in our order of preference, with our payload types.
    pub codecs: &'a [Codec],
    /// Our direction.
    pub direction: Direction,
    /// The SSRC we send with.
    pub ssrc: u32,
    /// Our RTCP CNAME; also used as the MediaStream id.
    pub cname: &'a str,
    /// `o=` session id; keep it below 2^63 (JSEP §5.2.1) and constant for the leg.
    pub session_id: u64,
    /// `o=` session version; increments with every new description on the leg.
    pub session_version: u64,
}

/// Everything needed for a plain RTP/AVP offer or answer toward the PBX.
#[derive(Clone, Debug)]
pub struct PlainParams<'a> {
    /// Our RTP address.
    pub ip: IpAddr,
    /// Our RTP port (RTCP on port + 1).
    pub port: u16,
    /// Codecs in our order of preference; in an answer ([`build_plain_answer`]), the chosen
    /// ones with the offer's payload types.
    pub codecs: &'a [Codec],
    /// Our direction (`SendOnly` puts the PBX on hold).
    pub direction: Direction,
    /// `o=` session id, constant for the dialog.
    pub session_id: u64,
    /// `o=` session version; increments on every re-offer (RFC 3264 §8).
    pub session_version: u64,
    /// `a=ptime` in milliseconds; 0 leaves it out.
    pub ptime: u32,
}

/// Reads a browser's offer or answer: the first live audio m-line and its transport.
///
/// Other m-lines (video, data channels, further audio) are ignored here; an answer built by
/// [`build_webrtc_answer`] rejects them.
pub fn parse_webrtc(sdp: &str) -> Result<WebRtcDescription, SdpError> {
    let desc = unmarshal(sdp)?;
    let index = pick_webrtc_audio(&desc)?;
    let media = desc
        .media_descriptions
        .get(index)
        .ok_or(SdpError::NoAudio)?;
    if !is_dtls_srtp(media) {
        return Err(SdpError::Unsupported(format!(
            "audio transport {} is not DTLS-SRTP",
            media.media_name.protos.join("/")
        )));
    }

    let ice_ufrag = attr_either(&desc, media, ATTR_ICE_UFRAG)
        .filter(|v| !v.is_empty())
        .ok_or(SdpError::MissingIce(ATTR_ICE_UFRAG))?;
    let ice_pwd = attr_either(&desc, media, ATTR_ICE_PWD)
        .filter(|v| !v.is_empty())
        .ok_or(SdpError::MissingIce(ATTR_ICE_PWD))?;
    let fingerprint = pick_fingerprint(&desc, media).ok_or(SdpError::MissingFingerprint)?;

    // RFC 4145 §4: no a=setup means active.
    let setup = attr_either(&desc, media, ATTR_KEY_CONNECTION_SETUP).unwrap_or("active");
    if !["actpass", "active", "passive", "holdconn"].contains(&setup) {
        return Err(SdpError::Unsupported(format!("a=setup:{setup}")));
    }

    Ok(WebRtcDescription {
        mline_index: index,
        ice_ufrag: ice_ufrag.to_owned(),
        ice_pwd: ice_pwd.to_owned(),
        fingerprint,
        setup: setup.to_owned(),
        mid: media_attr(media, ATTR_KEY_MID).map(str::to_owned),
        codecs: media_codecs(media),
        direction: direction_of(&desc, media),
        rtcp_mux: has_media_attr(media, ATTR_KEY_RTCPMUX),
        candidates: media_attrs(media, ATTR_KEY_CANDIDATE)
            .map(str::to_owned)
            .collect(),
        ssrc: media_attr(media, ATTR_KEY_SSRC)
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok()),
    })
}

/// Our answer to a browser's offer: the audio m-line accepted, every other m-line rejected
/// with port 0 in the offer's order (RFC 3264 §6), ICE-lite with one host candidate.
pub fn build_webrtc_answer(p: &WebRtcAnswerParams<'_>) -> Result<String, SdpError> {
    if p.setup != "active" && p.setup != "passive" {
        return Err(SdpError::InvalidParam(format!(
            "answer a=setup must be active or passive, not {:?}",
            p.setup
        )));
    }
    check_common(p.ice_ufrag, p.ice_pwd, p.fingerprint, p.cname, p.codecs)?;

    let offer = unmarshal(p.offer)?;
    let offered = parse_webrtc(p.offer)?;
    if !offered.rtcp_mux {
        // One port per worker carries every browser leg: RTCP on a second port is impossible.
        return Err(SdpError::Unsupported("offer without a=rtcp-mux".to_owned()));
    }
    let audio = offer
        .media_descriptions
        .get(offered.mline_index)
        .ok_or(SdpError::NoAudio)?;
    for codec in p.codecs {
        if !audio.media_name.formats.contains(&codec.pt.to_string()) {
            return Err(SdpError::InvalidParam(format!(
                "payload type {} ({}) is not in the offer",
                codec.pt, codec.name
            )));
        }
    }

    // o=: the SSRC is fixed for the leg, so it makes a stable session id; the offer's version
    // grows with every browser re-offer, so ours grows with every answer (RFC 3264 §8).
    let ip = first_ip(p.ips)?;
    let mut answer = session_skeleton(ip, u64::from(p.ssrc), offer.origin.session_version)
        .with_property_attribute(ATTR_KEY_ICELITE.to_owned());
    if let Some(mid) = &offered.mid {
        if offer_bundles(&offer, mid) {
            answer =
                answer.with_value_attribute(ATTR_KEY_GROUP.to_owned(), format!("BUNDLE {mid}"));
        }
    }
    answer = answer.with_value_attribute(
        ATTR_KEY_MSID_SEMANTIC.to_owned(),
        format!(" WMS {}", p.cname),
    );

    for (index, media) in offer.media_descriptions.iter().enumerate() {
        let section = if index == offered.mline_index {
            webrtc_audio_section(
                &WebRtcSection {
                    ips: p.ips,
                    port: p.port,
                    ice_ufrag: p.ice_ufrag,
                    ice_pwd: p.ice_pwd,
                    fingerprint: p.fingerprint,
                    setup: p.setup,
                    mid: offered.mid.as_deref(),
                    codecs: p.codecs,
                    direction: p.direction,
                    ssrc: p.ssrc,
                    cname: p.cname,
                },
                media.media_name.protos.clone(),
            )
        } else {
            rejected_section(media)
        };
        answer = answer.with_media(section);
    }
    Ok(answer.marshal())
}

/// Our offer to a browser for an incoming SIP call: one audio m-line, mid `0` in a BUNDLE
/// group, `a=setup:actpass` so the browser picks its DTLS role.
pub fn build_webrtc_offer(p: &WebRtcOfferParams<'_>) -> Result<String, SdpError> {
    check_common(p.ice_ufrag, p.ice_pwd, p.fingerprint, p.cname, p.codecs)?;
    let ip = first_ip(p.ips)?;
    let section = webrtc_audio_section(
        &WebRtcSection {
            ips: p.ips,
            port: p.port,
            ice_ufrag: p.ice_ufrag,
            ice_pwd: p.ice_pwd,
            fingerprint: p.fingerprint,
            setup: "actpass",
            mid: Some("0"),
            codecs: p.codecs,
            direction: p.direction,
            ssrc: p.ssrc,
            cname: p.cname,
        },
        protos("UDP/TLS/RTP/SAVPF"),
    );
    let offer = session_skeleton(ip, p.session_id, p.session_version)
        .with_property_attribute(ATTR_KEY_ICELITE.to_owned())
        .with_value_attribute(ATTR_KEY_GROUP.to_owned(), "BUNDLE 0".to_owned())
        .with_value_attribute(
            ATTR_KEY_MSID_SEMANTIC.to_owned(),
            format!(" WMS {}", p.cname),
        )
        .with_media(section);
    Ok(offer.marshal())
}

/// Reads a plain RTP/AVP offer or answer: the first audio m-line over RTP/AVP(F), preferring
/// one with a non-zero port.
///
/// Static payload types without `a=rtpmap` get their RFC 3551 names. `c=0.0.0.0` (RFC 2543
/// hold) means the writer receives nothing: the direction loses its receiving half, so an
/// unqualified old-style hold reads as `SendOnly` and `a=recvonly` + `0.0.0.0` as `Inactive`.
pub fn parse_plain(sdp: &str) -> Result<PlainDescription, SdpError> {
    let desc = unmarshal(sdp)?;
    let index = pick_plain_audio(&desc)?;
    let media = desc
        .media_descriptions
        .get(index)
        .ok_or(SdpError::NoAudio)?;

    let connection = media
        .connection_information
        .as_ref()
        .or(desc.connection_information.as_ref())
        .ok_or(SdpError::MissingConnection)?;
    let addr = connection_addr(connection)?;

    let mut direction = direction_of(&desc, media);
    if addr.is_unspecified() {
        direction = Direction::from_flags(direction.sends(), false);
    }

    let rtcp = media_attr(media, ATTR_RTCP).and_then(parse_rtcp_attr);
    Ok(PlainDescription {
        mline_index: index,
        addr,
        port: port_of(media)?,
        codecs: media_codecs(media),
        direction,
        rtcp,
        ptime: media_attr(media, ATTR_PTIME).and_then(parse_millis),
        maxptime: media_attr(media, ATTR_MAXPTIME).and_then(parse_millis),
    })
}

/// A plain RTP/AVP description with one audio m-line toward the PBX: our offer, or an answer
/// to an offer that has only the one audio m-line (else see [`build_plain_answer`]).
///
/// Every codec gets an `a=rtpmap`, static ones too (RFC 3264 §5.1 recommends it, and some
/// PBXes match by name only); `telephone-event` without fmtp gets `0-16`.
pub fn build_plain(p: &PlainParams<'_>) -> Result<String, SdpError> {
    build_plain_inner(p, None)
}

/// Our answer to a PBX's offer: the offer's m-lines mirrored in order, the audio line that
/// [`parse_plain`] picks answered from `p` (keeping the offer's RTP/AVP or RTP/AVPF), every
/// other m-line rejected with port 0 (RFC 3264 §6).
pub fn build_plain_answer(offer: &str, p: &PlainParams<'_>) -> Result<String, SdpError> {
    build_plain_inner(p, Some(offer))
}

fn build_plain_inner(p: &PlainParams<'_>, offer: Option<&str>) -> Result<String, SdpError> {
    if p.codecs.is_empty() {
        return Err(SdpError::NoCommonCodec);
    }
    for codec in p.codecs {
        check_token("codec name", &codec.name)?;
        if let Some(fmtp) = &codec.fmtp {
            check_line("fmtp", fmtp)?;
        }
    }

    let mut audio = MediaDescription {
        media_name: MediaName {
            media: "audio".to_owned(),
            port: ranged_port(p.port),
            protos: protos("RTP/AVP"),
            formats: vec![],
        },
        ..Default::default()
    };
    for codec in p.codecs {
        let fmtp = match (&codec.fmtp, codec.is_telephone_event()) {
            (Some(fmtp), _) => fmtp.clone(),
            (None, true) => "0-16".to_owned(),
            (None, false) => String::new(),
        };
        audio = with_codec(audio, codec, fmtp);
    }
    if p.ptime > 0 {
        audio = audio.with_value_attribute(ATTR_PTIME.to_owned(), p.ptime.to_string());
    }
    audio = audio.with_property_attribute(p.direction.attribute().to_owned());

    let mut sdp = session_skeleton(p.ip, p.session_id, p.session_version);
    match offer {
        None => sdp = sdp.with_media(audio),
        Some(offer_text) => {
            let offer = unmarshal(offer_text)?;
            let index = pick_plain_audio(&offer)?;
            // An answer keeps the offer's transport profile (RTP/AVP or RTP/AVPF).
            let offered = offer
                .media_descriptions
                .get(index)
                .ok_or(SdpError::NoAudio)?;
            audio.media_name.protos = offered.media_name.protos.clone();
            let mut audio = Some(audio);
            for (i, media) in offer.media_descriptions.iter().enumerate() {
                let ours = if i == index { audio.take() } else { None };
                sdp = sdp.with_media(ours.unwrap_or_else(|| rejected_section(media)));
            }
        }
    }
    Ok(sdp.marshal())
}

/// The browser's codecs that the gateway can relay to a PBX without transcoding, in the
/// order to offer them to the PBX.
///
/// G.711 (PCMU, PCMA, in the browser's order) comes first, then G.722, then Opus, then
/// `telephone-event`. A contact center's PBX speaks G.711 almost always and G.722
/// sometimes; putting those first lets the PBX pick a format both legs share so packets
/// pass through untouched, whereas a browser's own order (Opus first) would make a PBX that
/// also happens to know Opus choose it and then transcode toward its other legs. Everything
/// else (red, CN, rtx, unknown codecs) is dropped because the relay cannot carry it.
pub fn passthrough_candidates(browser: &[Codec]) -> Vec<Codec> {
    let mut ranked: Vec<(u8, &Codec)> = browser
        .iter()
        .filter_map(|c| passthrough_rank(c).map(|rank| (rank, c)))
        .collect();
    // Stable sort keeps the browser's order within each rank.
    ranked.sort_by_key(|(rank, _)| *rank);
    ranked.into_iter().map(|(_, c)| c.clone()).collect()
}

fn passthrough_rank(codec: &Codec) -> Option<u8> {
    let is = |name: &str, clock: u32, channels: u8| {
        codec.name.eq_ignore_ascii_case(name)
            && codec.clock_rate == clock
            && codec.channels == channels
    };
    if is("PCMU", 8000, 1) || is("PCMA", 8000, 1) {
        Some(0)
    } else if is("G722", 8000, 1) {
        Some(1)
    } else if is("opus", 48000, 2) {
        Some(2)
    } else if codec.is_telephone_event() && (codec.clock_rate == 8000 || codec.clock_rate == 48000)
    {
        Some(3)
    } else {
        None
    }
}

/// The first audio codec in `theirs` (their preference wins, RFC 3264 §6.1) that `ours` also
/// has, as `(ours, theirs)`: each with its own leg's payload type, so the relay can map PTs.
///
/// Matching is by name (case-insensitive), clock rate and channels; DTMF, comfort noise and
/// redundancy formats are never chosen (see [`common_dtmf`]).
pub fn choose_common(ours: &[Codec], theirs: &[Codec]) -> Option<(Codec, Codec)> {
    theirs.iter().filter(|c| c.is_primary()).find_map(|t| {
        ours.iter()
            .find(|o| o.is_primary() && o.same_format(t))
            .map(|o| (o.clone(), t.clone()))
    })
}

/// `telephone-event` at `clock_rate` on both sides, as `(ours, theirs)`, if both have it.
///
/// The clock rate must be the chosen audio codec's (RFC 4733 §2.1), hence the parameter.
pub fn common_dtmf(ours: &[Codec], theirs: &[Codec], clock_rate: u32) -> Option<(Codec, Codec)> {
    let at_rate = |c: &&Codec| c.is_telephone_event() && c.clock_rate == clock_rate;
    let theirs = theirs.iter().find(at_rate)?;
    let ours = ours.iter().find(at_rate)?;
    Some((ours.clone(), theirs.clone()))
}

/// What the two legs of a call carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CodecChoice {
    /// The same codec on both legs: packets pass through with their headers rewritten.
    Passthrough {
        /// The codec with the browser leg's payload type.
        browser: Codec,
        /// The codec with the SIP leg's payload type.
        sip: Codec,
    },
    /// Opus on the browser leg, G.711 on the SIP leg: the media plane transcodes.
    Transcode {
        /// Opus, with the browser leg's payload type.
        browser: Codec,
        /// PCMU or PCMA, with the SIP leg's payload type.
        sip: Codec,
    },
}

impl CodecChoice {
    /// How REST shows it: the codec's name for passthrough (`PCMU`), both sides for
    /// transcoding (`opus/48000 <-> PCMU/8000`).
    pub fn label(&self) -> String {
        match self {
            CodecChoice::Passthrough { browser, .. } => browser.name.clone(),
            CodecChoice::Transcode { browser, sip } => format!(
                "{}/{} <-> {}/{}",
                browser.name, browser.clock_rate, sip.name, sip.clock_rate
            ),
        }
    }
}

fn is_opus(c: &Codec) -> bool {
    c.name.eq_ignore_ascii_case("opus") && c.clock_rate == 48000 && c.channels == 2
}

/// Whether `c` is G.711, the codecs the gateway can transcode Opus to.
pub fn is_g711(c: &Codec) -> bool {
    (c.name.eq_ignore_ascii_case("PCMU") || c.name.eq_ignore_ascii_case("PCMA"))
        && c.clock_rate == 8000
        && c.channels == 1
}

/// A payload type for a codec we add to a list: `preferred` unless taken, else the first
/// free dynamic one (RFC 3551 §6: 96-127).
fn free_pt(used: &[Codec], preferred: u8) -> u8 {
    let taken = |pt: u8| used.iter().any(|c| c.pt == pt);
    if !taken(preferred) {
        return preferred;
    }
    (96..=127).find(|&pt| !taken(pt)).unwrap_or(preferred)
}

/// `codecs`' audio codecs, then one `telephone-event` per clock rate among them (the first
/// codec's first, RFC 4733 §2.1: events use their audio's clock), taken from `events` when
/// it has one at that rate, else with a new payload type.
fn with_events(codecs: Vec<Codec>, events: &[Codec]) -> Vec<Codec> {
    let mut out: Vec<Codec> = codecs.into_iter().filter(|c| c.is_primary()).collect();
    let mut clocks: Vec<u32> = Vec::new();
    for c in &out {
        if !clocks.contains(&c.clock_rate) {
            clocks.push(c.clock_rate);
        }
    }
    for clock in clocks {
        let te = events
            .iter()
            .find(|c| c.is_telephone_event() && c.clock_rate == clock)
            .cloned()
            .unwrap_or_else(|| Codec::telephone_event(free_pt(&out, 101), clock));
        if !out.iter().any(|c| c.pt == te.pt) {
            out.push(te);
        }
    }
    out
}

/// The codecs of our answer to a browser's offer (outgoing calls): the passthrough
/// candidates ([`passthrough_candidates`]) with the `telephone-event`s the browser offered
/// at their clock rates, all with the browser's payload types.
pub fn browser_answer_codecs(browser_offer: &[Codec]) -> Vec<Codec> {
    let candidates = passthrough_candidates(browser_offer);
    let events: Vec<Codec> = browser_offer
        .iter()
        .filter(|c| c.is_telephone_event())
        .cloned()
        .collect();
    let primaries: Vec<Codec> = candidates.into_iter().filter(|c| c.is_primary()).collect();
    let mut out = with_events(primaries, &events);
    // Only events the browser offered may be in the answer.
    out.retain(|c| !c.is_telephone_event() || events.iter().any(|e| e.pt == c.pt));
    out
}

/// The codecs of our SIP offer for an outgoing call, from those we answered the browser
/// with: the passthrough codecs first, so a far end that shares one keeps packets untouched,
/// then PCMU and PCMA if the browser sends Opus and they are not there already (the gateway
/// transcodes those), then `telephone-event` at every audio clock rate, 8000 included.
pub fn sip_offer_codecs(browser: &[Codec]) -> Vec<Codec> {
    let mut primaries: Vec<Codec> = browser.iter().filter(|c| c.is_primary()).cloned().collect();
    if primaries.iter().any(is_opus) {
        for g711 in [Codec::pcmu(), Codec::pcma()] {
            if !primaries.iter().any(|c| c.same_format(&g711)) {
                // The static payload types are the browser's too, unless it reused them.
                let pt = if primaries.iter().any(|c| c.pt == g711.pt) {
                    free_pt(&primaries, g711.pt)
                } else {
                    g711.pt
                };
                primaries.push(Codec { pt, ..g711 });
            }
        }
    }
    with_events(primaries, browser)
}

/// The codecs of our offer to the browser for an incoming call, from our answer to the SIP
/// offer (its codec and `telephone-event`, with the far end's payload types): that codec
/// first, so a browser that has it keeps packets untouched, then, when it is G.711, Opus and
/// a 48 kHz `telephone-event`, so an Opus-only browser can answer and the gateway
/// transcodes. The browser's answer decides.
pub fn browser_offer_codecs(sip_answer: &[Codec]) -> Vec<Codec> {
    let mut out: Vec<Codec> = sip_answer.to_vec();
    let transcodable = sip_answer
        .iter()
        .find(|c| c.is_primary())
        .is_some_and(is_g711);
    if transcodable {
        let first_event = out
            .iter()
            .position(Codec::is_telephone_event)
            .unwrap_or(out.len());
        let opus = Codec::opus(free_pt(&out, 111));
        out.insert(first_event, opus);
        if sip_answer.iter().any(Codec::is_telephone_event) {
            let te = Codec::telephone_event(free_pt(&out, 110), 48000);
            out.push(te);
        }
    }
    out
}

/// What the legs carry, given the codecs of the browser leg in its sending preference (our
/// answer to its offer, or its answer to ours: the first audio codec is the one it sends),
/// our SIP offer or answer, and the far end's SIP answer or offer.
///
/// The browser's own codec wins when the far end has it (passthrough, whatever the far end's
/// order); else the far end's choice among ours ([`choose_common`]) if the browser sends
/// Opus and that is G.711 (transcoding); else the far end's choice if the browser has it at
/// all (passthrough). `None` when the legs cannot be joined.
pub fn choose_legs(
    browser: &[Codec],
    sip_ours: &[Codec],
    sip_theirs: &[Codec],
) -> Option<CodecChoice> {
    let sends = browser.iter().find(|c| c.is_primary());
    if let Some(sends) = sends {
        let shared = sip_theirs
            .iter()
            .filter(|t| t.is_primary() && t.same_format(sends))
            .find(|t| sip_ours.iter().any(|o| o.same_format(t)));
        if let Some(their) = shared {
            return Some(CodecChoice::Passthrough {
                browser: sends.clone(),
                sip: their.clone(),
            });
        }
    }
    let (_, their) = choose_common(sip_ours, sip_theirs)?;
    if let Some(opus) = sends.filter(|c| is_opus(c)) {
        if is_g711(&their) {
            return Some(CodecChoice::Transcode {
                browser: opus.clone(),
                sip: their,
            });
        }
    }
    let browser = browser
        .iter()
        .find(|c| c.is_primary() && c.same_format(&their))?;
    Some(CodecChoice::Passthrough {
        browser: browser.clone(),
        sip: their,
    })
}

fn unmarshal(sdp: &str) -> Result<SessionDescription, SdpError> {
    SessionDescription::unmarshal(&mut Cursor::new(sdp.as_bytes()))
        .map_err(|e| SdpError::Parse(e.to_string()))
}

fn is_audio(media: &MediaDescription) -> bool {
    media.media_name.media == "audio"
}

fn is_dtls_srtp(media: &MediaDescription) -> bool {
    let protos = &media.media_name.protos;
    protos.ends_with(&["RTP".to_owned(), "SAVPF".to_owned()])
        || protos.ends_with(&["RTP".to_owned(), "SAVP".to_owned()])
}

fn is_plain_rtp(media: &MediaDescription) -> bool {
    let protos = media.media_name.protos.join("/");
    protos == "RTP/AVP" || protos == "RTP/AVPF"
}

/// A port-0 m-line in a browser offer is a stopped transceiver unless `a=bundle-only` says
/// it merely rides on the BUNDLE transport (RFC 8843 §6).
fn pick_webrtc_audio(desc: &SessionDescription) -> Result<usize, SdpError> {
    desc.media_descriptions
        .iter()
        .position(|m| {
            is_audio(m) && (m.media_name.port.value != 0 || has_media_attr(m, ATTR_BUNDLE_ONLY))
        })
        .ok_or(SdpError::NoAudio)
}

fn pick_plain_audio(desc: &SessionDescription) -> Result<usize, SdpError> {
    let medias = &desc.media_descriptions;
    let usable = |m: &MediaDescription| is_audio(m) && is_plain_rtp(m);
    if let Some(i) = medias
        .iter()
        .position(|m| usable(m) && m.media_name.port.value != 0)
    {
        return Ok(i);
    }
    if let Some(i) = medias.iter().position(usable) {
        return Ok(i);
    }
    match medias.iter().find(|m| is_audio(m)) {
        Some(m) => Err(SdpError::Unsupported(format!(
            "audio transport {} (only RTP/AVP toward the PBX)",
            m.media_name.protos.join("/")
        ))),
        None => Err(SdpError::NoAudio),
    }
}

fn port_of(media: &MediaDescription) -> Result<u16, SdpError> {
    u16::try_from(media.media_name.port.value)
        .map_err(|_| SdpError::Parse(format!("bad port {}", media.media_name.port.value)))
}

fn connection_addr(connection: &ConnectionInformation) -> Result<IpAddr, SdpError> {
    let address = connection
        .address
        .as_ref()
        .ok_or(SdpError::MissingConnection)?;
    address.address.parse().map_err(|_| {
        SdpError::Unsupported(format!(
            "connection address {:?} is not an IP address",
            address.address
        ))
    })
}

fn media_attrs<'a>(media: &'a MediaDescription, key: &'a str) -> impl Iterator<Item = &'a str> {
    media
        .attributes
        .iter()
        .filter(move |a| a.key == key)
        .filter_map(|a| a.value.as_deref())
}

fn media_attr<'a>(media: &'a MediaDescription, key: &'a str) -> Option<&'a str> {
    media_attrs(media, key).next().map(str::trim)
}

fn has_media_attr(media: &MediaDescription, key: &str) -> bool {
    media.attributes.iter().any(|a| a.key == key)
}

fn session_attrs<'a>(desc: &'a SessionDescription, key: &'a str) -> impl Iterator<Item = &'a str> {
    desc.attributes
        .iter()
        .filter(move |a| a.key == key)
        .filter_map(|a| a.value.as_deref())
}

/// Media-level value, else session-level (RFC 8866 §5.13).
fn attr_either<'a>(
    desc: &'a SessionDescription,
    media: &'a MediaDescription,
    key: &'a str,
) -> Option<&'a str> {
    media_attr(media, key).or_else(|| session_attrs(desc, key).next().map(str::trim))
}

fn pick_fingerprint(desc: &SessionDescription, media: &MediaDescription) -> Option<String> {
    let well_formed = |v: &&str| {
        let mut parts = v.split_whitespace();
        matches!(
            (parts.next(), parts.next(), parts.next()),
            (Some(_), Some(_), None)
        )
    };
    let mut all: Vec<&str> = media_attrs(media, ATTR_FINGERPRINT)
        .filter(well_formed)
        .collect();
    if all.is_empty() {
        all = session_attrs(desc, ATTR_FINGERPRINT)
            .filter(well_formed)
            .collect();
    }
    let chosen = all
        .iter()
        .find(|v| {
            v.split_whitespace()
                .next()
                .is_some_and(|alg| alg.eq_ignore_ascii_case("sha-256"))
        })
        .or(all.first())?;
    Some(chosen.split_whitespace().collect::<Vec<_>>().join(" "))
}

fn direction_of(desc: &SessionDescription, media: &MediaDescription) -> Direction {
    let find = |attrs: &[Attribute]| attrs.iter().find_map(|a| Direction::from_attribute(&a.key));
    find(&media.attributes)
        .or_else(|| find(&desc.attributes))
        .unwrap_or(Direction::SendRecv)
}

/// RFC 3551 §6 static audio payload types, for m-lines that omit their `a=rtpmap`.
fn static_codec(pt: u8) -> Option<Codec> {
    let (name, clock_rate, channels) = match pt {
        0 => ("PCMU", 8000, 1),
        3 => ("GSM", 8000, 1),
        4 => ("G723", 8000, 1),
        5 => ("DVI4", 8000, 1),
        6 => ("DVI4", 16000, 1),
        7 => ("LPC", 8000, 1),
        8 => ("PCMA", 8000, 1),
        9 => ("G722", 8000, 1),
        10 => ("L16", 44100, 2),
        11 => ("L16", 44100, 1),
        12 => ("QCELP", 8000, 1),
        13 => ("CN", 8000, 1),
        14 => ("MPA", 90000, 1),
        15 => ("G728", 8000, 1),
        16 => ("DVI4", 11025, 1),
        17 => ("DVI4", 22050, 1),
        18 => ("G729", 8000, 1),
        _ => return None,
    };
    Some(Codec::new(pt, name, clock_rate, channels))
}

/// `<pt> <name>/<clock>[/<channels>]` from an `a=rtpmap` value.
fn parse_rtpmap(value: &str) -> Option<Codec> {
    let (pt, encoding) = value.trim().split_once(char::is_whitespace)?;
    let pt: u8 = pt.parse().ok()?;
    let mut parts = encoding.trim().split('/');
    let name = parts.next().filter(|n| !n.is_empty())?;
    let clock_rate: u32 = parts.next()?.trim().parse().ok()?;
    let channels: u8 = match parts.next() {
        Some(c) => c.trim().parse().ok()?,
        None => 1,
    };
    Some(Codec::new(pt, name, clock_rate, channels))
}

/// `<pt> <parameters>` from an `a=fmtp` value; parameters may contain spaces.
fn parse_fmtp(value: &str) -> Option<(u8, &str)> {
    let (pt, params) = value.trim().split_once(char::is_whitespace)?;
    Some((pt.parse().ok()?, params.trim()))
}

/// The m-line's payload formats in order; dynamic ones without `a=rtpmap` are unusable and
/// skipped, as are duplicates.
fn media_codecs(media: &MediaDescription) -> Vec<Codec> {
    let rtpmaps: Vec<Codec> = media_attrs(media, ATTR_RTPMAP)
        .filter_map(parse_rtpmap)
        .collect();
    let fmtps: Vec<(u8, &str)> = media_attrs(media, ATTR_FMTP)
        .filter_map(parse_fmtp)
        .collect();
    let mut codecs: Vec<Codec> = Vec::new();
    for format in &media.media_name.formats {
        let Ok(pt) = format.parse::<u8>() else {
            continue;
        };
        if codecs.iter().any(|c| c.pt == pt) {
            continue;
        }
        let Some(mut codec) = rtpmaps
            .iter()
            .find(|c| c.pt == pt)
            .cloned()
            .or_else(|| static_codec(pt))
        else {
            continue;
        };
        codec.fmtp = fmtps
            .iter()
            .find(|(p, _)| *p == pt)
            .map(|(_, f)| (*f).to_owned());
        codecs.push(codec);
    }
    codecs
}

/// `a=rtcp:<port> [IN IP4 <addr>]` (RFC 3605).
fn parse_rtcp_attr(value: &str) -> Option<(Option<IpAddr>, u16)> {
    let mut parts = value.split_whitespace();
    let port: u16 = parts.next()?.parse().ok()?;
    let addr = parts.nth(2).and_then(|a| a.parse().ok());
    Some((addr, port))
}

/// Milliseconds from `a=ptime`/`a=maxptime`; some devices write fractions (`20.0`).
fn parse_millis(value: &str) -> Option<u32> {
    let value = value.trim();
    value.parse::<u32>().ok().or_else(|| {
        value
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 1.0 && *v <= 10_000.0)
            .map(|v| v.round() as u32)
    })
}

fn offer_bundles(offer: &SessionDescription, mid: &str) -> bool {
    session_attrs(offer, ATTR_KEY_GROUP).any(|group| {
        let mut tokens = group.split_whitespace();
        tokens.next() == Some("BUNDLE") && tokens.any(|t| t == mid)
    })
}

fn ranged_port(port: u16) -> RangedPort {
    RangedPort {
        // rtc-sdp stores ports as isize, which holds every u16 on the platforms we build for.
        value: port as isize,
        range: None,
    }
}

fn protos(text: &str) -> Vec<String> {
    text.split('/').map(str::to_owned).collect()
}

fn address_type(ip: IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(_) => "IP4",
        IpAddr::V6(_) => "IP6",
    }
}

fn session_skeleton(ip: IpAddr, session_id: u64, session_version: u64) -> SessionDescription {
    SessionDescription {
        version: 0,
        origin: Origin {
            username: "-".to_owned(),
            session_id,
            session_version,
            network_type: "IN".to_owned(),
            address_type: address_type(ip).to_owned(),
            unicast_address: ip.to_string(),
        },
        session_name: "-".to_owned(),
        connection_information: Some(ConnectionInformation {
            network_type: "IN".to_owned(),
            address_type: address_type(ip).to_owned(),
            address: Some(Address {
                address: ip.to_string(),
                ttl: None,
                range: None,
            }),
        }),
        time_descriptions: vec![TimeDescription {
            timing: Timing {
                start_time: 0,
                stop_time: 0,
            },
            repeat_times: vec![],
        }],
        ..Default::default()
    }
}

fn with_codec(media: MediaDescription, codec: &Codec, fmtp: String) -> MediaDescription {
    // rtc-sdp leaves the channel count out when given 0, which is how mono is usually written.
    let channels = if codec.channels > 1 {
        u16::from(codec.channels)
    } else {
        0
    };
    media.with_codec(
        codec.pt,
        codec.name.clone(),
        codec.clock_rate,
        channels,
        fmtp,
    )
}

/// An m-line of the offer rejected in the answer: port 0, same media, proto and formats
/// (RFC 3264 §6), and its `a=mid` so the browser can match it to its transceiver.
fn rejected_section(offered: &MediaDescription) -> MediaDescription {
    let mut section = MediaDescription {
        media_name: MediaName {
            media: offered.media_name.media.clone(),
            port: ranged_port(0),
            protos: offered.media_name.protos.clone(),
            formats: offered.media_name.formats.clone(),
        },
        ..Default::default()
    };
    if let Some(mid) = media_attr(offered, ATTR_KEY_MID) {
        section = section.with_value_attribute(ATTR_KEY_MID.to_owned(), mid.to_owned());
    }
    section
}

struct WebRtcSection<'a> {
    ips: &'a [IpAddr],
    port: u16,
    ice_ufrag: &'a str,
    ice_pwd: &'a str,
    fingerprint: &'a str,
    setup: &'a str,
    mid: Option<&'a str>,
    codecs: &'a [Codec],
    direction: Direction,
    ssrc: u32,
    cname: &'a str,
}

fn webrtc_audio_section(s: &WebRtcSection<'_>, protos: Vec<String>) -> MediaDescription {
    let mut media = MediaDescription {
        media_name: MediaName {
            media: "audio".to_owned(),
            port: ranged_port(s.port),
            protos,
            formats: vec![],
        },
        ..Default::default()
    }
    .with_ice_credentials(s.ice_ufrag.to_owned(), s.ice_pwd.to_owned())
    .with_value_attribute(ATTR_FINGERPRINT.to_owned(), s.fingerprint.to_owned())
    .with_value_attribute(ATTR_KEY_CONNECTION_SETUP.to_owned(), s.setup.to_owned());
    if let Some(mid) = s.mid {
        media = media.with_value_attribute(ATTR_KEY_MID.to_owned(), mid.to_owned());
    }
    let track = format!("{}-audio", s.cname);
    media = media
        .with_property_attribute(s.direction.attribute().to_owned())
        .with_value_attribute(ATTR_KEY_MSID.to_owned(), format!("{} {track}", s.cname))
        .with_property_attribute(ATTR_KEY_RTCPMUX.to_owned());
    for codec in s.codecs {
        media = with_codec(media, codec, codec.fmtp.clone().unwrap_or_default());
    }
    media = media
        .with_value_attribute(
            ATTR_KEY_SSRC.to_owned(),
            format!("{} cname:{}", s.ssrc, s.cname),
        )
        .with_value_attribute(
            ATTR_KEY_SSRC.to_owned(),
            format!("{} msid:{} {track}", s.ssrc, s.cname),
        );
    // One host candidate per address, each its own foundation (RFC 8445 §5.1.1.3: different
    // base addresses), preferred in the given order.
    for (i, ip) in s.ips.iter().enumerate() {
        let priority = HOST_CANDIDATE_PRIORITY - ((i as u32).min(0xffff) << 8);
        media = media.with_candidate(format!(
            "{} 1 udp {priority} {ip} {} typ host",
            i + 1,
            s.port
        ));
    }
    media.with_property_attribute(ATTR_KEY_END_OF_CANDIDATES.to_owned())
}

/// The address for `c=` and `o=`: the most preferred candidate's.
fn first_ip(ips: &[IpAddr]) -> Result<IpAddr, SdpError> {
    ips.first()
        .copied()
        .ok_or_else(|| SdpError::InvalidParam("no address for the host candidate".into()))
}

/// Caller-supplied text ends up inside SDP lines: a space would shift fields and a line
/// break would inject lines, so both are refused where a single token belongs.
fn check_token(what: &str, value: &str) -> Result<(), SdpError> {
    if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(SdpError::InvalidParam(format!(
            "{what} must be a non-empty token, got {value:?}"
        )));
    }
    Ok(())
}

fn check_line(what: &str, value: &str) -> Result<(), SdpError> {
    if value.chars().any(char::is_control) {
        return Err(SdpError::InvalidParam(format!(
            "{what} must not contain control characters, got {value:?}"
        )));
    }
    Ok(())
}

fn check_common(
    ice_ufrag: &str,
    ice_pwd: &str,
    fingerprint: &str,
    cname: &str,
    codecs: &[Codec],
) -> Result<(), SdpError> {
    check_token("ice-ufrag", ice_ufrag)?;
    check_token("ice-pwd", ice_pwd)?;
    check_token("cname", cname)?;
    check_line("fingerprint", fingerprint)?;
    match fingerprint.split_once(' ') {
        Some((alg, hex)) if !alg.is_empty() && !hex.is_empty() && !hex.contains(' ') => {}
        _ => {
            return Err(SdpError::InvalidParam(format!(
                "fingerprint must be \"<algorithm> <hex>\", got {fingerprint:?}"
            )))
        }
    }
    if codecs.is_empty() {
        return Err(SdpError::NoCommonCodec);
    }
    for codec in codecs {
        check_token("codec name", &codec.name)?;
        if let Some(fmtp) = &codec.fmtp {
            check_line("fmtp", fmtp)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const CHROME: &str = include_str!("../../fixtures/sdp/chrome-offer.sdp");
    const FIREFOX: &str = include_str!("../../fixtures/sdp/firefox-offer.sdp");
    const CHROME_AVD: &str =
        include_str!("../../fixtures/sdp/chrome-offer-audio-video-datachannel.sdp");
    const ASTERISK_ANSWER: &str = include_str!("../../fixtures/sdp/asterisk-answer.sdp");
    const SIPP_OFFER: &str = include_str!("../../fixtures/sdp/kamailio-sipp-offer.sdp");
    const ASTERISK_HOLD: &str = include_str!("../../fixtures/sdp/asterisk-hold-reinvite.sdp");
    const OLD_HOLD: &str = include_str!("../../fixtures/sdp/old-style-hold.sdp");

    const OUR_FP: &str = "sha-256 36:BC:A2:8C:86:43:65:5C:31:10:83:91:F4:7D:C6:CC:57:E8:91:A7:9D:95:57:52:C7:52:D5:2A:BA:42:22:08";
    const GW_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));

    fn reparse(sdp: &str) -> SessionDescription {
        SessionDescription::unmarshal(&mut Cursor::new(sdp.as_bytes())).unwrap()
    }

    fn attr<'a>(m: &'a MediaDescription, key: &str) -> Option<&'a str> {
        m.attributes
            .iter()
            .find(|a| a.key == key)
            .and_then(|a| a.value.as_deref())
    }

    fn answer_params<'a>(offer: &'a str, codecs: &'a [Codec]) -> WebRtcAnswerParams<'a> {
        WebRtcAnswerParams {
            offer,
            ips: &[GW_IP],
            port: 40000,
            ice_ufrag: "gWx1",
            ice_pwd: "Vq8pJ2kLmN4rT6yU0wE3zA5s",
            fingerprint: OUR_FP,
            setup: "passive",
            codecs,
            direction: Direction::SendRecv,
            ssrc: 0x1234_5678,
            cname: "gw-cname",
        }
    }

    fn offer_params(codecs: &[Codec]) -> WebRtcOfferParams<'_> {
        WebRtcOfferParams {
            ips: &[GW_IP],
            port: 40002,
            ice_ufrag: "gWx2",
            ice_pwd: "Vq8pJ2kLmN4rT6yU0wE3zA5t",
            fingerprint: OUR_FP,
            codecs,
            direction: Direction::SendRecv,
            ssrc: 99,
            cname: "gw-offer",
            session_id: 7,
            session_version: 1,
        }
    }

    fn plain_params(codecs: &[Codec]) -> PlainParams<'_> {
        PlainParams {
            ip: IpAddr::V4(Ipv4Addr::new(10, 20, 0, 2)),
            port: 20_000,
            codecs,
            direction: Direction::SendRecv,
            session_id: 3_000_000_001,
            session_version: 1,
            ptime: 20,
        }
    }

    #[test]
    fn parses_chrome_offer() {
        let d = parse_webrtc(CHROME).unwrap();
        assert_eq!(d.mline_index, 0);
        assert_eq!(d.ice_ufrag, "bqwp");
        assert_eq!(d.ice_pwd, "zpiDrfDnl0tp6t7o9NVcoZQ1");
        assert!(d.fingerprint.starts_with("sha-256 7D:9A:4A:5A"));
        assert!(d.fingerprint.ends_with("A5:63:3D"));
        assert_eq!(d.setup, "actpass");
        assert_eq!(d.mid.as_deref(), Some("0"));
        assert_eq!(d.direction, Direction::SendRecv);
        assert!(d.rtcp_mux);
        assert_eq!(d.ssrc, Some(1_887_325_339));
        let pts: Vec<u8> = d.codecs.iter().map(|c| c.pt).collect();
        assert_eq!(pts, [111, 63, 9, 0, 8, 13, 110, 126]);
        assert_eq!(
            d.codecs[0],
            Codec::new(111, "opus", 48000, 2).with_fmtp("minptime=10;useinbandfec=1")
        );
        assert_eq!(d.codecs[1].fmtp.as_deref(), Some("111/111"));
        assert_eq!(d.codecs[2], Codec::g722());
        assert_eq!(d.codecs[3], Codec::pcmu());
        assert_eq!(d.codecs[4], Codec::pcma());
        assert_eq!(d.codecs[6], Codec::new(110, TELEPHONE_EVENT, 48000, 1));
        assert_eq!(d.codecs[7], Codec::new(126, TELEPHONE_EVENT, 8000, 1));
        assert_eq!(d.candidates.len(), 2);
        assert!(d.candidates[0].starts_with("3320452581 1 udp 2113937151 "));
        assert!(d.candidates[1].contains("typ srflx"));
    }

    #[test]
    fn parses_firefox_offer_with_session_level_fingerprint() {
        let d = parse_webrtc(FIREFOX).unwrap();
        assert_eq!(d.ice_ufrag, "3c485924");
        assert_eq!(d.ice_pwd, "868a797092722d0486cfbc7e88e21c1d");
        assert!(d.fingerprint.starts_with("sha-256 75:48:38:6D"));
        assert_eq!(d.setup, "actpass");
        assert_eq!(d.mid.as_deref(), Some("0"));
        assert!(d.rtcp_mux);
        assert_eq!(d.ssrc, Some(2_320_219_381));
        assert_eq!(
            d.codecs,
            vec![
                Codec::new(109, "opus", 48000, 2)
                    .with_fmtp("maxplaybackrate=48000;stereo=1;useinbandfec=1"),
                Codec::g722(),
                Codec::pcmu(),
                Codec::pcma(),
                Codec::new(101, TELEPHONE_EVENT, 8000, 1).with_fmtp("0-15"),
            ]
        );
        assert_eq!(d.candidates.len(), 3);
        assert!(d.candidates[1].contains("tcptype active"));
    }

    #[test]
    fn accepts_bare_lf_and_fmtp_with_spaces() {
        let lf = FIREFOX
            .replace("\r\n", "\n")
            .replace("stereo=1;useinbandfec=1", "stereo=1; useinbandfec=1");
        let d = parse_webrtc(&lf).unwrap();
        assert_eq!(d.ice_ufrag, "3c485924");
        assert_eq!(
            d.codecs[0].fmtp.as_deref(),
            Some("maxplaybackrate=48000;stereo=1; useinbandfec=1")
        );
        let d = parse_plain(&ASTERISK_ANSWER.replace("\r\n", "\n")).unwrap();
        assert_eq!(d.port, 17372);
    }

    #[test]
    fn parses_three_mline_offer_using_audio() {
        let d = parse_webrtc(CHROME_AVD).unwrap();
        assert_eq!(d.mline_index, 0);
        assert_eq!(d.ice_ufrag, "aGfc");
        assert_eq!(d.mid.as_deref(), Some("0"));
        assert!(d.candidates.is_empty());
        assert_eq!(d.codecs.len(), 8);
        assert!(d.codecs.iter().all(|c| c.clock_rate != 90000));
    }

    #[test]
    fn parses_asterisk_answer() {
        let d = parse_plain(ASTERISK_ANSWER).unwrap();
        assert_eq!(d.addr, "10.20.0.15".parse::<IpAddr>().unwrap());
        assert_eq!(d.port, 17372);
        assert_eq!(
            d.codecs,
            vec![
                Codec::pcmu(),
                Codec::new(101, TELEPHONE_EVENT, 8000, 1).with_fmtp("0-16")
            ]
        );
        assert_eq!(d.direction, Direction::SendRecv);
        assert_eq!(d.ptime, Some(20));
        assert_eq!(d.maxptime, Some(150));
        assert_eq!(d.rtcp, None);
        assert!(!d.is_hold());
    }

    #[test]
    fn parses_sipp_offer() {
        let d = parse_plain(SIPP_OFFER).unwrap();
        assert_eq!(d.addr, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(d.port, 6000);
        assert_eq!(d.codecs, vec![Codec::pcmu()]);
        assert_eq!(d.direction, Direction::SendRecv);
        assert_eq!(d.ptime, None);
    }

    #[test]
    fn parses_hold_reinvites() {
        let d = parse_plain(ASTERISK_HOLD).unwrap();
        assert_eq!(d.direction, Direction::SendOnly);
        assert!(d.is_hold());
        assert_eq!(d.port, 17372);

        let d = parse_plain(OLD_HOLD).unwrap();
        assert!(d.addr.is_unspecified());
        assert!(d.is_hold());
        assert!(!d.direction.receives());
        assert_eq!(d.port, 18000);
        let names: Vec<&str> = d.codecs.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["PCMA", "PCMU", TELEPHONE_EVENT]);
        assert_eq!(d.codecs[2].fmtp.as_deref(), Some("0-15"));

        let recvonly_zero = OLD_HOLD.replace("a=ptime:20", "a=recvonly");
        assert_eq!(
            parse_plain(&recvonly_zero).unwrap().direction,
            Direction::Inactive
        );
    }

    #[test]
    fn plain_static_payload_types_without_rtpmap() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
                   m=audio 30000 RTP/AVP 18 9 8 0 3 96\r\na=fmtp:18 annexb=no\r\n";
        let d = parse_plain(sdp).unwrap();
        assert_eq!(
            d.codecs,
            vec![
                Codec::new(18, "G729", 8000, 1).with_fmtp("annexb=no"),
                Codec::g722(),
                Codec::pcma(),
                Codec::pcmu(),
                Codec::new(3, "GSM", 8000, 1),
            ],
            "dynamic 96 without rtpmap is skipped"
        );
    }

    #[test]
    fn plain_media_level_connection_and_rtcp_win() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
                   m=audio 30000 RTP/AVP 0\r\nc=IN IP4 10.0.0.9\r\n\
                   a=rtcp:30011 IN IP4 10.0.0.10\r\na=inactive\r\n";
        let d = parse_plain(sdp).unwrap();
        assert_eq!(d.addr, "10.0.0.9".parse::<IpAddr>().unwrap());
        assert_eq!(d.rtcp, Some((Some("10.0.0.10".parse().unwrap()), 30011)));
        assert_eq!(d.direction, Direction::Inactive);

        let bare_rtcp = sdp.replace("a=rtcp:30011 IN IP4 10.0.0.10", "a=rtcp:30001");
        assert_eq!(parse_plain(&bare_rtcp).unwrap().rtcp, Some((None, 30001)));
    }

    #[test]
    fn plain_session_level_direction_and_ipv6() {
        let sdp = "v=0\r\no=- 1 1 IN IP6 2001:db8::1\r\ns=-\r\nc=IN IP6 2001:db8::1\r\nt=0 0\r\n\
                   a=recvonly\r\nm=audio 30000 RTP/AVP 8\r\n";
        let d = parse_plain(sdp).unwrap();
        assert_eq!(d.addr, "2001:db8::1".parse::<IpAddr>().unwrap());
        assert_eq!(d.direction, Direction::RecvOnly);
    }

    #[test]
    fn plain_prefers_live_rtp_avp_audio() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
                   m=video 30010 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n\
                   m=audio 30020 RTP/SAVP 0\r\n\
                   m=audio 0 RTP/AVP 0\r\n\
                   m=audio 30000 RTP/AVP 8\r\n";
        let d = parse_plain(sdp).unwrap();
        assert_eq!(d.mline_index, 3);
        assert_eq!(d.port, 30000);

        let srtp_only = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
                         m=audio 30020 RTP/SAVP 0\r\n";
        assert!(matches!(
            parse_plain(srtp_only),
            Err(SdpError::Unsupported(_))
        ));
    }

    #[test]
    fn plain_errors() {
        let no_c = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\n";
        assert!(matches!(
            parse_plain(no_c),
            Err(SdpError::MissingConnection)
        ));
        let fqdn = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 pbx.example.com\r\nt=0 0\r\n\
                    m=audio 30000 RTP/AVP 0\r\n";
        assert!(matches!(parse_plain(fqdn), Err(SdpError::Unsupported(_))));
        let video_only = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
                          m=video 30000 RTP/AVP 96\r\n";
        assert!(matches!(parse_plain(video_only), Err(SdpError::NoAudio)));
    }

    fn chrome_answer_codecs(offer: &WebRtcDescription) -> Vec<Codec> {
        let pbx = [Codec::pcmu(), Codec::telephone_event(101, 8000)];
        let (_, chosen) = choose_common(&pbx, &passthrough_candidates(&offer.codecs)).unwrap();
        let (_, dtmf) = common_dtmf(&pbx, &offer.codecs, chosen.clock_rate).unwrap();
        vec![chosen, dtmf]
    }

    #[test]
    fn answer_to_chrome_round_trips() {
        let offer = parse_webrtc(CHROME).unwrap();
        let codecs = chrome_answer_codecs(&offer);
        assert_eq!(codecs[0].pt, 0);
        assert_eq!(codecs[1].pt, 126, "the offer's telephone-event/8000 PT");
        let answer = build_webrtc_answer(&answer_params(CHROME, &codecs)).unwrap();

        let raw = reparse(&answer);
        assert!(raw.attributes.iter().any(|a| a.key == "ice-lite"));
        assert_eq!(
            raw.attributes
                .iter()
                .find(|a| a.key == "group")
                .and_then(|a| a.value.as_deref()),
            Some("BUNDLE 0")
        );
        assert_eq!(raw.origin.session_id, 0x1234_5678);
        assert_eq!(raw.origin.session_version, 2, "Chrome's offer version");
        assert_eq!(raw.media_descriptions.len(), 1);
        let m = &raw.media_descriptions[0];
        assert_eq!(
            m.media_name.to_string(),
            "audio 40000 UDP/TLS/RTP/SAVPF 0 126"
        );
        assert_eq!(
            m.connection_information
                .as_ref()
                .or(raw.connection_information.as_ref())
                .and_then(|c| c.address.as_ref())
                .map(|a| a.address.as_str()),
            Some("192.0.2.10")
        );
        assert_eq!(attr(m, "setup"), Some("passive"));
        assert_eq!(attr(m, "fingerprint"), Some(OUR_FP));
        assert!(m.has_attribute("rtcp-mux"));
        assert!(m.has_attribute("end-of-candidates"));
        assert_eq!(
            attr(m, "candidate"),
            Some("1 1 udp 2130706431 192.0.2.10 40000 typ host")
        );
        assert!(m
            .attributes
            .iter()
            .any(|a| a.key == "ssrc" && a.value.as_deref() == Some("305419896 cname:gw-cname")));
        assert!(attr(m, "msid").is_some());

        let back = parse_webrtc(&answer).unwrap();
        assert_eq!(back.ice_ufrag, "gWx1");
        assert_eq!(back.ice_pwd, "Vq8pJ2kLmN4rT6yU0wE3zA5s");
        assert_eq!(back.fingerprint, OUR_FP);
        assert_eq!(back.setup, "passive");
        assert_eq!(back.mid.as_deref(), Some("0"));
        assert_eq!(back.direction, Direction::SendRecv);
        assert_eq!(back.ssrc, Some(0x1234_5678));
        assert_eq!(back.codecs, codecs);
        assert_eq!(back.candidates.len(), 1);
    }

    #[test]
    fn answer_keeps_opus_pt_and_fmtp() {
        let offer = parse_webrtc(FIREFOX).unwrap();
        let ours = default_webrtc_codecs();
        let (_, opus) = choose_common(&ours, &offer.codecs).unwrap();
        assert_eq!(opus.pt, 109);
        let mut p = answer_params(FIREFOX, std::slice::from_ref(&opus));
        p.setup = "active";
        p.direction = Direction::SendOnly.answer_to(Direction::SendRecv);
        let back = parse_webrtc(&build_webrtc_answer(&p).unwrap()).unwrap();
        assert_eq!(back.codecs, vec![opus]);
        assert_eq!(back.setup, "active");
        assert_eq!(back.direction, Direction::RecvOnly);
    }

    #[test]
    fn answer_to_three_mline_offer_rejects_others() {
        let offer = parse_webrtc(CHROME_AVD).unwrap();
        let codecs = chrome_answer_codecs(&offer);
        let answer = build_webrtc_answer(&answer_params(CHROME_AVD, &codecs)).unwrap();
        let raw = reparse(&answer);
        let offered = reparse(CHROME_AVD);
        assert_eq!(raw.media_descriptions.len(), 3);
        for (ours, theirs) in raw
            .media_descriptions
            .iter()
            .zip(&offered.media_descriptions)
        {
            assert_eq!(ours.media_name.media, theirs.media_name.media);
            assert_eq!(ours.media_name.protos, theirs.media_name.protos);
            assert_eq!(attr(ours, "mid"), attr(theirs, "mid"));
        }
        assert_eq!(raw.media_descriptions[0].media_name.port.value, 40000);
        for rejected in &raw.media_descriptions[1..] {
            assert_eq!(rejected.media_name.port.value, 0);
            assert!(!rejected.media_name.formats.is_empty());
        }
        assert_eq!(
            raw.media_descriptions[2].media_name.to_string(),
            "application 0 UDP/DTLS/SCTP webrtc-datachannel"
        );
        let groups: Vec<&str> = raw
            .attributes
            .iter()
            .filter(|a| a.key == "group")
            .filter_map(|a| a.value.as_deref())
            .collect();
        assert_eq!(groups, ["BUNDLE 0"], "rejected mids leave the BUNDLE group");
        assert_eq!(parse_webrtc(&answer).unwrap().mline_index, 0);
    }

    #[test]
    fn answer_mirrors_audio_that_is_not_first() {
        let mut offer = reparse(CHROME_AVD);
        offer.media_descriptions.rotate_left(1);
        let offer = offer.marshal();
        let parsed = parse_webrtc(&offer).unwrap();
        assert_eq!(parsed.mline_index, 2);
        let codecs = [Codec::pcma()];
        let answer = build_webrtc_answer(&answer_params(&offer, &codecs)).unwrap();
        let raw = reparse(&answer);
        let kinds: Vec<(&str, isize)> = raw
            .media_descriptions
            .iter()
            .map(|m| (m.media_name.media.as_str(), m.media_name.port.value))
            .collect();
        assert_eq!(kinds, [("video", 0), ("application", 0), ("audio", 40000)]);
    }

    #[test]
    fn answer_rejects_bad_params() {
        let codecs = [Codec::pcmu()];
        let mut p = answer_params(CHROME, &codecs);
        p.setup = "actpass";
        assert!(matches!(
            build_webrtc_answer(&p),
            Err(SdpError::InvalidParam(_))
        ));

        let g729 = [Codec::new(18, "G729", 8000, 1)];
        assert!(matches!(
            build_webrtc_answer(&answer_params(CHROME, &g729)),
            Err(SdpError::InvalidParam(_))
        ));
        assert!(matches!(
            build_webrtc_answer(&answer_params(CHROME, &[])),
            Err(SdpError::NoCommonCodec)
        ));

        let mut p = answer_params(CHROME, &codecs);
        p.cname = "x\r\na=evil";
        assert!(matches!(
            build_webrtc_answer(&p),
            Err(SdpError::InvalidParam(_))
        ));

        let no_mux = CHROME.replace("a=rtcp-mux\r\n", "");
        assert!(matches!(
            build_webrtc_answer(&answer_params(&no_mux, &codecs)),
            Err(SdpError::Unsupported(_))
        ));
    }

    #[test]
    fn offer_to_browser_round_trips() {
        let codecs = default_webrtc_codecs();
        let sdp = build_webrtc_offer(&offer_params(&codecs)).unwrap();
        let raw = reparse(&sdp);
        assert!(raw.has_attribute("ice-lite"));
        assert_eq!(raw.attribute("group").map(String::as_str), Some("BUNDLE 0"));
        assert_eq!(raw.origin.session_version, 1);
        let m = &raw.media_descriptions[0];
        assert_eq!(
            m.media_name.to_string(),
            "audio 40002 UDP/TLS/RTP/SAVPF 111 0 8 9 101 110"
        );
        assert_eq!(attr(m, "setup"), Some("actpass"));

        let back = parse_webrtc(&sdp).unwrap();
        assert_eq!(back.codecs, codecs);
        assert_eq!(back.mid.as_deref(), Some("0"));
        assert_eq!(back.setup, "actpass");
        assert!(back.rtcp_mux);
        assert_eq!(
            back.candidates,
            ["1 1 udp 2130706431 192.0.2.10 40002 typ host"]
        );
    }

    #[test]
    fn offer_over_ipv6() {
        let codecs = [Codec::pcmu()];
        let mut p = offer_params(&codecs);
        p.ips = &[IpAddr::V6(Ipv6Addr::LOCALHOST)];
        let sdp = build_webrtc_offer(&p).unwrap();
        assert!(sdp.contains("o=- 7 1 IN IP6 ::1\r\n"));
        assert!(sdp.contains("c=IN IP6 ::1\r\n"));
        assert!(sdp.contains("a=candidate:1 1 udp 2130706431 ::1 40002 typ host\r\n"));
        parse_webrtc(&sdp).unwrap();
    }

    #[test]
    fn one_host_candidate_per_address_in_order_of_preference() {
        let codecs = [Codec::pcmu()];
        let mut p = offer_params(&codecs);
        let ips = [
            GW_IP,
            "2001:db8::7".parse().unwrap(),
            "127.0.0.1".parse().unwrap(),
        ];
        p.ips = &ips;
        let back = parse_webrtc(&build_webrtc_offer(&p).unwrap()).unwrap();
        assert_eq!(
            back.candidates,
            [
                "1 1 udp 2130706431 192.0.2.10 40002 typ host",
                "2 1 udp 2130706175 2001:db8::7 40002 typ host",
                "3 1 udp 2130705919 127.0.0.1 40002 typ host",
            ]
        );
        p.ips = &[];
        assert!(matches!(
            build_webrtc_offer(&p),
            Err(SdpError::InvalidParam(_))
        ));
    }

    #[test]
    fn plain_offer_round_trips() {
        let codecs = [
            Codec::pcma(),
            Codec::pcmu(),
            Codec::g722(),
            Codec::new(101, TELEPHONE_EVENT, 8000, 1),
        ];
        let mut p = plain_params(&codecs);
        p.direction = Direction::SendOnly;
        p.session_version = 2;
        let sdp = build_plain(&p).unwrap();
        assert!(sdp.starts_with(
            "v=0\r\no=- 3000000001 2 IN IP4 10.20.0.2\r\ns=-\r\nc=IN IP4 10.20.0.2\r\nt=0 0\r\n\
             m=audio 20000 RTP/AVP 8 0 9 101\r\n"
        ));
        assert!(sdp.contains("a=rtpmap:0 PCMU/8000\r\n"));
        assert!(sdp.contains("a=rtpmap:9 G722/8000\r\n"));
        assert!(sdp.contains("a=fmtp:101 0-16\r\n"));
        assert!(sdp.contains("a=ptime:20\r\n"));
        assert!(sdp.contains("a=sendonly\r\n"));

        let back = parse_plain(&sdp).unwrap();
        assert_eq!(back.addr, p.ip);
        assert_eq!(back.port, 20_000);
        assert_eq!(back.direction, Direction::SendOnly);
        assert_eq!(back.ptime, Some(20));
        let mut expected = codecs.to_vec();
        expected[3].fmtp = Some("0-16".to_owned());
        assert_eq!(back.codecs, expected);

        for direction in [
            Direction::SendRecv,
            Direction::RecvOnly,
            Direction::Inactive,
        ] {
            p.direction = direction;
            assert_eq!(
                parse_plain(&build_plain(&p).unwrap()).unwrap().direction,
                direction
            );
        }
    }

    #[test]
    fn plain_answer_mirrors_offer_mlines() {
        let offer = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
                     m=video 30010 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n\
                     m=audio 30000 RTP/AVP 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\n";
        let theirs = parse_plain(offer).unwrap();
        let (_, chosen) = choose_common(&[Codec::pcmu(), Codec::pcma()], &theirs.codecs).unwrap();
        assert_eq!(chosen, Codec::pcma(), "their preference wins");
        let codecs = [chosen, Codec::telephone_event(101, 8000)];
        let sdp = build_plain_answer(offer, &plain_params(&codecs)).unwrap();
        let raw = reparse(&sdp);
        assert_eq!(raw.media_descriptions.len(), 2);
        assert_eq!(
            raw.media_descriptions[0].media_name.to_string(),
            "video 0 RTP/AVP 96"
        );
        assert_eq!(
            raw.media_descriptions[1].media_name.to_string(),
            "audio 20000 RTP/AVP 8 101"
        );
        let back = parse_plain(&sdp).unwrap();
        assert_eq!(back.mline_index, 1);
        assert_eq!(back.codecs, codecs);
    }

    #[test]
    fn plain_ipv6_and_errors() {
        let codecs = [Codec::pcmu()];
        let mut p = plain_params(&codecs);
        p.ip = "2001:db8::2".parse().unwrap();
        p.ptime = 0;
        let sdp = build_plain(&p).unwrap();
        assert!(sdp.contains("c=IN IP6 2001:db8::2\r\n"));
        assert!(!sdp.contains("ptime"));
        assert_eq!(parse_plain(&sdp).unwrap().addr, p.ip);

        assert!(matches!(
            build_plain(&plain_params(&[])),
            Err(SdpError::NoCommonCodec)
        ));
        let bad = [Codec::new(0, "PC MU", 8000, 1)];
        assert!(matches!(
            build_plain(&plain_params(&bad)),
            Err(SdpError::InvalidParam(_))
        ));
    }

    #[test]
    fn passthrough_prefers_g711_then_g722_then_opus() {
        let chrome = parse_webrtc(CHROME).unwrap();
        let pts: Vec<u8> = passthrough_candidates(&chrome.codecs)
            .iter()
            .map(|c| c.pt)
            .collect();
        assert_eq!(pts, [0, 8, 9, 111, 110, 126]);

        let pcma_first = [Codec::pcma(), Codec::opus(111), Codec::pcmu()];
        let pts: Vec<u8> = passthrough_candidates(&pcma_first)
            .iter()
            .map(|c| c.pt)
            .collect();
        assert_eq!(pts, [8, 0, 111], "browser order kept within G.711");
    }

    #[test]
    fn choose_common_cases() {
        let ours = [
            Codec::pcmu(),
            Codec::pcma(),
            Codec::telephone_event(101, 8000),
        ];
        // Their order wins over ours.
        let theirs = [Codec::pcma(), Codec::pcmu()];
        assert_eq!(
            choose_common(&ours, &theirs),
            Some((Codec::pcma(), Codec::pcma()))
        );
        // Names match case-insensitively; each side keeps its own PT.
        let theirs = [Codec::new(96, "pcmu", 8000, 1)];
        assert_eq!(
            choose_common(&ours, &theirs),
            Some((Codec::pcmu(), Codec::new(96, "pcmu", 8000, 1)))
        );
        // Clock rate and channels must match too.
        let theirs = [
            Codec::new(0, "PCMU", 16000, 1),
            Codec::new(8, "PCMA", 8000, 2),
        ];
        assert_eq!(choose_common(&ours, &theirs), None);
        // No common codec; telephone-event alone is not a codec to choose.
        let theirs = [
            Codec::new(18, "G729", 8000, 1),
            Codec::telephone_event(101, 8000),
        ];
        assert_eq!(choose_common(&ours, &theirs), None);
        assert_eq!(choose_common(&[], &theirs), None);
        // Opus between browser PT 111 and a PBX's PT 107.
        let pbx = [Codec::new(107, "opus", 48000, 2)];
        assert_eq!(
            choose_common(&pbx, &[Codec::opus(111)]).map(|(o, t)| (o.pt, t.pt)),
            Some((107, 111))
        );
    }

    fn pts(codecs: &[Codec]) -> Vec<(u8, String, u32)> {
        codecs
            .iter()
            .map(|c| (c.pt, c.name.clone(), c.clock_rate))
            .collect()
    }

    #[test]
    fn opus_only_browser_gets_g711_offered_to_sip_after_opus() {
        let offer = [
            Codec::opus(111),
            Codec::telephone_event(110, 48000),
            Codec::telephone_event(126, 8000),
        ];
        let answer = browser_answer_codecs(&offer);
        assert_eq!(
            pts(&answer),
            [
                (111, "opus".into(), 48000),
                (110, "telephone-event".into(), 48000)
            ]
        );
        let sip = sip_offer_codecs(&answer);
        assert_eq!(
            pts(&sip),
            [
                (111, "opus".into(), 48000),
                (0, "PCMU".into(), 8000),
                (8, "PCMA".into(), 8000),
                (110, "telephone-event".into(), 48000),
                (101, "telephone-event".into(), 8000),
            ]
        );
        // A far end with PCMU only: transcoding, the far end's PCMU against browser Opus.
        let far = [Codec::pcmu(), Codec::telephone_event(101, 8000)];
        let choice = choose_legs(&answer, &sip, &far).expect("joinable");
        assert_eq!(
            choice,
            CodecChoice::Transcode {
                browser: Codec::opus(111),
                sip: Codec::pcmu()
            }
        );
        assert_eq!(choice.label(), "opus/48000 <-> PCMU/8000");
        // A far end that also has Opus: passthrough, whatever its order.
        let far = [Codec::pcma(), Codec::new(107, "opus", 48000, 2)];
        let choice = choose_legs(&answer, &sip, &far).expect("joinable");
        assert!(matches!(choice, CodecChoice::Passthrough { ref sip, .. } if sip.pt == 107));
        assert_eq!(choice.label(), "opus");
        // G.729 only: nothing to do.
        assert_eq!(
            choose_legs(&answer, &sip, &[Codec::new(18, "G729", 8000, 1)]),
            None
        );
    }

    #[test]
    fn g711_browsers_keep_their_passthrough_offer() {
        let chrome = parse_webrtc(CHROME).unwrap();
        let answer = browser_answer_codecs(&chrome.codecs);
        let sip = sip_offer_codecs(&answer);
        let listed: Vec<u8> = sip.iter().map(|c| c.pt).collect();
        assert_eq!(
            listed,
            [0, 8, 9, 111, 126, 110],
            "no duplicates, nothing added"
        );
        let far = [Codec::pcmu()];
        assert_eq!(
            choose_legs(&answer, &sip, &far),
            Some(CodecChoice::Passthrough {
                browser: answer[0].clone(),
                sip: Codec::pcmu()
            })
        );
        // The far end picks PCMA although the browser sends PCMU: passthrough of PCMA, as
        // before (no G.711 A/µ transcoding).
        let far = [Codec::pcma()];
        assert!(matches!(
            choose_legs(&answer, &sip, &far),
            Some(CodecChoice::Passthrough { ref sip, .. }) if sip.pt == 8
        ));
    }

    #[test]
    fn incoming_g711_offers_opus_to_the_browser_and_its_answer_decides() {
        let sip_answer = [Codec::pcmu(), Codec::telephone_event(101, 8000)];
        let offer = browser_offer_codecs(&sip_answer);
        assert_eq!(
            pts(&offer),
            [
                (0, "PCMU".into(), 8000),
                (111, "opus".into(), 48000),
                (101, "telephone-event".into(), 8000),
                (110, "telephone-event".into(), 48000),
            ]
        );
        let far_offer = [Codec::pcmu(), Codec::telephone_event(101, 8000)];
        // Before the answer (our offer's order) and with a G.711 browser: passthrough.
        assert!(matches!(
            choose_legs(&offer, &sip_answer, &far_offer),
            Some(CodecChoice::Passthrough { .. })
        ));
        // An Opus-only browser answers Opus (first): transcoding.
        let opus_answer = [Codec::opus(111), Codec::telephone_event(110, 48000)];
        assert!(matches!(
            choose_legs(&opus_answer, &sip_answer, &far_offer),
            Some(CodecChoice::Transcode { .. })
        ));
        // Payload types the far end took are avoided; G.722 is not transcoded.
        let taken = [
            Codec::new(111, "PCMA", 8000, 1),
            Codec::telephone_event(110, 8000),
        ];
        let offer = browser_offer_codecs(&taken);
        let opus = offer.iter().find(|c| c.name == "opus").expect("opus");
        assert!(opus.pt != 111 && opus.pt != 110 && (96..=127).contains(&opus.pt));
        let te48 = offer
            .iter()
            .find(|c| c.is_telephone_event() && c.clock_rate == 48000)
            .expect("te");
        assert!(te48.pt != 111 && te48.pt != 110 && te48.pt != opus.pt);
        assert_eq!(browser_offer_codecs(&[Codec::g722()]), [Codec::g722()]);
    }

    #[test]
    fn common_dtmf_cases() {
        let chrome = parse_webrtc(CHROME).unwrap().codecs;
        let pbx = [Codec::pcmu(), Codec::telephone_event(101, 8000)];
        let (ours, theirs) = common_dtmf(&pbx, &chrome, 8000).unwrap();
        assert_eq!((ours.pt, theirs.pt), (101, 126));
        assert_eq!(common_dtmf(&pbx, &chrome, 48000), None);
        assert_eq!(common_dtmf(&[Codec::pcmu()], &chrome, 8000), None);
        let upper = [Codec::new(100, "TELEPHONE-EVENT", 8000, 1)];
        assert_eq!(
            common_dtmf(&pbx, &upper, 8000).map(|(o, t)| (o.pt, t.pt)),
            Some((101, 100))
        );
    }

    #[test]
    fn direction_reversed_per_rfc3264() {
        use Direction::*;
        assert_eq!(SendRecv.reversed(), SendRecv);
        assert_eq!(SendOnly.reversed(), RecvOnly);
        assert_eq!(RecvOnly.reversed(), SendOnly);
        assert_eq!(Inactive.reversed(), Inactive);
        for d in [SendRecv, SendOnly, RecvOnly, Inactive] {
            assert_eq!(d.reversed().reversed(), d);
            assert_eq!(d.answer_to(SendRecv), d.reversed());
            assert_eq!(Direction::from_flags(d.sends(), d.receives()), d);
        }
        // We hold (sendonly) while they offer sendrecv; they hold while we want sendrecv.
        assert_eq!(SendRecv.answer_to(SendOnly), SendOnly);
        assert_eq!(SendOnly.answer_to(SendOnly), Inactive);
        assert_eq!(Inactive.answer_to(SendRecv), Inactive);
    }

    #[test]
    fn malformed_webrtc_sdp_is_an_error() {
        assert!(matches!(parse_webrtc(""), Err(SdpError::Parse(_))));
        assert!(matches!(
            parse_webrtc("hello world"),
            Err(SdpError::Parse(_))
        ));
        assert!(matches!(
            parse_webrtc("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"),
            Err(SdpError::Parse(_))
        ));
        let no_media = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n";
        assert!(matches!(parse_webrtc(no_media), Err(SdpError::NoAudio)));
        let no_ufrag = CHROME.replace("a=ice-ufrag:bqwp\r\n", "");
        assert!(matches!(
            parse_webrtc(&no_ufrag),
            Err(SdpError::MissingIce("ice-ufrag"))
        ));
        let no_pwd = CHROME.replace("a=ice-pwd:", "a=x-ice-pwd:");
        assert!(matches!(
            parse_webrtc(&no_pwd),
            Err(SdpError::MissingIce("ice-pwd"))
        ));
        let no_fp = FIREFOX.replace("a=fingerprint:", "a=x-fingerprint:");
        assert!(matches!(
            parse_webrtc(&no_fp),
            Err(SdpError::MissingFingerprint)
        ));
        let bad_setup = CHROME.replace("a=setup:actpass", "a=setup:sideways");
        assert!(matches!(
            parse_webrtc(&bad_setup),
            Err(SdpError::Unsupported(_))
        ));
        assert!(matches!(
            parse_webrtc(SIPP_OFFER),
            Err(SdpError::Unsupported(_))
        ));
        let bad_port = CHROME.replace("m=audio 54400", "m=audio 99999");
        assert!(matches!(parse_webrtc(&bad_port), Err(SdpError::Parse(_))));
        assert!(matches!(
            build_webrtc_answer(&answer_params("garbage", &[Codec::pcmu()])),
            Err(SdpError::Parse(_))
        ));
    }

    /// Every prefix and a few thousand byte mutations of every fixture must give a value or
    /// an error, never a panic (rtc-sdp included).
    #[test]
    fn hostile_input_never_panics() {
        let fixtures = [
            CHROME,
            FIREFOX,
            CHROME_AVD,
            ASTERISK_ANSWER,
            SIPP_OFFER,
            ASTERISK_HOLD,
            OLD_HOLD,
        ];
        let codecs = [Codec::pcmu()];
        let exercise = |text: &str| {
            let _ = parse_webrtc(text);
            let _ = parse_plain(text);
            let _ = build_webrtc_answer(&answer_params(text, &codecs));
            let _ = build_plain_answer(text, &plain_params(&codecs));
        };
        for fixture in fixtures {
            for end in (0..=fixture.len()).filter(|i| fixture.is_char_boundary(*i)) {
                exercise(&fixture[..end]);
            }
        }
        let alphabet = b"=:/ \r\n0123456789-amvcoxs\x7f";
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..3000 {
            let mut bytes = fixtures[round % fixtures.len()].as_bytes().to_vec();
            for _ in 0..(1 + next() % 4) {
                let at = (next() as usize) % bytes.len();
                bytes[at] = alphabet[(next() as usize) % alphabet.len()];
            }
            exercise(&String::from_utf8_lossy(&bytes));
        }
    }
}
