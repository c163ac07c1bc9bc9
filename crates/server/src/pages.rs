//! A session's page store (`protocol::pages`): pieces of earlier host-to-device copies that
//! the client told this worker to keep, in slots the client chose, so that a piece sent
//! once is named by its slot afterwards (`htod_pages`).

use protocol::Piece;
use protocol::pages::{self, Bad};

/// Bytes a session's store may hold unless `VGPU_PAGE_CACHE_MB` (which `vgpu serve
/// --page-cache` sets for its workers) says otherwise: the rows of a 32k-token table 2048
/// floats wide, and the often-used rows of larger ones. Memory is taken as slots are used.
pub const DEFAULT_CAP: u64 = 256 << 20;

/// The cap this worker's stores have.
pub fn cap() -> u64 {
    std::env::var("VGPU_PAGE_CACHE_MB")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(DEFAULT_CAP, |mb| mb << 20)
}

/// How far ahead of the kept slots the store's memory is faulted in, off the worker's
/// thread: a prompt batch of new rows writes 4 MiB, and first touches of that many fresh
/// pages cost 2-3 ms of faults on the development machine (on huge pages, 0.3 ms, or 10 ms
/// where the kernel compacted memory for them first).
const AHEAD: usize = 16 << 20;

#[derive(Debug, Default)]
pub struct Store {
    piece: usize,
    slots: u32,
    /// Slots below this have been kept (the client fills them in order).
    kept: u32,
    /// Address space for every slot, taken as memory only where written (or faulted in
    /// ahead, up to `ahead` bytes). Shared with the pool job that faults it in; only the
    /// worker's thread reads or writes its bytes.
    bytes: Option<std::sync::Arc<memmap2::MmapRaw>>,
    ahead: usize,
}

impl Store {
    /// (Re)opens the store for `slots` pieces of `piece` bytes, within `cap` bytes; answers
    /// the slots granted. What it held is dropped.
    pub fn open(&mut self, piece: u32, slots: u32, cap: u64) -> u32 {
        *self = Store::default();
        if !pages::valid_piece(piece) {
            return 0;
        }
        let granted = slots.min(u32::try_from(cap / u64::from(piece)).unwrap_or(u32::MAX));
        if granted == 0 {
            return 0;
        }
        let Ok(map) = memmap2::MmapMut::map_anon(granted as usize * piece as usize) else { return 0 };
        (self.piece, self.slots, self.bytes) = (piece as usize, granted, Some(std::sync::Arc::new(map.into())));
        self.fault_ahead();
        granted
    }

    /// Has the pool fault in the next [`AHEAD`] bytes once the kept slots come within half
    /// of that of the memory faulted in so far.
    fn fault_ahead(&mut self) {
        let Some(map) = &self.bytes else { return };
        if self.ahead >= map.len() || self.kept as usize * self.piece + AHEAD / 2 < self.ahead {
            return;
        }
        let (map, at, len) = (map.clone(), self.ahead, AHEAD.min(map.len() - self.ahead));
        self.ahead += len;
        #[cfg(target_os = "linux")]
        if let Some(pool) = crate::pool() {
            // Kernels before 5.14 refuse the advice: the worker's writes fault instead.
            pool.spawn(move || drop(map.advise_range(memmap2::Advice::PopulateWrite, at, len)));
        }
    }

    /// Checks a copy's pieces and keeps the ones it says to keep; answers where each sent
    /// piece starts in `bulk`, for [`Store::fill`]. The client counts on what it told the
    /// store to keep: after a refusal the store is closed, so that every later copy from it
    /// fails instead of reading what was not kept.
    pub fn keep(&mut self, pieces: &[Piece], bulk: &[u8], len: usize) -> Result<Vec<Option<usize>>, Bad> {
        let r = self.try_keep(pieces, bulk, len);
        if r.is_err() {
            *self = Store::default();
        }
        r
    }

    fn try_keep(&mut self, pieces: &[Piece], bulk: &[u8], len: usize) -> Result<Vec<Option<usize>>, Bad> {
        let piece = self.piece;
        let starts = pages::check(pieces, len, piece, self.slots, bulk.len())?;
        for (p, at) in pieces.iter().zip(&starts) {
            match (*p, at) {
                (Piece::Keep(s), Some(at)) => {
                    let map = self.bytes.as_ref().ok_or(Bad::Slot)?;
                    // SAFETY: in the mapping (`check`: s < slots, and the map holds every
                    // slot); only this thread touches its bytes (the pool job only advises).
                    let slot =
                        unsafe { std::slice::from_raw_parts_mut(map.as_mut_ptr().add(s as usize * piece), piece) };
                    slot.copy_from_slice(&bulk[*at..*at + piece]);
                    self.kept = self.kept.max(s + 1);
                }
                // A slot never kept holds nothing to copy (one this copy keeps comes first).
                (Piece::Kept(s), _) if s >= self.kept => return Err(Bad::Slot),
                _ => {}
            }
        }
        self.fault_ahead();
        Ok(starts)
    }

