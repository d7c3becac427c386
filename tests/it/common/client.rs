//! A browser-protocol v1 client over a real WebSocket.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Default wait for one frame.
pub const WAIT: Duration = Duration::from_secs(12);

/// The connection under the WebSocket: plain TCP or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One connected browser session.
pub struct Client {
    ws: WebSocketStream<Box<dyn Io>>,
    /// The server's `hello` payload.
    pub hello: Value,
    next_id: u32,
    backlog: VecDeque<Value>,
}

impl Client {
    /// Connects and reads `hello`.
    pub async fn connect(url: &str) -> Client {
        let tcp = tcp_to(url).await;
        Client::over(url, Box::new(tcp)).await
    }

    /// Connects from the source address `from` (any of 127/8 is loopback: a second client
    /// address for per-address limits) and reads `hello`.
    pub async fn connect_from(url: &str, from: std::net::IpAddr) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(std::net::SocketAddr::new(from, 0))
            .unwrap_or_else(|e| panic!("bind {from}: {e}"));
        let target = authority(url).parse().expect("ip:port in the URL");
        let tcp = socket.connect(target).await.expect("connect");
        // A socket the server already reset refuses options; the handshake will say why.
        let _ = tcp.set_nodelay(true);
        Client::over(url, Box::new(tcp)).await
    }

    /// Connects to a `wss://` URL with the TLS client `config` and reads `hello`.
    pub async fn connect_tls(url: &str, config: std::sync::Arc<rustls::ClientConfig>) -> Client {
        let tls = tls_to(url, config).await;
        Client::over(url, Box::new(tls)).await
    }

    async fn over(url: &str, io: Box<dyn Io>) -> Client {
        let (ws, _) = tokio_tungstenite::client_async(url, io)
            .await
            .expect("websocket connect");
        let mut c = Client {
            ws,
            hello: Value::Null,
            next_id: 0,
            backlog: VecDeque::new(),
        };
        let hello = c.recv(WAIT).await.expect("hello frame");
        assert_eq!(hello["type"], "hello", "first frame: {hello}");
        c.hello = hello["payload"].clone();
        c
    }

    /// Sends a raw text frame.
    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text.to_string()))
            .await
            .expect("send text");
    }

    /// Sends a binary frame.
    pub async fn send_binary(&mut self, data: &[u8]) {
        self.ws
            .send(Message::binary(data.to_vec()))
            .await
            .expect("send binary");
    }

    /// Sends any frame as is (e.g. a text frame that is not UTF-8), reporting a failure
    /// instead of panicking: the server may close while a large frame is still being written.
    pub async fn send_raw(&mut self, msg: Message) -> Result<(), String> {
        self.ws.send(msg).await.map_err(|e| e.to_string())
    }

    /// Waits for the server's close frame, skipping other frames: its code and reason, or
    /// why there was none (a reset, the connection ending without one, a time-out).
    pub async fn close_frame(&mut self, timeout: Duration) -> Result<(u16, String), String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .map_err(|_| format!("no close frame within {timeout:?}"))?;
            match msg {
                Some(Ok(Message::Close(Some(f)))) => {
                    return Ok((u16::from(f.code), f.reason.to_string()))
                }
                Some(Ok(Message::Close(None))) => return Err("a close frame without a code".into()),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(format!("no close frame: {e}")),
                None => return Err("the connection ended without a close frame".into()),
            }
        }
    }

    /// Next JSON frame (from the backlog first), skipping control frames.
    pub async fn recv(&mut self, timeout: Duration) -> Option<Value> {
        if let Some(v) = self.backlog.pop_front() {
            return Some(v);
        }
        self.recv_wire(timeout).await
    }

    async fn recv_wire(&mut self, timeout: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??;
            match msg {
                Ok(Message::Text(t)) => {
                    return Some(serde_json::from_str(t.as_str()).expect("server sent JSON"))
                }
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    /// Sends a request and returns the reply with the same id (other frames are kept).
    pub async fn request(&mut self, kind: &str, payload: Value) -> Value {
        self.next_id += 1;
        let id = format!("req-{}", self.next_id);
        let frame = json!({ "type": kind, "id": id, "payload": payload });
        self.send_text(&frame.to_string()).await;
        self.reply_to(&id).await
    }

    /// Waits for the reply carrying `id`.
    pub async fn reply_to(&mut self, id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let v = self
                .recv_wire(left)
                .await
                .unwrap_or_else(|| panic!("no reply to {id}"));
            if v["id"] == id {
                return v;
            }
            self.backlog.push_back(v);
        }
    }

    /// Waits for the next frame of type `kind` (earlier frames of other types are dropped).
    pub async fn event(&mut self, kind: &str, timeout: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let v = self
                .recv(left)
                .await
                .unwrap_or_else(|| panic!("no {kind} event within {timeout:?}"));
            if v["type"] == kind {
                return v;
            }
        }
    }

    /// `register` and its `registrationState`, asserting success.
    pub async fn register(&mut self, dn: &str, password: &str) -> Value {
        let r = self
            .request("register", json!({ "dn": dn, "password": password }))
            .await;
        assert_eq!(r["type"], "result", "register {dn}: {r}");
        let ev = self.event("registrationState", WAIT).await;
        assert_eq!(ev["payload"]["state"], "registered", "{ev}");
        r
    }

    /// Closes the socket without unregistering.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// A TCP connection to the host and port of a `ws://` or `wss://` URL.
async fn tcp_to(url: &str) -> TcpStream {
    let authority = authority(url);
    let tcp = TcpStream::connect(authority)
        .await
        .unwrap_or_else(|e| panic!("connect {authority}: {e}"));
    // A socket the server already reset refuses options; the handshake will say why.
    let _ = tcp.set_nodelay(true);
    tcp
}

/// A TLS connection, for the name `localhost`, to the host and port of a `wss://` or
/// `https://` URL.
pub async fn tls_to(
    url: &str,
    config: std::sync::Arc<rustls::ClientConfig>,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = tcp_to(url).await;
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("server name");
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .expect("TLS handshake")
}

/// `host:port` of a URL.
fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or(rest)
}
