use crate::Config;
use crate::idle::{self, Plan, Tracker};
use device_model::Snapshot;
use parking_lot::Mutex;
use protocol::hello::{Hello, Welcome};
use protocol::{Call, PROTOCOL_VERSION, WIRE_HASH, ops};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::time::{Duration, Instant};
use transport::{Conn, Error};

/// This process's connections to its servers and what they told us.
pub struct Session {
    conns: Vec<Conn>,
    /// All servers' devices in one ordered list (server order, then device order).
    pub snapshot: Snapshot,
    pid: u32,
    trace: Trace,
    /// What each stream has queued, so that synchronizes can be answered here.
    idle: Tracker,
    /// Per server, the segment shared with it (`shm:` addresses).
    shm: Vec<Option<crate::shm::Shm>>,
    /// Kept weights on or off by configuration (`Config::blobs`).
    blobs: Option<bool>,
    /// Repeated copies in kept pieces on or off by configuration (`Config::pages`).
    pages: Option<bool>,
    /// Per server, its page store as this client pictures it (`crate::pages`), and when the
    /// link's rate was last asked for (ms since `born`) with the answer (0: none yet).
    tables: Vec<Mutex<Pages>>,
    rates: Vec<(std::sync::atomic::AtomicU64, std::sync::atomic::AtomicU64)>,
    born: Instant,
    /// Device-to-host copies into pinned memory whose bytes are still on their way
    /// ([`Session::dtoh_later`]), in the order they were sent; held while they are collected.
    later: Mutex<Vec<Later>>,
    has_later: std::sync::atomic::AtomicBool,
    /// How many such copies were sent, ever; an error met collecting some for a host
    /// function, for the next synchronous call.
    later_sent: std::sync::atomic::AtomicU64,
    /// How many of them were collected: always the first ones, in order.
    later_collected: std::sync::atomic::AtomicU64,
    later_error: Mutex<Option<Error>>,
    /// The application's host functions (`cuLaunchHostFunc`), run when a server asks.
    host_funcs: crate::host_funcs::HostFuncs,
}

/// A device-to-host copy sent whose reply is collected before the next synchronous call.
struct Later {
    server: usize,
    sent: transport::Sent,
    /// The application's pinned memory, which it may not touch before the copy is known
    /// complete (a synchronize, an event, a query): every such call collects first.
    dst: usize,
    len: usize,
    stream: idle::Key,
    ticket: u64,
    /// Its place among the copies sent this way (`Session::later_sent`).
    number: u64,
}

/// A session's page store with one server, as far as the client knows.
pub enum Pages {
    /// Not asked for yet.
    Unopened,
    Open(crate::pages::Table),
    /// The server granted none (or could not be asked).
    Off,
}

/// The session of the current process, or why there is none. After `fork` the child
/// starts its own: the parent's connection and locks are not touched again.
static CURRENT: AtomicPtr<Result<Session, String>> = AtomicPtr::new(std::ptr::null_mut());
static INIT: Mutex<()> = Mutex::new(());

/// This process's id, cached: asked on every forwarded call, so no system call each time.
/// A fork handler refreshes it in the child, which then starts its own session.
pub fn pid() -> u32 {
    static ATFORK: std::sync::Once = std::sync::Once::new();
    ATFORK.call_once(|| {
        extern "C" fn child() {
            CACHED_PID.store(0, Ordering::Relaxed);
        }
        unsafe { libc::pthread_atfork(None, None, Some(child)) };
    });
    match CACHED_PID.load(Ordering::Relaxed) {
        0 => {
            let p = std::process::id();
            CACHED_PID.store(p, Ordering::Relaxed);
            p
        }
        p => p,
    }
}

static CACHED_PID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// The process's session, connecting on first use. A failure is remembered (and logged
/// once, naming the address tried), as CUDA remembers a failed `cuInit`.
pub fn session() -> Result<&'static Session, &'static str> {
    if let Some(s) = current() {
        return s.as_ref().map_err(|e| e.as_str());
    }
    // A lock inherited locked across fork would block forever; wait a bounded time.
    let _g = INIT.try_lock_for(Duration::from_secs(10));
    if let Some(s) = current() {
        return s.as_ref().map_err(|e| e.as_str());
    }
    let made = Session::connect();
    if let Err(e) = &made {
        eprintln!("vgpu: {e}");
    }
    install(made).as_ref().map_err(|e| e.as_str())
}

