//! Genesys SIP Server driving the agent's phone (../shared/GENESYS.md): SIPp plays SIP
//! Server's side of each flow through the fixture Kamailio, the test owns the far end's RTP
//! (`FarEnd`, a 1000 Hz tone) and the agent is the WebRTC test peer sending its own 1000 Hz;
//! after each step the audio is measured both ways, by frequency.

use crate::common;

use std::time::{Duration, Instant};

use common::client::{Client, WAIT};
use common::far_end::FarEnd;
use common::gateway::Gateway;
use common::kamailio::{Kamailio, KamailioOptions};
use common::peer::{dominant_frequency, Peer, PeerOptions};
use common::scenes::{
    agent_calls, agent_hangs_up, g711_peer, pcmu_caller, phone_1003, send_answer,
};
use common::sipp::Sipp;
use serde_json::{json, Value};

const UUID: &str = "TTL7J9EM750GP936CFL0EOACN8000002";

/// SIPp playing SIP Server's `scenario` toward DN 5001 through Kamailio, with `vars`.
fn sip_server(kam: &Kamailio, scenario: &str, vars: &[(&str, String)]) -> Sipp {
    let kam_addr = format!("127.0.0.1:{}", kam.port());
    let mut args: Vec<String> = Vec::new();
    for (k, v) in vars {
        args.extend(["-set".to_string(), k.to_string(), v.clone()]);
    }
    args.extend(["-s".into(), "5001".into(), kam_addr]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    Sipp::start(scenario, None, &refs)
}

/// Answers the `incomingCall` `offer` with a new peer (as the client library does on
/// `answerRequested`); the peer once ICE and DTLS are up.
async fn join(gw: &Gateway, c: &mut Client, offer: &Value, opts: PeerOptions) -> Peer {
    let peer = send_answer(c, offer, opts).await;
    assert!(
        peer.wait_connected(Duration::from_secs(10)).await,
        "ICE/DTLS did not complete:\n{}",
        gw.log()
    );
    peer
}

/// The browser sends 1000 Hz for 3 s; the far end must measure it in its own law, and the
/// browser the far end's 1000 Hz (decoded from whatever the gateway sends it).
async fn audio_both_ways(gw: &Gateway, peer: &Peer, far: &FarEnd, what: &str) {
    far.clear();
    let from = peer.received().len();
    assert!(peer.send_tone(1000.0, Duration::from_secs(3)), "no codec");
    tokio::time::sleep(Duration::from_millis(3300)).await;
    let pcm = far.pcm();
    assert!(
        pcm.len() >= 8000 * 2,
        "{what}: only {} samples reached the far end (PT {})\n{}",
        pcm.len(),
        far.pt,
        gw.log()
    );
    let f = dominant_frequency(&pcm[1600..], 8000);
    assert!(
        (980.0..=1020.0).contains(&f),
        "{what}: far end measured {f} Hz"
    );
    let got = &peer.received()[from..];
    let (pcm, rate) = match peer.negotiated_codec() {
        Some(c) if c.name.eq_ignore_ascii_case("opus") => {
            (peer.received_opus_pcm(c.payload_type), 48000)
        }
        _ => (peer.received_pcm(), 8000),
    };
    assert!(
        got.len() > 100,
        "{what}: the browser got {} packets",
        got.len()
    );
    let tail = &pcm[pcm.len().saturating_sub(rate as usize * 2)..];
    let f = dominant_frequency(tail, rate);
    assert!(
        (980.0..=1020.0).contains(&f),
        "{what}: browser measured {f} Hz"
    );
}

/// Waits for `kind` with `by` on the agent's socket.
async fn event_by(c: &mut Client, kind: &str, by: &str) -> Value {
    let ev = c.event(kind, WAIT).await;
    assert_eq!(ev["payload"]["by"], by, "{ev}");
    ev
}

/// WWE's Answer: SIP Server's NOTIFY talk in the early dialog is answered with 200 and the
/// INVITE with 200 OK within a second; the browser hears `answerRequested {by: remote}`,
/// answers, and gets `answered {by: remote}`. SIP Server's offerless re-INVITE right after the
/// ACK, before the browser has joined, gets our full offer and its ACK moves the far end to
/// PCMA; audio flows both ways. The CallUUID is in the
/// browser's `incomingCall`, in REST and on SSE.
#[tokio::test(flavor = "multi_thread")]
async fn notify_talk_answers_a_ringing_call_for_the_agent() {
    let kam = Kamailio::start(KamailioOptions::default());
    let gw = Gateway::start(&kam.uri(), &[]);
    let sse = reqwest::get(format!("{}/api/events", gw.api_url()))
        .await
        .expect("SSE");
    let mut c = Client::connect(&gw.ws_url()).await;
    c.register("5001", "pass5001").await;
    // SIP Server's offerless re-INVITE right after the ACK moves the far end to PCMA.
    let far = FarEnd::start_with(8);
    let mut sipp = sip_server(
        &kam,
        "genesys_remote_answer.xml",
        &[("rtpport", far.port.to_string()), ("uuid", UUID.into())],
    );

    let offer = c.event("incomingCall", WAIT).await;
    assert_eq!(
        offer["payload"]["headers"]["X-Genesys-CallUUID"], UUID,
        "{offer}"
    );
    assert_eq!(offer["payload"]["direction"], "inbound", "{offer}");
    let call_id = offer["payload"]["callId"]
        .as_str()
        .expect("callId")
        .to_string();
    let asked = Instant::now();
    let req = event_by(&mut c, "answerRequested", "remote").await;
    assert_eq!(req["payload"]["callId"], call_id.as_str());
    // The SIP leg is answered without the browser: SIPp has its 200s and ACKed.
    let (_, view) = gw.get(&format!("/api/calls/{call_id}")).await;
    assert_eq!(
        view["state"], "answered",
        "answered on the SIP side: {view}"
    );
    assert!(view["answeredAt"].is_string(), "{view}");
    assert_eq!(view["genesysCallUuid"], UUID, "{view}");
    assert_eq!(view["headers"]["X-Genesys-CallUUID"], UUID, "{view}");
    let peer = join(&gw, &mut c, &offer, g711_peer()).await;
    let answered = event_by(&mut c, "answered", "remote").await;
    assert_eq!(answered["payload"]["callId"], call_id.as_str());
    assert!(asked.elapsed() < Duration::from_secs(10));
    audio_both_ways(&gw, &peer, &far, "after the remote answer").await;
    let (_, view) = gw.get(&format!("/api/calls/{call_id}")).await;
    assert!(
        view["codec"].is_string(),
        "REST codec for an inbound call: {view}"
    );

    agent_hangs_up(&mut c, &mut sipp, &call_id).await;
    let live = sse_until(sse, "hangup").await;
    assert!(
        live.contains(&format!("\"genesysCallUuid\":\"{UUID}\"")),
        "SSE call events carry the CallUUID:\n{live}"
    );
    peer.close().await;
}

/// Reads the SSE stream until an event of `kind` (or 10 s); the text read.
async fn sse_until(mut resp: reqwest::Response, kind: &str) -> String {
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let needle = format!("\"type\":\"{kind}\"");
    let marker = format!("event: {kind}");
    while Instant::now() < deadline && !text.contains(&needle) && !text.contains(&marker) {
        match tokio::time::timeout(Duration::from_secs(1), resp.chunk()).await {
            Ok(Ok(Some(b))) => text.push_str(&String::from_utf8_lossy(&b)),
            Ok(_) => break,
            Err(_) => {}
        }
    }
    text
}

/// WWE's Dial (3pcc MakeCall): an INVITE without SDP reaches the browser as
/// `incomingCall {direction: outbound}`; NOTIFY talk answers it; our 200 OK carries a G.711
/// offer; the ACK comes late with the `c=0.0.0.0` placeholder, which parks the media without
/// ending the call; the re-INVITE with the destination's SDP brings audio both ways.
#[tokio::test(flavor = "multi_thread")]
async fn a_3pcc_call_with_a_late_placeholder_ack_then_a_reinvite() {
    let kam = Kamailio::start(KamailioOptions::default());
    let gw = Gateway::start(&kam.uri(), &[]);
    let mut c = Client::connect(&gw.ws_url()).await;
    c.register("5001", "pass5001").await;
    let far = FarEnd::start();
    let mut sipp = sip_server(
        &kam,
        "genesys_3pcc.xml",
        &[
            ("rtpport", far.port.to_string()),
            ("uuid", UUID.into()),
            ("ackdelay", "4000".into()),
        ],
    );

    let offer = c.event("incomingCall", WAIT).await;
    assert_eq!(offer["payload"]["direction"], "outbound", "{offer}");
    assert!(
        offer["payload"]["from"]
            .as_str()
            .is_some_and(|f| f.contains("1002")),
        "From is the destination: {offer}"
    );
    event_by(&mut c, "answerRequested", "remote").await;
    let answered_at = Instant::now();
    let peer = join(&gw, &mut c, &offer, g711_peer()).await;
    event_by(&mut c, "answered", "remote").await;
    // The late ACK and the re-INVITE come within ~6 s: the placeholder parks the media but
    // is no hold by the far end, and nothing ends the call meanwhile.
    let quiet_until = answered_at + Duration::from_secs(7);
    let mut ack_seen = None;
    while let Some(left) = quiet_until.checked_duration_since(Instant::now()) {
        if let Some(frame) = c.recv(left.min(Duration::from_millis(100))).await {
            assert!(
                !["held", "resumed", "hangup"].contains(&frame["type"].as_str().unwrap_or("")),
                "{frame}"
            );
        }
        if ack_seen.is_none() && gw.log().contains("answer from the ACK applied") {
            ack_seen = Some(answered_at.elapsed());
        }
    }
    let late = ack_seen.unwrap_or_else(|| panic!("no ACK answer applied:\n{}", gw.log()));
    assert!(
        late >= Duration::from_millis(3500),
        "the ACK came {late:?} after the 200 OK, not late as SIP Server's is"
    );
    audio_both_ways(&gw, &peer, &far, "after the 3pcc re-INVITE").await;
    assert!(
        !gw.log().contains("cannot be used"),
        "the placeholder answer is not an error:\n{}",
        gw.log()
    );

    let call_id = offer["payload"]["callId"].as_str().expect("callId");
    agent_hangs_up(&mut c, &mut sipp, call_id).await;
    peer.close().await;
}

/// SIP Server moves an answered call (fixtures/sipp/genesys_moves.xml, one step every
/// `STEP`): an offerless re-INVITE answered in the ACK with PCMA at another port (a media
/// server), a `c=0.0.0.0` hold and an offerless retrieve (`held`/`resumed` by remote),
/// NOTIFY hold and talk (our own re-INVITEs, `held`/`resumed` by remote), and a NOTIFY for an
/// unknown event (489, SIPp checks it); audio both ways after each move.
#[tokio::test(flavor = "multi_thread")]
async fn media_moves_hold_and_retrieve_as_sip_server_does_them() {
    const STEP: Duration = Duration::from_secs(5);
    let kam = Kamailio::start(KamailioOptions::default());
    let gw = Gateway::start(&kam.uri(), &[]);
    let mut c = Client::connect(&gw.ws_url()).await;
    c.register("5001", "pass5001").await;
    let first = FarEnd::start();
    let media_server = FarEnd::start_with(8);
    let mut sipp = sip_server(
        &kam,
        "genesys_moves.xml",
        &[
            ("rtpport", first.port.to_string()),
            ("rtpport2", media_server.port.to_string()),
            ("uuid", UUID.into()),
            ("step", STEP.as_millis().to_string()),
        ],
    );
    let offer = c.event("incomingCall", WAIT).await;
    let call_id = offer["payload"]["callId"].as_str().expect("callId");
    event_by(&mut c, "answerRequested", "remote").await;
    let answered_at = Instant::now();
    let peer = join(&gw, &mut c, &offer, g711_peer()).await;
    event_by(&mut c, "answered", "remote").await;
    audio_both_ways(&gw, &peer, &first, "before the move").await;

    // Step 2: moved to the media server on PCMA by an offerless re-INVITE.
    tokio::time::sleep(
        (answered_at + STEP + Duration::from_millis(500)).saturating_duration_since(Instant::now()),
    )
    .await;
    audio_both_ways(&gw, &peer, &media_server, "moved to PCMA").await;
    let (_, view) = gw.get(&format!("/api/calls/{call_id}")).await;
    // The browser sends PCMU, as it answered our PCMU-first offer: each byte is recoded.
    assert_eq!(view["codec"], "PCMU/8000 <-> PCMA/8000", "{view}");

    // Step 3: desktop hold with c=0.0.0.0; step 4: offerless retrieve.
    event_by(&mut c, "held", "remote").await;
    event_by(&mut c, "resumed", "remote").await;
    audio_both_ways(&gw, &peer, &media_server, "after the retrieve").await;

    // Steps 5 and 6: NOTIFY hold and talk make the phone hold and resume itself.
    event_by(&mut c, "held", "remote").await;
    event_by(&mut c, "resumed", "remote").await;
    audio_both_ways(&gw, &peer, &media_server, "after NOTIFY talk").await;

    // Step 7: 489 for an unknown event (SIPp's scenario fails otherwise); the call goes on.
    tokio::time::sleep(STEP).await;
    agent_hangs_up(&mut c, &mut sipp, call_id).await;
    peer.close().await;
}

/// What the phone refuses, each with its own answer and nothing else disturbed: NOTIFY for an
/// unknown event (489, the call still rings and NOTIFY talk then answers it), an ACK whose
/// answer has nothing we offered (BYE with `Reason: SIP;cause=488`, `hangup` with cause
/// `not_acceptable`), and NOTIFY talk for the call that is over (481). SIPp checks each
/// response and the Reason header.
#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_from_sip_server_get_their_answers() {
    let kam = Kamailio::start(KamailioOptions::default());
    let gw = Gateway::start(&kam.uri(), &[]);
    let mut c = Client::connect(&gw.ws_url()).await;
    c.register("5001", "pass5001").await;
    // Another agent's call, which none of this may disturb.
    let mut echo = phone_1003(&kam, "uas_answer.xml", &["-rtp_echo"]);
    let (mut other, other_peer, other_call) = agent_calls(&gw, "5002", "1003").await;
    let far = FarEnd::start();
    let mut sipp = sip_server(
        &kam,
        "genesys_bad_input.xml",
        &[("rtpport", far.port.to_string()), ("uuid", UUID.into())],
    );
    let offer = c.event("incomingCall", WAIT).await;
    event_by(&mut c, "answerRequested", "remote").await;
    let peer = join(&gw, &mut c, &offer, g711_peer()).await;
    let h = c.event("hangup", WAIT).await;
    assert_eq!(h["payload"]["by"], "server", "{h}");
    assert_eq!(h["payload"]["cause"], "not_acceptable", "{h}");
    assert_eq!(h["payload"]["sipStatus"], 488, "{h}");
    assert!(
        sipp.wait(Duration::from_secs(10))
            .is_some_and(|s| s.success()),
        "489, BYE with Reason, 481:\n{}",
        sipp.traces()
    );
    let (_, active) = gw.get("/api/calls/active").await;
    let calls = active["calls"].as_array().cloned().unwrap_or_default();
    assert_eq!(calls.len(), 1, "{active}");
    assert_eq!(calls[0]["callId"], other_call.as_str(), "{active}");
    assert_eq!(calls[0]["state"], "answered", "{active}");
    let before = other_peer.received_pcm().len();
    assert!(other_peer.send_tone(1000.0, Duration::from_secs(1)));
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert!(
        other_peer.received_pcm().len() > before + 4000,
        "the other call's echo stopped"
    );
    other.request("hangup", json!({"callId": other_call})).await;
    other.event("hangup", WAIT).await;
    assert!(echo
        .wait(Duration::from_secs(5))
        .is_some_and(|s| s.success()));
    peer.close().await;
    other_peer.close().await;
}

