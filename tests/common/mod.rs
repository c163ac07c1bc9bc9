//! Helpers for the end-to-end tests: the built shims under their real names, a `vgpu serve`
//! on a private socket, and C programs compiled against the shims.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Directory holding the built cdylibs (target/<profile>/deps).
pub fn deps_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().to_path_buf()
}

/// (real file name, cargo's file name) of every shim.
pub const SHIMS: &[(&str, &str)] = &[
    ("libnvidia-ml.so.1", "libshim_nvml.so"),
    ("libcuda.so.1", "libshim_cuda.so"),
    ("libcudart.so.13", "libshim_cudart13.so"),
    ("libcudart.so.12", "libshim_cudart12.so"),
    ("libcublas.so.13", "libshim_cublas13.so"),
    ("libcublas.so.12", "libshim_cublas12.so"),
    ("libcublasLt.so.13", "libshim_cublaslt13.so"),
    ("libcublasLt.so.12", "libshim_cublaslt12.so"),
];

/// A directory laid out like `dist/lib`: the shims under their real names.
pub fn lib_dir(root: &Path) -> PathBuf {
    let dir = root.join("lib");
    std::fs::create_dir_all(&dir).unwrap();
    let deps = deps_dir();
    for (real, built) in SHIMS {
        let src = [deps.join(built), deps.parent().unwrap().join(built)].into_iter().find(|p| p.exists());
        if let Some(src) = src {
            let _ = std::fs::remove_file(dir.join(real));
            std::os::unix::fs::symlink(src, dir.join(real)).unwrap();
        }
    }
    dir
}

pub struct Server {
    pub child: Child,
    pub address: String,
}

impl Server {
    /// `vgpu serve --backend sim` on a fresh unix socket under `root`.
    pub fn sim(root: &Path, extra: &[&str]) -> Server {
        let sock = root.join(format!("vgpu-{}.sock", std::process::id()));
        Self::start(&format!("unix:{}", sock.display()), &["--backend", "sim"], extra)
    }

    pub fn start(address: &str, backend: &[&str], extra: &[&str]) -> Server {
        Self::start_env(address, backend, extra, &[])
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut addr: transport::Address = self.address.parse().unwrap();
        if let transport::Address::Tls(t) = addr {
            // Listening is what is waited for, not a client's TLS settings.
            addr = transport::Address::Tcp(t.host_port);
        }
        while Instant::now() < deadline {
            let up = match &addr {
                // A connect to a port nobody listens on yet can connect the socket to itself
                // (TCP's simultaneous open, when the kernel picks that very port as the local
                // one): that is not the server.
                transport::Address::Tcp(hp) => std::net::ToSocketAddrs::to_socket_addrs(hp.as_str())
                    .ok()
                    .and_then(|mut a| a.next())
                    .and_then(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_millis(200)).ok())
                    .is_some_and(|s| s.local_addr().ok() != s.peer_addr().ok()),
                a => a.connect(Duration::from_millis(200)).is_ok(),
            };
            if up {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("server at {} did not come up", self.address);
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Compile `tests/c/<name>.c` against the shims in `lib`, linking `libs` (real file names).
pub fn compile_c(name: &str, out_dir: &Path, lib: &Path, libs: &[&str]) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c").join(format!("{name}.c"));
    let exe = out_dir.join(name);
    let mut cmd = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()));
    cmd.arg("-O1").arg("-o").arg(&exe).arg(&src).arg("-L").arg(lib);
    for l in libs {
        cmd.arg(format!("-l:{l}"));
    }
    cmd.arg("-lpthread");
    let out = cmd.output().expect("run the C compiler");
    assert!(out.status.success(), "compiling {name}.c failed:\n{}", String::from_utf8_lossy(&out.stderr));
    exe
}

/// Run a program with the shims on `LD_LIBRARY_PATH` and the given server.
pub fn run(exe: &Path, lib: &Path, server: &str, envs: &[(&str, &str)]) -> Output {
    run_args(exe, lib, server, &[], envs)
}

/// [`run`] with arguments for the program.
pub fn run_args(exe: &Path, lib: &Path, server: &str, args: &[&str], envs: &[(&str, &str)]) -> Output {
    Command::new(exe)
        .args(args)
        .env("LD_LIBRARY_PATH", lib)
        .env("VGPU_SERVER", server)
        .env("VGPU_CONFIG", "/nonexistent")
        .envs(envs.iter().copied())
        .output()
        .expect("run test program")
}

