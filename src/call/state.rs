//! The life of one call as a sans-IO state machine: inputs from the browser, the SIP dialog
//! and the media plane go in; what to do on each side comes out. It enforces the protocol's
//! promises (PROTOCOL.md "Rules that hold for every call"): `ringing` before `answered`,
//! exactly one `hangup` whoever ends the call, and the SIP action each state needs
//! (CANCEL before a final response, BYE after 2xx, a final error response for an unanswered
//! incoming call).

// The call's direction and phase are the call table's types: what REST shows is what the
// state machine decides, with no translation in between.
pub use crate::directory::calls::{Direction, Phase};

/// Who ended a call, as the `hangup` event says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum By {
    /// The browser's own `hangup` (or `reject`).
    Local,
    /// The far end.
    Remote,
    /// The gateway (REST, time-outs, shutdown, media failure).
    Server,
}

impl By {
    /// The protocol's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            By::Local => "local",
            By::Remote => "remote",
            By::Server => "server",
        }
    }
}

/// Who answered a call, as `answered.by` and `answerRequested.by` say (PROTOCOL.md v1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnsweredBy {
    /// The agent in the browser.
    Local,
    /// The far end (our INVITE's 2xx), or the SIP side asking the phone to answer (NOTIFY
    /// `Event: talk`).
    Remote,
    /// REST call control.
    Api,
}

impl AnsweredBy {
    /// The protocol's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AnsweredBy::Local => "local",
            AnsweredBy::Remote => "remote",
            AnsweredBy::Api => "api",
        }
    }
}

/// Something that happened to the call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// The browser hangs up (before or after answer).
    BrowserHangup,
    /// The browser answers an incoming call.
    BrowserAnswer,
    /// The SIP side (NOTIFY `Event: talk`) or REST answers a ringing incoming call on the
    /// agent's behalf: the SIP leg is answered at once, the browser asked to join.
    AnswerFor(AnsweredBy),
    /// The far end's answer (in an ACK) cannot be used: the call ends with a BYE.
    SipAnswerUnusable,
    /// Our reliable 180 was never PRACKed (RFC 3262 §3): the INVITE gets a 5xx.
    NoPrack,
    /// The browser rejects an incoming call with this status (486, 603, 480).
    BrowserReject(u16),
    /// A provisional response to our INVITE.
    SipProvisional {
        /// 180, 183, …
        status: u16,
        /// It carried SDP (early media).
        sdp: bool,
    },
    /// 2xx to our INVITE.
    SipAnswered,
    /// A final error response to our INVITE (or our transaction timed out: 408).
    SipFailed(u16),
    /// BYE from the far end.
    SipBye,
    /// The caller cancelled an incoming call.
    SipCancelled,
    /// The browser leg connected (ICE + DTLS).
    MediaConnected,
    /// The browser leg failed; the `hangup` cause says how (`media_failed`, `ice_failed`).
    MediaFailed(&'static str),
    /// No media for the configured time.
    MediaTimeout,
    /// Ended by the gateway (REST hangup, shutdown, the browser gone for good).
    ServerHangup,
    /// The agent's blind transfer succeeded: our leg is no longer needed.
    Transferred,
    /// RFC 4028: the session was not refreshed in time (or our refresh got 408/481).
    SessionExpired,
    /// The far end asked for a transfer, hung up, and the transfer target did not answer.
    TransferFailed(u16),
}

/// An event for the browser.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// `ringing`.
    Ringing(u16),
    /// `earlyMedia`.
    EarlyMedia,
    /// `answered`, and by whom.
    Answered(AnsweredBy),
    /// `answerRequested`: the browser should answer (its SIP leg already is).
    AnswerRequested(AnsweredBy),
    /// `hangup`.
    Hangup {
        /// Who ended it.
        by: By,
        /// Why, in words.
        cause: &'static str,
        /// SIP status behind it.
        sip_status: Option<u16>,
    },
}

/// What to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Tell the browser.
    Browser(Event),
    /// CANCEL our pending INVITE.
    SipCancel,
    /// BYE the confirmed dialog.
    SipBye,
    /// BYE the confirmed dialog with `Reason: SIP;cause=N` (RFC 3326).
    SipByeReason(u16),
    /// Answer the incoming INVITE with 200 and our SDP.
    SipAccept,
    /// Answer the incoming INVITE with this final error status.
    SipReject(u16),
    /// Release media (ports, worker state).
    StopMedia,
}

/// One call.
#[derive(Debug)]
pub struct CallState {
    direction: Direction,
    phase: Phase,
    ringing_sent: bool,
    early_media_sent: bool,
    /// Answered on the SIP leg for the agent, whose browser has not answered yet.
    browser_pending: Option<AnsweredBy>,
}

