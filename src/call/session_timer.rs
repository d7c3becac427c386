//! RFC 4028 session timers, sans-IO: what to put in our INVITE or 2xx, what the far end's
//! `Session-Expires` / `Min-SE` mean for us, and when to refresh or give up on a session.
//! The driver feeds it headers and the time and does the SIP work it asks for.

use std::time::{Duration, Instant};

pub use crate::config::TimerConfig;

/// The party of the INVITE that refreshes (`refresher=uac|uas`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Party {
    /// The side that sent the INVITE.
    Uac,
    /// The side that answered it.
    Uas,
}

impl Party {
    fn as_str(self) -> &'static str {
        match self {
            Party::Uac => "uac",
            Party::Uas => "uas",
        }
    }
}

/// A `Session-Expires` value: `1800;refresher=uac`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionExpires {
    /// Seconds.
    pub delta: u32,
    /// Who refreshes, when said.
    pub refresher: Option<Party>,
}

impl SessionExpires {
    /// Parses the header value; `None` when it is not a number of seconds.
    pub fn parse(value: &str) -> Option<SessionExpires> {
        let mut parts = value.split(';');
        let delta = parts.next()?.trim().parse().ok()?;
        let mut refresher = None;
        for p in parts {
            if let Some((k, v)) = p.split_once('=') {
                if k.trim().eq_ignore_ascii_case("refresher") {
                    refresher = match v.trim().to_ascii_lowercase().as_str() {
                        "uac" => Some(Party::Uac),
                        "uas" => Some(Party::Uas),
                        _ => None,
                    };
                }
            }
        }
        Some(SessionExpires { delta, refresher })
    }

    /// The header value.
    pub fn value(&self) -> String {
        match self.refresher {
            Some(r) => format!("{};refresher={}", self.delta, r.as_str()),
            None => self.delta.to_string(),
        }
    }
}

/// What an incoming INVITE's timer headers lead to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UasDecision {
    /// 422 Session Interval Too Small, with our `Min-SE`.
    TooSmall {
        /// Our Min-SE, for the 422.
        min_se: u32,
    },
    /// Session timers in force: put `answer` in the 2xx (and `Require: timer` when
    /// `require`); we refresh when `we_refresh`.
    Timer {
        /// `Session-Expires` of our 2xx.
        answer: SessionExpires,
        /// The caller supports timers (`Require: timer` in the 2xx).
        require: bool,
        /// We are the refresher.
        we_refresh: bool,
    },
    /// No session timer for this call.
    Off,
}

/// RFC 4028 §9: the UAS side. `se` is the INVITE's `Session-Expires`, `supported` whether
/// its `Supported` lists `timer`.
pub fn on_invite(cfg: TimerConfig, se: Option<SessionExpires>, supported: bool) -> UasDecision {
    match se {
        Some(se) if se.delta < cfg.min_se => UasDecision::TooSmall { min_se: cfg.min_se },
        Some(se) => {
            // The caller chose, or left it to us: a caller that supports timers refreshes
            // itself (its UA has the timer code); one that does not leaves it to us.
            let refresher = se
                .refresher
                .unwrap_or(if supported { Party::Uac } else { Party::Uas });
            UasDecision::Timer {
                answer: SessionExpires {
                    delta: se.delta,
                    refresher: Some(refresher),
                },
                require: supported && refresher == Party::Uac,
                we_refresh: refresher == Party::Uas,
            }
        }
        // A proxy may strip the header; with no Session-Expires there is no timer unless
        // we ask for one, which as UAS we may do only as the refresher.
        None if cfg.session_expires > 0 => UasDecision::Timer {
            answer: SessionExpires {
                delta: cfg.session_expires.max(cfg.min_se),
                refresher: Some(Party::Uas),
            },
            require: false,
            we_refresh: true,
        },
        None => UasDecision::Off,
    }
}

/// The headers of our INVITE (or refresh) as UAC: `Session-Expires` and `Min-SE`, or none.
pub fn invite_headers(cfg: TimerConfig, asked: Option<u32>) -> Option<(String, String)> {
    let delta = asked.unwrap_or(cfg.session_expires);
    (delta > 0).then(|| {
        (
            SessionExpires {
                delta: delta.max(cfg.min_se),
                refresher: None,
            }
            .value(),
            cfg.min_se.to_string(),
        )
    })
}

