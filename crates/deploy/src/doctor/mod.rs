//! `vgpu doctor`: the investigation a user would otherwise do by hand, as one report.
//!
//! Each finding is `OK`, `WARN` or `FAIL`, with a stable code (`server-down`,
//! `wrong-token`, `nvidia-libcuda-first`, `runtime-missing`, ...) and, for problems, the fix.
//! Sections, a file each (every one a part of the `Doctor`'s methods): the client
//! configuration (`settings`); the server, by handshake (`server`); where Ollama runs and
//! the environment of a running `ollama serve` and of `ollama.service` (`service`); which
//! file the loader picks for each library, for a plain process and for Ollama's runners,
//! and the Ollama install (`install`); NVML and CUDA discovery through the shims, checked
//! against Ollama's filters (`discovery`).

use crate::VERSION;
use crate::config::{self, Env};
use crate::elf::{self, LibInfo};
use crate::loader::Loader;
use crate::root::Root;
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

mod discovery;
mod install;
mod server;
mod service;
mod settings;

/// `"%d%d0"` compute capabilities in Ollama's `cuda_v12` build (CUDA 12.8).
pub const V12_ARCHS: &[u32] = &[500, 520, 600, 610, 700, 750, 800, 860, 890, 900, 1000, 1200];
/// ... and in its PTX-only `cuda_v13` build (CUDA 13.0).
pub const V13_ARCHS: &[u32] = &[750, 800, 860, 870, 890, 900, 1000, 1030, 1100, 1200, 1210];

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

impl Level {
    fn tag(self) -> &'static str {
        match self {
            Level::Ok => "OK",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub level: Level,
    /// What was looked at: `config`, `server`, `loader`, `ollama cuda_v13`, `discovery` ...
    pub area: String,
    /// A stable name for the finding (`ok` for plain OK lines).
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub vgpu_version: String,
    pub ok: bool,
    pub findings: Vec<Finding>,
}

impl Report {
    fn new() -> Report {
        Report { vgpu_version: VERSION.to_string(), ok: true, findings: Vec::new() }
    }

    fn push(&mut self, level: Level, area: &str, code: &str, message: String, fix: Option<String>) {
        if level == Level::Fail {
            self.ok = false;
        }
        self.findings.push(Finding { level, area: area.to_string(), code: code.to_string(), message, fix });
    }

    fn ok(&mut self, area: &str, message: String) {
        self.push(Level::Ok, area, "ok", message, None);
    }

    fn warn(&mut self, area: &str, code: &str, message: String, fix: impl Into<String>) {
        self.push(Level::Warn, area, code, message, Some(fix.into()));
    }

    fn fail(&mut self, area: &str, code: &str, message: String, fix: impl Into<String>) {
        self.push(Level::Fail, area, code, message, Some(fix.into()));
    }

    pub fn failed(&self) -> bool {
        !self.ok
    }

