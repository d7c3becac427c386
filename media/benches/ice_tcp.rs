//! ICE-TCP beside UDP, per packet, in the same run: SRTP-sized packets (188 bytes: 20 ms of
//! PCMU with an AES-GCM tag) through the worker's own browser paths over loopback, as UDP
//! datagrams and as RFC 4571 frames on one TCP connection:
//!
//! - toward the browser: `BrowserSockets::send` with a UDP path (one `sendmsg` with
//!   IP_PKTINFO per packet) and with a TCP path (framed into the connection's queue, then
//!   `write`);
//! - from the browser: the poll wake-up and `BrowserSockets::recv` (`recvmmsg` batches of
//!   datagrams from many browsers on the one UDP socket) against the poll wake-up,
//!   `Connections::fill` and `Deframer::pop` per frame (a browser's connection carries one
//!   packet per 20 ms, so each frame costs a wake-up and a read); and, as a bound, 32 frames
//!   read off one connection at once.
//!
//! Only the gateway's side is timed (the peer's reads and writes are not), in bursts of 32
//! packets; the kernel's loopback work is in the figures, as the worker pays it. SRTP is the
//! same on both transports and left out.
//! A counting allocator checks that neither path allocates per packet.
//!
//! Run: `cargo bench -p media --bench ice_tcp` (`ICE_TCP_BENCH_PACKETS` sets the count).

#[allow(dead_code)] // Shared with the relay bench; this one only counts allocations.
mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use media::ice_tcp::connections::{Fill, Owner, RX_CAPACITY};
use media::ice_tcp::{BrowserSockets, Deframer};
use media::udp::{Batch, Path, Socket};
use mio::{Events, Poll, Token};

const BURST: usize = 32;
const PACKET: usize = 188;
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

struct Bench {
    gateway: BrowserSockets,
    batch: Batch,
    rx: Option<Deframer>,
    tcp_index: usize,
    udp_path: Path,
    tcp_path: Path,
    udp_peer: UdpSocket,
    tcp_peer: TcpStream,
    poll: Poll,
    events: Events,
}

/// How the gateway's side receives.
#[derive(Clone, Copy, PartialEq)]
enum Receive {
    /// Datagrams of many browsers on the UDP socket: one wake-up per burst.
    Udp,
    /// One frame per connection wake-up, as from many browsers over TCP.
    TcpPerFrame,
    /// A burst of frames read off one connection at once.
    TcpBurst,
}

impl Bench {
    fn new() -> Bench {
        let gw_udp = UdpSocket::bind((LOOPBACK, 0)).expect("udp");
        let gw_udp_addr = gw_udp.local_addr().expect("addr");
        let udp_peer = UdpSocket::bind((LOOPBACK, 0)).expect("udp peer");
        udp_peer.connect(gw_udp_addr).expect("connect");
        let mut udp = Socket::new(gw_udp).expect("socket");
        let poll = Poll::new().expect("poll");
        udp.register(poll.registry(), Token(1)).expect("register");
        let mut gateway = BrowserSockets::new(udp);

        let listener = TcpListener::bind((LOOPBACK, 0)).expect("listen");
        let tcp_peer = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        tcp_peer.set_nodelay(true).expect("nodelay");
        let (accepted, remote) = listener.accept().expect("accept");
        accepted.set_nonblocking(true).expect("nonblocking");
        accepted.set_nodelay(true).expect("nodelay");
        let (tcp_index, _) = gateway
            .tcp
            .adopt(
                poll.registry(),
                mio::net::TcpStream::from_std(accepted),
                remote,
                LOOPBACK,
                Deframer::with_capacity(RX_CAPACITY),
                Owner { slot: 0, call: 1 },
            )
            .expect("adopt");
        let (tcp_path, _) = gateway.tcp.path(tcp_index).expect("path");
        let rx = gateway.tcp.take_rx(tcp_index);
        Bench {
            gateway,
            batch: Batch::new(),
            rx,
            tcp_index,
            udp_path: Path::udp(udp_peer.local_addr().expect("addr"), Some(LOOPBACK)),
            tcp_path,
            udp_peer,
            tcp_peer,
            poll,
            events: Events::with_capacity(64),
        }
    }

    /// Sends `n` packets toward the peer along `path`; returns the gateway's time and its
    /// allocations.
    fn send(&mut self, path: Path, n: usize) -> (Duration, u64) {
        let packet = [0x80u8; PACKET];
        let mut sink = vec![0u8; 64 * 1024];
        let mut took = Duration::ZERO;
        let mut allocs = 0;
        for _ in 0..n / BURST {
            let a = common::allocations();
            let t = Instant::now();
            for _ in 0..BURST {
                self.gateway.send(&packet, path).expect("sent, not dropped");
            }
            took += t.elapsed();
            allocs += common::allocations() - a;
            // The peer drains what came, untimed.
            if path == self.udp_path {
                for _ in 0..BURST {
                    self.udp_peer.recv(&mut sink).expect("datagram");
                }
            } else {
                self.tcp_peer
                    .read_exact(&mut sink[..BURST * (PACKET + 2)])
                    .expect("frames");
            }
        }
        (took, allocs)
    }

