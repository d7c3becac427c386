//! Turns the JSON results of a run into the Markdown tables of BENCHMARKS.md, written between
//! the `<!-- bench:results:start -->` and `<!-- bench:results:end -->` markers.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

const START: &str = "<!-- bench:results:start -->";
const END: &str = "<!-- bench:results:end -->";

fn read(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn f(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn fmt(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(x) => format!("{x:.digits$}"),
        None => "–".to_owned(),
    }
}

/// A CPU share in percent, flagged when the core is (nearly) saturated: SCHED_FIFO tasks get at
/// most 95% of a core under the kernel's RT throttling.
fn cpu(v: Option<f64>) -> String {
    match v {
        Some(x) if x >= 0.9 => format!("**{:.0}%** (sat.)", x * 100.0),
        Some(x) => format!("{:.0}%", x * 100.0),
        None => "–".to_owned(),
    }
}

fn pct(v: Option<f64>) -> String {
    match v {
        Some(x) => format!("{:.3}%", x * 100.0),
        None => "–".to_owned(),
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
        })
        .map(|k| format!("{:.0} GiB", k as f64 / 1048576.0))
        .unwrap_or_default();
    format!("{cpu}, {cores} cores, {mem} RAM, Linux {kernel}")
}

pub fn write(
    baseline: &Path,
    gateway: &Path,
    idle: Option<&Path>,
    alone: Option<&Path>,
    micro: Option<&Path>,
    target: &Path,
) -> Result<(), String> {
    let base = read(baseline)?;
    let gw = read(gateway)?;
    let empty = Vec::new();
    let base = base.as_array().unwrap_or(&empty);
    let gw = gw.as_array().unwrap_or(&empty);
    let mut out = String::new();
    let stamp = std::env::var("BENCH_STAMP").unwrap_or_default();
    let _ = writeln!(out, "Run: {stamp}. Machine: {}.\n", machine());
    let idle_per_session = match idle {
        Some(p) => f(&read(p)?["rss_per_session_kib"]),
        None => None,
    };
    let _ = writeln!(
        out,
        "**Media.** Both runs carry the same traffic: per call one 20 ms packet each way (50 pps per direction, \
         {} byte payload), i.e. 100 relayed packets per call-second. CPU is the process under test's user+sys \
         time over the window as a share of one core; µs/pkt is that CPU divided by the packets it relayed. \
         Added latency is the gateway's round-trip time minus the forwarder's at the same step (each round trip \
         crosses the relay twice). Loss counts round trips from the packets' own sequence numbers.\n",
        crate::media::PAYLOAD_LEN
    );
    out.push_str(
        "| calls | relayed pkt/s | gateway CPU | gateway µs/pkt | forwarder CPU | forwarder µs/pkt | ratio | gateway loss | forwarder loss | forwarder RTT p50 / p99 (µs) | gateway RTT p50 / p99 (µs) | added p50 / p99 (µs) | loadgen CPU (gw / fwd run) | other processes' CPU (gw / fwd run) |\n",
    );
    out.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for g in gw {
        let n = g["calls"].as_u64().unwrap_or(0);
        let b = base.iter().find(|b| b["calls"].as_u64() == Some(n));
        let bf = |k: &str| b.and_then(|b| f(&b[k]));
        let ratio = match (f(&g["us_per_packet"]), bf("us_per_packet")) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        let added = |k: &str| match (f(&g[k]), bf(k)) {
            (Some(a), Some(b)) => Some(a - b),
            _ => None,
        };
        let _ = writeln!(
            out,
            "| {n} | {} | {} | {} | {} | {} | {}x | {} | {} | {} / {} | {} / {} | {} / {} | {} / {} | {}% / {}% |",
            fmt(f(&g["relayed_pps"]), 0),
            cpu(f(&g["cpu_share"])),
            fmt(f(&g["us_per_packet"]), 2),
            cpu(bf("cpu_share")),
            fmt(bf("us_per_packet"), 2),
            fmt(ratio, 2),
            pct(f(&g["loss"])),
            pct(bf("loss")),
            fmt(bf("rtt_p50_us"), 0),
            fmt(bf("rtt_p99_us"), 0),
            fmt(f(&g["rtt_p50_us"]), 0),
            fmt(f(&g["rtt_p99_us"]), 0),
            fmt(added("rtt_p50_us"), 0),
            fmt(added("rtt_p99_us"), 0),
            cpu(f(&g["loadgen_cpu_share"])),
            cpu(bf("loadgen_cpu_share")),
            fmt(f(&g["other_cpu_share"]).map(|x| x * 100.0), 0),
            fmt(bf("other_cpu_share").map(|x| x * 100.0), 0),
        );
    }
    out.push_str(
        "\n**Set-up and memory** (gateway run; set-up quantiles over the calls added in that step, in ms; \
         RSS per call is the growth over the idle gateway divided by the calls up).\n\n",
    );
    out.push_str(
        "| calls | calls without media | gateway RSS | RSS per call (with its WS session) | RSS per call less an idle session | `call` → result p50 / p99 | `call` → INVITE at far end p50 / p99 | 200 OK → `answered` p50 / p99 |\n",
    );
    out.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for g in gw {
        let s = &g["setup"];
        let q = |k: &str| {
            format!(
                "{} / {}",
                fmt(f(&s[k]["p50_ms"]), 2),
                fmt(f(&s[k]["p99_ms"]), 2)
            )
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} MiB | {} KiB | {} KiB | {} | {} | {} |",
            g["calls"],
            g["without_media"],
            fmt(f(&g["rss_kib"]).map(|k| k / 1024.0), 1),
            fmt(f(&g["rss_per_call_kib"]), 1),
            fmt(
                f(&g["rss_per_call_kib"])
                    .zip(idle_per_session)
                    .map(|(c, s)| c - s),
                1
            ),
            q("call_to_result"),
            q("call_to_invite"),
            q("ok_to_answered"),
        );
    }
    if let Some(alone) = alone {
        // A ramp of one step with one set-up at a time: what the gateway adds to a call's
        // set-up when it is not queued behind others on the same core.
        let v = read(alone)?;
        let step = v
            .as_array()
            .and_then(|a| a.first())
            .cloned()
            .unwrap_or_default();
        let q = |k: &str| {
            format!(
                "{} / {}",
                fmt(f(&step["setup"][k]["p50_ms"]), 2),
                fmt(f(&step["setup"][k]["p99_ms"]), 2)
            )
        };
        let _ = writeln!(
            out,
            "\n**Set-up alone.** {} calls set up one at a time on a fresh gateway (p50 / p99, ms): \
             `call` → result {}, `call` → INVITE at far end {}, 200 OK → `answered` {}.",
            step["calls"],
            q("call_to_result"),
            q("call_to_invite"),
            q("ok_to_answered"),
        );
    }
    if let Some(idle) = idle {
        let v = read(idle)?;
        let _ = writeln!(
            out,
            "\n**Idle sessions.** {} WebSocket sessions connected and registered ({} failed) in {} s; gateway RSS {} MiB \
             (idle before: {} MiB), {} KiB per session; gateway CPU while they sit idle: {}% of a core.",
            v["sessions"],
            v["failed"],
            fmt(f(&v["setup_s"]), 1),
            fmt(f(&v["rss_kib"]).map(|k| k / 1024.0), 0),
            fmt(f(&v["rss_idle_kib"]).map(|k| k / 1024.0), 0),
            fmt(f(&v["rss_per_session_kib"]), 1),
            fmt(f(&v["idle_cpu_share"]).map(|x| x * 100.0), 1),
        );
    }
    if let Some(micro) = micro {
        let text =
            std::fs::read_to_string(micro).map_err(|e| format!("{}: {e}", micro.display()))?;
        let _ = writeln!(
            out,
            "\n**Relay step alone** (`cargo bench -p media --bench relay`, criterion, same run):\n\n```text\n{}\n```",
            text.trim()
        );
    }

    let doc = std::fs::read_to_string(target).unwrap_or_default();
    let new = match (doc.find(START), doc.find(END)) {
        (Some(a), Some(b)) if a < b => {
            format!("{}{START}\n{out}{}", &doc[..a], &doc[b..])
        }
        _ => format!("{doc}\n{START}\n{out}{END}\n"),
    };
    std::fs::write(target, new).map_err(|e| format!("{}: {e}", target.display()))
}
