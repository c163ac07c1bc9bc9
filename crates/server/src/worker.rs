//! One client session: the handshake, then frames executed in order.
//!
//! One-way calls are not answered; the first error one of them causes is kept and returned
//! in place of the next synchronous call's result, as CUDA reports asynchronous errors.
//! While a frame executes, a helper thread sends heartbeats so that the client can tell a
//! busy server from a dead one.

use crate::{BackendKind, WaitJob, open_backend};
use device_model::Snapshot;
use parking_lot::Mutex;
use protocol::frame::{FLAG_CROWDED, FLAG_REPLY_LANES, Header, OP_HELLO, OP_JOIN, OP_RING, OP_SHM, OP_SHM_FILE};
use protocol::hello::{Hello, Join, LaneOffer, Role, Welcome, WorkerNote};
use protocol::{Io, PROTOCOL_VERSION, WIRE_HASH};
use std::io::{self, Read};
use std::os::fd::FromRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use transport::crowd::Board;
use transport::{LaneSet, Segment, Stream, TlsServer, Unbuffered, read_exact_into, read_header, write_frame};

/// Longest a client may take to complete the handshake, however it trickles its bytes (the
/// listener gives a new connection as long to send its first frame).
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);
/// Largest handshake message accepted from a peer that has not yet authenticated (a real
/// `Hello` is a few hundred bytes); the general frame limits would let it make us buffer
/// a gigabyte before its token is checked.
const MAX_HELLO: u32 = 64 << 10;
/// Bulk bytes from this size on are read past the socket reader's buffer.
const BULK_DIRECT: usize = 64 << 10;
/// With `VGPU_STATS=1`, calls that take this long are logged one by one.
const SLOW_CALL: Duration = Duration::from_millis(3);
/// The socket reader's buffer: some hundreds of small frames.
const READ_GULP: usize = 64 << 10;

#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub backend: BackendKind,
    /// Required token; `None` accepts any (unix sockets rely on file permissions).
    pub token: Option<String>,
    pub memory_limit: Option<u64>,
    pub session_id: u64,
    /// The descriptor on which the listener passes this session's lanes (owned by the
    /// session); `None`: no lanes offered.
    pub lane_control: Option<i32>,
    /// Files the client may share as its segment (`OP_SHM_FILE`), over any transport.
    pub shm_files: Vec<std::path::PathBuf>,
    /// The descriptor of the listener's board of the workers' activity (owned by the
    /// session; see `transport::crowd`); `None`: the session polls as if alone.
    pub board: Option<i32>,
    /// A `tls://` session's certificate: its lanes arrive as TCP connections that are TLS
    /// after the join that routed them, and are served with it.
    pub tls: Option<transport::TlsServer>,
}

