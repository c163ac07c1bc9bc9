//! Lanes: extra connections of one session that carry the bulk bytes of large frames,
//! striped across them, so that several cores copy them on each side. One socket stream is
//! bound by one core's copy (about 6 GB/s on the H100 host, unix or TCP), while the driver
//! copies pageable memory at 13-16 GB/s; four lanes moved 4.5 MiB at 16-17 GB/s there.
//!
//! Both ways: a request's bulk (host to device) and a reply's (device to host, when the
//! request asked with [`FLAG_REPLY_LANES`]). The frame itself still goes on the session's
//! connection, in order, flagged [`FLAG_LANES`]; its bytes go as [`OP_LANE`] chunks, chunk
//! `i` on lane `i` (lanes numbered in the order they joined), each naming the frame's `seq`
//! and the chunk's offset. The worker, reading a request, posts where its bulk lands
//! ([`LaneSet::fill`]) and waits until the lanes' readers have put every chunk there; the
//! client, reading such a reply, has its helpers read each lane's chunk into the caller's
//! buffer ([`Lanes::gather`]). Over a link a request's chunk may go coded ([`Coding`],
//! [`FLAG_CODED`]): the reader then decodes it into place.
//!
//! A lane joins its session through the server's listener: it connects to the same address
//! and sends an [`OP_JOIN`] frame with the session's id and key (given only over the
//! session's own, authenticated, connection); the listener passes the socket to that
//! session's worker, which checks the key and acknowledges.

use crate::addr::{Address, Stream};
use crate::coding::{Coding, FAST_LINK};
use crate::framing::{read_header, write_frame};
use crate::park::{Pace, Park, Parked, Window};
use parking_lot::{Condvar, Mutex, MutexGuard};
#[cfg(doc)]
use protocol::frame::FLAG_REPLY_LANES;
use protocol::frame::{FLAG_CODED, FLAG_LANES, Header, OP_JOIN, OP_LANE};
use protocol::hello::{Join, LaneOffer};
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Frames with at least this many bulk bytes go over lanes; smaller ones are not worth
/// waking the helpers for.
pub const LANE_MIN: usize = 256 << 10;
/// The same over TLS, where every byte is also sealed and opened, and copied twice more
/// inside rustls, on one core a side: there striping pays from smaller frames on, a decoding
/// LLM's logits (128 KB a token for a 32k vocabulary) among them. Measured on an H100 host
/// with 256 KiB: 64 KiB replies at 0.93 GB/s against TCP's 2.3, tg128 0.91 of native.
pub const LANE_MIN_TLS: usize = 64 << 10;

/// The smallest bulk a client on `address` sends or asks back over lanes.
pub fn lane_min(address: &Address) -> usize {
    if address.is_tls() { LANE_MIN_TLS } else { LANE_MIN }
}
/// Largest bulk of a frame on lanes (the worker sizes its buffer from the header).
pub const LANE_MAX: usize = 64 << 20;
/// Lanes a client opens unless `VGPU_LANES` says otherwise: one per four cores, at most
/// four (each lane but the first has two helper threads in the application, one writing
/// chunks and one reading replies' chunks, each polling while such copies come). Measured
/// on the H100 host (16 cores): 1, 2, 4, 6 lanes moved 4.5 MiB at 6, 10, 17, 21 GB/s;
/// llama.cpp's prompt batches gained most from 2 to 4.
pub fn default_lanes() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 4).clamp(1, 4))
}
/// Most lanes a session takes.
pub const MAX_LANES: u32 = 8;
/// Longest a lane's chunk may wait for its frame, or a frame for its chunks, once one of
/// them has arrived: the client sends both together.
const LANE_WAIT: Duration = Duration::from_secs(30);
/// Chunks up to this size are read ahead of their frame (see `Shared::read_lane`): a
/// prompt batch's 512 KiB mask, not its 4 MiB of embeddings, whose copy out of a buffer
/// would cost more than their wait.
const AHEAD_MAX: usize = 256 << 10;
/// How late a helper may take its chunk after it was posted before the copy counts as
/// lagging (a helper with a core takes it within microseconds; one woken from sleep, tens).
const LAG: Duration = Duration::from_micros(500);
/// [`LAG`], or `VGPU_LANE_LAG_US` where set (0: the lanes are never set aside; None).
pub(crate) fn lag_limit() -> Option<Duration> {
    static L: std::sync::OnceLock<Option<Duration>> = std::sync::OnceLock::new();
    *L.get_or_init(|| {
        let d = crate::spin::micros(&|k| std::env::var(k).ok(), "VGPU_LANE_LAG_US").unwrap_or(LAG);
        (!d.is_zero()).then_some(d)
    })
}
/// What sets the lanes aside ([`Strain`]): a lagging copy adds two to a score, one that
/// keeps up takes one off, and a score of four sets them aside: soon where every other copy
/// lags (a prompt batch's embeddings find the helpers waiting for a core; its mask, right
/// after, finds them running), never where one in three does.
const STRIKES: u32 = 4;
/// How long the lanes stay aside once set there; then they are tried again.
const ASIDE: Duration = Duration::from_secs(1);

/// Whether the lanes keep up. A copy striped over them waits for every helper thread here
/// and every reader thread on the server to get a core; on a host whose cores are all busy
/// (other processes, or the application's own threads) each of them is a scheduler's time
/// slice away, and the copy takes milliseconds where one thread writing it all would take a
/// fraction of one. Measured on the 16-core H100 VM with 16 busy loops beside llama-bench
/// (Q8 1B pp512, 15 samples a column): natively unchanged, through unix 0.43 of native
/// with lanes, 0.82 without. So copies whose helpers lag (see [`STRIKES`]) set the lanes
/// aside for [`ASIDE`]: bulk then goes over the session's connection, written by the
/// caller (the same host: 0.82 against 0.36 before, TCP 0.78 against 0.39; without the busy
/// loops even).
#[derive(Debug)]
struct Strain {
    /// How late a helper may take its job before the copy lags (None: the lanes are never
    /// set aside).
    limit: Option<Duration>,
    /// How long lagging lanes stay aside ([`ASIDE`]; tests shorten it).
    aside_for: Duration,
    score: std::sync::atomic::AtomicU32,
    /// Until when the lanes are aside: microseconds on [`crate::park::micros_now`]'s clock.
    aside_until: AtomicU64,
    /// Times they were set aside, and copies that went over the connection meanwhile.
    asides: AtomicU64,
    passed: AtomicU64,
}

impl Strain {
    fn new(limit: Option<Duration>) -> Strain {
        Strain {
            limit,
            aside_for: ASIDE,
            score: Default::default(),
            aside_until: Default::default(),
            asides: Default::default(),
            passed: Default::default(),
        }
    }

