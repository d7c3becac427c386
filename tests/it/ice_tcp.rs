//! ICE-TCP (RFC 6544): Chromium on a host whose UDP toward the gateway is dropped, with no
//! TURN server, still has audio both ways, over a TCP connection to `--ice-tcp-listen`.

use crate::common;

use std::time::Duration;

use common::browser::{remote_frequency, Browser};
use common::kamailio::pick_port;
use common::netns::Netns;
use common::scenes;
use common::sipp::Sipp;
use common::two_homes::{gateway_host, register_at, Family, TwoHomes, ADVERTISED};

const T: Duration = Duration::from_secs(20);

/// What the gateway logs when a call's browser path is an ICE-TCP connection.
const TCP_PATH: &str = "the browser's path is an ICE-TCP connection";

/// UDP datagrams the agent's firewall dropped so far.
fn udp_dropped(agent: &Netns) -> u64 {
    let rules = agent.nft_list();
    let line = rules
        .lines()
        .find(|l| l.contains("udp") && l.contains("drop"))
        .unwrap_or_else(|| panic!("no UDP drop rule:\n{rules}"));
    let mut words = line.split_whitespace();
    words
        .by_ref()
        .find(|w| *w == "packets")
        .and_then(|_| words.next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no counter on {line}"))
}

/// Places a call from the page to `dn` and returns the frequency the page hears.
fn call_and_listen(b: &mut Browser, dn: &str) -> f64 {
    b.fill("#dial-input", dn);
    b.click("#call-btn");
    b.wait_text("#calls li .call-state", "answered", T);
    std::thread::sleep(Duration::from_secs(2));
    remote_frequency(b)
}

fn hang_up(b: &mut Browser, phone: &mut Sipp) {
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

#[test]
fn udp_blocked_without_turn_audio_flows_both_ways_over_ice_tcp() {
    let hosts = TwoHomes::new(Family::V4);
    // The agent's host sends no UDP at all off the machine (a corporate firewall); every drop
    // is counted, to show Chromium did try UDP first.
    hosts.browser.nft(
        "table inet noudp {
           chain out {
             type filter hook output priority 0;
             oifname \"peer0\" meta l4proto udp counter drop
           }
         }",
    );
    let ws = pick_port();
    let ice_tcp = pick_port();
    let page = format!("http://{ADVERTISED}:{ws}");
    let mut b = hosts.browser(&page);
    let udp_dropped_before = udp_dropped(&hosts.browser);
    hosts.gateway.run(move || {
        let listen = format!("0.0.0.0:{ice_tcp}");
        let (kam, gw) = gateway_host(ws, &["--ice-tcp-listen", &listen]);
        let mut tone_phone = scenes::tone_phone(&kam, "1003");
        let mut echo_phone = scenes::phone(&kam, "1004", "uas_answer.xml", &["-rtp_echo"]);
        register_at(&mut b, &page);

        // Far end to browser: the page hears the phone's 1000 Hz.
        let f = call_and_listen(&mut b, "1003");
        assert!(
            (980.0..=1020.0).contains(&f),
            "the page hears {f} Hz, not the far end's 1000 Hz:\n{}",
            gw.log()
        );
        hang_up(&mut b, &mut tone_phone);

        // Browser to far end and back: the echo phone returns the page's 440 Hz.
        let f = call_and_listen(&mut b, "1004");
        assert!(
            (420.0..=460.0).contains(&f),
            "the far end got {f} Hz, not the page's 440 Hz:\n{}",
            gw.log()
        );
        hang_up(&mut b, &mut echo_phone);

        let log = gw.log();
        assert_eq!(
            log.matches(TCP_PATH).count(),
            2,
            "both calls' media went over ICE-TCP:\n{log}"
        );
        assert!(
            log.lines()
                .any(|l| l.contains("ICE-TCP: listening") && l.contains(&format!(":{ice_tcp}"))),
            "{log}"
        );
    });
    // The UDP the browser tried (its checks toward our UDP candidate) never left its host.
    let dropped = udp_dropped(&hosts.browser) - udp_dropped_before;
    assert!(
        dropped > 0,
        "the firewall dropped no UDP: the test did not block what it claims"
    );
}