/// An incoming call rings as long as its caller lets it: the browser's media clock starts
/// at its answer, not at the INVITE (the media connect time-out is 30 s), so a call answered
/// after 35 s connects and has audio.
#[tokio::test(flavor = "multi_thread")]
async fn a_call_answered_after_35_s_of_ringing_connects() {
    let kam = Kamailio::start(KamailioOptions::default());
    let gw = Gateway::start(&kam.uri(), &[]);
    let mut c = Client::connect(&gw.ws_url()).await;
    c.register("5001", "pass5001").await;
    let far = FarEnd::start();
    let mut caller = pcmu_caller(&kam, &far, "5001");
    let offer = c.event("incomingCall", WAIT).await;
    let ring_until = Instant::now() + Duration::from_secs(35);
    while let Some(left) = ring_until.checked_duration_since(Instant::now()) {
        if let Some(frame) = c.recv(left).await {
            assert_ne!(frame["type"], "hangup", "{frame}\n{}", gw.log());
        }
    }
    let peer = join(&gw, &mut c, &offer, g711_peer()).await;
    event_by(&mut c, "answered", "local").await;
    audio_both_ways(&gw, &peer, &far, "after 35 s of ringing").await;
    let call_id = offer["payload"]["callId"].as_str().expect("callId");
    agent_hangs_up(&mut c, &mut caller, call_id).await;
    peer.close().await;
}

