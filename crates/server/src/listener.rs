//! Accepting clients: each connection is handed to a fresh worker process (the same `vgpu`
//! binary, `vgpu worker`), so sessions cannot see each other's memory, a crash stays in its
//! session, and all of a session's GPU memory is freed when its process exits.

use crate::BackendKind;
use crate::worker::HANDSHAKE_DEADLINE;
use parking_lot::Mutex;
use protocol::frame::{HEADER_LEN, Header, OP_JOIN, OP_SESSIONS};
use protocol::hello::{Join, SessionInfo, WorkerNote};
use std::collections::HashMap;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use transport::{Address, Stream};

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: Vec<Address>,
    pub backend: BackendKind,
    pub token: Option<String>,
    pub memory_limit: Option<u64>,
    pub sim_devices: u32,
    pub sim_seed: u8,
    /// NVML driver version the sim backend reports (tests of `vgpu doctor`); `None` keeps the default.
    pub sim_driver_version: Option<String>,
    /// Serve only these GPUs (`--gpus 0,2`, `CUDA_VISIBLE_DEVICES` syntax; see `crate::gpus`).
    pub gpus: Option<String>,
    /// The program to run as `<worker_exe> worker ...` (normally the `vgpu` binary itself).
    pub worker_exe: PathBuf,
    /// Certificate and key of the `tls://` listeners.
    pub tls: Option<TlsFiles>,
    /// Files clients may share as their segment over any transport (`--shm-file`).
    pub shm_files: Vec<PathBuf>,
    /// Bytes of kept host-to-device chunks at most, and where (`crate::blobs`; the workers'
    /// `VGPU_BLOB_CACHE_MB` and `VGPU_BLOB_DIR`).
    pub blob_cache: Option<u64>,
    pub blob_dir: Option<PathBuf>,
    /// Bytes of repeated copies' pieces a session keeps in memory at most (`crate::pages`;
    /// the workers' `VGPU_PAGE_CACHE_MB`).
    pub page_cache: Option<u64>,
}

/// PEM files of a `tls://` listener: the certificate chain (server first) and its key.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Check the TLS settings against the listeners, and the files by loading them, so that a
/// bad certificate stops `vgpu serve` at once rather than failing every session.
fn check_tls(listen: &[Address], tls: Option<&TlsFiles>) -> Result<Option<TlsFiles>, String> {
    let wanted = listen.iter().any(Address::is_tls);
    match tls {
        None if wanted => Err("a tls:// listener needs --tls-cert and --tls-key".into()),
        None => Ok(None),
        // Files given for no TLS listener: the operator believes traffic is encrypted.
        Some(_) if !wanted => Err("--tls-cert/--tls-key are for tls:// listeners and none is given".into()),
        Some(f) => {
            transport::TlsServer::from_pem_files(&f.cert, &f.key)?;
            // Workers get the paths; make them independent of where they run.
            let abs = |p: &Path| std::path::absolute(p).map_err(|e| format!("{}: {e}", p.display()));
            Ok(Some(TlsFiles { cert: abs(&f.cert)?, key: abs(&f.key)? }))
        }
    }
}

static SESSIONS: AtomicU64 = AtomicU64::new(1);

/// Each running worker, by session: its lane channel (the listener's end of a seqpacket
/// pair; a lane's connection is passed down it, see [`route`], and the worker tells who its
/// client is up it) and what `vgpu sessions` says of it. And the board on which workers
/// see whether others are active (`transport::crowd`), if one could be made.
#[derive(Default)]
pub struct Workers(Mutex<HashMap<u64, Worker>>, Option<transport::crowd::Board>);

struct Worker {
    lanes: OwnedFd,
    info: SessionInfo,
}

