//! A worker's ICE-TCP connections: reading frames off them, writing frames to them through a
//! bounded queue, and closing them. The worker decides what a frame means (see
//! `worker/ice_tcp.rs`); this table only moves bytes and remembers which call a connection
//! belongs to.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use super::framing::{Deframer, FrameQueue};
use super::TcpConnId;
use crate::udp::{Batch, Path, Socket, Transport};

/// The first poll token of ICE-TCP connections in a worker; the worker's own tokens (its UDP
/// sockets) stay below it.
pub const TOKEN_BASE: usize = 1 << 30;

/// Connections one worker keeps at most; more are refused, so a flood of valid-looking checks
/// cannot exhaust descriptors or memory.
pub const MAX_CONNECTIONS: usize = 4096;

/// Receive buffer per connection: several frames per read.
pub const RX_CAPACITY: usize = 8 * 1024;

/// Bytes of frames that may wait for a slow reader: about half a second of Opus at 64 kbit/s.
/// Beyond it packets are dropped; old audio is worth less than a connection that keeps up.
pub const TX_CAPACITY: usize = 32 * 1024;

/// The call a connection belongs to: its slot on the worker and its engine-wide id (a slot is
/// reused by later calls; the id tells them apart).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    /// Slot in the worker's call table.
    pub slot: usize,
    /// Engine-wide call id.
    pub call: u64,
}

struct Conn {
    id: TcpConnId,
    stream: TcpStream,
    remote: SocketAddr,
    local: IpAddr,
    owner: Owner,
    /// Taken out while its frames are handled (they borrow it while the leg writes replies
    /// through this table).
    rx: Option<Deframer>,
    tx: FrameQueue,
    /// A write failed or the peer closed: no more sends; closed at the next sweep.
    broken: bool,
    /// Something was queued for it: its first check was answered.
    answered: bool,
    dropped: u64,
}

/// What a read left behind.
#[derive(Debug)]
pub enum Fill {
    /// The socket has nothing more for now.
    Drained,
    /// The receive buffer is full: pop frames, then read again.
    Full,
    /// The peer closed its side (frames already read still count).
    Closed,
    /// The socket failed.
    Failed(io::Error),
}

/// The ICE-TCP connections of one worker, indexed by their poll token.
#[derive(Default)]
pub struct Connections {
    slots: Vec<Option<Conn>>,
    adopted: u64,
    live: usize,
}

impl Connections {
    /// No connections.
    pub fn new() -> Connections {
        Connections::default()
    }

    /// How many connections are open.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether none is open.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// The table index of a poll token, if it is a connection's.
    pub fn index_of(token: Token) -> Option<usize> {
        token.0.checked_sub(TOKEN_BASE)
    }

