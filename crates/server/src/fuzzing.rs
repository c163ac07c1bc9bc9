//! What the fuzz targets (`fuzz/fuzz_targets/*.rs`) run, and what `tests/badinput.rs` runs
//! a bounded number of times in the normal test suite: the server's decoding of untrusted
//! bytes. Whatever the input, the answer is an error or a value, never a panic, and no
//! buffer is sized from a length the peer claims but does not send.

use crate::Session;
use crate::sim::{Sim, snapshot};
use protocol::frame::{HEADER_LEN, Header};
use protocol::hello::{Hello, Welcome};
use protocol::{Backend, Io};

/// Frame headers and whole frames read back to back, as a worker reads its socket.
pub fn frame(data: &[u8]) {
    if let Ok(h) = Header::decode(&data[..data.len().min(HEADER_LEN)]) {
        assert!(h.check().is_ok());
    }
    let (mut args, mut bulk) = (Vec::new(), Vec::new());
    let mut r = data;
    while let Ok(h) = transport::read_frame(&mut r, &mut args, &mut bulk) {
        assert_eq!(args.len(), h.args_len as usize);
        assert_eq!(bulk.len() as u64, h.bulk_len);
        let _ = (protocol::is_oneway(h.op), protocol::op_name(h.op), h.is_heartbeat());
    }
}

/// The handshake as the server decodes and judges it (version, wire table, token), and
/// the reply as a client decodes it.
pub fn handshake(data: &[u8]) {
    if let Ok(hello) = postcard::from_bytes::<Hello>(data) {
        let _ = crate::worker::refusal(&hello, None);
        let with_token = crate::worker::refusal(&hello, Some("fuzz-token"));
        if hello.token != "fuzz-token" {
            assert!(with_token.is_some(), "a wrong token was accepted");
        }
        let again = postcard::to_allocvec(&hello).expect("encode");
        assert_eq!(postcard::from_bytes::<Hello>(&again).ok(), Some(hello));
    }
    let _ = postcard::from_bytes::<Welcome>(data);
}

/// Quota of the sim behind [`dispatch`]: small, so that forged sizes stay cheap.
const LIMIT: u64 = 256 << 10;
/// Calls per input.
const CALLS: usize = 48;

/// A sequence of calls on a fresh sim session (two devices, a small quota), decoded by
/// `protocol::dispatch` as a worker decodes them. The input is read as a little program:
/// each call picks an opcode (any `u32` now and then, so unknown ones too), then either raw
/// argument bytes or a row of varints drawn from interesting values and the handles and
/// addresses earlier calls returned (so that copies, memsets and handle checks get past
/// the decoder), then bulk bytes, and sometimes a forged current context.
pub fn dispatch(data: &[u8]) {
    let mut sim = Sim::new(snapshot(2, 0), Some(LIMIT));
    let mut out = Vec::new();
    let ctx = {
        let mut io = Io { bulk_in: &[], bulk_out: &mut out };
        sim.cuDevicePrimaryCtxRetain(&mut io, 0).expect("primary context")
    };
    sim.set_context(ctx);
    let mut seen = vec![ctx];
    let mut u = Bytes(data);
    for _ in 0..CALLS {
        let Some(sel) = u.byte() else { break };
        let op = if sel == 0xff { u.u32() } else { u32::from(u.u16()) % (protocol::OP_NAMES.len() as u32 + 2) };
        let mode = u.byte().unwrap_or(0);
        let args = if mode & 1 == 0 {
            let n = u.byte().unwrap_or(0) as usize;
            u.take(n).to_vec()
        } else {
            let mut a = Vec::new();
            for _ in 0..u.byte().unwrap_or(0) % 24 {
                let v = u.value(&seen);
                varint(&mut a, v);
            }
            a
        };
        let bulk = if mode & 2 != 0 {
            let n = u.u16() as usize % 8192;
            u.take(n).to_vec()
        } else {
            Vec::new()
        };
        if mode & 4 != 0 {
            let c = u.value(&seen);
            sim.set_context(c);
        }
        out.clear();
        let mut io = Io { bulk_in: &bulk, bulk_out: &mut out };
        if let Ok(Ok(v)) = protocol::dispatch(&mut sim, op, &args, &mut io) {
            // Remember what came back (addresses, handles) for later calls to use.
            let mut rest = &v[..];
            while let Ok((x, r)) = postcard::take_from_bytes::<u64>(rest) {
                seen.push(x);
                rest = r;
                if seen.len() > 64 {
                    seen.remove(1);
                }
            }
        }
        sim.set_context(ctx);
    }
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }
    fn u16(&mut self) -> u16 {
        let b = self.take(2);
        b.iter().rev().fold(0, |a, &x| (a << 8) | x as u16)
    }
    fn u32(&mut self) -> u32 {
        let b = self.take(4);
        b.iter().rev().fold(0, |a, &x| (a << 8) | x as u32)
    }
    fn u64(&mut self) -> u64 {
        let b = self.take(8);
        b.iter().rev().fold(0, |a, &x| (a << 8) | x as u64)
    }
    /// A value likely to matter: small numbers, edges, something returned earlier (as is
    /// or a little off), or arbitrary bits.
    fn value(&mut self, seen: &[u64]) -> u64 {
        let c = self.byte().unwrap_or(0);
        match c % 8 {
            0 => (c / 8) as u64,
            1 => [0, 1, 2, 4, 8, 512, 4096, 1 << 16, 1 << 20, LIMIT, LIMIT + 1][(c as usize / 8) % 11],
            2 => [u64::MAX, u64::MAX - 1, 1 << 63, (1 << 63) - 1, u32::MAX as u64, i32::MAX as u64, 1 << 32, 1 << 40]
                [(c as usize / 8) % 8],
            3 | 4 => seen[(c as usize / 8) % seen.len()],
            5 => seen[(c as usize / 8) % seen.len()].wrapping_add(self.byte().unwrap_or(0) as u64 * 64),
            6 => seen[(c as usize / 8) % seen.len()].wrapping_sub(self.byte().unwrap_or(0) as u64 + 1),
            _ => self.u64(),
        }
    }
}
