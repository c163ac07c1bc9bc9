//! The parent: a server of its own (unless given), one measuring child per column, the
//! llama-bench runs, the report.

use crate::Args;
use crate::child::Plan;
use crate::llama;
use crate::model::{ChildResult, Latency};
use crate::report::{self, COLUMNS, Column, LlamaRun, Meta, Outcome, Report};
use crate::time::Utc;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Where the vgpu columns connect.
struct Servers {
    unix: Option<String>,
    tcp: Option<String>,
    token: Option<String>,
    /// A file the server shares (`--shm-file`), for the `tcp+file` column.
    shm_file: Option<PathBuf>,
    /// A `tls://` listener and the certificate that checks it (self-signed, made here).
    tls: Option<(String, PathBuf)>,
}

/// A `vgpu serve` started by this command; stopped on drop.
struct ServerProc {
    child: Child,
    log: PathBuf,
    /// The shared file it serves, removed with it.
    shm_file: Option<PathBuf>,
}

impl ServerProc {
    fn log_tail(&self) -> String {
        tail(&std::fs::read_to_string(&self.log).unwrap_or_default(), 20)
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        if let Some(f) = &self.shm_file {
            let _ = std::fs::remove_file(f);
            // The one part the columns' processes claimed, one after another.
            let _ = std::fs::remove_file(transport::part_claim_path(f, 0));
        }
        // SIGTERM first, so that the server can end its workers; SIGKILL after 5 s.
        // SAFETY: kill(2) on the id of a process this command started and has not reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

fn progress(msg: &str) {
    eprintln!("vgpu bench: {msg}");
}

/// Our libraries: `--dist-lib`, else `../lib` next to the executable (dist/bin/vgpu).
fn dist_lib(args: &Args, exe: &Path) -> Result<PathBuf, String> {
    let dir = match &args.dist_lib {
        Some(d) => d.clone(),
        None => exe.parent().and_then(Path::parent).map(|p| p.join("lib")).unwrap_or_default(),
    };
    for lib in ["libcuda.so.1", "libnvidia-ml.so.1"] {
        if !dir.join(lib).exists() {
            return Err(format!(
                "{} has no {lib}: build the libraries (scripts/dist.sh) and run dist/bin/vgpu, or pass --dist-lib DIR",
                dir.display()
            ));
        }
    }
    std::fs::canonicalize(&dir).map_err(|e| format!("{}: {e}", dir.display()))
}

fn random_token() -> String {
    let mut b = [0u8; 16];
    let ok = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).is_ok();
    if !ok {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        b[..8].copy_from_slice(&(t.as_nanos() as u64).to_le_bytes());
        b[8..12].copy_from_slice(&std::process::id().to_le_bytes());
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Start `vgpu serve` for the columns: a unix socket in `dir`, a TCP port, a TLS port with
/// a certificate made here, and a file of `shm_mb` MiB in /dev/shm that it shares (what a
/// VM's shared memory is on its host).
fn start_server(exe: &Path, backend: &str, dir: &Path, shm_mb: u64) -> Result<(ServerProc, Servers), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let sock = dir.join("vgpu.sock");
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| format!("no free TCP port: {e}"))
    };
    let (port, tls_port) = (free_port()?, free_port()?);
    let (cert, key) = self_signed(dir)?;
    let token = random_token();
    let token_file = dir.join("token");
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&token_file)
        .and_then(|mut f| std::io::Write::write_all(&mut f, format!("{token}\n").as_bytes()))
        .map_err(|e| format!("{}: {e}", token_file.display()))?;
    let log = dir.join("server.log");
    let out = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let unix = format!("unix:{}", sock.display());
    let tcp = format!("tcp://127.0.0.1:{port}");
    let tls = format!("tls://127.0.0.1:{tls_port}");
    // tmpfs: the driver pins a shared file's pages, which it cannot for a file on disk.
    let shm_file = PathBuf::from(format!("/dev/shm/vgpu-bench-{}.shm", std::process::id()));
    let shm_file = std::fs::File::create(&shm_file).and_then(|f| f.set_len(shm_mb << 20)).is_ok().then_some(shm_file);
    let mut cmd = Command::new(exe);
    cmd.args(["serve", "--backend", backend, "--listen", &unix, "--listen", &tcp, "--listen", &tls, "--token-file"])
        .arg(&token_file)
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key);
    if let Some(f) = &shm_file {
        cmd.arg("--shm-file").arg(f);
    }
    let child = cmd
        .env("VGPU_LOG", std::env::var("VGPU_SERVER_LOG").unwrap_or_else(|_| "warn".into()))
        .env_remove("VGPU_TOKEN")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start {} serve: {e}", exe.display()))?;
    let mut server = ServerProc { child, log, shm_file: shm_file.clone() };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(st)) = server.child.try_wait() {
            return Err(format!("vgpu serve exited ({st}):\n{}", server.log_tail()));
        }
        let up = std::os::unix::net::UnixStream::connect(&sock).is_ok()
            && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            && std::net::TcpStream::connect(("127.0.0.1", tls_port)).is_ok();
        if up {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("vgpu serve did not come up in 30 s:\n{}", server.log_tail()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((server, Servers { unix: Some(unix), tcp: Some(tcp), token: Some(token), shm_file, tls: Some((tls, cert)) }))
}

/// A certificate for 127.0.0.1 and its key, as PEM files in `dir` (the key private, as
/// `vgpu serve` demands); the certificate is its own CA for the `tls` column.
fn self_signed(dir: &Path) -> Result<(PathBuf, PathBuf), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).map_err(|e| format!("certificate: {e}"))?;
    let (cert, key) = (dir.join("tls.pem"), dir.join("tls.key"));
    std::fs::write(&cert, ck.cert.pem()).map_err(|e| format!("{}: {e}", cert.display()))?;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key)
        .and_then(|mut f| std::io::Write::write_all(&mut f, ck.signing_key.serialize_pem().as_bytes()))
        .map_err(|e| format!("{}: {e}", key.display()))?;
    Ok((cert, key))
}

