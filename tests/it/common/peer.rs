//! A WebRTC peer that plays the browser in integration tests.
//!
//! Built on the async `webrtc` crate (webrtc-rs 0.21): full ICE (the controlling side toward an
//! ICE-lite peer, whether it offers or answers, as a browser is), DTLS-SRTP, rtcp-mux, BUNDLE,
//! one audio transceiver (sendrecv) fed from a `TrackLocalStaticRTP` we write raw RTP into.
//!
//! Unlike a browser, webrtc-rs does not answer an offer with no common audio codec by rejecting
//! the m-line (port 0): `create_answer` fails. `try_accept_offer` returns that as `Err`;
//! `accept_offer` panics.
//!
//! Loopback only: mDNS is disabled (no multicast socket is ever opened), candidates are UDP4, and
//! the one socket is bound to `127.0.0.1:0`, so the only candidate is a 127.0.0.1 host candidate.
//! (webrtc 0.21 has no interface/IP filter: binding a concrete address is how gathering is
//! restricted; a wildcard bind would expand to every non-loopback interface instead.)
//!
//! Also here: a G.711 µ-law/A-law encoder and decoder, Opus through libopus (`audiopus`, as a
//! browser encodes and decodes it: 48 kHz), and a dominant-frequency estimator, so tests can
//! check that audio really arrives.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::f64::consts::PI;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rtc::ice::mdns::MulticastDnsMode;
use rtc::ice::network_type::NetworkType;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::media_stream::MediaStreamTrack;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceCandidateInit, RTCIceGatheringState, RTCIceServer,
    RTCPeerConnectionIceEvent, RTCPeerConnectionState, RTCSessionDescription, SettingEngineBuilder,
};
use webrtc::rtp_transceiver::RtpSender;

/// How long `create_offer` / `accept_offer` wait for ICE gathering to complete.
const GATHER_TIMEOUT: Duration = Duration::from_secs(5);
/// Packetisation interval, as browsers send audio.
const PTIME: Duration = Duration::from_millis(20);
/// Smallest numbered payload: 8-byte counter + 8-byte timestamp.
const NUMBERED_HEADER: usize = 16;

/// What kind of browser to play.
#[derive(Debug, Clone)]
pub struct PeerOptions {
    /// Audio codecs to register, in preference order: any of `opus`, `PCMU`, `PCMA`, `G722`,
    /// `telephone-event` (8 kHz), `telephone-event/48000` (case-insensitive). Only these
    /// appear in our SDP.
    pub codecs: Vec<&'static str>,
    /// ICE server URLs (`stun:` / `turn:`) handed to the peer connection, as from `hello`.
    pub ice_servers: Vec<String>,
}

impl Default for PeerOptions {
    /// A Chrome-like audio offer: Opus, then G.711, plus telephone-event.
    fn default() -> Self {
        PeerOptions {
            codecs: vec!["opus", "PCMU", "PCMA", "telephone-event"],
            ice_servers: vec![],
        }
    }
}

/// One RTP packet received on the remote track.
#[derive(Debug, Clone)]
pub struct ReceivedPacket {
    pub seq: u16,
    pub ts: u32,
    pub pt: u8,
    pub ssrc: u32,
    pub payload: Vec<u8>,
    pub at: Instant,
}

/// The audio codec the negotiation settled on for our sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegotiatedCodec {
    /// Encoding name as in `a=rtpmap`, e.g. `PCMU`, `opus`.
    pub name: String,
    pub payload_type: u8,
    pub clock_rate: u32,
    /// Payload type of telephone-event at the same clock rate, if negotiated too.
    pub telephone_event_pt: Option<u8>,
}

/// State shared between the `Peer` handle, the event handler and the tasks.
struct Shared {
    created: Instant,
    received: Mutex<Vec<ReceivedPacket>>,
    sent_counters: Mutex<BTreeSet<u64>>,
    local_candidates: Mutex<Vec<Value>>,
    negotiated: Mutex<Option<NegotiatedCodec>>,
    /// Next RTP sequence number and timestamp, shared by every send task so streams stay
    /// continuous across calls, as a browser's would.
    rtp_state: Mutex<(u16, u32)>,
    conn_state: watch::Sender<RTCPeerConnectionState>,
    gathering: watch::Sender<RTCIceGatheringState>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    closed: AtomicBool,
    /// Echo mode: every received packet's payload is sent straight back (see `set_echo`).
    echo: AtomicBool,
    /// Our track and SSRC, set once the track exists (the handler is built before it).
    track: std::sync::OnceLock<(Arc<TrackLocalStaticRTP>, u32)>,
}