/// How often [`renewed`] tries again, at most: a server that is down costs a caller one
/// connect attempt per interval (up to the connect timeout over TCP), not one per call.
pub const RENEW_EVERY: Duration = Duration::from_secs(2);

/// The process's session, made again where the last one was lost (its server went away)
/// or never made, at most once per [`RENEW_EVERY`]. For NVML, whose state all lives on the
/// server: a monitoring daemon, or a service started before the server, then works once
/// the server is back, as it would after a driver reload. The driver API keeps a lost
/// session lost ([`session`]): its contexts, memory and modules died with it.
pub fn renewed() -> Result<&'static Session, &'static str> {
    let stale = match current() {
        None => return session(),
        Some(Ok(s)) if !s.is_lost() => return Ok(s),
        Some(s) => s,
    };
    let _g = INIT.try_lock_for(Duration::from_secs(10));
    if let Some(Ok(s)) = current()
        && !s.is_lost()
    {
        return Ok(s); // another thread made it again meanwhile
    }
    if !RENEW.due(Instant::now()) {
        return stale.as_ref().map_err(|e| e.as_str());
    }
    match Session::connect() {
        Ok(made) => {
            if let Ok(old) = stale {
                old.close();
            }
            eprintln!("vgpu: connected to the vgpu server again");
            install(Ok(made)).as_ref().map_err(|e| e.as_str())
        }
        // Keep what there was: a lost session's calls fail as lost, a failed one's as
        // never connected.
        Err(_) => stale.as_ref().map_err(|e| e.as_str()),
    }
}

/// When a session was last made, for [`renewed`]'s interval.
static RENEW: Renewal = Renewal::new();

struct Renewal {
    last: Mutex<Option<Instant>>,
}

impl Renewal {
    const fn new() -> Renewal {
        Renewal { last: Mutex::new(None) }
    }

    /// Whether a try is due at `now` (and if so, it counts as made). Bounded, like every
    /// wait here: a lock left held across `fork` makes the answer "not due".
    fn due(&self, now: Instant) -> bool {
        let Some(mut last) = self.last.try_lock_for(Duration::from_millis(100)) else { return false };
        match *last {
            Some(t) if now.saturating_duration_since(t) < RENEW_EVERY => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }
}

/// Make `made` the process's session. Leaked on purpose: shims hand out references for
/// the life of the process, and a replaced session's may still be in use.
fn install(made: Result<Session, String>) -> &'static Result<Session, String> {
    if let Some(mut last) = RENEW.last.try_lock_for(Duration::from_millis(100)) {
        last.get_or_insert_with(Instant::now);
    }
    let p = Box::into_raw(Box::new(made));
    let s: &'static Result<Session, String> = unsafe { &*p };
    if let Ok(sess) = s
        && std::env::var_os("VGPU_BATCH").is_none_or(|v| v != "0")
    {
        for c in &sess.conns {
            c.start_flusher();
        }
    }
    CURRENT.store(p, Ordering::Release);
    s
}

fn current() -> Option<&'static Result<Session, String>> {
    let p = CURRENT.load(Ordering::Acquire);
    if p.is_null() {
        return None;
    }
    let s = unsafe { &*p };
    match s {
        Ok(sess) if sess.pid != pid() => None,
        Err(_) if FAILED_PID.load(Ordering::Relaxed) != pid() as usize => None,
        _ => Some(s),
    }
}

