//! The ICE-TCP listener's thread: accepts connections, waits for each one's first STUN
//! Binding request, and hands the connection to the media worker its USERNAME names (see
//! the module above for why the ufrag carries the worker).

use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use super::connections::RX_CAPACITY;
use super::framing::Deframer;

/// How long an accepted connection may take to send its first check before it is closed.
pub const FIRST_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections waiting for their first check at most; beyond it the oldest is closed, so a
/// flood of idle connections costs a bounded number of descriptors.
pub const MAX_PENDING: usize = 256;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const PENDING_BASE: usize = 2;
/// How often waiting connections are checked for the time-out.
const SWEEP: Duration = Duration::from_millis(250);

/// An accepted connection whose first frame is a check for a call of the receiving worker:
/// the worker finds the call by `ufrag` and then reads every frame from `rx` on, the first
/// check included.
pub struct TcpHandoff {
    /// The connection, non-blocking, deregistered from the acceptor.
    pub stream: TcpStream,
    /// The browser's address.
    pub remote: SocketAddr,
    /// Our address it connected to.
    pub local: IpAddr,
    /// The local ufrag of the first check's USERNAME.
    pub ufrag: String,
    /// Bytes read so far: the first frame, not popped, and whatever followed it.
    pub rx: Deframer,
}

/// Hands a connection to one worker (its command channel); false if the worker is gone.
pub type Route = Box<dyn Fn(TcpHandoff) -> bool + Send>;

/// The running acceptor; dropping it stops the thread and closes the listener.
pub struct Acceptor {
    local: SocketAddr,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Acceptor {
    /// Serves `listener`, handing connections to `workers` (indexed as in the ufrags).
    pub fn spawn(listener: std::net::TcpListener, workers: Vec<Route>) -> io::Result<Acceptor> {
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        let mut listener = TcpListener::from_std(listener);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let stop = Arc::new(AtomicBool::new(false));
        let mut state = State {
            poll,
            listener,
            workers,
            pending: Vec::new(),
            stop: stop.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("ice-tcp-accept".into())
            .spawn(move || state.run())?;
        Ok(Acceptor {
            local,
            stop,
            waker,
            thread: Some(thread),
        })
    }

    /// The address listened on (with the port the system chose, if 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Pending {
    stream: TcpStream,
    remote: SocketAddr,
    local: IpAddr,
    rx: Deframer,
    since: Instant,
}

struct State {
    poll: Poll,
    listener: TcpListener,
    workers: Vec<Route>,
    pending: Vec<Option<Pending>>,
    stop: Arc<AtomicBool>,
}

/// What a waiting connection's bytes decided.
enum Verdict {
    /// Not enough bytes yet.
    Wait,
    /// Hand it to this worker, for this ufrag.
    Route(usize, String),
    /// Close it, for this reason.
    Close(&'static str),
}

/// The verdict on a connection's first frame, if in.
fn first_frame(rx: &Deframer, workers: usize) -> Verdict {
    let frame = match rx.peek() {
        Ok(Some(frame)) => frame,
        Ok(None) => return Verdict::Wait,
        Err(_) => return Verdict::Close("not RFC 4571 framing"),
    };
    let Some(ufrag) = crate::ice_lite::local_ufrag(frame) else {
        return Verdict::Close("first frame is no STUN Binding request with a USERNAME");
    };
    match super::worker_of_ufrag(&ufrag, workers) {
        Some(w) => Verdict::Route(w, ufrag),
        None => Verdict::Close("USERNAME names no call of ours"),
    }
}

impl State {
    fn run(&mut self) {
        let mut events = Events::with_capacity(128);
        while !self.stop.load(Ordering::Relaxed) {
            if let Err(e) = self.poll.poll(&mut events, Some(SWEEP)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(error = %e, "ICE-TCP acceptor: poll failed");
                    return;
                }
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => {}
                    Token(t) => self.on_readable(t - PENDING_BASE),
                }
            }
            self.expire(Instant::now());
        }
    }

    fn accept(&mut self) {
        loop {
            let (stream, remote) = match self.listener.accept() {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors and the like: the connection stays in the backlog
                    // and is tried again on the next event.
                    tracing::warn!(error = %e, "ICE-TCP: accept failed");
                    return;
                }
            };
            self.add(stream, remote);
        }
    }

    fn add(&mut self, mut stream: TcpStream, remote: SocketAddr) {
        let Ok(local) = stream.local_addr() else {
            return;
        };
        // Media is small packets in real time: no Nagle delay.
        let _ = stream.set_nodelay(true);
        if self.pending.iter().flatten().count() >= MAX_PENDING {
            if let Some(oldest) = (0..self.pending.len())
                .filter(|&i| self.pending[i].is_some())
                .min_by_key(|&i| self.pending[i].as_ref().map(|p| p.since))
            {
                self.close(oldest, "too many connections waiting for a first check");
            }
        }
        let index = match self.pending.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.pending.push(None);
                self.pending.len() - 1
            }
        };
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(PENDING_BASE + index),
            Interest::READABLE,
        ) {
            tracing::warn!(error = %e, "ICE-TCP: cannot poll an accepted connection");
            return;
        }
        self.pending[index] = Some(Pending {
            stream,
            remote: SocketAddr::new(remote.ip().to_canonical(), remote.port()),
            local: local.ip().to_canonical(),
            rx: Deframer::with_capacity(RX_CAPACITY),
            since: Instant::now(),
        });
    }

    fn on_readable(&mut self, index: usize) {
        let workers = self.workers.len();
        let Some(p) = self.pending.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        let mut eof = false;
        loop {
            let spare = p.rx.spare();
            if spare.is_empty() {
                break;
            }
            match p.stream.read(spare) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => p.rx.filled(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    eof = true;
                    break;
                }
            }
        }
        match first_frame(&p.rx, workers) {
            Verdict::Wait if eof => self.close(index, "closed before its first check"),
            Verdict::Wait => {}
            Verdict::Close(why) => self.close(index, why),
            Verdict::Route(worker, ufrag) => self.hand_over(index, worker, ufrag),
        }
    }

    fn hand_over(&mut self, index: usize, worker: usize, ufrag: String) {
        let Some(mut p) = self.pending.get_mut(index).and_then(Option::take) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut p.stream);
        let remote = p.remote;
        let handoff = TcpHandoff {
            stream: p.stream,
            remote,
            local: p.local,
            ufrag,
            rx: p.rx,
        };
        let sent = self.workers.get(worker).is_some_and(|route| route(handoff));
        if !sent {
            tracing::debug!(%remote, worker, "ICE-TCP: worker gone, connection dropped");
        }
    }

    fn close(&mut self, index: usize, why: &str) {
        if let Some(mut p) = self.pending.get_mut(index).and_then(Option::take) {
            let _ = self.poll.registry().deregister(&mut p.stream);
            tracing::debug!(remote = %p.remote, "ICE-TCP connection refused: {why}");
        }
    }

    fn expire(&mut self, now: Instant) {
        for index in 0..self.pending.len() {
            if self.pending[index]
                .as_ref()
                .is_some_and(|p| now.saturating_duration_since(p.since) > FIRST_CHECK_TIMEOUT)
            {
                self.close(index, "no check in time");
            }
        }
    }
}