    /// A copy went over the lanes, its latest helper taking its job `lag` after it was posted.
    fn record(&self, lag: Duration) {
        let Some(limit) = self.limit else { return };
        // Several threads may copy at once: a lost update only delays or hastens a decision.
        let score = self.score.load(Ordering::Relaxed);
        let score = if lag > limit { score + 2 } else { score.saturating_sub(1) };
        self.score.store(score, Ordering::Relaxed);
        if score >= STRIKES {
            self.score.store(0, Ordering::Relaxed);
            let until = crate::park::micros_now() + self.aside_for.as_micros() as u64;
            self.aside_until.store(until, Ordering::Relaxed);
            self.asides.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn aside(&self) -> bool {
        crate::park::micros_now() < self.aside_until.load(Ordering::Relaxed)
    }
}

/// How long the worker's lane readers, and the worker waiting for them, poll before
/// sleeping (see `Shared::wait`): as long as the client's helpers (`crate::CLIENT_SPIN`),
/// so that they are awake for the next prompt batch's inputs (10 ms later for a 1B model).
/// Measured on an H100 host (two calls, Q8 1B pp512): readers that slept after 500 µs left
/// the GPU waiting 50-70 µs longer a batch for its inputs than readers polling 20 ms. They
/// poll only while large copies keep coming (not while decoding). The client's helpers
/// poll as long. Set by `VGPU_LANE_SPIN_US` (the lanes alone), else `VGPU_SPIN_US`.
fn lane_spin() -> Duration {
    static S: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *S.get_or_init(|| lane_spin_from(&|k| std::env::var(k).ok()))
}

/// [`lane_spin`] from the variables `var` gives (unparsable ones count as unset).
fn lane_spin_from(var: &dyn Fn(&str) -> Option<String>) -> Duration {
    let us = |k| crate::spin::micros(var, k);
    us("VGPU_LANE_SPIN_US").or_else(|| us("VGPU_SPIN_US")).unwrap_or(crate::CLIENT_SPIN)
}

/// The frame header that announces bulk on lanes.
pub fn lane_header(mut h: Header) -> Header {
    h.flags |= FLAG_LANES;
    h
}

// ---------------------------------------------------------------- client side

/// A client's lanes to one session.
pub struct Lanes {
    /// Handles that write chunks (lane 0 by the caller itself, the others by helpers).
    writers: Fan,
    /// Handles that read chunks of replies, likewise.
    readers: Fan,
    /// Second handles on every lane, for shutting them while someone writes.
    closers: Vec<Stream>,
    /// Each lane's latest rate estimate that the sender did not limit (`Lanes::delivery_rate`).
    rates: Vec<std::sync::atomic::AtomicU64>,
    /// Frames whose bulk went over the lanes, and replies whose bulk came over them.
    striped: std::sync::atomic::AtomicU64,
    gathered: std::sync::atomic::AtomicU64,
    /// Parts of chunks sent coded.
    coded: Arc<AtomicU64>,
    /// When chunks of dequantized rows go coded.
    code: Coding,
    /// Parks the writers' polling while the application waits for a reply ([`Lanes::park`]).
    park: Arc<Park>,
    /// The thread that striped last ([`thread_token`]): only its waits park the writers.
    striper: AtomicU64,
    /// Whether the helpers keep up (see [`Strain`]).
    strain: Strain,
}

/// A number for the calling thread, unique in the process (0 for none).
fn thread_token() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local!(static TOKEN: u64 = NEXT.fetch_add(1, Ordering::Relaxed));
    TOKEN.with(|t| *t)
}

/// What a helper does with its lane: writes a chunk or reads one, in memory that whoever
/// posted it keeps valid until the helper says it is done.
type Job = Box<dyn FnOnce(&mut Stream) -> io::Result<()> + Send>;

/// A thread that runs jobs on a handle of its own on one lane, one job at a time.
struct Helper {
    stream: Mutex<Stream>,
    closer: Stream,
    slot: Mutex<Slot>,
    cv: Condvar,
    /// How long the helper polls for its next job (and the caller for its result) before
    /// sleeping: [`lane_spin`], by default the client's reply budget. Helpers
    /// that slept between llama.cpp's prompt batches (10 ms apart) made the application's
    /// own CPU work 0.1-0.3 ms a batch slower once woken (3 helpers; ones that polled cost
    /// nothing): more than their copies saved.
    spin: Duration,
    /// What parks its polling for the next job, if anything does (see [`crate::park`]).
    park: Option<Arc<Park>>,
}

impl Helper {
    fn start(stream: Stream, park: Option<Arc<Park>>) -> io::Result<Arc<Helper>> {
        let closer = stream.try_clone()?;
        let h = Arc::new(Helper {
            stream: Mutex::new(stream),
            closer,
            slot: Mutex::new(Slot::default()),
            cv: Condvar::new(),
            spin: lane_spin(),
            park,
        });
        let run = h.clone();
        std::thread::Builder::new().name("vgpu-lane".into()).spawn(move || run.run())?;
        Ok(h)
    }

    /// The job posted last, if the helper has not taken it yet (then it never will).
    fn reclaim(&self) -> Option<Job> {
        self.slot.lock().job.take()
    }

    fn post(&self, job: Job) {
        let mut slot = self.slot.lock();
        slot.done = None;
        slot.job = Some(job);
        slot.posted = Some(Instant::now());
        slot.taken = None;
        drop(slot);
        self.cv.notify_one();
    }

    /// How long the job posted last waited for the helper to take it (so far, if it has not).
    fn start_lag(&self) -> Duration {
        let slot = self.slot.lock();
        match (slot.posted, slot.taken) {
            (Some(p), Some(t)) => t.saturating_duration_since(p),
            (Some(p), None) => p.elapsed(),
            _ => Duration::ZERO,
        }
    }
}

#[derive(Default)]
struct Slot {
    job: Option<Job>,
    done: Option<io::Result<()>>,
    /// When the job was posted, and when the helper took it.
    posted: Option<Instant>,
    taken: Option<Instant>,
}

/// One handle on each lane of a set (at least one), in lane order: the first used by the
/// caller itself, the others by their helpers.
struct Fan {
    first: Mutex<Stream>,
    helpers: Vec<Arc<Helper>>,
}

impl Fan {
    fn new(mut streams: Vec<Stream>, park: Option<&Arc<Park>>) -> io::Result<Fan> {
        let first = Mutex::new(streams.remove(0));
        let helpers = streams.into_iter().map(|s| Helper::start(s, park.cloned())).collect::<io::Result<Vec<_>>>()?;
        Ok(Fan { first, helpers })
    }

    fn len(&self) -> usize {
        1 + self.helpers.len()
    }

    /// Run job `i` on lane `i` (`None`: nothing for that lane) and return once every job is
    /// done, error or not: the first error, and how late the latest helper took its job.
    fn run(&self, jobs: Vec<Option<Job>>) -> (io::Result<()>, Duration) {
        run_jobs(Some(&self.first), &self.helpers, jobs)
    }

