//! Lanes: extra connections of one session that carry the bulk bytes of large frames,
//! striped across them, so that several cores copy them on each side. One socket stream is
//! bound by one core's copy (about 6 GB/s on the H100 host, unix or TCP), while the driver
//! copies pageable memory at 13-16 GB/s; four lanes moved 4.5 MiB at 16-17 GB/s there.
//!
//! Both ways: a request's bulk (host to device) and a reply's (device to host, when the
//! request asked with [`FLAG_REPLY_LANES`]). The frame itself still goes on the session's
//! connection, in order, flagged [`FLAG_LANES`]; its bytes go as [`OP_LANE`] chunks, chunk
//! `i` on lane `i` (lanes numbered in the order they joined), each naming the frame's `seq`
//! and the chunk's offset. The worker, reading a request, posts where its bulk lands
//! ([`LaneSet::fill`]) and waits until the lanes' readers have put every chunk there; the
//! client, reading such a reply, has its helpers read each lane's chunk into the caller's
//! buffer ([`Lanes::gather`]). Over a link a request's chunk may go coded ([`Coding`](crate::coding::Coding),
//! [`FLAG_CODED`](protocol::frame::FLAG_CODED)): the reader then decodes it into place.
//!
//! A lane joins its session through the server's listener: it connects to the same address
//! and sends an [`OP_JOIN`](protocol::frame::OP_JOIN) frame with the session's id and key (given only over the
//! session's own, authenticated, connection); the listener passes the socket to that
//! session's worker, which checks the key and acknowledges.

use crate::addr::Address;
use crate::park::{Pace, Window};
use parking_lot::{Condvar, MutexGuard};
#[cfg(doc)]
use protocol::frame::FLAG_REPLY_LANES;
use protocol::frame::{FLAG_LANES, Header, OP_LANE};
use std::time::Duration;

mod client;
mod jobs;
mod server;
#[cfg(test)]
mod tests;

pub use client::Lanes;
pub(crate) use client::join;
pub(crate) use client::lag_limit;
pub use server::{LaneSet, Scatter};

/// The worker's answer that an extra connection joined its session, what the client's
/// `join` waits for before using it.
pub fn acknowledge(s: &mut crate::Stream) -> std::io::Result<()> {
    crate::write_frame(s, &Header::reply(protocol::frame::OP_JOIN, 0, 0, 0, 0), &[], &[])
}

/// Frames with at least this many bulk bytes go over lanes; smaller ones are not worth
/// waking the helpers for.
pub const LANE_MIN: usize = 256 << 10;

/// The same over TLS, where every byte is also sealed and opened, and copied twice more
/// inside rustls, on one core a side: there striping pays from smaller frames on, a decoding
/// LLM's logits (128 KB a token for a 32k vocabulary) among them. Measured on an H100 host
/// with 256 KiB: 64 KiB replies at 0.93 GB/s against TCP's 2.3, tg128 0.91 of native.
pub const LANE_MIN_TLS: usize = 64 << 10;

/// The smallest bulk a client on `address` sends or asks back over lanes.
pub fn lane_min(address: &Address) -> usize {
    if address.is_tls() { LANE_MIN_TLS } else { LANE_MIN }
}

/// Largest bulk of a frame on lanes (the worker sizes its buffer from the header).
pub const LANE_MAX: usize = 64 << 20;

