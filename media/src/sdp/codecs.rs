//! Codec policy: what the gateway offers or answers on each leg, and what the two legs end
//! up carrying (passthrough when they share a codec, Opus <-> G.711 transcoding otherwise).

use super::Codec;

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
    /// One G.711 law on the browser leg, the other on the SIP leg (a far end moved to PCMA
    /// while the browser sends PCMU): packets pass through with each payload byte mapped to
    /// the other law.
    Recode {
        /// PCMU or PCMA, with the browser leg's payload type.
        browser: Codec,
        /// The other law, with the SIP leg's payload type.
        sip: Codec,
    },
}

impl CodecChoice {
    /// How REST shows it: the codec's name for passthrough (`PCMU`), both sides for
    /// transcoding (`opus/48000 <-> PCMU/8000`, `PCMU/8000 <-> PCMA/8000`).
    pub fn label(&self) -> String {
        match self {
            CodecChoice::Passthrough { browser, .. } => browser.name.clone(),
            CodecChoice::Transcode { browser, sip } | CodecChoice::Recode { browser, sip } => {
                format!(
                    "{}/{} <-> {}/{}",
                    browser.name, browser.clock_rate, sip.name, sip.clock_rate
                )
            }
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
    if let Some(browser) = browser
        .iter()
        .find(|c| c.is_primary() && c.same_format(&their))
    {
        return Some(CodecChoice::Passthrough {
            browser: browser.clone(),
            sip: their,
        });
    }
    let sends = sends.filter(|c| is_g711(c))?;
    is_g711(&their).then(|| CodecChoice::Recode {
        browser: sends.clone(),
        sip: their,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdp::fixtures::*;
    use crate::sdp::parse_webrtc;

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
    fn a_pcmu_browser_and_a_pcma_far_end_are_recoded() {
        let browser = [
            Codec::pcmu(),
            Codec::opus(111),
            Codec::telephone_event(101, 8000),
        ];
        let ours = sip_offer_codecs(&browser);
        let theirs = [Codec::pcma(), Codec::telephone_event(101, 8000)];
        let choice = choose_legs(&browser, &ours, &theirs);
        assert_eq!(
            choice,
            Some(CodecChoice::Recode {
                browser: Codec::pcmu(),
                sip: Codec::pcma()
            })
        );
        assert_eq!(
            choice.map(|c| c.label()).as_deref(),
            Some("PCMU/8000 <-> PCMA/8000")
        );
        // A browser that sends Opus is transcoded instead; one that has PCMA passes through.
        let opus_first = [Codec::opus(111), Codec::pcmu()];
        assert!(matches!(
            choose_legs(&opus_first, &sip_offer_codecs(&opus_first), &theirs),
            Some(CodecChoice::Transcode { .. })
        ));
        let has_pcma = [Codec::pcmu(), Codec::pcma()];
        assert!(matches!(
            choose_legs(&has_pcma, &has_pcma, &theirs),
            Some(CodecChoice::Passthrough { .. })
        ));
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
}
