//! Accepting clients: each connection is handed to a fresh worker process (the same `vgpu`
//! binary, `vgpu worker`), so sessions cannot see each other's memory, a crash stays in its
//! session, and all of a session's GPU memory is freed when its process exits.

use crate::BackendKind;
use std::io::Write;
use std::os::fd::AsRawFd;
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
        return Err("a TCP listener needs a token: pass --token-file (or VGPU_TOKEN)".into());
    }
    let tls = check_tls(&opts.listen, opts.tls.as_ref())?;
    let snapshot = Arc::new(postcard::to_allocvec(&snapshot).map_err(|e| e.to_string())?);
    let opts = Arc::new(ServeOptions { tls, ..opts });
    let mut threads = Vec::new();
    for addr in opts.listen.clone() {
        let listener = addr.bind().map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        eprintln!("vgpu: listening on {addr}");
        let (opts, snapshot) = (opts.clone(), snapshot.clone());
        threads.push(std::thread::spawn(move || {
            loop {
                match listener.accept() {
                    Ok(stream) => {
                        let id = SESSIONS.fetch_add(1, Ordering::Relaxed);
                        if let Err(e) = spawn_worker_for(&stream, &opts, &snapshot, id, &addr) {
                            tracing::error!("session {id}: cannot start a worker: {e}");
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

/// Start `vgpu worker` on this connection, accepted on `listener`: the socket becomes its
/// fd 3, the snapshot arrives on its stdin, the token in its environment (not on its
/// command line). For a `tls://` listener the worker gets the certificate and key paths and
/// does the TLS handshake itself (TLS state cannot be handed across `exec`).
pub fn spawn_worker_for(
    stream: &Stream,
    opts: &ServeOptions,
    snapshot: &[u8],
    id: u64,
    listener: &Address,
) -> std::io::Result<()> {
    let fd = stream.as_raw_fd();
    let mut cmd = Command::new(&opts.worker_exe);
    cmd.arg("worker").arg("--backend").arg(opts.backend.name()).arg("--session").arg(id.to_string());
    if let Some(m) = opts.memory_limit {
        cmd.arg("--memory-limit").arg(m.to_string());
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
            // dup2 clears close-on-exec on the copy, so the worker inherits it as fd 3.
            if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(snapshot)?;
    }
    std::thread::spawn(move || match child.wait() {
        Ok(st) if !st.success() => tracing::warn!("session {id}: worker exited with {st}"),
        _ => {}
    });
    Ok(())
}