fn hangup(by: By, cause: &'static str, sip_status: Option<u16>) -> Action {
    Action::Browser(Event::Hangup {
        by,
        cause,
        sip_status,
    })
}

/// Words for a final SIP status, for `hangup.cause`.
pub fn cause_of(status: u16) -> &'static str {
    match status {
        404 | 484 | 604 => "not_found",
        408 | 480 => "unavailable",
        486 | 600 => "busy",
        487 => "cancelled",
        401 | 403 | 407 => "forbidden",
        488 | 606 => "not_acceptable",
        603 => "declined",
        500..=599 => "server_error",
        _ => "failed",
    }
}

impl CallState {
    /// A new call.
    pub fn new(direction: Direction) -> Self {
        CallState {
            direction,
            phase: Phase::Setup,
            ringing_sent: false,
            early_media_sent: false,
            browser_pending: None,
        }
    }

    /// Current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Which side started it.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// Whether the SIP leg was answered for the agent and the browser has yet to join.
    #[cfg(test)]
    fn browser_pending(&self) -> bool {
        self.browser_pending.is_some()
    }

    /// Whether the call is over.
    pub fn is_ended(&self) -> bool {
        self.phase == Phase::Ended
    }

    fn end(&mut self, mut actions: Vec<Action>) -> Vec<Action> {
        self.phase = Phase::Ended;
        actions.push(Action::StopMedia);
        actions
    }