    fn wake(&self) {
        for h in &self.helpers {
            h.cv.notify_one();
        }
    }
}

/// Run the jobs (the first by the caller where `first` is given, the others by the helpers)
/// and return once every one is done: the first error, and how long after it was posted the
/// latest helper took its job (or had not yet, when the caller looked). A helper that slept
/// wakes within tens of microseconds; one that waits for a core takes a scheduler's slice.
fn run_jobs(
    first: Option<&Mutex<Stream>>,
    helpers: &[Arc<Helper>],
    jobs: Vec<Option<Job>>,
) -> (io::Result<()>, Duration) {
    let mut jobs = jobs.into_iter();
    let mine = if first.is_some() { jobs.next().flatten() } else { None };
    let mut posted = Vec::new();
    for (h, job) in helpers.iter().zip(jobs) {
        if let Some(job) = job {
            h.post(job);
            posted.push(h);
        }
    }
    let (mut first_err, worked) = match (first, mine) {
        (Some(s), Some(job)) => (job(&mut s.lock()).err(), true),
        _ => (None, false),
    };
    let mut lag = Duration::ZERO;
    // Every helper must be done with the poster's memory before this returns; a read or
    // write is bounded by the socket's timeout, and a shut socket ends it. A job its helper
    // has not started while the poster did its own is run here instead, on the helper's
    // lane: on a host whose cores the application keeps busy (llama.cpp's threads poll
    // between batches), a helper waiting for a core would otherwise hold up the whole copy.
    // (A poster without a job of its own gives the helpers that time to start.)
    for h in posted {
        lag = lag.max(h.start_lag());
        let r = match worked.then(|| h.reclaim()).flatten() {
            Some(job) => job(&mut h.stream.lock()),
            None => h.wait_done(),
        };
        if let Err(e) = r {
            first_err.get_or_insert(e);
        }
    }
    (first_err.map_or(Ok(()), Err), lag)
}

/// The bytes of chunk `i` of `total` striped over `n` lanes (page-sized shares keep the
/// copies aligned; trailing chunks may be empty, and are not sent).
fn chunk_range(total: usize, n: usize, i: usize) -> std::ops::Range<usize> {
    let share = total.div_ceil(n.max(1)).next_multiple_of(4096);
    (i * share).min(total)..((i + 1) * share).min(total)
}

/// Jobs writing `bulk` (its pieces, in order) as chunks of frame `seq`, one per lane of `n`;
/// `code`: chunks go coded where that saves (see [`Coding`]), counted there.
fn write_jobs(seq: u32, bulk: &[&[u8]], n: usize, code: Option<&Arc<AtomicU64>>) -> Vec<Option<Job>> {
    let total: usize = bulk.iter().map(|b| b.len()).sum();
    (0..n)
        .map(|i| {
            let r = chunk_range(total, n, i);
            if r.is_empty() {
                return None;
            }
            let header = chunk_header(seq, r.start, r.len());
            let pieces: Vec<(usize, usize)> =
                cut(bulk, r.start, r.end).iter().map(|p| (p.as_ptr() as usize, p.len())).collect();
            let code = code.cloned();
            let job: Job = Box::new(move |s: &mut Stream| {
                // SAFETY: the ranges are the poster's bulk, valid while it waits for us.
                let pieces: Vec<&[u8]> =
                    pieces.iter().map(|&(p, n)| unsafe { std::slice::from_raw_parts(p as *const u8, n) }).collect();
                if let Some(count) = code {
                    return crate::coding::write_chunk(s, seq, r.start, &pieces, &count);
                }
                write_frame(s, &header, &[], &pieces)
            });
            Some(job)
        })
        .collect()
}

/// Jobs reading the chunks of frame `seq` into `buf`, one per lane of `n`.
fn read_jobs(seq: u32, buf: &mut [u8], n: usize) -> Vec<Option<Job>> {
    let (at, total) = (buf.as_mut_ptr() as usize, buf.len());
    (0..n)
        .map(|i| {
            let r = chunk_range(total, n, i);
            if r.is_empty() {
                return None;
            }
            let job: Job = Box::new(move |s: &mut Stream| {
                let h = read_header(s)?;
                if h.op != OP_LANE
                    || h.seq != seq
                    || h.args_len != 0
                    || h.ctx != r.start as u64
                    || h.bulk_len != r.len() as u64
                {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "lane: expected chunk {}+{} of frame {seq}, got op {} seq {} at {}+{}",
                            r.start,
                            r.len(),
                            h.op,
                            h.seq,
                            h.ctx,
                            h.bulk_len
                        ),
                    ));
                }
                // SAFETY: `r` lies in the poster's buffer, this job's part of it alone,
                // valid while the poster waits for us.
                s.read_exact(unsafe { std::slice::from_raw_parts_mut((at + r.start) as *mut u8, r.len()) })
            });
            Some(job)
        })
        .collect()
}

/// Connect lane `lane` of `session` and have the server acknowledge it.
fn join_lane(address: &Address, session: u64, offer: &LaneOffer, lane: u32, t: crate::Timeouts) -> io::Result<Stream> {
    let join = |key| -> io::Result<Vec<u8>> {
        let join = postcard::to_allocvec(&Join { session, key, lane }).map_err(io::Error::other)?;
        let mut f = Vec::new();
        write_frame(&mut f, &Header::request(OP_JOIN, 0, 0, false, join.len(), 0), &join, &[])?;
        Ok(f)
    };
    // Over TLS the listener routes the lane by a join in clear, without the key, which
    // follows inside TLS.
    let mut s = match address {
        Address::Tls(_) => {
            let mut s = address.connect_routed(t.connect, &join([0; 32])?)?;
            s.write_all(&join(offer.key)?)?;
            s
        }
        _ => address.connect_routed(t.connect, &join(offer.key)?)?,
    };
    // A reply's chunks follow its header at once: a read waits only for a copy.
    s.set_timeouts(Some(t.silence), Some(t.write))?;
    let ack = read_header(&mut s)?;
    if ack.op != OP_JOIN || ack.status != 0 {
        return Err(io::Error::new(io::ErrorKind::PermissionDenied, "the server refused the lane"));
    }
    Ok(s)
}