/// Serve one connection until it closes or misbehaves. Returns why it ended.
pub fn run_session(stream: Stream, cfg: &SessionConfig, mut snapshot: Snapshot) -> io::Result<()> {
    let writer = Arc::new(Mutex::new(stream.try_clone()?));
    stream.set_timeouts(Some(Duration::from_secs(10)), Some(Duration::from_secs(30)))?;
    let control = stream.try_clone()?;
    // Pipelined one-way frames arrive back to back: read them in gulps, not three system
    // calls per frame. Not larger ones: a gulp also takes in the start of the next copy's
    // bulk bytes, which then cost a second copy out of the buffer (see `BULK_DIRECT`).
    // The reader keeps a descriptor that arrives before the handshake (a client's shared
    // segment, see below); afterwards it reads plainly.
    let mut reader = io::BufReader::with_capacity(READ_GULP, transport::FdReader::new(stream));
    let (mut args, mut bulk) = (Vec::new(), Vec::new());

    // Handshake: a client that has not completed it within HANDSHAKE_DEADLINE is dropped
    // (the watchdog shuts the socket, which ends the blocked read). A peer that only
    // probed the socket (connect, close) is not an error.
    let handshaken = Arc::new(AtomicBool::new(false));
    {
        let (handshaken, sock) = (handshaken.clone(), control.try_clone()?);
        std::thread::Builder::new().name("vgpu-handshake".into()).spawn(move || {
            std::thread::sleep(HANDSHAKE_DEADLINE);
            if !handshaken.load(Ordering::Relaxed) {
                sock.shutdown();
            }
        })?;
    }
    let mut h = match read_header(&mut reader) {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
        r => r?,
    };
    // A client may offer a shared-memory segment first: on this host it passes one (`shm:`
    // addresses), in a VM it names a shared file by its nonce. It is mapped only once the
    // handshake has admitted the client.
    let mut segment = None;
    if (h.op == OP_SHM || h.op == OP_SHM_FILE) && h.bulk_len == 0 && h.args_len <= MAX_HELLO {
        read_exact_into(&mut reader, &mut args, h.args_len as usize)?;
        let bad = |e: postcard::Error| io::Error::new(io::ErrorKind::InvalidData, format!("bad segment frame: {e}"));
        segment = if h.op == OP_SHM {
            let len: u64 = postcard::from_bytes(&args).map_err(bad)?;
            reader.get_mut().take_fd().map(|fd| SegmentOffer::Passed(fd, len))
        } else {
            let (at, len, nonce) = postcard::from_bytes(&args).map_err(bad)?;
            Some(SegmentOffer::File(at, len, nonce))
        };
        h = read_header(&mut reader)?;
    }
    reader.get_mut().stop();
    if h.op != OP_HELLO || h.bulk_len != 0 || h.args_len > MAX_HELLO {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "first frame is not a handshake"));
    }
    read_exact_into(&mut reader, &mut args, h.args_len as usize)?;
    let hello: Hello = postcard::from_bytes(&args)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("bad handshake: {e}")))?;
    let refusal = refusal(&hello, cfg.token.as_deref());
    if let Some(limit) = cfg.memory_limit {
        for d in &mut snapshot.devices {
            d.total_mem = d.total_mem.min(limit);
        }
    }
    let backend = match &refusal {
        None => Some(open_backend(cfg.backend, &snapshot, cfg.memory_limit)),
        Some(_) => None,
    };
    // A secret for the lanes; none (no lanes offered) if the system has no randomness.
    let lane_key = cfg.lane_control.and_then(|_| transport::random_nonce().ok());
    let welcome = match (&refusal, &backend) {
        (Some(reason), _) => Welcome::Refused { reason: reason.clone() },
        (None, Some(Err(e))) => Welcome::Refused { reason: format!("backend failed to start: {e}") },
        _ => Welcome::Accepted {
            session: cfg.session_id,
            server_version: format!("vgpu {} ({})", env!("CARGO_PKG_VERSION"), cfg.backend.name()),
            snapshot,
            lanes: lane_key.map(|key| LaneOffer { key, max: transport::lanes::MAX_LANES }),
        },
    };
    let body = postcard::to_allocvec(&welcome).expect("encode");
    write_frame(&mut *writer.lock(), &Header::reply(OP_HELLO, h.seq, 0, body.len(), 0), &body, &[])?;
    let mut backend = match backend {
        Some(Ok(b)) => b,
        _ => {
            tracing::warn!(program = %hello.program, pid = hello.pid, "client refused: {:?}", welcome);
            return Ok(());
        }
    };
    tracing::info!(program = %hello.program, pid = hello.pid, host = %hello.host, "session {} started", cfg.session_id);
    if let Some(fd) = cfg.lane_control {
        tell_client(fd, &hello);
    }
    // The segment again, for frame rings in it (`OP_RING`): a second mapping of our own.
    let mut ring_segment = None;
    if let Some(offer) = segment {
        // Refused, the client finds out with `shm_attached` and copies over the socket.
        match offer.map(&cfg.shm_files).and_then(|(s, again, what)| {
            let len = s.len();
            backend.attach_segment(s).map(|()| (again, what, len))
        }) {
            Ok((again, what, len)) => {
                tracing::info!("session {}: shared segment of {} MiB ({what})", cfg.session_id, len >> 20);
                ring_segment = again.map(Arc::new);
            }
            Err(e) => tracing::warn!("session {}: shared segment refused: {e}", cfg.session_id),
        }
    }

    let lanes = LaneSet::new();
    let host_funcs = crate::host_funcs::HostFuncs::new();
    backend.set_host_funcs(host_funcs.clone());
    if let (Some(fd), Some(key)) = (cfg.lane_control, lane_key) {
        // SAFETY: the listener gives each worker its lane channel as this descriptor.
        let ctl = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        let joins = Joins { lanes: lanes.clone(), host_funcs: host_funcs.clone() };
        let (id, tls) = (cfg.session_id, cfg.tls.clone());
        std::thread::Builder::new()
            .name("vgpu-lanes".into())
            .spawn(move || take_lanes(ctl, &joins, id, &key, tls.as_ref()))?;
    }

    // After the handshake the client may be idle for as long as it likes.
    handshaken.store(true, Ordering::Relaxed);
    control.set_timeouts(None, Some(Duration::from_secs(30)))?;
    let busy = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let waits = Waits::default();
    // The session's device memory, as `vgpu sessions` shows it: stored after every call,
    // told to the listener by the heartbeat thread when it changed.
    let memory = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let hb = {
        let (writer, busy, done, waits, memory) =
            (writer.clone(), busy.clone(), done.clone(), waits.clone(), memory.clone());
        let note_fd = cfg.lane_control;
        std::thread::Builder::new().name("vgpu-heartbeat".into()).spawn(move || {
            let mut told = 0;
            while !done.load(Ordering::Relaxed) {
                // Parked, not asleep: the session's end unparks it, so a worker whose
                // client vanished exits at once instead of after a last heartbeat period.
                std::thread::park_timeout(Duration::from_millis(500));
                let now = memory.load(Ordering::Relaxed);
                if let Some(fd) = note_fd.filter(|_| now != told) {
                    tell(fd, &WorkerNote::Memory(now));
                    told = now;
                }
                if (busy.load(Ordering::Relaxed) || waits.pending() > 0)
                    && let Some(mut w) = writer.try_lock_for(Duration::from_millis(100))
                    && write_frame(&mut *w, &Header::heartbeat(), &[], &[]).is_err()
                {
                    break;
                }
            }
        })?
    };

    // SAFETY: the listener gives each worker the board as this descriptor.
    let mut seat = cfg.board.and_then(|fd| match Board::open(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }) {
        Ok(b) => Some(b.seat(cfg.session_id)),
        Err(e) => {
            tracing::warn!("session {}: no board of the others' activity: {e}", cfg.session_id);
            None
        }
    });
    // Whether the backend was last told that other sessions share the GPU.
    let mut shared = false;
    let mut deferred: Option<u32> = None;
    let mut out = Vec::new();
    let mut frames = FrameLog::from_env();
    // VGPU_STATS=1 on the server: time spent per opcode, logged when the session ends.
    let mut stats = std::env::var_os("VGPU_STATS").map(|_| Stats::default());
    // The next frame usually follows within microseconds: poll before sleeping on the socket.
    let spin = transport::spin_budget(transport::DEFAULT_SPIN);
    // Frames through rings in the shared segment (`OP_RING`): the ring polls, not the socket.
    let mut on_ring = false;
    let result = loop {
        if reader.buffer().is_empty() && !on_ring {
            control.wait_readable(spin);
        }
        let h = match read_header(&mut reader).and_then(|h| {
            read_exact_into(&mut reader, &mut args, h.args_len as usize)?;
            Ok(h)
        }) {
            Ok(h) => {
                if let Some(f) = frames.as_mut() {
                    f.read();
                }
                h
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break Ok(()),
            Err(e) => break Err(e),
        };
        if h.op == OP_RING {
            // From now on the frames come and go through rings in the shared segment.
            if h.bulk_len != 0 || h.is_oneway() {
                break Err(io::Error::new(io::ErrorKind::InvalidData, "a malformed request for frame rings"));
            }
            let ring = match open_rings(&args, ring_segment.as_ref(), &control, spin) {
                Ok(r) if reader.buffer().is_empty() => r,
                Ok(_) => break Err(io::Error::new(io::ErrorKind::InvalidData, "frames behind the switch to rings")),
                Err(e) => {
                    tracing::warn!("session {}: no frame rings: {e}", cfg.session_id);
                    // "Not supported": the client keeps the socket.
                    let refused = Header::reply(OP_RING, h.seq, protocol::UNSUPPORTED, 0, 0);
                    if let Err(e) = write_frame(&mut *writer.lock(), &refused, &[], &[]) {
                        break Err(e);
                    }
                    continue;
                }
            };
            let mut w = writer.lock();
            if let Err(e) = write_frame(&mut *w, &Header::reply(OP_RING, h.seq, 0, 0, 0), &[], &[]) {
                break Err(e);
            }
            ring.set_timeouts(None, Some(Duration::from_secs(30)));
            ring_segment = None;
            *w = Stream::Ring(ring.clone());
            drop(w);
            reader = io::BufReader::with_capacity(READ_GULP, transport::FdReader::new(Stream::Ring(ring)));
            on_ring = true;
            tracing::info!("session {}: frames through rings in the shared segment", cfg.session_id);
            continue;
        }
        backend.set_context(h.ctx);
        // The bulk bytes go where the backend wants them (pinned memory for a copy), else
        // into our buffer.
        let len = h.bulk_len as usize;
        let place = if len > 0 { backend.bulk_place(h.op, &args, len) } else { None };
        // SAFETY: `Session::bulk_place` promises `len` bytes at `p`, valid and touched by
        // nothing else until this frame's call has been dispatched.
        let place = place.map(|p| unsafe { std::slice::from_raw_parts_mut(p.as_ptr(), len) });
        // Large bulk straight from the socket (one copy), small through the reader's buffer
        // (which holds the frames behind it too).
        let direct = len >= BULK_DIRECT;
        let got = if h.on_lanes() {
            // Sent striped over the lanes: wait for them to land it.
            if len > transport::lanes::LANE_MAX {
                break Err(io::Error::new(io::ErrorKind::InvalidData, "bulk on lanes over the limit"));
            }
            let s = match place {
                Some(s) => s,
                None => {
                    bulk.clear();
                    bulk.resize(len, 0);
                    &mut bulk[..]
                }
            };
            lanes.fill(h.seq, s).map(|()| &*s)
        } else {
            match place {
                Some(s) => {
                    let r = if direct { Unbuffered(&mut reader).read_exact(s) } else { reader.read_exact(s) };
                    r.map(|()| &*s)
                }
                None if direct => {
                    read_exact_into(&mut Unbuffered(&mut reader), &mut bulk, len).map(|()| bulk.as_slice())
                }
                None => read_exact_into(&mut reader, &mut bulk, len).map(|()| bulk.as_slice()),
            }
        };
        let bulk_in = match got {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break Ok(()),
            Err(e) => break Err(e),
        };
        busy.store(true, Ordering::Relaxed);
        if let Some(f) = frames.as_mut() {
            f.landed();
        }
        let oneway = h.is_oneway();
        if !oneway && protocol::is_oneway(h.op) {
            break Err(io::Error::new(io::ErrorKind::InvalidData, "one-way call sent as a request"));
        }
        if let (false, Some(seat)) = (oneway, seat.as_mut()) {
            if seat.stamp() {
                transport::crowd::note_crowded();
            }
            let now = transport::crowd::crowded();
            if now != shared {
                tracing::debug!(
                    "session {}: {}",
                    cfg.session_id,
                    if now { "the GPU is shared" } else { "alone again" }
                );
                backend.share_gpu(now);
                shared = now;
            }
        }
        let started = stats.as_ref().map(|_| std::time::Instant::now());
        // A synchronous call sees all work before it done, pending barriers included.
        if !oneway
            && protocol::sees_deferred_work(h.op)
            && let Some(code) = backend.flush()
        {
            deferred.get_or_insert(code);
        }
        if !oneway
            && deferred.is_none()
            && let Some(job) = backend.wait_job(h.op, &args)
        {
            busy.store(false, Ordering::Relaxed);
            waits.answer(job, &writer, h.op, h.seq);
            continue;
        }
        // Until its reply is written, the client's next copy cannot come from the thread
        // that waits for it: the lanes' readers stop polling for it (`transport::park`).
        let _parked = (!oneway).then(|| lanes.park());
        // A pending asynchronous error answers the next synchronous call in its place.
        let outcome = if let (false, Some(code)) = (oneway, deferred) {
            deferred = None;
            Ok(Err(code))
        } else {
            out.clear();
            let mut io = Io { bulk_in, bulk_out: &mut out };
            protocol::dispatch(&mut *backend, h.op, &args, &mut io)
        };
        if let Some(code) = backend.take_async_error() {
            deferred.get_or_insert(code);
        }
        memory.store(backend.memory_used(), Ordering::Relaxed);
        busy.store(false, Ordering::Relaxed);
        let took = started.map(|t0| t0.elapsed());
        if let (Some(st), Some(d)) = (stats.as_mut(), took) {
            st.add(h.op, d);
        }
        // Told once the caller has its answer: a log line is tens of microseconds.
        let tell_slow = || {
            if let Some(d) = took.filter(|d| *d >= SLOW_CALL) {
                tracing::info!(
                    "session {}: {} took {:.1} ms",
                    cfg.session_id,
                    protocol::op_name(h.op),
                    d.as_secs_f64() * 1e3
                );
            }
        };
        let outcome = match outcome {
            Ok(r) => r,
            Err(e) => break Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
        };
        if oneway {
            if let Err(code) = outcome {
                tracing::debug!(op = protocol::op_name(h.op), code, "asynchronous call failed");
                deferred.get_or_insert(code);
            }
            if let Some(f) = frames.as_mut() {
                f.done(&h);
            }
            tell_slow();
            continue;
        }
        if let Some(f) = frames.as_mut() {
            f.called();
        }
        let mut w = writer.lock();
        // Taken after every call, so that none outlives the call that made it.
        let staged = backend.reply_bulk();
        let r = match &outcome {
            Ok(value) => {
                let bulk_out = staged.unwrap_or(&out);
                let reply = crowd_flag(Header::reply(h.op, h.seq, 0, value.len(), bulk_out.len()));
                // The request names how many lanes the client reads (in `status`); it asks
                // from its transport's threshold on, this is the lowest (TLS's).
                let asked = h.flags & FLAG_REPLY_LANES != 0 && bulk_out.len() >= transport::lanes::LANE_MIN_TLS;
                match asked.then(|| lanes.replies(h.status as usize)).flatten() {
                    // The client reads its lanes for it: several cores copy the bytes.
                    Some(over) => write_frame(&mut *w, &transport::lanes::lane_header(reply), value, &[])
                        .and_then(|()| over.send(h.seq, bulk_out)),
                    None => write_frame(&mut *w, &reply, value, &[bulk_out]),
                }
            }
            Err(code) => write_frame(&mut *w, &crowd_flag(Header::reply(h.op, h.seq, *code, 0, 0)), &[], &[]),
        };
        drop(w);
        if let Err(e) = r {
            break Err(e);
        }
        // Before the log line, which is not the reply's: `done` is when the client could read it.
        if let Some(f) = frames.as_mut() {
            f.done(&h);
        }
        tell_slow();
    };
    if let Some(f) = &frames {
        f.write(cfg.session_id);
    }
    // Waits still running answer nobody once the client is gone, but they use the
    // session's contexts: let them end (a bounded while) before those are released.
    // Host functions the driver is running wait for a client that is gone: release them.
    host_funcs.close();
    waits.finish(Duration::from_secs(10));
    lanes.shutdown();
    done.store(true, Ordering::Relaxed);
    hb.thread().unpark();
    if let Some(st) = &stats {
        tracing::info!("session {} time per call:\n{}", cfg.session_id, st.report());
        if !lanes.is_empty() {
            tracing::info!(
                "session {}: lanes read {} KiB ahead of their frames; {} KiB came coded",
                cfg.session_id,
                lanes.read_ahead() >> 10,
                lanes.decoded() >> 10
            );
        }
    }
    backend.close();
    crate::blobs::flush_kept(Duration::from_secs(10));
    let _ = hb.join();
    match &result {
        Ok(()) => tracing::info!("session {} ended", cfg.session_id),
        Err(e) => tracing::warn!("session {} closed: {e}", cfg.session_id),
    }
    result
}

