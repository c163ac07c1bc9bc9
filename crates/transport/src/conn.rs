//! The client's connection to one server: handshake, pipelined one-way calls, and
//! synchronous calls whose every wait is bounded.

use crate::addr::{Address, Stream};
use crate::framing::{read_exact_into, read_header, write_frame};
use parking_lot::Mutex;
use protocol::frame::{Header, OP_HELLO};
use protocol::hello::{Hello, Welcome};
use protocol::Call;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Connecting and the handshake together.
    pub connect: Duration,
    /// Longest silence while waiting for a reply; a working server sends heartbeats more
    /// often than this, so only a dead or stopped one exceeds it.
    pub silence: Duration,
    /// Longest a single write may block.
    pub write: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts { connect: Duration::from_secs(3), silence: Duration::from_secs(4), write: Duration::from_secs(5) }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The call reached the GPU and failed there with this API status code.
    #[error("remote call failed with status {0}")]
    Api(u32),
    /// The server cannot be reached or the connection broke; every later call fails too.
    #[error("connection to the vgpu server lost: {0}")]
    Lost(String),
    /// The server refused this client at the handshake.
    #[error("refused by the vgpu server: {0}")]
    Refused(String),
}

impl Error {
    fn io(e: io::Error) -> Error {
        Error::Lost(e.to_string())
    }
}

struct Inner {
    stream: Stream,
    seq: u32,
    reply: Vec<u8>,
}

pub struct Conn {
    inner: Mutex<Inner>,
    dead: AtomicBool,
    address: Address,
}

impl Conn {
    /// Connect and shake hands; the reply carries the device snapshot.
    pub fn connect(address: &Address, hello: &Hello, t: Timeouts) -> Result<(Conn, Welcome), Error> {
        let stream = address.connect(t.connect).map_err(|e| Error::Lost(format!("{address}: {e}")))?;
        stream.set_timeouts(Some(t.connect), Some(t.write)).map_err(Error::io)?;
        let conn = Conn {
            inner: Mutex::new(Inner { stream, seq: 0, reply: Vec::new() }),
            dead: AtomicBool::new(false),
            address: address.clone(),
        };
        let args = postcard::to_allocvec(hello).map_err(|e| Error::Lost(e.to_string()))?;
        let bytes = conn.roundtrip(OP_HELLO, 0, &args, &[], None)?;
        let welcome: Welcome =
            postcard::from_bytes(&bytes).map_err(|e| Error::Lost(format!("{address}: bad handshake reply: {e}")))?;
        if let Welcome::Refused { reason } = &welcome {
            conn.dead.store(true, Ordering::Relaxed);
            return Err(Error::Refused(reason.clone()));
        }
        conn.inner.lock().stream.set_timeouts(Some(t.silence), Some(t.write)).map_err(Error::io)?;
        Ok((conn, welcome))
    }

    pub fn address(&self) -> &Address {
        &self.address
    }

    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Relaxed)
    }

    /// A typed call: one-way calls return as soon as the frame is written.
    pub fn call<C: Call>(&self, ctx: u64, c: &C, bulk_in: &[&[u8]], bulk_out: Option<&mut [u8]>) -> Result<C::Ret, Error> {
        let args = postcard::to_allocvec(c).map_err(|e| Error::Lost(e.to_string()))?;
        if C::ONEWAY {
            self.send(C::OP, ctx, &args, bulk_in)?;
            // A one-way call's value is `()`, which decodes from nothing.
            return postcard::from_bytes(&[]).map_err(|e| Error::Lost(e.to_string()));
        }
        let bytes = self.roundtrip(C::OP, ctx, &args, bulk_in, bulk_out)?;
        postcard::from_bytes(&bytes).map_err(|e| self.fail(format!("bad reply to op {}: {e}", C::OP)))
    }

    /// Write a one-way frame; its errors come back with the next synchronous call.
    pub fn send(&self, op: u32, ctx: u64, args: &[u8], bulk_in: &[&[u8]]) -> Result<(), Error> {
        self.check()?;
        let mut g = self.inner.lock();
        g.seq = g.seq.wrapping_add(1);
        let bulk_len: usize = bulk_in.iter().map(|b| b.len()).sum();
        let h = Header::request(op, g.seq, ctx, true, args.len(), bulk_len);
        write_frame(&mut g.stream, &h, args, bulk_in).map_err(|e| self.fail(e.to_string()))
    }

    /// Write a request and wait for its reply; the reply's bulk lands in `bulk_out`.
    pub fn roundtrip(
        &self,
        op: u32,
        ctx: u64,
        args: &[u8],
        bulk_in: &[&[u8]],
        bulk_out: Option<&mut [u8]>,
    ) -> Result<Vec<u8>, Error> {
        self.check()?;
        let mut g = self.inner.lock();
        g.seq = g.seq.wrapping_add(1);
        let seq = g.seq;
        let bulk_len: usize = bulk_in.iter().map(|b| b.len()).sum();
        let h = Header::request(op, seq, ctx, false, args.len(), bulk_len);
        write_frame(&mut g.stream, &h, args, bulk_in).map_err(|e| self.fail(e.to_string()))?;
        let inner = &mut *g;
        loop {
            let r = read_header(&mut inner.stream).map_err(|e| self.fail(describe_read(e)))?;
            if r.is_heartbeat() {
                continue;
            }
            if r.seq != seq || r.op != op {
                return Err(self.fail(format!("reply out of order: got seq {} op {}, want seq {seq} op {op}", r.seq, r.op)));
            }
            read_exact_into(&mut inner.stream, &mut inner.reply, r.args_len as usize).map_err(|e| self.fail(e.to_string()))?;
            let n = r.bulk_len as usize;
            if n > 0 {
                let Some(out) = bulk_out else {
                    return Err(self.fail(format!("unexpected {n} bulk bytes in reply to op {op}")));
                };
                if n > out.len() {
                    return Err(self.fail(format!("reply bulk of {n} bytes exceeds the {} expected", out.len())));
                }
                std::io::Read::read_exact(&mut inner.stream, &mut out[..n]).map_err(|e| self.fail(e.to_string()))?;
            }
            if r.status != 0 {
                return Err(Error::Api(r.status));
            }
            return Ok(std::mem::take(&mut inner.reply));
        }
    }

    fn check(&self) -> Result<(), Error> {
        if self.is_dead() {
            return Err(Error::Lost(format!("{}: connection closed earlier", self.address)));
        }
        Ok(())
    }

    fn fail(&self, why: String) -> Error {
        self.dead.store(true, Ordering::Relaxed);
        // The caller may hold the lock itself; then the dead flag alone stops further use.
        if let Some(g) = self.inner.try_lock() {
            g.stream.shutdown();
        }
        Error::Lost(format!("{}: {why}", self.address))
    }
}

fn describe_read(e: io::Error) -> String {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => "the server stopped answering".into(),
        io::ErrorKind::UnexpectedEof => "the server closed the connection".into(),
        _ => e.to_string(),
    }
}
