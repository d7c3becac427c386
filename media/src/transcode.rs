//! Opus <-> G.711 transcoding, for calls whose legs share no codec: a browser that sends only
//! Opus and a far end that speaks only PCMU or PCMA.
//!
//! - G.711 µ-law and A-law ([`G711`]) by the standard bit arithmetic of ITU-T G.711 (as in
//!   Sun's reference `g711.c`), decoded through 256-entry tables built at compile time.
//! - [`OpusToG711`] decodes Opus straight to 8 kHz mono (libopus resamples internally and
//!   downmixes a stereo stream), so no resampler is needed, with packet-loss concealment and
//!   in-band FEC for lost packets.
//! - [`G711ToOpus`] encodes 8 kHz mono in the VoIP application at complexity 5: transcoding
//!   cost is dominated by the encoder, and complexity 5 is about half the CPU of the default
//!   10 for no audible loss on narrowband speech.
//! - [`BrowserToSip`] and [`SipToBrowser`] work on whole RTP packets of one direction: audio
//!   is transcoded, RFC 4733 telephone-events pass through with their timestamp and duration
//!   rescaled to the other leg's clock (48 kHz <-> 8 kHz), and every packet comes out with
//!   the input's sequence number and a timestamp on the output clock, so the relay's
//!   [`StreamRewriter`](crate::relay::StreamRewriter) keeps the receiver's stream continuous
//!   exactly as it does for passthrough.
//!
//! Nothing here allocates per packet: PCM and packet buffers are in the structs, the codecs'
//! state is allocated once by libopus when a call starts transcoding.

use audiopus::coder::{Decoder, Encoder};
use audiopus::{Application, Bitrate, Channels, SampleRate};
use rtc_rtp::header::Header;
use rtc_shared::marshal::{MarshalSize, Unmarshal};

use crate::relay::header;

/// Why a packet could not be transcoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TranscodeError {
    /// libopus refused to create a codec or to code a frame.
    #[error("opus: {0}")]
    Opus(String),
    /// Not an RTP packet, or its header does not fit in it.
    #[error("not an RTP packet")]
    NotRtp,
    /// A payload type this direction does not transcode or pass (comfort noise, …).
    #[error("payload type {0} is not transcoded")]
    Unmapped(u8),
    /// A G.711 packet whose duration Opus cannot carry in one frame (Opus frames are 2.5, 5,
    /// 10, 20, 40, 60, 80, 100 or 120 ms; 30 ms ptime is not among them).
    #[error("a G.711 packet of {0} samples has no Opus frame size")]
    FrameSize(usize),
    /// The caller's output buffer is too small.
    #[error("output buffer too small")]
    BufferTooSmall,
    /// A packet older than one already decoded (reordered or duplicated): the decoder has
    /// moved on, and its loss was concealed already.
    #[error("late or duplicate packet")]
    Late,
}

impl From<audiopus::Error> for TranscodeError {
    fn from(e: audiopus::Error) -> Self {
        TranscodeError::Opus(e.to_string())
    }
}

/// The G.711 variant of the SIP leg.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum G711 {
    /// µ-law, PCMU (RFC 3551 payload type 0).
    Ulaw,
    /// A-law, PCMA (RFC 3551 payload type 8).
    Alaw,
}

impl G711 {
    /// The variant named by an SDP encoding name (`PCMU`, `PCMA`, any case).
    pub fn from_name(name: &str) -> Option<G711> {
        if name.eq_ignore_ascii_case("PCMU") {
            Some(G711::Ulaw)
        } else if name.eq_ignore_ascii_case("PCMA") {
            Some(G711::Alaw)
        } else {
            None
        }
    }

    /// The SDP encoding name.
    pub fn name(self) -> &'static str {
        match self {
            G711::Ulaw => "PCMU",
            G711::Alaw => "PCMA",
        }
    }

    /// One 16-bit linear sample to a G.711 byte.
    #[inline]
    pub fn encode(self, sample: i16) -> u8 {
        match self {
            G711::Ulaw => linear_to_ulaw(sample),
            G711::Alaw => linear_to_alaw(sample),
        }
    }

    /// One G.711 byte to a 16-bit linear sample.
    #[inline]
    pub fn decode(self, byte: u8) -> i16 {
        match self {
            G711::Ulaw => ULAW_TABLE[usize::from(byte)],
            G711::Alaw => ALAW_TABLE[usize::from(byte)],
        }
    }
}

/// One G.711 law to the other, byte for byte (G.711 Table 3's conversion, here through the
/// linear value: decode one law, encode the other).
#[derive(Clone)]
pub struct LawMap([u8; 256]);

impl LawMap {
    /// The map from `from` bytes to `to` bytes.
    pub fn new(from: G711, to: G711) -> Self {
        let mut table = [0u8; 256];
        for (byte, out) in (0..=255u8).zip(table.iter_mut()) {
            *out = to.encode(from.decode(byte));
        }
        LawMap(table)
    }

    /// Maps a payload in place.
    #[inline]
    pub fn apply(&self, payload: &mut [u8]) {
        for b in payload {
            *b = self.0[usize::from(*b)];
        }
    }
}

