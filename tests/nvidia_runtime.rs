//! NVIDIA's own runtime (`libcudart.so.13` and `.12` of the wheels pinned in
//! scripts/abi-wheels.txt) over vgpu's `libcuda.so.1` alone, against the sim: it asks for the driver's private
//! export tables, checks the driver's integrity answer against its own, loads, copies and
//! launches a kernel registered as nvcc's host code does, and exits (its exit handlers call
//! into the tables too). What nvcc's default static runtime,
//! PyTorch and CuPy need of the driver (docs/export-tables.md).
//!
//! The libraries are not in the repository: the test fetches the pinned wheels with pip into
//! target/ once, and says SKIP where it cannot.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// NVIDIA's runtime `file` from the pinned wheel `package` (its path in the wheel: `member`),
/// fetched once.
fn nvidia_cudart(package: &str, member: &str, file: &str) -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    let dir = if dir.is_absolute() { dir } else { root.join(dir) }.join("nvidia-cudart").join(package);
    let lib = dir.join(file);
    if lib.exists() {
        return Some(lib);
    }
    let pins = std::fs::read_to_string(root.join("scripts/abi-wheels.txt")).ok()?;
    let pin = pins.lines().find(|l| l.starts_with(&format!("{package}==")))?;
    std::fs::create_dir_all(&dir).ok()?;
    let req = dir.join("requirements.txt");
    std::fs::write(&req, format!("{pin}\n")).ok()?;
    // Fetch the wheel (its hash checked), then take the one file out of it.
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
             w = glob.glob(sys.argv[1] + '/*.whl')[0]\n\
             open(sys.argv[3], 'wb').write(zipfile.ZipFile(w).read(sys.argv[2]))",
        )
        .arg(&dir)
        .arg(member)
        .arg(&lib)
        .status()
        .ok()?;
    (took.success() && lib.exists()).then_some(lib)
}

#[test]
fn nvidia_runtime_13_runs_over_our_driver() {
    runs_over_our_driver("nvidia-cuda-runtime", "nvidia/cu13/lib/libcudart.so.13", "libcudart.so.13");
}

#[test]
fn nvidia_runtime_12_runs_over_our_driver() {
    runs_over_our_driver("nvidia-cuda-runtime-cu12", "nvidia/cuda_runtime/lib/libcudart.so.12", "libcudart.so.12");
}

fn runs_over_our_driver(package: &str, member: &str, file: &str) {
    let Some(cudart) = nvidia_cudart(package, member, file) else {
        eprintln!("SKIP: NVIDIA's {file} could not be fetched (pip and PyPI needed)");
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
    // The kernel was found and its launch reached the server (which, being the sim, cannot
    // run it: the launch itself is one-way and succeeds).
    assert!(stdout.contains("launch no error"), "{stdout}\n{stderr}");
    assert!(stderr.contains("cuLaunchKernel cuLaunchKernel"), "{stderr}");
}