/// `VGPU_FRAME_LOG=PATH` (server): each frame's times (CLOCK_MONOTONIC µs: header read, bulk
/// landed, call done, reply written), its call and bulk size, written to `PATH.<session>`
/// when the session ends. `scripts/gpu/frames.py` lines them up with `timeline.c`'s record
/// of the client (the same clock on the same host): which frame the server was on while
/// the client waited.
struct FrameLog {
    path: std::ffi::OsString,
    rows: Vec<(f64, f64, f64, f64, u32, u64)>,
    read: f64,
    landed: f64,
    called: f64,
}

impl FrameLog {
    fn from_env() -> Option<FrameLog> {
        let path = std::env::var_os("VGPU_FRAME_LOG")?;
        Some(FrameLog { path, rows: Vec::with_capacity(1 << 16), read: 0.0, landed: 0.0, called: 0.0 })
    }

    fn read(&mut self) {
        self.read = transport::monotonic_micros();
    }

    fn landed(&mut self) {
        self.landed = transport::monotonic_micros();
    }

    fn called(&mut self) {
        self.called = transport::monotonic_micros();
    }

    /// The frame is done: its reply (if any) written.
    fn done(&mut self, h: &Header) {
        // A diagnostic for runs of minutes: the first million frames (50 MB) are kept.
        if self.rows.len() < 1 << 20 {
            let now = transport::monotonic_micros();
            // A one-way frame has no reply to write after its call, and sets no time of its
            // own (the one left is an earlier frame's): its call ended now.
            let called = if self.called > self.landed { self.called } else { now };
            self.rows.push((self.read, self.landed, called, now, h.op, h.bulk_len));
        }
    }

