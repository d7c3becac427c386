//! Set-ups several call tests share: SIPp phones registered at Kamailio and an agent in an
//! answered call.

use std::time::Duration;

use serde_json::{json, Value};

use super::client::{Client, WAIT};
use super::gateway::Gateway;
use super::kamailio::{pick_port, Kamailio};
use super::peer::{Peer, PeerOptions};
use super::sipp::{self, Sipp};

/// The test browser offering PCMU first (the far ends here speak G.711).
pub fn g711_peer() -> PeerOptions {
    PeerOptions {
        codecs: vec!["PCMU", "opus", "telephone-event"],
        ..PeerOptions::default()
    }
}

/// SIPp running `scenario` as `user` (password `pass<user>`), registered at `kam` from the
/// port it then listens on.
pub fn phone(kam: &Kamailio, user: &str, scenario: &str, extra: &[&str]) -> Sipp {
    let port = pick_port();
    assert!(
        sipp::register(kam.port(), port, user, &format!("pass{user}")),
        "SIPp could not register {user}"
    );
    Sipp::start(scenario, Some(port), extra)
}

/// One second of a 1000 Hz tone as raw u-law, for SIPp's `uas_tone.xml` (`tone.ulaw`).
pub fn tone_ulaw() -> Vec<u8> {
    let mut g = super::peer::ToneGenerator::new(1000.0, 8000, 8000.0);
    super::peer::encode_g711(&g.next_samples(8000), true)
}

/// SIPp registered as `user` that answers and plays a 1000 Hz tone until BYE.
pub fn tone_phone(kam: &Kamailio, user: &str) -> Sipp {
    let port = pick_port();
    assert!(
        sipp::register(kam.port(), port, user, &format!("pass{user}")),
        "SIPp could not register {user}"
    );
    let tone = tone_ulaw();
    Sipp::start_with_files("uas_tone.xml", Some(port), &[], &[("tone.ulaw", &tone)])
}

/// SIPp running `scenario` as 1003.
pub fn phone_1003(kam: &Kamailio, scenario: &str, extra: &[&str]) -> Sipp {
    phone(kam, "1003", scenario, extra)
}

/// Agent 5001 on a new gateway (with `gw_args`), in an answered call to 1003 whose ICE and
/// DTLS are up: the gateway, the agent's socket, its WebRTC peer and the call id.
pub async fn answered_call(kam: &Kamailio, gw_args: &[&str]) -> (Gateway, Client, Peer, String) {
    let gw = Gateway::start(&kam.uri(), gw_args);
    let (c, peer, call_id) = agent_calls(&gw, "5001", "1003").await;
    (gw, c, peer, call_id)
}

/// Agent `dn` registered on `gw`, in an answered call to `to` with ICE and DTLS up.
pub async fn agent_calls(gw: &Gateway, dn: &str, to: &str) -> (Client, Peer, String) {
    agent_calls_via(gw, &gw.ws_url(), dn, to).await
}

/// [`agent_calls`] over the WebSocket at `url` (e.g. with `?token=`).
pub async fn agent_calls_via(
    gw: &Gateway,
    url: &str,
    dn: &str,
    to: &str,
) -> (Client, Peer, String) {
    let mut c = Client::connect(url).await;
    c.register(dn, &format!("pass{dn}")).await;
    let peer = Peer::new(g711_peer()).await;
    let offer = peer.create_offer().await;
    let call_id = start_call(&mut c, &peer, to, &offer).await;
    c.event("answered", WAIT).await;
    assert!(
        peer.wait_connected(Duration::from_secs(10)).await,
        "ICE/DTLS with the gateway did not complete:\n{}",
        gw.log()
    );
    (c, peer, call_id)
}

/// Sends `call` to `to` with the browser's `offer` and hands the gateway's answer to `peer`:
/// the call id.
pub async fn start_call(c: &mut Client, peer: &Peer, to: &str, offer: &str) -> String {
    let r = c.request("call", json!({"to": to, "sdp": offer})).await;
    assert_eq!(r["type"], "result", "{r}");
    let call_id = r["payload"]["callId"].as_str().expect("callId").to_string();
    peer.set_remote_answer(r["payload"]["sdp"].as_str().expect("sdp"))
        .await;
    call_id
}

/// Answers the next `incomingCall` on `c` with a new peer; returns the peer and the call id
/// once `answered` came and ICE/DTLS are up.
pub async fn answer_incoming(gw: &Gateway, c: &mut Client) -> (Peer, String) {
    let offer = c.event("incomingCall", WAIT).await;
    let call_id = offer["payload"]["callId"]
        .as_str()
        .expect("callId")
        .to_string();
    let peer = send_answer(c, &offer, g711_peer()).await;
    c.event("answered", WAIT).await;
    assert!(
        peer.wait_connected(Duration::from_secs(10)).await,
        "ICE/DTLS did not complete:\n{}",
        gw.log()
    );
    (peer, call_id)
}

/// Answers the `incomingCall` event `offer` with a new peer made with `opts`, asserting the
/// `result`; the peer (ICE and DTLS may still be under way).
pub async fn send_answer(c: &mut Client, offer: &Value, opts: PeerOptions) -> Peer {
    let call_id = offer["payload"]["callId"].as_str().expect("callId");
    let peer = Peer::new(opts).await;
    let answer = peer
        .accept_offer(offer["payload"]["sdp"].as_str().expect("offer sdp"))
        .await;
    let r = c
        .request("answer", json!({"callId": call_id, "sdp": answer}))
        .await;
    assert_eq!(r["type"], "result", "{r}");
    peer
}

/// SIPp calling `dn` through `kam` with a PCMU-only offer at `far`'s RTP port, then waiting
/// for the callee's BYE (fixtures/sipp/uac_pcmu_rtpport.xml).
pub fn pcmu_caller(kam: &Kamailio, far: &super::far_end::FarEnd, dn: &str) -> Sipp {
    let kam_addr = format!("127.0.0.1:{}", kam.port());
    let rtpport = far.port.to_string();
    Sipp::start(
        "uac_pcmu_rtpport.xml",
        None,
        &["-set", "rtpport", &rtpport, "-s", dn, &kam_addr],
    )
}

/// The agent hangs up: `hangup {by: local}`, and the SIPp far end took the BYE and ends with
/// every step of its scenario done.
pub async fn agent_hangs_up(c: &mut Client, sipp: &mut Sipp, call_id: &str) {
    c.request("hangup", json!({"callId": call_id})).await;
    let h = c.event("hangup", WAIT).await;
    assert_eq!(h["payload"]["by"], "local", "{h}");
    assert!(
        sipp.wait(Duration::from_secs(5))
            .is_some_and(|s| s.success()),
        "the SIPp far end did not finish clean:\n{}",
        sipp.traces()
    );
}
