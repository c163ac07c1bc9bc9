//! The shared-memory data plane's segment and how it reaches the server.
//!
//! A client on the server's host (an `shm:` address) creates a memfd, maps it, and passes
//! the descriptor over the unix socket (SCM_RIGHTS) in an [`OP_SHM`] frame sent before the
//! handshake. The server maps the same pages; copies whose host side lies in the segment
//! then name an offset instead of carrying bytes.
//!
//! A client in a virtual machine cannot pass a descriptor to its host. There the segment is
//! memory the hypervisor shares (QEMU's `ivshmem-plain` device over a `memory-backend-file`
//! on the host): the guest maps part of the device's memory (its PCI BAR, `resource2` in
//! sysfs), the host's server maps the same part of the file behind it
//! ([`Segment::open_file`] on both sides), and the client proves which file it holds by
//! writing a random nonce at the part's start, which the server looks for in the files it
//! was told to share ([`OP_SHM_FILE`]). Each part serves one session at a time
//! ([`Segment::lock`]), so several processes of a VM can each have one.
//!
//! The server must never fault on the client's memory: a memfd that could shrink under its
//! mapping would turn an access into SIGBUS, so [`Segment::open`] takes only segments
//! sealed against shrinking, and every access goes through [`Segment::range`], which checks
//! bounds. A shared file is the host administrator's, not the client's: only they can
//! shrink it.

use crate::addr::Stream;
use protocol::frame::{Header, OP_SHM, OP_SHM_FILE};
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

/// Bytes of the nonce a client writes at the start of a shared file ([`OP_SHM_FILE`]).
pub const NONCE_LEN: usize = 32;

/// Largest segment a server maps. Registering it with the driver pins its pages, so a
/// client cannot make the server pin more than this.
pub const MAX_SEGMENT: u64 = 16 << 30;

/// A shared memory segment mapped into this process.
#[derive(Debug)]
pub struct Segment {
    ptr: *mut u8,
    len: usize,
    fd: OwnedFd,
    /// Where the mapping starts in its file (0 but for a part of a shared file).
    at: u64,
}

// SAFETY: the mapping is plain memory that lives as long as the `Segment`; what is stored
// in it is the users' business, as with any shared buffer.
unsafe impl Send for Segment {}
unsafe impl Sync for Segment {}

