//! The baseline: a bare UDP forwarder shaped like the gateway's media plane, minus everything
//! but the copy. One front socket for every "browser" (as the gateway's worker has one port for
//! all browser legs), and per source address a back socket toward the far end (as the gateway
//! has one RTP port per call). Plain `recv_from`/`send_to`, no crypto, no parsing, one thread.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::SocketAddr;

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};

const FRONT: Token = Token(0);

pub fn run(listen: SocketAddr, far: SocketAddr, max: usize) -> std::io::Result<()> {
    let mut poll = Poll::new()?;
    let mut front = UdpSocket::bind(listen)?;
    poll.registry()
        .register(&mut front, FRONT, Interest::READABLE)?;
    let mut backs: Vec<(UdpSocket, SocketAddr)> = Vec::new();
    let mut by_src: HashMap<SocketAddr, usize> = HashMap::new();
    let mut buf = vec![0u8; 2048];
    let mut events = Events::with_capacity(1024);
    eprintln!("forwarder: {listen} -> {far}");
    loop {
        poll.poll(&mut events, None)?;
        for ev in events.iter() {
            if ev.token() == FRONT {
                loop {
                    let (n, src) = match front.recv_from(&mut buf) {
                        Ok(r) => r,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(_) => continue,
                    };
                    let i = match by_src.get(&src) {
                        Some(i) => *i,
                        None if backs.len() < max => {
                            let mut s = UdpSocket::bind(SocketAddr::new(listen.ip(), 0))?;
                            let i = backs.len();
                            poll.registry()
                                .register(&mut s, Token(i + 1), Interest::READABLE)?;
                            backs.push((s, src));
                            by_src.insert(src, i);
                            i
                        }
                        None => continue,
                    };
                    let _ = backs[i].0.send_to(&buf[..n], far);
                }
            } else {
                let i = ev.token().0 - 1;
                let Some((sock, browser)) = backs.get(i) else {
                    continue;
                };
                loop {
                    match sock.recv_from(&mut buf) {
                        Ok((n, _)) => {
                            let _ = front.send_to(&buf[..n], *browser);
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(_) => continue,
                    }
                }
            }
        }
    }
}
