//! Abuse limits against the real gateway and Kamailio: register guessing from one address is
//! throttled and backs off while other clients register; WebSocket connects per address and
//! requests per session are bounded with `rate_limited` / 429, leaving other sessions alone.

use crate::common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use common::client::Client;
use common::gateway::Gateway;
use common::kamailio::{Kamailio, KamailioOptions};
use serde_json::json;

/// A second loopback address: per-address limits see it as another client.
const OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_wrong_passwords_are_throttled_and_good_clients_still_register() {
    let kam = Kamailio::start(KamailioOptions::default());
    let gw = Gateway::start(&kam.uri(), &[]);

    let mut guesser = Client::connect(&gw.ws_url()).await;
    let (mut refused_by_registrar, mut limited) = (0, 0);
    for i in 0..200 {
        let r = guesser
            .request(
                "register",
                json!({"dn": "5002", "password": format!("guess{i}")}),
            )
            .await;
        assert_eq!(r["type"], "error", "{r}");
        match r["payload"]["code"].as_str() {
            Some("auth_failed") => refused_by_registrar += 1,
            // The lock-out, or the session's request budget: both say so.
            Some("rate_limited") => limited += 1,
            _ => panic!("unexpected answer {r}"),
        }
    }
    // Three free guesses, then a lock-out that doubles: the registrar hears a handful.
    assert!(
        (3..=6).contains(&refused_by_registrar),
        "{refused_by_registrar} guesses reached the registrar"
    );
    assert_eq!(limited, 200 - refused_by_registrar);
    // Locked out means locked out, whatever the password, from that address.
    let r = guesser
        .request("register", json!({"dn": "5002", "password": "pass5002"}))
        .await;
    assert_eq!(r["payload"]["code"], "rate_limited", "{r}");
    assert!(kam.contacts("5002").is_empty());

    // The agent of 5002 from another address, and another agent from the guesser's own
    // address, register as usual; the guesser's session is still open and answers.
    let mut agent = Client::connect_from(&gw.ws_url(), OTHER).await;
    agent.register("5002", "pass5002").await;
    let mut neighbour = Client::connect(&gw.ws_url()).await;
    neighbour.register("5001", "pass5001").await;
    assert!(kam.wait_for_contacts("5002", true, Duration::from_secs(5)));
    assert!(kam.wait_for_contacts("5001", true, Duration::from_secs(5)));
    // Its request budget (50/s) was spent by the burst: after a second it answers again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = guesser.request("ping", json!({})).await;
    assert_eq!(r["type"], "result", "{r}");
    assert!(
        gw.log().contains("register attempt rate-limited"),
        "no log line"
    );
    assert!(!gw.log().contains("pass5002"), "a password in the log");
}

#[tokio::test(flavor = "multi_thread")]
async fn connects_per_address_and_requests_per_session_are_bounded() {
    let kam = Kamailio::start(KamailioOptions::default());
    let gw = Gateway::start(
        &kam.uri(),
        &[
            "--ws-connects-per-minute",
            "10",
            "--requests-per-second",
            "5",
        ],
    );

    // Connects: the bucket holds ten; the rest from this address get 429.
    let mut open = Vec::new();
    let mut refused = 0;
    for _ in 0..20 {
        match tokio_tungstenite::connect_async(gw.ws_url()).await {
            Ok((ws, _)) => open.push(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                assert_eq!(r.status(), 429);
                refused += 1;
            }
            Err(e) => panic!("unexpected connect failure: {e}"),
        }
    }
    assert_eq!((open.len(), refused), (10, 10));
    // Another address is not affected.
    let mut other = Client::connect_from(&gw.ws_url(), OTHER).await;

    // Requests: the session's bucket holds two seconds' worth (10); a burst of 30 pings
    // gets the rest `rate_limited`, and the session is usable again after a pause.
    let mut answers = Vec::new();
    for i in 0..30 {
        other
            .send_text(&json!({"type": "ping", "id": format!("p{i}")}).to_string())
            .await;
    }
    for i in 0..30 {
        answers.push(other.reply_to(&format!("p{i}")).await);
    }
    let limited = answers
        .iter()
        .filter(|a| a["type"] == "error" && a["payload"]["code"] == "rate_limited")
        .count();
    let ok = answers.iter().filter(|a| a["type"] == "result").count();
    assert_eq!(ok + limited, 30, "{answers:?}");
    assert!((10..=12).contains(&ok), "{ok} pings answered in a burst");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = other.request("ping", json!({})).await;
    assert_eq!(r["type"], "result", "{r}");
    other.register("5001", "pass5001").await;
    let ev = other.recv(Duration::from_millis(300)).await;
    assert!(ev.is_none(), "unexpected frame {ev:?}");
    let (_, health) = gw.get("/api/health").await;
    assert_eq!(health["status"], "ok", "{health}");
}