    /// Whether a finding with `code` is in the report.
    pub fn has(&self, code: &str) -> bool {
        self.findings.iter().any(|f| f.code == code)
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// One line per finding (`OK`/`WARN`/`FAIL area: message [code]`), a `fix:` line under
    /// each problem, and a summary.
    pub fn text(&self) -> String {
        let mut s = format!("vgpu doctor {VERSION}\n");
        for f in &self.findings {
            let code = if f.level == Level::Ok { String::new() } else { format!(" [{}]", f.code) };
            s.push_str(&format!("{:<4} {}: {}{code}\n", f.level.tag(), f.area, f.message));
            if let Some(fix) = &f.fix {
                for (i, line) in fix.lines().enumerate() {
                    s.push_str(if i == 0 { "     fix: " } else { "          " });
                    s.push_str(line);
                    s.push('\n');
                }
            }
        }
        let fails = self.findings.iter().filter(|f| f.level == Level::Fail).count();
        let warns = self.findings.iter().filter(|f| f.level == Level::Warn).count();
        s.push_str(&match (fails, warns) {
            (0, 0) => "all checks passed\n".to_string(),
            _ => format!("{fails} problem(s), {warns} warning(s): see the fix: lines above\n"),
        });
        s
    }
}

/// How NVML/CUDA discovery through the shims is run.
#[derive(Clone, Debug)]
pub enum ProbeMode {
    Off,
    InProcess,
    /// In a child: `<exe> doctor --probe-nvml P --probe-cuda Q`.
    Child(PathBuf),
}

#[derive(Clone, Debug)]
pub struct Options {
    pub root: Root,
    /// The environment of the shell the doctor runs in (a plain process's view).
    pub env: Env,
    /// `lib/ollama`, when given; found from `PATH` and the usual places otherwise.
    pub ollama_dir: Option<PathBuf>,
    /// vgpu's own libraries (`dist/lib`), for "same build" checks and as a probe fallback.
    pub lib_dir: Option<PathBuf>,
    /// `/proc`, to find a running `ollama serve`; `None` skips that.
    pub proc_dir: Option<PathBuf>,
    /// Ask systemd about `ollama.service`.
    pub systemd: bool,
    pub probe: ProbeMode,
    /// Bound on the handshake (each way) and on the probe.
    pub timeout: Duration,
}

impl Options {
    /// The real system, as the CLI uses it.
    pub fn system() -> Options {
        Options {
            root: Root::system(),
            env: config::process_env(),
            ollama_dir: None,
            lib_dir: None,
            proc_dir: Some(PathBuf::from("/proc")),
            systemd: true,
            probe: ProbeMode::InProcess,
            timeout: Duration::from_secs(3),
        }
    }
}

/// How Ollama's runners will be started: their `LD_LIBRARY_PATH` tail and the variables
/// that matter, from the best source at hand.
struct ServiceView {
    env: Env,
    /// "ollama serve (pid 123)", "ollama.service", "this shell".
    source: String,
    started: Option<SystemTime>,
}

struct Doctor<'a> {
    o: &'a Options,
    r: Report,
    loader: Loader,
    infos: HashMap<PathBuf, LibInfo>,
}

impl<'a> Doctor<'a> {
    /// A doctor with no findings yet, looking at the machine `o` names.
    fn new(o: &'a Options) -> Doctor<'a> {
        Doctor { o, r: Report::new(), loader: Loader::new(&o.root), infos: HashMap::new() }
    }
}

pub fn run(o: &Options) -> Report {
    let mut d = Doctor::new(o);
    let cfg = config::resolve(&o.env, &o.root);
    d.config("config", &cfg, "this shell");
    let snapshot = d.server("server", &cfg);
    let ollama = d.locate_ollama();
    let service = d.service(&cfg, ollama.is_some());
    d.plain_loader(ollama.as_deref());
    if let Some(dir) = &ollama {
        d.ollama(dir, &service);
    }
    d.discovery(snapshot.as_ref(), ollama.as_deref(), &service);
    d.r
}

fn short(p: &Path) -> String {
    p.display().to_string()
}

impl Doctor<'_> {
    fn inspect(&mut self, p: &Path) -> LibInfo {
        if let Some(i) = self.infos.get(p) {
            return i.clone();
        }
        let i = elf::inspect(p);
        self.infos.insert(p.to_path_buf(), i.clone());
        i
    }

    fn shown(&self, p: &Path) -> String {
        short(&self.o.root.inside(p))
    }

    /// `a -> b` when `a` is a symlink.
    fn shown_resolved(&self, p: &Path, info: &LibInfo) -> String {
        if info.real != p && info.real.exists() {
            format!("{} -> {}", self.shown(p), self.shown(&info.real))
        } else {
            self.shown(p)
        }
    }

