//! TLS on TCP (`tls://host:port`): rustls with its `ring` provider, TLS 1.3 only (both ends
//! are vgpu). The server proves who it is with a certificate; the client checks it against
//! a CA file it is given. The token is still required on top: TLS authenticates the server
//! to the client, the token the client to the server.
//!
//! The client side is a [`TlsStream`] driven from the caller's thread, as the other
//! streams are: no helper thread, every wait bounded by the socket's timeouts. The server
//! side runs in each worker process (TLS state cannot cross `exec`), as a [`Relay`] between
//! the TCP connection and a socket pair whose other end the session uses like any stream.

use crate::addr::{Stream, send, send_vectored};
use parking_lot::Mutex;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
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

/// The socket under a TLS connection: reads are buffered (rustls asks for at most 4 KiB at
/// a time, which would cost a system call per 4 KiB of a large copy), writes go out with
/// MSG_NOSIGNAL like every other stream's.
struct Wire {
    tcp: TcpStream,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Wire {
    fn new(tcp: TcpStream) -> Wire {
        Wire { tcp, buf: vec![0; 64 << 10].into_boxed_slice(), start: 0, end: 0 }
    }
}

impl Read for Wire {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.start == self.end {
            self.end = (&self.tcp).read(&mut self.buf)?;
            self.start = 0;
        }
        let n = out.len().min(self.end - self.start);
        out[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
        self.start += n;
        Ok(n)
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        TcpWriter(&self.tcp).write(buf)
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        TcpWriter(&self.tcp).write_vectored(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes to a borrowed TCP socket (the server relay's two threads share one).
struct TcpWriter<'a>(&'a TcpStream);

impl Write for TcpWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        send(self.0.as_raw_fd(), buf)
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        send_vectored(self.0.as_raw_fd(), bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Write out every TLS record rustls has ready.
fn flush_records<C: std::ops::DerefMut<Target = rustls::ConnectionCommon<D>>, D>(
    conn: &mut C,
    out: &mut impl Write,
) -> io::Result<()> {
    while conn.wants_write() {
        if conn.write_tls(out)? == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
    }
    Ok(())
}

/// A client's TLS connection. Reads and writes happen on the caller's thread; the TCP
/// socket's read and write timeouts bound each wait.
pub struct TlsStream {
    conn: ClientConnection,
    wire: Wire,
}

impl std::fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream").field("tcp", &self.wire.tcp).finish_non_exhaustive()
    }
}

impl TlsStream {
    /// The TCP socket underneath (timeouts, shutdown, its fd).
    pub fn tcp(&self) -> &TcpStream {
        &self.wire.tcp
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                r => return r,
            }
            // Nothing decrypted is waiting: take more records from the socket. At its EOF
            // the reader above reports the end.
            self.conn.read_tls(&mut self.wire)?;
            if let Err(e) = self.conn.process_new_packets() {
                // Tell the server why (the alert rustls queued), then fail.
                let _ = flush_records(&mut self.conn, &mut self.wire);
                return Err(tls_error(format!("TLS: {e}")));
            }
            flush_records(&mut self.conn, &mut self.wire)?;
        }
    }
}

// Every write sends its records before returning, so nothing waits in rustls for a flush
// that the framing code never calls.
impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.conn.writer().write(buf)?;
        flush_records(&mut self.conn, &mut self.wire)?;
        Ok(n)
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let n = self.conn.writer().write_vectored(bufs)?;
        flush_records(&mut self.conn, &mut self.wire)?;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        flush_records(&mut self.conn, &mut self.wire)
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
    // A process makes one connection per server: nothing to resume.
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
    let mut s = TlsStream { conn, wire: Wire::new(tcp) };
    // A total deadline, not one per read: a server trickling its handshake cannot hold the
    // application past it.
    let deadline = Instant::now() + timeout;
    let failed = |e: io::Error| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no TLS handshake from the server within {:.1}s", timeout.as_secs_f32()),
        ),
        // A plain tcp:// listener reads the ClientHello as a bad frame and hangs up.
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => {
            tls_error("the server hung up during the TLS handshake (is its listener tls://, not tcp://?)".to_string())
        }
        _ => e,
    };
    while s.conn.is_handshaking() {
        flush_records(&mut s.conn, &mut s.wire).map_err(failed)?;
        if !s.conn.is_handshaking() {
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(failed(io::ErrorKind::TimedOut.into()));
        }
        s.wire.tcp.set_read_timeout(Some(left))?;
        if s.conn.read_tls(&mut s.wire).map_err(failed)? == 0 {
            return Err(failed(io::ErrorKind::UnexpectedEof.into()));
        }
        if let Err(e) = s.conn.process_new_packets() {
            let _ = flush_records(&mut s.conn, &mut s.wire);
            let hint = match e {
                rustls::Error::InvalidCertificate(_) => format!(
                    " (the CA file {} must hold the certificate that signed the server's, which must name {name}; VGPU_TLS_NAME sets another name)",
                    ca.display()
                ),
                _ => String::new(),
            };
            return Err(tls_error(format!("TLS handshake with {name}: {e}{hint}")));
        }
    }
    flush_records(&mut s.conn, &mut s.wire).map_err(failed)?;
    Ok(s)
}

