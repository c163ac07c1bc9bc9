//! NVML end to end: a C program linked against our libnvidia-ml.so.1 talks to
//! `vgpu serve --backend sim`.

mod common;
use common::*;
use std::time::Instant;

/// A fresh directory with the shims and `tests/c/<name>.c` built against our NVML.
fn built(name: &str) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let lib = lib_dir(tmp.path());
    let exe = compile_c(name, tmp.path(), &lib, &["libnvidia-ml.so.1"]);
    (tmp, lib, exe)
}

#[test]
fn nvml_reports_the_remote_device() {
    let (tmp, lib, exe) = built("nvml_basic");
    let server = Server::sim(tmp.path(), &["--devices", "2"]);
    let out = run(&exe, &lib, &server.address, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status);
    assert!(stderr.is_empty(), "unexpected stderr: {stderr}");
    let drv = stdout.lines().next().unwrap();
    let major: u32 = drv.split_whitespace().nth(1).unwrap().split('.').next().unwrap().parse().unwrap();
    assert!(major >= 570, "{drv}");
    assert!(drv.ends_with("devices 2"), "{drv}");
    let dev0 = stdout.lines().nth(1).unwrap();
    assert!(dev0.contains("name=NVIDIA H100"), "{dev0}");
    assert!(dev0.contains("uuid=GPU-"), "{dev0}");
    assert!(dev0.contains("bus=00000000:18:00.0"), "{dev0}");
    let total: u64 = dev0.split("total=").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    assert!(total > 0);
    assert!(stdout.contains("small buffer -> 7"), "{stdout}");
    // Forwarded with three enum arguments, three and four outputs, a count after an
    // argument; a NULL output passes as NULL (the sim answers the driver model as Linux's
    // NVML does: not supported), not as a bad argument.
    assert!(stdout.contains("health ecc 0=0 encoder 0=0,0,0 rows 0=0,0,0,0 pages 0=0 driver-model 3"), "{stdout}");
}

#[test]
fn nvml_init_fails_fast_without_a_server() {
    let (tmp, lib, exe) = built("nvml_basic");
    let gone = format!("unix:{}/nobody-listens.sock", tmp.path().display());
    let t = Instant::now();
    let out = run(&exe, &lib, &gone, &[]);
    assert!(t.elapsed().as_secs_f64() < 5.0);
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stdout));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<_> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line: {stderr}");
    assert!(lines[0].contains(&gone), "names the address: {stderr}");
}

#[test]
fn nvml_init_fails_fast_when_tcp_peer_is_unreachable() {
    // A non-routable address: connect must give up within the bounded timeout.
    let (_tmp, lib, exe) = built("nvml_basic");
    let t = Instant::now();
    let out = run(&exe, &lib, "tcp://10.255.255.1:7070", &[]);
    assert!(t.elapsed().as_secs_f64() < 5.0, "took {:?}", t.elapsed());
    assert_eq!(out.status.code(), Some(3));
}

/// `tests/c/nvml_monitor.c`, driven line by line.
struct Monitor(Interactive);

impl Monitor {
    fn start(exe: &std::path::Path, lib: &std::path::Path, server: &str) -> Monitor {
        let mut cmd = std::process::Command::new(exe);
        cmd.env("LD_LIBRARY_PATH", lib).env("VGPU_SERVER", server).env("VGPU_CONFIG", "/nonexistent");
        Monitor(Interactive::start(cmd))
    }

    /// Send `cmd`, return the code its answer starts with (each NVML call is bounded by the
    /// client's own timeouts; 30 s is far beyond them).
    fn ask(&mut self, cmd: &str) -> i32 {
        self.0.send(cmd);
        let l = self.0.line(std::time::Duration::from_secs(30));
        l.split_whitespace().nth(1).unwrap().parse().unwrap_or_else(|_| panic!("{l}"))
    }

    /// Ask `cmd` every 100 ms until it succeeds; how long that took, or None within `limit`.
    fn until_ok(&mut self, cmd: &str, limit: std::time::Duration) -> Option<std::time::Duration> {
        let t = Instant::now();
        while t.elapsed() < limit {
            if self.ask(cmd) == 0 {
                return Some(t.elapsed());
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        None
    }
}

#[test]
fn nvml_outlives_a_restart_of_its_server() {
    // Over a plain socket, and with a segment shared with the server (made again with the
    // session).
    for scheme in ["unix:", "shm:"] {
        let (tmp, lib, exe) = built("nvml_monitor");
        let mut server = Server::sim_quiet(tmp.path(), &[]);
        let address = server.address.replacen("unix:", scheme, 1);
        let mut m = Monitor::start(&exe, &lib, &address);
        assert_eq!(m.ask("init"), 0);
        assert_eq!(m.ask("query"), 0);
        server.stop();
        // Lost while the server is away (NVML_ERROR_GPU_IS_LOST, or not loaded once a
        // renewal found nobody), within the silence limit.
        let t = Instant::now();
        let code = m.ask("query");
        assert!(code == 15 || code == 9, "{scheme} query with the server gone gave {code}");
        assert!(t.elapsed().as_secs_f64() < 5.0, "{:?}", t.elapsed());
        let _again = Server::start_env(&server.address, &["--backend", "sim"], &[], &[("VGPU_LOG", "error")]);
        let took = m.until_ok("query", std::time::Duration::from_secs(10));
        assert!(took.is_some_and(|d| d <= client::RENEW_EVERY * 2), "{scheme}: no answer after the restart: {took:?}");
    }
}

#[test]
fn nvml_init_finds_a_server_that_started_later() {
    let (tmp, lib, exe) = built("nvml_monitor");
    let address = format!("unix:{}/later.sock", tmp.path().display());
    let mut m = Monitor::start(&exe, &lib, &address);
    assert_eq!(m.ask("init"), 9, "NVML_ERROR_DRIVER_NOT_LOADED while nobody listens");
    assert_eq!(m.ask("query"), 1, "NVML_ERROR_UNINITIALIZED: the init failed");
    let _server = Server::start_env(&address, &["--backend", "sim"], &[], &[("VGPU_LOG", "error")]);
    let took = m.until_ok("init", std::time::Duration::from_secs(10));
    assert!(took.is_some_and(|d| d <= client::RENEW_EVERY * 2), "init never found the server: {took:?}");
    assert_eq!(m.ask("query"), 0);
}
