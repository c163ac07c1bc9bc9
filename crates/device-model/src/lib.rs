//! What a client knows about the remote GPUs without asking: identity, attributes, limits.
//!
//! The server sends a [`Snapshot`] in its handshake reply; the NVML and CUDA shims both answer
//! identity queries from it, so they always tell the same story (same order, UUID, name, PCI
//! bus id, memory and compute capability).

use serde::{Deserialize, Serialize};

/// Number of `CUdevice_attribute` slots we carry (the enum ends well below this in CUDA 13.0).
pub const ATTRIBUTE_SLOTS: usize = 160;

/// CUdevice_attribute values the device model itself interprets.
pub mod attr {
    pub const MAX_THREADS_PER_BLOCK: usize = 1;
    pub const MULTIPROCESSOR_COUNT: usize = 16;
    pub const INTEGRATED: usize = 18;
    pub const PCI_BUS_ID: usize = 33;
    pub const PCI_DEVICE_ID: usize = 34;
    pub const PCI_DOMAIN_ID: usize = 50;
    pub const COMPUTE_CAPABILITY_MAJOR: usize = 75;
    pub const COMPUTE_CAPABILITY_MINOR: usize = 76;
    pub const UNIFIED_ADDRESSING: usize = 41;
    pub const COOPERATIVE_LAUNCH: usize = 95;
    pub const VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED: usize = 102;
}

/// One GPU as the server describes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Device {
    /// `nvmlDeviceGetName` / `cuDeviceGetName`.
    pub name: String,
    /// The 16 raw bytes of `CUuuid`; NVML prints them as `GPU-xxxxxxxx-xxxx-...`.
    pub uuid: [u8; 16],
    /// PCI identity; `bus_id()` formats it the way NVML and CUDA do.
    pub pci: Pci,
    /// Total memory in bytes as this session may use it (a quota lowers it).
    pub total_mem: u64,
    /// `CUdevice_attribute` values, indexed by attribute number (0 where unknown).
    pub attributes: Vec<i32>,
    /// Index of this device in the server's NVML enumeration.
    pub nvml_index: u32,
    /// Ordinal of this device in the server's CUDA enumeration.
    pub cuda_ordinal: u32,
    /// NVML identity strings that never change while the server runs.
    pub serial: String,
    pub vbios_version: String,
    pub board_part_number: String,
    pub minor_number: u32,
    pub architecture: u32,
    /// Which server (index into the client's server list) owns this device.
    #[serde(default)]
    pub server: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pci {
    pub domain: u32,
    pub bus: u32,
    pub device: u32,
    /// Combined device and vendor id, e.g. 0x233010DE.
    pub pci_device_id: u32,
    pub pci_subsystem_id: u32,
}

impl Pci {
    /// `00000000:01:00.0`, NVML's 32-bit-domain form.
    pub fn bus_id(&self) -> String {
        format!("{:08X}:{:02X}:{:02X}.0", self.domain, self.bus, self.device)
    }
    /// `0000:01:00.0`, the form `cuDeviceGetPCIBusId` writes.
    pub fn bus_id_short(&self) -> String {
        format!("{:04x}:{:02x}:{:02x}.0", self.domain, self.bus, self.device)
    }
    /// Whether `id` names this device in any of the forms NVML and CUDA print (case-blind).
    pub fn matches_bus_id(&self, id: &str) -> bool {
        let id = id.trim();
        [self.bus_id(), self.bus_id_short(), self.bus_id_legacy()].iter().any(|b| b.eq_ignore_ascii_case(id))
    }
    /// NVML's legacy 16-byte `busIdLegacy` form.
    pub fn bus_id_legacy(&self) -> String {
        format!("{:04X}:{:02X}:{:02X}.0", self.domain, self.bus, self.device)
    }
}

impl Device {
    pub fn attribute(&self, attr: usize) -> Option<i32> {
        self.attributes.get(attr).copied()
    }
    pub fn compute_capability(&self) -> (i32, i32) {
        (
            self.attribute(attr::COMPUTE_CAPABILITY_MAJOR).unwrap_or(0),
            self.attribute(attr::COMPUTE_CAPABILITY_MINOR).unwrap_or(0),
        )
    }
    /// `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
    pub fn uuid_string(&self) -> String {
        format_uuid(&self.uuid)
    }
}

