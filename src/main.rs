//! The `vgpu` command: `serve` on the GPU host, `devices`/`doctor`/`env`/`install` on clients.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "vgpu", version, about = "Use a GPU in another machine from unmodified CUDA applications")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve this host's GPUs to vgpu clients.
    Serve {
        /// Where to listen: unix:/path, tcp://host:port, tls://host:port, vsock://cid:port
        /// (repeatable).
        #[arg(long, default_value = "unix:/run/vgpu/vgpu.sock")]
        listen: Vec<String>,
        /// `cuda` (the real driver) or `sim` (a CPU stand-in, no GPU needed).
        #[arg(long, default_value = "cuda")]
        backend: String,
        /// File holding the token clients must present (required for TCP and TLS).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Certificate chain of the tls:// listeners (PEM, the server's certificate first).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// Private key of that certificate (PEM; not readable by others).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Memory each session may allocate per device, e.g. 8G, 512M or bytes.
        #[arg(long)]
        memory_limit: Option<String>,
        /// Number of simulated devices (sim backend).
        #[arg(long, default_value_t = 1)]
        devices: u32,
        /// Distinguishes the devices of several sim servers (UUIDs, bus ids).
        #[arg(long, default_value_t = 0)]
        sim_id: u8,
        /// NVML driver version the sim backend reports (tests of `vgpu doctor`).
        #[arg(long, hide = true)]
        sim_driver_version: Option<String>,
        /// Serve only these GPUs: indices as nvidia-smi numbers them and/or GPU-UUIDs,
        /// comma-separated (CUDA_VISIBLE_DEVICES syntax). Default: every GPU of the host.
        #[arg(long)]
        gpus: Option<String>,
        /// A file whose memory a client may share with the server as its segment, over any
        /// transport: a VM's shared memory (QEMU ivshmem over a memory-backend-file). A
        /// client proves it maps the file by a nonce written at its start; each file serves
        /// one session at a time. Repeat for several VMs.
        #[arg(long)]
        shm_file: Vec<PathBuf>,
        /// Host-to-device bytes kept on disk for later sessions, so that a model's next load
        /// over a link sends hashes instead of its weights: at most this much, e.g. 64G (0
        /// keeps nothing). Default 32G (at most a quarter of its file system), or
        /// VGPU_BLOB_CACHE_MB.
        #[arg(long)]
        blob_cache: Option<String>,
        /// Where those bytes are kept. Default /var/cache/vgpu/blobs, or VGPU_BLOB_DIR.
        #[arg(long)]
        blob_dir: Option<PathBuf>,
        /// Memory each session may use to keep pieces of repeated host-to-device copies (a
        /// prompt batch's input rows), so that over a link rows sent before are named
        /// instead of sent again: e.g. 1G (0 keeps none). Default 256M, or
        /// VGPU_PAGE_CACHE_MB. Taken as pieces are kept.
        #[arg(long)]
        page_cache: Option<String>,
    },
    /// Internal: serve one session on fd 3 (started by `vgpu serve`).
    #[command(hide = true)]
    Worker {
        #[arg(long)]
        backend: String,
        #[arg(long)]
        session: u64,
        #[arg(long)]
        memory_limit: Option<u64>,
        /// The TLS certificate and key: serve the connection with TLS.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// The descriptor on which `vgpu serve` passes the session's lanes.
        #[arg(long)]
        lanes_fd: Option<i32>,
        /// The descriptor on which `vgpu serve` passes the board of its workers' activity.
        #[arg(long)]
        board_fd: Option<i32>,
        /// Files the client may use as its shared segment (`vgpu serve --shm-file`).
        #[arg(long)]
        shm_file: Vec<PathBuf>,
    },
    /// List the devices the configured server(s) offer.
    Devices,
    /// On the GPU host: the server's sessions, each with its worker process (what
    /// `nvidia-smi` lists), the device memory its allocations hold, and its client's
    /// program, pid, host and address.
    Sessions {
        /// The server's unix socket (default: the configured server if it is one, else
        /// unix:/run/vgpu/vgpu.sock).
        #[arg(long)]
        server: Option<String>,
        /// Print the list as JSON (for scripts and monitoring).
        #[arg(long)]
        json: bool,
    },
    /// Measure native and vgpu on this GPU host in one run; print and save a table of ratios.
    Bench(bench::Args),
    #[command(flatten)]
    Deploy(deploy::cli::Command),
}

