//! TLS on TCP (`tls://host:port`): rustls with its `ring` provider, TLS 1.3 only (both ends
//! are vgpu). The server proves who it is with a certificate; the client checks it against
//! a CA file it is given. The token is still required on top: TLS authenticates the server
//! to the client, the token the client to the server.
//!
//! Both sides are a [`TlsStream`] driven from the callers' threads, as the other streams
//! are: no helper thread, every wait bounded by the socket's timeouts. Its handles share
//! one connection, so that one thread reads while others write, and a session's lanes
//! (more connections for bulk bytes, each its own TLS connection) work as over plain TCP.
//! The server side runs in each worker process (TLS state cannot cross `exec`): the
//! listener hands the worker the TCP connection, and the worker does the handshake.

use crate::addr::{Stream, send, send_vectored};
use parking_lot::Mutex;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where a `tls://` client connects and how it checks the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsTarget {
    /// `host:port` as written after `tls://`.
    pub host_port: String,
    /// PEM file of the CA that signed the server's certificate (or of that certificate
    /// itself, if self-signed). Required to connect: there is no system trust store here.
    pub ca: Option<PathBuf>,
    /// The name the server's certificate must carry; `None`: the host part.
    pub name: Option<String>,
}

impl TlsTarget {
    /// The name the server's certificate is checked against.
    pub fn server_name(&self) -> &str {
        if let Some(n) = &self.name {
            return n;
        }
        let host = self.host_port.rsplit_once(':').map_or(self.host_port.as_str(), |(h, _)| h);
        host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host)
    }
}

/// A failure of TLS itself (a certificate that does not check out, a peer that does not
/// speak TLS) as opposed to the network, so that callers such as `vgpu doctor` can tell
/// them apart ([`is_tls_error`]).
#[derive(Debug)]
pub struct TlsError(pub String);

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

/// Whether `e` came from TLS (see [`TlsError`]).
pub fn is_tls_error(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<TlsError>())
}

fn tls_error(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, TlsError(msg))
}

// An explicit provider rather than rustls's process-wide default: the client lives in
// someone else's process, which may use rustls itself.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// One TLS connection, client or server, and the socket under it, shared by every handle on
/// it ([`TlsStream`]): one thread reads while others write, as on a plain socket.
///
/// Three locks, so that neither direction waits for the other's socket: `rx` is held by the
/// one reader (while it waits for the socket, too), `tx` by the one writer (while its records
/// go out, so that a frame's records are not interleaved with another writer's), and `conn`
/// only while rustls itself works: sealing or opening a record, or handing sealed records to
/// the socket without waiting (`send(2)` with MSG_DONTWAIT, straight from rustls's buffers;
/// a full socket is waited for without the lock). Whoever takes more than one takes them in
/// that order: `rx` or `tx`, then `conn`.
struct Shared {
    conn: Mutex<rustls::Connection>,
    rx: Mutex<Inbox>,
    tx: Mutex<()>,
    tcp: TcpStream,
}

/// Bytes read from the socket that rustls has not taken yet (it takes 4 KiB at a time; a
/// system call per 4 KiB would cost more than the decryption of a large copy).
struct Inbox {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// The socket reached its end (told to rustls once).
    eof: bool,
}

/// How much plaintext one write seals before its records go out: rustls's default of 64 KiB
/// would make a 4 MiB copy 64 rounds of locks and system calls.
const SEAL_MAX: usize = 256 << 10;

/// A handle on a TLS connection (client or server). Handles made by `Clone` share it: one
/// thread may read while others write. Every wait is bounded by the socket's timeouts.
#[derive(Clone)]
pub struct TlsStream(Arc<Shared>);

impl std::fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream").field("tcp", &self.0.tcp).finish_non_exhaustive()
    }
}

