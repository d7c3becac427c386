//! A reliable provisional response (RFC 3262) as the UAS sends it: an INVITE that requires
//! `100rel` gets its 180 with `RSeq`, retransmitted at T1, doubling, until the PRACK comes;
//! after 64*T1 without one the UAS gives up on the request (§3: a 5xx). Sans-IO: the call's
//! task asks what to do at each wake-up.

use std::time::{Duration, Instant};

/// RFC 3261 T1.
const T1: Duration = Duration::from_millis(500);

/// The RSeq of our one reliable provisional response per INVITE.
pub const RSEQ: u32 = 1;

/// What to do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing yet.
    Wait,
    /// Send the provisional response again.
    Resend,
    /// Acknowledged: no more retransmissions.
    Done,
    /// 64*T1 without a PRACK: reject the INVITE.
    GiveUp,
}

/// One reliable provisional response waiting for its PRACK.
#[derive(Clone, Debug)]
pub struct ReliableProvisional {
    next: Instant,
    interval: Duration,
    give_up: Instant,
}

impl ReliableProvisional {
    /// Sent (the first time) at `now`.
    pub fn sent(now: Instant) -> Self {
        ReliableProvisional {
            next: now + T1,
            interval: T1,
            give_up: now + 64 * T1,
        }
    }

    /// When to ask again.
    pub fn next_wakeup(&self) -> Instant {
        self.next.min(self.give_up)
    }

    /// What to do at `now`, given whether the PRACK for it has arrived.
    pub fn poll(&mut self, now: Instant, pracked: bool) -> Step {
        if pracked {
            return Step::Done;
        }
        if now >= self.give_up {
            return Step::GiveUp;
        }
        if now < self.next {
            return Step::Wait;
        }
        self.interval *= 2;
        self.next = now + self.interval;
        Step::Resend
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retransmits_doubling_until_the_prack_or_64_t1() {
        let t0 = Instant::now();
        let mut r = ReliableProvisional::sent(t0);
        assert_eq!(r.poll(t0 + Duration::from_millis(499), false), Step::Wait);
        assert_eq!(r.next_wakeup(), t0 + T1);
        let mut resent = Vec::new();
        let gave_up = loop {
            let now = r.next_wakeup();
            match r.poll(now, false) {
                Step::Resend => resent.push(now - t0),
                Step::GiveUp => break now,
                other => panic!("{other:?}"),
            }
        };
        let ms: Vec<u128> = resent.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [500, 1500, 3500, 7500, 15500, 31500]);
        assert_eq!(gave_up - t0, 64 * T1);

        let mut r = ReliableProvisional::sent(t0);
        assert_eq!(r.poll(t0 + T1, false), Step::Resend);
        assert_eq!(r.poll(t0 + 2 * T1, true), Step::Done);
    }
}
