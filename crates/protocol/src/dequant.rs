//! Host-to-device `f32` data coded by blocks of 32 values that were dequantized: a lossless
//! coding of a lane's chunk (see `transport::lanes`).
//!
//! The case is the input embeddings llama.cpp uploads with every prompt batch: the rows of
//! the token table, which stays in host memory, dequantized to `f32` on the CPU (4 MiB a
//! 512-token batch for a 1B model, 8 MiB for 8B). Over a socket those bytes are most of
//! what a batch costs: the kernel copies each twice on cores the application keeps busy.
//! A Q8_0 table's row is blocks of 32 values `d × q`, `d` an `f16` scale and `q` an `i8`:
//! 128 bytes that 36 bytes say exactly. An F16 table's row is `f16` values, 64 bytes a
//! block. Compressors for general data find little in either (the products' mantissas
//! differ in every bit that carries information), while the check below runs at several
//! GB/s a core and the decoding at memory speed.
//!
//! Every block is checked by decoding it and comparing the bits, so any data is coded
//! exactly; data that is neither costs a glance ([`encode`] gives up early).
//!
//! Format, for `len` bytes: a mode byte per whole block of 128 bytes ([`RAW`], [`SCALED`],
//! [`HALF`]), then each block's payload in order (raw: its 128 bytes; scaled: the scale as a
//! little-endian `f32`, then 32 `i8`; half: 32 little-endian `f16`), then the `len % 128`
//! bytes left over, as they are.

use zerocopy::IntoBytes;

/// Bytes in a block: 32 `f32`, a Q8_0 block's values.
pub const BLOCK: usize = 128;
const N: usize = BLOCK / 4;

/// A block sent as it is.
pub const RAW: u8 = 0;
/// A block of `scale × q` (`q` an `i8`): 36 bytes.
pub const SCALED: u8 = 1;
/// A block of values that are all `f16` exactly (normal or zero): 64 bytes.
pub const HALF: u8 = 2;

/// How many blocks [`encode`] looks at before giving up on data it cannot code.
const PROBE: usize = 64;
/// Coded output must be at most `len * WORTH_NUM / WORTH_DEN` to be sent coded.
const WORTH_NUM: usize = 3;
const WORTH_DEN: usize = 4;

/// Why coded bytes could not be decoded into the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("coded blocks end before the destination is full")]
    Short,
    #[error("a block of unknown mode")]
    Mode,
    #[error("bytes left over after the coded blocks")]
    Trailing,
}

/// Value `j` of block `b`, as bits.
#[inline(always)]
fn word(b: &[u8; BLOCK], j: usize) -> u32 {
    u32::from_le_bytes(b[4 * j..4 * j + 4].try_into().expect("4 bytes"))
}

fn store(d: &mut [u8], x: &[u32; N]) {
    let d: &mut [u8; BLOCK] = d.try_into().expect("a block");
    for (j, x) in x.iter().enumerate() {
        d[4 * j..4 * j + 4].copy_from_slice(&x.to_le_bytes());
    }
}

/// `1.5 × 2^23`: added to a float `t` with `|t| < 2^22`, it pushes the fraction out of the
/// mantissa, leaving `t` rounded (ties to even) in the low bits: `round` and a conversion to
/// an integer as a vector add and subtract (`round` is a library call on plain x86-64).
const MAGIC: f32 = 12_582_912.0;

/// Blocks whose scales are worked out together: the divisions' latency then overlaps.
const GROUP: usize = 8;

/// Each block's largest magnitude (as bits; 0 for missing blocks), the scale that would make
/// it `scale × q` (the largest magnitude over 127: a Q8_0 block's largest `q` is ±127, so
/// that is its `d` exactly), and that scale's inverse.
#[inline(always)]
fn scales(group: &[u8]) -> ([u32; GROUP], [f32; GROUP], [f32; GROUP]) {
    let mut amax = [0; GROUP];
    for (a, b) in amax.iter_mut().zip(group.chunks_exact(BLOCK)) {
        let b: &[u8; BLOCK] = b.try_into().expect("a block");
        *a = (0..N).fold(0, |m, j| m.max(word(b, j) & 0x7fff_ffff));
    }
    let (mut scale, mut inv) = ([0.0; GROUP], [0.0; GROUP]);
    for j in 0..GROUP {
        let a = f32::from_bits(amax[j]);
        (scale[j], inv[j]) = (a / 127.0, 127.0 / a);
    }
    (amax, scale, inv)
}

