use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

use crate::ring::RingStream;
use crate::tls::{TlsStream, TlsTarget};

/// Where a server listens or a client connects: `unix:/path`, `tcp://host:port`,
/// `tls://host:port` (TCP with TLS; a client fills in the CA and name from its
/// configuration), `vsock://cid:port`, `shm:/path` (the unix socket at `/path` plus a
/// shared-memory segment for copies, for a client on the server's host: `crate::Segment`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Unix(PathBuf),
    Shm(PathBuf),
    Tcp(String),
    Tls(TlsTarget),
    Vsock { cid: u32, port: u32 },
}

impl std::str::FromStr for Address {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some(p) = s.strip_prefix("unix:") {
            let p = p.strip_prefix("//").unwrap_or(p);
            if p.is_empty() {
                return Err(format!("{s}: empty socket path"));
            }
            return Ok(Address::Unix(PathBuf::from(p)));
        }
        if let Some(p) = s.strip_prefix("shm:") {
            let p = p.strip_prefix("//").unwrap_or(p);
            if p.is_empty() {
                return Err(format!("{s}: empty socket path"));
            }
            return Ok(Address::Shm(PathBuf::from(p)));
        }
        if let Some(hp) = s.strip_prefix("tcp://").or_else(|| s.strip_prefix("tcp:")) {
            if !hp.contains(':') {
                return Err(format!("{s}: expected tcp://host:port"));
            }
            return Ok(Address::Tcp(hp.to_string()));
        }
        if let Some(hp) = s.strip_prefix("tls://").or_else(|| s.strip_prefix("tls:")) {
            if !hp.contains(':') {
                return Err(format!("{s}: expected tls://host:port"));
            }
            return Ok(Address::Tls(TlsTarget { host_port: hp.to_string(), ca: None, name: None }));
        }
        if let Some(cp) = s.strip_prefix("vsock://").or_else(|| s.strip_prefix("vsock:")) {
            let (c, p) = cp.split_once(':').ok_or_else(|| format!("{s}: expected vsock://cid:port"))?;
            let cid = c.parse().map_err(|_| format!("{s}: bad vsock cid"))?;
            let port = p.parse().map_err(|_| format!("{s}: bad vsock port"))?;
            return Ok(Address::Vsock { cid, port });
        }
        if s.starts_with('/') {
            return Ok(Address::Unix(PathBuf::from(s)));
        }
        Err(format!("{s}: expected unix:/path, shm:/path, tcp://host:port, tls://host:port or vsock://cid:port"))
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Unix(p) => write!(f, "unix:{}", p.display()),
            Address::Shm(p) => write!(f, "shm:{}", p.display()),
            Address::Tcp(hp) => write!(f, "tcp://{hp}"),
            Address::Tls(t) => write!(f, "tls://{}", t.host_port),
            Address::Vsock { cid, port } => write!(f, "vsock://{cid}:{port}"),
        }
    }
}

impl Address {
    /// Whether a token is required on this kind of listener. TLS proves the server to the
    /// client, not the client to the server, so `tls://` needs one as `tcp://` does; every
    /// virtual machine of the host can connect to a `vsock://` listener, so it does too. Only
    /// unix sockets rely on file permissions.
    pub fn needs_token(&self) -> bool {
        matches!(self, Address::Tcp(_) | Address::Tls(_) | Address::Vsock { .. })
    }

    /// Whether this is an `shm:` address.
    pub fn is_shm(&self) -> bool {
        matches!(self, Address::Shm(_))
    }

    /// Whether the bytes cross a link whose bandwidth is the limit: a network (`tcp://`,
    /// `tls://`) or a virtual machine's boundary (`vsock://`, through the hypervisor's queues),
    /// rather than a socket within one host.
    pub fn crosses_link(&self) -> bool {
        matches!(self, Address::Tcp(_) | Address::Tls(_) | Address::Vsock { .. })
    }

