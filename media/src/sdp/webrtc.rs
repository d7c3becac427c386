//! JSEP toward the browser: its offers and answers read, ours written as an ICE-lite,
//! DTLS-SRTP endpoint with one audio m-line (rtcp-mux, BUNDLE) and one host candidate per
//! address of ours.

use std::net::IpAddr;

use rtc_sdp::description::media::MediaName;
use rtc_sdp::description::session::{
    ATTR_KEY_CANDIDATE, ATTR_KEY_CONNECTION_SETUP, ATTR_KEY_END_OF_CANDIDATES, ATTR_KEY_GROUP,
    ATTR_KEY_ICELITE, ATTR_KEY_MID, ATTR_KEY_MSID, ATTR_KEY_MSID_SEMANTIC, ATTR_KEY_RTCPMUX,
    ATTR_KEY_SSRC,
};
use rtc_sdp::{MediaDescription, SessionDescription};

use super::{
    attr_either, check_line, check_token, direction_of, has_media_attr, is_audio, media_attr,
    media_attrs, media_codecs, protos, ranged_port, rejected_section, session_attrs,
    session_skeleton, unmarshal, with_codec, Codec, Direction, SdpError,
};

const ATTR_ICE_UFRAG: &str = "ice-ufrag";
const ATTR_ICE_PWD: &str = "ice-pwd";
const ATTR_FINGERPRINT: &str = "fingerprint";
const ATTR_BUNDLE_ONLY: &str = "bundle-only";

/// RFC 8445 §5.1.2.1 host-candidate priority for component 1 with the highest local
/// preference; each further address of ours gets a local preference one lower.
const HOST_CANDIDATE_PRIORITY: u32 = 2_130_706_431;

/// RFC 6544 §4.2 type preference of our TCP host candidates: below UDP host candidates' 126
/// (RFC 8445 §5.1.2.2), so a browser that can reach us over UDP prefers it.
const TCP_HOST_TYPE_PREFERENCE: u32 = 90;

/// RFC 6544 §4.2 direction preference of a passive host candidate (active 6, passive 4,
/// simultaneous-open 2), the top three bits of the local preference.
const PASSIVE_DIRECTION_PREFERENCE: u32 = 4;

/// Our ICE-TCP passive candidates (RFC 6544): the addresses a browser may connect to, and
/// the listening port.
#[derive(Clone, Copy, Debug)]
pub struct PassiveTcp<'a> {
    /// One candidate per address, in this order of preference.
    pub ips: &'a [IpAddr],
    /// The ICE-TCP listener's port.
    pub port: u16,
}

