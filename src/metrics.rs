//! Process-wide Prometheus metrics. Counters are bumped where things happen (SIP transport,
//! browser sessions, calls); gauges of current state are read from the shared state when
//! `/metrics` is scraped, so they can never drift from what REST shows.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use rsipstack::sip::{Method, SipMessage};
use rsipstack::transaction::endpoint::MessageInspector;
use rsipstack::transport::SipAddr;

/// A `type` / `code` / `state` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Kind {
    /// Its value.
    pub kind: String,
}

/// Call set-up outcome labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Setup {
    /// `inbound` | `outbound`.
    pub direction: String,
    /// The final SIP status of the set-up (200 when answered).
    pub sip_status: String,
}

/// Media direction labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Flow {
    /// `in` (received from either leg) | `out` (sent to either leg).
    pub direction: String,
}

/// SIP transaction labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Role {
    /// `client` (we sent the request) | `server` (we received it).
    pub role: String,
}

/// Why a SIP request was refused before any transaction saw it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Refusal {
    /// `untrusted_source` (403), `malformed` (400), `too_many_hops` (483), `unknown_method` (501),
    /// `ringing_limit` (486: `--max-ringing-per-dn` calls ring the DN already).
    pub reason: String,
}

/// Every metric the gateway keeps itself.
pub struct Metrics {
    /// Browser protocol requests by type.
    pub ws_messages: Family<Kind, Counter>,
    /// Error frames sent to browsers by code.
    pub ws_errors: Family<Kind, Counter>,
    /// Calls whose set-up ended, by direction and SIP status.
    pub call_setups: Family<Setup, Counter>,
    /// Media of calls that ended, folded in at their end (live calls are added at scrape).
    pub ended_packets: Family<Flow, Counter>,
    /// Bytes of calls that ended.
    pub ended_bytes: Family<Flow, Counter>,
    /// Packets lost in calls that ended.
    pub ended_lost: Counter,
    /// Packets from strangers dropped on the SIP legs of calls that ended.
    pub ended_rejected: Counter,
    /// New SIP transactions.
    pub sip_transactions: Family<Role, Counter>,
    /// SIP retransmissions sent (`client`/`server` by who retransmits) and received.
    pub sip_retransmissions: Family<Kind, Counter>,
    /// Time from a `call` request to its INVITE leaving, seconds.
    pub invite_latency: Histogram,
    /// SIP requests answered (or, for ACK, dropped) by the sanity and trust checks.
    pub sip_refused: Family<Refusal, Counter>,
    seen: Mutex<Seen>,
}

/// Recently seen SIP message keys, to tell retransmissions from new messages.
#[derive(Default)]
struct Seen {
    keys: HashMap<u64, Instant>,
}

impl Seen {
    /// Whether `key` was seen in the last 64 s (the longest a transaction retransmits).
    fn repeat(&mut self, key: u64, now: Instant) -> bool {
        if self.keys.len() > 8192 {
            self.keys
                .retain(|_, t| now.duration_since(*t) < Duration::from_secs(64));
        }
        self.keys.insert(key, now).is_some()
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    ws_messages: Family::default(),
    ws_errors: Family::default(),
    call_setups: Family::default(),
    ended_packets: Family::default(),
    ended_bytes: Family::default(),
    ended_lost: Counter::default(),
    ended_rejected: Counter::default(),
    sip_transactions: Family::default(),
    sip_retransmissions: Family::default(),
    invite_latency: Histogram::new([
        0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
    ]),
    sip_refused: Family::default(),
    seen: Mutex::new(Seen::default()),
});

/// The process's metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

fn kind(k: &str) -> Kind {
    Kind {
        kind: k.to_string(),
    }
}

impl Metrics {
    /// A browser request of `type` (unknown types count as `unknown`, so the label set stays
    /// bounded whatever clients send).
    pub fn ws_message(&self, kind_: &str) {
        const KNOWN: &[&str] = &[
            "register",
            "unregister",
            "call",
            "answer",
            "reject",
            "hangup",
            "iceCandidate",
            "hold",
            "unhold",
            "dtmf",
            "transfer",
            "resume",
            "ping",
        ];
        let k = if KNOWN.contains(&kind_) {
            kind_
        } else {
            "unknown"
        };
        self.ws_messages.get_or_create(&kind(k)).inc();
    }

    /// An `error` frame with `code` sent to a browser.
    pub fn ws_error(&self, code: &str) {
        self.ws_errors.get_or_create(&kind(code)).inc();
    }