impl TlsStream {
    fn new(mut conn: rustls::Connection, tcp: TcpStream) -> TlsStream {
        conn.set_buffer_limit(Some(SEAL_MAX));
        let inbox = Inbox { buf: vec![0; 64 << 10].into_boxed_slice(), start: 0, end: 0, eof: false };
        TlsStream(Arc::new(Shared { conn: Mutex::new(conn), rx: Mutex::new(inbox), tx: Mutex::new(()), tcp }))
    }

    /// The TCP socket underneath (timeouts, shutdown, its fd).
    pub fn tcp(&self) -> &TcpStream {
        &self.0.tcp
    }

    /// Whether bytes are waiting that polling the socket would not show: read from it and
    /// not yet decrypted, or decrypted and not yet read. `true` while another thread reads.
    pub fn has_buffered(&self) -> bool {
        let Some(rx) = self.0.rx.try_lock() else { return true };
        if rx.start < rx.end {
            return true;
        }
        drop(rx);
        self.0.conn.lock().process_new_packets().map_or(true, |s| s.plaintext_bytes_to_read() > 0)
    }

    /// Send every record rustls has sealed (the caller holds `tx`). The socket takes them
    /// from rustls's own buffers while it has room; when it is full the wait, bounded by
    /// the socket's write timeout, happens without the TLS state's lock.
    fn send_sealed(&self) -> io::Result<()> {
        let fd = self.0.tcp.as_raw_fd();
        loop {
            let mut c = self.0.conn.lock();
            if !c.wants_write() {
                return Ok(());
            }
            match c.write_tls(&mut NoWait(fd)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    drop(c);
                    let limit = self.0.tcp.write_timeout()?.unwrap_or(Duration::from_secs(3600));
                    if !wait_writable(fd, limit) {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, "the peer stopped reading"));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Roll this side's keys now (rustls does so by itself before a key has sealed too
    /// much): for the tests of the key update's round through the locks.
    #[cfg(test)]
    fn refresh_keys(&self) -> io::Result<()> {
        let _tx = self.0.tx.lock();
        self.0.conn.lock().refresh_traffic_keys().map_err(|e| tls_error(e.to_string()))?;
        self.send_sealed()
    }

    /// [`TlsStream::send_sealed`] under the send lock.
    fn send_sealed_locked(&self) -> io::Result<()> {
        let _tx = self.0.tx.lock();
        self.send_sealed()
    }

    /// The alert rustls sealed for a failure of the reading side, sent if no writer is busy
    /// (the connection is over either way). Other records the reading side makes (an
    /// answer to a key update) wait for the next write, which sends everything sealed: a
    /// reader that sent could block on a peer that is itself blocked writing to it.
    fn send_alert_if_free(&self) {
        if let Some(_tx) = self.0.tx.try_lock() {
            let _ = self.send_sealed();
        }
    }

    /// Say goodbye in TLS (`close_notify`), then stop writing. For the end of a session:
    /// the peer learns it was not cut off.
    pub fn close(&self) {
        let _tx = self.0.tx.lock();
        self.0.conn.lock().send_close_notify();
        let _ = self.send_sealed();
        let _ = self.0.tcp.shutdown(Shutdown::Write);
    }

    /// Run the handshake to its end, within `deadline`. A rustls error becomes `on_tls`'s
    /// error, after the alert rustls queued has been sent (the peer learns why).
    fn handshake(&self, deadline: Instant, on_tls: &dyn Fn(rustls::Error) -> io::Error) -> io::Result<()> {
        loop {
            self.send_sealed_locked()?;
            if !self.0.conn.lock().is_handshaking() {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            self.0.tcp.set_read_timeout(Some(left))?;
            let mut rx = self.0.rx.lock();
            let n = read_socket(&self.0.tcp, &mut rx.buf)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            (rx.start, rx.end) = (0, n);
            // Only the handshake's records: what follows (the peer's first frame, sent right
            // behind its last handshake message) stays for the reader.
            let mut c = self.0.conn.lock();
            while rx.start < rx.end && c.is_handshaking() {
                let mut data = &rx.buf[rx.start..rx.end];
                c.read_tls(&mut data)?;
                rx.start = rx.end - data.len();
                if let Err(e) = c.process_new_packets() {
                    drop(c);
                    drop(rx);
                    let _ = self.send_sealed_locked();
                    return Err(on_tls(e));
                }
            }
        }
    }
}

/// The socket as rustls's sink for sealed records: gathered `sendmsg(2)` that never waits
/// (and never raises SIGPIPE); a full socket is `WouldBlock`.
struct NoWait(RawFd);

impl Write for NoWait {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[io::IoSlice::new(buf)])
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        send_vectored(self.0, bufs, libc::MSG_DONTWAIT)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Wait until `fd` can take more bytes (or is in error), at most `limit`.
fn wait_writable(fd: RawFd, limit: Duration) -> bool {
    let mut p = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
    let ms = limit.as_millis().min(i32::MAX as u128) as i32;
    loop {
        // SAFETY: one valid pollfd.
        match unsafe { libc::poll(&mut p, 1, ms) } {
            n if n > 0 => return true,
            0 => return false,
            _ if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
            _ => return true,
        }
    }
}

/// `read(2)` on the socket, again after a signal.
fn read_socket(tcp: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match (&*tcp).read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            r => return r,
        }
    }
}

impl Read for TlsStream {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let mut rx = self.0.rx.lock();
        loop {
            let mut c = self.0.conn.lock();
            // Decrypt what has been read until some plaintext comes out.
            let got = loop {
                match c.reader().read(out) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    r => break Some(r),
                }
                if rx.start == rx.end {
                    if !rx.eof {
                        break None;
                    }
                    // The socket's end, told to rustls: the reader now says whether the
                    // peer closed properly (end of file) or cut the connection.
                    c.read_tls(&mut io::empty())?;
                    let _ = c.process_new_packets();
                    break Some(match c.reader().read(out) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(io::ErrorKind::UnexpectedEof.into()),
                        r => r,
                    });
                }
                let mut data = &rx.buf[rx.start..rx.end];
                c.read_tls(&mut data)?;
                rx.start = rx.end - data.len();
                if let Err(e) = c.process_new_packets() {
                    drop(c);
                    self.send_alert_if_free();
                    return Err(tls_error(format!("TLS: {e}")));
                }
            };
            drop(c);
            if let Some(r) = got {
                return r;
            }
            // Nothing left to decrypt: wait for the socket, without the TLS state's lock
            // (writers go on meanwhile).
            let n = read_socket(&self.0.tcp, &mut rx.buf)?;
            (rx.start, rx.end, rx.eof) = (0, n, n == 0);
        }
    }
}