/// Bind every address and serve until the process is killed.
pub fn serve(opts: ServeOptions) -> Result<(), String> {
    if let (crate::BackendKind::Cuda, Some(spec)) = (opts.backend, &opts.gpus) {
        crate::gpus::restrict_driver(spec);
    }
    let mut snapshot = crate::snapshot(opts.backend, opts.sim_devices, opts.sim_seed)?;
    match (opts.backend, &opts.gpus) {
        (crate::BackendKind::Sim, Some(spec)) => snapshot = crate::gpus::select(snapshot, spec)?,
        (crate::BackendKind::Cuda, Some(spec)) => crate::gpus::check_restricted(&snapshot, spec)?,
        (_, None) => {}
    }
    if let (crate::BackendKind::Sim, Some(v)) = (opts.backend, &opts.sim_driver_version) {
        crate::sim::set_driver_version(&mut snapshot, v);
    }
    tracing::info!(
        "backend {}: {} device(s), driver {}",
        opts.backend.name(),
        snapshot.devices.len(),
        snapshot.driver_version
    );
    for d in &snapshot.devices {
        tracing::info!("  {} {} {} {} MiB", d.cuda_ordinal, d.name, d.uuid_string(), d.total_mem >> 20);
    }
    // An empty token (an empty file, `VGPU_TOKEN=`) would admit every client.
    if opts.listen.iter().any(|a| a.needs_token()) && opts.token.as_deref().is_none_or(str::is_empty) {
        return Err("a tcp://, tls:// or vsock:// listener needs a token: pass --token-file (or VGPU_TOKEN)".into());
    }
    let tls = check_tls(&opts.listen, opts.tls.as_ref())?;
    let snapshot = Arc::new(postcard::to_allocvec(&snapshot).map_err(|e| e.to_string())?);
    let opts = Arc::new(ServeOptions { tls, ..opts });
    let board = transport::crowd::Board::create()
        .map_err(|e| tracing::warn!("no board for the workers' activity ({e}): every session polls as if alone"))
        .ok();
    let workers = Arc::new(Workers(Mutex::default(), board));
    let mut threads = Vec::new();
    for addr in opts.listen.clone() {
        let listener = addr.bind().map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        eprintln!("vgpu: listening on {addr}");
        // Workers are started by one long-lived thread per listener: a worker is killed
        // when the thread that started it ends (see `spawn_worker_for`).
        let (to_start, starts) = std::sync::mpsc::channel::<Stream>();
        {
            let (opts, snapshot, workers, addr) = (opts.clone(), snapshot.clone(), workers.clone(), addr.clone());
            threads.push(std::thread::spawn(move || {
                for stream in starts {
                    start(&stream, &opts, &snapshot, &addr, &workers);
                }
            }));
        }
        let workers = workers.clone();
        threads.push(std::thread::spawn(move || {
            loop {
                match listener.accept() {
                    // A new session's first bytes (TLS's, on a tls:// listener) go to its
                    // worker; a lane's join comes first, in clear even over TLS.
                    Ok(stream) => {
                        let (workers, to_start) = (workers.clone(), to_start.clone());
                        let routed = std::thread::Builder::new()
                            .name("vgpu-route".into())
                            .spawn(move || route(stream, &to_start, &workers));
                        if let Err(e) = routed {
                            tracing::error!("cannot take a connection: {e}");
                        }
                    }
                    Err(e) => {
                        tracing::warn!("accept on {addr}: {e}");
                        std::thread::sleep(std::time::Duration::from_millis(50));
                    }
                }
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// A new session: a worker for it, offered lanes.
fn start(stream: &Stream, opts: &ServeOptions, snapshot: &[u8], addr: &Address, workers: &Arc<Workers>) {
    let id = SESSIONS.fetch_add(1, Ordering::Relaxed);
    if let Err(e) = spawn_worker_for(stream, opts, snapshot, id, addr, Some(workers)) {
        tracing::error!("session {id}: cannot start a worker: {e}");
    }
}

/// Look at a new connection's first frame (without taking it): a lane joining a session
/// goes to that session's worker, anything else (a handshake, a TLS ClientHello) starts a
/// session.
fn route(stream: Stream, to_start: &std::sync::mpsc::Sender<Stream>, workers: &Workers) {
    match first_header(&stream) {
        Ok(Some(h)) if h.op == OP_JOIN => {
            if let Err(e) = join(stream, h, workers) {
                tracing::debug!("lane not joined: {e}");
            }
        }
        Ok(Some(h)) if h.op == OP_SESSIONS => {
            if let Err(e) = list_sessions(stream, h, workers) {
                tracing::debug!("sessions not listed: {e}");
            }
        }
        // Not ours to judge: the worker refuses what is not a handshake, and logs why.
        Ok(Some(_)) => {
            let _ = to_start.send(stream);
        }
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            let _ = to_start.send(stream);
        }
        // No whole frame within the deadline, or connected and closed (a probe).
        Err(e) => tracing::debug!("connection dropped before its first frame: {e}"),
        Ok(None) => {}
    }
}

/// Largest join frame's arguments (a real one is some 40 bytes).
pub(crate) const MAX_JOIN: u32 = 256;

/// The first frame's header, peeked (the bytes stay for whoever reads the connection);
/// `None` if the peer closed first. Waits at most [`HANDSHAKE_DEADLINE`].
fn first_header(stream: &Stream) -> std::io::Result<Option<Header>> {
    stream.set_timeouts(Some(HANDSHAKE_DEADLINE), None)?;
    let until = std::time::Instant::now() + HANDSHAKE_DEADLINE;
    let mut buf = [0u8; HEADER_LEN];
    loop {
        let n = unsafe { libc::recv(stream.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_PEEK) };
        match n {
            0 => return Ok(None),
            n if n < 0 => return Err(std::io::Error::last_os_error()),
            n if n as usize == HEADER_LEN => {
                return Header::decode(&buf)
                    .map(Some)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()));
            }
            _ if std::time::Instant::now() >= until => return Err(std::io::ErrorKind::TimedOut.into()),
            // Part of a header: the rest is on its way.
            _ => std::thread::sleep(std::time::Duration::from_millis(1)),
        }
    }
}

/// Hand a lane to its session's worker, with the join's arguments (the worker checks the
/// key; a TLS session's worker checks the join that follows inside TLS). An unknown
/// session: the lane is closed, and its client goes on without lanes.
fn join(mut stream: Stream, h: Header, workers: &Workers) -> std::io::Result<()> {
    if h.args_len > MAX_JOIN || h.bulk_len != 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "oversized join"));
    }
    let mut frame = vec![0u8; HEADER_LEN + h.args_len as usize];
    std::io::Read::read_exact(&mut stream, &mut frame)?;
    let args = &frame[HEADER_LEN..];
    let j: Join = postcard::from_bytes(args).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let map = workers.0.lock();
    let w = map.get(&j.session).ok_or_else(|| std::io::Error::other(format!("no session {}", j.session)))?;
    transport::send_fd(w.lanes.as_raw_fd(), args, stream.as_raw_fd())?;
    Ok(())
}

