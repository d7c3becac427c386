//! Blind transfer (RFC 3515 REFER, RFC 5589 call-control transfer), sans-IO: the
//! `Refer-To` of an incoming REFER, the `message/sipfrag` progress of NOTIFYs, and how the
//! agent's own transfer moves through `transferState`.

use std::time::{Duration, Instant};

/// `transferState.state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferState {
    /// REFER sent (or, for a transfer the far end asked for, the new INVITE sent).
    Trying,
    /// The far end accepted the REFER (202).
    Accepted,
    /// The transfer target answered.
    Succeeded,
    /// It did not work; the call goes on.
    Failed,
}

impl TransferState {
    /// The protocol's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TransferState::Trying => "trying",
            TransferState::Accepted => "accepted",
            TransferState::Succeeded => "succeeded",
            TransferState::Failed => "failed",
        }
    }
}

/// The status line of a `message/sipfrag` body (`SIP/2.0 180 Ringing`).
pub fn sipfrag_status(body: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(body).ok()?;
    let line = text.lines().find(|l| !l.trim().is_empty())?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.eq_ignore_ascii_case("SIP/2.0") {
        return None;
    }
    let code: u16 = parts.next()?.parse().ok()?;
    (100..700).contains(&code).then_some(code)
}

/// A sipfrag body for `status` (`SIP/2.0 200 OK\r\n`).
pub fn sipfrag(status: u16) -> String {
    let reason = match status {
        100 => "Trying",
        180 => "Ringing",
        183 => "Session Progress",
        200 => "OK",
        404 => "Not Found",
        408 => "Request Timeout",
        480 => "Temporarily Unavailable",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        603 => "Decline",
        _ if status < 300 => "OK",
        _ => "Failed",
    };
    format!("SIP/2.0 {status} {reason}\r\n")
}

/// Why an incoming REFER's `Refer-To` cannot be followed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReferToError {
    /// Not a SIP URI.
    #[error("Refer-To is not a SIP URI")]
    NotSip,
    /// `?Replaces=`: an attended transfer, which needs a dialog we do not have.
    #[error("Refer-To with Replaces (attended transfer) is not supported")]
    Replaces,
}

/// The URI to call from a `Refer-To` value (`"Bob" <sip:5002@x;user=phone?Foo=1>`): the
/// name-addr's URI without its embedded headers.
pub fn refer_target(value: &str) -> Result<String, ReferToError> {
    let v = value.trim();
    let uri = match (v.find('<'), v.rfind('>')) {
        (Some(a), Some(b)) if a < b => &v[a + 1..b],
        _ => v.split(';').next().unwrap_or(v),
    };
    let (uri, headers) = match uri.split_once('?') {
        Some((u, h)) => (u, h),
        None => (uri, ""),
    };
    if headers
        .split('&')
        .any(|h| h.trim().to_ascii_lowercase().starts_with("replaces="))
    {
        return Err(ReferToError::Replaces);
    }
    let lower = uri.trim().to_ascii_lowercase();
    if !(lower.starts_with("sip:") || lower.starts_with("sips:")) || lower.len() < 5 {
        return Err(ReferToError::NotSip);
    }
    Ok(uri.trim().to_string())
}

/// How long the agent's transfer may take from the REFER's 202 to a final NOTIFY: a target
/// that rings longer than this is reported failed (the call is kept).
pub const TRANSFER_DEADLINE: Duration = Duration::from_secs(90);

/// The agent's blind transfer in progress.
#[derive(Clone, Debug)]
pub struct Transfer {
    accepted: bool,
    deadline: Instant,
}

/// What a step of the agent's transfer tells the browser, and whether it ends the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// `transferState`.
    pub state: TransferState,
    /// Its `sipStatus`.
    pub sip_status: Option<u16>,
    /// The transfer is over (succeeded or failed).
    pub done: bool,
}

impl Transfer {
    /// A REFER just sent at `now`.
    pub fn start(now: Instant) -> Self {
        Transfer {
            accepted: false,
            deadline: now + TRANSFER_DEADLINE,
        }
    }

    /// When the transfer is given up.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The final response to the REFER.
    pub fn on_refer_response(&mut self, status: u16, now: Instant) -> Step {
        if (200..300).contains(&status) {
            self.accepted = true;
            self.deadline = now + TRANSFER_DEADLINE;
            Step {
                state: TransferState::Accepted,
                sip_status: Some(status),
                done: false,
            }
        } else {
            Step {
                state: TransferState::Failed,
                sip_status: Some(status),
                done: true,
            }
        }
    }

