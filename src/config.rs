//! One typed configuration, read from flags, `GATEWAY_*` environment and an optional TOML
//! file, in that order of precedence, then defaults (DESIGN.md "Run contract").
//!
//! Every raw value is a string until [`Config::resolve`] parses it, so a wrong value can be
//! reported in one line that names the flag, the environment variable and the file key.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use rsipstack::sip::uri::ParamsExt;
use rsipstack::sip::Uri;

/// Command line and environment. Each field stays a raw string so that the file and the
/// defaults can fill what is missing, and parsing errors come out uniformly.
#[derive(Parser, Debug, Default)]
#[command(
    name = "gateway",
    version,
    about = "Browser agents (JSON/WebSocket + WebRTC) to plain SIP: a media-terminating B2BUA",
    long_about = "Browser agents (JSON/WebSocket + WebRTC) to plain SIP: a media-terminating B2BUA.\n\n\
Every setting has a flag, a GATEWAY_* environment variable and a key in the TOML file given \
with --config (the flag name with '_' for '-', e.g. ws_listen). Flags beat environment, \
environment beats the file, the file beats the defaults."
)]
pub struct Cli {
    /// TOML configuration file
    #[arg(long, env = "GATEWAY_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Browser WebSocket listen address (and the demo page) [default: 0.0.0.0:8081]
    #[arg(long, env = "GATEWAY_WS_LISTEN", value_name = "ADDR")]
    pub ws_listen: Option<String>,
    /// REST, SSE and metrics listen address [default: 0.0.0.0:8082]
    #[arg(long, env = "GATEWAY_API_LISTEN", value_name = "ADDR")]
    pub api_listen: Option<String>,
    /// The gateway's own SIP address, UDP and TCP [default: 0.0.0.0:5070]
    #[arg(long, env = "GATEWAY_SIP_LISTEN", value_name = "ADDR")]
    pub sip_listen: Option<String>,
    /// Registrar / outbound proxy, a SIP URI; `;transport=tcp` picks TCP [default: sip:127.0.0.1:5060]
    #[arg(long, env = "GATEWAY_SIP_UPSTREAM", value_name = "URI")]
    pub sip_upstream: Option<String>,
    /// Comma-separated addresses and CIDRs (IPv4, IPv6) allowed to send out-of-dialog SIP
    /// requests, besides the upstream's own addresses; others get 403 [default: the upstream's
    /// addresses only]
    #[arg(long, env = "GATEWAY_SIP_TRUSTED", value_name = "CIDRS")]
    pub sip_trusted: Option<String>,
    /// Domain of the agents' AORs (sip:DN@DOMAIN) [default: the upstream host]
    #[arg(long, env = "GATEWAY_SIP_DOMAIN", value_name = "DOMAIN")]
    pub sip_domain: Option<String>,
    /// Address written into SDP, Contact and the browsers' ICE candidate [default: the SIP
    /// listen address; when listening on all interfaces, the local address that routes to the
    /// upstream toward SIP, and every address of the host as browser candidates]
    #[arg(long, env = "GATEWAY_PUBLIC_IP", value_name = "IP")]
    pub public_ip: Option<String>,
    /// UDP port range for the SIP leg's RTP/RTCP [default: 20000-29999]
    #[arg(long, env = "GATEWAY_RTP_PORTS", value_name = "LOW-HIGH")]
    pub rtp_ports: Option<String>,
    /// JSON list of ICE servers handed to browsers in `hello` [default: []]
    #[arg(long, env = "GATEWAY_ICE_SERVERS", value_name = "JSON")]
    pub ice_servers: Option<String>,
    /// Shared secret of a TURN server in coturn's `use-auth-secret` mode: each session's
    /// `hello` then carries its own short-lived credentials [default: none]
    #[arg(
        long,
        env = "GATEWAY_TURN_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub turn_secret: Option<String>,
    /// Comma-separated `turn:`/`turns:` URLs the `--turn-secret` credentials are for [default: none]
    #[arg(long, env = "GATEWAY_TURN_URLS", value_name = "URLS")]
    pub turn_urls: Option<String>,
    /// Lifetime of the per-session TURN credentials, seconds [default: 86400]
    #[arg(long, env = "GATEWAY_TURN_TTL", value_name = "SECONDS")]
    pub turn_ttl: Option<String>,
    /// Bearer token required by REST (except /api/health) and the WebSocket [default: none]
    #[arg(
        long,
        env = "GATEWAY_API_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub api_token: Option<String>,
    /// tracing filter, e.g. `info` or `gateway=debug` [default: info]
    #[arg(long, env = "RUST_LOG", value_name = "FILTER")]
    pub log: Option<String>,
    /// Seconds a dropped browser session keeps its registration and calls [default: 30]
    #[arg(long, env = "GATEWAY_GRACE_PERIOD", value_name = "SECONDS")]
    pub grace_period: Option<String>,
    /// Seconds a call waits for its browser to restart ICE or re-attach after its media path
    /// went silent (ICE consent lost, network change, page reload) [default: the grace period]
    #[arg(long, env = "GATEWAY_ICE_RESTART_GRACE", value_name = "SECONDS")]
    pub ice_restart_grace: Option<String>,
    /// Expires requested in REGISTER when the browser does not ask for one [default: 3600]
    #[arg(long, env = "GATEWAY_REGISTER_EXPIRES", value_name = "SECONDS")]
    pub register_expires: Option<String>,
    /// Seconds between attempts to re-register after a failed refresh [default: 30]
    #[arg(long, env = "GATEWAY_REGISTER_RETRY", value_name = "SECONDS")]
    pub register_retry: Option<String>,
    /// Seconds between SIP OPTIONS probes of the upstream [default: 30]
    #[arg(long, env = "GATEWAY_OPTIONS_INTERVAL", value_name = "SECONDS")]
    pub options_interval: Option<String>,
    /// Seconds between WebSocket pings to browsers; two missed intervals drop the socket [default: 20]
    #[arg(long, env = "GATEWAY_WS_PING_INTERVAL", value_name = "SECONDS")]
    pub ws_ping_interval: Option<String>,
    /// Comma-separated page origins allowed to open the WebSocket [default: any]
    #[arg(long, env = "GATEWAY_ALLOWED_ORIGINS", value_name = "ORIGINS")]
    pub allowed_origins: Option<String>,
    /// Seconds without media on a leg that end the call with a BYE [default: 30]
    #[arg(long, env = "GATEWAY_RTP_TIMEOUT", value_name = "SECONDS")]
    pub rtp_timeout: Option<String>,
    /// Media worker threads [default: the number of cores]
    #[arg(long, env = "GATEWAY_MEDIA_WORKERS", value_name = "N")]
    pub media_workers: Option<String>,
    /// TCP address for ICE-TCP passive candidates (RFC 6544), for browsers whose UDP is
    /// blocked; 0.0.0.0 offers it on every browser address [default: none, UDP only]
    #[arg(long, env = "GATEWAY_ICE_TCP_LISTEN", value_name = "ADDR:PORT")]
    pub ice_tcp_listen: Option<String>,
    /// RFC 4028 session interval asked for in our INVITEs, seconds; 0 = none [default: 1800]
    #[arg(long, env = "GATEWAY_SESSION_EXPIRES", value_name = "SECONDS")]
    pub session_expires: Option<String>,
    /// Smallest session interval accepted from the far end (422 below it) [default: 90]
    #[arg(long, env = "GATEWAY_MIN_SE", value_name = "SECONDS")]
    pub min_se: Option<String>,
    /// What a REFER from the far end does: `accept` (call the target) or `reject` (403) [default: accept]
    #[arg(long, env = "GATEWAY_INCOMING_REFER", value_name = "POLICY")]
    pub incoming_refer: Option<String>,
    /// PEM certificate chain: serve `wss://` and `https://` on the same ports (with --tls-key)
    #[arg(long, env = "GATEWAY_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<String>,
    /// PEM private key for --tls-cert
    #[arg(long, env = "GATEWAY_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<String>,
    /// Comma-separated origins allowed to call the REST API from a browser (CORS) [default: none]
    #[arg(long, env = "GATEWAY_CORS_ORIGINS", value_name = "ORIGINS")]
    pub cors_origins: Option<String>,
    /// WebSocket connections accepted per source IP and minute [default: 600]
    #[arg(long, env = "GATEWAY_WS_CONNECTS_PER_MINUTE", value_name = "N")]
    pub ws_connects_per_minute: Option<String>,
    /// `register` attempts accepted per source IP and minute [default: 300]
    #[arg(long, env = "GATEWAY_REGISTERS_PER_MINUTE", value_name = "N")]
    pub registers_per_minute: Option<String>,
    /// Requests accepted per browser session and second [default: 50]
    #[arg(long, env = "GATEWAY_REQUESTS_PER_SECOND", value_name = "N")]
    pub requests_per_second: Option<String>,
    /// Incoming calls that may ring one DN at once; more get 486 [default: 4]
    #[arg(long, env = "GATEWAY_MAX_RINGING_PER_DN", value_name = "N")]
    pub max_ringing_per_dn: Option<String>,
}