fn given_token(args: &Args) -> Result<Option<String>, String> {
    let read = |p: &Path| {
        std::fs::read_to_string(p).map(|s| s.trim().to_string()).map_err(|e| format!("token file {}: {e}", p.display()))
    };
    if let Some(p) = &args.token_file {
        return read(p).map(Some);
    }
    if let Ok(t) = std::env::var("VGPU_TOKEN") {
        return Ok(Some(t.trim().to_string()));
    }
    match std::env::var("VGPU_TOKEN_FILE") {
        Ok(p) => read(Path::new(&p)).map(Some),
        Err(_) => Ok(None),
    }
}

/// What a spawned process printed, and how it ended.
struct Captured {
    stdout: String,
    stderr: String,
    status: Option<ExitStatus>,
    elapsed: Duration,
}

/// Run `cmd` (in a process group of its own) to the end or for at most `timeout`, capturing
/// its output.
fn run_captured(mut cmd: Command, timeout: Duration) -> Result<Captured, String> {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    let reader = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut s);
            }
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = reader(child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let err = reader(child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let deadline = start + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if Instant::now() > deadline => {
                // SAFETY: kill(2) on the process group of the child this function started.
                unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(e.to_string()),
        }
    };
    Ok(Captured {
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        status,
        elapsed: start.elapsed(),
    })
}

fn failure(c: &Captured, timeout: Duration) -> Option<String> {
    match c.status {
        None => Some(format!("timed out after {} s; stderr: {}", timeout.as_secs(), tail(&c.stderr, 5))),
        Some(st) if !st.success() => Some(format!("{st}; stderr: {}", tail(&c.stderr, 5))),
        Some(_) => None,
    }
}

