//! The REST API for WWE and operators against a real Kamailio, SIPp and a WebRTC peer: every
//! route checked against the served OpenAPI document, live events over SSE (a stuck
//! subscriber dropped without holding up another), Prometheus metrics moving by the right
//! amounts for one call, the token on REST and WebSocket, and no password anywhere.

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::client::{Client, WAIT};
use common::gateway::Gateway;
use common::kamailio::{Kamailio, KamailioOptions};
use common::scenes::{agent_calls_via, phone_1003};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const TOKEN: &str = "t0ken-for-tests-9f2c";
const PASSWORDS: &[&str] = &["pass5001", "pass5002", "pass1003"];

/// One REST answer.
struct Answer {
    status: u16,
    content_type: String,
    text: String,
}

async fn call_api(gw: &Gateway, method: &str, path: &str, token: Option<&str>) -> Answer {
    let client = reqwest::Client::new();
    let url = format!("{}{path}", gw.api_url());
    let mut req = match method {
        "POST" => client.post(url),
        _ => client.get(url),
    };
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("REST request");
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = resp.text().await.unwrap_or_default();
    Answer {
        status,
        content_type,
        text,
    }
}

/// The JSON schema the OpenAPI document gives for `path` (its template), `method`, `status`,
/// as a standalone schema whose `#/components/...` references still resolve.
fn response_schema(doc: &Value, path: &str, method: &str, status: u16) -> Value {
    let schema = &doc["paths"][path][method]["responses"][status.to_string()]["content"]
        ["application/json"]["schema"];
    assert!(
        schema.is_object(),
        "the OpenAPI document has no JSON schema for {method} {path} {status}"
    );
    json!({ "allOf": [schema], "components": doc["components"] })
}

