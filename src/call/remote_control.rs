//! What the SIP side asks of the agent's phone beyond RFC 3261 calls: remote answer and hold
//! by NOTIFY (BroadSoft "talk"/"hold" events, which Genesys SIP Server sends inside the INVITE
//! dialog without a SUBSCRIBE), auto-answer hints on an INVITE, and the interaction's headers
//! (`X-Genesys-CallUUID`, User-to-User) that desktops join a call by.

use std::collections::BTreeMap;

use rsipstack::sip::Header;

use crate::sip::headers;

/// What an in-dialog NOTIFY's `Event` asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotifyEvent {
    /// `talk`: answer a ringing call, or take a held one back.
    Talk,
    /// `hold`: put the call on hold.
    Hold,
    /// `refer`: progress of our REFER (RFC 3515).
    Refer,
    /// Anything else: 489 Bad Event (RFC 6665 §8.2.1).
    Other(String),
}

/// The event package of a NOTIFY (`Event: talk;id=1` is `talk`; `o` is the compact form).
pub fn notify_event(h: &[Header]) -> NotifyEvent {
    let raw = headers::value(h, "Event")
        .or_else(|| headers::value(h, "o"))
        .unwrap_or_default();
    let package = raw
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match package.as_str() {
        "talk" => NotifyEvent::Talk,
        "hold" => NotifyEvent::Hold,
        "refer" => NotifyEvent::Refer,
        _ => NotifyEvent::Other(package),
    }
}

/// The seconds after which an INVITE asks to be answered without the agent, if it does:
/// `Call-Info: <...>;answer-after=N` (BroadSoft), `Alert-Info: <...>;info=alert-autoanswer`
/// or `Answer-Mode: Auto` (RFC 5373), the latter two meaning at once.
pub fn auto_answer(h: &[Header]) -> Option<u32> {
    for v in headers::values(h, "Call-Info") {
        let after = v.split(';').skip(1).find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("answer-after")
                .then(|| v.trim().trim_matches('"').parse::<u32>().ok())
                .flatten()
        });
        if after.is_some() {
            return after;
        }
    }
    let alert = headers::values(h, "Alert-Info").any(|v| {
        v.split(';').skip(1).any(|p| {
            p.split_once('=').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("info")
                    && v.trim()
                        .trim_matches('"')
                        .eq_ignore_ascii_case("alert-autoanswer")
            })
        })
    });
    let mode = headers::values(h, "Answer-Mode").any(|v| {
        v.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .eq_ignore_ascii_case("auto")
    });
    (alert || mode).then_some(0)
}

/// The headers a desktop joins the call by: every `X-*` header and `User-to-User`, under the
/// name as the request spelled it (the first of repeated ones).
pub fn interaction_headers(h: &[Header]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for header in h {
        let name = header.name();
        let wanted = name.len() > 2 && name[..2].eq_ignore_ascii_case("x-")
            || name.eq_ignore_ascii_case("User-to-User");
        if wanted && !out.keys().any(|k: &String| k.eq_ignore_ascii_case(name)) {
            out.insert(name.to_string(), header.value().to_string());
        }
    }
    out
}

/// `X-Genesys-CallUUID` among `headers`, whatever its case.
pub fn genesys_call_uuid(h: &BTreeMap<String, String>) -> Option<&str> {
    h.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("X-Genesys-CallUUID"))
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::headers::other;

    #[test]
    fn notify_events_by_package() {
        let talk = vec![other("Event", "talk")];
        assert_eq!(notify_event(&talk), NotifyEvent::Talk);
        let hold = vec![Header::Event("Hold;id=2".into())];
        assert_eq!(notify_event(&hold), NotifyEvent::Hold);
        let refer = vec![other("o", "refer;id=93809824")];
        assert_eq!(notify_event(&refer), NotifyEvent::Refer);
        let dialog = vec![other("Event", "dialog")];
        assert_eq!(notify_event(&dialog), NotifyEvent::Other("dialog".into()));
        assert_eq!(notify_event(&Vec::new()), NotifyEvent::Other(String::new()));
    }

    #[test]
    fn auto_answer_hints() {
        let call_info = vec![other("Call-Info", "<sip:gs.example.com>;answer-after=3")];
        assert_eq!(auto_answer(&call_info), Some(3));
        let icon = vec![other("Call-Info", "<http://x/icon.png>;purpose=icon")];
        assert_eq!(auto_answer(&icon), None);
        let alert = vec![other(
            "Alert-Info",
            "<http://127.0.0.1>;info=alert-autoanswer",
        )];
        assert_eq!(auto_answer(&alert), Some(0));
        let ring = vec![other(
            "Alert-Info",
            "<http://127.0.0.1>;info=alert-internal",
        )];
        assert_eq!(auto_answer(&ring), None);
        let mode = vec![other("Answer-Mode", "Auto;require")];
        assert_eq!(auto_answer(&mode), Some(0));
        let manual = vec![other("Answer-Mode", "Manual")];
        assert_eq!(auto_answer(&manual), None);
    }

    #[test]
    fn interaction_headers_are_x_and_uui() {
        let h = vec![
            other("X-Genesys-CallUUID", "TTL7J9EM750GP936CFL0EOACN8000002"),
            other("x-genesys-calluuid", "duplicate"),
            other("User-to-User", "00C1;encoding=hex"),
            Header::Supported("timer".into()),
            other("X", "not an X- header"),
        ];
        let got = interaction_headers(&h);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(
            genesys_call_uuid(&got),
            Some("TTL7J9EM750GP936CFL0EOACN8000002")
        );
        assert_eq!(got["User-to-User"], "00C1;encoding=hex");
    }
}