    fn write(&self, session: u64) {
        let mut text = String::new();
        for (a, b, c, d, op, n) in &self.rows {
            text.push_str(&format!("{a:.1} {b:.1} {c:.1} {d:.1} {} {n}\n", protocol::op_name(*op)));
        }
        let path = format!("{}.{session}", self.path.to_string_lossy());
        if let Err(e) = std::fs::write(&path, text) {
            tracing::warn!("VGPU_FRAME_LOG: {path}: {e}");
        }
    }
}

/// A segment a client offers before its handshake.
enum SegmentOffer {
    /// A memfd passed over the unix socket (`OP_SHM`), of this many bytes.
    Passed(std::os::fd::OwnedFd, u64),
    /// A part of a shared file (offset, length) that starts with this nonce (`OP_SHM_FILE`).
    File(u64, u64, [u8; transport::NONCE_LEN]),
}

impl SegmentOffer {
    /// The segment, a second mapping of it (for frame rings), and what it is (for the log).
    fn map(self, files: &[std::path::PathBuf]) -> Result<(Segment, Option<Segment>, String), String> {
        match self {
            SegmentOffer::Passed(fd, len) => {
                let again = fd.try_clone().ok().and_then(|fd| Segment::open(fd, len).ok());
                Ok((Segment::open(fd, len).map_err(|e| e.to_string())?, again, "passed by the client".into()))
            }
            SegmentOffer::File(at, len, nonce) => {
                let (seg, path) = shared_file(files, at, len, &nonce)?;
                let again = Segment::open_file(path, at, Some(len)).ok();
                Ok((seg, again, format!("{} at {} MiB", path.display(), at >> 20)))
            }
        }
    }
}

