//! Graceful shutdown (DESIGN.md run contract): on SIGTERM/SIGINT the gateway stops accepting,
//! hangs up every call with BYE, tells each browser (`hangup` with `by: "server"`),
//! unregisters every DN (Expires: 0) and exits 0 within 5 s. Real Kamailio, real SIPp far
//! ends, the real gateway process, WebRTC peers playing the browsers.

use crate::common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::client::Client;
use common::gateway::Gateway;
use common::kamailio::{Kamailio, KamailioOptions};
use common::scenes::{agent_calls, phone};
use serde_json::Value;

/// The run contract's limit from the signal to the exit.
const LIMIT: Duration = Duration::from_secs(5);

fn contact_points_at(kam: &Kamailio, dn: &str, gw: &Gateway) -> bool {
    let want = format!("@127.0.0.1:{}", gw.sip_port);
    kam.contacts(dn).iter().any(|c| c.contains(&want))
}

/// Every frame the server sends until it closes the socket (or `within` passes).
async fn frames_until_close(c: &mut Client, within: Duration) -> (Vec<Value>, bool) {
    let deadline = Instant::now() + within;
    let mut frames = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (frames, false);
        }
        match c.recv(left).await {
            Some(v) => frames.push(v),
            None => return (frames, Instant::now() < deadline),
        }
    }
}