/// µ-law encoding (G.711 §3): bias by 0x84 so every segment boundary is a power of two, then
/// the segment is the position of the highest set bit and the mantissa the 4 bits below it;
/// the code is sent inverted.
#[inline]
pub fn linear_to_ulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32635;
    let mut pcm = i32::from(sample);
    let mask: i32 = if pcm < 0 {
        pcm = -pcm;
        0x7F
    } else {
        0xFF
    };
    let pcm = pcm.min(CLIP) + BIAS;
    // pcm is in 0x84..=0x7FFF: its highest set bit is bit 7..=14, i.e. segment 0..=7.
    let segment = (31 - (pcm as u32).leading_zeros()) as i32 - 7;
    let code = (segment << 4) | ((pcm >> (segment + 3)) & 0x0F);
    (code ^ mask) as u8
}

/// µ-law decoding of one byte (the inverse of [`linear_to_ulaw`], at the middle of each
/// quantisation step).
pub const fn ulaw_to_linear(byte: u8) -> i16 {
    let u = !byte as i32;
    let t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4);
    (if u & 0x80 != 0 { 0x84 - t } else { t - 0x84 }) as i16
}

/// A-law encoding (G.711 §2): 13-bit magnitude, segment from its highest set bit, even bits
/// inverted (the 0x55 mask) so idle lines carry transitions.
#[inline]
pub fn linear_to_alaw(sample: i16) -> u8 {
    let pcm = i32::from(sample) >> 3;
    let (mask, magnitude) = if pcm >= 0 {
        (0xD5, pcm)
    } else {
        (0x55, -pcm - 1)
    };
    let magnitude = magnitude.min(0x0FFF);
    // Segment 0 and 1 share a step size; above, the segment is the highest bit's position - 4.
    let segment = (32 - (magnitude as u32).leading_zeros() as i32 - 5).max(0);
    let shift = if segment < 2 { 1 } else { segment };
    let code = (segment << 4) | ((magnitude >> shift) & 0x0F);
    (code ^ mask) as u8
}

/// A-law decoding of one byte (the inverse of [`linear_to_alaw`]).
pub const fn alaw_to_linear(byte: u8) -> i16 {
    let a = (byte ^ 0x55) as i32;
    let segment = (a & 0x70) >> 4;
    let mut t = (a & 0x0F) << 4;
    t = match segment {
        0 => t + 8,
        1 => t + 0x108,
        _ => (t + 0x108) << (segment - 1),
    };
    (if a & 0x80 != 0 { t } else { -t }) as i16
}

const fn table(ulaw: bool) -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if ulaw {
            ulaw_to_linear(i as u8)
        } else {
            alaw_to_linear(i as u8)
        };
        i += 1;
    }
    t
}

/// Decoding is a table look-up: 512 bytes each, built at compile time.
static ULAW_TABLE: [i16; 256] = table(true);
static ALAW_TABLE: [i16; 256] = table(false);

/// Sample rate of the G.711 side, and of both Opus coders (they work at 8 kHz).
pub const G711_RATE: u32 = 8000;
/// RTP clock of Opus (RFC 7587: always 48 kHz, whatever the coded bandwidth).
pub const OPUS_RATE: u32 = 48000;
/// Opus RTP timestamp units per 8 kHz sample.
pub const RATIO: u32 = OPUS_RATE / G711_RATE;
/// Largest Opus packet duration (120 ms) in 8 kHz samples: the decoder's PCM buffer.
const MAX_SAMPLES: usize = 960;
/// Complexity of our Opus encoder (0-10): see the module documentation.
pub const COMPLEXITY: u8 = 5;
/// Bitrate of our Opus encoder: narrowband speech is transparent well below this, and a
/// fixed figure keeps the browser's jitter buffer and bandwidth estimate steady.
const BITRATE: i32 = 24_000;

/// Browser -> SIP audio: Opus payloads decoded to 8 kHz and encoded as G.711.
pub struct OpusToG711 {
    decoder: Decoder,
    law: G711,
    pcm: [i16; MAX_SAMPLES],
    /// Duration of the last decoded packet, in 8 kHz samples: the length to conceal a lost
    /// packet with (20 ms until known).
    last_samples: usize,
}

impl OpusToG711 {
    /// A decoder whose output is `law`.
    pub fn new(law: G711) -> Result<Self, TranscodeError> {
        Ok(OpusToG711 {
            decoder: Decoder::new(SampleRate::Hz8000, Channels::Mono)?,
            law,
            pcm: [0; MAX_SAMPLES],
            last_samples: 160,
        })
    }

    /// Duration of the last decoded packet in 8 kHz samples (the length a lost packet is
    /// assumed to have).
    pub fn last_samples(&self) -> usize {
        self.last_samples
    }

    /// Decodes one Opus payload into G.711 bytes in `out`; returns how many (one per 8 kHz
    /// sample: 160 for a 20 ms packet).
    pub fn transcode(&mut self, opus: &[u8], out: &mut [u8]) -> Result<usize, TranscodeError> {
        let n = self.decoder.decode(Some(opus), &mut self.pcm[..], false)?;
        self.last_samples = n.clamp(1, MAX_SAMPLES);
        self.encode(n, out)
    }

