//! The device address ranges a session may copy to, from and memset: its allocations,
//! its mapped virtual-memory ranges and the module globals it looked up. Anything else is
//! `CUDA_ERROR_INVALID_VALUE` before the driver sees it, so a session cannot read or write
//! memory it was not given (the server's own staging memory included).

use super::{INVALID_VALUE, R};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `cuMemAlloc*`: counted against the session's limit, freed by `cuMemFree*`.
    Alloc,
    /// `cuMemMap` of a `cuMemCreate` handle (the handle carries the quota).
    Mapped,
    /// A `__device__` variable of this module (`cuModuleGetGlobal`).
    Global(u64),
    /// Another session's allocation opened here (`cuIpcOpenMemHandle`): its owner's quota,
    /// closed by `cuIpcCloseMemHandle`.
    Ipc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub len: u64,
    /// CUDA ordinal of the device holding it.
    pub dev: usize,
    /// The context it dies with (0: none, for VMM mappings).
    pub ctx: u64,
    pub kind: Kind,
}

/// Ranges by start address. They do not overlap (the driver hands out disjoint memory).
#[derive(Default, Debug)]
pub struct RangeMap {
    map: BTreeMap<u64, Range>,
}

impl RangeMap {
    pub fn insert(&mut self, start: u64, r: Range) {
        self.map.insert(start, r);
    }

    pub fn get(&self, start: u64) -> Option<&Range> {
        self.map.get(&start)
    }

    pub fn remove(&mut self, start: u64) -> Option<Range> {
        self.map.remove(&start)
    }

    /// Remove and return every range for which `f` holds.
    pub fn remove_where(&mut self, mut f: impl FnMut(u64, &Range) -> bool) -> Vec<(u64, Range)> {
        let starts: Vec<u64> = self.map.iter().filter(|(s, r)| f(**s, r)).map(|(s, _)| *s).collect();
        starts.into_iter().filter_map(|s| self.map.remove(&s).map(|r| (s, r))).collect()
    }

    /// `[ptr, ptr+len)` must be covered by this session's ranges. Abutting ranges count as
    /// one: a VMM pool maps its chunks back to back and a buffer may straddle two of them.
    pub fn check(&self, ptr: u64, len: u64) -> R<()> {
        if len == 0 {
            return Ok(());
        }
        let end = ptr.checked_add(len).ok_or(INVALID_VALUE)?;
        let (&s, r) = self.map.range(..=ptr).next_back().ok_or(INVALID_VALUE)?;
        let mut covered = s.checked_add(r.len).ok_or(INVALID_VALUE)?;
        if covered <= ptr {
            return Err(INVALID_VALUE);
        }
        while covered < end {
            let r = self.map.get(&covered).ok_or(INVALID_VALUE)?;
            covered = covered.checked_add(r.len).ok_or(INVALID_VALUE)?;
        }
        Ok(())
    }

    /// The device side of a 2D copy or memset: `height` rows of `width` bytes, `pitch`
    /// apart, starting at row `y`, byte `x` of `base`.
    pub fn check_2d(&self, base: u64, x: u64, y: u64, pitch: u64, width: u64, height: u64) -> R<()> {
        let (start, len) = span_2d(base, x, y, pitch, width, height).ok_or(INVALID_VALUE)?;
        self.check(start, len)
    }
}

/// The contiguous span `(start, len)` that a 2D access touches, or `None` on overflow.
pub fn span_2d(base: u64, x: u64, y: u64, pitch: u64, width: u64, height: u64) -> Option<(u64, u64)> {
    let start = base.checked_add(y.checked_mul(pitch)?)?.checked_add(x)?;
    if width == 0 || height == 0 {
        return Some((start, 0));
    }
    let len = (height - 1).checked_mul(pitch)?.checked_add(width)?;
    start.checked_add(len)?;
    Some((start, len))
}

/// Whether `size` more bytes fit under `limit` when `used` are taken.
pub fn fits(used: u64, size: u64, limit: Option<u64>) -> bool {
    limit.is_none_or(|l| used.checked_add(size).is_some_and(|t| t <= l))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(len: u64, kind: Kind) -> Range {
        Range { len, dev: 0, ctx: 7, kind }
    }

    #[test]
    fn check_inside_and_outside() {
        let mut m = RangeMap::default();
        m.insert(0x1000, r(0x100, Kind::Alloc));
        assert_eq!(m.check(0x1000, 0x100), Ok(()));
        assert_eq!(m.check(0x1080, 0x80), Ok(()));
        assert_eq!(m.check(0x1080, 0x81), Err(INVALID_VALUE));
        assert_eq!(m.check(0xfff, 2), Err(INVALID_VALUE));
        assert_eq!(m.check(0x1100, 1), Err(INVALID_VALUE));
        assert_eq!(m.check(0x9999, 0), Ok(()), "empty copies touch nothing");
        assert_eq!(m.check(u64::MAX, 2), Err(INVALID_VALUE));
        assert_eq!(RangeMap::default().check(0x1000, 1), Err(INVALID_VALUE));
    }

    #[test]
    fn abutting_ranges_join_gaps_do_not() {
        let mut m = RangeMap::default();
        m.insert(0x10000, r(0x1000, Kind::Mapped));
        m.insert(0x11000, r(0x1000, Kind::Mapped));
        m.insert(0x12800, r(0x1000, Kind::Mapped));
        assert_eq!(m.check(0x10800, 0x1000), Ok(()));
        assert_eq!(m.check(0x10000, 0x2000), Ok(()));
        assert_eq!(m.check(0x11800, 0x1000), Err(INVALID_VALUE));
    }

    #[test]
    fn span_and_2d() {
        assert_eq!(span_2d(0x1000, 4, 2, 0x100, 16, 3), Some((0x1204, 0x210)));
        assert_eq!(span_2d(0x1000, 0, 0, 0x100, 0, 3), Some((0x1000, 0)));
        assert_eq!(span_2d(u64::MAX, 0, 1, 1, 1, 1), None);
        let mut m = RangeMap::default();
        m.insert(0x1000, r(0x400, Kind::Alloc));
        assert_eq!(m.check_2d(0x1000, 0, 0, 0x100, 0x100, 4), Ok(()));
        assert_eq!(m.check_2d(0x1000, 1, 0, 0x100, 0x100, 4), Err(INVALID_VALUE));
        assert_eq!(m.check_2d(0x1000, 0, 1, 0x100, 0x100, 4), Err(INVALID_VALUE));
    }

    #[test]
    fn remove_where_and_quota() {
        let mut m = RangeMap::default();
        m.insert(0x1000, r(0x100, Kind::Alloc));
        m.insert(0x2000, Range { ctx: 9, ..r(0x100, Kind::Global(5)) });
        let gone = m.remove_where(|_, r| r.ctx == 7);
        assert_eq!(gone, vec![(0x1000, r(0x100, Kind::Alloc))]);
        assert!(m.get(0x2000).is_some());
        assert!(fits(10, 5, None));
        assert!(fits(10, 5, Some(15)));
        assert!(!fits(10, 6, Some(15)));
        assert!(!fits(u64::MAX, 1, Some(u64::MAX)));
    }
}
