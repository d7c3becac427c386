//! The per-packet relay step between two legs: payload-type mapping and the rewriting of
//! SSRC, sequence number and timestamp, in place, so each receiver sees one continuous
//! source whatever happens on the other leg (re-INVITEs, a new SSRC, a new source address).
//!
//! Only the fixed 12-byte part of the RTP header (RFC 3550 §5.1) is touched, at its fixed
//! offsets: the relay never needs CSRCs or extensions, and reading them would cost the parse
//! an allocation per packet. Nothing here allocates, locks or logs.

use std::time::Instant;

/// Why a packet is not relayed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RelayError {
    /// Shorter than an RTP header, or not RTP version 2.
    #[error("not an RTP packet")]
    NotRtp,
    /// A payload type the other leg did not negotiate.
    #[error("payload type {0} is not negotiated")]
    UnmappedPayloadType(u8),
}

/// Error when a map is full.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("payload type map is full")]
pub struct PtMapFull;

/// Payload types of one leg mapped to the other's (at most 8: a codec, its DTMF, CN, RED…).
/// A fixed array: lookups are a scan of a cache line, with no hashing and no heap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PtMap {
    from: [u8; 8],
    to: [u8; 8],
    len: u8,
}

impl PtMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps `from` to `to`, replacing an earlier mapping of `from`.
    pub fn insert(&mut self, from: u8, to: u8) -> Result<(), PtMapFull> {
        let n = usize::from(self.len);
        if let Some(i) = self.from[..n].iter().position(|&f| f == from) {
            self.to[i] = to;
            return Ok(());
        }
        if n == self.from.len() {
            return Err(PtMapFull);
        }
        self.from[n] = from & 0x7f;
        self.to[n] = to & 0x7f;
        self.len += 1;
        Ok(())
    }

    /// The other leg's payload type for `pt`.
    #[inline]
    pub fn get(&self, pt: u8) -> Option<u8> {
        let n = usize::from(self.len);
        self.from[..n]
            .iter()
            .position(|&f| f == pt)
            .map(|i| self.to[i])
    }

    /// The map the other way round.
    pub fn reversed(&self) -> PtMap {
        let mut r = PtMap::new();
        for i in 0..usize::from(self.len) {
            // Cannot overflow: the reversed map has as many entries as this one.
            let _ = r.insert(self.to[i], self.from[i]);
        }
        r
    }
}

/// Fixed RTP header fields, read and written in place (RFC 3550 §5.1).
pub mod header {
    /// Length of the fixed header.
    pub const LEN: usize = 12;

    /// Version 2, at least a fixed header.
    #[inline]
    pub fn is_rtp(p: &[u8]) -> bool {
        p.len() >= LEN && p[0] >> 6 == 2
    }
    /// Payload type.
    #[inline]
    pub fn pt(p: &[u8]) -> u8 {
        p[1] & 0x7f
    }
    /// Marker bit.
    #[inline]
    pub fn marker(p: &[u8]) -> bool {
        p[1] & 0x80 != 0
    }
    /// Sequence number.
    #[inline]
    pub fn seq(p: &[u8]) -> u16 {
        u16::from_be_bytes([p[2], p[3]])
    }
    /// Timestamp.
    #[inline]
    pub fn ts(p: &[u8]) -> u32 {
        u32::from_be_bytes([p[4], p[5], p[6], p[7]])
    }
    /// SSRC.
    #[inline]
    pub fn ssrc(p: &[u8]) -> u32 {
        u32::from_be_bytes([p[8], p[9], p[10], p[11]])
    }
    /// Sets payload type and marker.
    #[inline]
    pub fn set_pt_marker(p: &mut [u8], pt: u8, marker: bool) {
        p[1] = (pt & 0x7f) | if marker { 0x80 } else { 0 };
    }
    /// Sets the sequence number.
    #[inline]
    pub fn set_seq(p: &mut [u8], v: u16) {
        p[2..4].copy_from_slice(&v.to_be_bytes());
    }
    /// Sets the timestamp.
    #[inline]
    pub fn set_ts(p: &mut [u8], v: u32) {
        p[4..8].copy_from_slice(&v.to_be_bytes());
    }
    /// Sets the SSRC.
    #[inline]
    pub fn set_ssrc(p: &mut [u8], v: u32) {
        p[8..12].copy_from_slice(&v.to_be_bytes());
    }
}