impl Shared {
    /// Next (sequence number, timestamp) for one packet of `ts_step` samples.
    fn next_rtp(&self, ts_step: u32) -> (u16, u32) {
        let mut state = self.rtp_state.lock().unwrap();
        let now = *state;
        state.0 = state.0.wrapping_add(1);
        state.1 = state.1.wrapping_add(ts_step);
        now
    }
}

struct Handler {
    shared: Arc<Shared>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(init) = event.candidate.to_json() {
            self.shared
                .local_candidates
                .lock()
                .unwrap()
                .push(serde_json::json!({
                    "candidate": init.candidate,
                    "sdpMid": "0",
                    "sdpMLineIndex": 0,
                }));
        }
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        self.shared.gathering.send_replace(state);
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        self.shared.conn_state.send_replace(state);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        // Runs on the connection's driver: hand the reading to a task and return at once.
        let shared = self.shared.clone();
        let reader = tokio::spawn(async move {
            while let Some(event) = track.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(packet) = event {
                    shared.received.lock().unwrap().push(ReceivedPacket {
                        seq: packet.header.sequence_number,
                        ts: packet.header.timestamp,
                        pt: packet.header.payload_type,
                        ssrc: packet.header.ssrc,
                        payload: packet.payload.to_vec(),
                        at: Instant::now(),
                    });
                    if shared.echo.load(Ordering::Relaxed) {
                        echo_back(&shared, packet).await;
                    }
                }
            }
        });
        self.shared.tasks.lock().unwrap().push(reader);
    }
}

/// Sends a received packet's payload back on our own stream (our SSRC, sequence, timestamp and
/// negotiated payload type), as an echo test's far end would.
async fn echo_back(shared: &Shared, packet: rtp::Packet) {
    let Some((track, ssrc)) = shared.track.get() else {
        return;
    };
    let Some(codec) = shared.negotiated.lock().unwrap().clone() else {
        return;
    };
    let (seq, ts) = shared.next_rtp(codec.clock_rate / 50);
    let echoed = rtp::Packet {
        header: rtp::header::Header {
            version: 2,
            payload_type: codec.payload_type,
            sequence_number: seq,
            timestamp: ts,
            ssrc: *ssrc,
            ..Default::default()
        },
        payload: packet.payload,
    };
    let _ = track.write_rtp(echoed).await;
}

/// A browser-like WebRTC endpoint on 127.0.0.1.
pub struct Peer {
    pc: Arc<dyn PeerConnection>,
    track: Arc<TrackLocalStaticRTP>,
    sender: Arc<dyn RtpSender>,
    ssrc: u32,
    shared: Arc<Shared>,
}

/// Randomness without a `rand` dependency: std's per-process random hash keys.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(Instant::now().elapsed().as_nanos());
    hasher.finish()
}

fn codec_parameters(name: &str) -> RTCRtpCodecParameters {
    let (mime, clock_rate, channels, fmtp, pt) = match name.to_ascii_lowercase().as_str() {
        "opus" => ("audio/opus", 48000, 2, "minptime=10;useinbandfec=1", 111),
        "pcmu" => ("audio/PCMU", 8000, 0, "", 0),
        "pcma" => ("audio/PCMA", 8000, 0, "", 8),
        "g722" => ("audio/G722", 8000, 0, "", 9),
        "telephone-event" => ("audio/telephone-event", 8000, 0, "0-15", 126),
        // What Chrome pairs with Opus: RFC 4733 events on Opus' clock.
        "telephone-event/48000" => ("audio/telephone-event", 48000, 0, "0-15", 110),
        other => {
            panic!(
                "PeerOptions: unknown codec {other:?} \
                 (opus, PCMU, PCMA, G722, telephone-event, telephone-event/48000)"
            )
        }
    };
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: mime.to_owned(),
            clock_rate,
            channels,
            sdp_fmtp_line: fmtp.to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: pt,
    }
}

fn mime_subtype(mime: &str) -> &str {
    mime.split_once('/').map_or(mime, |(_, sub)| sub)
}

