//! A SIP far end's media, played by the test on a UDP port a SIPp scenario advertises: it
//! records what the gateway sends and, once it knows where that comes from (symmetric RTP),
//! sends a 1000 Hz (or chosen) G.711 tone back every 20 ms, an RFC 4733 key press when asked, or, while
//! silent, one comfort-noise packet (PT 13) now and then and an RTCP report every 5 s, as
//! Genesys' media does during long silences.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use media::relay::header;

use super::kamailio::pick_port;
use super::peer::{decode_g711, encode_g711, ToneGenerator};

/// The far end's telephone-event payload type (fixtures/sipp/*_rtpport.xml).
pub const FAR_TE: u8 = 101;

/// One packet the far end received.
#[derive(Clone, Debug)]
pub struct Got {
    /// Payload type.
    pub pt: u8,
    /// Sequence number.
    pub seq: u16,
    /// Timestamp.
    pub ts: u32,
    /// Payload.
    pub payload: Vec<u8>,
}

/// What the far end sends.
enum Control {
    Key(u8),
    /// Comfort noise and RTCP only (true) or the tone (false).
    Silent(bool),
}

/// The far end's RTP (and RTCP on the port above).
pub struct FarEnd {
    /// Its RTP port (even).
    pub port: u16,
    /// The payload type of its audio: 0 (PCMU) or 8 (PCMA).
    pub pt: u8,
    received: Arc<Mutex<Vec<Got>>>,
    control: mpsc::Sender<Control>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FarEnd {
    /// A PCMU far end.
    pub fn start() -> FarEnd {
        FarEnd::start_with(0)
    }

    /// A far end whose audio is `pt`: 0 (PCMU) or 8 (PCMA).
    pub fn start_with(pt: u8) -> FarEnd {
        FarEnd::start_tone(pt, 1000.0)
    }

    /// A far end whose audio is `pt` (0 PCMU, 8 PCMA) playing a `freq` Hz tone, so a test can
    /// tell which of two far ends the agent hears.
    pub fn start_tone(pt: u8, freq: f64) -> FarEnd {
        let (port, socket, rtcp) = loop {
            let port = pick_port() & !1;
            let rtp = UdpSocket::bind(("127.0.0.1", port));
            let rtcp = UdpSocket::bind(("127.0.0.1", port + 1));
            if let (Ok(rtp), Ok(rtcp)) = (rtp, rtcp) {
                break (port, rtp, rtcp);
            }
        };
        socket
            .set_read_timeout(Some(Duration::from_millis(2)))
            .expect("timeout");
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (control, control_rx) = mpsc::channel();
        let thread = {
            let received = received.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                far_end_loop(socket, rtcp, pt, freq, received, control_rx, stop)
            })
        };
        FarEnd {
            port,
            pt,
            received,
            control,
            stop,
            thread: Some(thread),
        }
    }

    /// Everything received so far.
    pub fn packets(&self) -> Vec<Got> {
        self.received.lock().unwrap().clone()
    }

    /// Forgets what was received so far.
    pub fn clear(&self) {
        self.received.lock().unwrap().clear();
    }

    /// The audio received in its own law, decoded, in arrival order.
    pub fn pcm(&self) -> Vec<i16> {
        self.packets()
            .iter()
            .filter(|p| p.pt == self.pt)
            .flat_map(|p| decode_g711(&p.payload, self.pt == 0))
            .collect()
    }

    /// Sends one 100 ms key press instead of audio.
    pub fn press(&self, event: u8) {
        self.control
            .send(Control::Key(event))
            .expect("far-end thread");
    }

    /// Comfort noise and RTCP only (true), or the tone again (false).
    pub fn set_silent(&self, silent: bool) {
        self.control
            .send(Control::Silent(silent))
            .expect("far-end thread");
    }
}

impl Drop for FarEnd {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A minimal RTCP receiver report (RFC 3550 §6.4.2, no report blocks).
fn receiver_report(ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 201, 0, 1];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p
}

fn far_end_loop(
    socket: UdpSocket,
    rtcp: UdpSocket,
    pt: u8,
    freq: f64,
    received: Arc<Mutex<Vec<Got>>>,
    control: mpsc::Receiver<Control>,
    stop: Arc<AtomicBool>,
) {
    let mut buf = [0u8; 1500];
    let mut gateway: Option<SocketAddr> = None;
    let mut tone = ToneGenerator::new(freq, 8000, 0.5);
    let (mut seq, mut ts, ssrc) = (5000u16, 80_000u32, 0x0bad_f00du32);
    let mut next = Instant::now();
    // A key press in progress: event, packets sent, start timestamp.
    let mut key: Option<(u8, u32, u32)> = None;
    let mut silent = false;
    let mut last_cn: Option<Instant> = None;
    let mut next_rtcp = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if let Ok((n, from)) = socket.recv_from(&mut buf) {
            let p = &buf[..n];
            if header::is_rtp(p) {
                if gateway != Some(from) {
                    gateway = Some(from);
                    next = Instant::now();
                }
                received.lock().unwrap().push(Got {
                    pt: header::pt(p),
                    seq: header::seq(p),
                    ts: header::ts(p),
                    payload: p[header::LEN..].to_vec(),
                });
            }
        }
        while let Ok(c) = control.try_recv() {
            match c {
                Control::Key(event) if key.is_none() => key = Some((event, 0, ts)),
                Control::Key(_) => {}
                Control::Silent(s) => {
                    silent = s;
                    last_cn = None;
                }
            }
        }
        let Some(to) = gateway else { continue };
        if Instant::now() >= next_rtcp {
            next_rtcp = Instant::now() + Duration::from_secs(5);
            let _ = rtcp.send_to(
                &receiver_report(ssrc),
                SocketAddr::new(to.ip(), to.port() + 1),
            );
        }
        if Instant::now() < next {
            continue;
        }
        next += Duration::from_millis(20);
        let mut packet = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        header::set_ssrc(&mut packet, ssrc);
        if silent {
            // One CN packet (RFC 3389: the noise level) every 45 s, the clock running on.
            ts = ts.wrapping_add(160);
            if last_cn.is_some_and(|t| t.elapsed() < Duration::from_secs(45)) {
                continue;
            }
            last_cn = Some(Instant::now());
            header::set_seq(&mut packet, seq);
            seq = seq.wrapping_add(1);
            header::set_pt_marker(&mut packet, 13, true);
            header::set_ts(&mut packet, ts);
            packet.push(60);
            let _ = socket.send_to(&packet, to);
            continue;
        }
        header::set_seq(&mut packet, seq);
        seq = seq.wrapping_add(1);
        match key.as_mut() {
            // 5 updates of 20 ms, then the end packet three times (RFC 4733 §2.5.1.4).
            Some((event, sent, start)) => {
                *sent += 1;
                let end = *sent >= 5;
                let duration = 160 * (*sent).min(5) as u16;
                header::set_pt_marker(&mut packet, FAR_TE, *sent == 1);
                header::set_ts(&mut packet, *start);
                packet.extend_from_slice(&[*event, if end { 0x8a } else { 0x0a }]);
                packet.extend_from_slice(&duration.to_be_bytes());
                if *sent == 7 {
                    key = None;
                    ts = ts.wrapping_add(800);
                }
            }
            None => {
                header::set_pt_marker(&mut packet, pt, false);
                header::set_ts(&mut packet, ts);
                ts = ts.wrapping_add(160);
                packet.extend_from_slice(&encode_g711(&tone.next_samples(160), pt == 0));
            }
        }
        let _ = socket.send_to(&packet, to);
    }
}