/// How long a session waits for the part of a shared file it names to be let go of: a
/// session that just ended holds it until its worker has exited (a program started right
/// after another, as Ollama starts its runners).
const SHARED_FILE_WAIT: Duration = Duration::from_secs(2);

/// The part (`len` bytes at `at`) of the one of `files` that the client maps: it starts with
/// the client's `nonce`. Taken for this session: a part serves one session at a time.
fn shared_file<'a>(
    files: &'a [std::path::PathBuf],
    at: u64,
    len: u64,
    nonce: &[u8; transport::NONCE_LEN],
) -> Result<(Segment, &'a std::path::Path), String> {
    for f in files {
        let Ok(seg) = Segment::open_file(f, at, Some(len)) else { continue };
        if seg.starts_with(nonce) {
            return match seg.lock(SHARED_FILE_WAIT) {
                Ok(true) => {
                    // Spent: a nonce seen on the wire (plain TCP) cannot take the file later.
                    seg.write_nonce(&[0; transport::NONCE_LEN]).map_err(|e| e.to_string())?;
                    Ok((seg, f))
                }
                Ok(false) => Err(format!("{} at {at} serves another session", f.display())),
                Err(e) => Err(format!("{}: {e}", f.display())),
            };
        }
    }
    Err(if files.is_empty() {
        "this server shares no files (--shm-file)".into()
    } else {
        format!("no shared file holds the client's nonce at {at} ({len} bytes)")
    })
}

