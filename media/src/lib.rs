//! The gateway's media plane as a library. It knows packets and ports, not calls, SIP or
//! JSON (DESIGN.md "Media plane"). For now it holds the RTP port pool the SIP legs draw from.

pub mod ports;
