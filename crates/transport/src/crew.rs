//! A few threads that take parts of one job at a time with the caller: the worker's copies
//! from (and to) a reached client's memory, split so that several cores copy at once.
//!
//! They poll for the next job before sleeping, as the lanes' threads do: a job comes every
//! few milliseconds during prompt processing, and a sleeping thread takes tens of
//! microseconds to wake (a general pool such as rayon's sleeps sooner, with no budget to set).

use crate::lanes::poll_then_wait;
use parking_lot::{Condvar, Mutex};
use std::io;
use std::sync::Arc;
use std::time::Duration;

/// The job's parts, borrowed from the caller of [`Crew::run`] for as long as it waits.
type Part<'a> = dyn Fn(usize) -> io::Result<()> + Sync + 'a;

pub struct Crew {
    shared: Arc<Shared>,
    threads: usize,
}

struct Shared {
    st: Mutex<State>,
    cv: Condvar,
    spin: Duration,
}

#[derive(Default)]
struct State {
    /// The current job (lifetime erased: valid while `done < parts`, which `run` waits for).
    job: Option<JobPtr>,
    parts: usize,
    next: usize,
    done: usize,
    failed: Option<io::Error>,
    closed: bool,
}

#[derive(Clone, Copy)]
struct JobPtr(*const Part<'static>);
// SAFETY: it points at a `Sync` closure, used only while its owner waits for it.
unsafe impl Send for JobPtr {}

impl Crew {
    /// `threads` helpers besides the caller (0: the caller does every part), each polling
    /// for `spin` before sleeping.
    pub fn new(threads: usize, spin: Duration) -> io::Result<Crew> {
        let shared = Arc::new(Shared { st: Mutex::new(State::default()), cv: Condvar::new(), spin });
        for _ in 0..threads {
            let sh = shared.clone();
            std::thread::Builder::new().name("vgpu-crew".into()).spawn(move || sh.work())?;
        }
        Ok(Crew { shared, threads })
    }

    /// Threads that take parts, the caller included.
    pub fn width(&self) -> usize {
        self.threads + 1
    }

    /// Run `part(0..parts)`, some on the helpers, and return once every part is done: the
    /// first error, if any.
    pub fn run(&self, parts: usize, part: &Part<'_>) -> io::Result<()> {
        let sh = &*self.shared;
        {
            let mut st = sh.st.lock();
            // SAFETY: only the lifetime is erased; `run` returns after the last part is done.
            let job = unsafe { std::mem::transmute::<*const Part<'_>, *const Part<'static>>(part) };
            *st = State { job: Some(JobPtr(job)), parts, ..State::default() };
        }
        sh.cv.notify_all();
        // The caller takes parts too, then waits for those the helpers took.
        while sh.take_one() {}
        let mut st = sh.st.lock();
        poll_then_wait(&sh.cv, &mut st, sh.spin, Duration::from_millis(100), |st, _| {
            (st.done >= st.parts).then_some(())
        });
        st.job = None;
        st.failed.take().map_or(Ok(()), Err)
    }
}

impl Drop for Crew {
    fn drop(&mut self) {
        self.shared.st.lock().closed = true;
        self.shared.cv.notify_all();
    }
}

impl Shared {
    fn work(&self) {
        loop {
            {
                let mut st = self.st.lock();
                let closed = poll_then_wait(&self.cv, &mut st, self.spin, Duration::from_millis(500), |st, _| {
                    if st.closed { Some(true) } else { (st.job.is_some() && st.next < st.parts).then_some(false) }
                });
                if closed {
                    return;
                }
            }
            while self.take_one() {}
        }
    }

    /// Do the next part of the current job, if one is left.
    fn take_one(&self) -> bool {
        let (job, i) = {
            let mut st = self.st.lock();
            match st.job {
                Some(job) if st.next < st.parts => {
                    st.next += 1;
                    (job, st.next - 1)
                }
                _ => return false,
            }
        };
        // SAFETY: the job lives until `done` reaches `parts`, which needs this part.
        let r = unsafe { (*job.0)(i) };
        let mut st = self.st.lock();
        if let Err(e) = r {
            st.failed.get_or_insert(e);
        }
        st.done += 1;
        if st.done >= st.parts {
            self.cv.notify_all();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn every_part_runs_once_and_errors_come_back() {
        let crew = Crew::new(3, Duration::from_micros(50)).unwrap();
        assert_eq!(crew.width(), 4);
        for parts in [0, 1, 3, 17, 64] {
            let hits: Vec<AtomicUsize> = (0..parts).map(|_| AtomicUsize::new(0)).collect();
            crew.run(parts, &|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
                Ok(())
            })
            .unwrap();
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "{parts} parts");
        }
        let e = crew.run(8, &|i| if i == 5 { Err(io::Error::other("part 5")) } else { Ok(()) }).unwrap_err();
        assert_eq!(e.to_string(), "part 5");
        // Sleeping helpers wake for the next job.
        std::thread::sleep(Duration::from_millis(5));
        let n = AtomicUsize::new(0);
        crew.run(32, &|_| {
            n.fetch_add(1, Ordering::Relaxed);
            Ok(())
        })
        .unwrap();
        assert_eq!(n.load(Ordering::Relaxed), 32);
    }
}