/// Whether the block is `scale × q` exactly, `q` in `-128..=127`, with its `q` (`inv`: about
/// `1 / scale`; rounding absorbs its error, and the check whatever is left).
#[inline(always)]
fn fits(x: &[u8; BLOCK], scale: f32, inv: f32, q: &mut [i8; N]) -> bool {
    let mut bad = false;
    for (j, q) in q.iter_mut().enumerate() {
        let b = word(x, j);
        let t = f32::from_bits(b) * inv + MAGIC;
        let r = t - MAGIC;
        // Out of an i8's range (possible with the last block's scale) it would wrap.
        bad |= ((r * scale).to_bits() != b) | !(-128.0..=127.0).contains(&r);
        *q = t.to_bits().wrapping_sub(MAGIC.to_bits()) as i8;
    }
    !bad
}

/// The scale that makes the block `scale × q` exactly, if one of three does: the largest
/// magnitude over 127 (a Q8_0 block's `d`: its largest `q` is ±127) or over 128 (a `-128`),
/// or the scale of the last block that had one (`last`: tensors quantized with one scale for
/// many blocks, as the tests' random models are). `amax`, `s`, `inv`: see [`scales`].
#[inline(always)]
fn scaled(x: &[u8; BLOCK], amax: u32, s: f32, inv: f32, last: &mut (f32, f32), q: &mut [i8; N]) -> Option<f32> {
    if amax >= 0x7f80_0000 {
        return None; // inf or NaN
    }
    if amax == 0 {
        // All zero: +0 only, since 0 × 0 decodes as +0.
        *q = [0; N];
        return x.iter().all(|&b| b == 0).then_some(0.0);
    }
    let found = if fits(x, s, inv, q) {
        (s, inv)
    } else if last.0 != 0.0 && fits(x, last.0, last.1, q) {
        *last
    } else if fits(x, s * (127.0 / 128.0), inv * (128.0 / 127.0), q) {
        (s * (127.0 / 128.0), inv * (128.0 / 127.0))
    } else {
        return None;
    };
    *last = found;
    Some(found.0)
}

/// The block as `f16` values, if it is exactly that: every value zero or an `f16` normal
/// number (subnormals and specials stay raw). Branch-free, so that it runs as vector code.
#[inline(always)]
fn halves(x: &[u8; BLOCK], h: &mut [u16; N]) -> bool {
    let mut bad = false;
    for (j, h) in h.iter_mut().enumerate() {
        let b = word(x, j);
        let mag = b & 0x7fff_ffff;
        // f16 normal exponents -14..=15 are f32's biased 113..=142; 10 mantissa bits survive.
        let normal = ((b >> 23) & 0xff).wrapping_sub(113) <= 29 && b & 0x1fff == 0;
        bad |= !(normal || mag == 0);
        let v = if mag == 0 { 0 } else { (mag >> 13).wrapping_sub(112 << 10) };
        *h = ((b >> 16) & 0x8000 | v & 0x7fff) as u16;
    }
    !bad
}

/// The `f32` bits of an `f16` that [`halves`] made.
#[inline(always)]
fn from_half(h: u16) -> u32 {
    let sign = ((h & 0x8000) as u32) << 16;
    let rest = (h & 0x7fff) as u32;
    sign | if rest == 0 { 0 } else { (rest + (112 << 10)) << 13 }
}

/// Code `src` into `out` (cleared first; its memory is reused, fresh pages would cost more
/// than the coding) and say whether that saves a quarter of it. Data that is not dequantized
/// blocks costs a look at its first `PROBE` blocks.
pub fn encode(src: &[u8], out: &mut Vec<u8>) -> bool {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { encode_avx2(src, out) };
    }
    encode_with(src, out)
}

/// [`encode`] compiled for AVX2: eight values an instruction instead of plain x86-64's four
/// (1 MiB of Q8_0 rows in 70 µs against 108 on the development machine).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn encode_avx2(src: &[u8], out: &mut Vec<u8>) -> bool {
    encode_with(src, out)
}