static FAILED_PID: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Session {
    fn connect() -> Result<Session, String> {
        FAILED_PID.store(pid() as usize, Ordering::Relaxed);
        let cfg = Config::load()?;
        let hello = Hello {
            protocol_version: PROTOCOL_VERSION,
            wire_hash: WIRE_HASH,
            pid: pid(),
            host: hostname(),
            program: std::env::args().next().unwrap_or_default(),
            token: cfg.token.clone().unwrap_or_default(),
        };
        let mut conns = Vec::new();
        let mut parts = Vec::new();
        let mut shm = Vec::new();
        for (i, addr) in cfg.servers.iter().enumerate() {
            // A shared file serves one session: the first server's.
            let file = cfg.shm_file.as_deref().filter(|_| i == 0);
            let (conn, welcome, seg) = crate::shm::connect(addr, &hello, cfg.timeouts, file).map_err(|e| match e {
                Error::Refused(r) => format!("the vgpu server at {addr} refused this client: {r}"),
                Error::Lost(why) => format!("cannot reach the vgpu server at {addr} (from {}): {why}", cfg.source),
                e => format!("cannot reach the vgpu server at {addr} (from {}): {e}", cfg.source),
            })?;
            let Welcome::Accepted { snapshot, .. } = welcome else { unreachable!("refusals are errors") };
            // A shared segment carries large copies itself.
            if seg.is_none() {
                conn.set_lanes(cfg.lanes);
                conn.set_coding(cfg.code);
            }
            conns.push(conn);
            parts.push(snapshot);
            shm.push(seg);
        }
        let snapshot = Snapshot::merge(parts).ok_or("no vgpu server configured")?;
        let (trace, idle) = (Trace::from_env(), Tracker::from_env());
        let tables = conns.iter().map(|_| Mutex::new(Pages::Unopened)).collect();
        let rates = conns.iter().map(|_| Default::default()).collect();
        let (blobs, pages, born) = (cfg.blobs, cfg.pages, Instant::now());
        let (later, has_later) = (Mutex::new(Vec::new()), Default::default());
        Ok(Session {
            conns,
            snapshot,
            pid: pid(),
            trace,
            idle,
            shm,
            blobs,
            pages,
            tables,
            rates,
            born,
            later,
            has_later,
            later_sent: Default::default(),
            later_collected: Default::default(),
            later_error: Default::default(),
            host_funcs: Default::default(),
        })
    }

    /// Event `event` of `server` is shared with another process (`idle::Tracker::share_event`).
    pub fn share_event(&self, server: usize, event: u64) {
        self.idle.share_event((server, event));
    }

    /// Keep host function `f` for `server` to run (`crate::host_funcs`): its id, for
    /// `launch_host_func`. `Err`: that server cannot run host functions. Before it runs,
    /// the device-to-host copies sent before it are collected: it may read their bytes.
    pub fn host_func(&'static self, server: usize, f: crate::host_funcs::Func) -> Result<u64, String> {
        let conn = self.conns.get(server).ok_or("no such server")?;
        let sent = self.later_sent.load(Ordering::Acquire);
        let run: crate::host_funcs::Func = std::sync::Arc::new(move |status| {
            self.collect_until(sent);
            f(status)
        });
        self.host_funcs.add(server, conn, run)
    }

    /// Host function `id` will not run (its launch failed).
    pub fn drop_host_func(&self, id: u64) {
        self.host_funcs.remove(id);
    }

    /// Number of servers.
    pub fn servers(&self) -> usize {
        self.conns.len()
    }

    /// Whether large copies to `server` go over lanes (opening them the first time).
    pub fn lanes(&self, server: usize) -> bool {
        self.conns.get(server).is_some_and(|c| c.lanes().is_some())
    }

    /// Whether host-to-device bytes to `server` go packed where they are runs of a word
    /// (`protocol::runs`). `VGPU_PACK`: unset, over TCP, TLS and vsock, whose bytes cross a
    /// link (H100 hosts, loopback limited by `tc`, two calls: pp512 at 10 Gbit/s 0.814 and
    /// 0.795 of native unpacked, 0.843 and 0.846 packed), but not over TCP to this host's
    /// own loopback address: within the host the lanes move a mask as fast as it packs, and
    /// while llama.cpp's threads keep every core busy, packing and unpacking a 512 KiB mask
    /// took 171 and 95-112 µs there against 45 and 52 µs over lanes (frame logs, session
    /// 16). `1`: over every socket; `0`: never.
    pub fn packs(&self, server: usize) -> bool {
        static MODE: std::sync::OnceLock<Option<bool>> = std::sync::OnceLock::new();
        let mode = *MODE.get_or_init(|| match std::env::var("VGPU_PACK").as_deref() {
            Ok("0") => Some(false),
            Ok("1") => Some(true),
            _ => None,
        });
        let Some(c) = self.conns.get(server) else { return false };
        mode.unwrap_or_else(|| c.address().crosses_link() && !c.is_loopback())
    }

    /// Whether copies to `server` are offered by content first (`htod_cached`), so that a
    /// model's second load sends hashes instead of its weights: `blobs::offered_over`.
    pub fn offers_blobs(&self, server: usize) -> bool {
        let Some(c) = self.conns.get(server) else { return false };
        crate::blobs::offered_over(c.address(), c.is_loopback(), self.blobs)
    }

    /// The page store of `server` as this client pictures it, where repeated copies go in
    /// pieces it keeps (`pages::paged_over`). Copies must reach the server in the order they
    /// were planned: hold the lock until the copy is sent.
    pub fn pages(&self, server: usize) -> Option<&Mutex<Pages>> {
        let c = self.conns.get(server)?;
        let decides = self.pages.is_none() && crate::pages::rate_decides(c.address(), c.is_loopback());
        let rate = if decides { self.link_rate(server) } else { None };
        crate::pages::paged_over(c.address(), c.is_loopback(), rate, self.pages).then(|| &self.tables[server])
    }

    /// What `server`'s connection delivers by the kernel's estimate: a few system calls,
    /// asked at most every 250 ms once there is one (until then, at every copy).
    fn link_rate(&self, server: usize) -> Option<u64> {
        let (asked, rate) = &self.rates[server];
        let now = self.born.elapsed().as_millis() as u64;
        if rate.load(Ordering::Relaxed) == 0 || now.saturating_sub(asked.load(Ordering::Relaxed)) >= 250 {
            rate.store(self.conns[server].delivery_rate().unwrap_or(0), Ordering::Relaxed);
            asked.store(now, Ordering::Relaxed);
        }
        Some(rate.load(Ordering::Relaxed)).filter(|&r| r > 0)
    }

    /// The segment shared with `server` (`shm:` addresses), if it has one.
    pub fn shm(&self, server: usize) -> Option<&crate::shm::Shm> {
        self.shm.get(server)?.as_ref()
    }

    /// The value the application sees for handle `raw` issued by `server`
    /// ([`crate::handles`]); `None` if it cannot be told apart from other servers' handles.
    pub fn tag(&self, server: usize, raw: u64) -> Option<u64> {
        crate::handles::tag(self.conns.len(), server, raw)
    }

    /// The server of an application-visible handle, and the server's own value.
    pub fn untag(&self, h: u64) -> Option<(usize, u64)> {
        crate::handles::untag(self.conns.len(), h)
    }

    /// An asynchronous device-to-host copy of `len` bytes into the application's pinned
    /// memory at `dst`, sent without waiting for its bytes: natively such a copy returns at
    /// once, and llama.cpp prepares its next prompt batch meanwhile; waiting here for the
    /// stream kept the GPU idle for that time (a 4k-token prompt in eight batches ran at
    /// 0.75-0.80 of native over sockets, 0.99 through shared memory, whose copies never
    /// waited). The bytes are collected (written to `dst`) before the next synchronous call
    /// of any thread returns, and before pinned memory is freed. False: not deferred (frames
    /// through rings, a connection that could not be split, `VGPU_TRACE=1`), to be copied as
    /// usual.
    ///
    /// # Safety
    /// `dst..dst+len` is pinned memory of this process that stays allocated until collected
    /// (the shim frees pinned memory only after [`Session::collect`]).
    pub unsafe fn dtoh_later(
        &self,
        server: usize,
        ctx: u64,
        c: &ops::cuMemcpyDtoHAsync_v2,
        dst: *mut u8,
        len: usize,
    ) -> Result<bool, Error> {
        let Some(conn) = self.conns.get(server) else { return Ok(false) };
        if self.trace == Trace::Lines {
            return Ok(false);
        }
        let mut later = self.later.lock();
        // As for a copy that waits: its reply says the stream was drained up to it (every
        // synchronous call collects it first, so the stream's state needs no change now).
        let ticket = self.idle.ticket();
        let stream = idle::key(server, ctx, c.stream);
        let Some(sent) = conn.send_for_reply(ctx, c, len)? else { return Ok(false) };
        let number = self.later_sent.fetch_add(1, Ordering::AcqRel);
        later.push(Later { server, sent, dst: dst as usize, len, stream, ticket, number });
        self.has_later.store(true, Ordering::Release);
        Ok(true)
    }

    /// Write the bytes of every device-to-host copy still on its way to where the
    /// application asked; the first error one met (or one met by `Session::collect_until`
    /// since), as an asynchronous error.
    pub fn collect(&self) -> Result<(), Error> {
        if !self.has_later.load(Ordering::Acquire) {
            return Ok(());
        }
        // Held throughout: another thread's synchronize returns only after the bytes are in.
        let mut later = self.later.lock();
        let n = later.len();
        let r = self.collect_first(&mut later, n);
        match self.later_error.lock().take() {
            Some(e) => Err(e),
            None => r,
        }
    }

    /// Return once the copies sent before copy number `sent` (see `later_sent`) are
    /// collected, collecting them here unless another thread is, and keeping an error for
    /// [`Session::collect`] to report: before a host function runs, whose stream ran those
    /// copies and which may read their bytes. Not the later ones, which may wait in their
    /// stream for this very function; a thread collecting those collects these first, in
    /// order, so waiting for it ends.
    fn collect_until(&self, sent: u64) {
        while self.later_collected.load(Ordering::Acquire) < sent {
            let Some(mut later) = self.later.try_lock_for(Duration::from_millis(1)) else { continue };
            let n = later.iter().take_while(|l| l.number < sent).count();
            if let Err(e) = self.collect_first(&mut later, n) {
                self.later_error.lock().get_or_insert(e);
            }
        }
    }

    /// Collect the first `n` of `later`; the first error one met.
    fn collect_first(&self, later: &mut Vec<Later>, n: usize) -> Result<(), Error> {
        let mut first = Ok(());
        for l in later.drain(..n) {
            // SAFETY: see `dtoh_later`.
            let out = unsafe { std::slice::from_raw_parts_mut(l.dst as *mut u8, l.len) };
            let r = self.conns[l.server].collect(l.sent, out);
            if r.is_ok() {
                self.idle.drained(l.stream, l.ticket);
            }
            if let (Ok(()), Err(e)) = (&first, r) {
                first = Err(e);
            }
            self.later_collected.fetch_add(1, Ordering::AcqRel);
        }
        if later.is_empty() {
            self.has_later.store(false, Ordering::Release);
        }
        first
    }

    /// Forward one call to `server`, with `ctx` current there. Synchronizes the client can
    /// answer itself are answered here ([`idle`]); every other call also tells the tracker
    /// what it queues. A synchronous call first collects device-to-host copies still on
    /// their way ([`Session::collect`]).
    pub fn call<C: Call>(
        &self,
        server: usize,
        ctx: u64,
        c: &C,
        bulk_in: &[&[u8]],
        bulk_out: Option<&mut [u8]>,
    ) -> Result<C::Ret, Error> {
        if !C::ONEWAY {
            self.collect()?;
        }
        let key = |s: u64| idle::key(server, ctx, s);
        let unit = || postcard::from_bytes::<C::Ret>(&[]).map_err(|e| Error::Lost(e.to_string()));
        let sent = || bulk_in.iter().map(|b| b.len() as u64).sum::<u64>();
        match (C::OP, c.stream()) {
            (ops::cuStreamSynchronize::OP, Some(s)) => {
                // The legacy default stream (0, 1) waits for the context's other streams.
                return if s <= 1 {
                    let plan = self.idle.plan_all(server, ctx);
                    self.synchronize(server, ctx, c, plan, None, |t| self.idle.drained(key(s), t))
                } else {
                    let plan = self.idle.plan(key(s));
                    self.synchronize(server, ctx, c, plan, Some(s), |t| self.idle.drained(key(s), t))
                };
            }
            (ops::cuCtxSynchronize::OP, _) => {
                let plan = self.idle.plan_all(server, ctx);
                return self.synchronize(server, ctx, c, plan, None, |t| self.idle.drained_all(server, ctx, t));
            }
            (ops::cuStreamQuery::OP, Some(s)) if self.idle.is_idle(key(s)) => return self.answered(server, c, unit()),
            // The server waits for the stream before it answers with the bytes.
            (ops::cuMemcpyDtoHAsync_v2::OP, Some(s)) if bulk_out.as_ref().is_some_and(|b| !b.is_empty()) => {
                let ticket = self.idle.ticket();
                let r = self.forward(server, ctx, c, bulk_in, bulk_out)?;
                self.idle.drained(key(s), ticket);
                return Ok(r);
            }
            (ops::cuStreamDestroy_v2::OP, Some(s)) => self.idle.forget(key(s)),
            // Events: answered here when their work is known done (see `idle`).
            (ops::cuEventSynchronize::OP | ops::cuEventQuery::OP, _) => {
                let e = (server, c.event().unwrap_or(0));
                if self.idle.event_done(e) {
                    return self.answered(server, c, unit());
                }
                let ticket = self.idle.ticket();
                let r = self.forward(server, ctx, c, bulk_in, bulk_out)?;
                self.idle.event_completed(e, ticket);
                return Ok(r);
            }
            (ops::cuEventRecord::OP | ops::cuEventRecordWithFlags::OP, Some(s)) => {
                self.idle.work(key(s), Some(0));
                self.idle.recorded((server, c.event().unwrap_or(0)), key(s));
            }
            (ops::cuStreamWaitEvent::OP, Some(s)) => {
                let done = self.idle.waits_for(key(s), (server, c.event().unwrap_or(0)));
                self.idle.work(key(s), done.then_some(0));
            }
            (ops::cuEventDestroy_v2::OP, _) => self.idle.forget_event((server, c.event().unwrap_or(0))),
            // Queries and capture's end queue nothing.
            (
                ops::cuStreamIsCapturing::OP
                | ops::cuStreamGetCaptureInfo::OP
                | ops::cuStreamGetPriority::OP
                | ops::cuStreamGetFlags::OP
                | ops::cuStreamEndCapture::OP
                | ops::cuMemcpyDtoHAsync_v2::OP
                | ops::cuStreamQuery::OP,
                _,
            ) => {}
            // Bytes already sent, a marker, a stream-ordered free: nothing a caller waits on.
            (
                ops::cuMemcpyHtoDAsync_v2::OP | ops::htod_runs::OP | ops::htod_keep::OP | ops::htod_pages::OP,
                Some(s),
            ) => self.idle.work(key(s), Some(sent())),
            // The server copies from bytes it holds: queued in order like a marker.
            (ops::htod_cached::OP, Some(s)) => self.idle.work(key(s), Some(0)),
            (ops::cuMemFreeAsync::OP, Some(s)) => self.idle.work(key(s), Some(0)),
            // The synchronous form returns once the driver staged the bytes; its DMA, on the
            // legacy stream, may still run (as natively for pageable memory).
            (ops::cuMemcpyHtoD_v2::OP, None) => self.idle.work(key(0), Some(sent())),
            (_, Some(s)) => self.idle.work(key(s), None),
            (_, None) if C::ONEWAY => self.idle.unknown_work(server, ctx),
            (_, None) => {}
        }
        self.forward(server, ctx, c, bulk_in, bulk_out)
    }

    /// Carry out a synchronize's `plan`: answer it here; send a one-way barrier instead (on
    /// `stream`, or on the whole context); or forward it, then tell the tracker with
    /// `drained(ticket)` what the answer covered.
    fn synchronize<C: Call>(
        &self,
        server: usize,
        ctx: u64,
        c: &C,
        plan: Plan,
        stream: Option<u64>,
        drained: impl FnOnce(u64),
    ) -> Result<C::Ret, Error> {
        let unit = || postcard::from_bytes::<C::Ret>(&[]).map_err(|e| Error::Lost(e.to_string()));
        match plan {
            Plan::Done => self.answered(server, c, unit()),
            Plan::Barrier => {
                match stream {
                    Some(stream) => self.forward(server, ctx, &ops::stream_barrier { stream }, &[], None)?,
                    None => self.forward(server, ctx, &ops::ctx_barrier {}, &[], None)?,
                }
                unit()
            }
            Plan::Wait(ticket) => {
                let r = self.forward(server, ctx, c, &[], None)?;
                drained(ticket);
                Ok(r)
            }
        }
    }

    /// The idle tracker's epoch, taken before a call that drains a stream outside `call`.
    pub fn idle_ticket(&self) -> u64 {
        self.idle.ticket()
    }

    /// Forward a one-way copy on stream `stream` whose `bytes` the client has already put
    /// where the server reads them, outside the caller's buffer (a chunk in the shared
    /// segment's staging ring, whose slot is reused only after the copy's ticket): as after
    /// a copy over the socket, the caller may reuse its buffer, so a synchronize needs only
    /// a barrier ([`idle`]'s light work), not a wait for the GPU. Anything else on the
    /// stream makes it busy as before.
    pub fn call_staged<C: Call>(
        &self,
        server: usize,
        ctx: u64,
        c: &C,
        stream: u64,
        bytes: u64,
    ) -> Result<C::Ret, Error> {
        debug_assert!(C::ONEWAY, "a staged copy is one-way");
        self.idle.work(idle::key(server, ctx, stream), Some(bytes));
        self.forward(server, ctx, c, &[], None)
    }

    /// Stream `stream` of (`server`, `ctx`) (server values) was drained by calls made since
    /// `ticket` (a download through the shared segment waited for its last copy).
    pub fn stream_drained(&self, server: usize, ctx: u64, stream: u64, ticket: u64) {
        self.idle.drained(idle::key(server, ctx, stream), ticket);
    }

    /// A call answered without the server: traced like the others. A lost connection still
    /// fails it, as the lost device fails every call natively.
    fn answered<C: Call>(&self, server: usize, c: &C, r: Result<C::Ret, Error>) -> Result<C::Ret, Error> {
        let r = match self.conns.get(server) {
            Some(conn) if conn.is_dead() => Err(Error::Lost(format!("{}: connection closed earlier", conn.address()))),
            _ => r,
        };
        match self.trace {
            Trace::Off => {}
            Trace::Summary => summary::add_local(C::OP),
            Trace::Lines => eprintln!("vgpu-trace {} {:?} -> {:?} (answered locally)", protocol::op_name(C::OP), c, r),
        }
        r
    }

    fn forward<C: Call>(
        &self,
        server: usize,
        ctx: u64,
        c: &C,
        bulk_in: &[&[u8]],
        bulk_out: Option<&mut [u8]>,
    ) -> Result<C::Ret, Error> {
        let conn = self.conns.get(server).ok_or_else(|| Error::Lost(format!("no server {server}")))?;
        if self.trace == Trace::Off {
            return conn.call(ctx, c, bulk_in, bulk_out);
        }
        let t = Instant::now();
        let r = conn.call(ctx, c, bulk_in, bulk_out);
        if self.trace == Trace::Summary {
            summary::add(C::OP, t.elapsed());
            return r;
        }
        let n: usize = bulk_in.iter().map(|b| b.len()).sum();
        eprintln!(
            "vgpu-trace {} {:?} bulk_in={} -> {:?} {:.1}us{}",
            protocol::op_name(C::OP),
            c,
            n,
            r,
            t.elapsed().as_secs_f64() * 1e6,
            if C::ONEWAY { " (one-way)" } else { "" }
        );
        r
    }

    /// Send raw, already-encoded frames (for sibling shims that speak through libcuda).
    pub fn roundtrip_raw(
        &self,
        server: usize,
        op: u32,
        ctx: u64,
        args: &[u8],
        bulk_in: &[&[u8]],
        bulk_out: Option<&mut [u8]>,
    ) -> Result<Vec<u8>, Error> {
        let conn = self.conns.get(server).ok_or_else(|| Error::Lost(format!("no server {server}")))?;
        if !protocol::is_oneway(op) {
            self.collect()?;
        }
        let t = (self.trace != Trace::Off).then(Instant::now);
        let r = if protocol::is_oneway(op) {
            // A cuBLAS call runs on its handle's stream, which this layer cannot name.
            self.idle.unknown_work(server, ctx);
            conn.send(op, ctx, args, bulk_in).map(|_| Vec::new())
        } else {
            conn.roundtrip(op, ctx, args, bulk_in, bulk_out)
        };
        if let Some(t) = t {
            summary::add(op, t.elapsed());
        }
        r
    }

    pub fn is_lost(&self) -> bool {
        self.conns.iter().any(|c| c.is_dead())
    }

    /// Close every connection (a replaced session's: the servers still reachable end its
    /// workers, and its threads end).
    fn close(&self) {
        for c in &self.conns {
            c.close();
        }
    }
}

