//! ICE-TCP passive candidates (RFC 6544) with RFC 4571 framing: a browser whose UDP is
//! blocked connects to `--ice-tcp-listen` and runs the same ICE-lite, DTLS and SRTP as over
//! UDP, one frame per datagram.
//!
//! How a connection finds its call, with several media workers:
//!
//! 1. One accepting thread ([`acceptor`]) owns the listener. It accepts, and waits (without
//!    blocking: it has its own poll) for the connection's first frame, at most
//!    [`acceptor::FIRST_CHECK_TIMEOUT`]; a connection that sends anything but a STUN Binding
//!    request with a USERNAME first, or nothing, is closed, so hostile traffic cannot hold
//!    sockets.
//! 2. The USERNAME's local part is our ufrag, and every ufrag we hand out starts with the
//!    index of the worker that owns its call ([`ufrag_for_worker`]). The acceptor reads the
//!    index back ([`worker_of_ufrag`]) and hands the stream, with the bytes read so far, to
//!    that worker through its command channel (the engine gives the acceptor one
//!    [`acceptor::Route`] per worker). No map is shared between threads, and nothing is
//!    locked.
//! 3. The worker finds the call by ufrag as for UDP (`by_ufrag`); if the leg does not answer
//!    that first check (its MESSAGE-INTEGRITY is not ours: the ufrag alone is no secret), the
//!    connection is closed. Then the worker feeds every frame to
//!    the call's browser leg as a datagram whose [`Path`](crate::udp::Path) names this
//!    connection ([`Transport::Tcp`](crate::udp::Transport)); whatever the leg sends along
//!    that path is framed onto the same connection ([`connections`]). The leg itself does not
//!    know TCP: ICE-lite follows the browser's nomination, UDP or TCP.
//!
//! A connection that closes or breaks is forgotten; if it carried the call, the call hears
//! nothing more and ends on consent time-out, as for a browser that went quiet over UDP.
//! Output is a bounded queue per connection: when the browser does not read fast enough,
//! packets are dropped, never buffered without bound.

pub mod acceptor;
pub mod connections;
pub mod framing;

pub use acceptor::{Acceptor, TcpHandoff};
pub use connections::{BrowserSockets, Connections};
pub use framing::{Deframer, FrameError, FrameQueue, MAX_FRAME};

/// The ice-chars (RFC 8445 §5.3) in the order used to write a worker index.
const DIGITS: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// How many leading characters of a ufrag name its worker: 64² workers.
const TAG_LEN: usize = 2;

pub use crate::udp::TcpConnId;

/// `random` (fresh ICE-char ufrag) with the index of the worker that owns the call in front,
/// so the ICE-TCP acceptor can route a connection by its first check's USERNAME. Every local
/// ufrag of a call (including after an ICE restart) must be made with this, through
/// [`MediaEngine::ice_credentials`](crate::engine::MediaEngine::ice_credentials).
pub fn ufrag_for_worker(worker: usize, random: &str) -> String {
    let hi = DIGITS[(worker / 64) % 64];
    let lo = DIGITS[worker % 64];
    let mut s = String::with_capacity(TAG_LEN + random.len());
    s.push(char::from(hi));
    s.push(char::from(lo));
    s.push_str(random);
    s
}

/// The worker index written by [`ufrag_for_worker`], if `ufrag` carries one below `workers`.
pub fn worker_of_ufrag(ufrag: &str, workers: usize) -> Option<usize> {
    let tag = ufrag.as_bytes().get(..TAG_LEN)?;
    let digit = |c: u8| DIGITS.iter().position(|&d| d == c);
    let index = digit(tag[0])? * 64 + digit(tag[1])?;
    (index < workers).then_some(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worker_index_survives_the_ufrag() {
        for w in [0, 1, 2, 63, 64, 255, 4095] {
            let u = ufrag_for_worker(w, "abcdEFGH");
            assert_eq!(u.len(), 10);
            assert!(u.ends_with("abcdEFGH"));
            assert_eq!(worker_of_ufrag(&u, 4096), Some(w), "{u}");
        }
        assert_eq!(worker_of_ufrag(&ufrag_for_worker(3, "x"), 3), None);
        assert_eq!(worker_of_ufrag("A", 4), None);
        assert_eq!(worker_of_ufrag("A-bc", 4), None);
        assert_eq!(worker_of_ufrag("AB", 4), Some(1));
    }
}