#[inline(always)]
fn encode_with(src: &[u8], out: &mut Vec<u8>) -> bool {
    let blocks = src.len() / BLOCK;
    let limit = src.len() / WORTH_DEN * WORTH_NUM;
    out.clear();
    out.resize(blocks, RAW);
    let (mut q, mut h) = ([0i8; N], [0u16; N]);
    let mut last = SCALED;
    let mut last_scale = (0.0, 0.0);
    for (g, group) in src[..blocks * BLOCK].chunks(GROUP * BLOCK).enumerate() {
        let (amax, scale, inv) = scales(group);
        for (j, b) in group.chunks_exact(BLOCK).enumerate() {
            let i = g * GROUP + j;
            let x: &[u8; BLOCK] = b.try_into().expect("a block");
            // Rows come in one kind or the other: the kind of the block before is tried first.
            // (Not a closure: one would be compiled without the caller's AVX2.)
            let first = if last != HALF { scaled(x, amax[j], scale[j], inv[j], &mut last_scale, &mut q) } else { None };
            let (mode, s) = if let Some(s) = first {
                (SCALED, s)
            } else if halves(x, &mut h) {
                (HALF, 0.0)
            } else if let Some(s) =
                if last == HALF { scaled(x, amax[j], scale[j], inv[j], &mut last_scale, &mut q) } else { None }
            {
                (SCALED, s)
            } else {
                (RAW, 0.0)
            };
            match mode {
                SCALED => {
                    let mut p = [0u8; 4 + N];
                    p[..4].copy_from_slice(&s.to_le_bytes());
                    p[4..].copy_from_slice(q.as_bytes());
                    out.extend_from_slice(&p);
                }
                HALF => {
                    let mut p = [0u8; 2 * N];
                    for (p, h) in p.chunks_exact_mut(2).zip(h) {
                        p.copy_from_slice(&h.to_le_bytes());
                    }
                    out.extend_from_slice(&p);
                }
                _ => out.extend_from_slice(b),
            }
            (out[i], last) = (mode, mode);
            // Judged at the probe and at the end: coded bytes so far against raw ones.
            let seen = i + 1;
            if (seen == PROBE || seen == blocks) && out.len() - blocks + seen > seen * BLOCK / WORTH_DEN * WORTH_NUM {
                return false;
            }
        }
    }
    out.extend_from_slice(&src[blocks * BLOCK..]);
    out.len() <= limit
}

