//! The gateway's media plane as a library. It knows packets, ports and SDP, not calls, SIP or
//! JSON (DESIGN.md "Media plane").

pub mod ports;
pub mod relay;
pub mod rtp_leg;
pub mod stats;