    /// Feeds one input; returns what to do, in order.
    pub fn handle(&mut self, input: Input) -> Vec<Action> {
        use Direction::*;
        use Phase::*;
        if self.phase == Ended {
            return Vec::new();
        }
        match (self.direction, self.phase, input) {
            // Outbound call progress.
            (Outbound, Setup | Ringing, Input::SipProvisional { status, sdp }) => {
                let mut out = Vec::new();
                if (status == 180 || status == 183) && !self.ringing_sent {
                    self.ringing_sent = true;
                    self.phase = Ringing;
                    out.push(Action::Browser(Event::Ringing(status)));
                }
                if sdp && !self.early_media_sent {
                    self.early_media_sent = true;
                    out.push(Action::Browser(Event::EarlyMedia));
                }
                out
            }
            (Outbound, Setup | Ringing, Input::SipAnswered) => {
                self.phase = Answered;
                vec![Action::Browser(Event::Answered(AnsweredBy::Remote))]
            }
            (Outbound, Setup | Ringing, Input::SipFailed(status)) => {
                self.end(vec![hangup(By::Remote, cause_of(status), Some(status))])
            }
            (Outbound, Setup | Ringing, Input::BrowserHangup) => self.end(vec![
                Action::SipCancel,
                hangup(By::Local, "cancelled", None),
            ]),
            (Outbound, Setup | Ringing, Input::ServerHangup) => self.end(vec![
                Action::SipCancel,
                hangup(By::Server, "cancelled", None),
            ]),
            (Outbound, Setup | Ringing, Input::MediaFailed(cause)) => {
                self.end(vec![Action::SipCancel, hangup(By::Server, cause, None)])
            }
            (Outbound, Setup | Ringing, Input::MediaTimeout) => self.end(vec![
                Action::SipCancel,
                hangup(By::Server, "media_failed", None),
            ]),

            // Inbound call progress.
            (Inbound, Setup | Ringing, Input::BrowserAnswer) => {
                self.phase = Answered;
                vec![
                    Action::SipAccept,
                    Action::Browser(Event::Answered(AnsweredBy::Local)),
                ]
            }
            (Inbound, Setup | Ringing, Input::AnswerFor(by)) => {
                self.phase = Answered;
                self.browser_pending = Some(by);
                vec![
                    Action::SipAccept,
                    Action::Browser(Event::AnswerRequested(by)),
                ]
            }
            (Inbound, Answered, Input::BrowserAnswer) => match self.browser_pending.take() {
                Some(by) => vec![Action::Browser(Event::Answered(by))],
                None => Vec::new(),
            },
            // Answered for the agent, who declines to join: the far end hears a BYE.
            (Inbound, Answered, Input::BrowserReject(_)) if self.browser_pending.is_some() => {
                self.end(vec![Action::SipBye, hangup(By::Local, "rejected", None)])
            }
            (Inbound, Setup | Ringing, Input::BrowserReject(status)) => self.end(vec![
                Action::SipReject(status),
                hangup(By::Local, "rejected", None),
            ]),
            (Inbound, Setup | Ringing, Input::BrowserHangup) => self.end(vec![
                Action::SipReject(486),
                hangup(By::Local, "rejected", None),
            ]),
            (Inbound, Setup | Ringing, Input::SipCancelled) => {
                self.end(vec![hangup(By::Remote, "cancelled", Some(487))])
            }
            (Inbound, Setup | Ringing, Input::NoPrack) => self.end(vec![
                Action::SipReject(500),
                hangup(By::Server, "no_prack", Some(500)),
            ]),
            (Inbound, Setup | Ringing, Input::ServerHangup) => self.end(vec![
                Action::SipReject(480),
                hangup(By::Server, "unavailable", None),
            ]),
            (Inbound, Setup | Ringing, Input::MediaFailed(cause)) => self.end(vec![
                Action::SipReject(488),
                hangup(By::Server, cause, None),
            ]),

            // Answered, either direction.
            (_, Answered, Input::BrowserHangup) => {
                self.end(vec![Action::SipBye, hangup(By::Local, "normal", None)])
            }
            (_, Answered, Input::SipBye) => self.end(vec![hangup(By::Remote, "normal", None)]),
            (_, Answered, Input::ServerHangup) => {
                self.end(vec![Action::SipBye, hangup(By::Server, "normal", None)])
            }
            (_, Answered, Input::MediaTimeout) => self.end(vec![
                Action::SipBye,
                hangup(By::Server, "media_timeout", None),
            ]),
            (_, Answered, Input::MediaFailed(cause)) => {
                self.end(vec![Action::SipBye, hangup(By::Server, cause, None)])
            }
            (_, Answered, Input::Transferred) => {
                self.end(vec![Action::SipBye, hangup(By::Local, "transferred", None)])
            }
            (_, Answered, Input::SipAnswerUnusable) => self.end(vec![
                Action::SipByeReason(488),
                hangup(By::Server, "not_acceptable", Some(488)),
            ]),
            (_, Answered, Input::SessionExpired) => self.end(vec![
                Action::SipBye,
                hangup(By::Server, "session_expired", None),
            ]),
            (_, Answered, Input::TransferFailed(status)) => {
                self.end(vec![hangup(By::Remote, "transfer_failed", Some(status))])
            }
            // A BYE before our 2xx was confirmed still ends the call (RFC 3261 §15).
            (_, _, Input::SipBye) => self.end(vec![hangup(By::Remote, "normal", None)]),
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_and_session_expiry_end_an_answered_call_once() {
        for (input, by, cause, bye) in [
            (Input::Transferred, By::Local, "transferred", true),
            (Input::SessionExpired, By::Server, "session_expired", true),
            (
                Input::TransferFailed(486),
                By::Remote,
                "transfer_failed",
                false,
            ),
        ] {
            let mut c = CallState::new(Direction::Outbound);
            c.handle(Input::SipAnswered);
            let a = c.handle(input.clone());
            assert_eq!(a.contains(&Action::SipBye), bye, "{input:?}");
            assert!(
                a.iter().any(|x| matches!(x,
                Action::Browser(Event::Hangup { by: b, cause: c, .. }) if *b == by && *c == cause))
            );
            assert!(c.is_ended());
            assert_eq!(c.handle(Input::SipBye), vec![]);
        }
        // Before the answer these inputs mean nothing.
        let mut c = CallState::new(Direction::Inbound);
        assert_eq!(c.handle(Input::SessionExpired), vec![]);
        assert!(!c.is_ended());
    }

    fn hangups(actions: &[Action]) -> usize {
        actions
            .iter()
            .filter(|a| matches!(a, Action::Browser(Event::Hangup { .. })))
            .count()
    }

    #[test]
    fn outbound_answered_then_local_hangup_sends_bye() {
        let mut c = CallState::new(Direction::Outbound);
        assert_eq!(
            c.handle(Input::SipProvisional {
                status: 100,
                sdp: false
            }),
            vec![]
        );
        assert_eq!(
            c.handle(Input::SipProvisional {
                status: 180,
                sdp: false
            }),
            vec![Action::Browser(Event::Ringing(180))]
        );
        assert_eq!(
            c.handle(Input::SipProvisional {
                status: 183,
                sdp: true
            }),
            vec![Action::Browser(Event::EarlyMedia)]
        );
        assert_eq!(
            c.handle(Input::SipAnswered),
            vec![Action::Browser(Event::Answered(AnsweredBy::Remote))]
        );
        let a = c.handle(Input::BrowserHangup);
        assert_eq!(a[0], Action::SipBye);
        assert_eq!(hangups(&a), 1);
        assert!(a.contains(&Action::StopMedia));
        assert!(c.handle(Input::SipBye).is_empty(), "one hangup only");
        assert!(c.handle(Input::BrowserHangup).is_empty());
    }

    #[test]
    fn outbound_hangup_while_ringing_cancels() {
        let mut c = CallState::new(Direction::Outbound);
        c.handle(Input::SipProvisional {
            status: 180,
            sdp: false,
        });
        let a = c.handle(Input::BrowserHangup);
        assert_eq!(a[0], Action::SipCancel);
        assert_eq!(hangups(&a), 1);
        // The 487 that follows the CANCEL produces nothing more.
        assert!(c.handle(Input::SipFailed(487)).is_empty());
    }

    #[test]
    fn outbound_failure_maps_status() {
        let mut c = CallState::new(Direction::Outbound);
        let a = c.handle(Input::SipFailed(486));
        assert_eq!(
            a[0],
            Action::Browser(Event::Hangup {
                by: By::Remote,
                cause: "busy",
                sip_status: Some(486)
            })
        );
        assert!(c.is_ended());
    }

    #[test]
    fn inbound_answer_reject_cancel() {
        let mut c = CallState::new(Direction::Inbound);
        assert_eq!(
            c.handle(Input::BrowserAnswer),
            vec![
                Action::SipAccept,
                Action::Browser(Event::Answered(AnsweredBy::Local))
            ]
        );
        let a = c.handle(Input::SipBye);
        assert_eq!(hangups(&a), 1);

        let mut c = CallState::new(Direction::Inbound);
        let a = c.handle(Input::BrowserReject(603));
        assert_eq!(a[0], Action::SipReject(603));

        let mut c = CallState::new(Direction::Inbound);
        let a = c.handle(Input::SipCancelled);
        assert_eq!(hangups(&a), 1);
        assert!(c.handle(Input::BrowserAnswer).is_empty(), "too late");
    }

    #[test]
    fn remote_answer_accepts_at_once_and_the_browser_joins_later() {
        let mut c = CallState::new(Direction::Inbound);
        assert_eq!(
            c.handle(Input::AnswerFor(AnsweredBy::Remote)),
            vec![
                Action::SipAccept,
                Action::Browser(Event::AnswerRequested(AnsweredBy::Remote))
            ]
        );
        assert_eq!(c.phase(), Phase::Answered);
        assert!(c.browser_pending());
        assert!(
            c.handle(Input::AnswerFor(AnsweredBy::Api)).is_empty(),
            "a second NOTIFY talk answers nothing more"
        );
        assert_eq!(
            c.handle(Input::BrowserAnswer),
            vec![Action::Browser(Event::Answered(AnsweredBy::Remote))]
        );
        assert!(!c.browser_pending());
        assert!(c.handle(Input::BrowserAnswer).is_empty());

        // The agent declines to join a call answered for it: BYE, one hangup.
        let mut c = CallState::new(Direction::Inbound);
        c.handle(Input::AnswerFor(AnsweredBy::Api));
        let a = c.handle(Input::BrowserReject(486));
        assert_eq!(a[0], Action::SipBye);
        assert_eq!(hangups(&a), 1);
    }

    #[test]
    fn an_unacknowledged_reliable_180_rejects_the_invite_with_a_5xx() {
        let mut c = CallState::new(Direction::Inbound);
        let a = c.handle(Input::NoPrack);
        assert_eq!(a[0], Action::SipReject(500));
        assert_eq!(hangups(&a), 1);
        assert!(c.is_ended());
        let mut c = CallState::new(Direction::Inbound);
        c.handle(Input::BrowserAnswer);
        assert!(
            c.handle(Input::NoPrack).is_empty(),
            "answered: too late to reject"
        );
    }

    #[test]
    fn an_unusable_answer_in_an_ack_ends_the_call_with_a_reason() {
        let mut c = CallState::new(Direction::Inbound);
        c.handle(Input::BrowserAnswer);
        let a = c.handle(Input::SipAnswerUnusable);
        assert_eq!(a[0], Action::SipByeReason(488));
        assert_eq!(
            a[1],
            Action::Browser(Event::Hangup {
                by: By::Server,
                cause: "not_acceptable",
                sip_status: Some(488)
            })
        );
    }

    #[test]
    fn media_timeout_ends_an_answered_call_with_bye() {
        let mut c = CallState::new(Direction::Outbound);
        c.handle(Input::SipAnswered);
        let a = c.handle(Input::MediaTimeout);
        assert_eq!(a[0], Action::SipBye);
        assert_eq!(
            a[1],
            Action::Browser(Event::Hangup {
                by: By::Server,
                cause: "media_timeout",
                sip_status: None
            })
        );
    }
}