/// `LD_LIBRARY_PATH` without our libraries, so that a native process loads NVIDIA's.
fn native_ld_path(dist: &Path) -> String {
    std::env::var("LD_LIBRARY_PATH")
        .unwrap_or_default()
        .split(':')
        .filter(|p| !p.is_empty() && std::fs::canonicalize(p).ok().as_deref() != Some(dist))
        .collect::<Vec<_>>()
        .join(":")
}

/// How a column's processes are started.
#[derive(Clone, Copy)]
struct Side<'a> {
    /// None for native.
    server: Option<&'a str>,
    token: Option<&'a str>,
    wrap: &'a [String],
    dist: &'a Path,
    /// `VGPU_SHM_MB` for an `shm:` side: a segment that holds the largest pinned buffer, so
    /// that the pinned rows measure copies from the segment.
    shm_mb: Option<u64>,
    /// `VGPU_SHM_FILE`: a file the server shares, as the segment.
    shm_file: Option<&'a Path>,
    /// `VGPU_TLS_CA`: the certificate that checks a `tls://` server's.
    tls_ca: Option<&'a Path>,
}

impl Side<'_> {
    /// `program args` for this side, with `extra_ld` ahead of the side's library path.
    fn command(&self, program: &Path, args: &[String], extra_ld: Option<&Path>) -> Command {
        let mut cmd;
        let mut ld: Vec<String> = Vec::new();
        match self.server {
            None => {
                cmd = Command::new(program);
                cmd.args(args);
                ld.extend(extra_ld.map(|p| p.display().to_string()));
                ld.push(native_ld_path(self.dist));
                cmd.env_remove("VGPU_SERVER").env_remove("VGPU_TOKEN").env_remove("VGPU_TOKEN_FILE");
            }
            Some(server) => {
                match self.wrap.split_first() {
                    Some((w, rest)) => {
                        cmd = Command::new(w);
                        cmd.args(rest).arg(program);
                    }
                    None => cmd = Command::new(program),
                }
                cmd.args(args);
                ld.push(self.dist.display().to_string());
                ld.extend(extra_ld.map(|p| p.display().to_string()));
                cmd.env("VGPU_SERVER", server).env("VGPU_CONFIG", "/nonexistent").env_remove("VGPU_TOKEN_FILE");
                if let Some(mb) = self.shm_mb {
                    cmd.env("VGPU_SHM_MB", mb.to_string());
                }
                match self.shm_file {
                    Some(f) => cmd.env("VGPU_SHM_FILE", f),
                    None => cmd.env_remove("VGPU_SHM_FILE"),
                };
                match self.tls_ca {
                    Some(f) => cmd.env("VGPU_TLS_CA", f),
                    None => cmd.env_remove("VGPU_TLS_CA"),
                };
                match self.token {
                    Some(t) => cmd.env("VGPU_TOKEN", t),
                    None => cmd.env_remove("VGPU_TOKEN"),
                };
            }
        }
        let ld: Vec<String> = ld.into_iter().filter(|s| !s.is_empty()).collect();
        cmd.env("LD_LIBRARY_PATH", ld.join(":"));
        cmd
    }
}

fn measure_column(exe: &Path, side: &Side<'_>, quick: bool, timeout: Duration, name: &str) -> Outcome {
    let (lib, nvml) = match side.server {
        None => ("libcuda.so.1".to_string(), "libnvidia-ml.so.1".to_string()),
        Some(_) => (
            side.dist.join("libcuda.so.1").display().to_string(),
            side.dist.join("libnvidia-ml.so.1").display().to_string(),
        ),
    };
    let mut a: Vec<String> = ["bench", "--child", "--json", "--lib", &lib, "--nvml", &nvml].map(String::from).to_vec();
    if quick {
        a.push("--quick".into());
    }
    progress(&format!("{name}: measuring ({lib})"));
    let c = match run_captured(side.command(exe, &a, None), timeout) {
        Ok(c) => c,
        Err(e) => return Outcome::Failed { error: e },
    };
    if let Some(e) = failure(&c, timeout) {
        progress(&format!("{name}: failed: {e}"));
        return Outcome::Failed { error: e };
    }
    let line = c.stdout.lines().rev().find(|l| l.trim_start().starts_with('{')).unwrap_or("");
    match serde_json::from_str::<ChildResult>(line) {
        Ok(r) => {
            progress(&format!("{name}: done in {:.1} s", c.elapsed.as_secs_f64()));
            Outcome::Measured { result: Box::new(r) }
        }
        Err(e) => Outcome::Failed { error: format!("unreadable result ({e}): {}", tail(&c.stdout, 3)) },
    }
}