    /// A call's set-up ended with `sip_status` (200: answered).
    pub fn call_setup(&self, direction: &str, sip_status: u16) {
        self.call_setups
            .get_or_create(&Setup {
                direction: direction.to_string(),
                sip_status: sip_status.to_string(),
            })
            .inc();
    }

    /// A call's media totals at its end.
    pub fn call_media(&self, m: &media::stats::MediaSnapshot) {
        let f = |d: &str| Flow {
            direction: d.to_string(),
        };
        self.ended_packets
            .get_or_create(&f("in"))
            .inc_by(m.packets_in);
        self.ended_packets
            .get_or_create(&f("out"))
            .inc_by(m.packets_out);
        self.ended_bytes.get_or_create(&f("in")).inc_by(m.bytes_in);
        self.ended_bytes
            .get_or_create(&f("out"))
            .inc_by(m.bytes_out);
        self.ended_lost.inc_by(m.lost);
        self.ended_rejected.inc_by(m.rejected);
    }

    fn sip(&self, msg: &SipMessage, outgoing: bool) {
        let (branch, key) = match msg {
            SipMessage::Request(r) => {
                let branch = r.via_header().ok().and_then(|v| {
                    v.value()
                        .split(';')
                        .find_map(|p| p.trim().strip_prefix("branch="))
                        .map(str::to_string)
                });
                (branch, format!("{}", r.method))
            }
            SipMessage::Response(r) => {
                let branch = r.via_header().ok().and_then(|v| {
                    v.value()
                        .split(';')
                        .find_map(|p| p.trim().strip_prefix("branch="))
                        .map(str::to_string)
                });
                (branch, format!("{}", r.status_code.code()))
            }
        };
        let Some(branch) = branch else { return };
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (outgoing, &branch, &key).hash(&mut h);
        let repeat = match self.seen.lock() {
            Ok(mut s) => s.repeat(h.finish(), Instant::now()),
            Err(_) => false,
        };
        let is_request = matches!(msg, SipMessage::Request(_));
        let is_ack = matches!(msg, SipMessage::Request(r) if r.method == Method::Ack);
        if repeat {
            let label = match (outgoing, is_request) {
                (true, true) => "client",
                (true, false) => "server",
                (false, _) => "received",
            };
            self.sip_retransmissions.get_or_create(&kind(label)).inc();
        } else if is_request && !is_ack {
            let role = if outgoing { "client" } else { "server" };
            self.sip_transactions
                .get_or_create(&Role {
                    role: role.to_string(),
                })
                .inc();
        }
    }

