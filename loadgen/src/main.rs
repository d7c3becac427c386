//! Load generator for the gateway benchmark (issue 7, BENCHMARKS.md).
//!
//! `loadgen ramp --mode gateway` plays N browsers (WebSocket sessions that register and call,
//! each a real WebRTC peer: ICE controlling agent, DTLS, SRTP) and the SIP far end (a UAS that
//! answers and echoes RTP) against a running gateway, ramping N and measuring each step.
//! `loadgen ramp --mode baseline` sends the same packets through `loadgen forwarder`, a bare UDP
//! forwarder, for the floor. `loadgen idle` holds many registered idle sessions for memory.
//! `loadgen report` turns the JSON results into the tables of BENCHMARKS.md.
//! `scripts/bench` runs the whole thing.

mod forwarder;
mod media;
mod report;
mod sip;
mod stats;

use std::io::Cursor;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ::media::dtls::{role_from_answer, DtlsCertificate};
use ::media::sdp::{build_webrtc_offer, parse_webrtc, Codec, Direction, WebRtcOfferParams};
use clap::{Args, Parser, Subcommand, ValueEnum};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::media::{Cmd, MediaHandle, PeerSetup, WebRtcSetup};
use crate::sip::{AGENT_BASE, CALLEE_BASE};

/// When each call reached each milestone (index: the call's number).
#[derive(Clone, Copy, Default)]
pub struct CallTimes {
    pub call_sent: Option<Instant>,
    pub result_rx: Option<Instant>,
    pub media_up: Option<Instant>,
    /// When our last DTLS datagram left (the flight that completes the gateway's handshake).
    pub dtls_tx: Option<Instant>,
    pub invite_rx: Option<Instant>,
    pub ok_sent: Option<Instant>,
    pub answered_rx: Option<Instant>,
}

pub type Timeline = Arc<Mutex<Vec<CallTimes>>>;

/// Whether the browsers offer `a=setup:active` (DTLS client) instead of `actpass`.
static OFFER_ACTIVE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[derive(Parser)]
#[command(about = "Load generator for the gateway benchmark")]
struct Cli {
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Gateway,
    Baseline,
}

/// What a ramp or the idle step runs against.
#[derive(Args)]
struct Target {
    /// The process under test (gateway or forwarder): CPU and RSS from /proc.
    #[arg(long)]
    pid: u32,
    /// The gateway's WebSocket.
    #[arg(long, default_value = "ws://127.0.0.1:18081/")]
    ws: String,
    /// The far end's SIP address (the gateway's registrar and proxy).
    #[arg(long, default_value = "127.0.0.1:15060")]
    sip: SocketAddr,
}

#[derive(Subcommand)]
enum Command {
    /// Ramp the number of calls and measure each step; results as JSON.
    Ramp {
        #[arg(long, value_enum)]
        mode: Mode,
        /// Calls per step, e.g. 100,250,500.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "100,250,500,1000,1500,2000"
        )]
        steps: Vec<usize>,
        /// Seconds each step is measured.
        #[arg(long, default_value_t = 10)]
        hold: u64,
        /// Seconds between the last call of a step coming up and its measurement.
        #[arg(long, default_value_t = 2)]
        settle: u64,
        #[command(flatten)]
        target: Target,
        /// The far end's RTP echo (RTCP on the next port).
        #[arg(long, default_value = "127.0.0.1:15062")]
        echo: SocketAddr,
        /// The forwarder's front address (baseline mode).
        #[arg(long, default_value = "127.0.0.1:17000")]
        forwarder: SocketAddr,
        /// Calls being set up at once.
        #[arg(long, default_value_t = 16)]
        setup_concurrency: usize,
        /// The browsers' offer `a=setup`: `actpass` as browsers send (the gateway then takes
        /// `active` and is the DTLS client), or `active` (the browser is the DTLS client).
        #[arg(long, default_value = "actpass", value_parser = ["actpass", "active"])]
        dtls_setup: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Register many WebSocket sessions that stay idle, and report the gateway's RSS.
    Idle {
        #[arg(long, default_value_t = 10_000)]
        sessions: usize,
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 64)]
        setup_concurrency: usize,
        #[arg(long)]
        out: PathBuf,
    },
    /// The bare UDP forwarder of the baseline.
    Forwarder {
        #[arg(long, default_value = "127.0.0.1:17000")]
        listen: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:15062")]
        far: SocketAddr,
        #[arg(long, default_value_t = 20_000)]
        max: usize,
    },
    /// Write the result tables into a Markdown file between the bench markers.
    Report {
        #[arg(long)]
        baseline: PathBuf,
        #[arg(long)]
        gateway: PathBuf,
        #[arg(long)]
        idle: Option<PathBuf>,
        /// A one-step ramp run with `--setup-concurrency 1`: set-up times of calls alone.
        #[arg(long)]
        alone: Option<PathBuf>,
        /// Criterion/allocation output of `cargo bench -p media --bench relay` to quote.
        #[arg(long)]
        micro: Option<PathBuf>,
        #[arg(long)]
        write: PathBuf,
    },
}

