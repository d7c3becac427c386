//! RFC 4733 telephone-events: key presses seen on a stream (a press is many packets —
//! updates, then the end packet three times — all with one timestamp), and key presses we
//! send, one packet per 20 ms tick of the worker.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::relay::{header, StreamRewriter};

/// A finished key press.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyPress {
    /// `0-9`, `*`, `#`, `A-D`.
    pub digit: char,
    /// How long it lasted, in milliseconds.
    pub duration_ms: u32,
}

/// The digit of an RFC 4733 §3.2 DTMF event code.
pub fn digit(event: u8) -> Option<char> {
    match event {
        0..=9 => Some(char::from(b'0' + event)),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some(char::from(b'A' + event - 12)),
        _ => None,
    }
}

/// The RFC 4733 event code of a digit.
pub fn event_code(digit: char) -> Option<u8> {
    match digit {
        '0'..='9' => Some(digit as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => Some(digit as u8 - b'A' + 12),
        _ => None,
    }
}

/// Packet spacing of events we send.
const STEP: Duration = Duration::from_millis(20);
/// Pause between two key presses.
const GAP: Duration = Duration::from_millis(60);

#[derive(Debug, Clone, Copy)]
struct Current {
    event: u8,
    ts: Option<u32>,
    sent_samples: u32,
    total_samples: u32,
    ends_sent: u8,
}

/// Key presses to send as RFC 4733 events.
#[derive(Debug, Default)]
pub struct Sender {
    queue: VecDeque<(u8, u32)>,
    current: Option<Current>,
    next_at: Option<Instant>,
}

impl Sender {
    /// Queues `digits` (already validated) of `duration_ms` each, for a clock of `clock_rate`.
    pub fn queue(&mut self, digits: &str, duration_ms: u32, clock_rate: u32) {
        let samples = duration_ms.saturating_mul(clock_rate) / 1000;
        self.queue.extend(
            digits
                .chars()
                .filter_map(event_code)
                .map(|e| (e, samples.max(160))),
        );
    }

    /// Whether an event is being sent (relayed audio toward the far end pauses meanwhile).
    pub fn is_active(&self) -> bool {
        self.current.is_some()
    }

    /// Writes the next event packet into `out` when one is due; returns its length.
    pub fn poll(
        &mut self,
        now: Instant,
        stream: &mut StreamRewriter,
        pt: u8,
        out: &mut [u8; 16],
    ) -> Option<usize> {
        if self.next_at.is_some_and(|t| now < t) {
            return None;
        }
        if self.current.is_none() {
            let (event, total) = self.queue.pop_front()?;
            self.current = Some(Current {
                event,
                ts: None,
                sent_samples: 0,
                total_samples: total,
                ends_sent: 0,
            });
        }
        let cur = self.current.as_mut()?;
        let (seq, now_ts) = stream.originate(now);
        let first = cur.ts.is_none();
        let ts = *cur.ts.get_or_insert(now_ts);
        let end = cur.sent_samples >= cur.total_samples;
        if !end {
            cur.sent_samples = (cur.sent_samples + 160).min(cur.total_samples);
        }
        out[0] = 0x80;
        header::set_pt_marker(out, pt, first);
        header::set_seq(out, seq);
        header::set_ts(out, ts);
        header::set_ssrc(out, stream.out_ssrc());
        out[12] = cur.event;
        // End bit on the final packets; volume 10 (-10 dBm0).
        out[13] = if end { 0x80 | 10 } else { 10 };
        out[14..16].copy_from_slice(&(cur.sent_samples.min(0xffff) as u16).to_be_bytes());
        if end {
            cur.ends_sent += 1;
            // RFC 4733 §2.5.1.4: the end packet goes out three times.
            if cur.ends_sent == 3 {
                self.current = None;
                self.next_at = Some(now + GAP);
                return Some(16);
            }
        }
        self.next_at = Some(now + STEP);
        Some(16)
    }
}

/// Collapses a stream of telephone-event payloads into key presses.
#[derive(Debug, Default, Clone)]
pub struct Detector {
    last_end_ts: Option<u32>,
}

impl Detector {
    /// One telephone-event payload (after the RTP header) with its RTP timestamp; a key
    /// press when this is the first end packet of an event.
    pub fn on_payload(&mut self, payload: &[u8], ts: u32, clock_rate: u32) -> Option<KeyPress> {
        let [event, flags, d0, d1, ..] = *payload else {
            return None;
        };
        if flags & 0x80 == 0 || self.last_end_ts == Some(ts) {
            return None;
        }
        self.last_end_ts = Some(ts);
        let samples = u32::from(u16::from_be_bytes([d0, d1]));
        Some(KeyPress {
            digit: digit(event)?,
            duration_ms: samples * 1000 / clock_rate.max(1),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_press_per_event_whatever_the_packets() {
        let mut d = Detector::default();
        // Key 5 at timestamp 1000: updates, then the end packet three times.
        assert_eq!(d.on_payload(&[5, 10, 0, 160], 1000, 8000), None);
        assert_eq!(d.on_payload(&[5, 10, 1, 64], 1000, 8000), None);
        let end = [5, 0x80 | 10, 3, 32];
        assert_eq!(
            d.on_payload(&end, 1000, 8000),
            Some(KeyPress {
                digit: '5',
                duration_ms: 100
            })
        );
        assert_eq!(d.on_payload(&end, 1000, 8000), None);
        assert_eq!(d.on_payload(&end, 1000, 8000), None);
        // The next press has its own timestamp.
        assert_eq!(
            d.on_payload(&[11, 0x80, 3, 32], 2600, 8000)
                .map(|k| k.digit),
            Some('#')
        );
        assert_eq!(d.on_payload(&[1, 0x80], 3000, 8000), None, "truncated");
        assert_eq!(
            d.on_payload(&[200, 0x80, 0, 1], 4000, 8000),
            None,
            "not DTMF"
        );
    }

    #[test]
    fn sent_events_are_detected_once_each() {
        let mut sender = Sender::default();
        sender.queue("12#", 100, 8000);
        let mut stream = StreamRewriter::new(42, 8000);
        let mut detector = Detector::default();
        let mut presses = Vec::new();
        let mut now = Instant::now();
        let mut buf = [0u8; 16];
        let mut last_seq: Option<u16> = None;
        for _ in 0..200 {
            if let Some(n) = sender.poll(now, &mut stream, 101, &mut buf) {
                assert_eq!(n, 16);
                assert_eq!(header::pt(&buf), 101);
                assert_eq!(header::ssrc(&buf), 42);
                if let Some(prev) = last_seq {
                    assert_eq!(header::seq(&buf), prev.wrapping_add(1));
                }
                last_seq = Some(header::seq(&buf));
                if let Some(p) = detector.on_payload(&buf[12..], header::ts(&buf), 8000) {
                    presses.push(p);
                }
            }
            now += Duration::from_millis(20);
        }
        let digits: String = presses.iter().map(|p| p.digit).collect();
        assert_eq!(digits, "12#");
        assert!(presses.iter().all(|p| p.duration_ms == 100));
        assert!(!sender.is_active());
    }

    #[test]
    fn digits() {
        assert_eq!(digit(0), Some('0'));
        assert_eq!(digit(10), Some('*'));
        assert_eq!(digit(15), Some('D'));
        assert_eq!(digit(16), None);
    }
}
