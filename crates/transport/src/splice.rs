//! Sending the application's pinned host memory by reference instead of copying it into the
//! socket. CUDA forbids an application to change pinned memory (`cuMemHostAlloc`,
//! `cuMemHostRegister`) while an asynchronous copy from it may still be reading it, so a
//! lane can hand a unix socket references to those pages (`vmsplice` into a pipe, `splice`
//! into the socket) and let the server's reader make the one copy there is: the
//! application's thread then no longer pays a copy into socket buffers (the kernel's copy,
//! about 5 GB/s a stream, is what a lane costs it).
//!
//! The server reads a frame's bulk before it answers any later synchronous call, so once a
//! reply has come after a copy, its pages are the application's again. Freeing or
//! unregistering such memory asks for one ([`take_stable`] says whether it must), since
//! an application may free pinned memory right after queueing a copy from it.
//!
//! Unix sockets only: over TCP loopback the pages would sit by reference in the server's
//! receive queue just as well, but a TCP peer elsewhere reads them as the network sends
//! them, which this does not change. `VGPU_SPLICE=0` turns it off.

use crate::addr::Stream;
use parking_lot::RwLock;
use protocol::frame::Header;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use zerocopy::IntoBytes;

/// Pinned ranges by start: their length, and whether a lane sent from them by reference.
static STABLE: RwLock<BTreeMap<usize, (usize, AtomicBool)>> = RwLock::new(BTreeMap::new());

/// Whether sends by reference are on (`VGPU_SPLICE`), and still work here.
static WORKS: AtomicBool = AtomicBool::new(true);

fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("VGPU_SPLICE").map_or(true, |v| v.trim() != "0")) && WORKS.load(Ordering::Relaxed)
}

/// `[ptr, ptr+len)` is pinned host memory of the application's: lanes may send from it by
/// reference.
pub fn add_stable(ptr: usize, len: usize) {
    if len > 0 {
        STABLE.write().insert(ptr, (len, AtomicBool::new(false)));
    }
}

/// The range starting at `ptr` is pinned no more. `true`: a lane sent from it by reference,
/// and the caller must have a reply from each server (see the module's doc) before the
/// memory may change.
pub fn take_stable(ptr: usize) -> bool {
    STABLE.write().remove(&ptr).is_some_and(|(_, sent)| sent.into_inner())
}

/// Whether every piece lies in one pinned range; if so they are marked as sent from.
fn claim(pieces: &[&[u8]]) -> bool {
    let map = STABLE.read();
    let within = |p: &[u8]| {
        let at = p.as_ptr() as usize;
        map.range(..=at).next_back().filter(|(s, (len, _))| at + p.len() <= *s + *len).map(|(_, (_, sent))| sent)
    };
    let ranges: Option<Vec<&AtomicBool>> = pieces.iter().map(|p| within(p)).collect();
    ranges.is_some_and(|r| {
        r.iter().for_each(|sent| sent.store(true, Ordering::Relaxed));
        true
    })
}

/// Write a frame whose bulk may be pinned memory: by reference where it is and `s` is a unix
/// socket, else as [`crate::write_frame`] does.
pub(crate) fn write_frame(s: &mut Stream, header: &Header, bulk: &[&[u8]]) -> io::Result<()> {
    let Stream::Unix(u) = s else { return crate::write_frame(s, header, &[], bulk) };
    if !enabled() || bulk.iter().all(|b| b.is_empty()) || !claim(bulk) {
        return crate::write_frame(s, header, &[], bulk);
    }
    u.write_all(header.as_bytes())?;
    let fd = u.as_raw_fd();
    for b in bulk {
        send(fd, b)?;
    }
    Ok(())
}

/// A pipe pages pass through on their way into a socket, one per thread that sends.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

thread_local! {
    static PIPE: RefCell<Option<Pipe>> = const { RefCell::new(None) };
}

fn new_pipe() -> io::Result<Pipe> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors this thread then owns.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptors from pipe2.
    let p = unsafe { Pipe { read: OwnedFd::from_raw_fd(fds[0]), write: OwnedFd::from_raw_fd(fds[1]) } };
    // As much as the system lets a pipe hold (1 MiB by default): fewer round trips.
    // SAFETY: fcntl on our own descriptor; failing leaves the default size.
    unsafe { libc::fcntl(fds[1], libc::F_SETPIPE_SZ, 1 << 20) };
    Ok(p)
}