/// The server's end of a session's frame rings, as `args` (offset and size) name them in
/// `segment` (mapped once more for them), ringing on `control`.
fn open_rings(
    args: &[u8],
    segment: Option<&Arc<Segment>>,
    control: &Stream,
    spin: Duration,
) -> io::Result<transport::RingStream> {
    let bad = |why: String| io::Error::new(io::ErrorKind::InvalidInput, why);
    let (offset, cap): (u64, u64) = postcard::from_bytes(args).map_err(|e| bad(format!("bad ring request: {e}")))?;
    let seg = segment.cloned().ok_or_else(|| bad("no shared segment (or rings asked for twice)".into()))?;
    let bell = control.plain_socket()?.ok_or_else(|| bad("frame rings need a plain socket".into()))?;
    let cap = usize::try_from(cap).map_err(|_| bad("ring size out of range".into()))?;
    transport::RingStream::new(seg, offset, cap, transport::ring::End::Server, bell, spin)
}

/// Tell the server who this session's client is (`vgpu sessions`), up the lane channel `fd`
/// (one datagram; nothing waits for it, and the names are cut short to fit it).
fn tell_client(fd: i32, hello: &Hello) {
    let cut = |s: &str| s.chars().take(200).collect::<String>();
    let info = protocol::hello::ClientInfo { pid: hello.pid, host: cut(&hello.host), program: cut(&hello.program) };
    tell(fd, &WorkerNote::Client(info));
}

