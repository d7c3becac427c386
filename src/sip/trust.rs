//! Who may start something at the gateway. An out-of-dialog request (a new INVITE rings an
//! agent, an OPTIONS, a stray NOTIFY or REFER) is taken only from the upstream proxy's own
//! addresses and the sources `--sip-trusted` lists; anyone else gets 403. Without this, an
//! INVITE sent straight to the SIP port from anywhere rang the agent with any caller name.
//!
//! Requests inside a dialog (a To tag) are not checked here: the dialog layer matches them
//! by Call-ID and tags, and a far end that is not record-routed sends its BYE from its own
//! address. Responses are matched by their transaction's branch and never refused.

use std::net::IpAddr;
use std::sync::RwLock;
use std::time::Duration;

use ipnet::IpNet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How often a named upstream is looked up again, so a proxy that moves is trusted at its
/// new address without a restart.
const REFRESH: Duration = Duration::from_secs(300);
/// Longest wait for one lookup.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Retry interval while a named upstream does not resolve at all.
const RETRY: Duration = Duration::from_secs(15);

/// The sources trusted with out-of-dialog requests.
pub struct TrustedSources {
    configured: Vec<IpNet>,
    upstream: RwLock<Vec<IpAddr>>,
}

impl TrustedSources {
    /// Trusts `configured` (`--sip-trusted`) and, once [`set_upstream`](Self::set_upstream)
    /// has run, the upstream's addresses.
    pub fn new(configured: Vec<IpNet>) -> Self {
        TrustedSources {
            configured,
            upstream: RwLock::new(Vec::new()),
        }
    }

    /// Replaces the upstream's resolved addresses.
    pub fn set_upstream(&self, mut addrs: Vec<IpAddr>) {
        for a in &mut addrs {
            *a = a.to_canonical();
        }
        addrs.sort();
        addrs.dedup();
        if let Ok(mut up) = self.upstream.write() {
            if *up != addrs {
                info!(addresses = ?addrs, "SIP upstream addresses trusted");
                *up = addrs;
            }
        }
    }

    /// Whether `ip` may send out-of-dialog requests.
    pub fn allows(&self, ip: IpAddr) -> bool {
        // A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d.
        let ip = ip.to_canonical();
        self.configured.iter().any(|net| net.contains(&ip))
            || self.upstream.read().is_ok_and(|up| up.contains(&ip))
    }
}

/// The upstream host's addresses: the literal, or what the resolver says for a name.
pub async fn resolve_upstream(host: &str, port: u16) -> std::io::Result<Vec<IpAddr>> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    // A resolver that never answers must not hold up start-up (or the refresh) for long.
    let addrs = tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((bare, port)))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "DNS lookup timed out"))??;
    Ok(addrs.map(|a| a.ip()).collect())
}

/// Looks the upstream up once and trusts what it resolves to; `false` (logged) when it
/// resolves to nothing, leaving the previous addresses trusted.
pub async fn refresh_upstream(trust: &TrustedSources, host: &str, port: u16) -> bool {
    match resolve_upstream(host, port).await {
        Ok(addrs) if !addrs.is_empty() => {
            trust.set_upstream(addrs);
            true
        }
        Ok(_) => {
            warn!(%host, "the SIP upstream resolves to no address; out-of-dialog requests are taken from --sip-trusted sources only");
            false
        }
        Err(e) => {
            warn!(%host, error = %e, "cannot resolve the SIP upstream; out-of-dialog requests are taken from --sip-trusted sources only");
            false
        }
    }
}

/// Keeps a named upstream's addresses fresh until `cancel` (`resolved`: whether the first
/// lookup worked). An address literal never changes, so there is nothing to do for one.
pub async fn track_upstream(
    trust: std::sync::Arc<TrustedSources>,
    host: String,
    port: u16,
    mut resolved: bool,
    cancel: CancellationToken,
) {
    if resolve_literal(&host).is_some() {
        return;
    }
    loop {
        let wait = if resolved { REFRESH } else { RETRY };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => debug!(%host, "re-resolving the SIP upstream"),
        }
        resolved = refresh_upstream(&trust, &host, port).await;
    }
}

fn resolve_literal(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn upstream_and_configured_sources_are_trusted_others_not() {
        let t = TrustedSources::new(vec![
            "10.1.0.0/16".parse().expect("net"),
            "2001:db8::/32".parse().expect("net"),
            "192.0.2.9/32".parse().expect("net"),
        ]);
        assert!(!t.allows(ip("127.0.0.1")), "nothing resolved yet");
        t.set_upstream(vec![ip("127.0.0.1")]);
        assert!(t.allows(ip("127.0.0.1")));
        assert!(
            t.allows(ip("::ffff:127.0.0.1")),
            "IPv4-mapped is the same peer"
        );
        assert!(!t.allows(ip("127.0.0.2")));
        assert!(t.allows(ip("10.1.200.3")));
        assert!(!t.allows(ip("10.2.0.1")));
        assert!(t.allows(ip("2001:db8:1::5")));
        assert!(!t.allows(ip("2001:db9::5")));
        assert!(t.allows(ip("192.0.2.9")));
        assert!(!t.allows(ip("192.0.2.10")));
        t.set_upstream(vec![ip("127.0.0.5")]);
        assert!(
            !t.allows(ip("127.0.0.1")),
            "a re-resolution replaces the old addresses"
        );
        assert!(t.allows(ip("127.0.0.5")));
    }

    #[tokio::test]
    async fn literal_upstreams_resolve_without_a_lookup() {
        assert_eq!(
            resolve_upstream("127.0.0.1", 5060).await.expect("literal"),
            vec![ip("127.0.0.1")]
        );
        assert_eq!(
            resolve_upstream("[::1]", 5060).await.expect("literal"),
            vec![ip("::1")]
        );
        let local = resolve_upstream("localhost", 5060).await.expect("resolves");
        assert!(local.iter().all(IpAddr::is_loopback), "{local:?}");
    }
}