/// How SIP reaches the upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SipTransport {
    /// Datagrams, with the RFC 3261 retransmission timers.
    Udp,
    /// One stream connection, reused for every request.
    Tcp,
}

impl SipTransport {
    /// The lowercase name used in URIs and in the REST status.
    pub fn as_str(self) -> &'static str {
        match self {
            SipTransport::Udp => "udp",
            SipTransport::Tcp => "tcp",
        }
    }
}

/// The resolved, validated configuration the gateway runs with.
#[derive(Clone, Debug)]
pub struct Config {
    /// Browser WebSocket listen address.
    pub ws_listen: SocketAddr,
    /// REST listen address.
    pub api_listen: SocketAddr,
    /// SIP listen address (UDP and TCP).
    pub sip_listen: SocketAddr,
    /// The upstream as configured, e.g. `sip:127.0.0.1:5060;transport=tcp`.
    pub sip_upstream: String,
    /// Upstream host (name or address) and port.
    pub upstream_host: String,
    /// Upstream port (5060 when the URI has none).
    pub upstream_port: u16,
    /// Sources trusted with out-of-dialog requests besides the upstream (`--sip-trusted`).
    pub sip_trusted: Vec<ipnet::IpNet>,
    /// Transport toward the upstream.
    pub upstream_transport: SipTransport,
    /// Domain of the agents' AORs.
    pub sip_domain: String,
    /// Address advertised toward SIP: Contact, Via and the SIP leg's SDP.
    pub public_ip: IpAddr,
    /// Addresses offered to browsers as ICE host candidates, most preferred first:
    /// `--public-ip` when given, else the listen address, else every address of the host.
    pub browser_ips: Vec<IpAddr>,
    /// RTP port range, inclusive.
    pub rtp_ports: (u16, u16),
    /// ICE servers for `hello`, already validated as a JSON list of objects.
    pub ice_servers: serde_json::Value,
    /// Per-session TURN credentials (TURN REST API), when a shared secret is set.
    pub turn: Option<TurnRest>,
    /// Bearer token for REST and WebSocket, if any.
    pub api_token: Option<String>,
    /// tracing filter.
    pub log: String,
    /// Grace period of a dropped browser session.
    pub grace_period: Duration,
    /// How long a call waits for its browser leg to come back after it went silent.
    pub ice_restart_grace: Duration,
    /// Expires asked for in REGISTER by default.
    pub register_expires: u32,
    /// Pause between re-registration attempts after a failure.
    pub register_retry: Duration,
    /// Interval of the upstream OPTIONS probe.
    pub options_interval: Duration,
    /// Interval of WebSocket pings.
    pub ws_ping_interval: Duration,
    /// Allowed page origins; empty means any.
    pub allowed_origins: Vec<String>,
    /// Media silence that ends a call.
    pub rtp_timeout: Duration,
    /// Media worker threads.
    pub media_workers: usize,
    /// ICE-TCP listen address, if ICE-TCP is on.
    pub ice_tcp_listen: Option<SocketAddr>,
    /// Session timer settings (RFC 4028).
    pub session_timer: crate::config::TimerConfig,
    /// Whether a REFER from the far end is followed.
    pub accept_refer: bool,
    /// TLS certificate chain and key (PEM files), both or neither.
    pub tls: Option<TlsFiles>,
    /// Origins allowed to call REST from a browser.
    pub cors_origins: Vec<String>,
    /// Abuse limits.
    pub limits: Limits,
}

/// PEM files for `wss://` and `https://`.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
}

