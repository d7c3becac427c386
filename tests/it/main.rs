//! The integration tests, one test binary: a module per area and the shared harnesses in
//! `common`. One binary links the test dependencies (webrtc-rs, tokio-tungstenite, ...) once
//! and compiles `common` once, instead of once per file under `tests/`.

mod common;

mod agent_networks;
mod api;
mod browser;
mod calls;
mod cli;
mod client_package;
mod contract;
mod cti;
mod docker;
mod genesys;
mod ice_tcp;
mod latching;
mod layers;
mod limits;
mod recovery;
mod registration;
mod session_timers;
mod shutdown;
mod tls;
mod transcoding;
mod transfer;
