//! The CUDA runtime (our libcudart.so.13 and .12 over our libcuda.so.1) end to end against
//! `vgpu serve --backend sim`: a C program doing what nvcc's host code does.

mod common;
use common::*;

fn check(major: &str, source: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let lib = lib_dir(tmp.path());
    let exe = compile_c(source, tmp.path(), &lib, &[&format!("libcudart.so.{major}")]);
    let server = Server::sim(tmp.path(), &["--devices", "2"]);
    let out = run(&exe, &lib, &server.address, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status);
    let first = stdout.lines().next().unwrap();
    let want_rt = if major == "13" { "runtime 13000 " } else { "runtime 12090 " };
    assert!(first.starts_with(want_rt), "{first}");
    assert!(first.contains("devices 2 current 0 name=NVIDIA H100 80GB HBM3"), "{first}");
    assert!(first.contains("cc=9.0 attr-cc=9 sms=132 integrated=0 pci=24"), "{first}");
    assert!(first.contains("bus=0000:18:00.0"), "{first}");
    let optin: u64 = first.split("optin=").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    assert!(optin > 48 * 1024, "{first}");
    for line in ["copies ok", "memset and 2D ok", "streams ok", "done"] {
        assert!(stdout.contains(line), "{line}\n{stdout}\n{stderr}");
    }
    // The launch reached the driver (module uploaded, function found; the sim cannot run
    // it and says so at the next synchronous call); an unregistered stub and a zero grid
    // are refused locally.
    assert!(stdout.contains("launch 0, then cudaErrorNotSupported;"), "{stdout}");
    assert!(stdout.contains("unregistered 98 invalid device function; zero grid 1; peek 1"), "{stdout}");
    assert!(stdout.contains("strings: out of memory | cudaErrorNotSupported | unrecognized error code"), "{stdout}");
}

#[test]
fn cudart13_on_sim() {
    check("13", "cudart_basic");
}

#[test]
fn cudart12_on_sim() {
    check("12", "cudart_basic12");
}

#[test]
fn cudart_without_server_reports_no_device() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = lib_dir(tmp.path());
    let exe = compile_c("cudart_basic", tmp.path(), &lib, &["libcudart.so.13"]);
    let out = run(&exe, &lib, &format!("unix:{}/none.sock", tmp.path().display()), &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("FAIL cudaGetDeviceCount(&n) -> 100 cudaErrorNoDevice"), "{stdout}");
}