/// Rate limits (per source IP, per session).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// WebSocket connections per source IP and minute.
    pub ws_connects_per_minute: u32,
    /// `register` attempts per source IP and minute.
    pub registers_per_minute: u32,
    /// Requests per session and second.
    pub requests_per_second: u32,
    /// Incoming calls ringing one DN at once (each holds an RTP port pair).
    pub max_ringing_per_dn: usize,
}

/// A setting that could not be used; its `Display` is the one line printed at start-up.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value that does not parse or is out of range.
    #[error("invalid --{flag} (env {env}, file key {key}): {value:?}: {reason}")]
    Invalid {
        /// Flag name without dashes.
        flag: &'static str,
        /// Environment variable.
        env: &'static str,
        /// TOML key.
        key: &'static str,
        /// The offending value (never a secret: secrets are not validated by content).
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// The TOML file cannot be read or parsed.
    #[error("config file {path}: {reason}")]
    File {
        /// Path given with --config.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// Raw values after flags, environment and file are merged.
type Raw = Option<String>;

struct Setting {
    flag: &'static str,
    env: &'static str,
    key: &'static str,
}

impl Setting {
    const fn new(flag: &'static str, env: &'static str, key: &'static str) -> Self {
        Setting { flag, env, key }
    }

    fn invalid(&self, value: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            flag: self.flag,
            env: self.env,
            key: self.key,
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

const WS_LISTEN: Setting = Setting::new("ws-listen", "GATEWAY_WS_LISTEN", "ws_listen");
const API_LISTEN: Setting = Setting::new("api-listen", "GATEWAY_API_LISTEN", "api_listen");
const SIP_LISTEN: Setting = Setting::new("sip-listen", "GATEWAY_SIP_LISTEN", "sip_listen");
const SIP_UPSTREAM: Setting = Setting::new("sip-upstream", "GATEWAY_SIP_UPSTREAM", "sip_upstream");
const SIP_TRUSTED: Setting = Setting::new("sip-trusted", "GATEWAY_SIP_TRUSTED", "sip_trusted");
const SIP_DOMAIN: Setting = Setting::new("sip-domain", "GATEWAY_SIP_DOMAIN", "sip_domain");
const PUBLIC_IP: Setting = Setting::new("public-ip", "GATEWAY_PUBLIC_IP", "public_ip");
const RTP_PORTS: Setting = Setting::new("rtp-ports", "GATEWAY_RTP_PORTS", "rtp_ports");
const ICE_SERVERS: Setting = Setting::new("ice-servers", "GATEWAY_ICE_SERVERS", "ice_servers");
const TURN_SECRET: Setting = Setting::new("turn-secret", "GATEWAY_TURN_SECRET", "turn_secret");
const TURN_URLS: Setting = Setting::new("turn-urls", "GATEWAY_TURN_URLS", "turn_urls");
const TURN_TTL: Setting = Setting::new("turn-ttl", "GATEWAY_TURN_TTL", "turn_ttl");
const ICE_RESTART_GRACE: Setting = Setting::new(
    "ice-restart-grace",
    "GATEWAY_ICE_RESTART_GRACE",
    "ice_restart_grace",
);
const API_TOKEN: Setting = Setting::new("api-token", "GATEWAY_API_TOKEN", "api_token");
const LOG: Setting = Setting::new("log", "RUST_LOG", "log");
const GRACE: Setting = Setting::new("grace-period", "GATEWAY_GRACE_PERIOD", "grace_period");
const REG_EXPIRES: Setting = Setting::new(
    "register-expires",
    "GATEWAY_REGISTER_EXPIRES",
    "register_expires",
);
const REG_RETRY: Setting =
    Setting::new("register-retry", "GATEWAY_REGISTER_RETRY", "register_retry");
const OPTIONS_INTERVAL: Setting = Setting::new(
    "options-interval",
    "GATEWAY_OPTIONS_INTERVAL",
    "options_interval",
);
const WS_PING: Setting = Setting::new(
    "ws-ping-interval",
    "GATEWAY_WS_PING_INTERVAL",
    "ws_ping_interval",
);
const ORIGINS: Setting = Setting::new(
    "allowed-origins",
    "GATEWAY_ALLOWED_ORIGINS",
    "allowed_origins",
);

const RTP_TIMEOUT: Setting = Setting::new("rtp-timeout", "GATEWAY_RTP_TIMEOUT", "rtp_timeout");
const MEDIA_WORKERS: Setting =
    Setting::new("media-workers", "GATEWAY_MEDIA_WORKERS", "media_workers");
const ICE_TCP_LISTEN: Setting =
    Setting::new("ice-tcp-listen", "GATEWAY_ICE_TCP_LISTEN", "ice_tcp_listen");

const SESSION_EXPIRES: Setting = Setting::new(
    "session-expires",
    "GATEWAY_SESSION_EXPIRES",
    "session_expires",
);
const MIN_SE: Setting = Setting::new("min-se", "GATEWAY_MIN_SE", "min_se");
const INCOMING_REFER: Setting =
    Setting::new("incoming-refer", "GATEWAY_INCOMING_REFER", "incoming_refer");

const TLS_CERT: Setting = Setting::new("tls-cert", "GATEWAY_TLS_CERT", "tls_cert");
const TLS_KEY: Setting = Setting::new("tls-key", "GATEWAY_TLS_KEY", "tls_key");
const CORS: Setting = Setting::new("cors-origins", "GATEWAY_CORS_ORIGINS", "cors_origins");
const WS_CONNECTS: Setting = Setting::new(
    "ws-connects-per-minute",
    "GATEWAY_WS_CONNECTS_PER_MINUTE",
    "ws_connects_per_minute",
);
const REGISTERS: Setting = Setting::new(
    "registers-per-minute",
    "GATEWAY_REGISTERS_PER_MINUTE",
    "registers_per_minute",
);
const MAX_RINGING: Setting = Setting::new(
    "max-ringing-per-dn",
    "GATEWAY_MAX_RINGING_PER_DN",
    "max_ringing_per_dn",
);
const REQUESTS: Setting = Setting::new(
    "requests-per-second",
    "GATEWAY_REQUESTS_PER_SECOND",
    "requests_per_second",
);

const FILE_KEYS: &[&Setting] = &[
    &TLS_CERT,
    &TLS_KEY,
    &CORS,
    &WS_CONNECTS,
    &REGISTERS,
    &REQUESTS,
    &MAX_RINGING,
    &SESSION_EXPIRES,
    &MIN_SE,
    &INCOMING_REFER,
    &RTP_TIMEOUT,
    &MEDIA_WORKERS,
    &ICE_TCP_LISTEN,
    &WS_LISTEN,
    &API_LISTEN,
    &SIP_LISTEN,
    &SIP_UPSTREAM,
    &SIP_TRUSTED,
    &SIP_DOMAIN,
    &PUBLIC_IP,
    &RTP_PORTS,
    &ICE_SERVERS,
    &TURN_SECRET,
    &TURN_URLS,
    &TURN_TTL,
    &ICE_RESTART_GRACE,
    &API_TOKEN,
    &LOG,
    &GRACE,
    &REG_EXPIRES,
    &REG_RETRY,
    &OPTIONS_INTERVAL,
    &WS_PING,
    &ORIGINS,
];

impl Config {
    /// Merges flags/environment (already in `cli`) with the file, then defaults, and validates.
    pub fn resolve(mut cli: Cli) -> Result<Config, ConfigError> {
        if let Some(path) = cli.config.clone() {
            let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::File {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            apply_file(&mut cli, &text).map_err(|reason| ConfigError::File {
                path: path.display().to_string(),
                reason,
            })?;
        }
        Self::from_raw(cli)
    }

    fn from_raw(cli: Cli) -> Result<Config, ConfigError> {
        let ws_listen = socket_addr(&WS_LISTEN, cli.ws_listen, "0.0.0.0:8081")?;
        let api_listen = socket_addr(&API_LISTEN, cli.api_listen, "0.0.0.0:8082")?;
        let sip_listen = socket_addr(&SIP_LISTEN, cli.sip_listen, "0.0.0.0:5070")?;

        let upstream_raw = cli
            .sip_upstream
            .unwrap_or_else(|| "sip:127.0.0.1:5060".to_string());
        let (upstream_host, upstream_port, upstream_transport) =
            parse_upstream(&upstream_raw).map_err(|r| SIP_UPSTREAM.invalid(&upstream_raw, r))?;

        let sip_trusted = match cli.sip_trusted {
            None => Vec::new(),
            Some(raw) => parse_trusted(&raw).map_err(|r| SIP_TRUSTED.invalid(&raw, r))?,
        };

        let sip_domain = match cli.sip_domain {
            Some(d) if d.trim().is_empty() => return Err(SIP_DOMAIN.invalid(&d, "is empty")),
            Some(d) if d.contains(|c: char| c.is_whitespace() || "<>@;\"".contains(c)) => {
                return Err(SIP_DOMAIN.invalid(&d, "is not a SIP host name"))
            }
            Some(d) => d,
            None => upstream_host.clone(),
        };

        let (public_ip, browser_ips) = match cli.public_ip {
            Some(raw) => {
                let ip: IpAddr = raw
                    .parse()
                    .map_err(|_| PUBLIC_IP.invalid(&raw, "is not an IP address"))?;
                if ip.is_unspecified() {
                    return Err(PUBLIC_IP.invalid(&raw, "must be a reachable address"));
                }
                (ip, vec![ip])
            }
            None => {
                let sip = default_public_ip(sip_listen.ip(), &upstream_host, upstream_port);
                (
                    sip,
                    default_browser_ips(sip_listen.ip(), sip, host_addresses()),
                )
            }
        };

        let rtp_raw = cli.rtp_ports.unwrap_or_else(|| "20000-29999".to_string());
        let rtp_ports = parse_port_range(&rtp_raw).map_err(|r| RTP_PORTS.invalid(&rtp_raw, r))?;

        let ice_raw = cli.ice_servers.unwrap_or_else(|| "[]".to_string());
        let ice_servers = parse_ice_servers(&ice_raw).map_err(|r| ICE_SERVERS.invalid("…", r))?;

        let turn = parse_turn(cli.turn_secret, cli.turn_urls, cli.turn_ttl)?;

        let api_token = match cli.api_token {
            Some(t) if t.is_empty() => return Err(API_TOKEN.invalid("", "is empty")),
            other => other,
        };

        let log = cli.log.unwrap_or_else(|| "info".to_string());
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log) {
            return Err(LOG.invalid(&log, e.to_string()));
        }

        let grace_period = seconds(&GRACE, cli.grace_period, 30, 0, 86_400)?;
        let ice_restart_grace = seconds(
            &ICE_RESTART_GRACE,
            cli.ice_restart_grace,
            grace_period.as_secs(),
            0,
            86_400,
        )?;
        let register_expires = integer(&REG_EXPIRES, cli.register_expires, 3600, 1, 86_400)?;
        let register_retry = seconds(&REG_RETRY, cli.register_retry, 30, 1, 3600)?;
        let options_interval = seconds(&OPTIONS_INTERVAL, cli.options_interval, 30, 1, 3600)?;
        let ws_ping_interval = seconds(&WS_PING, cli.ws_ping_interval, 20, 1, 3600)?;

        let rtp_timeout = seconds(&RTP_TIMEOUT, cli.rtp_timeout, 30, 1, 3600)?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        let media_workers = integer(&MEDIA_WORKERS, cli.media_workers, cores, 1, 256)? as usize;
        let ice_tcp_listen = match cli.ice_tcp_listen {
            None => None,
            Some(raw) => {
                let addr: SocketAddr = raw.trim().parse().map_err(|_| {
                    ICE_TCP_LISTEN.invalid(&raw, "expected IP:PORT, e.g. 0.0.0.0:4443")
                })?;
                if addr.port() == 0 {
                    return Err(ICE_TCP_LISTEN.invalid(&raw, "needs a port (browsers are told it)"));
                }
                Some(addr)
            }
        };

        let min_se = integer(&MIN_SE, cli.min_se, 90, 90, 86_400)? as u32;
        let session_expires = integer(
            &SESSION_EXPIRES,
            cli.session_expires.clone(),
            1800,
            0,
            86_400,
        )? as u32;
        if session_expires != 0 && session_expires < min_se {
            let raw = cli.session_expires.unwrap_or_default();
            return Err(
                SESSION_EXPIRES.invalid(&raw, format!("must be 0 or at least --min-se ({min_se})"))
            );
        }
        let accept_refer = match cli.incoming_refer.as_deref().map(str::trim) {
            None | Some("accept") => true,
            Some("reject") => false,
            Some(other) => return Err(INCOMING_REFER.invalid(other, "expected accept or reject")),
        };

        let tls = match (cli.tls_cert, cli.tls_key) {
            (None, None) => None,
            (Some(c), Some(k)) => {
                for (s, path) in [(&TLS_CERT, &c), (&TLS_KEY, &k)] {
                    if let Err(e) = std::fs::metadata(path) {
                        return Err(s.invalid(path, e.to_string()));
                    }
                }
                Some(TlsFiles {
                    cert: PathBuf::from(c),
                    key: PathBuf::from(k),
                })
            }
            (Some(c), None) => return Err(TLS_KEY.invalid(&c, "--tls-cert needs --tls-key")),
            (None, Some(k)) => return Err(TLS_CERT.invalid(&k, "--tls-key needs --tls-cert")),
        };
        let cors_origins = origin_list(cli.cors_origins);
        let limits = Limits {
            ws_connects_per_minute: integer(
                &WS_CONNECTS,
                cli.ws_connects_per_minute,
                600,
                1,
                1_000_000,
            )? as u32,
            registers_per_minute: integer(&REGISTERS, cli.registers_per_minute, 300, 1, 1_000_000)?
                as u32,
            requests_per_second: integer(&REQUESTS, cli.requests_per_second, 50, 1, 100_000)?
                as u32,
            max_ringing_per_dn: integer(&MAX_RINGING, cli.max_ringing_per_dn, 4, 1, 1000)? as usize,
        };

        let allowed_origins = origin_list(cli.allowed_origins);

        Ok(Config {
            ws_listen,
            api_listen,
            sip_listen,
            sip_upstream: upstream_raw,
            upstream_host,
            upstream_port,
            upstream_transport,
            sip_trusted,
            sip_domain,
            public_ip,
            browser_ips,
            rtp_ports,
            ice_servers,
            turn,
            api_token,
            log,
            grace_period,
            ice_restart_grace,
            register_expires: register_expires as u32,
            register_retry,
            options_interval,
            ws_ping_interval,
            allowed_origins,
            rtp_timeout,
            media_workers,
            ice_tcp_listen,
            session_timer: crate::config::TimerConfig {
                session_expires,
                min_se,
            },
            accept_refer,
            tls,
            cors_origins,
            limits,
        })
    }

    /// The address other SIP parties should use to reach us (Contact, Via).
    pub fn sip_public_addr(&self) -> SocketAddr {
        SocketAddr::new(self.public_ip, self.sip_listen.port())
    }
}

/// Fills every setting still unset with the file's value. Unknown keys are errors: a typo in
/// a production config must not silently fall back to a default.
fn apply_file(cli: &mut Cli, text: &str) -> Result<(), String> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        e.message().to_string()
            + &e.span()
                .map(|s| format!(" (at byte {})", s.start))
                .unwrap_or_default()
    })?;
    for (key, value) in table {
        let Some(setting) = FILE_KEYS.iter().find(|s| s.key == key) else {
            return Err(format!("unknown key {key:?}"));
        };
        let raw = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Array(_) | toml::Value::Table(_) if setting.key == ICE_SERVERS.key => {
                serde_json::to_string(&value).map_err(|e| format!("{key}: {e}"))?
            }
            toml::Value::Array(items)
                if setting.key == ORIGINS.key
                    || setting.key == CORS.key
                    || setting.key == SIP_TRUSTED.key =>
            {
                items
                    .iter()
                    .map(|v| v.as_str().map(str::to_string).ok_or(()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| format!("{key}: expected a list of strings"))?
                    .join(",")
            }
            other => return Err(format!("{key}: unexpected {}", other.type_str())),
        };
        let slot = match setting.key {
            "ws_listen" => &mut cli.ws_listen,
            "api_listen" => &mut cli.api_listen,
            "sip_listen" => &mut cli.sip_listen,
            "sip_upstream" => &mut cli.sip_upstream,
            "sip_trusted" => &mut cli.sip_trusted,
            "sip_domain" => &mut cli.sip_domain,
            "public_ip" => &mut cli.public_ip,
            "rtp_ports" => &mut cli.rtp_ports,
            "ice_servers" => &mut cli.ice_servers,
            "turn_secret" => &mut cli.turn_secret,
            "turn_urls" => &mut cli.turn_urls,
            "turn_ttl" => &mut cli.turn_ttl,
            "ice_restart_grace" => &mut cli.ice_restart_grace,
            "api_token" => &mut cli.api_token,
            "log" => &mut cli.log,
            "grace_period" => &mut cli.grace_period,
            "register_expires" => &mut cli.register_expires,
            "register_retry" => &mut cli.register_retry,
            "options_interval" => &mut cli.options_interval,
            "ws_ping_interval" => &mut cli.ws_ping_interval,
            "rtp_timeout" => &mut cli.rtp_timeout,
            "media_workers" => &mut cli.media_workers,
            "ice_tcp_listen" => &mut cli.ice_tcp_listen,
            "session_expires" => &mut cli.session_expires,
            "min_se" => &mut cli.min_se,
            "incoming_refer" => &mut cli.incoming_refer,
            "tls_cert" => &mut cli.tls_cert,
            "tls_key" => &mut cli.tls_key,
            "cors_origins" => &mut cli.cors_origins,
            "ws_connects_per_minute" => &mut cli.ws_connects_per_minute,
            "registers_per_minute" => &mut cli.registers_per_minute,
            "requests_per_second" => &mut cli.requests_per_second,
            "max_ringing_per_dn" => &mut cli.max_ringing_per_dn,
            _ => &mut cli.allowed_origins,
        };
        if slot.is_none() {
            *slot = Some(raw);
        }
    }
    Ok(())
}

/// A comma-separated list of origins, without trailing slashes.
fn origin_list(raw: Raw) -> Vec<String> {
    raw.map(|s| {
        s.split(',')
            .map(|o| o.trim().trim_end_matches('/').to_string())
            .filter(|o| !o.is_empty())
            .collect()
    })
    .unwrap_or_default()
}

fn socket_addr(s: &Setting, raw: Raw, default: &str) -> Result<SocketAddr, ConfigError> {
    let raw = raw.unwrap_or_else(|| default.to_string());
    raw.parse()
        .map_err(|_| s.invalid(&raw, "expected IP:PORT, e.g. 0.0.0.0:8081"))
}

fn integer(s: &Setting, raw: Raw, default: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
    let Some(raw) = raw else { return Ok(default) };
    let v: u64 = raw
        .trim()
        .parse()
        .map_err(|_| s.invalid(&raw, "expected a whole number"))?;
    if v < min || v > max {
        return Err(s.invalid(&raw, format!("must be between {min} and {max}")));
    }
    Ok(v)
}

fn seconds(
    s: &Setting,
    raw: Raw,
    default: u64,
    min: u64,
    max: u64,
) -> Result<Duration, ConfigError> {
    integer(s, raw, default, min, max).map(Duration::from_secs)
}

fn parse_upstream(raw: &str) -> Result<(String, u16, SipTransport), String> {
    let uri = Uri::try_from(raw).map_err(|e| format!("not a SIP URI ({e})"))?;
    if !matches!(uri.scheme, Some(rsipstack::sip::Scheme::Sip)) {
        return Err("only sip: URIs are supported (sips: needs TLS, not built yet)".into());
    }
    let host = uri.host_with_port.host.to_string();
    let port = uri
        .host_with_port
        .port
        .as_ref()
        .map(|p| p.value())
        .unwrap_or(5060);
    let transport = match uri.transport() {
        None | Some(rsipstack::sip::Transport::Udp) => SipTransport::Udp,
        Some(rsipstack::sip::Transport::Tcp) => SipTransport::Tcp,
        Some(other) => return Err(format!("transport {other} is not supported (udp or tcp)")),
    };
    Ok((host, port, transport))
}

/// `--sip-trusted`: addresses (a /32 or /128) and CIDRs. An empty list is allowed (the upstream
/// alone); a typo is not, or a node meant to be trusted would get 403 on every call.
fn parse_trusted(raw: &str) -> Result<Vec<ipnet::IpNet>, String> {
    raw.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            if let Ok(net) = item.parse::<ipnet::IpNet>() {
                // 10.0.0.1/8 is almost certainly a slip for 10.0.0.0/8 or 10.0.0.1/32.
                if net.addr() != net.network() {
                    return Err(format!(
                        "{item} has host bits set (did you mean {} or {}?)",
                        net.trunc(),
                        net.addr()
                    ));
                }
                return Ok(net);
            }
            item.parse::<IpAddr>()
                .map(|ip| ipnet::IpNet::from(ip.to_canonical()))
                .map_err(|_| format!("{item:?} is not an IP address or CIDR (e.g. 10.0.0.0/24)"))
        })
        .collect()
}