    /// A NOTIFY of the refer subscription: `status` from its sipfrag, `terminated` from its
    /// Subscription-State. `None`: nothing to tell.
    pub fn on_notify(&mut self, status: Option<u16>, terminated: bool) -> Option<Step> {
        let step = |state, sip_status, done| {
            Some(Step {
                state,
                sip_status,
                done,
            })
        };
        match status {
            Some(s @ 200..=299) => step(TransferState::Succeeded, Some(s), true),
            Some(s) if s >= 300 => step(TransferState::Failed, Some(s), true),
            // A NOTIFY may arrive before the 202 (RFC 3515 §2.4.7): it accepts as well.
            Some(_) if !self.accepted && !terminated => {
                self.accepted = true;
                step(TransferState::Accepted, None, false)
            }
            _ if terminated => step(TransferState::Failed, status, true),
            _ => None,
        }
    }

    /// The deadline passed.
    pub fn expired(&self, now: Instant) -> Option<Step> {
        (now >= self.deadline).then_some(Step {
            state: TransferState::Failed,
            sip_status: Some(408),
            done: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sipfrag_bodies() {
        assert_eq!(sipfrag_status(b"SIP/2.0 100 Trying\r\n"), Some(100));
        assert_eq!(sipfrag_status(b"\r\nSIP/2.0 200 OK"), Some(200));
        assert_eq!(
            sipfrag_status(b"SIP/2.0 486 Busy Here\r\nFoo: x\r\n"),
            Some(486)
        );
        assert_eq!(sipfrag_status(b"HTTP/1.1 200 OK"), None);
        assert_eq!(sipfrag_status(b"SIP/2.0 2000 OK"), None);
        assert_eq!(sipfrag_status(b"\xff"), None);
        assert_eq!(sipfrag_status(sipfrag(180).as_bytes()), Some(180));
    }

    #[test]
    fn refer_to_values() {
        assert_eq!(
            refer_target("<sip:5002@example.com>").as_deref(),
            Ok("sip:5002@example.com")
        );
        assert_eq!(
            refer_target("\"Bob\" <sip:5002@x;user=phone?Foo=bar>").as_deref(),
            Ok("sip:5002@x;user=phone")
        );
        assert_eq!(refer_target("sip:5002@x").as_deref(), Ok("sip:5002@x"));
        assert_eq!(
            refer_target("<sip:5002@x?Replaces=abc%3Bto-tag%3D1>"),
            Err(ReferToError::Replaces)
        );
        assert_eq!(refer_target("<tel:+15551234>"), Err(ReferToError::NotSip));
        assert_eq!(refer_target(""), Err(ReferToError::NotSip));
    }

    #[test]
    fn agent_transfer_progress() {
        let t0 = Instant::now();
        let mut t = Transfer::start(t0);
        let s = t.on_refer_response(202, t0);
        assert_eq!((s.state, s.done), (TransferState::Accepted, false));
        assert_eq!(t.on_notify(Some(100), false), None);
        assert_eq!(t.on_notify(Some(180), false), None);
        let s = t.on_notify(Some(200), true).unwrap();
        assert_eq!(
            (s.state, s.sip_status, s.done),
            (TransferState::Succeeded, Some(200), true)
        );

        let mut t = Transfer::start(t0);
        t.on_refer_response(202, t0);
        let s = t.on_notify(Some(486), true).unwrap();
        assert_eq!(
            (s.state, s.sip_status, s.done),
            (TransferState::Failed, Some(486), true)
        );

        let mut t = Transfer::start(t0);
        let s = t.on_refer_response(603, t0);
        assert_eq!((s.state, s.done), (TransferState::Failed, true));

        // NOTIFY before the 202; then the subscription ends without a final status.
        let mut t = Transfer::start(t0);
        assert_eq!(
            t.on_notify(Some(100), false).unwrap().state,
            TransferState::Accepted
        );
        assert_eq!(
            t.on_notify(Some(100), true).unwrap().state,
            TransferState::Failed
        );

        let t = Transfer::start(t0);
        assert_eq!(t.expired(t0 + Duration::from_secs(10)), None);
        assert_eq!(
            t.expired(t0 + TRANSFER_DEADLINE).unwrap().state,
            TransferState::Failed
        );
    }
}
