//! Runs the real `gateway` binary on free loopback ports.

use std::fs;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::kamailio::pick_port;

/// A running gateway process. Dropping it kills the process.
pub struct Gateway {
    child: Child,
    /// WebSocket port.
    pub ws_port: u16,
    /// REST port.
    pub api_port: u16,
    /// SIP port (UDP and TCP).
    pub sip_port: u16,
    log: PathBuf,
}

/// Settings tests want short so they finish quickly; each can be overridden by `extra`.
const FAST: &[&str] = &[
    "--grace-period",
    "2",
    "--options-interval",
    "1",
    "--register-retry",
    "2",
    "--ws-ping-interval",
    "5",
];

impl Gateway {
    /// Starts the gateway against `upstream` with the fast defaults plus `extra` flags.
    pub fn start(upstream: &str, extra: &[&str]) -> Gateway {
        let ws_port = pick_port();
        let api_port = pick_port();
        let mut sip_port = pick_port();
        while sip_port == ws_port || sip_port == api_port {
            sip_port = pick_port();
        }
        let log = std::env::temp_dir().join(format!(
            "gateway-test-{}-{sip_port}.log",
            std::process::id()
        ));
        let log_file = fs::File::create(&log).expect("create gateway log");
        let ws = format!("127.0.0.1:{ws_port}");
        let api = format!("127.0.0.1:{api_port}");
        let sip = format!("127.0.0.1:{sip_port}");
        let base: [&str; 8] = [
            "--ws-listen",
            &ws,
            "--api-listen",
            &api,
            "--sip-listen",
            &sip,
            "--sip-upstream",
            upstream,
        ];
        // `extra` may set any of these itself (e.g. a wildcard listen address, same port).
        let mut args: Vec<String> = Vec::new();
        for pair in base.chunks(2).chain(FAST.chunks(2)) {
            if !extra.contains(&pair[0]) {
                args.extend(pair.iter().map(|s| s.to_string()));
            }
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = Command::new(env!("CARGO_BIN_EXE_gateway"))
            .args(&args)
            .env(
                "RUST_LOG",
                std::env::var("GATEWAY_TEST_LOG").unwrap_or_else(|_| "info,gateway=debug".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file))
            .spawn()
            .expect("spawn gateway");
        let mut gw = Gateway {
            child,
            ws_port,
            api_port,
            sip_port,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        // The API answers a moment before the "gateway ready" line is written; tests read the
        // log right after start, so both must be there.
        while TcpStream::connect(("127.0.0.1", api_port)).is_err()
            || !gw.log().contains("gateway ready")
        {
            if let Ok(Some(status)) = gw.child.try_wait() {
                panic!("gateway exited at start ({status}):\n{}", gw.log());
            }
            assert!(
                Instant::now() < deadline,
                "gateway did not start:\n{}",
                gw.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        gw
    }

    /// `ws://127.0.0.1:PORT/`.
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/", self.ws_port)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    /// GET a REST path; returns status and JSON body.
    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        self.get_with(path, None).await
    }

    /// GET with an optional bearer token.
    pub async fn get_with(&self, path: &str, token: Option<&str>) -> (u16, serde_json::Value) {
        let mut req = reqwest::Client::new().get(format!("{}{path}", self.api_url()));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("REST request");
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        assert!(
            ct.starts_with("application/json"),
            "{path}: content-type {ct:?}"
        );
        (status, resp.json().await.expect("JSON body"))
    }

    /// POST a REST path without a body; returns the status.
    pub async fn post(&self, path: &str) -> u16 {
        reqwest::Client::new()
            .post(format!("{}{path}", self.api_url()))
            .send()
            .await
            .expect("REST request")
            .status()
            .as_u16()
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        super::wait_child(&mut self.child, timeout)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The process's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(400).collect();
            eprintln!("--- gateway log tail ---");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        let _ = fs::remove_file(&self.log);
    }
}