    /// Takes over an accepted stream for `owner`, with what was already read from it in `rx`,
    /// and polls it under its own token. Errs when the worker has too many connections.
    pub fn adopt(
        &mut self,
        registry: &Registry,
        mut stream: TcpStream,
        remote: SocketAddr,
        local: IpAddr,
        rx: Deframer,
        owner: Owner,
    ) -> io::Result<(usize, TcpConnId)> {
        if self.live >= MAX_CONNECTIONS {
            return Err(io::Error::other(format!(
                "{MAX_CONNECTIONS} ICE-TCP connections already open on this worker"
            )));
        }
        let index = match self.slots.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        registry.register(
            &mut stream,
            Token(TOKEN_BASE + index),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        self.adopted += 1;
        // Index in the low half, a count of adoptions in the high one: unique for the worker's
        // life, and the index is found again without a search.
        let id = TcpConnId((self.adopted << 32) | index as u64);
        self.slots[index] = Some(Conn {
            id,
            stream,
            remote,
            local,
            owner,
            rx: Some(rx),
            tx: FrameQueue::with_capacity(TX_CAPACITY),
            broken: false,
            answered: false,
            dropped: 0,
        });
        self.live += 1;
        Ok((index, id))
    }

    /// The path a connection's frames take, and the call it belongs to.
    pub fn path(&self, index: usize) -> Option<(Path, Owner)> {
        let c = self.slots.get(index)?.as_ref()?;
        Some((
            Path {
                remote: c.remote,
                local: Some(c.local),
                transport: Transport::Tcp(c.id),
            },
            c.owner,
        ))
    }

    /// Takes a connection's receive buffer, to handle its frames; give it back with
    /// [`Connections::put_rx`].
    pub fn take_rx(&mut self, index: usize) -> Option<Deframer> {
        self.slots.get_mut(index)?.as_mut()?.rx.take()
    }

    /// Gives a receive buffer back, if its connection is still open.
    pub fn put_rx(&mut self, index: usize, rx: Deframer) {
        if let Some(c) = self.slots.get_mut(index).and_then(Option::as_mut) {
            c.rx = Some(rx);
        }
    }

    /// Reads what the socket has into `rx`, until it has nothing more or `rx` is full.
    ///
    /// A read shorter than the room it had ends it, without the extra call that would only
    /// say `WouldBlock`: the socket's queue was empty, and with edge-triggered polling
    /// anything that arrives after it raises a new event (the UDP path does the same with
    /// short batches). A browser sends one packet per 20 ms, so this halves the reads.
    pub fn fill(&mut self, index: usize, rx: &mut Deframer) -> Fill {
        let Some(c) = self.slots.get_mut(index).and_then(Option::as_mut) else {
            return Fill::Closed;
        };
        loop {
            let spare = rx.spare();
            let room = spare.len();
            if room == 0 {
                return Fill::Full;
            }
            match c.stream.read(spare) {
                Ok(0) => return Fill::Closed,
                Ok(n) if n < room => {
                    rx.filled(n);
                    return Fill::Drained;
                }
                Ok(n) => rx.filled(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Fill::Drained,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Fill::Failed(e),
            }
        }
    }

    /// Frames `packet` onto connection `id`. Errs (and the packet is dropped) when the
    /// connection is gone or broken, or its queue is full.
    pub fn send(&mut self, id: TcpConnId, packet: &[u8]) -> io::Result<()> {
        let Some(c) = self.get_mut(id) else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        if c.broken {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        if let Err(e) = c.tx.push(packet) {
            c.dropped += 1;
            if c.dropped == 1 {
                tracing::debug!(remote = %c.remote, error = %e, "ICE-TCP: dropping packets for a slow reader");
            }
            return Err(io::Error::new(io::ErrorKind::WouldBlock, e));
        }
        c.answered = true;
        flush(c);
        if c.broken {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        Ok(())
    }

    /// Whether anything was ever sent on connection `index` (false if it is closed).
    pub fn answered(&self, index: usize) -> bool {
        self.slots
            .get(index)
            .and_then(Option::as_ref)
            .is_some_and(|c| c.answered)
    }

    /// The socket can take more: writes what waits.
    pub fn on_writable(&mut self, index: usize) {
        if let Some(c) = self.slots.get_mut(index).and_then(Option::as_mut) {
            flush(c);
        }
    }

    /// Closes connection `index`, saying why (at debug level: peers close all the time).
    pub fn close(&mut self, index: usize, registry: &Registry, why: &str) {
        let Some(mut c) = self.slots.get_mut(index).and_then(Option::take) else {
            return;
        };
        self.live -= 1;
        let _ = registry.deregister(&mut c.stream);
        tracing::debug!(
            remote = %c.remote,
            call = c.owner.call,
            dropped = c.dropped,
            "ICE-TCP connection closed: {why}"
        );
    }

    /// Closes every connection of the call in `slot` (the call ended).
    pub fn close_owned_by(&mut self, slot: usize, registry: &Registry) {
        for index in 0..self.slots.len() {
            if self.slots[index]
                .as_ref()
                .is_some_and(|c| c.owner.slot == slot)
            {
                self.close(index, registry, "the call ended");
            }
        }
    }

    /// Closes the connections a write found broken.
    pub fn sweep(&mut self, registry: &Registry) {
        for index in 0..self.slots.len() {
            if self.slots[index].as_ref().is_some_and(|c| c.broken) {
                self.close(index, registry, "write failed");
            }
        }
    }

    fn get_mut(&mut self, id: TcpConnId) -> Option<&mut Conn> {
        let index = (id.0 & 0xffff_ffff) as usize;
        self.slots.get_mut(index)?.as_mut().filter(|c| c.id == id)
    }
}

/// Writes what the queue holds until the socket would block.
fn flush(c: &mut Conn) {
    while !c.tx.is_empty() {
        match c.stream.write(c.tx.pending()) {
            Ok(0) => {
                c.broken = true;
                return;
            }
            Ok(n) => c.tx.consume(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                c.broken = true;
                return;
            }
        }
    }
}

/// Everything a worker's browser legs send through: its UDP socket and its ICE-TCP
/// connections, chosen by the path's transport.
pub struct BrowserSockets {
    /// The worker's browser-facing UDP socket.
    pub udp: Socket,
    /// Its ICE-TCP connections.
    pub tcp: Connections,
}

impl BrowserSockets {
    /// The UDP socket, no connections yet.
    pub fn new(udp: Socket) -> BrowserSockets {
        BrowserSockets {
            udp,
            tcp: Connections::new(),
        }
    }

    /// Receives datagrams on the UDP socket (see [`Socket::recv`]).
    pub fn recv(&self, batch: &mut Batch) -> io::Result<usize> {
        self.udp.recv(batch)
    }

    /// Sends one packet along `path`: a datagram, or a frame on its connection.
    #[inline]
    pub fn send(&mut self, data: &[u8], path: Path) -> io::Result<()> {
        match path.transport {
            Transport::Udp => self.udp.send(data, path),
            Transport::Tcp(id) => self.tcp.send(id, data),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, TcpListener};

    /// A connection adopted by a table, and the peer's end of it.
    fn pair(poll: &mio::Poll, table: &mut Connections) -> (TcpConnId, std::net::TcpStream) {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (ours, remote) = listener.accept().unwrap();
        ours.set_nonblocking(true).unwrap();
        let (_, id) = table
            .adopt(
                poll.registry(),
                TcpStream::from_std(ours),
                remote,
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                Deframer::with_capacity(RX_CAPACITY),
                Owner { slot: 0, call: 1 },
            )
            .unwrap();
        (id, peer)
    }

    #[test]
    fn a_peer_that_does_not_read_loses_packets_not_framing() {
        let poll = mio::Poll::new().unwrap();
        let mut table = Connections::new();
        let (id, mut peer) = pair(&poll, &mut table);
        let mut sent = 0u32;
        let mut dropped = 0u32;
        for i in 0..100_000u32 {
            let mut packet = [0x80u8; 188];
            packet[..4].copy_from_slice(&i.to_be_bytes());
            match table.send(id, &packet) {
                Ok(()) => sent += 1,
                Err(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
                    dropped += 1;
                }
            }
        }
        assert!(dropped > 0, "the kernel buffers cannot hold 19 MB");
        assert!(sent > 0);

        // The peer now reads: every frame it gets is whole, in order, and nothing more comes
        // than was accepted.
        peer.set_read_timeout(Some(std::time::Duration::from_millis(300)))
            .unwrap();
        let mut d = Deframer::with_capacity(RX_CAPACITY);
        let mut got = 0u32;
        let mut last = None;
        loop {
            // What the kernel holds is read first; the queue's rest follows on writable.
            table.on_writable(0);
            let n = match peer.read(d.spare()) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            d.filled(n);
            while let Some(f) = d.pop().expect("whole frames only") {
                assert_eq!(f.len(), 188);
                let seq = u32::from_be_bytes([f[0], f[1], f[2], f[3]]);
                assert!(last.is_none_or(|l| seq > l), "in order");
                last = Some(seq);
                got += 1;
            }
        }
        assert_eq!(got, sent, "every accepted packet arrives, whole");
    }

    #[test]
    fn a_closed_connection_is_forgotten_and_its_id_never_reused() {
        let poll = mio::Poll::new().unwrap();
        let mut table = Connections::new();
        let (first, _peer) = pair(&poll, &mut table);
        assert_eq!(table.len(), 1);
        table.close_owned_by(0, poll.registry());
        assert!(table.is_empty());
        assert!(table.send(first, b"x").is_err(), "gone");
        let (second, _peer2) = pair(&poll, &mut table);
        assert_ne!(first, second, "same slot, another id");
        assert!(
            table.send(first, b"x").is_err(),
            "an old path cannot reach the new connection"
        );
        assert!(table.send(second, b"x").is_ok());
    }
}
