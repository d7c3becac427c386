//! Blind transfer through a real Kamailio: the agent's `transfer` (REFER, NOTIFY progress as
//! `transferState`), and a REFER from the far end that moves the agent to the target. The
//! transfer targets are SIPp phones playing a 1000 Hz tone, measured by the agent who ends
//! up talking to them.

use crate::common;

use std::time::Duration;

use common::client::{Client, WAIT};
use common::gateway::Gateway;
use common::kamailio::{Kamailio, KamailioOptions};
use common::peer::{dominant_frequency, Peer};
use common::scenes::{answer_incoming, g711_peer, phone_1003, start_call, tone_phone};
use serde_json::{json, Value};

/// `transferState` events for `call_id` until a final one (`succeeded` / `failed`).
async fn transfer_states(c: &mut Client, call_id: &str) -> Vec<Value> {
    let mut states = Vec::new();
    loop {
        let ev = c.event("transferState", Duration::from_secs(20)).await;
        assert_eq!(ev["payload"]["callId"], call_id, "{ev}");
        let state = ev["payload"]["state"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        states.push(ev["payload"].clone());
        if state == "succeeded" || state == "failed" {
            return states;
        }
    }
}

fn names(states: &[Value]) -> Vec<&str> {
    states
        .iter()
        .map(|s| s["state"].as_str().unwrap_or_default())
        .collect()
}

/// The dominant frequency of what `peer` heard after its first `skip` samples, once at least
/// a second of it arrived.
async fn tone_after(peer: &Peer, skip: usize) -> f64 {
    for _ in 0..50 {
        let pcm = peer.received_pcm();
        if pcm.len() >= skip + 8000 {
            return dominant_frequency(&pcm[skip..], 8000);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = peer.received_pcm().len().saturating_sub(skip);
    panic!("only {got} samples arrived after the transfer");
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_transfers_the_far_end_to_5002_after_a_failed_attempt() {
    let kam = Kamailio::start(KamailioOptions::default());
    let mut target = tone_phone(&kam, "5002");
    let gw = Gateway::start(&kam.uri(), &[]);

    // 1003 is an agent of the same gateway: the transferee, following our REFER.
    let mut b = Client::connect(&gw.ws_url()).await;
    b.register("1003", "pass1003").await;
    let mut a = Client::connect(&gw.ws_url()).await;
    a.register("5001", "pass5001").await;
    let peer_a = Peer::new(g711_peer()).await;
    let offer = peer_a.create_offer().await;
    let call_a = start_call(&mut a, &peer_a, "1003", &offer).await;
    let (peer_b, call_b) = answer_incoming(&gw, &mut b).await;
    a.event("answered", WAIT).await;
    assert!(peer_a.wait_connected(Duration::from_secs(10)).await);

    // A target nobody registered: the transferee's INVITE fails, both calls stay up.
    let r = a
        .request("transfer", json!({"callId": call_a, "to": "1004"}))
        .await;
    assert_eq!(r["type"], "result", "{r}");
    let states = transfer_states(&mut a, &call_a).await;
    assert_eq!(
        names(&states),
        ["trying", "accepted", "failed"],
        "{states:?}"
    );
    let status = states[2]["sipStatus"].as_u64().unwrap_or_default();
    assert!(status >= 400, "{states:?}");
    let theirs = transfer_states(&mut b, &call_b).await;
    assert_eq!(names(&theirs), ["trying", "failed"], "{theirs:?}");
    assert_eq!(theirs[0]["by"], "remote");
    let (_, active) = gw.get("/api/calls/active").await;
    assert_eq!(
        active["calls"].as_array().map(Vec::len),
        Some(2),
        "{active}"
    );

    // 5002 answers: A's leg ends, B now talks to 5002.
    let heard_before = peer_b.received_pcm().len();
    let r = a
        .request("transfer", json!({"callId": call_a, "to": "5002"}))
        .await;
    assert_eq!(r["type"], "result", "{r}");
    let states = transfer_states(&mut a, &call_a).await;
    assert_eq!(
        names(&states),
        ["trying", "accepted", "succeeded"],
        "{states:?}\n{}",
        gw.log()
    );
    let h = a.event("hangup", WAIT).await;
    assert_eq!(h["payload"]["callId"], call_a.as_str(), "{h}");
    assert_eq!(h["payload"]["cause"], "transferred", "{h}");
    assert_eq!(h["payload"]["by"], "local", "{h}");

    let theirs = transfer_states(&mut b, &call_b).await;
    assert_eq!(names(&theirs), ["trying", "succeeded"], "{theirs:?}");
    assert!(
        theirs[1]["to"].as_str().is_some_and(|t| t.contains("5002")),
        "{theirs:?}"
    );
    let f = tone_after(&peer_b, heard_before).await;
    assert!((980.0..=1020.0).contains(&f), "B hears {f} Hz from 5002");

    let (_, active) = gw.get("/api/calls/active").await;
    let calls = active["calls"].as_array().cloned().unwrap_or_default();
    assert_eq!(calls.len(), 1, "{active}");
    assert_eq!(calls[0]["callId"], call_b.as_str());
    assert!(
        calls[0]["remote"]
            .as_str()
            .is_some_and(|r| r.contains("5002")),
        "{active}"
    );

    // B hangs up: 5002 gets the BYE.
    let r = b.request("hangup", json!({"callId": call_b})).await;
    assert_eq!(r["type"], "result", "{r}");
    b.event("hangup", WAIT).await;
    let status = target.wait(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}\n{}",
        target.traces(),
        gw.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refer_from_the_far_end_moves_the_agent_to_the_target() {
    let kam = Kamailio::start(KamailioOptions::default());
    let mut target = tone_phone(&kam, "5002");
    let mut transferor = phone_1003(
        &kam,
        "uas_refer.xml",
        &["-rtp_echo", "-set", "target", "5002"],
    );
    let gw = Gateway::start(&kam.uri(), &[]);
    let (mut a, peer, call_id) = common::scenes::agent_calls(&gw, "5001", "1003").await;
    let heard_before = peer.received_pcm().len();

    let states = transfer_states(&mut a, &call_id).await;
    assert_eq!(
        names(&states),
        ["trying", "succeeded"],
        "{states:?}\n{}",
        gw.log()
    );
    assert_eq!(states[1]["by"], "remote");
    // The transferor got 202, NOTIFY 100 and 200, and hung up its own leg.
    let status = transferor.wait(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}\n{}",
        transferor.traces(),
        gw.log()
    );
    let f = tone_after(&peer, heard_before).await;
    assert!(
        (980.0..=1020.0).contains(&f),
        "the agent hears {f} Hz from 5002"
    );
    // The transferor's BYE ended its leg, not the agent's call.
    assert!(a
        .recv(Duration::from_millis(500))
        .await
        .is_none_or(|e| e["type"] != "hangup"));

    let r = a.request("hangup", json!({"callId": call_id})).await;
    assert_eq!(r["type"], "result", "{r}");
    let h = a.event("hangup", WAIT).await;
    assert_eq!(h["payload"]["by"], "local", "{h}");
    let status = target.wait(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        target.traces()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn incoming_refer_is_refused_with_403_when_disabled() {
    let kam = Kamailio::start(KamailioOptions::default());
    let mut transferor = phone_1003(
        &kam,
        "uas_refer_refused.xml",
        &["-rtp_echo", "-set", "target", "5002"],
    );
    let gw = Gateway::start(&kam.uri(), &["--incoming-refer", "reject"]);
    let (mut a, _peer, call_id) = common::scenes::agent_calls(&gw, "5001", "1003").await;
    // The far end gives up on its transfer and hangs up: no transferState, one hangup.
    let mut seen = Vec::new();
    let h = loop {
        let ev = a.recv(Duration::from_secs(15)).await.expect("a hangup");
        if ev["type"] == "hangup" {
            break ev;
        }
        seen.push(ev["type"].clone());
    };
    assert_eq!(h["payload"]["callId"], call_id.as_str(), "{h}");
    assert_eq!(h["payload"]["by"], "remote", "{h}");
    assert!(!seen.contains(&json!("transferState")), "{seen:?}");
    let status = transferor.wait(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "SIPp did not get 403: {status:?}\n{}",
        transferor.traces()
    );
}
