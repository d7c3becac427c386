//! Opus <-> G.711 transcoding end to end: an Opus-only browser (the WebRTC test peer, encoding
//! and decoding Opus with libopus as a browser does) and a PCMU-only far end (SIPp signals it;
//! the test owns its RTP port, sends a tone from it and measures what arrives), through the
//! real gateway and a real Kamailio, both call directions.

use crate::common;

use std::time::Duration;

use common::client::{Client, WAIT};
use common::far_end::{FarEnd, Got, FAR_TE};
use common::gateway::Gateway;
use common::kamailio::{pick_port, Kamailio, KamailioOptions};
use common::peer::{dominant_frequency, Peer, PeerOptions};
use common::scenes::{pcmu_caller, start_call};
use common::sipp::{self, Sipp};
use serde_json::json;

/// The test browser's: Opus and telephone-event/48000, as Chrome pairs them.
const OPUS_PT: u8 = 111;
const BROWSER_TE: u8 = 110;

/// A browser that only has Opus (and its 48 kHz telephone-event).
fn opus_peer() -> PeerOptions {
    PeerOptions {
        codecs: vec!["opus", "telephone-event/48000"],
        ..PeerOptions::default()
    }
}

/// Consecutive packets of `pt` (by sequence number) advance the timestamp by `step`.
fn assert_clock(packets: &[(u16, u32)], step: u32, what: &str) {
    let mut checked = 0;
    for w in packets.windows(2) {
        if w[1].0 == w[0].0.wrapping_add(1) {
            assert_eq!(
                w[1].1.wrapping_sub(w[0].1),
                step,
                "{what}: timestamp step between {:?} and {:?}",
                w[0],
                w[1]
            );
            checked += 1;
        }
    }
    assert!(checked > 50, "{what}: only {checked} consecutive packets");
}

/// Both ways, 4 s of a 1000 Hz tone: the far end must measure 1000 ± 20 Hz in the PCMU it
/// gets, the browser in the Opus it gets, each on its own RTP clock.
async fn tone_crosses_both_ways(gw: &Gateway, peer: &Peer, far: &FarEnd) {
    assert!(peer.send_tone(1000.0, Duration::from_secs(4)), "no Opus");
    tokio::time::sleep(Duration::from_millis(4500)).await;

    let pcm = far.pcm();
    assert!(
        pcm.len() >= 8000 * 3,
        "only {} samples reached the far end\n{}",
        pcm.len(),
        gw.log()
    );
    let f = dominant_frequency(&pcm[1600..], 8000);
    eprintln!("far end (PCMU): {} samples, {f} Hz", pcm.len());
    assert!((980.0..=1020.0).contains(&f), "far end measured {f} Hz");
    let audio: Vec<(u16, u32)> = far
        .packets()
        .iter()
        .filter(|p| p.pt == 0)
        .map(|p| (p.seq, p.ts))
        .collect();
    assert_clock(&audio, 160, "toward SIP");
    assert!(far.packets().iter().all(|p| p.pt == 0 || p.pt == FAR_TE));

    let pcm = peer.received_opus_pcm(OPUS_PT);
    assert!(
        pcm.len() >= 48000 * 3,
        "only {} samples reached the browser\n{}",
        pcm.len(),
        gw.log()
    );
    let f = dominant_frequency(&pcm[9600..], 48000);
    eprintln!("browser (Opus at 48 kHz): {} samples, {f} Hz", pcm.len());
    assert!((980.0..=1020.0).contains(&f), "browser measured {f} Hz");
    let audio: Vec<(u16, u32)> = peer
        .received()
        .iter()
        .filter(|p| p.pt == OPUS_PT)
        .map(|p| (p.seq, p.ts))
        .collect();
    assert_clock(&audio, 960, "toward the browser");
}