fn is_media_codec(mime: &str) -> bool {
    let sub = mime_subtype(mime).to_ascii_lowercase();
    !matches!(
        sub.as_str(),
        "telephone-event" | "cn" | "red" | "rtx" | "ulpfec" | "flexfec"
    )
}

impl Peer {
    /// A peer connection with one sendrecv audio transceiver, not yet negotiated.
    pub async fn new(opts: PeerOptions) -> Peer {
        assert!(!opts.codecs.is_empty(), "PeerOptions.codecs is empty");
        let mut media_engine = MediaEngine::default();
        let codecs: Vec<RTCRtpCodecParameters> =
            opts.codecs.iter().map(|c| codec_parameters(c)).collect();
        for codec in &codecs {
            media_engine
                .register_codec(codec.clone(), RtpCodecKind::Audio)
                .expect("register audio codec");
        }

        let setting_engine = SettingEngineBuilder::new()
            // The default (QueryOnly) opens a multicast socket: not allowed off loopback here.
            .with_multicast_dns_mode(MulticastDnsMode::Disabled)
            .with_network_types(vec![NetworkType::Udp4])
            .build();

        let mut config = RTCConfigurationBuilder::new();
        if !opts.ice_servers.is_empty() {
            config = config.with_ice_servers(vec![RTCIceServer {
                urls: opts.ice_servers.clone(),
                ..Default::default()
            }]);
        }

        let (conn_state, _) = watch::channel(RTCPeerConnectionState::New);
        let (gathering, _) = watch::channel(RTCIceGatheringState::New);
        let seed = random_u64();
        let shared = Arc::new(Shared {
            created: Instant::now(),
            received: Mutex::new(Vec::new()),
            sent_counters: Mutex::new(BTreeSet::new()),
            local_candidates: Mutex::new(Vec::new()),
            negotiated: Mutex::new(None),
            rtp_state: Mutex::new(((seed >> 32) as u16, (seed >> 8) as u32)),
            conn_state,
            gathering,
            tasks: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
            echo: AtomicBool::new(false),
            track: std::sync::OnceLock::new(),
        });

        let pc = PeerConnectionBuilder::new()
            .with_configuration(config.build())
            .with_media_engine(media_engine)
            .with_setting_engine(setting_engine)
            .with_handler(Arc::new(Handler {
                shared: shared.clone(),
            }))
            // A concrete address binds exactly one socket: the only host candidate is 127.0.0.1.
            .with_udp_addrs(vec!["127.0.0.1:0".to_string()])
            .build()
            .await
            .expect("build peer connection");
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);