// Every write sends its records before returning, so nothing waits in rustls for a flush
// that the framing code never calls.
impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[io::IoSlice::new(buf)])
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let _tx = self.0.tx.lock();
        let n = self.0.conn.lock().writer().write_vectored(bufs)?;
        self.send_sealed()?;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn client_config(ca: &Path) -> io::Result<Arc<ClientConfig>> {
    let bad = |e: &dyn std::fmt::Display| tls_error(format!("CA file {}: {e}", ca.display()));
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| bad(&e))? {
        roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
    }
    if roots.is_empty() {
        return Err(bad(&"no certificate in it"));
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| bad(&e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // A process makes few connections per server (the session's and its lanes), each
    // fully checked: nothing to resume.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// The TLS handshake on a connected socket, within `timeout` in all.
pub(crate) fn connect(t: &TlsTarget, tcp: TcpStream, timeout: Duration) -> io::Result<TlsStream> {
    let Some(ca) = &t.ca else {
        return Err(tls_error(
            "no CA certificate to check the server's against: set VGPU_TLS_CA (or tls_ca in the client's config file)"
                .to_string(),
        ));
    };
    let name = t.server_name();
    let server_name = ServerName::try_from(name.to_string())
        .map_err(|_| tls_error(format!("{name:?} is not a host name or IP address to check a certificate against")))?;
    let conn = ClientConnection::new(client_config(ca)?, server_name).map_err(|e| tls_error(e.to_string()))?;
    tcp.set_write_timeout(Some(timeout))?;
    let s = TlsStream::new(rustls::Connection::Client(conn), tcp);
    let on_tls = |e: rustls::Error| {
        let hint = match e {
            rustls::Error::InvalidCertificate(_) => format!(
                " (the CA file {} must hold the certificate that signed the server's, which must name {name}; VGPU_TLS_NAME sets another name)",
                ca.display()
            ),
            _ => String::new(),
        };
        tls_error(format!("TLS handshake with {name}: {e}{hint}"))
    };
    // A total deadline, not one per read: a server trickling its handshake cannot hold the
    // application past it.
    s.handshake(Instant::now() + timeout, &on_tls).map_err(|e| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no TLS handshake from the server within {:.1}s", timeout.as_secs_f32()),
        ),
        // A plain tcp:// listener reads the ClientHello as a bad frame and hangs up.
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => {
            tls_error("the server hung up during the TLS handshake (is its listener tls://, not tcp://?)".to_string())
        }
        _ => e,
    })?;
    Ok(s)
}

