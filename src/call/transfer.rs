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

/// Where the call is when a REFER from the far end arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReferContext {
    /// `--incoming-refer accept`.
    pub enabled: bool,
    /// The call is answered.
    pub answered: bool,
    /// A transfer (ours or theirs) is already under way.
    pub busy: bool,
}

/// Why an incoming REFER is refused: the status to answer and a line for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReferRefused {
    /// 403, 491, 400 or 501.
    pub status: u16,
    /// Why.
    pub why: String,
}

/// RFC 3515 / RFC 5589 §6: whether to follow a REFER from the far end, and to which URI;
/// `refer_to` is its `Refer-To` value. `valid_uri` is the SIP stack's own check of the
/// target (the one its INVITE will apply).
pub fn accept_refer(
    ctx: ReferContext,
    refer_to: Option<&str>,
    valid_uri: impl Fn(&str) -> bool,
) -> Result<String, ReferRefused> {
    let refuse = |status: u16, why: &str| {
        Err(ReferRefused {
            status,
            why: why.to_string(),
        })
    };
    if !ctx.enabled {
        return refuse(403, "incoming REFER is disabled");
    }
    if !ctx.answered {
        return refuse(403, "the call is not answered");
    }
    if ctx.busy {
        return refuse(491, "a transfer is in progress");
    }
    match refer_to.map(refer_target) {
        None => refuse(400, "no Refer-To"),
        Some(Err(e @ ReferToError::Replaces)) => refuse(501, &e.to_string()),
        Some(Err(e)) => refuse(400, &e.to_string()),
        Some(Ok(target)) if !valid_uri(&target) => refuse(400, "Refer-To is not a valid SIP URI"),
        Some(Ok(target)) => Ok(target),
    }
}

/// What the end of the transfer target's INVITE means for the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetOutcome {
    /// It answered: its leg replaces the transferor's; the transferor hears 200 (sipfrag)
    /// unless it already hung up.
    Replace {
        /// Tell the transferor (it is still there).
        notify_transferor: bool,
    },
    /// It failed and the transferor is still there: the call goes on with it, which hears
    /// the failure.
    KeepOld,
    /// It failed and the transferor already hung up: the call is over.
    End,
}

/// The transfer target answered (`None`) or failed with a status; `transferor_gone` when the
/// transferor hung up meanwhile.
pub fn target_outcome(failed: Option<u16>, transferor_gone: bool) -> TargetOutcome {
    match (failed, transferor_gone) {
        (None, gone) => TargetOutcome::Replace {
            notify_transferor: !gone,
        },
        (Some(_), false) => TargetOutcome::KeepOld,
        (Some(_), true) => TargetOutcome::End,
    }
}

/// The Refer-To target of an attended transfer (RFC 3891 §5, RFC 5589 §7): the URI of
/// the far end of the call to replace, carrying a `Replaces` header that names that call's
/// dialog as its far end knows it (to-tag: its tag, from-tag: ours).
pub fn replaces_target(remote: &str, call_id: &str, local_tag: &str, remote_tag: &str) -> String {
    use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
    let replaces = format!("{call_id};to-tag={remote_tag};from-tag={local_tag}");
    // A URI already carrying headers gets ours after `&` (RFC 3261 §19.1.1).
    let sep = if remote.contains('?') { '&' } else { '?' };
    format!(
        "{remote}{sep}Replaces={}",
        utf8_percent_encode(&replaces, NON_ALPHANUMERIC)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_target_escapes_the_dialog_into_the_uri() {
        assert_eq!(
            replaces_target("sip:1004@10.0.0.9:5060", "a84b@pc33", "ours1", "theirs2"),
            "sip:1004@10.0.0.9:5060?Replaces=a84b%40pc33%3Bto%2Dtag%3Dtheirs2%3Bfrom%2Dtag%3Dours1"
        );
        assert!(replaces_target("sip:x@y?h=1", "c", "l", "r").starts_with("sip:x@y?h=1&Replaces="));
    }

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

    #[test]
    fn incoming_refer_is_followed_only_when_it_can_be() {
        let ok = ReferContext {
            enabled: true,
            answered: true,
            busy: false,
        };
        let valid = |u: &str| !u.contains(' ');
        let to = Some("<sip:1004@127.0.0.1>");
        assert_eq!(accept_refer(ok, to, valid), Ok("sip:1004@127.0.0.1".into()));
        let status = |ctx, refer_to| accept_refer(ctx, refer_to, valid).map_err(|r| r.status);
        let off = ReferContext {
            enabled: false,
            ..ok
        };
        assert_eq!(status(off, to), Err(403), "--incoming-refer reject");
        let ringing = ReferContext {
            answered: false,
            ..ok
        };
        assert_eq!(status(ringing, to), Err(403));
        let busy = ReferContext { busy: true, ..ok };
        assert_eq!(status(busy, to), Err(491));
        assert_eq!(status(ok, None), Err(400));
        assert_eq!(status(ok, Some("<tel:+15551234>")), Err(400));
        assert_eq!(
            status(ok, Some("<sip:1004@x?Replaces=abc%3Bto-tag%3D1>")),
            Err(501),
            "attended transfer"
        );
        assert_eq!(
            status(ok, Some("<sip:10 04@x>")),
            Err(400),
            "the stack's own check"
        );
    }

    #[test]
    fn the_targets_answer_decides_which_leg_stays() {
        assert_eq!(
            target_outcome(None, false),
            TargetOutcome::Replace {
                notify_transferor: true
            }
        );
        assert_eq!(
            target_outcome(None, true),
            TargetOutcome::Replace {
                notify_transferor: false
            }
        );
        assert_eq!(target_outcome(Some(486), false), TargetOutcome::KeepOld);
        assert_eq!(target_outcome(Some(486), true), TargetOutcome::End);
    }
}