/// Send `note` up the lane channel `fd`: one datagram, never waiting (a full channel drops
/// it; the next memory note says the same again).
fn tell(fd: i32, note: &WorkerNote) {
    if let Ok(b) = postcard::to_allocvec(note) {
        // SAFETY: a send from a local buffer on the channel the listener gave this worker.
        unsafe { libc::send(fd, b.as_ptr().cast(), b.len(), libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) };
    }
}

/// Where a session's extra connections go.
#[derive(Clone)]
struct Joins {
    lanes: LaneSet,
    host_funcs: Arc<crate::host_funcs::HostFuncs>,
}

/// Take the lanes the listener passes on `ctl` until it closes: each comes with its join,
/// whose session and key must be ours. Over TLS the join that routed a lane carries no key
/// (it came in clear); the lane's first frame inside TLS is its real join.
fn take_lanes(ctl: std::os::fd::OwnedFd, joins: &Joins, session: u64, key: &[u8; 32], tls: Option<&TlsServer>) {
    let mut buf = [0u8; 512];
    loop {
        let (n, fd) = match transport::recv_fd(std::os::fd::AsRawFd::as_raw_fd(&ctl), &mut buf) {
            Ok((0, _)) | Err(_) => return,
            Ok(got) => got,
        };
        let Some(fd) = fd else { continue };
        // SAFETY: a socket descriptor received just now, owned by nobody else.
        let stream = unsafe { Stream::from_fd(std::os::fd::IntoRawFd::into_raw_fd(fd)) };
        let Some(tls) = tls else {
            take_lane(joins, stream, postcard::from_bytes::<Join>(&buf[..n]).ok(), session, key);
            continue;
        };
        // The handshake on a thread of its own: a peer that stalls it holds up no other lane.
        let (joins, tls, key) = (joins.clone(), tls.clone(), *key);
        let spawned = std::thread::Builder::new().name("vgpu-lane-tls".into()).spawn(move || {
            let join = tls.accept(stream, HANDSHAKE_DEADLINE).and_then(|mut s| {
                s.set_timeouts(Some(HANDSHAKE_DEADLINE), None)?;
                let h = read_header(&mut s)?;
                let mut args = Vec::new();
                if h.op != OP_JOIN || h.bulk_len != 0 || h.args_len > crate::listener::MAX_JOIN {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "a lane's first frame is not a join"));
                }
                read_exact_into(&mut s, &mut args, h.args_len as usize)?;
                s.set_timeouts(None, None)?;
                Ok((s, postcard::from_bytes::<Join>(&args).ok()))
            });
            match join {
                Ok((s, j)) => take_lane(&joins, s, j, session, &key),
                Err(e) => tracing::warn!("session {session}: a TLS lane was refused: {e}"),
            }
        });
        if let Err(e) = spawned {
            tracing::warn!("session {session}: lane not taken: {e}");
        }
    }
}

/// Add a lane, or the host-function connection, whose join (if it parsed) names this
/// session with its key.
fn take_lane(joins: &Joins, stream: Stream, join: Option<Join>, session: u64, key: &[u8; 32]) {
    let Some(join) = join.filter(|j| j.session == session && constant_time_eq(&j.key, key)) else {
        tracing::warn!("session {session}: a lane with a wrong key was refused");
        return;
    };
    let taken = match join.role {
        Role::Lane(lane) => joins.lanes.add(stream, lane),
        Role::HostFuncs => joins.host_funcs.attach(stream),
    };
    match taken {
        Ok(()) => tracing::debug!("session {session}: {:?} joined", join.role),
        Err(e) => tracing::warn!("session {session}: {:?} not taken: {e}", join.role),
    }
}

/// `reply`, flagged [`FLAG_CROWDED`] while other sessions use the GPU too: the client's
/// threads then stop polling (`transport::crowd`).
fn crowd_flag(mut reply: Header) -> Header {
    if transport::crowd::crowded() {
        reply.flags |= FLAG_CROWDED;
    }
    reply
}

/// Waits answered by helper threads (`Session::wait_job`).
#[derive(Clone, Default)]
struct Waits(Arc<std::sync::atomic::AtomicUsize>);