fn parse_port_range(raw: &str) -> Result<(u16, u16), String> {
    let (lo, hi) = raw
        .split_once('-')
        .ok_or("expected LOW-HIGH, e.g. 20000-29999")?;
    let lo: u16 = lo.trim().parse().map_err(|_| "LOW is not a port number")?;
    let hi: u16 = hi.trim().parse().map_err(|_| "HIGH is not a port number")?;
    if lo == 0 || lo > hi {
        return Err("LOW must be at least 1 and not above HIGH".into());
    }
    if hi - lo < 1 {
        return Err("the range must hold at least two ports (RTP and RTCP)".into());
    }
    Ok((lo, hi))
}

/// A TURN server's shared secret (coturn `use-auth-secret`) and what credentials made from it
/// are good for.
#[derive(Clone, Debug)]
pub struct TurnRest {
    /// The shared secret; never logged, never sent.
    pub secret: crate::auth::Secret,
    /// `turn:`/`turns:` URLs the credentials are for.
    pub urls: Vec<String>,
    /// Lifetime of each credential.
    pub ttl: Duration,
}

/// `--turn-secret`, `--turn-urls` and `--turn-ttl`: both of the first two or neither.
fn parse_turn(
    secret: Option<String>,
    urls: Option<String>,
    ttl: Option<String>,
) -> Result<Option<TurnRest>, ConfigError> {
    let ttl = seconds(&TURN_TTL, ttl, 86_400, 60, 30 * 86_400)?;
    let (secret, urls) = match (secret, urls) {
        (None, None) => return Ok(None),
        (Some(s), Some(u)) => (s, u),
        (Some(_), None) => {
            return Err(TURN_URLS.invalid("", "--turn-secret needs the URLs it is for"))
        }
        (None, Some(u)) => {
            return Err(TURN_SECRET.invalid(&u, "--turn-urls needs the server's shared secret"))
        }
    };
    if secret.is_empty() {
        // The value itself is a secret: name the setting only.
        return Err(TURN_SECRET.invalid("", "is empty"));
    }
    let list: Vec<String> = urls
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .collect();
    if list.is_empty() {
        return Err(TURN_URLS.invalid(&urls, "lists no URL"));
    }
    if let Some(bad) = list
        .iter()
        .find(|u| !(u.starts_with("turn:") || u.starts_with("turns:")) || !valid_ice_url(u))
    {
        return Err(TURN_URLS.invalid(bad, "expected turn: or turns: URLs"));
    }
    Ok(Some(TurnRest {
        secret: crate::auth::Secret::new(secret),
        urls: list,
        ttl,
    }))
}

