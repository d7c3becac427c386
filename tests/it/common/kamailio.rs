//! Throwaway Kamailio 5.6 registrar/proxy for integration tests (std only).
//!
//! Each [`Kamailio`] runs its own `kamailio` process in the foreground
//! (`-DD -E`) on a free loopback port (UDP and TCP, same number), with its own
//! temp dir holding the db_text tables, the binrpc ctl socket and the log.
//! The config is `fixtures/kamailio/kamailio.cfg`; every per-instance value
//! is passed with `-l` / `-Y` / `-A NAME=VALUE` (see the header of that file).
//!
//! Users (realm/domain 127.0.0.1): see [`USERS`].
//!
//! Environment overrides: `KAMAILIO_BIN`, `KAMCMD_BIN`, `KAMAILIO_MODULES`
//! (passed as `-L`), `KAMAILIO_KEEP=1` (keep the temp dir after drop).
#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Directory holding kamailio.cfg, subscriber and version.
pub const FIXTURE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/kamailio");

/// Subscribers provisioned in `fixtures/kamailio/subscriber` (user, password).
pub const USERS: &[(&str, &str)] = &[
    ("5001", "pass5001"),
    ("5002", "pass5002"),
    ("1003", "pass1003"),
    ("1004", "pass1004"),
];

/// Digest realm / SIP domain of the subscribers.
pub const REALM: &str = "127.0.0.1";

const START_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const KAMCMD_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct KamailioOptions {
    /// registrar `max_expires` (also used as `default_expires`).
    pub max_expires: u32,
    /// `"MD5"` or `"SHA-256"`: put into the challenge as `algorithm=...`.
    /// `""` leaves the auth module default: MD5 with no `algorithm=` param.
    pub algorithm: &'static str,
    /// Challenge with `qop="auth"` (true, default) or without qop (false).
    pub qop: bool,
    /// Require proxy auth (407) for initial non-REGISTER requests whose
    /// From user is a provisioned subscriber. Default false: anything from
    /// loopback is relayed without auth.
    pub invite_auth: bool,
}

impl Default for KamailioOptions {
    fn default() -> Self {
        KamailioOptions {
            max_expires: 3600,
            algorithm: "MD5",
            qop: true,
            invite_auth: false,
        }
    }
}

/// One contact from `ul.dump`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UlContact {
    /// AoR as usrloc stores it (use_domain=0: just the user, e.g. "5001").
    pub aor: String,
    /// The `Address:` line: the Contact URI as registered.
    pub address: String,
    /// The `Expires:` line: seconds left, or "permanent" / "expired" / "deleted".
    pub expires: String,
    /// The `Received:` line (source address when NAT/TCP handling kicked in),
    /// None when "[not set]".
    pub received: Option<String>,
}

pub struct Kamailio {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    opts: KamailioOptions,
}