    /// Whether this is a `tls://` address.
    pub fn is_tls(&self) -> bool {
        matches!(self, Address::Tls(_))
    }

    /// Connect; for `tls://` also complete the TLS handshake, each wait bounded by
    /// `timeout`.
    pub fn connect(&self, timeout: Duration) -> io::Result<Stream> {
        let s = self.connect_plain(timeout)?;
        big_buffers(s.as_raw_fd());
        Ok(s)
    }

    /// Connect, send `clear` before anything else (on `tls://` before the TLS handshake,
    /// in clear: what a listener routes the connection by, a lane's join without its key),
    /// then as [`Address::connect`].
    pub fn connect_routed(&self, timeout: Duration, clear: &[u8]) -> io::Result<Stream> {
        let Address::Tls(t) = self else {
            let mut s = self.connect(timeout)?;
            s.set_timeouts(None, Some(timeout))?;
            s.write_all(clear)?;
            return Ok(s);
        };
        let tcp = tcp_connect(&t.host_port, timeout)?;
        big_buffers(tcp.as_raw_fd());
        tcp.set_write_timeout(Some(timeout))?;
        crate::tls::send_all(tcp.as_raw_fd(), clear)?;
        crate::tls::connect(t, tcp, timeout).map(Stream::Tls)
    }

    fn connect_plain(&self, timeout: Duration) -> io::Result<Stream> {
        match self {
            Address::Unix(p) | Address::Shm(p) => Ok(Stream::Unix(UnixStream::connect(p)?)),
            Address::Tcp(hp) => tcp_connect(hp, timeout).map(Stream::Tcp),
            Address::Tls(t) => {
                let s = tcp_connect(&t.host_port, timeout)?;
                crate::tls::connect(t, s, timeout).map(Stream::Tls)
            }
            Address::Vsock { cid, port } => vsock_connect(*cid, *port).map(Stream::Unix),
        }
    }

    pub fn bind(&self) -> io::Result<Listener> {
        match self {
            // A server's unix listener takes shared segments from any client that sends one.
            Address::Unix(p) | Address::Shm(p) => {
                if let Some(dir) = p.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                // A stale socket file from a previous server would make bind fail.
                if p.exists() && UnixStream::connect(p).is_err() {
                    std::fs::remove_file(p)?;
                }
                Ok(Listener::Unix(UnixListener::bind(p)?))
            }
            Address::Tcp(hp) => Ok(Listener::Tcp(TcpListener::bind(hp.as_str())?)),
            // A plain TCP listener: each worker does the TLS handshake on its own
            // connection (`crate::TlsServer::accept`).
            Address::Tls(t) => Ok(Listener::Tcp(TcpListener::bind(t.host_port.as_str())?)),
            Address::Vsock { cid, port } => vsock_listen(*cid, *port).map(Listener::Unix),
        }
    }
}

fn tcp_connect(hp: &str, timeout: Duration) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{hp}: no address"));
    for sa in hp.to_socket_addrs()? {
        match TcpStream::connect_timeout(&sa, timeout) {
            Ok(s) => {
                s.set_nodelay(true)?;
                set_keepalive(s.as_raw_fd());
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn set_keepalive(fd: RawFd) {
    // Detect a vanished peer host within seconds, not hours.
    let on: libc::c_int = 1;
    let idle: libc::c_int = 2;
    let intvl: libc::c_int = 1;
    let cnt: libc::c_int = 3;
    let sz = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    unsafe {
        libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, (&on as *const libc::c_int).cast(), sz);
        libc::setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, (&idle as *const libc::c_int).cast(), sz);
        libc::setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, (&intvl as *const libc::c_int).cast(), sz);
        libc::setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT, (&cnt as *const libc::c_int).cast(), sz);
    }
}

fn vsock_addr(cid: u32, port: u32) -> libc::sockaddr_vm {
    let mut a: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    a.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    a.svm_cid = cid;
    a.svm_port = port;
    a
}

