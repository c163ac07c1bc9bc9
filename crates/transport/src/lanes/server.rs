//! A worker's lanes: a reader thread per lane lands each frame's chunks where the worker
//! says, and helpers write replies' chunks.

use crate::addr::Stream;
use crate::framing::read_header;
use crate::park::{Pace, Park, Parked, Window};
use parking_lot::{Condvar, Mutex, MutexGuard};
use protocol::frame::{FLAG_CODED, OP_LANE};
use std::io::{self, Read};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::jobs::{Helper, run_jobs, write_jobs};
use super::{LANE_MAX, MAX_LANES, idle_spin, lane_spin, poll_then_wait};

/// Longest a lane's chunk may wait for its frame, or a frame for its chunks, once one of
/// them has arrived: the client sends both together.
const LANE_WAIT: Duration = Duration::from_secs(30);

/// Chunks up to this size are read ahead of their frame (see `Shared::read_lane`): a
/// prompt batch's 512 KiB mask, not its 4 MiB of embeddings, whose copy out of a buffer
/// would cost more than their wait.
const AHEAD_MAX: usize = 256 << 10;

/// A worker's lanes: a reader thread per lane puts chunks where [`LaneSet::fill`] said.
#[derive(Clone, Default)]
pub struct LaneSet {
    pub(super) shared: Arc<Shared>,
}

#[derive(Default)]
pub(super) struct Shared {
    state: Mutex<State>,
    cv: Condvar,
    /// A helper per lane of the client's, by its number, that writes replies' chunks.
    writers: Mutex<Vec<Option<Arc<Helper>>>>,
    /// Bytes read ahead of their frame (then copied into place).
    ahead: std::sync::atomic::AtomicU64,
    /// Bytes that came coded (`protocol::dequant`), counted decoded.
    decoded: std::sync::atomic::AtomicU64,
    /// Parks the readers' polling while the worker is inside a synchronous call.
    pub(super) park: Park,
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
            old.close();
        }
        super::acknowledge(&mut stream)?;
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
        // Notified with the lock released (see `Conn::wake_writer`): readers asleep on the
        // condition variable are woken, not queued behind this lock.
        MutexGuard::unlocked(&mut st, || sh.cv.notify_all());
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
            w.wake();
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
    /// [`FLAG_LANES`](protocol::frame::FLAG_LANES), goes first on the session's
    /// connection) and return once every byte has been written. An error leaves the lanes
    /// unusable: the session ends.
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

    /// Return once `s` has bytes to read, or once the polling window ([`idle_spin`]) is
    /// over (the read that follows then sleeps until they come).
    fn await_chunk(&self, s: &Stream) {
        let mut window = Window::new(idle_spin(), Some(&self.park));
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