#[tokio::test(flavor = "multi_thread")]
async fn opus_only_browser_calls_a_pcmu_only_phone() {
    let kam = Kamailio::start(KamailioOptions::default());
    let far = FarEnd::start();
    let sip_port = pick_port();
    assert!(sipp::register(kam.port(), sip_port, "1003", "pass1003"));
    let mut phone = Sipp::start(
        "uas_pcmu_rtpport.xml",
        Some(sip_port),
        &["-set", "rtpport", &far.port.to_string()],
    );
    let gw = Gateway::start(&kam.uri(), &[]);
    let mut c = Client::connect(&gw.ws_url()).await;
    c.register("5001", "pass5001").await;

    let peer = Peer::new(opus_peer()).await;
    let offer = peer.create_offer().await;
    assert!(
        offer.contains("opus/48000/2") && !offer.contains("PCMU"),
        "{offer}"
    );
    let call_id = start_call(&mut c, &peer, "1003", &offer).await;
    c.event("answered", WAIT).await;
    assert!(
        peer.wait_connected(Duration::from_secs(10)).await,
        "ICE/DTLS did not complete:\n{}",
        gw.log()
    );
    let negotiated = peer.negotiated_codec().expect("negotiated");
    assert_eq!(negotiated.name.to_ascii_lowercase(), "opus");
    assert_eq!(negotiated.telephone_event_pt, Some(BROWSER_TE));

    tone_crosses_both_ways(&gw, &peer, &far).await;

    let (status, call) = gw.get(&format!("/api/calls/{call_id}")).await;
    assert_eq!(status, 200, "{call}");
    assert_eq!(call["codec"], "opus/48000 <-> PCMU/8000", "{call}");
    assert!(gw.log().contains("media: transcoding"));

    // The far end's key press: a `dtmf` event, and the events relayed to the browser on its
    // 48 kHz clock (100 ms = 4800).
    far.press(5);
    let d = c.event("dtmf", WAIT).await;
    assert_eq!(d["payload"]["digit"], "5", "{d}");
    assert_eq!(d["payload"]["method"], "rfc4733", "{d}");
    assert_eq!(d["payload"]["duration"], 100, "{d}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events: Vec<_> = peer
        .received()
        .into_iter()
        .filter(|p| p.pt == BROWSER_TE)
        .collect();
    assert!(events.len() >= 6, "{events:?}");
    assert!(events.iter().all(|p| p.payload[0] == 5));
    let last = events.last().expect("events");
    assert_eq!(last.payload[1] & 0x80, 0x80, "end bit");
    assert_eq!(u16::from_be_bytes([last.payload[2], last.payload[3]]), 4800);
    assert!(events.iter().all(|p| p.ts == events[0].ts), "one timestamp");

    // The browser's key press at 48 kHz reaches the far end as 8 kHz events.
    assert!(peer.send_key(7, Duration::from_millis(100)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events: Vec<Got> = far
        .packets()
        .into_iter()
        .filter(|p| p.pt == FAR_TE)
        .collect();
    assert!(events.len() >= 5, "{events:?}\n{}", gw.log());
    assert!(events.iter().all(|p| p.payload[0] == 7));
    let last = events.last().expect("events");
    assert_eq!(last.payload[1] & 0x80, 0x80, "end bit");
    assert_eq!(u16::from_be_bytes([last.payload[2], last.payload[3]]), 800);
    assert!(events.iter().all(|p| p.ts == events[0].ts), "one timestamp");

    c.request("hangup", json!({"callId": call_id})).await;
    c.event("hangup", WAIT).await;
    let status = phone.wait(Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| s.success()),
        "SIPp did not get a clean BYE: {status:?}\n{}",
        phone.traces()
    );
    peer.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pcmu_only_caller_reaches_an_opus_only_browser() {
    let kam = Kamailio::start(KamailioOptions::default());
    let gw = Gateway::start(&kam.uri(), &[]);
    let mut c = Client::connect(&gw.ws_url()).await;
    c.register("5001", "pass5001").await;
    let far = FarEnd::start();
    let mut caller = pcmu_caller(&kam, &far, "5001");

    let offer = c.event("incomingCall", WAIT).await;
    let call_id = offer["payload"]["callId"]
        .as_str()
        .expect("callId")
        .to_string();
    let sdp = offer["payload"]["sdp"].as_str().expect("offer sdp");
    assert!(
        sdp.contains("PCMU/8000") && sdp.contains("opus/48000/2"),
        "the browser is offered the far end's PCMU and Opus: {sdp}"
    );
    let peer = Peer::new(opus_peer()).await;
    let answer = peer.accept_offer(sdp).await;
    assert!(!answer.contains("PCMU"), "{answer}");
    let r = c
        .request("answer", json!({"callId": call_id, "sdp": answer}))
        .await;
    assert_eq!(r["type"], "result", "{r}");
    c.event("answered", WAIT).await;
    assert!(
        peer.wait_connected(Duration::from_secs(10)).await,
        "ICE/DTLS did not complete:\n{}",
        gw.log()
    );

    tone_crosses_both_ways(&gw, &peer, &far).await;
    assert!(
        gw.log().contains("opus/48000 <-> PCMU/8000"),
        "{}",
        gw.log()
    );

    c.request("hangup", json!({"callId": call_id})).await;
    c.event("hangup", WAIT).await;
    let status = caller.wait(Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| s.success()),
        "SIPp did not get a clean BYE: {status:?}\n{}",
        caller.traces()
    );
    peer.close().await;
}