impl Kamailio {
    /// Whether a kamailio binary is available (for tests that want to skip).
    pub fn available() -> bool {
        Command::new(kamailio_bin())
            .arg("-v")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Start a fresh instance on a free port; panics (with the log) on failure.
    pub fn start(opts: KamailioOptions) -> Kamailio {
        let dir = make_temp_dir();
        let db = dir.join("db");
        fs::create_dir_all(&db).expect("create db dir");
        for table in ["subscriber", "version"] {
            fs::copy(Path::new(FIXTURE_DIR).join(table), db.join(table))
                .unwrap_or_else(|e| panic!("copy fixture table {table} from {FIXTURE_DIR}: {e}"));
        }
        let mut last_err = String::new();
        for _attempt in 0..5 {
            let port = pick_port();
            match launch(&dir, port, &opts) {
                Ok(child) => {
                    return Kamailio {
                        child: Some(child),
                        port,
                        dir,
                        opts,
                    }
                }
                Err(e) => {
                    // Only a lost race for the port is worth another try.
                    let retry = e.contains("in use");
                    last_err = e;
                    if !retry {
                        break;
                    }
                }
            }
        }
        let _ = fs::remove_dir_all(&dir);
        panic!("failed to start kamailio: {last_err}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// "sip:127.0.0.1:PORT"
    pub fn uri(&self) -> String {
        format!("sip:127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn ctl_socket(&self) -> PathBuf {
        self.dir.join("ctl.sock")
    }

    pub fn options(&self) -> &KamailioOptions {
        &self.opts
    }

    /// PID of the main kamailio process, None when stopped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Whole kamailio log (stderr+stdout, all runs of this instance).
    pub fn log(&self) -> String {
        read_lossy(&self.dir.join("kamailio.log"))
    }

    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log(), lines)
    }

    /// Run `kamcmd -s unix:DIR/ctl.sock ARGS...`; Err on failure/timeout.
    pub fn kamcmd(&self, args: &[&str]) -> Result<String, String> {
        kamcmd(&self.dir, args)
    }

    /// Raw `kamcmd ul.dump` output. Panics if kamailio does not answer.
    pub fn ul_dump(&self) -> String {
        self.kamcmd(&["ul.dump"]).unwrap_or_else(|e| {
            panic!(
                "kamcmd ul.dump failed: {e}\n--- kamailio log tail ---\n{}",
                self.log_tail(40)
            )
        })
    }

    /// All contacts in usrloc (including not yet purged expired ones).
    pub fn ul_contacts(&self) -> Vec<UlContact> {
        parse_ul_dump(&self.ul_dump())
    }

    /// Contact URIs currently registered (not expired) for AoR `user`.
    /// `user` may be "5001", "5001@127.0.0.1" or "sip:5001@127.0.0.1".
    pub fn contacts(&self, user: &str) -> Vec<String> {
        let want = aor_user(user);
        self.ul_contacts()
            .into_iter()
            .filter(|c| c.aor == want && c.expires != "expired" && c.expires != "deleted")
            .map(|c| c.address)
            .collect()
    }

    /// Poll `contacts(user)` every 200 ms until it is non-empty
    /// (`want_present`) or empty (`!want_present`); false on timeout.
    pub fn wait_for_contacts(&self, user: &str, want_present: bool, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.contacts(user).is_empty() != want_present {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// Send an OPTIONS (UDP) and report whether a 200 came back in time.
    pub fn ping(&self, timeout: Duration) -> bool {
        options_ping(self.port, timeout)
    }

    /// SIGTERM, wait for exit (SIGKILL the whole tree after 10 s).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id();
            let kids = child_pids(pid);
            if matches!(child.try_wait(), Ok(None)) {
                signal(&[pid], "TERM");
                let deadline = Instant::now() + STOP_TIMEOUT;
                while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                    thread::sleep(Duration::from_millis(20));
                }
            }
            if matches!(child.try_wait(), Ok(None)) {
                let mut all = vec![pid];
                all.extend(child_pids(pid));
                signal(&all, "KILL");
                let _ = child.wait();
            }
            // Workers normally exit before the main process; make sure.
            let left: Vec<u32> = kids.into_iter().filter(|p| is_alive(*p)).collect();
            if !left.is_empty() {
                signal(&left, "KILL");
            }
        }
        remove_stale(&self.dir);
    }

    /// Start again on the same port and dir with the same options
    /// (usrloc is memory only, so it starts empty).
    pub fn restart(&mut self) {
        let opts = self.opts.clone();
        self.restart_with(opts);
    }

    /// Like `restart` but with different options (same port and dir).
    pub fn restart_with(&mut self, opts: KamailioOptions) {
        self.stop();
        self.opts = opts;
        match launch(&self.dir, self.port, &self.opts) {
            Ok(child) => self.child = Some(child),
            Err(e) => panic!("failed to restart kamailio on port {}: {e}", self.port),
        }
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        if thread::panicking() && self.child.is_some() {
            eprintln!(
                "--- kamailio on port {} (dir {}) log tail ---\n{}",
                self.port,
                self.dir.display(),
                self.log_tail(40)
            );
        }
        // SIGTERM is quick (tens of ms) and lets kamailio reap its workers;
        // stop() falls back to SIGKILL of the whole tree if it hangs.
        self.stop();
        if std::env::var_os("KAMAILIO_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Parse `kamcmd ul.dump` text output. The relevant shape (5.6) is:
///
/// ```text
/// {
///     Domains: {
///         Domain: {
///             Domain: location
///             Size: 1024
///             AoRs: {
///                 Info: {
///                     AoR: 5001
///                     HashID: 866010645
///                     Contacts: {
///                         Contact: {
///                             Address: sip:5001@127.0.0.1:35070;transport=UDP
///                             Expires: 10
///                             ...
///                             Received: [not set]
///                             ...
///                         }
///                     }
///                 }
///             }
///             Stats: { ... }
/// ```
pub fn parse_ul_dump(dump: &str) -> Vec<UlContact> {
    let mut out: Vec<UlContact> = Vec::new();
    let mut aor: Option<String> = None;
    let mut in_contact = false;
    for line in dump.lines() {
        let line = line.trim();
        if let Some(v) = line.strip_prefix("AoR:") {
            aor = Some(v.trim().to_string());
            in_contact = false;
        } else if let Some(v) = line.strip_prefix("Address:") {
            if let Some(a) = &aor {
                out.push(UlContact {
                    aor: a.clone(),
                    address: v.trim().to_string(),
                    expires: String::new(),
                    received: None,
                });
                in_contact = true;
            }
        } else if in_contact {
            if let Some(v) = line.strip_prefix("Expires:") {
                if let Some(c) = out.last_mut() {
                    c.expires = v.trim().to_string();
                }
            } else if let Some(v) = line.strip_prefix("Received:") {
                let v = v.trim();
                if let Some(c) = out.last_mut() {
                    c.received = if v == "[not set]" {
                        None
                    } else {
                        Some(v.to_string())
                    };
                }
            } else if line == "}" {
                in_contact = false;
            }
        }
    }
    out
}

fn aor_user(user: &str) -> &str {
    let u = user.trim();
    let u = u
        .strip_prefix("sips:")
        .or_else(|| u.strip_prefix("sip:"))
        .unwrap_or(u);
    u.split('@').next().unwrap_or(u)
}

// ---------------------------------------------------------------------------

fn kamailio_bin() -> String {
    bin_path("KAMAILIO_BIN", "/usr/sbin/kamailio", "kamailio")
}

fn kamcmd_bin() -> String {
    bin_path("KAMCMD_BIN", "/usr/sbin/kamcmd", "kamcmd")
}

fn bin_path(var: &str, default: &str, fallback: &str) -> String {
    if let Ok(v) = std::env::var(var) {
        if !v.is_empty() {
            return v;
        }
    }
    if Path::new(default).exists() {
        default.to_string()
    } else {
        fallback.to_string()
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    nanos ^ ((std::process::id() as u64) << 32) ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

fn make_temp_dir() -> PathBuf {
    let mut base = std::env::temp_dir();
    // unix socket paths are limited to ~108 bytes
    if base.as_os_str().len() > 60 {
        base = PathBuf::from("/tmp");
    }
    for _ in 0..100 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let d = base.join(format!(
            "kam-{}-{}-{:x}",
            std::process::id(),
            n,
            seed() & 0xffff
        ));
        match fs::create_dir(&d) {
            Ok(()) => return d,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("create temp dir {}: {e}", d.display()),
        }
    }
    panic!("could not create a temp dir under {}", base.display());
}

/// A port free for both UDP and TCP on 127.0.0.1. Drawn at random below the
/// kernel's ephemeral range, so that nobody else's bind(0)/connect() can be
/// handed the same port between our probe and kamailio's bind (and during
/// restart()). Falls back to bind(0) if the range is unusual.
/// A loopback port free for both UDP and TCP, outside the ephemeral range.
pub fn pick_port() -> u16 {
    let eph_low = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<u32>().ok())
        })
        .unwrap_or(32768);
    let (lo, hi) = (10000u32, eph_low.min(65536));
    let mut x = seed() | 1;
    if hi > lo + 1000 {
        for _ in 0..200 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let p = (lo + (x % (hi - lo) as u64) as u32) as u16;
            if port_free(p) {
                return p;
            }
        }
    }
    for _ in 0..200 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind udp 127.0.0.1:0");
        let p = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
    panic!("no free port for UDP+TCP on 127.0.0.1");
}

fn port_free(p: u16) -> bool {
    let udp = UdpSocket::bind(("127.0.0.1", p));
    let tcp = TcpListener::bind(("127.0.0.1", p));
    udp.is_ok() && tcp.is_ok()
}

fn remove_stale(dir: &Path) {
    let _ = fs::remove_file(dir.join("ctl.sock"));
    let _ = fs::remove_file(dir.join("kamailio.pid"));
}

/// Spawn kamailio in `dir` on `port` and wait until it answers.
fn launch(dir: &Path, port: u16, opts: &KamailioOptions) -> Result<Child, String> {
    remove_stale(dir);
    let log_path = dir.join("kamailio.log");
    let mut log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("open {}: {e}", log_path.display()))?;
    let _ = writeln!(
        log,
        "===== harness: starting kamailio on 127.0.0.1:{port} ({opts:?}) ====="
    );
    let log_err = log.try_clone().map_err(|e| e.to_string())?;

