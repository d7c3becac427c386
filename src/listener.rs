//! The TCP side of the WebSocket and REST servers: every accepted connection gets its socket
//! options and, with `--tls-cert`, its TLS handshake (in a task of its own, so a client that
//! stalls mid-handshake holds up nobody), then is handed to axum with the client's address,
//! which the rate limits key on.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections accepted but not yet taken by the HTTP server.
const BACKLOG: usize = 256;
/// TLS handshakes in progress at once; connections beyond it are closed at once, so a flood
/// of connects cannot queue unbounded handshake work (rate limits apply only after it).
const MAX_HANDSHAKES: usize = 1024;

/// What is set on each accepted connection.
#[derive(Clone, Default)]
pub struct ConnOptions {
    /// TLS for every connection (`wss://`, `https://`).
    pub tls: Option<TlsAcceptor>,
    /// `SO_SNDBUF`. The REST server sets a small one so that a Server-Sent Events reader that
    /// stops reading fills its buffers within a few hundred events and is dropped, instead of
    /// the kernel autotuning several megabytes of backlog for it.
    pub send_buffer: Option<usize>,
}

/// An accepted connection, plain or TLS.
pub trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Conn for T {}

/// The client's address, as handlers see it (`ConnectInfo<ClientAddr>`).
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);

impl Connected<IncomingStream<'_, Accepted>> for ClientAddr {
    fn connect_info(stream: IncomingStream<'_, Accepted>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}

/// Connections ready for HTTP: an [`axum::serve::Listener`] fed by the accept task.
pub struct Accepted {
    ready: mpsc::Receiver<(Box<dyn Conn>, SocketAddr)>,
    local: SocketAddr,
}

/// Starts accepting on `listener` until `shutdown`.
pub fn accept(
    listener: TcpListener,
    options: ConnOptions,
    shutdown: CancellationToken,
) -> Accepted {
    let local = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let (tx, ready) = mpsc::channel(BACKLOG);
    tokio::spawn(accept_loop(listener, options, tx, shutdown));
    Accepted { ready, local }
}

async fn accept_loop(
    listener: TcpListener,
    options: ConnOptions,
    ready: mpsc::Sender<(Box<dyn Conn>, SocketAddr)>,
    shutdown: CancellationToken,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: wait instead of spinning.
                    warn!("accept on {:?}: {e}", listener.local_addr().ok());
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if let Err(e) = configure(&stream, &options) {
            debug!(%peer, "socket options: {e}");
        }
        match &options.tls {
            None => {
                if ready.send((Box::new(stream), peer)).await.is_err() {
                    return;
                }
            }
            Some(tls) => {
                let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                    debug!(%peer, "too many TLS handshakes in progress; connection closed");
                    continue;
                };
                let (tls, ready) = (tls.clone(), ready.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let _ = ready.send((Box::new(stream), peer)).await;
                        }
                        Ok(Err(e)) => debug!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
}

fn configure(stream: &TcpStream, options: &ConnOptions) -> io::Result<()> {
    // Replies and events are small and latency matters more than packing them.
    stream.set_nodelay(true)?;
    if let Some(size) = options.send_buffer {
        socket2::SockRef::from(stream).set_send_buffer_size(size)?;
    }
    Ok(())
}

impl axum::serve::Listener for Accepted {
    type Io = Box<dyn Conn>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept task ended (shutdown): the server stops through its own graceful
            // shutdown signal, so there is nothing more to hand out.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}
