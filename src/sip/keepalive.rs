//! The upstream probe: SIP OPTIONS every `--options-interval` (RFC 3261 §11), feeding
//! `/api/genesys/status` and telling registrations when the upstream comes back.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rsipstack::sip::{Header, Method};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::ua::SipUa;
use crate::directory::{Directory, UpstreamStatus};

/// Probe deadline: a probe must finish before the next one is due, and an upstream that takes
/// longer than 5 s to answer an OPTIONS is not one to send calls to.
fn probe_deadline(interval: Duration) -> Duration {
    interval.clamp(Duration::from_secs(1), Duration::from_secs(5))
}

/// Runs until `cancel`. Each transition from unreachable to reachable bumps `recovered`.
pub async fn run(
    ua: Arc<SipUa>,
    directory: Arc<Directory>,
    interval: Duration,
    recovered: watch::Sender<u64>,
    cancel: CancellationToken,
) {
    let mut was_reachable: Option<bool> = None;
    loop {
        let status = probe(&ua, &directory, probe_deadline(interval)).await;
        match (was_reachable, status.reachable) {
            (Some(false), true) => {
                info!("SIP upstream reachable again");
                recovered.send_modify(|n| *n += 1);
            }
            (Some(true) | None, false) => {
                warn!(
                    failures = status.consecutive_failures,
                    "SIP upstream unreachable"
                )
            }
            (None, true) => {
                info!(rtt_ms = ?status.last_rtt.map(|d| d.as_millis()), "SIP upstream reachable")
            }
            _ => {}
        }
        was_reachable = Some(status.reachable);
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

async fn probe(ua: &SipUa, directory: &Directory, deadline: Duration) -> UpstreamStatus {
    let cfg = ua.config();
    let target = format!("sip:{}:{}", cfg.upstream_host, cfg.upstream_port);
    let from = format!("sip:gateway@{}", cfg.sip_domain);
    let started = Instant::now();
    let result = match ua.build_request(
        Method::Options,
        &target,
        &from,
        &ua.new_tag(),
        &target,
        &ua.new_call_id(),
        1,
    ) {
        Ok(mut req) => {
            req.headers.push(Header::Accept("application/sdp".into()));
            req.headers.push(Header::ContentLength(0u32.into()));
            ua.send(req, deadline).await.map(|r| r.status_code.code())
        }
        Err(e) => Err(e),
    };
    let mut status = directory.upstream();
    status.last_checked_at = Some(SystemTime::now());
    match result {
        // Any answer but our own stack's 408 proves the upstream is there (a 404 or 405 to
        // OPTIONS is still a live server).
        Ok(code) if code != 408 => {
            status.reachable = true;
            status.last_rtt = Some(started.elapsed());
            status.consecutive_failures = 0;
        }
        _ => {
            status.reachable = false;
            status.consecutive_failures = status.consecutive_failures.saturating_add(1);
        }
    }
    directory.set_upstream(status.clone());
    status
}
