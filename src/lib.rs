//! A media-terminating SIP B2BUA for browser agents. See DESIGN.md and the README.

pub mod api;
pub mod app;
pub mod auth;
pub mod call;
pub mod config;
pub mod directory;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod protocol;
pub mod sip;
pub mod tls;
pub mod ws;
