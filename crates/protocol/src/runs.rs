//! Host-to-device bytes packed as runs of one repeated 4-byte word (`htod_runs`).
//!
//! The case is the attention mask llama.cpp uploads with every prompt batch: an
//! `n_kv × n_tokens` matrix of rows of 0 then -inf (f16 in the build measured), 512 KiB for
//! a 512-token batch and 2 MiB once 2048 tokens are cached, which packs into about 10 KiB.
//! Across hosts its bytes cost the link. A general-purpose codec does not fit: lz4_flex
//! decoded such masks (matches at offset 4) at 1.5–4 GB/s on the development machine, slower
//! than the link they would spare, while a run is filled at memset speed and found by
//! comparing 64-byte blocks (30–40 GB/s there).
//!
//! Format: records, each a little-endian `u32` header. Bit 31 set: a run of `header & MAX`
//! words, then the word's 4 bytes; clear: `header` words follow as they are. After the
//! records that cover `len / 4` words come the `len % 4` bytes left over, as they are.

/// Shorter runs stay in literal records (a run record costs 8 bytes and splits a literal).
pub const MIN_RUN: usize = 8;
/// Copies smaller than this are sent as they are: packing saves too little.
pub const PACK_MIN: usize = 64 << 10;
/// Packed output must be at most `len / WORTH` to be sent packed.
pub const WORTH: usize = 8;
/// The prefix [`pack_if_worth`] tries first, so that data without runs costs a glance.
const PROBE: usize = 4 << 10;

const RUN: u32 = 1 << 31;
const MAX: usize = (RUN - 1) as usize;
const BLOCK: usize = 64;

/// Why packed bytes could not be unpacked into the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("packed runs end before the destination is full")]
    Short,
    #[error("a packed record runs past the destination")]
    Overrun,
    #[error("a packed record of no words")]
    Empty,
    #[error("bytes left over after the packed records")]
    Trailing,
}

fn word(src: &[u8], i: usize) -> [u8; 4] {
    src[i * 4..i * 4 + 4].try_into().expect("4 bytes")
}

/// Whether the 4 words from word `i` on are all equal (`i + 4 <= words`): then, and only
/// then, the 16 bytes read as one number equal themselves turned by a word.
fn uniform4(src: &[u8], i: usize) -> bool {
    let x = u128::from_ne_bytes(src[i * 4..i * 4 + 16].try_into().expect("16 bytes"));
    x == x.rotate_left(32)
}

/// Whether the `BLOCK` bytes at `b` are all the word whose two copies make `p` (XORs folded
/// by OR, which the compiler turns into vector instructions, unlike a call to `bcmp`).
fn block_is(b: &[u8], p: u64) -> bool {
    b.chunks_exact(8).fold(0, |acc, c| acc | (u64::from_ne_bytes(c.try_into().expect("8 bytes")) ^ p)) == 0
}

/// The first word at or after `i` that is not `w` (at most `end`).
fn run_end(src: &[u8], mut i: usize, end: usize, w: [u8; 4]) -> usize {
    let p = u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[0], w[1], w[2], w[3]]);
    while i + BLOCK / 4 <= end && block_is(&src[i * 4..i * 4 + BLOCK], p) {
        i += BLOCK / 4;
    }
    while i < end && word(src, i) == w {
        i += 1;
    }
    i
}

struct Out {
    bytes: Vec<u8>,
    limit: usize,
}

impl Out {
    fn literal(&mut self, src: &[u8], from: usize, to: usize) -> Option<()> {
        let mut i = from;
        while i < to {
            let n = (to - i).min(MAX);
            self.room(4 + n * 4)?;
            self.bytes.extend_from_slice(&(n as u32).to_le_bytes());
            self.bytes.extend_from_slice(&src[i * 4..(i + n) * 4]);
            i += n;
        }
        Some(())
    }

    fn run(&mut self, w: [u8; 4], mut n: usize) -> Option<()> {
        while n > 0 {
            let k = n.min(MAX);
            self.room(8)?;
            self.bytes.extend_from_slice(&(k as u32 | RUN).to_le_bytes());
            self.bytes.extend_from_slice(&w);
            n -= k;
        }
        Some(())
    }

    fn room(&self, more: usize) -> Option<()> {
        (self.bytes.len() + more <= self.limit).then_some(())
    }
}

