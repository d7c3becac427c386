//! Debian's headless Chromium, started by the test with a fresh profile and fake media
//! devices, driven over CDP by playwright-core (`tests/browser/drive.mjs`).

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::kamailio::pick_port;

const DRIVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/drive.mjs");

/// One Chromium and its driver.
pub struct Browser {
    chromium: Child,
    driver: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    dir: PathBuf,
}

/// A mono 16-bit 48 kHz WAV of a sine tone, for `--use-file-for-fake-audio-capture`.
pub fn tone_wav(path: &Path, freq: f64, seconds: u32) {
    let rate = 48_000u32;
    let samples: Vec<i16> = (0..rate * seconds)
        .map(|i| {
            ((2.0 * std::f64::consts::PI * freq * f64::from(i) / f64::from(rate)).sin() * 12_000.0)
                as i16
        })
        .collect();
    let data_len = (samples.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + data_len as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    fs::write(path, out).expect("write wav");
}

impl Browser {
    /// Starts Chromium whose fake microphone plays a `mic_tone` Hz sine.
    pub fn start(mic_tone: f64) -> Browser {
        Browser::start_with(mic_tone, &[])
    }

    /// Chromium (microphone playing 440 Hz) on the host `ns`, allowed its microphone on the
    /// plain-http `page` of another host (production serves https; a non-local http origin
    /// is no secure context).
    pub fn start_on(ns: &super::netns::Netns, page: &str) -> Browser {
        let secure = format!("--unsafely-treat-insecure-origin-as-secure={page}");
        ns.run(move || Browser::start_with(440.0, &[&secure]))
    }

    /// Like [`Browser::start`], with more Chromium flags.
    pub fn start_with(mic_tone: f64, flags: &[&str]) -> Browser {
        let dir =
            std::env::temp_dir().join(format!("chromium-{}-{}", std::process::id(), pick_port()));
        fs::create_dir_all(dir.join("profile")).expect("profile dir");
        let wav = dir.join("tone.wav");
        tone_wav(&wav, mic_tone, 30);
        let port = pick_port();
        let chromium = Command::new("chromium")
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-default-apps",
                "--use-fake-device-for-media-stream",
                "--use-fake-ui-for-media-stream",
                "--allow-loopback-in-peer-connection",
                "--autoplay-policy=no-user-gesture-required",
                "--window-size=1280,900",
            ])
            .arg(format!(
                "--use-file-for-fake-audio-capture={}",
                wav.display()
            ))
            .arg(format!("--user-data-dir={}", dir.join("profile").display()))
            .arg(format!("--remote-debugging-port={port}"))
            .args(flags)
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium (Debian package `chromium`)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "Chromium's debugging port did not open"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut driver = Command::new("node")
            .arg(DRIVER)
            .arg(format!("http://127.0.0.1:{port}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node");
        let stdin = driver.stdin.take().expect("driver stdin");
        let stdout = BufReader::new(driver.stdout.take().expect("driver stdout"));
        Browser {
            chromium,
            driver,
            stdin,
            stdout,
            dir,
        }
    }

    /// Runs one driver command; `Err` carries the driver's error text.
    pub fn cmd(&mut self, command: Value) -> Result<Value, String> {
        writeln!(self.stdin, "{command}").map_err(|e| e.to_string())?;
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        let answer: Value = serde_json::from_str(&line).map_err(|e| format!("{e}: {line:?}"))?;
        if answer["ok"] == true {
            Ok(answer["value"].clone())
        } else {
            Err(answer["error"]
                .as_str()
                .unwrap_or("driver failed")
                .to_string())
        }
    }

    /// Like [`Browser::cmd`], panicking with the command on failure.
    pub fn must(&mut self, command: Value) -> Value {
        let shown = command.to_string();
        self.cmd(command)
            .unwrap_or_else(|e| panic!("browser command {shown} failed: {e}"))
    }

    /// Opens `url`.
    pub fn goto(&mut self, url: &str) {
        self.must(json!({"op": "goto", "url": url}));
    }

    /// Types into a field (replacing its content).
    pub fn fill(&mut self, sel: &str, value: &str) {
        self.must(json!({"op": "fill", "sel": sel, "value": value}));
    }

    /// Clicks an element.
    pub fn click(&mut self, sel: &str) {
        self.must(json!({"op": "click", "sel": sel}));
    }

    /// Waits for an element's trimmed text.
    pub fn wait_text(&mut self, sel: &str, text: &str, timeout: Duration) {
        self.must(json!({"op": "waitText", "sel": sel, "text": text, "timeout": timeout.as_millis() as u64}));
    }

    /// Waits for an element to be visible.
    pub fn wait_visible(&mut self, sel: &str, timeout: Duration) {
        self.must(json!({"op": "waitVisible", "sel": sel, "timeout": timeout.as_millis() as u64}));
    }

    /// Waits for an element to leave the page.
    pub fn wait_gone(&mut self, sel: &str, timeout: Duration) {
        self.must(json!({"op": "waitGone", "sel": sel, "timeout": timeout.as_millis() as u64}));
    }

    /// Evaluates JavaScript in the page (a promise is awaited).
    pub fn eval(&mut self, js: &str) -> Value {
        self.must(json!({"op": "eval", "js": js}))
    }

    /// Saves a full-page screenshot.
    pub fn screenshot(&mut self, path: &Path) {
        self.must(json!({"op": "screenshot", "path": path.display().to_string()}));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"op": "close"}));
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = self.chromium.kill();
        let _ = self.chromium.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The dominant frequency the page measures in the remote audio.
pub fn remote_frequency(b: &mut Browser) -> f64 {
    b.eval("window.gatewayDemo.remoteFrequency(1500)")
        .as_f64()
        .expect("a frequency")
}