fn main() {
    stats::raise_nofile(1 << 20);
    let cli = Cli::parse();
    let result = match cli.cmd {
        Command::Forwarder { listen, far, max } => {
            forwarder::run(listen, far, max).map_err(|e| e.to_string())
        }
        Command::Report {
            baseline,
            gateway,
            idle,
            alone,
            micro,
            write,
        } => report::write(
            &baseline,
            &gateway,
            idle.as_deref(),
            alone.as_deref(),
            micro.as_deref(),
            &write,
        ),
        cmd => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
            .and_then(|rt| rt.block_on(async_main(cmd))),
    };
    if let Err(e) = result {
        eprintln!("loadgen: {e}");
        std::process::exit(1);
    }
}

async fn async_main(cmd: Command) -> Result<(), String> {
    match cmd {
        Command::Ramp {
            mode,
            steps,
            hold,
            settle,
            target: Target { pid, ws, sip },
            echo,
            forwarder,
            setup_concurrency,
            dtls_setup,
            out,
        } => {
            OFFER_ACTIVE.store(dtls_setup == "active", std::sync::atomic::Ordering::Relaxed);
            let cfg = RampCfg {
                mode,
                steps,
                hold: Duration::from_secs(hold),
                settle: Duration::from_secs(settle),
                pid,
                ws,
                sip,
                echo,
                forwarder,
                setup_concurrency,
            };
            ramp(cfg, &out).await.map(|_| ())
        }
        Command::Idle {
            sessions,
            target: Target { pid, ws, sip },
            setup_concurrency,
            out,
        } => {
            let result = idle(sessions, pid, ws, sip, setup_concurrency).await?;
            std::fs::write(
                &out,
                serde_json::to_string_pretty(&result).unwrap_or_default(),
            )
            .map_err(|e| format!("{}: {e}", out.display()))
        }
        _ => Ok(()),
    }
}

struct RampCfg {
    mode: Mode,
    steps: Vec<usize>,
    hold: Duration,
    settle: Duration,
    pid: u32,
    ws: String,
    sip: SocketAddr,
    echo: SocketAddr,
    forwarder: SocketAddr,
    setup_concurrency: usize,
}

/// The far end's sockets: SIP (served on the runtime), RTP echo and RTCP (media thread).
struct FarEnd {
    media: MediaHandle,
    cert: Option<DtlsCertificate>,
    timeline: Timeline,
}

async fn far_end(
    sip: Option<SocketAddr>,
    echo: SocketAddr,
    n: usize,
    webrtc: bool,
) -> Result<FarEnd, String> {
    let timeline = media::new_timeline(n);
    let cert = if webrtc {
        Some(DtlsCertificate::generate().map_err(|e| e.to_string())?)
    } else {
        None
    };
    let echo_sock =
        std::net::UdpSocket::bind(echo).map_err(|e| format!("echo socket {echo}: {e}"))?;
    // The echo takes every call's packets on one socket: give it room for bursts.
    stats::set_rcvbuf(&echo_sock, 4 << 20);
    let rtcp_addr = SocketAddr::new(echo.ip(), echo.port() + 1);
    let rtcp_sock = std::net::UdpSocket::bind(rtcp_addr)
        .map_err(|e| format!("RTCP socket {rtcp_addr}: {e}"))?;
    let (handle, _thread) = media::spawn(echo_sock, rtcp_sock, cert.clone(), timeline.clone())
        .map_err(|e| format!("media thread: {e}"))?;
    if let Some(sip) = sip {
        let sock = tokio::net::UdpSocket::bind(sip)
            .await
            .map_err(|e| format!("SIP socket {sip}: {e}"))?;
        tokio::spawn(sip::run(sock, echo, timeline.clone()));
    }
    Ok(FarEnd {
        media: handle,
        cert,
        timeline,
    })
}