    fn lib_dir(&self) -> Option<&Path> {
        self.o.lib_dir.as_deref().filter(|d| d.is_dir())
    }
}

fn lib_stem(name: &str) -> &str {
    match name {
        "libnvidia-ml.so.1" => "nvml",
        "libcuda.so.1" => "libcuda",
        _ => "lib",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ollama;
    use crate::procs::fake_process;

    fn opts(root: &Path) -> Options {
        Options {
            root: Root::new(root),
            env: Env::new(),
            ollama_dir: None,
            lib_dir: None,
            proc_dir: None,
            systemd: false,
            probe: ProbeMode::Off,
            timeout: Duration::from_millis(500),
        }
    }

    #[test]
    fn an_empty_machine_names_no_config_and_server_down() {
        let t = tempfile::tempdir().unwrap();
        let r = run(&opts(t.path()));
        assert!(r.failed());
        assert!(r.has("no-config"), "{}", r.text());
        assert!(r.has("server-down"), "{}", r.text());
        assert!(r.has("libcuda-missing"), "{}", r.text());
        assert!(r.has("discovery-skipped"), "{}", r.text());
        let text = r.text();
        assert!(text.lines().any(|l| l.starts_with("FAIL config:") && l.ends_with("[no-config]")), "{text}");
        assert!(text.contains("     fix: write /etc/vgpu/client.toml"), "{text}");
        assert!(!text.contains("would pass copies"), "no socket, no shm: hint: {text}");
        let json: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
        assert_eq!(json["ok"], false);
        assert!(json["findings"].as_array().unwrap().iter().any(|f| f["code"] == "server-down"));
    }

    #[test]
    fn a_service_without_config_is_named() {
        let t = tempfile::tempdir().unwrap();
        let proc_dir = t.path().join("proc");
        fake_process(
            &proc_dir,
            77,
            b"/usr/local/bin/ollama\0serve\0",
            b"OLLAMA_HOST=0.0.0.0\0CUDA_VISIBLE_DEVICES=-1\0",
        );
        let mut o = opts(t.path());
        o.proc_dir = Some(proc_dir);
        o.env.insert("VGPU_SERVER".into(), "unix:/nowhere.sock".into());
        std::fs::write(t.path().join("nowhere.sock"), b"").unwrap(); // the socket's path is there
        let r = run(&o);
        assert!(r.has("service-no-config"), "{}", r.text());
        assert!(r.has("cuda-visible-devices"), "{}", r.text());
        assert!(!r.has("cuda-graphs-off"), "{}", r.text());
        assert!(!r.has("no-config"), "the shell itself is configured: {}", r.text());
        assert!(r.text().contains("shm:/nowhere.sock would pass copies"), "a unix: client hears of shm: {}", r.text());
    }

    #[test]
    fn a_service_without_cuda_graphs_is_warned() {
        // Any value turns llama.cpp's graphs off, "0" too.
        let t = tempfile::tempdir().unwrap();
        let proc_dir = t.path().join("proc");
        fake_process(&proc_dir, 78, b"/usr/local/bin/ollama\0serve\0", b"GGML_CUDA_DISABLE_GRAPHS=0\0");
        let mut o = opts(t.path());
        o.proc_dir = Some(proc_dir);
        let r = run(&o);
        assert!(r.has("cuda-graphs-off"), "{}", r.text());
        assert!(r.text().contains("ollama serve (pid 78) has GGML_CUDA_DISABLE_GRAPHS set"), "{}", r.text());
    }

    #[test]
    fn a_shared_file_is_checked() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("dev/shm")).unwrap();
        std::fs::File::create(t.path().join("dev/shm/vm1")).unwrap().set_len(64 << 20).unwrap();
        let mut o = opts(t.path());
        o.env.insert("VGPU_SERVER".into(), "vsock://2:7070".into());
        o.env.insert("VGPU_SHM_FILE".into(), "/dev/shm/vm1".into());
        let r = run(&o);
        assert!(r.text().contains("shared file /dev/shm/vm1 (64 MiB, from VGPU_SHM_FILE)"), "{}", r.text());
        assert!(!r.has("shm-file-unusable"), "{}", r.text());
        o.env.insert("VGPU_SHM_FILE".into(), "/dev/shm/vm2".into());
        let r = run(&o);
        assert!(r.has("shm-file-unusable"), "{}", r.text());
        assert!(r.text().contains("resource2"), "{}", r.text());
    }

    #[test]
    fn a_service_user_that_cannot_read_the_token_is_named() {
        use std::os::unix::fs::PermissionsExt as _;
        let t = tempfile::tempdir().unwrap();
        let tok = t.path().join("etc/vgpu/token");
        std::fs::create_dir_all(tok.parent().unwrap()).unwrap();
        std::fs::write(&tok, "s3cret\n").unwrap();
        std::fs::set_permissions(&tok, std::fs::Permissions::from_mode(0o600)).unwrap();
        let p = fake_process(
            &t.path().join("proc"),
            78,
            b"/usr/bin/ollama\0serve\0",
            b"VGPU_SERVER=unix:/x.sock\0VGPU_TOKEN_FILE=/etc/vgpu/token\0",
        );
        std::fs::write(p.join("status"), "Name:\tollama\nUid:\t64999\t64999\t64999\t64999\n").unwrap();
        let mut o = opts(t.path());
        o.proc_dir = Some(t.path().join("proc"));
        let r = run(&o);
        let f = r.findings.iter().find(|f| f.code == "token-file-unreadable").expect("named");
        assert!(f.message.contains("uid 64999"), "{}", r.text());
    }