impl Waits {
    fn pending(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }

    /// Run `job` on a helper thread that then answers request `seq` of opcode `op`; on
    /// this thread if none can be started.
    fn answer(&self, job: WaitJob, writer: &Arc<Mutex<Stream>>, op: u32, seq: u32) {
        let reply = move |writer: &Mutex<Stream>, r: Result<(), u32>| {
            let code = r.err().unwrap_or(0);
            // The client may be gone by now: nothing to tell it then.
            let _ = write_frame(&mut *writer.lock(), &crowd_flag(Header::reply(op, seq, code, 0, 0)), &[], &[]);
        };
        self.0.fetch_add(1, Ordering::AcqRel);
        let (count, w) = (self.0.clone(), writer.clone());
        let job = std::sync::Arc::new(Mutex::new(Some(job)));
        let run = {
            let job = job.clone();
            move || {
                if let Some(j) = job.lock().take() {
                    reply(&w, j());
                }
                count.fetch_sub(1, Ordering::AcqRel);
            }
        };
        if std::thread::Builder::new().name("vgpu-wait".into()).spawn(run).is_err()
            && let Some(j) = job.lock().take()
        {
            reply(writer, j());
            self.0.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Wait (at most `limit`) for every helper to be done.
    fn finish(&self, limit: Duration) {
        let until = std::time::Instant::now() + limit;
        while self.pending() > 0 && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Server-side time per opcode (count, total), for finding where a workload's time goes.
#[derive(Default)]
struct Stats(Vec<(u64, Duration)>);

impl Stats {
    fn add(&mut self, op: u32, d: Duration) {
        let i = op as usize;
        if i >= protocol::OP_NAMES.len() {
            return;
        }
        if self.0.len() <= i {
            self.0.resize(i + 1, (0, Duration::ZERO));
        }
        self.0[i].0 += 1;
        self.0[i].1 += d;
    }

    fn report(&self) -> String {
        protocol::call_time_table(self.0.iter().enumerate().map(|(op, &(n, t))| (op as u32, n, t)))
    }
}

/// Why a server with this build and `token` must refuse `hello`, if it must: a protocol
/// version or wire table that differs (naming both), a missing or wrong token.
pub fn refusal(hello: &Hello, token: Option<&str>) -> Option<String> {
    hello.mismatch(PROTOCOL_VERSION, WIRE_HASH).or_else(|| match token {
        Some(t) if !constant_time_eq(t.as_bytes(), hello.token.as_bytes()) => Some(if hello.token.is_empty() {
            "this server requires a token (set VGPU_TOKEN or VGPU_TOKEN_FILE)".to_string()
        } else {
            "wrong token".to_string()
        }),
        _ => None,
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // Length is not secret; the bytes are.
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_works() {
        assert!(super::constant_time_eq(b"abc", b"abc"));
        assert!(!super::constant_time_eq(b"abc", b"abd"));
        assert!(!super::constant_time_eq(b"abc", b"ab"));
    }

    fn hello(token: &str) -> Hello {
        Hello {
            protocol_version: PROTOCOL_VERSION,
            wire_hash: WIRE_HASH,
            pid: 1,
            host: "h".into(),
            program: "p".into(),
            token: token.into(),
        }
    }

    #[test]
    fn refusals_say_why() {
        assert_eq!(refusal(&hello(""), None), None);
        assert_eq!(refusal(&hello("s3cret"), Some("s3cret")), None);
        assert!(refusal(&hello(""), Some("s3cret")).unwrap().contains("requires a token"));
        assert_eq!(refusal(&hello("guess"), Some("s3cret")).unwrap(), "wrong token");
        // A build mismatch is refused before the token is looked at, naming both sides.
        let old = Hello { protocol_version: PROTOCOL_VERSION + 1, ..hello("s3cret") };
        let why = refusal(&old, Some("s3cret")).unwrap();
        assert!(why.contains(&format!("client speaks {}", PROTOCOL_VERSION + 1)), "{why}");
        assert!(why.contains(&format!("server speaks {PROTOCOL_VERSION}")), "{why}");
        let other = Hello { wire_hash: WIRE_HASH ^ 0xdead_beef, ..hello("") };
        let why = refusal(&other, None).unwrap();
        assert!(why.contains(&format!("client {:016x}", WIRE_HASH ^ 0xdead_beef)), "{why}");
        assert!(why.contains(&format!("server {WIRE_HASH:016x}")), "{why}");
    }
}