/// One llama-bench run of `model` in a column: `--clients` processes started together,
/// their tests summed where there are several (with `--mixed`: one prompting, the others
/// decoding).
fn llama_run(bin: &Path, model: &Path, side: &Side<'_>, args: &Args, column: &str) -> LlamaRun {
    let timeout = Duration::from_secs(args.timeout);
    let program = bin.join("llama-bench");
    let n = args.clients.max(1);
    // (`run` refuses --mixed without two clients or more.)
    let mixed = args.mixed;
    progress(&format!(
        "{column}: llama-bench {}{}",
        model.display(),
        match (n, mixed) {
            (1, _) => "".into(),
            (_, false) => format!(", {n} at once"),
            (_, true) => format!(", prompts beside {} decoding", n - 1),
        }
    ));
    // Client `i`'s tests, and when its process ended.
    let one = |i: u32| -> (Result<Vec<llama::LlamaTest>, String>, Instant) {
        let a = match (mixed, i) {
            (false, _) => llama::args(model, args.llama_reps),
            (true, 0) => {
                std::thread::sleep(Duration::from_secs_f64(args.mixed_delay.max(0.0)));
                llama::mixed_args(model, true, args.mixed_prompt_reps)
            }
            (true, _) => llama::mixed_args(model, false, args.llama_reps),
        };
        let r = run_captured(side.command(&program, &a, Some(bin)), timeout)
            .and_then(|c| failure(&c, timeout).map_or(Ok(c), Err))
            .and_then(|c| llama::parse(&c.stdout));
        (r, Instant::now())
    };
    let (busy, t0) = (busy_ticks(), Instant::now());
    let ended: Vec<_> = std::thread::scope(|s| {
        let h: Vec<_> = (0..n).map(|i| s.spawn(move || one(i))).collect();
        h.into_iter().map(join_run).collect()
    });
    let cores = busy.zip(busy_ticks()).map(|(a, b)| cores_busy(b.saturating_sub(a), t0.elapsed()));
    let mut run = LlamaRun {
        model: model.display().to_string(),
        column: column.into(),
        tests: vec![],
        error: None,
        cores: cores.into_iter().collect(),
        // A prompt that ended after a decoder had some of its samples alone on the GPU.
        prompt_outlasted: (mixed && ended.iter().skip(1).any(|(_, t)| *t < ended[0].1)).into(),
    };
    let runs: Result<Vec<_>, String> = ended.into_iter().map(|(r, _)| r).collect();
    let tests = runs.and_then(|r| match (n, mixed) {
        (1, _) => Ok(r.into_iter().next().unwrap_or_default()),
        (_, false) => llama::summed(&r),
        (_, true) => llama::mixed(r[0].clone(), &r[1..]),
    });
    match tests {
        Ok(t) => run.tests = t,
        Err(e) => run.error = Some(e),
    }
    if let Some(e) = &run.error {
        progress(&format!("{column}: llama-bench failed: {e}"));
    }
    run
}

/// The machine's busy time so far, in clock ticks: user, nice, system, irq and softirq of
/// the `cpu` line of `/proc/stat` (not idle, I/O wait, or time a hypervisor stole).
fn busy_ticks() -> Option<u64> {
    parse_busy(&std::fs::read_to_string("/proc/stat").ok()?)
}

