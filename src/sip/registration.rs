//! The REGISTER client of one DN as a sans-IO state machine (RFC 3261 §10.2, digest per
//! RFC 7616): feed it responses, time-outs and commands with the current instant; it says
//! what to send and what to tell the browser. The tokio driver in `registrar.rs` only moves
//! messages and sleeps until [`Registration::deadline`].

use std::time::{Duration, Instant};

use super::digest::Challenge;

/// What a REGISTER is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// Create or refresh the binding.
    Register,
    /// Remove it (Expires: 0).
    Unregister,
}

/// Credentials to put in the next request.
#[derive(Clone, Debug, PartialEq)]
pub struct AuthToSend {
    /// The challenge being answered.
    pub challenge: Challenge,
    /// Nonce count for this use of the nonce.
    pub nc: u32,
    /// `Proxy-Authorization` (after 407) rather than `Authorization` (after 401).
    pub proxy: bool,
}

/// An instruction for the driver.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Send a REGISTER (a new transaction; abandon any still in flight).
    Send {
        /// Expires to ask for; 0 removes the binding.
        expires: u32,
        /// Digest credentials, when a challenge is known.
        auth: Option<AuthToSend>,
    },
    /// Something for the session to know.
    Report(Outcome),
}

/// What a registration reports to its owner.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The registrar granted the binding (first time or again after an outage).
    Registered {
        /// Granted expiry, seconds.
        expires: u32,
    },
    /// The first registration failed; the machine is finished.
    Rejected {
        /// The SIP status that caused it (408 for no answer).
        status: u16,
        /// Credentials refused (as opposed to an unreachable or unwilling registrar).
        auth: bool,
    },
    /// A refresh failed; the machine retries on its own.
    Lost {
        /// The SIP status that caused it (408 for no answer).
        status: u16,
    },
    /// The binding is removed (or could not be removed and we stop trying); finished.
    Unregistered,
}

/// A response as the machine needs it.
#[derive(Clone, Debug, Default)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// `WWW-Authenticate` or `Proxy-Authenticate` values.
    pub challenges: Vec<String>,
    /// Expiry the registrar granted our Contact (contact param, else Expires header).
    pub granted: Option<u32>,
    /// `Min-Expires` of a 423.
    pub min_expires: Option<u32>,
}

#[derive(Clone, Debug, PartialEq)]
enum State {
    Idle,
    /// A request is in flight; `answered` is whether it carried credentials for the
    /// current nonce (so a second plain challenge means the password is wrong).
    Sending {
        purpose: Purpose,
        answered: bool,
        ever_registered: bool,
    },
    Registered {
        refresh_at: Instant,
    },
    RetryWait {
        at: Instant,
    },
    Done,
}

/// One DN's registration.
#[derive(Debug)]
pub struct Registration {
    requested: u32,
    retry: Duration,
    state: State,
    challenge: Option<(Challenge, bool)>,
    nc: u32,
    /// Whether a binding has ever been granted: a failure before that is the browser's
    /// answer, after that it is an outage to ride out.
    ever_registered: bool,
}

/// When to refresh a binding granted for `granted` seconds: halfway for short bindings,
/// a minute early for long ones, never sooner than one second.
pub fn refresh_after(granted: u32) -> Duration {
    let secs = if granted <= 120 {
        granted / 2
    } else {
        granted - 60
    };
    Duration::from_secs(u64::from(secs.max(1)))
}

impl Registration {
    /// A machine that will ask for `requested` seconds and retry failed refreshes every `retry`.
    pub fn new(requested: u32, retry: Duration) -> Self {
        Registration {
            requested,
            retry,
            state: State::Idle,
            challenge: None,
            nc: 0,
            ever_registered: false,
        }
    }

    /// Whether the machine has finished (rejected or unregistered).
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Whether the last known state is a granted binding.
    pub fn is_registered(&self) -> bool {
        matches!(self.state, State::Registered { .. })
    }