/// What the gateway needs from a browser's offer (or answer).
#[derive(Clone, Debug, PartialEq)]
pub struct WebRtcDescription {
    /// Index of the audio m-line used, for trickled candidates' `sdpMLineIndex`.
    pub mline_index: usize,
    /// How many m-lines the description has (a re-offer may not remove any, RFC 3264 §8).
    pub mlines: usize,
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
    /// ICE-TCP passive candidates besides the UDP ones, if ICE-TCP is on.
    pub tcp: Option<PassiveTcp<'a>>,
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
    /// ICE-TCP passive candidates besides the UDP ones, if ICE-TCP is on.
    pub tcp: Option<PassiveTcp<'a>>,
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
        mlines: desc.media_descriptions.len(),
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
                    tcp: p.tcp,
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
            tcp: p.tcp,
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

fn is_dtls_srtp(media: &MediaDescription) -> bool {
    let protos = &media.media_name.protos;
    protos.ends_with(&["RTP".to_owned(), "SAVPF".to_owned()])
        || protos.ends_with(&["RTP".to_owned(), "SAVP".to_owned()])
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

fn offer_bundles(offer: &SessionDescription, mid: &str) -> bool {
    session_attrs(offer, ATTR_KEY_GROUP).any(|group| {
        let mut tokens = group.split_whitespace();
        tokens.next() == Some("BUNDLE") && tokens.any(|t| t == mid)
    })
}

struct WebRtcSection<'a> {
    ips: &'a [IpAddr],
    port: u16,
    tcp: Option<PassiveTcp<'a>>,
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
    // Passive TCP candidates after them, with foundations of their own (another transport);
    // the browser connects, we never do.
    if let Some(tcp) = s.tcp {
        for (i, ip) in tcp.ips.iter().enumerate() {
            media = media.with_candidate(format!(
                "{} 1 tcp {} {ip} {} typ host tcptype passive",
                s.ips.len() + i + 1,
                tcp_host_priority(i),
                tcp.port
            ));
        }
    }
    media.with_property_attribute(ATTR_KEY_END_OF_CANDIDATES.to_owned())
}

/// RFC 6544 §4.2: priority = 2^24 type preference + 2^8 local preference + (256 - component),
/// the local preference being 2^13 direction preference + an other-preference that orders
/// our addresses (the `index`-th one lower by one).
fn tcp_host_priority(index: usize) -> u32 {
    let other = 8191 - (index as u32).min(8191);
    let local = (PASSIVE_DIRECTION_PREFERENCE << 13) | other;
    (TCP_HOST_TYPE_PREFERENCE << 24) | (local << 8) | (256 - 1)
}

/// The address for `c=` and `o=`: the most preferred candidate's.
fn first_ip(ips: &[IpAddr]) -> Result<IpAddr, SdpError> {
    ips.first()
        .copied()
        .ok_or_else(|| SdpError::InvalidParam("no address for the host candidate".into()))
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
    use crate::sdp::fixtures::*;
    use crate::sdp::{
        choose_common, common_dtmf, default_webrtc_codecs, passthrough_candidates, TELEPHONE_EVENT,
    };
    use std::net::Ipv6Addr;

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
    fn parses_three_mline_offer_using_audio() {
        let d = parse_webrtc(CHROME_AVD).unwrap();
        assert_eq!(d.mline_index, 0);
        assert_eq!(d.ice_ufrag, "aGfc");
        assert_eq!(d.mid.as_deref(), Some("0"));
        assert!(d.candidates.is_empty());
        assert_eq!(d.codecs.len(), 8);
        assert!(d.codecs.iter().all(|c| c.clock_rate != 90000));
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
    fn ice_tcp_adds_a_passive_candidate_per_address_below_every_udp_one() {
        let codecs = [Codec::pcmu()];
        let ips = [GW_IP, "2001:db8::7".parse().unwrap()];
        let mut p = offer_params(&codecs);
        p.ips = &ips;
        p.tcp = Some(PassiveTcp {
            ips: &ips,
            port: 4443,
        });
        let sdp = build_webrtc_offer(&p).unwrap();
        let back = parse_webrtc(&sdp).unwrap();
        assert_eq!(
            back.candidates,
            [
                "1 1 udp 2130706431 192.0.2.10 40002 typ host",
                "2 1 udp 2130706175 2001:db8::7 40002 typ host",
                "3 1 tcp 1520435199 192.0.2.10 4443 typ host tcptype passive",
                "4 1 tcp 1520434943 2001:db8::7 4443 typ host tcptype passive",
            ]
        );
        let m = &reparse(&sdp).media_descriptions[0];
        assert_eq!(
            m.attributes.last().map(|a| a.key.as_str()),
            Some("end-of-candidates")
        );

        // The same in an answer to Chrome's offer; without ICE-TCP, UDP only.
        let mut a = answer_params(CHROME, &codecs);
        a.tcp = Some(PassiveTcp {
            ips: &[GW_IP],
            port: 443,
        });
        let back = parse_webrtc(&build_webrtc_answer(&a).unwrap()).unwrap();
        assert_eq!(
            back.candidates,
            [
                "1 1 udp 2130706431 192.0.2.10 40000 typ host",
                "2 1 tcp 1520435199 192.0.2.10 443 typ host tcptype passive",
            ]
        );
        a.tcp = None;
        let back = parse_webrtc(&build_webrtc_answer(&a).unwrap()).unwrap();
        assert!(back.candidates.iter().all(|c| c.contains(" udp ")));
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
}
