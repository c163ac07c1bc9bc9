//! Which pieces of a repeated host-to-device copy the server already keeps, so that over a
//! link only new ones are sent (`htod_pages`, `protocol::pages`).
//!
//! A prompt batch's input embeddings go to the same place batch after batch (so
//! `crate::blobs` does not offer them) but are rows of one token table: across hosts, text
//! repeats its tokens, and rows sent once are named by their slot after that. Only such
//! repeated copies (to a place written before, with the same length) are cut into pieces;
//! a model's weights, written once each, go as they are (or to `crate::blobs`). This table
//! mirrors the session's page store on the server: the client picks the slot for every new
//! piece (and what it evicts, least recently used first by a clock), the server keeps what
//! it is told in frame order, so a copy costs no round trip. Copies whose pieces are mostly
//! new (random data, or random tokens as llama-bench draws them) are hashed and kept for
//! nothing, so after [`COLD`] such copies in a row only one copy in [`PROBE`] is cut into
//! pieces, until one finds its pieces again.

use protocol::Piece;
use rustc_hash::{FxHashMap, FxHashSet};

/// Piece size: a row of a token table is a whole number of KiB for widths that are
/// multiples of 256 floats (2048, 2304, 3072, 4096, 3584, ...).
pub const PIECE: usize = 1 << 10;
/// Smaller copies are sent as they are.
pub const MIN: usize = 64 << 10;
/// Slots asked for (256 MiB of pieces); the server grants what its cap allows.
pub const SLOTS: u32 = ((256 << 20) / PIECE) as u32;
/// Copies in a row that found under 1/16 of their pieces kept before only one in [`PROBE`]
/// is cut into pieces. Text finds more within its first batch (it repeats its words).
pub const COLD: u32 = 2;
pub const PROBE: u32 = 8;
/// Places remembered; past this the memory of them starts again.
const SEEN_MAX: usize = 1 << 16;

/// Below this rate (bytes a second) a link's repeated copies go in pieces by default.
/// Measured with a 4k-token prompt of text over TCP limited by `tc` (H100 host, Q8 1B, one
/// call, medians of three), rows coded (`transport::coding::Coding`, the default over a link)
/// in both columns: pieces against whole copies 130 against 161 ms at 1 Gbit/s, 123 against
/// 123 at 2.5, 122 against 116 at 5, 124 against 113 at 10: the worker puts each batch
/// together from its slots (about 1 ms), which a faster link does not win back. (Without
/// coding the crossover was near 6 Gbit/s: 199 against 310 ms at 1 Gbit/s, 128 against 142
/// at 5.) The kernel's estimates read 80-440 MB/s at 1-2.5 Gbit/s and from 240 MB/s at 5.
pub const SLOW_LINK: u64 = 3_000_000_000 / 8;

/// Whether a client sends repeated copies to a server at `address` in pieces: as `set`
/// (`VGPU_PAGES` or the file's `pages`) says, else over TCP and TLS to another host where
/// the connection delivers under [`SLOW_LINK`] by the kernel's estimate (`rate`; none before
/// a transfer). Never by default to this host's own loopback address (`loopback`): its bytes
/// cross no link, and on a busy two-core machine its estimate fell under the bound.
pub fn paged_over(address: &transport::Address, loopback: bool, rate: Option<u64>, set: Option<bool>) -> bool {
    set.unwrap_or(rate_decides(address, loopback) && rate.is_some_and(|r| r < SLOW_LINK))
}

/// Whether, left unset, the link's rate decides for a server at `address`: TCP and TLS to
/// another host. Elsewhere there is no rate to ask for.
pub fn rate_decides(address: &transport::Address, loopback: bool) -> bool {
    matches!(address, transport::Address::Tcp(_) | transport::Address::Tls(_)) && !loopback
}

/// The xxh3 hash of each full piece of `bytes` (a shorter last one is always sent). On the
/// calling thread: 4 MiB take about 150 µs (28 GB/s), less than handing parts to threads
/// on a host whose cores the application keeps busy.
pub fn hashes(bytes: &[u8]) -> Vec<u128> {
    bytes.chunks_exact(PIECE).map(xxhash_rust::xxh3::xxh3_128).collect()
}

