//! Listening ports for the BGP integration tests.
//!
//! A port the kernel hands out for `bind(:0)` lies in the ephemeral range, the same range
//! every outgoing connection (other tests' BGP sessions, running in parallel) takes its
//! source port from: between picking it and the speaker binding it, a connection can
//! take it and the speaker never listens. Ports are picked below that range instead,
//! from a per-process offset, and checked free by binding them.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU16, Ordering};

/// Below Linux's default ephemeral range (32768-60999).
const FIRST: u16 = 20000;
const COUNT: u16 = 12000;

static NEXT: AtomicU16 = AtomicU16::new(0);

/// A TCP port on 127.0.0.1 that is free now and outside the ephemeral range.
pub fn free_port() -> u16 {
    let base = (std::process::id() % u32::from(COUNT)) as u16;
    for _ in 0..COUNT {
        let step = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = FIRST + (base.wrapping_add(step.wrapping_mul(7)) % COUNT);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}-{}", FIRST + COUNT - 1)
}