        let ssrc = (random_u64() as u32).max(1);
        let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            format!("stream-{ssrc:08x}"),
            format!("audio-{ssrc:08x}"),
            "audio".to_string(),
            RtpCodecKind::Audio,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                active: true,
                // Left empty on purpose: a codec here becomes the transceiver's codec
                // preference and the SDP would list only that one codec.
                ..Default::default()
            }],
        )));
        // add_track, like a browser's addTrack: the transceiver is sendrecv and is reused by a
        // remote offer's audio m-line (accept_offer), where addTransceiver's would not be.
        let sender = pc
            .add_track(track.clone() as Arc<dyn TrackLocal>)
            .await
            .expect("add audio track");
        let _ = shared.track.set((track.clone(), ssrc));

        Peer {
            pc,
            track,
            sender,
            ssrc,
            shared,
        }
    }

    /// Our sending SSRC.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// The underlying connection, for anything this wrapper does not cover.
    pub fn connection(&self) -> &Arc<dyn PeerConnection> {
        &self.pc
    }

    async fn wait_gathered(&self) {
        let mut rx = self.shared.gathering.subscribe();
        let _ = tokio::time::timeout(
            GATHER_TIMEOUT,
            rx.wait_for(|s| *s == RTCIceGatheringState::Complete),
        )
        .await;
    }

    async fn local_sdp(&self) -> String {
        self.pc
            .local_description()
            .await
            .map(|d| d.sdp)
            .unwrap_or_default()
    }

    async fn refresh_negotiated(&self) {
        let negotiated = match self.sender.get_parameters().await {
            Ok(params) => {
                let codecs = &params.rtp_parameters.codecs;
                codecs
                    .iter()
                    .find(|c| is_media_codec(&c.rtp_codec.mime_type))
                    .map(|c| NegotiatedCodec {
                        name: mime_subtype(&c.rtp_codec.mime_type).to_string(),
                        payload_type: c.payload_type,
                        clock_rate: c.rtp_codec.clock_rate,
                        telephone_event_pt: codecs
                            .iter()
                            .find(|t| {
                                mime_subtype(&t.rtp_codec.mime_type)
                                    .eq_ignore_ascii_case("telephone-event")
                                    && t.rtp_codec.clock_rate == c.rtp_codec.clock_rate
                            })
                            .map(|t| t.payload_type),
                    })
            }
            Err(_) => None,
        };
        *self.shared.negotiated.lock().unwrap() = negotiated;
    }

    /// createOffer + setLocalDescription, then waits for gathering to complete so the SDP carries
    /// our host candidate.
    pub async fn try_create_offer(&self) -> Result<String, String> {
        let offer = self
            .pc
            .create_offer(None)
            .await
            .map_err(|e| format!("create_offer: {e}"))?;
        self.pc
            .set_local_description(offer)
            .await
            .map_err(|e| format!("set_local_description(offer): {e}"))?;
        self.wait_gathered().await;
        Ok(self.local_sdp().await)
    }

    /// A re-offer on this connection with new ICE credentials (an ICE restart, as
    /// `createOffer({iceRestart: true})`), applied locally; the SDP.
    pub async fn create_restart_offer(&self) -> String {
        let options = rtc::peer_connection::configuration::RTCOfferOptions { ice_restart: true };
        let offer = self
            .pc
            .create_offer(Some(options))
            .await
            .expect("create_offer(iceRestart)");
        self.pc
            .set_local_description(offer)
            .await
            .expect("set_local_description(restart offer)");
        self.wait_gathered().await;
        self.local_sdp().await
    }

    /// [`try_create_offer`](Self::try_create_offer), panicking on error.
    pub async fn create_offer(&self) -> String {
        self.try_create_offer().await.expect("create offer")
    }

    /// setRemoteDescription(answer). On success the negotiated codec is known.
    pub async fn try_set_remote_answer(&self, sdp: &str) -> Result<(), String> {
        let answer = RTCSessionDescription::answer(sdp.to_string())
            .map_err(|e| format!("parse answer: {e}"))?;
        self.pc
            .set_remote_description(answer)
            .await
            .map_err(|e| format!("set_remote_description(answer): {e}"))?;
        self.refresh_negotiated().await;
        Ok(())
    }

    /// [`try_set_remote_answer`](Self::try_set_remote_answer), panicking on error.
    pub async fn set_remote_answer(&self, sdp: &str) {
        self.try_set_remote_answer(sdp)
            .await
            .expect("set remote answer")
    }

    /// For incoming calls: setRemoteDescription(offer), createAnswer, setLocalDescription, wait
    /// for gathering; returns the answer SDP.
    pub async fn try_accept_offer(&self, sdp: &str) -> Result<String, String> {
        let offer = RTCSessionDescription::offer(sdp.to_string())
            .map_err(|e| format!("parse offer: {e}"))?;
        self.pc
            .set_remote_description(offer)
            .await
            .map_err(|e| format!("set_remote_description(offer): {e}"))?;
        let answer = self
            .pc
            .create_answer(None)
            .await
            .map_err(|e| format!("create_answer: {e}"))?;
        self.pc
            .set_local_description(answer)
            .await
            .map_err(|e| format!("set_local_description(answer): {e}"))?;
        self.refresh_negotiated().await;
        self.wait_gathered().await;
        Ok(self.local_sdp().await)
    }

    /// [`try_accept_offer`](Self::try_accept_offer), panicking on error.
    pub async fn accept_offer(&self, sdp: &str) -> String {
        self.try_accept_offer(sdp).await.expect("accept offer")
    }

    /// Adds a trickled remote candidate in PROTOCOL.md's shape `{candidate, sdpMid,
    /// sdpMLineIndex}`; `null` (end of candidates) is accepted and ignored.
    pub async fn try_add_remote_candidate(&self, candidate: Value) -> Result<(), String> {
        if candidate.is_null() {
            return Ok(());
        }
        let init: RTCIceCandidateInit = serde_json::from_value(candidate.clone())
            .map_err(|e| format!("candidate {candidate}: {e}"))?;
        if init.candidate.is_empty() {
            return Ok(());
        }
        self.pc
            .add_ice_candidate(init)
            .await
            .map_err(|e| format!("add_ice_candidate {candidate}: {e}"))
    }

    /// [`try_add_remote_candidate`](Self::try_add_remote_candidate), panicking on error.
    pub async fn add_remote_candidate(&self, candidate: Value) {
        self.try_add_remote_candidate(candidate)
            .await
            .expect("add remote candidate")
    }

    /// The current peer connection state.
    pub fn state(&self) -> RTCPeerConnectionState {
        *self.shared.conn_state.borrow()
    }

    /// Waits for the peer connection state `connected` (ICE and DTLS done). False on timeout or
    /// if the connection failed or closed first.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut rx = self.shared.conn_state.subscribe();
        let result = tokio::time::timeout(
            timeout,
            rx.wait_for(|s| {
                matches!(
                    s,
                    RTCPeerConnectionState::Connected
                        | RTCPeerConnectionState::Failed
                        | RTCPeerConnectionState::Closed
                )
            }),
        )
        .await;
        matches!(result, Ok(Ok(state)) if *state == RTCPeerConnectionState::Connected)
    }

    /// The codec our sender uses, once negotiated (None before, or when no audio codec matched).
    pub fn negotiated_codec(&self) -> Option<NegotiatedCodec> {
        self.shared.negotiated.lock().unwrap().clone()
    }

    /// Starts a task that writes one packet every 20 ms through the track, filled by `payload`.
    fn spawn_sender(
        &self,
        codec: NegotiatedCodec,
        count: u32,
        mut payload: impl FnMut(u32) -> Vec<u8> + Send + 'static,
    ) {
        let track = self.track.clone();
        let shared = self.shared.clone();
        let ssrc = self.ssrc;
        let ts_step = codec.clock_rate / 50;
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(PTIME);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for i in 0..count {
                ticker.tick().await;
                if shared.closed.load(Ordering::Relaxed) {
                    break;
                }
                let (seq, ts) = shared.next_rtp(ts_step);
                let packet = rtp::Packet {
                    header: rtp::header::Header {
                        version: 2,
                        marker: i == 0,
                        payload_type: codec.payload_type,
                        sequence_number: seq,
                        timestamp: ts,
                        ssrc,
                        ..Default::default()
                    },
                    payload: payload(i).into(),
                };
                // Before the connection is up writes fail; like a browser, just go on.
                let _ = track.write_rtp(packet).await;
            }
        });
        self.shared.tasks.lock().unwrap().push(task);
    }

    /// Sends `count` packets, one every 20 ms, with the negotiated audio payload type. Payload:
    /// 8-byte big-endian counter (from 0), 8-byte big-endian send time in µs since this peer was
    /// created, then 0xFF padding up to `payload_len` (at least 16). Returns at once. Does
    /// nothing (and says so on stderr) if no codec has been negotiated yet.
    pub fn send_numbered(&self, count: u32, payload_len: usize) {
        let Some(codec) = self.negotiated_codec() else {
            eprintln!("peer: send_numbered before a codec was negotiated; nothing sent");
            return;
        };
        let shared = self.shared.clone();
        let len = payload_len.max(NUMBERED_HEADER);
        self.spawn_sender(codec, count, move |i| {
            let counter = u64::from(i);
            shared.sent_counters.lock().unwrap().insert(counter);
            let sent_us = shared.created.elapsed().as_micros() as u64;
            let mut payload = Vec::with_capacity(len);
            payload.extend_from_slice(&counter.to_be_bytes());
            payload.extend_from_slice(&sent_us.to_be_bytes());
            payload.resize(len, 0xFF);
            payload
        });
    }

    /// Sends a `freq` Hz sine tone for `duration` in the negotiated codec, one packet per 20 ms:
    /// 160 G.711 bytes per packet for PCMU/PCMA, or a 20 ms Opus frame encoded at 48 kHz as a
    /// browser does. Returns false, sending nothing, for any other codec or before
    /// negotiation.
    pub fn send_tone(&self, freq: f64, duration: Duration) -> bool {
        let Some(codec) = self.negotiated_codec() else {
            return false;
        };
        let count = (duration.as_millis() / PTIME.as_millis()) as u32;
        if codec.name.eq_ignore_ascii_case("opus") {
            let encoder = audiopus::coder::Encoder::new(
                audiopus::SampleRate::Hz48000,
                audiopus::Channels::Mono,
                audiopus::Application::Voip,
            )
            .expect("opus encoder");
            let mut generator = ToneGenerator::new(freq, 48000, 0.5);
            self.spawn_sender(codec, count, move |_| {
                let samples = generator.next_samples(960);
                let mut out = vec![0u8; 1500];
                let n = encoder.encode(&samples, &mut out).expect("opus encode");
                out.truncate(n);
                out
            });
            return true;
        }
        let ulaw = match codec.name.to_ascii_uppercase().as_str() {
            "PCMU" => true,
            "PCMA" => false,
            _ => return false,
        };
        let mut generator = ToneGenerator::new(freq, 8000, 0.5);
        self.spawn_sender(codec, count, move |_| {
            let samples = generator.next_samples(160);
            encode_g711(&samples, ulaw)
        });
        true
    }

    /// Sends one RFC 4733 key press (`event` 0-15) of `duration` with the negotiated
    /// telephone-event payload type on the audio's clock, as a browser's `insertDTMF` does:
    /// one packet per 20 ms, all with the press's start timestamp and a growing duration, then
    /// the end packet three times; the audio's clock then continues after the press. Returns
    /// false, sending nothing, without a negotiated telephone-event.
    pub fn send_key(&self, event: u8, duration: Duration) -> bool {
        let Some(codec) = self.negotiated_codec() else {
            return false;
        };
        let Some(pt) = codec.telephone_event_pt else {
            return false;
        };
        let step = codec.clock_rate / 50;
        let updates = (duration.as_millis() / PTIME.as_millis()).max(1) as u32;
        let track = self.track.clone();
        let shared = self.shared.clone();
        let ssrc = self.ssrc;
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(PTIME);
            let mut start_ts = None;
            for i in 0..updates + 2 {
                ticker.tick().await;
                let (seq, ts) = shared.next_rtp(step);
                let start = *start_ts.get_or_insert(ts);
                let end = i + 1 >= updates;
                let samples = step * (i + 1).min(updates);
                let mut payload = vec![event, if end { 0x80 | 10 } else { 10 }];
                payload.extend_from_slice(&(samples.min(0xffff) as u16).to_be_bytes());
                let packet = rtp::Packet {
                    header: rtp::header::Header {
                        version: 2,
                        marker: i == 0,
                        payload_type: pt,
                        sequence_number: seq,
                        timestamp: start,
                        ssrc,
                        ..Default::default()
                    },
                    payload: payload.into(),
                };
                let _ = track.write_rtp(packet).await;
            }
        });
        self.shared.tasks.lock().unwrap().push(task);
        true
    }

    /// Echo mode on/off: while on, every packet received is sent straight back with our SSRC,
    /// sequence, timestamp and payload type (payload unchanged), like SIPp's `-rtp_echo`.
    pub fn set_echo(&self, on: bool) {
        self.shared.echo.store(on, Ordering::Relaxed);
    }

    /// Every RTP packet received on the remote track so far.
    pub fn received(&self) -> Vec<ReceivedPacket> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Counters parsed from every received payload of at least 16 bytes (numbered packets from
    /// whichever peer sent them).
    pub fn received_counters(&self) -> BTreeSet<u64> {
        self.shared
            .received
            .lock()
            .unwrap()
            .iter()
            .filter_map(|p| parse_numbered(&p.payload).map(|(counter, _)| counter))
            .collect()
    }

    /// Our own numbered packets that came back (received counters that we sent), for echo tests.
    pub fn echoed_counters(&self) -> BTreeSet<u64> {
        let sent = self.shared.sent_counters.lock().unwrap().clone();
        self.received_counters()
            .into_iter()
            .filter(|c| sent.contains(c))
            .collect()
    }

    /// Round-trip times of echoed numbered packets (first arrival of each counter), from the
    /// send time embedded in the payload. Only meaningful when the packets are our own, echoed.
    pub fn round_trip_times(&self) -> Vec<Duration> {
        let sent = self.shared.sent_counters.lock().unwrap().clone();
        let mut seen = BTreeSet::new();
        let created = self.shared.created;
        self.shared
            .received
            .lock()
            .unwrap()
            .iter()
            .filter_map(|p| {
                let (counter, sent_us) = parse_numbered(&p.payload)?;
                if !sent.contains(&counter) || !seen.insert(counter) {
                    return None;
                }
                let at_us = p.at.duration_since(created).as_micros() as u64;
                at_us.checked_sub(sent_us).map(Duration::from_micros)
            })
            .collect()
    }

    /// Received audio decoded to 8 kHz PCM, in arrival order, for packets whose payload type is
    /// PCMU (0) or PCMA (8).
    pub fn received_pcm(&self) -> Vec<i16> {
        self.shared
            .received
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.pt == 0 || p.pt == 8)
            .flat_map(|p| decode_g711(&p.payload, p.pt == 0))
            .collect()
    }

    /// Received Opus (payload type `opus_pt`) decoded at 48 kHz mono as a browser plays it, in
    /// arrival order. Packets that do not decode are skipped.
    pub fn received_opus_pcm(&self, opus_pt: u8) -> Vec<i16> {
        let mut decoder =
            audiopus::coder::Decoder::new(audiopus::SampleRate::Hz48000, audiopus::Channels::Mono)
                .expect("opus decoder");
        let mut pcm = vec![0i16; 5760];
        let mut out = Vec::new();
        for p in self.shared.received.lock().unwrap().iter() {
            if p.pt != opus_pt || p.payload.is_empty() {
                continue;
            }
            if let Ok(n) = decoder.decode(Some(&p.payload[..]), &mut pcm[..], false) {
                out.extend_from_slice(&pcm[..n]);
            }
        }
        out
    }

    /// Local candidates gathered so far, in trickle shape `{candidate, sdpMid, sdpMLineIndex}`.
    pub async fn local_candidates(&self) -> Vec<Value> {
        let mid = match self.pc.get_transceivers().await.first() {
            Some(t) => t.mid().await.ok().flatten(),
            None => None,
        };
        let mut candidates = self.shared.local_candidates.lock().unwrap().clone();
        if let Some(mid) = mid {
            for c in &mut candidates {
                c["sdpMid"] = Value::String(mid.clone());
            }
        }
        candidates
    }

    /// Stops sending and closes the peer connection.
    pub async fn close(&self) {
        self.shared.closed.store(true, Ordering::Relaxed);
        let _ = self.pc.close().await;
        for task in self.shared.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Relaxed);
        if let Ok(mut tasks) = self.shared.tasks.lock() {
            for task in tasks.drain(..) {
                task.abort();
            }
        }
    }
}

