//! Calls end to end: a WebRTC peer playing the browser over the real protocol, the gateway,
//! a real Kamailio, and SIPp as the far-end phone.

use crate::common;

use std::time::{Duration, Instant};

use common::client::{Client, WAIT};
use common::gateway::Gateway;
use common::kamailio::{pick_port, Kamailio, KamailioOptions};
use common::peer::Peer;
use common::scenes::{answered_call, g711_peer, phone_1003, start_call, tone_ulaw};
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

#[tokio::test(flavor = "multi_thread")]
async fn outbound_call_echoes_audio_and_hangs_up_with_bye() {
    let kam = Kamailio::start(KamailioOptions::default());
    let mut phone = echo_phone(&kam, "1003", "pass1003");
    // The far end's RTCP port (RTP + 1): SIPp does not use it, so the test listens there.
    let rtcp = std::net::UdpSocket::bind(("127.0.0.1", phone.media_port + 1)).expect("rtcp port");
    rtcp.set_read_timeout(Some(Duration::from_secs(7)))
        .expect("timeout");
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
    // Our own RTCP toward the far end: a sender report with a reception block about it.
    let mut buf = [0u8; 1500];
    let (n, _) = rtcp
        .recv_from(&mut buf)
        .expect("an RTCP report from the gateway");
    assert!(
        media::rtcp::sender_report(&buf[..n]).is_some(),
        "not an SR: {:?}",
        &buf[..n]
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

/// One second of a 1000 Hz tone as raw µ-law, for SIPp's `rtp_stream`.
#[tokio::test(flavor = "multi_thread")]
async fn inbound_call_is_offered_answered_and_ended_by_the_far_end() {
    let kam = Kamailio::start(KamailioOptions::default());
    let gw = Gateway::start(&kam.uri(), &[]);
    let mut c = Client::connect(&gw.ws_url()).await;
    c.register("5001", "pass5001").await;

    let tone = tone_ulaw();
    let kam_addr = format!("127.0.0.1:{}", kam.port());
    let mut caller = Sipp::start_with_files(
        "uac_stream.xml",
        None,
        &["-s", "5001", &kam_addr],
        &[("tone.ulaw", &tone)],
    );
    let offer = c.event("incomingCall", WAIT).await;
    let call_id = offer["payload"]["callId"]
        .as_str()
        .expect("callId")
        .to_string();
    assert!(
        offer["payload"]["from"]
            .as_str()
            .is_some_and(|f| f.contains("sipp")),
        "{offer}"
    );
    assert!(
        offer["payload"]["to"]
            .as_str()
            .is_some_and(|t| t.contains("5001")),
        "{offer}"
    );
    let sdp = offer["payload"]["sdp"].as_str().expect("offer sdp");
    assert!(
        sdp.contains("a=ice-lite") && sdp.contains("a=setup:actpass"),
        "{sdp}"
    );
    let (_, active) = gw.get("/api/calls/active").await;
    assert_eq!(active["calls"][0]["direction"], "inbound", "{active}");

    let peer = Peer::new(g711_peer()).await;
    let answer = peer.accept_offer(sdp).await;
    let r = c
        .request("answer", json!({"callId": call_id, "sdp": answer}))
        .await;
    assert_eq!(r["type"], "result", "{r}");
    let answered = c.event("answered", WAIT).await;
    assert_eq!(answered["payload"]["callId"], call_id.as_str());
    assert!(
        peer.wait_connected(Duration::from_secs(10)).await,
        "ICE/DTLS did not complete:\n{}",
        gw.log()
    );

    let h = c.event("hangup", Duration::from_secs(10)).await;
    assert_eq!(h["payload"]["by"], "remote", "{h}");
    assert_eq!(h["payload"]["callId"], call_id.as_str());
    let pcm = peer.received_pcm();
    assert!(
        pcm.len() >= 8000,
        "only {} samples of far-end audio arrived",
        pcm.len()
    );
    let f = common::peer::dominant_frequency(&pcm, 8000);
    assert!(
        (980.0..=1020.0).contains(&f),
        "far-end tone measured at {f} Hz"
    );
    let status = caller.wait(Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        caller.traces()
    );
    let (_, active) = gw.get("/api/calls/active").await;
    assert_eq!(active["calls"], json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_far_end_ends_the_call_with_bye_after_the_rtp_timeout() {
    let kam = Kamailio::start(KamailioOptions::default());
    let mut phone = echo_phone(&kam, "1003", "pass1003");
    let gw = Gateway::start(&kam.uri(), &["--rtp-timeout", "3"]);
    let mut c = Client::connect(&gw.ws_url()).await;
    c.register("5001", "pass5001").await;
    let peer = Peer::new(g711_peer()).await;
    let offer = peer.create_offer().await;
    start_call(&mut c, &peer, "1003", &offer).await;
    c.event("answered", WAIT).await;
    assert!(peer.wait_connected(Duration::from_secs(10)).await);
    // One second of media, echoed; then everything goes quiet.
    peer.send_numbered(50, 160);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let quiet = Instant::now();
    let h = c.event("hangup", Duration::from_secs(10)).await;
    assert_eq!(h["payload"]["cause"], "media_timeout", "{h}");
    assert_eq!(h["payload"]["by"], "server");
    assert!(
        quiet.elapsed() <= Duration::from_secs(3 + 2),
        "took {:?}",
        quiet.elapsed()
    );
    let status = phone.wait(Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| s.success()),
        "no BYE at SIPp: {status:?}\n{}",
        phone.traces()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unregistered_callee_and_cancel_while_ringing() {
    let kam = Kamailio::start(KamailioOptions::default());
    let gw = Gateway::start(&kam.uri(), &[]);
    let mut c = Client::connect(&gw.ws_url()).await;
    c.register("5001", "pass5001").await;

    // 1004 exists at the registrar but is not registered.
    let peer = Peer::new(g711_peer()).await;
    let r = c
        .request(
            "call",
            json!({"to": "1004", "sdp": peer.create_offer().await}),
        )
        .await;
    assert_eq!(r["type"], "result", "{r}");
    let h = c.event("hangup", WAIT).await;
    assert_eq!(h["payload"]["by"], "remote", "{h}");
    assert!(
        matches!(h["payload"]["sipStatus"].as_u64(), Some(404 | 480)),
        "{h}"
    );

    // A phone that rings and never answers; the agent gives up.
    let mut phone = phone_1003(&kam, "uas_ring_cancel.xml", &[]);
    let peer = Peer::new(g711_peer()).await;
    let r = c
        .request(
            "call",
            json!({"to": "1003", "sdp": peer.create_offer().await}),
        )
        .await;
    let call_id = r["payload"]["callId"].as_str().expect("callId").to_string();
    c.event("ringing", WAIT).await;
    let r = c.request("hangup", json!({"callId": call_id})).await;
    assert_eq!(r["type"], "result");
    let h = c.event("hangup", WAIT).await;
    assert_eq!(h["payload"]["by"], "local");
    let status = phone.wait(Duration::from_secs(8));
    assert!(
        status.is_some_and(|s| s.success()),
        "SIPp saw no CANCEL: {status:?}\n{}",
        phone.traces()
    );
    let (_, active) = gw.get("/api/calls/active").await;
    assert_eq!(active["calls"], json!([]));

    // Errors for calls that do not exist.
    let r = c.request("hangup", json!({"callId": "nope"})).await;
    assert_eq!(r["payload"]["code"], "no_such_call");
}

#[tokio::test(flavor = "multi_thread")]
async fn far_end_hold_and_resume_keep_the_stream_continuous() {
    let kam = Kamailio::start(KamailioOptions::default());
    let mut phone = phone_1003(&kam, "uas_hold.xml", &["-rtp_echo"]);
    let (_gw, mut c, peer, call_id) = answered_call(&kam, &[]).await;
    // 7 s of packets across answer, hold (from ~2 s to ~4 s) and resume.
    peer.send_numbered(350, 160);
    let held = c.event("held", WAIT).await;
    assert_eq!(held["payload"]["by"], "remote", "{held}");
    assert_eq!(held["payload"]["callId"], call_id.as_str());
    let during_hold = peer.echoed_counters().len();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let still_held = peer.echoed_counters().len();
    assert!(
        still_held - during_hold <= 5,
        "media flowed on hold: {during_hold} -> {still_held}"
    );
    let resumed = c.event("resumed", WAIT).await;
    assert_eq!(resumed["payload"]["by"], "remote");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let after = peer.echoed_counters().len();
    assert!(
        after >= still_held + 80,
        "audio did not resume: {still_held} -> {after}"
    );

    // What reached the browser is one stream: consecutive sequence numbers, no jump.
    let seqs: Vec<u16> = peer.received().iter().map(|p| p.seq).collect();
    assert!(seqs.len() > 100);
    for w in seqs.windows(2) {
        let step = w[1].wrapping_sub(w[0]);
        assert!(
            (1..=3).contains(&step),
            "sequence jumped {} -> {}",
            w[0],
            w[1]
        );
    }
    let ssrcs: std::collections::BTreeSet<u32> = peer.received().iter().map(|p| p.ssrc).collect();
    assert_eq!(ssrcs.len(), 1, "{ssrcs:?}");

    c.request("hangup", json!({"callId": call_id})).await;
    c.event("hangup", WAIT).await;
    let status = phone.wait(Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        phone.traces()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reject_sends_486_and_invite_auth_is_answered() {
    // Kamailio challenges INVITEs from its users with 407.
    let kam = Kamailio::start(KamailioOptions {
        invite_auth: true,
        ..KamailioOptions::default()
    });
    let gw = Gateway::start(&kam.uri(), &[]);
    let mut c = Client::connect(&gw.ws_url()).await;
    c.register("5001", "pass5001").await;

    let kam_addr = format!("127.0.0.1:{}", kam.port());
    let mut caller = Sipp::start("uac_expect_486.xml", None, &["-s", "5001", &kam_addr]);
    let offer = c.event("incomingCall", WAIT).await;
    let call_id = offer["payload"]["callId"]
        .as_str()
        .expect("callId")
        .to_string();
    let r = c
        .request("reject", json!({"callId": call_id, "status": 486}))
        .await;
    assert_eq!(r["type"], "result", "{r}");
    let h = c.event("hangup", WAIT).await;
    assert_eq!(h["payload"]["by"], "local", "{h}");
    let status = caller.wait(Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| s.success()),
        "SIPp saw no 486: {status:?}\n{}",
        caller.traces()
    );

    // Outbound through the 407 challenge, to an answering phone.
    let mut phone = echo_phone(&kam, "1003", "pass1003");
    let peer = Peer::new(g711_peer()).await;
    let r = c
        .request(
            "call",
            json!({"to": "1003", "sdp": peer.create_offer().await}),
        )
        .await;
    let call_id = r["payload"]["callId"].as_str().expect("callId").to_string();
    let a = c.event("answered", WAIT).await;
    assert_eq!(a["payload"]["callId"], call_id.as_str());
    assert!(
        gw.log().contains("SIP/2.0 407"),
        "the INVITE was not challenged"
    );
    c.request("hangup", json!({"callId": call_id})).await;
    c.event("hangup", WAIT).await;
    assert!(
        phone
            .wait(Duration::from_secs(5))
            .is_some_and(|s| s.success()),
        "{}",
        phone.traces()
    );
}

fn open_udp_sockets(pid: u32) -> usize {
    // Sockets of the process, by inode, that are UDP sockets in /proc/net/udp.
    let mut inodes = std::collections::HashSet::new();
    if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                let t = target.to_string_lossy().to_string();
                if let Some(inode) = t.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')) {
                    inodes.insert(inode.to_string());
                }
            }
        }
    }
    let udp = std::fs::read_to_string("/proc/net/udp").unwrap_or_default()
        + &std::fs::read_to_string("/proc/net/udp6").unwrap_or_default();
    udp.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(9))
        .filter(|inode| inodes.contains(*inode))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_sequential_calls_leave_nothing_behind() {
    let kam = Kamailio::start(KamailioOptions::default());
    let gw = Gateway::start(&kam.uri(), &[]);
    let mut c = Client::connect(&gw.ws_url()).await;
    c.register("5001", "pass5001").await;
    let pid = gw.pid();
    let before = open_udp_sockets(pid);
    assert!(before > 0);
    let port = pick_port();
    assert!(sipp::register(kam.port(), port, "1003", "pass1003"));
    for i in 0..50 {
        let mut phone = Sipp::start("uas_answer.xml", Some(port), &[]);
        let peer = Peer::new(g711_peer()).await;
        let r = c
            .request(
                "call",
                json!({"to": "1003", "sdp": peer.create_offer().await}),
            )
            .await;
        assert_eq!(r["type"], "result", "call {i}: {r}");
        let call_id = r["payload"]["callId"].as_str().expect("callId").to_string();
        peer.set_remote_answer(r["payload"]["sdp"].as_str().expect("sdp"))
            .await;
        c.event("answered", WAIT).await;
        c.request("hangup", json!({"callId": call_id})).await;
        let h = c.event("hangup", WAIT).await;
        assert_eq!(h["payload"]["callId"], call_id.as_str());
        assert!(
            phone
                .wait(Duration::from_secs(5))
                .is_some_and(|s| s.success()),
            "call {i}"
        );
        peer.close().await;
    }
    let (_, active) = gw.get("/api/calls/active").await;
    assert_eq!(active["calls"], json!([]));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = open_udp_sockets(pid);
    assert!(
        after <= before,
        "UDP sockets: {before} before, {after} after 50 calls"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn call_requests_with_bad_input_get_clear_errors() {
    let kam = Kamailio::start(KamailioOptions::default());
    let gw = Gateway::start(&kam.uri(), &[]);
    let mut c = Client::connect(&gw.ws_url()).await;
    let peer = Peer::new(g711_peer()).await;
    let offer = peer.create_offer().await;
    let r = c.request("call", json!({"to": "1003", "sdp": offer})).await;
    assert_eq!(r["payload"]["code"], "not_registered", "{r}");

    c.register("5001", "pass5001").await;
    let r = c
        .request(
            "call",
            json!({"to": "1003", "sdp": "v=0\r\nthis is not sdp\r\n"}),
        )
        .await;
    assert_eq!(r["payload"]["code"], "bad_request", "{r}");
    assert!(
        r["payload"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("sdp")),
        "{r}"
    );
    let r = c.request("call", json!({"to": "1003"})).await;
    assert_eq!(r["payload"]["code"], "bad_request", "{r}");
    let r = c
        .request("answer", json!({"callId": "nope", "sdp": offer}))
        .await;
    assert_eq!(r["payload"]["code"], "no_such_call", "{r}");
    let r = c
        .request("iceCandidate", json!({"callId": "nope", "candidate": null}))
        .await;
    assert_eq!(r["payload"]["code"], "no_such_call", "{r}");
    // Nothing was left half-made, and the session still works.
    let (_, active) = gw.get("/api/calls/active").await;
    assert_eq!(active["calls"], json!([]));
    let r = c.request("ping", json!({})).await;
    assert_eq!(r["type"], "result");
    assert_eq!(gw.get("/api/dn/5001").await.1["state"], "registered");
}

#[tokio::test(flavor = "multi_thread")]
async fn early_media_flows_before_answer() {
    let kam = Kamailio::start(KamailioOptions::default());
    let mut phone = phone_1003(&kam, "uas_early_media.xml", &["-rtp_echo"]);
    let gw = Gateway::start(&kam.uri(), &[]);
    let mut c = Client::connect(&gw.ws_url()).await;
    c.register("5001", "pass5001").await;
    let peer = Peer::new(g711_peer()).await;
    let offer = peer.create_offer().await;
    let call_id = start_call(&mut c, &peer, "1003", &offer).await;
    let ringing = c.event("ringing", WAIT).await;
    assert_eq!(ringing["payload"]["sipStatus"], 183);
    let early = c.event("earlyMedia", WAIT).await;
    assert_eq!(early["payload"]["callId"], call_id.as_str());
    assert!(peer.wait_connected(Duration::from_secs(10)).await);
    peer.send_numbered(200, 160);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, call) = gw.get(&format!("/api/calls/{call_id}")).await;
    assert_ne!(call["state"], "answered", "answered too early: {call}");
    assert!(
        peer.echoed_counters().len() >= 25,
        "no early media: {}",
        peer.echoed_counters().len()
    );
    c.event("answered", WAIT).await;
    c.request("hangup", json!({"callId": call_id})).await;
    c.event("hangup", WAIT).await;
    assert!(
        phone
            .wait(Duration::from_secs(5))
            .is_some_and(|s| s.success()),
        "{}",
        phone.traces()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_agent_holds_two_calls_at_once() {
    let kam = Kamailio::start(KamailioOptions::default());
    let mut phone_a = echo_phone(&kam, "1003", "pass1003");
    let mut phone_b = echo_phone(&kam, "1004", "pass1004");
    let gw = Gateway::start(&kam.uri(), &[]);
    let mut c = Client::connect(&gw.ws_url()).await;
    c.register("5001", "pass5001").await;
    let mut calls = Vec::new();
    for to in ["1003", "1004"] {
        let peer = Peer::new(g711_peer()).await;
        let offer = peer.create_offer().await;
        let id = start_call(&mut c, &peer, to, &offer).await;
        calls.push((id, peer));
    }
    let mut answered = std::collections::BTreeSet::new();
    while answered.len() < 2 {
        let a = c.event("answered", WAIT).await;
        answered.insert(a["payload"]["callId"].as_str().expect("callId").to_string());
    }
    for (_, peer) in &calls {
        assert!(peer.wait_connected(Duration::from_secs(10)).await);
        peer.send_numbered(100, 160);
    }
    tokio::time::sleep(Duration::from_millis(2600)).await;
    for (id, peer) in &calls {
        let n = peer.echoed_counters().len();
        assert!(n >= 90, "call {id}: {n} of 100 echoed");
    }
    let (_, active) = gw.get("/api/calls/active").await;
    assert_eq!(
        active["calls"].as_array().map(Vec::len),
        Some(2),
        "{active}"
    );
    let (_, dn) = gw.get("/api/dn/5001").await;
    assert_eq!(dn["state"], "registered");
    for (id, _) in &calls {
        c.request("hangup", json!({"callId": id})).await;
    }
    for _ in 0..2 {
        c.event("hangup", WAIT).await;
    }
    assert!(phone_a
        .wait(Duration::from_secs(5))
        .is_some_and(|s| s.success()));
    assert!(phone_b
        .wait(Duration::from_secs(5))
        .is_some_and(|s| s.success()));
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_hold_and_unhold_re_invite_the_far_end() {
    let kam = Kamailio::start(KamailioOptions::default());
    let mut phone = phone_1003(&kam, "uas_accept_hold.xml", &["-rtp_echo"]);
    let (_gw, mut c, peer, call_id) = answered_call(&kam, &[]).await;
    peer.send_numbered(300, 160);
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let r = c.request("hold", json!({"callId": call_id})).await;
    assert_eq!(r["type"], "result", "{r}");
    let held = c.event("held", WAIT).await;
    assert_eq!(held["payload"]["by"], "local", "{held}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let on_hold = peer.echoed_counters().len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let still = peer.echoed_counters().len();
    assert!(
        still - on_hold <= 3,
        "media flowed during hold: {on_hold} -> {still}"
    );

    let r = c.request("unhold", json!({"callId": call_id})).await;
    assert_eq!(r["type"], "result", "{r}");
    let resumed = c.event("resumed", WAIT).await;
    assert_eq!(resumed["payload"]["by"], "local");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        peer.echoed_counters().len() >= still + 50,
        "audio did not come back"
    );
    assert_continuous(&peer);
    let r = c.request("hold", json!({"callId": "nope"})).await;
    assert_eq!(r["payload"]["code"], "no_such_call");

    c.request("hangup", json!({"callId": call_id})).await;
    c.event("hangup", WAIT).await;
    let status = phone.wait(Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| s.success()),
        "SIPp did not see sendonly/sendrecv: {status:?}\n{}",
        phone.traces()
    );
}

/// RFC 3550 sequence continuity: every step between received packets is small and forward.
fn assert_continuous(peer: &Peer) {
    let seqs: Vec<u16> = peer.received().iter().map(|p| p.seq).collect();
    for w in seqs.windows(2) {
        let step = w[1].wrapping_sub(w[0]);
        assert!(
            (1..=3).contains(&step),
            "sequence jumped {} -> {}",
            w[0],
            w[1]
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_hold_cycles_keep_audio_and_sequence_numbers() {
    let kam = Kamailio::start(KamailioOptions::default());
    let mut phone = phone_1003(&kam, "uas_accept_holds.xml", &["-rtp_echo"]);
    let (gw, mut c, peer, call_id) = answered_call(&kam, &[]).await;
    // 60 s of numbered packets, echoed by the far end whenever it is not held.
    peer.send_numbered(3000, 160);
    tokio::time::sleep(Duration::from_millis(600)).await;
    for cycle in 1..=20 {
        let r = c.request("hold", json!({"callId": call_id})).await;
        assert_eq!(r["type"], "result", "hold {cycle}: {r}\n{}", gw.log());
        c.event("held", WAIT).await;
        let r = c.request("unhold", json!({"callId": call_id})).await;
        assert_eq!(r["type"], "result", "unhold {cycle}: {r}");
        c.event("resumed", WAIT).await;
        // Audio is back after every resume.
        let before = peer.echoed_counters().len();
        let deadline = Instant::now() + Duration::from_secs(3);
        while peer.echoed_counters().len() < before + 10 {
            assert!(
                Instant::now() < deadline,
                "no audio after resume {cycle}: {before} echoed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_continuous(&peer);
    let r = c.request("hangup", json!({"callId": call_id})).await;
    assert_eq!(r["type"], "result", "{r}");
    c.event("hangup", WAIT).await;
    let status = phone.wait(Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        phone.traces()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn far_end_dtmf_as_rfc4733_and_info_become_dtmf_events() {
    let kam = Kamailio::start(KamailioOptions::default());
    let mut phone = phone_1003(&kam, "uas_dtmf.xml", &[]);
    let (_gw, mut c, peer, call_id) = answered_call(&kam, &[]).await;
    peer.send_numbered(200, 160);

    let first = c.event("dtmf", WAIT).await;
    assert_eq!(first["payload"]["callId"], call_id.as_str());
    assert_eq!(first["payload"]["digit"], "1", "{first}");
    assert_eq!(first["payload"]["method"], "rfc4733");
    assert!(first["payload"]["duration"].as_u64().is_some_and(|d| d > 0));
    let second = c.event("dtmf", WAIT).await;
    assert_eq!(second["payload"]["digit"], "5", "{second}");
    assert_eq!(second["payload"]["method"], "info");
    assert_eq!(second["payload"]["duration"], 160);
    // One event per key press, not per packet.
    tokio::time::sleep(Duration::from_millis(500)).await;
    while let Some(f) = c.recv(Duration::from_millis(100)).await {
        assert_ne!(f["type"], "dtmf", "a second event for one press: {f}");
    }

    c.request("hangup", json!({"callId": call_id})).await;
    c.event("hangup", WAIT).await;
    let status = phone.wait(Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        phone.traces()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_dtmf_goes_out_as_rfc4733_events_and_as_info() {
    let kam = Kamailio::start(KamailioOptions::default());
    let port = pick_port();
    assert!(sipp::register(kam.port(), port, "1003", "pass1003"));
    // The far end's RTP port is ours to read: SIPp only signals it.
    let rtp_port = pick_port();
    let rtp = std::net::UdpSocket::bind(("127.0.0.1", rtp_port)).expect("rtp port");
    rtp.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut phone = Sipp::start(
        "uas_dtmf_sink.xml",
        Some(port),
        &["-set", "rtpport", &rtp_port.to_string()],
    );
    let (_gw, mut c, peer, call_id) = answered_call(&kam, &[]).await;
    peer.send_numbered(250, 160);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let r = c
        .request("dtmf", json!({"callId": call_id, "digits": "123#"}))
        .await;
    assert_eq!(r["type"], "result", "{r}");
    // Read what reached the far end for 2 s: telephone-events with its payload type 101.
    let mut detector = media::dtmf::Detector::default();
    let mut digits = String::new();
    let mut buf = [0u8; 1500];
    let until = std::time::Instant::now() + Duration::from_secs(2);
    let mut last_seq: Option<u16> = None;
    while std::time::Instant::now() < until {
        let Ok((n, _)) = rtp.recv_from(&mut buf) else {
            continue;
        };
        let p = &buf[..n];
        let seq = media::relay::header::seq(p);
        if let Some(prev) = last_seq {
            assert_eq!(
                seq,
                prev.wrapping_add(1),
                "sequence broke around the events"
            );
        }
        last_seq = Some(seq);
        if media::relay::header::pt(p) == 101 {
            if let Some(k) = detector.on_payload(&p[12..], media::relay::header::ts(p), 8000) {
                digits.push(k.digit);
                assert_eq!(k.duration_ms, 100);
            }
        }
    }
    assert_eq!(digits, "123#");

    let r = c
        .request(
            "dtmf",
            json!({"callId": call_id, "digits": "123#", "method": "info"}),
        )
        .await;
    assert_eq!(r["type"], "result", "{r}");
    let r = c
        .request("dtmf", json!({"callId": call_id, "digits": "9x"}))
        .await;
    assert_eq!(r["payload"]["code"], "bad_request");

    c.request("hangup", json!({"callId": call_id})).await;
    c.event("hangup", WAIT).await;
    let status = phone.wait(Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| s.success()),
        "SIPp did not get the INFOs: {status:?}\n{}",
        phone.traces()
    );
}
