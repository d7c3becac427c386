//! One SIP dialog of a call: how its INVITE is built and sent, and what its outcomes and
//! messages amount to for the call. A call has one, and a second while a transfer the far
//! end asked for calls its target.

use rsipstack::dialog::authenticate::Credential;
use rsipstack::dialog::dialog::{DialogStateReceiver, TerminatedReason};
use rsipstack::dialog::invitation::{InviteAsyncResult, InviteOption};
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::{Header, Uri};
use tokio::task::{JoinError, JoinHandle};
use tracing::debug;

use super::session_timer;
use super::state::Input;
use super::Env;
use crate::sip::headers;
use crate::sip::ua::ALLOW;

/// One SIP dialog of the call and what it reports.
pub(super) struct SipLeg {
    pub(super) dialog: InviteDialog,
    /// State changes; `None` once the channel closed.
    pub(super) events: Option<DialogStateReceiver>,
    /// Our INVITE, until its final response.
    pub(super) invite: Option<JoinHandle<InviteAsyncResult>>,
}

/// The SDP in a SIP body, if any.
pub(super) fn sdp_body(body: &[u8]) -> Option<String> {
    if body.is_empty() {
        return None;
    }
    String::from_utf8(body.to_vec()).ok()
}

/// Our INVITE from `dn` to `target` with `offer`, carrying what we support.
pub(super) fn build_invite(
    env: &Env,
    dn: &str,
    target: &str,
    offer: String,
    credential: Option<Credential>,
    asked_se: Option<u32>,
    mut headers: Vec<Header>,
) -> Result<InviteOption, String> {
    let ua = &env.ua;
    let caller = Uri::try_from(ua.aor(dn).as_str()).map_err(|e| e.to_string())?;
    let callee = Uri::try_from(target).map_err(|e| e.to_string())?;
    let contact = Uri::try_from(ua.contact_uri(dn).as_str()).map_err(|e| e.to_string())?;
    headers.push(Header::Allow(ALLOW.into()));
    headers.push(Header::Supported("timer".into()));
    if let Some((se, min_se)) = session_timer::invite_headers(env.cfg.session_timer, asked_se) {
        headers.push(headers::other("Session-Expires", se));
        headers.push(headers::other("Min-SE", min_se));
    }
    Ok(InviteOption {
        caller,
        callee,
        destination: Some(ua.upstream_addr()),
        content_type: Some("application/sdp".into()),
        offer: Some(offer.into_bytes()),
        contact,
        credential,
        headers: Some(headers),
        ..Default::default()
    })
}

/// Sends an INVITE; the leg reports on a new channel.
pub(super) fn send_invite(env: &Env, option: InviteOption) -> Result<SipLeg, String> {
    let (state_tx, events) = env.dialogs.new_dialog_state_channel();
    let (dialog, join) = env
        .dialogs
        .do_invite_async(option, state_tx)
        .map_err(|e| e.to_string())?;
    Ok(SipLeg {
        dialog,
        events: Some(events),
        invite: Some(join),
    })
}

/// The final status an INVITE's outcome amounts to (`None`: answered).
pub(super) fn invite_status(result: Result<InviteAsyncResult, JoinError>) -> Option<u16> {
    match result {
        Ok(Ok((_, Some(resp)))) if resp.status_code.code() >= 300 => Some(resp.status_code.code()),
        Ok(Ok((_, Some(_)))) => None,
        Ok(Ok((_, None))) => Some(408),
        Ok(Err(e)) => {
            debug!(error = %e, "INVITE failed");
            Some(error_status(&e))
        }
        Err(_) => Some(500),
    }
}

pub(super) fn terminated_input(reason: TerminatedReason) -> Input {
    match reason {
        TerminatedReason::UasBye | TerminatedReason::UacBye => Input::SipBye,
        TerminatedReason::UacCancel => Input::SipCancelled,
        TerminatedReason::UasBusy | TerminatedReason::UacBusy => Input::SipFailed(486),
        TerminatedReason::UasDecline => Input::SipFailed(603),
        TerminatedReason::Timeout => Input::SipFailed(408),
        TerminatedReason::ProxyAuthRequired => Input::SipFailed(407),
        TerminatedReason::ProxyError(s)
        | TerminatedReason::UacOther(s)
        | TerminatedReason::UasOther(s) => Input::SipFailed(s.code()),
    }
}

/// A key press carried by SIP INFO (`application/dtmf-relay`: `Signal=5`, `Duration=160`).
pub(super) fn info_dtmf(body: &[u8]) -> Option<(char, u32)> {
    let text = std::str::from_utf8(body).ok()?;
    let mut signal = None;
    let mut duration = 100;
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        match k.trim().to_ascii_lowercase().as_str() {
            "signal" => {
                signal = v
                    .trim()
                    .chars()
                    .next()
                    .map(|c| c.to_ascii_uppercase())
                    .filter(|c| c.is_ascii_digit() || "*#ABCD".contains(*c));
            }
            "duration" => duration = v.trim().parse().unwrap_or(100),
            _ => {}
        }
    }
    signal.map(|s| (s, duration))
}

pub(super) fn error_status(e: &rsipstack::Error) -> u16 {
    match e {
        rsipstack::Error::DialogError(_, _, status) => status.code(),
        _ => 500,
    }
}

/// The same INVITE asking for a session interval of `asked` seconds (RFC 4028 §7.4: after a
/// 422, with the `Min-SE` it named), every other header kept.
pub(super) fn asking_for(option: &InviteOption, asked: u32) -> InviteOption {
    let mut option = option.clone();
    if let Some(h) = option.headers.as_mut() {
        h.retain(|h| {
            !h.name().eq_ignore_ascii_case("Session-Expires")
                && !h.name().eq_ignore_ascii_case("Min-SE")
        });
        h.push(headers::other("Session-Expires", asked.to_string()));
        h.push(headers::other("Min-SE", asked.to_string()));
    }
    option
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtmf_relay_bodies() {
        assert_eq!(info_dtmf(b"Signal=5\r\nDuration=160\r\n"), Some(('5', 160)));
        assert_eq!(info_dtmf(b"signal= #\nduration=80"), Some(('#', 80)));
        assert_eq!(info_dtmf(b"Signal=x"), None);
        assert_eq!(info_dtmf(b"\xff\xfe"), None);
        assert_eq!(info_dtmf(b"Duration=100"), None);
    }

    #[test]
    fn a_retried_invite_asks_for_the_new_interval_and_keeps_the_rest() {
        let option = InviteOption {
            headers: Some(vec![
                Header::Allow(ALLOW.into()),
                headers::other("Session-Expires", "1800"),
                headers::other("Min-SE", "90"),
                Header::Other("X-Queue".into(), "sales".into()),
            ]),
            ..Default::default()
        };
        let again = asking_for(&option, 3600);
        let named = |name: &str| -> Vec<String> {
            again
                .headers
                .iter()
                .flatten()
                .filter(|h| h.name().eq_ignore_ascii_case(name))
                .map(|h| h.value().to_string())
                .collect()
        };
        assert_eq!(named("Session-Expires"), ["3600"]);
        assert_eq!(named("Min-SE"), ["3600"]);
        assert_eq!(named("X-Queue"), ["sales"]);
        assert_eq!(named("Allow").len(), 1);
    }
}
