//! What can be checked of the Docker image without a Docker engine: that the runtime stage
//! installs every shared library the gateway binary links (ldd of the binary, each library
//! mapped to its Debian package with `dpkg -S`), that the Dockerfile is a multi-stage build
//! with a non-root user, a HEALTHCHECK on /api/health, and EXPOSE of the ports the binary
//! listens on by default (read from `gateway --help`), and that the HEALTHCHECK command itself
//! tells a healthy gateway from one whose SIP upstream is gone.

use crate::common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::gateway::Gateway;
use common::kamailio::{pick_port, Kamailio, KamailioOptions};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Packages every `debian:bookworm-slim` image has (Essential: yes; the C and GCC runtime
/// libraries), so the Dockerfile need not install them.
const IN_SLIM_BASE: &[&str] = &["libc6", "libgcc-s1"];

/// One Dockerfile instruction: the keyword (upper case) and its arguments.
#[derive(Debug, Clone)]
struct Instruction {
    keyword: String,
    args: String,
}

/// Instructions grouped by build stage (each `FROM` starts one).
fn stages(dockerfile: &str) -> Vec<Vec<Instruction>> {
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let trimmed = line.trim();
        // Comments (also inside continued instructions) and the parser directive.
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                logical.push(std::mem::take(&mut current));
            }
        }
    }
    assert!(
        current.trim().is_empty(),
        "Dockerfile ends inside a continuation"
    );
    let mut out: Vec<Vec<Instruction>> = Vec::new();
    for l in logical {
        let l = l.trim();
        if l.is_empty() {
            continue;
        }
        let (keyword, args) = l.split_once(char::is_whitespace).unwrap_or((l, ""));
        let ins = Instruction {
            keyword: keyword.to_ascii_uppercase(),
            args: args.trim().to_string(),
        };
        if ins.keyword == "FROM" {
            out.push(Vec::new());
        }
        out.last_mut()
            .unwrap_or_else(|| panic!("instruction before FROM: {l}"))
            .push(ins);
    }
    out
}

fn dockerfile() -> Vec<Vec<Instruction>> {
    let text = std::fs::read_to_string(Path::new(ROOT).join("Dockerfile")).expect("Dockerfile");
    stages(&text)
}

fn find<'a>(stage: &'a [Instruction], keyword: &str) -> Vec<&'a Instruction> {
    stage.iter().filter(|i| i.keyword == keyword).collect()
}

/// The package names of every `apt-get install` in a stage's RUN instructions.
fn apt_packages(stage: &[Instruction]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for run in find(stage, "RUN") {
        for command in run.args.split("&&").flat_map(|c| c.split(';')) {
            let words: Vec<&str> = command.split_whitespace().collect();
            let Some(at) = words.windows(2).position(|w| w == ["apt-get", "install"]) else {
                continue;
            };
            out.extend(
                words[at + 2..]
                    .iter()
                    .filter(|w| !w.starts_with('-'))
                    .map(|w| w.to_string()),
            );
        }
    }
    out
}

