//! The agent's network as it really is, with Debian's Chromium on a host of its own (a network
//! namespace) and the demo page's client library: UDP blocked with TURN over TCP from the
//! session's own credentials (coturn), a network change mid-call, a page reload mid-call and a
//! WebSocket dead for 20 s. Each recovery is timed from the disruption to audio flowing into the
//! page again; `RECOVERY_RUNS=N` repeats each disruption N times in one call and prints the
//! median (BENCHMARKS.md's figures come from `RECOVERY_RUNS=5`).

use std::time::{Duration, Instant};

use crate::common::browser::Browser;
use crate::common::coturn::Coturn;
use crate::common::gateway::Gateway;
use crate::common::kamailio::{pick_port, Kamailio};
use crate::common::netns::{self, Netns};
use crate::common::scenes::tone_phone;
use crate::common::sipp::Sipp;
use crate::common::two_homes::gateway_advertising;

const T: Duration = Duration::from_secs(20);
/// The gateway's host, as the agent's host reaches it.
const GATEWAY: &str = "198.18.5.1";
/// The agent's address on its first network ("Wi-Fi").
const AGENT: &str = "198.18.5.2";
/// The gateway's address on the agent's second network ("LTE"), and the agent's.
const GATEWAY_LTE: &str = "198.18.6.1";
const AGENT_LTE: &str = "198.18.6.2";

/// Two hosts: the gateway's (gateway, Kamailio, SIPp, coturn) and the agent's (Chromium),
/// joined by two networks: `eth0` ("Wi-Fi", up) and `eth1` ("LTE", down until the agent
/// moves). Both reach the gateway's advertised address.
struct Lan {
    gateway: Netns,
    agent: Netns,
}

impl Lan {
    fn new() -> Lan {
        let gateway = Netns::fresh("gwlan");
        let agent = Netns::fresh("agentlan");
        gateway.ip(&[
            "link",
            "add",
            "lan0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &agent.name,
        ]);
        gateway.ip(&["addr", "add", &format!("{GATEWAY}/24"), "dev", "lan0"]);
        gateway.ip(&["link", "set", "lan0", "up"]);
        agent.ip(&["addr", "add", &format!("{AGENT}/24"), "dev", "eth0"]);
        agent.ip(&["link", "set", "eth0", "up"]);
        gateway.ip(&[
            "link",
            "add",
            "lan1",
            "type",
            "veth",
            "peer",
            "name",
            "eth1",
            "netns",
            &agent.name,
        ]);
        gateway.ip(&["addr", "add", &format!("{GATEWAY_LTE}/24"), "dev", "lan1"]);
        gateway.ip(&["link", "set", "lan1", "up"]);
        agent.ip(&["addr", "add", &format!("{AGENT_LTE}/24"), "dev", "eth1"]);
        // IPv4 only: a link-local IPv6 address would keep a host without IPv4 "online".
        agent.sysctl("net.ipv6.conf.all.disable_ipv6", "1");
        agent.sysctl("net.ipv6.conf.default.disable_ipv6", "1");
        // A network that went away takes its routes with it at once, as a laptop's does.
        agent.sysctl("net.ipv4.conf.all.ignore_routes_with_linkdown", "1");
        Lan { gateway, agent }
    }

    /// Chromium on the agent's host, allowed its microphone on the gateway's plain-http page.
    fn browser(&self, page: &str) -> Browser {
        Browser::start_on(&self.agent, page)
    }
}

/// Kamailio, a SIPp phone 1003 playing 1000 Hz until BYE, and the gateway (media on every
/// address, advertising `GATEWAY`, WebSocket on `ws`) with `extra` flags, on the current host.
fn gateway_host(ws: u16, extra: &[&str]) -> (Kamailio, Sipp, Gateway) {
    let (kam, gw) = gateway_advertising(GATEWAY, ws, extra);
    let phone = tone_phone(&kam, "1003");
    (kam, phone, gw)
}

/// The page registers 5001 and calls 1003; returns once the call is answered and the tone
/// is heard.
fn call_the_tone_phone(b: &mut Browser, page: &str, gw: &Gateway) {
    b.goto(&format!("{page}/"));
    b.fill("#dn", "5001");
    b.fill("#password", "pass5001");
    b.click("#register-btn");
    b.wait_text("#reg-state", "registered", T);
    b.fill("#dial-input", "1003");
    b.click("#call-btn");
    b.wait_text("#calls li .call-state", "answered", T);
    let back = audio_flowing(b, T);
    assert!(back.is_some(), "no audio reached the page:\n{}", gw.log());
    assert_hears_the_tone(b, gw);
}