/// The bytes of the pieces `plan` sends, in order, neighbours joined.
pub fn sent<'a>(src: &'a [u8], pieces: &[Piece]) -> Vec<&'a [u8]> {
    let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
    for (i, p) in pieces.iter().enumerate() {
        if matches!(p, Piece::Kept(_)) {
            continue;
        }
        let r = i * PIECE..((i + 1) * PIECE).min(src.len());
        match runs.last_mut() {
            Some(last) if last.end == r.start => last.end = r.end,
            _ => runs.push(r),
        }
    }
    runs.into_iter().map(|r| &src[r]).collect()
}

struct Slot {
    hash: u128,
    /// Named since the clock last passed it.
    recent: bool,
    /// The copy that last named it: not evicted by a later piece of the same copy.
    copy: u32,
}

/// The client's picture of one session's page store.
pub struct Table {
    slots: u32,
    used: Vec<Slot>,
    index: FxHashMap<u128, u32>,
    hand: u32,
    copy: u32,
    /// Copies in a row that found few of their pieces, and copies since the last one cut.
    misses: u32,
    skipped: u32,
    /// Pieces planned, and of them named by their slot (for `VGPU_TRACE=summary`).
    pub pieces: u64,
    pub named: u64,
    /// Places written, with the length written.
    seen: FxHashSet<(u64, usize)>,
}

impl Table {
    /// A table for a store the server granted `slots` slots.
    pub fn new(slots: u32) -> Table {
        // Room for every slot up front: growing the index rehashes it within a copy.
        let room = slots.min(SLOTS) as usize;
        Table {
            slots,
            used: Vec::with_capacity(room),
            index: FxHashMap::with_capacity_and_hasher(room, Default::default()),
            hand: 0,
            copy: 0,
            misses: 0,
            skipped: 0,
            pieces: 0,
            named: 0,
            seen: Default::default(),
        }
    }

    /// Whether a copy of `len` bytes to `dst` is worth cutting into pieces: one to a place
    /// written before with as many bytes, unless such copies have found little kept lately
    /// (see [`COLD`]).
    pub fn worth(&mut self, dst: u64, len: usize) -> bool {
        if self.seen.len() >= SEEN_MAX {
            self.seen.clear();
        }
        if self.seen.insert((dst, len)) {
            return false;
        }
        if self.misses < COLD {
            return true;
        }
        self.skipped += 1;
        if self.skipped >= PROBE {
            self.skipped = 0;
            return true;
        }
        false
    }

    /// Where each piece of a copy comes from: the full pieces have `hashes`, and a shorter
    /// piece follows them when `tail`. The server must see copies in the order they were
    /// planned.
    pub fn plan(&mut self, hashes: &[u128], tail: bool) -> Vec<Piece> {
        self.copy = self.copy.wrapping_add(1).max(1);
        let mut out = Vec::with_capacity(hashes.len() + usize::from(tail));
        let mut found = 0;
        for &h in hashes {
            if let Some(&s) = self.index.get(&h) {
                let slot = &mut self.used[s as usize];
                (slot.recent, slot.copy) = (true, self.copy);
                found += 1;
                out.push(Piece::Kept(s));
                continue;
            }
            out.push(match self.victim() {
                Some(s) => {
                    let slot = Slot { hash: h, recent: true, copy: self.copy };
                    match self.used.get_mut(s as usize) {
                        Some(old) => {
                            self.index.remove(&old.hash);
                            *old = slot;
                        }
                        None => self.used.push(slot),
                    }
                    self.index.insert(h, s);
                    Piece::Keep(s)
                }
                None => Piece::Sent,
            });
        }
        if tail {
            out.push(Piece::Sent);
        }
        self.pieces += out.len() as u64;
        self.named += found as u64;
        if found * 16 < hashes.len() {
            self.misses = self.misses.saturating_add(1);
        } else {
            (self.misses, self.skipped) = (0, 0);
        }
        out
    }