    /// The copy's bytes into `dst`, after [`Store::keep`] accepted its pieces: sent ones from
    /// `bulk`, the others from their slots. On the worker's own thread: 4 MiB take a few
    /// hundred µs, and the pool's threads, asleep between copies, took longer to get a core
    /// on a host whose application keeps every core busy (1.3-2 ms a prompt batch).
    pub fn fill(&self, pieces: &[Piece], starts: &[Option<usize>], bulk: &[u8], dst: &mut [u8]) {
        let piece = self.piece;
        // SAFETY: the whole mapping, whose bytes only this thread touches.
        let kept: &[u8] = match &self.bytes {
            Some(map) => unsafe { std::slice::from_raw_parts(map.as_ptr(), map.len()) },
            None => &[],
        };
        for ((c, p), at) in dst.chunks_mut(piece).zip(pieces).zip(starts) {
            match (p, at) {
                (Piece::Kept(s), _) => c.copy_from_slice(&kept[*s as usize * piece..][..c.len()]),
                (_, Some(at)) => c.copy_from_slice(&bulk[*at..*at + c.len()]),
                (_, None) => unreachable!("checked: a sent piece has a start"),
            }
        }
    }
}

/// A store and what a copy's pieces need to be put together from it, as one value for the
/// backends' staging code.
#[derive(Clone, Copy)]
pub struct Assembly<'a> {
    pub store: &'a Store,
    pub pieces: &'a [Piece],
    pub starts: &'a [Option<usize>],
    pub bulk: &'a [u8],
    pub len: usize,
}

impl Assembly<'_> {
    pub fn write(&self, dst: &mut [u8]) {
        self.store.fill(self.pieces, self.starts, self.bulk, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Piece::*;

    fn bytes(seed: u8, n: usize) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    fn copy(store: &mut Store, pieces: &[Piece], bulk: &[u8], len: usize) -> Result<Vec<u8>, Bad> {
        let starts = store.keep(pieces, bulk, len)?;
        let mut out = vec![0u8; len];
        store.fill(pieces, &starts, bulk, &mut out);
        Ok(out)
    }

    #[test]
    fn kept_pieces_come_back_in_later_copies() {
        let mut s = Store::default();
        assert_eq!(s.open(1024, 8, 1 << 20), 8);
        let (a, b, tail) = (bytes(1, 1024), bytes(2, 1024), bytes(3, 100));
        let first = [a.clone(), b.clone(), tail.clone()].concat();
        assert_eq!(copy(&mut s, &[Keep(0), Keep(5), Sent], &first, 2148).unwrap(), first);
        let got = copy(&mut s, &[Kept(5), Kept(0), Kept(5), Sent], &tail, 3172).unwrap();
        assert_eq!(got, [b.clone(), a.clone(), b.clone(), tail.clone()].concat());
        // Kept in this copy and named after that within it.
        let bulk = [bytes(4, 1024), tail.clone()].concat();
        let got = copy(&mut s, &[Keep(1), Kept(1), Kept(5), Sent], &bulk, 3172).unwrap();
        assert_eq!(got, [bytes(4, 1024), bytes(4, 1024), b, tail].concat());
    }

    #[test]
    fn a_refused_copy_closes_the_store() {
        let mut s = Store::default();
        s.open(1024, 8, 1 << 20);
        copy(&mut s, &[Keep(5)], &bytes(1, 1024), 1024).unwrap();
        let bulk = bytes(4, 1024);
        assert_eq!(copy(&mut s, &[Kept(5), Keep(5)], &bulk, 2048), Err(Bad::Order));
        assert_eq!(copy(&mut s, &[Kept(5)], &[], 1024), Err(Bad::Count));
    }

    #[test]
    fn large_copies_are_put_together_the_same() {
        let mut s = Store::default();
        s.open(1024, 4096, 8 << 20);
        let n = 2048;
        let data = bytes(9, n * 1024);
        let keep: Vec<Piece> = (0..n as u32).map(Keep).collect();
        assert_eq!(copy(&mut s, &keep, &data, data.len()).unwrap(), data);
        let back: Vec<Piece> = (0..n as u32).rev().map(Kept).collect();
        let got = copy(&mut s, &back, &[], data.len()).unwrap();
        let want: Vec<u8> = data.chunks(1024).rev().flatten().copied().collect();
        assert_eq!(got, want);
    }

    #[test]
    fn the_cap_bounds_the_slots_and_bad_sizes_open_nothing() {
        let mut s = Store::default();
        assert_eq!(s.open(4096, 1000, 1 << 20), 256);
        assert_eq!(s.open(1000, 10, 1 << 20), 0);
        assert_eq!(s.open(1024, 10, 0), 0);
        // A closed store takes no slots.
        assert_eq!(s.keep(&[Keep(0)], &[0; 1024], 1024), Err(Bad::Count));
        assert_eq!(s.keep(&[Sent], &[0; 1024], 1024), Err(Bad::Count));
    }

    #[test]
    fn a_slot_never_kept_cannot_be_named() {
        let mut s = Store::default();
        s.open(1024, 8, 1 << 20);
        assert_eq!(copy(&mut s, &[Kept(2)], &[], 1024), Err(Bad::Slot));
        s.open(1024, 8, 1 << 20);
        copy(&mut s, &[Keep(0)], &bytes(1, 1024), 1024).unwrap();
        assert_eq!(copy(&mut s, &[Kept(3)], &[], 1024), Err(Bad::Slot));
        s.open(1024, 8, 1 << 20);
        copy(&mut s, &[Keep(0)], &bytes(1, 1024), 1024).unwrap();
        assert_eq!(copy(&mut s, &[Kept(0)], &[], 1024).unwrap(), bytes(1, 1024));
    }
}
