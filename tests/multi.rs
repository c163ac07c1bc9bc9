//! Several devices, several servers (`VGPU_SERVER=a,b`) end to end against sim servers:
//! one ordered device list in NVML, the driver API and the runtime; `CUDA_VISIBLE_DEVICES`
//! (ordinals and UUIDs) on top for CUDA only; 64 MiB device-to-device copies between every
//! ordered pair of devices, byte for byte; two servers describing the same GPU; `--gpus`.

mod common;
use common::*;
use std::path::Path;
use std::process::Output;

/// Two sim servers of `devices` devices each, with the given `--sim-id`s, and the
/// `VGPU_SERVER` value naming both.
fn two_servers(root: &Path, devices: &str, ids: [&str; 2]) -> (Server, Server, String) {
    let start = |name: &str, id: &str| {
        let addr = format!("unix:{}", root.join(name).display());
        Server::start(&addr, &["--backend", "sim"], &["--devices", devices, "--sim-id", id])
    };
    let (a, b) = (start("a.sock", ids[0]), start("b.sock", ids[1]));
    let both = format!("{},{}", a.address, b.address);
    (a, b, both)
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status);
    stdout
}

/// `(uuid, bus id)` of each `dev N uuid=... bus=...` line, bus ids in CUDA's short form.
fn devices(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter(|l| l.starts_with("dev "))
        .map(|l| {
            let field =
                |k: &str| l.split(&format!("{k}=")).nth(1).unwrap().split_whitespace().next().unwrap().to_string();
            let bus = field("bus").to_ascii_lowercase();
            // NVML writes a 32-bit domain (00000000:18:00.0), CUDA a 16-bit one (0000:18:00.0).
            let bus = if bus.len() == 16 { bus[4..].to_string() } else { bus };
            (field("uuid"), bus)
        })
        .collect()
}

struct Programs {
    nvml: std::path::PathBuf,
    driver: std::path::PathBuf,
    cudart: std::path::PathBuf,
    lib: std::path::PathBuf,
}

fn programs(root: &Path) -> Programs {
    let lib = lib_dir(root);
    Programs {
        nvml: compile_c("multi_nvml", root, &lib, &["libnvidia-ml.so.1"]),
        driver: compile_c("multi_driver", root, &lib, &["libcuda.so.1"]),
        cudart: compile_c("multi_cudart", root, &lib, &["libcudart.so.13"]),
        lib,
    }
}

fn run_arg(exe: &Path, lib: &Path, server: &str, arg: &str, envs: &[(&str, &str)]) -> Output {
    std::process::Command::new(exe)
        .arg(arg)
        .env("LD_LIBRARY_PATH", lib)
        .env("VGPU_SERVER", server)
        .env("VGPU_CONFIG", "/nonexistent")
        .env_remove("CUDA_VISIBLE_DEVICES")
        .envs(envs.iter().copied())
        .output()
        .expect("run test program")
}

/// The NVML view (which never depends on CUDA_VISIBLE_DEVICES).
fn nvml_devices(p: &Programs, server: &str) -> Vec<(String, String)> {
    let out = ok(&run_arg(&p.nvml, &p.lib, server, "", &[]));
    assert!(out.contains("done"), "{out}");
    devices(&out)
}

#[test]
fn four_devices_of_two_servers_in_one_order() {
    let tmp = tempfile::tempdir().unwrap();
    let p = programs(tmp.path());
    let (_a, _b, both) = two_servers(tmp.path(), "2", ["1", "2"]);
    let nvml = nvml_devices(&p, &both);
    assert_eq!(nvml.len(), 4, "{nvml:?}");
    // Server order, then each server's order: the sim ids sit in byte 14 of the UUIDs.
    let ids: Vec<&str> = nvml.iter().map(|(u, _)| &u[36..38]).collect();
    assert_eq!(ids, ["01", "01", "02", "02"], "{nvml:?}");
    let distinct: std::collections::HashSet<_> = nvml.iter().collect();
    assert_eq!(distinct.len(), 4, "{nvml:?}");
    // Stable: a second look gives the same list.
    assert_eq!(nvml_devices(&p, &both), nvml);

    let out = ok(&run_arg(&p.driver, &p.lib, &both, "64", &[]));
    assert_eq!(devices(&out), nvml, "the driver API lists what NVML lists\n{out}");
    for line in ["buffers ok", "vmm ok", "copies ok", "cross-server handles refused", "handles ok", "done"] {
        assert!(out.contains(line), "{line}\n{out}");
    }
    // Peer access only within a server; copies work between every pair regardless.
    assert!(out.contains("pair 0->1 ok peer-access=1"), "{out}");
    assert!(out.contains("pair 1->2 ok peer-access=0"), "{out}");
    assert!(out.contains("pair 3->0 ok peer-access=0"), "{out}");
    assert_eq!(out.lines().filter(|l| l.starts_with("pair ")).count(), 12, "{out}");
}

#[test]
fn runtime_sees_the_same_four_devices_and_copies_between_them() {
    let tmp = tempfile::tempdir().unwrap();
    let p = programs(tmp.path());
    let (_a, _b, both) = two_servers(tmp.path(), "2", ["1", "2"]);
    let nvml = nvml_devices(&p, &both);
    let out = ok(&run_arg(&p.cudart, &p.lib, &both, "64", &[]));
    assert_eq!(devices(&out), nvml, "the runtime lists what NVML lists\n{out}");
    assert_eq!(out.lines().filter(|l| l.starts_with("pair ")).count(), 12, "{out}");
    assert!(out.contains("pair 2->3 ok peer-access=1"), "{out}");
    assert!(out.contains("pair 0->3 ok peer-access=0"), "{out}");
    for line in ["copies ok", "done"] {
        assert!(out.contains(line), "{line}\n{out}");
    }
}