/// Answer `vgpu sessions` (see [`OP_SESSIONS`]): every running session, oldest first. Only
/// on a unix socket, whose permissions say who may look; elsewhere the answer says so.
fn list_sessions(mut stream: Stream, h: Header, workers: &Workers) -> std::io::Result<()> {
    let mut frame = vec![0u8; HEADER_LEN + (h.args_len.min(MAX_JOIN) as usize)];
    std::io::Read::read_exact(&mut stream, &mut frame)?;
    // By the socket's family, not the stream's kind: vsock connections are carried as unix
    // streams, and a virtual machine must not list the host's sessions.
    let answer: Result<Vec<SessionInfo>, String> = match transport::socket_domain(stream.as_raw_fd()) {
        Some(libc::AF_UNIX) => {
            let mut v: Vec<SessionInfo> = workers.0.lock().values().map(|w| w.info.clone()).collect();
            v.sort_by_key(|i| i.session);
            Ok(v)
        }
        _ => Err("sessions are listed only on the server's unix socket".into()),
    };
    let body = postcard::to_allocvec(&answer).map_err(std::io::Error::other)?;
    transport::write_frame(&mut stream, &Header::reply(OP_SESSIONS, h.seq, 0, body.len(), 0), &body, &[])
}

/// Who is at the other end of a new connection, for `vgpu sessions`.
fn peer_of(stream: &Stream) -> String {
    match stream {
        Stream::Tcp(s) => s.peer_addr().map_or_else(|e| format!("tcp ({e})"), |a| a.to_string()),
        _ if transport::socket_domain(stream.as_raw_fd()) == Some(libc::AF_VSOCK) => {
            // SAFETY: sockaddr_vm is plain integers, valid when zeroed.
            let mut a: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
            // SAFETY: getpeername into a local sockaddr_vm of the size given.
            let r =
                unsafe { libc::getpeername(stream.as_raw_fd(), (&mut a as *mut libc::sockaddr_vm).cast(), &mut len) };
            if r == 0 { format!("vsock cid {}", a.svm_cid) } else { "vsock".into() }
        }
        _ => {
            let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
            let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
            // SAFETY: getsockopt into a local ucred of the size given.
            let r = unsafe {
                libc::getsockopt(
                    stream.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_PEERCRED,
                    (&mut cred as *mut libc::ucred).cast(),
                    &mut len,
                )
            };
            if r == 0 && cred.pid > 0 { format!("local pid {} uid {}", cred.pid, cred.uid) } else { "local".into() }
        }
    }
}

