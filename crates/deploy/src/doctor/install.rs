//! Which file the loader picks for each library, for a plain process and for Ollama's
//! runners, and what Ollama's own tree holds.

use super::{Doctor, ServiceView, lib_stem, short};
use crate::LIBRARIES;
use crate::elf::{LibInfo, Origin};
use crate::loader::{Resolution, Via};
use crate::ollama::{self, CudaDir};
use std::path::{Path, PathBuf};

impl Doctor<'_> {
    pub(super) fn plain_loader(&mut self, ollama: Option<&Path>) {
        let ldpath = self.o.env.get("LD_LIBRARY_PATH").cloned().unwrap_or_default();
        let ollama_ok = ollama.is_some_and(|o| {
            ollama::cuda_dirs(o)
                .iter()
                .any(|d| self.inspect(&ollama::resolve_in_dir(&d.path, "libcuda.so.1")).is_vgpu())
        });
        let mut missing = Vec::new();
        for name in LIBRARIES {
            let res = self.loader.resolve(name, &ldpath);
            // A stale cache entry matters only where the loader gets that far: not when
            // LD_LIBRARY_PATH already found the library.
            let before_cache = res.hit.as_ref().is_some_and(|h| h.via == Via::LdLibraryPath);
            if let Some(s) = res.stale_cache.as_ref().filter(|_| !before_cache) {
                self.r.warn("loader", "ldconfig-stale", format!("{name}: {s}"), "run `sudo ldconfig`");
            }
            match res.hit.clone() {
                Some(hit) => {
                    self.library(
                        "loader",
                        name,
                        &res,
                        &hit.path,
                        &format!("via {}", hit.via.describe()),
                        hit.via != Via::LdLibraryPath,
                    );
                    if name == "libcuda.so.1" && hit.via == Via::LdLibraryPath {
                        self.cached_driver(&hit.path);
                    }
                }
                None => missing.push(name),
            }
        }
        for name in missing.iter().filter(|n| ["libcuda.so.1", "libnvidia-ml.so.1"].contains(n)) {
            let fix = format!(
                "sudo vgpu install system (every program), or for one shell: eval \"$(vgpu env)\"{}",
                if ollama.is_some() { "; for Ollama alone: sudo vgpu install ollama" } else { "" }
            );
            if *name == "libcuda.so.1" && !ollama_ok {
                self.r.fail(
                    "loader",
                    "libcuda-missing",
                    format!("no {name} on the loader's path: CUDA programs find no driver"),
                    fix,
                );
            } else {
                let note = if ollama_ok { " (Ollama's runners use the copies in its cuda_vNN folders)" } else { "" };
                self.r.warn(
                    "loader",
                    &format!("{}-missing", lib_stem(name)),
                    format!("a plain process finds no {name}{note}"),
                    fix,
                );
            }
        }
        let rt: Vec<&str> =
            missing.iter().copied().filter(|n| !["libcuda.so.1", "libnvidia-ml.so.1"].contains(n)).collect();
        if !rt.is_empty() {
            self.r.ok(
                "loader",
                format!(
                    "not on the plain loader path: {} (needed only by programs linked against them; Ollama bundles its own)",
                    rt.join(", ")
                ),
            );
        }
    }

    /// vgpu's libcuda.so.1 comes from `LD_LIBRARY_PATH` (at `ours`), but programs that find
    /// the driver by `ldconfig -p` rather than through the loader (Triton, to link and load
    /// its launchers) take the loader cache's copy, when the cache has one that is not vgpu's
    /// (a driver, not an empty file: a GPU host's driver hidden from a test namespace).
    fn cached_driver(&mut self, ours: &Path) {
        let cached = self.loader.cache.iter().flatten().find(|(n, _)| n == "libcuda.so.1").map(|(_, p)| p.clone());
        let Some(cached) = cached else { return };
        let theirs = self.o.root.join(&cached);
        let a_driver = std::fs::metadata(&theirs).is_ok_and(|m| m.len() > 0);
        if !a_driver || !self.inspect(ours).is_vgpu() || self.inspect(&theirs).is_vgpu() {
            return;
        }
        let dir = ours.parent().map_or_else(String::new, |d| self.shown(d));
        self.r.warn(
            "loader",
            "ldconfig-libcuda",
            format!(
                "LD_LIBRARY_PATH gives vgpu's libcuda.so.1, but the loader cache (`ldconfig -p`) names {}: \
                 programs that look the driver up there (Triton) load that one",
                cached.display()
            ),
            format!("export TRITON_LIBCUDA_PATH={dir} (for Triton), or sudo vgpu install system (every program)"),
        );
    }

    /// Judge the file the loader picks for `name`; `system_wide` when it comes from the
    /// loader cache or system directories (every process gets it), not `LD_LIBRARY_PATH`.
    fn library(&mut self, area: &str, name: &str, res: &Resolution, path: &Path, via: &str, system_wide: bool) {
        let info = self.inspect(path);
        let shown = self.shown_resolved(path, &info);
        let later_vgpu = res
            .later
            .iter()
            .map(|h| h.path.clone())
            .find(|p| self.inspect(p).is_vgpu())
            .map(|p| format!("; vgpu's {} comes later", self.shown(&p)))
            .unwrap_or_default();
        let first = match self.lib_dir() {
            Some(d) => format!("export LD_LIBRARY_PATH={}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}", short(d)),
            None => "put vgpu's lib directory first on LD_LIBRARY_PATH (see `vgpu env`)".to_string(),
        };
        // On a machine with a GPU of its own, NVIDIA's libraries are right for plain processes,
        // and `vgpu serve` must not get vgpu's libcuda.so.1/libnvidia-ml.so.1 system-wide.
        let gpu_host = area == "loader" && self.o.root.join(crate::system::GPU_DEVICE).exists();
        let driver_lib = ["libcuda.so.1", "libnvidia-ml.so.1"].contains(&name);
        match info.origin {
            Origin::Vgpu if gpu_host && driver_lib && system_wide => self.r.fail(
                area,
                "gpu-host-shadowed",
                format!(
                    "{name} -> {shown} is vgpu's, but this machine has an NVIDIA GPU ({}): `vgpu serve` here would load vgpu's {name} instead of the driver's",
                    crate::system::GPU_DEVICE
                ),
                "sudo vgpu uninstall system (on a GPU host, point only client programs at vgpu: LD_LIBRARY_PATH or vgpu install ollama)",
            ),
            Origin::Nvidia | Origin::Other if gpu_host => self.r.ok(
                area,
                format!(
                    "{name} -> {shown} ({via}) is {}: right for this GPU host's `vgpu serve` ({} exists); client programs here need LD_LIBRARY_PATH or vgpu install ollama",
                    info.summary(),
                    crate::system::GPU_DEVICE
                ),
            ),
            Origin::Vgpu => {
                if info.soname.as_deref().is_some_and(|s| s != name) {
                    self.r.fail(
                        area,
                        "wrong-soname",
                        format!("{name} -> {shown} is vgpu's {}, not {name}", info.soname.clone().unwrap_or_default()),
                        format!("replace it with vgpu's {name} (dist/lib/{name})"),
                    );
                    return;
                }
                let (note, other) = self.build_note(name, &info);
                self.r.ok(area, format!("{name} -> {shown} (vgpu's, {via}{note})"));
                if let Some(theirs) = other {
                    self.stale_build(area, &shown, &theirs);
                }
            }
            Origin::NotElf => self.r.fail(
                area,
                "not-elf",
                format!("{name} -> {shown} ({via}) is {}: loading it fails", info.summary()),
                format!("remove or replace {shown}"),
            ),
            _ if name == "libcuda.so.1" => self.r.fail(
                area,
                "nvidia-libcuda-first",
                format!("{name} -> {shown} ({via}) is {}, not vgpu's: CUDA programs load it instead of vgpu's{later_vgpu}", info.summary()),
                format!(
                    "sudo vgpu install system (replaces it with a regular-file copy and keeps the original;\na symlink over it is undone by ldconfig), or for one shell: {first}"
                ),
            ),
            _ if name == "libnvidia-ml.so.1" => self.r.warn(
                area,
                "nvml-not-vgpu",
                format!("{name} -> {shown} ({via}) is {}: nvidia-smi, pynvml and Ollama's driver check use it{later_vgpu}", info.summary()),
                format!("sudo vgpu install system, or for one shell: {first}"),
            ),
            _ => {
                // NVIDIA's runtime and cuBLAS run over vgpu's driver, the latter kernel by kernel.
                let what = if name.starts_with("libcublas") {
                    "programs linked against it run NVIDIA's cuBLAS over vgpu's driver, its kernels one by one (vgpu's sends a call as one message)"
                } else {
                    "programs linked against it run NVIDIA's runtime over vgpu's libcuda.so.1: kernels, copies, NVIDIA's cuBLAS and cuFFT work"
                };
                self.r.warn(
                    area,
                    "lib-not-vgpu",
                    format!("{name} -> {shown} ({via}) is {}: {what} (docs/export-tables.md){later_vgpu}", info.summary()),
                    first,
                )
            }
        }
    }

    /// Compare vgpu's library `info` with the build in `lib_dir`: a note for its OK line, and
    /// a WARN (pushed by the caller after that line) when it is another build.
    fn build_note(&mut self, name: &str, info: &LibInfo) -> (String, Option<PathBuf>) {
        let mut note = info.marker.as_ref().map(|m| format!("; {m}")).unwrap_or_default();
        let Some(d) = self.lib_dir().map(Path::to_path_buf) else {
            return (note, None);
        };
        let theirs = self.inspect(&d.join(name));
        if !theirs.is_vgpu() || theirs.real == info.real {
            return (note, None);
        }
        if theirs.hash == info.hash {
            note.push_str(&format!("; same build as {}", short(&d.join(name))));
            return (note, None);
        }
        (note, Some(d.join(name)))
    }

    fn stale_build(&mut self, area: &str, shown: &str, theirs: &Path) {
        self.r.warn(
            area,
            "stale-build",
            format!("{shown} is a different vgpu build than {}", short(theirs)),
            "reinstall from the same build (vgpu install ollama|system --lib-dir ...) so client libraries and server match",
        );
    }

    pub(super) fn ollama(&mut self, dir: &Path, service: &ServiceView) {
        let dirs = ollama::cuda_dirs(dir);
        let area = "ollama";
        if dirs.is_empty() {
            self.r.warn(
                area,
                "no-cuda-dirs",
                format!("{} has no cuda_vNN folders: this Ollama cannot use NVIDIA GPUs", self.shown(dir)),
                "install Ollama's full Linux build (ollama-linux-amd64), which bundles lib/ollama/cuda_v12 and cuda_v13",
            );
            return;
        }
        let names: Vec<String> = dirs.iter().map(|d| d.name.clone()).collect();
        self.r.ok(area, format!("{} ({})", self.shown(dir), names.join(", ")));
        let manifest = match ollama::manifest(dir) {
            Ok(m) => m,
            Err(e) => {
                self.r.fail(area, "manifest-unreadable", e, "restore or remove the .vgpu-backup folder");
                None
            }
        };
        let install_cmd = format!("sudo vgpu install ollama --ollama-dir {}", self.shown(dir));
        if let Some(m) = &manifest {
            let gone: Vec<String> = m.replaced().iter().map(|e| e.path.display().to_string()).collect();
            if !gone.is_empty() {
                self.r.fail(
                    area,
                    "ollama-upgraded",
                    format!(
                        "{} of vgpu's files were replaced or removed since `vgpu install ollama` (an Ollama upgrade?): {}",
                        gone.len(),
                        gone.join(", ")
                    ),
                    format!("{install_cmd}\n(run it again after every Ollama upgrade; the upgrade's files become the new originals)"),
                );
            }
            // Discovery runs when `ollama serve` starts: one started before the install still uses CPU.
            let installed_at = std::fs::metadata(dir.join(ollama::BACKUP_DIR).join(crate::fsops::MANIFEST))
                .and_then(|m| m.modified())
                .ok();
            if let (Some(started), Some(at)) = (service.started, installed_at)
                && started < at
            {
                self.r.warn(
                    area,
                    "ollama-restart-needed",
                    format!(
                        "{} started before vgpu was installed into {}: it discovered GPUs without vgpu",
                        service.source,
                        self.shown(dir)
                    ),
                    "sudo systemctl restart ollama (or restart `ollama serve`)",
                );
            }
        }
        let service_ld = service.env.get("LD_LIBRARY_PATH").cloned().unwrap_or_default();
        for d in &dirs {
            self.cuda_dir(dir, d, manifest.as_ref(), &install_cmd, &service_ld, &service.source);
        }
        if let Some(lib) = service.env.get("OLLAMA_LLM_LIBRARY") {
            let pinned = dirs.iter().find(|d| &d.name == lib);
            let ok = pinned.is_some_and(|d| {
                d.runtime_libraries().iter().all(|n| self.inspect(&ollama::resolve_in_dir(&d.path, n)).is_vgpu())
            });
            if !ok {
                self.r.warn(
                    area,
                    "ollama-llm-library",
                    format!(
                        "{} sets OLLAMA_LLM_LIBRARY={lib}: {}",
                        service.source,
                        if pinned.is_some() {
                            "that folder lacks vgpu's runtime"
                        } else {
                            "Ollama then skips every CUDA folder"
                        }
                    ),
                    "set OLLAMA_LLM_LIBRARY to a folder with vgpu's runtime (cuda_v12 or cuda_v13), or unset it",
                );
            }
        }
    }

    fn cuda_dir(
        &mut self,
        ollama_dir: &Path,
        d: &CudaDir,
        manifest: Option<&crate::fsops::Manifest>,
        install_cmd: &str,
        service_ld: &str,
        source: &str,
    ) {
        let area = format!("ollama {}", d.name);
        let mut bad = Vec::new();
        for name in d.runtime_libraries() {
            let p = ollama::resolve_in_dir(&d.path, &name);
            let info = self.inspect(&p);
            let shown = format!("{name} -> {}", p.file_name().unwrap_or_default().to_string_lossy());
            if info.is_vgpu() {
                if let (_, Some(theirs)) = self.build_note(&name, &info) {
                    let shown = self.shown(&p);
                    self.stale_build(&area, &shown, &theirs);
                }
            } else {
                bad.push(format!("{shown} is {}", info.summary()));
            }
        }
        let (maj, min) = d.runtime_version();
        if bad.is_empty() {
            self.r.ok(&area, format!("vgpu's runtime (libcudart, libcublas, libcublasLt .{}); Ollama reads runtime {maj}.{min} from the file names", d.major));
        } else {
            // Installed here before (then an upgrade replaced it), skipped by the install (no
            // runtime of this major in that vgpu build), or never installed.
            let rel = d.path.strip_prefix(ollama_dir).unwrap_or(&d.path).to_path_buf();
            let entries = manifest.map(|m| m.entries.iter().filter(|e| e.path.starts_with(&rel)).count());
            let lib_lacks = self.lib_dir().is_some_and(|l| !l.join(format!("libcudart.so.{}", d.major)).exists());
            let fix = match entries {
                Some(0) => format!(
                    "`vgpu install ollama` skipped {}: its vgpu build has no libcudart.so.{}. Install a build that has it,\nor pin OLLAMA_LLM_LIBRARY to a folder with vgpu's runtime (e.g. cuda_v12) for ollama serve",
                    d.name, d.major
                ),
                _ if lib_lacks => format!(
                    "this vgpu build has no libcudart.so.{}: pin OLLAMA_LLM_LIBRARY to a folder with vgpu's runtime (e.g. cuda_v12)",
                    d.major
                ),
                Some(_) => format!(
                    "{install_cmd}\n(this folder changed since the install: an Ollama upgrade replaces lib/ollama)"
                ),
                None => format!("{install_cmd}\n(after an Ollama upgrade, which replaces lib/ollama, run it again)"),
            };
            self.r.fail(&area, "runtime-missing", format!("{} lacks vgpu's runtime: {}", d.name, bad.join("; ")), fix);
            // What its runners would load matters only once the folder has vgpu's runtime.
            return;
        }
        // What Ollama's runners load: LD_LIBRARY_PATH=lib/ollama:lib/ollama/cuda_vNN:$LD_LIBRARY_PATH.
        let root = &self.o.root;
        let ldpath = format!("{}:{}:{service_ld}", short(&root.inside(ollama_dir)), short(&root.inside(&d.path)));
        let ldpath = ldpath.trim_end_matches(':').to_string();
        let via = format!("for Ollama's runners, with the LD_LIBRARY_PATH of {source}");
        for name in ["libcuda.so.1", "libnvidia-ml.so.1"] {
            let res = self.loader.resolve(name, &ldpath);
            match res.hit.clone() {
                Some(h) => self.library(&area, name, &res, &h.path, &via, false),
                None if name == "libcuda.so.1" => self.r.fail(
                    &area,
                    "libcuda-missing",
                    "Ollama's runners find no libcuda.so.1: libggml-cuda.so fails to load (\"libcuda.so.1: cannot open shared object file\", ollama#16985) and Ollama runs on CPU".to_string(),
                    install_cmd.to_string(),
                ),
                None => self.r.warn(
                    &area,
                    "nvml-missing",
                    "Ollama's runners find no libnvidia-ml.so.1: Ollama cannot check the driver version (it warns and carries on)".into(),
                    install_cmd.to_string(),
                ),
            }
        }
    }
}
