//! What every request from the network passes before a transaction sees it:
//! - out-of-dialog requests from a source that is neither the upstream nor `--sip-trusted`
//!   get 403 (`trust.rs`); an ACK gets nothing (§17: it has no response);
//! - a request with more Via headers than any real path has hops gets 483;
//! - a request that parses but lacks what RFC 3261 §8.1.1 requires gets a 400 naming the
//!   problem (§8.2.2 ff.);
//! - a request with a method we do not know gets 501 with `Allow` (§8.2.1), through the
//!   fork's hook for messages the parser refuses ([`unknown_method_reply`]).
//!
//! Each of these is answered statelessly, counted in `/metrics` and logged, at most one line
//! per [`LOG_EVERY`] so a flood does not flood the log. Bytes that do not frame as a request
//! are dropped by the transport, as §18.3 allows.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rsipstack::sip::prelude::{HeadersExt, ToTypedHeader};
use rsipstack::sip::{Header, Method, Request, Response, SipMessage, StatusCode, Version};
use rsipstack::transaction::endpoint::TransportEventInspector;
use rsipstack::transaction::key::{TransactionKey, TransactionRole};
use rsipstack::transaction::make_tag;
use rsipstack::transport::TransportEvent;
use tracing::{debug, info};

use super::trust::TrustedSources;
use super::ua::{ALLOW, USER_AGENT};

/// Via headers beyond this are a loop or an attack, not a path: Max-Forwards starts at 70
/// (RFC 3261 §8.1.1.6), so no honest request has passed more proxies.
pub const MAX_VIA: usize = 70;
/// At most one refusal log line per this interval; the rest are counted into the next line
/// (and every one into `/metrics`).
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// The inspector installed on the endpoint.
pub struct Sanity {
    trust: Arc<TrustedSources>,
}

impl Sanity {
    /// Checks requests against `trust` and RFC 3261's minimum.
    pub fn new(trust: Arc<TrustedSources>) -> Self {
        Sanity { trust }
    }
}

/// Why a request is refused before any transaction sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The status of the stateless answer.
    pub status: StatusCode,
    /// The `/metrics` label (`gateway_sip_requests_refused_total{reason}`).
    pub reason: &'static str,
    /// What is wrong, as the `Warning` text and in the log.
    pub problem: &'static str,
}

impl Refusal {
    fn malformed(problem: &'static str) -> Self {
        Refusal {
            status: StatusCode::BadRequest,
            reason: "malformed",
            problem,
        }
    }
}

/// Whether a request claims to be inside a dialog: its To has a tag (RFC 3261 §12.2). Only
/// such requests can reach a dialog; everything else starts something new.
pub fn in_dialog(req: &Request) -> bool {
    req.to_header()
        .ok()
        .and_then(|t| t.tag().ok().flatten())
        .is_some()
}

/// What is wrong with a request, as the `Warning` text of our 400.
pub fn check_request(req: &Request) -> Result<(), &'static str> {
    let via = req.via_header().map_err(|_| "Missing Via")?;
    via.typed().map_err(|_| "Malformed Via")?;
    req.from_header()
        .map_err(|_| "Missing From")?
        .typed()
        .map_err(|_| "Malformed From")?;
    req.to_header()
        .map_err(|_| "Missing To")?
        .typed()
        .map_err(|_| "Malformed To")?;
    let call_id = req.call_id_header().map_err(|_| "Missing Call-ID")?;
    if call_id.value().trim().is_empty() {
        return Err("Empty Call-ID");
    }
    let cseq = req
        .cseq_header()
        .map_err(|_| "Missing CSeq")?
        .typed()
        .map_err(|_| "Malformed CSeq")?;
    if cseq.method != req.method {
        return Err("CSeq method does not match the request");
    }
    TransactionKey::from_request(req, TransactionRole::Server).map_err(|_| "Malformed Via")?;
    Ok(())
}