/// Runs the steps; the results so far are written to `out` after every step, so a run cut short
/// by its time limit still leaves the steps it finished.
async fn ramp(cfg: RampCfg, out: &std::path::Path) -> Result<Vec<Value>, String> {
    let max = cfg.steps.iter().copied().max().unwrap_or(0);
    let webrtc = cfg.mode == Mode::Gateway;
    let far = far_end(webrtc.then_some(cfg.sip), cfg.echo, max, webrtc).await?;
    let cfg = Arc::new(cfg);
    let rss_idle = stats::rss_kib(cfg.pid).unwrap_or(0);
    let sem = Arc::new(Semaphore::new(cfg.setup_concurrency.max(1)));
    let mut results = Vec::new();
    let mut have = 0usize;
    for &n in &cfg.steps {
        if n <= have {
            continue;
        }
        let prev = have;
        let t_setup = Instant::now();
        let mut waits = Vec::new();
        for i in have..n {
            match cfg.mode {
                Mode::Baseline => {
                    let socket = std::net::UdpSocket::bind("127.0.0.1:0")
                        .map_err(|e| format!("peer socket: {e}"))?;
                    far.media.send(Cmd::Add(PeerSetup {
                        id: i as u32,
                        socket,
                        remote: cfg.forwarder,
                        webrtc: None,
                    }));
                }
                Mode::Gateway => {
                    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
                    let permit = sem.clone();
                    let media = far.media.clone();
                    let timeline = far.timeline.clone();
                    let cert = far.cert.clone();
                    let url = cfg.ws.clone();
                    tokio::spawn(async move {
                        let Ok(permit) = permit.acquire_owned().await else {
                            return;
                        };
                        session(
                            i as u32,
                            url,
                            Some((media, cert, timeline)),
                            done_tx,
                            permit,
                        )
                        .await;
                    });
                    waits.push(done_rx);
                }
            }
        }
        let mut setup_errors = 0usize;
        for w in waits {
            match tokio::time::timeout(Duration::from_secs(60), w).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => {
                    setup_errors += 1;
                    if setup_errors <= 5 {
                        eprintln!("setup failed: {e}");
                    }
                }
                _ => setup_errors += 1,
            }
        }
        // Wait for the media of every call to flow (or to have failed).
        let deadline = Instant::now() + Duration::from_secs(20);
        while far.media.ready.load(std::sync::atomic::Ordering::Relaxed)
            + far.media.failed.load(std::sync::atomic::Ordering::Relaxed)
            + setup_errors
            < n
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let setup_wall = t_setup.elapsed();
        have = n;
        tokio::time::sleep(cfg.settle).await;

        let target0 = stats::cpu_seconds(cfg.pid).ok_or("the process under test is gone")?;
        let self0 = stats::cpu_seconds(std::process::id()).unwrap_or(0.0);
        let busy0 = stats::machine_busy_seconds().unwrap_or(0.0);
        let t0 = Instant::now();
        far.media.send(Cmd::StartWindow);
        tokio::time::sleep(cfg.hold).await;
        far.media.send(Cmd::EndWindow);
        let wall = t0.elapsed().as_secs_f64();
        let target1 = stats::cpu_seconds(cfg.pid).ok_or("the process under test is gone")?;
        let self1 = stats::cpu_seconds(std::process::id()).unwrap_or(0.0);
        let busy1 = stats::machine_busy_seconds().unwrap_or(0.0);
        let rss = stats::rss_kib(cfg.pid).unwrap_or(0);
        // Packets sent at the end of the window get time to come back.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let s = far.media.collect().await;

        let relayed = s.far_rx + s.browser_rx;
        let window = s.window.as_secs_f64().max(1e-9);
        let cpu = target1 - target0;
        let loss = if s.expected > 0 {
            1.0 - s.received as f64 / s.expected as f64
        } else {
            1.0
        };
        let setup = setup_stats(&far.timeline, prev, n);
        let step = json!({
            "calls": n,
            "ready": far.media.ready.load(std::sync::atomic::Ordering::Relaxed),
            "without_media": n.saturating_sub(far.media.ready.load(std::sync::atomic::Ordering::Relaxed)),
            "failed": s.failed + setup_errors,
            "setup_wall_s": setup_wall.as_secs_f64(),
            "window_s": window,
            "cpu_share": cpu / wall,
            "loadgen_cpu_share": (self1 - self0) / wall,
            // Everything else the machine ran meanwhile (other users' builds and tests).
            "other_cpu_share": ((busy1 - busy0) - cpu - (self1 - self0)).max(0.0) / wall,
            "relayed_pps": relayed as f64 / window,
            "us_per_packet": if relayed > 0 { cpu * 1e6 / relayed as f64 } else { 0.0 },
            "expected": s.expected,
            "received": s.received,
            "duplicates": s.duplicates,
            "loss": loss,
            "rtt_p50_us": s.rtt.quantile_us(0.50),
            "rtt_p99_us": s.rtt.quantile_us(0.99),
            "rtt_samples": s.rtt.count(),
            "rss_kib": rss,
            "rss_idle_kib": rss_idle,
            "rss_per_call_kib": (rss.saturating_sub(rss_idle)) as f64 / n as f64,
            "setup": setup,
        });
        eprintln!("step: {step}");
        results.push(step);
        std::fs::write(
            out,
            serde_json::to_string_pretty(&results).unwrap_or_default(),
        )
        .map_err(|e| format!("{}: {e}", out.display()))?;
    }
    far.media.send(Cmd::Stop);
    Ok(results)
}

