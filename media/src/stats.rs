//! Per-stream receive statistics (RFC 3550 §6.4.1 and appendix A.1, A.3, A.8): packets
//! expected and lost from the extended highest sequence number, and interarrival jitter.
//! Plus the counters a leg publishes for REST and metrics, as atomics the worker writes and
//! anyone reads without a lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Receive statistics of one RTP source.
#[derive(Debug, Clone, Default)]
pub struct ReceiveStats {
    started: bool,
    base_seq: u32,
    max_seq: u16,
    cycles: u32,
    received: u64,
    /// Jitter estimate in timestamp units, scaled by 16 as in RFC 3550 A.8.
    jitter_q4: u64,
    transit: Option<i64>,
    first_arrival: Option<Instant>,
    expected_prior: u64,
    received_prior: u64,
}

impl ReceiveStats {
    /// Records one packet with sequence `seq` and RTP timestamp `ts` arriving at `now`, for a
    /// clock of `clock_rate` Hz.
    pub fn on_packet(&mut self, seq: u16, ts: u32, now: Instant, clock_rate: u32) {
        if !self.started {
            self.started = true;
            self.base_seq = u32::from(seq);
            self.max_seq = seq;
        } else {
            let delta = seq.wrapping_sub(self.max_seq);
            if delta != 0 && delta < 0x8000 {
                if seq < self.max_seq {
                    self.cycles = self.cycles.wrapping_add(1 << 16);
                }
                self.max_seq = seq;
            }
        }
        self.received += 1;

        // Transit time in timestamp units against an arbitrary local origin.
        let origin = *self.first_arrival.get_or_insert(now);
        let arrival =
            (now.saturating_duration_since(origin).as_secs_f64() * f64::from(clock_rate)) as i64;
        let transit = arrival - i64::from(ts);
        if let Some(prev) = self.transit.replace(transit) {
            // Timestamps wrap at 2^32: take the short way round.
            let d = (transit - prev).rem_euclid(1 << 32);
            let d = d.min((1 << 32) - d) as u64;
            // J += (|D| - J) / 16, kept scaled by 16 to stay in integers.
            self.jitter_q4 = self.jitter_q4 + d - ((self.jitter_q4 + 8) >> 4);
        }
    }

    /// Extended highest sequence number received.
    pub fn extended_max(&self) -> u32 {
        self.cycles.wrapping_add(u32::from(self.max_seq))
    }

    /// Packets received, duplicates included.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Packets expected from the sequence numbers seen.
    pub fn expected(&self) -> u64 {
        if !self.started {
            return 0;
        }
        u64::from(self.extended_max().wrapping_sub(self.base_seq)) + 1
    }

    /// Cumulative packets lost (never negative here, though duplicates can make RFC 3550's
    /// signed figure negative).
    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.received)
    }

    /// Fraction of packets lost since the previous call, in 1/256 (RFC 3550 A.3), for the
    /// next reception report.
    pub fn fraction_lost_since_last(&mut self) -> u8 {
        let expected = self.expected();
        let interval_expected = expected.saturating_sub(self.expected_prior);
        let interval_received = self.received.saturating_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost = interval_expected.saturating_sub(interval_received);
        if interval_expected == 0 || lost == 0 {
            0
        } else {
            ((lost << 8) / interval_expected).min(255) as u8
        }
    }

    /// Jitter in timestamp units.
    pub fn jitter(&self) -> u32 {
        u32::try_from(self.jitter_q4 >> 4).unwrap_or(u32::MAX)
    }

    /// Jitter in milliseconds for a clock of `clock_rate` Hz.
    pub fn jitter_ms(&self, clock_rate: u32) -> f64 {
        f64::from(self.jitter()) * 1000.0 / f64::from(clock_rate.max(1))
    }
}

