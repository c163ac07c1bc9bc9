//! The client's connection to one server: handshake, pipelined one-way calls, and
//! synchronous calls whose every wait is bounded.

use crate::addr::{Address, Stream};
use crate::framing::{read_exact_into, read_header, write_frame, write_frame_after};
use crate::lanes::{LANE_MAX, Lanes};
use crate::writelog::Writer;
use parking_lot::{Condvar, Mutex};
use protocol::Call;
use protocol::frame::{FLAG_CROWDED, FLAG_REPLY_LANES, Header, OP_HELLO, OP_RING};
use protocol::hello::LaneOffer;
use protocol::hello::{Hello, Welcome};
use std::collections::HashMap;
use std::io;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
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

/// One-way frames are queued in memory and written in batches by a writer thread: a launch
/// costs the application a copy into memory, not a system call, and it does not wait while
/// the server is busy. Synchronous calls write everything queued before their request.
const BATCH_BYTES: usize = 256 << 10;
/// Bulk payloads larger than this bypass the queue (written straight from the caller).
const BATCH_BULK: usize = 64 << 10;
/// How long the writer lets a partial batch grow before writing it: none. Frames queued while
/// it writes go out together in its next write anyway, and a sleep is one more wake-up on a
/// host whose cores the application keeps busy. Measured on H100 hosts against 20 µs (two
/// calls, runs in turns, Q8 1B): pp512 unix +0.4 / +1.2 points, TCP +0.4 / +0.8; tg128 unix
/// +0.8 / -0.5, TCP +1.5 / +1.1.
const BATCH_DELAY: Duration = Duration::ZERO;

/// [`BATCH_DELAY`], or `VGPU_BATCH_DELAY_US` (for measuring).
fn batch_delay() -> Duration {
    static D: OnceLock<Duration> = OnceLock::new();
    *D.get_or_init(|| {
        std::env::var("VGPU_BATCH_DELAY_US")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(BATCH_DELAY, Duration::from_micros)
    })
}
/// Past this many queued bytes the sender writes the queue itself (backpressure), so a
/// server that cannot keep up bounds the client's memory.
const QUEUE_LIMIT: usize = 64 << 20;

/// The write side, and the read side too for a stream that could not be split (no second
/// handle on it could be made): only whoever holds it writes to (or there reads from) it.
struct Sock {
    stream: Stream,
}

/// Frames waiting to be written, in order: full batches, then the one being filled.
#[derive(Default)]
struct Queue {
    full: std::collections::VecDeque<Vec<u8>>,
    pending: Vec<u8>,
    queued: usize,
    spare: Vec<Vec<u8>>,
}

impl Queue {
    fn is_empty(&self) -> bool {
        self.full.is_empty() && self.pending.is_empty()
    }

    /// The next buffer to write, oldest first.
    fn next(&mut self) -> Option<Vec<u8>> {
        if let Some(b) = self.full.pop_front() {
            self.queued -= b.len();
            return Some(b);
        }
        if self.pending.is_empty() {
            return None;
        }
        let fresh = self.spare.pop().unwrap_or_default();
        let b = std::mem::replace(&mut self.pending, fresh);
        self.queued -= b.len();
        Some(b)
    }

    fn recycle(&mut self, mut b: Vec<u8>) {
        if self.spare.len() < 4 && b.capacity() <= 2 * BATCH_BYTES {
            b.clear();
            self.spare.push(b);
        }
    }
}

/// A request written whose reply is still to be collected ([`Conn::send_for_reply`]).
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    seq: u32,
    op: u32,
}

/// What a frame read from the stream was, for the caller that read it.
enum Got {
    /// Its own reply: the value, or the API error.
    Mine(Result<Vec<u8>, Error>),
    /// A heartbeat, or another caller's reply (parked for it).
    Other,
}

/// A reply read by a caller it was not for, kept for its owner.
struct Parked {
    op: u32,
    status: u32,
    value: Vec<u8>,
    bulk: Vec<u8>,
}

/// Replies being waited for (seq → op, most bulk bytes expected) and those that arrived
/// while their owner was not reading.
#[derive(Default)]
struct Replies {
    waiting: HashMap<u32, (u32, usize)>,
    parked: HashMap<u32, Parked>,
    /// How many times a reader has given the read side up.
    readers_left: u64,
}

