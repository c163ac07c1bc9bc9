//! `VGPU_WRITE_LOG=PATH` (a diagnostic, client side): each write of frames to the server's
//! connection, by the writer thread or by a caller with its request, with when the frames
//! were found, when the write began and ended, and its bytes (CLOCK_MONOTONIC µs, the clock
//! of `timeline.c` and of the server's `VGPU_FRAME_LOG`). `scripts/gpu/frames.py` puts the
//! three on one time line: the application's call, this write, the worker's read.
//!
//! Rows are kept in memory and appended to `PATH.<pid>` every [`FLUSH`] rows (the writer
//! pays for that write once in so many; a run's last rows are not written).

use parking_lot::Mutex;
use std::io::Write;

/// Now, in microseconds of CLOCK_MONOTONIC: the clock both sides' diagnostic logs (this one,
/// the server's frame log) and `timeline.c` stamp with, so that one host's logs line up.
pub fn monotonic_micros() -> f64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as f64 * 1e6 + t.tv_nsec as f64 * 1e-3
}

/// Rows kept before they are appended to the file.
const FLUSH: usize = 512;

/// Who wrote the frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Writer {
    /// The writer thread, the queued one-way frames.
    Thread,
    /// A caller, the queued frames together with its request.
    Caller,
}

#[derive(Clone, Copy, Debug)]
struct Row {
    who: Writer,
    found: f64,
    start: f64,
    end: f64,
    bytes: usize,
}

pub(crate) struct WriteLog {
    path: String,
    rows: Mutex<Vec<Row>>,
}

impl WriteLog {
    pub(crate) fn from_env() -> Option<WriteLog> {
        let path = std::env::var("VGPU_WRITE_LOG").ok().filter(|p| !p.is_empty())?;
        Some(WriteLog { path: format!("{path}.{}", std::process::id()), rows: Mutex::new(Vec::with_capacity(FLUSH)) })
    }

    /// One write: `found` when its frames were seen queued, `start` and `end` of the write.
    pub(crate) fn add(&self, who: Writer, found: f64, start: f64, bytes: usize) {
        let row = Row { who, found, start, end: monotonic_micros(), bytes };
        let full = {
            let mut rows = self.rows.lock();
            rows.push(row);
            (rows.len() >= FLUSH).then(|| std::mem::take(&mut *rows))
        };
        if let Some(rows) = full {
            // A diagnostic: a file that cannot be written loses its rows, nothing else.
            let _ = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .and_then(|mut f| f.write_all(format_rows(&rows).as_bytes()));
        }
    }
}

/// One line a row: who (`T` the writer thread, `C` a caller), found, start, end, bytes.
fn format_rows(rows: &[Row]) -> String {
    rows.iter()
        .map(|r| {
            let who = if r.who == Writer::Thread { 'T' } else { 'C' };
            format!("{who} {:.1} {:.1} {:.1} {}\n", r.found, r.start, r.end, r.bytes)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_reach_the_file_in_blocks() {
        let dir = std::env::temp_dir().join(format!("vgpu-writelog-{}", std::process::id()));
        let log = WriteLog { path: dir.to_string_lossy().into_owned(), rows: Mutex::new(Vec::new()) };
        let t = monotonic_micros();
        for i in 0..FLUSH + 3 {
            log.add(if i % 2 == 0 { Writer::Thread } else { Writer::Caller }, t, t, i);
        }
        let text = std::fs::read_to_string(&dir).unwrap();
        let _ = std::fs::remove_file(&dir);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), FLUSH, "one full block written, the rest still kept");
        let first: Vec<&str> = lines[0].split(' ').collect();
        assert_eq!((first[0], first[4]), ("T", "0"));
        assert!(lines[1].starts_with("C "));
        let (start, end): (f64, f64) = (first[2].parse().unwrap(), first[3].parse().unwrap());
        assert!(end >= start, "the write ends after it starts");
        assert_eq!(log.rows.lock().len(), 3);
    }
}
