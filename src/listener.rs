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
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// How long a closed connection may go on sending before it is reset ([`Lingering`]).
const LINGER: Duration = Duration::from_secs(5);
/// ... and how long it may pause meanwhile.
const LINGER_IDLE: Duration = Duration::from_secs(1);

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
    /// Close each connection the polite way ([`Lingering`]): the WebSocket server sets it so
    /// that the close frame it sends on an oversized frame reaches the client.
    pub linger: bool,
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
        let linger = options.linger;
        let wrap = move |conn: Box<dyn Conn>| -> Box<dyn Conn> {
            if linger {
                Box::new(Lingering { io: Some(conn) })
            } else {
                conn
            }
        };
        match &options.tls {
            None => {
                if ready.send((wrap(Box::new(stream)), peer)).await.is_err() {
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
                            let _ = ready.send((wrap(Box::new(stream)), peer)).await;
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

/// A connection that, when the server drops it, shuts down its sending side and reads and
/// discards what the client still sends (up to [`LINGER`], or [`LINGER_IDLE`] of silence)
/// before closing, as nginx's lingering close does. Closing a socket with unread input makes
/// the kernel send a reset, and a reset makes the client throw away what it had not read yet:
/// a client in the middle of a 5 MiB frame would never see the 1009 close that explains why.
struct Lingering {
    io: Option<Box<dyn Conn>>,
}

impl Lingering {
    fn io(&mut self) -> io::Result<&mut Box<dyn Conn>> {
        self.io
            .as_mut()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl AsyncRead for Lingering {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.io() {
            Ok(io) => Pin::new(io).poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for Lingering {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.io() {
            Ok(io) => Pin::new(io).poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.io() {
            Ok(io) => Pin::new(io).poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.io() {
            Ok(io) => Pin::new(io).poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let Some(mut io) = self.io.take() else { return };
        // Outside a runtime (process exit) there is nobody left to linger for.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let drain = async {
                // The FIN tells the client at once that nothing more is coming.
                let _ = io.shutdown().await;
                let mut buf = [0u8; 4096];
                while let Ok(Ok(n)) = tokio::time::timeout(LINGER_IDLE, io.read(&mut buf)).await {
                    if n == 0 {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(LINGER, drain).await;
        });
    }
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
