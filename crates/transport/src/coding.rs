//! When and how a client codes the chunks it stripes over lanes where they are dequantized
//! rows (`protocol::dequant`); the server's lane readers decode them (`crate::lanes`).

use crate::addr::{Address, Stream};
use crate::framing::write_frame;
use protocol::frame::{FLAG_CODED, Header, OP_LANE};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

/// When a client codes the chunks it stripes where they are dequantized rows
/// (`protocol::dequant`): a prompt batch's 4 MiB of Q8_0 token rows then cross as 1.2 MiB
/// (F16 rows as 2 MiB), coded by the lanes' writers (on an H100 host's core 1 MiB of Q8_0
/// rows in about 100 µs, F16 in 117-159) and decoded by the server's readers (48 µs; F16
/// 97-160). That pays where the bytes are dear: over TCP limited to 10 Gbit/s pp512 of the
/// 1B Q8_0 model ran at 0.918 of native coded against 0.766 as it is (one lane: 0.876
/// against 0.756), F16 0.812 against 0.684. It does not where the kernel copies them
/// between two processes of one host at 5-10 GB/s a lane: coded, unix and TCP loopback gave
/// 0.947 / 0.943 against 0.976 / 0.959 (the application's copy calls 150-250 µs longer a
/// batch), and TLS over loopback was even (its copies shorter by 200 µs, the GPU's wait
/// longer by 50-200; one call each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Never,
    Always,
    /// While the lanes deliver under [`FAST_LINK`] by the kernel's estimate, or before
    /// there is one: TCP or TLS to another host.
    BelowFast,
}

/// The link rate (bytes a second, all lanes together) from which coding costs more than
/// it saves, by the costs above: about 19 GB/s; a margin under it.
pub const FAST_LINK: u64 = 12_000_000_000;

impl Coding {
    /// As `set` says (`VGPU_CODE` or `code` in the client's file) where set; else by the
    /// rate over TCP or TLS to another host, and never over unix sockets, vsock or this
    /// host's loopback.
    pub fn choose(address: &Address, loopback: bool, set: Option<bool>) -> Coding {
        match set {
            Some(false) => Coding::Never,
            Some(true) => Coding::Always,
            _ if matches!(address, Address::Tcp(_) | Address::Tls(_)) && !loopback => Coding::BelowFast,
            _ => Coding::Never,
        }
    }
}

/// Write a lane's chunk of frame `seq`'s bulk (`pieces`, at `offset` of it) coded where it
/// codes, counting coded parts in `count`. A chunk of several pieces (kept rows' frames) is
/// joined first: a copy at memory speed, for bytes bound for a slow link.
pub(crate) fn write_chunk(
    s: &mut Stream,
    seq: u32,
    offset: usize,
    pieces: &[&[u8]],
    count: &AtomicU64,
) -> io::Result<()> {
    CODED.with_borrow_mut(|(joined, coded)| {
        let src: &[u8] = match pieces {
            [piece] => piece,
            _ => {
                joined.clear();
                pieces.iter().for_each(|p| joined.extend_from_slice(p));
                joined
            }
        };
        write_coded(s, seq, offset, src, coded, count)
    })
}

/// Coded chunks are cut in parts of this size, so that the link carries one part while the
/// next is coded (a lone lane's 4 MiB took 0.4 ms to code in one go).
const CODED_PART: usize = 256 << 10;

/// Write `src`, the bytes at `offset` of frame `seq`'s bulk, as coded parts while they code
/// (counting them in `count`), the rest as it is.
fn write_coded(
    s: &mut Stream,
    seq: u32,
    offset: usize,
    src: &[u8],
    coded: &mut Vec<u8>,
    count: &AtomicU64,
) -> io::Result<()> {
    let mut at = 0;
    while at < src.len() {
        let part = &src[at..(at + CODED_PART).min(src.len())];
        if !protocol::dequant::encode(part, coded) {
            break;
        }
        let mut h = Header::request(OP_LANE, seq, (offset + at) as u64, true, 8, coded.len());
        h.flags |= FLAG_CODED;
        write_frame(s, &h, &(part.len() as u64).to_le_bytes(), &[coded])?;
        count.fetch_add(1, Ordering::Relaxed);
        at += part.len();
    }
    match &src[at..] {
        [] => Ok(()),
        rest => write_frame(s, &crate::lanes::chunk_header(seq, offset + at, rest.len()), &[], &[rest]),
    }
}

thread_local! {
    /// A writing thread's joined chunk and coded chunk, their memory kept for the next (fresh
    /// pages would cost more than the coding).
    static CODED: std::cell::RefCell<(Vec<u8>, Vec<u8>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coding_is_chosen_where_bytes_are_dear() {
        let a = |s: &str| s.parse::<Address>().unwrap();
        assert_eq!(Coding::choose(&a("unix:/tmp/x.sock"), false, None), Coding::Never);
        assert_eq!(Coding::choose(&a("tcp://127.0.0.1:7070"), true, None), Coding::Never);
        assert_eq!(Coding::choose(&a("tcp://10.0.0.2:7070"), false, None), Coding::BelowFast);
        assert_eq!(Coding::choose(&a("tls://127.0.0.1:7443"), true, None), Coding::Never);
        assert_eq!(Coding::choose(&a("tls://10.0.0.2:7443"), false, None), Coding::BelowFast);
        assert_eq!(Coding::choose(&a("unix:/tmp/x.sock"), false, Some(true)), Coding::Always);
        assert_eq!(Coding::choose(&a("tls://10.0.0.2:7443"), false, Some(false)), Coding::Never);
    }
}
