//! NVIDIA's own runtime (`libcudart.so.13` of the wheel pinned in scripts/abi-wheels.txt)
//! over vgpu's `libcuda.so.1` alone, against the sim: it asks for the driver's private
//! export tables, checks the driver's integrity answer against its own, loads, copies and
//! exits (its exit handlers call into the tables too). What nvcc's default static runtime,
//! PyTorch and CuPy need of the driver (docs/export-tables.md).
//!
//! The library is not in the repository: the test fetches the pinned wheel with pip into
//! target/ once (or takes `VGPU_TEST_NVIDIA_CUDART=<path>`), and says SKIP where it cannot.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// NVIDIA's libcudart.so.13, fetched once.
fn nvidia_cudart() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("VGPU_TEST_NVIDIA_CUDART") {
        return Some(PathBuf::from(p));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    let dir = if dir.is_absolute() { dir } else { root.join(dir) }.join("nvidia-cudart");
    let lib = dir.join("libcudart.so.13");
    if lib.exists() {
        return Some(lib);
    }
    let pins = std::fs::read_to_string(root.join("scripts/abi-wheels.txt")).ok()?;
    let pin = pins.lines().find(|l| l.starts_with("nvidia-cuda-runtime=="))?;
    std::fs::create_dir_all(&dir).ok()?;
    let req = dir.join("requirements.txt");
    std::fs::write(&req, format!("{pin}\n")).ok()?;
    // The same script both times: fetch the wheel (hash checked), then take the one file.
    let fetched = Command::new("python3")
        .args(["-m", "pip", "download", "--quiet", "--no-deps", "--require-hashes", "--only-binary=:all:"])
        .args(["--platform", "manylinux2014_x86_64", "--python-version", "3.11", "-d"])
        .arg(&dir)
        .arg("-r")
        .arg(&req)
        .env("PIP_DEFAULT_TIMEOUT", "30")
        .output()
        .ok()?;
    if !fetched.status.success() {
        eprintln!("pip: {}", String::from_utf8_lossy(&fetched.stderr));
        return None;
    }
    let took = Command::new("python3")
        .arg("-c")
        .arg(
            "import glob, sys, zipfile\n\
             w = glob.glob(sys.argv[1] + '/nvidia_cuda_runtime-*.whl')[0]\n\
             open(sys.argv[1] + '/libcudart.so.13', 'wb').write(zipfile.ZipFile(w).read('nvidia/cu13/lib/libcudart.so.13'))",
        )
        .arg(&dir)
        .status()
        .ok()?;
    (took.success() && lib.exists()).then_some(lib)
}

#[test]
fn nvidia_runtime_runs_over_our_driver() {
    let Some(cudart) = nvidia_cudart() else {
        eprintln!("SKIP: NVIDIA's libcudart.so.13 could not be fetched (pip and PyPI needed)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    // Only our driver: the runtime is NVIDIA's.
    let all = lib_dir(tmp.path());
    let lib = tmp.path().join("driver-only");
    std::fs::create_dir_all(&lib).unwrap();
    std::os::unix::fs::symlink(all.join("libcuda.so.1"), lib.join("libcuda.so.1")).unwrap();
    let exe = compile_c("nvidia_runtime", tmp.path(), &lib, &[]);
    let server = Server::sim_quiet(tmp.path(), &[]);
    let cudart = cudart.to_str().unwrap();
    let out = run_args(&exe, &lib, &server.address, &[cudart], &[("VGPU_TRACE", "1")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("devices 1 (no error)"), "{stdout}");
    assert!(stdout.contains("same 1"), "a megabyte there and back: {stdout}");
    // The runtime checked our integrity answer (and went on: the device count above).
    assert!(stderr.contains("export table: integrity check"), "{stderr}");
    assert!(!stderr.contains("vgpu does not have"), "every table it asked for: {stderr}");
    assert!(!stderr.contains("is not implemented"), "{stderr}");
}
