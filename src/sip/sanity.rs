//! Requests from the network that parse but lack what RFC 3261 §8.1.1 requires get a 400
//! naming the problem (§8.2.2 ff.), instead of vanishing inside the stack. Unparseable bytes
//! are dropped by the transport, as §18.3 allows for datagrams we cannot frame.

use async_trait::async_trait;
use rsipstack::sip::prelude::{HeadersExt, ToTypedHeader};
use rsipstack::sip::{Header, Request, Response, SipMessage, StatusCode, Version};
use rsipstack::transaction::endpoint::TransportEventInspector;
use rsipstack::transaction::key::{TransactionKey, TransactionRole};
use rsipstack::transport::TransportEvent;
use tracing::{debug, info};

use super::ua::USER_AGENT;

/// The inspector installed on the endpoint.
pub struct Sanity;

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

/// A 400 carrying the headers a client needs to match it; `None` when there is no Via to
/// send it along.
pub fn bad_request(req: &Request, problem: &str) -> Option<Response> {
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
        .collect();
    headers.push(Header::Warning(format!("399 gateway \"{problem}\"").into()));
    headers.push(Header::Server(USER_AGENT.into()));
    headers.push(Header::ContentLength(0u32.into()));
    Some(Response {
        status_code: StatusCode::BadRequest,
        wire_reason: None,
        version: Version::V2,
        headers: headers.into(),
        body: vec![],
    })
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
            if let Err(problem) = check_request(req) {
                info!(src = %from, method = %req.method, problem, "rejecting malformed SIP request");
                // Never answer an ACK (§17.2.3): it has no response.
                if req.method != rsipstack::sip::Method::Ack {
                    if let Some(resp) = bad_request(req, problem) {
                        if let Err(e) = connection
                            .send(SipMessage::Response(resp), Some(from))
                            .await
                        {
                            debug!(error = %e, "could not send 400");
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
}
