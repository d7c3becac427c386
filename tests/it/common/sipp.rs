//! Runs SIPp (Debian `sip-tester`) as a far-end phone on loopback.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use super::kamailio::pick_port;

/// Scenario directory.
pub const SCENARIOS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/sipp");

/// A running SIPp.
pub struct Sipp {
    child: Child,
    /// Its SIP port.
    pub port: u16,
    /// Its RTP port.
    pub media_port: u16,
    dir: PathBuf,
}

/// Registers `user` (password `pass`) at `registrar` from `port`, so calls to `user` reach a
/// SIPp later started on the same port. Returns whether the registration succeeded.
pub fn register(registrar_port: u16, port: u16, user: &str, pass: &str) -> bool {
    let status = Command::new("sipp")
        .args(["-sf", &format!("{SCENARIOS}/register.xml")])
        .args(["-s", user, "-au", user, "-ap", pass])
        .args(["-i", "127.0.0.1", "-p", &port.to_string()])
        .args(["-m", "1", "-t", "u1", "-nostdin", "-timeout", "10s"])
        .arg(format!("127.0.0.1:{registrar_port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    matches!(status, Ok(s) if s.success())
}

impl Sipp {
    /// Starts SIPp with `scenario` on a free port (or `port`) and `extra` arguments.
    pub fn start(scenario: &str, port: Option<u16>, extra: &[&str]) -> Sipp {
        Self::start_with_files(scenario, port, extra, &[])
    }

    /// Like [`Sipp::start`], with `files` written into SIPp's working directory first.
    pub fn start_with_files(
        scenario: &str,
        port: Option<u16>,
        extra: &[&str],
        files: &[(&str, &[u8])],
    ) -> Sipp {
        let port = port.unwrap_or_else(pick_port);
        let media_port = loop {
            let p = pick_port() & !1;
            if p != port && p != port + 1 {
                break p;
            }
        };
        let dir = std::env::temp_dir().join(format!("sipp-{}-{port}", std::process::id()));
        fs::create_dir_all(&dir).expect("sipp dir");
        for (name, data) in files {
            fs::write(dir.join(name), data).expect("sipp file");
        }
        let child = Command::new("sipp")
            .current_dir(&dir)
            .args(["-sf", &format!("{SCENARIOS}/{scenario}")])
            .args(["-i", "127.0.0.1", "-p", &port.to_string()])
            .args(["-mi", "127.0.0.1", "-mp", &media_port.to_string()])
            .args([
                "-m",
                "1",
                "-t",
                "u1",
                "-nostdin",
                "-trace_err",
                "-trace_msg",
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sipp");
        Sipp {
            child,
            port,
            media_port,
            dir,
        }
    }

    /// Waits up to `timeout` for SIPp to finish.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        super::wait_child(&mut self.child, timeout)
    }

    /// Every message SIPp sent and received so far (its `-trace_msg` log).
    pub fn messages(&self) -> String {
        let mut out = String::new();
        if let Ok(entries) = fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().ends_with("_messages.log") {
                    out.push_str(&fs::read_to_string(e.path()).unwrap_or_default());
                }
            }
        }
        out
    }

    /// SIPp's message and error traces, for failure messages.
    pub fn traces(&self) -> String {
        let mut out = String::new();
        if let Ok(entries) = fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                if let Ok(t) = fs::read_to_string(e.path()) {
                    out.push_str(&format!("--- {}\n", e.path().display()));
                    let tail: Vec<&str> = t.lines().rev().take(80).collect();
                    for l in tail.iter().rev() {
                        out.push_str(l);
                        out.push('\n');
                    }
                }
            }
        }
        out
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("{}", self.traces());
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
