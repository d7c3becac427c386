//! Strict media latching on the SIP leg (issue 16, "RTP bleed"): a stranger who sends RTP
//! and RTCP to the call's ports, before the far end does or across the whole port range,
//! neither hears the agent nor is heard; a far end behind NAT (its SDP names an address it
//! does not send from) is still learned; after a REFER the transferor, which goes on sending,
//! is dropped and the target gets the agent's audio.

use crate::common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::client::Client;
use common::far_end::FarEnd;
use common::gateway::Gateway;
use common::kamailio::{pick_port, Kamailio, KamailioOptions};
use common::peer::{decode_g711, encode_g711, parse_numbered, Peer, ToneGenerator};
use common::scenes::{agent_calls, agent_hangs_up, phone_1003};
use common::sipp::{self, Sipp};
use media::relay::header;

/// What an attacker's RTP payload is made of: a byte no tone of the far ends produces for a
/// whole packet, so the agent's packets tell whether it was heard.
const EVIL_BYTE: u8 = 0x42;

/// `count` consecutive free UDP ports on 127.0.0.1 starting at an even one, for a gateway's
/// `--rtp-ports` (a small range makes the attacker's spray quick and bounded).
fn free_range(count: u16) -> (u16, u16) {
    for _ in 0..200 {
        let low = pick_port() & !1;
        if u32::from(low) + u32::from(count) > 65535 {
            continue;
        }
        let held: Vec<_> = (low..low + count)
            .map_while(|p| UdpSocket::bind(("127.0.0.1", p)).ok())
            .collect();
        if held.len() == usize::from(count) {
            return (low, low + count - 1);
        }
    }
    panic!("no {count} free consecutive UDP ports");
}

/// An off-path sender: valid RTP (one SSRC, sequence numbers in order per target, 20 ms of
/// PCMU every 10 ms) to each target's RTP port and an RTCP receiver report to the port above
/// now and then, from a new source port every `rotate` (several attackers, as a spray would
/// be). Counts every datagram the gateway sends to any of its sockets.
struct Attacker {
    received: Arc<AtomicUsize>,
    sources: Arc<Mutex<Vec<SocketAddr>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Attacker {
    fn start(targets: Vec<SocketAddr>, rotate: Option<Duration>) -> Attacker {
        let received = Arc::new(AtomicUsize::new(0));
        let sources = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (received, sources, stop) = (received.clone(), sources.clone(), stop.clone());
            std::thread::spawn(move || attack(targets, rotate, received, sources, stop))
        };
        Attacker {
            received,
            sources,
            stop,
            thread: Some(thread),
        }
    }

    fn received(&self) -> usize {
        self.received.load(Ordering::Relaxed)
    }

