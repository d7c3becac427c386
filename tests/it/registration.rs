//! Agent registration end to end: browser protocol -> gateway -> real Kamailio.

use crate::common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::client::{Client, WAIT};
use common::gateway::Gateway;
use common::kamailio::{Kamailio, KamailioOptions};
use serde_json::json;

/// Polls `f` every 100 ms until it holds or `timeout` passes.
async fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn contact_points_at(kam: &Kamailio, dn: &str, gw: &Gateway) -> bool {
    let want = format!("@127.0.0.1:{}", gw.sip_port);
    kam.contacts(dn).iter().any(|c| c.contains(&want))
}

#[tokio::test(flavor = "multi_thread")]
async fn register_reaches_kamailio_and_rest() {
    let kam = Kamailio::start(KamailioOptions::default());
    let gw = Gateway::start(&kam.uri(), &[]);
    let mut a = Client::connect(&gw.ws_url()).await;
    assert_eq!(a.hello["version"], 1);
    assert!(a.hello["sessionId"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(a.hello["resumeToken"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
    assert_eq!(a.hello["iceServers"], json!([]));

    let r = a.register("5001", "pass5001").await;
    assert_eq!(r["payload"]["dn"], "5001");
    assert_eq!(r["payload"]["expires"], 3600);
    assert!(contact_points_at(&kam, "5001", &gw), "{}", kam.ul_dump());

    let (status, dn) = gw.get("/api/dn/5001").await;
    assert_eq!(status, 200, "{dn}");
    assert_eq!(dn["state"], "registered");
    assert!(
        dn["expiresAt"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{dn}"
    );
    assert!(dn["registeredAt"].is_string());
    assert_eq!(dn["sessionId"], a.hello["sessionId"]);
    assert!(dn["contact"]
        .as_str()
        .is_some_and(|c| c.contains("5001@127.0.0.1")));
    assert!(dn["activeCallId"].is_null());

    // A second socket cannot take the DN; a different DN registers beside it.
    let mut b = Client::connect(&gw.ws_url()).await;
    let r = b
        .request("register", json!({"dn": "5001", "password": "pass5001"}))
        .await;
    assert_eq!(r["type"], "error", "{r}");
    assert_eq!(r["payload"]["code"], "already_registered");
    b.register("5002", "pass5002").await;
    assert!(contact_points_at(&kam, "5002", &gw));
    assert!(contact_points_at(&kam, "5001", &gw));

    let (_, list) = gw.get("/api/dn/list").await;
    let dns: Vec<&str> = list["dns"]
        .as_array()
        .expect("dns list")
        .iter()
        .filter_map(|d| d["dn"].as_str())
        .collect();
    assert_eq!(dns, ["5001", "5002"]);
    let (status, health) = gw.get("/api/health").await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "ok");
    assert_eq!(health["registrations"], 2);
    assert_eq!(health["sessions"], 2);
    assert_eq!(health["upstream"]["reachable"], true);
    let (status, body) = gw.get("/api/dn/9999").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_password_is_auth_failed_and_leaves_nothing() {
    let kam = Kamailio::start(KamailioOptions::default());
    let gw = Gateway::start(&kam.uri(), &[]);
    let mut c = Client::connect(&gw.ws_url()).await;
    let r = c
        .request("register", json!({"dn": "5001", "password": "Wr0ng-Pa55"}))
        .await;
    assert_eq!(r["type"], "error", "{r}");
    assert_eq!(r["payload"]["code"], "auth_failed");
    assert_eq!(r["payload"]["sipStatus"], 401);
    assert!(kam.contacts("5001").is_empty(), "{}", kam.ul_dump());
    let (status, _) = gw.get("/api/dn/5001").await;
    assert_eq!(status, 404);
    assert!(
        !gw.log().contains("wrong"),
        "the password appears in the log"
    );
    // The same session can then register with the right password.
    c.register("5001", "pass5001").await;
    assert!(contact_points_at(&kam, "5001", &gw));
}

#[tokio::test(flavor = "multi_thread")]
async fn unregister_and_socket_loss_remove_the_contact() {
    let kam = Kamailio::start(KamailioOptions::default());
    let gw = Gateway::start(&kam.uri(), &["--grace-period", "2"]);

    let mut c = Client::connect(&gw.ws_url()).await;
    c.register("5001", "pass5001").await;
    assert!(contact_points_at(&kam, "5001", &gw));
    let r = c.request("unregister", json!({})).await;
    assert_eq!(r["type"], "result", "{r}");
    let ev = c.event("registrationState", WAIT).await;
    assert_eq!(ev["payload"]["state"], "unregistered");
    assert!(kam.contacts("5001").is_empty(), "{}", kam.ul_dump());
    assert_eq!(gw.get("/api/dn/5001").await.0, 404);
    let r = c.request("unregister", json!({})).await;
    assert_eq!(r["payload"]["code"], "not_registered", "{r}");

    // Socket gone without unregistering: kept for the grace period, then removed.
    c.register("5001", "pass5001").await;
    c.close().await;
    let closed = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        contact_points_at(&kam, "5001", &gw),
        "removed before the grace period"
    );
    assert_eq!(gw.get("/api/dn/5001").await.1["state"], "registered");
    assert!(
        eventually(Duration::from_secs(8), || kam.contacts("5001").is_empty()).await,
        "contact still there: {}",
        kam.ul_dump()
    );
    assert!(closed.elapsed() >= Duration::from_secs(2));
    assert_eq!(gw.get("/api/dn/5001").await.0, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn refresh_keeps_the_binding_across_several_periods() {
    // The registrar grants 6 s whatever we ask: without refreshes the contact is gone at 6 s.
    let kam = Kamailio::start(KamailioOptions {
        max_expires: 6,
        ..KamailioOptions::default()
    });
    let gw = Gateway::start(&kam.uri(), &[]);
    let mut c = Client::connect(&gw.ws_url()).await;
    let r = c
        .request(
            "register",
            json!({"dn": "5001", "password": "pass5001", "expires": 60}),
        )
        .await;
    assert_eq!(r["payload"]["expires"], 6, "{r}");
    let ev = c.event("registrationState", WAIT).await;
    assert_eq!(ev["payload"]["state"], "registered");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(14) {
        assert!(
            contact_points_at(&kam, "5001", &gw),
            "contact lost after {:?}: {}",
            start.elapsed(),
            kam.ul_dump()
        );
        // Reading keeps the socket answering the server's pings, as a browser does; and
        // refreshes are not state changes, so no event may arrive for them.
        if let Some(frame) = c.recv(Duration::from_millis(250)).await {
            panic!("unexpected frame during refreshes: {frame}");
        }
    }
    let (_, dn) = gw.get("/api/dn/5001").await;
    assert_eq!(dn["state"], "registered");
}

#[tokio::test(flavor = "multi_thread")]
async fn registrar_outage_is_seen_and_recovered_from_over_udp() {
    outage_and_recovery("udp").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn registrar_outage_is_seen_and_recovered_from_over_tcp() {
    outage_and_recovery("tcp").await;
}

async fn outage_and_recovery(transport: &str) {
    let mut kam = Kamailio::start(KamailioOptions::default());
    let upstream = match transport {
        "tcp" => format!("{};transport=tcp", kam.uri()),
        _ => kam.uri(),
    };
    let gw = Gateway::start(
        &upstream,
        &["--options-interval", "1", "--register-retry", "3"],
    );
    let mut c = Client::connect(&gw.ws_url()).await;
    c.register("5001", "pass5001").await;
    let (_, st) = gw.get("/api/genesys/status").await;
    assert_eq!(st["reachable"], true, "{st}");
    assert_eq!(st["transport"], transport);
    assert_eq!(st["upstream"], upstream);
    assert!(st["lastOptionsRttMs"].is_number());
    assert!(st["lastCheckedAt"].is_string());

    kam.stop();
    let mut down = serde_json::Value::Null;
    let seen_down = {
        let deadline = Instant::now() + Duration::from_secs(8);
        loop {
            let (_, st) = gw.get("/api/genesys/status").await;
            if st["reachable"] == false {
                down = st;
                break true;
            }
            if Instant::now() > deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    assert!(seen_down, "upstream never reported unreachable");
    assert!(
        down["consecutiveFailures"].as_u64().is_some_and(|n| n >= 1),
        "{down}"
    );
    let (status, health) = gw.get("/api/health").await;
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["status"], "degraded");

    // A restarted Kamailio has an empty location table; the gateway must fill it again
    // within one retry period (plus one probe interval to notice).
    kam.restart();
    assert!(kam.contacts("5001").is_empty());
    let back = Instant::now();
    assert!(
        eventually(Duration::from_secs(5), || contact_points_at(
            &kam, "5001", &gw
        ))
        .await,
        "not re-registered: {}\n{}",
        kam.ul_dump(),
        gw.log()
    );
    assert!(
        back.elapsed() < Duration::from_secs(4),
        "took {:?}",
        back.elapsed()
    );
    let (_, st) = gw.get("/api/genesys/status").await;
    assert_eq!(st["reachable"], true);
    assert_eq!(st["consecutiveFailures"], 0);
    assert_eq!(gw.get("/api/dn/5001").await.1["state"], "registered");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_errors_and_harms_nothing() {
    let kam = Kamailio::start(KamailioOptions::default());
    let gw = Gateway::start(&kam.uri(), &[]);
    let mut other = Client::connect(&gw.ws_url()).await;
    other.register("5002", "pass5002").await;
    let mut c = Client::connect(&gw.ws_url()).await;
    c.register("5001", "pass5001").await;

    c.send_text("{this is not json").await;
    let e = c.recv(WAIT).await.expect("error frame");
    assert_eq!(e["type"], "error");
    assert_eq!(e["payload"]["code"], "bad_json");
    assert!(e.get("id").is_none(), "{e}");

    let e = c.request("teleport", json!({})).await;
    assert_eq!(e["payload"]["code"], "bad_request");
    assert!(
        e["payload"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("type")),
        "{e}"
    );

    let e = c.request("register", json!({"password": "x"})).await;
    assert_eq!(e["payload"]["code"], "bad_request");
    assert!(
        e["payload"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("dn")),
        "{e}"
    );

    let e = c
        .request("register", json!({"dn": 5001, "password": "x"}))
        .await;
    assert_eq!(e["payload"]["code"], "bad_request");
    assert!(
        e["payload"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("payload.dn")),
        "{e}"
    );

    // Above 64 KiB, below the 1 MiB hard cap (above it the socket closes with 1009:
    // contract.rs).
    let big = json!({"type": "ping", "id": "big", "payload": {"pad": "x".repeat(512 << 10)}});
    c.send_text(&big.to_string()).await;
    let e = c.recv(WAIT).await.expect("error frame");
    assert_eq!(e["payload"]["code"], "too_large", "{e}");

    c.send_binary(&[0, 1, 2, 3]).await;
    let e = c.recv(WAIT).await.expect("error frame");
    assert_eq!(e["type"], "error");
    assert_eq!(e["payload"]["code"], "bad_request");

    // The session, its registration and the other session are all still there.
    let p = c.request("ping", json!({})).await;
    assert_eq!(p["type"], "result", "{p}");
    assert!(p["payload"]["time"].is_string());
    assert!(contact_points_at(&kam, "5001", &gw));
    assert!(contact_points_at(&kam, "5002", &gw));
    assert_eq!(gw.get("/api/dn/5001").await.1["state"], "registered");

    // SIP side: garbage and a request without CSeq.
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let gw_sip = ("127.0.0.1", gw.sip_port);
    sock.send_to(b"\x00\xff garbage \r\n\r\n", gw_sip)
        .expect("send");
    sock.send_to(&[0xde; 1400], gw_sip).expect("send");
    let local = sock.local_addr().expect("addr");
    let no_cseq = format!(
        "OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-bad1;rport\r\n\
         From: <sip:t@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1:{port}>\r\nCall-ID: bad1\r\n\
         Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        port = gw.sip_port
    );
    sock.send_to(no_cseq.as_bytes(), gw_sip).expect("send");
    let mut buf = [0u8; 4096];
    let (n, _) = sock
        .recv_from(&mut buf)
        .expect("a 400 for the request without CSeq");
    let reply = String::from_utf8_lossy(&buf[..n]);
    assert!(reply.starts_with("SIP/2.0 400"), "{reply}");
    assert!(reply.contains("z9hG4bK-bad1"), "{reply}");
    assert!(
        reply.contains("CSeq"),
        "the 400 should name the problem: {reply}"
    );

    // And a well-formed OPTIONS is still answered.
    let ok = no_cseq
        .replace("bad1", "good1")
        .replace("Max-Forwards", "CSeq: 1 OPTIONS\r\nMax-Forwards");
    sock.send_to(ok.as_bytes(), gw_sip).expect("send");
    let (n, _) = sock.recv_from(&mut buf).expect("200 to OPTIONS");
    let reply = String::from_utf8_lossy(&buf[..n]);
    assert!(reply.starts_with("SIP/2.0 200"), "{reply}");
    assert!(reply.contains("Allow:"), "{reply}");

    // Garbage on a TCP connection to the SIP port.
    {
        use std::io::Write;
        let mut tcp = std::net::TcpStream::connect(gw_sip).expect("tcp connect");
        let _ = tcp.write_all(b"INVITE garbage\r\n\xff\xfe\r\n\r\nmore garbage\r\n\r\n");
        let _ = tcp.write_all(&[0u8; 8192]);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    sock.send_to(ok.replace("good1", "good2").as_bytes(), gw_sip)
        .expect("send");
    let (n, _) = sock
        .recv_from(&mut buf)
        .expect("200 to OPTIONS after TCP garbage");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("SIP/2.0 200"));

    let p = other.request("ping", json!({})).await;
    assert_eq!(p["type"], "result");
    assert!(contact_points_at(&kam, "5001", &gw));
    assert!(contact_points_at(&kam, "5002", &gw));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_unregisters_every_dn_and_exits_zero() {
    let kam = Kamailio::start(KamailioOptions::default());
    let mut gw = Gateway::start(&kam.uri(), &[]);
    let mut a = Client::connect(&gw.ws_url()).await;
    a.register("5001", "pass5001").await;
    let mut b = Client::connect(&gw.ws_url()).await;
    b.register("5002", "pass5002").await;
    assert!(contact_points_at(&kam, "5001", &gw) && contact_points_at(&kam, "5002", &gw));

    let t = Instant::now();
    gw.sigterm();
    let status = gw
        .wait_exit(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("still running 5 s after SIGTERM:\n{}", gw.log()));
    assert!(status.success(), "exit status {status}:\n{}", gw.log());
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(kam.contacts("5001").is_empty(), "{}", kam.ul_dump());
    assert!(kam.contacts("5002").is_empty(), "{}", kam.ul_dump());
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_upstream_with_sha256_digest() {
    let kam = Kamailio::start(KamailioOptions {
        algorithm: "SHA-256",
        ..KamailioOptions::default()
    });
    let upstream = format!("{};transport=tcp", kam.uri());
    let gw = Gateway::start(&upstream, &[]);
    let mut c = Client::connect(&gw.ws_url()).await;
    c.register("5001", "pass5001").await;
    let contacts = kam.contacts("5001");
    assert!(
        contacts.iter().any(|c| c.contains("transport=tcp")),
        "{contacts:?}"
    );
    assert!(kam.log().contains("SHA-256") || kam.options().algorithm == "SHA-256");
    let (_, st) = gw.get("/api/genesys/status").await;
    assert_eq!(st["transport"], "tcp");
    assert_eq!(st["reachable"], true);

    let wrong = Client::connect(&gw.ws_url()).await;
    let mut wrong = wrong;
    let r = wrong
        .request("register", json!({"dn": "5002", "password": "nope"}))
        .await;
    assert_eq!(r["payload"]["code"], "auth_failed", "{r}");

    let r = c.request("unregister", json!({})).await;
    assert_eq!(r["type"], "result");
    assert!(kam.contacts("5001").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn api_token_guards_rest_and_websocket() {
    let kam = Kamailio::start(KamailioOptions::default());
    let gw = Gateway::start(&kam.uri(), &["--api-token", "s3cret-token"]);
    let (status, body) = gw.get("/api/dn/list").await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthorized");
    assert_eq!(
        gw.get_with("/api/dn/list", Some("s3cret-token")).await.0,
        200
    );
    assert_eq!(gw.get_with("/api/dn/list", Some("wrong")).await.0, 401);
    assert!(matches!(gw.get("/api/health").await.0, 200 | 503));
    assert!(tokio_tungstenite::connect_async(gw.ws_url()).await.is_err());
    let c = Client::connect(&format!("{}?token=s3cret-token", gw.ws_url())).await;
    assert_eq!(c.hello["version"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn resume_takes_the_session_and_its_registration_back() {
    let kam = Kamailio::start(KamailioOptions::default());
    let gw = Gateway::start(&kam.uri(), &["--grace-period", "3"]);

    let mut c1 = Client::connect(&gw.ws_url()).await;
    c1.register("5001", "pass5001").await;
    let session_id = c1.hello["sessionId"].clone();
    let token = c1.hello["resumeToken"].clone();
    c1.close().await;

    let mut c2 = Client::connect(&gw.ws_url()).await;
    let r = c2
        .request(
            "resume",
            json!({"sessionId": session_id, "resumeToken": "nope"}),
        )
        .await;
    assert_eq!(r["payload"]["code"], "unauthorized", "{r}");
    let r = c2
        .request(
            "resume",
            json!({"sessionId": "unknown", "resumeToken": token}),
        )
        .await;
    assert_eq!(r["payload"]["code"], "invalid_state", "{r}");
    let r = c2.request("resume", json!({"sessionId": session_id})).await;
    assert_eq!(r["payload"]["code"], "bad_request", "{r}");
    let r = c2
        .request(
            "resume",
            json!({"sessionId": session_id, "resumeToken": token}),
        )
        .await;
    assert_eq!(r["type"], "result", "{r}");
    assert_eq!(r["payload"]["dn"], "5001");
    assert_eq!(r["payload"]["calls"], json!([]));

    // Past the grace period the registration is still there and still this session's.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(contact_points_at(&kam, "5001", &gw), "{}", kam.ul_dump());
    let (_, dn) = gw.get("/api/dn/5001").await;
    assert_eq!(dn["state"], "registered");
    assert_eq!(dn["sessionId"], session_id);
    let r = c2.request("ping", json!({})).await;
    assert_eq!(r["type"], "result");

    // Resuming a session whose socket is still open takes it over; the old socket closes.
    let mut c3 = Client::connect(&gw.ws_url()).await;
    let r = c3
        .request(
            "resume",
            json!({"sessionId": session_id, "resumeToken": token}),
        )
        .await;
    assert_eq!(r["type"], "result", "{r}");
    assert!(
        c2.recv(WAIT).await.is_none(),
        "the replaced socket must close"
    );
    let r = c3.request("unregister", json!({})).await;
    assert_eq!(r["type"], "result", "{r}");
    assert!(kam.contacts("5001").is_empty(), "{}", kam.ul_dump());
}