/// RFC 4028 §7.4: the interval to ask for again after a 422 whose `Min-SE` is `min_se`.
pub fn after_422(cfg: TimerConfig, asked: Option<u32>, min_se: u32) -> Option<u32> {
    let before = asked.unwrap_or(cfg.session_expires);
    (min_se > before && min_se <= 86_400).then_some(min_se)
}

/// RFC 4028 §7.2: the UAC side, from the 2xx's `Session-Expires` (none = no timer).
pub fn on_answer(se: Option<SessionExpires>) -> Option<(u32, bool)> {
    let se = se?;
    // A 2xx that omits the refresher leaves it to the UAC (§7.2).
    let we_refresh = se.refresher.unwrap_or(Party::Uac) == Party::Uac;
    Some((se.delta, we_refresh))
}

/// What the running timer asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerAction {
    /// Send a refresh now (we are the refresher, half the interval has passed).
    Refresh,
    /// The session is dead: end it with BYE.
    Expire,
}

/// A session's running timer.
#[derive(Clone, Debug)]
pub struct SessionTimer {
    interval: Duration,
    we_refresh: bool,
    since: Instant,
    refresh_sent: bool,
}

impl SessionTimer {
    /// Starts with the negotiated interval (seconds) at `now`.
    pub fn new(delta: u32, we_refresh: bool, now: Instant) -> Self {
        SessionTimer {
            interval: Duration::from_secs(u64::from(delta.max(1))),
            we_refresh,
            since: now,
            refresh_sent: false,
        }
    }

    /// The negotiated interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Whether we refresh.
    pub fn we_refresh(&self) -> bool {
        self.we_refresh
    }

    /// A successful refresh (ours answered 2xx, or theirs received) at `now`, possibly with a
    /// new interval and refresher.
    pub fn refreshed(&mut self, now: Instant, renewed: Option<(u32, bool)>) {
        if let Some((delta, we_refresh)) = renewed {
            self.interval = Duration::from_secs(u64::from(delta.max(1)));
            self.we_refresh = we_refresh;
        }
        self.since = now;
        self.refresh_sent = false;
    }

    /// Our refresh failed without killing the dialog (e.g. 500): try again later, give up at
    /// expiry.
    pub fn refresh_failed(&mut self) {
        self.refresh_sent = false;
    }

    fn refresh_at(&self) -> Instant {
        self.since + self.interval / 2
    }

    /// RFC 4028 §10: the refresher gives up at expiry; the other side sends its BYE a
    /// little before, at the interval minus max(32 s, a third of it).
    fn expire_at(&self) -> Instant {
        if self.we_refresh {
            self.since + self.interval
        } else {
            let margin = Duration::from_secs(32).max(self.interval / 3);
            self.since + self.interval.saturating_sub(margin)
        }
    }

    /// When `poll` has something to do next.
    pub fn next_wakeup(&self) -> Instant {
        if self.we_refresh && !self.refresh_sent {
            self.refresh_at()
        } else {
            self.expire_at()
        }
    }

    /// What is due at `now`.
    pub fn poll(&mut self, now: Instant) -> Option<TimerAction> {
        if now >= self.expire_at() {
            return Some(TimerAction::Expire);
        }
        if self.we_refresh && !self.refresh_sent && now >= self.refresh_at() {
            self.refresh_sent = true;
            return Some(TimerAction::Refresh);
        }
        None
    }
}

/// The headers of a 2xx (or of a refresh answer) that carries `se`.
pub fn answer_headers(se: SessionExpires, require: bool) -> Vec<(&'static str, String)> {
    let mut h = vec![("Session-Expires", se.value())];
    if require {
        h.push(("Require", "timer".to_string()));
    }
    h
}

/// What a refresh the far end sends (a re-INVITE or UPDATE in the dialog) leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshRequest {
    /// 422 with our `Min-SE`.
    TooSmall {
        /// Our Min-SE, for the 422.
        min_se: u32,
    },
    /// The session is renewed: `answer` goes in our 2xx; we refresh from now on when
    /// `we_refresh`.
    Renew {
        /// `Session-Expires` of our 2xx.
        answer: SessionExpires,
        /// We are the refresher.
        we_refresh: bool,
    },
    /// No `Session-Expires`: the running timer (if any) restarts as it is.
    KeepCurrent,
}

