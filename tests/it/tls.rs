//! `--tls-cert`/`--tls-key`: `wss://` and `https://` on the usual ports, with a self-signed
//! certificate this test makes, against the real gateway and Kamailio.

use crate::common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::client::{tls_to, Client, WAIT};
use common::gateway::Gateway;
use common::kamailio::{Kamailio, KamailioOptions};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A certificate for `localhost` and 127.0.0.1, written as PEM files that live as long as
/// this value.
struct Cert {
    dir: PathBuf,
    der: rustls::pki_types::CertificateDer<'static>,
}

impl Cert {
    fn new() -> Cert {
        let key = rcgen::KeyPair::generate().expect("key pair");
        let params = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("certificate parameters");
        let cert = params.self_signed(&key).expect("self-signed certificate");
        let dir = std::env::temp_dir().join(format!("gateway-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("cert.pem"), cert.pem()).expect("write cert");
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("write key");
        Cert {
            dir,
            der: cert.der().clone(),
        }
    }

    fn cert(&self) -> String {
        self.dir.join("cert.pem").display().to_string()
    }

    fn key(&self) -> String {
        self.dir.join("key.pem").display().to_string()
    }

    /// A TLS client that trusts this certificate alone.
    fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.der.clone())
            .expect("trust the test certificate");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("TLS versions")
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }
}

impl Drop for Cert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One HTTP/1.1 GET over TLS; returns the status code and the body.
async fn https_get(port: u16, path: &str, cert: &Cert) -> (u16, String) {
    let url = format!("https://127.0.0.1:{port}/");
    let mut tls = tls_to(&url, cert.client_config()).await;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.expect("request");
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, tls.read_to_end(&mut answer))
        .await
        .expect("answer in time")
        .expect("read answer");
    let answer = String::from_utf8_lossy(&answer).to_string();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn wss_registers_and_https_answers_with_a_self_signed_certificate() {
    let cert = Cert::new();
    let kam = Kamailio::start(KamailioOptions::default());
    let gw = Gateway::start(
        &kam.uri(),
        &["--tls-cert", &cert.cert(), "--tls-key", &cert.key()],
    );

    let url = format!("wss://127.0.0.1:{}/", gw.ws_port);
    let mut agent = Client::connect_tls(&url, cert.client_config()).await;
    agent.register("5001", "pass5001").await;
    assert!(
        kam.wait_for_contacts("5001", true, Duration::from_secs(5)),
        "5001 is not in Kamailio's location table"
    );

    let (status, body) = https_get(gw.api_port, "/api/dn/5001", &cert).await;
    assert_eq!(status, 200, "{body}");
    let dn: Value = serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(dn["state"], "registered", "{dn}");

    // Plain HTTP and plain WebSocket on a TLS port get nowhere, and break nothing.
    let plain = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/", gw.ws_port)),
    )
    .await
    .expect("plain attempt ends");
    assert!(plain.is_err(), "a plain WebSocket got through a TLS port");
    let (status, body) = https_get(gw.api_port, "/api/health", &cert).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"ok\""), "{body}");
    let r = agent.request("unregister", serde_json::json!({})).await;
    assert_eq!(r["type"], "result", "{r}");
}

#[test]
fn a_bad_certificate_stops_the_start_with_one_clear_line() {
    let dir = std::env::temp_dir().join(format!("gateway-tls-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cert = dir.join("cert.pem");
    std::fs::write(&cert, "not a certificate\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["--ws-listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0"])
        .args([
            "--sip-listen",
            "127.0.0.1:0",
            "--sip-upstream",
            "sip:127.0.0.1:9",
        ])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&cert)
        .output()
        .expect("run gateway");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("gateway: --tls-cert") && stderr.contains("no CERTIFICATE"),
        "{stderr}"
    );
}
