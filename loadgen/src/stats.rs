//! Measurement helpers: a fixed-bin latency histogram, and CPU time and RSS of a process read
//! from `/proc`.

use std::time::Duration;

/// Round-trip times in 10 µs bins up to 200 ms; slower ones land in the last bin.
#[derive(Clone)]
pub struct Histogram {
    bins: Vec<u32>,
    count: u64,
}

const BIN_NS: u64 = 10_000;
const BINS: usize = 20_000;

impl Default for Histogram {
    fn default() -> Self {
        Self {
            bins: vec![0; BINS],
            count: 0,
        }
    }
}

impl Histogram {
    pub fn record(&mut self, ns: u64) {
        let i = ((ns / BIN_NS) as usize).min(BINS - 1);
        self.bins[i] += 1;
        self.count += 1;
    }

    pub fn clear(&mut self) {
        self.bins.iter_mut().for_each(|b| *b = 0);
        self.count = 0;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// The `q` quantile (0..1) in microseconds, the middle of its bin.
    pub fn quantile_us(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let target = ((self.count as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (i, b) in self.bins.iter().enumerate() {
            seen += u64::from(*b);
            if seen >= target {
                return Some((i as f64 + 0.5) * BIN_NS as f64 / 1000.0);
            }
        }
        None
    }
}

/// Quantile of a list of durations (call-setup times), in milliseconds.
pub fn quantile_ms(values: &mut [Duration], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let i = (((values.len() as f64) * q).ceil() as usize).clamp(1, values.len()) - 1;
    Some(values[i].as_secs_f64() * 1000.0)
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of a process (all its threads), in seconds; `None` if it is gone.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3 of stat(5), so utime (14) and stime (15) are at 11 and 12.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// Resident set size in KiB (VmRSS).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Raises RLIMIT_NOFILE to its hard limit (or `want`, if lower).
pub fn raise_nofile(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            let target = want.min(lim.rlim_max);
            if lim.rlim_cur < target {
                lim.rlim_cur = target as libc::rlim_t;
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            }
        }
    }
}

/// Busy CPU time of the whole machine (all cores, every process), in seconds.
pub fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: busy is everything but idle and iowait.
    let total: f64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).unwrap_or(&0.0);
    Some((total - idle) / clock_ticks())
}

/// Sets SO_RCVBUF (the kernel caps it at net.core.rmem_max).
pub fn set_rcvbuf(sock: &std::net::UdpSocket, bytes: usize) {
    use std::os::fd::AsRawFd;
    let size = bytes as libc::c_int;
    // SAFETY: setsockopt on a socket we own with a pointer to a local int.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}