/// Validates the list browsers will hand to `RTCPeerConnection`, so a typo fails at start-up
/// rather than in every agent's browser.
fn parse_ice_servers(raw: &str) -> Result<serde_json::Value, String> {
    let value: serde_json::Value =
        serde_json::from_str(raw).map_err(|e| format!("not JSON: {e}"))?;
    let list = value.as_array().ok_or("expected a JSON list")?;
    for (i, server) in list.iter().enumerate() {
        let urls = server
            .get("urls")
            .ok_or_else(|| format!("entry {i} has no \"urls\""))?;
        let ok = match urls {
            serde_json::Value::String(u) => valid_ice_url(u),
            serde_json::Value::Array(us) => {
                !us.is_empty() && us.iter().all(|u| u.as_str().is_some_and(valid_ice_url))
            }
            _ => false,
        };
        if !ok {
            return Err(format!(
                "entry {i}: \"urls\" must be stun:/turn:/turns: URLs"
            ));
        }
    }
    Ok(value)
}

fn valid_ice_url(u: &str) -> bool {
    ["stun:", "stuns:", "turn:", "turns:"]
        .iter()
        .any(|p| u.starts_with(p) && u.len() > p.len())
}

/// With a wildcard listen address, the address that routes to the upstream is the one a peer
/// can reach us at; connecting a UDP socket only asks the kernel for a route, it sends nothing.
fn default_public_ip(listen: IpAddr, upstream_host: &str, upstream_port: u16) -> IpAddr {
    if !listen.is_unspecified() {
        return listen;
    }
    let routed = (|| {
        let target: IpAddr = upstream_host.parse().ok()?;
        let bind = if target.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        };
        let sock = UdpSocket::bind(bind).ok()?;
        sock.connect((target, upstream_port)).ok()?;
        Some(sock.local_addr().ok()?.ip())
    })();
    routed.unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

