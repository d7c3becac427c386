//! The B2BUA: one call = a browser leg + a SIP leg + their media, owned by one task.

pub mod state;
