//! The CPU cost of one call's media in our code, transcoded against passthrough, measured in
//! the same run: 10 s of audio, i.e. 500 packets of 20 ms each way.
//!
//! - passthrough: browser -> SIP = SRTP unprotect + header rewrite; SIP -> browser = header
//!   rewrite + SRTP protect (the relay step of `benches/relay.rs`, AEAD_AES_128_GCM);
//! - transcoding: browser -> SIP = unprotect + Opus decode at 8 kHz + µ-law encode + rewrite;
//!   SIP -> browser = µ-law decode + Opus encode (8 kHz, complexity 5) + rewrite + protect.
//!
//! The browser's Opus is made beforehand by a 48 kHz encoder as a browser's would be, from a
//! speech-like signal (a 140 Hz voice with harmonics and a 4 Hz syllable envelope, plus a
//! little noise); the far end's µ-law from the same signal at 8 kHz. Time is the thread's CPU
//! time (`/proc/thread-self/schedstat`; wall time where that is missing). The kernel's UDP
//! path (4-6 µs per packet, DESIGN.md) is the same for both and not included.
//!
//! Run: `cargo bench -p media --bench transcode`

mod common;

use std::f64::consts::PI;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use audiopus::coder::Encoder;
use audiopus::{Application, Channels, SampleRate};
use media::relay::{header, PtMap, StreamRewriter};
use media::srtp::{SrtpProfile, SrtpSession};
use media::transcode::{TranscodePlan, Transcoder, G711};

/// Allocations made inside the SRTP library (one per packet, `benches/relay.rs`), kept apart
/// from ours.
static SRTP_ALLOCS: AtomicU64 = AtomicU64::new(0);

/// Runs `f`, counting its allocations as the SRTP library's.
fn srtp<T>(f: impl FnOnce() -> T) -> T {
    let before = common::allocations();
    let r = f();
    SRTP_ALLOCS.fetch_add(common::allocations() - before, Ordering::Relaxed);
    r
}

/// Packets per direction in 10 s of 20 ms audio.
const PACKETS: usize = 500;
const SECONDS: f64 = 10.0;
const OPUS_PT: u8 = 111;

/// CPU time of this thread, or wall time where the kernel does not say. The kernel may
/// advance it only at scheduler ticks (4 ms here): time windows of a second or more.
fn cpu_now() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map(Duration::from_nanos)
        .unwrap_or_else(|| {
            static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
            START.get_or_init(Instant::now).elapsed()
        })
}

/// A speech-like test signal at `rate`: voiced harmonics under a syllable envelope, and noise.
fn speech(rate: u32, samples: usize) -> Vec<i16> {
    let mut seed: u32 = 0x1234_5678;
    (0..samples)
        .map(|n| {
            let t = n as f64 / f64::from(rate);
            let f0 = 140.0 + 20.0 * (2.0 * PI * 0.5 * t).sin();
            let voiced: f64 = (1..=12)
                .map(|h| (2.0 * PI * f0 * f64::from(h) * t).sin() / f64::from(h))
                .sum();
            let envelope = 0.5 + 0.5 * (2.0 * PI * 4.0 * t).sin();
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let noise = f64::from(seed as i32) / f64::from(i32::MAX);
            ((voiced * envelope * 0.25 + noise * 0.01) * 32767.0).clamp(-32768.0, 32767.0) as i16
        })
        .collect()
}

/// One call's input: what the browser sends (SRTP, Opus or PCMU) and the far end (µ-law).
struct Input {
    /// Browser packets, SRTP-protected.
    browser: Vec<Vec<u8>>,
    /// Far-end packets, plain RTP.
    far: Vec<Vec<u8>>,
}