/// `8G`, `8GiB`, `8GB`, `512M`, `4096` (bytes): binary units. The unit's `i`/`B` suffix is
/// dropped before the unit letter is read (so `8GiB` is `8G`), and overflow is an error.
fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || format!("bad size {s:?} (try 8G)");
    let t = s.trim();
    let t = t.strip_suffix(['b', 'B']).unwrap_or(t);
    let t = t.strip_suffix(['i', 'I']).unwrap_or(t);
    let (num, mul) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 1 << 20),
        Some('G' | 'g') => (&t[..t.len() - 1], 1 << 30),
        Some('T' | 't') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    num.trim().parse::<u64>().ok().and_then(|n| n.checked_mul(mul)).ok_or_else(bad)
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VGPU_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let r = match cli.cmd {
        Cmd::Serve {
            listen,
            backend,
            token_file,
            tls_cert,
            tls_key,
            memory_limit,
            devices,
            sim_id,
            sim_driver_version,
            gpus,
            shm_file,
            blob_cache,
            blob_dir,
            page_cache,
        } => (|| {
            let listen = listen.iter().map(|a| a.parse()).collect::<Result<Vec<_>, _>>()?;
            let token = match (token_file, std::env::var("VGPU_TOKEN").ok()) {
                (Some(p), _) => Some(read_token_file(&p)?),
                (None, t) => t,
            };
            let opts = server::ServeOptions {
                listen,
                backend: backend.parse()?,
                token,
                memory_limit: memory_limit.as_deref().map(parse_size).transpose()?,
                sim_devices: devices,
                sim_seed: sim_id,
                sim_driver_version,
                gpus,
                shm_files: shm_file,
                blob_cache: blob_cache.as_deref().map(parse_size).transpose()?,
                blob_dir,
                page_cache: page_cache.as_deref().map(parse_size).transpose()?,
                worker_exe: std::env::current_exe().map_err(|e| e.to_string())?,
                tls: match (tls_cert, tls_key) {
                    (Some(cert), Some(key)) => {
                        check_key_file(&key)?;
                        Some(server::TlsFiles { cert, key })
                    }
                    _ => None,
                },
            };
            server::serve(opts)
        })(),
        Cmd::Worker { backend, session, memory_limit, tls_cert, tls_key, lanes_fd, board_fd, shm_file } => (|| {
            let mut snap = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut snap).map_err(|e| e.to_string())?;
            let snapshot = postcard::from_bytes(&snap).map_err(|e| format!("bad snapshot: {e}"))?;
            let tls = match (tls_cert, tls_key) {
                (Some(cert), Some(key)) => Some(transport::TlsServer::from_pem_files(&cert, &key)?),
                _ => None,
            };
            // SAFETY: `vgpu serve` hands each worker its connection as fd 3.
            let stream = unsafe { transport::Stream::from_fd(3) };
            let stream = match &tls {
                Some(tls) => tls.accept(stream, server::HANDSHAKE_DEADLINE).map_err(|e| format!("TLS: {e}"))?,
                None => stream,
            };
            let cfg = server::SessionConfig {
                backend: backend.parse()?,
                token: std::env::var("VGPU_WORKER_TOKEN").ok(),
                memory_limit,
                session_id: session,
                lane_control: lanes_fd,
                shm_files: shm_file,
                board: board_fd,
                tls,
            };
            let end = stream.try_clone().map_err(|e| e.to_string())?;
            let r = server::run_session(stream, &cfg, snapshot).map_err(|e| e.to_string());
            // An orderly end (TLS: close_notify after the session's last words).
            end.close();
            r
        })(),
        Cmd::Devices => (|| {
            // The session already printed why it could not connect.
            let s = client::session().map_err(|_| "no vgpu server (see above; `vgpu doctor` explains)".to_string())?;
            println!("{}", s.snapshot.server);
            println!("driver {} (CUDA {})", s.snapshot.driver_version, s.snapshot.cuda_driver_version);
            for (i, d) in s.snapshot.devices.iter().enumerate() {
                let (ma, mi) = d.compute_capability();
                println!(
                    "{i}: {} {} {} cc {ma}.{mi} {} MiB (server {})",
                    d.name,
                    d.uuid_string(),
                    d.pci.bus_id(),
                    d.total_mem >> 20,
                    d.server
                );
            }
            Ok(())
        })(),
        Cmd::Sessions { server, json } => sessions(server, json),
        Cmd::Bench(args) => bench::main(args),
        Cmd::Deploy(c) => return deploy::cli::run(c),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vgpu: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `vgpu sessions`: ask the server's unix socket, print a table.