/// Send `bytes` into the socket `fd` by reference: `vmsplice` their pages into this thread's
/// pipe, `splice` the pipe into the socket. A kernel that cannot splice into this socket
/// (the first try fails before any byte is in it) turns the mechanism off, and the bytes go
/// by copy.
fn send(fd: RawFd, bytes: &[u8]) -> io::Result<()> {
    PIPE.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(new_pipe()?);
        }
        let pipe = slot.as_ref().expect("set above");
        let r = send_through(pipe, fd, bytes);
        if r.is_err() || !WORKS.load(Ordering::Relaxed) {
            // Bytes may be left in the pipe: a later send starts with a clean one.
            *slot = None;
        }
        r
    })
}

fn send_through(pipe: &Pipe, fd: RawFd, bytes: &[u8]) -> io::Result<()> {
    let mut at = 0;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let iov = libc::iovec { iov_base: rest.as_ptr() as *mut _, iov_len: rest.len() };
        // SAFETY: the iovec names the caller's bytes; no flags (no gift: the pages stay the
        // application's and are only referenced).
        let n = unsafe { libc::vmsplice(pipe.write.as_raw_fd(), &iov, 1, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let mut left = n as usize;
        while left > 0 {
            // SAFETY: splice between descriptors we hold; null offsets (pipe and socket).
            let m = unsafe {
                libc::splice(
                    pipe.read.as_raw_fd(),
                    std::ptr::null_mut(),
                    fd,
                    std::ptr::null_mut(),
                    left,
                    libc::SPLICE_F_MOVE,
                )
            };
            if m <= 0 {
                let e = if m == 0 { io::ErrorKind::WriteZero.into() } else { io::Error::last_os_error() };
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                if at == 0 && left == n as usize && e.raw_os_error() == Some(libc::EINVAL) {
                    // This socket takes no spliced pages: copy, now and from now on.
                    WORKS.store(false, Ordering::Relaxed);
                    let mut u = std::mem::ManuallyDrop::new(unsafe {
                        // SAFETY: borrowed for this write only, never closed here.
                        std::os::unix::net::UnixStream::from_raw_fd(fd)
                    });
                    return u.write_all(bytes);
                }
                return Err(e);
            }
            left -= m as usize;
        }
        at += n as usize;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixStream;

    #[test]
    fn pinned_ranges_are_claimed_whole_and_remembered() {
        let buf = vec![0u8; 3 << 20];
        let other = vec![0u8; 1 << 20];
        add_stable(buf.as_ptr() as usize, buf.len());
        assert!(claim(&[&buf[..4096], &buf[1 << 20..]]));
        assert!(!claim(&[&buf[..4096], &other]), "one piece outside");
        assert!(take_stable(buf.as_ptr() as usize), "sent from");
        assert!(!claim(&[&buf[..4096]]), "no longer pinned");
        add_stable(other.as_ptr() as usize, other.len());
        assert!(!take_stable(other.as_ptr() as usize), "never sent from");
    }

    /// A frame from pinned memory arrives whole through a unix socket, larger than the pipe
    /// and the socket's buffers, and later frames from the same thread too.
    #[test]
    fn frames_from_pinned_memory_arrive_whole() {
        let data: Vec<u8> = (0..(5 << 20) + 123).map(|i: usize| (i * 31 + (i >> 13)) as u8).collect();
        add_stable(data.as_ptr() as usize, data.len());
        let (a, b) = UnixStream::pair().unwrap();
        let reader = std::thread::spawn(move || {
            let mut b = b;
            let mut got = Vec::new();
            for _ in 0..2 {
                let h = crate::read_header(&mut b).unwrap();
                let mut v = vec![0u8; h.bulk_len as usize];
                b.read_exact(&mut v).unwrap();
                got.push(v);
            }
            got
        });
        let mut s = Stream::Unix(a);
        let h = Header::request(protocol::frame::OP_LANE, 1, 0, true, 0, data.len());
        let (x, y) = data.split_at(4097);
        write_frame(&mut s, &h, &[x, y]).unwrap();
        write_frame(&mut s, &h, &[&data]).unwrap();
        let got = reader.join().unwrap();
        assert!(got[0] == data && got[1] == data);
        assert!(WORKS.load(Ordering::Relaxed), "sent by reference, not copied after a refusal");
        assert!(take_stable(data.as_ptr() as usize));
    }
}