pub struct Conn {
    /// The write side; also the read side when the stream could not be split.
    sock: Mutex<Sock>,
    /// The read side, a second handle on the same socket: a caller waits for its reply
    /// here, not holding the write side, so other threads' calls go out meanwhile (and,
    /// the server answering waits on helper threads, come back first).
    rd: Option<Mutex<Stream>>,
    /// Only for shutting the socket down while others hold it.
    closer: Option<Stream>,
    /// This connection's latest link-rate estimate (`link_rate`).
    rate: AtomicU64,
    replies: Mutex<Replies>,
    /// Signalled when a reply is parked or the reader leaves (someone else may read now).
    arrived: Condvar,
    queue: Mutex<Queue>,
    /// Signals the writer that the queue has something.
    wake: Condvar,
    /// Whether the writer polls for the next frame rather than sleeping.
    watch: crate::watch::Watch,
    seq: AtomicU32,
    dead: AtomicBool,
    batching: AtomicBool,
    address: Address,
    /// TCP to this host's loopback address (`Stream::peer_is_loopback`).
    loopback: bool,
    /// How long a caller polls for its reply before sleeping (see `spin`).
    spin: Duration,
    timeouts: Timeouts,
    /// The session's id and lane offer, from the handshake.
    offer: Option<(u64, LaneOffer)>,
    /// Lanes wanted (`set_lanes`; 0: none), opened on first use.
    want_lanes: AtomicUsize,
    /// Whether the lanes code input rows (`set_coding`): 0 as the address says, 1 never,
    /// 2 always.
    coding: std::sync::atomic::AtomicU8,
    /// How late a lane's helper may take its job before the copy lags, where set
    /// (`set_lane_lag`; else `VGPU_LANE_LAG_US` or the default).
    lane_lag: Mutex<Option<Option<Duration>>>,
    lanes: OnceLock<Option<Lanes>>,
    on_ring: AtomicBool,
    /// `VGPU_WRITE_LOG`: each write of frames, timed (a diagnostic).
    wlog: Option<crate::writelog::WriteLog>,
}

/// The latest estimate of `s`'s rate that the sender did not limit, kept in `kept`: a
/// sample taken while too little was sent to fill the link (small frames between large
/// ones) says little of the link, so the last one that was not so stands. (Limited samples
/// as a stand-in until then read 11 GB/s on a 2.5 Gbit/s `tc` link, from bytes that went
/// within its burst, and kept pieces off there.)
pub(crate) fn link_rate(s: &Stream, kept: &AtomicU64) -> Option<u64> {
    if let Some((rate, false)) = s.delivery_rate() {
        kept.store(rate, Ordering::Relaxed);
    }
    Some(kept.load(Ordering::Relaxed)).filter(|&r| r > 0)
}

impl Conn {
    /// Connect and shake hands; the reply carries the device snapshot.
    pub fn connect(address: &Address, hello: &Hello, t: Timeouts) -> Result<(Conn, Welcome), Error> {
        let stream = address.connect(t.connect).map_err(|e| Error::Lost(e.to_string()))?;
        Self::handshake(stream, address, hello, t)
    }