/// Splits a numbered payload into (counter, send time in µs).
pub fn parse_numbered(payload: &[u8]) -> Option<(u64, u64)> {
    if payload.len() < NUMBERED_HEADER {
        return None;
    }
    let counter = u64::from_be_bytes(payload[0..8].try_into().ok()?);
    let sent_us = u64::from_be_bytes(payload[8..16].try_into().ok()?);
    Some((counter, sent_us))
}

/// A phase-continuous sine generator.
pub struct ToneGenerator {
    phase: f64,
    step: f64,
    amplitude: f64,
}

impl ToneGenerator {
    /// `amplitude` is a fraction of full scale (0.0..=1.0).
    pub fn new(freq: f64, sample_rate: u32, amplitude: f64) -> Self {
        ToneGenerator {
            phase: 0.0,
            step: 2.0 * PI * freq / f64::from(sample_rate),
            amplitude: amplitude.clamp(0.0, 1.0) * f64::from(i16::MAX),
        }
    }

    pub fn next_samples(&mut self, n: usize) -> Vec<i16> {
        (0..n)
            .map(|_| {
                let s = (self.phase.sin() * self.amplitude).round() as i16;
                self.phase = (self.phase + self.step) % (2.0 * PI);
                s
            })
            .collect()
    }
}

/// G.711 µ-law encoding of one 16-bit sample (ITU-T G.711, as in Sun's g711.c).
pub fn linear_to_ulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32635;
    let mut pcm = i32::from(sample);
    let sign = if pcm < 0 {
        pcm = -pcm;
        0x80
    } else {
        0
    };
    let pcm = pcm.min(CLIP) + BIAS;
    let exponent = (7 - (pcm as u32).leading_zeros().saturating_sub(17).min(7)) as i32;
    let mantissa = (pcm >> (exponent + 3)) & 0x0F;
    !(sign | (exponent << 4) | mantissa) as u8
}