impl Lanes {
    /// Open `n` lanes (at most the offer's) to session `session` at `address`; each is
    /// acknowledged by the worker before use, so lane `i` here is lane `i` there.
    /// `code`: when their chunks go coded; `lag`: how late a helper may take its job before
    /// the copy lags (None: never set aside).
    pub fn open(
        address: &Address,
        session: u64,
        offer: &LaneOffer,
        n: usize,
        t: crate::Timeouts,
        code: Coding,
        lag: Option<Duration>,
    ) -> io::Result<Lanes> {
        let n = n.min(offer.max as usize);
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "no lanes asked for"));
        }
        // All at once: over TLS each is a handshake (a millisecond or two), and the first
        // large copy waits for them.
        let streams = std::thread::scope(|scope| {
            let joining: Vec<_> =
                (0..n as u32).map(|lane| scope.spawn(move || join_lane(address, session, offer, lane, t))).collect();
            joining
                .into_iter()
                .map(|j| j.join().unwrap_or_else(|_| Err(io::Error::other("a lane's thread failed"))))
                .collect::<io::Result<Vec<_>>>()
        })?;
        let mut lanes = Lanes::over(streams, lag)?;
        lanes.code = code;
        Ok(lanes)
    }

    /// Lanes over acknowledged streams (at least one).
    fn over(streams: Vec<Stream>, lag: Option<Duration>) -> io::Result<Lanes> {
        let closers = streams.iter().map(Stream::try_clone).collect::<io::Result<Vec<_>>>()?;
        let reads = streams.iter().map(Stream::try_clone).collect::<io::Result<Vec<_>>>()?;
        let park = Arc::new(Park::default());
        Ok(Lanes {
            // Only the writers park: a reply's chunks come as the wait ends, and its readers
            // had better be polling then.
            writers: Fan::new(streams, Some(&park))?,
            readers: Fan::new(reads, None)?,
            park,
            striper: AtomicU64::new(0),
            strain: Strain::new(lag),
            rates: closers.iter().map(|_| Default::default()).collect(),
            closers,
            striped: Default::default(),
            gathered: Default::default(),
            coded: Default::default(),
            code: Coding::Never,
        })
    }

    /// Number of lanes.
    pub fn len(&self) -> usize {
        self.writers.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// How many frames' bulk went over the lanes so far.
    pub fn striped(&self) -> u64 {
        self.striped.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// What the lanes deliver together, in bytes a second: the sum of each lane's latest
    /// estimate that the sender did not limit ([`Stream::delivery_rate`]); None until every
    /// lane has one.
    pub fn delivery_rate(&self) -> Option<u64> {
        self.closers.iter().zip(&self.rates).map(|(s, r)| crate::conn::link_rate(s, r)).sum()
    }

    /// How many parts of chunks went coded so far (`coding::CODED_PART` bytes each, or less).
    pub fn coded(&self) -> u64 {
        self.coded.load(Ordering::Relaxed)
    }

    /// How many replies' bulk came over the lanes so far.
    pub fn gathered(&self) -> u64 {
        self.gathered.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Write the bulk of frame `seq` (its pieces, in order) as one chunk per lane, and
    /// return once every byte has been written (the caller's memory may then change).
    pub fn stripe(&self, seq: u32, bulk: &[&[u8]]) -> io::Result<()> {
        self.striped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.striper.store(thread_token(), Ordering::Relaxed);
        let code = match self.code {
            Coding::Never => false,
            Coding::Always => true,
            Coding::BelowFast => self.delivery_rate().is_none_or(|r| r < FAST_LINK),
        };
        let (r, lag) = self.writers.run(write_jobs(seq, bulk, self.len(), code.then_some(&self.coded)));
        self.strain.record(lag);
        r
    }

    /// Read the bulk of reply `seq` (`buf.len()` bytes, one chunk per lane) into `buf`.
    pub fn gather(&self, seq: u32, buf: &mut [u8]) -> io::Result<()> {
        self.gathered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (r, lag) = self.readers.run(read_jobs(seq, buf, self.len()));
        self.strain.record(lag);
        r
    }

    /// Whether a copy large enough for the lanes goes over them now: not while they are set
    /// aside for lagging (their helpers waited for cores); those that do not are counted ([`Lanes::passed`]).
    pub fn take(&self) -> bool {
        let aside = self.strain.aside();
        if aside {
            self.strain.passed.fetch_add(1, Ordering::Relaxed);
        }
        !aside
    }

    /// How many times the lanes were set aside for lagging so far.
    pub fn asides(&self) -> u64 {
        self.strain.asides.load(Ordering::Relaxed)
    }

    /// How many copies (either way) went over the session's connection instead, the lanes
    /// being aside.
    pub fn passed(&self) -> u64 {
        self.strain.passed.load(Ordering::Relaxed)
    }

    /// The calling thread waits for a reply from now until the guard is dropped: past
    /// [`crate::park::GRACE`] the writers stop polling for chunks (a copy still wakes them).
    /// Only if this thread striped last: while it waits, the next copy cannot come from it;
    /// copies from another thread (an application's loader beside a waiting main thread)
    /// would find parked writers, and pay for waking them.
    pub fn park(&self) -> Option<Parked<'_>> {
        (self.striper.load(Ordering::Relaxed) == thread_token()).then(|| self.park.park())
    }

    /// Close every lane (the helpers exit).
    pub fn shutdown(&self) {
        for c in &self.closers {
            c.shutdown();
        }
        self.writers.wake();
        self.readers.wake();
    }
}

impl Drop for Lanes {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Helper {
    fn run(&self) {
        loop {
            let Some(job) = self.next_job() else { return };
            let r = job(&mut self.stream.lock());
            let failed = r.is_err();
            self.slot.lock().done = Some(r);
            self.cv.notify_all();
            if failed {
                return;
            }
        }
    }

    /// The next job: polled for a while (the next frame of a copy comes soon), then slept
    /// for; `None` once the lane is closed.
    fn next_job(&self) -> Option<Job> {
        let mut slot = self.slot.lock();
        let window = Window::new(self.spin, self.park.as_deref());
        poll_then_wait(&self.cv, &mut slot, window, Duration::from_millis(500), |slot, slept| {
            let job = slot.job.take();
            if job.is_some() {
                slot.taken = Some(Instant::now());
            }
            job.map(Some).or_else(|| (slept && self.closed()).then_some(None))
        })
    }

    /// End of stream or an error (bytes waiting are a reply's chunks).
    fn closed(&self) -> bool {
        crate::spin::peer_closed(std::os::fd::AsRawFd::as_raw_fd(&self.closer))
    }

    fn wait_done(&self) -> io::Result<()> {
        let mut slot = self.slot.lock();
        poll_then_wait(&self.cv, &mut slot, Window::new(self.spin, None), Duration::from_millis(100), |slot, _| {
            if let Some(r) = slot.done.take() {
                return Some(r);
            }
            // The helper exited (its lane broke) and will not take the job.
            (slot.job.is_some() && self.closed()).then(|| {
                slot.job = None;
                Err(io::Error::new(io::ErrorKind::BrokenPipe, "lane closed"))
            })
        })
    }
}

/// Wait on `cv` until `ready` gives an answer: first polled while `window` says so (the lock
/// released and the core yielded between tries; parked, slept for a [`crate::park::TICK`]
/// between tries), then slept for, `tick` at most between tries. `ready` learns whether it is
/// not polled at once, for checks too costly to poll.
fn poll_then_wait<T, R>(
    cv: &Condvar,
    g: &mut MutexGuard<'_, T>,
    mut window: Window<'_>,
    tick: Duration,
    mut ready: impl FnMut(&mut T, bool) -> Option<R>,
) -> R {
    loop {
        let pace = window.pace();
        if let Some(r) = ready(g, pace != Pace::Poll) {
            return r;
        }
        match pace {
            Pace::Poll => MutexGuard::unlocked(g, std::thread::yield_now),
            Pace::Tick => {
                cv.wait_for(g, crate::park::TICK);
            }
            Pace::Over => {
                cv.wait_for(g, tick);
            }
        }
    }
}

pub(crate) fn chunk_header(seq: u32, offset: usize, len: usize) -> Header {
    Header::request(OP_LANE, seq, offset as u64, true, 0, len)
}

/// The bytes `[start, end)` of the concatenation of `pieces`.
fn cut<'a>(pieces: &[&'a [u8]], start: usize, end: usize) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut at = 0;
    for p in pieces {
        let (lo, hi) = (start.max(at), end.min(at + p.len()));
        if lo < hi {
            out.push(&p[lo - at..hi - at]);
        }
        at += p.len();
    }
    out
}

