//! The contract under hostile input (issue 16, items 3 and 7), against the real gateway and
//! Kamailio on loopback:
//! - an INVITE sent straight to the SIP port from a source that is neither the upstream nor
//!   `--sip-trusted` gets 403, rings nobody and is counted; a `--sip-trusted` node rings;
//! - an unknown method gets 501 with `Allow`, 200 Via headers get 483, a NOTIFY outside any
//!   dialog gets 481;
//! - a frame above 64 KiB gets `too_large` and the session goes on; one above the hard cap
//!   (1 MiB) is closed with 1009, a text frame that is not UTF-8 with 1007, never a reset.

use crate::common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::client::{Client, WAIT};
use common::gateway::Gateway;
use common::kamailio::{Kamailio, KamailioOptions};
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

const SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
a=sendrecv\r\n";

/// A UDP socket on `ip` (any of 127/8 is this host), with a read time-out.
fn sip_socket(ip: &str) -> UdpSocket {
    let sock = UdpSocket::bind((ip, 0)).unwrap_or_else(|e| panic!("bind {ip}: {e}"));
    sock.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    sock
}

/// A request of `method` to `user` at the gateway, from `sock`, with `extra` headers.
fn request(
    sock: &UdpSocket,
    gw: &Gateway,
    method: &str,
    user: &str,
    tag: &str,
    extra: &str,
) -> String {
    let local = sock.local_addr().expect("addr");
    let port = gw.sip_port;
    let (ctype, body) = if method == "INVITE" {
        ("Content-Type: application/sdp\r\n", SDP)
    } else {
        ("", "")
    };
    format!(
        "{method} sip:{user}@127.0.0.1:{port} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-{tag};rport\r\n\
         {extra}\
         From: \"Bank Security\" <sip:666@{ip}>;tag=f-{tag}\r\n\
         To: <sip:{user}@127.0.0.1:{port}>\r\n\
         Call-ID: {tag}@contract\r\n\
         CSeq: 1 {method}\r\n\
         Contact: <sip:666@{local}>\r\n\
         Max-Forwards: 70\r\n\
         {ctype}Content-Length: {}\r\n\r\n{body}",
        body.len(),
        ip = local.ip(),
    )
}

/// Sends `text` to the gateway's SIP port and returns the first final response (1xx skipped).
fn exchange(sock: &UdpSocket, gw: &Gateway, text: &str) -> String {
    sock.send_to(text.as_bytes(), ("127.0.0.1", gw.sip_port))
        .expect("send");
    let mut buf = vec![0u8; 65535];
    loop {
        let (n, _) = sock
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("no answer to\n{text}\n({e}):\n{}", gw.log()));
        let reply = String::from_utf8_lossy(&buf[..n]).to_string();
        if !reply.starts_with("SIP/2.0 1") {
            return reply;
        }
    }
}

async fn metrics(gw: &Gateway) -> String {
    reqwest::get(format!("{}/metrics", gw.api_url()))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text")
}

/// The value of `gateway_sip_requests_refused_total{reason}` (0 when absent).
pub(crate) async fn refused(gw: &Gateway, reason: &str) -> u64 {
    let line = format!("gateway_sip_requests_refused_total{{reason=\"{reason}\"}} ");
    metrics(gw)
        .await
        .lines()
        .find_map(|l| l.strip_prefix(line.as_str()))
        .map_or(0, |v| v.trim().parse().expect("a count"))
}