/// A vsock stream socket with large buffers (set before connect or listen: a listener's
/// connections inherit them, and the size is the credit each side grants the other).
fn vsock_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) returns a new descriptor that we own, or -1.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just created, owned by nobody else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    vsock_buffers(fd);
    Ok(owned)
}

/// vsock's own buffer options (`linux/vm_sockets.h`, not in the libc crate). A vsock stream
/// ignores SO_SNDBUF/SO_RCVBUF: its buffer size is the credit it grants its peer, 256 KiB
/// by default (and at most, unless the maximum is raised first), so a sender of a
/// multi-MiB copy would stop every 256 KiB for the receiver's credit update.
const SO_VM_SOCKETS_BUFFER_SIZE: libc::c_int = 0;
const SO_VM_SOCKETS_BUFFER_MAX_SIZE: libc::c_int = 2;

/// The same 4 MiB as [`big_buffers`] gives unix and TCP sockets; failing is harmless.
fn vsock_buffers(fd: RawFd) {
    let size: u64 = BIG_BUFFER as u64;
    for opt in [SO_VM_SOCKETS_BUFFER_MAX_SIZE, SO_VM_SOCKETS_BUFFER_SIZE] {
        // SAFETY: setsockopt with a valid u64 option on a socket this process owns.
        unsafe {
            libc::setsockopt(fd, libc::AF_VSOCK, opt, (&size as *const u64).cast(), size_of::<u64>() as _);
        }
    }
}

// vsock streams behave like unix stream sockets for read/write, so they are carried as
// `UnixStream`/`UnixListener` over the raw fd.
fn vsock_connect(cid: u32, port: u32) -> io::Result<UnixStream> {
    let owned = vsock_socket()?;
    let fd = owned.as_raw_fd();
    unsafe {
        let a = vsock_addr(cid, port);
        if libc::connect(fd, (&a as *const libc::sockaddr_vm).cast(), std::mem::size_of_val(&a) as u32) < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(UnixStream::from_raw_fd(owned.into_raw_fd()))
    }
}

fn vsock_listen(cid: u32, port: u32) -> io::Result<UnixListener> {
    let owned = vsock_socket()?;
    let fd = owned.as_raw_fd();
    unsafe {
        let a = vsock_addr(cid, port);
        if libc::bind(fd, (&a as *const libc::sockaddr_vm).cast(), std::mem::size_of_val(&a) as u32) < 0
            || libc::listen(fd, 128) < 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(UnixListener::from_raw_fd(owned.into_raw_fd()))
    }
}

/// A connected byte stream of any transport.
#[derive(Debug)]
pub enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
    /// A TLS connection, client's or server's.
    Tls(TlsStream),
    /// A `shm:` session's frames through rings in its shared segment, its socket kept as
    /// the doorbell (`crate::ring`).
    Ring(RingStream),
}

impl Stream {
    /// Poll for the next bytes for up to `budget` before the caller's read blocks (see
    /// [`crate::wait_readable`]); at once where they may already be here: decrypted or read
    /// ahead by TLS, or coming through memory (a ring polls that itself).
    pub fn wait_readable(&self, budget: Duration) {
        if self.reads_wait_on_socket() {
            crate::wait_readable(self.as_raw_fd(), budget);
        }
    }

    /// Whether bytes can be read now, waiting for them up to `timeout` (a TLS stream
    /// with bytes already decrypted, or a ring, says yes at once: reading it does not block
    /// on the socket, or polls its ring itself).
    pub fn poll_readable(&self, timeout: Duration) -> bool {
        !self.reads_wait_on_socket() || crate::spin::readable_within(self.as_raw_fd(), timeout)
    }

    /// Whether the next read waits for the socket: not where TLS has bytes decrypted or read
    /// ahead, nor through a ring.
    fn reads_wait_on_socket(&self) -> bool {
        match self {
            Stream::Unix(_) | Stream::Tcp(_) => true,
            Stream::Tls(s) => !s.has_buffered(),
            Stream::Ring(_) => false,
        }
    }