fn check_against(doc: &Value, template: &str, method: &str, a: &Answer) -> Value {
    assert!(
        a.content_type.starts_with("application/json"),
        "{method} {template}: content-type {:?}",
        a.content_type
    );
    let body: Value = serde_json::from_str(&a.text).expect("JSON body");
    let schema = response_schema(doc, template, &method.to_lowercase(), a.status);
    let validator = jsonschema::draft202012::new(&schema).expect("schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(&body)
        .map(|e| e.to_string())
        .collect();
    assert!(
        errors.is_empty(),
        "{method} {template} ({}) does not match its schema: {errors:?}\n{body}",
        a.status
    );
    body
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_matches_the_openapi_document_and_needs_the_token() {
    let kam = Kamailio::start(KamailioOptions::default());
    let mut phone = phone_1003(&kam, "uas_answer.xml", &["-rtp_echo"]);
    let gw = Gateway::start(&kam.uri(), &["--api-token", TOKEN]);

    // The WebSocket wants the token too: as ?token= (browsers cannot set headers).
    let refused = tokio_tungstenite::connect_async(gw.ws_url()).await;
    assert!(
        refused.is_err(),
        "a WebSocket without the token was accepted"
    );
    let wrong = tokio_tungstenite::connect_async(format!("{}?token=nope", gw.ws_url())).await;
    assert!(
        wrong.is_err(),
        "a WebSocket with a wrong token was accepted"
    );
    let url = format!("{}?token={TOKEN}", gw.ws_url());
    let (mut agent, _peer, call_id) = agent_calls_via(&gw, &url, "5001", "1003").await;

    let doc_answer = call_api(&gw, "GET", "/api/openapi.json", Some(TOKEN)).await;
    assert_eq!(doc_answer.status, 200, "{}", doc_answer.text);
    let doc: Value = serde_json::from_str(&doc_answer.text).expect("OpenAPI JSON");
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{doc}"
    );

    // The check can fail: a wrong body does not pass.
    let strict =
        jsonschema::draft202012::new(&response_schema(&doc, "/api/calls/active", "get", 200))
            .expect("schema compiles");
    assert!(!strict.is_valid(&json!({"calls": [{"callId": 5}]})));
    assert!(!strict.is_valid(&json!({})));

    let session_id = {
        let (_, dn) = gw.get_with("/api/dn/5001", Some(TOKEN)).await;
        dn["sessionId"].as_str().expect("sessionId").to_string()
    };
    // (method, concrete path, template, expected status)
    let call_path = format!("/api/calls/{call_id}");
    let routes: Vec<(&str, String, &str, u16)> = vec![
        ("GET", "/api/health".into(), "/api/health", 200),
        ("GET", "/api/dn/list".into(), "/api/dn/list", 200),
        ("GET", "/api/dn/5001".into(), "/api/dn/{dn}", 200),
        ("GET", "/api/dn/4321".into(), "/api/dn/{dn}", 404),
        (
            "GET",
            "/api/genesys/status".into(),
            "/api/genesys/status",
            200,
        ),
        ("GET", "/api/calls/active".into(), "/api/calls/active", 200),
        ("GET", call_path.clone(), "/api/calls/{callId}", 200),
        ("GET", "/api/calls/nope".into(), "/api/calls/{callId}", 404),
        (
            "POST",
            "/api/calls/nope/hangup".into(),
            "/api/calls/{callId}/hangup",
            404,
        ),
        (
            "POST",
            "/api/sessions/nope/disconnect".into(),
            "/api/sessions/{sessionId}/disconnect",
            404,
        ),
        (
            "POST",
            "/api/calls/nope/answer".into(),
            "/api/calls/{callId}/answer",
            404,
        ),
        (
            "POST",
            "/api/calls/nope/hold".into(),
            "/api/calls/{callId}/hold",
            404,
        ),
        (
            "POST",
            "/api/calls/nope/unhold".into(),
            "/api/calls/{callId}/unhold",
            404,
        ),
        // No body: 400 before the call is looked up.
        (
            "POST",
            "/api/calls/nope/dtmf".into(),
            "/api/calls/{callId}/dtmf",
            400,
        ),
        (
            "POST",
            "/api/calls/nope/transfer".into(),
            "/api/calls/{callId}/transfer",
            400,
        ),
        (
            "POST",
            "/api/dn/5001/calls".into(),
            "/api/dn/{dn}/calls",
            400,
        ),
        ("GET", "/api/openapi.json".into(), "/api/openapi.json", 200),
    ];
    let mut bodies = vec![doc_answer.text.clone()];
    let mut seen = BTreeMap::new();
    for (method, path, template, status) in &routes {
        let a = call_api(&gw, method, path, Some(TOKEN)).await;
        assert_eq!(a.status, *status, "{method} {path}: {}", a.text);
        let body = check_against(&doc, template, method, &a);
        bodies.push(a.text.clone());
        seen.insert(path.clone(), body);
        // Without the token, or with a wrong one: 401 with an error body (health is open).
        for bad in [None, Some("wrong")] {
            let a = call_api(&gw, method, path, bad).await;
            if *template == "/api/health" {
                assert_eq!(a.status, 200);
            } else {
                assert_eq!(a.status, 401, "{method} {path} with {bad:?}");
                check_against(&doc, template, method, &a);
            }
        }
    }
    let dn = &seen["/api/dn/5001"];
    assert_eq!(dn["state"], "registered", "{dn}");
    assert_eq!(dn["activeCallId"], call_id.as_str(), "{dn}");
    let call = &seen[&call_path];
    assert_eq!(call["state"], "answered", "{call}");
    assert_eq!(call["direction"], "outbound", "{call}");
    assert!(call["answeredAt"].is_string(), "{call}");

    // /metrics and the SSE stream are not JSON; they need the token as well.
    let m = call_api(&gw, "GET", "/metrics", Some(TOKEN)).await;
    assert_eq!(m.status, 200);
    bodies.push(m.text.clone());
    assert_eq!(call_api(&gw, "GET", "/metrics", None).await.status, 401);
    assert_eq!(call_api(&gw, "GET", "/api/events", None).await.status, 401);

    // Ending the call over REST: 204, `hangup` by server, BYE to the phone.
    let a = call_api(&gw, "POST", &format!("{call_path}/hangup"), Some(TOKEN)).await;
    assert_eq!(a.status, 204, "{}", a.text);
    let h = agent.event("hangup", WAIT).await;
    assert_eq!(h["payload"]["by"], "server", "{h}");
    let status = phone.wait(Duration::from_secs(5));
    assert!(status.is_some_and(|s| s.success()), "{}", phone.traces());
    let a = call_api(
        &gw,
        "POST",
        &format!("/api/sessions/{session_id}/disconnect"),
        Some(TOKEN),
    )
    .await;
    assert_eq!(a.status, 204, "{}", a.text);

    // No password and no token in any answer or in the log.
    let log = gw.log();
    for secret in PASSWORDS.iter().chain([&TOKEN]) {
        for b in &bodies {
            assert!(!b.contains(secret), "an answer contains {secret}: {b}");
        }
        assert!(!log.contains(secret), "the log contains {secret}");
    }
}

/// An `/api/events` subscriber on a raw socket with a tiny receive buffer, so it can stop
/// reading and really fall behind.
struct SseSocket {
    reader: BufReader<tokio::net::TcpStream>,
}

impl SseSocket {
    async fn open(gw: &Gateway, recv_buffer: Option<u32>) -> SseSocket {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
        }
        let addr = format!("127.0.0.1:{}", gw.api_port).parse().expect("addr");
        let mut stream = socket.connect(addr).await.expect("connect");
        stream
            .write_all(b"GET /api/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
            .await
            .expect("request");
        let mut reader = BufReader::new(stream);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).await.expect("head");
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push_str(&line);
        }
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: text/event-stream"),
            "{head}"
        );
        assert!(
            head.to_ascii_lowercase()
                .contains("transfer-encoding: chunked"),
            "{head}"
        );
        SseSocket { reader }
    }

    /// The next chunk of the chunked body, `None` at its end (or EOF, or `timeout`).
    async fn chunk(&mut self, timeout: Duration) -> Option<String> {
        tokio::time::timeout(timeout, async {
            let mut size = String::new();
            self.reader.read_line(&mut size).await.ok()?;
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            if n == 0 {
                return None;
            }
            let mut data = vec![0; n + 2];
            self.reader.read_exact(&mut data).await.ok()?;
            data.truncate(n);
            String::from_utf8(data).ok()
        })
        .await
        .ok()
        .flatten()
    }

    /// Every event until the stream ends or is quiet for `quiet`: `(event name, data JSON)`.
    async fn events(&mut self, quiet: Duration, stop_after: Option<&str>) -> Vec<(String, Value)> {
        let mut text = String::new();
        let mut out = Vec::new();
        while let Some(c) = self.chunk(quiet).await {
            text.push_str(&c);
            while let Some(end) = text.find("\n\n") {
                let block: String = text.drain(..end + 2).collect();
                let mut name = None;
                let mut data = None;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        name = Some(v.to_string());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = serde_json::from_str::<Value>(v).ok();
                    }
                }
                if let (Some(n), Some(d)) = (name, data) {
                    let done = stop_after == Some(n.as_str());
                    out.push((n, d));
                    if done {
                        return out;
                    }
                }
            }
        }
        out
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sse_shows_a_call_in_order_and_drops_a_subscriber_that_never_reads() {
    let kam = Kamailio::start(KamailioOptions::default());
    let mut phone = phone_1003(&kam, "uas_answer.xml", &["-rtp_echo"]);
    let gw = Gateway::start(
        &kam.uri(),
        &[
            "--registers-per-minute",
            "100000",
            "--requests-per-second",
            "100000",
        ],
    );
    let mut watcher = SseSocket::open(&gw, None).await;
    // Never reads again until the end.
    let mut stuck = SseSocket::open(&gw, Some(4096)).await;

    let (mut agent, _peer, call_id) = agent_calls_via(&gw, &gw.ws_url(), "5001", "1003").await;
    let r = agent.request("hangup", json!({"callId": call_id})).await;
    assert_eq!(r["type"], "result", "{r}");
    agent.event("hangup", WAIT).await;
    let seen = watcher.events(Duration::from_secs(5), Some("hangup")).await;
    let kinds: Vec<&str> = seen.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        ["registrationState", "ringing", "answered", "hangup"],
        "{seen:?}"
    );
    assert_eq!(seen[0].1["state"], "registered");
    assert_eq!(seen[0].1["dn"], "5001");
    for (kind, data) in &seen {
        assert_eq!(data["type"], kind.as_str(), "{data}");
    }
    for (_, data) in &seen[1..] {
        assert_eq!(data["callId"], call_id.as_str(), "{data}");
        assert_eq!(data["dn"], "5001", "{data}");
    }
    assert!(phone
        .wait(Duration::from_secs(5))
        .is_some_and(|s| s.success()));
    let r = agent.request("unregister", json!({})).await;
    assert_eq!(r["type"], "result", "{r}");
    let seen = watcher
        .events(Duration::from_secs(5), Some("registrationState"))
        .await;
    assert_eq!(
        seen.last().map(|(_, d)| d["state"].clone()),
        Some(json!("unregistered"))
    );

    // Flood: twenty agents register and unregister in a loop, 2,000 events, more than the
    // gateway keeps for a subscriber that falls behind (1,024) plus what socket buffers hold;
    // the watcher must see every event.
    let mut workers = Vec::new();
    for dn in 6001..=6020 {
        let url = gw.ws_url();
        workers.push(tokio::spawn(async move {
            let cycles = 50;
            let mut c = Client::connect(&url).await;
            for _ in 0..cycles {
                c.register(&dn.to_string(), &format!("pass{dn}")).await;
                let r = c.request("unregister", json!({})).await;
                assert_eq!(r["type"], "result", "{r}");
                let ev = c.event("registrationState", WAIT).await;
                assert_eq!(ev["payload"]["state"], "unregistered", "{ev}");
            }
            cycles * 2
        }));
    }
    let flood = tokio::spawn(async move {
        let mut n = 0;
        while n < 2000 {
            let got = watcher.events(Duration::from_secs(10), None).await;
            if got.is_empty() {
                break;
            }
            n += got.len();
        }
        n
    });
    let mut expected = 0;
    for w in workers {
        expected += w.await.expect("register loop");
    }
    let watched = flood.await.expect("watcher");
    assert_eq!(watched, expected, "the reading subscriber missed events");

    // The stuck one: what it gets ends with `dropped`, then the stream ends.
    let got = stuck.events(Duration::from_secs(10), Some("dropped")).await;
    let last = got.last().map(|(k, _)| k.as_str());
    assert_eq!(last, Some("dropped"), "{} events, last {last:?}", got.len());
    assert!(got.len() < expected, "{} of {expected} events", got.len());
    assert!(
        stuck.chunk(Duration::from_secs(5)).await.is_none(),
        "still open"
    );
    let (_, health) = gw.get("/api/health").await;
    assert_eq!(health["status"], "ok", "{health}");
}

fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text parses");
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_parse_and_move_by_one_call() {
    let kam = Kamailio::start(KamailioOptions::default());
    let mut phone = phone_1003(&kam, "uas_answer.xml", &["-rtp_echo"]);
    let gw = Gateway::start(&kam.uri(), &[]);
    let before = call_api(&gw, "GET", "/metrics", None).await.text;
    assert!(before.ends_with("# EOF\n"), "{before}");
    for name in [
        "gateway_sessions",
        "gateway_calls",
        "gateway_registrations",
        "gateway_relay_latency_seconds",
        "gateway_sip_transactions_total",
    ] {
        assert!(before.contains(name), "{name} missing:\n{before}");
    }

    let (mut agent, peer, call_id) = agent_calls_via(&gw, &gw.ws_url(), "5001", "1003").await;
    peer.send_numbered(100, 160);
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let during = call_api(&gw, "GET", "/metrics", None).await.text;
    assert_eq!(
        metric_value(&during, "gateway_calls", &[("kind", "answered")]),
        1.0
    );
    assert_eq!(
        metric_value(&during, "gateway_registrations", &[("kind", "registered")]),
        1.0
    );
    assert_eq!(metric_value(&during, "gateway_sessions", &[]), 1.0);
    let r = agent.request("hangup", json!({"callId": call_id})).await;
    assert_eq!(r["type"], "result");
    agent.event("hangup", WAIT).await;
    assert!(phone
        .wait(Duration::from_secs(5))
        .is_some_and(|s| s.success()));
    let echoed = peer.echoed_counters().len() as f64;
    assert!(echoed >= 95.0, "{echoed} echoed");

    let after = call_api(&gw, "GET", "/metrics", None).await.text;
    let delta = |name: &str, labels: &[(&str, &str)]| {
        metric_value(&after, name, labels) - metric_value(&before, name, labels)
    };
    for kind in ["register", "call", "hangup"] {
        assert_eq!(
            delta("gateway_ws_messages_total", &[("kind", kind)]),
            1.0,
            "{kind}"
        );
    }
    assert_eq!(
        delta(
            "gateway_call_setups_total",
            &[("direction", "outbound"), ("sip_status", "200")]
        ),
        1.0
    );
    assert_eq!(
        metric_value(&after, "gateway_calls", &[("kind", "answered")]),
        0.0
    );
    // 100 packets from the browser to SIP, and the echo of each back: in and out alike
    // (each between the 100 sent plus the echoes that reached the browser, and 200).
    for dir in ["in", "out"] {
        let d = delta("gateway_rtp_packets_total", &[("direction", dir)]);
        assert!(
            (100.0 + echoed..=200.0).contains(&d),
            "rtp {dir}: {d} for 100 sent and {echoed} echoed"
        );
    }
    // REGISTER (challenged: 2), INVITE (challenged or not), BYE: at least 4 client
    // transactions, and the far end's nothing-but-responses: no server transactions but
    // OPTIONS probes from us... so only a lower bound on ours.
    assert!(delta("gateway_sip_transactions_total", &[("role", "client")]) >= 4.0);
    assert!(metric_value(&after, "gateway_invite_latency_seconds_count", &[]) >= 1.0);
}