    /// A SIP request refused for `reason` (a fixed, small set: see [`Refusal`]).
    pub fn sip_refused(&self, reason: &'static str) {
        self.sip_refused
            .get_or_create(&Refusal {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// A SIP message from the network (every one, before transactions see it).
    pub fn sip_received(&self, msg: &SipMessage) {
        self.sip(msg, false);
    }
}

use rsipstack::sip::prelude::HeadersExt;

/// Counts what the SIP stack sends, retransmissions included (they pass the inspector too).
pub struct SipCounter;

impl MessageInspector for SipCounter {
    fn before_send(&self, msg: SipMessage, _dest: Option<&SipAddr>) -> SipMessage {
        get().sip(&msg, true);
        msg
    }

    fn after_received(&self, msg: SipMessage, _from: Option<&SipAddr>) -> SipMessage {
        msg
    }
}

/// Current state, read at scrape time.
pub struct Gauges {
    /// Browser sessions.
    pub sessions: i64,
    /// DNs by registration state.
    pub registrations: Vec<(String, i64)>,
    /// Calls by state.
    pub calls: Vec<(String, i64)>,
    /// Media of live calls: packets in/out, bytes in/out, lost.
    pub live: media::stats::MediaSnapshot,
}

/// The media workers' relay-latency histogram, encoded from its atomic buckets.
#[derive(Debug)]
struct RelayLatency;

impl EncodeMetric for RelayLatency {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let s = media::stats::RELAY_LATENCY.snapshot();
        // Prometheus buckets are cumulative; the encoder wants per-bucket counts plus +Inf.
        let mut prev = 0;
        let mut buckets: Vec<(f64, u64)> = s
            .buckets
            .iter()
            .map(|(b, c)| {
                let n = c - prev;
                prev = *c;
                (*b, n)
            })
            .collect();
        buckets.push((f64::MAX, s.count.saturating_sub(prev)));
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            s.sum, s.count, &buckets, None,
        )
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// The Prometheus text exposition of everything.
pub fn render(g: &Gauges) -> String {
    let m = get();
    let mut reg = Registry::with_prefix("gateway");
    let sessions = Gauge::<i64>::default();
    sessions.set(g.sessions);
    reg.register("sessions", "Browser WebSocket sessions", sessions);
    let registrations = Family::<Kind, Gauge<i64>>::default();
    for (state, n) in &g.registrations {
        registrations.get_or_create(&kind(state)).set(*n);
    }
    reg.register("registrations", "DNs by registration state", registrations);
    let calls = Family::<Kind, Gauge<i64>>::default();
    for (state, n) in &g.calls {
        calls.get_or_create(&kind(state)).set(*n);
    }
    reg.register("calls", "Active calls by state", calls);
    reg.register(
        "call_setups",
        "Call set-ups that ended, by direction and final SIP status (200 = answered)",
        m.call_setups.clone(),
    );
    // Totals = calls that ended + live calls, so a scrape never goes backwards when a call
    // ends.
    let packets = Family::<Flow, Counter>::default();
    let bytes = Family::<Flow, Counter>::default();
    for (dir, p, b) in [
        ("in", g.live.packets_in, g.live.bytes_in),
        ("out", g.live.packets_out, g.live.bytes_out),
    ] {
        let f = Flow {
            direction: dir.to_string(),
        };
        packets
            .get_or_create(&f)
            .inc_by(p + m.ended_packets.get_or_create(&f).get());
        bytes
            .get_or_create(&f)
            .inc_by(b + m.ended_bytes.get_or_create(&f).get());
    }
    reg.register(
        "rtp_packets",
        "RTP packets relayed: in = received from either leg, out = sent to either leg",
        packets,
    );
    reg.register("rtp_bytes", "RTP bytes relayed", bytes);
    let lost = Counter::<u64>::default();
    lost.inc_by(g.live.lost + m.ended_lost.get());
    reg.register("rtp_packets_lost", "RTP packets lost on the way in", lost);
    let rejected = Counter::<u64>::default();
    rejected.inc_by(g.live.rejected + m.ended_rejected.get());
    reg.register(
        "rtp_packets_rejected",
        "RTP and RTCP packets dropped on SIP legs because they came from neither the far end's signalled address nor a source it proved (strict latching)",
        rejected,
    );
    reg.register(
        "relay_latency_seconds",
        "Time a packet spends in the relay loop, from its receive batch to its send",
        RelayLatency,
    );
    reg.register(
        "invite_latency_seconds",
        "Time from a browser's call request to its INVITE leaving",
        m.invite_latency.clone(),
    );
    reg.register(
        "sip_transactions",
        "New SIP transactions by role",
        m.sip_transactions.clone(),
    );
    reg.register(
        "sip_retransmissions",
        "SIP retransmissions: sent as client or server, or received",
        m.sip_retransmissions.clone(),
    );
    reg.register(
        "sip_requests_refused",
        "SIP requests refused before any transaction: untrusted_source (403), malformed (400), \
         too_many_hops (483), unknown_method (501)",
        m.sip_refused.clone(),
    );
    reg.register(
        "ws_messages",
        "Browser protocol requests by type",
        m.ws_messages.clone(),
    );
    reg.register(
        "ws_errors",
        "Error frames sent to browsers by code",
        m.ws_errors.clone(),
    );
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &reg).is_err() {
        out.clear();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retransmissions_are_told_from_new_messages() {
        let mut s = Seen::default();
        let t = Instant::now();
        assert!(!s.repeat(1, t));
        assert!(s.repeat(1, t + Duration::from_millis(500)));
        assert!(!s.repeat(2, t));
    }

    #[test]
    fn renders_prometheus_text() {
        get().ws_message("register");
        get().ws_message("bogus");
        get().call_setup("outbound", 486);
        let text = render(&Gauges {
            sessions: 2,
            registrations: vec![("registered".into(), 1)],
            calls: vec![("answered".into(), 1)],
            live: media::stats::MediaSnapshot::default(),
        });
        assert!(text.contains("gateway_sessions 2"), "{text}");
        assert!(
            text.contains("gateway_ws_messages_total{kind=\"unknown\"}"),
            "{text}"
        );
        assert!(
            text.contains("gateway_call_setups_total{direction=\"outbound\",sip_status=\"486\"}"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
