//! The gateway's media plane as a library. It knows packets, ports and SDP, not calls, SIP or
//! JSON (DESIGN.md "Media plane").

pub mod browser_leg;
pub mod dtls;
pub mod dtmf;
pub mod engine;
pub mod ice_lite;
pub mod ice_tcp;
pub mod ports;
pub mod relay;
pub mod rtcp;
pub mod rtp_leg;
pub mod sdp;
pub mod sip_leg;
pub mod srtp;
pub mod stats;
pub mod transcode;
pub mod udp;
pub mod worker;
