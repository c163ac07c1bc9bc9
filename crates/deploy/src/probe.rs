//! NVML and CUDA discovery through vgpu's shims, as `ollama gpu-discover` does it: load
//! `libnvidia-ml.so.1` and `libcuda.so.1`, call `nvmlInit_v2`/`nvmlSystemGetDriverVersion`/
//! `nvmlDeviceGetCount_v2` and `cuInit`/`cuDriverGetVersion`/`cuDeviceGetCount`/
//! `cuDeviceGetAttribute(75, 76, 18)`/`cuDeviceGetName`/`cuDeviceTotalMem_v2`/`cuDeviceGetPCIBusId`.
//!
//! Only vgpu's libraries are loaded (the doctor checks first). The doctor runs the probe
//! in a child process (`vgpu doctor --probe-nvml P --probe-cuda Q`), so a crash or a hang
//! in a library is a finding, not the end of the report.

use serde::{Deserialize, Serialize};
use std::ffi::{c_char, c_int, c_uint};
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NvmlProbe {
    /// `nvmlInit_v2`'s return (0 = success).
    pub init: u32,
    pub driver_version: Option<String>,
    pub device_count: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CudaDevice {
    pub name: String,
    pub cc_major: i32,
    pub cc_minor: i32,
    pub integrated: i32,
    pub total_mem: u64,
    pub pci_bus_id: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CudaProbe {
    /// `cuInit(0)`'s return (0 = success).
    pub init: u32,
    pub driver_version: Option<i32>,
    pub devices: Vec<CudaDevice>,
    /// A call after `cuInit` that failed: `(function, code)`.
    pub failed: Option<(String, u32)>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProbeOutput {
    pub nvml: Option<Result<NvmlProbe, String>>,
    pub cuda: Option<Result<CudaProbe, String>>,
}

fn load(path: &Path) -> Result<&'static libloading::Library, String> {
    // SAFETY: only vgpu's own shims are passed here; their initialisers are ours.
    let lib = unsafe { libloading::Library::new(path) }.map_err(|e| format!("{}: {e}", path.display()))?;
    // Never unloaded: the shim may have started threads.
    Ok(Box::leak(Box::new(lib)))
}

macro_rules! sym {
    ($lib:expr, $name:literal, $ty:ty) => {
        // SAFETY: the signature is the documented C one.
        *unsafe { $lib.get::<$ty>($name) }
            .map_err(|e| format!("{}: {e}", String::from_utf8_lossy(&$name[..$name.len() - 1])))?
    };
}

fn cstr(buf: &[u8]) -> String {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// NVML discovery in this process.
pub fn nvml(path: &Path) -> Result<NvmlProbe, String> {
    let lib = load(path)?;
    let init = sym!(lib, b"nvmlInit_v2\0", unsafe extern "C" fn() -> c_uint);
    let version = sym!(lib, b"nvmlSystemGetDriverVersion\0", unsafe extern "C" fn(*mut c_char, c_uint) -> c_uint);
    let count = sym!(lib, b"nvmlDeviceGetCount_v2\0", unsafe extern "C" fn(*mut c_uint) -> c_uint);
    let shutdown = sym!(lib, b"nvmlShutdown\0", unsafe extern "C" fn() -> c_uint);
    let mut out = NvmlProbe { init: unsafe { init() }, ..Default::default() };
    if out.init != 0 {
        return Ok(out);
    }
    let mut buf = [0u8; 80];
    if unsafe { version(buf.as_mut_ptr().cast(), buf.len() as c_uint) } == 0 {
        out.driver_version = Some(cstr(&buf));
    }
    let mut n: c_uint = 0;
    if unsafe { count(&mut n) } == 0 {
        out.device_count = Some(n);
    }
    unsafe { shutdown() };
    Ok(out)
}

/// CUDA driver-API discovery in this process.
pub fn cuda(path: &Path) -> Result<CudaProbe, String> {
    let lib = load(path)?;
    let init = sym!(lib, b"cuInit\0", unsafe extern "C" fn(c_uint) -> c_uint);
    let driver = sym!(lib, b"cuDriverGetVersion\0", unsafe extern "C" fn(*mut c_int) -> c_uint);
    let count = sym!(lib, b"cuDeviceGetCount\0", unsafe extern "C" fn(*mut c_int) -> c_uint);
    let get = sym!(lib, b"cuDeviceGet\0", unsafe extern "C" fn(*mut c_int, c_int) -> c_uint);
    let attr = sym!(lib, b"cuDeviceGetAttribute\0", unsafe extern "C" fn(*mut c_int, c_int, c_int) -> c_uint);
    let name = sym!(lib, b"cuDeviceGetName\0", unsafe extern "C" fn(*mut c_char, c_int, c_int) -> c_uint);
    let total = sym!(lib, b"cuDeviceTotalMem_v2\0", unsafe extern "C" fn(*mut usize, c_int) -> c_uint);
    let pci = sym!(lib, b"cuDeviceGetPCIBusId\0", unsafe extern "C" fn(*mut c_char, c_int, c_int) -> c_uint);
    let mut out = CudaProbe { init: unsafe { init(0) }, ..Default::default() };
    if out.init != 0 {
        return Ok(out);
    }
    fn fail(f: &str, r: c_uint, out: &mut CudaProbe) -> bool {
        if r != 0 && out.failed.is_none() {
            out.failed = Some((f.to_string(), r));
        }
        r == 0
    }
    let mut v: c_int = 0;
    if fail("cuDriverGetVersion", unsafe { driver(&mut v) }, &mut out) {
        out.driver_version = Some(v);
    }
    let mut n: c_int = 0;
    if !fail("cuDeviceGetCount", unsafe { count(&mut n) }, &mut out) {
        return Ok(out);
    }
    for i in 0..n {
        let mut dev: c_int = 0;
        if !fail("cuDeviceGet", unsafe { get(&mut dev, i) }, &mut out) {
            break;
        }
        let mut d = CudaDevice::default();
        let a = |which: c_int, out: &mut CudaProbe| {
            let mut x: c_int = 0;
            fail("cuDeviceGetAttribute", unsafe { attr(&mut x, which, dev) }, out);
            x
        };
        d.cc_major = a(75, &mut out);
        d.cc_minor = a(76, &mut out);
        d.integrated = a(18, &mut out);
        let mut buf = [0u8; 128];
        if fail("cuDeviceGetName", unsafe { name(buf.as_mut_ptr().cast(), 128, dev) }, &mut out) {
            d.name = cstr(&buf);
        }
        let mut bytes: usize = 0;
        if fail("cuDeviceTotalMem_v2", unsafe { total(&mut bytes, dev) }, &mut out) {
            d.total_mem = bytes as u64;
        }
        let mut buf = [0u8; 32];
        if unsafe { pci(buf.as_mut_ptr().cast(), 32, dev) } == 0 {
            d.pci_bus_id = Some(cstr(&buf).to_lowercase());
        }
        out.devices.push(d);
    }
    Ok(out)
}

/// The hidden `vgpu doctor --probe-nvml P --probe-cuda Q`: probe and print JSON.
pub fn run_in_process(nvml_path: Option<&Path>, cuda_path: Option<&Path>) -> ProbeOutput {
    ProbeOutput { nvml: nvml_path.map(nvml), cuda: cuda_path.map(cuda) }
}

/// Run the probe in a child process (`exe doctor --probe-...`), bounded by `timeout`.
/// Returns the result and the child's stderr (the shims' own messages).
pub fn run_child(
    exe: &Path,
    nvml_path: Option<&Path>,
    cuda_path: Option<&Path>,
    timeout: Duration,
) -> Result<(ProbeOutput, String), String> {
    use std::io::Read as _;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("doctor");
    if let Some(p) = nvml_path {
        cmd.arg("--probe-nvml").arg(p);
    }
    if let Some(p) = cuda_path {
        cmd.arg("--probe-cuda").arg(p);
    }
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", exe.display()))?;
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stdout.read_to_end(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let out = out_t.join().unwrap_or_default();
    let err = String::from_utf8_lossy(&err_t.join().unwrap_or_default()).trim().to_string();
    match status {
        None => Err(format!("the discovery probe hung for {}s and was killed", timeout.as_secs())),
        Some(st) if !st.success() => Err(format!("the discovery probe died ({st}){}", tail(&err))),
        Some(_) => serde_json::from_slice(&out)
            .map(|o| (o, err.clone()))
            .map_err(|e| format!("the discovery probe's answer is unreadable: {e}{}", tail(&err))),
    }
}

fn tail(s: &str) -> String {
    match s.lines().last() {
        Some(l) => format!(": {l}"),
        None => String::new(),
    }
}