/// A `tls://` listener's certificate chain and key. `vgpu serve` loads them once to check
/// them before it listens; each worker loads them again for its connections.
#[derive(Clone)]
pub struct TlsServer(Arc<ServerConfig>);

impl std::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsServer")
    }
}

impl TlsServer {
    /// Load a certificate chain (server certificate first) and a private key, both PEM.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<TlsServer, String> {
        let bad_cert = |e: &dyn std::fmt::Display| format!("TLS certificate {}: {e}", cert.display());
        let certs = CertificateDer::pem_file_iter(cert)
            .map_err(|e| bad_cert(&e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad_cert(&e))?;
        if certs.is_empty() {
            return Err(bad_cert(&"no certificate in it"));
        }
        let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("TLS key {}: {e}", key.display()))?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(certs, key_der)
            .map_err(|e| format!("TLS certificate {} with key {}: {e}", cert.display(), key.display()))?;
        // Every session is a fresh worker process: a resumption ticket could never be
        // honoured, so none is issued or stored.
        config.send_tls13_tickets = 0;
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        Ok(TlsServer(Arc::new(config)))
    }

    /// Take over an accepted TCP connection: the TLS handshake, within `timeout`. A vgpu
    /// client that connected without TLS (`tcp://`) is told so in its own protocol.
    pub fn accept(&self, tcp: Stream, timeout: Duration) -> io::Result<Stream> {
        let Stream::Tcp(tcp) = tcp else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "TLS is served on TCP connections only"));
        };
        // A client that stops reading cannot stall the session forever.
        tcp.set_write_timeout(Some(Duration::from_secs(30)))?;
        tcp.set_read_timeout(Some(timeout))?;
        let mut first = [0u8; protocol::frame::HEADER_LEN];
        // SAFETY: a peek into a local buffer of its length.
        let n = unsafe { libc::recv(tcp.as_raw_fd(), first.as_mut_ptr().cast(), first.len(), libc::MSG_PEEK) };
        if n > 0
            && let Some(refusal) = plain_hello_refusal(&first[..n as usize])
        {
            let _ = send_all(tcp.as_raw_fd(), &refusal);
            return Err(tls_error("a client without TLS (tcp:// instead of tls://) was refused".into()));
        }
        let conn = ServerConnection::new(self.0.clone()).map_err(io::Error::other)?;
        let s = TlsStream::new(rustls::Connection::Server(conn), tcp);
        s.handshake(Instant::now() + timeout, &|e| tls_error(format!("TLS: {e}")))?;
        // From here the session sets its own timeouts.
        s.tcp().set_read_timeout(None)?;
        Ok(Stream::Tls(s))
    }
}