impl Segment {
    /// A fresh zero-filled segment of `len` bytes (the client's side), sealed so that its
    /// size can no longer change.
    pub fn create(len: usize) -> io::Result<Segment> {
        if len == 0 || len as u64 > MAX_SEGMENT {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("segment size {len} out of range")));
        }
        let name = c"vgpu-shm";
        let raw = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        if unsafe { libc::ftruncate(raw, len as libc::off_t) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
        if unsafe { libc::fcntl(raw, libc::F_ADD_SEALS, seals) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Self::map(fd, len)
    }

    /// Map a segment received from a client, refusing anything but a memfd of `expected`
    /// bytes (at most [`MAX_SEGMENT`]) sealed against shrinking.
    pub fn open(fd: OwnedFd, expected: u64) -> io::Result<Segment> {
        let bad = |why: String| io::Error::new(io::ErrorKind::InvalidInput, why);
        let raw = fd.as_raw_fd();
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(raw, &mut st) } < 0 {
            return Err(io::Error::last_os_error());
        }
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(bad("the shared segment is not a memory file".into()));
        }
        let seals = unsafe { libc::fcntl(raw, libc::F_GET_SEALS) };
        if seals < 0 || seals & libc::F_SEAL_SHRINK == 0 {
            return Err(bad("the shared segment is not sealed against shrinking".into()));
        }
        let size = st.st_size as u64;
        if size != expected || size == 0 || size > MAX_SEGMENT {
            return Err(bad(format!("shared segment of {size} bytes (announced {expected}, limit {MAX_SEGMENT})")));
        }
        Self::map(fd, size as usize)
    }

    /// Map `len` bytes at `at` (page-aligned) of the shared file at `path`: a file the host
    /// shares with a VM, or in the guest that memory's device (its PCI BAR's `resource2`
    /// file). `len` `None`: the rest of the file.
    pub fn open_file(path: &Path, at: u64, len: Option<u64>) -> io::Result<Segment> {
        let f = std::fs::OpenOptions::new().read(true).write(true).open(path)?;
        let meta = f.metadata()?;
        let size = meta.len();
        let len = len.unwrap_or(size.saturating_sub(at));
        let page = page_size();
        let fits = at.checked_add(len).is_some_and(|end| end <= size);
        if !meta.file_type().is_file() || len == 0 || len > MAX_SEGMENT || !fits || !at.is_multiple_of(page) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: no {len} bytes at {at} of a shared file (limit {MAX_SEGMENT})", path.display()),
            ));
        }
        Self::map_at(f.into(), at, len as usize)
    }

    /// Take the segment's part of its file for this process alone (an exclusive
    /// open-file-description lock on that byte range, released when the segment is dropped),
    /// waiting up to `wait` for another holder to let go: `false` if it did not. One part of a
    /// file serves one session at a time.
    pub fn lock(&self, wait: std::time::Duration) -> io::Result<bool> {
        let until = std::time::Instant::now() + wait;
        loop {
            // SAFETY: a zeroed flock is valid; the fields that matter are set below.
            let mut fl: libc::flock = unsafe { std::mem::zeroed() };
            fl.l_type = libc::F_WRLCK as _;
            fl.l_whence = libc::SEEK_SET as _;
            fl.l_start = self.at as libc::off_t;
            fl.l_len = self.len as libc::off_t;
            // SAFETY: a descriptor we own and a valid flock.
            if unsafe { libc::fcntl(self.fd.as_raw_fd(), libc::F_OFD_SETLK, &fl) } == 0 {
                return Ok(true);
            }
            let e = io::Error::last_os_error();
            if !matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) {
                return Err(e);
            }
            if std::time::Instant::now() >= until {
                return Ok(false);
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Whether the segment starts with `nonce`.
    pub fn starts_with(&self, nonce: &[u8; NONCE_LEN]) -> bool {
        let Some(p) = self.range(0, NONCE_LEN as u64) else { return false };
        let mut have = [0u8; NONCE_LEN];
        // SAFETY: `range` checked that the bytes lie in the mapping; they are copied out
        // before being compared, since the peer may be writing them.
        unsafe { std::ptr::copy_nonoverlapping(p, have.as_mut_ptr(), NONCE_LEN) };
        have == *nonce
    }

    /// Write `nonce` at the start of the segment.
    pub fn write_nonce(&self, nonce: &[u8; NONCE_LEN]) -> io::Result<()> {
        let p = self
            .range(0, NONCE_LEN as u64)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "shared segment too small"))?;
        // SAFETY: `range` checked that the bytes lie in the mapping.
        unsafe { std::ptr::copy_nonoverlapping(nonce.as_ptr(), p, NONCE_LEN) };
        Ok(())
    }

    fn map(fd: OwnedFd, len: usize) -> io::Result<Segment> {
        Self::map_at(fd, 0, len)
    }

    fn map_at(fd: OwnedFd, at: u64, len: usize) -> io::Result<Segment> {
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                at as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Segment { ptr: p.cast(), len, fd, at })
    }

    /// Where the mapping starts in its file.
    pub fn file_offset(&self) -> u64 {
        self.at
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The address of `[offset, offset+len)` if it lies inside the segment. Every access
    /// the server makes on a client's behalf goes through here.
    pub fn range(&self, offset: u64, len: u64) -> Option<*mut u8> {
        let end = offset.checked_add(len)?;
        (end <= self.len as u64).then(|| unsafe { self.ptr.add(offset as usize) })
    }

    /// The offset of `[p, p+len)` if it lies inside the segment.
    pub fn offset_of(&self, p: *const u8, len: usize) -> Option<u64> {
        let off = (p as usize).checked_sub(self.ptr as usize)?;
        let end = off.checked_add(len)?;
        (end <= self.len).then_some(off as u64)
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Send the [`OP_SHM`] frame with `fd` attached (before the handshake), announcing a
/// segment of `len` bytes. Unix sockets only: no other transport carries descriptors.
pub fn send_segment(stream: &Stream, fd: BorrowedFd<'_>, len: u64) -> io::Result<()> {
    if !matches!(stream, Stream::Unix(_)) {
        return Err(io::Error::new(io::ErrorKind::Unsupported, "a shared segment needs a unix socket"));
    }
    let args = postcard::to_allocvec(&len).map_err(io::Error::other)?;
    let h = Header::request(OP_SHM, 0, 0, true, args.len(), 0);
    let mut frame = zerocopy::IntoBytes::as_bytes(&h).to_vec();
    frame.extend_from_slice(&args);
    let sock = stream.as_raw_fd();
    // The descriptor rides on the first bytes; the rest (if the socket takes only part) is
    // ordinary data.
    let mut sent = crate::fdpass::send(sock, &frame, fd.as_raw_fd())?;
    while sent < frame.len() {
        sent += crate::addr::send(sock, &frame[sent..])?;
    }
    Ok(())
}

/// Send the [`OP_SHM_FILE`] frame (before the handshake, over any transport): the client
/// maps `len` bytes at `at` of a shared file, and they start with `nonce`.
pub fn send_segment_file(stream: &mut Stream, at: u64, len: u64, nonce: &[u8; NONCE_LEN]) -> io::Result<()> {
    let args = postcard::to_allocvec(&(at, len, nonce)).map_err(io::Error::other)?;
    crate::framing::write_frame(stream, &Header::request(OP_SHM_FILE, 0, 0, true, args.len(), 0), &args, &[])
}

/// The lock file by which the processes of one machine claim part `i` of the shared file
/// `file` among themselves (an exclusive `flock` on it, held for a session's life): in
/// /dev/shm, named after the file's path.
pub fn part_claim_path(file: &Path, i: u64) -> std::path::PathBuf {
    let name: String =
        file.to_string_lossy().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    std::path::PathBuf::from(format!("/dev/shm/vgpu-part-{name}-{i}.lock"))
}

/// The system's page size.
pub fn page_size() -> u64 {
    // SAFETY: no arguments.
    (unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).max(4096) as u64
}

/// A fresh random nonce (`getrandom`).
pub fn random_nonce() -> io::Result<[u8; NONCE_LEN]> {
    let mut k = [0u8; NONCE_LEN];
    // SAFETY: NONCE_LEN writable bytes.
    let n = unsafe { libc::getrandom(k.as_mut_ptr().cast(), k.len(), 0) };
    if n == k.len() as isize { Ok(k) } else { Err(io::Error::last_os_error()) }
}

/// The server's reading side of a connection: until [`FdReader::stop`], reads use
/// `recvmsg`, which keeps a descriptor that arrives with the bytes (plain `read` would
/// silently close it). Only the latest one is kept, so a client cannot make the server
/// hold many.
pub struct FdReader {
    stream: Stream,
    fd: Option<OwnedFd>,
    receiving: bool,
}

impl FdReader {
    pub fn new(stream: Stream) -> FdReader {
        let receiving = matches!(stream, Stream::Unix(_));
        FdReader { stream, fd: None, receiving }
    }

    /// The descriptor received so far, if any.
    pub fn take_fd(&mut self) -> Option<OwnedFd> {
        self.fd.take()
    }

    /// Plain reads from now on (descriptors sent later are closed by the kernel).
    pub fn stop(&mut self) {
        self.receiving = false;
        self.fd = None;
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (n, fd) = crate::fdpass::recv(self.stream.as_raw_fd(), buf)?;
        if fd.is_some() {
            self.fd = fd;
        }
        Ok(n)
    }
}

impl Read for FdReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.receiving { self.recv(buf) } else { self.stream.read(buf) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::{read_exact_into, read_header};
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_sealed_segment_travels_and_maps_to_the_same_pages() {
        let seg = Segment::create(1 << 20).unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        send_segment(&Stream::Unix(a), seg.fd(), seg.len() as u64).unwrap();
        let mut r = std::io::BufReader::new(FdReader::new(Stream::Unix(b)));
        let h = read_header(&mut r).unwrap();
        assert_eq!(h.op, OP_SHM);
        let mut args = Vec::new();
        read_exact_into(&mut r, &mut args, h.args_len as usize).unwrap();
        let len: u64 = postcard::from_bytes(&args).unwrap();
        let fd = r.get_mut().take_fd().expect("the descriptor arrives with the frame");
        let there = Segment::open(fd, len).unwrap();
        unsafe { *seg.range(4096, 1).unwrap() = 0x5a };
        assert_eq!(unsafe { *there.range(4096, 1).unwrap() }, 0x5a);
        assert!(there.range(len - 1, 1).is_some());
        assert!(there.range(len, 1).is_none());
        assert!(there.range(u64::MAX, 2).is_none(), "no overflow");
        assert_eq!(seg.offset_of(unsafe { seg.as_ptr().add(10) }, 5), Some(10));
        assert_eq!(seg.offset_of(unsafe { seg.as_ptr().add(seg.len() - 4) }, 5), None);
        assert_eq!(seg.offset_of(std::ptr::null(), 1), None);
    }

    #[test]
    fn a_shared_file_maps_on_both_sides_and_each_part_serves_one_holder() {
        use std::time::Duration;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vm1.shm");
        std::fs::File::create(&path).unwrap().set_len(2 << 20).unwrap();
        let guest = Segment::open_file(&path, 1 << 20, None).unwrap();
        assert_eq!((guest.len(), guest.file_offset()), (1 << 20, 1 << 20), "the rest of the file");
        let nonce = random_nonce().unwrap();
        assert_ne!(nonce, random_nonce().unwrap());
        guest.write_nonce(&nonce).unwrap();
        let host = Segment::open_file(&path, 1 << 20, Some(1 << 20)).unwrap();
        assert!(host.starts_with(&nonce));
        assert!(!host.starts_with(&[7u8; NONCE_LEN]));
        assert!(!Segment::open_file(&path, 0, Some(1 << 20)).unwrap().starts_with(&nonce), "another part");
        unsafe { *guest.range(4096, 1).unwrap() = 0x5a };
        assert_eq!(unsafe { *host.range(4096, 1).unwrap() }, 0x5a, "the same pages");

        assert!(host.lock(Duration::ZERO).unwrap());
        let same = Segment::open_file(&path, 1 << 20, Some(1 << 20)).unwrap();
        let t = std::time::Instant::now();
        assert!(!same.lock(Duration::from_millis(100)).unwrap(), "held by the first");
        assert!(t.elapsed() >= Duration::from_millis(100), "it waited");
        let first = Segment::open_file(&path, 0, Some(1 << 20)).unwrap();
        assert!(first.lock(Duration::ZERO).unwrap(), "the other part is free");
        let waiter = std::thread::spawn(move || same.lock(Duration::from_secs(5)).unwrap());
        std::thread::sleep(Duration::from_millis(50));
        drop(host);
        assert!(waiter.join().unwrap(), "released with its holder, taken by the one waiting");

        assert!(Segment::open_file(&path, 0, Some(4 << 20)).is_err(), "past the end");
        assert!(Segment::open_file(&path, 100, Some(4096)).is_err(), "not page-aligned");
        assert!(Segment::open_file(&path, 2 << 20, None).is_err(), "nothing left");
        assert!(Segment::open_file(dir.path(), 0, None).is_err(), "a directory");
        assert!(Segment::open_file(&dir.path().join("missing"), 0, None).is_err());
    }

    #[test]
    fn the_file_frame_carries_offset_length_and_nonce() {
        let (a, b) = UnixStream::pair().unwrap();
        let nonce = random_nonce().unwrap();
        send_segment_file(&mut Stream::Unix(a), 1 << 28, 1 << 30, &nonce).unwrap();
        let mut r = std::io::BufReader::new(Stream::Unix(b));
        let h = read_header(&mut r).unwrap();
        assert_eq!((h.op, h.bulk_len), (OP_SHM_FILE, 0));
        let mut args = Vec::new();
        read_exact_into(&mut r, &mut args, h.args_len as usize).unwrap();
        let got: (u64, u64, [u8; NONCE_LEN]) = postcard::from_bytes(&args).unwrap();
        assert_eq!(got, (1 << 28, 1 << 30, nonce));
    }

    #[test]
    fn unsealed_or_wrong_sized_segments_are_refused() {
        let seg = Segment::create(1 << 16).unwrap();
        let dup = |s: &Segment| s.fd().try_clone_to_owned().unwrap();
        assert!(Segment::open(dup(&seg), 1 << 17).is_err(), "size differs from the announcement");
        let raw = unsafe { libc::memfd_create(c"t".as_ptr(), libc::MFD_CLOEXEC) };
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        assert_eq!(unsafe { libc::ftruncate(raw, 4096) }, 0);
        let e = Segment::open(fd, 4096).unwrap_err();
        assert!(e.to_string().contains("sealed"), "{e}");
        let (p, _q) = UnixStream::pair().unwrap();
        assert!(Segment::open(OwnedFd::from(p), 4096).is_err(), "not a memory file");
    }
}
