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
//!
//! - `webrtc.rs`: JSEP toward the browser (DTLS-SRTP, ICE-lite, host candidates).
//! - `plain.rs`: RFC 3264 offer/answer over RTP/AVP toward the PBX (`a=rtcp`, hold).
//! - `codecs.rs`: codec policy, what each leg is offered and what the two legs end up with.
//! - here: what they share ([`Codec`], [`Direction`], [`SdpError`]) and the helpers that read
//!   and write m-lines; everything public is re-exported here, so callers name `sdp::X` only.

use std::io::Cursor;
use std::net::IpAddr;

use rtc_sdp::description::common::{Address, Attribute, ConnectionInformation};
use rtc_sdp::description::media::{MediaName, RangedPort};
use rtc_sdp::description::session::{
    Origin, TimeDescription, Timing, ATTR_KEY_INACTIVE, ATTR_KEY_MID, ATTR_KEY_RECV_ONLY,
    ATTR_KEY_SEND_ONLY, ATTR_KEY_SEND_RECV,
};
use rtc_sdp::{MediaDescription, SessionDescription};

mod codecs;
mod plain;
mod webrtc;

pub use codecs::{
    browser_answer_codecs, browser_offer_codecs, choose_common, choose_legs, common_dtmf,
    default_webrtc_codecs, is_g711, passthrough_candidates, sip_offer_codecs, CodecChoice,
};
pub use plain::{build_plain, build_plain_answer, parse_plain, PlainDescription, PlainParams};
pub use webrtc::{
    build_webrtc_answer, build_webrtc_offer, parse_webrtc, PassiveTcp, WebRtcAnswerParams,
    WebRtcDescription, WebRtcOfferParams,
};

// The helpers below stay private to this file: the three submodules see them as their
// parent's, and nothing outside `sdp` should.

const ATTR_RTPMAP: &str = "rtpmap";
const ATTR_FMTP: &str = "fmtp";

/// Name of the RFC 4733 DTMF payload format.
pub const TELEPHONE_EVENT: &str = "telephone-event";

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

fn unmarshal(sdp: &str) -> Result<SessionDescription, SdpError> {
    SessionDescription::unmarshal(&mut Cursor::new(sdp.as_bytes()))
        .map_err(|e| SdpError::Parse(e.to_string()))
}

fn is_audio(media: &MediaDescription) -> bool {
    media.media_name.media == "audio"
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

#[cfg(test)]
pub(crate) mod fixtures {
    //! Sample SDPs from real browsers and PBXes, and builder parameters around them.

    use super::*;
    use std::io::Cursor;
    use std::net::Ipv4Addr;

    pub(crate) const CHROME: &str = include_str!("../../../fixtures/sdp/chrome-offer.sdp");
    pub(crate) const FIREFOX: &str = include_str!("../../../fixtures/sdp/firefox-offer.sdp");
    pub(crate) const CHROME_AVD: &str =
        include_str!("../../../fixtures/sdp/chrome-offer-audio-video-datachannel.sdp");
    pub(crate) const ASTERISK_ANSWER: &str =
        include_str!("../../../fixtures/sdp/asterisk-answer.sdp");
    pub(crate) const SIPP_OFFER: &str =
        include_str!("../../../fixtures/sdp/kamailio-sipp-offer.sdp");
    pub(crate) const ASTERISK_HOLD: &str =
        include_str!("../../../fixtures/sdp/asterisk-hold-reinvite.sdp");
    pub(crate) const OLD_HOLD: &str = include_str!("../../../fixtures/sdp/old-style-hold.sdp");

    pub(crate) const OUR_FP: &str = "sha-256 36:BC:A2:8C:86:43:65:5C:31:10:83:91:F4:7D:C6:CC:57:E8:91:A7:9D:95:57:52:C7:52:D5:2A:BA:42:22:08";
    pub(crate) const GW_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));

    pub(crate) fn reparse(sdp: &str) -> SessionDescription {
        SessionDescription::unmarshal(&mut Cursor::new(sdp.as_bytes())).unwrap()
    }

    pub(crate) fn attr<'a>(m: &'a MediaDescription, key: &str) -> Option<&'a str> {
        m.attributes
            .iter()
            .find(|a| a.key == key)
            .and_then(|a| a.value.as_deref())
    }

    pub(crate) fn answer_params<'a>(offer: &'a str, codecs: &'a [Codec]) -> WebRtcAnswerParams<'a> {
        WebRtcAnswerParams {
            offer,
            ips: &[GW_IP],
            port: 40000,
            tcp: None,
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

    pub(crate) fn offer_params(codecs: &[Codec]) -> WebRtcOfferParams<'_> {
        WebRtcOfferParams {
            ips: &[GW_IP],
            port: 40002,
            tcp: None,
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

    pub(crate) fn plain_params(codecs: &[Codec]) -> PlainParams<'_> {
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
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

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