// ---------------------------------------------------------------- server side

/// A worker's lanes: a reader thread per lane puts chunks where [`LaneSet::fill`] said.
#[derive(Clone, Default)]
pub struct LaneSet {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    cv: Condvar,
    /// A helper per lane of the client's, by its number, that writes replies' chunks.
    writers: Mutex<Vec<Option<Arc<Helper>>>>,
    /// Bytes read ahead of their frame (then copied into place).
    ahead: std::sync::atomic::AtomicU64,
    /// Bytes that came coded (`protocol::dequant`), counted decoded.
    decoded: std::sync::atomic::AtomicU64,
    /// Parks the readers' polling while the worker is inside a synchronous call.
    park: Park,
}

#[derive(Default)]
struct State {
    /// The frame whose bulk is expected now.
    want: Option<Want>,
    /// Bytes of it landed.
    got: usize,
    /// Ranges of it taken by chunks (disjoint, or the session ends).
    claimed: Vec<(usize, usize)>,
    /// Readers writing into its buffer right now.
    writing: usize,
    failed: Option<String>,
    /// Handles for shutting the lanes down.
    lanes: Vec<Stream>,
}

struct Want {
    seq: u32,
    ptr: usize,
    len: usize,
}

impl LaneSet {
    pub fn new() -> LaneSet {
        LaneSet::default()
    }

