//! Network namespaces a test builds with `ip` (root only): hosts with the interfaces and routes
//! users have, on this machine, with no traffic leaving it. A thread enters a namespace with
//! `setns(2)`; the sockets it opens and the processes it spawns live there.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;

/// Runs `ip ARGS`, panicking with its error output on failure.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("ip (Debian package iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `ip -n NAME -batch -` with `commands`, one per line, in one process: changes that
/// must land together (a link and its route) with no gap a watcher could see.
pub fn ip_batch(name: &str, commands: &str) {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["-n", name, "-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("ip (Debian package iproute2)");
    child
        .stdin
        .take()
        .expect("ip stdin")
        .write_all(commands.as_bytes())
        .expect("write commands");
    let out = child.wait_with_output().expect("ip");
    assert!(
        out.status.success(),
        "ip -batch in {name}: {}\n{commands}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether namespaces can be made here (root, `ip netns`).
pub fn available() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    root && Command::new("ip")
        .args(["netns", "list"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A named network namespace, deleted on drop.
pub struct Netns {
    /// Its name under /run/netns.
    pub name: String,
}

impl Netns {
    /// Makes `name` with its loopback up and reverse-path filtering off (the hosts under test
    /// route asymmetrically on purpose).
    pub fn new(name: &str) -> Netns {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        ip(&["netns", "add", name]);
        let ns = Netns {
            name: name.to_string(),
        };
        ns.ip(&["link", "set", "lo", "up"]);
        for key in ["all", "default"] {
            ns.sysctl(&format!("net.ipv4.conf.{key}.rp_filter"), "0");
        }
        ns
    }

    /// A new namespace named `PREFIX<pid>-<n>`, unique in this test run; panics with a clear
    /// message where namespaces cannot be made (not root).
    pub fn fresh(prefix: &str) -> Netns {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        assert!(
            available(),
            "this test builds network namespaces: run it as root (CI does)"
        );
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Netns::new(&format!("{prefix}{}-{n}", std::process::id()))
    }

    /// Runs `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// Sets a sysctl inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "sysctl", "-qw"])
            .arg(format!("{key}={value}"))
            .output()
            .expect("sysctl");
        assert!(
            out.status.success(),
            "sysctl {key}={value} in {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Loads an nftables ruleset (`nft -f -`) inside the namespace.
    pub fn nft(&self, ruleset: &str) {
        nft_in(&self.name, ruleset);
    }

    /// `nft list ruleset` inside the namespace (rule counters included).
    pub fn nft_list(&self) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft", "list", "ruleset"])
            .output()
            .expect("nft (Debian package nftables)");
        assert!(
            out.status.success(),
            "nft list ruleset in {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `f` on a new thread inside the namespace and returns its result.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let name = self.name.clone();
        std::thread::spawn(move || {
            enter(&name);
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }
}

/// Moves the calling thread into namespace `name`, for good: call it first thing on a thread
/// of its own.
pub fn enter(name: &str) {
    let file = File::open(format!("/run/netns/{name}")).expect("open netns");
    // SAFETY: a valid namespace file descriptor; only this thread changes namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {name}: {}", std::io::Error::last_os_error());
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Loads an nftables ruleset (`nft -f -`) inside namespace `name` (for a thread that holds
/// only the name, e.g. one running inside another namespace).
pub fn nft_in(name: &str, ruleset: &str) {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", name, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("nft (Debian package nftables)");
    child
        .stdin
        .take()
        .expect("nft stdin")
        .write_all(ruleset.as_bytes())
        .expect("write ruleset");
    let out = child.wait_with_output().expect("nft");
    assert!(
        out.status.success(),
        "nft in {}: {}\n{ruleset}",
        name,
        String::from_utf8_lossy(&out.stderr)
    );
}