/// The host's interface addresses, as the kernel lists them (none if it cannot).
fn host_addresses() -> Vec<IpAddr> {
    match if_addrs::get_if_addrs() {
        Ok(ifs) => ifs.into_iter().map(|i| i.ip()).collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the host's addresses");
            Vec::new()
        }
    }
}

/// The browser candidates without `--public-ip`. A specific listen address is the only one
/// media answers on. With a wildcard one, every address of the host of a family the sockets
/// take: which one a browser reaches is not known here (the demo page opened on 127.0.0.1 in
/// a browser on this host, a browser on the LAN, another on a VPN), browsers check them all,
/// and replies leave from the one each check came to. Loopback comes last (browsers skip it
/// unless told otherwise), the address routing to the upstream first among the rest; IPv6
/// link-local addresses are left out (they need a zone a candidate cannot carry).
fn default_browser_ips(listen: IpAddr, routed: IpAddr, host: Vec<IpAddr>) -> Vec<IpAddr> {
    if !listen.is_unspecified() {
        return vec![listen];
    }
    let usable = |ip: &IpAddr| match ip {
        IpAddr::V4(v4) => !v4.is_unspecified() && !v4.is_link_local(),
        // A `[::]` socket is dual-stack; a `0.0.0.0` one takes IPv4 only.
        IpAddr::V6(v6) => listen.is_ipv6() && !v6.is_unspecified() && !v6.is_unicast_link_local(),
    };
    let mut ips: Vec<IpAddr> = Vec::new();
    for ip in host.into_iter().filter(usable) {
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    ips.sort_by_key(|ip| (ip.is_loopback(), *ip != routed, ip.is_ipv6()));
    if ips.is_empty() {
        ips.push(routed);
    }
    ips
}

/// RFC 4028 session timer settings (`--session-expires`, `--min-se`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerConfig {
    /// The interval we ask for, seconds; 0 = we do not ask for session timers.
    pub session_expires: u32,
    /// The smallest interval we accept, seconds (RFC 4028: at least 90).
    pub min_se: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().expect("ip")).collect()
    }

    #[test]
    fn browser_candidates_without_public_ip() {
        let host = ips(&[
            "127.0.0.1",
            "::1",
            "192.0.2.2",
            "fd00::2",
            "fe80::1",
            "10.0.0.5",
        ]);
        let routed: IpAddr = "10.0.0.5".parse().expect("ip");
        assert_eq!(
            default_browser_ips("0.0.0.0".parse().expect("ip"), routed, host.clone()),
            ips(&["10.0.0.5", "192.0.2.2", "127.0.0.1"]),
            "IPv4 only on a 0.0.0.0 socket; the upstream's route first, loopback last"
        );
        assert_eq!(
            default_browser_ips("::".parse().expect("ip"), routed, host.clone()),
            ips(&["10.0.0.5", "192.0.2.2", "fd00::2", "127.0.0.1", "::1"]),
            "dual-stack: IPv6 too, never link-local"
        );
        assert_eq!(
            default_browser_ips("127.0.0.1".parse().expect("ip"), routed, host),
            ips(&["127.0.0.1"]),
            "a specific listen address is the only one answered on"
        );
        assert_eq!(
            default_browser_ips("0.0.0.0".parse().expect("ip"), routed, Vec::new()),
            ips(&["10.0.0.5"]),
            "nothing listed: the routed address"
        );
    }

    #[test]
    fn public_ip_is_the_one_browser_candidate() {
        let c = resolve(Cli {
            public_ip: Some("198.51.100.7".into()),
            ..Cli::default()
        })
        .expect("valid");
        assert_eq!(c.browser_ips, ips(&["198.51.100.7"]));
        assert_eq!(c.public_ip.to_string(), "198.51.100.7");
    }

    fn resolve(cli: Cli) -> Result<Config, String> {
        Config::from_raw(cli).map_err(|e| e.to_string())
    }

    #[test]
    fn ice_tcp_listen_is_off_by_default_and_checked() {
        assert_eq!(resolve(Cli::default()).expect("valid").ice_tcp_listen, None);
        let c = resolve(Cli {
            ice_tcp_listen: Some("0.0.0.0:4443".into()),
            ..Cli::default()
        })
        .expect("valid");
        assert_eq!(
            c.ice_tcp_listen,
            Some("0.0.0.0:4443".parse().expect("addr"))
        );
        for bad in ["4443", "0.0.0.0:0", "host:4443", ""] {
            let err = resolve(Cli {
                ice_tcp_listen: Some(bad.into()),
                ..Cli::default()
            })
            .expect_err(bad);
            assert!(
                err.contains("--ice-tcp-listen") && err.contains("GATEWAY_ICE_TCP_LISTEN"),
                "{err}"
            );
        }
        let mut cli = Cli::default();
        apply_file(&mut cli, "ice_tcp_listen = \"[::]:443\"\n").expect("known key");
        assert_eq!(
            resolve(cli).expect("valid").ice_tcp_listen,
            Some("[::]:443".parse().expect("addr"))
        );
    }

    #[test]
    fn defaults_follow_the_run_contract() {
        let c = resolve(Cli::default()).expect("defaults are valid");
        assert_eq!(c.ws_listen.to_string(), "0.0.0.0:8081");
        assert_eq!(c.api_listen.to_string(), "0.0.0.0:8082");
        assert_eq!(c.sip_listen.to_string(), "0.0.0.0:5070");
        assert_eq!(c.upstream_host, "127.0.0.1");
        assert_eq!(c.upstream_port, 5060);
        assert_eq!(c.upstream_transport, SipTransport::Udp);
        assert_eq!(c.sip_domain, "127.0.0.1");
        assert_eq!(c.rtp_ports, (20000, 29999));
        assert_eq!(c.ice_servers, serde_json::json!([]));
        assert_eq!(c.public_ip.to_string(), "127.0.0.1");
        assert_eq!(c.grace_period, Duration::from_secs(30));
    }

    #[test]
    fn wrong_values_name_the_setting() {
        let e = resolve(Cli {
            ws_listen: Some("nonsense".into()),
            ..Cli::default()
        })
        .unwrap_err();
        assert!(
            e.contains("--ws-listen") && e.contains("GATEWAY_WS_LISTEN"),
            "{e}"
        );
        let e = resolve(Cli {
            rtp_ports: Some("3000-2000".into()),
            ..Cli::default()
        })
        .unwrap_err();
        assert!(e.contains("--rtp-ports"), "{e}");
        let e = resolve(Cli {
            sip_upstream: Some("http://x".into()),
            ..Cli::default()
        })
        .unwrap_err();
        assert!(e.contains("--sip-upstream"), "{e}");
        let e = resolve(Cli {
            ice_servers: Some(r#"[{"urls":"http://x"}]"#.into()),
            ..Cli::default()
        })
        .unwrap_err();
        assert!(e.contains("--ice-servers"), "{e}");
        let e = resolve(Cli {
            grace_period: Some("-1".into()),
            ..Cli::default()
        })
        .unwrap_err();
        assert!(e.contains("--grace-period"), "{e}");
    }

    #[test]
    fn turn_rest_credentials_need_a_secret_and_turn_urls() {
        let c = resolve(Cli {
            turn_secret: Some("s3cret".into()),
            turn_urls: Some(
                "turn:turn.example.com:3478?transport=tcp, turns:turn.example.com:443".into(),
            ),
            turn_ttl: Some("600".into()),
            ..Cli::default()
        })
        .expect("valid");
        let turn = c.turn.expect("TURN REST settings");
        assert_eq!(turn.urls.len(), 2);
        assert_eq!(turn.ttl, Duration::from_secs(600));
        assert!(resolve(Cli::default()).expect("valid").turn.is_none());
        for (cli, flag) in [
            (
                Cli {
                    turn_secret: Some("s3cret".into()),
                    ..Cli::default()
                },
                "--turn-urls",
            ),
            (
                Cli {
                    turn_urls: Some("turn:x:3478".into()),
                    ..Cli::default()
                },
                "--turn-secret",
            ),
            (
                Cli {
                    turn_secret: Some("s3cret".into()),
                    turn_urls: Some("stun:x:3478".into()),
                    ..Cli::default()
                },
                "--turn-urls",
            ),
            (
                Cli {
                    turn_secret: Some("s3cret".into()),
                    turn_urls: Some("turn:x:3478".into()),
                    turn_ttl: Some("5".into()),
                    ..Cli::default()
                },
                "--turn-ttl",
            ),
        ] {
            let e = resolve(cli).unwrap_err();
            assert!(e.contains(flag), "{e}");
            assert!(!e.contains("s3cret"), "the secret is never echoed: {e}");
        }
    }

    #[test]
    fn the_ice_restart_grace_defaults_to_the_grace_period() {
        let c = resolve(Cli {
            grace_period: Some("45".into()),
            ..Cli::default()
        })
        .expect("valid");
        assert_eq!(c.ice_restart_grace, Duration::from_secs(45));
        let c = resolve(Cli {
            ice_restart_grace: Some("90".into()),
            ..Cli::default()
        })
        .expect("valid");
        assert_eq!(c.ice_restart_grace, Duration::from_secs(90));
    }

    #[test]
    fn tcp_upstream_and_domain() {
        let c = resolve(Cli {
            sip_upstream: Some("sip:10.1.2.3:5080;transport=tcp".into()),
            ..Cli::default()
        })
        .expect("valid");
        assert_eq!(c.upstream_transport, SipTransport::Tcp);
        assert_eq!(c.upstream_port, 5080);
        assert_eq!(c.sip_domain, "10.1.2.3");
    }

    #[test]
    fn file_fills_only_what_flags_left_unset() {
        let mut cli = Cli {
            ws_listen: Some("127.0.0.1:1".into()),
            ..Cli::default()
        };
        apply_file(
            &mut cli,
            "ws_listen = \"127.0.0.1:2\"\napi_listen = \"127.0.0.1:3\"\ngrace_period = 5\n\
             ice_servers = [{ urls = [\"stun:stun.example.org\"] }]\n",
        )
        .expect("valid file");
        let c = resolve(cli).expect("valid");
        assert_eq!(c.ws_listen.port(), 1);
        assert_eq!(c.api_listen.port(), 3);
        assert_eq!(c.grace_period, Duration::from_secs(5));
        assert_eq!(c.ice_servers[0]["urls"][0], "stun:stun.example.org");
    }

    #[test]
    fn unknown_file_keys_are_errors() {
        let mut cli = Cli::default();
        let e = apply_file(&mut cli, "ws_lisen = \"x\"").unwrap_err();
        assert!(e.contains("ws_lisen"), "{e}");
        assert!(apply_file(&mut cli, "not toml [").is_err());
    }

    #[test]
    fn sip_trusted_takes_addresses_and_cidrs() {
        assert!(resolve(Cli::default())
            .expect("valid")
            .sip_trusted
            .is_empty());
        let c = resolve(Cli {
            sip_trusted: Some(" 10.1.0.0/16, 192.0.2.7 ,2001:db8::/32,::ffff:198.51.100.1,".into()),
            ..Cli::default()
        })
        .expect("valid");
        let nets: Vec<String> = c.sip_trusted.iter().map(ToString::to_string).collect();
        assert_eq!(
            nets,
            [
                "10.1.0.0/16",
                "192.0.2.7/32",
                "2001:db8::/32",
                "198.51.100.1/32"
            ]
        );
    }

    #[test]
    fn sip_trusted_rejects_typos_naming_the_setting() {
        for (bad, why) in [
            ("10.0.0.300", "not an IP address"),
            ("kamailio.example", "not an IP address"),
            ("10.0.0.0/33", "not an IP address"),
            ("10.0.0.1/8", "host bits set"),
        ] {
            let err = resolve(Cli {
                sip_trusted: Some(bad.into()),
                ..Cli::default()
            })
            .expect_err(bad);
            assert!(
                err.contains("--sip-trusted")
                    && err.contains("GATEWAY_SIP_TRUSTED")
                    && err.contains(why),
                "{bad}: {err}"
            );
        }
        let mut cli = Cli::default();
        apply_file(&mut cli, "sip_trusted = [\"10.0.0.0/8\", \"fd00::1\"]\n").expect("known key");
        assert_eq!(resolve(cli).expect("valid").sip_trusted.len(), 2);
    }
}