fn parse_busy(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line.split_whitespace().skip(1).map(|x| x.parse().ok()).collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal ...: guests' time is in user already.
    let busy = f.iter().take(7).enumerate().filter(|&(i, _)| i != 3 && i != 4).map(|(_, v)| v).sum();
    (f.len() >= 7).then_some(busy)
}

/// Clock ticks a second, the unit of `/proc/stat`.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}

/// Cores kept busy on average: `ticks` of busy time over `span`.
fn cores_busy(ticks: u64, span: Duration) -> f64 {
    ticks as f64 / ticks_per_second() / span.as_secs_f64().max(1e-3)
}

/// The tests of one of several llama-bench processes run at once, and when it ended.
fn join_run(
    h: std::thread::ScopedJoinHandle<'_, (Result<Vec<llama::LlamaTest>, String>, Instant)>,
) -> (Result<Vec<llama::LlamaTest>, String>, Instant) {
    h.join().unwrap_or_else(|_| (Err("a llama-bench run's thread panicked".into()), Instant::now()))
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "host".into())
}

fn cuda_version(v: i32) -> String {
    if v <= 0 { "?".into() } else { format!("{}.{}", v / 1000, v % 1000 / 10) }
}

/// `vgpu bench` without `--child`.
pub fn run(args: &Args) -> Result<(), String> {
    if args.mixed && args.clients < 2 {
        return Err("--mixed needs --clients 2 or more (one prompting, the others decoding)".into());
    }
    let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
    let dist = dist_lib(args, &exe)?;
    if !args.models.is_empty() && args.llama_bin.is_none() {
        return Err("--models needs --llama-bin DIR (the folder holding llama-bench)".into());
    }
    if let Some(b) = &args.llama_bin {
        if !b.join("llama-bench").exists() {
            return Err(format!("{} has no llama-bench", b.display()));
        }
        if args.models.is_empty() {
            return Err("--llama-bin needs --models q8.gguf,f16.gguf".into());
        }
        if let Some(m) = args.models.iter().find(|m| !m.is_file()) {
            return Err(format!("model {} not found", m.display()));
        }
    }
    let wrap: Vec<String> = args.wrap.as_deref().unwrap_or("").split_whitespace().map(String::from).collect();
    let date = Utc::now();
    let timeout = Duration::from_secs(args.timeout);
    let tmp = tempfile::Builder::new().prefix("vgpu-bench-").tempdir().map_err(|e| format!("temporary folder: {e}"))?;

    // Room for the largest pinned buffer besides the ring (at most 32 MiB), and never less
    // than the default 256 MiB: the shm and tcp+file columns' segments.
    let largest_mb = Plan::new(args.quick).sizes.iter().max().copied().unwrap_or(0) >> 20;
    let seg_mb = (largest_mb + 64).max(256);
    let given = args.server.is_some() || args.tcp_server.is_some();
    let (server, servers) = if given {
        let s = Servers {
            unix: args.server.clone(),
            tcp: args.tcp_server.clone(),
            token: given_token(args)?,
            shm_file: None,
            tls: None,
        };
        (None, s)
    } else {
        progress(&format!("starting vgpu serve --backend {}", args.backend));
        let (p, s) = start_server(&exe, &args.backend, tmp.path(), seg_mb)?;
        (Some(p), s)
    };
    let backend = if given { "given".to_string() } else { args.backend.clone() };

    let native =
        Side { server: None, token: None, wrap: &wrap, dist: &dist, shm_mb: None, shm_file: None, tls_ca: None };
    let vgpu = Side { token: servers.token.as_deref(), ..native };
    let unix = servers.unix.as_deref().map(|a| Side { server: Some(a), ..vgpu });
    let tcp = servers.tcp.as_deref().map(|a| Side { server: Some(a), ..vgpu });
    // The shm column talks to the unix listener, passing it a shared segment for copies.
    let shm_addr = servers.unix.as_deref().and_then(|a| a.strip_prefix("unix:")).map(|p| format!("shm:{p}"));
    let shm = shm_addr.as_deref().map(|a| Side { server: Some(a), shm_mb: Some(seg_mb), ..vgpu });
    // The tcp+file column: TCP for the calls, the file the server shares for the bytes, as
    // a VM with shared memory has it.
    let tcp_file = servers.tcp.as_deref().zip(servers.shm_file.as_deref()).map(|(a, f)| Side {
        server: Some(a),
        shm_mb: Some(seg_mb),
        shm_file: Some(f),
        ..vgpu
    });
    let tls = servers.tls.as_ref().map(|(a, ca)| Side { server: Some(a), tls_ca: Some(ca), ..vgpu });
    let sides: Vec<(&str, Option<Side<'_>>, String)> = vec![
        (
            "native",
            (!args.no_native && backend != "sim").then_some(native),
            if args.no_native { "left out (--no-native)".into() } else { "no native GPU with the sim backend".into() },
        ),
        ("unix", unix, "no unix server given (--server)".into()),
        ("tcp", tcp, "no TCP server given (--tcp-server)".into()),
        ("shm", shm, "no unix server given (--server unix:PATH) to share memory with".into()),
        ("tcp+file", tcp_file, "no shared file (only a server this command starts shares one)".into()),
        ("tls", tls, "no TLS server (only a server this command starts has one)".into()),
    ];
    debug_assert!(sides.iter().map(|s| s.0).eq(COLUMNS));

    let mut columns = Vec::new();
    for (name, side, reason) in &sides {
        let outcome = match side {
            Some(s) => measure_column(&exe, s, args.quick, timeout, name),
            None => Outcome::Skipped { reason: reason.clone() },
        };
        columns.push(Column { name: name.to_string(), outcome });
    }
    let mut llama_runs: Vec<LlamaRun> = Vec::new();
    if let Some(bin) = &args.llama_bin {
        let measured: Vec<_> = sides.iter().filter_map(|(name, side, _)| Some((name, side.as_ref()?))).collect();
        for _ in 0..args.llama_rounds.max(1) {
            for model in &args.models {
                for &(name, s) in &measured {
                    let run = llama_run(bin, model, s, args, name);
                    match llama_runs.iter_mut().find(|r| r.model == run.model && r.column == run.column) {
                        None => llama_runs.push(run),
                        Some(have) => have.pool(run),
                    }
                }
            }
        }
    }
    let server_tail = server.as_ref().map(ServerProc::log_tail);
    drop(server);
    // The sockets' own round trip, measured with nothing of vgpu's running.
    progress("the sockets' own round trip");
    let iters = if args.quick { 500 } else { 5000 };
    let echo: Vec<(String, Latency)> = crate::echo::KINDS
        .iter()
        .filter_map(|k| match crate::echo::round_trip(k, iters) {
            Ok(l) => Some((k.to_string(), l)),
            Err(e) => {
                progress(&e);
                None
            }
        })
        .collect();

    let sizes = Plan::new(args.quick).sizes;
    let measured: Vec<&ChildResult> = columns
        .iter()
        .filter_map(|c| match &c.outcome {
            Outcome::Measured { result } => Some(&**result),
            _ => None,
        })
        .collect();
    let first = measured.first().copied().cloned().unwrap_or_default();
    let native_libs = match &columns[0].outcome {
        Outcome::Measured { result } => vec![result.device.cuda_lib.clone(), result.device.nvml_lib.clone()],
        _ => vec![],
    };
    let meta = Meta {
        gpu: if first.device.name.is_empty() { "unknown GPU".into() } else { first.device.name.clone() },
        driver_version: first.device.driver_version.clone(),
        cuda_version: cuda_version(first.device.cuda_driver_version),
        host: host_name(),
        date: date.date_time(),
        vgpu_version: format!(
            "{}{}",
            env!("CARGO_PKG_VERSION"),
            if cfg!(debug_assertions) { " (debug build: not for publishing)" } else { "" }
        ),
        backend: backend.clone(),
        native_libs,
        vgpu_lib_dir: dist.display().to_string(),
        wrap: args.wrap.clone(),
        quick: args.quick,
    };
    let mut notes = report::build_notes(&columns, &llama_runs);
    if args.mixed && !llama_runs.is_empty() {
        notes.push(format!(
            "llama-bench rows, mixed load: one process prompting (pp512, {} repetitions, started {} s after the \
             others) while {} decode (tg128); the prompt row is that process's median, the decoders' row their sum",
            args.mixed_prompt_reps,
            args.mixed_delay,
            args.clients - 1
        ));
        for r in llama_runs.iter().filter(|r| r.prompt_outlasted > 0) {
            notes.push(format!(
                "{} {}: the prompt client outlasted a decoder in {} of its runs, so some prompt samples had the GPU \
                 alone (raise --llama-reps)",
                r.column, r.model, r.prompt_outlasted
            ));
        }
    } else if args.clients > 1 && !llama_runs.is_empty() {
        notes.push(format!(
            "llama-bench rows: {} processes started together in each column's run, sharing the GPU; a row gives the \
             sum of their medians (the median over rounds of that sum)",
            args.clients
        ));
    }
    notes.extend(report::round_trip_note(&echo, &columns));
    let failed = columns.iter().any(|c| matches!(c.outcome, Outcome::Failed { .. }))
        || llama_runs.iter().any(|r| r.error.is_some());
    if failed && let Some(t) = server_tail.filter(|t| !t.trim().is_empty()) {
        notes.push(format!("server log (last lines): {}", t.replace('\n', " / ")));
    }
    let rep = Report {
        meta,
        columns: COLUMNS.iter().map(|c| c.to_string()).collect(),
        rows: report::build_rows(&columns, &sizes, &llama_runs),
        notes,
        children: columns,
        llama: llama_runs,
    };
    let md = report::render_markdown(&rep);
    let json = serde_json::to_string_pretty(&rep).map_err(|e| e.to_string())?;
    if args.json {
        println!("{json}");
    } else {
        print!("{md}");
    }
    if !args.no_write {
        write_results(&args.out, &rep, &md, &json, &date, &args.backend)?;
    }
    if failed { Err("some measurements failed (see the notes under the table)".into()) } else { Ok(()) }
}