    /// End the stream in an orderly way where the transport has one (TLS says goodbye with
    /// `close_notify`, so the peer can tell an end from a cut), else shut it.
    pub fn close(&self) {
        match self {
            Stream::Tls(s) => s.close(),
            _ => self.shutdown(),
        }
    }

    /// Socket timeouts; on a TLS stream they bound each wait for the socket underneath.
    pub fn set_timeouts(&self, read: Option<Duration>, write: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => {
                s.set_read_timeout(read)?;
                s.set_write_timeout(write)
            }
            Stream::Tcp(s) => {
                s.set_read_timeout(read)?;
                s.set_write_timeout(write)
            }
            Stream::Tls(s) => {
                s.tcp().set_read_timeout(read)?;
                s.tcp().set_write_timeout(write)
            }
            Stream::Ring(r) => {
                r.set_timeouts(read, write);
                Ok(())
            }
        }
    }

    /// A second handle on the same connection (for TLS, on the same TLS state).
    pub fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Ring(r) => Stream::Ring(r.clone()),
            Stream::Tls(s) => Stream::Tls(s.clone()),
        })
    }

    /// A descriptor of its own on this stream's socket, where that is a plain one (unix,
    /// vsock or TCP; not TLS, not rings): what frame rings ring their doorbell on.
    pub fn plain_socket(&self) -> io::Result<Option<OwnedFd>> {
        Ok(match self {
            Stream::Unix(s) => Some(s.try_clone()?.into()),
            Stream::Tcp(s) => Some(s.try_clone()?.into()),
            Stream::Tls(_) | Stream::Ring(_) => None,
        })
    }

    /// Whether this is TCP (with or without TLS) to this host's own loopback address: bytes
    /// that cross no link.
    pub fn peer_is_loopback(&self) -> bool {
        let tcp = match self {
            Stream::Tcp(s) => s,
            Stream::Tls(t) => t.tcp(),
            _ => return false,
        };
        tcp.peer_addr().is_ok_and(|a| match a.ip() {
            std::net::IpAddr::V4(ip) => ip.is_loopback(),
            std::net::IpAddr::V6(ip) => ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
        })
    }

    /// The kernel's latest estimate of what this TCP connection delivers, in bytes a second
    /// (`tcpi_delivery_rate`: bytes acknowledged over the time they took), and whether the
    /// sender was what limited it (`tcpi_delivery_rate_app_limited`: too little was sent to
    /// fill the link, so the rate says little of the link). None before an estimate, or for
    /// another transport.
    pub fn delivery_rate(&self) -> Option<(u64, bool)> {
        let tcp = match self {
            Stream::Tcp(s) => s,
            Stream::Tls(t) => t.tcp(),
            _ => return None,
        };
        // The kernel's struct as bytes: its app-limited flag is a bit field libc leaves out
        // (bit 0 of the byte after the window scales).
        let mut raw = [0u64; 64];
        let mut len = std::mem::size_of_val(&raw) as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into the buffer.
        let r = unsafe {
            libc::getsockopt(tcp.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_INFO, raw.as_mut_ptr().cast(), &mut len)
        };
        let bytes: &[u8] = zerocopy::IntoBytes::as_bytes(&raw[..]);
        let rate_at = std::mem::offset_of!(libc::tcp_info, tcpi_delivery_rate);
        let flags_at = std::mem::offset_of!(libc::tcp_info, tcpi_snd_rcv_wscale) + 1;
        if r != 0 || (len as usize) < rate_at + 8 {
            return None;
        }
        let rate = u64::from_ne_bytes(bytes[rate_at..rate_at + 8].try_into().ok()?);
        (rate > 0).then_some((rate, bytes[flags_at] & 1 == 1))
    }

    /// Whether TCP carries this stream (with or without TLS).
    pub fn is_tcp(&self) -> bool {
        matches!(self, Stream::Tcp(_) | Stream::Tls(_))
    }

    /// Take ownership of an inherited socket (the server's worker processes get theirs so).
    ///
    /// # Safety
    /// `fd` must be an open stream socket owned by nobody else.
    pub unsafe fn from_fd(fd: RawFd) -> Stream {
        let domain = socket_domain(fd);
        unsafe {
            if domain == Some(libc::AF_INET) || domain == Some(libc::AF_INET6) {
                let s = TcpStream::from_raw_fd(fd);
                let _ = s.set_nodelay(true);
                set_keepalive(fd);
                Stream::Tcp(s)
            } else {
                Stream::Unix(UnixStream::from_raw_fd(fd))
            }
        }
    }

    pub fn shutdown(&self) {
        let _ = match self {
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Both),
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
            Stream::Tls(s) => s.tcp().shutdown(std::net::Shutdown::Both),
            Stream::Ring(r) => {
                r.shutdown();
                Ok(())
            }
        };
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Stream::Unix(s) => s.as_raw_fd(),
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Tls(s) => s.tcp().as_raw_fd(),
            Stream::Ring(r) => r.as_raw_fd(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
            Stream::Ring(r) => r.read(buf),
        }
    }
}

