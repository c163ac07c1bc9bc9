//! Which host-to-device copies are offered to the server by content (`htod_cached`), so
//! that a model's second load over a link sends hashes instead of its weights
//! (`server::blobs` keeps them).
//!
//! A load writes each weight once, from a file whose bytes are the same in every run; a
//! prompt batch's inputs go to the same place batch after batch, new bytes each time. So
//! only a copy's first write to a place is offered, in chunks counted from its start (the
//! same copy makes the same chunks in every run). Asking costs a round trip; once offers
//! have found nothing several times in a row (a model the server has not seen), only one
//! copy in [`COLD`] asks, the others are sent for the server to keep.

use parking_lot::Mutex;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};

/// Smaller copies are sent as they are.
pub const MIN: usize = protocol::BLOB_MIN;
/// Chunk size of an offer.
pub const CHUNK: usize = 4 << 20;
/// Offers in a row that found nothing before asking becomes occasional.
pub const COLD: u32 = 8;
/// Places remembered; past this the memory of them starts again.
const SEEN_MAX: usize = 1 << 16;

/// Whether a client offers copies by content to a server at `address` (whose connection's
/// peer is this host's loopback address or not), `set` being `VGPU_BLOBS` or the file's
/// `blobs`: by default only over TCP and TLS to another host. Loopback and vsock (a VM on
/// the GPU's host) move bytes faster than the server reads kept ones back (even a 25 Gbit/s
/// link about matches it).
pub fn offered_over(address: &transport::Address, loopback: bool, set: Option<bool>) -> bool {
    set.unwrap_or(matches!(address, transport::Address::Tcp(_) | transport::Address::Tls(_)) && !loopback)
}

/// How a copy goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// As it is.
    Plain,
    /// Offered by hashes; the chunks the server lacks are sent for it to keep.
    Ask,
    /// Sent for the server to keep, without asking.
    Keep,
}

#[derive(Default)]
pub struct Offers {
    seen: Mutex<HashSet<(usize, u64, usize)>>,
    misses: AtomicU32,
}

impl Offers {
    /// The process's offers (one per shim library).
    pub fn global() -> &'static Offers {
        static O: std::sync::OnceLock<Offers> = std::sync::OnceLock::new();
        O.get_or_init(Offers::default)
    }

    /// How a copy of `len` bytes to `dst` on `server` goes, where offering is on.
    pub fn plan(&self, server: usize, dst: u64, len: usize) -> Plan {
        if len < MIN {
            return Plan::Plain;
        }
        {
            let mut seen = self.seen.lock();
            if seen.len() >= SEEN_MAX {
                seen.clear();
            }
            if !seen.insert((server, dst, len)) {
                return Plan::Plain;
            }
        }
        let m = self.misses.load(Ordering::Relaxed);
        if m < COLD || m.is_multiple_of(COLD) {
            return Plan::Ask;
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        Plan::Keep
    }

    /// What an `Ask` found: anything makes asking worth it again.
    pub fn answered(&self, found: bool) {
        if found {
            self.misses.store(0, Ordering::Relaxed);
        } else {
            self.misses.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The blake3 hash of each chunk, on up to four threads for a large copy.
pub fn hashes(chunks: &[&[u8]]) -> Vec<[u8; 32]> {
    let hash = |c: &[u8]| *blake3::hash(c).as_bytes();
    if chunks.len() < 2 {
        return chunks.iter().map(|c| hash(c)).collect();
    }
    let per = chunks.len().div_ceil(4);
    let hash_all = |part: &[&[u8]]| part.iter().map(|c| hash(c)).collect::<Vec<_>>();
    std::thread::scope(|s| {
        // In the application's process: a thread that cannot be had (a limit) is no error,
        // its part is hashed here instead.
        let parts: Vec<_> = chunks
            .chunks(per)
            .map(|part| {
                (part, std::thread::Builder::new().name("vgpu-hash".into()).spawn_scoped(s, move || hash_all(part)))
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|(part, h)| h.ok().and_then(|h| h.join().ok()).unwrap_or_else(|| hash_all(part)))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_first_writes_of_large_copies_are_offered() {
        let o = Offers::default();
        assert_eq!(o.plan(0, 0x1000, MIN - 1), Plan::Plain);
        assert_eq!(o.plan(0, 0x1000, MIN), Plan::Ask);
        assert_eq!(o.plan(0, 0x1000, MIN), Plan::Plain, "the same place again: a batch's inputs");
        assert_eq!(o.plan(0, 0x1000, 2 * MIN), Plan::Ask, "another length is another write");
        assert_eq!(o.plan(1, 0x1000, MIN), Plan::Ask, "another server");
    }

    #[test]
    fn asking_becomes_occasional_after_misses_and_resumes_on_a_hit() {
        let o = Offers::default();
        let mut dst = 0u64;
        let mut next = || {
            dst += 1 << 20;
            o.plan(0, dst, MIN)
        };
        for _ in 0..COLD {
            assert_eq!(next(), Plan::Ask);
            o.answered(false);
        }
        let plans: Vec<Plan> = (0..2 * COLD)
            .map(|_| {
                let p = next();
                if p == Plan::Ask {
                    o.answered(false);
                }
                p
            })
            .collect();
        assert_eq!(plans.iter().filter(|p| **p == Plan::Ask).count(), 2, "{plans:?}");
        assert!(plans.iter().all(|p| *p != Plan::Plain));
        // One hit: every copy asks again.
        while next() != Plan::Ask {}
        o.answered(true);
        assert_eq!(next(), Plan::Ask);
        assert_eq!(next(), Plan::Ask);
    }

    #[test]
    fn offered_over_links_to_other_hosts() {
        let a = |s: &str| s.parse::<transport::Address>().unwrap();
        assert!(offered_over(&a("tcp://gpu:7070"), false, None));
        assert!(offered_over(&a("tls://gpu:7443"), false, None));
        assert!(!offered_over(&a("tcp://127.0.0.1:7070"), true, None), "loopback");
        assert!(!offered_over(&a("vsock://2:7070"), false, None));
        assert!(!offered_over(&a("unix:/run/vgpu/vgpu.sock"), false, None));
        assert!(offered_over(&a("unix:/x"), false, Some(true)));
        assert!(!offered_over(&a("tcp://gpu:7070"), false, Some(false)));
    }

    #[test]
    fn hashes_in_order_on_several_threads() {
        let data: Vec<u8> = (0..9 * 1000u32).map(|i| (i * 7 % 256) as u8).collect();
        let chunks: Vec<&[u8]> = data.chunks(1000).collect();
        let want: Vec<[u8; 32]> = chunks.iter().map(|c| *blake3::hash(c).as_bytes()).collect();
        assert_eq!(hashes(&chunks), want);
        assert_eq!(hashes(&chunks[..1]), want[..1]);
        assert!(hashes(&[]).is_empty());
    }
}
