//! Abuse limits for browser sessions: WebSocket connects and `register` attempts per source IP
//! (token buckets), a growing lock-out per source IP and DN after failed digest
//! authentication (password guessing), and requests per session. Contact centers put many
//! agents behind one NAT address, so the per-IP budgets are generous and the tight limit is on
//! one DN's failures from one address.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::config::Limits;

/// A token bucket: `rate` tokens per second, up to `burst`.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    tokens: f64,
    last: Instant,
    rate: f64,
    burst: f64,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        TokenBucket {
            tokens: burst,
            last: now,
            rate,
            burst,
        }
    }

    /// Takes a token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether the bucket has been full (idle) since before `now`.
    fn idle(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * self.rate >= self.burst
    }
}

/// Failed authentications in a row that are free before lock-outs start.
const FREE_FAILURES: u32 = 3;
/// The longest lock-out.
const MAX_LOCKOUT: Duration = Duration::from_secs(300);

#[derive(Clone, Debug)]
struct Failures {
    count: u32,
    until: Option<Instant>,
    last: Instant,
}

/// Entries kept before idle ones are swept.
const SWEEP_AT: usize = 10_000;

/// The limits' state, shared by all sessions.
#[derive(Default)]
pub struct Limiter {
    connects: DashMap<IpAddr, TokenBucket>,
    registers: DashMap<IpAddr, TokenBucket>,
    failures: DashMap<(IpAddr, String), Failures>,
}

fn per_minute(n: u32, now: Instant) -> TokenBucket {
    TokenBucket::new(f64::from(n) / 60.0, f64::from(n), now)
}

impl Limiter {
    /// A WebSocket connect from `ip`: allowed or not.
    pub fn connect(&self, ip: IpAddr, limits: &Limits, now: Instant) -> bool {
        self.sweep(now);
        self.connects
            .entry(ip)
            .or_insert_with(|| per_minute(limits.ws_connects_per_minute, now))
            .take(now)
    }

    /// A `register` attempt for `dn` from `ip`: `Err(wait)` while locked out after failures
    /// or over the per-IP budget.
    pub fn register(
        &self,
        ip: IpAddr,
        dn: &str,
        limits: &Limits,
        now: Instant,
    ) -> Result<(), Duration> {
        // The lock-out first: refused guesses must not use up the address's budget, or one
        // guesser would lock every agent behind the same NAT out.
        if let Some(f) = self.failures.get(&(ip, dn.to_string())) {
            if let Some(until) = f.until.filter(|u| *u > now) {
                return Err(until - now);
            }
        }
        let ok = self
            .registers
            .entry(ip)
            .or_insert_with(|| per_minute(limits.registers_per_minute, now))
            .take(now);
        if ok {
            Ok(())
        } else {
            Err(Duration::from_secs(
                60 / u64::from(limits.registers_per_minute.max(1)).max(1),
            ))
        }
    }

    /// The registrar refused `dn`'s credentials from `ip`.
    pub fn auth_failed(&self, ip: IpAddr, dn: &str, now: Instant) {
        let mut f = self
            .failures
            .entry((ip, dn.to_string()))
            .or_insert(Failures {
                count: 0,
                until: None,
                last: now,
            });
        f.count += 1;
        f.last = now;
        if f.count >= FREE_FAILURES {
            let exp = (f.count - FREE_FAILURES).min(16);
            let lock = Duration::from_secs(1u64 << exp).min(MAX_LOCKOUT);
            f.until = Some(now + lock);
        }
    }

    /// `dn` registered from `ip`: its failures are forgotten.
    pub fn auth_ok(&self, ip: IpAddr, dn: &str) {
        self.failures.remove(&(ip, dn.to_string()));
    }

    /// Keeps the maps bounded: idle buckets and old failures go once there are many.
    fn sweep(&self, now: Instant) {
        if self.connects.len() > SWEEP_AT {
            self.connects.retain(|_, b| !b.idle(now));
        }
        if self.registers.len() > SWEEP_AT {
            self.registers.retain(|_, b| !b.idle(now));
        }
        if self.failures.len() > SWEEP_AT {
            self.failures
                .retain(|_, f| now.saturating_duration_since(f.last) < MAX_LOCKOUT * 2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        ws_connects_per_minute: 60,
        registers_per_minute: 120,
        requests_per_second: 10,
        max_ringing_per_dn: 4,
    };

    #[test]
    fn buckets_refill_at_their_rate() {
        let t = Instant::now();
        let mut b = TokenBucket::new(2.0, 3.0, t);
        assert!(b.take(t) && b.take(t) && b.take(t));
        assert!(!b.take(t));
        assert!(b.take(t + Duration::from_millis(500)));
        assert!(!b.take(t + Duration::from_millis(600)));
    }

    #[test]
    fn connects_are_limited_per_address() {
        let l = Limiter::default();
        let t = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..60 {
            assert!(l.connect(a, &LIMITS, t));
        }
        assert!(!l.connect(a, &LIMITS, t));
        assert!(l.connect(b, &LIMITS, t));
        assert!(l.connect(a, &LIMITS, t + Duration::from_secs(1)));
    }

    #[test]
    fn failed_auth_locks_out_one_dn_and_backs_off() {
        let l = Limiter::default();
        let t = Instant::now();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..FREE_FAILURES - 1 {
            assert!(l.register(ip, "5001", &LIMITS, t).is_ok());
            l.auth_failed(ip, "5001", t);
        }
        assert!(l.register(ip, "5001", &LIMITS, t).is_ok());
        l.auth_failed(ip, "5001", t);
        assert_eq!(
            l.register(ip, "5001", &LIMITS, t),
            Err(Duration::from_secs(1))
        );
        // Another DN from the same address is not locked out.
        assert!(l.register(ip, "5002", &LIMITS, t).is_ok());
        // After the lock-out one more try, and the next lock-out is twice as long.
        let t1 = t + Duration::from_secs(1);
        assert!(l.register(ip, "5001", &LIMITS, t1).is_ok());
        l.auth_failed(ip, "5001", t1);
        assert_eq!(
            l.register(ip, "5001", &LIMITS, t1),
            Err(Duration::from_secs(2))
        );
        l.auth_ok(ip, "5001");
        assert!(l.register(ip, "5001", &LIMITS, t1).is_ok());
    }

    #[test]
    fn refused_guesses_do_not_spend_the_address_budget() {
        let l = Limiter::default();
        let t = Instant::now();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..FREE_FAILURES {
            let _ = l.register(ip, "5001", &LIMITS, t);
            l.auth_failed(ip, "5001", t);
        }
        for _ in 0..1000 {
            assert!(l.register(ip, "5001", &LIMITS, t).is_err());
        }
        assert!(l.register(ip, "5002", &LIMITS, t).is_ok());
    }
}
