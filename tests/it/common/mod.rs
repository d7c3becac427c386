//! Test harnesses: real Kamailio, the real gateway binary, a protocol-v1 WebSocket client.
#![allow(dead_code)]

pub mod browser;
pub mod client;
pub mod coturn;
pub mod far_end;
pub mod gateway;
pub mod kamailio;
pub mod netns;
pub mod peer;
pub mod scenes;
pub mod sipp;
pub mod two_homes;

/// Waits up to `timeout` for `child` to exit.
pub fn wait_child(
    child: &mut std::process::Child,
    timeout: std::time::Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