    /// The peer sends `n` packets, the gateway receives them; returns the gateway's time and
    /// its allocations.
    fn receive(&mut self, how: Receive, n: usize) -> (Duration, u64) {
        let mut frame = vec![0x80u8; PACKET + 2];
        frame[..2].copy_from_slice(&(PACKET as u16).to_be_bytes());
        let mut took = Duration::ZERO;
        let mut allocs = 0;
        let mut rx = self.rx.take().expect("receive buffer");
        for _ in 0..n / BURST {
            if how == Receive::TcpPerFrame {
                for _ in 0..BURST {
                    self.tcp_peer.write_all(&frame).expect("write");
                    let a = common::allocations();
                    let t = Instant::now();
                    let mut got = 0;
                    while got == 0 {
                        self.poll
                            .poll(&mut self.events, Some(Duration::ZERO))
                            .expect("poll");
                        match self.gateway.tcp.fill(self.tcp_index, &mut rx) {
                            Fill::Drained | Fill::Full => {}
                            other => panic!("connection ended: {other:?}"),
                        }
                        while let Some(f) = rx.pop().expect("framing") {
                            std::hint::black_box(f);
                            got += 1;
                        }
                    }
                    took += t.elapsed();
                    allocs += common::allocations() - a;
                }
                continue;
            }
            for _ in 0..BURST {
                if how == Receive::TcpBurst {
                    self.tcp_peer.write_all(&frame).expect("write");
                } else {
                    self.udp_peer.send(&frame[2..]).expect("send");
                }
            }
            let a = common::allocations();
            let t = Instant::now();
            if how == Receive::Udp {
                self.poll
                    .poll(&mut self.events, Some(Duration::ZERO))
                    .expect("poll");
            }
            let mut got = 0;
            while got < BURST {
                if how == Receive::TcpBurst {
                    match self.gateway.tcp.fill(self.tcp_index, &mut rx) {
                        Fill::Drained | Fill::Full => {}
                        other => panic!("connection ended: {other:?}"),
                    }
                    while let Some(f) = rx.pop().expect("framing") {
                        std::hint::black_box(f);
                        got += 1;
                    }
                } else {
                    let k = match self.gateway.recv(&mut self.batch) {
                        Ok(k) => k,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
                        Err(e) => panic!("recv: {e}"),
                    };
                    for i in 0..k {
                        let (_, ranges) = self.batch.datagrams(i);
                        got += ranges.count();
                    }
                }
            }
            took += t.elapsed();
            allocs += common::allocations() - a;
        }
        self.rx = Some(rx);
        (took, allocs)
    }
}

fn per_packet(d: Duration, n: usize) -> f64 {
    d.as_nanos() as f64 / n as f64
}

fn main() {
    let n: usize = std::env::var("ICE_TCP_BENCH_PACKETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000)
        / BURST
        * BURST;
    let mut b = Bench::new();
    // Warm-up: connection buffers, caches, the allocator.
    let (udp_path, tcp_path) = (b.udp_path, b.tcp_path);
    b.send(udp_path, 10 * BURST);
    b.send(tcp_path, 10 * BURST);
    b.receive(Receive::Udp, 10 * BURST);
    b.receive(Receive::TcpPerFrame, 10 * BURST);
    b.receive(Receive::TcpBurst, 10 * BURST);

    println!("ICE-TCP beside UDP, {n} packets of {PACKET} bytes each way, bursts of {BURST}:");
    let (udp_tx, udp_tx_allocs) = b.send(udp_path, n);
    let (tcp_tx, tcp_tx_allocs) = b.send(tcp_path, n);
    let (udp_rx, udp_rx_allocs) = b.receive(Receive::Udp, n);
    let (tcp_rx, tcp_rx_allocs) = b.receive(Receive::TcpPerFrame, n);
    let (burst_rx, burst_rx_allocs) = b.receive(Receive::TcpBurst, n);
    let (udp_tx, tcp_tx) = (per_packet(udp_tx, n), per_packet(tcp_tx, n));
    let (udp_rx, tcp_rx) = (per_packet(udp_rx, n), per_packet(tcp_rx, n));
    let burst_rx = per_packet(burst_rx, n);
    println!(
        "to browser:   UDP {udp_tx:.0} ns/packet, TCP {tcp_tx:.0} ns/packet, ratio {:.2}x",
        tcp_tx / udp_tx
    );
    println!(
        "from browser: UDP {udp_rx:.0} ns/packet (recvmmsg), TCP {tcp_rx:.0} ns/packet (one frame per wake-up), ratio {:.2}x",
        tcp_rx / udp_rx
    );
    println!(
        "from browser, 32 frames on one connection: TCP {burst_rx:.0} ns/packet, ratio {:.2}x",
        burst_rx / udp_rx
    );
    println!(
        "allocations per packet: UDP send {:.3}, TCP send {:.3}, UDP receive {:.3}, TCP receive {:.3} / {:.3}",
        udp_tx_allocs as f64 / n as f64,
        tcp_tx_allocs as f64 / n as f64,
        udp_rx_allocs as f64 / n as f64,
        tcp_rx_allocs as f64 / n as f64,
        burst_rx_allocs as f64 / n as f64,
    );
}
