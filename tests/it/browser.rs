//! The demo agent phone in Debian's headless Chromium, with real (fake-device) audio: the
//! page's own UI against the gateway, a real Kamailio and SIPp phones.

use crate::common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::browser::{remote_frequency, Browser};
use common::gateway::Gateway;
use common::kamailio::{pick_port, Kamailio, KamailioOptions};
use common::scenes::{self, tone_ulaw};
use common::sipp::{self, Sipp};
use common::two_homes::{
    gateway_host, register_at, Family, TwoHomes, ADVERTISED, ADVERTISED_V6, LAN_V6,
};
use serde_json::json;

const T: Duration = Duration::from_secs(20);

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

/// Click-to-dial from a desktop: the page answers the call placed for it by itself, says so,
/// and shows the interaction's CallUUID; the far end's tone is heard.
#[tokio::test(flavor = "multi_thread")]
async fn page_auto_answers_a_click_to_dial_and_shows_the_call_uuid() {
    let kam = Kamailio::start(KamailioOptions::default());
    let port = pick_port();
    assert!(sipp::register(kam.port(), port, "1003", "pass1003"));
    let tone = tone_ulaw();
    let mut phone =
        Sipp::start_with_files("uas_tone.xml", Some(port), &[], &[("tone.ulaw", &tone)]);
    let gw = Gateway::start(&kam.uri(), &[]);
    let mut b = Browser::start(440.0);
    register_in_page(&mut b, &gw);

    let uuid = "UIVB8J6JE91C53UIM3VI59VHQ4000015";
    let resp = reqwest::Client::new()
        .post(format!("{}/api/dn/5001/calls", gw.api_url()))
        .json(&json!({"to": "1003", "headers": {"X-Genesys-CallUUID": uuid}}))
        .send()
        .await
        .expect("REST");
    assert_eq!(resp.status().as_u16(), 201);
    b.wait_text("#calls li .call-state", "answered", T);
    b.wait_text("#calls li .call-dir", "Answered for you (auto-answer)", T);
    b.wait_text("#calls li .call-uuid code", uuid, T);
    std::thread::sleep(Duration::from_secs(2));
    let f = remote_frequency(&mut b);
    assert!((980.0..=1020.0).contains(&f), "the page hears {f} Hz");
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

/// The README's multi-homed failure: Chromium on another host reaches the gateway's advertised
/// address, the gateway's route back leaves by its other interface, and every media reply
/// (STUN, DTLS, SRTP) must still come from the advertised address, or the browser drops them.
#[test]
fn a_multi_homed_gateway_answers_from_the_address_the_browser_reached() {
    let hosts = TwoHomes::new(Family::V4);
    let ws = pick_port();
    let page = format!("http://{ADVERTISED}:{ws}");
    let mut b = hosts.browser(&page);
    hosts.gateway.run(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let (kam, gw) = gateway_host(ws, &[]);
        let mut tone_phone = scenes::tone_phone(&kam, "1003");
        let mut echo_phone = scenes::phone(&kam, "1004", "uas_answer.xml", &["-rtp_echo"]);
        register_at(&mut b, &page);

        // Far end to browser: the page hears the phone's 1000 Hz.
        b.fill("#dial-input", "1003");
        b.click("#call-btn");
        b.wait_text("#calls li .call-state", "answered", T);
        std::thread::sleep(Duration::from_secs(2));
        let f = remote_frequency(&mut b);
        assert!(
            (980.0..=1020.0).contains(&f),
            "the page hears {f} Hz, not the far end's 1000 Hz:\n{}",
            gw.log()
        );
        let (_, active) = rt.block_on(gw.get("/api/calls/active"));
        let media = &active["calls"][0]["media"];
        assert!(
            media["packetsIn"].as_u64() > Some(50) && media["packetsOut"].as_u64() > Some(50),
            "{active}"
        );
        b.click("#calls li .hangup-btn");
        b.wait_gone("#calls li", T);
        assert!(
            tone_phone
                .wait(Duration::from_secs(5))
                .is_some_and(|s| s.success()),
            "{}",
            tone_phone.traces()
        );

        // Browser to far end and back: the echo phone returns the page's 440 Hz.
        b.fill("#dial-input", "1004");
        b.click("#call-btn");
        b.wait_text("#calls li .call-state", "answered", T);
        std::thread::sleep(Duration::from_secs(2));
        let f = remote_frequency(&mut b);
        assert!(
            (420.0..=460.0).contains(&f),
            "the far end got {f} Hz, not the page's 440 Hz"
        );
        b.click("#calls li .hangup-btn");
        b.wait_gone("#calls li", T);
        assert!(
            echo_phone
                .wait(Duration::from_secs(5))
                .is_some_and(|s| s.success()),
            "{}",
            echo_phone.traces()
        );
        assert!(
            !gw.log().contains("ICE failed"),
            "no path was given up:\n{}",
            gw.log()
        );
    });
}

