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
    assert!(stdout.contains("pool threshold kept"), "{stdout}");
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

/// One story: the runtime's device properties, NVML and the driver API agree on name,
/// memory and PCI bus id for the same device.
#[test]
fn runtime_nvml_and_driver_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = lib_dir(tmp.path());
    let server = Server::sim(tmp.path(), &[]);
    let field = |s: &str, k: &str| {
        s.split(&format!("{k}="))
            .nth(1)
            .unwrap_or_else(|| panic!("{k} in {s}"))
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    let rt = compile_c("cudart_basic", tmp.path(), &lib, &["libcudart.so.13"]);
    let rt_out = String::from_utf8_lossy(&run(&rt, &lib, &server.address, &[]).stdout).to_string();
    let nvml = compile_c("nvml_basic", tmp.path(), &lib, &["libnvidia-ml.so.1"]);
    let nvml_out = String::from_utf8_lossy(&run(&nvml, &lib, &server.address, &[]).stdout).to_string();
    let drv = compile_c("driver_basic", tmp.path(), &lib, &["libcuda.so.1"]);
    let drv_out = String::from_utf8_lossy(&run(&drv, &lib, &server.address, &[]).stdout).to_string();
    let (r, n, d) = (rt_out.lines().next().unwrap(), nvml_out.lines().nth(1).unwrap(), drv_out.lines().next().unwrap());
    assert_eq!(field(r, "total"), field(n, "total"), "{r}\n{n}");
    assert_eq!(field(r, "total"), field(d, "total"), "{r}\n{d}");
    assert_eq!(field(r, "bus"), field(d, "bus"));
    // NVML prints the 8-digit domain form, CUDA the 4-digit one.
    assert_eq!(field(r, "bus").to_ascii_uppercase(), field(n, "bus")[4..]);
    assert!(
        r.contains("name=NVIDIA H100 80GB HBM3")
            && n.contains("name=NVIDIA H100 80GB HBM3")
            && d.contains("name=NVIDIA H100 80GB HBM3")
    );
}