pub fn format_uuid(u: &[u8; 16]) -> String {
    let h: Vec<String> = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "GPU-{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    )
}

/// What the server knows about itself and its GPUs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// NVML `nvmlSystemGetDriverVersion`, e.g. "580.159.04".
    pub driver_version: String,
    /// NVML `nvmlSystemGetNVMLVersion`, e.g. "13.580.159.04".
    pub nvml_version: String,
    /// `cuDriverGetVersion`, e.g. 13000.
    pub cuda_driver_version: i32,
    pub devices: Vec<Device>,
    /// Free-form description of the server ("vgpu 0.1.0 on host, backend cuda").
    pub server: String,
}

impl Snapshot {
    /// Merge several servers' snapshots into one ordered list (server order, then device
    /// order), each device tagged with its server's index.
    ///
    /// Every device keeps a distinct identity even when two servers describe the same GPU
    /// (two `vgpu serve` on one host) or GPUs at the same PCI address (two hosts): a UUID
    /// seen before is replaced by one derived from it and its occurrence
    /// ([`derived_uuid`]), and a PCI address seen before gets its domain raised by 0x100
    /// steps until it is unique. The first occurrence keeps its real identity. The result is
    /// deterministic, and NVML and CUDA both report the derived values (they merge the same
    /// way); servers are still addressed by their own indices, never by these values.
    pub fn merge(parts: Vec<Snapshot>) -> Option<Snapshot> {
        let mut it = parts.into_iter().enumerate();
        let (_, mut first) = it.next()?;
        for (i, part) in it {
            for mut d in part.devices {
                d.server = i as u32;
                first.devices.push(d);
            }
            first.server.push_str(" + ");
            first.server.push_str(&part.server);
        }
        distinct_identities(&mut first.devices);
        Some(first)
    }
}

/// Give every device a UUID and PCI address no earlier device has (see [`Snapshot::merge`]).
pub fn distinct_identities(devices: &mut [Device]) {
    for i in 1..devices.len() {
        let (before, rest) = devices.split_at_mut(i);
        let d = &mut rest[0];
        let mut k = 0u32;
        let original = d.uuid;
        while before.iter().any(|e| e.uuid == d.uuid) {
            k += 1;
            d.uuid = derived_uuid(&original, k);
        }
        let pci_taken =
            |p: &Pci| before.iter().any(|e| (e.pci.domain, e.pci.bus, e.pci.device) == (p.domain, p.bus, p.device));
        while pci_taken(&d.pci) {
            d.pci.domain = d.pci.domain.wrapping_add(0x100);
        }
        if let Some(a) = d.attributes.get_mut(attr::PCI_DOMAIN_ID) {
            *a = d.pci.domain as i32;
        }
    }
}

/// The UUID that stands for the `k`-th repeat (k >= 1) of `uuid`: a hash of both, marked
/// as an RFC 9562 version-8 ("vendor-specific") UUID so it is recognisably not a real GPU's.
pub fn derived_uuid(uuid: &[u8; 16], k: u32) -> [u8; 16] {
    let fnv = |salt: u8| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in uuid.iter().chain(&k.to_le_bytes()).chain(&[salt]) {
            h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
        h
    };
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&fnv(1).to_be_bytes());
    out[8..].copy_from_slice(&fnv(2).to_be_bytes());
    out[6] = (out[6] & 0x0f) | 0x80;
    out[8] = (out[8] & 0x3f) | 0x80;
    out
}