/// `VGPU_TRACE`: `1` prints every forwarded call; `summary` prints, at exit, how many calls
/// of each kind the process made and the time it spent in them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trace {
    Off,
    Lines,
    Summary,
}

/// With `VGPU_TRACE` set to lines (not `summary`): one line about something a shim did
/// without a call, such as an entry point it did not have when asked for one by name.
pub fn trace_note(line: impl FnOnce() -> String) {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *ON.get_or_init(|| Trace::asked() == Trace::Lines) {
        eprintln!("vgpu-trace {}", line());
    }
}

impl Trace {
    /// What `VGPU_TRACE` asks for.
    fn asked() -> Trace {
        match std::env::var("VGPU_TRACE").as_deref() {
            Ok("summary") => Trace::Summary,
            Ok("0") | Ok("") | Err(_) => Trace::Off,
            Ok(_) => Trace::Lines,
        }
    }

    /// The session's mode; a summary is printed at exit.
    fn from_env() -> Trace {
        let t = Trace::asked();
        if t == Trace::Summary {
            summary::print_at_exit();
        }
        t
    }
}

mod summary {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    /// Per opcode: calls and nanoseconds.
    fn table() -> &'static [(AtomicU64, AtomicU64)] {
        static T: OnceLock<Vec<(AtomicU64, AtomicU64)>> = OnceLock::new();
        T.get_or_init(|| (0..protocol::OP_NAMES.len()).map(|_| Default::default()).collect())
    }

    pub fn add(op: u32, d: Duration) {
        if let Some((n, t)) = table().get(op as usize) {
            n.fetch_add(1, Ordering::Relaxed);
            t.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
        }
    }

    /// Per opcode: calls answered without the server.
    fn local() -> &'static [AtomicU64] {
        static T: OnceLock<Vec<AtomicU64>> = OnceLock::new();
        T.get_or_init(|| (0..protocol::OP_NAMES.len()).map(|_| Default::default()).collect())
    }

    pub fn add_local(op: u32) {
        if let Some(n) = local().get(op as usize) {
            n.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn print_at_exit() {
        extern "C" fn print() {
            let rows = table().iter().enumerate().map(|(op, (n, t))| {
                (op as u32, n.load(Ordering::Relaxed), Duration::from_nanos(t.load(Ordering::Relaxed)))
            });
            eprintln!("vgpu-trace summary (calls, time in the caller):\n{}", protocol::call_time_table(rows));
            for (op, n) in local().iter().enumerate() {
                let n = n.load(Ordering::Relaxed);
                if n > 0 {
                    eprintln!("  {:<40} {n:>9} calls answered locally", protocol::op_name(op as u32));
                }
            }
            if let Some(Ok(s)) = super::current() {
                for (c, pages) in s.conns.iter().zip(&s.tables) {
                    // Bounded: another thread may be exiting with the lock held.
                    if let Some(super::Pages::Open(t)) = pages.try_lock_for(Duration::from_millis(100)).as_deref() {
                        eprintln!(
                            "  {}: {} of {} pieces of repeated copies named by their kept slot, the rest sent",
                            c.address(),
                            t.named,
                            t.pieces
                        );
                    }
                    if let Some(r) = c.delivery_rate() {
                        eprintln!("  {}: the kernel's estimate of its rate: {} MB/s", c.address(), r / 1_000_000);
                    }
                    if c.on_ring() {
                        eprintln!("  {}: frames through rings in the shared segment", c.address());
                    }
                    if let Some(Some(l)) = c.lanes_if_open() {
                        eprintln!(
                            "  {}: {} frames' bulk over {} lanes, {} replies' bulk back over them; \
                             set aside {} times for lagging, {} copies over the connection meanwhile",
                            c.address(),
                            l.striped(),
                            l.len(),
                            l.gathered(),
                            l.asides(),
                            l.passed()
                        );
                    }
                }
            }
        }
        // Once per address space: a forked child inherits the parent's registration (and
        // its counts so far) and must not print twice when it starts its own session.
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| unsafe {
            libc::atexit(print);
        });
    }
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_once_per_interval() {
        let r = Renewal::new();
        let t = Instant::now();
        assert!(r.due(t), "the first try is due");
        assert!(!r.due(t + RENEW_EVERY / 2), "not again within the interval");
        assert!(r.due(t + RENEW_EVERY), "due once it has passed");
        assert!(!r.due(t + RENEW_EVERY + Duration::from_millis(1)), "and counted from that try");
    }
}