/// Decode `coded` into `dst`, which it must fill exactly.
pub fn decode(coded: &[u8], dst: &mut [u8]) -> Result<(), Malformed> {
    let blocks = dst.len() / BLOCK;
    let (modes, mut rest) = coded.split_at_checked(blocks).ok_or(Malformed::Short)?;
    let mut take = |n: usize| -> Result<&[u8], Malformed> {
        let (a, b) = rest.split_at_checked(n).ok_or(Malformed::Short)?;
        rest = b;
        Ok(a)
    };
    for (&mode, d) in modes.iter().zip(dst.chunks_exact_mut(BLOCK)) {
        match mode {
            RAW => d.copy_from_slice(take(BLOCK)?),
            SCALED => {
                let p: &[u8; 4 + N] = take(4 + N)?.try_into().expect("a block's values");
                let scale = f32::from_le_bytes(p[..4].try_into().expect("4 bytes"));
                let mut x = [0u32; N];
                for (x, &q) in x.iter_mut().zip(&p[4..]) {
                    *x = (q as i8 as f32 * scale).to_bits();
                }
                store(d, &x);
            }
            HALF => {
                let p: &[u8; 2 * N] = take(2 * N)?.try_into().expect("a block's values");
                let mut x = [0u32; N];
                for (j, x) in x.iter_mut().enumerate() {
                    *x = from_half(u16::from_le_bytes(p[2 * j..2 * j + 2].try_into().expect("2 bytes")));
                }
                store(d, &x);
            }
            _ => return Err(Malformed::Mode),
        }
    }
    let tail = dst.len() % BLOCK;
    dst[blocks * BLOCK..].copy_from_slice(take(tail)?);
    if rest.is_empty() { Ok(()) } else { Err(Malformed::Trailing) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows as llama.cpp's CPU `get_rows` makes them from a Q8_0 table: `f16` scales
    /// (rounded as `f16`) times `i8` values whose largest magnitude is 127.
    fn q8_rows(blocks: usize, seed: u32) -> Vec<u8> {
        let mut s = seed;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            s
        };
        let mut out = Vec::new();
        for _ in 0..blocks {
            let d = from_half(0x2000 + (next() % 0x1800) as u16); // about 2^-7 .. 2^-1
            let d = f32::from_bits(d);
            let top = next() as usize % N;
            for j in 0..N {
                let q = if j == top { if next() % 2 == 0 { 127 } else { -127 } } else { (next() % 255) as i32 - 127 };
                out.extend_from_slice(&(q as f32 * d).to_le_bytes());
            }
        }
        out
    }

    fn round_trip(src: &[u8]) -> Option<usize> {
        let mut coded = Vec::new();
        if !encode(src, &mut coded) {
            return None;
        }
        let mut back = vec![0xa5u8; src.len()];
        decode(&coded, &mut back).unwrap();
        assert!(back == src, "decoded exactly");
        Some(coded.len())
    }

    #[test]
    fn q8_rows_shrink_by_three_and_a_half() {
        let src = q8_rows(8192, 7); // 1 MiB
        let n = round_trip(&src).expect("coded");
        assert_eq!(n, 8192 * (1 + 4 + N));
    }

    /// The plain build of the coder agrees with the one the CPU picked (AVX2 where it has it).
    #[test]
    fn both_builds_code_alike() {
        let mut src = q8_rows(500, 11);
        src.extend((0..N * 3).flat_map(|i| (i as f32 * 0.37).to_le_bytes()));
        let (mut a, mut b) = (Vec::new(), Vec::new());
        assert!(encode(&src, &mut a));
        assert!(encode_with(&src, &mut b));
        assert!(a == b);
    }

    #[test]
    fn half_rows_halve() {
        let src: Vec<u8> = (0..4096u32)
            .flat_map(|i| {
                f32::from_bits(from_half((i.wrapping_mul(2654435761) >> 16) as u16 & 0xbbff | 0x0400)).to_le_bytes()
            })
            .collect();
        assert_eq!(round_trip(&src), Some(src.len() / 128 * (1 + 64)));
    }

    /// Blocks of one scale whose values need not reach ±127, as gen_gguf's random Q8_0
    /// models have (every byte a value), and blocks whose largest magnitude is a -128.
    #[test]
    fn blocks_of_one_scale_and_of_minus_128_are_coded() {
        let d = f32::from_bits(from_half(0x1019)); // 0.0005 as an f16
        let mut src = Vec::new();
        for i in 0..2048u32 {
            for j in 0..N as u32 {
                let q = (i.wrapping_mul(2654435761) ^ j.wrapping_mul(40503)) as u8 as i8;
                src.extend_from_slice(&(q as f32 * d).to_le_bytes());
            }
        }
        // -128 the largest magnitude, with another scale.
        src.extend((0..N).flat_map(|j| ((j as f32 - 128.0) * 0.25).to_le_bytes()));
        assert_eq!(round_trip(&src), Some(2049 * (1 + 4 + N)));
    }

    /// Blocks of every kind mixed, in runs that share a scale or not, with specials and
    /// values just outside what a kind holds, cut at odd lengths: whatever codes decodes to
    /// the same bits.
    #[test]
    fn mixed_blocks_round_trip() {
        let mut s = 0x9e37_79b9u32;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            s
        };
        let mut src = Vec::new();
        let (mut scale, mut kind, mut run) = (1.0f32, 0, 0);
        let half = |r: u32| f32::from_bits(from_half(r as u16 & 0xbfff | 0x0400));
        for _ in 0..6000 {
            // Runs of one kind and, for some kinds, one scale.
            if run == 0 {
                (kind, run, scale) = (next() % 6, 20 + next() % 200, half(next()));
            }
            run -= 1;
            let d = half(next()); // this block's own scale
            let (top, wide) = (next() as usize % N, next() % 8 == 0);
            for j in 0..N {
                let r = next();
                let v = match kind {
                    // Q8_0: the block's own scale, a ±127 among its values.
                    0 => (if j == top { 127 } else { (r % 255) as i32 - 127 }) as f32 * d,
                    // One scale for the run, values over the whole i8 range; some blocks with
                    // a value one step past either end, which must not code.
                    1 | 2 if kind == 2 && wide && j == top => (if r % 2 == 0 { 128.0 } else { -129.0 }) * scale,
                    1 | 2 => ((r % 256) as i32 - 128) as f32 * scale,
                    3 => half(r),
                    4 if wide => f32::from_bits(r),
                    4 => [0.0, -0.0, f32::INFINITY, f32::NAN, f32::MIN_POSITIVE, 1e-40][(r % 6) as usize],
                    _ => (r % 3) as f32 * d,
                };
                src.extend_from_slice(&v.to_le_bytes());
            }
        }
        let (mut coded, mut back) = (Vec::new(), Vec::new());
        let mut at = 0;
        while at < src.len() {
            let end = (at + 1 + next() as usize % 40_000).min(src.len());
            let part = &src[at..end];
            if encode(part, &mut coded) {
                back.resize(part.len(), 0xa5);
                decode(&coded, &mut back).unwrap();
                assert!(back == part, "bytes {at}..{end}");
            }
            assert!(encode_with(part, &mut back) == encode(part, &mut coded) && back == coded);
            at = end;
        }
    }

    /// A value the last block's scale makes -129 is no `i8`: such a block goes raw.
    #[test]
    fn values_out_of_an_i8_stay_raw() {
        let mut src: Vec<u8> = (0..N).flat_map(|j| (j as f32 * 4.0 - 127.0).max(-127.0).to_le_bytes()).collect();
        src[..4].copy_from_slice(&127.0f32.to_le_bytes());
        // Whole numbers, one of them -129 (the scale of 1.0 from the block before fits the
        // others).
        src.extend((0..N).flat_map(|j| if j == 31 { -129.0f32 } else { j as f32 }.to_le_bytes()));
        // Enough such rows to be worth coding.
        let rows = src.repeat(40);
        assert!(round_trip(&rows).is_some());
    }

    #[test]
    fn a_tail_and_odd_blocks_survive() {
        let mut src = q8_rows(300, 3);
        // A block of pi, a block with a NaN, a block with -0, and 77 bytes of tail.
        src.extend((0..N).flat_map(|_| std::f32::consts::PI.to_le_bytes()));
        src.extend((0..N).flat_map(|i| if i == 5 { f32::NAN } else { 1.0 }.to_le_bytes()));
        src.extend((0..N).flat_map(|i| if i == 9 { -0.0f32 } else { 0.0 }.to_le_bytes()));
        src.extend((0..77u8).map(|i| i.wrapping_mul(37)));
        let n = round_trip(&src).expect("coded");
        assert!(n < src.len() / 3, "{n}");
        // All zeros code as scaled blocks.
        assert_eq!(round_trip(&[0u8; 4096]), Some(32 * 37));
    }

    #[test]
    fn data_that_is_not_blocks_is_not_coded() {
        let noise: Vec<u8> = (0..1u32 << 18).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        let mut out = Vec::new();
        assert!(!encode(&noise, &mut out));
        // Mostly noise after the probe: judged again at the end.
        let mut mixed = q8_rows(PROBE, 1);
        mixed.extend_from_slice(&noise);
        assert!(!encode(&mixed, &mut out));
        // Smaller than a block: nothing to gain.
        assert!(!encode(&[1, 2, 3], &mut out));
    }

    #[test]
    fn malformed_input_is_an_error() {
        let src = q8_rows(4, 9);
        let mut coded = Vec::new();
        assert!(encode(&src, &mut coded));
        let mut dst = vec![0u8; src.len()];
        assert_eq!(decode(&coded[..coded.len() - 1], &mut dst), Err(Malformed::Short));
        let mut extra = coded.clone();
        extra.push(0);
        assert_eq!(decode(&extra, &mut dst), Err(Malformed::Trailing));
        let mut bad = coded.clone();
        bad[2] = 9;
        assert_eq!(decode(&bad, &mut dst), Err(Malformed::Mode));
        assert_eq!(decode(&[], &mut dst), Err(Malformed::Short));
    }

    #[test]
    fn every_normal_half_round_trips() {
        for h in 0..=u16::MAX {
            let b = from_half(h);
            let exp = (h >> 10) & 0x1f;
            if exp == 0 && h & 0x3ff != 0 || exp == 0x1f {
                continue; // subnormal, inf, NaN: not coded
            }
            let mut block = [0u8; BLOCK];
            block[..4].copy_from_slice(&b.to_le_bytes());
            let mut back = [0u16; N];
            assert!(halves(&block, &mut back), "{h:#x}");
            assert_eq!(back[0], h);
            // And it agrees with the hardware's idea of the value.
            assert_eq!(f32::from_bits(b), half_value(h), "{h:#x}");
        }
    }

    /// An `f16`'s value from its definition.
    fn half_value(h: u16) -> f32 {
        let s = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
        let (e, m) = (((h >> 10) & 0x1f) as i32, (h & 0x3ff) as f32);
        if e == 0 { s * m * 2f32.powi(-24) } else { s * (1.0 + m / 1024.0) * 2f32.powi(e - 15) }
    }
}