    /// Audio for one lost packet of the last packet's duration: recovered from the in-band
    /// FEC of `next` (the packet after the loss) when given, else made up by libopus' packet
    /// loss concealment, which continues the signal instead of leaving a gap.
    pub fn conceal(
        &mut self,
        next: Option<&[u8]>,
        out: &mut [u8],
    ) -> Result<usize, TranscodeError> {
        let samples = self.last_samples;
        let pcm = &mut self.pcm[..samples];
        let n = match next {
            Some(next) => self.decoder.decode(Some(next), pcm, true)?,
            None => self.decoder.decode(None::<&[u8]>, pcm, false)?,
        };
        self.encode(n, out)
    }

    fn encode(&self, n: usize, out: &mut [u8]) -> Result<usize, TranscodeError> {
        let n = n.min(MAX_SAMPLES);
        let out = out.get_mut(..n).ok_or(TranscodeError::BufferTooSmall)?;
        for (o, &s) in out.iter_mut().zip(&self.pcm[..n]) {
            *o = self.law.encode(s);
        }
        Ok(n)
    }
}

/// SIP -> browser audio: G.711 payloads decoded and encoded as Opus at 8 kHz.
pub struct G711ToOpus {
    encoder: Encoder,
    law: G711,
    pcm: [i16; MAX_SAMPLES],
}

/// Whether `samples` at 8 kHz is an Opus frame duration (2.5 to 120 ms).
fn is_opus_frame(samples: usize) -> bool {
    matches!(samples, 20 | 40 | 80 | 160 | 320 | 480 | 640 | 800 | 960)
}

impl G711ToOpus {
    /// An encoder whose input is `law`.
    pub fn new(law: G711) -> Result<Self, TranscodeError> {
        let mut encoder = Encoder::new(SampleRate::Hz8000, Channels::Mono, Application::Voip)?;
        encoder.set_complexity(COMPLEXITY)?;
        encoder.set_bitrate(Bitrate::BitsPerSecond(BITRATE))?;
        Ok(G711ToOpus {
            encoder,
            law,
            pcm: [0; MAX_SAMPLES],
        })
    }

    /// Encodes one G.711 payload (its length is its duration in 8 kHz samples) as one Opus
    /// packet into `out`; returns the packet's length.
    pub fn transcode(&mut self, g711: &[u8], out: &mut [u8]) -> Result<usize, TranscodeError> {
        if !is_opus_frame(g711.len()) {
            return Err(TranscodeError::FrameSize(g711.len()));
        }
        let pcm = &mut self.pcm[..g711.len()];
        for (p, &b) in pcm.iter_mut().zip(g711) {
            *p = self.law.decode(b);
        }
        Ok(self.encoder.encode(pcm, out)?)
    }
}

/// RTP timestamps of one stream converted from one clock to another, as an exact function of
/// the input timestamp, so packets of one source stay consistent (reordered ones included)
/// and RFC 4733 events, whose packets all carry the start timestamp, keep one timestamp.
///
/// Up-scaling (8 kHz -> 48 kHz) is a wrapping multiplication, consistent across the 2^32
/// wrap by itself. Down-scaling is not (2^32 is not a multiple of 6), so it is relative to
/// an anchor that follows the stream, moved by whole multiples of the ratio so no rounding
/// error ever accumulates.
#[derive(Debug, Clone)]
pub struct TsScaler {
    up: bool,
    ratio: u32,
    anchor: Option<ScaleAnchor>,
}

#[derive(Debug, Clone, Copy)]
struct ScaleAnchor {
    ssrc: u32,
    input: u32,
    output: u32,
}

impl TsScaler {
    /// 48 kHz in, 8 kHz out (toward the SIP leg).
    pub fn down(ratio: u32) -> Self {
        TsScaler {
            up: false,
            ratio: ratio.max(1),
            anchor: None,
        }
    }

    /// 8 kHz in, 48 kHz out (toward the browser).
    pub fn up(ratio: u32) -> Self {
        TsScaler {
            up: true,
            ratio: ratio.max(1),
            anchor: None,
        }
    }

    /// The output-clock timestamp of input timestamp `ts` of source `ssrc`.
    pub fn scale(&mut self, ssrc: u32, ts: u32) -> u32 {
        if self.up {
            return ts.wrapping_mul(self.ratio);
        }
        let ratio = i64::from(self.ratio);
        let a = match self.anchor {
            Some(a) if a.ssrc == ssrc => a,
            // A new source: any origin will do, the relay re-anchors the receiver's stream.
            _ => ScaleAnchor {
                ssrc,
                input: ts,
                output: ts / self.ratio,
            },
        };
        // Signed distance from the anchor: reordered packets are a little behind it.
        let delta = i64::from(ts.wrapping_sub(a.input) as i32);
        let steps = delta.div_euclid(ratio);
        let out = a.output.wrapping_add(steps as u32);
        self.anchor = Some(if delta >= 0 {
            ScaleAnchor {
                ssrc,
                input: a.input.wrapping_add((steps * ratio) as u32),
                output: out,
            }
        } else {
            a
        });
        out
    }
}

