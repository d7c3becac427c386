//! A media-terminating SIP B2BUA for browser agents. See DESIGN.md and the README.

pub mod api;
pub mod app;
pub mod call;
pub mod config;
pub mod listener;
pub mod metrics;
pub mod sip;
pub mod state;
pub mod tls;
pub mod ws;
