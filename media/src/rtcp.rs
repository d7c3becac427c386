//! RTCP of our own on each leg (RFC 3550 §6): a sender report for the stream we send, with a
//! reception report about the stream we receive, and an SDES CNAME, every few seconds. The
//! gateway terminates media, so each leg gets reports about what it really exchanges with us.
//! Built and read with `rtc-rtcp`; this runs once per report interval, not per packet.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rtc_rtcp::packet::Packet;
use rtc_rtcp::receiver_report::ReceiverReport;
use rtc_rtcp::reception_report::ReceptionReport;
use rtc_rtcp::sender_report::SenderReport;
use rtc_rtcp::source_description::{
    SdesType, SourceDescription, SourceDescriptionChunk, SourceDescriptionItem,
};

use crate::stats::ReceiveStats;

/// Report interval (RFC 3550 §6.2 minimum for a two-party session is 5 s).
pub const INTERVAL: Duration = Duration::from_secs(5);

/// What we sent on a stream, for the sender report.
#[derive(Debug, Default, Clone)]
pub struct SendStats {
    packets: u32,
    octets: u32,
    last_ts: u32,
    last_at: Option<Instant>,
}

impl SendStats {
    /// Counts one sent RTP packet with `payload` bytes and timestamp `ts`.
    #[inline]
    pub fn on_sent(&mut self, payload: usize, ts: u32, now: Instant) {
        self.packets = self.packets.wrapping_add(1);
        self.octets = self.octets.wrapping_add(payload as u32);
        self.last_ts = ts;
        self.last_at = Some(now);
    }

    /// Whether anything was sent yet.
    pub fn has_sent(&self) -> bool {
        self.last_at.is_some()
    }
}

/// The peer's last sender report: the middle 32 bits of its NTP time and when it arrived.
#[derive(Debug, Clone, Copy)]
pub struct PeerReport {
    /// LSR as it goes into our reception report.
    pub lsr: u32,
    /// Arrival, for DLSR.
    pub at: Instant,
}

/// The receive side of a report: whose stream, its statistics, its last SR.
pub struct Reception<'a> {
    /// The peer's SSRC.
    pub ssrc: u32,
    /// What we received from it.
    pub stats: &'a mut ReceiveStats,
    /// Its last sender report.
    pub peer: Option<PeerReport>,
}

