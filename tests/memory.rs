//! Memory stays flat when frame headers lie: many connections each claiming a
//! frame just under the limit, then stalling, must not make wsgate allocate
//! the claimed sizes. Measured with a counting global allocator, so this file
//! holds this one test alone (the count is process-wide).

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::backend::Backend;
use support::frame::{self, BINARY, Frame, MASK};
use support::proxy::{Proxy, route};
use support::raw;

/// Counts live heap bytes and their peak; everything else is the system allocator.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to `System`; the counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            let live = LIVE.fetch_add(new_size, Ordering::Relaxed) + new_size;
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Connections that lie about their frame length at once.
const LIARS: usize = 50;
/// What each one claims: just under the 16 MiB frame limit.
const CLAIM: u64 = (16 << 20) - 1;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_frame_headers_do_not_allocate_the_claimed_size() {
    let backend = Backend::echo().await;
    let extra = "    max_frame_bytes: 16MiB\n";
    let proxy = Proxy::with_routes(&route("app", "/app", &backend.url("/ws"), extra)).await;
    let mut liars = Vec::new();
    for _ in 0..LIARS {
        liars.push(raw::upgrade(proxy.addr(), "/app").await);
    }
    let before = LIVE.load(Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);

    for liar in &mut liars {
        // A complete frame first: its echo shows wsgate has read this far.
        let mut bytes = Frame::text("sync").masked().encode();
        bytes.extend(frame::header(true, 0, BINARY, Some(MASK), CLAIM));
        bytes.extend(vec![0u8; 1024]);
        liar.write_bytes(&bytes).await;
        assert_eq!(liar.recv_frame().await.payload, b"sync");
    }
    // Give the relays a moment past the echo to parse the lying header (a
    // bounded observation window, not a wait for readiness).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let grown = PEAK.load(Ordering::SeqCst).saturating_sub(before);
    println!(
        "peak growth for {LIARS} lying connections: {} KiB",
        grown >> 10
    );
    assert!(
        grown < 64 << 20,
        "{LIARS} connections claiming {CLAIM} bytes each grew the heap by {} MiB",
        grown >> 20
    );
    drop(liars);
    proxy.assert_drained().await;
}