/// The checks in order: trust first (an untrusted source learns nothing more than 403), then
/// the Via count, then the headers every transaction needs.
pub fn screen(req: &Request, src: SocketAddr, trust: &TrustedSources) -> Result<(), Refusal> {
    if !in_dialog(req) && !trust.allows(src.ip()) {
        return Err(Refusal {
            status: StatusCode::Forbidden,
            reason: "untrusted_source",
            problem: "Source not trusted for out-of-dialog requests",
        });
    }
    let vias = req
        .headers
        .iter()
        .filter(|h| matches!(h, Header::Via(_)))
        .count();
    if vias > MAX_VIA {
        return Err(Refusal {
            status: StatusCode::TooManyHops,
            reason: "too_many_hops",
            problem: "Too many Via headers",
        });
    }
    check_request(req).map_err(Refusal::malformed)
}

/// A stateless response carrying the headers a client needs to match it (with a To tag of
/// ours when the request had none, §8.2.6.2), a `Warning` naming the problem and `extra`;
/// `None` when there is no Via to send it along.
pub fn stateless_response(
    req: &Request,
    status: StatusCode,
    problem: &str,
    extra: Vec<Header>,
) -> Option<Response> {
    req.via_header().ok()?;
    let mut headers: Vec<Header> = req
        .headers
        .iter()
        .filter(|h| {
            matches!(
                h,
                Header::Via(_)
                    | Header::From(_)
                    | Header::To(_)
                    | Header::CallId(_)
                    | Header::CSeq(_)
            )
        })
        .cloned()
        .map(|h| match h {
            Header::To(to) if matches!(to.tag(), Ok(None)) => Header::To(to.with_tag(make_tag())),
            other => other,
        })
        .collect();
    headers.extend(extra);
    headers.push(Header::Warning(format!("399 gateway \"{problem}\"").into()));
    headers.push(Header::Server(USER_AGENT.into()));
    headers.push(Header::ContentLength(0u32.into()));
    Some(Response {
        status_code: status,
        wire_reason: None,
        version: Version::V2,
        headers: headers.into(),
        body: vec![],
    })
}

/// A 400 naming `problem`; `None` without a Via.
pub fn bad_request(req: &Request, problem: &str) -> Option<Response> {
    stateless_response(req, StatusCode::BadRequest, problem, Vec::new())
}

/// The fork's hook for messages the parser refuses: a request whose only fault is a method
/// the parser does not know gets 501 Not Implemented with `Allow` (RFC 3261 §8.2.1). Anything
/// else stays unanswered. Installed once per process by `SipUa::start`.
pub fn unknown_method_reply(bytes: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(bytes).ok()?;
    let (line, rest) = text.split_once('\n')?;
    let mut parts = line.trim_end_matches('\r').splitn(3, ' ');
    let (method, uri, version) = (parts.next()?, parts.next()?, parts.next()?);
    if version != "SIP/2.0" || !is_token(method) || method.parse::<Method>().is_ok() {
        return None;
    }
    // Parsed as an OPTIONS so the rest is checked by the real parser; nothing is dispatched.
    let stand_in = format!("OPTIONS {uri} {version}\r\n{rest}");
    let Ok(SipMessage::Request(req)) = SipMessage::try_from(stand_in.as_str()) else {
        return None;
    };
    let cseq_method = req
        .cseq_header()
        .ok()?
        .value()
        .split_whitespace()
        .nth(1)
        .map(str::to_string)?;
    if cseq_method != method {
        return None;
    }
    let resp = stateless_response(
        &req,
        StatusCode::NotImplemented,
        "Method not implemented",
        vec![Header::Allow(ALLOW.into())],
    )?;
    crate::metrics::get().sip_refused("unknown_method");
    log_refusal(
        None,
        method,
        &StatusCode::NotImplemented,
        "Method not implemented",
    );
    Some(resp.to_string().into_bytes())
}

/// RFC 3261 §25.1 `token`.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
}

#[derive(Default)]
struct RefusalLog {
    last: Option<Instant>,
    suppressed: u64,
}

static REFUSALS: Mutex<RefusalLog> = Mutex::new(RefusalLog {
    last: None,
    suppressed: 0,
});

