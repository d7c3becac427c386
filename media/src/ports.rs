//! The RTP port range (`--rtp-ports`), handed out as even/odd RTP/RTCP pairs (RFC 3550 §11).

use std::collections::BTreeSet;

/// No pair is free.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("no free RTP port pair in {low}-{high}")]
pub struct Exhausted {
    /// Range start.
    pub low: u16,
    /// Range end.
    pub high: u16,
}

/// A pool of even RTP ports; the odd port above each is its RTCP port.
#[derive(Debug)]
pub struct PortPool {
    low: u16,
    high: u16,
    free: BTreeSet<u16>,
    /// Where the next search starts, so a just-released port is not reused at once (late
    /// packets of the old call would land in the new one).
    cursor: u16,
}

impl PortPool {
    /// A pool over `low..=high`; ports outside even pairs at the edges are left unused.
    pub fn new(low: u16, high: u16) -> Self {
        let start = low + (low % 2);
        let free: BTreeSet<u16> = (start..high).step_by(2).collect();
        PortPool {
            low,
            high,
            free,
            cursor: start,
        }
    }

    /// Number of free pairs.
    pub fn available(&self) -> usize {
        self.free.len()
    }

    /// Takes the next free pair at or after the cursor, wrapping around.
    pub fn allocate(&mut self) -> Result<u16, Exhausted> {
        let port = self
            .free
            .range(self.cursor..)
            .next()
            .or_else(|| self.free.iter().next())
            .copied()
            .ok_or(Exhausted {
                low: self.low,
                high: self.high,
            })?;
        self.free.remove(&port);
        self.cursor = port.saturating_add(2);
        Ok(port)
    }

    /// Returns a pair to the pool; ports that were never part of it are ignored.
    pub fn release(&mut self, port: u16) {
        if port.is_multiple_of(2) && port >= self.low && port < self.high {
            self.free.insert(port);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_even_and_in_range() {
        let mut p = PortPool::new(20001, 20006);
        assert_eq!(p.available(), 2);
        assert_eq!(p.allocate(), Ok(20002));
        assert_eq!(p.allocate(), Ok(20004));
        assert_eq!(
            p.allocate(),
            Err(Exhausted {
                low: 20001,
                high: 20006
            })
        );
        p.release(20002);
        assert_eq!(p.allocate(), Ok(20002));
    }

    #[test]
    fn released_ports_are_not_reused_at_once() {
        let mut p = PortPool::new(20000, 20009);
        let a = p.allocate().expect("free");
        p.release(a);
        let b = p.allocate().expect("free");
        assert_ne!(a, b);
        p.release(7);
        p.release(20001);
        assert_eq!(p.available(), 4);
    }
}