/// Call-setup quantiles over calls `from..to`.
fn setup_stats(timeline: &Timeline, from: usize, to: usize) -> Value {
    let Ok(t) = timeline.lock() else {
        return Value::Null;
    };
    let mut call_result = Vec::new();
    let mut call_invite = Vec::new();
    let mut media_invite = Vec::new();
    let mut ok_answered = Vec::new();
    for c in t.get(from..to).unwrap_or(&[]) {
        if let (Some(a), Some(b)) = (c.call_sent, c.result_rx) {
            call_result.push(b.saturating_duration_since(a));
        }
        if let (Some(a), Some(b)) = (c.call_sent, c.invite_rx) {
            call_invite.push(b.saturating_duration_since(a));
        }
        if let (Some(a), Some(b)) = (c.dtls_tx, c.invite_rx) {
            media_invite.push(b.saturating_duration_since(a));
        }
        if let (Some(a), Some(b)) = (c.ok_sent, c.answered_rx) {
            ok_answered.push(b.saturating_duration_since(a));
        }
    }
    let q = |v: &mut Vec<Duration>| {
        json!({
            "n": v.len(),
            "p50_ms": stats::quantile_ms(v, 0.5),
            "p99_ms": stats::quantile_ms(v, 0.99),
        })
    };
    json!({
        "call_to_result": q(&mut call_result),
        "call_to_invite": q(&mut call_invite),
        "dtls_to_invite": q(&mut media_invite),
        "ok_to_answered": q(&mut ok_answered),
    })
}

type WsTx = SplitSink<WebSocketStream<MaybeTlsStream<TcpStream>>, Message>;
type WsRx = SplitStream<WebSocketStream<MaybeTlsStream<TcpStream>>>;

/// Next JSON frame that `want` accepts; a `hangup` event or the socket closing is an error.
async fn wait_for(rx: &mut WsRx, want: impl Fn(&Value) -> bool) -> Result<Value, String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let msg = tokio::time::timeout_at(deadline, rx.next())
            .await
            .map_err(|_| "timed out waiting for the gateway".to_owned())?
            .ok_or("socket closed")?
            .map_err(|e| e.to_string())?;
        let Message::Text(text) = msg else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else {
            continue;
        };
        if want(&v) {
            return Ok(v);
        }
        if v["type"] == "hangup" {
            return Err(format!("hangup: {}", v["payload"]));
        }
        if v["type"] == "error" {
            return Err(format!("error: {}", v["payload"]));
        }
    }
}