/// `src` packed, or `None` once the packed form would exceed `limit` bytes.
pub fn pack(src: &[u8], limit: usize) -> Option<Vec<u8>> {
    let words = src.len() / 4;
    let mut out = Out { bytes: Vec::with_capacity(limit.min(src.len() / WORTH + 64)), limit };
    let mut lit = 0; // first word of the literal not yet written
    let mut i = 0;
    // Any run of 7 or more words holds a uniform aligned block of 4, so only those are
    // looked at; a hit is widened both ways to the run's true ends.
    while i + 4 <= words {
        if !uniform4(src, i) {
            i += 4;
            // Literal bytes count against the limit before they are written.
            if (i - lit) * 4 + out.bytes.len() > limit {
                return None;
            }
            continue;
        }
        let w = word(src, i);
        let mut start = i;
        while start > lit && word(src, start - 1) == w {
            start -= 1;
        }
        let end = run_end(src, i + 4, words, w);
        if end - start >= MIN_RUN {
            out.literal(src, lit, start)?;
            out.run(w, end - start)?;
            lit = end;
        }
        i = end.next_multiple_of(4).max(i + 4);
    }
    out.literal(src, lit, words)?;
    out.room(src.len() % 4)?;
    out.bytes.extend_from_slice(&src[words * 4..]);
    Some(out.bytes)
}

/// `src` packed when that is worth sending instead (at least [`PACK_MIN`] bytes, packing to
/// at most `1 / WORTH` of them); a prefix is tried first, so data without runs costs little.
pub fn pack_if_worth(src: &[u8]) -> Option<Vec<u8>> {
    if !may_pack(src) {
        return None;
    }
    pack(src, src.len() / WORTH)
}

/// Whether [`pack_if_worth`] would try all of `src`: its prefix packs well.
pub fn may_pack(src: &[u8]) -> bool {
    src.len() >= PACK_MIN && pack(&src[..PROBE], PROBE / WORTH).is_some()
}

/// The word, when `packed` is one run over all `len` bytes (a buffer of zeros, say): the
/// server then has the GPU fill the copy's destination instead of staging its bytes.
pub fn single_word(packed: &[u8], len: u64) -> Option<[u8; 4]> {
    let [h0, h1, h2, h3, w0, w1, w2, w3] = *<&[u8; 8]>::try_from(packed).ok()?;
    let h = u32::from_le_bytes([h0, h1, h2, h3]);
    (h & RUN != 0 && u64::from(h & !RUN) * 4 == len).then_some([w0, w1, w2, w3])
}

/// Fill `dst` (a whole number of words) with `w`: as 8-byte stores, which the compiler
/// vectorizes (a mask's runs are a few hundred bytes, so a call per 64-byte block cost as
/// much as the bytes).
fn fill(dst: &mut [u8], w: [u8; 4]) {
    if w == [w[0]; 4] {
        dst.fill(w[0]);
        return;
    }
    let pat = [w[0], w[1], w[2], w[3], w[0], w[1], w[2], w[3]];
    let (pairs, rest) = dst.as_chunks_mut::<8>();
    for p in pairs {
        *p = pat;
    }
    let n = rest.len();
    rest.copy_from_slice(&pat[..n]);
}

fn take<'a>(p: &mut &'a [u8], n: usize) -> Result<&'a [u8], Malformed> {
    if p.len() < n {
        return Err(Malformed::Short);
    }
    let (head, rest) = p.split_at(n);
    *p = rest;
    Ok(head)
}