    let cfg = Path::new(FIXTURE_DIR).join("kamailio.cfg");
    let mut cmd = Command::new(kamailio_bin());
    cmd.arg("-DD")
        .arg("-E")
        .arg("-f")
        .arg(&cfg)
        .arg("-Y")
        .arg(dir)
        .args(["-m", "32", "-M", "8"])
        .arg("-l")
        .arg(format!("udp:127.0.0.1:{port}"))
        .arg("-l")
        .arg(format!("tcp:127.0.0.1:{port}"))
        .arg("-A")
        .arg(format!("DBURL=\"text://{}\"", dir.join("db").display()))
        .arg("-A")
        .arg(format!(
            "CTL_SOCKET=\"unix:{}\"",
            dir.join("ctl.sock").display()
        ))
        .arg("-A")
        .arg(format!("MAX_EXPIRES={}", opts.max_expires));
    if !opts.algorithm.is_empty() {
        cmd.arg("-A")
            .arg(format!("AUTH_ALGORITHM=\"{}\"", opts.algorithm));
    }
    cmd.arg("-A")
        .arg(format!("AUTH_FLAGS=\"{}\"", if opts.qop { 1 } else { 0 }));
    if opts.invite_auth {
        cmd.arg("-A").arg("WITH_INVITE_AUTH");
    }
    if let Ok(m) = std::env::var("KAMAILIO_MODULES") {
        if !m.is_empty() {
            cmd.arg("-L").arg(m);
        }
    }
    cmd.current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err));

    let mut child = cmd
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", kamailio_bin()))?;
    let deadline = Instant::now() + START_TIMEOUT;
    let mut why: String;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            thread::sleep(Duration::from_millis(50)); // let the log settle
            return Err(format!(
                "kamailio exited during startup ({status})\n--- kamailio log tail ---\n{}",
                tail(&read_lossy(&log_path), 40)
            ));
        }
        if dir.join("ctl.sock").exists() {
            match kamcmd(dir, &["core.uptime"]) {
                Ok(_) => {
                    if !options_ping(port, Duration::from_millis(300)) {
                        why = "no 200 to OPTIONS over UDP".into();
                    } else if TcpStream::connect_timeout(
                        &SocketAddr::from(([127, 0, 0, 1], port)),
                        Duration::from_millis(300),
                    )
                    .is_err()
                    {
                        why = "TCP connect failed".into();
                    } else {
                        return Ok(child);
                    }
                }
                Err(e) => why = format!("kamcmd core.uptime: {e}"),
            }
        } else {
            why = "no ctl socket yet".into();
        }
        if Instant::now() >= deadline {
            let pid = child.id();
            let mut all = child_pids(pid);
            all.push(pid);
            signal(&all, "KILL");
            let _ = child.wait();
            return Err(format!(
                "kamailio not ready after {:?} ({why})\n--- kamailio log tail ---\n{}",
                START_TIMEOUT,
                tail(&read_lossy(&log_path), 40)
            ));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn kamcmd(dir: &Path, args: &[&str]) -> Result<String, String> {
    let sock = format!("unix:{}", dir.join("ctl.sock").display());
    let mut cmd = Command::new(kamcmd_bin());
    cmd.arg("-s").arg(&sock).args(args);
    let out = run_with_timeout(cmd, KAMCMD_TIMEOUT)?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // kamcmd exits 0 even for RPC faults ("error: 500 - ...") in some versions
    if !out.status.success() || stdout.starts_with("error:") {
        return Err(format!(
            "kamcmd {args:?} ({}): {stdout}{stderr}",
            out.status
        ));
    }
    Ok(stdout)
}

fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Result<Output, String> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {cmd:?}: {e}"))?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(e)) => Err(format!("{cmd:?}: {e}")),
        Err(_) => {
            signal(&[pid], "KILL");
            Err(format!("{cmd:?} timed out after {timeout:?}"))
        }
    }
}

