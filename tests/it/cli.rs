//! The run contract: `--help`, and one clear line for a wrong value.

use std::process::Command;

fn gateway() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gateway"));
    for (k, _) in std::env::vars() {
        if k.starts_with("GATEWAY_") || k == "RUST_LOG" {
            c.env_remove(k);
        }
    }
    c
}

#[test]
fn help_lists_every_setting() {
    let out = gateway().arg("--help").output().expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--config",
        "--ws-listen",
        "--api-listen",
        "--sip-listen",
        "--sip-upstream",
        "--sip-trusted",
        "--sip-domain",
        "--public-ip",
        "--rtp-ports",
        "--ice-servers",
        "--api-token",
        "--log",
        "--grace-period",
        "--options-interval",
        "--ice-tcp-listen",
        "--turn-secret",
        "--turn-urls",
        "--turn-ttl",
        "--ice-restart-grace",
        "--max-ringing-per-dn",
    ] {
        assert!(text.contains(flag), "{flag} missing from --help:\n{text}");
    }
    assert!(text.contains("GATEWAY_WS_LISTEN"), "{text}");
}

#[test]
fn a_wrong_value_stops_start_up_with_one_line_naming_it() {
    let out = gateway()
        .args(["--rtp-ports", "9000-100"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("--rtp-ports"), "{err}");

    let out = gateway()
        .env("GATEWAY_SIP_UPSTREAM", "not a uri")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("GATEWAY_SIP_UPSTREAM"), "{err}");

    let out = gateway()
        .args(["--ice-tcp-listen", "0.0.0.0"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("--ice-tcp-listen"), "{err}");
}

#[test]
fn config_file_is_read_and_checked() {
    let dir = std::env::temp_dir().join(format!("gw-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("gateway.toml");
    std::fs::write(&file, "ws_listen = \"127.0.0.1:notaport\"\n").expect("write");
    let out = gateway().arg("--config").arg(&file).output().expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ws_listen"), "{err}");

    std::fs::write(&file, "ws_lsten = \"127.0.0.1:1\"\n").expect("write");
    let out = gateway().arg("--config").arg(&file).output().expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ws_lsten"));
    let _ = std::fs::remove_dir_all(&dir);
}