/// Start `vgpu worker` on this connection, accepted on `listener`: the socket becomes its
/// fd 3, the snapshot arrives on its stdin, the token in its environment (not on its
/// command line). For a `tls://` listener the worker gets the certificate and key paths and
/// does the TLS handshake itself (TLS state cannot be handed across `exec`). With
/// `workers`, the worker gets a channel for its lanes as fd 4 and is remembered there until
/// it exits.
pub fn spawn_worker_for(
    stream: &Stream,
    opts: &ServeOptions,
    snapshot: &[u8],
    id: u64,
    listener: &Address,
    workers: Option<&Arc<Workers>>,
) -> std::io::Result<()> {
    let fd = stream.as_raw_fd();
    let channel = match workers {
        Some(_) => Some(seqpacket_pair()?),
        None => None,
    };
    let lane_fd = channel.as_ref().map(|(_, theirs)| theirs.as_raw_fd());
    let board_fd = workers.and_then(|w| w.1.as_ref()).map(|b| b.fd().as_raw_fd());
    let mut cmd = Command::new(&opts.worker_exe);
    cmd.arg("worker").arg("--backend").arg(opts.backend.name()).arg("--session").arg(id.to_string());
    if lane_fd.is_some() {
        cmd.arg("--lanes-fd").arg(LANES_FD.to_string());
    }
    if board_fd.is_some() {
        cmd.arg("--board-fd").arg(BOARD_FD.to_string());
    }
    if let Some(m) = opts.memory_limit {
        cmd.arg("--memory-limit").arg(m.to_string());
    }
    for f in &opts.shm_files {
        cmd.arg("--shm-file").arg(f);
    }
    if let Some(b) = opts.blob_cache {
        cmd.env("VGPU_BLOB_CACHE_MB", (b >> 20).to_string());
    }
    if let Some(d) = &opts.blob_dir {
        cmd.env("VGPU_BLOB_DIR", d);
    }
    if let Some(p) = opts.page_cache {
        cmd.env("VGPU_PAGE_CACHE_MB", (p >> 20).to_string());
    }
    if let Some(t) = &opts.token {
        // Unix sockets rely on file permissions; TCP (with TLS or not) always needs the token.
        if listener.needs_token() {
            cmd.env("VGPU_WORKER_TOKEN", t);
        }
    }
    if listener.is_tls() {
        let Some(tls) = &opts.tls else {
            return Err(std::io::Error::other("a tls:// listener without --tls-cert/--tls-key"));
        };
        cmd.arg("--tls-cert").arg(&tls.cert).arg("--tls-key").arg(&tls.key);
    }
    cmd.stdin(Stdio::piped());
    let server_pid = std::process::id() as libc::pid_t;
    unsafe {
        cmd.pre_exec(move || {
            // A worker must not outlive its server: killing `vgpu serve` ends every
            // session (the clients' calls fail at once) and frees their GPU memory, and a
            // restarted server does not share the GPU with orphans. The signal follows the
            // death of the spawning thread, which is the listener's accept loop here.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != server_pid {
                // The server died before the line above took effect.
                libc::_exit(1);
            }
            // The connection as fd 3, the lane channel and the board as theirs. Each is
            // first copied above those numbers, so that none is overwritten before it is
            // moved (the board, made first, is often fd 3 itself); dup2 then clears
            // close-on-exec on the copy the worker inherits, and the high ones close.
            let moves = [(Some(fd), 3), (lane_fd, LANES_FD), (board_fd, BOARD_FD)];
            let mut high = [-1; 3];
            for (i, (from, _)) in moves.iter().enumerate() {
                if let Some(from) = *from {
                    high[i] = libc::fcntl(from, libc::F_DUPFD_CLOEXEC, BOARD_FD + 1);
                    if high[i] < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
            }
            for (i, (_, to)) in moves.iter().enumerate() {
                if high[i] >= 0 && libc::dup2(high[i], *to) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let info = SessionInfo {
        session: id,
        worker_pid: child.id(),
        listener: listener.to_string(),
        peer: peer_of(stream),
        since,
        client: None,
        memory: 0,
    };
    // The worker tells who its client is up the channel; it closes when the worker exits.
    let told = match (workers, channel) {
        (Some(w), Some((mine, _theirs))) => {
            let told = mine.try_clone()?;
            w.0.lock().insert(id, Worker { lanes: mine, info });
            Some((w.clone(), told))
        }
        _ => None,
    };
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(snapshot)?;
    }
    std::thread::spawn(move || {
        // The worker's notes until it exits (its end of the channel closes then).
        if let Some((w, told)) = &told {
            let mut buf = [0u8; 1024];
            loop {
                // SAFETY: a recv into a local buffer on a descriptor this thread owns.
                let n = unsafe { libc::recv(told.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                if n <= 0 {
                    break;
                }
                let Ok(note) = postcard::from_bytes::<WorkerNote>(&buf[..n as usize]) else { continue };
                if let Some(entry) = w.0.lock().get_mut(&id) {
                    match note {
                        WorkerNote::Client(c) => entry.info.client = Some(c),
                        WorkerNote::Memory(m) => entry.info.memory = m,
                    }
                }
            }
        }
        match child.wait() {
            Ok(st) if !st.success() => tracing::warn!("session {id}: worker exited with {st}"),
            _ => {}
        }
        if let Some((w, _)) = told {
            w.0.lock().remove(&id);
        }
    });
    Ok(())
}

/// The descriptor a worker finds its lane channel on.
pub const LANES_FD: i32 = 4;
/// The descriptor a worker finds the board of the workers' activity on.
pub const BOARD_FD: i32 = 5;

/// A connected pair of unix seqpacket sockets: each message (a lane's join and its
/// descriptor) arrives whole and alone.
fn seqpacket_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    if unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}