/// RFC 4028 §9 for a refresh from the far end: the rules of an initial INVITE
/// ([`on_invite`]), from a peer that by sending `Session-Expires` shows it supports timers.
pub fn on_refresh_request(cfg: TimerConfig, se: Option<SessionExpires>) -> RefreshRequest {
    if se.is_none() {
        return RefreshRequest::KeepCurrent;
    }
    match on_invite(cfg, se, true) {
        UasDecision::TooSmall { min_se } => RefreshRequest::TooSmall { min_se },
        UasDecision::Timer {
            answer, we_refresh, ..
        } => RefreshRequest::Renew { answer, we_refresh },
        UasDecision::Off => RefreshRequest::KeepCurrent,
    }
}

/// What the answer to our refresh means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// 2xx: the session goes on (with the answer's interval).
    Refreshed,
    /// RFC 4028 §10: 408 or 481, the session is gone: BYE.
    Gone,
    /// Anything else: the session lives until it expires unrefreshed.
    Refused,
}

/// RFC 4028 §10: the final status of our refresh (408 when it got no answer at all).
pub fn refresh_outcome(status: u16) -> RefreshOutcome {
    match status {
        200..=299 => RefreshOutcome::Refreshed,
        408 | 481 => RefreshOutcome::Gone,
        _ => RefreshOutcome::Refused,
    }
}

/// RFC 4028 §7.4: after a 422 to our initial INVITE, the interval to INVITE again with,
/// from the 422's `Min-SE` header value; `None` once the call is answered (a 422 to a
/// refresh is no reason to start over) or when the value does not help.
pub fn retry_after_422(
    cfg: TimerConfig,
    asked: Option<u32>,
    answered: bool,
    min_se_header: Option<&str>,
) -> Option<u32> {
    if answered {
        return None;
    }
    let min_se = min_se_header?.split(';').next()?.trim().parse().ok()?;
    after_422(cfg, asked, min_se)
}