/// Loss seen in one stream's sequence numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The next packet, or the first of a source.
    InOrder,
    /// This many packets are missing before this one.
    AfterLoss(u16),
    /// At or before one already seen.
    Late,
}

/// Follows one stream's sequence numbers to tell loss from reordering.
#[derive(Debug, Clone, Default)]
pub struct SeqTracker {
    last: Option<(u32, u16)>,
}

/// A jump this large is a restarted sender, not loss.
const SEQ_RESTART: u16 = 100;

impl SeqTracker {
    /// Records packet `seq` of source `ssrc`.
    pub fn on_packet(&mut self, ssrc: u32, seq: u16) -> Arrival {
        let Some((last_ssrc, last)) = self.last else {
            self.last = Some((ssrc, seq));
            return Arrival::InOrder;
        };
        if last_ssrc != ssrc {
            self.last = Some((ssrc, seq));
            return Arrival::InOrder;
        }
        let d = seq.wrapping_sub(last);
        if d == 0 || d >= 0x8000 {
            return Arrival::Late;
        }
        self.last = Some((ssrc, seq));
        match d {
            1 => Arrival::InOrder,
            d if d > SEQ_RESTART => Arrival::InOrder,
            d => Arrival::AfterLoss(d - 1),
        }
    }
}

/// At most this many lost packets (60 ms at 20 ms) are concealed before a packet; longer
/// gaps are left to the far end's jitter buffer, as made-up audio would only grow worse.
const MAX_CONCEAL: u16 = 3;

/// Where the payload of an RTP packet is: after CSRCs and header extension, before padding.
/// Read with `rtc-rtp`, which allocates only for packets that carry CSRCs or extensions
/// (neither leg negotiates any).
pub(crate) fn payload_range(packet: &[u8]) -> Result<std::ops::Range<usize>, TranscodeError> {
    if !header::is_rtp(packet) {
        return Err(TranscodeError::NotRtp);
    }
    let mut buf = packet;
    let h = Header::unmarshal(&mut buf).map_err(|_| TranscodeError::NotRtp)?;
    let start = h.marshal_size();
    let padding = if h.padding {
        usize::from(packet.last().copied().unwrap_or(0))
    } else {
        0
    };
    let end = packet.len().saturating_sub(padding);
    if start > end {
        return Err(TranscodeError::NotRtp);
    }
    Ok(start..end)
}

/// Writes a fixed RTP header (no CSRC, extension or padding) for a packet we build.
fn write_header(out: &mut [u8], pt: u8, marker: bool, seq: u16, ts: u32, ssrc: u32) {
    out[0] = 0x80;
    header::set_pt_marker(out, pt, marker);
    header::set_seq(out, seq);
    header::set_ts(out, ts);
    header::set_ssrc(out, ssrc);
}

/// Rescales the duration field of an RFC 4733 event payload (§2.3: bytes 2-3) by
/// `num / den`, saturating at the field's maximum.
pub fn rescale_event_duration(payload: &mut [u8], num: u32, den: u32) {
    if payload.len() < 4 {
        return;
    }
    let d = u32::from(u16::from_be_bytes([payload[2], payload[3]]));
    let scaled = (u64::from(d) * u64::from(num) / u64::from(den.max(1))).min(0xFFFF) as u16;
    payload[2..4].copy_from_slice(&scaled.to_be_bytes());
}

/// Largest packet built.
const PACKET: usize = 1500;

/// Payload types of a transcoded call, each on its own leg.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TranscodePlan {
    /// The browser's Opus payload type.
    pub opus_pt: u8,
    /// The SIP leg's G.711 payload type.
    pub g711_pt: u8,
    /// Which G.711.
    pub law: G711,
    /// The browser's telephone-event payload type and its clock rate, if negotiated.
    pub browser_dtmf: Option<(u8, u32)>,
    /// The far end's telephone-event payload type (8 kHz), if negotiated.
    pub sip_dtmf: Option<u8>,
}

/// The browser -> SIP direction of a transcoded call, packet by packet.
pub struct BrowserToSip {
    plan: TranscodePlan,
    codec: OpusToG711,
    ts: TsScaler,
    seq: SeqTracker,
    packet: Box<[u8; PACKET]>,
}

impl BrowserToSip {
    /// Codec state for `plan`.
    pub fn new(plan: TranscodePlan) -> Result<Self, TranscodeError> {
        Ok(BrowserToSip {
            plan,
            codec: OpusToG711::new(plan.law)?,
            ts: TsScaler::down(RATIO),
            seq: SeqTracker::default(),
            packet: Box::new([0; PACKET]),
        })
    }

    /// A packet that is not relayed (audio paused while we send our own DTMF): its sequence
    /// number is noted, so the pause is not concealed as loss later.
    pub fn skip(&mut self, packet: &[u8]) {
        if header::is_rtp(packet) {
            let _ = self
                .seq
                .on_packet(header::ssrc(packet), header::seq(packet));
        }
    }

