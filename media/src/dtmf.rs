//! RFC 4733 telephone-events seen on a stream, turned into one key press each: a press is
//! many packets (updates, then the end packet sent three times), all with one timestamp.

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
    fn digits() {
        assert_eq!(digit(0), Some('0'));
        assert_eq!(digit(10), Some('*'));
        assert_eq!(digit(15), Some('D'));
        assert_eq!(digit(16), None);
    }
}