/// G.711 µ-law decoding of one byte.
pub fn ulaw_to_linear(byte: u8) -> i16 {
    let u = !byte;
    let sign = u & 0x80;
    let exponent = i32::from((u >> 4) & 0x07);
    let mantissa = i32::from(u & 0x0F);
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    (if sign != 0 { -magnitude } else { magnitude }) as i16
}

/// G.711 A-law encoding of one 16-bit sample.
pub fn linear_to_alaw(sample: i16) -> u8 {
    let pcm = i32::from(sample) >> 3; // 13-bit
    let (mask, magnitude) = if pcm >= 0 {
        (0xD5, pcm)
    } else {
        (0x55, -pcm - 1)
    };
    let magnitude = magnitude.min(0x0FFF);
    let byte = if magnitude < 32 {
        magnitude >> 1
    } else {
        // Segment = position of the highest set bit above bit 4.
        let segment = 32 - (magnitude as u32).leading_zeros() as i32 - 5;
        (segment << 4) | ((magnitude >> segment) & 0x0F)
    };
    (byte ^ mask) as u8
}

/// G.711 A-law decoding of one byte.
pub fn alaw_to_linear(byte: u8) -> i16 {
    let a = byte ^ 0x55;
    let segment = i32::from((a & 0x70) >> 4);
    let mut t = i32::from(a & 0x0F) << 4;
    t = match segment {
        0 => t + 8,
        1 => t + 0x108,
        _ => (t + 0x108) << (segment - 1),
    };
    (if a & 0x80 != 0 { t } else { -t }) as i16
}