/// Parse `CUDA_VISIBLE_DEVICES` as CUDA does: a comma list of ordinals or UUID prefixes
/// (`GPU-...`); the list ends at the first entry that names no device or repeats one.
/// Returns, for each visible CUDA ordinal, the index into `devices`.
pub fn visible_devices(devices: &[Device], env: Option<&str>) -> Vec<usize> {
    let Some(spec) = env else {
        return (0..devices.len()).collect();
    };
    let mut out = Vec::new();
    for entry in spec.split(',') {
        let entry = entry.trim();
        let found = if let Ok(i) = entry.parse::<usize>() {
            (i < devices.len()).then_some(i)
        } else if entry.len() > 4 && (entry.starts_with("GPU-") || entry.starts_with("gpu-")) {
            let want = entry.to_ascii_lowercase();
            let matches: Vec<usize> = devices
                .iter()
                .enumerate()
                .filter(|(_, d)| d.uuid_string().to_ascii_lowercase().starts_with(&want))
                .map(|(i, _)| i)
                .collect();
            (matches.len() == 1).then(|| matches[0])
        } else {
            None
        };
        match found {
            Some(i) if !out.contains(&i) => out.push(i),
            _ => break,
        }
    }
    out
}

/// A plausible H100-like device for the `sim` backend and for tests.
pub fn sim_device(index: u32) -> Device {
    let mut attributes = vec![0i32; ATTRIBUTE_SLOTS];
    let set = |a: &mut Vec<i32>, k: usize, v: i32| a[k] = v;
    // Values of an H100 SXM/PCIe as the driver reports them (the ones applications read).
    for (k, v) in [
        (1usize, 1024),
        (2, 1024),
        (3, 1024),
        (4, 64),
        (5, 2147483647),
        (6, 65535),
        (7, 65535),
        (8, 49152),
        (9, 65536),
        (10, 32),
        (11, 2147483647),
        (12, 65536),
        (13, 1980000),
        (14, 512),
        (15, 1),
        (16, 132),
        (17, 0),
        (18, 0),
        (19, 1),
        (20, 0),
        (31, 1),
        (32, 1),
        (33, 0x18 + index as i32),
        (34, 0),
        (35, 0),
        (36, 2619000),
        (37, 5120),
        (38, 52428800),
        (39, 2048),
        (40, 1),
        (41, 1),
        (50, 0),
        (75, 9),
        (76, 0),
        (78, 1),
        (79, 1),
        (81, 233472),
        (82, 65536),
        (83, 1),
        (84, 1),
        (85, 0),
        (86, 1),
        (87, 64),
        (88, 1),
        (89, 1),
        (90, 1),
        (91, 0),
        (95, 1),
        (96, 1),
        (97, 232448),
        (98, 1),
        (99, 1),
        (100, 1),
        (101, 0),
        (102, 1),
        (103, 1),
        (104, 0),
        (105, 0),
        (106, 32),
        (111, 1),
        (112, 1),
        (113, 0),
        (114, 1),
        (115, 1),
        (116, 1),
        (117, 1),
        (118, 0),
        (119, 0),
        (120, 0),
        (121, 2),
        (122, 0),
        (123, 0),
        (124, 0),
        (125, 1),
        (126, 1),
        (127, 0),
        (128, 1),
        (129, 0),
    ] {
        set(&mut attributes, k, v);
    }
    let mut uuid = [0x5a, 0x6f, 0x3e, 0x11, 0x2c, 0x8d, 0x4b, 0x71, 0x9a, 0x10, 0x7e, 0x55, 0x33, 0x42, 0xd0, 0x00];
    uuid[15] = index as u8;
    Device {
        name: "NVIDIA H100 80GB HBM3".into(),
        uuid,
        pci: Pci { domain: 0, bus: 0x18 + index, device: 0, pci_device_id: 0x2330_10DE, pci_subsystem_id: 0x16C1_10DE },
        total_mem: 85_045_510_144,
        attributes,
        nvml_index: index,
        cuda_ordinal: index,
        serial: format!("165232400{index:04}"),
        vbios_version: "96.00.99.00.01".into(),
        board_part_number: "692-2G520-0200-000".into(),
        minor_number: index,
        architecture: 9, // NVML_DEVICE_ARCH_HOPPER
        server: 0,
    }
}