/// OPTIONS sip:127.0.0.1:PORT over UDP; true on a 200 within `timeout`.
fn options_ping(port: u16, timeout: Duration) -> bool {
    let Ok(sock) = UdpSocket::bind("127.0.0.1:0") else {
        return false;
    };
    let Ok(local) = sock.local_addr() else {
        return false;
    };
    let tag = seed();
    let msg = format!(
        "OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:{lp};branch=z9hG4bK-harness-{tag:x};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:harness@127.0.0.1>;tag={tag:x}\r\n\
         To: <sip:127.0.0.1:{port}>\r\n\
         Call-ID: harness-ping-{tag:x}@127.0.0.1\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n",
        lp = local.port()
    );
    if sock.send_to(msg.as_bytes(), ("127.0.0.1", port)).is_err() {
        return false;
    }
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || sock.set_read_timeout(Some(left)).is_err() {
            return false;
        }
        match sock.recv(&mut buf) {
            Ok(n) => {
                let txt = String::from_utf8_lossy(&buf[..n]);
                if txt.starts_with("SIP/2.0 200") && txt.contains(&format!("harness-ping-{tag:x}"))
                {
                    return true;
                }
            }
            Err(_) => return false,
        }
    }
}

/// Direct children of `pid` (kamailio's workers), via /proc.
fn child_pids(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ..." ; comm may contain spaces/parens
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let _state = f.next();
        if f.next().and_then(|v| v.parse::<u32>().ok()) == Some(pid) {
            out.push(p);
        }
    }
    out
}

fn is_alive(pid: u32) -> bool {
    // zombies still have /proc entries; treat state Z as dead
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rfind(')')
            .map(|i| !s[i + 1..].trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

fn signal(pids: &[u32], sig: &str) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .args(pids.iter().map(|p| p.to_string()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn read_lossy(p: &Path) -> String {
    fs::read(p)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}