async fn send(tx: &mut WsTx, v: Value) -> Result<(), String> {
    tx.send(Message::text(v.to_string()))
        .await
        .map_err(|e| e.to_string())
}

/// One browser: connect, register, and (with `call`) call and bring up its WebRTC peer. Reports
/// set-up on `done`, then keeps reading the socket (so pings are answered) until it closes.
async fn session(
    i: u32,
    url: String,
    call: Option<(MediaHandle, Option<DtlsCertificate>, Timeline)>,
    done: tokio::sync::oneshot::Sender<Result<(), String>>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let (tx, mut rx) = match setup(i, &url, call.as_ref()).await {
        Ok(ws) => ws,
        Err(e) => {
            let _ = done.send(Err(e));
            return;
        }
    };
    drop(permit);
    let _ = done.send(Ok(()));
    let _tx = tx;
    while let Some(Ok(_)) = rx.next().await {}
}

async fn setup(
    i: u32,
    url: &str,
    call: Option<&(MediaHandle, Option<DtlsCertificate>, Timeline)>,
) -> Result<(WsTx, WsRx), String> {
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut tx, mut rx) = ws.split();
    wait_for(&mut rx, |v| v["type"] == "hello").await?;
    let dn = (AGENT_BASE + i).to_string();
    send(
        &mut tx,
        json!({"type": "register", "id": "r", "payload": {"dn": dn, "password": "bench"}}),
    )
    .await?;
    let r = wait_for(&mut rx, |v| v["id"] == "r").await?;
    if r["type"] != "result" {
        return Err(format!("register: {r}"));
    }
    let Some((media, cert, timeline)) = call else {
        return Ok((tx, rx));
    };
    let cert = cert.as_ref().ok_or("no certificate")?;

    let socket = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let local = socket.local_addr().map_err(|e| e.to_string())?;
    let (ufrag, pwd) = ::media::ice_lite::random_credentials();
    let codecs = [Codec::opus(111), Codec::telephone_event(126, 48000)];
    let offer = build_webrtc_offer(&WebRtcOfferParams {
        ips: &[local.ip()],
        port: local.port(),
        tcp: None,
        ice_ufrag: &ufrag,
        ice_pwd: &pwd,
        fingerprint: cert.fingerprint(),
        codecs: &codecs,
        direction: Direction::SendRecv,
        ssrc: rand::random(),
        cname: "loadgen",
        session_id: u64::from(rand::random::<u32>()),
        session_version: 1,
    })
    .map_err(|e| e.to_string())?;
    let offer = browser_offer(&offer)?;
    set_time(timeline, i, |c| &mut c.call_sent);
    send(
        &mut tx,
        json!({"type": "call", "id": "c", "payload": {"to": (CALLEE_BASE + i).to_string(), "sdp": offer}}),
    )
    .await?;
    let r = wait_for(&mut rx, |v| v["id"] == "c").await?;
    set_time(timeline, i, |c| &mut c.result_rx);
    if r["type"] != "result" {
        return Err(format!("call: {r}"));
    }
    let answer = r["payload"]["sdp"]
        .as_str()
        .ok_or("call result without sdp")?;
    let desc = parse_webrtc(answer).map_err(|e| format!("answer: {e}"))?;
    let remote = answer_address(answer, desc.mline_index)?;
    let role = role_from_answer(&desc.setup).ok_or("answer a=setup")?;
    let pt = desc
        .codecs
        .iter()
        .find(|c| !c.is_telephone_event())
        .map(|c| c.pt)
        .ok_or("answer has no codec")?;
    media.send(Cmd::Add(PeerSetup {
        id: i,
        socket,
        remote,
        webrtc: Some(WebRtcSetup {
            local_ufrag: ufrag,
            remote_ufrag: desc.ice_ufrag,
            remote_pwd: desc.ice_pwd,
            remote_fingerprint: desc.fingerprint,
            role,
            pt,
        }),
    }));
    wait_for(&mut rx, |v| v["type"] == "answered").await?;
    set_time(timeline, i, |c| &mut c.answered_rx);
    Ok((tx, rx))
}