    /// Shake hands over a stream that is already connected (an inherited vsock or unix
    /// socket, a socketpair in tests); `address` only names it in messages.
    pub fn handshake(stream: Stream, address: &Address, hello: &Hello, t: Timeouts) -> Result<(Conn, Welcome), Error> {
        stream.set_timeouts(Some(t.connect), Some(t.write)).map_err(Error::io)?;
        let (rd, closer) = match (stream.try_clone(), stream.try_clone()) {
            (Ok(r), Ok(c)) => (Some(Mutex::new(r)), Some(c)),
            _ => (None, None),
        };
        let loopback = stream.peer_is_loopback();
        let mut conn = Conn {
            sock: Mutex::new(Sock { stream }),
            rd,
            closer,
            rate: AtomicU64::new(0),
            replies: Mutex::new(Replies::default()),
            arrived: Condvar::new(),
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            watch: crate::watch::Watch::new(crate::spin_budget(crate::CLIENT_SPIN), crate::watch::Mode::from_env()),
            seq: AtomicU32::new(0),
            dead: AtomicBool::new(false),
            batching: AtomicBool::new(false),
            address: address.clone(),
            loopback,
            spin: crate::spin_budget(crate::CLIENT_SPIN),
            timeouts: t,
            offer: None,
            want_lanes: AtomicUsize::new(0),
            coding: Default::default(),
            lane_lag: Default::default(),
            lanes: OnceLock::new(),
            on_ring: AtomicBool::new(false),
            wlog: crate::writelog::WriteLog::from_env(),
        };
        let args = postcard::to_allocvec(hello).map_err(|e| Error::Lost(e.to_string()))?;
        let bytes = conn.roundtrip(OP_HELLO, 0, &args, &[], None)?;
        let welcome: Welcome =
            postcard::from_bytes(&bytes).map_err(|e| Error::Lost(format!("{address}: bad handshake reply: {e}")))?;
        match &welcome {
            Welcome::Refused { reason } => {
                conn.dead.store(true, Ordering::Relaxed);
                return Err(Error::Refused(reason.clone()));
            }
            Welcome::Accepted { session, lanes, .. } => conn.offer = lanes.clone().map(|l| (*session, l)),
        }
        conn.sock.lock().stream.set_timeouts(Some(t.silence), Some(t.write)).map_err(Error::io)?;
        Ok((conn, welcome))
    }

    pub fn address(&self) -> &Address {
        &self.address
    }

    /// Whether the connection is TCP to this host's own loopback address, so that its
    /// bytes cross no link.
    pub fn is_loopback(&self) -> bool {
        self.loopback
    }

