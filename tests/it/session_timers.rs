//! RFC 4028 session timers against SIPp through a real Kamailio: we refresh a far end that
//! asks us to and end the call when it stops answering; we answer 422 to a too-short
//! interval, carry the caller's refreshes and end the call when they stop.

use crate::common;

use std::time::{Duration, Instant};

use common::client::Client;
use common::gateway::Gateway;
use common::kamailio::{Kamailio, KamailioOptions};
use common::scenes::{answer_incoming, answered_call, phone_1003};
use common::sipp::Sipp;

/// Media silence must not end these calls before their session timers do.
const QUIET_MEDIA: &[&str] = &["--rtp-timeout", "3600"];

#[tokio::test(flavor = "multi_thread")]
async fn we_refresh_a_far_end_with_session_expires_90_and_bye_when_it_stops_answering() {
    let kam = Kamailio::start(KamailioOptions::default());
    let mut phone = phone_1003(&kam, "uas_session_timer.xml", &["-rtp_echo"]);
    let (gw, mut c, _peer, call_id) = answered_call(&kam, QUIET_MEDIA).await;
    let answered = Instant::now();

    // Refreshes at 45 s (answered) and 90 s (unanswered: Kamailio's 30 s fr_timer then
    // answers 408 for the phone), so the BYE comes about 120 s after the answer, and no
    // later than the expiry 135 s after it.
    let h = c.event("hangup", Duration::from_secs(150)).await;
    let took = answered.elapsed();
    assert_eq!(h["payload"]["callId"], call_id.as_str(), "{h}");
    assert_eq!(h["payload"]["by"], "server", "{h}");
    assert_eq!(h["payload"]["cause"], "session_expired", "{h}");
    assert!(
        (Duration::from_secs(90)..Duration::from_secs(140)).contains(&took),
        "the call ended {took:?} after the answer"
    );
    let status = phone.wait(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "SIPp did not see two refreshes and a BYE: {status:?}\n{}\n{}",
        phone.traces(),
        gw.log()
    );
    let log = gw.log();
    assert!(log.contains("session timer"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_short_interval_gets_422_and_a_caller_that_stops_refreshing_loses_the_call() {
    let kam = Kamailio::start(KamailioOptions::default());
    let gw = Gateway::start(&kam.uri(), QUIET_MEDIA);
    let mut c = Client::connect(&gw.ws_url()).await;
    c.register("5001", "pass5001").await;

    let kam_addr = format!("127.0.0.1:{}", kam.port());
    let mut caller: Sipp = Sipp::start("uac_session_timer.xml", None, &["-s", "5001", &kam_addr]);
    // The first INVITE (Session-Expires: 30) never reaches the agent; the second does.
    let (_peer, call_id) = answer_incoming(&gw, &mut c).await;
    let answered = Instant::now();

    // One refresh 5 s in, then none: BYE at 5 + 90 - max(32, 30) = 63 s.
    let h = c.event("hangup", Duration::from_secs(90)).await;
    let took = answered.elapsed();
    assert_eq!(h["payload"]["callId"], call_id.as_str(), "{h}");
    assert_eq!(h["payload"]["cause"], "session_expired", "{h}");
    assert!(
        (Duration::from_secs(55)..Duration::from_secs(75)).contains(&took),
        "the call ended {took:?} after the answer"
    );
    let status = caller.wait(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}\n{}",
        caller.traces(),
        gw.log()
    );
    assert!(c
        .recv(Duration::from_millis(300))
        .await
        .is_none_or(|e| e["type"] != "incomingCall"));
}