/// Long silences (GENESYS.md §5): for 40 s the far end sends only a comfort-noise packet
/// (PT 13, never negotiated) and an RTCP report every 5 s, longer than the 30 s RTP
/// time-out. The call stays up, no CN reaches the browser, and audio flows again after.
#[tokio::test(flavor = "multi_thread")]
async fn forty_seconds_of_comfort_noise_do_not_end_the_call() {
    let kam = Kamailio::start(KamailioOptions::default());
    let gw = Gateway::start(&kam.uri(), &["--rtp-timeout", "30"]);
    let mut c = Client::connect(&gw.ws_url()).await;
    c.register("5001", "pass5001").await;
    // The flow moves the far end to PCMA at once (SIP Server's offerless re-INVITE).
    let far = FarEnd::start_with(8);
    let mut sipp = sip_server(
        &kam,
        "genesys_remote_answer.xml",
        &[("rtpport", far.port.to_string()), ("uuid", UUID.into())],
    );
    let offer = c.event("incomingCall", WAIT).await;
    event_by(&mut c, "answerRequested", "remote").await;
    let peer = join(&gw, &mut c, &offer, g711_peer()).await;
    event_by(&mut c, "answered", "remote").await;

    // The agent talks all along, as a browser's microphone sends all along.
    assert!(peer.send_tone(1000.0, Duration::from_secs(48)));
    far.set_silent(true);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let from = peer.received().len();
    let quiet_until = Instant::now() + Duration::from_secs(40);
    while let Some(left) = quiet_until.checked_duration_since(Instant::now()) {
        if let Some(frame) = c.recv(left).await {
            assert_ne!(frame["type"], "hangup", "{frame}\n{}", gw.log());
        }
    }
    let during = &peer.received()[from..];
    assert!(
        during.iter().all(|p| p.pt != 13),
        "comfort noise reached the browser"
    );
    far.set_silent(false);
    audio_both_ways(&gw, &peer, &far, "after 40 s of silence").await;
    let call_id = offer["payload"]["callId"].as_str().expect("callId");
    agent_hangs_up(&mut c, &mut sipp, call_id).await;
    peer.close().await;
}

