//! What keeps an agent's call alive when the browser side changes under it (v1.1):
//! `renegotiate` (an ICE restart, a fresh RTCPeerConnection after a reload), a DN taken over
//! from a session whose browser is gone, and per-session TURN credentials that a real coturn
//! accepts and refuses once expired.

use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::common::client::{Client, WAIT};
use crate::common::coturn::Coturn;
use crate::common::gateway::Gateway;
use crate::common::kamailio::{pick_port, Kamailio, KamailioOptions};
use crate::common::peer::Peer;
use crate::common::scenes::{agent_hangs_up, g711_peer, phone_1003};

/// `a=NAME:value` of an SDP.
fn attr<'a>(sdp: &'a str, name: &str) -> Option<&'a str> {
    let prefix = format!("a={name}:");
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix(prefix.as_str()))
}

/// Agent 5001 calls the echoing SIPp phone 1003: the client, its peer, the call id and the
/// gateway's SDP answer.
async fn echo_call(gw: &Gateway) -> (Client, Peer, String, String) {
    let mut c = Client::connect(&gw.ws_url()).await;
    c.register("5001", "pass5001").await;
    let peer = Peer::new(g711_peer()).await;
    let offer = peer.create_offer().await;
    let r = c.request("call", json!({"to": "1003", "sdp": offer})).await;
    assert_eq!(r["type"], "result", "{r}");
    let call_id = r["payload"]["callId"].as_str().expect("callId").to_string();
    let answer = r["payload"]["sdp"].as_str().expect("sdp").to_string();
    peer.set_remote_answer(&answer).await;
    c.event("answered", WAIT).await;
    assert!(
        peer.wait_connected(Duration::from_secs(10)).await,
        "ICE/DTLS did not complete:\n{}",
        gw.log()
    );
    (c, peer, call_id, answer)
}

/// Sends `n` numbered packets from `peer` and returns how many packets came back through the
/// echo meanwhile (the counters restart at 0 with every burst, so packets are counted).
async fn echoed(peer: &Peer, n: u32) -> usize {
    let before = peer.received().len();
    peer.send_numbered(n, 160);
    tokio::time::sleep(Duration::from_millis(u64::from(n) * 20 + 1500)).await;
    peer.received().len() - before
}

/// `renegotiate` of `call_id` with `offer`: the reply.
async fn renegotiate(c: &mut Client, call_id: &str, offer: &str) -> Value {
    c.request("renegotiate", json!({"callId": call_id, "sdp": offer}))
        .await
}

/// A page reload: a brand-new RTCPeerConnection (new certificate, new ICE credentials)
/// re-attaches to the call. The gateway answers with new ICE credentials of its own and runs
/// a new DTLS handshake, so the new peer's audio flows both ways and the old peer's packets
/// (old SRTP keys, old address) no longer reach the far end; the far end sees nothing (its
/// scenario would fail on a re-INVITE) and the call ends clean.
#[tokio::test]
async fn a_fresh_peer_connection_takes_the_call_over_without_a_word_to_sip() {
    let kam = Kamailio::start(KamailioOptions::default());
    let mut far = phone_1003(&kam, "uas_answer.xml", &["-rtp_echo"]);
    let gw = Gateway::start(&kam.uri(), &[]);
    let (mut c, old, call_id, first) = echo_call(&gw).await;
    assert!(echoed(&old, 25).await >= 20, "{}", gw.log());

    let new = Peer::new(g711_peer()).await;
    let offer = new.create_offer().await;
    let r = renegotiate(&mut c, &call_id, &offer).await;
    assert_eq!(r["type"], "result", "{r}");
    let answer = r["payload"]["sdp"].as_str().expect("answer sdp");
    assert_ne!(
        attr(answer, "ice-ufrag"),
        attr(&first, "ice-ufrag"),
        "a new browser gets new ICE credentials:\n{answer}"
    );
    assert_eq!(
        attr(answer, "fingerprint"),
        attr(&first, "fingerprint"),
        "the gateway's certificate stays"
    );
    new.set_remote_answer(answer).await;
    assert!(
        new.wait_connected(Duration::from_secs(10)).await,
        "the new peer connection did not complete ICE/DTLS:\n{}",
        gw.log()
    );
    assert!(
        gw.log()
            .contains("browser renegotiated: a new peer connection"),
        "a new DTLS handshake:\n{}",
        gw.log()
    );

    // The old peer's SRTP (old keys, old path) is dropped: nothing of it is echoed to anyone.
    let heard_before = new.received().len();
    old.send_numbered(25, 160);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        new.received().len(),
        heard_before,
        "packets of the old peer connection reached the far end"
    );
    assert!(echoed(&new, 50).await >= 45, "{}", gw.log());

    let (_, active) = gw.get("/api/calls/active").await;
    assert_eq!(active["calls"][0]["callId"], call_id.as_str(), "{active}");
    agent_hangs_up(&mut c, &mut far, &call_id).await;
}

