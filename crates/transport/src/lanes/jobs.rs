//! Helper threads that run chunk jobs on their own lane, one at a time: the client's
//! writers and readers, and the server's reply writers.

use crate::addr::Stream;
use crate::framing::{read_header, write_frame};
use crate::park::{Park, Window};
use parking_lot::{Condvar, Mutex};
use protocol::frame::OP_LANE;
use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use super::{chunk_header, chunk_range, cut, lane_spin, poll_then_wait};

/// What a helper does with its lane: writes a chunk or reads one, in memory that whoever
/// posted it keeps valid until the helper says it is done.
pub(super) type Job = Box<dyn FnOnce(&mut Stream) -> io::Result<()> + Send>;

/// A thread that runs jobs on a handle of its own on one lane, one job at a time.
pub(super) struct Helper {
    stream: Mutex<Stream>,
    closer: Stream,
    slot: Mutex<Slot>,
    cv: Condvar,
    /// How long the caller polls for the job's result before sleeping, and the helper for its
    /// next job unless other sessions share the GPU ([`crate::crowd`]): [`lane_spin`], by
    /// default the client's reply budget. Helpers
    /// that slept between llama.cpp's prompt batches (10 ms apart) made the application's
    /// own CPU work 0.1-0.3 ms a batch slower once woken (3 helpers; ones that polled cost
    /// nothing): more than their copies saved.
    spin: Duration,
    /// What parks its polling for the next job, if anything does (see [`crate::park`]).
    park: Option<Arc<Park>>,
}

impl Helper {
    pub(super) fn start(stream: Stream, park: Option<Arc<Park>>) -> io::Result<Arc<Helper>> {
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

    /// Wake the helper: to take a job, or to see that its lane is shut.
    pub(super) fn wake(&self) {
        self.cv.notify_one();
    }

    /// Shut the helper's lane and wake it, so that it ends (its lane replaced, or the
    /// session over).
    pub(super) fn close(&self) {
        self.closer.shutdown();
        self.wake();
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
        let window = Window::new(crate::crowd::spin_unless_crowded(self.spin), self.park.as_deref());
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
pub(super) struct Fan {
    pub(super) first: Mutex<Stream>,
    helpers: Vec<Arc<Helper>>,
}

impl Fan {
    pub(super) fn new(mut streams: Vec<Stream>, park: Option<&Arc<Park>>) -> io::Result<Fan> {
        let first = Mutex::new(streams.remove(0));
        let helpers = streams.into_iter().map(|s| Helper::start(s, park.cloned())).collect::<io::Result<Vec<_>>>()?;
        Ok(Fan { first, helpers })
    }

    pub(super) fn len(&self) -> usize {
        1 + self.helpers.len()
    }

    /// Run job `i` on lane `i` (`None`: nothing for that lane) and return once every job is
    /// done, error or not: the first error, and how late the latest helper took its job.
    pub(super) fn run(&self, jobs: Vec<Option<Job>>) -> (io::Result<()>, Duration) {
        run_jobs(Some(&self.first), &self.helpers, jobs)
    }

    pub(super) fn wake(&self) {
        for h in &self.helpers {
            h.wake();
        }
    }
}

/// Run the jobs (the first by the caller where `first` is given, the others by the helpers)
/// and return once every one is done: the first error, and how long after it was posted the
/// latest helper took its job (or had not yet, when the caller looked). A helper that slept
/// wakes within tens of microseconds; one that waits for a core takes a scheduler's slice.
pub(super) fn run_jobs(
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

/// Jobs writing `bulk` (its pieces, in order) as chunks of frame `seq`, one per lane of `n`;
/// `code`: chunks go coded where that saves (see [`Coding`](crate::coding::Coding)), counted there.
pub(super) fn write_jobs(seq: u32, bulk: &[&[u8]], n: usize, code: Option<&Arc<AtomicU64>>) -> Vec<Option<Job>> {
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
pub(super) fn read_jobs(seq: u32, buf: &mut [u8], n: usize) -> Vec<Option<Job>> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lanes::LaneSet;
    use crate::lanes::client::LAG;
    use crate::lanes::tests::{filling, pair};
    use protocol::frame::OP_JOIN;
    use std::os::unix::net::UnixStream;

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
}
