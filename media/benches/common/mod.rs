//! What the media benchmarks share: a counting global allocator (to prove allocations per
//! packet), SRTP keys for the two ends of a leg, and RTP packets.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use media::relay::header;
use media::srtp::{SrtpKeys, SrtpProfile};

/// Counts every allocation and reallocation of the process.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations so far, process-wide.
pub fn allocations() -> u64 {
    ALLOCS.load(Ordering::Relaxed)
}

/// Keys for one end of a leg; the other end takes `swap`.
pub fn keys(profile: SrtpProfile, swap: bool) -> SrtpKeys {
    let a = (vec![1u8; profile.key_len()], vec![2u8; profile.salt_len()]);
    let b = (vec![3u8; profile.key_len()], vec![4u8; profile.salt_len()]);
    let (local, remote) = if swap { (b, a) } else { (a, b) };
    SrtpKeys {
        profile,
        local_key: local.0,
        local_salt: local.1,
        remote_key: remote.0,
        remote_salt: remote.1,
    }
}

/// An RTP packet with a 12-byte header and `payload`.
pub fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, pt, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    header::set_seq(&mut p, seq);
    header::set_ts(&mut p, ts);
    header::set_ssrc(&mut p, ssrc);
    p.extend_from_slice(payload);
    p
}