/// A caller that requires 100rel (RFC 3262) gets a reliable 180 (`Require: 100rel`, `RSeq`),
/// retransmitted until its PRACK, which is answered; the call then goes on as any other.
/// SIPp checks the headers and PRACKs after the first retransmission.
#[tokio::test(flavor = "multi_thread")]
async fn a_caller_requiring_100rel_gets_a_reliable_180() {
    let kam = Kamailio::start(KamailioOptions::default());
    let gw = Gateway::start(&kam.uri(), &[]);
    let mut c = Client::connect(&gw.ws_url()).await;
    c.register("5001", "pass5001").await;
    let far = FarEnd::start();
    let kam_addr = format!("127.0.0.1:{}", kam.port());
    let rtpport = far.port.to_string();
    let mut caller = Sipp::start(
        "uac_100rel.xml",
        None,
        &["-set", "rtpport", &rtpport, "-s", "5001", &kam_addr],
    );
    let offer = c.event("incomingCall", WAIT).await;
    // Past the first retransmission and the PRACK; none may come after it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ringing = caller.messages().matches("SIP/2.0 180 Ringing").count();
    assert_eq!(
        ringing,
        2,
        "the 180 once, again after T1, not after the PRACK:\n{}",
        caller.messages()
    );
    let peer = join(&gw, &mut c, &offer, g711_peer()).await;
    event_by(&mut c, "answered", "local").await;
    audio_both_ways(&gw, &peer, &far, "after a reliable 180").await;
    let call_id = offer["payload"]["callId"].as_str().expect("callId");
    agent_hangs_up(&mut c, &mut caller, call_id).await;
    peer.close().await;
}
