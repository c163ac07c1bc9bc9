//! The client's connection to one server: handshake, pipelined one-way calls, and
//! synchronous calls whose every wait is bounded.

use crate::addr::{Address, Stream};
use crate::framing::{read_exact_into, read_header, write_frame};
use parking_lot::Mutex;
use protocol::Call;
use protocol::frame::{Header, OP_HELLO};
use protocol::hello::{Hello, Welcome};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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

/// One-way frames are gathered here and written together: at the next synchronous call,
/// when this many bytes are waiting, or by the flusher thread shortly after the caller
/// stops sending. A launch then costs a copy into memory, not a system call.
const BATCH_BYTES: usize = 256 << 10;
/// Bulk payloads larger than this bypass the batch (written straight from the caller).
const BATCH_BULK: usize = 64 << 10;
/// How long the flusher lets a batch grow after the first frame arrives in it.
const BATCH_DELAY: Duration = Duration::from_micros(20);

struct Inner {
    stream: Stream,
    seq: u32,
    reply: Vec<u8>,
    pending: Vec<u8>,
    /// When the oldest frame in `pending` was added.
    since: Option<Instant>,
}

impl Inner {
    fn flush(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let r = std::io::Write::write_all(&mut self.stream, &self.pending);
        self.pending.clear();
        self.since = None;
        r
    }
}

pub struct Conn {
    inner: Mutex<Inner>,
    dead: AtomicBool,
    address: Address,
    /// Wakes the flusher when a batch starts; `None` until `start_flusher`.
    kick: Mutex<Option<std::sync::mpsc::SyncSender<()>>>,
    batching: AtomicBool,
}

impl Conn {
    /// Connect and shake hands; the reply carries the device snapshot.
    pub fn connect(address: &Address, hello: &Hello, t: Timeouts) -> Result<(Conn, Welcome), Error> {
        let stream = address.connect(t.connect).map_err(|e| Error::Lost(format!("{address}: {e}")))?;
        Self::handshake(stream, address, hello, t)
    }

    /// Shake hands over a stream that is already connected (an inherited vsock or unix
    /// socket, a socketpair in tests); `address` only names it in messages.
    pub fn handshake(stream: Stream, address: &Address, hello: &Hello, t: Timeouts) -> Result<(Conn, Welcome), Error> {
        stream.set_timeouts(Some(t.connect), Some(t.write)).map_err(Error::io)?;
        let conn = Conn {
            inner: Mutex::new(Inner {
                stream,
                seq: 0,
                reply: Vec::new(),
                pending: Vec::with_capacity(BATCH_BYTES),
                since: None,
            }),
            dead: AtomicBool::new(false),
            address: address.clone(),
            kick: Mutex::new(None),
            batching: AtomicBool::new(false),
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
    pub fn call<C: Call>(
        &self,
        ctx: u64,
        c: &C,
        bulk_in: &[&[u8]],
        bulk_out: Option<&mut [u8]>,
    ) -> Result<C::Ret, Error> {
        let args = postcard::to_allocvec(c).map_err(|e| Error::Lost(e.to_string()))?;
        if C::ONEWAY {
            self.send(C::OP, ctx, &args, bulk_in)?;
            // A one-way call's value is `()`, which decodes from nothing.
            return postcard::from_bytes(&[]).map_err(|e| Error::Lost(e.to_string()));
        }
        let bytes = self.roundtrip(C::OP, ctx, &args, bulk_in, bulk_out)?;
        postcard::from_bytes(&bytes).map_err(|e| self.fail(format!("bad reply to op {}: {e}", C::OP)))
    }

    /// Batch one-way frames from now on: a helper thread writes a batch shortly after it
    /// starts if no synchronous call or size limit has written it first. Without it every
    /// one-way frame is written at once.
    pub fn start_flusher(&'static self) {
        let mut kick = self.kick.lock();
        if kick.is_some() {
            return;
        }
        let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
        let spawned = std::thread::Builder::new().name("vgpu-flush".into()).spawn(move || {
            while rx.recv().is_ok() {
                std::thread::sleep(BATCH_DELAY);
                if let Some(mut g) = self.inner.try_lock_for(Duration::from_millis(100))
                    && g.flush().is_err()
                {
                    self.dead.store(true, Ordering::Relaxed);
                    return;
                }
            }
        });
        if spawned.is_ok() {
            *kick = Some(tx);
            self.batching.store(true, Ordering::Release);
        }
    }

    /// Write (or batch) a one-way frame; its errors come back with the next synchronous
    /// call.
    pub fn send(&self, op: u32, ctx: u64, args: &[u8], bulk_in: &[&[u8]]) -> Result<(), Error> {
        self.check()?;
        let mut g = self.inner.lock();
        g.seq = g.seq.wrapping_add(1);
        let bulk_len: usize = bulk_in.iter().map(|b| b.len()).sum();
        let h = Header::request(op, g.seq, ctx, true, args.len(), bulk_len);
        if !self.batching.load(Ordering::Acquire) || bulk_len > BATCH_BULK {
            g.flush().map_err(|e| self.fail(e.to_string()))?;
            return write_frame(&mut g.stream, &h, args, bulk_in).map_err(|e| self.fail(e.to_string()));
        }
        let was_empty = g.pending.is_empty();
        g.pending.extend_from_slice(zerocopy::IntoBytes::as_bytes(&h));
        g.pending.extend_from_slice(args);
        for b in bulk_in {
            g.pending.extend_from_slice(b);
        }
        // A caller that keeps sending writes its own batches; the flusher only covers the
        // tail after it stops.
        let now = Instant::now();
        let since = *g.since.get_or_insert(now);
        if g.pending.len() >= BATCH_BYTES || now.duration_since(since) >= BATCH_DELAY {
            return g.flush().map_err(|e| self.fail(e.to_string()));
        }
        drop(g);
        if was_empty && let Some(k) = self.kick.lock().as_ref() {
            // A full channel means the flusher is already on its way.
            let _ = k.try_send(());
        }
        Ok(())
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
        g.flush().map_err(|e| self.fail(e.to_string()))?;
        write_frame(&mut g.stream, &h, args, bulk_in).map_err(|e| self.fail(e.to_string()))?;
        let inner = &mut *g;
        loop {
            let r = read_header(&mut inner.stream).map_err(|e| self.fail(describe_read(e)))?;
            if r.is_heartbeat() {
                continue;
            }
            if r.seq != seq || r.op != op {
                return Err(
                    self.fail(format!("reply out of order: got seq {} op {}, want seq {seq} op {op}", r.seq, r.op))
                );
            }
            read_exact_into(&mut inner.stream, &mut inner.reply, r.args_len as usize)
                .map_err(|e| self.fail(e.to_string()))?;
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