// ---------------------------------------------------------------------------------------
// Deployment tests (`tests/install.rs`, `tests/doctor.rs`): fake trees and the `vgpu` CLI.

/// Run `vgpu ARGS` with a clean environment (only `PATH`, no `VGPU_*` of the developer's
/// shell) plus `envs`.
pub fn vgpu(args: &[&str], envs: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vgpu"))
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .envs(envs.iter().copied())
        .output()
        .expect("run vgpu")
}

/// Build a tiny shared library with `cc`: SONAME `soname`, the given C source.
pub fn cc_shared(out: &Path, soname: &str, source: &str) {
    let src = out.with_extension("c");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    std::fs::write(&src, source).unwrap();
    let o = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-shared", "-fPIC", "-o"])
        .arg(out)
        .arg(format!("-Wl,-soname,{soname}"))
        .arg(&src)
        .output()
        .expect("run the C compiler");
    assert!(o.status.success(), "cc {soname}: {}", String::from_utf8_lossy(&o.stderr));
    std::fs::remove_file(&src).unwrap();
}

/// A stand-in for `dist/lib`: one small ELF library per SONAME, each exporting a `vgpu_*`
/// symbol (as vgpu's libraries do) and with distinct contents. `names` picks which.
pub fn fake_dist_lib(root: &Path, names: &[&str]) -> PathBuf {
    let dir = root.join("dist-lib");
    std::fs::create_dir_all(&dir).unwrap();
    for name in names {
        cc_shared(
            &dir.join(name),
            name,
            &format!("const char *vgpu_fake_shim(void) {{ return \"vgpu fake {name}\"; }}\n"),
        );
    }
    dir
}

/// Every real library name vgpu provides.
pub fn all_names() -> Vec<&'static str> {
    SHIMS.iter().map(|(real, _)| *real).collect()
}

/// A fake Ollama install under `root`: `bin/ollama` and `lib/ollama` with the layout of the
/// Linux tarball (CPU libraries at the top, `cuda_v12` with runtime 12.8 and `cuda_v13` with
/// 13.0, NVIDIA-like files behind SONAME symlinks, one unversioned file, mixed modes).
/// Returns `lib/ollama`.
pub fn fake_ollama(root: &Path) -> PathBuf {
    use std::os::unix::fs::{PermissionsExt, symlink};
    let o = root.join("ollama/lib/ollama");
    let file = |rel: &str, content: &str, mode: u32| {
        let p = o.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    std::fs::create_dir_all(root.join("ollama/bin")).unwrap();
    std::fs::write(root.join("ollama/bin/ollama"), "#!/bin/sh\n").unwrap();
    file("llama-server", "fake llama-server", 0o755);
    file("libggml-base.so.0.9.7", "fake ggml-base", 0o755);
    symlink("libggml-base.so.0.9.7", o.join("libggml-base.so.0")).unwrap();
    file("libggml-cpu-haswell.so", "fake ggml-cpu", 0o755);
    file("vulkan/libggml-vulkan.so", "fake ggml-vulkan", 0o755);
    for (dir, rt) in [("cuda_v12", "12.8.90"), ("cuda_v13", "13.0.96")] {
        let major = &dir[6..];
        file(&format!("{dir}/libggml-cuda.so"), &format!("fake ggml-cuda {dir}"), 0o755);
        file(&format!("{dir}/libcudart.so.{rt}"), &format!("NVIDIA cudart {rt}"), 0o644);
        symlink(format!("libcudart.so.{rt}"), o.join(format!("{dir}/libcudart.so.{major}"))).unwrap();
        let blas = if major == "12" { "12.8.4.1" } else { "13.1.0.3" };
        file(&format!("{dir}/libcublas.so.{blas}"), &format!("NVIDIA cublas {blas}"), 0o755);
        symlink(format!("libcublas.so.{blas}"), o.join(format!("{dir}/libcublas.so.{major}"))).unwrap();
        if major == "12" {
            file(&format!("{dir}/libcublasLt.so.{blas}"), &format!("NVIDIA cublasLt {blas}"), 0o755);
            symlink(format!("libcublasLt.so.{blas}"), o.join(format!("{dir}/libcublasLt.so.{major}"))).unwrap();
        } else {
            // Some builds ship the SONAME file itself, no symlink.
            file(&format!("{dir}/libcublasLt.so.{major}"), "NVIDIA cublasLt 13 (plain file)", 0o700);
        }
    }
    o
}

/// Every file, directory and symlink under `dir` with its mode, contents' hash or link
/// target, sorted: two equal listings mean byte-identical trees.
pub fn tree_listing(dir: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            if md.file_type().is_symlink() {
                out.push(format!("{rel} -> {}", std::fs::read_link(&p).unwrap().display()));
            } else if md.is_dir() {
                out.push(format!("{rel}/ dir {:o}", md.mode() & 0o7777));
                stack.push(p);
            } else {
                let data = std::fs::read(&p).unwrap();
                let sum =
                    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
                out.push(format!("{rel} file {:o} {} {sum:016x}", md.mode() & 0o7777, data.len()));
            }
        }
    }
    out.sort();
    out
}

