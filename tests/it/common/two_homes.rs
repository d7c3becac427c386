//! Two hosts as network namespaces, the gateway's multi-homed one and the agent's, for the
//! browser tests that need real addresses and firewalls between Chromium and the gateway.

use std::time::Duration;

use super::browser::Browser;
use super::gateway::Gateway;
use super::kamailio::{pick_port, Kamailio, KamailioOptions};
use super::netns::Netns;

/// The gateway's host and the agent's, as namespaces: the gateway advertises `ADVERTISED`,
/// the address of its uplink interface (`wan0`, toward a third namespace), while its route
/// back to the agent's host leaves by its other interface (`lan0`) with another address. A
/// reply whose source the kernel picks by route comes from the wrong address.
pub struct TwoHomes {
    /// The gateway's host.
    pub gateway: Netns,
    /// The agent's host.
    pub browser: Netns,
    _uplink: Netns,
}

pub const ADVERTISED: &str = "198.18.1.1";
/// The same hosts over IPv6.
pub const ADVERTISED_V6: &str = "fd00:77:1::1";
/// The gateway's LAN address over IPv6.
pub const LAN_V6: &str = "fd00:77:2::1";

/// Which addresses the hosts get.
#[derive(Clone, Copy, PartialEq)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6 only.
    V6,
}

impl TwoHomes {
    /// Builds the three hosts.
    pub fn new(family: Family) -> TwoHomes {
        let gateway = Netns::fresh("gwhost");
        let browser = Netns::fresh("agent");
        let uplink = Netns::fresh("uplink");
        // Addresses without duplicate address detection, usable at once.
        let addr = |ns: &Netns, addr: &str, dev: &str| {
            let mut args = vec!["addr", "add", addr, "dev", dev];
            if family == Family::V6 {
                args.push("nodad");
            }
            ns.ip(&args);
        };
        let link = |name: &str, ours: &str, peer: &Netns, theirs: &str| {
            gateway.ip(&[
                "link", "add", name, "type", "veth", "peer", "name", "peer0", "netns", &peer.name,
            ]);
            addr(&gateway, ours, name);
            gateway.ip(&["link", "set", name, "up"]);
            addr(peer, theirs, "peer0");
            peer.ip(&["link", "set", "peer0", "up"]);
        };
        match family {
            Family::V4 => {
                link(
                    "wan0",
                    &format!("{ADVERTISED}/24"),
                    &uplink,
                    "198.18.1.2/24",
                );
                link("lan0", "198.18.2.1/24", &browser, "198.18.2.2/24");
                browser.ip(&["route", "add", "default", "via", "198.18.2.1"]);
            }
            Family::V6 => {
                link(
                    "wan0",
                    &format!("{ADVERTISED_V6}/64"),
                    &uplink,
                    "fd00:77:1::2/64",
                );
                link("lan0", &format!("{LAN_V6}/64"), &browser, "fd00:77:2::2/64");
                browser.ip(&["-6", "route", "add", "default", "via", LAN_V6]);
            }
        }
        TwoHomes {
            gateway,
            browser,
            _uplink: uplink,
        }
    }
}

impl TwoHomes {
    /// Chromium on the agent's host, allowed its microphone on the gateway's plain-http page
    /// (production serves https; a non-local http origin is no secure context).
    pub fn browser(&self, page: &str) -> Browser {
        Browser::start_on(&self.browser, page)
    }
}

/// On the gateway's host: Kamailio, and the gateway with media on 0.0.0.0 advertising
/// `ADVERTISED`, its WebSocket on `ws`, with `extra` flags.
pub fn gateway_host(ws: u16, extra: &[&str]) -> (Kamailio, Gateway) {
    gateway_advertising(ADVERTISED, ws, extra)
}

/// On the current host: Kamailio, and the gateway listening on every address (WebSocket on
/// `ws`, SIP on a free port) advertising `address`, with `extra` flags.
pub fn gateway_advertising(address: &str, ws: u16, extra: &[&str]) -> (Kamailio, Gateway) {
    let kam = Kamailio::start(KamailioOptions::default());
    let ws_listen = format!("0.0.0.0:{ws}");
    let sip_listen = format!("0.0.0.0:{}", pick_port());
    let mut args = vec![
        "--ws-listen",
        &ws_listen,
        "--sip-listen",
        &sip_listen,
        "--public-ip",
        address,
    ];
    args.extend_from_slice(extra);
    let gw = Gateway::start(&kam.uri(), &args);
    (kam, gw)
}

/// The page at `page`, registered as 5001.
pub fn register_at(b: &mut Browser, page: &str) {
    b.goto(&format!("{page}/"));
    b.fill("#dn", "5001");
    b.fill("#password", "pass5001");
    b.click("#register-btn");
    b.wait_text("#reg-state", "registered", Duration::from_secs(20));
}
