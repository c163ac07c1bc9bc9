//! NVML and CUDA discovery through the shims, checked against Ollama's filters.

use super::{Doctor, ProbeMode, ServiceView, V12_ARCHS, V13_ARCHS, short};
use crate::ollama::{self, CudaDir};
use crate::probe::{self, ProbeOutput};
use device_model::Snapshot;
use std::path::{Path, PathBuf};

impl Doctor<'_> {
    /// The first of `candidates` that is vgpu's.
    fn pick(&mut self, candidates: Vec<Option<PathBuf>>) -> Option<PathBuf> {
        candidates.into_iter().flatten().find(|p| self.inspect(p).is_vgpu())
    }

    pub(super) fn discovery(&mut self, snapshot: Option<&Snapshot>, ollama: Option<&Path>, service: &ServiceView) {
        let area = "discovery";
        let dirs = ollama.map(ollama::cuda_dirs).unwrap_or_default();
        let Some(snap) = snapshot else {
            self.r.warn(
                area,
                "discovery-skipped",
                "NVML and CUDA discovery not tried: no server answered".into(),
                "fix the server findings above first",
            );
            return;
        };
        // The libraries Ollama's runners would load (newest folder first), else a plain
        // process's, else vgpu's own.
        let ldpath = self.o.env.get("LD_LIBRARY_PATH").cloned().unwrap_or_default();
        let service_ld = service.env.get("LD_LIBRARY_PATH").cloned().unwrap_or_default();
        let cands = |name: &str, this: &mut Self| {
            let mut v = Vec::new();
            for d in dirs.iter().rev() {
                let p = format!(
                    "{}:{}:{service_ld}",
                    short(&this.o.root.inside(ollama.unwrap())),
                    short(&this.o.root.inside(&d.path))
                );
                v.push(this.loader.resolve(name, &p).hit.map(|h| h.path));
            }
            v.push(this.loader.resolve(name, &ldpath).hit.map(|h| h.path));
            v.push(this.lib_dir().map(|d| d.join(name)));
            v
        };
        let nv = cands("libnvidia-ml.so.1", self);
        let cu = cands("libcuda.so.1", self);
        let nvml_lib = self.pick(nv);
        let cuda_lib = self.pick(cu);
        let out: Option<(ProbeOutput, String)> = match (&self.o.probe, nvml_lib.is_some() || cuda_lib.is_some()) {
            (ProbeMode::Off, _) | (_, false) => None,
            (ProbeMode::InProcess, true) => {
                Some((probe::run_in_process(nvml_lib.as_deref(), cuda_lib.as_deref()), String::new()))
            }
            (ProbeMode::Child(exe), true) => {
                match probe::run_child(exe, nvml_lib.as_deref(), cuda_lib.as_deref(), self.o.timeout * 5) {
                    Ok(o) => Some(o),
                    Err(e) => {
                        self.r.fail(
                            area,
                            "probe-failed",
                            e,
                            "run with VGPU_LOG=debug for the shims' own messages; report it as a vgpu bug",
                        );
                        None
                    }
                }
            }
        };
        if nvml_lib.is_none() && cuda_lib.is_none() && !matches!(self.o.probe, ProbeMode::Off) {
            self.r.warn(
                area,
                "discovery-skipped",
                "no vgpu libnvidia-ml.so.1/libcuda.so.1 to load (the doctor loads only vgpu's); judging the server's own report".into(),
                "install vgpu's libraries (vgpu install ollama|system), or pass --lib-dir DIST/lib",
            );
        }
        let stderr_note = |e: &str| e.lines().last().map(|l| format!(" ({l})")).unwrap_or_default();
        // The driver version and devices Ollama would see: from the shims when probed, else
        // from the handshake (the same snapshot the shims report from).
        let mut driver = Some(snap.driver_version.clone());
        let mut devices: Vec<(String, i32, i32, i32, u64)> = snap
            .devices
            .iter()
            .map(|d| {
                let (ma, mi) = d.compute_capability();
                (d.name.clone(), ma, mi, d.attribute(device_model::attr::INTEGRATED).unwrap_or(0), d.total_mem)
            })
            .collect();
        let mut nvml_count = None;
        if let Some((po, err)) = &out {
            let nvml_shown = nvml_lib.as_deref().map(|p| self.shown(p)).unwrap_or_default();
            match &po.nvml {
                Some(Err(e)) => self.r.fail(area, "nvml-load-failed", e.clone(), "reinstall vgpu's libnvidia-ml.so.1"),
                Some(Ok(n)) if n.init != 0 => {
                    driver = None;
                    self.r.fail(
                        area,
                        "nvml-init-failed",
                        format!("nvmlInit_v2 through {nvml_shown} returned {}{}", n.init, stderr_note(err)),
                        "see the server findings; VGPU_LOG=debug shows the shim's view",
                    );
                }
                Some(Ok(n)) => {
                    driver = n.driver_version.clone();
                    nvml_count = n.device_count;
                    self.r.ok(
                        area,
                        format!(
                            "NVML through {nvml_shown}: driver {}, {} device(s)",
                            n.driver_version.as_deref().unwrap_or("?"),
                            n.device_count.map(|c| c.to_string()).unwrap_or("?".into())
                        ),
                    );
                }
                None => {}
            }
            let cuda_shown = cuda_lib.as_deref().map(|p| self.shown(p)).unwrap_or_default();
            match &po.cuda {
                Some(Err(e)) => self.r.fail(area, "cuda-load-failed", e.clone(), "reinstall vgpu's libcuda.so.1"),
                Some(Ok(c)) if c.init != 0 => {
                    devices.clear();
                    self.r.fail(
                        area,
                        "cuda-init-failed",
                        format!("cuInit through {cuda_shown} returned {}{}", c.init, stderr_note(err)),
                        "see the server findings; VGPU_LOG=debug shows the shim's view",
                    );
                }
                Some(Ok(c)) => {
                    devices = c
                        .devices
                        .iter()
                        .map(|d| (d.name.clone(), d.cc_major, d.cc_minor, d.integrated, d.total_mem))
                        .collect();
                    let list: Vec<String> = c
                        .devices
                        .iter()
                        .enumerate()
                        .map(|(i, d)| {
                            format!(
                                "{i}: {} cc {}.{} {} MiB {}",
                                d.name,
                                d.cc_major,
                                d.cc_minor,
                                d.total_mem >> 20,
                                d.pci_bus_id.as_deref().unwrap_or("")
                            )
                        })
                        .collect();
                    let v = c.driver_version.unwrap_or(0);
                    self.r.ok(
                        area,
                        format!(
                            "CUDA through {cuda_shown}: driver API {}.{}, {}",
                            v / 1000,
                            v % 1000 / 10,
                            list.join("; ")
                        ),
                    );
                    if let Some((f, code)) = &c.failed {
                        self.r.fail(
                            area,
                            "cuda-call-failed",
                            format!("{f} returned {code}"),
                            "report it as a vgpu bug (VGPU_TRACE=1 shows the call)",
                        );
                    }
                    if c.devices.is_empty() {
                        let cvd = service.env.get("CUDA_VISIBLE_DEVICES").or(self.o.env.get("CUDA_VISIBLE_DEVICES"));
                        self.r.fail(
                            area,
                            "no-devices",
                            format!(
                                "cuDeviceGetCount says 0{}",
                                cvd.map(|v| format!(" (CUDA_VISIBLE_DEVICES={v})")).unwrap_or_default()
                            ),
                            "check CUDA_VISIBLE_DEVICES and the server's devices",
                        );
                    }
                    if let Some(n) = nvml_count
                        && n as usize != c.devices.len()
                    {
                        self.r.warn(
                            area,
                            "device-count-mismatch",
                            format!("NVML sees {n} device(s), CUDA {}", c.devices.len()),
                            "check CUDA_VISIBLE_DEVICES (it filters CUDA, not NVML)",
                        );
                    }
                }
                None => {}
            }
        }
        self.filters(driver.as_deref(), &devices, &dirs);
    }

    /// Ollama's filters (ollama-discovery.md §3): the NVML driver major, compute capability
    /// against each folder's architectures, memory, integrated GPUs.
    pub(super) fn filters(&mut self, driver: Option<&str>, devices: &[(String, i32, i32, i32, u64)], dirs: &[CudaDir]) {
        let area = "discovery";
        let has = |n: &str| dirs.iter().any(|d| d.name == n);
        let v12 = dirs.iter().find(|d| d.name == "cuda_v12").map(CudaDir::runtime_version);
        if let Some(drv) = driver {
            let major = drv.split('.').next().and_then(|m| m.trim().parse::<u32>().ok());
            match major {
                None => self.r.fail(
                    area,
                    "driver-version-unparseable",
                    format!("NVML reports driver {drv:?}: Ollama reads the number before the first '.', finds none and drops the GPU as too old"),
                    "report it as a vgpu bug: the server must pass the GPU host's driver version through",
                ),
                Some(m) if m < 570 => {
                    let mut why = Vec::new();
                    if m < 550 {
                        why.push("Ollama drops every GPU from cuda_v12 (runtime 12.4+, compressed kernels) below 550".to_string());
                    }
                    why.push(format!(
                        "below 570 it drops GPUs with compute capability < 7.0 from cuda_v12{}",
                        v12.map(|(a, b)| format!(" (runtime {a}.{b})")).unwrap_or_default()
                    ));
                    why.push("cuda_v13's PTX-only kernels need 580+ on the GPU host".into());
                    self.r.fail(
                        area,
                        "driver-too-old",
                        format!("NVML driver {drv} (major {m} < 570): {}", why.join("; ")),
                        "update the NVIDIA driver on the GPU host to 580 or newer (vgpu reports the host's driver as is)",
                    );
                }
                Some(m) if m < 580 && has("cuda_v13") => self.r.warn(
                    area,
                    "driver-too-old",
                    format!("NVML driver {drv}: cuda_v13's kernels are PTX for CUDA 13, which the GPU host's driver {m} cannot compile"),
                    "update the GPU host's driver to 580+, or pin OLLAMA_LLM_LIBRARY=cuda_v12 for ollama serve",
                ),
                Some(m) => self.r.ok(area, format!("driver {drv} (major {m}) passes Ollama's driver checks")),
            }
        }
        for (i, (name, ma, mi, integrated, total)) in devices.iter().enumerate() {
            let code = (*ma as u32) * 100 + (*mi as u32) * 10;
            let who = format!("device {i} ({name}, cc {ma}.{mi})");
            if *ma < 5 {
                self.r.fail(
                    area,
                    "cc-too-old",
                    format!("{who}: Ollama needs compute capability 5.0+"),
                    "use a newer GPU on the server",
                );
            } else if !dirs.is_empty() {
                let in12 = has("cuda_v12") && V12_ARCHS.contains(&code);
                let in13 = has("cuda_v13") && V13_ARCHS.contains(&code);
                if !in12 && !in13 {
                    self.r.fail(
                        area,
                        "cc-not-in-archs",
                        format!("{who}: not among the architectures of this Ollama's CUDA folders; it is skipped"),
                        "use an Ollama build with kernels for this GPU",
                    );
                } else if has("cuda_v13") && !in13 {
                    self.r.warn(
                        area,
                        "cc-not-in-archs",
                        format!("{who}: cuda_v13 has no kernels for it; Ollama uses cuda_v12"),
                        "pin OLLAMA_LLM_LIBRARY=cuda_v12 to skip the cuda_v13 probe",
                    );
                }
            }
            if *total == 0 {
                self.r.fail(
                    area,
                    "zero-memory",
                    format!("{who} reports 0 bytes of memory: Ollama skips it"),
                    "check the server's --memory-limit",
                );
            }
            if *integrated != 0 {
                self.r.warn(
                    area,
                    "integrated-gpu",
                    format!(
                        "{who} is reported as integrated: Ollama then takes its memory from the host's /proc/meminfo"
                    ),
                    "report it as a vgpu bug: remote GPUs must report integrated = 0",
                );
            }
        }
    }
}