// Writes go through send(2)/sendmsg(2) with MSG_NOSIGNAL rather than write(2)/writev(2):
// when the server has gone, the client (which lives in someone else's process, whose
// SIGPIPE disposition is not ours to change) must get EPIPE, an error it reports, and not
// a SIGPIPE that kills the application. Timeouts (SO_SNDTIMEO) apply as before.
impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tls(s) => s.write(buf),
            Stream::Ring(r) => r.write(buf),
            _ => send(self.as_raw_fd(), buf),
        }
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Tls(s) => s.write_vectored(bufs),
            Stream::Ring(r) => r.write_vectored(bufs),
            _ => send_vectored(self.as_raw_fd(), bufs, 0),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        // Nothing is buffered: a TLS stream writes out its records in every write.
        Ok(())
    }
}

/// `send(2)` with MSG_NOSIGNAL (see above), for every socket writer of this crate.
pub(crate) fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}

/// The address family of socket `fd` (`AF_UNIX`, `AF_INET`, `AF_VSOCK`, ...); `None` if it
/// is not a socket.
pub fn socket_domain(fd: RawFd) -> Option<libc::c_int> {
    let mut d: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt into a local int of the size given.
    let r = unsafe {
        libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_DOMAIN, (&mut d as *mut libc::c_int).cast(), &mut len)
    };
    (r == 0).then_some(d)
}

/// `sendmsg(2)` with MSG_NOSIGNAL and `flags`: a gathered write.
pub(crate) fn send_vectored(fd: RawFd, bufs: &[io::IoSlice<'_>], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: `IoSlice` is ABI-compatible with `iovec` on unix; sendmsg only reads them.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = bufs.len().min(1024) as _;
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL | flags) };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}

pub enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

impl Listener {
    pub fn accept(&self) -> io::Result<Stream> {
        let s = self.accept_plain()?;
        big_buffers(s.as_raw_fd());
        Ok(s)
    }

    fn accept_plain(&self) -> io::Result<Stream> {
        match self {
            Listener::Unix(l) => l.accept().map(|(s, _)| Stream::Unix(s)),
            Listener::Tcp(l) => l.accept().map(|(s, _)| {
                let _ = s.set_nodelay(true);
                set_keepalive(s.as_raw_fd());
                Stream::Tcp(s)
            }),
        }
    }

    /// The bound TCP port (useful with `tcp://127.0.0.1:0`).
    pub fn local_port(&self) -> Option<u16> {
        match self {
            Listener::Tcp(l) => l.local_addr().ok().map(|a| a.port()),
            Listener::Unix(_) => None,
        }
    }
}

const BIG_BUFFER: libc::c_int = 4 << 20;

