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
        let child = Command::new(env!("CARGO_BIN_EXE_vgpu"))
            .arg("serve")
            .arg("--listen")
            .arg(address)
            .args(backend)
            .args(extra)
            .env("VGPU_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start vgpu serve");
        let s = Server { child, address: address.to_string() };
        s.wait_ready();
        s
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr: transport::Address = self.address.parse().unwrap();
        while Instant::now() < deadline {
            if addr.connect(Duration::from_millis(200)).is_ok() {
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
    Command::new(exe)
        .env("LD_LIBRARY_PATH", lib)
        .env("VGPU_SERVER", server)
        .env("VGPU_CONFIG", "/nonexistent")
        .envs(envs.iter().copied())
        .output()
        .expect("run test program")
}
