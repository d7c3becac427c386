//! Call control over REST (REST.md v1.1): what a desktop does to the agent's phone reaches
//! the call as the agent's own request would, the browser hears it with `by: "api"`, and a
//! request the call's state does not allow gets 409.

use crate::common;

use std::time::Duration;

use common::client::{Client, WAIT};
use common::far_end::FarEnd;
use common::gateway::Gateway;
use common::kamailio::{Kamailio, KamailioOptions};
use common::peer::dominant_frequency;
use common::scenes::{
    agent_hangs_up, answer_incoming, g711_peer, pcmu_caller, send_answer, tone_phone,
};
use serde_json::{json, Value};

/// POST `path` with a JSON `body`: status and JSON answer (`null` for none).
async fn post(gw: &Gateway, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = reqwest::Client::new().post(format!("{}{path}", gw.api_url()));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("REST request");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Click-to-dial, then hold, unhold, DTMF and a blind transfer, all over REST, with audio
/// through the call; and every refusal REST.md names. The far end is agent 1003 of the same
/// gateway (its browser here is `b`), which also follows the REFER to the tone phone 5002.
#[tokio::test(flavor = "multi_thread")]
async fn click_to_dial_hold_dtmf_and_transfer_over_rest() {
    let kam = Kamailio::start(KamailioOptions::default());
    let mut target = tone_phone(&kam, "5002");
    let gw = Gateway::start(&kam.uri(), &[]);
    let mut b = Client::connect(&gw.ws_url()).await;
    b.register("1003", "pass1003").await;
    let mut c = Client::connect(&gw.ws_url()).await;
    c.register("5001", "pass5001").await;

    // Bad requests first: they change nothing.
    assert_eq!(
        post(&gw, "/api/dn/5001/calls", Some(json!({}))).await.0,
        400
    );
    let (s, e) = post(
        &gw,
        "/api/dn/5001/calls",
        Some(json!({"to": "1003", "headers": {"Via": "x"}})),
    )
    .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (400, Some("bad_request")),
        "{e}"
    );
    assert_eq!(
        post(&gw, "/api/dn/4999/calls", Some(json!({"to": "1003"})))
            .await
            .0,
        404
    );

    // Click-to-dial: the browser is offered the call, answers, and the INVITE goes out
    // (through Kamailio, though 1003 is on this gateway too).
    let (s, dialled) = post(
        &gw,
        "/api/dn/5001/calls",
        Some(json!({"to": "1003", "headers": {"X-Campaign": "spring"}})),
    )
    .await;
    assert_eq!(s, 201, "{dialled}");
    let call_id = dialled["callId"].as_str().expect("callId").to_string();
    let offer = c.event("incomingCall", WAIT).await;
    assert_eq!(offer["payload"]["callId"], call_id.as_str());
    assert_eq!(offer["payload"]["direction"], "outbound", "{offer}");
    assert_eq!(offer["payload"]["autoAnswer"], 0, "{offer}");
    assert_eq!(
        offer["payload"]["headers"]["X-Campaign"], "spring",
        "{offer}"
    );
    let peer = send_answer(&mut c, &offer, g711_peer()).await;
    let (peer_b, call_b) = answer_incoming(&gw, &mut b).await;
    let answered = c.event("answered", WAIT).await;
    assert_eq!(answered["payload"]["by"], "remote", "{answered}");
    assert!(
        peer.wait_connected(Duration::from_secs(10)).await,
        "{}",
        gw.log()
    );
    assert!(
        kam.log().contains("REQ INVITE sip:1003@"),
        "agent to agent goes through the upstream:\n{}",
        kam.log()
    );
    let (_, view) = gw.get(&format!("/api/calls/{call_id}")).await;
    assert_eq!(view["direction"], "outbound", "{view}");
    assert_eq!(view["headers"]["X-Campaign"], "spring", "{view}");
    let before = peer.received_pcm().len();
    assert!(peer_b.send_tone(1000.0, Duration::from_secs(2)));
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let pcm = peer.received_pcm();
    assert!(
        pcm.len() > before + 8000,
        "only {} samples came",
        pcm.len() - before
    );
    let f = dominant_frequency(&pcm[pcm.len() - 8000..], 8000);
    assert!((980.0..=1020.0).contains(&f), "the agent hears {f} Hz");

    // Hold and unhold: 204, and the browser hears who did it.
    let base = format!("/api/calls/{call_id}");
    assert_eq!(post(&gw, &format!("{base}/hold"), None).await.0, 204);
    let held = c.event("held", WAIT).await;
    assert_eq!(held["payload"]["by"], "api", "{held}");
    assert_eq!(b.event("held", WAIT).await["payload"]["by"], "remote");
    assert_eq!(post(&gw, &format!("{base}/unhold"), None).await.0, 204);
    let resumed = c.event("resumed", WAIT).await;
    assert_eq!(resumed["payload"]["by"], "api", "{resumed}");

    // DTMF reaches the far end; bad bodies are 400.
    assert_eq!(
        post(&gw, &format!("{base}/dtmf"), Some(json!({"digits": "7"})))
            .await
            .0,
        204
    );
    let key = b.event("dtmf", WAIT).await;
    assert_eq!(key["payload"]["digit"], "7", "{key}");
    for bad in [
        json!({"digits": "12E"}),
        json!({"digits": "1", "method": "sms"}),
        json!({"digit": "1"}),
    ] {
        let (s, e) = post(&gw, &format!("{base}/dtmf"), Some(bad)).await;
        assert_eq!(
            (s, e["error"]["code"].as_str()),
            (400, Some("bad_request")),
            "{e}"
        );
    }

    // Answering a call that is not ringing: 409 with why.
    let (s, e) = post(&gw, &format!("{base}/answer"), None).await;
    assert_eq!(s, 409, "{e}");
    assert_eq!(e["error"]["code"], "invalid_state", "{e}");

    // Transfers: bad bodies, an attended one to a call that does not exist, then a blind
    // one to 5002: 202, `transferState` to success, and the agent's call ends.
    let both = json!({"to": "1004", "replaces": "x"});
    assert_eq!(
        post(&gw, &format!("{base}/transfer"), Some(both)).await.0,
        400
    );
    let (s, e) = post(
        &gw,
        &format!("{base}/transfer"),
        Some(json!({"replaces": "nope"})),
    )
    .await;
    assert_eq!(s, 404, "{e}");
    let (s, e) = post(
        &gw,
        &format!("{base}/transfer"),
        Some(json!({"replaces": call_id})),
    )
    .await;
    assert_eq!(s, 400, "{e}");
    let (s, e) = post(
        &gw,
        &format!("{base}/transfer"),
        Some(json!({"to": "5002"})),
    )
    .await;
    assert_eq!(s, 202, "{e}");
    let mut states = Vec::new();
    while states.last().map(String::as_str) != Some("succeeded") && states.len() < 4 {
        let t = c.event("transferState", WAIT).await;
        states.push(
            t["payload"]["state"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    assert_eq!(states, ["trying", "accepted", "succeeded"], "{}", gw.log());
    let h = c.event("hangup", WAIT).await;
    assert_eq!(h["payload"]["cause"], "transferred", "{h}");
    assert_eq!(post(&gw, &format!("{base}/hold"), None).await.0, 404);

    // 1003 now talks to 5002; REST ends that call too.
    assert_eq!(
        post(&gw, &format!("/api/calls/{call_b}/hangup"), None)
            .await
            .0,
        204
    );
    b.event("hangup", WAIT).await;
    assert!(
        target
            .wait(Duration::from_secs(5))
            .is_some_and(|s| s.success()),
        "{}",
        target.traces()
    );
    peer.close().await;
    peer_b.close().await;
}

/// REST answers a ringing inbound call for the agent: 202 at once, the SIP 200 OK goes out,
/// the browser hears `answerRequested {by: api}` and, once it has joined, `answered {by: api}`.
#[tokio::test(flavor = "multi_thread")]
async fn rest_answers_a_ringing_call_for_the_agent() {
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
    let (s, e) = post(&gw, &format!("/api/calls/{call_id}/answer"), None).await;
    assert_eq!(s, 202, "{e}");
    let asked = c.event("answerRequested", WAIT).await;
    assert_eq!(asked["payload"]["by"], "api", "{asked}");
    let (s, _) = post(&gw, &format!("/api/calls/{call_id}/answer"), None).await;
    assert_eq!(s, 409, "a second answer finds it answered");
    let peer = send_answer(&mut c, &offer, g711_peer()).await;
    let answered = c.event("answered", WAIT).await;
    assert_eq!(answered["payload"]["by"], "api", "{answered}");
    assert!(
        peer.wait_connected(Duration::from_secs(10)).await,
        "{}",
        gw.log()
    );
    assert!(peer.send_tone(1000.0, Duration::from_secs(2)));
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let pcm = far.pcm();
    assert!(
        pcm.len() > 8000,
        "only {} samples reached the caller",
        pcm.len()
    );
    let f = dominant_frequency(&pcm[pcm.len() - 8000..], 8000);
    assert!((980.0..=1020.0).contains(&f), "the caller hears {f} Hz");

    // DTMF over REST reaches the caller as RFC 4733 events (digit 5).
    let (s, e) = post(
        &gw,
        &format!("/api/calls/{call_id}/dtmf"),
        Some(json!({"digits": "5"})),
    )
    .await;
    assert_eq!(s, 204, "{e}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        far.packets()
            .iter()
            .any(|p| p.pt == common::far_end::FAR_TE && p.payload.first() == Some(&5)),
        "no telephone-event 5 reached the caller"
    );

    agent_hangs_up(&mut c, &mut caller, &call_id).await;
    peer.close().await;
}
