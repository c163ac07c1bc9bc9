//! A client's lanes to one session: opening them, striping copies over them, reading
//! replies from them, and setting them aside while their helpers lag.

use crate::addr::{Address, Stream};
use crate::coding::{Coding, FAST_LINK};
use crate::framing::{read_header, write_frame};
use crate::park::{Park, Parked};
use protocol::frame::{Header, OP_JOIN};
use protocol::hello::{Join, LaneOffer, Role};
use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::jobs::{Fan, read_jobs, write_jobs};

/// How late a helper may take its chunk after it was posted before the copy counts as
/// lagging (a helper with a core takes it within microseconds; one woken from sleep, tens).
pub(super) const LAG: Duration = Duration::from_micros(500);

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

/// A client's lanes to one session.
pub struct Lanes {
    /// Handles that write chunks (lane 0 by the caller itself, the others by helpers).
    pub(super) writers: Fan,
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
    pub(super) code: Coding,
    /// Parks the writers' polling while the application waits for a reply ([`Lanes::park`]).
    pub(super) park: Arc<Park>,
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

/// Connect an extra connection of `session` in `role` and have the server acknowledge it.
pub(crate) fn join(
    address: &Address,
    session: u64,
    offer: &LaneOffer,
    role: Role,
    t: crate::Timeouts,
) -> io::Result<Stream> {
    let join = |key| -> io::Result<Vec<u8>> {
        let join = postcard::to_allocvec(&Join { session, key, role }).map_err(io::Error::other)?;
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
        return Err(io::Error::new(io::ErrorKind::PermissionDenied, "the server refused the connection"));
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
            let joining: Vec<_> = (0..n as u32)
                .map(|lane| scope.spawn(move || join(address, session, offer, Role::Lane(lane), t)))
                .collect();
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
    pub(super) fn over(streams: Vec<Stream>, lag: Option<Duration>) -> io::Result<Lanes> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lanes::tests::{filling, pair};

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
}