/// A `tls://` listener's certificate chain and key. `vgpu serve` loads them once to check
/// them before it listens; each worker loads them again for its connection.
#[derive(Clone)]
pub struct TlsServer(Arc<ServerConfig>);

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

    /// Take over an accepted TCP connection. Returns the session's end of a socket pair that
    /// carries the plaintext (the session reads and writes it as any stream, from several
    /// threads, which one TLS state could not allow), and the relay between the two, to be
    /// finished when the session is over. The TLS handshake happens in the relay; a client
    /// that never completes it is cut off by the session's own handshake deadline.
    pub fn relay(&self, tcp: Stream) -> io::Result<(Stream, Relay)> {
        let Stream::Tcp(tcp) = tcp else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "TLS is served on TCP connections only"));
        };
        // A client that stops reading cannot stall the session forever.
        tcp.set_write_timeout(Some(Duration::from_secs(30)))?;
        let conn = Arc::new(Mutex::new(ServerConnection::new(self.0.clone()).map_err(io::Error::other)?));
        let (session, ours) = UnixStream::pair()?;
        let failure = Arc::new(Mutex::new(None));
        let inbound =
            Pump { conn: conn.clone(), tcp: tcp.try_clone()?, plain: ours.try_clone()?, failure: failure.clone() };
        let outbound = Pump { conn, tcp, plain: ours, failure: failure.clone() };
        std::thread::Builder::new().name("vgpu-tls-in".into()).spawn(move || inbound.run(Pump::inbound))?;
        let out =
            std::thread::Builder::new().name("vgpu-tls-out".into()).spawn(move || outbound.run(Pump::outbound))?;
        let relay = Relay { session: session.try_clone()?, outbound: Some(out), failure };
        Ok((Stream::Unix(session), relay))
    }
}

/// The two threads of a server-side TLS connection: client to session (decrypting) and
/// session to client (encrypting). They share the TLS state under a lock, taken only
/// between system calls on the TCP side, never while waiting for the client.
struct Pump {
    conn: Arc<Mutex<ServerConnection>>,
    tcp: TcpStream,
    plain: UnixStream,
    failure: Arc<Mutex<Option<String>>>,
}

impl Pump {
    /// Run one direction; when it ends, for whatever reason, both sides are closed so that
    /// the session and the other direction end too.
    fn run(mut self, direction: fn(&mut Pump) -> Result<(), String>) {
        if let Err(why) = direction(&mut self) {
            self.failure.lock().get_or_insert(why);
            let _ = self.tcp.shutdown(Shutdown::Both);
        }
        let _ = self.plain.shutdown(Shutdown::Both);
    }

