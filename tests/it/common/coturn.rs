//! coturn (Debian `coturn`) as the TURN server of agents behind strict NAT: started by the
//! test in `use-auth-secret` mode (TURN REST API credentials) with a config under a temp
//! dir, in whatever network namespace the calling thread is in, and stopped on drop.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running turnserver.
pub struct Coturn {
    child: Child,
    dir: PathBuf,
}

impl Coturn {
    /// turnserver listening on `ip:port` (UDP and TCP), relaying from `ip`, checking
    /// credentials made from `secret`. Loopback peers are allowed: the tests' gateways live
    /// there.
    pub fn start(ip: &str, port: u16, secret: &str) -> Coturn {
        let dir = std::env::temp_dir().join(format!("coturn-{}-{port}", std::process::id()));
        fs::create_dir_all(&dir).expect("coturn dir");
        let conf = dir.join("turnserver.conf");
        fs::write(
            &conf,
            format!(
                "listening-ip={ip}\nrelay-ip={ip}\nlistening-port={port}\n\
                 use-auth-secret\nstatic-auth-secret={secret}\nrealm=gateway.test\n\
                 no-tls\nno-dtls\nno-cli\nallow-loopback-peers\nno-software-attribute\n\
                 verbose\nlog-file={}\nsimple-log\npidfile={}\n",
                dir.join("turn.log").display(),
                dir.join("turn.pid").display()
            ),
        )
        .expect("write turnserver.conf");
        let child = Command::new("turnserver")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("turnserver (Debian package coturn)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect((ip, port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "coturn did not listen on {ip}:{port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Coturn { child, dir }
    }

    /// What coturn logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("turn.log")).unwrap_or_default()
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}