    /// What this connection's link delivers, in bytes a second, by the kernel's estimates
    /// (`link_rate`): its lanes' together where they are open (bulk goes there), else its
    /// own; None where there is none yet (no transfer filled the link, or not TCP).
    pub fn delivery_rate(&self) -> Option<u64> {
        match self.lanes_if_open() {
            Some(Some(l)) => l.delivery_rate(),
            _ => link_rate(self.closer.as_ref()?, &self.rate),
        }
    }

    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Relaxed)
    }

    /// End the connection from this side: the server's worker for it exits, later calls
    /// fail as lost, and the writer thread ends.
    pub fn close(&self) {
        let _ = self.fail("closed by the client".to_string());
        let _q = self.queue.lock();
        self.wake.notify_all();
    }

    /// Send large bulk over `n` lanes (extra connections, opened on first use) where the
    /// server offers them; 0: over this connection only; 1: one lane where its chunks go
    /// coded (see [`Conn::lanes`]), else none.
    pub fn set_lanes(&self, n: usize) {
        self.want_lanes.store(n, Ordering::Relaxed);
    }

    /// Whether the lanes (opened later) code input rows: `None` where the address says
    /// ([`crate::coding::Coding::choose`]).
    pub fn set_coding(&self, set: Option<bool>) {
        self.coding.store(set.map_or(0, |on| 1 + on as u8), Ordering::Relaxed);
    }

    /// How late a lane's helper may take its chunk before the lanes (opened later) count as
    /// lagging, and step aside (`None`: never); as `VGPU_LANE_LAG_US` says unless set.
    pub fn set_lane_lag(&self, limit: Option<Duration>) {
        *self.lane_lag.lock() = Some(limit);
    }

    fn coding(&self) -> crate::coding::Coding {
        let set = match self.coding.load(Ordering::Relaxed) {
            0 => None,
            c => Some(c == 2),
        };
        crate::coding::Coding::choose(&self.address, self.loopback, set)
    }

    /// The lanes, opening them the first time. A failure to open them is told once, and
    /// the bulk goes over this connection from then on. One lane (a client of fewer than
    /// four cores, by default) is opened only where its chunks go coded: over a link, a
    /// small VM's prompt batches then cross as the quantized blocks they came from.
    pub fn lanes(&self) -> Option<&Lanes> {
        if let Some(opened) = self.lanes.get() {
            return opened.as_ref();
        }
        let n = self.want_lanes.load(Ordering::Relaxed);
        let code = self.coding();
        let (session, offer) =
            self.offer.as_ref().filter(|_| n >= 2 || n == 1 && code != crate::coding::Coding::Never)?;
        self.lanes
            .get_or_init(|| {
                let lag = self.lane_lag.lock().unwrap_or_else(crate::lanes::lag_limit);
                match Lanes::open(&self.address, *session, offer, n, self.timeouts, code, lag) {
                    Ok(l) => Some(l),
                    Err(e) => {
                        eprintln!("vgpu: {}: no lanes ({e}); bulk goes over the one connection", self.address);
                        None
                    }
                }
            })
            .as_ref()
    }

    /// Open the session's host-function connection (`protocol::host_funcs`), acknowledged
    /// by the server before it returns; its reads then wait as long as the session lasts.
    /// `Err` where the server offers no extra connections.
    pub fn join_host_funcs(&self) -> io::Result<Stream> {
        let (session, offer) = self
            .offer
            .as_ref()
            .ok_or_else(|| io::Error::new(io::ErrorKind::Unsupported, "the server takes no extra connections"))?;
        let s = crate::lanes::join(&self.address, *session, offer, protocol::hello::Role::HostFuncs, self.timeouts)?;
        s.set_timeouts(None, Some(self.timeouts.write))?;
        Ok(s)
    }

    /// Move this connection's frames, both ways, into rings of `cap` data bytes at `offset`
    /// in `seg` (the session's shared segment, which the server has mapped); the socket
    /// stays as their doorbell. Before the connection is shared: nothing may be queued or
    /// awaited. `Err(Error::Api)`: the server would not, and the socket carries on.
    pub fn use_ring(&self, seg: std::sync::Arc<crate::Segment>, offset: u64, cap: usize) -> Result<(), Error> {
        let bell = self.sock.lock().stream.plain_socket().map_err(Error::io)?;
        let bell = bell.ok_or_else(|| Error::Lost("frame rings need a plain socket as their doorbell".into()))?;
        let ring = crate::RingStream::new(seg, offset, cap, crate::ring::End::Client, bell, self.spin)
            .map_err(|e| Error::Lost(e.to_string()))?;
        let args = postcard::to_allocvec(&(offset, cap as u64)).map_err(|e| Error::Lost(e.to_string()))?;
        self.roundtrip(OP_RING, 0, &args, &[], None)?;
        ring.set_timeouts(Some(self.timeouts.silence), Some(self.timeouts.write));
        if let Some(rd) = &self.rd {
            *rd.lock() = Stream::Ring(ring.clone());
        }
        self.sock.lock().stream = Stream::Ring(ring);
        self.on_ring.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Whether the frames go through shared-memory rings ([`Conn::use_ring`]).
    pub fn on_ring(&self) -> bool {
        self.on_ring.load(Ordering::Relaxed)
    }

    /// The lanes if they were opened (or tried): `Some(None)` when opening them failed.
    pub fn lanes_if_open(&self) -> Option<Option<&Lanes>> {
        self.lanes.get().map(Option::as_ref)
    }

    /// Write everything queued, then a request frame: its bulk over the lanes when it is
    /// large enough, else in the same system call as the queued frames (a launch queued just
    /// before its synchronize reaches the server with it, one write instead of two).
    fn drain_and_request(&self, s: &mut Sock, h: &Header, args: &[u8], bulk_in: &[&[u8]]) -> io::Result<()> {
        let n = h.bulk_len as usize;
        if (crate::lanes::lane_min(&self.address)..=LANE_MAX).contains(&n)
            && let Some(lanes) = self.lanes().filter(|l| l.take())
        {
            self.drain(s)?;
            write_frame(&mut s.stream, &crate::lanes::lane_header(*h), args, &[])?;
            return lanes.stripe(h.seq, bulk_in);
        }
        let start = self.stamp();
        let queued: Vec<Vec<u8>> = {
            let mut q = self.queue.lock();
            std::iter::from_fn(|| q.next()).collect()
        };
        let r = write_frame_after(&mut s.stream, &queued, h, args, bulk_in);
        if self.wlog.is_some() {
            let bytes = queued.iter().map(Vec::len).sum::<usize>() + std::mem::size_of::<Header>() + args.len() + n;
            self.logged(Writer::Caller, start, start, bytes);
        }
        let mut q = self.queue.lock();
        queued.into_iter().for_each(|b| q.recycle(b));
        r
    }

    /// A typed call: one-way calls return as soon as the frame is queued.
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

    /// Queue one-way frames from now on, written by a helper thread. Without it every
    /// one-way frame is written at once by its caller.
    pub fn start_flusher(&'static self) {
        if self.batching.load(Ordering::Acquire) {
            return;
        }
        let spawned = std::thread::Builder::new().name("vgpu-writer".into()).spawn(move || self.writer());
        if spawned.is_ok() {
            self.batching.store(true, Ordering::Release);
        }
    }

    fn writer(&self) {
        loop {
            let only_partial = {
                let mut q = self.queue.lock();
                while q.is_empty() {
                    if self.is_dead() {
                        return;
                    }
                    if self.watch.awake() {
                        drop(q);
                        std::thread::yield_now();
                        q = self.queue.lock();
                    } else if self.watch.set_asleep(true) {
                        self.watch.set_asleep(false);
                    } else {
                        self.wake.wait(&mut q);
                        self.watch.set_asleep(false);
                    }
                }
                q.full.is_empty()
            };
            let found = self.stamp();
            if only_partial && !batch_delay().is_zero() {
                std::thread::sleep(batch_delay());
            }
            let mut s = self.sock.lock();
            let start = self.stamp();
            match self.drain(&mut s) {
                Ok(bytes) => self.logged(Writer::Thread, found, start, bytes),
                Err(e) => {
                    drop(s);
                    self.fail(e.to_string());
                    return;
                }
            }
        }
    }

    /// Now, where writes are logged (`VGPU_WRITE_LOG`); else nothing is read.
    fn stamp(&self) -> f64 {
        if self.wlog.is_some() { crate::writelog::monotonic_micros() } else { 0.0 }
    }

    fn logged(&self, who: Writer, found: f64, start: f64, bytes: usize) {
        if let Some(l) = &self.wlog
            && bytes > 0
        {
            l.add(who, found, start, bytes);
        }
    }

    /// Write everything queued, in order; answers the bytes written. Holding the socket
    /// keeps others from writing in between; the queue is locked only to take each buffer.
    fn drain(&self, s: &mut Sock) -> io::Result<usize> {
        let mut bytes = 0;
        loop {
            let Some(b) = self.queue.lock().next() else { return Ok(bytes) };
            let r = std::io::Write::write_all(&mut s.stream, &b);
            bytes += b.len();
            self.queue.lock().recycle(b);
            r?;
        }
    }

    /// Queue (or write) a one-way frame; its errors come back with the next synchronous
    /// call.
    pub fn send(&self, op: u32, ctx: u64, args: &[u8], bulk_in: &[&[u8]]) -> Result<(), Error> {
        self.check()?;
        let seq = self.seq.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        let bulk_len: usize = bulk_in.iter().map(|b| b.len()).sum();
        let h = Header::request(op, seq, ctx, true, args.len(), bulk_len);
        // Through a ring a frame costs a memory copy, not a system call: written at once,
        // it reaches the server without waiting for the writer thread to wake.
        if !self.batching.load(Ordering::Acquire) || bulk_len > BATCH_BULK || self.on_ring() {
            let mut s = self.sock.lock();
            let sent = self.drain_and_request(&mut s, &h, args, bulk_in);
            return sent.map_err(|e| self.fail_locked(&s, e.to_string()));
        }
        let (notify, over) = {
            self.watch.queued();
            let mut q = self.queue.lock();
            let was_idle = q.is_empty();
            let start = q.pending.len();
            q.pending.extend_from_slice(zerocopy::IntoBytes::as_bytes(&h));
            q.pending.extend_from_slice(args);
            for b in bulk_in {
                q.pending.extend_from_slice(b);
            }
            q.queued += q.pending.len() - start;
            let mut filled = false;
            if q.pending.len() >= BATCH_BYTES {
                let fresh = q.spare.pop().unwrap_or_default();
                let full = std::mem::replace(&mut q.pending, fresh);
                q.full.push_back(full);
                filled = true;
            }
            (was_idle || filled, q.queued > QUEUE_LIMIT)
        };
        if notify {
            self.wake.notify_one();
        }
        if over {
            // The server is not keeping up: wait for it rather than grow without bound.
            let mut s = self.sock.lock();
            self.drain(&mut s).map_err(|e| self.fail_locked(&s, e.to_string()))?;
        }
        Ok(())
    }

    /// Write a request whose reply (with up to `out_len` bytes of bulk) is collected later
    /// with [`Conn::collect`], so that the caller goes on meanwhile, as after an asynchronous
    /// device-to-host copy. None where replies cannot be left to arrive on their own (a
    /// stream that could not be split, or frames through rings): call as usual then.
    pub fn send_for_reply<C: Call>(&self, ctx: u64, c: &C, out_len: usize) -> Result<Option<Sent>, Error> {
        if self.rd.is_none() || self.on_ring() || C::ONEWAY {
            return Ok(None);
        }
        self.check()?;
        let args = postcard::to_allocvec(c).map_err(|e| Error::Lost(e.to_string()))?;
        let seq = self.seq.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        let mut h = Header::request(C::OP, seq, ctx, false, args.len(), 0);
        self.ask_reply_lanes(&mut h, out_len);
        self.send_awaited(&h, &args, &[], out_len)?;
        Ok(Some(Sent { seq, op: C::OP }))
    }

    /// The reply to a request [`Conn::send_for_reply`] wrote: its bulk into `bulk_out`.
    pub fn collect(&self, sent: Sent, bulk_out: &mut [u8]) -> Result<(), Error> {
        let Some(rd) = &self.rd else { return Err(Error::Lost("no reply reader".into())) };
        self.awaited_reply(rd, sent, Some(bulk_out)).map(|_| ())
    }

    /// Ask for a reply of up to `out_len` bulk bytes over the lanes (opened now if need be)
    /// where it is large enough: over TLS a decoding LLM's logits, 128 KB a token, among
    /// them (see `lanes::LANE_MIN_TLS`).
    fn ask_reply_lanes(&self, h: &mut Header, out_len: usize) {
        if (crate::lanes::lane_min(&self.address)..=LANE_MAX).contains(&out_len)
            && let Some(l) = self.lanes().filter(|l| l.take())
        {
            h.flags |= FLAG_REPLY_LANES;
            h.status = l.len() as u32;
        }
    }

    /// Write request `h`, whose reply (with up to `out_len` bytes of bulk) someone will wait
    /// for: it is registered first, so that whoever reads it meanwhile parks it.
    fn send_awaited(&self, h: &Header, args: &[u8], bulk_in: &[&[u8]], out_len: usize) -> Result<(), Error> {
        self.replies.lock().waiting.insert(h.seq, (h.op, out_len));
        let mut g = self.sock.lock();
        let s = &mut *g;
        let sent = self.drain_and_request(s, h, args, bulk_in);
        if let Err(e) = sent {
            self.replies.lock().waiting.remove(&h.seq);
            return Err(self.fail_locked(s, e.to_string()));
        }
        drop(g);
        if self.watch.asked() {
            self.wake_writer();
        }
        Ok(())
    }

    /// Wake the writer for the watch (`crate::watch`). Taking the queue's lock, which it
    /// looks and sleeps under, first puts the wake after its last look: it is either asleep
    /// on the condition variable, which the notify reaches, or yet to look, and then sees the
    /// new state. The notify comes after the lock is released, not under it: parking_lot
    /// moves a thread notified under a held lock onto that lock and may hand the lock to it,
    /// so the application's next frame waited until the writer was scheduled (decode steps
    /// on H100 VMs: the step's first copy took 23-60 µs instead of 2-6).
    fn wake_writer(&self) {
        drop(self.queue.lock());
        self.wake.notify_one();
    }

    /// The reply to a request [`Conn::send_awaited`] wrote, no longer waited for after.
    fn awaited_reply(&self, rd: &Mutex<Stream>, sent: Sent, bulk_out: Option<&mut [u8]>) -> Result<Vec<u8>, Error> {
        let parked = self.park_lanes();
        let r = self.await_reply(rd, sent.seq, sent.op, bulk_out);
        drop(parked);
        self.replies.lock().waiting.remove(&sent.seq);
        if self.watch.answered() {
            self.wake_writer();
        }
        r
    }

    /// While a caller waits for a reply (for the GPU, mostly), the lanes' writers stop
    /// polling for the next copy if this thread sent the last: it cannot send another before
    /// the reply has come (`crate::park`).
    fn park_lanes(&self) -> Option<crate::park::Parked<'_>> {
        self.lanes_if_open().flatten().and_then(Lanes::park)
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
        let seq = self.seq.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        let bulk_len: usize = bulk_in.iter().map(|b| b.len()).sum();
        let mut h = Header::request(op, seq, ctx, false, args.len(), bulk_len);
        if let Some(rd) = &self.rd {
            let out_len = bulk_out.as_ref().map_or(0, |b| b.len());
            self.ask_reply_lanes(&mut h, out_len);
            self.send_awaited(&h, args, bulk_in, out_len)?;
            return self.awaited_reply(rd, Sent { seq, op }, bulk_out);
        }
        // A stream that could not be split: the caller holds it until its reply is in.
        let mut bulk_out = bulk_out;
        let mut g = self.sock.lock();
        let s = &mut *g;
        self.drain_and_request(s, &h, args, bulk_in).map_err(|e| self.fail_locked(s, e.to_string()))?;
        let _parked = self.park_lanes();
        loop {
            match self.read_one(&mut s.stream, seq, op, bulk_out.as_deref_mut()) {
                Ok(Got::Mine(v)) => return v,
                Ok(Got::Other) => continue,
                Err(why) => return Err(self.fail_locked(s, why)),
            }
        }
    }

    /// Wait for the reply to `seq`: read replies (whoever holds the read side does) until
    /// it comes, parking those for other callers; or wait for the reader to park it.
    fn await_reply(
        &self,
        rd: &Mutex<Stream>,
        seq: u32,
        op: u32,
        bulk_out: Option<&mut [u8]>,
    ) -> Result<Vec<u8>, Error> {
        let mut bulk_out = bulk_out;
        loop {
            // The count of readers that have left, taken before trying the read side: if
            // it has not moved when we come to wait, the reader we found is still there
            // and will notify when it leaves (so no wake-up is missed).
            let left = {
                let mut r = self.replies.lock();
                if let Some(p) = r.parked.remove(&seq) {
                    return self.deliver(p, bulk_out);
                }
                self.check()?;
                r.readers_left
            };
            let Some(mut s) = rd.try_lock() else {
                // Someone else is reading: they park our reply, or notify when they leave.
                let mut r = self.replies.lock();
                if !r.parked.contains_key(&seq) && r.readers_left == left && !self.is_dead() {
                    self.arrived.wait_for(&mut r, Duration::from_millis(100));
                }
                continue;
            };
            // Parked just before we took the read side?
            let parked = self.replies.lock().parked.remove(&seq);
            let got = match parked {
                Some(p) => Ok(Got::Mine(self.deliver(p, bulk_out.as_deref_mut()))),
                None => self.read_one(&mut s, seq, op, bulk_out.as_deref_mut()),
            };
            drop(s);
            // Whoever waits may take the read side, or find its reply parked.
            self.replies.lock().readers_left += 1;
            self.arrived.notify_all();
            match got {
                Ok(Got::Mine(v)) => return v,
                Ok(Got::Other) => continue,
                Err(why) => return Err(self.fail(why)),
            }
        }
    }

    /// Read one frame: the reply to `seq`, a heartbeat or another caller's reply (parked),
    /// or why the connection is unusable.
    fn read_one(&self, s: &mut Stream, seq: u32, op: u32, bulk_out: Option<&mut [u8]>) -> Result<Got, String> {
        s.wait_readable(crate::crowd::spin_unless_crowded(self.spin));
        let h = read_header(s).map_err(describe_read)?;
        if h.flags & FLAG_CROWDED != 0 {
            crate::crowd::note_crowded();
        }
        if h.is_heartbeat() {
            return Ok(Got::Other);
        }
        let n = h.bulk_len as usize;
        if h.seq == seq {
            if h.op != op {
                return Err(format!("reply out of order: got op {} for seq {seq}, want op {op}", h.op));
            }
            let mut value = Vec::new();
            read_exact_into(s, &mut value, h.args_len as usize).map_err(|e| e.to_string())?;
            if n > 0 {
                let Some(out) = bulk_out else { return Err(format!("unexpected {n} bulk bytes in reply to op {op}")) };
                if n > out.len() {
                    return Err(format!("reply bulk of {n} bytes exceeds the {} expected", out.len()));
                }
                if h.on_lanes() {
                    self.gather(h.seq, &mut out[..n])?;
                } else {
                    std::io::Read::read_exact(s, &mut out[..n]).map_err(|e| e.to_string())?;
                }
            }
            return Ok(Got::Mine(if h.status != 0 { Err(Error::Api(h.status)) } else { Ok(value) }));
        }
        // Another caller's: it must be one being waited for, with no more bulk than it expects.
        let Some(&(want_op, max_bulk)) = self.replies.lock().waiting.get(&h.seq) else {
            return Err(format!("reply out of order: got seq {} op {}, nobody waits for it", h.seq, h.op));
        };
        if h.op != want_op || n > max_bulk {
            return Err(format!("reply out of order: got seq {} op {} with {n} bulk bytes", h.seq, h.op));
        }
        let (mut value, mut bulk) = (Vec::new(), Vec::new());
        read_exact_into(s, &mut value, h.args_len as usize).map_err(|e| e.to_string())?;
        if h.on_lanes() {
            bulk.resize(n, 0);
            self.gather(h.seq, &mut bulk)?;
        } else {
            read_exact_into(s, &mut bulk, n).map_err(|e| e.to_string())?;
        }
        self.replies.lock().parked.insert(h.seq, Parked { op: h.op, status: h.status, value, bulk });
        Ok(Got::Other)
    }

    /// Read the bulk of reply `seq`, which the server sent over the lanes.
    fn gather(&self, seq: u32, buf: &mut [u8]) -> Result<(), String> {
        match self.lanes.get() {
            Some(Some(l)) => l.gather(seq, buf).map_err(|e| format!("reply {seq} over the lanes: {e}")),
            _ => Err(format!("reply {seq} came over lanes this connection does not have")),
        }
    }

    /// Hand a parked reply to its owner.
    fn deliver(&self, p: Parked, bulk_out: Option<&mut [u8]>) -> Result<Vec<u8>, Error> {
        if !p.bulk.is_empty() {
            match bulk_out {
                Some(out) if p.bulk.len() <= out.len() => out[..p.bulk.len()].copy_from_slice(&p.bulk),
                _ => return Err(self.fail(format!("a parked reply to op {} does not fit its buffer", p.op))),
            }
        }
        if p.status != 0 { Err(Error::Api(p.status)) } else { Ok(p.value) }
    }

    fn check(&self) -> Result<(), Error> {
        if self.is_dead() {
            return Err(Error::Lost(format!("{}: connection closed earlier", self.address)));
        }
        Ok(())
    }

    /// Mark the connection dead, closing the stream if nobody is using it.
    fn fail(&self, why: String) -> Error {
        self.dead.store(true, Ordering::Relaxed);
        if let Some(Some(l)) = self.lanes.get() {
            l.shutdown();
        }
        if let Some(c) = &self.closer {
            c.shutdown();
        } else if let Some(s) = self.sock.try_lock() {
            s.stream.shutdown();
        }
        self.arrived.notify_all();
        Error::Lost(format!("{}: {why}", self.address))
    }

    /// The same, by the holder of the socket (which `fail` cannot take).
    fn fail_locked(&self, s: &Sock, why: String) -> Error {
        s.stream.shutdown();
        self.fail(why)
    }
}

fn describe_read(e: io::Error) -> String {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => "the server stopped answering".into(),
        io::ErrorKind::UnexpectedEof => "the server closed the connection".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_hands_out_buffers_oldest_first() {
        let mut q = Queue::default();
        q.full.push_back(vec![1, 2]);
        q.full.push_back(vec![3]);
        q.pending.extend_from_slice(&[4, 5, 6]);
        q.queued = 6;
        let mut order = Vec::new();
        while let Some(b) = q.next() {
            order.extend_from_slice(&b);
            q.recycle(b);
        }
        assert_eq!(order, [1, 2, 3, 4, 5, 6]);
        assert_eq!(q.queued, 0);
        assert!(q.is_empty());
        assert!(!q.spare.is_empty(), "buffers are reused");
    }
}