/// The shared libraries `binary` loads, as the paths ldd resolved them to.
fn ldd(binary: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd").arg(binary).output().expect("run ldd");
    assert!(out.status.success(), "ldd failed: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libs = Vec::new();
    for line in text.lines() {
        // "libopus.so.0 => /lib/x86_64-linux-gnu/libopus.so.0 (0x...)",
        // "/lib64/ld-linux-x86-64.so.2 (0x...)", "linux-vdso.so.1 (0x...)" (in the kernel).
        let line = line.trim();
        assert!(!line.contains("not found"), "unresolved library: {line}");
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next().unwrap_or(""),
            None => line.split_whitespace().next().unwrap_or(""),
        };
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    libs
}

/// The Debian package that owns `lib` (tried as given, with and without the merged-/usr
/// prefix, and with symlinks resolved).
fn owning_package(lib: &Path) -> String {
    let s = lib.to_string_lossy().to_string();
    let mut candidates = vec![s.clone()];
    match s.strip_prefix("/usr") {
        Some(rest) => candidates.push(rest.to_string()),
        None => candidates.push(format!("/usr{s}")),
    }
    if let Ok(real) = std::fs::canonicalize(lib) {
        let real = real.to_string_lossy().to_string();
        if let Some(rest) = real.strip_prefix("/usr") {
            candidates.push(rest.to_string());
        }
        candidates.push(real);
    }
    for c in &candidates {
        let out = Command::new("dpkg")
            .args(["-S", c])
            .output()
            .expect("dpkg -S");
        if !out.status.success() {
            continue;
        }
        // "libopus0:amd64: /usr/lib/x86_64-linux-gnu/libopus.so.0"
        let text = String::from_utf8_lossy(&out.stdout);
        if let Some(owner) = text.lines().next().and_then(|l| l.split(": ").next()) {
            let pkg = owner.split(',').next().unwrap_or(owner).trim();
            return pkg.split(':').next().unwrap_or(pkg).to_string();
        }
    }
    panic!("no Debian package owns {s} (tried {candidates:?})");
}

#[test]
fn runtime_image_has_every_shared_library_the_binary_needs() {
    let stages = dockerfile();
    let runtime = stages.last().expect("a stage");
    let installed = apt_packages(runtime);
    assert!(
        installed.contains("libopus0"),
        "runtime installs {installed:?}"
    );
    assert!(
        !installed.iter().any(|p| p.ends_with("-dev")),
        "no -dev packages at run time: {installed:?}"
    );
    let libs = ldd(Path::new(env!("CARGO_BIN_EXE_gateway")));
    assert!(
        libs.iter()
            .any(|l| l.to_string_lossy().contains("libopus.so")),
        "the binary should link the system libopus: {libs:?}"
    );
    let mut missing = Vec::new();
    for lib in &libs {
        let pkg = owning_package(lib);
        if !installed.contains(&pkg) && !IN_SLIM_BASE.contains(&pkg.as_str()) {
            missing.push(format!("{} ({pkg})", lib.display()));
        }
    }
    assert!(
        missing.is_empty(),
        "libraries the runtime image lacks: {missing:?} (installs {installed:?} on top of {IN_SLIM_BASE:?})"
    );
}

#[test]
fn dockerfile_is_multi_stage_non_root_and_checks_health() {
    let stages = dockerfile();
    assert!(stages.len() >= 2, "multi-stage build expected");
    let builder = &stages[0];
    let runtime = stages.last().expect("a stage");

    let from = &builder[0].args;
    assert!(from.starts_with("rust:1-bookworm"), "builder FROM {from}");
    let alias = from
        .split_whitespace()
        .skip_while(|w| !w.eq_ignore_ascii_case("as"))
        .nth(1)
        .expect("builder stage named with AS");
    let build_pkgs = apt_packages(builder);
    for p in ["libopus-dev", "pkg-config"] {
        assert!(build_pkgs.contains(p), "builder lacks {p}: {build_pkgs:?}");
    }
    assert!(
        find(builder, "RUN")
            .iter()
            .any(|r| r.args.contains("cargo build --release --locked")),
        "builder runs cargo build --release --locked"
    );

    assert_eq!(runtime[0].args, "debian:bookworm-slim", "runtime base");
    assert!(
        find(runtime, "COPY")
            .iter()
            .any(|c| c.args.contains(&format!("--from={alias}"))),
        "runtime copies the binary from the {alias} stage"
    );
    let installed = apt_packages(runtime);
    let expected: BTreeSet<String> = ["ca-certificates", "libopus0"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(installed, expected, "runtime packages, no more");

    let users = find(runtime, "USER");
    let user = users
        .last()
        .expect("USER in the runtime stage")
        .args
        .clone();
    let name = user.split(':').next().unwrap_or("");
    assert!(
        !name.is_empty() && name != "root" && name != "0",
        "USER {user}"
    );
    // The user is created in the image (or is numeric).
    assert!(
        name.chars().all(|c| c.is_ascii_digit())
            || find(runtime, "RUN")
                .iter()
                .any(|r| r.args.contains("useradd") && r.args.contains(name)),
        "user {name} is never created"
    );

    let health = find(runtime, "HEALTHCHECK");
    assert_eq!(health.len(), 1, "one HEALTHCHECK");
    assert!(health[0].args.contains("/api/health"), "{}", health[0].args);
    assert!(
        find(runtime, "ENTRYPOINT")
            .iter()
            .chain(find(runtime, "CMD").iter())
            .any(|e| e.args.contains("gateway")),
        "the image runs the gateway"
    );
}

/// `[default: X]` of `flag` in `gateway --help`.
fn help_default(help: &str, flag: &str) -> String {
    let at = help
        .find(&format!("{flag} "))
        .unwrap_or_else(|| panic!("{flag} not in --help"));
    let rest = &help[at..];
    let start = rest.find("[default: ").expect("a default") + "[default: ".len();
    let end = rest[start..].find(']').expect("closing ]") + start;
    rest[start..end].to_string()
}

#[test]
fn dockerfile_exposes_the_default_ports() {
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("--help")
        .env_clear()
        .output()
        .expect("gateway --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let port_of = |flag: &str| -> String {
        let addr = help_default(&help, flag);
        addr.rsplit(':').next().expect("a port").to_string()
    };
    let ws = port_of("--ws-listen");
    let api = port_of("--api-listen");
    let sip = port_of("--sip-listen");
    let rtp = help_default(&help, "--rtp-ports");

    let stages = dockerfile();
    let runtime = stages.last().expect("a stage");
    let exposed: BTreeSet<String> = find(runtime, "EXPOSE")
        .iter()
        .flat_map(|e| e.args.split_whitespace().map(str::to_string))
        .map(|p| {
            if p.contains('/') {
                p
            } else {
                format!("{p}/tcp")
            }
        })
        .collect();
    for want in [
        format!("{ws}/tcp"),
        format!("{api}/tcp"),
        format!("{sip}/udp"),
        format!("{sip}/tcp"),
        format!("{rtp}/udp"),
    ] {
        assert!(exposed.contains(&want), "EXPOSE lacks {want}: {exposed:?}");
    }
    // The image's own environment agrees with the binary's defaults.
    let env: String = find(runtime, "ENV")
        .iter()
        .map(|e| e.args.clone())
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        env.contains(&format!("GATEWAY_API_LISTEN=0.0.0.0:{api}")),
        "{env}"
    );
    assert!(env.contains(&format!("GATEWAY_RTP_PORTS={rtp}")), "{env}");
}

/// The HEALTHCHECK's exec-form command (a JSON array after `CMD`).
fn healthcheck_command() -> Vec<String> {
    let stages = dockerfile();
    let runtime = stages.last().expect("a stage");
    let health = find(runtime, "HEALTHCHECK");
    let args = &health.first().expect("HEALTHCHECK").args;
    let json = &args[args.find("CMD").expect("CMD") + 3..];
    serde_json::from_str(json.trim()).expect("HEALTHCHECK CMD is a JSON array (exec form)")
}

fn run_healthcheck(api_port: u16) -> bool {
    let cmd = healthcheck_command();
    let status = Command::new(&cmd[0])
        .args(&cmd[1..])
        .env("GATEWAY_API_LISTEN", format!("0.0.0.0:{api_port}"))
        .status()
        .expect("run the HEALTHCHECK command");
    status.success()
}

#[tokio::test(flavor = "multi_thread")]
async fn healthcheck_command_passes_on_a_healthy_gateway_only() {
    let kam = Kamailio::start(KamailioOptions::default());
    let gw = Gateway::start(&kam.uri(), &[]);
    let mut healthy = false;
    for _ in 0..50 {
        if gw.get("/api/health").await.0 == 200 {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(healthy, "gateway never healthy:\n{}", gw.log());
    assert!(
        run_healthcheck(gw.api_port),
        "HEALTHCHECK failed on a healthy gateway"
    );

    // No upstream answering OPTIONS: /api/health says 503, the check fails.
    let dead = Gateway::start(&format!("sip:127.0.0.1:{}", pick_port()), &[]);
    let mut degraded = false;
    for _ in 0..80 {
        if dead.get("/api/health").await.0 == 503 {
            degraded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(degraded, "no 503 without an upstream:\n{}", dead.log());
    assert!(
        !run_healthcheck(dead.api_port),
        "HEALTHCHECK passed with the upstream gone"
    );
    // Nothing listening: the check fails too.
    assert!(!run_healthcheck(pick_port()));
}

#[test]
fn dockerignore_and_compose_are_complete() {
    let ignore =
        std::fs::read_to_string(Path::new(ROOT).join(".dockerignore")).expect(".dockerignore");
    let entries: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for want in [".git", "**/target", "**/node_modules"] {
        assert!(entries.contains(&want), ".dockerignore lacks {want}");
    }
    // The build needs these: none may be ignored.
    for needed in [
        "src",
        "media",
        "web",
        "Cargo.toml",
        "Cargo.lock",
        "fixtures",
    ] {
        assert!(
            !entries
                .iter()
                .any(|e| e.trim_start_matches('/').trim_end_matches('/') == needed),
            "{needed} is ignored"
        );
    }

    let compose = std::fs::read_to_string(Path::new(ROOT).join("docker-compose.yml"))
        .expect("docker-compose.yml");
    assert!(compose.contains("gateway:") && compose.contains("kamailio:"));
    let kam_file = compose
        .lines()
        .filter_map(|l| l.trim().strip_prefix("dockerfile:"))
        .map(str::trim)
        .next()
        .expect("kamailio's dockerfile in compose");
    let kam_stages = stages(
        &std::fs::read_to_string(Path::new(ROOT).join(kam_file)).expect("kamailio Dockerfile"),
    );
    let kam = kam_stages.last().expect("a stage");
    assert!(apt_packages(kam).contains("kamailio"));
    // It copies the fixture config and tables, and those exist.
    let copies: Vec<&Instruction> = find(kam, "COPY");
    for f in ["kamailio.cfg", "subscriber", "version"] {
        let path = format!("fixtures/kamailio/{f}");
        assert!(Path::new(ROOT).join(&path).exists());
        assert!(
            copies.iter().any(|c| c.args.contains(&path)),
            "{kam_file} does not copy {path}"
        );
    }
    let user = find(kam, "USER");
    assert!(
        user.last().is_some_and(|u| u.args != "root"),
        "kamailio runs as root"
    );
}