/// An ICE restart on the same connection (a network change): the gateway answers with new
/// credentials and the same DTLS role; the association, its keys and the audio go on.
#[tokio::test]
async fn an_ice_restart_keeps_the_call_and_its_audio() {
    let kam = Kamailio::start(KamailioOptions::default());
    let mut far = phone_1003(&kam, "uas_answer.xml", &["-rtp_echo"]);
    let gw = Gateway::start(&kam.uri(), &[]);
    let (mut c, peer, call_id, first) = echo_call(&gw).await;

    let offer = peer.create_restart_offer().await;
    assert_ne!(attr(&offer, "ice-ufrag"), None);
    let r = renegotiate(&mut c, &call_id, &offer).await;
    assert_eq!(r["type"], "result", "{r}");
    let answer = r["payload"]["sdp"].as_str().expect("answer sdp");
    assert_ne!(attr(answer, "ice-ufrag"), attr(&first, "ice-ufrag"));
    assert_ne!(attr(answer, "ice-pwd"), attr(&first, "ice-pwd"));
    assert_eq!(attr(answer, "setup"), attr(&first, "setup"), "{answer}");
    peer.set_remote_answer(answer).await;
    assert!(
        gw.log().contains("browser renegotiated: an ICE restart"),
        "{}",
        gw.log()
    );
    // The test peer (webrtc-rs) sends nothing until its checks with the new credentials
    // succeeded again; Chromium keeps sending on the old pair meanwhile.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(echoed(&peer, 50).await >= 45, "{}", gw.log());

    // A plain re-offer (no restart) keeps the gateway's credentials.
    let again = peer.create_offer().await;
    let r = renegotiate(&mut c, &call_id, &again).await;
    assert_eq!(r["type"], "result", "{r}");
    let kept = r["payload"]["sdp"].as_str().expect("answer sdp");
    assert_eq!(attr(kept, "ice-ufrag"), attr(answer, "ice-ufrag"));
    peer.set_remote_answer(kept).await;
    assert!(echoed(&peer, 25).await >= 20, "{}", gw.log());
    agent_hangs_up(&mut c, &mut far, &call_id).await;
}