/// A jump this large in sequence numbers within one SSRC is a new stream (a far end that
/// restarted its RTP after a re-INVITE without changing SSRC), not loss or reordering.
const SEQ_JUMP: u16 = 1000;

/// One direction of a relayed stream, as the receiver sees it: our SSRC, and sequence
/// numbers and timestamps that continue across any change of the sender.
#[derive(Debug, Clone)]
pub struct StreamRewriter {
    out_ssrc: u32,
    clock_rate: u32,
    state: Option<Anchor>,
    /// The next packet starts a new source whatever its SSRC (after a re-INVITE).
    reanchor: bool,
}

#[derive(Debug, Clone, Copy)]
struct Anchor {
    in_ssrc: u32,
    seq_delta: u16,
    ts_delta: u32,
    /// Highest sequence number sent (in RFC 1982 order) and its timestamp and time.
    last_seq: u16,
    last_ts: u32,
    last_at: Instant,
}

/// `a` is after `b` in RFC 1982 serial-number order.
#[inline]
fn seq_after(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
}

impl StreamRewriter {
    /// A stream sent as `out_ssrc`, whose timestamps tick at `clock_rate` Hz.
    pub fn new(out_ssrc: u32, clock_rate: u32) -> Self {
        StreamRewriter {
            out_ssrc,
            clock_rate: clock_rate.max(1),
            state: None,
            reanchor: false,
        }
    }

    /// The SSRC the receiver sees.
    pub fn out_ssrc(&self) -> u32 {
        self.out_ssrc
    }

    /// Changes the clock rate (a re-negotiated codec); the next packet re-anchors.
    pub fn set_clock_rate(&mut self, clock_rate: u32) {
        self.clock_rate = clock_rate.max(1);
        self.reanchor = true;
    }

    /// The sender's timeline may restart (a re-INVITE, hold and resume): the next packet
    /// continues the receiver's sequence and clock, whatever its own numbers say, so a gap
    /// in the sender's numbering never shows up as loss or a jump.
    pub fn reanchor(&mut self) {
        self.reanchor = true;
    }

    /// The sequence number and current timestamp for a packet we originate on this stream
    /// (RFC 4733 events): it takes the next sequence number, and the relayed stream then
    /// continues after it.
    pub fn originate(&mut self, now: Instant) -> (u16, u32) {
        let (seq, ts) = match self.state {
            Some(a) => {
                let gap = now.saturating_duration_since(a.last_at);
                let samples = (gap.as_secs_f64() * f64::from(self.clock_rate)) as u32;
                (a.last_seq.wrapping_add(1), a.last_ts.wrapping_add(samples))
            }
            None => (1, 0),
        };
        self.state = Some(Anchor {
            in_ssrc: 0,
            seq_delta: 0,
            ts_delta: 0,
            last_seq: seq,
            last_ts: ts,
            last_at: now,
        });
        self.reanchor = true;
        (seq, ts)
    }

