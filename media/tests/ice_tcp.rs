//! ICE-TCP through the real media plane, without a browser: a TCP client on 127.0.0.1 plays
//! the browser's side of RFC 6544/4571 against the engine's listener and workers.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use media::engine::{MediaConfig, MediaEngine, Outbound};
use rtc_stun::attributes::{
    AttrType, RawAttribute, ATTR_ICE_CONTROLLING, ATTR_PRIORITY, ATTR_USERNAME, ATTR_USE_CANDIDATE,
};
use rtc_stun::crypto::providers::RingCrypto;
use rtc_stun::fingerprint::FINGERPRINT;
use rtc_stun::integrity::MessageIntegrity;
use rtc_stun::message::{Getter, Message, Setter, TransactionId, BINDING_REQUEST, BINDING_SUCCESS};
use rtc_stun::textattrs::Username;
use rtc_stun::xoraddr::XorMappedAddress;

static CRYPTO: RingCrypto = RingCrypto;
const CHROME: &str = include_str!("../../fixtures/sdp/chrome-offer.sdp");
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const READ: Duration = Duration::from_secs(3);

/// An engine with `workers` workers and ICE-TCP on a free loopback port.
fn engine(workers: usize, rtp_ports: (u16, u16)) -> Arc<MediaEngine> {
    MediaEngine::start(MediaConfig {
        bind_ip: LOCALHOST,
        sip_ip: LOCALHOST,
        browser_ips: vec![LOCALHOST],
        rtp_ports,
        workers,
        media_timeout: Duration::from_secs(30),
        restart_grace: Duration::from_secs(30),
        ice_tcp_listen: Some(SocketAddr::new(LOCALHOST, 0)),
    })
    .expect("engine")
}

/// What the browser needs from our answer: our ufrag and password, and the TCP candidate's
/// port.
struct Answer {
    ufrag: String,
    pwd: String,
    tcp_port: u16,
}

fn read_answer(call: &Outbound) -> Answer {
    let d = media::sdp::parse_webrtc(&call.browser_answer).expect("our answer parses");
    let tcp: Vec<&String> = d
        .candidates
        .iter()
        .filter(|c| c.contains(" tcp "))
        .collect();
    assert_eq!(tcp.len(), 1, "{:?}", d.candidates);
    let fields: Vec<&str> = tcp[0].split_whitespace().collect();
    assert_eq!(fields[4], "127.0.0.1");
    assert!(tcp[0].ends_with("typ host tcptype passive"), "{}", tcp[0]);
    Answer {
        ufrag: d.ice_ufrag,
        pwd: d.ice_pwd,
        tcp_port: fields[5].parse().expect("port"),
    }
}

fn raw(typ: AttrType, value: &[u8]) -> RawAttribute {
    RawAttribute {
        typ,
        length: 0,
        value: value.to_vec(),
    }
}

/// The browser's nominating check for `a`, and its transaction id.
fn check(a: &Answer) -> (Vec<u8>, TransactionId) {
    let browser_ufrag = media::sdp::parse_webrtc(CHROME).expect("fixture").ice_ufrag;
    let mut m = Message::new();
    m.build(&[Box::new(BINDING_REQUEST), Box::new(TransactionId::new())])
        .expect("build");
    Username::new(ATTR_USERNAME, format!("{}:{browser_ufrag}", a.ufrag))
        .add_to(&mut m)
        .expect("username");
    raw(ATTR_ICE_CONTROLLING, &7u64.to_be_bytes())
        .add_to(&mut m)
        .expect("controlling");
    raw(ATTR_PRIORITY, &0x6e7f_1eff_u32.to_be_bytes())
        .add_to(&mut m)
        .expect("priority");
    raw(ATTR_USE_CANDIDATE, &[])
        .add_to(&mut m)
        .expect("nominate");
    MessageIntegrity::new_short_term_integrity_with_provider(a.pwd.clone(), &CRYPTO)
        .add_to(&mut m)
        .expect("integrity");
    FINGERPRINT.add_to(&mut m).expect("fingerprint");
    (m.raw.clone(), m.transaction_id)
}

fn framed(packet: &[u8]) -> Vec<u8> {
    let mut out = (packet.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(packet);
    out
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect((LOCALHOST, port)).expect("connect");
    s.set_read_timeout(Some(READ)).expect("timeout");
    s
}

fn read_frame(s: &mut TcpStream) -> Vec<u8> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).expect("a frame's length");
    let mut frame = vec![0; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut frame).expect("a whole frame");
    frame
}

/// Whether the gateway closed `s` (reads end) before a read waited `within` for nothing.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).expect("timeout");
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            // DTLS retransmissions of a call's connection, before it closes.
            Ok(_) => continue,
            Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

