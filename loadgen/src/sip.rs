//! The far end: a small stateless SIP UAS on one UDP socket. REGISTER gets 200 with the
//! request's Contact (no challenge: the bench gateway's registrar is us), OPTIONS 200, INVITE
//! 200 with an SDP answer pointing at the media thread's echo socket (the offer's first codec,
//! so the gateway relays without transcoding), BYE/CANCEL/anything else 200, ACK nothing.
//! Retransmitted INVITEs get the same 200. Messages are parsed and built with rsipstack's
//! `sip` types, SDP with the media crate (`rtc-sdp`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use media::sdp::{build_plain_answer, parse_plain, Direction, PlainParams};
use rsipstack::sip::prelude::{HeadersExt, ToTypedHeader};
use rsipstack::sip::{Header, Method, Request, Response, SipMessage, StatusCode, Version};
use tokio::net::UdpSocket;

use crate::Timeline;

/// Agents are `AGENT_BASE + i`, the numbers they call `CALLEE_BASE + i`.
pub const AGENT_BASE: u32 = 100_000;
pub const CALLEE_BASE: u32 = 200_000;

pub async fn run(sock: UdpSocket, echo: SocketAddr, timeline: Timeline) {
    let mut buf = vec![0u8; 65536];
    let mut answered: HashMap<String, Vec<u8>> = HashMap::new();
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        let now = Instant::now();
        let Ok(SipMessage::Request(req)) = SipMessage::try_from(&buf[..n]) else {
            continue;
        };
        let reply = match req.method {
            Method::Ack => continue,
            Method::Invite => {
                let call_id = req
                    .call_id_header()
                    .map(|c| c.value().to_owned())
                    .unwrap_or_default();
                if let Some(bytes) = answered.get(&call_id) {
                    let _ = sock.send_to(bytes, from).await;
                    continue;
                }
                let idx = req
                    .uri
                    .user()
                    .and_then(|u| u.parse::<u32>().ok())
                    .and_then(|u| u.checked_sub(CALLEE_BASE));
                if let (Some(i), Ok(mut t)) = (idx, timeline.lock()) {
                    if let Some(c) = t.get_mut(i as usize) {
                        c.invite_rx = Some(now);
                    }
                }
                match invite_ok(&req, echo, sock.local_addr().ok()) {
                    Some(resp) => {
                        let bytes = SipMessage::Response(resp).to_string().into_bytes();
                        let _ = sock.send_to(&bytes, from).await;
                        let sent = Instant::now();
                        if let (Some(i), Ok(mut t)) = (idx, timeline.lock()) {
                            if let Some(c) = t.get_mut(i as usize) {
                                c.ok_sent = Some(sent);
                            }
                        }
                        answered.insert(call_id, bytes);
                        continue;
                    }
                    None => response(&req, StatusCode::NotAcceptableHere, Vec::new(), None),
                }
            }
            Method::Register => {
                let mut extra: Vec<Header> = req
                    .headers
                    .iter()
                    .filter(|h| matches!(h, Header::Contact(_) | Header::Expires(_)))
                    .cloned()
                    .collect();
                if !extra.iter().any(|h| matches!(h, Header::Expires(_))) {
                    extra.push(Header::Expires(3600u32.into()));
                }
                response(&req, StatusCode::OK, extra, None)
            }
            _ => response(&req, StatusCode::OK, Vec::new(), None),
        };
        let _ = sock
            .send_to(SipMessage::Response(reply).to_string().as_bytes(), from)
            .await;
    }
}

fn response(
    req: &Request,
    status: StatusCode,
    extra: Vec<Header>,
    body: Option<Vec<u8>>,
) -> Response {
    let mut headers: Vec<Header> = req
        .headers
        .iter()
        .filter(|h| {
            matches!(
                h,
                Header::Via(_) | Header::From(_) | Header::CallId(_) | Header::CSeq(_)
            )
        })
        .cloned()
        .collect();
    if let Ok(to) = req.to_header() {
        let to = if req.method == Method::Invite {
            to.with_tag(rsipstack::sip::param::Tag::new(format!(
                "lg{}",
                rand::random::<u32>()
            )))
        } else {
            to.clone()
        };
        headers.push(Header::To(to));
    }
    headers.extend(extra);
    let body = body.unwrap_or_default();
    headers.push(Header::ContentLength((body.len() as u32).into()));
    Response {
        status_code: status,
        wire_reason: None,
        version: Version::V2,
        headers: headers.into(),
        body,
    }
}

fn invite_ok(req: &Request, echo: SocketAddr, local: Option<SocketAddr>) -> Option<Response> {
    let offer = std::str::from_utf8(&req.body).ok()?;
    let desc = parse_plain(offer).ok()?;
    let codec = desc
        .codecs
        .iter()
        .find(|c| !c.is_telephone_event())?
        .clone();
    let answer = build_plain_answer(
        offer,
        &PlainParams {
            ip: echo.ip(),
            port: echo.port(),
            codecs: &[codec],
            direction: Direction::SendRecv,
            session_id: u64::from(rand::random::<u32>()),
            session_version: 1,
            ptime: 20,
        },
    )
    .ok()?;
    let user = req.uri.user().unwrap_or("far").to_owned();
    let local = local?;
    let contact = rsipstack::sip::typed::Contact {
        display_name: None,
        uri: rsipstack::sip::Uri::try_from(format!("sip:{user}@{local}")).ok()?,
        params: vec![],
    };
    // The typed header is only used to check and print the Contact.
    let _ = req.from_header().ok()?.typed().ok()?;
    Some(response(
        req,
        StatusCode::OK,
        vec![
            Header::Contact(contact.into()),
            Header::ContentType("application/sdp".into()),
        ],
        Some(answer.into_bytes()),
    ))
}