    /// Rewrites `packet` in place for the other leg: payload type through `map`, our SSRC,
    /// and continuous sequence numbers and timestamps.
    pub fn rewrite(
        &mut self,
        packet: &mut [u8],
        map: &PtMap,
        now: Instant,
    ) -> Result<(), RelayError> {
        if !header::is_rtp(packet) {
            return Err(RelayError::NotRtp);
        }
        let in_pt = header::pt(packet);
        let out_pt = map
            .get(in_pt)
            .ok_or(RelayError::UnmappedPayloadType(in_pt))?;
        let (in_seq, in_ts, in_ssrc) = (
            header::seq(packet),
            header::ts(packet),
            header::ssrc(packet),
        );
        let mut marker = header::marker(packet);

        let fresh = std::mem::take(&mut self.reanchor);
        let anchor = match self.state {
            Some(a) if !fresh && a.in_ssrc == in_ssrc && !self.jumped(&a, in_seq) => a,
            Some(prev) => {
                // A new source: continue right after what the receiver last saw, with the
                // timestamp advanced by the wall-clock gap so its jitter buffer keeps time.
                let gap = now.saturating_duration_since(prev.last_at);
                let samples = (gap.as_secs_f64() * f64::from(self.clock_rate)) as u64;
                let advance = u32::try_from(samples.max(1)).unwrap_or(u32::MAX);
                let out_seq = prev.last_seq.wrapping_add(1);
                let out_ts = prev.last_ts.wrapping_add(advance);
                marker = true;
                Anchor {
                    in_ssrc,
                    seq_delta: out_seq.wrapping_sub(in_seq),
                    ts_delta: out_ts.wrapping_sub(in_ts),
                    last_seq: prev.last_seq,
                    last_ts: prev.last_ts,
                    last_at: prev.last_at,
                }
            }
            None => Anchor {
                in_ssrc,
                seq_delta: 0,
                ts_delta: 0,
                last_seq: in_seq.wrapping_sub(1),
                last_ts: in_ts,
                last_at: now,
            },
        };
        let out_seq = in_seq.wrapping_add(anchor.seq_delta);
        let out_ts = in_ts.wrapping_add(anchor.ts_delta);
        let mut next = anchor;
        if seq_after(out_seq, anchor.last_seq) {
            next.last_seq = out_seq;
            next.last_ts = out_ts;
            next.last_at = now;
        }
        self.state = Some(next);

        header::set_pt_marker(packet, out_pt, marker);
        header::set_seq(packet, out_seq);
        header::set_ts(packet, out_ts);
        header::set_ssrc(packet, self.out_ssrc);
        Ok(())
    }