/// What a server tells a client that sent a vgpu handshake in clear text to a TLS
/// listener.
pub const PLAIN_REFUSAL: &str =
    "this listener speaks TLS: connect with tls://HOST:PORT and the server's CA certificate (VGPU_TLS_CA)";

/// A handshake refusal in clear text, if `first` (the first bytes from a client) is a vgpu
/// handshake frame rather than a TLS record.
fn plain_hello_refusal(first: &[u8]) -> Option<Vec<u8>> {
    use protocol::frame::{HEADER_LEN, Header, OP_HELLO};
    let h = Header::decode(first.get(..HEADER_LEN)?).ok()?;
    if h.op != OP_HELLO {
        return None;
    }
    let body = postcard::to_allocvec(&protocol::hello::Welcome::Refused { reason: PLAIN_REFUSAL.into() }).ok()?;
    let mut frame = zerocopy::IntoBytes::as_bytes(&Header::reply(OP_HELLO, h.seq, 0, body.len(), 0)).to_vec();
    frame.extend_from_slice(&body);
    Some(frame)
}

/// Write all of `buf` (MSG_NOSIGNAL: a peer that has gone is an error here, not a signal).
pub(crate) fn send_all(fd: std::os::fd::RawFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match send(fd, buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Address;
    use std::net::TcpListener;

    /// A self-signed certificate for `names`, written as PEM files: (cert, key).
    fn cert(dir: &Path, tag: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let ck = rcgen::generate_simple_self_signed(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        let (c, k) = (dir.join(format!("{tag}.crt")), dir.join(format!("{tag}.key")));
        std::fs::write(&c, ck.cert.pem()).unwrap();
        std::fs::write(&k, ck.signing_key.serialize_pem()).unwrap();
        (c, k)
    }

    /// A one-connection TLS server whose session echoes what it reads; returns its port
    /// and what went wrong on its side, if anything (a hang-up is not).
    fn echo_server(server: TlsServer) -> (u16, std::thread::JoinHandle<Option<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            let (tcp, _) = l.accept().unwrap();
            let mut session = match server.accept(Stream::Tcp(tcp), Duration::from_secs(5)) {
                Ok(s) => s,
                Err(e) => return Some(e.to_string()),
            };
            let mut buf = vec![0u8; 100_000];
            let why = loop {
                match session.read(&mut buf) {
                    Ok(0) => break None,
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break None,
                    Err(e) => break Some(e.to_string()),
                    Ok(n) => {
                        if session.write_all(&buf[..n]).is_err() {
                            break None;
                        }
                    }
                }
            };
            session.close();
            why
        });
        (port, t)
    }

    fn target(port: u16, ca: &Path, name: Option<&str>) -> Address {
        Address::Tls(TlsTarget {
            host_port: format!("127.0.0.1:{port}"),
            ca: Some(ca.to_path_buf()),
            name: name.map(str::to_string),
        })
    }

    #[test]
    fn server_names_come_from_the_host_part() {
        let t = |hp: &str, name: Option<&str>| {
            TlsTarget { host_port: hp.into(), ca: None, name: name.map(str::to_string) }.server_name().to_string()
        };
        assert_eq!(t("gpu.example:7443", None), "gpu.example");
        assert_eq!(t("10.0.0.1:7443", None), "10.0.0.1");
        assert_eq!(t("[::1]:7443", None), "::1");
        assert_eq!(t("10.0.0.1:7443", Some("gpu.example")), "gpu.example");
    }

    #[test]
    fn bytes_cross_both_ways_and_the_end_is_clean() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = cert(dir.path(), "srv", &["gpu.test", "127.0.0.1"]);
        let (port, server) = echo_server(TlsServer::from_pem_files(&c, &k).unwrap());
        // By IP address (the host part), with the timeouts the client uses.
        let mut s = target(port, &c, None).connect(Duration::from_secs(3)).unwrap();
        s.set_timeouts(Some(Duration::from_secs(4)), Some(Duration::from_secs(5))).unwrap();
        assert!(s.is_tcp());
        // Larger than every buffer on the way, read back on a second handle while the
        // first writes (the echo would stall if nobody read).
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let head = [7u8; 32];
        let total = head.len() + data.len();
        let mut rd = s.try_clone().unwrap();
        let reader = std::thread::spawn(move || {
            let mut back = vec![0u8; total];
            rd.read_exact(&mut back).unwrap();
            back
        });
        // A gathered write, as frames go out.
        let n = s.write_vectored(&[io::IoSlice::new(&head), io::IoSlice::new(&data[..1000])]).unwrap();
        assert_eq!(n, head.len() + 1000);
        for chunk in data[1000..].chunks(200_000) {
            s.write_all(chunk).unwrap();
        }
        let back = reader.join().unwrap();
        assert_eq!(&back[..32], &head);
        assert!(back[32..] == data[..], "echoed bytes differ");
        // An orderly end both ways: the server reads our close_notify as the end and
        // answers with its own, which reads here as the end, not as a cut connection.
        s.close();
        assert_eq!(s.read(&mut [0u8; 8]).unwrap(), 0);
        assert_eq!(server.join().unwrap(), None);

        // A client that just hangs up is not a TLS failure either.
        let (port, server) = echo_server(TlsServer::from_pem_files(&c, &k).unwrap());
        let s = target(port, &c, None).connect(Duration::from_secs(3)).unwrap();
        s.shutdown();
        drop(s);
        assert_eq!(server.join().unwrap(), None, "a client's hang-up is not a TLS failure");
    }

    /// A key update in the middle of traffic both ways: the peer answers it (its reading
    /// side leaves the answer to its next write) and every byte still arrives.
    #[test]
    fn keys_roll_while_bytes_cross() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = cert(dir.path(), "srv", &["127.0.0.1"]);
        let (port, server) = echo_server(TlsServer::from_pem_files(&c, &k).unwrap());
        let mut s = target(port, &c, None).connect(Duration::from_secs(3)).unwrap();
        s.set_timeouts(Some(Duration::from_secs(4)), Some(Duration::from_secs(5))).unwrap();
        let Stream::Tls(tls) = &s else { panic!("not TLS") };
        let tls = tls.clone();
        let data: Vec<u8> = (0..2_000_000u32).map(|i| (i % 253) as u8).collect();
        let mut rd = s.try_clone().unwrap();
        let n = data.len();
        let reader = std::thread::spawn(move || {
            let mut back = vec![0u8; n];
            rd.read_exact(&mut back).unwrap();
            back
        });
        for (i, chunk) in data.chunks(100_000).enumerate() {
            if i % 5 == 2 {
                tls.refresh_keys().unwrap();
            }
            s.write_all(chunk).unwrap();
        }
        assert!(reader.join().unwrap() == data, "echoed bytes differ");
        s.close();
        assert_eq!(server.join().unwrap(), None);
    }

    #[test]
    fn a_certificate_that_does_not_check_out_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = cert(dir.path(), "srv", &["gpu.test"]);
        let (other, _) = cert(dir.path(), "other", &["gpu.test"]);
        let srv = TlsServer::from_pem_files(&c, &k).unwrap();

        // Signed by someone else.
        let (port, server) = echo_server(srv.clone());
        let t0 = Instant::now();
        let e = target(port, &other, Some("gpu.test")).connect(Duration::from_secs(3)).unwrap_err();
        // (UnknownIssuer, or BadSignature when the other CA has the same subject name)
        assert!(is_tls_error(&e) && e.to_string().contains("invalid peer certificate"), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(2));
        let why = server.join().unwrap().expect("the server saw the client's alert");
        assert!(why.contains("TLS"), "{why}");

        // The right CA, another name (the IP address the host part gives).
        let (port, server) = echo_server(srv.clone());
        let e = target(port, &c, None).connect(Duration::from_secs(3)).unwrap_err();
        assert!(is_tls_error(&e) && e.to_string().contains("not valid for name"), "{e}");
        let _ = server.join();

        // No CA at all: said before connecting anywhere useful.
        let (port, server) = echo_server(srv);
        let a = Address::Tls(TlsTarget { host_port: format!("127.0.0.1:{port}"), ca: None, name: None });
        let e = a.connect(Duration::from_secs(3)).unwrap_err();
        assert!(is_tls_error(&e) && e.to_string().contains("VGPU_TLS_CA"), "{e}");
        drop(server);

        // A CA file with no certificate in it.
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let e = target(1, &empty, None).connect(Duration::from_millis(200)).unwrap_err();
        assert!(e.to_string().contains("no certificate") || e.kind() == io::ErrorKind::ConnectionRefused, "{e}");
    }

    #[test]
    fn plain_tcp_and_tls_do_not_mix() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = cert(dir.path(), "srv", &["127.0.0.1"]);

        // A plain client on a TLS listener: the server reports it and hangs up at once.
        let (port, server) = echo_server(TlsServer::from_pem_files(&c, &k).unwrap());
        let mut s = Address::Tcp(format!("127.0.0.1:{port}")).connect(Duration::from_secs(3)).unwrap();
        s.set_timeouts(Some(Duration::from_secs(3)), None).unwrap();
        s.write_all(b"VGPU plain frame that is not a TLS record").unwrap();
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
        assert!(sink.len() < 16, "at most an alert comes back: {sink:?}");
        let why = server.join().unwrap().expect("reported");
        assert!(why.contains("TLS"), "{why}");

        // A vgpu client on a TLS listener is refused in its own protocol, saying why.
        let (port, server) = echo_server(TlsServer::from_pem_files(&c, &k).unwrap());
        let hello = protocol::hello::Hello {
            protocol_version: protocol::PROTOCOL_VERSION,
            wire_hash: protocol::WIRE_HASH,
            pid: 1,
            host: "h".into(),
            program: "p".into(),
            token: "t".into(),
        };
        let plain = Address::Tcp(format!("127.0.0.1:{port}"));
        match crate::Conn::connect(&plain, &hello, Default::default()) {
            Err(crate::Error::Refused(r)) => assert_eq!(r, PLAIN_REFUSAL),
            other => panic!("{:?}", other.map(|_| ())),
        }
        let why = server.join().unwrap().expect("reported");
        assert!(why.contains("tcp:// instead of tls://"), "{why}");

        // A TLS client on a plain listener that hangs up on bad frames.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let plain = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut b = [0u8; 8];
            let _ = s.read(&mut b);
        });
        let e = target(port, &c, None).connect(Duration::from_secs(3)).unwrap_err();
        assert!(is_tls_error(&e) && e.to_string().contains("is its listener tls://"), "{e}");
        plain.join().unwrap();

        // A listener that accepts and never answers: bounded by the connect timeout.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t0 = Instant::now();
        let e = target(port, &c, None).connect(Duration::from_millis(300)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert!(t0.elapsed() < Duration::from_secs(2));
        drop(l);
    }

    #[test]
    fn bad_server_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = cert(dir.path(), "srv", &["x"]);
        let (_, k2) = cert(dir.path(), "other", &["x"]);
        let missing = dir.path().join("missing.pem");
        let e = TlsServer::from_pem_files(&missing, &k).err().unwrap();
        assert!(e.contains("TLS certificate") && e.contains("missing.pem"), "{e}");
        let e = TlsServer::from_pem_files(&c, &c).err().unwrap();
        assert!(e.contains("TLS key"), "{e}");
        let e = TlsServer::from_pem_files(&k, &k).err().unwrap();
        assert!(e.contains("no certificate"), "{e}");
        let e = TlsServer::from_pem_files(&c, &k2).err().unwrap();
        assert!(e.contains("with key"), "a key that is not the certificate's: {e}");
    }
}