    /// One plain RTP packet from the browser. Opus audio comes out as G.711 (preceded by
    /// concealment for up to [`MAX_CONCEAL`] lost packets), telephone-events with timestamp
    /// and duration at 8 kHz; each packet, with the input's payload type, sequence number and
    /// SSRC, is handed to `emit` for the relay's rewrite and send.
    pub fn process(
        &mut self,
        packet: &[u8],
        mut emit: impl FnMut(&mut [u8]),
    ) -> Result<(), TranscodeError> {
        let range = payload_range(packet)?;
        let (pt, seq, ts, ssrc) = (
            header::pt(packet),
            header::seq(packet),
            header::ts(packet),
            header::ssrc(packet),
        );
        let arrival = self.seq.on_packet(ssrc, seq);
        if arrival == Arrival::Late {
            return Err(TranscodeError::Late);
        }
        let payload = &packet[range];
        let marker = header::marker(packet);
        let out = &mut self.packet[..];
        if pt == self.plan.opus_pt {
            if let Arrival::AfterLoss(lost) = arrival {
                let lost = lost.min(MAX_CONCEAL);
                for k in (1..=lost).rev() {
                    let step = self.codec.last_samples() as u32 * RATIO;
                    let lost_ts = ts.wrapping_sub(step * u32::from(k));
                    // Only the packet right before this one is in this one's FEC.
                    let fec = (k == 1 && !payload.is_empty()).then_some(payload);
                    let n = self.codec.conceal(fec, &mut out[header::LEN..])?;
                    let out_ts = self.ts.scale(ssrc, lost_ts);
                    let lost_seq = seq.wrapping_sub(k);
                    write_header(out, pt, false, lost_seq, out_ts, ssrc);
                    emit(&mut out[..header::LEN + n]);
                }
            }
            let n = if payload.is_empty() {
                self.codec.conceal(None, &mut out[header::LEN..])?
            } else {
                self.codec.transcode(payload, &mut out[header::LEN..])?
            };
            let out_ts = self.ts.scale(ssrc, ts);
            write_header(out, pt, marker, seq, out_ts, ssrc);
            emit(&mut out[..header::LEN + n]);
            return Ok(());
        }
        match self.plan.browser_dtmf {
            Some((te, clock)) if te == pt => {
                let n = payload.len();
                let body = out
                    .get_mut(header::LEN..header::LEN + n)
                    .ok_or(TranscodeError::BufferTooSmall)?;
                body.copy_from_slice(payload);
                rescale_event_duration(body, G711_RATE, clock);
                let out_ts = self.ts.scale(ssrc, ts);
                write_header(out, pt, marker, seq, out_ts, ssrc);
                emit(&mut out[..header::LEN + n]);
                Ok(())
            }
            _ => Err(TranscodeError::Unmapped(pt)),
        }
    }
}

/// The SIP -> browser direction of a transcoded call, packet by packet.
pub struct SipToBrowser {
    plan: TranscodePlan,
    codec: G711ToOpus,
    ts: TsScaler,
    packet: Box<[u8; PACKET]>,
}

impl SipToBrowser {
    /// Codec state for `plan`.
    pub fn new(plan: TranscodePlan) -> Result<Self, TranscodeError> {
        Ok(SipToBrowser {
            plan,
            codec: G711ToOpus::new(plan.law)?,
            ts: TsScaler::up(RATIO),
            packet: Box::new([0; PACKET]),
        })
    }

    /// One RTP packet from the far end: G.711 comes out as Opus, telephone-events with
    /// timestamp and duration on the browser's clocks; the packet, with the input's payload
    /// type, sequence number and SSRC, is returned for the relay's rewrite, protect and send.
    pub fn process(&mut self, packet: &[u8]) -> Result<&mut [u8], TranscodeError> {
        let range = payload_range(packet)?;
        let (pt, seq, ts, ssrc) = (
            header::pt(packet),
            header::seq(packet),
            header::ts(packet),
            header::ssrc(packet),
        );
        let payload = &packet[range];
        let marker = header::marker(packet);
        let out = &mut self.packet[..];
        let n = if pt == self.plan.g711_pt {
            self.codec.transcode(payload, &mut out[header::LEN..])?
        } else {
            match (self.plan.sip_dtmf, self.plan.browser_dtmf) {
                (Some(te), Some((_, clock))) if te == pt => {
                    let n = payload.len();
                    let body = out
                        .get_mut(header::LEN..header::LEN + n)
                        .ok_or(TranscodeError::BufferTooSmall)?;
                    body.copy_from_slice(payload);
                    rescale_event_duration(body, clock, G711_RATE);
                    n
                }
                _ => return Err(TranscodeError::Unmapped(pt)),
            }
        };
        let out_ts = self.ts.scale(ssrc, ts);
        write_header(out, pt, marker, seq, out_ts, ssrc);
        Ok(&mut out[..header::LEN + n])
    }
}

/// Both directions of one transcoded call.
pub struct Transcoder {
    /// What the legs carry.
    pub plan: TranscodePlan,
    /// Browser -> SIP.
    pub to_sip: BrowserToSip,
    /// SIP -> browser.
    pub to_browser: SipToBrowser,
}

impl Transcoder {
    /// Codec state for both directions of `plan`.
    pub fn new(plan: TranscodePlan) -> Result<Self, TranscodeError> {
        Ok(Transcoder {
            plan,
            to_sip: BrowserToSip::new(plan)?,
            to_browser: SipToBrowser::new(plan)?,
        })
    }
}