    /// A slot for a new piece: a free one, else the first the clock finds not named since it
    /// last passed and not named by this copy. None when every slot is this copy's.
    fn victim(&mut self) -> Option<u32> {
        if (self.used.len() as u32) < self.slots {
            return Some(self.used.len() as u32);
        }
        for _ in 0..2 * self.slots as u64 {
            let s = self.hand;
            self.hand = (self.hand + 1) % self.slots;
            let slot = &mut self.used[s as usize];
            if slot.copy == self.copy {
                continue;
            }
            if std::mem::take(&mut slot.recent) {
                continue;
            }
            return Some(s);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Piece::*;

    #[test]
    fn by_default_only_slow_tcp_links_page() {
        let tcp: transport::Address = "tcp://10.0.0.1:7070".parse().unwrap();
        let unix: transport::Address = "unix:/run/vgpu/s".parse().unwrap();
        assert!(paged_over(&tcp, false, Some(SLOW_LINK / 2), None));
        assert!(!paged_over(&tcp, false, Some(SLOW_LINK * 2), None), "a fast link");
        assert!(!paged_over(&tcp, false, None, None), "no estimate yet");
        assert!(!paged_over(&tcp, true, Some(1), None), "loopback");
        assert!(!paged_over(&unix, false, Some(1), None));
        assert!(paged_over(&unix, false, None, Some(true)) && !paged_over(&tcp, false, Some(1), Some(false)), "as set");
    }

    #[test]
    fn pieces_seen_before_are_named_by_their_slot() {
        let mut t = Table::new(8);
        assert_eq!(t.plan(&[10, 11, 10], true), vec![Keep(0), Keep(1), Kept(0), Sent]);
        assert_eq!(t.plan(&[11, 12], false), vec![Kept(1), Keep(2)]);
        assert_eq!((t.pieces, t.named), (6, 2));
    }

    #[test]
    fn the_clock_evicts_what_was_not_named_lately_and_never_this_copy() {
        let mut t = Table::new(3);
        t.plan(&[1, 2, 3], false);
        // Every slot is recent: the clock clears them, then takes slot 0.
        assert_eq!(t.plan(&[4], false), vec![Keep(0)]);
        // 2 is named again, so 3 (slot 2) goes next, not 2.
        assert_eq!(t.plan(&[2, 5], false), vec![Kept(1), Keep(2)]);
        // A copy larger than the store sends what it cannot keep.
        assert_eq!(t.plan(&[6, 7, 8, 9], false), vec![Keep(0), Keep(1), Keep(2), Sent]);
        assert_eq!(t.plan(&[6, 9], false)[0], Kept(0));
    }

    #[test]
    fn a_store_of_no_slots_sends_everything() {
        let mut t = Table::new(0);
        assert_eq!(t.plan(&[1, 1], true), vec![Sent, Sent, Sent]);
    }

    #[test]
    fn copies_that_find_nothing_are_cut_only_now_and_then() {
        let mut t = Table::new(1 << 12);
        t.worth(0, 64);
        let mut next = 0u128;
        for _ in 0..COLD {
            assert!(t.worth(0, 64));
            let fresh: Vec<u128> = (0..32)
                .map(|_| {
                    next += 1;
                    next
                })
                .collect();
            t.plan(&fresh, false);
        }
        let cut = (0..2 * PROBE).filter(|_| t.worth(0, 64)).count();
        assert_eq!(cut, 2);
        // One that finds its pieces makes every copy worth it again.
        t.plan(&[1, 2, 3], false);
        assert!((0..PROBE).all(|_| t.worth(0, 64)));
    }

    #[test]
    fn only_repeated_copies_are_cut() {
        let mut t = Table::new(1 << 12);
        assert!(!t.worth(0x1000, 4096), "a first write");
        assert!(!t.worth(0x2000, 4096), "another place");
        assert!(t.worth(0x1000, 4096), "the same place again");
        assert!(!t.worth(0x1000, 8192), "the same place, another length");
    }

    #[test]
    fn sent_pieces_go_in_runs_of_neighbours() {
        let src: Vec<u8> = (0..4 * PIECE + 3).map(|i| i as u8).collect();
        let runs = sent(&src, &[Keep(0), Sent, Kept(0), Kept(1), Sent]);
        assert_eq!(runs, vec![&src[..2 * PIECE], &src[4 * PIECE..]]);
        assert!(sent(&src[..PIECE], &[Kept(3)]).is_empty());
    }

    #[test]
    fn hashes_cover_the_full_pieces_and_tell_them_apart() {
        let mut b = vec![7u8; 3 * PIECE + 5];
        b[PIECE] = 8;
        let h = hashes(&b);
        assert_eq!(h.len(), 3);
        assert_eq!(h[0], h[2]);
        assert_ne!(h[0], h[1]);
        let big: Vec<u8> = (0..4096 * PIECE).map(|i| (i / PIECE) as u8).collect();
        let h = hashes(&big);
        assert_eq!(h.len(), 4096);
        assert_eq!(h[0], h[256]);
        assert_ne!(h[0], h[1]);
    }
}