    fn inbound(&mut self) -> Result<(), String> {
        let mut buf = vec![0u8; 64 << 10];
        let mut clear = Vec::new();
        let mut first = true;
        loop {
            let n = match (&self.tcp).read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // The client vanished (reset, keepalive): the session ends as at EOF.
                Err(e) => return Err(format!("reading from the client: {e}")),
            };
            if std::mem::take(&mut first)
                && let Some(refusal) = plain_hello_refusal(&buf[..n])
            {
                // A vgpu client configured with tcp://: refuse it in its own protocol, so
                // that it says why instead of "connection closed".
                let _ = send_all(self.tcp.as_raw_fd(), &refusal);
                return Err("a client without TLS (tcp:// instead of tls://) was refused".into());
            }
            let mut closed = false;
            {
                let mut c = self.conn.lock();
                let mut data = &buf[..n];
                while !data.is_empty() {
                    c.read_tls(&mut data).map_err(|e| format!("TLS: {e}"))?;
                    let state = match c.process_new_packets() {
                        Ok(s) => s,
                        Err(e) => {
                            // Send the alert rustls queued: the client learns why.
                            let _ = flush_records(&mut *c, &mut TcpWriter(&self.tcp));
                            return Err(format!("TLS: {e}"));
                        }
                    };
                    let at = clear.len();
                    clear.resize(at + state.plaintext_bytes_to_read(), 0);
                    c.reader().read_exact(&mut clear[at..]).map_err(|e| format!("TLS: {e}"))?;
                    closed |= state.peer_has_closed();
                }
                // Handshake messages and alerts in answer to what came in.
                flush_records(&mut *c, &mut TcpWriter(&self.tcp)).map_err(|e| format!("sending to the client: {e}"))?;
            }
            if !clear.is_empty() {
                // A failure here means the session has ended: nothing to report.
                if send_all(self.plain.as_raw_fd(), &clear).is_err() {
                    return Ok(());
                }
                clear.clear();
            }
            if closed {
                return Ok(());
            }
        }
    }

    fn outbound(&mut self) -> Result<(), String> {
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = match (&self.plain).read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            let mut c = self.conn.lock();
            let mut data = &buf[..n];
            while !data.is_empty() {
                let k = c.writer().write(data).map_err(|e| format!("TLS: {e}"))?;
                flush_records(&mut *c, &mut TcpWriter(&self.tcp)).map_err(|e| format!("sending to the client: {e}"))?;
                if k == 0 {
                    // rustls holds plaintext back only until the handshake completes, and
                    // the session says nothing before the client's first frame.
                    return Err("TLS: the session wrote before the handshake completed".into());
                }
                data = &data[k..];
            }
        }
        // The session is over: say so in TLS, then hang up.
        let mut c = self.conn.lock();
        c.send_close_notify();
        let _ = flush_records(&mut *c, &mut TcpWriter(&self.tcp));
        let _ = self.tcp.shutdown(Shutdown::Write);
        Ok(())
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
fn send_all(fd: std::os::fd::RawFd, mut buf: &[u8]) -> io::Result<()> {
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

/// The server side of one TLS connection, relaying between the client and the session.
pub struct Relay {
    /// A second handle on the session's end of the pair, to signal the session's end.
    session: UnixStream,
    outbound: Option<std::thread::JoinHandle<()>>,
    failure: Arc<Mutex<Option<String>>>,
}

impl Relay {
    /// Call once the session is over: the relay sends what the session wrote last (a
    /// refusal, say) and a TLS close, and stops. Returns what went wrong on the TLS side,
    /// if anything, for the log.
    pub fn finish(mut self) -> Option<String> {
        self.stop();
        self.failure.lock().take()
    }

    fn stop(&mut self) {
        // Data the session wrote is still read before the end this signals; the join is
        // bounded by the TCP write timeout.
        let _ = self.session.shutdown(Shutdown::Both);
        if let Some(t) = self.outbound.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
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
    /// and what the relay reported at the end.
    fn echo_server(server: TlsServer) -> (u16, std::thread::JoinHandle<Option<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            let (tcp, _) = l.accept().unwrap();
            let (mut session, relay) = server.relay(Stream::Tcp(tcp)).unwrap();
            let mut buf = vec![0u8; 100_000];
            loop {
                match session.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if session.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            relay.finish()
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
        assert!(s.is_tcp() && s.try_clone().is_err());
        // Larger than every buffer on the way.
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let head = [7u8; 32];
        // One owner writes and reads in turns, in chunks the echo returns before the socket
        // buffers fill.
        let mut back = vec![0u8; head.len() + data.len()];
        let mut sent = 0;
        let mut got = 0;
        // A gathered write, as frames go out: all of it is taken (well under rustls's buffer).
        let n = s.write_vectored(&[io::IoSlice::new(&head), io::IoSlice::new(&data[..1000])]).unwrap();
        assert_eq!(n, head.len() + 1000);
        sent += n;
        for chunk in data[1000..].chunks(200_000) {
            s.write_all(chunk).unwrap();
            sent += chunk.len();
            while got < sent {
                got += s.read(&mut back[got..sent]).unwrap();
            }
        }
        assert_eq!(&back[..32], &head);
        assert!(back[32..] == data[..], "echoed bytes differ");
        s.shutdown();
        drop(s);
        assert_eq!(server.join().unwrap(), None, "a client's hang-up is not a TLS failure");
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

        // A plain client on a TLS listener: the relay reports it and hangs up at once.
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