fn input(opus: bool) -> Input {
    let mut browser_srtp =
        SrtpSession::new(&common::keys(SrtpProfile::AeadAes128Gcm, false)).expect("keys");
    let mut browser = Vec::with_capacity(PACKETS);
    let voice48 = speech(48000, PACKETS * 960);
    let voice8 = speech(8000, PACKETS * 160);
    // Chrome's encoder: 48 kHz, VoIP, its default complexity.
    let enc = Encoder::new(SampleRate::Hz48000, Channels::Mono, Application::Voip).expect("enc");
    let mut out = [0u8; 1500];
    for i in 0..PACKETS {
        let seq = i as u16;
        let plain = if opus {
            let n = enc
                .encode(&voice48[i * 960..(i + 1) * 960], &mut out)
                .expect("encode");
            common::rtp(OPUS_PT, seq, (i * 960) as u32, 0xb, &out[..n])
        } else {
            let ulaw: Vec<u8> = voice8[i * 160..(i + 1) * 160]
                .iter()
                .map(|&s| G711::Ulaw.encode(s))
                .collect();
            common::rtp(0, seq, (i * 160) as u32, 0xb, &ulaw)
        };
        let mut wire = Vec::new();
        browser_srtp
            .protect_rtp(&plain, &mut wire)
            .expect("protect");
        browser.push(wire);
    }
    let far = (0..PACKETS)
        .map(|i| {
            let ulaw: Vec<u8> = voice8[i * 160..(i + 1) * 160]
                .iter()
                .map(|&s| G711::Ulaw.encode(s))
                .collect();
            common::rtp(0, i as u16, (i * 160) as u32, 0xf, &ulaw)
        })
        .collect();
    Input { browser, far }
}

/// The gateway's state for one call.
struct Gateway {
    srtp: SrtpSession,
    to_sip: StreamRewriter,
    to_browser: StreamRewriter,
    map_to_sip: PtMap,
    map_to_browser: PtMap,
    transcoder: Option<Transcoder>,
    plain: Vec<u8>,
    packet: Vec<u8>,
    out: Vec<u8>,
}

impl Gateway {
    fn new(transcode: bool) -> Gateway {
        let mut map_to_sip = PtMap::new();
        let mut map_to_browser = PtMap::new();
        let browser_pt = if transcode { OPUS_PT } else { 0 };
        map_to_sip.insert(browser_pt, 0).expect("room");
        map_to_browser.insert(0, browser_pt).expect("room");
        let transcoder = transcode.then(|| {
            Transcoder::new(TranscodePlan {
                opus_pt: OPUS_PT,
                g711_pt: 0,
                law: G711::Ulaw,
                browser_dtmf: None,
                sip_dtmf: None,
            })
            .expect("codecs")
        });
        Gateway {
            srtp: SrtpSession::new(&common::keys(SrtpProfile::AeadAes128Gcm, true)).expect("keys"),
            to_sip: StreamRewriter::new(1, 8000),
            to_browser: StreamRewriter::new(2, if transcode { 48000 } else { 8000 }),
            map_to_sip,
            map_to_browser,
            transcoder,
            plain: Vec::with_capacity(1500),
            packet: Vec::with_capacity(1500),
            out: Vec::with_capacity(1500),
        }
    }

    /// 10 s of one call, both directions, packet by packet as the worker interleaves them.
    fn call(&mut self, input: &Input, now: Instant) -> usize {
        let mut bytes = 0;
        for (wire, far) in input.browser.iter().zip(&input.far) {
            // Browser -> SIP.
            let (session, plain) = (&mut self.srtp, &mut self.plain);
            srtp(|| session.unprotect_rtp(wire, plain)).expect("unprotect");
            match self.transcoder.as_mut() {
                Some(t) => {
                    let (to_sip, map) = (&mut self.to_sip, &self.map_to_sip);
                    t.to_sip
                        .process(&self.plain, |p| {
                            to_sip.rewrite(p, map, now).expect("rewrite");
                            bytes += black_box(p).len();
                        })
                        .expect("transcode");
                }
                None => {
                    self.to_sip
                        .rewrite(&mut self.plain, &self.map_to_sip, now)
                        .expect("rewrite");
                    bytes += black_box(&self.plain).len();
                }
            }
            // SIP -> browser: the worker receives into its own buffer.
            self.packet.clear();
            self.packet.extend_from_slice(far);
            let p: &mut [u8] = match self.transcoder.as_mut() {
                Some(t) => t.to_browser.process(&self.packet).expect("transcode"),
                None => &mut self.packet,
            };
            self.to_browser
                .rewrite(p, &self.map_to_browser, now)
                .expect("rewrite");
            let (session, out) = (&mut self.srtp, &mut self.out);
            srtp(|| session.protect_rtp(p, out)).expect("protect");
            bytes += black_box(&self.out).len();
        }
        bytes
    }
}