/// The check is answered on the same connection, framed, signed with our password, with the
/// connection's address mapped; then our DTLS ClientHello follows on it (we are the DTLS
/// client toward an `actpass` offer). Checked on the second worker: the acceptor routed it.
fn answered_on_tcp(a: &Answer) -> TcpStream {
    let mut s = connect(a.tcp_port);
    let (req, tid) = check(a);
    // Split across writes: the framer takes partial reads.
    let bytes = framed(&req);
    s.write_all(&bytes[..5]).expect("write");
    std::thread::sleep(Duration::from_millis(50));
    s.write_all(&bytes[5..]).expect("write");

    let mut resp = Message::new();
    resp.unmarshal_binary(&read_frame(&mut s))
        .expect("a STUN response");
    assert_eq!(resp.typ, BINDING_SUCCESS);
    assert_eq!(resp.transaction_id, tid);
    MessageIntegrity::check(&mut resp, a.pwd.as_bytes(), &CRYPTO).expect("signed by us");
    FINGERPRINT.check(&resp).expect("fingerprint");
    let mut mapped = XorMappedAddress::default();
    mapped.get_from(&resp).expect("XOR-MAPPED-ADDRESS");
    assert_eq!(
        SocketAddr::new(mapped.ip, mapped.port),
        s.local_addr().expect("local")
    );
    let dtls = read_frame(&mut s);
    assert_eq!(dtls.first(), Some(&22), "a DTLS handshake record follows");
    s
}

#[test]
fn a_framed_check_reaches_its_call_on_the_right_worker_and_is_answered_on_the_connection() {
    let engine = engine(2, (41000, 41099));
    let first = engine.outbound(CHROME).expect("call on worker 0");
    let second = engine.outbound(CHROME).expect("call on worker 1");
    let (a0, a1) = (read_answer(&first), read_answer(&second));
    assert_eq!(media::ice_tcp::worker_of_ufrag(&a0.ufrag, 2), Some(0));
    assert_eq!(media::ice_tcp::worker_of_ufrag(&a1.ufrag, 2), Some(1));
    let _c1 = answered_on_tcp(&a1);
    let mut c0 = answered_on_tcp(&a0);

    // The call ends: its connection is closed, the other call's is not.
    drop(first);
    assert!(closed_within(&mut c0, READ), "the ended call's connection");
    let _again = answered_on_tcp(&a1);
}

#[test]
fn hostile_connections_are_closed_and_leave_calls_alone() {
    let engine = engine(1, (41100, 41199));
    let call = engine.outbound(CHROME).expect("call");
    let a = read_answer(&call);
    let mut good = answered_on_tcp(&a);

    let bad: [(&str, Vec<u8>); 6] = [
        ("not STUN", framed(b"GET / HTTP/1.1\r\n\r\n")),
        ("frame above the MTU", vec![0x05, 0xdd]),
        ("zero-length frame", vec![0, 0]),
        ("someone else's ufrag", {
            let other = Answer {
                ufrag: media::ice_tcp::ufrag_for_worker(0, "nobodys1"),
                pwd: a.pwd.clone(),
                tcp_port: a.tcp_port,
            };
            framed(&check(&other).0)
        }),
        ("our ufrag with a wrong password", {
            let other = Answer {
                ufrag: a.ufrag.clone(),
                pwd: "notOurPasswordNotOurPass".into(),
                tcp_port: a.tcp_port,
            };
            framed(&check(&other).0)
        }),
        ("a check for another worker", {
            let other = Answer {
                ufrag: media::ice_tcp::ufrag_for_worker(5, "nobodys1"),
                pwd: a.pwd.clone(),
                tcp_port: a.tcp_port,
            };
            framed(&check(&other).0)
        }),
    ];
    for (what, bytes) in bad {
        let mut s = connect(a.tcp_port);
        s.write_all(&bytes).expect("write");
        assert!(closed_within(&mut s, READ), "{what}: connection kept");
    }

    // A connection that says nothing is closed after the first-check time-out.
    let mut silent = connect(a.tcp_port);
    let start = Instant::now();
    assert!(closed_within(
        &mut silent,
        media::ice_tcp::acceptor::FIRST_CHECK_TIMEOUT + Duration::from_secs(2)
    ));
    assert!(
        start.elapsed()
            >= media::ice_tcp::acceptor::FIRST_CHECK_TIMEOUT - Duration::from_millis(100)
    );

    // Bad framing on the call's own connection closes that connection only.
    let mut second = answered_on_tcp(&a);
    second.write_all(&[0xff, 0xff]).expect("write");
    assert!(
        closed_within(&mut second, READ),
        "bad framing after the check"
    );
    let (req, tid) = check(&a);
    good.write_all(&framed(&req)).expect("write");
    let mut resp = Message::new();
    // DTLS retransmissions may come first.
    for _ in 0..10 {
        let frame = read_frame(&mut good);
        if resp.unmarshal_binary(&frame).is_ok() && resp.transaction_id == tid {
            break;
        }
    }
    assert_eq!(resp.transaction_id, tid, "the first connection still works");
}
