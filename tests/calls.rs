//! Calls end to end: a WebRTC peer playing the browser over the real protocol, the gateway,
//! a real Kamailio, and SIPp as the far-end phone.

mod common;

use std::time::{Duration, Instant};

use common::client::{Client, WAIT};
use common::gateway::Gateway;
use common::kamailio::{pick_port, Kamailio, KamailioOptions};
use common::peer::{Peer, PeerOptions};
use common::sipp::{self, Sipp};
use serde_json::json;

/// A SIPp UAS registered as `user` that answers one call and echoes its RTP.
fn echo_phone(kam: &Kamailio, user: &str, pass: &str) -> Sipp {
    let port = pick_port();
    assert!(
        sipp::register(kam.port(), port, user, pass),
        "SIPp could not register {user}"
    );
    Sipp::start("uas_answer.xml", Some(port), &["-rtp_echo"])
}

fn g711_peer() -> PeerOptions {
    PeerOptions {
        codecs: vec!["PCMU", "opus", "telephone-event"],
        ..PeerOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn outbound_call_echoes_audio_and_hangs_up_with_bye() {
    let kam = Kamailio::start(KamailioOptions::default());
    let mut phone = echo_phone(&kam, "1003", "pass1003");
    let gw = Gateway::start(&kam.uri(), &[]);
    let mut c = Client::connect(&gw.ws_url()).await;
    c.register("5001", "pass5001").await;

    let peer = Peer::new(g711_peer()).await;
    let offer = peer.create_offer().await;
    let r = c.request("call", json!({"to": "1003", "sdp": offer})).await;
    assert_eq!(r["type"], "result", "{r}");
    let call_id = r["payload"]["callId"].as_str().expect("callId").to_string();
    let answer = r["payload"]["sdp"].as_str().expect("sdp answer");
    assert!(answer.contains("a=ice-lite"), "{answer}");
    peer.set_remote_answer(answer).await;

    let ringing = c.event("ringing", WAIT).await;
    assert_eq!(ringing["payload"]["callId"], call_id.as_str());
    assert_eq!(ringing["payload"]["sipStatus"], 180);
    let answered = c.event("answered", WAIT).await;
    assert_eq!(answered["payload"]["callId"], call_id.as_str());
    assert!(
        peer.wait_connected(Duration::from_secs(10)).await,
        "ICE/DTLS with the gateway did not complete:\n{}",
        gw.log()
    );

    // 5 s of 20 ms packets, echoed by the far end through the gateway both ways.
    let sent = 250u32;
    peer.send_numbered(sent, 160);
    let started = Instant::now();
    let mut active = serde_json::Value::Null;
    while started.elapsed() < Duration::from_secs(6) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (_, a) = gw.get("/api/calls/active").await;
        active = a;
    }
    let echoed = peer.echoed_counters().len() as u32;
    assert!(
        echoed * 100 >= sent * 95,
        "only {echoed} of {sent} packets came back\n{}",
        gw.log()
    );
    let calls = active["calls"].as_array().expect("calls");
    assert_eq!(calls.len(), 1, "{active}");
    let call = &calls[0];
    assert_eq!(call["callId"], call_id.as_str());
    assert_eq!(call["direction"], "outbound");
    assert_eq!(call["state"], "answered");
    assert_eq!(call["codec"], "PCMU");
    assert!(call["sipCallId"].is_string());
    assert!(
        call["media"]["packetsIn"]
            .as_u64()
            .is_some_and(|n| n >= 400),
        "{call}"
    );
    assert!(
        call["media"]["packetsOut"]
            .as_u64()
            .is_some_and(|n| n >= 400),
        "{call}"
    );
    let (status, one) = gw.get(&format!("/api/calls/{call_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(one["callId"], call_id.as_str());

    let r = c.request("hangup", json!({"callId": call_id})).await;
    assert_eq!(r["type"], "result", "{r}");
    let h = c.event("hangup", WAIT).await;
    assert_eq!(h["payload"]["by"], "local");
    let status = phone.wait(Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| s.success()),
        "SIPp did not get a clean BYE: {status:?}\n{}",
        phone.traces()
    );
    let (_, active) = gw.get("/api/calls/active").await;
    assert_eq!(active["calls"], json!([]), "{active}");
    peer.close().await;
}