    /// Number of lanes joined.
    pub fn len(&self) -> usize {
        self.shared.state.lock().lanes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Take lane number `lane` (its join already checked): acknowledge it and start its
    /// reader and its writer. Refused past [`MAX_LANES`]. A lane joining under a number
    /// taken before replaces that one for replies (only the session's client has its key).
    pub fn add(&self, mut stream: Stream, lane: u32) -> io::Result<()> {
        if lane >= MAX_LANES {
            return Err(io::Error::other("lane number out of range"));
        }
        let closer = stream.try_clone()?;
        {
            let mut st = self.shared.state.lock();
            if st.lanes.len() >= MAX_LANES as usize {
                return Err(io::Error::other("too many lanes"));
            }
            st.lanes.push(closer);
        }
        stream.set_timeouts(None, Some(Duration::from_secs(5)))?;
        // Its writer first: a lane the client has is acknowledged only when complete.
        let mut writers = self.shared.writers.lock();
        if writers.len() <= lane as usize {
            writers.resize(lane as usize + 1, None);
        }
        // Reply writers do not park: replies go out as the worker's waits end.
        if let Some(old) = writers[lane as usize].replace(Helper::start(stream.try_clone()?, None)?) {
            old.closer.shutdown();
            old.cv.notify_one();
        }
        write_frame(&mut stream, &Header::reply(OP_JOIN, 0, 0, 0, 0), &[], &[])?;
        drop(writers);
        let shared = self.shared.clone();
        std::thread::Builder::new().name("vgpu-lane".into()).spawn(move || {
            if let Err(why) = shared.read_lane(stream) {
                shared.fail(why);
            }
        })?;
        Ok(())
    }

    /// Fill `buf` with the bulk of frame `seq` from the lanes. On an error the lanes are
    /// shut (the session cannot go on) and no reader touches `buf` any more.
    pub fn fill(&self, seq: u32, buf: &mut [u8]) -> io::Result<()> {
        let sh = &self.shared;
        let mut st = sh.state.lock();
        if st.lanes.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "bulk on lanes, but no lane joined"));
        }
        st.want = Some(Want { seq, ptr: buf.as_mut_ptr() as usize, len: buf.len() });
        st.got = 0;
        st.claimed.clear();
        sh.cv.notify_all();
        let len = buf.len();
        if !sh.wait(&mut st, |st| st.got >= len || st.failed.is_some()) {
            st.failed.get_or_insert(format!("the bulk of frame {seq} did not arrive on the lanes"));
        }
        if let Some(why) = st.failed.clone() {
            for l in &st.lanes {
                l.shutdown();
            }
            // Readers still writing into `buf` stop at once on a shut socket.
            while st.writing > 0 {
                sh.cv.wait_for(&mut st, Duration::from_millis(10));
            }
            st.want = None;
            return Err(io::Error::new(io::ErrorKind::InvalidData, why));
        }
        st.want = None;
        Ok(())
    }

    /// The client's lanes `0..lanes` for a reply, if all of them have joined (else the
    /// reply goes on the session's connection).
    pub fn replies(&self, lanes: usize) -> Option<Scatter> {
        let w = self.shared.writers.lock();
        let writers = w.get(..lanes).filter(|_| lanes >= 1)?.iter().cloned().collect::<Option<Vec<_>>>()?;
        Some(Scatter { set: self.clone(), writers })
    }

    /// The worker is inside a synchronous call from now until the guard is dropped: past
    /// [`crate::park::GRACE`] the readers stop polling for chunks (a chunk still wakes
    /// them), since the client's next copy waits for the reply.
    pub fn park(&self) -> Parked<'_> {
        self.shared.park.park()
    }

    /// How many bytes the lanes read ahead of their frames so far.
    pub fn read_ahead(&self) -> u64 {
        self.shared.ahead.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many bytes came coded so far (counted decoded).
    pub fn decoded(&self) -> u64 {
        self.shared.decoded.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Close every lane.
    pub fn shutdown(&self) {
        self.shared.fail("the session ended".into());
        for l in &self.shared.state.lock().lanes {
            l.shutdown();
        }
        for w in self.shared.writers.lock().iter().flatten() {
            w.cv.notify_one();
        }
    }
}

/// The lanes one reply goes over (see [`LaneSet::replies`]).
pub struct Scatter {
    set: LaneSet,
    writers: Vec<Arc<Helper>>,
}

impl Scatter {
    /// Write the bulk of reply `seq` as one chunk per lane (the reply itself, flagged
    /// [`FLAG_LANES`], goes first on the session's connection) and return once every byte
    /// has been written. An error leaves the lanes unusable: the session ends.
    pub fn send(&self, seq: u32, bulk: &[u8]) -> io::Result<()> {
        // Replies are not coded: what comes back (logits) is computed, not dequantized.
        let (r, _) = run_jobs(None, &self.writers, write_jobs(seq, &[bulk], self.writers.len(), None));
        if r.is_err() {
            self.set.shutdown();
        }
        r
    }
}

impl Shared {
    /// Wait until `done` holds (`false`: [`LANE_WAIT`] passed first), polling for
    /// [`lane_spin`] before sleeping: the worker and the lane readers hand each frame to
    /// each other, some microseconds apart, and a sleeping thread takes tens to wake.
    fn wait(&self, st: &mut MutexGuard<'_, State>, mut done: impl FnMut(&State) -> bool) -> bool {
        let until = Instant::now() + LANE_WAIT;
        poll_then_wait(&self.cv, st, Window::new(lane_spin(), None), Duration::from_millis(100), |st, _| {
            if done(st) { Some(true) } else { (Instant::now() >= until).then_some(false) }
        })
    }

    /// Return once `s` has bytes to read, or once the polling window is over (the read
    /// that follows then sleeps until they come).
    fn await_chunk(&self, s: &Stream) {
        let mut window = Window::new(lane_spin(), Some(&self.park));
        loop {
            match window.pace() {
                Pace::Poll if s.poll_readable(Duration::ZERO) => return,
                Pace::Poll => std::thread::yield_now(),
                Pace::Tick if s.poll_readable(crate::park::TICK) => return,
                Pace::Tick => {}
                Pace::Over => return,
            }
        }
    }

    fn fail(&self, why: String) {
        self.state.lock().failed.get_or_insert(why);
        self.cv.notify_all();
    }

    /// Read chunks until the lane closes or misbehaves.
    fn read_lane(&self, mut s: Stream) -> Result<(), String> {
        let mut ahead = Vec::new();
        loop {
            self.await_chunk(&s);
            let h = match read_header(&mut s) {
                Ok(h) => h,
                // The client went away between frames.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && self.state.lock().want.is_none() => return Ok(()),
                Err(e) => return Err(format!("lane: {e}")),
            };
            let coded = h.flags & FLAG_CODED != 0;
            if h.op != OP_LANE || h.args_len != if coded { 8 } else { 0 } || h.bulk_len == 0 {
                return Err(format!("lane: unexpected frame (op {}, {} argument bytes)", h.op, h.args_len));
            }
            let (off, bulk) = (h.ctx as usize, h.bulk_len as usize);
            let len = if coded {
                let mut n = [0u8; 8];
                s.read_exact(&mut n).map_err(|e| format!("lane: {e}"))?;
                u64::from_le_bytes(n) as usize
            } else {
                bulk
            };
            if bulk > LANE_MAX || len > LANE_MAX {
                return Err(format!("lane: a chunk of {bulk} bytes for {len}, past the most a frame has"));
            }
            // A small chunk whose frame the worker has not reached yet (it is busy with the
            // frames before) is read now and copied into place once it has; a coded one is
            // read now whatever its size, since it is decoded out of a buffer anyway.
            let early = coded || len <= AHEAD_MAX && self.state.lock().want.as_ref().is_none_or(|w| w.seq != h.seq);
            if early {
                ahead.resize(bulk, 0);
                s.read_exact(&mut ahead).map_err(|e| format!("lane: {e}"))?;
            }
            let ptr = {
                let mut st = self.state.lock();
                if !self.wait(&mut st, |st| st.failed.is_some() || st.want.as_ref().is_some_and(|w| w.seq == h.seq)) {
                    return Err(format!("lane: a chunk of frame {} came, the frame did not", h.seq));
                }
                if let Some(why) = &st.failed {
                    return Err(why.clone());
                }
                let w = st.want.as_ref().expect("checked above");
                let end = off.checked_add(len).filter(|&e| e <= w.len);
                let Some(end) = end.filter(|&e| st.claimed.iter().all(|&(a, b)| e <= a || off >= b)) else {
                    return Err(format!("lane: chunk {off}+{len} outside frame {}'s bulk or overlapping", h.seq));
                };
                let ptr = w.ptr + off;
                st.claimed.push((off, end));
                st.writing += 1;
                ptr
            };
            // SAFETY: `[ptr, ptr+len)` lies in the buffer `fill` is waiting on, claimed by
            // this reader alone; `fill` does not return while `writing` counts us.
            let dest = unsafe { std::slice::from_raw_parts_mut(ptr as *mut u8, len) };
            let r = if coded {
                self.decoded.fetch_add(len as u64, std::sync::atomic::Ordering::Relaxed);
                protocol::dequant::decode(&ahead, dest).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
            } else if early {
                dest.copy_from_slice(&ahead);
                self.ahead.fetch_add(len as u64, std::sync::atomic::Ordering::Relaxed);
                Ok(())
            } else {
                s.read_exact(dest)
            };
            let mut st = self.state.lock();
            st.writing -= 1;
            match r {
                Ok(()) => st.got += len,
                Err(e) => {
                    st.failed.get_or_insert(format!("lane: {e}"));
                }
            }
            drop(st);
            self.cv.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    /// A thread that fills a buffer of `len` bytes with the bulk of frame `seq` from `set`.
    fn filling(set: &LaneSet, seq: u32, len: usize) -> std::thread::JoinHandle<io::Result<Vec<u8>>> {
        let set = set.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; len];
            set.fill(seq, &mut buf).map(|()| buf)
        })
    }

    /// `n` connected lanes: the client's ends (acknowledged) and the server's set.
    fn pair(n: usize) -> (Lanes, LaneSet) {
        let set = LaneSet::new();
        let mut clients = Vec::new();
        for i in 0..n {
            let (a, b) = UnixStream::pair().unwrap();
            set.add(Stream::Unix(b), i as u32).unwrap();
            let mut a = Stream::Unix(a);
            assert_eq!(read_header(&mut a).unwrap().op, OP_JOIN, "acknowledged");
            clients.push(a);
        }
        (Lanes::over(clients, Some(LAG)).unwrap(), set)
    }

    #[test]
    fn lane_polls_follow_their_own_variable_first() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        assert_eq!(lane_spin_from(&env(&[])), crate::CLIENT_SPIN);
        assert_eq!(lane_spin_from(&env(&[("VGPU_SPIN_US", "500")])), Duration::from_micros(500));
        let both = env(&[("VGPU_SPIN_US", "500"), ("VGPU_LANE_SPIN_US", "1000")]);
        assert_eq!(lane_spin_from(&both), Duration::from_micros(1000));
        assert_eq!(lane_spin_from(&env(&[("VGPU_LANE_SPIN_US", "0")])), Duration::ZERO);
        assert_eq!(lane_spin_from(&env(&[("VGPU_LANE_SPIN_US", "soon")])), crate::CLIENT_SPIN);
    }

    #[test]
    fn lagging_copies_set_the_lanes_aside_for_a_while() {
        let (mut lanes, set) = pair(2);
        lanes.strain.aside_for = Duration::from_millis(100);
        // A copy whose lag is not judged (on a loaded test host the helpers may lag) leaves
        // the score alone.
        lanes.strain.limit = None;
        let data = vec![7u8; 1 << 20];
        let filler = filling(&set, 1, data.len());
        lanes.stripe(1, &[&data]).unwrap();
        assert_eq!(filler.join().unwrap().unwrap(), data);
        assert!(lanes.take());
        assert_eq!(lanes.strain.score.load(Ordering::Relaxed), 0);
        lanes.strain.limit = Some(LAG);
        let lag = |lagged: bool| lanes.strain.record(if lagged { LAG * 2 } else { LAG });
        for _ in 0..4 {
            lag(true);
            lag(false);
            lag(false);
            assert!(lanes.take(), "one lagging copy in three is not enough");
        }
        lag(true);
        lag(false);
        lag(true);
        assert!(lanes.take(), "not yet");
        lag(false);
        lag(true);
        assert!(!lanes.take() && !lanes.take(), "one in two");
        assert_eq!((lanes.asides(), lanes.passed()), (1, 2));
        std::thread::sleep(Duration::from_millis(150));
        assert!(lanes.take(), "tried again after a while");
        assert_eq!(lanes.passed(), 2);
    }

    #[test]
    fn a_helper_that_takes_its_job_late_lags() {
        let (lanes, _set) = pair(2);
        let h = &lanes.writers.helpers[0];
        assert_eq!(h.start_lag(), Duration::ZERO, "nothing posted");
        let long_ago = Instant::now() - LAG * 2;
        h.slot.lock().posted = Some(long_ago);
        assert!(h.start_lag() > LAG, "posted, not taken yet");
        h.slot.lock().taken = Some(long_ago + Duration::from_micros(30));
        assert_eq!(h.start_lag(), Duration::from_micros(30), "taken at once");
        h.slot.lock().taken = Some(long_ago + LAG * 2);
        assert!(h.start_lag() > LAG, "taken late");
    }

    #[test]
    fn striped_bulk_lands_whole_and_in_order() {
        let (lanes, set) = pair(4);
        for (seq, len) in [(1u32, 1usize), (2, 4095), (3, 1 << 20), (4, (3 << 20) + 17)] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + seq as usize) as u8).collect();
            // In two pieces, as a frame's bulk may be.
            let (a, b) = data.split_at(len / 3);
            let filler = filling(&set, seq, len);
            lanes.stripe(seq, &[a, b]).unwrap();
            assert_eq!(filler.join().unwrap().unwrap(), data, "frame {seq}");
        }
    }

    /// Parked on both sides (the application and the worker each in a long wait), the
    /// writers and readers sleep in ticks; a copy still wakes them and lands whole, and
    /// promptly (a chunk or a job wakes a ticking thread, it does not wait for the tick).
    #[test]
    fn parked_lanes_still_carry_a_copy() {
        let (lanes, set) = pair(4);
        let data: Vec<u8> = (0..(1usize << 20) + 5).map(|i| (i * 13) as u8).collect();
        // A first copy starts every thread's polling window.
        let filler = filling(&set, 1, data.len());
        lanes.stripe(1, &[&data]).unwrap();
        assert_eq!(filler.join().unwrap().unwrap(), data);
        // Another thread's wait does not park the writers: its copies are not this thread's.
        std::thread::scope(|s| {
            s.spawn(|| assert!(lanes.park().is_none(), "not the thread that striped"));
        });
        let (app, worker) = (lanes.park().expect("the thread that striped"), set.park());
        std::thread::sleep(crate::park::GRACE * 3);
        assert!(lanes.park.parked() && set.shared.park.parked());
        for seq in 2..5u32 {
            let filler = filling(&set, seq, data.len());
            let t = Instant::now();
            lanes.stripe(seq, &[&data]).unwrap();
            assert_eq!(filler.join().unwrap().unwrap(), data, "frame {seq}");
            assert!(t.elapsed() < Duration::from_secs(2), "a parked lane took {:?}", t.elapsed());
        }
        drop((app, worker));
        assert!(!lanes.park.parked() && !set.shared.park.parked());
    }

    /// Dequantized rows go coded and land exactly, in one piece or several; a client that
    /// does not code sends them as they are.
    #[test]
    fn dequantized_rows_go_coded_and_land_exactly() {
        // Q8_0-like rows: each block of 32 values a power-of-two scale times -127..=127.
        let rows: Vec<u8> = (0..(4usize << 20) / 4)
            .flat_map(|i| {
                let q = if i % 32 == 0 { 127 } else { (i * 37 % 255) as i32 - 127 };
                (q as f32 * 2f32.powi(-(((i / 32) % 9) as i32) - 3)).to_le_bytes()
            })
            .collect();
        for code in [true, false] {
            let (mut lanes, set) = pair(4);
            lanes.code = if code { Coding::Always } else { Coding::Never };
            for (seq, bulk) in [(1u32, vec![&rows[..]]), (2, vec![&rows[..1000], &rows[1000..]])] {
                let filler = filling(&set, seq, 4 << 20);
                lanes.stripe(seq, &bulk).unwrap();
                assert!(filler.join().unwrap().unwrap() == rows, "frame {seq}, coding {code}");
            }
            let want = if code { 8 << 20 } else { 0 };
            assert_eq!(set.decoded(), want, "coding {code}");
            // Both frames' bulk in parts of 256 KiB.
            assert_eq!(lanes.coded(), if code { 32 } else { 0 });
        }
    }

    /// A chunk whose rows stop part way goes coded up to there and as it is from the first
    /// part that does not code on.
    #[test]
    fn a_chunk_half_rows_lands_exactly() {
        let (mut lanes, set) = pair(1);
        lanes.code = Coding::Always;
        let mut data: Vec<u8> =
            (0..(512usize << 10) / 4).flat_map(|i| ((i % 255) as f32 - 127.0).to_le_bytes()).collect();
        data.extend((0..1u32 << 20).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
        let filler = filling(&set, 1, data.len());
        lanes.stripe(1, &[&data]).unwrap();
        assert!(filler.join().unwrap().unwrap() == data);
        assert_eq!((lanes.coded(), set.decoded()), (2, 512 << 10));
    }

    /// A coded chunk that does not decode ends the session with a clear error.
    #[test]
    fn a_malformed_coded_chunk_fails_the_frame() {
        let set = LaneSet::new();
        let (a, b) = UnixStream::pair().unwrap();
        set.add(Stream::Unix(b), 0).unwrap();
        let mut a = Stream::Unix(a);
        assert_eq!(read_header(&mut a).unwrap().op, OP_JOIN);
        let mut h = Header::request(OP_LANE, 5, 0, true, 8, 3);
        h.flags |= FLAG_CODED;
        write_frame(&mut a, &h, &4096u64.to_le_bytes(), &[&[1, 2, 3]]).unwrap();
        let e = set.fill(5, &mut vec![0u8; 4096]).unwrap_err();
        assert!(e.to_string().contains("coded blocks end"), "{e}");
    }

    /// A helper that never gets to run (no core for it) does not hold up a copy: its job is
    /// taken back and written on its lane by the poster.
    #[test]
    fn a_job_no_helper_takes_is_run_by_the_poster() {
        let set = LaneSet::new();
        let mut ends = Vec::new();
        for i in 0..3 {
            let (a, b) = UnixStream::pair().unwrap();
            set.add(Stream::Unix(b), i).unwrap();
            let mut a = Stream::Unix(a);
            assert_eq!(read_header(&mut a).unwrap().op, OP_JOIN);
            ends.push(a);
        }
        let first = Mutex::new(ends.remove(0));
        // Helpers whose threads were never started.
        let idle = |s: Stream| {
            Arc::new(Helper {
                closer: s.try_clone().unwrap(),
                stream: Mutex::new(s),
                slot: Mutex::new(Slot::default()),
                cv: Condvar::new(),
                spin: Duration::ZERO,
                park: None,
            })
        };
        let helpers: Vec<Arc<Helper>> = ends.into_iter().map(idle).collect();
        let data: Vec<u8> = (0..(1 << 20) + 5).map(|i| (i * 13) as u8).collect();
        let filler = filling(&set, 9, (1 << 20) + 5);
        run_jobs(Some(&first), &helpers, write_jobs(9, &[&data], 3, None)).0.unwrap();
        assert_eq!(filler.join().unwrap().unwrap(), data);
        assert!(helpers.iter().all(|h| h.slot.lock().job.is_none()), "no job left behind");
    }

    /// Small chunks that come before the worker asks for their frame are read ahead and land
    /// whole once it does; a large one waits for its frame, as before.
    #[test]
    fn small_chunks_before_their_frame_are_read_ahead() {
        let (lanes, set) = pair(4);
        let frames: Vec<Vec<u8>> = [300usize << 10, 4096, 2 << 20]
            .iter()
            .enumerate()
            .map(|(f, &len)| (0..len).map(|i| (i * 13 + f) as u8).collect())
            .collect();
        let (sent, first_sent) = std::sync::mpsc::channel();
        let sender = {
            let frames = frames.clone();
            std::thread::spawn(move || {
                for (seq, data) in frames.iter().enumerate() {
                    lanes.stripe(seq as u32 + 1, &[data]).unwrap();
                    let _ = sent.send(seq);
                }
                lanes
            })
        };
        // The worker is busy elsewhere while the first frame's chunks come.
        first_sent.recv_timeout(Duration::from_secs(10)).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        for (seq, data) in frames.iter().enumerate() {
            let mut buf = vec![0u8; data.len()];
            set.fill(seq as u32 + 1, &mut buf).unwrap();
            assert!(buf == *data, "frame {}", seq + 1);
        }
        let _lanes = sender.join().unwrap();
        // The first frame's chunks, maybe the second's (whether its lane reaches that chunk's
        // header before the worker asks for the frame is a race), never the large one's.
        let ahead = set.read_ahead();
        assert!((300 << 10..=(300 << 10) + 4096).contains(&ahead), "{ahead} bytes read ahead");
    }

    #[test]
    fn scattered_replies_are_gathered_whole() {
        let (lanes, set) = pair(4);
        for (seq, len) in [(1u32, 1usize), (2, 4097), (3, 1 << 20), (4, (5 << 20) + 3)] {
            let data: Vec<u8> = (0..len).map(|i| (i * 11 + seq as usize) as u8).collect();
            let scatter = {
                let (set, data) = (set.clone(), data.clone());
                std::thread::spawn(move || set.replies(4).unwrap().send(seq, &data))
            };
            let mut buf = vec![0u8; len];
            lanes.gather(seq, &mut buf).unwrap();
            scatter.join().unwrap().unwrap();
            assert!(buf == data, "reply {seq}");
        }
        assert_eq!(lanes.gathered(), 4);
        // Both ways at once on the same lanes.
        let data = vec![7u8; 2 << 20];
        let filler = filling(&set, 9, 2 << 20);
        let scatter = {
            let (set, data) = (set.clone(), data.clone());
            std::thread::spawn(move || set.replies(4).unwrap().send(10, &data))
        };
        lanes.stripe(9, &[&data]).unwrap();
        let mut back = vec![0u8; 2 << 20];
        lanes.gather(10, &mut back).unwrap();
        assert_eq!(filler.join().unwrap().unwrap(), data);
        scatter.join().unwrap().unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn a_chunk_of_another_frame_fails_the_gather() {
        let (lanes, set) = pair(2);
        let scatter = {
            let set = set.clone();
            std::thread::spawn(move || set.replies(2).unwrap().send(3, &vec![1u8; 1 << 20]))
        };
        let e = lanes.gather(4, &mut vec![0u8; 1 << 20]).unwrap_err();
        assert!(e.to_string().contains("expected chunk"), "{e}");
        lanes.shutdown();
        let _ = scatter.join().unwrap();
    }

    #[test]
    fn cut_takes_ranges_across_pieces() {
        let (a, b, c) = (&[1u8, 2, 3][..], &[][..], &[4u8, 5][..]);
        assert_eq!(cut(&[a, b, c], 1, 4).concat(), [2, 3, 4]);
        assert_eq!(cut(&[a, b, c], 0, 5).concat(), [1, 2, 3, 4, 5]);
        assert!(cut(&[a, b, c], 3, 3).is_empty());
    }

    /// A chunk past its frame's end or over another chunk ends the session's lanes, and
    /// `fill` returns an error instead of waiting.
    #[test]
    fn bad_chunks_fail_the_fill() {
        for (off, len) in [(4096u64, 1usize << 20), (0, 4096)] {
            let set = LaneSet::new();
            let (a, b) = UnixStream::pair().unwrap();
            let (c, d) = UnixStream::pair().unwrap();
            set.add(Stream::Unix(b), 0).unwrap();
            set.add(Stream::Unix(d), 1).unwrap();
            let (mut a, mut c) = (Stream::Unix(a), Stream::Unix(c));
            read_header(&mut a).unwrap();
            read_header(&mut c).unwrap();
            let filler = filling(&set, 9, 1 << 20);
            let bytes = vec![1u8; len];
            write_frame(&mut a, &chunk_header(9, 0, 4096), &[], &[&bytes[..4096]]).unwrap();
            let _ = write_frame(&mut c, &chunk_header(9, off as usize, len), &[], &[&bytes]);
            let e = filler.join().unwrap().unwrap_err();
            assert!(e.to_string().contains("outside") || e.to_string().contains("overlapping"), "{e}");
        }
    }

    #[test]
    fn fill_without_lanes_is_an_error() {
        let e = LaneSet::new().fill(1, &mut [0u8; 8]).unwrap_err();
        assert!(e.to_string().contains("no lane"), "{e}");
    }

    #[test]
    fn a_closed_lane_fails_the_waiting_fill() {
        let (lanes, set) = pair(2);
        let filler = filling(&set, 5, 1 << 20);
        // Half a chunk, then the lanes close.
        let mut s = lanes.writers.first.lock();
        write_frame(&mut *s, &chunk_header(5, 0, 1 << 19), &[], &[&[0u8; 1000]]).unwrap();
        drop(s);
        lanes.shutdown();
        assert!(filler.join().unwrap().is_err());
    }
}