/// A browser that never hears our STUN responses (here nftables on the gateway's host rewrites
/// their source, as a host answering from its other address would) nominates anyway and keeps
/// checking; the gateway gives the call up within seconds, with `ice_failed` as the cause and
/// both addresses in its log, instead of a silent call that dies after the DTLS time-out.
#[test]
fn a_browser_that_never_hears_our_answers_gets_ice_failed_fast() {
    let hosts = TwoHomes::new(Family::V4);
    hosts.gateway.nft(&format!(
        "table ip wrongsource {{
           chain out {{
             type filter hook output priority 0;
             ip saddr {ADVERTISED} ip daddr 198.18.2.2 meta l4proto udp ip saddr set 198.18.2.1
           }}
         }}"
    ));
    let ws = pick_port();
    let page = format!("http://{ADVERTISED}:{ws}");
    let mut b = hosts.browser(&page);
    hosts.gateway.run(move || {
        let (kam, gw) = gateway_host(ws, &[]);
        let phone_port = pick_port();
        assert!(sipp::register(kam.port(), phone_port, "1004", "pass1004"));
        let mut phone = Sipp::start("uas_answer.xml", Some(phone_port), &["-rtp_echo"]);
        register_at(&mut b, &page);

        b.fill("#dial-input", "1004");
        let dialled = Instant::now();
        b.click("#call-btn");
        b.wait_visible("#calls li", T);
        b.wait_gone("#calls li", T);
        let took = dialled.elapsed();
        let log = gw.log();
        let line = log
            .lines()
            .find(|l| l.contains("browser ICE failed"))
            .unwrap_or_else(|| panic!("no ICE failure logged:\n{log}"));
        assert!(
            line.contains(ADVERTISED) && line.contains("198.18.2.2"),
            "the log names both ends: {line}"
        );
        assert!(
            took < Duration::from_secs(8),
            "given up after {took:?}; the DTLS time-out alone takes longer"
        );
        let events = b.eval(
            "[...document.querySelectorAll('#event-log li')].map(l => l.textContent).join('\\n')",
        );
        assert!(
            events.as_str().is_some_and(|e| e.contains("ice_failed")),
            "the page's hangup says why: {events}"
        );
        assert!(
            phone
                .wait(Duration::from_secs(5))
                .is_some_and(|s| s.success()),
            "the far end got its BYE: {}",
            phone.traces()
        );
    });
}

/// IPv6: the agent's host has IPv6 only, the gateway listens on `[::]` without `--public-ip`
/// (so it offers every address of its host) and its LAN address takes no media (a firewall
/// rule), so the one pair that can work is the uplink address reached across the LAN, whose
/// replies must leave from it (IPV6_PKTINFO). SIP stays on IPv4 loopback, through the same
/// dual-stack sockets.
#[test]
fn a_multi_homed_gateway_answers_over_ipv6_from_the_address_the_browser_reached() {
    let hosts = TwoHomes::new(Family::V6);
    hosts.gateway.nft(&format!(
        "table ip6 lanmedia {{
           chain in {{
             type filter hook input priority 0;
             ip6 daddr {LAN_V6} meta l4proto udp drop
           }}
         }}"
    ));
    let ws = pick_port();
    let page = format!("http://[{ADVERTISED_V6}]:{ws}");
    let mut b = hosts.browser(&page);
    hosts.gateway.run(move || {
        let kam = Kamailio::start(KamailioOptions::default());
        let ws_listen = format!("[::]:{ws}");
        let sip_listen = format!("[::]:{}", pick_port());
        let gw = Gateway::start(
            &kam.uri(),
            &["--ws-listen", &ws_listen, "--sip-listen", &sip_listen],
        );
        assert!(
            gw.log().contains(ADVERTISED_V6) && gw.log().contains(LAN_V6),
            "every address of the host is a candidate:\n{}",
            gw.log()
        );
        let phone_port = pick_port();
        assert!(sipp::register(kam.port(), phone_port, "1004", "pass1004"));
        let mut phone = Sipp::start("uas_answer.xml", Some(phone_port), &["-rtp_echo"]);
        register_at(&mut b, &page);

        // Browser to far end and back: the echo phone returns the page's 440 Hz.
        b.fill("#dial-input", "1004");
        b.click("#call-btn");
        b.wait_text("#calls li .call-state", "answered", T);
        std::thread::sleep(Duration::from_secs(2));
        let f = remote_frequency(&mut b);
        assert!(
            (420.0..=460.0).contains(&f),
            "the page hears {f} Hz, not its own 440 Hz back:\n{}",
            gw.log()
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
    });
}