/// Counters of one call's media, written by the media worker, read by REST and metrics.
#[derive(Debug, Default)]
pub struct MediaCounters {
    /// Packets received from the far ends.
    pub packets_in: AtomicU64,
    /// Packets sent to the far ends.
    pub packets_out: AtomicU64,
    /// Bytes received.
    pub bytes_in: AtomicU64,
    /// Bytes sent.
    pub bytes_out: AtomicU64,
    /// Packets lost on the way in.
    pub lost: AtomicU64,
    /// Jitter in microseconds.
    pub jitter_us: AtomicU64,
    /// Packets on the SIP leg's ports (RTP or RTCP) from anyone but the far end, dropped.
    pub rejected: AtomicU64,
}

/// A plain copy of [`MediaCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MediaSnapshot {
    /// Packets received.
    pub packets_in: u64,
    /// Packets sent.
    pub packets_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Packets lost.
    pub lost: u64,
    /// Jitter, ms.
    pub jitter_ms: f64,
    /// Packets from strangers dropped on the SIP leg.
    pub rejected: u64,
}

impl MediaCounters {
    /// Counts a received packet of `bytes`.
    #[inline]
    pub fn received(&self, bytes: usize) {
        self.packets_in.fetch_add(1, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Counts a sent packet of `bytes`.
    #[inline]
    pub fn sent(&self, bytes: usize) {
        self.packets_out.fetch_add(1, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Counts a packet from a stranger, dropped.
    #[inline]
    pub fn rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// Publishes loss and jitter from the worker's [`ReceiveStats`].
    pub fn publish(&self, stats: &ReceiveStats, clock_rate: u32) {
        self.lost.store(stats.lost(), Ordering::Relaxed);
        self.jitter_us.store(
            (stats.jitter_ms(clock_rate) * 1000.0) as u64,
            Ordering::Relaxed,
        );
    }

    /// A copy for readers.
    pub fn snapshot(&self) -> MediaSnapshot {
        MediaSnapshot {
            packets_in: self.packets_in.load(Ordering::Relaxed),
            packets_out: self.packets_out.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
            jitter_ms: self.jitter_us.load(Ordering::Relaxed) as f64 / 1000.0,
            rejected: self.rejected.load(Ordering::Relaxed),
        }
    }
}

/// Upper bounds, in seconds, of the relay-latency histogram's buckets: from a packet's receive
/// batch to its send, which should stay in the tens of microseconds.
pub const RELAY_LATENCY_BOUNDS: [f64; 9] = [
    0.000_01, 0.000_02, 0.000_05, 0.000_1, 0.000_2, 0.000_5, 0.001, 0.002, 0.005,
];

/// A lock-free latency histogram the media workers write and `/metrics` reads.
pub struct LatencyHistogram {
    buckets: [AtomicU64; RELAY_LATENCY_BOUNDS.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

/// What a [`LatencyHistogram`] holds: cumulative counts per bucket bound, the sum in seconds
/// and the count.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencySnapshot {
    /// `(upper bound in seconds, observations at or below it)`, cumulative.
    pub buckets: Vec<(f64, u64)>,
    /// Sum of observations, seconds.
    pub sum: f64,
    /// Observations.
    pub count: u64,
}

impl LatencyHistogram {
    /// An empty histogram.
    pub const fn new() -> Self {
        LatencyHistogram {
            buckets: [const { AtomicU64::new(0) }; RELAY_LATENCY_BOUNDS.len()],
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
        }
    }

    /// Records `n` packets that each spent `d`.
    #[inline]
    pub fn record(&self, d: std::time::Duration, n: u64) {
        let secs = d.as_secs_f64();
        if let Some(i) = RELAY_LATENCY_BOUNDS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(n, Ordering::Relaxed);
        }
        self.count.fetch_add(n, Ordering::Relaxed);
        self.sum_ns
            .fetch_add(d.as_nanos() as u64 * n, Ordering::Relaxed);
    }

    /// A copy, with cumulative buckets as Prometheus wants them.
    pub fn snapshot(&self) -> LatencySnapshot {
        let mut acc = 0;
        let buckets = RELAY_LATENCY_BOUNDS
            .iter()
            .zip(&self.buckets)
            .map(|(b, c)| {
                acc += c.load(Ordering::Relaxed);
                (*b, acc)
            })
            .collect();
        LatencySnapshot {
            buckets,
            sum: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
            count: self.count.load(Ordering::Relaxed),
        }
    }
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

/// Relay latency of every worker of the process.
pub static RELAY_LATENCY: LatencyHistogram = LatencyHistogram::new();

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn latency_histogram_is_cumulative() {
        let h = LatencyHistogram::new();
        h.record(std::time::Duration::from_micros(5), 2);
        h.record(std::time::Duration::from_micros(150), 1);
        h.record(std::time::Duration::from_secs(1), 1);
        let s = h.snapshot();
        assert_eq!(s.count, 4);
        assert_eq!(s.buckets[0], (0.000_01, 2));
        assert_eq!(s.buckets[4], (0.000_2, 3));
        assert_eq!(s.buckets.last().map(|b| b.1), Some(3));
        assert!((s.sum - 1.000_16).abs() < 1e-9, "{}", s.sum);
    }

    #[test]
    fn counts_loss_across_a_wrap() {
        let mut s = ReceiveStats::default();
        let t = Instant::now();
        let mut seq: u16 = 65_500;
        for i in 0..100u32 {
            if i % 10 != 3 {
                s.on_packet(
                    seq,
                    i * 160,
                    t + Duration::from_millis(20 * u64::from(i)),
                    8000,
                );
            }
            seq = seq.wrapping_add(1);
        }
        assert_eq!(s.expected(), 100);
        assert_eq!(s.received(), 90);
        assert_eq!(s.lost(), 10);
        assert_eq!(s.extended_max(), 65_536 + 63);
    }

    #[test]
    fn fraction_lost_covers_the_interval_only() {
        let mut s = ReceiveStats::default();
        let t = Instant::now();
        for seq in 0..100u16 {
            if seq % 4 != 0 {
                s.on_packet(seq, 0, t, 8000);
            }
        }
        let f = s.fraction_lost_since_last();
        assert!((60..=66).contains(&f), "about a quarter lost: {f}/256");
        for seq in 100..200u16 {
            s.on_packet(seq, 0, t, 8000);
        }
        assert_eq!(s.fraction_lost_since_last(), 0);
    }

    #[test]
    fn reordering_and_duplicates_are_not_loss() {
        let mut s = ReceiveStats::default();
        let t = Instant::now();
        for seq in [1u16, 3, 2, 4, 4, 5] {
            s.on_packet(seq, u32::from(seq) * 160, t, 8000);
        }
        assert_eq!(s.expected(), 5);
        assert_eq!(s.lost(), 0);
    }

    #[test]
    fn jitter_is_zero_for_a_steady_stream_and_grows_with_variation() {
        let t = Instant::now();
        let mut steady = ReceiveStats::default();
        for i in 0..200u32 {
            steady.on_packet(
                i as u16,
                i * 160,
                t + Duration::from_millis(20 * u64::from(i)),
                8000,
            );
        }
        assert!(steady.jitter_ms(8000) < 0.5, "{}", steady.jitter_ms(8000));
        let mut shaky = ReceiveStats::default();
        for i in 0..200u32 {
            let wobble = if i % 2 == 0 { 0 } else { 10 };
            shaky.on_packet(
                i as u16,
                i * 160,
                t + Duration::from_millis(20 * u64::from(i) + wobble),
                8000,
            );
        }
        let j = shaky.jitter_ms(8000);
        assert!((8.0..=11.0).contains(&j), "{j}");
    }

    #[test]
    fn counters_snapshot() {
        let c = MediaCounters::default();
        c.received(172);
        c.sent(172);
        c.sent(100);
        let s = c.snapshot();
        assert_eq!((s.packets_in, s.packets_out, s.bytes_out), (1, 2, 272));
    }
}