/// CPU seconds per call-second for `calls` calls of 10 s each, and our allocations per
/// packet after the first call (codec and SRTP set-up, and SRTP's own, excluded).
fn measure(transcode: bool, calls: usize) -> (f64, f64) {
    let input = input(transcode);
    let now = Instant::now();
    // The first call warms caches and is not counted.
    black_box(Gateway::new(transcode).call(&input, now));
    // A fresh call each time (new SRTP contexts for replay protection, new codec state),
    // all set up first: one timed window, as the kernel's CPU clock moves in ticks.
    let mut gateways: Vec<Gateway> = (0..calls).map(|_| Gateway::new(transcode)).collect();
    let ours = || common::allocations() - SRTP_ALLOCS.load(Ordering::Relaxed);
    let t0 = cpu_now();
    let a0 = ours();
    for gw in &mut gateways {
        black_box(gw.call(&input, now));
    }
    let allocs = ours() - a0;
    let cpu = cpu_now() - t0;
    let per_call_second = cpu.as_secs_f64() / (calls as f64 * SECONDS);
    let per_packet = allocs as f64 / (calls * PACKETS * 2) as f64;
    (per_call_second, per_packet)
}

/// CPU seconds per call-second of each codec step alone: (Opus -> µ-law, µ-law -> Opus).
fn codec_steps(calls: usize) -> (f64, f64) {
    let opus = input(true);
    let far = input(false).far;
    let mut gw_srtp =
        SrtpSession::new(&common::keys(SrtpProfile::AeadAes128Gcm, true)).expect("keys");
    let browser: Vec<Vec<u8>> = opus
        .browser
        .iter()
        .map(|w| {
            let mut plain = Vec::new();
            gw_srtp.unprotect_rtp(w, &mut plain).expect("unprotect");
            plain[header::LEN..].to_vec()
        })
        .collect();
    let mut out = [0u8; 1500];
    let t0 = cpu_now();
    for _ in 0..calls {
        let mut dec = media::transcode::OpusToG711::new(G711::Ulaw).expect("decoder");
        for p in &browser {
            black_box(dec.transcode(p, &mut out).expect("decode"));
        }
    }
    let t1 = cpu_now();
    for _ in 0..calls {
        let mut enc = media::transcode::G711ToOpus::new(G711::Ulaw).expect("encoder");
        for p in &far {
            black_box(enc.transcode(&p[header::LEN..], &mut out).expect("encode"));
        }
    }
    let t2 = cpu_now();
    let (decode, encode) = (t1 - t0, t2 - t1);
    let per = |d: Duration| d.as_secs_f64() / (calls as f64 * SECONDS);
    (per(decode), per(encode))
}

fn main() {
    let (pass, pass_allocs) = measure(false, 2000);
    let (trans, trans_allocs) = measure(true, 30);
    println!(
        "one call, 10 s of audio ({PACKETS} packets each way), CPU per call-second and calls per core:"
    );
    println!(
        "{:<58} {:>14} {:>14} {:>18}",
        "", "CPU/call-s", "calls/core", "our allocs/packet"
    );
    for (name, cost, allocs) in [
        (
            "passthrough (unprotect/protect + header rewrite)",
            pass,
            pass_allocs,
        ),
        (
            "transcoding Opus <-> PCMU (+ the same SRTP and rewrite)",
            trans,
            trans_allocs,
        ),
    ] {
        println!(
            "{:<58} {:>11.1} µs {:>14.0} {:>18.2}",
            name,
            cost * 1e6,
            1.0 / cost,
            allocs
        );
    }
    let (decode, encode) = codec_steps(30);
    println!(
        "  of which Opus decode at 8 kHz -> µ-law: {:.1} µs, µ-law -> Opus encode (complexity {}): {:.1} µs",
        decode * 1e6,
        media::transcode::COMPLEXITY,
        encode * 1e6
    );
    println!(
        "transcoding costs {:.0}x passthrough in our code; {:.1} ms of CPU per call-second",
        trans / pass,
        trans * 1e3
    );
}