/// NTP timestamp (RFC 5905 era 0) of a wall-clock time.
pub fn ntp_time(t: SystemTime) -> u64 {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() + 2_208_988_800;
    let frac = (u64::from(since.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// A compound report: SR (or RR if we have sent nothing) + SDES CNAME.
pub fn build(
    ssrc: u32,
    cname: &str,
    sent: &SendStats,
    clock_rate: u32,
    reception: Option<Reception<'_>>,
    now: Instant,
    wall: SystemTime,
) -> Option<Vec<u8>> {
    let reports: Vec<ReceptionReport> = reception
        .filter(|r| r.stats.received() > 0)
        .map(|r| {
            let (lsr, delay) = match r.peer {
                Some(p) => {
                    // DLSR in units of 1/65536 s.
                    let d = now.saturating_duration_since(p.at);
                    (p.lsr, (d.as_secs_f64() * 65_536.0) as u32)
                }
                None => (0, 0),
            };
            ReceptionReport {
                ssrc: r.ssrc,
                fraction_lost: r.stats.fraction_lost_since_last(),
                total_lost: (r.stats.lost() as u32).min(0x7f_ffff),
                last_sequence_number: r.stats.extended_max(),
                jitter: r.stats.jitter(),
                last_sender_report: lsr,
                delay,
            }
        })
        .into_iter()
        .collect();
    let sdes = SourceDescription {
        chunks: vec![SourceDescriptionChunk {
            source: ssrc,
            items: vec![SourceDescriptionItem {
                sdes_type: SdesType::SdesCname,
                text: Bytes::copy_from_slice(cname.as_bytes()),
            }],
        }],
    };
    let first: Box<dyn Packet> = match sent.last_at {
        Some(at) => {
            let elapsed = now.saturating_duration_since(at).as_secs_f64();
            let rtp_time = sent
                .last_ts
                .wrapping_add((elapsed * f64::from(clock_rate)) as u32);
            Box::new(SenderReport {
                ssrc,
                ntp_time: ntp_time(wall),
                rtp_time,
                packet_count: sent.packets,
                octet_count: sent.octets,
                reports,
                profile_extensions: Bytes::new(),
            })
        }
        None => Box::new(ReceiverReport {
            ssrc,
            reports,
            profile_extensions: Bytes::new(),
        }),
    };
    let packets: Vec<Box<dyn Packet>> = vec![first, Box::new(sdes)];
    rtc_rtcp::packet::marshal(&packets).ok().map(|b| b.to_vec())
}

/// The sender report in a compound RTCP packet: the sender's SSRC and the LSR value a
/// reception report about it must echo (the middle 32 bits of its NTP time).
pub fn sender_report(packet: &[u8]) -> Option<(u32, u32)> {
    let mut buf = packet;
    let packets = rtc_rtcp::packet::unmarshal(&mut buf).ok()?;
    packets.iter().find_map(|p| {
        p.as_any()
            .downcast_ref::<SenderReport>()
            .map(|sr| (sr.ssrc, (sr.ntp_time >> 16) as u32))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sender_report_round_trips_with_a_reception_block() {
        let now = Instant::now();
        let mut sent = SendStats::default();
        for i in 0..50u32 {
            sent.on_sent(160, i * 160, now);
        }
        let mut rx = ReceiveStats::default();
        for seq in [10u16, 11, 13, 14] {
            rx.on_packet(seq, u32::from(seq) * 160, now, 8000);
        }
        let wall = SystemTime::now();
        let report = build(
            0xaabb_ccdd,
            "gateway",
            &sent,
            8000,
            Some(Reception {
                ssrc: 0x1122_3344,
                stats: &mut rx,
                peer: Some(PeerReport {
                    lsr: 0x1234_5678,
                    at: now,
                }),
            }),
            now + Duration::from_millis(500),
            wall,
        )
        .expect("report");
        let (ssrc, lsr) = sender_report(&report).expect("an SR");
        assert_eq!(ssrc, 0xaabb_ccdd);
        assert_eq!(lsr, (ntp_time(wall) >> 16) as u32);

        let mut buf = &report[..];
        let packets = rtc_rtcp::packet::unmarshal(&mut buf).expect("valid RTCP");
        let sr = packets[0]
            .as_any()
            .downcast_ref::<SenderReport>()
            .expect("SR first");
        assert_eq!(sr.packet_count, 50);
        assert_eq!(sr.octet_count, 8000);
        let block = &sr.reports[0];
        assert_eq!(block.ssrc, 0x1122_3344);
        assert_eq!(block.total_lost, 1);
        assert_eq!(block.last_sequence_number, 14);
        assert_eq!(block.last_sender_report, 0x1234_5678);
        assert_eq!(block.delay, 32_768, "half a second in 1/65536 s");
        assert!(packets[1]
            .as_any()
            .downcast_ref::<SourceDescription>()
            .is_some());
    }

    #[test]
    fn receiver_report_when_nothing_was_sent_and_garbage_is_no_sr() {
        let report = build(
            7,
            "gw",
            &SendStats::default(),
            8000,
            None,
            Instant::now(),
            SystemTime::now(),
        )
        .expect("report");
        assert_eq!(sender_report(&report), None);
        let mut buf = &report[..];
        let packets = rtc_rtcp::packet::unmarshal(&mut buf).expect("valid RTCP");
        assert!(packets[0]
            .as_any()
            .downcast_ref::<ReceiverReport>()
            .is_some());
        assert_eq!(sender_report(&[0x80, 200, 0, 1]), None);
        assert_eq!(sender_report(&[]), None);
    }
}
