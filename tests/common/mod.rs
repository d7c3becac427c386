//! Test harnesses: real Kamailio, the real gateway binary, a protocol-v1 WebSocket client.
#![allow(dead_code)]

pub mod client;
pub mod gateway;
pub mod kamailio;
pub mod peer;
pub mod sipp;