    #[test]
    fn vgpus_libcuda_system_wide_on_a_gpu_host_is_named() {
        let t = tempfile::tempdir().unwrap();
        // This test executable holds the VGPU_LOG pattern, so it passes for one of vgpu's.
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        for d in ["dev", "etc", "usr/local/lib/vgpu", "opt/client"] {
            std::fs::create_dir_all(t.path().join(d)).unwrap();
        }
        std::fs::write(t.path().join("dev/nvidiactl"), b"").unwrap();
        std::fs::write(t.path().join("etc/ld.so.conf"), "/usr/local/lib/vgpu\n").unwrap();
        std::fs::write(t.path().join("usr/local/lib/vgpu/libcuda.so.1"), &exe).unwrap();
        let r = run(&opts(t.path()));
        assert!(r.has("gpu-host-shadowed"), "{}", r.text());
        // A client shell on the GPU host, through LD_LIBRARY_PATH only, is fine.
        std::fs::remove_file(t.path().join("usr/local/lib/vgpu/libcuda.so.1")).unwrap();
        std::fs::write(t.path().join("opt/client/libcuda.so.1"), &exe).unwrap();
        let mut o = opts(t.path());
        o.env.insert("LD_LIBRARY_PATH".into(), "/opt/client".into());
        let r = run(&o);
        assert!(!r.has("gpu-host-shadowed"), "{}", r.text());
    }

    #[test]
    fn a_cached_driver_that_is_not_vgpus_is_named_for_triton() {
        let t = tempfile::tempdir().unwrap();
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        for d in ["etc", "usr/lib/nvidia", "opt/client"] {
            std::fs::create_dir_all(t.path().join(d)).unwrap();
        }
        std::fs::write(t.path().join("opt/client/libcuda.so.1"), &exe).unwrap();
        std::fs::write(t.path().join("usr/lib/nvidia/libcuda.so.1"), b"NVIDIA's, not ours").unwrap();
        let cache = |path: &str| crate::loader::cache_bytes(&[("libcuda.so.1", path)]);
        let mut o = opts(t.path());
        o.env.insert("LD_LIBRARY_PATH".into(), "/opt/client".into());
        std::fs::write(t.path().join("etc/ld.so.cache"), cache("/usr/lib/nvidia/libcuda.so.1")).unwrap();
        let r = run(&o);
        let f = r.findings.iter().find(|f| f.code == "ldconfig-libcuda").expect("named");
        assert!(f.message.contains("/usr/lib/nvidia/libcuda.so.1"), "{}", r.text());
        assert!(r.text().contains("TRITON_LIBCUDA_PATH=/opt/client"), "{}", r.text());
        // The cache naming vgpu's, or no libcuda at all: nothing to say.
        std::fs::write(t.path().join("etc/ld.so.cache"), cache("/opt/client/libcuda.so.1")).unwrap();
        assert!(!run(&o).has("ldconfig-libcuda"));
        std::fs::write(t.path().join("etc/ld.so.cache"), crate::loader::cache_bytes(&[])).unwrap();
        assert!(!run(&o).has("ldconfig-libcuda"));
        // A driver hidden as an empty file (a test namespace on a GPU host) is none.
        std::fs::write(t.path().join("usr/lib/nvidia/libcuda.so.1"), b"").unwrap();
        std::fs::write(t.path().join("etc/ld.so.cache"), cache("/usr/lib/nvidia/libcuda.so.1")).unwrap();
        assert!(!run(&o).has("ldconfig-libcuda"));
    }

    #[test]
    fn driver_and_capability_filters() {
        let t = tempfile::tempdir().unwrap();
        for d in ["cuda_v12", "cuda_v13"] {
            std::fs::create_dir(t.path().join(d)).unwrap();
        }
        std::fs::write(t.path().join("cuda_v12/libcudart.so.12.8.90"), b"").unwrap();
        let dirs = ollama::cuda_dirs(t.path());
        let o = opts(t.path());
        let mut d = Doctor::new(&o);
        d.filters(Some("560.35.03"), &[("GPU".into(), 6, 1, 0, 1 << 30)], &dirs);
        assert!(d.r.has("driver-too-old"));
        assert!(d.r.findings.iter().any(|f| f.code == "driver-too-old" && f.level == Level::Fail));
        assert!(d.r.findings.iter().any(|f| f.code == "cc-not-in-archs" && f.level == Level::Warn));
        let mut d = Doctor::new(&o);
        d.filters(Some("580.82.07"), &[("H100".into(), 9, 0, 0, 80 << 30)], &dirs);
        assert!(!d.r.failed(), "{}", d.r.text());
        d.filters(Some("1.0"), &[("X".into(), 3, 5, 1, 0)], &dirs);
        for code in ["driver-too-old", "cc-too-old", "zero-memory", "integrated-gpu"] {
            assert!(d.r.has(code), "{code}: {}", d.r.text());
        }
        d.filters(Some("abc"), &[], &dirs);
        assert!(d.r.has("driver-version-unparseable"));
    }
}
