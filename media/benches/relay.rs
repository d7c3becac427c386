//! The relay step alone, per packet: from the browser (SRTP unprotect + header rewrite) and
//! toward it (header rewrite + SRTP protect), for both SRTP profiles, against a baseline
//! measured in the same run (copying the packet, what any user-space forwarder does).
//! Before timing, a counting allocator reports allocations per packet, split into ours
//! (the rewrite) and the SRTP library's.
//!
//! Run: `cargo bench -p media --bench relay`

mod common;

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use criterion::{criterion_group, Criterion};
use media::relay::{header, PtMap, StreamRewriter};
use media::srtp::{SrtpProfile, SrtpSession};
use media::transcode::{LawMap, G711};

/// A 20 ms PCMU packet as a plain RTP/AVP far end sends it.
fn rtp(seq: u16) -> Vec<u8> {
    common::rtp(0, seq, u32::from(seq) * 160, 0x0bad_cafe, &[0xd5; 160])
}

struct Legs {
    browser: SrtpSession,
    gateway: SrtpSession,
    to_sip: StreamRewriter,
    to_browser: StreamRewriter,
    map: PtMap,
    seq: u16,
    wire: Vec<u8>,
    plain: Vec<u8>,
    out: Vec<u8>,
}

impl Legs {
    fn new(profile: SrtpProfile) -> Legs {
        let mut map = PtMap::new();
        map.insert(0, 0).expect("room");
        Legs {
            browser: SrtpSession::new(&common::keys(profile, false)).expect("keys"),
            gateway: SrtpSession::new(&common::keys(profile, true)).expect("keys"),
            to_sip: StreamRewriter::new(1, 8000),
            to_browser: StreamRewriter::new(2, 8000),
            map,
            seq: 0,
            wire: Vec::with_capacity(1500),
            plain: Vec::with_capacity(1500),
            out: Vec::with_capacity(1500),
        }
    }

    /// Browser -> SIP: what arrives is SRTP; unprotect, rewrite.
    fn browser_to_sip(&mut self, now: Instant) {
        self.seq = self.seq.wrapping_add(1);
        let p = rtp(self.seq);
        self.browser
            .protect_rtp(&p, &mut self.wire)
            .expect("protect");
        let before = common::allocations();
        self.gateway
            .unprotect_rtp(&self.wire, &mut self.plain)
            .expect("unprotect");
        let mid = common::allocations();
        self.to_sip
            .rewrite(&mut self.plain, &self.map, now)
            .expect("rewrite");
        let after = common::allocations();
        SRTP_ALLOCS.fetch_add(mid - before, Ordering::Relaxed);
        OUR_ALLOCS.fetch_add(after - mid, Ordering::Relaxed);
    }

    /// SIP -> browser: what arrives is plain RTP; rewrite, protect.
    fn sip_to_browser(&mut self, packet: &mut [u8], now: Instant) {
        let before = common::allocations();
        self.to_browser
            .rewrite(packet, &self.map, now)
            .expect("rewrite");
        let mid = common::allocations();
        self.gateway
            .protect_rtp(packet, &mut self.out)
            .expect("protect");
        let after = common::allocations();
        OUR_ALLOCS.fetch_add(mid - before, Ordering::Relaxed);
        SRTP_ALLOCS.fetch_add(after - mid, Ordering::Relaxed);
    }
}

static OUR_ALLOCS: AtomicU64 = AtomicU64::new(0);
static SRTP_ALLOCS: AtomicU64 = AtomicU64::new(0);