    fn sources(&self) -> usize {
        self.sources.lock().unwrap().len()
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn new_source(sources: &Mutex<Vec<SocketAddr>>) -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").expect("attacker socket");
    s.set_nonblocking(true).expect("non-blocking");
    sources
        .lock()
        .unwrap()
        .push(s.local_addr().expect("address"));
    s
}

fn attack(
    targets: Vec<SocketAddr>,
    rotate: Option<Duration>,
    received: Arc<AtomicUsize>,
    sources: Arc<Mutex<Vec<SocketAddr>>>,
    stop: Arc<AtomicBool>,
) {
    let mut sockets = vec![new_source(&sources)];
    let mut rotated = Instant::now();
    let mut seq = vec![100u16; targets.len()];
    let mut buf = [0u8; 1500];
    let mut round = 0u32;
    while !stop.load(Ordering::Relaxed) {
        if rotate.is_some_and(|r| rotated.elapsed() >= r) {
            sockets.push(new_source(&sources));
            rotated = Instant::now();
        }
        let Some(socket) = sockets.last() else { break };
        for (i, to) in targets.iter().enumerate() {
            let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            header::set_seq(&mut p, seq[i]);
            header::set_ts(&mut p, u32::from(seq[i]) * 160);
            header::set_ssrc(&mut p, 0x0e71_0e71);
            p.extend_from_slice(&[EVIL_BYTE; 160]);
            seq[i] = seq[i].wrapping_add(1);
            let _ = socket.send_to(&p, to);
            if round.is_multiple_of(10) {
                let mut rr = vec![0x80, 201, 0, 1];
                rr.extend_from_slice(&0x0e71_0e71u32.to_be_bytes());
                let _ = socket.send_to(&rr, SocketAddr::new(to.ip(), to.port() + 1));
            }
        }
        round += 1;
        for s in &sockets {
            while let Ok((n, _)) = s.recv_from(&mut buf) {
                if n > 0 {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The numbered packets (counters) a far end received.
fn counters(far: &FarEnd) -> Vec<u64> {
    far.packets()
        .iter()
        .filter_map(|p| parse_numbered(&p.payload).map(|(c, _)| c))
        .collect()
}

/// How many packets the agent got that carry the attacker's payload.
fn evil_heard(peer: &Peer) -> usize {
    peer.received()
        .iter()
        .filter(|p| p.payload.len() >= 160 && p.payload.iter().all(|b| *b == EVIL_BYTE))
        .count()
}

/// The gateway's `rtp_packets_rejected` metric.
async fn rejected_metric(gw: &Gateway) -> u64 {
    let text = reqwest::get(format!("{}/metrics", gw.api_url()))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find(|l| l.contains("rtp_packets_rejected") && !l.starts_with('#'))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// An agent's call to a far end (the test's `FarEnd`, signalled by SIPp as 1003) while
/// `attacker` sends to the gateway; the agent then talks for 3 s. The attacker must receive
/// nothing, the far end every packet, and the agent hear only the far end.
async fn call_under_attack(
    kam: &Kamailio,
    gw: &Gateway,
    start_attack: impl FnOnce() -> Attacker,
    attack_before_the_call: bool,
) {
    let far = FarEnd::start();
    let rtpport = far.port.to_string();
    let mut phone = phone_1003(kam, "uas_pcmu_rtpport.xml", &["-set", "rtpport", &rtpport]);
    let mut start_attack = Some(start_attack);
    let early = if attack_before_the_call {
        start_attack.take().map(|start| start())
    } else {
        None
    };
    let (mut c, peer, call_id) = agent_calls(gw, "5001", "1003").await;
    // Answered, and the far end (which waits for the gateway's media, as symmetric RTP far
    // ends may) has sent nothing yet: the moment the old latch was up for grabs. The agent
    // waits long enough for the attacker to send from a source it has not used yet.
    let attacker = match (early, start_attack) {
        (Some(a), _) => a,
        (None, Some(start)) => start(),
        (None, None) => unreachable!("one of the two starts the attack"),
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = 150u32;
    peer.send_numbered(sent, 160);
    tokio::time::sleep(Duration::from_millis(3500)).await;

    let got = counters(&far);
    assert_eq!(
        attacker.received(),
        0,
        "the attacker ({} sources) got the agent's media; the far end got {} of {sent}\n{}",
        attacker.sources(),
        got.len(),
        gw.log()
    );
    assert!(
        got.len() as u32 * 100 >= sent * 95,
        "the far end got {} of {sent} packets\n{}",
        got.len(),
        gw.log()
    );
    assert_eq!(evil_heard(&peer), 0, "the agent heard the attacker");
    let pcm = peer.received_pcm();
    assert!(pcm.len() >= 8000, "the agent heard {} samples", pcm.len());
    let f = common::peer::dominant_frequency(&pcm[pcm.len() - 8000..], 8000);
    assert!(
        (980.0..=1020.0).contains(&f),
        "the agent hears {f} Hz, not the far end"
    );
    assert!(
        rejected_metric(gw).await > 0,
        "the attacker's packets are counted as rejected"
    );
    drop(attacker);
    agent_hangs_up(&mut c, &mut phone, &call_id).await;
    peer.close().await;
}

/// An off-path sender on 127.0.0.1 sends RTP (and RTCP to the port above) to the call's RTP
/// port once the call is answered, before the far end has sent anything. The gateway has
/// one media worker and two port pairs: the worker's browser port takes the first, the
/// call's RTP the second, so the port is known.
#[tokio::test(flavor = "multi_thread")]
async fn an_off_path_sender_before_the_far_end_gets_nothing() {
    let kam = Kamailio::start(KamailioOptions::default());
    let (low, high) = free_range(4);
    let range = format!("{low}-{high}");
    let gw = Gateway::start(&kam.uri(), &["--rtp-ports", &range, "--media-workers", "1"]);
    let target: SocketAddr = ([127, 0, 0, 1], low + 2).into();
    call_under_attack(&kam, &gw, || Attacker::start(vec![target], None), false).await;
}

/// An attacker sprays every even port of the gateway's 20-port range with RTP (and the odd
/// ones with RTCP) from before the call is placed until after it, from a new source port
/// every 200 ms.
#[tokio::test(flavor = "multi_thread")]
async fn a_spray_across_the_port_range_gets_nothing() {
    let kam = Kamailio::start(KamailioOptions::default());
    let (low, high) = free_range(20);
    let range = format!("{low}-{high}");
    let gw = Gateway::start(&kam.uri(), &["--rtp-ports", &range]);
    let targets: Vec<SocketAddr> = (low..high)
        .step_by(2)
        .map(|p| ([127, 0, 0, 1], p).into())
        .collect();
    let spray = move || Attacker::start(targets, Some(Duration::from_millis(200)));
    call_under_attack(&kam, &gw, spray, true).await;
}

/// A far end behind NAT: its SDP names 127.0.0.1:P (a socket that only swallows), and it
/// sends its 1000 Hz from another port, as soon as it knows where the gateway is. After
/// about a second and a probation run the gateway sends there: audio both ways.
#[tokio::test(flavor = "multi_thread")]
async fn a_far_end_behind_nat_is_learned_and_audio_flows_both_ways() {
    let kam = Kamailio::start(KamailioOptions::default());
    let sink = UdpSocket::bind("127.0.0.1:0").expect("signalled port");
    sink.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let signalled = sink.local_addr().expect("address").port().to_string();
    let mut phone = phone_1003(
        &kam,
        "uas_pcmu_rtpport.xml",
        &["-set", "rtpport", &signalled],
    );
    let gw = Gateway::start(&kam.uri(), &[]);
    let (mut c, peer, call_id) = agent_calls(&gw, "5001", "1003").await;
    let sent = 250u32;
    peer.send_numbered(sent, 160);

    // Where the gateway sends from is its RTP port (the far end knows it from our SDP).
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 1500];
    let gateway = loop {
        assert!(Instant::now() < deadline, "nothing at the signalled port");
        if let Ok((_, from)) = sink.recv_from(&mut buf) {
            break from;
        }
    };
    let nat = UdpSocket::bind("127.0.0.1:0").expect("NAT source");
    nat.set_read_timeout(Some(Duration::from_millis(2)))
        .expect("timeout");
    let stop = Arc::new(AtomicBool::new(false));
    let got = Arc::new(Mutex::new(Vec::new()));
    let sender = {
        let (stop, got) = (stop.clone(), got.clone());
        std::thread::spawn(move || {
            let mut tone = ToneGenerator::new(1000.0, 8000, 0.5);
            let mut next = Instant::now();
            let mut seq = 7000u16;
            let mut buf = [0u8; 1500];
            while !stop.load(Ordering::Relaxed) {
                if let Ok(n) = nat.recv(&mut buf) {
                    if let Some((counter, _)) = parse_numbered(&buf[header::LEN..n]) {
                        got.lock().unwrap().push(counter);
                    }
                }
                if Instant::now() < next {
                    continue;
                }
                next += Duration::from_millis(20);
                let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                header::set_seq(&mut p, seq);
                header::set_ts(&mut p, u32::from(seq) * 160);
                header::set_ssrc(&mut p, 0x4a7_4a7);
                seq = seq.wrapping_add(1);
                p.extend_from_slice(&encode_g711(&tone.next_samples(160), true));
                let _ = nat.send_to(&p, gateway);
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(4000)).await;
    stop.store(true, Ordering::Relaxed);
    let _ = sender.join();

    let got = got.lock().unwrap().clone();
    // Learned about LEARN_AFTER (1 s) and a probation run after the gateway's first packet
    // to the signalled port: from then on the agent's packets came to the NAT source, and
    // none to the signalled port.
    assert!(
        got.len() >= 100 && got.iter().max().is_some_and(|m| *m >= 150),
        "the far end behind NAT got {} of {sent} packets (last {:?})\n{}",
        got.len(),
        got.iter().max(),
        gw.log()
    );
    sink.set_nonblocking(true).expect("non-blocking");
    let mut at_signalled = 1;
    while sink.recv_from(&mut buf).is_ok() {
        at_signalled += 1;
    }
    assert!(
        at_signalled <= 80,
        "{at_signalled} packets went to the signalled port"
    );
    let pcm = peer.received_pcm();
    assert!(
        pcm.len() >= 8000 * 2,
        "the agent heard {} samples from the far end behind NAT\n{}",
        pcm.len(),
        gw.log()
    );
    let f = common::peer::dominant_frequency(&pcm[pcm.len() - 8000..], 8000);
    assert!((980.0..=1020.0).contains(&f), "the agent hears {f} Hz");
    agent_hangs_up(&mut c, &mut phone, &call_id).await;
    peer.close().await;
}

/// `transferState` events of `call_id` until `succeeded` (or a failure, which fails the test).
async fn wait_transferred(c: &mut Client, call_id: &str, gw: &Gateway) {
    loop {
        let ev = c.event("transferState", Duration::from_secs(20)).await;
        assert_eq!(ev["payload"]["callId"], call_id, "{ev}");
        match ev["payload"]["state"].as_str() {
            Some("succeeded") => return,
            Some("failed") => panic!("transfer failed: {ev}\n{}", gw.log()),
            _ => {}
        }
    }
}

/// Goertzel power of `freq` in `samples` at 8 kHz.
fn power(samples: &[i16], freq: f64) -> f64 {
    let k = 2.0 * (2.0 * std::f64::consts::PI * freq / 8000.0).cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &x in samples {
        let s = f64::from(x) + k * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    s1 * s1 + s2 * s2 - k * s1 * s2
}

/// A REFER from the far end while the transferor's phone goes on sending RTP to the end:
/// once the target answered, the target gets every packet of the agent's and the transferor
/// none, and the agent hears only the target (600 Hz, the transferor plays 1000 Hz). Three
/// rounds, each a new call on the same gateway, to catch a race.
#[tokio::test(flavor = "multi_thread")]
async fn after_a_refer_only_the_target_hears_and_is_heard() {
    const ROUNDS: usize = 3;
    let kam = Kamailio::start(KamailioOptions::default());
    let (transferor_port, target_port) = (pick_port(), pick_port());
    assert!(sipp::register(
        kam.port(),
        transferor_port,
        "1003",
        "pass1003"
    ));
    assert!(sipp::register(kam.port(), target_port, "5002", "pass5002"));
    let gw = Gateway::start(&kam.uri(), &[]);
    let mut c = Client::connect(&gw.ws_url()).await;
    c.register("5001", "pass5001").await;
    for round in 0..ROUNDS {
        let old = FarEnd::start_tone(0, 1000.0);
        let new = FarEnd::start_tone(0, 600.0);
        let (old_port, new_port) = (old.port.to_string(), new.port.to_string());
        let mut transferor = Sipp::start(
            "uas_refer_rtpport.xml",
            Some(transferor_port),
            &["-set", "target", "5002", "-set", "rtpport", &old_port],
        );
        let mut target = Sipp::start(
            "uas_pcmu_rtpport.xml",
            Some(target_port),
            &["-set", "rtpport", &new_port],
        );
        let peer = Peer::new(common::scenes::g711_peer()).await;
        let offer = peer.create_offer().await;
        let call_id = common::scenes::start_call(&mut c, &peer, "1003", &offer).await;
        c.event("answered", common::client::WAIT).await;
        assert!(peer.wait_connected(Duration::from_secs(10)).await);
        // The agent talks all along; the transferor's phone answers it and never stops.
        let sent = 600u32;
        peer.send_numbered(sent, 160);
        wait_transferred(&mut c, &call_id, &gw).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        old.clear();
        new.clear();
        let heard_from = peer.received().len();
        let rejected = rejected_metric(&gw).await;
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let dropped = rejected_metric(&gw).await.saturating_sub(rejected);
        let to_old = counters(&old);
        let to_new = counters(&new);
        assert!(
            to_old.is_empty(),
            "round {round}: the transferor got {} of the agent's packets after the switch, the target {}\n{}",
            to_old.len(),
            to_new.len(),
            gw.log()
        );
        assert!(
            to_new.len() >= 110,
            "round {round}: the target got {} packets in 2.5 s\n{}",
            to_new.len(),
            gw.log()
        );
        let after: Vec<_> = peer.received()[heard_from..].to_vec();
        let from_old = after
            .iter()
            .filter(|p| {
                let pcm = decode_g711(&p.payload, true);
                power(&pcm, 1000.0) > power(&pcm, 600.0)
            })
            .count();
        assert!(
            after.len() >= 100,
            "round {round}: the agent got {} packets after the switch",
            after.len()
        );
        assert_eq!(
            from_old,
            0,
            "round {round}: {from_old} of {} packets the agent got after the switch are the transferor's",
            after.len()
        );
        // The transferor's phone went on sending (50 packets a second) and was dropped.
        assert!(
            dropped >= 50,
            "round {round}: only {dropped} of the transferor's packets were dropped"
        );
        let status = transferor.wait(Duration::from_secs(10));
        assert!(
            status.is_some_and(|s| s.success()),
            "round {round}: {status:?}\n{}",
            transferor.traces()
        );
        agent_hangs_up(&mut c, &mut target, &call_id).await;
        peer.close().await;
    }
}