/// A TCP address on localhost that is free right now.
/// A token file in `dir` holding `token`, readable by its owner only (as servers demand).
pub fn token_file(dir: &Path, token: &str) -> PathBuf {
    let p = dir.join("token");
    std::fs::write(&p, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&p, <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600))
        .unwrap();
    p
}

pub fn free_tcp_address() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("tcp://{}", l.local_addr().unwrap())
}

// ---------------------------------------------------------------------------------------
// Trust tests (`tests/auth.rs`, `tests/badinput.rs`, `tests/faults.rs`, `tests/stress.rs`):
// servers with their own environment, Rust clients speaking the protocol directly, and
// processes looked up in /proc.

impl Server {
    /// Like [`Server::start`], with extra environment (e.g. `VGPU_LOG=error` to keep the
    /// expected complaints about bad input out of the test output).
    pub fn start_env(address: &str, backend: &[&str], extra: &[&str], envs: &[(&str, &str)]) -> Server {
        let child = Command::new(env!("CARGO_BIN_EXE_vgpu"))
            .arg("serve")
            .arg("--listen")
            .arg(address)
            .args(backend)
            .args(extra)
            .env("VGPU_LOG", "warn")
            // Kept copies go to a small directory of the tests', not the host's cache.
            .env("VGPU_BLOB_DIR", test_blob_dir())
            .env("VGPU_BLOB_CACHE_MB", "256")
            .envs(envs.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start vgpu serve");
        let s = Server { child, address: address.to_string() };
        s.wait_ready();
        s
    }

    /// A quiet sim server on a fresh unix socket under `root`.
    pub fn sim_quiet(root: &Path, extra: &[&str]) -> Server {
        let sock = root.join(format!("vgpu-q-{}.sock", std::process::id()));
        Self::start_env(&format!("unix:{}", sock.display()), &["--backend", "sim"], extra, &[("VGPU_LOG", "error")])
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's worker processes (its children), one per live session.
    pub fn workers(&self) -> Vec<u32> {
        children(self.pid())
    }
}

/// A `Hello` of this build, with `token`.
pub fn hello(token: &str) -> protocol::hello::Hello {
    protocol::hello::Hello {
        protocol_version: protocol::PROTOCOL_VERSION,
        wire_hash: protocol::WIRE_HASH,
        pid: std::process::id(),
        host: "test".into(),
        program: "trust-test".into(),
        token: token.into(),
    }
}

/// A Rust client session (what the shims use underneath), with a short silence limit.
pub fn rust_client(address: &str, token: &str) -> Result<transport::Conn, transport::Error> {
    let addr: transport::Address = address.parse().unwrap();
    let t = transport::Timeouts { silence: Duration::from_secs(4), ..Default::default() };
    transport::Conn::connect(&addr, &hello(token), t).map(|(c, _)| c)
}

/// A session at the unix socket `address` whose client passed `fd` as a segment of `len`
/// bytes.
#[allow(dead_code)]
pub fn session_with(address: &str, fd: std::os::fd::BorrowedFd<'_>, len: u64) -> transport::Conn {
    let addr: transport::Address = address.parse().unwrap();
    let t = transport::Timeouts { silence: Duration::from_secs(4), ..Default::default() };
    let stream = addr.connect(t.connect).unwrap();
    transport::send_segment(&stream, fd, len).unwrap();
    transport::Conn::handshake(stream, &addr, &hello(""), t).unwrap().0
}

/// A client of the unix socket at `address` whose frames go through rings in a shared
/// segment (as a `shm:` client's do), its segment kept alive beside it.
#[allow(dead_code)]
pub fn ring_client(address: &str) -> (transport::Conn, std::sync::Arc<transport::Segment>) {
    let seg = std::sync::Arc::new(transport::Segment::create(4 << 20).unwrap());
    let conn = session_with(address, seg.fd(), seg.len() as u64);
    assert_eq!(conn.call(0, &protocol::ops::shm_attached {}, &[], None).unwrap(), seg.len() as u64);
    conn.use_ring(seg.clone(), 0, 1 << 20).unwrap();
    (conn, seg)
}

/// Pids whose parent is `pid` (from /proc/*/stat).
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Some((ppid, state)) = stat(p)
            && ppid == pid
            && state != 'Z'
        {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// (parent pid, state) of a process, or `None` if it is gone.
pub fn stat(pid: u32) -> Option<(u32, char)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: parse after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    Some((ppid, state))
}

/// Whether `pid` is a live process (not gone, not a zombie awaiting its parent).
pub fn alive(pid: u32) -> bool {
    stat(pid).is_some_and(|(_, s)| s != 'Z' && s != 'X')
}

/// Resident memory of a process in KiB (VmRSS).
pub fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Send `sig` to `pid`.
pub fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().unwrap();
    assert!(st.success(), "kill -{sig} {pid}");
}

/// Poll `f` every 10 ms until it holds or `limit` passes; returns how long it took.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let t = Instant::now();
    loop {
        if f() {
            return Some(t.elapsed());
        }
        if t.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Where test servers keep copies (`server::blobs`), unless a test names its own
/// `VGPU_BLOB_DIR` (one that counts what its client offers and sends must).
pub fn test_blob_dir() -> PathBuf {
    std::env::temp_dir().join(format!("vgpu-test-blobs-{}", unsafe { libc::geteuid() }))
}

/// Calls of `op` that reached the server, from a `VGPU_TRACE=summary` report (0 if absent;
/// the report's time table comes before its "answered locally" lines).
pub fn trace_calls(stderr: &str, op: &str) -> u64 {
    stderr
        .lines()
        .find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some(op) && l.contains(" calls ")).then(|| w.next().unwrap().parse().unwrap())
        })
        .unwrap_or(0)
}