    /// The next instant at which [`Registration::on_timer`] has work, if any.
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Registered { refresh_at } => Some(refresh_at),
            State::RetryWait { at } => Some(at),
            _ => None,
        }
    }

    /// Starts the first registration.
    pub fn start(&mut self) -> Vec<Action> {
        if self.state != State::Idle {
            return Vec::new();
        }
        vec![self.send(Purpose::Register)]
    }

    /// Removes the binding. Always ends in [`Action::Report(Outcome::Unregistered)`], sooner or later.
    pub fn unregister(&mut self) -> Vec<Action> {
        match self.state {
            State::Done => Vec::new(),
            State::Idle => {
                self.state = State::Done;
                vec![Action::Report(Outcome::Unregistered)]
            }
            State::Sending {
                purpose: Purpose::Unregister,
                ..
            } => Vec::new(),
            _ => vec![self.send(Purpose::Unregister)],
        }
    }

    /// The upstream answers again after an outage: its location table may be empty, so
    /// register now rather than at the next refresh.
    pub fn upstream_recovered(&mut self) -> Vec<Action> {
        match self.state {
            State::Registered { .. } | State::RetryWait { .. } => {
                vec![self.send(Purpose::Register)]
            }
            State::Sending {
                purpose: Purpose::Register,
                ..
            } if self.ever_registered => vec![self.send(Purpose::Register)],
            _ => Vec::new(),
        }
    }

    /// Timer check: refresh or retry when due.
    pub fn on_timer(&mut self, now: Instant) -> Vec<Action> {
        match self.deadline() {
            Some(at) if at <= now => vec![self.send(Purpose::Register)],
            _ => Vec::new(),
        }
    }

    /// No final response arrived for the request in flight.
    pub fn on_timeout(&mut self, now: Instant) -> Vec<Action> {
        self.on_reply(
            &Reply {
                status: 408,
                ..Reply::default()
            },
            now,
        )
    }

    /// A final response (1xx are not for the machine) to the request in flight.
    pub fn on_reply(&mut self, reply: &Reply, now: Instant) -> Vec<Action> {
        let State::Sending {
            purpose, answered, ..
        } = self.state.clone()
        else {
            return Vec::new();
        };
        match reply.status {
            200..=299 => match purpose {
                Purpose::Register => {
                    let granted = reply.granted.unwrap_or(self.requested);
                    if granted == 0 {
                        // A registrar that grants nothing has not registered us.
                        return self.fail(purpose, 500, false, now);
                    }
                    self.ever_registered = true;
                    self.state = State::Registered {
                        refresh_at: now + refresh_after(granted),
                    };
                    vec![Action::Report(Outcome::Registered { expires: granted })]
                }
                Purpose::Unregister => {
                    self.state = State::Done;
                    vec![Action::Report(Outcome::Unregistered)]
                }
            },
            401 | 407 => {
                let proxy = reply.status == 407;
                let challenge = Challenge::choose(reply.challenges.iter().map(String::as_str));
                match challenge {
                    // A second challenge for credentials we just sent means they are wrong,
                    // unless the server says only the nonce went stale (RFC 7616 §3.3).
                    Ok(ch) if !answered || ch.stale => {
                        self.challenge = Some((ch, proxy));
                        self.nc = 0;
                        let action = self.send_answering(purpose);
                        vec![action]
                    }
                    _ => self.fail(purpose, reply.status, true, now),
                }
            }
            423 => match reply.min_expires {
                Some(min) if purpose == Purpose::Register && min > self.requested => {
                    self.requested = min;
                    vec![self.send(purpose)]
                }
                _ => self.fail(purpose, 423, false, now),
            },
            status => self.fail(purpose, status, status == 403, now),
        }
    }

    fn fail(&mut self, purpose: Purpose, status: u16, auth: bool, now: Instant) -> Vec<Action> {
        match purpose {
            Purpose::Unregister => {
                self.state = State::Done;
                vec![Action::Report(Outcome::Unregistered)]
            }
            Purpose::Register if !self.ever_registered => {
                self.state = State::Done;
                vec![Action::Report(Outcome::Rejected { status, auth })]
            }
            Purpose::Register => {
                // A stale challenge must not be replayed against a fresh registrar.
                self.challenge = None;
                self.state = State::RetryWait {
                    at: now + self.retry,
                };
                vec![Action::Report(Outcome::Lost { status })]
            }
        }
    }

    /// A new request, reusing the last challenge (with the next nonce count) if we have one:
    /// that saves a round trip on refreshes where the registrar accepts the old nonce. A
    /// challenge to such a request is answered afresh, since a restarted registrar rejects
    /// every nonce it did not issue itself.
    fn send(&mut self, purpose: Purpose) -> Action {
        self.sending(purpose, false)
    }

    fn send_answering(&mut self, purpose: Purpose) -> Action {
        self.sending(purpose, true)
    }

    fn sending(&mut self, purpose: Purpose, answered: bool) -> Action {
        self.state = State::Sending {
            purpose,
            answered,
            ever_registered: self.ever_registered,
        };
        let auth = self.challenge.as_ref().map(|(ch, proxy)| {
            self.nc += 1;
            AuthToSend {
                challenge: ch.clone(),
                nc: self.nc,
                proxy: *proxy,
            }
        });
        Action::Send {
            expires: match purpose {
                Purpose::Register => self.requested,
                Purpose::Unregister => 0,
            },
            auth,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CH: &str = r#"Digest realm="127.0.0.1", nonce="abc", qop="auth""#;
    const CH2: &str = r#"Digest realm="127.0.0.1", nonce="def", qop="auth", stale=true"#;

    fn reply(status: u16) -> Reply {
        Reply {
            status,
            ..Reply::default()
        }
    }

    fn challenge(v: &str) -> Reply {
        Reply {
            status: 401,
            challenges: vec![v.to_string()],
            ..Reply::default()
        }
    }

    fn ok(granted: u32) -> Reply {
        Reply {
            status: 200,
            granted: Some(granted),
            ..Reply::default()
        }
    }

    fn sent(actions: &[Action]) -> (u32, Option<u32>) {
        match actions {
            [Action::Send { expires, auth }] => (*expires, auth.as_ref().map(|a| a.nc)),
            other => panic!("expected one Send, got {other:?}"),
        }
    }

    fn registered(r: &mut Registration, now: Instant) {
        assert_eq!(sent(&r.start()), (60, None));
        assert_eq!(sent(&r.on_reply(&challenge(CH), now)), (60, Some(1)));
        assert_eq!(
            r.on_reply(&ok(30), now),
            vec![Action::Report(Outcome::Registered { expires: 30 })]
        );
    }

    #[test]
    fn challenge_then_granted_then_refresh_at_half() {
        let now = Instant::now();
        let mut r = Registration::new(60, Duration::from_secs(5));
        registered(&mut r, now);
        assert_eq!(r.deadline(), Some(now + Duration::from_secs(15)));
        assert!(r.on_timer(now + Duration::from_secs(14)).is_empty());
        // The refresh reuses the nonce with the next count.
        assert_eq!(
            sent(&r.on_timer(now + Duration::from_secs(15))),
            (60, Some(2))
        );
        assert_eq!(
            r.on_reply(&ok(30), now),
            vec![Action::Report(Outcome::Registered { expires: 30 })]
        );
    }

    #[test]
    fn wrong_password_is_rejected_after_the_second_challenge() {
        let now = Instant::now();
        let mut r = Registration::new(60, Duration::from_secs(5));
        r.start();
        r.on_reply(&challenge(CH), now);
        assert_eq!(
            r.on_reply(&challenge(CH), now),
            vec![Action::Report(Outcome::Rejected {
                status: 401,
                auth: true
            })]
        );
        assert!(r.is_done());
    }

    #[test]
    fn stale_nonce_is_answered_again_from_count_one() {
        let now = Instant::now();
        let mut r = Registration::new(60, Duration::from_secs(5));
        registered(&mut r, now);
        r.on_timer(now + Duration::from_secs(30));
        let a = r.on_reply(&challenge(CH2), now);
        match &a[..] {
            [Action::Send {
                auth: Some(auth), ..
            }] => {
                assert_eq!(auth.nc, 1);
                assert_eq!(auth.challenge.nonce, "def");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refresh_failure_is_lost_then_retried_and_recovery_reregisters() {
        let now = Instant::now();
        let mut r = Registration::new(60, Duration::from_secs(5));
        registered(&mut r, now);
        r.on_timer(now + Duration::from_secs(15));
        assert_eq!(
            r.on_timeout(now),
            vec![Action::Report(Outcome::Lost { status: 408 })]
        );
        assert_eq!(r.deadline(), Some(now + Duration::from_secs(5)));
        // The stale challenge is dropped: the retry goes out without credentials.
        assert_eq!(sent(&r.on_timer(now + Duration::from_secs(5))), (60, None));
        assert_eq!(
            r.on_reply(&reply(503), now),
            vec![Action::Report(Outcome::Lost { status: 503 })]
        );
        assert_eq!(sent(&r.upstream_recovered()), (60, None));
        assert_eq!(sent(&r.on_reply(&challenge(CH), now)), (60, Some(1)));
        assert_eq!(
            r.on_reply(&ok(30), now),
            vec![Action::Report(Outcome::Registered { expires: 30 })]
        );
    }

    #[test]
    fn reused_nonce_rejected_by_a_restarted_registrar_is_answered_afresh() {
        let now = Instant::now();
        let mut r = Registration::new(60, Duration::from_secs(5));
        registered(&mut r, now);
        assert_eq!(sent(&r.upstream_recovered()), (60, Some(2)));
        assert_eq!(sent(&r.on_reply(&challenge(CH), now)), (60, Some(1)));
        assert_eq!(
            r.on_reply(&ok(30), now),
            vec![Action::Report(Outcome::Registered { expires: 30 })]
        );
    }

    #[test]
    fn first_failure_goes_to_the_browser() {
        let now = Instant::now();
        let mut r = Registration::new(60, Duration::from_secs(5));
        r.start();
        assert_eq!(
            r.on_timeout(now),
            vec![Action::Report(Outcome::Rejected {
                status: 408,
                auth: false
            })]
        );
        let mut r = Registration::new(60, Duration::from_secs(5));
        r.start();
        assert_eq!(
            r.on_reply(&reply(403), now),
            vec![Action::Report(Outcome::Rejected {
                status: 403,
                auth: true
            })]
        );
    }

    #[test]
    fn interval_too_brief_retries_with_min_expires() {
        let now = Instant::now();
        let mut r = Registration::new(30, Duration::from_secs(5));
        r.start();
        let a = r.on_reply(
            &Reply {
                status: 423,
                min_expires: Some(120),
                ..Reply::default()
            },
            now,
        );
        assert_eq!(sent(&a), (120, None));
    }

    #[test]
    fn unregister_sends_expires_zero_and_always_finishes() {
        let now = Instant::now();
        let mut r = Registration::new(60, Duration::from_secs(5));
        registered(&mut r, now);
        assert_eq!(sent(&r.unregister()), (0, Some(2)));
        assert!(r.unregister().is_empty(), "one unregister in flight");
        assert_eq!(
            r.on_timeout(now),
            vec![Action::Report(Outcome::Unregistered)]
        );
        assert!(r.is_done());
        assert!(r.unregister().is_empty());
        assert!(r.on_timer(now + Duration::from_secs(999)).is_empty());
    }

    #[test]
    fn refresh_interval_rule() {
        assert_eq!(refresh_after(30), Duration::from_secs(15));
        assert_eq!(refresh_after(3600), Duration::from_secs(3540));
        assert_eq!(refresh_after(1), Duration::from_secs(1));
    }
}