impl std::fmt::Debug for Transcoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transcoder")
            .field("plan", &self.plan)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    /// A sine at `freq` Hz, `amplitude` of full scale, sampled at `rate`.
    fn sine(freq: f64, rate: u32, n: usize, amplitude: f64) -> Vec<i16> {
        (0..n)
            .map(|i| {
                let t = i as f64 / f64::from(rate);
                ((2.0 * PI * freq * t).sin() * amplitude * 32767.0).round() as i16
            })
            .collect()
    }

    /// Frequency from the zero crossings (rising edges) of a clean tone.
    fn zero_crossing_frequency(samples: &[i16], rate: u32) -> f64 {
        let rising: Vec<usize> = samples
            .windows(2)
            .enumerate()
            .filter(|(_, w)| w[0] < 0 && w[1] >= 0)
            .map(|(i, _)| i)
            .collect();
        let (Some(first), Some(last)) = (rising.first(), rising.last()) else {
            return 0.0;
        };
        let periods = (rising.len() - 1) as f64;
        periods * f64::from(rate) / (last - first) as f64
    }

    /// Goertzel power at `freq` relative to the signal's total power.
    fn goertzel_share(samples: &[i16], rate: u32, freq: f64) -> f64 {
        let coeff = 2.0 * (2.0 * PI * freq / f64::from(rate)).cos();
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        for &x in samples {
            let s0 = f64::from(x) + coeff * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
        let energy: f64 = samples.iter().map(|&x| f64::from(x).powi(2)).sum();
        // A pure tone's Goertzel power is energy * N / 2.
        power / (energy * samples.len() as f64 / 2.0)
    }

    #[test]
    fn g711_round_trip_error_is_within_half_a_step() {
        for law in [G711::Ulaw, G711::Alaw] {
            for x in i16::MIN..=i16::MAX {
                let y = law.decode(law.encode(x));
                let err = (i32::from(x) - i32::from(y)).abs();
                let mag = i32::from(x).abs();
                // Step sizes double per segment, 16 steps each: half a step is at most 1/32
                // of the level plus the first segments' half step; clipping above the top
                // code (32124 µ-law, 32256 A-law) adds the rest.
                let bound = mag / 32 + 16 + if mag > 32_000 { 512 } else { 0 };
                assert!(err <= bound, "{law:?}: {x} -> {y}, error {err} > {bound}");
            }
            // Every code decodes to a value that encodes back to a code of the same value
            // (µ-law has two zeros, 0x7F and 0xFF).
            for b in 0..=255u8 {
                let v = law.decode(b);
                assert_eq!(law.decode(law.encode(v)), v, "{law:?} code {b:#04x}");
            }
        }
        // Known values: silence and full scale.
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(linear_to_alaw(0), 0xD5);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(alaw_to_linear(0xAA), 32256);
        assert_eq!(alaw_to_linear(0x2A), -32256);
    }

    #[test]
    fn decode_tables_match_the_formulas_and_names_parse() {
        // The decode tables are the const functions.
        for b in 0..=255u8 {
            assert_eq!(G711::Ulaw.decode(b), ulaw_to_linear(b));
            assert_eq!(G711::Alaw.decode(b), alaw_to_linear(b));
        }
        assert_eq!(G711::from_name("pcmu"), Some(G711::Ulaw));
        assert_eq!(G711::from_name("PCMA"), Some(G711::Alaw));
        assert_eq!(G711::from_name("G722"), None);
    }

    /// A 1000 Hz tone through G.711 -> Opus (8 kHz, complexity 5) -> Opus decoder at 8 kHz
    /// -> G.711 keeps its frequency and stays a tone.
    #[test]
    fn a_1000_hz_tone_survives_opus_both_ways() {
        for law in [G711::Ulaw, G711::Alaw] {
            let tone = sine(1000.0, 8000, 8000, 0.5);
            let mut enc = G711ToOpus::new(law).expect("encoder");
            let mut dec = OpusToG711::new(law).expect("decoder");
            let mut opus = [0u8; 1500];
            let mut g711 = [0u8; 960];
            let mut out = Vec::new();
            for frame in tone.chunks_exact(160) {
                let coded: Vec<u8> = frame.iter().map(|&s| law.encode(s)).collect();
                let n = enc.transcode(&coded, &mut opus).expect("encode");
                assert!(n > 0 && n < 200, "{n} bytes for 20 ms");
                let m = dec.transcode(&opus[..n], &mut g711).expect("decode");
                assert_eq!(m, 160);
                out.extend(g711[..m].iter().map(|&b| law.decode(b)));
            }
            // Skip the codec's start-up (look-ahead and first frames).
            let steady = &out[1600..];
            let f = zero_crossing_frequency(steady, 8000);
            assert!((f - 1000.0).abs() < 5.0, "{law:?}: {f} Hz");
            let share = goertzel_share(steady, 8000, 1000.0);
            assert!(share > 0.8, "{law:?}: only {share} of the power at 1000 Hz");
        }
    }

    #[test]
    fn opus_from_a_48k_sender_decodes_at_8k() {
        // A browser encodes at 48 kHz; our decoder opened at 8 kHz gets 160 samples per 20 ms.
        let browser =
            Encoder::new(SampleRate::Hz48000, Channels::Stereo, Application::Voip).expect("enc");
        let mut dec = OpusToG711::new(G711::Ulaw).expect("decoder");
        let mono = sine(1000.0, 48000, 48000, 0.5);
        let stereo: Vec<i16> = mono.iter().flat_map(|&s| [s, s]).collect();
        let mut opus = [0u8; 1500];
        let mut g711 = [0u8; 960];
        let mut out = Vec::new();
        for frame in stereo.chunks_exact(960 * 2) {
            let n = browser.encode(frame, &mut opus).expect("encode");
            let m = dec.transcode(&opus[..n], &mut g711).expect("decode");
            assert_eq!(m, 160);
            out.extend(g711[..m].iter().map(|&b| G711::Ulaw.decode(b)));
        }
        let f = zero_crossing_frequency(&out[1600..], 8000);
        assert!((f - 1000.0).abs() < 5.0, "{f} Hz");
    }

    #[test]
    fn g711_packets_without_an_opus_frame_size_are_refused() {
        let mut enc = G711ToOpus::new(G711::Ulaw).expect("encoder");
        let mut out = [0u8; 1500];
        assert_eq!(
            enc.transcode(&[0xFF; 240], &mut out),
            Err(TranscodeError::FrameSize(240))
        );
        assert!(enc.transcode(&[0xFF; 80], &mut out).is_ok(), "10 ms");
        assert!(enc.transcode(&[0xFF; 480], &mut out).is_ok(), "60 ms");
    }

    #[test]
    fn garbage_opus_is_an_error_not_a_panic() {
        let mut dec = OpusToG711::new(G711::Ulaw).expect("decoder");
        let mut out = [0u8; 960];
        for junk in [&[0xFFu8, 0xFF, 0xFF][..], &[0x03], &[0x0B, 0xFF]] {
            let _ = dec.transcode(junk, &mut out);
        }
        assert!(matches!(
            dec.transcode(&[], &mut out),
            Err(TranscodeError::Opus(_))
        ));
        // Concealment always works.
        assert_eq!(dec.conceal(None, &mut out), Ok(160));
    }

    #[test]
    fn timestamps_scale_exactly_and_across_the_wrap() {
        let mut down = TsScaler::down(6);
        let base = u32::MAX - 960 * 3;
        let first = down.scale(1, base);
        for i in 1..10u32 {
            let ts = base.wrapping_add(960 * i);
            assert_eq!(down.scale(1, ts), first.wrapping_add(160 * i), "packet {i}");
        }
        // Reordered: a packet before the anchor maps consistently.
        assert_eq!(
            down.scale(1, base.wrapping_add(960 * 5)),
            first.wrapping_add(800)
        );
        // Odd steps never accumulate rounding: 1000 steps of 965 are 160833 samples.
        let mut s = TsScaler::down(6);
        let t0 = s.scale(2, 7);
        let t = s.scale(2, 7 + 965 * 1000);
        assert_eq!(t.wrapping_sub(t0), 965 * 1000 / 6);
        let mut up = TsScaler::up(6);
        assert_eq!(up.scale(1, 160), 960);
        assert_eq!(
            up.scale(1, u32::MAX).wrapping_add(6),
            up.scale(1, 0),
            "wraps continuously"
        );
    }

    #[test]
    fn sequence_tracker_tells_loss_reorder_and_restart() {
        let mut t = SeqTracker::default();
        assert_eq!(t.on_packet(1, 65_534), Arrival::InOrder);
        assert_eq!(t.on_packet(1, 65_535), Arrival::InOrder);
        assert_eq!(t.on_packet(1, 2), Arrival::AfterLoss(2));
        assert_eq!(t.on_packet(1, 1), Arrival::Late);
        assert_eq!(t.on_packet(1, 2), Arrival::Late);
        assert_eq!(t.on_packet(1, 3), Arrival::InOrder);
        assert_eq!(t.on_packet(1, 5_000), Arrival::InOrder, "restart");
        assert_eq!(t.on_packet(2, 9), Arrival::InOrder, "new source");
    }

    fn plan() -> TranscodePlan {
        TranscodePlan {
            opus_pt: 111,
            g711_pt: 0,
            law: G711::Ulaw,
            browser_dtmf: Some((110, 48000)),
            sip_dtmf: Some(101),
        }
    }

    fn rtp(pt: u8, seq: u16, ts: u32, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 12];
        write_header(&mut p, pt, false, seq, ts, 0xabc);
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn browser_packets_become_g711_and_8k_events() {
        let enc =
            Encoder::new(SampleRate::Hz48000, Channels::Mono, Application::Voip).expect("encoder");
        let mut to_sip = BrowserToSip::new(plan()).expect("codec");
        let mut opus = [0u8; 1500];
        let frame = sine(1000.0, 48000, 960, 0.3);
        let n = enc.encode(&frame, &mut opus).expect("encode");
        let mut seen = Vec::new();
        let mut collect = |p: &mut [u8]| {
            seen.push((
                header::pt(p),
                header::seq(p),
                header::ts(p),
                p.len() - header::LEN,
            ))
        };
        to_sip
            .process(&rtp(111, 10, 96_000, &opus[..n]), &mut collect)
            .expect("first");
        to_sip
            .process(&rtp(111, 11, 96_960, &opus[..n]), &mut collect)
            .expect("next");
        // 12 and 13 are lost: concealed (13 from 14's FEC) before 14.
        to_sip
            .process(&rtp(111, 14, 99_840, &opus[..n]), &mut collect)
            .expect("after loss");
        let ts: Vec<u32> = seen.iter().map(|s| s.2 - seen[0].2).collect();
        assert_eq!(ts, [0, 160, 320, 480, 640]);
        let seqs: Vec<u16> = seen.iter().map(|s| s.1).collect();
        assert_eq!(seqs, [10, 11, 12, 13, 14]);
        assert!(seen.iter().all(|s| s.0 == 111 && s.3 == 160));
        assert_eq!(
            to_sip.process(&rtp(111, 13, 97_920, &opus[..n]), |_| {}),
            Err(TranscodeError::Late)
        );

        // A key press at 48 kHz: duration 4800 (100 ms) becomes 800, its timestamp 8 kHz.
        let mut got = None;
        to_sip
            .process(&rtp(110, 15, 100_800, &[5, 0x8a, 0x12, 0xc0]), |p| {
                got = Some((header::pt(p), header::ts(p), p[12..].to_vec()))
            })
            .expect("event");
        let (pt, ts, body) = got.expect("event out");
        assert_eq!(pt, 110, "the rewriter maps the payload type");
        assert_eq!(ts - seen[0].2, 640 + 160);
        assert_eq!(body, [5, 0x8a, 0x03, 0x20]);
        assert_eq!(
            to_sip.process(&rtp(13, 16, 0, &[1]), |_| {}),
            Err(TranscodeError::Unmapped(13))
        );
        assert_eq!(
            to_sip.process(&[0x80, 111], |_| {}),
            Err(TranscodeError::NotRtp)
        );
    }

    #[test]
    fn far_end_packets_become_opus_and_48k_events() {
        let mut to_browser = SipToBrowser::new(plan()).expect("codec");
        let tone: Vec<u8> = sine(1000.0, 8000, 160, 0.5)
            .into_iter()
            .map(linear_to_ulaw)
            .collect();
        let p = to_browser.process(&rtp(0, 7, 1600, &tone)).expect("audio");
        assert_eq!(header::pt(p), 0);
        assert_eq!(header::ts(p), 9600);
        assert_eq!(header::seq(p), 7);
        let opus_len = p.len() - header::LEN;
        let mut dec = Decoder::new(SampleRate::Hz48000, Channels::Mono).expect("decoder");
        let mut pcm = [0i16; 5760];
        let p = to_browser.process(&rtp(0, 8, 1760, &tone)).expect("audio");
        assert!(opus_len > 0);
        let n = dec
            .decode(Some(&p[header::LEN..]), &mut pcm[..], false)
            .expect("a valid Opus packet");
        assert_eq!(n, 960);
        let ev = to_browser
            .process(&rtp(101, 9, 1920, &[1, 0x0a, 0x03, 0x20]))
            .expect("event");
        assert_eq!(header::ts(ev), 1920 * 6);
        assert_eq!(&ev[12..], &[1, 0x0a, 0x12, 0xc0]);
        assert_eq!(
            to_browser.process(&rtp(13, 10, 2080, &[0; 1])).err(),
            Some(TranscodeError::Unmapped(13))
        );
    }

    #[test]
    fn law_maps_keep_the_signal() {
        let to_a = LawMap::new(G711::Ulaw, G711::Alaw);
        let to_u = LawMap::new(G711::Alaw, G711::Ulaw);
        for sample in [-30000i16, -1000, -8, 0, 8, 1000, 30000] {
            let mut b = [G711::Ulaw.encode(sample)];
            to_a.apply(&mut b);
            let back = G711::Alaw.decode(b[0]);
            // Within the coarser of the two laws' steps at that level (3 % of the value).
            let tolerance = (i32::from(sample).abs() / 16).max(16);
            assert!(
                (i32::from(back) - i32::from(sample)).abs() <= tolerance,
                "{sample} -> {back}"
            );
            to_u.apply(&mut b);
            let round = G711::Ulaw.decode(b[0]);
            assert!((i32::from(round) - i32::from(sample)).abs() <= tolerance);
        }
    }

    #[test]
    fn payload_range_skips_csrcs_extensions_and_padding() {
        let mut p = rtp(0, 1, 2, &[9, 9, 9, 0, 0, 2]);
        p[0] |= 0x20; // padding: the last byte says 2
        assert_eq!(payload_range(&p), Ok(12..16));
        let mut q = vec![0x91, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4];
        // X bit, one CSRC, then an RFC 3550 extension of one word.
        q.extend_from_slice(&[0xAB, 0xCD, 0, 1, 1, 2, 3, 4, 7, 7]);
        assert_eq!(payload_range(&q), Ok(24..26));
        assert_eq!(payload_range(&q[..20]), Err(TranscodeError::NotRtp));
    }
}
