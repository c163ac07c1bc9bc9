//! A fixed-size, lock-free set of string keys (stored as 64-bit hashes), for "log this once".

use std::sync::atomic::{AtomicU64, Ordering};

/// How many slots one insert may probe before giving up (and answering "new").
const MAX_PROBES: usize = 64;

/// A lock-free set of string hashes with `N` slots (`N` a power of two). Inserting never
/// blocks, never allocates and never panics, so it is safe in a child after `fork` and in
/// signal-ish contexts. Two distinct keys collide only if their 64-bit FNV-1a hashes match.
pub struct OnceSet<const N: usize> {
    slots: [AtomicU64; N],
}

impl<const N: usize> OnceSet<N> {
    /// An empty set.
    pub const fn new() -> Self {
        assert!(N.is_power_of_two(), "OnceSet size must be a power of two");
        Self { slots: [const { AtomicU64::new(0) }; N] }
    }

    /// `true` if `key` was not in the set (and is now), `false` if it was. When the probe
    /// window is full the key is not stored and the answer is `true`.
    pub fn insert(&self, key: &str) -> bool {
        let h = hash(key);
        let mut i = (h as usize) & (N - 1);
        for _ in 0..MAX_PROBES.min(N) {
            match self.slots[i].compare_exchange(0, h, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(cur) if cur == h => return false,
                Err(_) => i = (i + 1) & (N - 1),
            }
        }
        true
    }

    /// Whether `key` is in the set.
    pub fn contains(&self, key: &str) -> bool {
        let h = hash(key);
        let mut i = (h as usize) & (N - 1);
        for _ in 0..MAX_PROBES.min(N) {
            match self.slots[i].load(Ordering::Acquire) {
                0 => return false,
                cur if cur == h => return true,
                _ => i = (i + 1) & (N - 1),
            }
        }
        false
    }
}

impl<const N: usize> Default for OnceSet<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// FNV-1a, never 0 (0 marks an empty slot).
fn hash(key: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    if h == 0 { 1 } else { h }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_and_contains() {
        let s = OnceSet::<16>::new();
        assert!(!s.contains("a"));
        assert!(s.insert("a"));
        assert!(!s.insert("a"));
        assert!(s.contains("a"));
        assert!(s.insert("b"));
        assert!(!s.insert("b"));
    }

    #[test]
    fn a_full_set_answers_new_but_never_hangs() {
        let s = OnceSet::<4>::new();
        for k in ["a", "b", "c", "d"] {
            assert!(s.insert(k));
        }
        assert!(s.insert("e"));
        assert!(s.insert("e"), "not stored when full: repeated 'first time' is the fallback");
        assert!(!s.insert("a"));
    }
}