/// An INVITE flood at one DN (through the proxy, so it passes the trusted-source check):
/// `--max-ringing-per-dn` calls ring the agent, the rest get 486 at once (each ringing call
/// holds an RTP port pair, so a flood must not take the range), and another agent's calls
/// still ring.
#[tokio::test(flavor = "multi_thread")]
async fn an_invite_flood_rings_a_dn_only_so_often_and_others_still_get_calls() {
    use std::collections::BTreeMap;
    let kam = Kamailio::start(KamailioOptions::default());
    let gw = Gateway::start(&kam.uri(), &["--max-ringing-per-dn", "3"]);
    let mut agent = Client::connect(&gw.ws_url()).await;
    agent.register("5001", "pass5001").await;
    let mut other = Client::connect(&gw.ws_url()).await;
    other.register("5002", "pass5002").await;

    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("flood socket");
    let me = sock.local_addr().expect("addr");
    let invite = |n: u32, dn: &str| {
        let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                   m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
        format!(
            "INVITE sip:{dn}@127.0.0.1:{kp} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {me};branch=z9hG4bKflood{n};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:9999@127.0.0.1>;tag=flood{n}\r\n\
             To: <sip:{dn}@127.0.0.1>\r\nCall-ID: flood-{n}@test\r\nCSeq: 1 INVITE\r\n\
             Contact: <sip:9999@{me}>\r\nContent-Type: application/sdp\r\n\
             Content-Length: {len}\r\n\r\n{sdp}",
            kp = kam.port(),
            len = sdp.len()
        )
    };
    for n in 0..10 {
        sock.send_to(invite(n, "5001").as_bytes(), kam.addr())
            .await
            .expect("send");
    }
    // Final answers by Call-ID (provisional ones are skipped).
    let mut finals = BTreeMap::new();
    let mut buf = vec![0u8; 65_535];
    let until = tokio::time::Instant::now() + Duration::from_secs(4);
    while let Ok(Ok(n)) = tokio::time::timeout_at(until, sock.recv(&mut buf)).await {
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        let call_id = text
            .lines()
            .find_map(|l| l.strip_prefix("Call-ID: "))
            .unwrap_or_default()
            .trim()
            .to_string();
        if let Some(code) = text.strip_prefix("SIP/2.0 ").and_then(|r| r.get(..3)) {
            if !code.starts_with('1') {
                finals.insert(call_id, code.to_string());
            }
        }
    }
    let busy = finals.values().filter(|c| *c == "486").count();
    assert_eq!(busy, 7, "10 INVITEs, 3 may ring: {finals:?}\n{}", gw.log());
    let mut offered = 0;
    while let Some(frame) = agent.recv(Duration::from_millis(500)).await {
        if frame["type"] == "incomingCall" {
            offered += 1;
        }
    }
    assert_eq!(offered, 3, "the agent was offered more than the limit");
    assert_eq!(crate::contract::refused(&gw, "ringing_limit").await, 7);

    // Another DN is not affected.
    sock.send_to(invite(100, "5002").as_bytes(), kam.addr())
        .await
        .expect("send");
    let call = other.event("incomingCall", Duration::from_secs(5)).await;
    assert_eq!(
        call["payload"]["to"].as_str().map(|t| t.contains("5002")),
        Some(true),
        "{call}"
    );
}
