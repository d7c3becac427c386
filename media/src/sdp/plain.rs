//! Plain RFC 3264 offer/answer over RTP/AVP toward the PBX: its offers and answers read
//! (connection address, `a=rtcp`, ptime, hold in either style), ours written.

use std::net::IpAddr;

use rtc_sdp::description::common::ConnectionInformation;
use rtc_sdp::description::media::MediaName;
use rtc_sdp::{MediaDescription, SessionDescription};

use super::{
    check_line, check_token, direction_of, is_audio, media_attr, media_codecs, protos, ranged_port,
    rejected_section, session_skeleton, unmarshal, with_codec, Codec, Direction, SdpError,
};

const ATTR_PTIME: &str = "ptime";
const ATTR_MAXPTIME: &str = "maxptime";
const ATTR_RTCP: &str = "rtcp";

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

fn is_plain_rtp(media: &MediaDescription) -> bool {
    let protos = media.media_name.protos.join("/");
    protos == "RTP/AVP" || protos == "RTP/AVPF"
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdp::fixtures::*;
    use crate::sdp::{choose_common, TELEPHONE_EVENT};
    use std::net::Ipv4Addr;

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
}