/// Re-offers that cannot be used get a clear error and change nothing: an unknown call, an
/// extra m-line, no ICE credentials, not SDP at all. The call's audio goes on after each.
#[tokio::test]
async fn bad_reoffers_get_clear_errors_and_the_call_goes_on() {
    let kam = Kamailio::start(KamailioOptions::default());
    let mut far = phone_1003(&kam, "uas_answer.xml", &["-rtp_echo"]);
    let gw = Gateway::start(&kam.uri(), &[]);
    let (mut c, peer, call_id, _) = echo_call(&gw).await;
    let other = Peer::new(g711_peer()).await;
    let offer = other.create_offer().await;

    let r = renegotiate(&mut c, "no-such-call", &offer).await;
    assert_eq!(r["payload"]["code"], "no_such_call", "{r}");

    let video = format!(
        "{}m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=sendrecv\r\na=rtcp-mux\r\na=rtpmap:96 VP8/90000\r\n",
        offer
    );
    let r = renegotiate(&mut c, &call_id, &video).await;
    assert_eq!(r["payload"]["code"], "bad_request", "{r}");
    assert!(
        r["payload"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("m-lines")),
        "{r}"
    );

    let no_ice: String = offer
        .lines()
        .filter(|l| !l.starts_with("a=ice-ufrag") && !l.starts_with("a=ice-pwd"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    let r = renegotiate(&mut c, &call_id, &no_ice).await;
    assert_eq!(r["payload"]["code"], "bad_request", "{r}");
    assert!(
        r["payload"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("ice-ufrag")),
        "{r}"
    );

    let r = renegotiate(&mut c, &call_id, "v=0 garbage").await;
    assert_eq!(r["payload"]["code"], "bad_request", "{r}");
    let r = c.request("renegotiate", json!({"callId": call_id})).await;
    assert_eq!(r["payload"]["code"], "bad_request", "{r}");

    assert!(
        echoed(&peer, 50).await >= 45,
        "the call lost its audio after bad re-offers:\n{}",
        gw.log()
    );
    agent_hangs_up(&mut c, &mut far, &call_id).await;
}

/// A page reloaded without its resume token (a new tab): `register` with the right password
/// takes the DN over from the session whose socket is gone; a wrong password, or a DN whose
/// session is connected, stays `already_registered`. The old session ends (its calls with
/// it), and the registrar keeps the binding.
#[tokio::test]
async fn register_takes_a_dn_over_from_a_session_in_its_grace_period() {
    let kam = Kamailio::start(KamailioOptions::default());
    let gw = Gateway::start(&kam.uri(), &["--grace-period", "30"]);
    let mut old = Client::connect(&gw.ws_url()).await;
    old.register("5001", "pass5001").await;
    let old_session = old.hello["sessionId"].as_str().expect("id").to_string();
    let old_token = old.hello["resumeToken"]
        .as_str()
        .expect("token")
        .to_string();

    let mut new = Client::connect(&gw.ws_url()).await;
    let r = new
        .request("register", json!({"dn": "5001", "password": "pass5001"}))
        .await;
    assert_eq!(
        r["payload"]["code"], "already_registered",
        "a connected session keeps its DN: {r}"
    );

    old.close().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = new
        .request("register", json!({"dn": "5001", "password": "wrong"}))
        .await;
    assert_eq!(r["payload"]["code"], "already_registered", "{r}");
    let r = new
        .request("register", json!({"dn": "5001", "password": "pass5001"}))
        .await;
    assert_eq!(r["type"], "result", "{r}");
    let ev = new.event("registrationState", WAIT).await;
    assert_eq!(ev["payload"]["state"], "registered", "{ev}");

    let (_, dn) = gw.get("/api/dn/5001").await;
    assert_eq!(dn["sessionId"], new.hello["sessionId"], "{dn}");
    assert_eq!(dn["state"], "registered", "{dn}");
    // The old session is over: its token resumes nothing.
    let mut back = Client::connect(&gw.ws_url()).await;
    let r = back
        .request(
            "resume",
            json!({"sessionId": old_session, "resumeToken": old_token}),
        )
        .await;
    assert_eq!(r["type"], "error", "{r}");
    // The old session did not unregister the binding the new one holds.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !kam.contacts("5001").is_empty(),
        "the registrar lost 5001's binding:\n{}",
        gw.log()
    );
}

/// The TURN REST API credentials of `hello` and `resume`: `EXPIRY:SESSION` with the
/// configured lifetime and base64(HMAC-SHA1(secret, username)); a real coturn in
/// `use-auth-secret` mode allocates with them and refuses the same scheme past its expiry.
/// The secret appears in no frame, REST answer or log line.
#[tokio::test]
async fn sessions_get_their_own_turn_credentials_that_coturn_honours_until_they_expire() {
    const SECRET: &str = "north-wind-secret";
    let turn_port = pick_port();
    let coturn = Coturn::start("127.0.0.1", turn_port, SECRET);
    let kam = Kamailio::start(KamailioOptions::default());
    let urls = format!(
        "turn:127.0.0.1:{turn_port}?transport=tcp,turns:turn.example.com:443?transport=tcp"
    );
    let gw = Gateway::start(
        &kam.uri(),
        &[
            "--turn-secret",
            SECRET,
            "--turn-urls",
            &urls,
            "--turn-ttl",
            "600",
            "--ice-servers",
            r#"[{"urls":"stun:127.0.0.1:3478"}]"#,
            "--grace-period",
            "30",
        ],
    );
    let c = Client::connect(&gw.ws_url()).await;
    let session = c.hello["sessionId"].as_str().expect("id").to_string();
    let servers = c.hello["iceServers"]
        .as_array()
        .expect("iceServers")
        .clone();
    assert_eq!(servers.len(), 2, "{servers:?}");
    assert_eq!(servers[0]["urls"], "stun:127.0.0.1:3478");
    let turn = &servers[1];
    assert_eq!(
        turn["urls"],
        json!([
            format!("turn:127.0.0.1:{turn_port}?transport=tcp"),
            "turns:turn.example.com:443?transport=tcp"
        ])
    );
    let username = turn["username"].as_str().expect("username");
    let credential = turn["credential"].as_str().expect("credential");
    let (expiry, id) = username.split_once(':').expect("EXPIRY:ID");
    assert_eq!(id, session);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let expiry: u64 = expiry.parse().expect("expiry");
    assert!((now + 590..=now + 610).contains(&expiry), "{username}");
    assert_eq!(credential, python_free_hmac(SECRET, username));
    assert!(
        coturn_allocates(turn_port, username, credential),
        "coturn refused the session's own credentials:\n{}",
        coturn.log()
    );

    // The same scheme, expired a minute ago: coturn refuses it (it checks the expiry itself).
    let (old_user, old_pass) = gateway::auth::turn_credentials(
        &gateway::auth::Secret::new(SECRET.into()),
        &session,
        now - 60,
    );
    assert!(
        !coturn_allocates(turn_port, &old_user, &old_pass),
        "coturn allocated with expired credentials"
    );

    // A resume returns fresh credentials.
    let token = c.hello["resumeToken"].as_str().expect("token").to_string();
    c.close().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut back = Client::connect(&gw.ws_url()).await;
    let r = back
        .request(
            "resume",
            json!({"sessionId": session, "resumeToken": token}),
        )
        .await;
    assert_eq!(r["type"], "result", "{r}");
    let fresh = &r["payload"]["iceServers"][1];
    assert_eq!(fresh["urls"], turn["urls"], "{r}");
    assert_ne!(fresh["username"], turn["username"], "{r}");
    assert!(coturn_allocates(
        turn_port,
        fresh["username"].as_str().expect("username"),
        fresh["credential"].as_str().expect("credential"),
    ));

    let (_, health) = gw.get("/api/health").await;
    let (_, sessions) = gw.get("/api/dn/list").await;
    for text in [
        gw.log(),
        health.to_string(),
        sessions.to_string(),
        r.to_string(),
    ] {
        assert!(!text.contains(SECRET), "the TURN secret leaked: {text}");
    }
}

/// base64(HMAC-SHA1(key, msg)) computed by Python's standard library: an implementation
/// independent of the gateway's.
fn python_free_hmac(key: &str, msg: &str) -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import hmac,hashlib,base64,sys;print(base64.b64encode(hmac.new(sys.argv[1].encode(),sys.argv[2].encode(),hashlib.sha1).digest()).decode())",
            key,
            msg,
        ])
        .output()
        .expect("python3");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Whether coturn's own test client allocates a relay over TCP with these credentials and
/// relays three packets to a peer that echoes them.
fn coturn_allocates(port: u16, username: &str, password: &str) -> bool {
    let echo = UdpSocket::bind("127.0.0.1:0").expect("echo socket");
    let echo_port = echo.local_addr().expect("addr").port();
    echo.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let echoer = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok((n, from)) = echo.recv_from(&mut buf) {
                let _ = echo.send_to(&buf[..n], from);
            }
        }
    });
    let out = Command::new("timeout")
        .args(["20", "turnutils_uclient", "-t", "-c", "-n", "3", "-m", "1"])
        .args(["-u", username, "-w", password])
        .args(["-p", &port.to_string(), "-e", "127.0.0.1"])
        .args(["-r", &echo_port.to_string(), "127.0.0.1"])
        .output()
        .expect("turnutils_uclient (Debian package coturn)");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = echoer.join();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    out.status.success()
        && !text.contains("Cannot complete Allocation")
        && text.contains("Total lost packets 0")
}
