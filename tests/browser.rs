//! The demo agent phone in Debian's headless Chromium, with real (fake-device) audio: the
//! page's own UI against the gateway, a real Kamailio and SIPp phones.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::browser::Browser;
use common::gateway::Gateway;
use common::kamailio::{pick_port, Kamailio, KamailioOptions};
use common::sipp::{self, Sipp};
use serde_json::json;

const T: Duration = Duration::from_secs(20);

/// One second of a 1000 Hz tone as raw µ-law, for SIPp's `rtp_stream`.
fn tone_ulaw() -> Vec<u8> {
    let mut g = common::peer::ToneGenerator::new(1000.0, 8000, 8000.0);
    common::peer::encode_g711(&g.next_samples(8000), true)
}

fn page_url(gw: &Gateway) -> String {
    format!("http://127.0.0.1:{}/", gw.ws_port)
}

fn register_in_page(b: &mut Browser, gw: &Gateway) {
    b.goto(&page_url(gw));
    b.fill("#dn", "5001");
    b.fill("#password", "pass5001");
    b.click("#register-btn");
    b.wait_text("#reg-state", "registered", T);
}

/// The dominant frequency the page measures in the remote audio.
fn remote_frequency(b: &mut Browser) -> f64 {
    b.eval("window.gatewayDemo.remoteFrequency(1500)")
        .as_f64()
        .expect("a frequency")
}

fn screenshot_path() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/demo-in-call.png"
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn page_registers_calls_a_tone_phone_and_hangs_up() {
    let kam = Kamailio::start(KamailioOptions::default());
    let port = pick_port();
    assert!(sipp::register(kam.port(), port, "1003", "pass1003"));
    let tone = tone_ulaw();
    let mut phone =
        Sipp::start_with_files("uas_tone.xml", Some(port), &[], &[("tone.ulaw", &tone)]);
    let gw = Gateway::start(&kam.uri(), &[]);
    let mut b = Browser::start(440.0);

    register_in_page(&mut b, &gw);
    assert_eq!(gw.get("/api/dn/5001").await.1["state"], "registered");

    b.fill("#dial-input", "1003");
    b.click("#call-btn");
    b.wait_text("#calls li .call-state", "answered", T);
    std::thread::sleep(Duration::from_secs(2));
    let f = remote_frequency(&mut b);
    assert!(
        (980.0..=1020.0).contains(&f),
        "the page hears {f} Hz, not the far end's 1000 Hz"
    );

    let shot = screenshot_path();
    std::fs::create_dir_all(shot.parent().expect("docs dir")).expect("docs dir");
    b.screenshot(&shot);

    let (_, active) = gw.get("/api/calls/active").await;
    assert_eq!(
        active["calls"].as_array().map(Vec::len),
        Some(1),
        "{active}"
    );
    b.click("#calls li .hangup-btn");
    b.wait_gone("#calls li", T);
    let (_, active) = gw.get("/api/calls/active").await;
    assert_eq!(active["calls"], json!([]), "{active}");
    assert!(
        phone
            .wait(Duration::from_secs(5))
            .is_some_and(|s| s.success()),
        "{}",
        phone.traces()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn far_end_hears_the_page_and_the_call_survives_a_dropped_socket() {
    let kam = Kamailio::start(KamailioOptions::default());
    let port = pick_port();
    assert!(sipp::register(kam.port(), port, "1003", "pass1003"));
    let mut phone = Sipp::start("uas_answer.xml", Some(port), &["-rtp_echo"]);
    let gw = Gateway::start(&kam.uri(), &["--grace-period", "20"]);
    let mut b = Browser::start(440.0);
    register_in_page(&mut b, &gw);

    b.fill("#dial-input", "1003");
    b.click("#call-btn");
    b.wait_text("#calls li .call-state", "answered", T);
    std::thread::sleep(Duration::from_secs(2));
    // The far end echoes: what the page hears is what the far end received from it.
    let f = remote_frequency(&mut b);
    assert!(
        (420.0..=460.0).contains(&f),
        "the far end got {f} Hz, not the page's 440 Hz"
    );

    // The server closes the page's socket mid-call; the client resumes the session.
    let (_, dn) = gw.get("/api/dn/5001").await;
    let session = dn["sessionId"].as_str().expect("session id").to_string();
    assert_eq!(
        gw.post(&format!("/api/sessions/{session}/disconnect"))
            .await,
        204
    );
    std::thread::sleep(Duration::from_secs(5));
    let f = remote_frequency(&mut b);
    assert!(
        (420.0..=460.0).contains(&f),
        "audio after the reconnect: {f} Hz"
    );
    b.wait_text("#reg-state", "registered", T);
    let (_, active) = gw.get("/api/calls/active").await;
    assert_eq!(active["calls"][0]["state"], "answered", "{active}");
    let (_, dn) = gw.get("/api/dn/5001").await;
    assert_eq!(
        dn["sessionId"],
        session.as_str(),
        "the same session was resumed"
    );

    b.click("#calls li .hangup-btn");
    b.wait_gone("#calls li", T);
    assert!(
        phone
            .wait(Duration::from_secs(5))
            .is_some_and(|s| s.success()),
        "{}",
        phone.traces()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn incoming_call_banner_answer_audio_and_far_end_hangup() {
    let kam = Kamailio::start(KamailioOptions::default());
    let gw = Gateway::start(&kam.uri(), &[]);
    let mut b = Browser::start(440.0);
    register_in_page(&mut b, &gw);

    let tone = tone_ulaw();
    let kam_addr = format!("127.0.0.1:{}", kam.port());
    let mut caller = Sipp::start_with_files(
        "uac_stream.xml",
        None,
        &["-s", "5001", &kam_addr],
        &[("tone.ulaw", &tone)],
    );
    b.wait_visible("#incoming-banner", T);
    b.click("#answer-btn");
    b.wait_text("#calls li .call-state", "answered", T);
    std::thread::sleep(Duration::from_millis(1500));
    let f = remote_frequency(&mut b);
    assert!((980.0..=1020.0).contains(&f), "the page hears {f} Hz");
    // The caller hangs up after 4 s of media.
    b.wait_gone("#calls li", T);
    let (_, active) = gw.get("/api/calls/active").await;
    assert_eq!(active["calls"], json!([]), "{active}");
    assert!(
        caller
            .wait(Duration::from_secs(5))
            .is_some_and(|s| s.success()),
        "{}",
        caller.traces()
    );
}