/// Encodes 16-bit PCM to G.711 (`ulaw` true: PCMU, false: PCMA).
pub fn encode_g711(samples: &[i16], ulaw: bool) -> Vec<u8> {
    samples
        .iter()
        .map(|&s| {
            if ulaw {
                linear_to_ulaw(s)
            } else {
                linear_to_alaw(s)
            }
        })
        .collect()
}

/// Decodes a G.711 payload to 16-bit PCM (`ulaw` true: PCMU, false: PCMA).
pub fn decode_g711(payload: &[u8], ulaw: bool) -> Vec<i16> {
    payload
        .iter()
        .map(|&b| {
            if ulaw {
                ulaw_to_linear(b)
            } else {
                alaw_to_linear(b)
            }
        })
        .collect()
}

/// Goertzel power at `freq` of one (already windowed) block.
fn goertzel_power(block: &[f64], sample_rate: u32, freq: f64) -> f64 {
    let coeff = 2.0 * (2.0 * PI * freq / f64::from(sample_rate)).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in block {
        let s0 = x + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - coeff * s1 * s2
}

/// The strongest frequency in 100..4000 Hz (capped below Nyquist), in Hz.
///
/// The signal is cut into 200 ms blocks, each Hann-windowed, and Goertzel powers are summed
/// over blocks (non-coherently, so gaps, lost packets or phase jumps in received audio do not
/// matter). The main lobe is then about ±10 Hz wide, so a 5 Hz scan cannot step over a tone;
/// the peak is refined in 0.5 Hz steps. About ±1 Hz on a clean tone. 0.0 if there are fewer
/// samples than one block.
pub fn dominant_frequency(samples: &[i16], sample_rate: u32) -> f64 {
    let block_len = (sample_rate / 5) as usize;
    if block_len < 2 || samples.len() < block_len {
        return 0.0;
    }
    let window: Vec<f64> = (0..block_len)
        .map(|n| 0.5 - 0.5 * (2.0 * PI * n as f64 / (block_len - 1) as f64).cos())
        .collect();
    let blocks: Vec<Vec<f64>> = samples
        .chunks_exact(block_len)
        .map(|chunk| {
            chunk
                .iter()
                .zip(&window)
                .map(|(&x, w)| f64::from(x) * w)
                .collect()
        })
        .collect();
    let power = |f: f64| -> f64 {
        blocks
            .iter()
            .map(|b| goertzel_power(b, sample_rate, f))
            .sum()
    };
    let top = 4000.0f64.min(f64::from(sample_rate) / 2.0 - 10.0);
    let mut best = (0.0f64, f64::MIN);
    let mut f = 100.0;
    while f <= top {
        let p = power(f);
        if p > best.1 {
            best = (f, p);
        }
        f += 5.0;
    }
    let coarse = best.0;
    let mut f = (coarse - 5.0).max(100.0);
    while f <= (coarse + 5.0).min(top) {
        let p = power(f);
        if p > best.1 {
            best = (f, p);
        }
        f += 0.5;
    }
    best.0
}