#[test]
fn cuda_visible_devices_picks_and_orders_across_servers() {
    let tmp = tempfile::tempdir().unwrap();
    let p = programs(tmp.path());
    let (_a, _b, both) = two_servers(tmp.path(), "2", ["1", "2"]);
    let nvml = nvml_devices(&p, &both);
    let pick = |idx: &[usize]| idx.iter().map(|&i| nvml[i].clone()).collect::<Vec<_>>();

    // Ordinals: CUDA device 0 is the second server's first GPU.
    let env = [("CUDA_VISIBLE_DEVICES", "2,0")];
    let out = ok(&run_arg(&p.driver, &p.lib, &both, "1", &env));
    assert!(out.contains("devices 2"), "{out}");
    assert_eq!(devices(&out), pick(&[2, 0]), "{out}");
    assert!(out.contains("copies ok") && out.contains("handles ok"), "{out}");
    let out = ok(&run_arg(&p.cudart, &p.lib, &both, "1", &env));
    assert_eq!(devices(&out), pick(&[2, 0]), "{out}");
    assert!(out.contains("copies ok"), "{out}");
    // NVML ignores it, as the real one does.
    let out = ok(&run_arg(&p.nvml, &p.lib, &both, "", &env));
    assert_eq!(devices(&out), nvml);

    // UUIDs.
    let spec = format!("{},{}", nvml[3].0, nvml[1].0);
    let env = [("CUDA_VISIBLE_DEVICES", spec.as_str())];
    let out = ok(&run_arg(&p.driver, &p.lib, &both, "1", &env));
    assert_eq!(devices(&out), pick(&[3, 1]), "{spec}\n{out}");
    let out = ok(&run_arg(&p.cudart, &p.lib, &both, "1", &env));
    assert_eq!(devices(&out), pick(&[3, 1]), "{spec}\n{out}");
}

#[test]
fn two_servers_of_the_same_gpu_are_two_devices() {
    // Equal sim ids: the same UUIDs, bus ids and device addresses, as two `vgpu serve` on
    // one host sharing its GPU would report.
    let tmp = tempfile::tempdir().unwrap();
    let p = programs(tmp.path());
    let (_a, _b, both) = two_servers(tmp.path(), "1", ["5", "5"]);
    let nvml = nvml_devices(&p, &both);
    assert_eq!(nvml.len(), 2, "{nvml:?}");
    assert_ne!(nvml[0].0, nvml[1].0, "the second occurrence gets a derived UUID");
    assert_ne!(nvml[0].1, nvml[1].1, "and a PCI domain of its own");
    assert_eq!(&nvml[1].0[18..19], "8", "a version-8 UUID: {}", nvml[1].0);
    assert!(nvml[1].1.starts_with("0100:"), "{nvml:?}");
    let out = ok(&run_arg(&p.driver, &p.lib, &both, "8", &[]));
    assert_eq!(devices(&out), nvml, "CUDA reports the derived identity too\n{out}");
    for line in ["buffers ok", "vmm ok", "pair 0->1 ok peer-access=0", "pair 1->0 ok", "handles ok", "done"] {
        assert!(out.contains(line), "{line}\n{out}");
    }
    // CUDA_VISIBLE_DEVICES can name the derived UUID.
    let spec = format!("{},{}", nvml[1].0, nvml[0].0);
    let out = ok(&run_arg(&p.driver, &p.lib, &both, "1", &[("CUDA_VISIBLE_DEVICES", spec.as_str())]));
    assert_eq!(devices(&out), vec![nvml[1].clone(), nvml[0].clone()], "{out}");
}

#[test]
fn gpus_option_serves_a_subset() {
    let tmp = tempfile::tempdir().unwrap();
    let p = programs(tmp.path());
    let all = Server::start(
        &format!("unix:{}", tmp.path().join("all.sock").display()),
        &["--backend", "sim"],
        &["--devices", "4"],
    );
    let full = nvml_devices(&p, &all.address);
    let some = Server::start(
        &format!("unix:{}", tmp.path().join("some.sock").display()),
        &["--backend", "sim"],
        &["--devices", "4", "--gpus", &format!("3,{}", full[1].0)],
    );
    let nvml = nvml_devices(&p, &some.address);
    assert_eq!(nvml, vec![full[3].clone(), full[1].clone()]);
    let out = ok(&run_arg(&p.driver, &p.lib, &some.address, "1", &[]));
    assert_eq!(devices(&out), nvml, "{out}");
    assert!(out.contains("copies ok"), "{out}");

    // A list that names no GPU of the host is refused at start.
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_vgpu"))
        .args(["serve", "--backend", "sim", "--devices", "2", "--gpus", "5"])
        .arg("--listen")
        .arg(format!("unix:{}", tmp.path().join("bad.sock").display()))
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--gpus 5"), "{}", String::from_utf8_lossy(&bad.stderr));
}

#[test]
fn cublas_on_a_device_of_the_second_server() {
    // Handles (context, stream, cuBLAS handle) all come from server 1 and carry its tag;
    // cuBLAS, which talks through libcuda's private ABI, must still reach them.
    let tmp = tempfile::tempdir().unwrap();
    let lib = lib_dir(tmp.path());
    let exe = compile_c("cublas_basic", tmp.path(), &lib, &["libcublas.so.13", "libcublasLt.so.13", "libcuda.so.1"]);
    let (_a, _b, both) = two_servers(tmp.path(), "2", ["1", "2"]);
    let out = run_arg(&exe, &lib, &both, "", &[("CUDA_VISIBLE_DEVICES", "3")]);
    let stdout = ok(&out);
    for line in ["settings ok", "sgemm host scalars ok", "sgemm device scalars ok", "deferred error 1", "done"] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
}