pub fn sim_snapshot(devices: u32) -> Snapshot {
    Snapshot {
        driver_version: "580.159.04".into(),
        nvml_version: "13.580.159.04".into(),
        cuda_driver_version: 13000,
        devices: (0..devices).map(sim_device).collect(),
        server: "vgpu sim".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_format() {
        let d = sim_device(0);
        let s = d.uuid_string();
        assert!(s.starts_with("GPU-5a6f3e11-2c8d-4b71-9a10-7e553342d000"), "{s}");
        assert_eq!(s.len(), 40);
    }

    #[test]
    fn bus_ids() {
        let d = sim_device(1);
        assert_eq!(d.pci.bus_id(), "00000000:19:00.0");
        assert_eq!(d.pci.bus_id_short(), "0000:19:00.0");
        assert!(d.pci.matches_bus_id("0000:19:00.0") && d.pci.matches_bus_id(" 00000000:19:00.0"));
        assert!(!d.pci.matches_bus_id("0000:18:00.0"));
    }

    #[test]
    fn visible_devices_rules() {
        let devs: Vec<_> = (0..4).map(sim_device).collect();
        assert_eq!(visible_devices(&devs, None), vec![0, 1, 2, 3]);
        assert_eq!(visible_devices(&devs, Some("2,0")), vec![2, 0]);
        assert_eq!(visible_devices(&devs, Some("")), Vec::<usize>::new());
        assert_eq!(visible_devices(&devs, Some("1,7,2")), vec![1]);
        assert_eq!(visible_devices(&devs, Some("0,0")), vec![0]);
        let u3 = devs[3].uuid_string();
        assert_eq!(visible_devices(&devs, Some(&u3)), vec![3]);
        // A prefix that matches several devices is ambiguous, as in CUDA.
        assert_eq!(visible_devices(&devs, Some("GPU-5a6f")), Vec::<usize>::new());
        // Sim UUIDs differ only in their last byte: a shorter prefix names them all.
        assert_eq!(visible_devices(&devs, Some(&u3[..38])), Vec::<usize>::new());
        assert_eq!(visible_devices(&devs, Some(&u3.to_ascii_uppercase().replace("GPU-", "gpu-"))), vec![3]);
        let u1 = devs[1].uuid_string();
        assert_eq!(visible_devices(&devs, Some(&format!("{u3},{u1}"))), vec![3, 1]);
    }

    #[test]
    fn merge_orders_by_server() {
        let m = Snapshot::merge(vec![sim_snapshot(2), sim_snapshot(2)]).unwrap();
        assert_eq!(m.devices.len(), 4);
        assert_eq!(m.devices[2].server, 1);
        assert_eq!(m.devices[2].cuda_ordinal, 0, "servers keep their own ordinals");
    }

    #[test]
    fn merge_keeps_identities_distinct() {
        // The same GPU twice (two servers on one host): the second gets a derived identity.
        let one = sim_snapshot(1);
        let m = Snapshot::merge(vec![one.clone(), one.clone()]).unwrap();
        let (a, b) = (&m.devices[0], &m.devices[1]);
        assert_eq!(a.uuid, one.devices[0].uuid, "the first occurrence keeps its UUID");
        assert_ne!(a.uuid, b.uuid);
        assert_eq!(b.uuid, derived_uuid(&a.uuid, 1));
        assert_eq!(b.uuid[6] >> 4, 8, "version 8: {}", b.uuid_string());
        assert_ne!(a.pci.bus_id(), b.pci.bus_id());
        assert_eq!(b.pci.bus_id(), "00000100:18:00.0");
        assert_eq!(b.attribute(attr::PCI_DOMAIN_ID), Some(0x100));
        // Deterministic: both shims (and every run) agree.
        assert_eq!(Snapshot::merge(vec![one.clone(), one.clone()]).unwrap(), m);
        // Three times: all distinct; a prefix of the real UUID picks only the real device.
        let m3 = Snapshot::merge(vec![one.clone(), one.clone(), one.clone()]).unwrap();
        let uuids: std::collections::HashSet<_> = m3.devices.iter().map(|d| d.uuid).collect();
        assert_eq!(uuids.len(), 3);
        let real = m3.devices[0].uuid_string();
        assert_eq!(visible_devices(&m3.devices, Some(&real)), vec![0]);
        let second = m3.devices[1].uuid_string();
        assert_eq!(visible_devices(&m3.devices, Some(&second)), vec![1]);
        // Distinct GPUs are left alone.
        let mut two = sim_snapshot(2);
        let before = two.devices.clone();
        distinct_identities(&mut two.devices);
        assert_eq!(two.devices, before);
    }
}