/// Waits until RTP flows into the page's call again (packets received keep growing for
/// 300 ms), however the page got there (same or new RTCPeerConnection, same or reloaded page);
/// how long after this call the flow started (the beginning of those 300 ms), or `None` after
/// `timeout`.
fn audio_flowing(b: &mut Browser, timeout: Duration) -> Option<Duration> {
    let started = Instant::now();
    let js = format!(
        "(async () => {{
           const began = performance.now(), until = began + {ms};
           const received = async () => {{
             const client = window.gatewayDemo && window.gatewayDemo.client;
             let n = 0;
             for (const call of (client ? client.calls.values() : [])) {{
               if (!call.pc) continue;
               (await call.pc.getStats()).forEach(r => {{
                 if (r.type === 'inbound-rtp' && r.kind === 'audio') n += r.packetsReceived;
               }});
             }}
             return n;
           }};
           let last = await received(), growing = 0, since = 0, at = performance.now();
           while (performance.now() < until) {{
             await new Promise(r => setTimeout(r, 100));
             const now = await received();
             if (now >= last + 3) {{
               if (growing === 0) since = at;
               growing++;
             }} else {{
               growing = 0;
             }}
             last = now;
             at = performance.now();
             if (growing >= 3) return since - began;
           }}
           return -1;
         }})()",
        ms = timeout.as_millis()
    );
    // A reload under way has no page to evaluate in yet: try again.
    while started.elapsed() < timeout {
        let asked = started.elapsed();
        match b.cmd(serde_json::json!({"op": "eval", "js": js})) {
            Ok(v) => {
                let ms = v.as_f64().filter(|ms| *ms >= 0.0)?;
                return Some(asked + Duration::from_secs_f64(ms / 1000.0));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    None
}

/// The demo page's event log, for failure messages.
fn page_log(b: &mut Browser) -> String {
    b.cmd(serde_json::json!({"op": "eval", "js":
        "[...document.querySelectorAll('#event-log li')].map(l => l.textContent).join('\\n')"}))
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .unwrap_or_else(|e| e)
}

/// The page hears the far end's 1000 Hz.
fn assert_hears_the_tone(b: &mut Browser, gw: &Gateway) {
    let f = b
        .eval("window.gatewayDemo.remoteFrequency(1000)")
        .as_f64()
        .expect("a frequency");
    assert!(
        (980.0..=1020.0).contains(&f),
        "the page hears {f} Hz, not the far end's 1000 Hz:\n{}",
        gw.log()
    );
}

/// The call id the page shows (the demo's `data-call-id`), to check it survives.
fn page_call_id(b: &mut Browser) -> String {
    b.eval("[...window.gatewayDemo.client.calls.keys()][0] || ''")
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn runs() -> usize {
    std::env::var("RECOVERY_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .clamp(1, 20)
}

/// Prints the measured times and their median, for BENCHMARKS.md.
fn report(what: &str, times: &mut [Duration]) -> Duration {
    times.sort();
    let median = times[times.len() / 2];
    eprintln!(
        "RECOVERY {what}: median {} ms over {} runs ({:?})",
        median.as_millis(),
        times.len(),
        times.iter().map(Duration::as_millis).collect::<Vec<_>>()
    );
    median
}

/// Runs `disrupt` (given the run's number) `RECOVERY_RUNS` times, each timed from its start
/// to audio flowing into the page again; the median, after printing them all.
fn time_recoveries(
    b: &mut Browser,
    gw: &Gateway,
    what: &str,
    mut disrupt: impl FnMut(usize, &mut Browser),
) -> Duration {
    let mut times = Vec::new();
    for run in 0..runs() {
        let started = Instant::now();
        disrupt(run, b);
        let measuring = started.elapsed();
        let back = audio_flowing(b, Duration::from_secs(15));
        assert!(
            back.is_some(),
            "no audio after the {what}:\n{}\npage: {}",
            gw.log(),
            page_log(b)
        );
        times.push(measuring + back.unwrap_or_default());
    }
    if std::env::var("RECOVERY_DEBUG").is_ok() {
        eprintln!("PAGE LOG\n{}", page_log(b));
    }
    report(what, &mut times)
}

/// The far end heard no re-INVITE and took the BYE: SIPp's scenario (INVITE, ACK, BYE) ends
/// clean only if nothing else came.
fn hang_up_clean(b: &mut Browser, phone: &mut Sipp, gw: &Gateway) {
    b.click("#calls li .hangup-btn");
    b.wait_gone("#calls li", T);
    assert!(
        phone
            .wait(Duration::from_secs(5))
            .is_some_and(|s| s.success()),
        "the far end saw more than INVITE/ACK/BYE, or no BYE:\n{}\n{}",
        phone.traces(),
        gw.log()
    );
}

/// UDP blocked on the agent's host and no ICE-TCP: the page reaches the gateway only through
/// coturn over TCP, with the short-lived credentials its session's `hello` carried.
#[test]
fn udp_blocked_the_call_goes_through_turn_over_tcp_with_the_sessions_credentials() {
    let lan = Lan::new();
    lan.agent.nft(
        "table inet strict {
           chain out {
             type filter hook output priority 0;
             oif lo accept
             meta l4proto udp counter drop
           }
         }",
    );
    let ws = pick_port();
    let page = format!("http://{GATEWAY}:{ws}");
    let mut b = lan.browser(&page);
    let agent = lan.agent.name.clone();
    lan.gateway.run(move || {
        const SECRET: &str = "agents-behind-strict-nat";
        let turn_port = pick_port();
        let coturn = Coturn::start(GATEWAY, turn_port, SECRET);
        let urls = format!("turn:{GATEWAY}:{turn_port}?transport=tcp");
        let (_kam, mut phone, gw) = gateway_host(
            ws,
            &[
                "--turn-secret",
                SECRET,
                "--turn-urls",
                &urls,
                "--turn-ttl",
                "300",
            ],
        );
        call_the_tone_phone(&mut b, &page, &gw);
        // The relay carried it: coturn allocated with this session's own username.
        let username = b
            .eval("window.gatewayDemo.client.iceServers.find(s => s.username).username")
            .as_str()
            .expect("a TURN username in hello")
            .to_string();
        let log = coturn.log();
        assert!(
            log.contains(&format!(
                "user <{username}>: incoming packet ALLOCATE processed, success"
            )),
            "coturn made no allocation for {username}:\n{log}"
        );
        let (_, active) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(gw.get("/api/calls/active"));
        assert!(
            active["calls"][0]["media"]["packetsOut"].as_u64() > Some(50),
            "{active}"
        );
        let drops = std::process::Command::new("ip")
            .args([
                "netns", "exec", &agent, "nft", "list", "table", "inet", "strict",
            ])
            .output()
            .expect("nft");
        let listing = String::from_utf8_lossy(&drops.stdout).to_string();
        assert!(
            !listing.contains("packets 0 bytes 0"),
            "the browser's UDP was never dropped, so this proves nothing:\n{listing}"
        );
        assert!(!gw.log().contains(SECRET), "the TURN secret is in the log");
        hang_up_clean(&mut b, &mut phone, &gw);
    });
}

/// The agent's laptop moves to another network mid-call (its address goes, another comes:
/// Wi-Fi to LTE). The client library reconnects its WebSocket on `online`, resumes, and
/// restarts ICE through `renegotiate`; audio is back within 3 s, the call keeps its id and
/// the far end sees no re-INVITE.
#[test]
fn a_network_change_mid_call_brings_the_audio_back_within_3_s() {
    let lan = Lan::new();
    let ws = pick_port();
    let page = format!("http://{GATEWAY}:{ws}");
    let mut b = lan.browser(&page);
    let agent = lan.agent.name.clone();
    lan.gateway.run(move || {
        let (_kam, mut phone, gw) = gateway_host(ws, &["--grace-period", "30"]);
        call_the_tone_phone(&mut b, &page, &gw);
        let call_id = page_call_id(&mut b);
        let median = time_recoveries(&mut b, &gw, "network change", |run, _| {
            // Wi-Fi goes, LTE comes (and back on the next run): the old path and the
            // WebSocket's connection are dead from here on.
            let (old, new) = if run % 2 == 0 {
                ("eth0", "eth1")
            } else {
                ("eth1", "eth0")
            };
            netns::ip(&["-n", &agent, "link", "set", old, "down"]);
            std::thread::sleep(Duration::from_millis(200));
            // The new network comes with its route to the gateway, in one go (as DHCP gives
            // both before the interface counts as up).
            let mut up = format!("link set {new} up\n");
            if new == "eth1" {
                up += &format!("route add {GATEWAY}/32 via {GATEWAY_LTE} dev eth1\n");
            }
            netns::ip_batch(&agent, &up);
            std::thread::sleep(Duration::from_millis(300));
        });
        assert!(
            median <= Duration::from_secs(3),
            "audio came back after {median:?}:\n{}",
            gw.log()
        );
        assert_hears_the_tone(&mut b, &gw);
        assert_eq!(page_call_id(&mut b), call_id, "the call kept its id");
        assert!(
            gw.log().contains("browser renegotiated: an ICE restart"),
            "{}",
            gw.log()
        );
        hang_up_clean(&mut b, &mut phone, &gw);
    });
}

/// A reload mid-call: the page resumes its session from `sessionStorage` and re-attaches the
/// call with a fresh RTCPeerConnection (a new DTLS handshake); audio is back within 5 s with
/// the same call id, and the far end sees nothing.
#[test]
fn a_page_reload_mid_call_brings_the_audio_back_within_5_s() {
    let lan = Lan::new();
    let ws = pick_port();
    let page = format!("http://{GATEWAY}:{ws}");
    let mut b = lan.browser(&page);
    lan.gateway.run(move || {
        let (_kam, mut phone, gw) = gateway_host(ws, &["--grace-period", "30"]);
        call_the_tone_phone(&mut b, &page, &gw);
        let call_id = page_call_id(&mut b);
        let median = time_recoveries(&mut b, &gw, "page reload", |_, b| {
            b.goto(&format!("{page}/"));
        });
        assert!(
            median <= Duration::from_secs(5),
            "audio came back after {median:?}:\n{}",
            gw.log()
        );
        assert_hears_the_tone(&mut b, &gw);
        assert_eq!(page_call_id(&mut b), call_id, "the call kept its id");
        b.wait_text("#reg-state", "registered", T);
        assert!(
            gw.log()
                .contains("browser renegotiated: a new peer connection"),
            "{}",
            gw.log()
        );
        hang_up_clean(&mut b, &mut phone, &gw);
    });
}

/// The WebSocket goes dead for 20 s (a proxy or firewall drops it; media takes another
/// path): the audio never stops, and the session resumes when signalling is back.
#[test]
fn a_websocket_dead_for_20_s_never_stops_the_audio() {
    let lan = Lan::new();
    let ws = pick_port();
    let page = format!("http://{GATEWAY}:{ws}");
    let mut b = lan.browser(&page);
    let agent = lan.agent.name.clone();
    lan.gateway.run(move || {
        let (_kam, mut phone, gw) = gateway_host(ws, &["--grace-period", "30"]);
        call_the_tone_phone(&mut b, &page, &gw);
        let call_id = page_call_id(&mut b);
        let resumes = |gw: &Gateway| {
            gw.log()
                .matches("connection resumes another session")
                .count()
        };
        let mut gaps = 0;
        let mut times = Vec::new();
        for _ in 0..runs() {
            let resumed_before = resumes(&gw);
            netns::nft_in(
                &agent,
                &format!(
                    "table inet wsdown {{
                       chain out {{
                         type filter hook output priority 0;
                         tcp dport {ws} counter drop
                       }}
                     }}"
                ),
            );
            // Every second of the 20: audio keeps flowing into the page.
            let blocked = Instant::now();
            while blocked.elapsed() < Duration::from_secs(20) {
                if audio_flowing(&mut b, Duration::from_millis(1000)).is_none() {
                    gaps += 1;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            assert!(
                gw.log().contains("browser gone; keeping the session"),
                "the dead socket was noticed:\n{}",
                gw.log()
            );
            netns::nft_in(&agent, "delete table inet wsdown");
            // Signalling comes back: the page's client resumes its session on a new socket.
            let back = Instant::now();
            while resumes(&gw) == resumed_before {
                assert!(
                    back.elapsed() < Duration::from_secs(40),
                    "the page never resumed its session:\n{}\npage: {}",
                    gw.log(),
                    page_log(&mut b)
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            times.push(back.elapsed());
        }
        assert_eq!(
            gaps,
            0,
            "audio stopped while the WebSocket was dead:\n{}",
            gw.log()
        );
        report("WebSocket dead 20 s, back to resumed", &mut times);
        b.wait_text("#reg-state", "registered", T);
        assert_hears_the_tone(&mut b, &gw);
        assert_eq!(page_call_id(&mut b), call_id);
        hang_up_clean(&mut b, &mut phone, &gw);
    });
}