/// Socket buffers of a few MiB: bulk copies then move in large steps, with a fraction of
/// the wake-ups the default (about 200 KiB) costs. The kernel caps the size at its
/// `net.core.[wr]mem_max`; failing is harmless.
fn big_buffers(fd: RawFd) {
    let size: libc::c_int = BIG_BUFFER;
    for opt in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
        // SAFETY: setsockopt with a valid int option on a socket this process owns.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as _,
            )
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// vsock sockets get their own buffer option set (where the kernel has vsock at all).
    #[test]
    fn vsock_sockets_get_big_buffers() {
        let fd = match vsock_socket() {
            Ok(fd) => fd,
            Err(e) => return eprintln!("skipped: no vsock here ({e})"),
        };
        let (mut v, mut len) = (0u64, size_of::<u64>() as libc::socklen_t);
        // SAFETY: getsockopt into a u64 on our socket.
        let r = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::AF_VSOCK,
                SO_VM_SOCKETS_BUFFER_SIZE,
                (&mut v as *mut u64).cast(),
                &mut len,
            )
        };
        assert_eq!(r, 0, "{}", io::Error::last_os_error());
        assert_eq!(v, BIG_BUFFER as u64);
    }

    #[test]
    fn tcp_connections_have_a_delivery_rate_estimate() {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut tx = Stream::Tcp(std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap());
        let mut rx = l.accept().unwrap().0;
        let reader = std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 20];
            let mut n = 0;
            while n < 16 << 20 {
                n += rx.read(&mut buf).unwrap();
            }
        });
        let block = vec![7u8; 1 << 20];
        for _ in 0..16 {
            tx.write_all(&block).unwrap();
        }
        reader.join().unwrap();
        let (rate, _) = tx.delivery_rate().expect("an estimate after 16 MiB");
        assert!(rate > 1 << 20, "{rate} B/s over loopback");
        let (a, _) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(Stream::Unix(a).delivery_rate(), None);
    }

    #[test]
    fn parse_addresses() {
        assert_eq!("unix:/run/vgpu/vgpu.sock".parse::<Address>().unwrap(), Address::Unix("/run/vgpu/vgpu.sock".into()));
        assert_eq!("unix:///tmp/x".parse::<Address>().unwrap(), Address::Unix("/tmp/x".into()));
        assert_eq!("tcp://10.0.0.1:7070".parse::<Address>().unwrap(), Address::Tcp("10.0.0.1:7070".into()));
        assert_eq!("vsock://2:5000".parse::<Address>().unwrap(), Address::Vsock { cid: 2, port: 5000 });
        assert!("vsock://2:5000".parse::<Address>().unwrap().needs_token(), "any VM of the host may connect");
        assert!(!"unix:/x".parse::<Address>().unwrap().needs_token());
        assert!("tcp://nohost".parse::<Address>().is_err());
        assert!("http://x".parse::<Address>().is_err());
        let shm = "shm:/run/vgpu/vgpu.sock".parse::<Address>().unwrap();
        assert_eq!(shm, Address::Shm("/run/vgpu/vgpu.sock".into()));
        assert_eq!(shm.to_string(), "shm:/run/vgpu/vgpu.sock");
        assert!(shm.is_shm() && !shm.needs_token());
        assert!("shm:".parse::<Address>().is_err());
        assert_eq!("tcp://h:1".parse::<Address>().unwrap().to_string(), "tcp://h:1");
        let tls = "tls://gpu.example:7443".parse::<Address>().unwrap();
        assert_eq!(tls, Address::Tls(TlsTarget { host_port: "gpu.example:7443".into(), ca: None, name: None }));
        assert_eq!(tls.to_string(), "tls://gpu.example:7443");
        assert!(tls.needs_token() && tls.is_tls());
        assert!("tls://nohost".parse::<Address>().is_err());
        // Where copies go packed by default: across a link, not within the host.
        let link = |a: &str| a.parse::<Address>().unwrap().crosses_link();
        assert!(link("tcp://h:1") && link("tls://h:1") && link("vsock://2:5000"));
        assert!(!link("unix:/x") && !link("shm:/x"));
    }
}