fn count_allocations() {
    const N: u64 = 10_000;
    for profile in [SrtpProfile::AeadAes128Gcm, SrtpProfile::Aes128CmHmacSha1_80] {
        let mut legs = Legs::new(profile);
        let now = Instant::now();
        // Warm up: first packets of an SSRC set up SRTP state.
        for _ in 0..10 {
            legs.browser_to_sip(now);
        }
        OUR_ALLOCS.store(0, Ordering::Relaxed);
        SRTP_ALLOCS.store(0, Ordering::Relaxed);
        for _ in 0..N {
            legs.browser_to_sip(now);
        }
        let mut p = rtp(1);
        for i in 0..N {
            header::set_seq(&mut p, i as u16);
            legs.sip_to_browser(&mut p, now);
        }
        println!(
            "allocations per packet, {}: ours {:.2}, SRTP library {:.2}",
            profile.name(),
            OUR_ALLOCS.load(Ordering::Relaxed) as f64 / (2 * N) as f64,
            SRTP_ALLOCS.load(Ordering::Relaxed) as f64 / (2 * N) as f64,
        );
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("relay step");
    let packet = rtp(7);
    let mut copy = Vec::with_capacity(1500);
    group.bench_function("baseline: copy one packet", |b| {
        b.iter(|| {
            copy.clear();
            copy.extend_from_slice(black_box(&packet));
            black_box(&copy);
        })
    });
    let mut map = PtMap::new();
    map.insert(0, 0).expect("room");
    let mut rw = StreamRewriter::new(1, 8000);
    let now = Instant::now();
    let mut p = rtp(1);
    let mut seq = 0u16;
    group.bench_function("rewrite only (ours)", |b| {
        b.iter(|| {
            seq = seq.wrapping_add(1);
            header::set_seq(&mut p, seq);
            rw.rewrite(black_box(&mut p), &map, now).expect("rewrite");
        })
    });
    // A µ-law browser and an A-law far end: the same rewrite plus each payload byte mapped.
    let mut law_map = PtMap::new();
    law_map.insert(0, 8).expect("room");
    let recode = LawMap::new(G711::Ulaw, G711::Alaw);
    let mut rw = StreamRewriter::new(1, 8000);
    let mut p = rtp(1);
    group.bench_function("rewrite + µ-law -> A-law recode (ours)", |b| {
        b.iter(|| {
            seq = seq.wrapping_add(1);
            header::set_seq(&mut p, seq);
            header::set_pt_marker(&mut p, 0, false);
            recode.apply(&mut p[header::LEN..]);
            rw.rewrite(black_box(&mut p), &law_map, now)
                .expect("rewrite");
        })
    });
    for profile in [SrtpProfile::AeadAes128Gcm, SrtpProfile::Aes128CmHmacSha1_80] {
        let mut legs = Legs::new(profile);
        // Pre-protect a stream of packets so only unprotect + rewrite is timed.
        let mut wire: Vec<Vec<u8>> = (1..=4096u16)
            .map(|s| {
                let mut w = Vec::new();
                legs.browser.protect_rtp(&rtp(s), &mut w).expect("protect");
                w
            })
            .collect();
        let mut i = 0usize;
        group.bench_function(
            format!("from browser: unprotect + rewrite, {}", profile.name()),
            |b| {
                b.iter(|| {
                    if i == wire.len() {
                        // Replay protection: start a fresh context over the same packets.
                        legs.gateway =
                            SrtpSession::new(&common::keys(profile, true)).expect("keys");
                        i = 0;
                    }
                    legs.gateway
                        .unprotect_rtp(&wire[i], &mut legs.plain)
                        .expect("unprotect");
                    legs.to_sip
                        .rewrite(&mut legs.plain, &legs.map, now)
                        .expect("rewrite");
                    i += 1;
                })
            },
        );
        wire.clear();
        let mut p = rtp(1);
        let mut seq = 0u16;
        group.bench_function(
            format!("to browser: rewrite + protect, {}", profile.name()),
            |b| {
                b.iter(|| {
                    seq = seq.wrapping_add(1);
                    header::set_seq(&mut p, seq);
                    legs.to_browser
                        .rewrite(&mut p, &legs.map, now)
                        .expect("rewrite");
                    legs.gateway
                        .protect_rtp(&p, &mut legs.out)
                        .expect("protect");
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench);

fn main() {
    count_allocations();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
