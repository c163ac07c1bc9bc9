//! The host's GPUs as the handshake describes them, computed once in the `vgpu serve`
//! parent: identity and attributes from the driver, and the NVML identity of each device
//! (matched by PCI bus id). Without NVML the CUDA facts still make a snapshot.

use super::{R, error_name, load_driver};
use abi::cuda::{CUdevice, CUdevice_attribute, CUuuid, CudaLib};
use abi::nvml::{NvmlLib, nvmlDevice_t, nvmlPciInfo_t};
use device_model::{ATTRIBUTE_SLOTS, Device, Pci, Snapshot, attr};
use std::os::raw::{c_char, c_uint};

pub fn snapshot() -> Result<Snapshot, String> {
    let lib = load_driver()?;
    let fail = |what: String, c: u32| format!("{what} failed: {}", error_name(lib, c));
    let mut cuda_version = 0;
    (|| cu!(lib, cuDriverGetVersion(&mut cuda_version)))().map_err(|c| fail("cuDriverGetVersion".into(), c))?;
    let mut count = 0;
    (|| cu!(lib, cuDeviceGetCount(&mut count)))().map_err(|c| fail("cuDeviceGetCount".into(), c))?;
    let nvml = Nvml::open();
    let mut devices = Vec::new();
    for i in 0..count {
        let mut d = cuda_device(lib, i).map_err(|c| fail(format!("describing CUDA device {i}"), c))?;
        if let Some(n) = &nvml {
            let bus = bus_id(lib, i).unwrap_or_else(|_| d.pci.bus_id_short());
            n.fill(&bus, &mut d);
        }
        devices.push(d);
    }
    let (driver_version, nvml_version) = match &nvml {
        Some(n) => (
            n.string(n.lib.nvmlSystemGetDriverVersion.as_ref().ok()),
            n.string(n.lib.nvmlSystemGetNVMLVersion.as_ref().ok()),
        ),
        None => {
            let d = std::fs::read_to_string("/proc/driver/nvidia/version")
                .ok()
                .and_then(|t| proc_driver_version(&t))
                .unwrap_or_default();
            let n = if d.is_empty() { String::new() } else { format!("{}.{d}", cuda_version / 1000) };
            (d, n)
        }
    };
    if let Some(n) = nvml {
        n.shutdown();
    }
    Ok(Snapshot {
        driver_version,
        nvml_version,
        cuda_driver_version: cuda_version,
        devices,
        server: format!("vgpu {} on {}, backend cuda", env!("CARGO_PKG_VERSION"), hostname()),
    })
}

/// Everything the driver says about device `i`.
fn cuda_device(lib: &CudaLib, i: i32) -> R<Device> {
    let mut dev: CUdevice = 0;
    cu!(lib, cuDeviceGet(&mut dev, i))?;
    let mut name = [0 as c_char; 256];
    cu!(lib, cuDeviceGetName(name.as_mut_ptr(), name.len() as i32, dev))?;
    let mut uuid = CUuuid { bytes: [0; 16] };
    if lib.cuDeviceGetUuid_v2.is_ok() {
        cu!(lib, cuDeviceGetUuid_v2(&mut uuid, dev))?;
    } else {
        cu!(lib, cuDeviceGetUuid(&mut uuid, dev))?;
    }
    let mut total = 0usize;
    cu!(lib, cuDeviceTotalMem_v2(&mut total, dev))?;
    let mut attributes = vec![0i32; ATTRIBUTE_SLOTS];
    for (a, slot) in attributes.iter_mut().enumerate().skip(1) {
        let mut v = 0;
        // Attributes this driver does not know stay 0.
        if (|| cu!(lib, cuDeviceGetAttribute(&mut v, CUdevice_attribute(a as u32), dev)))().is_ok() {
            *slot = v;
        }
    }
    let pci = Pci {
        domain: attributes[attr::PCI_DOMAIN_ID] as u32,
        bus: attributes[attr::PCI_BUS_ID] as u32,
        device: attributes[attr::PCI_DEVICE_ID] as u32,
        pci_device_id: 0,
        pci_subsystem_id: 0,
    };
    Ok(Device {
        name: c_string(&name),
        uuid: uuid.bytes.map(|b| b as u8),
        pci,
        total_mem: total as u64,
        attributes,
        nvml_index: i as u32,
        cuda_ordinal: i as u32,
        serial: String::new(),
        vbios_version: String::new(),
        board_part_number: String::new(),
        minor_number: i as u32,
        architecture: 0,
        server: 0,
    })
}

/// `0000:01:00.0`, as NVML accepts it.
fn bus_id(lib: &CudaLib, i: i32) -> R<String> {
    let mut dev: CUdevice = 0;
    cu!(lib, cuDeviceGet(&mut dev, i))?;
    let mut b = [0 as c_char; 64];
    cu!(lib, cuDeviceGetPCIBusId(b.as_mut_ptr(), b.len() as i32, dev))?;
    Ok(c_string(&b))
}

