//! RFC 4571 framing, sans-IO: every ICE-TCP packet (STUN, DTLS, SRTP, SRTCP) travels as a
//! 2-byte big-endian length followed by that many bytes.
//!
//! [`Deframer`] takes received bytes and gives back whole frames; [`FrameQueue`] holds
//! framed packets waiting for the socket. Both own one fixed buffer, allocated once per
//! connection: nothing allocates per packet, and a peer cannot make either grow.

use crate::udp::MTU;

/// Largest frame accepted from a browser: the largest datagram the UDP path relays. A
/// length above it is garbage or hostile, not a packet.
pub const MAX_FRAME: usize = MTU;

/// Bytes of the length prefix.
const PREFIX: usize = 2;

/// Why a connection's byte stream is not RFC 4571 framing of packets we take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A frame of length zero: no ICE-TCP packet is empty.
    #[error("zero-length frame")]
    Empty,
    /// A frame longer than [`MAX_FRAME`].
    #[error("frame of {0} bytes, more than {MAX_FRAME}")]
    TooLong(usize),
}

/// Reassembles frames from a received byte stream: partial reads, several frames per read.
pub struct Deframer {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Deframer {
    /// A deframer whose buffer holds `capacity` bytes (at least one whole frame of
    /// [`MAX_FRAME`] bytes and its prefix, so a frame always fits once the ones before it
    /// are popped).
    pub fn with_capacity(capacity: usize) -> Deframer {
        Deframer {
            buf: vec![0; capacity.max(MAX_FRAME + PREFIX)].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    /// Copies as much of `bytes` as fits; returns how much that was. Pop frames to make room
    /// for the rest.
    pub fn push(&mut self, bytes: &[u8]) -> usize {
        let spare = self.spare();
        let n = bytes.len().min(spare.len());
        spare[..n].copy_from_slice(&bytes[..n]);
        self.filled(n);
        n
    }

    /// The free end of the buffer, to read into directly; report what was written with
    /// [`Deframer::filled`]. Empty when the buffer is full of unpopped frames.
    pub fn spare(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 && self.buf.len() - self.end < MAX_FRAME + PREFIX {
            // Moves at most one partial frame: everything before it was popped.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    /// `n` bytes were written into [`Deframer::spare`].
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Bytes received and not popped yet.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// The next whole frame without taking it. A bad length is reported as soon as its
    /// prefix is in, before its bytes are.
    pub fn peek(&self) -> Result<Option<&[u8]>, FrameError> {
        let have = &self.buf[self.start..self.end];
        let Some(prefix) = have.first_chunk::<PREFIX>() else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes(*prefix));
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if len > MAX_FRAME {
            return Err(FrameError::TooLong(len));
        }
        Ok(have.get(PREFIX..PREFIX + len))
    }

    /// Takes the next whole frame, if one is in.
    pub fn pop(&mut self) -> Result<Option<&[u8]>, FrameError> {
        let len = match self.peek()? {
            Some(frame) => frame.len(),
            None => return Ok(None),
        };
        let at = self.start + PREFIX;
        self.start = at + len;
        Ok(Some(&self.buf[at..at + len]))
    }
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// The peer does not read fast enough: the queue has no room for the frame.
    #[error("send queue full")]
    Full,
    /// Empty, or too long for a 2-byte length.
    #[error("cannot frame {0} bytes")]
    Size(usize),
}

/// Framed packets waiting for a connection's socket, in one bounded buffer. A frame is
/// queued whole or not at all, so the stream never carries half a frame.
pub struct FrameQueue {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl FrameQueue {
    /// A queue of `capacity` bytes (prefixes included).
    pub fn with_capacity(capacity: usize) -> FrameQueue {
        FrameQueue {
            buf: vec![0; capacity.max(MAX_FRAME + PREFIX)].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    /// Appends `packet` with its length prefix.
    pub fn push(&mut self, packet: &[u8]) -> Result<(), QueueError> {
        let len = packet.len();
        if len == 0 || len > usize::from(u16::MAX) {
            return Err(QueueError::Size(len));
        }
        let need = PREFIX + len;
        if self.buf.len() - self.end < need {
            if self.buf.len() - (self.end - self.start) < need {
                return Err(QueueError::Full);
            }
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        // `len` fits in u16: checked above.
        self.buf[self.end..self.end + PREFIX].copy_from_slice(&(len as u16).to_be_bytes());
        self.buf[self.end + PREFIX..self.end + need].copy_from_slice(packet);
        self.end += need;
        Ok(())
    }

    /// The bytes to write next.
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// `n` bytes of [`FrameQueue::pending`] were written.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(packets: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in packets {
            out.extend_from_slice(&(p.len() as u16).to_be_bytes());
            out.extend_from_slice(p);
        }
        out
    }

    fn drain(d: &mut Deframer) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        while let Some(f) = d.pop().expect("valid framing") {
            frames.push(f.to_vec());
        }
        frames
    }

    #[test]
    fn several_frames_in_one_read() {
        let mut d = Deframer::with_capacity(4096);
        let bytes = framed(&[b"one", b"two!", &[0x80; 172]]);
        assert_eq!(d.push(&bytes), bytes.len());
        assert_eq!(
            drain(&mut d),
            vec![b"one".to_vec(), b"two!".to_vec(), vec![0x80; 172]]
        );
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn frames_split_across_reads_at_every_byte() {
        let packets: [&[u8]; 3] = [b"stun-ish", &[0x17; 300], b"x"];
        let bytes = framed(&packets);
        for cut in 0..bytes.len() {
            let mut d = Deframer::with_capacity(0);
            d.push(&bytes[..cut]);
            let mut got = drain(&mut d);
            d.push(&bytes[cut..]);
            got.extend(drain(&mut d));
            assert_eq!(got.len(), 3, "cut at {cut}");
            assert_eq!(got[1], packets[1], "cut at {cut}");
        }
        // One byte at a time.
        let mut d = Deframer::with_capacity(0);
        let mut got = Vec::new();
        for b in &bytes {
            assert_eq!(d.push(std::slice::from_ref(b)), 1);
            got.extend(drain(&mut d));
        }
        assert_eq!(got.len(), 3);
    }

    #[test]
    fn a_full_buffer_takes_the_rest_after_pops() {
        let mut d = Deframer::with_capacity(0);
        let big = [0x80u8; MAX_FRAME];
        let bytes = framed(&[&big, &big, &big]);
        let mut offset = 0;
        let mut frames = 0;
        while offset < bytes.len() {
            let n = d.push(&bytes[offset..]);
            offset += n;
            frames += drain(&mut d).len();
            assert!(n > 0 || d.buffered() < MAX_FRAME + PREFIX, "no progress");
        }
        assert_eq!(frames, 3);
    }

    #[test]
    fn too_long_or_empty_frames_are_errors_as_soon_as_the_prefix_is_in() {
        let mut d = Deframer::with_capacity(0);
        d.push(&((MAX_FRAME + 1) as u16).to_be_bytes());
        assert_eq!(d.pop(), Err(FrameError::TooLong(MAX_FRAME + 1)));
        assert_eq!(d.peek(), Err(FrameError::TooLong(MAX_FRAME + 1)));

        let mut d = Deframer::with_capacity(0);
        d.push(&[0xff]);
        assert_eq!(d.pop(), Ok(None), "half a prefix is no verdict yet");
        d.push(&[0xff]);
        assert_eq!(d.pop(), Err(FrameError::TooLong(0xffff)));

        let mut d = Deframer::with_capacity(0);
        d.push(&framed(&[b"ok"]));
        d.push(&[0, 0]);
        assert_eq!(
            d.pop().map(|f| f.map(<[u8]>::to_vec)),
            Ok(Some(b"ok".to_vec()))
        );
        assert_eq!(d.pop(), Err(FrameError::Empty));

        // The largest allowed frame is fine.
        let mut d = Deframer::with_capacity(0);
        let max = [7u8; MAX_FRAME];
        d.push(&framed(&[&max]));
        assert_eq!(d.pop().ok().flatten().map(<[u8]>::len), Some(MAX_FRAME));
    }

    #[test]
    fn peek_leaves_the_frame_for_pop() {
        let mut d = Deframer::with_capacity(0);
        d.push(&framed(&[b"first"])[..4]);
        assert_eq!(d.peek(), Ok(None));
        d.push(&framed(&[b"first"])[4..]);
        assert_eq!(d.peek(), Ok(Some(&b"first"[..])));
        assert_eq!(d.pop(), Ok(Some(&b"first"[..])));
        assert_eq!(d.pop(), Ok(None));
    }

    #[test]
    fn the_queue_frames_whole_packets_and_drops_what_does_not_fit() {
        let mut q = FrameQueue::with_capacity(0);
        let cap = MAX_FRAME + PREFIX;
        q.push(b"abc").expect("room");
        assert_eq!(q.pending(), &[0, 3, b'a', b'b', b'c']);
        let rest = vec![9u8; cap - 5 - PREFIX];
        q.push(&rest).expect("exactly fits");
        assert_eq!(q.push(b"x"), Err(QueueError::Full));
        assert_eq!(q.pending().len(), cap, "nothing partial was queued");

        // Writing the first frame out makes room again (the rest moves to the front).
        q.consume(5);
        q.push(b"new").expect("room after a write");
        let mut d = Deframer::with_capacity(0);
        d.push(q.pending());
        assert_eq!(drain(&mut d), vec![rest, b"new".to_vec()]);
        q.consume(q.pending().len());
        assert!(q.is_empty());

        assert_eq!(q.push(&[]), Err(QueueError::Size(0)));
        assert_eq!(q.push(&vec![0; 70_000]), Err(QueueError::Size(70_000)));
    }
}