fn write_results(out: &Path, rep: &Report, md: &str, json: &str, date: &Utc, backend: &str) -> Result<(), String> {
    let err = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    std::fs::create_dir_all(out).map_err(|e| err(out, e))?;
    let stem = report::file_stem(&date.date(), &rep.meta.host, backend, rep.meta.quick);
    let md_path = out.join(format!("{stem}.md"));
    let json_path = out.join(format!("{stem}.json"));
    std::fs::write(&md_path, md).map_err(|e| err(&md_path, e))?;
    std::fs::write(&json_path, format!("{json}\n")).map_err(|e| err(&json_path, e))?;
    reindex(out, Some(&format!("{stem}.md")))?;
    progress(&format!("wrote {} and {}", md_path.display(), json_path.display()));
    Ok(())
}

/// Rewrite the results section of `out/README.md` from the result files in `out`, naming
/// `latest` (None, as `vgpu bench --reindex`: the newest).
pub fn reindex(out: &Path, latest: Option<&str>) -> Result<(), String> {
    let err = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    let results = report::results_in(out).map_err(|e| err(out, e))?;
    let latest =
        latest.or_else(|| report::newest(&results)).ok_or_else(|| format!("no results in {}", out.display()))?;
    let readme = out.join("README.md");
    let existing = std::fs::read_to_string(&readme).ok();
    std::fs::write(&readme, report::update_readme(existing.as_deref(), &results, latest)).map_err(|e| err(&readme, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_time_leaves_out_idle_io_wait_and_steal() {
        let stat = "cpu  100 5 50 9000 40 3 2 1 0 0\ncpu0 1 1 1 1 1 1 1 1 0 0\n";
        assert_eq!(parse_busy(stat), Some(100 + 5 + 50 + 3 + 2));
        assert_eq!(parse_busy("cpu  1 2 3\n"), None, "too few fields");
        assert_eq!(parse_busy("intr 5\n"), None);
        let hz = ticks_per_second() as u64;
        assert!((cores_busy(3 * hz, Duration::from_secs(2)) - 1.5).abs() < 1e-9);
    }

    #[test]
    fn versions_and_tails() {
        assert_eq!(cuda_version(13000), "13.0");
        assert_eq!(cuda_version(12090), "12.9");
        assert_eq!(cuda_version(0), "?");
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("", 2), "");
    }

    #[test]
    fn captured_runs_and_timeouts() {
        let mut c = Command::new("sh");
        c.args(["-c", "echo out; echo err >&2; exit 3"]);
        let r = run_captured(c, Duration::from_secs(10)).unwrap();
        assert_eq!(r.stdout, "out\n");
        assert_eq!(r.stderr, "err\n");
        assert_eq!(r.status.and_then(|s| s.code()), Some(3));
        assert!(failure(&r, Duration::from_secs(10)).unwrap().contains("err"));
        let mut c = Command::new("sleep");
        c.arg("30");
        let r = run_captured(c, Duration::from_millis(200)).unwrap();
        assert!(r.status.is_none());
        assert!(r.elapsed < Duration::from_secs(10));
        assert!(failure(&r, Duration::from_secs(1)).unwrap().starts_with("timed out"));
    }

    #[test]
    fn sides_set_the_environment() {
        let dist = PathBuf::from("/opt/vgpu/lib");
        let wrap = vec!["tools/no-gpu.sh".to_string()];
        let vg = Side {
            server: Some("unix:/tmp/s.sock"),
            token: Some("t0k"),
            wrap: &wrap,
            dist: &dist,
            shm_mb: Some(512),
            shm_file: Some(Path::new("/dev/shm/f")),
            tls_ca: Some(Path::new("/etc/vgpu/ca.pem")),
        };
        let cmd = vg.command(Path::new("/l/llama-bench"), &["-m".into(), "x".into()], Some(Path::new("/l")));
        assert_eq!(cmd.get_program(), "tools/no-gpu.sh");
        let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(args, ["/l/llama-bench", "-m", "x"]);
        let env = |cmd: &Command, k: &str| {
            cmd.get_envs().find(|(n, _)| *n == k).and_then(|(_, v)| v.map(|v| v.to_string_lossy().into_owned()))
        };
        assert_eq!(env(&cmd, "LD_LIBRARY_PATH").as_deref(), Some("/opt/vgpu/lib:/l"));
        assert_eq!(env(&cmd, "VGPU_SERVER").as_deref(), Some("unix:/tmp/s.sock"));
        assert_eq!(env(&cmd, "VGPU_TOKEN").as_deref(), Some("t0k"));
        assert_eq!(env(&cmd, "VGPU_SHM_MB").as_deref(), Some("512"));
        assert_eq!(env(&cmd, "VGPU_TLS_CA").as_deref(), Some("/etc/vgpu/ca.pem"));

        let native =
            Side { server: None, token: None, wrap: &wrap, dist: &dist, shm_mb: None, shm_file: None, tls_ca: None };
        let cmd = native.command(Path::new("/l/llama-bench"), &[], Some(Path::new("/l")));
        assert_eq!(cmd.get_program(), "/l/llama-bench");
        assert!(env(&cmd, "LD_LIBRARY_PATH").unwrap().starts_with("/l"));
        assert_eq!(env(&cmd, "VGPU_SERVER"), None);
        assert!(cmd.get_envs().any(|(k, v)| k == "VGPU_SERVER" && v.is_none()), "VGPU_SERVER removed");
    }
}