    fn jumped(&self, a: &Anchor, in_seq: u16) -> bool {
        let expected = a.last_seq.wrapping_sub(a.seq_delta).wrapping_add(1);
        let d = in_seq.wrapping_sub(expected);
        d > SEQ_JUMP && d < u16::MAX - SEQ_JUMP
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn packet(pt: u8, seq: u16, ts: u32, ssrc: u32) -> Vec<u8> {
        let mut p = vec![0x80, pt, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xaa, 0xbb];
        header::set_seq(&mut p, seq);
        header::set_ts(&mut p, ts);
        header::set_ssrc(&mut p, ssrc);
        p
    }

    fn map() -> PtMap {
        let mut m = PtMap::new();
        m.insert(0, 0).expect("room");
        m.insert(101, 126).expect("room");
        m
    }

    #[test]
    fn pt_map_maps_and_reverses() {
        let m = map();
        assert_eq!(m.get(101), Some(126));
        assert_eq!(m.get(8), None);
        assert_eq!(m.reversed().get(126), Some(101));
        let mut full = PtMap::new();
        for i in 0..8 {
            full.insert(i, i).expect("room");
        }
        assert_eq!(full.insert(9, 9), Err(PtMapFull));
        assert_eq!(full.insert(3, 30), Ok(()));
        assert_eq!(full.get(3), Some(30));
    }

    #[test]
    fn rewrites_pt_and_ssrc_and_keeps_payload() {
        let mut r = StreamRewriter::new(0x1234_5678, 8000);
        let now = Instant::now();
        let mut p = packet(101, 10, 1000, 42);
        r.rewrite(&mut p, &map(), now).expect("relayed");
        assert_eq!(header::pt(&p), 126);
        assert_eq!(header::ssrc(&p), 0x1234_5678);
        assert_eq!(&p[12..], &[0xaa, 0xbb]);
        let mut bad = packet(8, 11, 1160, 42);
        assert_eq!(
            r.rewrite(&mut bad, &map(), now),
            Err(RelayError::UnmappedPayloadType(8))
        );
        assert_eq!(
            r.rewrite(&mut [0x80, 0, 0], &map(), now),
            Err(RelayError::NotRtp)
        );
        let mut v1 = packet(0, 1, 1, 1);
        v1[0] = 0x40;
        assert_eq!(r.rewrite(&mut v1, &map(), now), Err(RelayError::NotRtp));
    }

    #[test]
    fn new_ssrc_continues_sequence_and_time() {
        let mut r = StreamRewriter::new(7, 8000);
        let t0 = Instant::now();
        let mut last = (0u16, 0u32);
        for i in 0..50u16 {
            let mut p = packet(0, 60_000 + i, 5000 + u32::from(i) * 160, 1);
            r.rewrite(
                &mut p,
                &map(),
                t0 + Duration::from_millis(20 * u64::from(i)),
            )
            .expect("relayed");
            last = (header::seq(&p), header::ts(&p));
        }
        // The far end re-INVITEs and restarts with a new SSRC, seq and timestamp, 100 ms later.
        let t1 = t0 + Duration::from_millis(20 * 49 + 100);
        let mut p = packet(0, 3, 999_999, 2);
        r.rewrite(&mut p, &map(), t1).expect("relayed");
        assert_eq!(header::seq(&p), last.0.wrapping_add(1));
        assert_eq!(header::ts(&p), last.1.wrapping_add(800));
        assert!(header::marker(&p), "a new source starts a talkspurt");
        let mut p = packet(0, 4, 999_999 + 160, 2);
        r.rewrite(&mut p, &map(), t1 + Duration::from_millis(20))
            .expect("relayed");
        assert_eq!(header::seq(&p), last.0.wrapping_add(2));
        assert_eq!(header::ts(&p), last.1.wrapping_add(960));
        assert!(!header::marker(&p));
    }

    #[test]
    fn same_ssrc_restart_is_a_new_source_but_reordering_is_not() {
        let mut r = StreamRewriter::new(7, 8000);
        let t = Instant::now();
        for s in [100u16, 101, 103, 102] {
            let mut p = packet(0, s, u32::from(s) * 160, 9);
            r.rewrite(&mut p, &map(), t).expect("relayed");
            assert_eq!(header::seq(&p), s, "reordering keeps the offset");
        }
        let mut p = packet(0, 40_000, 1, 9);
        r.rewrite(&mut p, &map(), t).expect("relayed");
        assert_eq!(header::seq(&p), 104);
    }

    #[test]
    fn reanchor_hides_a_gap_in_the_senders_numbering() {
        let mut r = StreamRewriter::new(7, 8000);
        let t = Instant::now();
        let mut p = packet(0, 500, 80_000, 3);
        r.rewrite(&mut p, &map(), t).expect("relayed");
        let last = header::seq(&p);
        r.reanchor();
        // Same SSRC, 100 packets later, after 2 s of hold.
        let mut p = packet(0, 600, 96_000, 3);
        r.rewrite(&mut p, &map(), t + Duration::from_secs(2))
            .expect("relayed");
        assert_eq!(header::seq(&p), last.wrapping_add(1));
        let mut p = packet(0, 601, 96_160, 3);
        r.rewrite(&mut p, &map(), t + Duration::from_secs(2))
            .expect("relayed");
        assert_eq!(header::seq(&p), last.wrapping_add(2));
    }

    #[test]
    fn sequence_wraps_continuously() {
        let mut r = StreamRewriter::new(7, 8000);
        let t = Instant::now();
        let mut prev: Option<u16> = None;
        for i in 0..70_000u32 {
            let s = (i % 65_536) as u16;
            let mut p = packet(0, s, i.wrapping_mul(160), 5);
            r.rewrite(&mut p, &map(), t).expect("relayed");
            if let Some(prev) = prev {
                assert_eq!(header::seq(&p), prev.wrapping_add(1));
            }
            prev = Some(header::seq(&p));
        }
    }
}