/// Replies whose bulk came back over the lanes, from a `VGPU_TRACE=summary` report (0 if
/// the report has no lanes line).
pub fn replies_back_over_lanes(stderr: &str) -> u64 {
    let back = stderr.lines().find_map(|l| l.split(" replies' bulk back").next().filter(|_| l.contains("back over")));
    back.and_then(|p| p.rsplit(' ').next()?.parse().ok()).unwrap_or(0)
}

// ---------------------------------------------------------------- TLS

pub struct Pki {
    /// The CA that signed the server's certificate.
    pub ca: PathBuf,
    /// A CA that did not.
    pub other_ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn test_ca(name: &str) -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    rcgen::CertifiedIssuer::self_signed(p, rcgen::KeyPair::generate().unwrap()).unwrap()
}

/// A test CA, a server certificate it signed for localhost and 127.0.0.1, and an
/// unrelated CA, as PEM files under `dir` (the key private, as `vgpu serve` demands).
pub fn pki(dir: &Path) -> Pki {
    let issuer = test_ca("vgpu test CA");
    let other = test_ca("some other CA");
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    p.distinguished_name.push(rcgen::DnType::CommonName, "vgpu test server");
    let cert = p.signed_by(&key, &issuer).unwrap();
    let pki = Pki {
        ca: dir.join("ca.pem"),
        other_ca: dir.join("other-ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    std::fs::write(&pki.ca, issuer.pem()).unwrap();
    std::fs::write(&pki.other_ca, other.pem()).unwrap();
    std::fs::write(&pki.cert, cert.pem()).unwrap();
    std::fs::write(&pki.key, key.serialize_pem()).unwrap();
    std::fs::set_permissions(&pki.key, <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600))
        .unwrap();
    pki
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A TLS address on localhost that is free right now.
pub fn free_tls_address() -> String {
    free_tcp_address().replace("tcp://", "tls://")
}

/// A sim server on a `tls://` address with the test PKI under `dir` and `token`, and that
/// address with the CA that checks it.
pub fn tls_sim_server(dir: &Path, token: &str, envs: &[(&str, &str)]) -> (Server, transport::Address, Pki) {
    let pki = pki(dir);
    let tok = token_file(dir, token);
    let address = free_tls_address();
    let mut envs = envs.to_vec();
    envs.push(("VGPU_LOG", "error"));
    let server = Server::start_env(
        &address,
        &["--backend", "sim"],
        &["--token-file", s(&tok), "--tls-cert", s(&pki.cert), "--tls-key", s(&pki.key)],
        &envs,
    );
    let host_port = address.trim_start_matches("tls://").to_string();
    let addr = transport::Address::Tls(transport::TlsTarget { host_port, ca: Some(pki.ca.clone()), name: None });
    (server, addr, pki)
}

/// A sim server on each kind of socket, with their addresses: unix (no token), TCP and TLS
/// (`token`). The servers run while this lives.
pub struct SocketServers {
    pub unix: transport::Address,
    pub tcp: transport::Address,
    pub tls: transport::Address,
    _servers: [Server; 3],
    _pki: Pki,
}

pub fn sim_servers_on_every_socket(dir: &Path, token: &str) -> SocketServers {
    let unix = Server::sim_quiet(dir, &[]);
    let tcp = Server::start_env(&free_tcp_address(), &["--backend", "sim"], &[], &[("VGPU_TOKEN", token)]);
    let (tls_server, tls, _pki) = tls_sim_server(dir, token, &[]);
    SocketServers {
        unix: unix.address.parse().unwrap(),
        tcp: tcp.address.parse().unwrap(),
        tls,
        _servers: [unix, tcp, tls_server],
        _pki,
    }
}

/// A C program driven line by line: commands on its stdin, its stdout's lines read with a
/// bound (a reader thread feeds a channel), so that a hung program fails its test instead of
/// hanging it. Killed when dropped.
pub struct Interactive {
    pub child: Child,
    stdin: Option<std::process::ChildStdin>,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Interactive {
    /// Start `cmd` (stdin and stdout piped, stderr dropped) and wait for its "ready" line.
    pub fn start(mut cmd: Command) -> Interactive {
        use std::io::BufRead;
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
        let stdin = child.stdin.take();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let p = Interactive { child, stdin, lines };
        assert_eq!(p.line(Duration::from_secs(10)), "ready");
        p
    }

    /// The next line, within `limit`.
    pub fn line(&self, limit: Duration) -> String {
        self.lines.recv_timeout(limit).unwrap_or_else(|e| panic!("no line from the program within {limit:?}: {e}"))
    }

    /// Write `cmd` and a newline to its stdin.
    pub fn send(&mut self, cmd: &str) {
        use std::io::Write;
        writeln!(self.stdin.as_mut().expect("stdin open"), "{cmd}").unwrap();
    }
}

impl Drop for Interactive {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Our libcuda.so.1 loaded into the test's own process against a sim server, initialised,
/// with the primary context of device 0 current: for tests that call it with the generated
/// C types. The process's environment is set for it, so a binary holds one such test.
#[allow(dead_code)]
pub struct InProcess {
    pub cuda: libloading::Library,
    pub primary: abi::cuda::CUcontext,
    _server: Server,
    _tmp: tempfile::TempDir,
}

#[allow(dead_code)]
impl InProcess {
    pub fn start() -> InProcess {
        use abi::cuda::{CUcontext, CUdevice, CUresult};
        let tmp = tempfile::tempdir().unwrap();
        let lib = lib_dir(tmp.path());
        let server = Server::sim_quiet(tmp.path(), &[]);
        unsafe {
            std::env::set_var("VGPU_SERVER", &server.address);
            std::env::set_var("VGPU_CONFIG", "/nonexistent");
        }
        let cuda = unsafe { libloading::Library::new(lib.join("libcuda.so.1")) }.unwrap();
        let mut primary = std::ptr::null_mut();
        unsafe {
            let init = cuda.get::<unsafe extern "C" fn(u32) -> CUresult>(b"cuInit").unwrap();
            let retain = cuda
                .get::<unsafe extern "C" fn(*mut CUcontext, CUdevice) -> CUresult>(b"cuDevicePrimaryCtxRetain")
                .unwrap();
            let set = cuda.get::<unsafe extern "C" fn(CUcontext) -> CUresult>(b"cuCtxSetCurrent").unwrap();
            assert_eq!(init(0), CUresult::CUDA_SUCCESS);
            assert_eq!(retain(&mut primary, 0), CUresult::CUDA_SUCCESS);
            assert_eq!(set(primary), CUresult::CUDA_SUCCESS);
        }
        InProcess { cuda, primary, _server: server, _tmp: tmp }
    }

    /// An entry point of the library, by name.
    pub fn get<T: Copy>(&self, name: &[u8]) -> T {
        *unsafe { self.cuda.get::<T>(name) }.unwrap()
    }
}