/// No `incomingCall` reaches `c` within `wait`.
async fn rings_not(c: &mut Client, wait: Duration) {
    let until = Instant::now() + wait;
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        match c.recv(left).await {
            Some(f) => assert_ne!(f["type"], "incomingCall", "the agent rang: {f}"),
            None => return,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_untrusted_source_gets_403_and_rings_nobody() {
    let kam = Kamailio::start(KamailioOptions::default());
    let gw = Gateway::start(&kam.uri(), &[]);
    let mut agent = Client::connect(&gw.ws_url()).await;
    agent.register("5001", "pass5001").await;

    // The upstream is 127.0.0.1; 127.0.0.2 is another host as far as the gateway knows.
    let attacker = sip_socket("127.0.0.2");
    let invite = request(&attacker, &gw, "INVITE", "5001", "spoof1", "");
    let reply = exchange(&attacker, &gw, &invite);
    assert!(reply.starts_with("SIP/2.0 403"), "{reply}");
    assert!(reply.contains("branch=z9hG4bK-spoof1"), "{reply}");
    assert!(reply.contains("tag="), "the 403 tags the To: {reply}");
    // Its retransmission gets the same, and so does any other out-of-dialog request.
    assert!(exchange(&attacker, &gw, &invite).starts_with("SIP/2.0 403"));
    let options = request(&attacker, &gw, "OPTIONS", "5001", "spoof2", "");
    assert!(exchange(&attacker, &gw, &options).starts_with("SIP/2.0 403"));
    rings_not(&mut agent, Duration::from_secs(2)).await;
    assert_eq!(refused(&gw, "untrusted_source").await, 3);
    let log = gw.log();
    assert!(
        log.contains("SIP request refused") && log.contains("127.0.0.2"),
        "{log}"
    );
    // One line, however many refusals within the interval.
    assert_eq!(log.matches("SIP request refused").count(), 1, "{log}");

    // Meanwhile the agent is registered and its calls through the upstream still ring: the
    // same INVITE from the upstream's address reaches it.
    let proxy = sip_socket("127.0.0.1");
    let invite = request(&proxy, &gw, "INVITE", "5001", "real1", "");
    proxy
        .send_to(invite.as_bytes(), ("127.0.0.1", gw.sip_port))
        .expect("send");
    let ring = agent.event("incomingCall", WAIT).await;
    assert_eq!(ring["payload"]["displayName"], "Bank Security", "{ring}");
    let call_id = ring["payload"]["callId"].as_str().expect("callId");
    let r = agent.request("reject", json!({ "callId": call_id })).await;
    assert_eq!(r["type"], "result", "{r}");
    assert!(kam
        .contacts("5001")
        .iter()
        .any(|c| c.contains(&gw.sip_port.to_string())));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sip_trusted_node_rings_the_agent() {
    let kam = Kamailio::start(KamailioOptions::default());
    let gw = Gateway::start(&kam.uri(), &["--sip-trusted", "127.0.0.3, 127.0.5.0/24"]);
    let mut agent = Client::connect(&gw.ws_url()).await;
    agent.register("5001", "pass5001").await;

    for (ip, tag) in [("127.0.0.3", "node1"), ("127.0.5.9", "node2")] {
        let node = sip_socket(ip);
        let invite = request(&node, &gw, "INVITE", "5001", tag, "");
        node.send_to(invite.as_bytes(), ("127.0.0.1", gw.sip_port))
            .expect("send");
        let ring = agent.event("incomingCall", WAIT).await;
        let call_id = ring["payload"]["callId"].as_str().expect("callId");
        let r = agent.request("reject", json!({ "callId": call_id })).await;
        assert_eq!(r["type"], "result", "{r}");
        let mut buf = vec![0u8; 65535];
        let final_status = loop {
            let (n, _) = node.recv_from(&mut buf).expect("a response");
            let reply = String::from_utf8_lossy(&buf[..n]).to_string();
            if !reply.starts_with("SIP/2.0 1") {
                break reply;
            }
        };
        assert!(!final_status.starts_with("SIP/2.0 403"), "{final_status}");
    }
    // 127.0.0.4 is in neither.
    let other = sip_socket("127.0.0.4");
    let invite = request(&other, &gw, "INVITE", "5001", "other", "");
    assert!(exchange(&other, &gw, &invite).starts_with("SIP/2.0 403"));
    rings_not(&mut agent, Duration::from_secs(1)).await;
    assert_eq!(refused(&gw, "untrusted_source").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_methods_long_paths_and_stray_notifies_get_answers() {
    let kam = Kamailio::start(KamailioOptions::default());
    let gw = Gateway::start(&kam.uri(), &[]);
    let mut agent = Client::connect(&gw.ws_url()).await;
    agent.register("5001", "pass5001").await;
    let sock = sip_socket("127.0.0.1");

    let foo = request(&sock, &gw, "FOO", "5001", "foo1", "");
    let reply = exchange(&sock, &gw, &foo);
    assert!(reply.starts_with("SIP/2.0 501"), "{reply}");
    assert!(reply.contains("Allow: INVITE"), "{reply}");
    assert!(reply.contains("CSeq: 1 FOO"), "{reply}");
    assert!(reply.contains("branch=z9hG4bK-foo1"), "{reply}");

    // FOO over TCP: answered, and the connection goes on to carry an OPTIONS.
    {
        use std::io::{Read, Write};
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", gw.sip_port)).expect("tcp");
        tcp.set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        let local = tcp.local_addr().expect("addr");
        let foo = request(&sock, &gw, "FOO", "5001", "foo2", "")
            .replace(
                &sock.local_addr().expect("addr").to_string(),
                &local.to_string(),
            )
            .replace("SIP/2.0/UDP", "SIP/2.0/TCP");
        tcp.write_all(foo.as_bytes()).expect("write");
        let mut buf = vec![0u8; 8192];
        let n = tcp.read(&mut buf).expect("a 501 over TCP");
        let reply = String::from_utf8_lossy(&buf[..n]);
        assert!(reply.starts_with("SIP/2.0 501"), "{reply}");
        let options = foo.replace("FOO", "OPTIONS").replace("foo2", "opt2");
        tcp.write_all(options.as_bytes()).expect("write");
        let n = tcp.read(&mut buf).expect("the connection still answers");
        let reply = String::from_utf8_lossy(&buf[..n]);
        assert!(reply.starts_with("SIP/2.0 200"), "{reply}");
    }

    // 200 Via headers: a loop or an attack, answered 483 (the request is over 8 KiB too).
    let vias: String = (0..199)
        .map(|i| {
            format!(
                "Via: SIP/2.0/UDP 10.0.{}.{}:5060;branch=z9hG4bK-hop{i}\r\n",
                i / 250,
                i % 250 + 1
            )
        })
        .collect();
    let looped = request(&sock, &gw, "OPTIONS", "5001", "via200", &vias);
    assert!(looped.len() > 8192);
    let reply = exchange(&sock, &gw, &looped);
    assert!(reply.starts_with("SIP/2.0 483"), "{reply}");
    assert!(reply.contains("branch=z9hG4bK-via200"), "{reply}");

    // A NOTIFY that belongs to no dialog or subscription of ours.
    let notify = request(
        &sock,
        &gw,
        "NOTIFY",
        "5001",
        "notify1",
        "Event: talk\r\nSubscription-State: terminated\r\n",
    );
    let reply = exchange(&sock, &gw, &notify);
    assert!(reply.starts_with("SIP/2.0 481"), "{reply}");

    assert_eq!(refused(&gw, "unknown_method").await, 2);
    assert_eq!(refused(&gw, "too_many_hops").await, 1);
    // None of it touched the agent.
    let p = agent.request("ping", json!({})).await;
    assert_eq!(p["type"], "result", "{p}");
    assert_eq!(gw.get("/api/dn/5001").await.1["state"], "registered");
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_frames_and_bad_text_close_with_the_right_codes() {
    let kam = Kamailio::start(KamailioOptions::default());
    let gw = Gateway::start(&kam.uri(), &[]);
    let mut agent = Client::connect(&gw.ws_url()).await;
    agent.register("5001", "pass5001").await;

    // 100 KiB: refused with `too_large`, the session and its registration go on.
    let big = json!({"type": "ping", "id": "big", "payload": {"pad": "x".repeat(100 << 10)}});
    agent.send_text(&big.to_string()).await;
    let e = agent.recv(WAIT).await.expect("error frame");
    assert_eq!(e["payload"]["code"], "too_large", "{e}");
    let p = agent.request("ping", json!({})).await;
    assert_eq!(p["type"], "result", "{p}");
    assert_eq!(gw.get("/api/dn/5001").await.1["state"], "registered");

    // 5 MiB on another session: closed with 1009 and a reason, not reset.
    let mut hog = Client::connect(&gw.ws_url()).await;
    let huge = "x".repeat(5 << 20);
    let sent = hog.send_raw(Message::text(huge)).await;
    let close = hog.close_frame(WAIT).await;
    let (code, reason) = close.unwrap_or_else(|e| panic!("{e} (send: {sent:?})\n{}", gw.log()));
    assert_eq!(code, 1009, "{reason}");
    assert!(reason.contains("1024 KiB"), "{reason}");

    // A text frame that is not UTF-8: 1007.
    let mut garbler = Client::connect(&gw.ws_url()).await;
    let frame = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    garbler.send_raw(Message::Frame(frame)).await.expect("send");
    let (code, reason) = garbler
        .close_frame(WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", gw.log()));
    assert_eq!(code, 1007, "{reason}");

    // The agent noticed nothing.
    let p = agent.request("ping", json!({})).await;
    assert_eq!(p["type"], "result", "{p}");
    assert_eq!(gw.get("/api/dn/5001").await.1["state"], "registered");
    assert!(kam
        .contacts("5001")
        .iter()
        .any(|c| c.contains(&gw.sip_port.to_string())));
}

#[test]
fn a_wrong_sip_trusted_stops_start_up_with_one_line() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["--sip-trusted", "10.0.0.1, kamailio-2"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("--sip-trusted") && err.contains("kamailio-2"),
        "{err}"
    );
}