/// Unpack `packed` into `dst`, which must be exactly as long as what was packed.
pub fn unpack(mut packed: &[u8], dst: &mut [u8]) -> Result<(), Malformed> {
    let body = dst.len() / 4 * 4;
    let mut at = 0;
    while at < body {
        let h = u32::from_le_bytes(take(&mut packed, 4)?.try_into().expect("4 bytes"));
        let n = (h & !RUN) as usize * 4;
        if n == 0 {
            return Err(Malformed::Empty);
        }
        if n > body - at {
            return Err(Malformed::Overrun);
        }
        let d = &mut dst[at..at + n];
        if h & RUN != 0 {
            let w = take(&mut packed, 4)?;
            fill(d, [w[0], w[1], w[2], w[3]]);
        } else {
            d.copy_from_slice(take(&mut packed, n)?);
        }
        at += n;
    }
    let tail = &mut dst[body..];
    match packed.len().cmp(&tail.len()) {
        std::cmp::Ordering::Less => Err(Malformed::Short),
        std::cmp::Ordering::Greater => Err(Malformed::Trailing),
        std::cmp::Ordering::Equal => {
            tail.copy_from_slice(packed);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// llama.cpp's causal mask: row `t` sees cells `0..=t` (0.0), the rest is -inf.
    fn mask(n_kv: usize, n_tokens: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n_kv * n_tokens * 4);
        for t in 0..n_tokens {
            for c in 0..n_kv {
                let x = if c <= t { 0.0f32 } else { f32::NEG_INFINITY };
                v.extend_from_slice(&x.to_le_bytes());
            }
        }
        v
    }

    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn round_trip(src: &[u8]) -> usize {
        let p = pack(src, usize::MAX).expect("no limit");
        let mut back = vec![0xAAu8; src.len()];
        unpack(&p, &mut back).expect("unpacks");
        assert!(back == src, "{} bytes came back different", src.len());
        p.len()
    }

    #[test]
    fn masks_pack_small_and_come_back_exact() {
        let m = mask(512, 512);
        let n = round_trip(&m);
        assert!(n < m.len() / 64, "a 1 MiB mask packed into {n} bytes");
        assert!(pack_if_worth(&m).is_some());
        // An f16 mask and a mask whose rows do not start on a block boundary.
        let f16: Vec<u8> =
            (0..512 * 300).flat_map(|k| if k % 300 <= k / 300 { 0u16 } else { 0xFC00 }.to_le_bytes()).collect();
        assert!(round_trip(&f16) < f16.len() / 16);
        assert!(round_trip(&mask(259, 77)) < 259 * 77 * 4 / 8);
    }

    #[test]
    fn every_shape_comes_back_exact() {
        // Runs of every length around MIN_RUN and the block size, at every alignment, with
        // literal words and left-over bytes between and around them.
        let w = |x: u32| x.to_le_bytes();
        for lead in 0..6 {
            for len in [0, 1, 3, 6, 7, 8, 9, 15, 16, 17, 31, 33, 64, 200] {
                for tail in 0..6 {
                    let mut v = noise(lead * 4 + 1, 7)[..lead * 4].to_vec();
                    for _ in 0..len {
                        v.extend_from_slice(&w(0xFF80_0000));
                    }
                    for _ in 0..len / 2 {
                        v.extend_from_slice(&w(0));
                    }
                    v.extend_from_slice(&noise(tail * 3 + 1, 9)[..tail * 3]);
                    round_trip(&v);
                }
            }
        }
        round_trip(&[]);
        round_trip(&[1, 2, 3]);
        round_trip(&noise(100_003, 3));
    }

    #[test]
    fn random_mixes_come_back_exact() {
        // Runs of a few words (some alike, some not) and noise of any length, in any order.
        let mut r = noise(1 << 20, 13).into_iter();
        let mut next = || r.next().unwrap() as usize;
        for _ in 0..300 {
            let mut v = Vec::new();
            for _ in 0..next() % 12 {
                if next() % 2 == 0 {
                    let w = [0u8, 0x80, 0xff, 0x3f][next() % 4];
                    v.extend(std::iter::repeat_n([w, 0, 0, w], next() % 40).flatten());
                } else {
                    v.extend((0..next() % 30).map(|_| next() as u8));
                }
            }
            round_trip(&v);
        }
    }

    #[test]
    fn one_word_over_the_whole_copy_is_told() {
        let ones: Vec<u8> = std::iter::repeat_n(1.0f32.to_le_bytes(), 1 << 16).flatten().collect();
        let p = pack(&ones, usize::MAX).unwrap();
        assert_eq!(single_word(&p, ones.len() as u64), Some(1.0f32.to_le_bytes()));
        assert_eq!(single_word(&p, ones.len() as u64 + 4), None, "shorter than the copy");
        let mut two = ones.clone();
        two.extend([0; 64]);
        assert_eq!(single_word(&pack(&two, usize::MAX).unwrap(), two.len() as u64), None);
        let m = mask(64, 64);
        assert_eq!(single_word(&pack(&m, usize::MAX).unwrap(), m.len() as u64), None);
        let mut odd = ones.clone();
        odd.push(1);
        assert_eq!(single_word(&pack(&odd, usize::MAX).unwrap(), odd.len() as u64), None, "a byte left over");
    }

    #[test]
    fn data_without_runs_is_not_packed() {
        let n = noise(1 << 20, 5);
        assert!(pack_if_worth(&n).is_none());
        assert!(pack(&n, n.len() / 8).is_none(), "the limit stops it");
        // Runs only after the probed prefix: still not packed unless the whole is worth it.
        let mut late = noise(PROBE, 11);
        late.extend(mask(512, 512));
        assert!(pack_if_worth(&late).is_none(), "the prefix decides");
        assert!(pack_if_worth(&mask(64, 64)).is_none(), "below PACK_MIN");
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let m = mask(64, 300);
        let p = pack(&m, usize::MAX).unwrap();
        let mut dst = vec![0u8; m.len()];
        assert_eq!(unpack(&p[..p.len() - 1], &mut dst), Err(Malformed::Short));
        let mut more = p.clone();
        more.push(0);
        assert_eq!(unpack(&more, &mut dst), Err(Malformed::Trailing));
        assert_eq!(unpack(&p, &mut dst[..m.len() - 4]), Err(Malformed::Overrun));
        assert_eq!(unpack(&0u32.to_le_bytes(), &mut dst), Err(Malformed::Empty));
        assert_eq!(unpack(&(RUN | 0x7fff_ffff).to_le_bytes(), &mut dst), Err(Malformed::Overrun));
        assert_eq!(unpack(&[], &mut dst), Err(Malformed::Short));
        // Random bytes never panic.
        for seed in 1..200 {
            let junk = noise(64, seed);
            let _ = unpack(&junk, &mut dst);
        }
    }
}