/// Lanes a client opens unless `VGPU_LANES` says otherwise: [`lanes_for_cores`] of the
/// cores it may run on.
pub fn default_lanes() -> usize {
    lanes_for_cores(std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// One lane per two cores, at most four (each lane but the first has two helper threads in
/// the application, one writing chunks and one reading replies' chunks, each polling while
/// such copies come). Measured on the H100 host (16 cores): 1, 2, 4, 6 lanes moved 4.5 MiB
/// at 6, 10, 17, 21 GB/s; llama.cpp's prompt batches gained most from 2 to 4. A client held
/// to a VM's few cores (llama-bench under `taskset`, the server on the others; session 27):
/// Q8 1B pp512 on 4 cores with 2 lanes 0.948 (unix) and 0.944 (TCP) of native against 0.924
/// and 0.911 with one, on 8 cores with 4 lanes 0.960 and 0.943 against 0.935 and 0.901 with
/// two; decoding (tg128, 4 cores, 60 samples) 0.958 and 0.955 against 0.963 and 0.959.
pub fn lanes_for_cores(cores: usize) -> usize {
    (cores / 2).clamp(1, 4)
}

/// Most lanes a session takes.
pub const MAX_LANES: u32 = 8;

/// How long the worker's lane readers, and the worker waiting for them, poll before
/// sleeping (see `Shared::wait`): as long as the client's helpers (`crate::CLIENT_SPIN`),
/// so that they are awake for the next prompt batch's inputs (10 ms later for a 1B model).
/// Measured on an H100 host (two calls, Q8 1B pp512): readers that slept after 500 µs left
/// the GPU waiting 50-70 µs longer a batch for its inputs than readers polling 20 ms. They
/// poll only while large copies keep coming (not while decoding). The client's helpers
/// poll as long. Set by `VGPU_LANE_SPIN_US` (the lanes alone), else `VGPU_SPIN_US`.
fn lane_spin() -> Duration {
    static S: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *S.get_or_init(|| lane_spin_from(&|k| std::env::var(k).ok()))
}

/// How long a lane thread polls for its next chunk or job: [`lane_spin`], or while other
/// sessions share the GPU [`crate::crowd::crowded_spin`].
fn idle_spin() -> Duration {
    crate::crowd::spin_unless_crowded(lane_spin())
}

/// [`lane_spin`] from the variables `var` gives (unparsable ones count as unset).
fn lane_spin_from(var: &dyn Fn(&str) -> Option<String>) -> Duration {
    let us = |k| crate::spin::micros(var, k);
    us("VGPU_LANE_SPIN_US").or_else(|| us("VGPU_SPIN_US")).unwrap_or(crate::CLIENT_SPIN)
}

/// The frame header that announces bulk on lanes.
pub fn lane_header(mut h: Header) -> Header {
    h.flags |= FLAG_LANES;
    h
}

/// Wait on `cv` until `ready` gives an answer: first polled while `window` says so (the lock
/// released and the core yielded between tries; parked, slept for a [`crate::park::TICK`]
/// between tries), then slept for, `tick` at most between tries. `ready` learns whether it is
/// not polled at once, for checks too costly to poll.
fn poll_then_wait<T, R>(
    cv: &Condvar,
    g: &mut MutexGuard<'_, T>,
    mut window: Window<'_>,
    tick: Duration,
    mut ready: impl FnMut(&mut T, bool) -> Option<R>,
) -> R {
    loop {
        let pace = window.pace();
        if let Some(r) = ready(g, pace != Pace::Poll) {
            return r;
        }
        match pace {
            Pace::Poll => MutexGuard::unlocked(g, std::thread::yield_now),
            Pace::Tick => {
                cv.wait_for(g, crate::park::TICK);
            }
            Pace::Over => {
                cv.wait_for(g, tick);
            }
        }
    }
}

/// The header of a chunk on a lane: `len` bytes of frame `seq`'s bulk from `offset` on.
pub(crate) fn chunk_header(seq: u32, offset: usize, len: usize) -> Header {
    Header::request(OP_LANE, seq, offset as u64, true, 0, len)
}

/// The bytes `[start, end)` of the concatenation of `pieces`.
fn cut<'a>(pieces: &[&'a [u8]], start: usize, end: usize) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut at = 0;
    for p in pieces {
        let (lo, hi) = (start.max(at), end.min(at + p.len()));
        if lo < hi {
            out.push(&p[lo - at..hi - at]);
        }
        at += p.len();
    }
    out
}

/// The bytes of chunk `i` of `total` striped over `n` lanes (page-sized shares keep the
/// copies aligned; trailing chunks may be empty, and are not sent).
fn chunk_range(total: usize, n: usize, i: usize) -> std::ops::Range<usize> {
    let share = total.div_ceil(n.max(1)).next_multiple_of(4096);
    (i * share).min(total)..((i + 1) * share).min(total)
}