/// One line for a refusal, unless one was written less than [`LOG_EVERY`] ago: then it is
/// counted into the next line's `more_since_last_line`.
fn log_refusal(src: Option<SocketAddr>, method: &str, status: &StatusCode, problem: &str) {
    let Ok(mut log) = REFUSALS.lock() else { return };
    if let Some(suppressed) = log.admit(Instant::now()) {
        let src = src.map(|s| s.to_string()).unwrap_or_else(|| "-".into());
        info!(
            %src,
            method,
            status = status.code(),
            problem,
            more_since_last_line = suppressed,
            "SIP request refused"
        );
    }
}

impl RefusalLog {
    /// `Some(refusals not logged since the last line)` when this one may be logged.
    fn admit(&mut self, now: Instant) -> Option<u64> {
        if self.last.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[async_trait]
impl TransportEventInspector for Sanity {
    async fn handle(&self, event: TransportEvent) -> Option<TransportEvent> {
        if let TransportEvent::Incoming(msg, _, from) = &event {
            crate::metrics::get().sip_received(msg);
            if tracing::enabled!(tracing::Level::DEBUG) {
                debug!(src = %from, message = %msg, "SIP message in");
            }
        }
        if let TransportEvent::Incoming(SipMessage::Request(req), connection, from) = &event {
            let src = from.get_socketaddr().ok();
            let verdict = match src {
                Some(src) => screen(req, src, &self.trust),
                None => check_request(req).map_err(Refusal::malformed),
            };
            if let Err(refusal) = verdict {
                crate::metrics::get().sip_refused(refusal.reason);
                log_refusal(
                    src,
                    &req.method.to_string(),
                    &refusal.status,
                    refusal.problem,
                );
                // Never answer an ACK (§17.2.3): it has no response.
                if req.method != Method::Ack {
                    if let Some(resp) =
                        stateless_response(req, refusal.status.clone(), refusal.problem, Vec::new())
                    {
                        if let Err(e) = connection
                            .send(SipMessage::Response(resp), Some(from))
                            .await
                        {
                            debug!(error = %e, status = refusal.status.code(), "could not send a refusal");
                        }
                    }
                }
                return None;
            }
        }
        Some(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Request {
        match SipMessage::try_from(text.replace('\n', "\r\n").as_str()) {
            Ok(SipMessage::Request(r)) => r,
            other => panic!("not a request: {other:?}"),
        }
    }

    const GOOD: &str = "OPTIONS sip:127.0.0.1:5070 SIP/2.0\n\
Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-1;rport\n\
From: <sip:a@127.0.0.1>;tag=1\n\
To: <sip:127.0.0.1:5070>\n\
Call-ID: abc\n\
CSeq: 1 OPTIONS\n\
Max-Forwards: 70\n\
Content-Length: 0\n\n";

    #[test]
    fn well_formed_request_passes() {
        assert_eq!(check_request(&parse(GOOD)), Ok(()));
    }

    #[test]
    fn missing_or_broken_headers_are_named() {
        let no_cseq = GOOD.replace("CSeq: 1 OPTIONS\n", "");
        assert_eq!(check_request(&parse(&no_cseq)), Err("Missing CSeq"));
        let bad_cseq = GOOD.replace("CSeq: 1 OPTIONS", "CSeq: banana");
        assert!(check_request(&parse(&bad_cseq)).is_err());
        let mismatch = GOOD.replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE");
        assert_eq!(
            check_request(&parse(&mismatch)),
            Err("CSeq method does not match the request")
        );
        let no_call_id = GOOD.replace("Call-ID: abc\n", "");
        assert_eq!(check_request(&parse(&no_call_id)), Err("Missing Call-ID"));
    }

    #[test]
    fn the_400_echoes_the_transaction_headers() {
        let req = parse(&GOOD.replace("CSeq: 1 OPTIONS\n", ""));
        let resp = bad_request(&req, "Missing CSeq").expect("has a Via");
        let text = resp.to_string();
        assert!(text.starts_with("SIP/2.0 400"), "{text}");
        assert!(text.contains("branch=z9hG4bK-1"), "{text}");
        assert!(text.contains("Missing CSeq"), "{text}");
        assert!(text.contains("Call-ID: abc"), "{text}");
    }

    fn trusting(upstream: &str) -> TrustedSources {
        let t = TrustedSources::new(vec!["10.9.0.0/16".parse().expect("net")]);
        t.set_upstream(vec![upstream.parse().expect("ip")]);
        t
    }

    fn src(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    #[test]
    fn out_of_dialog_requests_need_a_trusted_source() {
        let t = trusting("127.0.0.1");
        let invite = parse(&GOOD.replace("OPTIONS", "INVITE"));
        assert_eq!(screen(&invite, src("127.0.0.1:5060"), &t), Ok(()));
        assert_eq!(screen(&invite, src("10.9.3.4:5060"), &t), Ok(()));
        let refused = screen(&invite, src("127.0.0.2:5060"), &t).expect_err("untrusted");
        assert_eq!(refused.status, StatusCode::Forbidden);
        assert_eq!(refused.reason, "untrusted_source");
        // An ACK without a To tag is no dialog's either: dropped, never answered.
        let ack = parse(&GOOD.replace("OPTIONS", "ACK"));
        assert!(screen(&ack, src("127.0.0.2:5060"), &t).is_err());
        // In a dialog (To tag): the dialog layer decides, whoever sends it.
        let bye = parse(&GOOD.replace("OPTIONS", "BYE").replace(
            "To: <sip:127.0.0.1:5070>",
            "To: <sip:127.0.0.1:5070>;tag=ours",
        ));
        assert_eq!(screen(&bye, src("127.0.0.2:5060"), &t), Ok(()));
    }

    #[test]
    fn too_many_vias_get_483_and_the_403_carries_a_to_tag() {
        let t = trusting("127.0.0.1");
        let vias: String = (0..200)
            .map(|i| {
                format!(
                    "Via: SIP/2.0/UDP 10.0.0.{}:5060;branch=z9hG4bK-{i}\n",
                    i % 250
                )
            })
            .collect();
        let looped = parse(&GOOD.replace("Max-Forwards", &format!("{vias}Max-Forwards")));
        let refused = screen(&looped, src("127.0.0.1:5060"), &t).expect_err("200 Vias");
        assert_eq!(refused.status, StatusCode::TooManyHops);
        let resp = stateless_response(&looped, refused.status, refused.problem, Vec::new())
            .expect("has a Via");
        assert!(resp.to_string().starts_with("SIP/2.0 483"), "{resp}");

        let invite = parse(&GOOD.replace("OPTIONS", "INVITE"));
        let refused = screen(&invite, src("192.0.2.1:5060"), &t).expect_err("untrusted");
        let text = stateless_response(&invite, refused.status, refused.problem, Vec::new())
            .expect("has a Via")
            .to_string();
        assert!(text.starts_with("SIP/2.0 403"), "{text}");
        assert!(text.contains("To: <sip:127.0.0.1:5070>;tag="), "{text}");
    }

    #[test]
    fn unknown_methods_get_501_with_allow() {
        let foo = GOOD.replace("OPTIONS", "FOO").replace('\n', "\r\n");
        let reply = unknown_method_reply(foo.as_bytes()).expect("a 501");
        let text = String::from_utf8(reply).expect("text");
        assert!(text.starts_with("SIP/2.0 501"), "{text}");
        assert!(text.contains(&format!("Allow: {ALLOW}")), "{text}");
        assert!(text.contains("CSeq: 1 FOO"), "{text}");
        assert!(text.contains("branch=z9hG4bK-1"), "{text}");
        // Known methods that failed for another reason, and non-requests, stay unanswered.
        assert!(unknown_method_reply(b"OPTIONS garbage\r\n\r\n").is_none());
        assert!(unknown_method_reply(b"\xff\xfe garbage").is_none());
        let no_via = foo.replace(
            "Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-1;rport\r\n",
            "",
        );
        assert!(unknown_method_reply(no_via.as_bytes()).is_none());
        let mismatch = foo.replace("CSeq: 1 FOO", "CSeq: 1 BAR");
        assert!(unknown_method_reply(mismatch.as_bytes()).is_none());
    }

    #[test]
    fn refusals_are_logged_at_most_once_per_interval() {
        let mut log = RefusalLog::default();
        let t0 = Instant::now();
        assert_eq!(log.admit(t0), Some(0));
        for i in 1..100 {
            assert_eq!(log.admit(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(log.admit(t0 + LOG_EVERY), Some(99));
    }
}