/// Asserts the frames hold exactly one `hangup` for `call_id`, by the server, and that the
/// DN's `unregistered` state came after it.
fn assert_server_hangup_then_unregistered(frames: &[Value], call_id: &str, dn: &str) {
    let hangups: Vec<(usize, &Value)> = frames
        .iter()
        .enumerate()
        .filter(|(_, f)| f["type"] == "hangup")
        .collect();
    assert_eq!(hangups.len(), 1, "one hangup expected for {dn}: {frames:?}");
    let (at, hangup) = hangups[0];
    assert_eq!(hangup["payload"]["callId"], call_id, "{hangup}");
    assert_eq!(hangup["payload"]["by"], "server", "{hangup}");
    assert!(
        hangup["payload"]["cause"]
            .as_str()
            .is_some_and(|c| !c.is_empty()),
        "{hangup}"
    );
    let unregistered = frames.iter().position(|f| {
        f["type"] == "registrationState"
            && f["payload"]["dn"] == dn
            && f["payload"]["state"] == "unregistered"
    });
    assert!(
        unregistered.is_some_and(|u| u > at),
        "{dn}: `registrationState unregistered` after the hangup expected: {frames:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_two_calls_byes_both_far_ends_and_unregisters() {
    let kam = Kamailio::start(KamailioOptions::default());
    // Far ends that answer, then expect BYE and answer it 200: SIPp exits 0 only then.
    let mut far_a = phone(&kam, "1003", "uas_answer.xml", &[]);
    let mut far_b = phone(&kam, "1004", "uas_answer.xml", &[]);
    let mut gw = Gateway::start(&kam.uri(), &[]);
    let (mut a, peer_a, call_a) = agent_calls(&gw, "5001", "1003").await;
    let (mut b, peer_b, call_b) = agent_calls(&gw, "5002", "1004").await;
    let (_, active) = gw.get("/api/calls/active").await;
    assert_eq!(
        active["calls"].as_array().map(Vec::len),
        Some(2),
        "{active}"
    );
    assert!(contact_points_at(&kam, "5001", &gw), "{}", kam.ul_dump());
    assert!(contact_points_at(&kam, "5002", &gw), "{}", kam.ul_dump());

    let signalled = Instant::now();
    gw.sigterm();

    // Both browsers hear of it on their open sockets, then the server closes them.
    let ((frames_a, closed_a), (frames_b, closed_b)) = tokio::join!(
        frames_until_close(&mut a, LIMIT),
        frames_until_close(&mut b, LIMIT)
    );
    assert_server_hangup_then_unregistered(&frames_a, &call_a, "5001");
    assert_server_hangup_then_unregistered(&frames_b, &call_b, "5002");
    assert!(closed_a && closed_b, "sockets not closed by the server");

    let status = gw
        .wait_exit(LIMIT.saturating_sub(signalled.elapsed()))
        .unwrap_or_else(|| panic!("still running 5 s after SIGTERM:\n{}", gw.log()));
    let took = signalled.elapsed();
    eprintln!("gateway exited {took:?} after SIGTERM");
    assert!(status.success(), "exit status {status}:\n{}", gw.log());
    assert!(took < LIMIT, "exit took {took:?}");

    // Each far end got a BYE and answered it: its scenario ran to the end.
    for (far, dn) in [(&mut far_a, "1003"), (&mut far_b, "1004")] {
        let st = far
            .wait(Duration::from_secs(5))
            .unwrap_or_else(|| panic!("SIPp {dn} still waiting (no BYE?):\n{}", far.traces()));
        assert!(
            st.success(),
            "SIPp {dn} exit {st}:\n{}\n{}",
            far.traces(),
            gw.log()
        );
    }

    // The agents' contacts left the registrar; the SIPp phones' did not (they were not ours).
    assert!(kam.contacts("5001").is_empty(), "{}", kam.ul_dump());
    assert!(kam.contacts("5002").is_empty(), "{}", kam.ul_dump());
    assert!(!kam.contacts("1003").is_empty(), "{}", kam.ul_dump());

    let log = gw.log();
    assert!(log.contains("stopped"), "no clean stop in the log:\n{log}");
    peer_a.close().await;
    peer_b.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigint_on_an_idle_gateway_unregisters_and_exits_zero() {
    let kam = Kamailio::start(KamailioOptions::default());
    let mut gw = Gateway::start(&kam.uri(), &[]);
    let mut c = Client::connect(&gw.ws_url()).await;
    c.register("5001", "pass5001").await;
    assert!(contact_points_at(&kam, "5001", &gw), "{}", kam.ul_dump());

    let signalled = Instant::now();
    let kill = Command::new("kill")
        .arg("-INT")
        .arg(gw.pid().to_string())
        .status()
        .expect("kill");
    assert!(kill.success());

    let (frames, closed) = frames_until_close(&mut c, LIMIT).await;
    assert!(closed, "socket not closed by the server: {frames:?}");
    assert!(
        frames
            .iter()
            .any(|f| f["type"] == "registrationState" && f["payload"]["state"] == "unregistered"),
        "{frames:?}"
    );
    assert!(
        !frames.iter().any(|f| f["type"] == "hangup"),
        "no call, no hangup: {frames:?}"
    );
    let status = gw
        .wait_exit(LIMIT.saturating_sub(signalled.elapsed()))
        .unwrap_or_else(|| panic!("still running 5 s after SIGINT:\n{}", gw.log()));
    assert!(status.success(), "exit status {status}:\n{}", gw.log());
    assert!(signalled.elapsed() < LIMIT);
    assert!(kam.contacts("5001").is_empty(), "{}", kam.ul_dump());
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_with_a_far_end_that_never_answers_bye_still_ends_the_call_in_time() {
    let kam = Kamailio::start(KamailioOptions::default());
    // Answers the call, receives our BYE (and its retransmissions), never answers it.
    let mut far = phone(&kam, "1003", "uas_answer_mute_bye.xml", &[]);
    let mut gw = Gateway::start(&kam.uri(), &[]);
    let (mut c, peer, call_id) = agent_calls(&gw, "5001", "1003").await;

    let signalled = Instant::now();
    gw.sigterm();
    let (frames, closed) = frames_until_close(&mut c, LIMIT).await;
    assert!(closed, "socket not closed by the server: {frames:?}");
    assert_server_hangup_then_unregistered(&frames, &call_id, "5001");
    let status = gw
        .wait_exit(LIMIT.saturating_sub(signalled.elapsed()))
        .unwrap_or_else(|| panic!("still running 5 s after SIGTERM:\n{}", gw.log()));
    assert!(status.success(), "exit status {status}:\n{}", gw.log());
    eprintln!("gateway exited {:?} after SIGTERM", signalled.elapsed());
    assert!(signalled.elapsed() < LIMIT);
    assert!(kam.contacts("5001").is_empty(), "{}", kam.ul_dump());
    // The far end did get the BYE: its scenario only ends after one.
    let st = far
        .wait(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("SIPp never got the BYE:\n{}", far.traces()));
    assert!(st.success(), "SIPp exit {st}:\n{}", far.traces());
    peer.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_with_the_registrar_gone_still_exits_zero_within_5_s() {
    let mut kam = Kamailio::start(KamailioOptions::default());
    let mut gw = Gateway::start(&kam.uri(), &[]);
    let mut c = Client::connect(&gw.ws_url()).await;
    c.register("5001", "pass5001").await;
    // The REGISTER with Expires: 0 will get no answer.
    kam.stop();

    let signalled = Instant::now();
    gw.sigterm();
    // While it waits for the registrar, it accepts no new browser.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let late = tokio::time::timeout(
        Duration::from_secs(1),
        tokio_tungstenite::connect_async(gw.ws_url()),
    )
    .await;
    assert!(
        !matches!(late, Ok(Ok(_))),
        "a WebSocket was accepted after SIGTERM"
    );
    assert!(
        gw.is_running(),
        "the late connect should have met a stopping gateway"
    );
    let (frames, closed) = frames_until_close(&mut c, LIMIT).await;
    assert!(closed, "socket still open 5 s after SIGTERM: {frames:?}");
    let status = gw
        .wait_exit(LIMIT.saturating_sub(signalled.elapsed()))
        .unwrap_or_else(|| panic!("still running 5 s after SIGTERM:\n{}", gw.log()));
    eprintln!("gateway exited {:?} after SIGTERM", signalled.elapsed());
    assert!(status.success(), "exit status {status}:\n{}", gw.log());
    assert!(signalled.elapsed() < LIMIT);
    // It did try: the unregistration was sent and is reported as unfinished, and the
    // session gave up on it in time to close the socket itself.
    let log = gw.log();
    assert!(log.contains("unregister did not finish in time"), "{log}");
    assert!(!log.contains("sessions did not finish"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_a_grace_period_still_byes_the_call_and_unregisters() {
    let kam = Kamailio::start(KamailioOptions::default());
    let mut far = phone(&kam, "1003", "uas_answer.xml", &[]);
    // A grace period long enough that only the shutdown can end it.
    let mut gw = Gateway::start(&kam.uri(), &["--grace-period", "30"]);
    let (c, peer, _call_id) = agent_calls(&gw, "5001", "1003").await;
    // The browser's socket drops: the session keeps its call and registration.
    c.close().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(far.wait(Duration::ZERO), None, "the call ended on the drop");
    assert!(contact_points_at(&kam, "5001", &gw), "{}", kam.ul_dump());

    let signalled = Instant::now();
    gw.sigterm();
    let status = gw
        .wait_exit(LIMIT)
        .unwrap_or_else(|| panic!("still running 5 s after SIGTERM:\n{}", gw.log()));
    eprintln!("gateway exited {:?} after SIGTERM", signalled.elapsed());
    assert!(status.success(), "exit status {status}:\n{}", gw.log());
    assert!(signalled.elapsed() < LIMIT);
    let st = far
        .wait(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("SIPp got no BYE:\n{}", far.traces()));
    assert!(st.success(), "SIPp exit {st}:\n{}", far.traces());
    assert!(kam.contacts("5001").is_empty(), "{}", kam.ul_dump());
    peer.close().await;
}