/// The `Session-Expires` and `Min-SE` of our refresh, as the refresher of an `interval`.
pub fn refresh_headers(cfg: TimerConfig, interval: Duration) -> [(&'static str, String); 2] {
    let se = SessionExpires {
        delta: interval.as_secs() as u32,
        refresher: Some(Party::Uac),
    };
    [
        ("Session-Expires", se.value()),
        ("Min-SE", cfg.min_se.to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: TimerConfig = TimerConfig {
        session_expires: 1800,
        min_se: 90,
    };

    #[test]
    fn parses_and_prints_session_expires() {
        assert_eq!(
            SessionExpires::parse("90;refresher=uac"),
            Some(SessionExpires {
                delta: 90,
                refresher: Some(Party::Uac)
            })
        );
        assert_eq!(
            SessionExpires::parse(" 1800 ; Refresher = UAS").map(|s| s.value()),
            Some("1800;refresher=uas".into())
        );
        assert_eq!(SessionExpires::parse("1800").unwrap().refresher, None);
        assert_eq!(SessionExpires::parse("soon"), None);
        assert_eq!(SessionExpires::parse(""), None);
    }

    #[test]
    fn uas_answers_422_below_min_se_and_honours_the_caller() {
        let se = |v: &str| SessionExpires::parse(v);
        assert_eq!(
            on_invite(CFG, se("30"), true),
            UasDecision::TooSmall { min_se: 90 }
        );
        assert_eq!(
            on_invite(CFG, se("90;refresher=uac"), true),
            UasDecision::Timer {
                answer: se("90;refresher=uac").unwrap(),
                require: true,
                we_refresh: false
            }
        );
        // No refresher from a caller without timer support: we refresh.
        assert_eq!(
            on_invite(CFG, se("600"), false),
            UasDecision::Timer {
                answer: se("600;refresher=uas").unwrap(),
                require: false,
                we_refresh: true
            }
        );
        let off = TimerConfig {
            session_expires: 0,
            min_se: 90,
        };
        assert_eq!(on_invite(off, None, true), UasDecision::Off);
    }

    #[test]
    fn uac_headers_and_422_retry() {
        assert_eq!(
            invite_headers(CFG, None),
            Some(("1800".to_string(), "90".to_string()))
        );
        assert_eq!(after_422(CFG, None, 3600), Some(3600));
        // A 422 that asks for less than we sent cannot be satisfied by retrying.
        assert_eq!(after_422(CFG, None, 900), None);
        assert_eq!(
            on_answer(SessionExpires::parse("90;refresher=uas")),
            Some((90, false))
        );
        assert_eq!(on_answer(SessionExpires::parse("90")), Some((90, true)));
        assert_eq!(on_answer(None), None);
    }

    #[test]
    fn refresher_refreshes_at_half_and_expires_at_the_interval() {
        let t0 = Instant::now();
        let mut t = SessionTimer::new(90, true, t0);
        assert_eq!(t.next_wakeup(), t0 + Duration::from_secs(45));
        assert_eq!(t.poll(t0 + Duration::from_secs(44)), None);
        assert_eq!(
            t.poll(t0 + Duration::from_secs(45)),
            Some(TimerAction::Refresh)
        );
        // Sent once, then waits for the answer until expiry.
        assert_eq!(t.poll(t0 + Duration::from_secs(60)), None);
        assert_eq!(t.next_wakeup(), t0 + Duration::from_secs(90));
        t.refreshed(t0 + Duration::from_secs(46), None);
        assert_eq!(t.next_wakeup(), t0 + Duration::from_secs(91));
        assert_eq!(
            t.poll(t0 + Duration::from_secs(91)),
            Some(TimerAction::Refresh)
        );
        assert_eq!(
            t.poll(t0 + Duration::from_secs(136)),
            Some(TimerAction::Expire)
        );
    }

    #[test]
    fn the_other_side_gives_up_before_expiry() {
        let t0 = Instant::now();
        let mut t = SessionTimer::new(90, false, t0);
        // 90 - max(32, 30) = 58 s.
        assert_eq!(t.next_wakeup(), t0 + Duration::from_secs(58));
        assert_eq!(t.poll(t0 + Duration::from_secs(57)), None);
        t.refreshed(t0 + Duration::from_secs(50), Some((1800, false)));
        // 1800 - 600.
        assert_eq!(t.next_wakeup(), t0 + Duration::from_secs(50 + 1200));
        assert_eq!(
            t.poll(t0 + Duration::from_secs(50 + 1200)),
            Some(TimerAction::Expire)
        );
    }

    #[test]
    fn the_far_ends_refresh_follows_the_invite_rules() {
        let se = |delta, refresher| Some(SessionExpires { delta, refresher });
        assert_eq!(
            on_refresh_request(CFG, se(60, None)),
            RefreshRequest::TooSmall { min_se: CFG.min_se }
        );
        assert_eq!(
            on_refresh_request(CFG, se(600, None)),
            RefreshRequest::Renew {
                answer: SessionExpires {
                    delta: 600,
                    refresher: Some(Party::Uac)
                },
                we_refresh: false
            },
            "the sender of the refresh refreshes when it does not say"
        );
        assert_eq!(
            on_refresh_request(CFG, se(600, Some(Party::Uas))),
            RefreshRequest::Renew {
                answer: SessionExpires {
                    delta: 600,
                    refresher: Some(Party::Uas)
                },
                we_refresh: true
            }
        );
        assert_eq!(on_refresh_request(CFG, None), RefreshRequest::KeepCurrent);
    }

    #[test]
    fn refresh_answers_decide_the_sessions_fate() {
        assert_eq!(refresh_outcome(200), RefreshOutcome::Refreshed);
        assert_eq!(refresh_outcome(408), RefreshOutcome::Gone);
        assert_eq!(refresh_outcome(481), RefreshOutcome::Gone);
        assert_eq!(refresh_outcome(491), RefreshOutcome::Refused);
        assert_eq!(refresh_outcome(500), RefreshOutcome::Refused);
    }

    #[test]
    fn a_422_is_retried_once_with_its_min_se_before_the_answer_only() {
        assert_eq!(retry_after_422(CFG, None, false, Some("3600")), Some(3600));
        assert_eq!(
            retry_after_422(CFG, None, false, Some(" 3600;x=y")),
            Some(3600),
            "parameters after the value"
        );
        assert_eq!(
            retry_after_422(CFG, None, true, Some("3600")),
            None,
            "answered"
        );
        assert_eq!(
            retry_after_422(CFG, Some(3600), false, Some("3600")),
            None,
            "no help"
        );
        assert_eq!(retry_after_422(CFG, None, false, Some("lots")), None);
        assert_eq!(retry_after_422(CFG, None, false, None), None);
    }

    #[test]
    fn our_refresh_names_us_the_refresher() {
        let [se, min] = refresh_headers(CFG, Duration::from_secs(900));
        assert_eq!(se, ("Session-Expires", "900;refresher=uac".to_string()));
        assert_eq!(min, ("Min-SE", CFG.min_se.to_string()));
    }
}
