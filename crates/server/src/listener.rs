//! Accepting clients: each connection is handed to a fresh worker process (the same `vgpu`
//! binary, `vgpu worker`), so sessions cannot see each other's memory, a crash stays in its
//! session, and all of a session's GPU memory is freed when its process exits.

use crate::BackendKind;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
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
    /// The program to run as `<worker_exe> worker ...` (normally the `vgpu` binary itself).
    pub worker_exe: PathBuf,
}

static SESSIONS: AtomicU64 = AtomicU64::new(1);

/// Bind every address and serve until the process is killed.
pub fn serve(opts: ServeOptions) -> Result<(), String> {
    let mut snapshot = crate::snapshot(opts.backend, opts.sim_devices, opts.sim_seed)?;
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
    if opts.listen.iter().any(|a| a.needs_token()) && opts.token.is_none() {
        return Err("a TCP listener needs a token: pass --token-file (or VGPU_TOKEN)".into());
    }
    let snapshot = Arc::new(postcard::to_allocvec(&snapshot).map_err(|e| e.to_string())?);
    let opts = Arc::new(opts);
    let mut threads = Vec::new();
    for addr in opts.listen.clone() {
        let listener = addr.bind().map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        eprintln!("vgpu: listening on {addr}");
        let (opts, snapshot) = (opts.clone(), snapshot.clone());
        threads.push(std::thread::spawn(move || loop {
            match listener.accept() {
                Ok(stream) => {
                    let id = SESSIONS.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = spawn_worker_for(&stream, &opts, &snapshot, id, addr.needs_token()) {
                        tracing::error!("session {id}: cannot start a worker: {e}");
                    }
                }
                Err(e) => {
                    tracing::warn!("accept on {addr}: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// Start `vgpu worker` on this connection: the socket becomes its fd 3, the snapshot
/// arrives on its stdin, the token in its environment (not on its command line).
pub fn spawn_worker_for(
    stream: &Stream,
    opts: &ServeOptions,
    snapshot: &[u8],
    id: u64,
    needs_token: bool,
) -> std::io::Result<()> {
    let fd = stream.as_raw_fd();
    let mut cmd = Command::new(&opts.worker_exe);
    cmd.arg("worker").arg("--backend").arg(opts.backend.name()).arg("--session").arg(id.to_string());
    if let Some(m) = opts.memory_limit {
        cmd.arg("--memory-limit").arg(m.to_string());
    }
    if let Some(t) = &opts.token {
        // Unix sockets rely on file permissions; TCP always needs the token.
        if needs_token {
            cmd.env("VGPU_WORKER_TOKEN", t);
        }
    }
    cmd.stdin(Stdio::piped());
    unsafe {
        cmd.pre_exec(move || {
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