fn sessions(server: Option<String>, json: bool) -> Result<(), String> {
    use protocol::frame::{Header, OP_SESSIONS};
    use protocol::hello::SessionInfo;
    let address = match server {
        Some(a) => a,
        None => client::Config::load()
            .ok()
            .and_then(|c| {
                c.servers.into_iter().find(|a| matches!(a, transport::Address::Unix(_) | transport::Address::Shm(_)))
            })
            .map_or_else(|| "unix:/run/vgpu/vgpu.sock".to_string(), |a| a.to_string()),
    };
    let path = address
        .strip_prefix("unix:")
        .or_else(|| address.strip_prefix("shm:"))
        .ok_or_else(|| format!("{address}: sessions are listed on the server's unix socket (unix:/path)"))?;
    let mut s = std::os::unix::net::UnixStream::connect(path).map_err(|e| format!("{address}: {e}"))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5))).map_err(|e| e.to_string())?;
    transport::write_frame(&mut s, &Header::request(OP_SESSIONS, 1, 0, false, 0, 0), &[], &[])
        .map_err(|e| format!("{address}: {e}"))?;
    let h = transport::read_header(&mut s)
        .map_err(|e| format!("{address}: no answer ({e}); is it a vgpu server of this version?"))?;
    if h.op != OP_SESSIONS || h.args_len > 16 << 20 {
        return Err(format!("{address}: unexpected answer (op {})", h.op));
    }
    let mut body = vec![0u8; h.args_len as usize];
    std::io::Read::read_exact(&mut s, &mut body).map_err(|e| e.to_string())?;
    let list = postcard::from_bytes::<Result<Vec<SessionInfo>, String>>(&body).map_err(|e| e.to_string())??;
    if json {
        println!("{}", serde_json::to_string_pretty(&list).map_err(|e| e.to_string())?);
        return Ok(());
    }
    println!("{:<8} {:<8} {:<20} {:>10} {:<40} FROM", "SESSION", "WORKER", "SINCE (UTC)", "MEMORY", "CLIENT");
    for i in &list {
        let since = bench::time::Utc::from_unix(i64::try_from(i.since).unwrap_or(0)).date_time();
        let client = match &i.client {
            Some(c) => {
                let name = std::path::Path::new(&c.program)
                    .file_name()
                    .map_or(c.program.clone(), |n| n.to_string_lossy().into());
                format!("{name} (pid {}) on {}", c.pid, c.host)
            }
            None => "(handshake not done)".into(),
        };
        let memory = format!("{} MiB", i.memory.div_ceil(1 << 20));
        println!(
            "{:<8} {:<8} {:<20} {:>10} {:<40} {} via {}",
            i.session, i.worker_pid, since, memory, client, i.peer, i.listener
        );
    }
    if list.is_empty() {
        println!("(no sessions)");
    }
    Ok(())
}

fn read_token_file(p: &std::path::Path) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(p).map_err(|e| format!("token file {}: {e}", p.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(format!("token file {} is readable by others: chmod 600 it", p.display()));
    }
    client::read_token(p)
}

/// A TLS key readable by everyone is as good as published. Group-readable is allowed: keys
/// are commonly shared with a group such as Debian's ssl-cert.
fn check_key_file(p: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(p).map_err(|e| format!("TLS key {}: {e}", p.display()))?;
    if meta.permissions().mode() & 0o007 != 0 {
        return Err(format!("TLS key {} is readable by others: chmod 600 it", p.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("8G"), Ok(8 << 30));
        assert_eq!(parse_size("8GiB"), Ok(8 << 30));
        assert_eq!(parse_size("8gb"), Ok(8 << 30));
        assert_eq!(parse_size(" 512M "), Ok(512 << 20));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4096B"), Ok(4096));
        for bad in ["", "G", "8X", "-1G", "1.5G", "99999999999T", "8GiBB"] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn token_file_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        std::fs::write(&p, "s3cret\n").unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660, 0o602] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = read_token_file(&p).unwrap_err();
            assert!(e.contains("readable by others"), "{mode:o}: {e}");
        }
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_token_file(&p).unwrap(), "s3cret");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert_eq!(read_token_file(&p).unwrap(), "s3cret");
    }
}
