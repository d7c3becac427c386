//! UDP as the workers use it: batched receives that report which of our addresses each
//! datagram came to, and sends that leave from that address again. On a host with several
//! addresses the kernel would pick a reply's source by route; a browser drops a STUN answer
//! that does not come from the address it checked, and a NAT or firewall keeping state drops
//! RTP from the wrong one.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};

use mio::net::UdpSocket;
use mio::{Interest, Registry, Token};
use quinn_udp::{RecvMeta, Transmit, UdpSocketState, BATCH_SIZE};

/// The way one datagram came: the peer's address and our local address it was sent to
/// (`None` where the kernel did not say), and whether it came as a UDP datagram or as a frame
/// on one of our ICE-TCP connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Path {
    /// The peer's address (a browser's candidate or TURN relay, a far end's RTP source).
    pub remote: SocketAddr,
    /// Our address the peer sent to: replies must leave from it.
    pub local: Option<IpAddr>,
    /// The worker's UDP socket, or one ICE-TCP connection.
    pub transport: Transport,
}

/// What carries a path's packets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Datagrams on the UDP socket the packet came to.
    #[default]
    Udp,
    /// RFC 4571 frames on this ICE-TCP connection (replies go back on it, whatever the
    /// addresses say).
    Tcp(TcpConnId),
}

/// One ICE-TCP connection of a worker (see `crate::ice_tcp`), as a path names it. An id is
/// never reused by the worker, so a path kept by a call after its connection closed cannot
/// reach another one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TcpConnId(pub(crate) u64);

impl Path {
    /// A UDP path whose local address is unknown (or does not matter).
    pub fn to(remote: SocketAddr) -> Path {
        Path::udp(remote, None)
    }

    /// A UDP path.
    pub fn udp(remote: SocketAddr, local: Option<IpAddr>) -> Path {
        Path {
            remote,
            local,
            transport: Transport::Udp,
        }
    }
}

/// Largest datagram relayed.
pub const MTU: usize = 1500;
/// One receive slot: with UDP GRO the kernel may hand over up to 64 datagrams of a flow at
/// once, `stride` bytes apart.
const SLOT: usize = 64 * MTU;

/// Datagrams received with one `recvmmsg` (through quinn-udp), reused for every read.
#[derive(Default)]
pub struct Batch {
    /// The received bytes; [`Batch::datagrams`] gives the ranges of each datagram.
    pub storage: Vec<u8>,
    meta: Vec<RecvMeta>,
}

impl Batch {
    /// Room for `BATCH_SIZE` slots.
    pub fn new() -> Batch {
        Batch {
            storage: vec![0; SLOT * BATCH_SIZE],
            meta: vec![RecvMeta::default(); BATCH_SIZE],
        }
    }

    /// The datagrams of slot `i`: byte ranges in `storage`, and their path (the source, and
    /// our address they were sent to).
    pub fn datagrams(&self, i: usize) -> (Path, impl Iterator<Item = std::ops::Range<usize>>) {
        let m = &self.meta[i];
        let base = i * SLOT;
        let len = m.len.min(SLOT);
        let stride = if m.stride == 0 { len.max(1) } else { m.stride };
        let ranges = (0..len)
            .step_by(stride)
            .map(move |off| base + off..base + (off + stride).min(len));
        let path = Path::udp(m.addr, m.dst_ip);
        (path, ranges)
    }
}

/// A non-blocking UDP socket with its quinn-udp state (which carries IP_PKTINFO and GRO),
/// as every media socket of a worker is used.
pub struct Socket {
    io: UdpSocket,
    state: UdpSocketState,
}

impl Socket {
    /// Takes over a bound socket, made non-blocking for the worker's poll.
    pub fn new(socket: std::net::UdpSocket) -> io::Result<Socket> {
        socket.set_nonblocking(true)?;
        let io = UdpSocket::from_std(socket);
        let state = UdpSocketState::new((&io).into())?;
        Ok(Socket { io, state })
    }

    /// Polls it for reading under `token`.
    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        registry.register(&mut self.io, token, Interest::READABLE)
    }

    /// Stops polling it.
    pub fn deregister(&mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.io);
    }

    /// Receives up to `BATCH_SIZE` slots into `batch` in one system call.
    pub fn recv(&self, batch: &mut Batch) -> io::Result<usize> {
        let mut chunks = batch.storage.chunks_exact_mut(SLOT);
        let mut bufs: [IoSliceMut<'_>; BATCH_SIZE] =
            std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
        self.state
            .recv((&self.io).into(), &mut bufs, &mut batch.meta)
    }

    /// Sends one datagram along `path`: from its local address when known (IP_PKTINFO /
    /// IPV6_PKTINFO), so a host with several addresses answers from the one the peer sent
    /// to, not the one the kernel would pick by route.
    pub fn send(&self, data: &[u8], path: Path) -> io::Result<()> {
        self.state.try_send(
            (&self.io).into(),
            &Transmit {
                destination: path.remote,
                ecn: None,
                contents: data,
                segment_size: None,
                src_ip: path.local,
            },
        )
    }
}
