//! cuBLAS end to end: a C program linked against our libcublas.so.13 (and .12),
//! libcublasLt and libcuda.so.1 talks to `vgpu serve --backend sim`, whose CPU SGEMM checks
//! that arguments and scalars (host and device pointer mode) arrive intact.

mod common;
use common::*;

fn run_basic(major: u32) {
    let tmp = tempfile::tempdir().unwrap();
    let lib = lib_dir(tmp.path());
    let blas = format!("libcublas.so.{major}");
    let lt = format!("libcublasLt.so.{major}");
    let exe = compile_c("cublas_basic", tmp.path(), &lib, &[&blas, &lt, "libcuda.so.1"]);
    let server = Server::sim(tmp.path(), &[]);
    let out = run(&exe, &lib, &server.address, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status);
    let version = stdout.lines().find(|l| l.starts_with("version ")).unwrap();
    assert!(version.contains(&format!("major {major} ")), "{version}");
    for line in [
        "status 0 CUBLAS_STATUS_SUCCESS:",
        "status 15 CUBLAS_STATUS_NOT_SUPPORTED:",
        "settings ok",
        "sgemm host scalars ok",
        "sgemm device scalars ok",
        "sgemm strided batched ok",
        "gemmex ok",
        "deferred error 1", // CUDA_ERROR_INVALID_VALUE, from cublasSetStream's bad stream
        "snrm2 -> 15",
        "done",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    // The stub names itself once; nothing else is logged.
    let lines: Vec<_> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "stderr:\n{stderr}");
    assert!(lines[0].contains("cublasSnrm2_v2 is not implemented"), "{stderr}");
}

#[test]
fn cublas13_on_sim() {
    run_basic(13);
}

#[test]
fn cublas12_on_sim() {
    run_basic(12);
}

#[test]
fn cublas_create_fails_cleanly_without_a_server() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = lib_dir(tmp.path());
    let exe = compile_c("cublas_basic", tmp.path(), &lib, &["libcublas.so.13", "libcublasLt.so.13", "libcuda.so.1"]);
    let gone = format!("unix:{}/nobody.sock", tmp.path().display());
    let t = std::time::Instant::now();
    let out = run(&exe, &lib, &gone, &[]);
    assert!(t.elapsed().as_secs_f64() < 10.0);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("cublasCreate_v2(&h) -> CUBLAS_STATUS_NOT_INITIALIZED"), "{stdout}");
    assert_eq!(out.status.code(), Some(1));
}