fn set_time(timeline: &Timeline, i: u32, field: impl Fn(&mut CallTimes) -> &mut Option<Instant>) {
    let now = Instant::now();
    if let Ok(mut t) = timeline.lock() {
        if let Some(c) = t.get_mut(i as usize) {
            *field(c) = Some(now);
        }
    }
}

/// The media crate writes offers as the gateway sends them (ICE-lite); a browser is a full
/// agent, so `a=ice-lite` goes. With `--dtls-setup active`, `a=setup:actpass` becomes `active`.
fn browser_offer(sdp: &str) -> Result<String, String> {
    let mut desc = rtc_sdp::SessionDescription::unmarshal(&mut Cursor::new(sdp.as_bytes()))
        .map_err(|e| e.to_string())?;
    desc.attributes.retain(|a| a.key != "ice-lite");
    if OFFER_ACTIVE.load(std::sync::atomic::Ordering::Relaxed) {
        for m in &mut desc.media_descriptions {
            for a in &mut m.attributes {
                if a.key == "setup" {
                    a.value = Some("active".to_owned());
                }
            }
        }
    }
    Ok(desc.marshal())
}

/// Where the gateway's ICE-lite endpoint listens: its answer's `c=` and audio port (which is
/// also its single host candidate).
fn answer_address(sdp: &str, mline: usize) -> Result<SocketAddr, String> {
    let desc = rtc_sdp::SessionDescription::unmarshal(&mut Cursor::new(sdp.as_bytes()))
        .map_err(|e| e.to_string())?;
    let m = desc.media_descriptions.get(mline).ok_or("no m-line")?;
    let c = m
        .connection_information
        .as_ref()
        .or(desc.connection_information.as_ref())
        .and_then(|c| c.address.as_ref())
        .ok_or("answer has no c=")?;
    let ip: IpAddr = c.address.parse().map_err(|_| "answer c= is not an IP")?;
    let port = u16::try_from(m.media_name.port.value).map_err(|_| "answer port")?;
    Ok(SocketAddr::new(ip, port))
}

async fn idle(
    n: usize,
    pid: u32,
    ws: String,
    sip: SocketAddr,
    concurrency: usize,
) -> Result<Value, String> {
    let timeline = media::new_timeline(0);
    let sock = tokio::net::UdpSocket::bind(sip)
        .await
        .map_err(|e| format!("SIP socket {sip}: {e}"))?;
    let echo = SocketAddr::new(sip.ip(), sip.port() + 2);
    tokio::spawn(sip::run(sock, echo, timeline));
    let rss0 = stats::rss_kib(pid).unwrap_or(0);
    let sem = Arc::new(Semaphore::new(concurrency.max(1)));
    let t0 = Instant::now();
    let mut waits = Vec::new();
    for i in 0..n {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let sem = sem.clone();
        let url = ws.clone();
        tokio::spawn(async move {
            let Ok(permit) = sem.acquire_owned().await else {
                return;
            };
            session(i as u32, url, None, done_tx, permit).await;
        });
        waits.push(done_rx);
    }
    let mut ok = 0usize;
    let mut errors = 0usize;
    for w in waits {
        match tokio::time::timeout(Duration::from_secs(120), w).await {
            Ok(Ok(Ok(()))) => ok += 1,
            Ok(Ok(Err(e))) => {
                errors += 1;
                if errors <= 5 {
                    eprintln!("idle session failed: {e}");
                }
            }
            _ => errors += 1,
        }
    }
    let setup = t0.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = stats::rss_kib(pid).unwrap_or(0);
    let c0 = stats::cpu_seconds(pid).unwrap_or(0.0);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_cpu = (stats::cpu_seconds(pid).unwrap_or(0.0) - c0) / 5.0;
    let v = json!({
        "sessions": n,
        "registered": ok,
        "failed": errors,
        "setup_s": setup.as_secs_f64(),
        "rss_idle_kib": rss0,
        "rss_kib": rss,
        "rss_per_session_kib": rss.saturating_sub(rss0) as f64 / ok.max(1) as f64,
        "idle_cpu_share": idle_cpu,
    });
    eprintln!("idle: {v}");
    Ok(v)
}