fn c_string(b: &[c_char]) -> String {
    let bytes: Vec<u8> = b.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The version in `/proc/driver/nvidia/version`'s first line
/// (`NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.95.05  Tue ...`).
pub fn proc_driver_version(text: &str) -> Option<String> {
    let line = text.lines().next()?;
    line.split_whitespace()
        .find(|w| w.contains('.') && w.chars().all(|c| c.is_ascii_digit() || c == '.'))
        .map(str::to_string)
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return "unknown host".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// NVML, initialised, for the duration of the snapshot.
struct Nvml {
    lib: NvmlLib,
}

type StringFn = unsafe extern "C" fn(*mut c_char, c_uint) -> abi::nvml::nvmlReturn_t;
type DevStringFn = unsafe extern "C" fn(nvmlDevice_t, *mut c_char, c_uint) -> abi::nvml::nvmlReturn_t;
type DevUintFn = unsafe extern "C" fn(nvmlDevice_t, *mut c_uint) -> abi::nvml::nvmlReturn_t;

impl Nvml {
    fn open() -> Option<Nvml> {
        let lib = match unsafe { NvmlLib::new("libnvidia-ml.so.1") } {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("cannot load libnvidia-ml.so.1 ({e}): describing devices from CUDA alone");
                return None;
            }
        };
        let r = lib.nvmlInit_v2.as_ref().ok().map(|f| unsafe { f() }.0);
        if r != Some(0) {
            tracing::warn!("nvmlInit_v2 failed ({r:?}): describing devices from CUDA alone");
            return None;
        }
        Some(Nvml { lib })
    }

    fn shutdown(self) {
        if let Ok(f) = self.lib.nvmlShutdown.as_ref() {
            unsafe { f() };
        }
        // Dropping the library after shutdown unloads it; NVML allows that.
    }

    fn string(&self, f: Option<&StringFn>) -> String {
        let mut b = [0 as c_char; 96];
        match f {
            Some(f) if unsafe { f(b.as_mut_ptr(), b.len() as c_uint) }.0 == 0 => c_string(&b),
            _ => String::new(),
        }
    }

    fn dev_string(&self, h: nvmlDevice_t, f: Option<&DevStringFn>) -> String {
        let mut b = [0 as c_char; 96];
        match f {
            Some(f) if unsafe { f(h, b.as_mut_ptr(), b.len() as c_uint) }.0 == 0 => c_string(&b),
            _ => String::new(),
        }
    }

    fn dev_uint(&self, h: nvmlDevice_t, f: Option<&DevUintFn>) -> Option<u32> {
        let mut v: c_uint = 0;
        let f = f?;
        (unsafe { f(h, &mut v) }.0 == 0).then_some(v)
    }

    /// The NVML identity of the device at `bus` (`domain:bus:device.function`).
    fn fill(&self, bus: &str, d: &mut Device) {
        let l = &self.lib;
        let Ok(bus_c) = std::ffi::CString::new(bus) else {
            return;
        };
        let mut h: nvmlDevice_t = std::ptr::null_mut();
        let found = l.nvmlDeviceGetHandleByPciBusId_v2.as_ref().ok().map(|f| unsafe { f(bus_c.as_ptr(), &mut h) }.0);
        if found != Some(0) {
            tracing::warn!("NVML does not know the device at {bus} ({found:?})");
            return;
        }
        if let Some(i) = self.dev_uint(h, l.nvmlDeviceGetIndex.as_ref().ok()) {
            d.nvml_index = i;
        }
        if let Some(m) = self.dev_uint(h, l.nvmlDeviceGetMinorNumber.as_ref().ok()) {
            d.minor_number = m;
        }
        if let Some(a) = self.dev_uint(h, l.nvmlDeviceGetArchitecture.as_ref().ok()) {
            d.architecture = a;
        }
        d.serial = self.dev_string(h, l.nvmlDeviceGetSerial.as_ref().ok());
        d.vbios_version = self.dev_string(h, l.nvmlDeviceGetVbiosVersion.as_ref().ok());
        d.board_part_number = self.dev_string(h, l.nvmlDeviceGetBoardPartNumber.as_ref().ok());
        let mut pci = nvmlPciInfo_t::default();
        if l.nvmlDeviceGetPciInfo_v3.as_ref().ok().map(|f| unsafe { f(h, &mut pci) }.0) == Some(0) {
            d.pci.pci_device_id = pci.pciDeviceId;
            d.pci.pci_subsystem_id = pci.pciSubSystemId;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_version_from_proc() {
        let t = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.95.05  Release Build  (dvs-builder@U16-I3-B14-4-1)  Thu Sep 25 2025\nGCC version:  gcc version 12.2.0\n";
        assert_eq!(proc_driver_version(t).as_deref(), Some("580.95.05"));
        assert_eq!(proc_driver_version("garbage"), None);
        assert_eq!(proc_driver_version(""), None);
    }

    #[test]
    fn c_strings_stop_at_nul() {
        let b: Vec<c_char> = b"NVIDIA H100\0junk".iter().map(|&c| c as c_char).collect();
        assert_eq!(c_string(&b), "NVIDIA H100");
        let b: Vec<c_char> = b"no nul".iter().map(|&c| c as c_char).collect();
        assert_eq!(c_string(&b), "no nul");
    }
}
