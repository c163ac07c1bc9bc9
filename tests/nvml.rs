//! NVML end to end: a C program linked against our libnvidia-ml.so.1 talks to
//! `vgpu serve --backend sim`.

mod common;
use common::*;
use std::time::Instant;

#[test]
fn nvml_reports_the_remote_device() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = lib_dir(tmp.path());
    let exe = compile_c("nvml_basic", tmp.path(), &lib, &["libnvidia-ml.so.1"]);
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
}

#[test]
fn nvml_init_fails_fast_without_a_server() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = lib_dir(tmp.path());
    let exe = compile_c("nvml_basic", tmp.path(), &lib, &["libnvidia-ml.so.1"]);
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
    let tmp = tempfile::tempdir().unwrap();
    let lib = lib_dir(tmp.path());
    let exe = compile_c("nvml_basic", tmp.path(), &lib, &["libnvidia-ml.so.1"]);
    let t = Instant::now();
    let out = run(&exe, &lib, "tcp://10.255.255.1:7070", &[]);
    assert!(t.elapsed().as_secs_f64() < 5.0, "took {:?}", t.elapsed());
    assert_eq!(out.status.code(), Some(3));
}
