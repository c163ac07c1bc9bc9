//! Faults: a client killed mid-work frees its session (the worker exits) within a second;
//! a server stopped or killed mid-work turns every client call into an error within five
//! seconds, and the client then exits cleanly; a busy server is told from a dead one by
//! its heartbeats.

mod common;
use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

/// A C client (`tests/c/faults.c`), driven line by line.
struct Client(Interactive);

impl Client {
    fn start(exe: &std::path::Path, lib: &std::path::Path, server: &str, mode: &str) -> Client {
        let mut cmd = Command::new(exe);
        cmd.arg(mode)
            .env("LD_LIBRARY_PATH", lib)
            .env("VGPU_SERVER", server)
            .env("VGPU_CONFIG", "/nonexistent")
            // Its 1 MiB copies go over lanes both ways whatever this machine's cores (and
            // however busy), so that a lost lane is one of the faults seen.
            .env("VGPU_LANES", "4")
            .env("VGPU_LANE_LAG_US", "0");
        Client(Interactive::start(cmd))
    }

    fn line(&self, limit: Duration) -> String {
        self.0.line(limit)
    }

    fn go(&mut self) {
        self.0.send("go");
    }

    /// Wait for a clean exit (status 0) within `limit`.
    fn exits_cleanly(&mut self, limit: Duration) {
        let t = Instant::now();
        loop {
            if let Some(st) = self.0.child.try_wait().unwrap() {
                assert!(st.success(), "client exit status {st}");
                return;
            }
            assert!(t.elapsed() < limit, "client still running after {limit:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The stall client's report: each call's result code and how long it took.
    fn report(&self) -> Vec<(String, i32, f64)> {
        let mut out = Vec::new();
        loop {
            let l = self.line(Duration::from_secs(15));
            if l == "exiting" {
                return out;
            }
            // "<call> -> <code> after <secs> s"
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 6, "{l}");
            out.push((f[0].to_string(), f[2].parse().unwrap(), f[4].parse().unwrap()));
        }
    }
}

struct Setup {
    _tmp: tempfile::TempDir,
    lib: std::path::PathBuf,
    exe: std::path::PathBuf,
    server: Server,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let lib = lib_dir(tmp.path());
    let exe = compile_c("faults", tmp.path(), &lib, &["libcuda.so.1"]);
    let server = Server::sim_quiet(tmp.path(), &[]);
    Setup { _tmp: tmp, lib, exe, server }
}

/// The one worker of a server that serves one client (the readiness probe's worker may
/// still be on its way out).
fn only_worker(server: &Server) -> u32 {
    assert!(wait_until(Duration::from_secs(3), || server.workers().len() == 1).is_some(), "{:?}", server.workers());
    server.workers()[0]
}

/// Every call failed with CUDA_ERROR_DEVICE_UNAVAILABLE, the first within `first` seconds
/// and the rest at once.
fn assert_all_failed(report: &[(String, i32, f64)], first: f64) {
    assert_eq!(report.len(), 4, "{report:?}");
    for (i, (call, code, secs)) in report.iter().enumerate() {
        assert_eq!(*code, 46, "{call} must fail with CUDA_ERROR_DEVICE_UNAVAILABLE: {report:?}");
        let limit = if i == 0 { first } else { 0.5 };
        assert!(*secs <= limit, "{call} took {secs} s (limit {limit}): {report:?}");
    }
}

#[test]
fn killed_client_frees_its_session_within_a_second() {
    // Over a plain socket, and with the frames in shared-memory rings (the socket only
    // their doorbell).
    for scheme in ["unix:", "shm:"] {
        let s = setup();
        let addr = s.server.address.replacen("unix:", scheme, 1);
        let mut client = Client::start(&s.exe, &s.lib, &addr, "loop");
        let worker = only_worker(&s.server);
        client.0.child.kill().unwrap(); // SIGKILL, mid-work
        let t = Instant::now();
        let _ = client.0.child.wait();
        let gone = wait_until(Duration::from_secs(3), || !alive(worker));
        assert!(
            gone.is_some_and(|d| d < Duration::from_secs(1)),
            "worker {worker} still there after {:?}",
            t.elapsed()
        );
        // The server goes on serving.
        let c = rust_client(&addr, "").unwrap();
        c.call(0, &protocol::ops::cuDevicePrimaryCtxRetain { dev: 0 }, &[], None).unwrap();
    }
}

#[test]
fn stopped_worker_turns_calls_into_errors_within_five_seconds() {
    // Over a plain socket, and with the frames in shared-memory rings (the socket only
    // their doorbell).
    for scheme in ["unix:", "shm:"] {
        let s = setup();
        let addr = s.server.address.replacen("unix:", scheme, 1);
        let mut client = Client::start(&s.exe, &s.lib, &addr, "stall");
        let worker = only_worker(&s.server);
        signal(worker, "STOP");
        client.go();
        let report = client.report();
        assert_all_failed(&report, 5.0);
        assert!(report[0].2 >= 3.0, "the first call waited for the silence limit: {report:?}");
        client.exits_cleanly(Duration::from_secs(3));
        // Resumed, the worker finds its client gone and exits.
        signal(worker, "CONT");
        assert!(wait_until(Duration::from_secs(2), || !alive(worker)).is_some(), "worker {worker} lingers");
    }
}

#[test]
fn killed_worker_turns_calls_into_errors_at_once() {
    // Over a plain socket, and with the frames in shared-memory rings (the socket only
    // their doorbell).
    for scheme in ["unix:", "shm:"] {
        let s = setup();
        let addr = s.server.address.replacen("unix:", scheme, 1);
        let mut client = Client::start(&s.exe, &s.lib, &addr, "stall");
        signal(only_worker(&s.server), "KILL");
        client.go();
        assert_all_failed(&client.report(), 1.0);
        client.exits_cleanly(Duration::from_secs(3));
        // A client at work when its worker dies: the failing call returns, the program ends.
        let mut busy = Client::start(&s.exe, &s.lib, &addr, "loop");
        signal(only_worker(&s.server), "KILL");
        let l = busy.line(Duration::from_secs(5));
        assert!(l.starts_with("lost 46 after"), "{l}");
        busy.exits_cleanly(Duration::from_secs(3));
    }
}

#[test]
fn killed_server_takes_its_sessions_down_at_once() {
    // Over a plain socket, and with the frames in shared-memory rings (the socket only
    // their doorbell).
    for scheme in ["unix:", "shm:"] {
        let mut s = setup();
        let addr = s.server.address.replacen("unix:", scheme, 1);
        let mut client = Client::start(&s.exe, &s.lib, &addr, "stall");
        let worker = only_worker(&s.server);
        signal(s.server.pid(), "KILL"); // `vgpu serve` itself, not the worker
        // Its workers die with it (their GPU memory with them)...
        assert!(wait_until(Duration::from_secs(1), || !alive(worker)).is_some(), "worker {worker} outlived its server");
        // ...and the client's next calls fail at once.
        client.go();
        assert_all_failed(&client.report(), 1.0);
        client.exits_cleanly(Duration::from_secs(3));
        s.server.stop();
    }
}

#[test]
fn stopped_listener_refuses_newcomers_within_five_seconds() {
    let s = setup();
    let nvml = compile_c("nvml_basic", s._tmp.path(), &s.lib, &["libnvidia-ml.so.1"]);
    let existing = rust_client(&s.server.address, "").unwrap();
    let ctx = existing.call(0, &protocol::ops::cuDevicePrimaryCtxRetain { dev: 0 }, &[], None).unwrap();
    signal(s.server.pid(), "STOP");
    let t = Instant::now();
    let out = run(&nvml, &s.lib, &s.server.address, &[]);
    let took = t.elapsed();
    let _ = Command::new("kill").args(["-CONT", &s.server.pid().to_string()]).status();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(took < Duration::from_secs(5), "nvmlInit_v2 took {took:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("stopped answering") && stderr.contains(&s.server.address), "{stderr}");
    // The session that was already served never noticed: its worker is its own process.
    existing.call(ctx, &protocol::ops::cuMemAlloc_v2 { bytesize: 4096 }, &[], None).unwrap();
    // Resumed, the server takes newcomers again.
    let out = run(&nvml, &s.lib, &s.server.address, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn busy_worker_is_not_taken_for_a_dead_one() {
    // A call that computes for longer than the client's silence limit succeeds: the worker
    // sends heartbeats while it works. (The sim computes sgemm on the CPU.)
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::sim_quiet(tmp.path(), &[]);
    let addr: transport::Address = server.address.parse().unwrap();
    let t = transport::Timeouts { silence: Duration::from_millis(1000), ..Default::default() };
    let (c, _) = transport::Conn::connect(&addr, &hello(""), t).unwrap();
    use protocol::ops;
    let ctx = c.call(0, &ops::cuDevicePrimaryCtxRetain { dev: 0 }, &[], None).unwrap();
    let (_, h) = c.call(ctx, &ops::cublasCreate_v2 {}, &[], None).unwrap();
    let func = protocol::cublas::FUNCS.iter().position(|f| f.name == "cublasSgemm_v2").unwrap() as u16;
    // Larger until one call takes well over the silence limit (how fast the sim computes
    // depends on the build and the machine).
    let (mut n, mut took, mut last) = (512u64, Duration::ZERO, 0);
    while took < t.silence * 3 / 2 && n <= 4096 {
        let bytes = n * n * 4;
        let m: Vec<u64> =
            (0..3).map(|_| c.call(ctx, &ops::cuMemAlloc_v2 { bytesize: bytes }, &[], None).unwrap()).collect();
        let ones: Vec<u8> = (0..n * n).flat_map(|_| 1f32.to_le_bytes()).collect();
        for &p in &m[..2] {
            c.call(ctx, &ops::cuMemcpyHtoD_v2 { dst: p }, &[&ones], None).unwrap();
        }
        // transa transb m n k alpha A lda B ldb beta C ldc; the scalars travel as bytes.
        let args = vec![0, 0, n, n, n, 0, m[0], n, m[1], n, 0, m[2], n];
        let scalars: Vec<u8> = [1f32, 0f32].iter().flat_map(|v| v.to_le_bytes()).collect();
        let start = Instant::now();
        c.call(ctx, &ops::cublas_call { func, handle: h, device_scalars: false, args, scalars }, &[], None).unwrap();
        c.call(ctx, &ops::cuCtxSynchronize {}, &[], None).unwrap();
        took = start.elapsed();
        let mut out = vec![0u8; 4];
        c.call(ctx, &ops::cuMemcpyDtoH_v2 { src: m[2], size: 4 }, &[], Some(&mut out)).unwrap();
        assert_eq!(f32::from_le_bytes(out.try_into().unwrap()), n as f32);
        for p in m {
            c.call(ctx, &ops::cuMemFree_v2 { dptr: p }, &[], None).unwrap();
        }
        // Aim at twice the silence limit: the work grows as n³.
        last = n;
        let aim = (2.0 * t.silence.as_secs_f64() / took.as_secs_f64().max(0.01)).cbrt();
        n = ((n as f64 * aim.clamp(1.1, 2.5)) as u64).div_ceil(64) * 64;
    }
    eprintln!("sgemm {last}: {took:?} with a silence limit of {:?}", t.silence);
    assert!(took > t.silence, "not a test of heartbeats: the call took only {took:?}");
}
