//! The SIP user agent: transports and transactions (rsipstack), digest authentication,
//! registrations, the upstream probe, and the answers to requests from the network.

pub mod digest;
pub mod headers;
pub mod keepalive;
pub mod register_task;
pub mod registration;
pub mod sanity;
pub mod trust;
pub mod ua;
