//! `vgpu doctor`: the investigation a user would otherwise do by hand, as one report.
//!
//! Each finding is `OK`, `WARN` or `FAIL`, with a stable code (`server-down`,
//! `wrong-token`, `nvidia-libcuda-first`, `runtime-missing`, ...) and, for problems, the fix.
//! Sections: the client configuration; the server (handshake); which file the loader picks
//! for each library, for a plain process and for Ollama's runners; the Ollama install;
//! the environment of a running `ollama serve` and of `ollama.service`; NVML and CUDA
//! discovery through the shims, checked against Ollama's filters.

use crate::config::{self, ClientConfig, Env, Source};
use crate::elf::{self, LibInfo, Origin};
use crate::handshake::{self, Outcome};
use crate::loader::{Loader, Resolution, Via};
use crate::ollama::{self, CudaDir};
use crate::probe::{self, ProbeOutput};
use crate::procs;
use crate::root::Root;
use crate::{LIBRARIES, VERSION};
use device_model::Snapshot;
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

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

pub fn run(o: &Options) -> Report {
    let mut d = Doctor { o, r: Report::new(), loader: Loader::new(&o.root), infos: HashMap::new() };
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

/// Whether this client's copies to `addr` are offered by content (`client::blobs`),
/// repeated ones sent in pieces the server keeps (`client::pages`), and input rows coded
/// (`transport::coding::Coding`): what a model's second load, and a prompt's input rows,
/// cost there.
fn kept_bytes(addr: &transport::Address, cfg: &ClientConfig) -> [String; 3] {
    let host_port = match addr {
        transport::Address::Tcp(hp) => Some(hp.as_str()),
        transport::Address::Tls(t) => Some(t.host_port.as_str()),
        _ => None,
    };
    // Resolved as the connection does: all its addresses are this host's own.
    let loopback = host_port.is_some_and(|hp| {
        std::net::ToSocketAddrs::to_socket_addrs(hp).is_ok_and(|mut a| a.all(|a| a.ip().is_loopback()))
    });
    let weights = match &cfg.blobs {
        Some((_, src)) => format!("{src}"),
        None if loopback => "this host's loopback moves the bytes faster than the server reads kept ones back".into(),
        None if host_port.is_some() => "a model's later loads send hashes instead of its weights".into(),
        None => "this transport moves the bytes faster than the server reads kept ones back".into(),
    };
    let slow = client::pages::SLOW_LINK * 8 / 1_000_000_000;
    [
        match client::blobs::offered_over(addr, loopback, cfg.blobs.as_ref().map(|(b, _)| *b)) {
            true => format!("weights offered by content, kept by the server ({weights})"),
            false => format!("weights sent as they are ({weights}; VGPU_BLOBS=1 or blobs = true offers them)"),
        },
        match (&cfg.pages, host_port) {
            (Some((true, src)), _) => format!("repeated copies in pieces the server keeps ({src})"),
            (Some((false, src)), _) => format!("repeated copies sent whole ({src})"),
            (None, Some(_)) if loopback => "repeated copies sent whole (this host's loopback crosses no link; \
                 VGPU_PAGES=1 or pages = true keeps their pieces)"
                .to_string(),
            (None, Some(_)) => format!(
                "repeated copies in pieces the server keeps while the link delivers under {slow} Gbit/s \
                 (the kernel's estimate; VGPU_PAGES=0/1 or pages = false/true decides instead)"
            ),
            (None, None) => "repeated copies sent whole (this transport moves bytes faster than they are hashed; \
                 VGPU_PAGES=1 or pages = true keeps their pieces)"
                .to_string(),
        },
        match (&cfg.code, transport::coding::Coding::choose(addr, loopback, None)) {
            (Some((true, src)), _) => format!("input rows coded ({src})"),
            (Some((false, src)), _) => format!("input rows sent as they are ({src})"),
            (None, transport::coding::Coding::Never) => "input rows sent as they are (the kernel copies them \
                 within this host faster than they are coded; VGPU_CODE=1 or code = true codes them)"
                .to_string(),
            (None, _) => format!(
                "input rows coded as the quantized blocks they came from while the link delivers under {} GB/s \
                 (the kernel's estimate; VGPU_CODE=0/1 or code = false/true decides instead)",
                transport::coding::FAST_LINK / 1_000_000_000
            ),
        },
    ]
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

    // ---------------------------------------------------------------- configuration

    fn config(&mut self, area: &str, cfg: &ClientConfig, who: &str) -> bool {
        let file = short(&cfg.file_path);
        let mut good = true;
        match &cfg.file {
            Some(Err(e)) => {
                good = false;
                self.r.fail(
                    area,
                    "config-invalid",
                    format!("{e}: the shims refuse to start a session"),
                    "fix the file: its keys are server, token, token_file, timeout_secs, lanes, tls_ca, tls_name and shm_file",
                );
            }
            None if cfg.file_from_env => self.r.warn(
                area,
                "config-missing",
                format!("VGPU_CONFIG names {file}, which does not exist"),
                "point VGPU_CONFIG at an existing file, or unset it to use /etc/vgpu/client.toml",
            ),
            _ => {}
        }
        if cfg.server_source == Source::Default {
            let sock = self.o.root.join("/run/vgpu/vgpu.sock");
            if sock.exists() {
                self.r.ok(
                    area,
                    format!("{who}: no VGPU_SERVER and no {file}; the default {} exists", config::DEFAULT_SERVER),
                );
            } else {
                good = false;
                self.r.fail(
                    area,
                    "no-config",
                    format!(
                        "{who}: no VGPU_SERVER in the environment and no server in {file}: the shims try {}, which does not exist",
                        config::DEFAULT_SERVER
                    ),
                    format!(
                        "write {file} (services do not see a shell's variables):\n  server = \"tcp://GPU-HOST:7070\"\n  token_file = \"/etc/vgpu/token\"\nor, for one shell: export VGPU_SERVER=tcp://GPU-HOST:7070 VGPU_TOKEN_FILE=/etc/vgpu/token"
                    ),
                );
            }
        } else {
            self.r.ok(area, format!("{who}: server {} (from {})", cfg.server, cfg.server_source));
        }
        match cfg.servers() {
            Err(e) => {
                good = false;
                self.r.fail(
                    area,
                    "server-address-invalid",
                    e,
                    "use unix:/path, tcp://host:port, tls://host:port or vsock://cid:port",
                );
            }
            Ok(servers) if servers.iter().any(transport::Address::is_tls) => good &= self.tls_ca(area, cfg, who),
            Ok(servers) => {
                // Not a problem, but worth knowing: over a plain unix socket, prompt
                // processing pays for the socket's bandwidth (docs/performance.md).
                if let Some(transport::Address::Unix(p)) =
                    servers.iter().find(|a| matches!(a, transport::Address::Unix(_)))
                {
                    self.r.ok(
                        area,
                        format!(
                            "{who}: on the GPU host, shm:{} would pass copies through memory shared with the server, and calls too (prompt processing at native speed instead of 0.93-0.99x, shorter round trips)",
                            p.display()
                        ),
                    );
                }
            }
        }
        if let Some((p, src)) = &cfg.shm_file {
            match transport::Segment::open_file(&self.o.root.join(p), 0, None) {
                Ok(seg) => self.r.ok(
                    area,
                    format!(
                        "{who}: shared file {} ({} MiB, from {src}): pinned memory, large copies and calls go through it once the server shares it (vgpu serve --shm-file)",
                        p.display(),
                        seg.len() >> 20
                    ),
                ),
                Err(e) => self.r.warn(
                    area,
                    "shm-file-unusable",
                    format!("{who}: shared file {} (from {src}): {e}; copies go over the connection", p.display()),
                    "in a VM it is the shared-memory device's memory, /sys/bus/pci/devices/<ivshmem device>/resource2 (lspci -d 1af4:1110); the user the application runs as must be able to read and write it (a udev rule)",
                ),
            }
        }
        match &cfg.token {
            Some(Err(e)) => {
                good = false;
                self.r.fail(
                    area,
                    "token-file-unreadable",
                    format!("{e}: the shims cannot start a session"),
                    "copy the server's token file here and make it readable by the user the application runs as",
                );
            }
            Some(Ok((_, src))) => self.r.ok(area, format!("{who}: token from {src}")),
            None => {}
        }
        if let Some(tf) = &cfg.token_file {
            use std::os::unix::fs::PermissionsExt as _;
            if let Ok(m) = std::fs::metadata(self.o.root.join(tf))
                && m.permissions().mode() & 0o077 != 0
            {
                self.r.warn(
                    area,
                    "token-file-permissions",
                    format!("token file {} is readable by other users", short(tf)),
                    format!("chmod 600 {} (and chown it to the user the application runs as)", short(tf)),
                );
            }
        }
        good
    }

    /// tls:// servers need a CA file the shims can read.
    fn tls_ca(&mut self, area: &str, cfg: &ClientConfig, who: &str) -> bool {
        let file = short(&cfg.file_path);
        let (Some((ca, src)), Some(host)) = (&cfg.tls_ca, &cfg.tls_ca_host) else {
            self.r.fail(
                area,
                "tls-ca-missing",
                format!("{who}: a tls:// server and no CA certificate to check it against (no VGPU_TLS_CA, no tls_ca in {file})"),
                format!(
                    "copy the CA certificate that signed the server's --tls-cert (or that certificate itself, if self-signed) here\nand set tls_ca = \"/etc/vgpu/ca.pem\" in {file}, or VGPU_TLS_CA"
                ),
            );
            return false;
        };
        match std::fs::read(host) {
            Ok(_) => {
                self.r.ok(area, format!("{who}: TLS CA {} (from {src})", short(ca)));
                true
            }
            Err(e) => {
                self.r.fail(
                    area,
                    "tls-ca-unreadable",
                    format!("TLS CA file {}: {e}: the shims cannot connect", short(ca)),
                    "copy the CA certificate there and make it readable by the user the application runs as",
                );
                false
            }
        }
    }

    // ---------------------------------------------------------------- server

    fn server(&mut self, area: &str, cfg: &ClientConfig) -> Option<Snapshot> {
        let Ok(servers) = cfg.servers() else {
            return None;
        };
        let mut parts = Vec::new();
        for addr in servers {
            let token = cfg.token_value();
            let o = handshake::handshake(&addr, token, protocol::PROTOCOL_VERSION, protocol::WIRE_HASH, self.o.timeout);
            let from = format!("(from {})", cfg.server_source);
            match o {
                Outcome::Accepted { server_version, snapshot } => {
                    let devs: Vec<String> = snapshot
                        .devices
                        .iter()
                        .map(|d| {
                            let (ma, mi) = d.compute_capability();
                            format!("{} (cc {ma}.{mi}, {} MiB)", d.name, d.total_mem >> 20)
                        })
                        .collect();
                    self.r.ok(
                        area,
                        format!(
                            "{addr}: {server_version}, protocol {}, driver {} (CUDA {}.{}), {} device(s): {}",
                            protocol::PROTOCOL_VERSION,
                            snapshot.driver_version,
                            snapshot.cuda_driver_version / 1000,
                            snapshot.cuda_driver_version % 1000 / 10,
                            snapshot.devices.len(),
                            devs.join(", ")
                        ),
                    );
                    for line in kept_bytes(&addr, cfg) {
                        self.r.ok(area, format!("{addr}: {line}"));
                    }
                    if snapshot.devices.is_empty() {
                        self.r.fail(
                            area,
                            "no-devices",
                            format!("{addr} offers no GPU"),
                            "check the GPU host: nvidia-smi there, and `vgpu serve`'s log",
                        );
                    }
                    parts.push(*snapshot);
                }
                Outcome::ConnectFailed(e) => self.r.fail(
                    area,
                    "server-down",
                    format!("cannot connect to {addr} {from}: {e}"),
                    format!(
                        "start the server on the GPU host (`systemctl start vgpu`, or `vgpu serve --listen {addr}`),\nor correct the address (VGPU_SERVER / server in {}); for TCP check the firewall",
                        short(&cfg.file_path)
                    ),
                ),
                Outcome::Tls(e) => self.r.fail(
                    area,
                    "tls-failed",
                    format!("{addr} {from}: {e}"),
                    format!(
                        "tls_ca in {} (or VGPU_TLS_CA) must hold the certificate of the CA that signed the server's --tls-cert,\nwhich must name the host of the address (tls_name or VGPU_TLS_NAME names another); a tcp:// server needs a tcp:// address",
                        short(&cfg.file_path)
                    ),
                ),
                Outcome::NoReply(e) => self.r.fail(
                    area,
                    "server-not-answering",
                    format!("{addr} accepted the connection but did not answer the handshake: {e}"),
                    "check the server's log (journalctl -u vgpu); restart it if it is stuck",
                ),
                Outcome::NotVgpu(e) => self.r.fail(
                    area,
                    "not-a-vgpu-server",
                    format!("something other than vgpu answers at {addr}: {e}"),
                    "check the port: `vgpu serve --listen` on the GPU host shows where vgpu listens",
                ),
                Outcome::BadReply(e) => self.r.fail(
                    area,
                    "protocol-mismatch",
                    format!("{addr} answered in a form this vgpu {VERSION} cannot read: {e}"),
                    "install the same vgpu version on the client and the GPU host",
                ),
                Outcome::Refused(reason) => {
                    let code = handshake::refusal_code(&reason);
                    let fix = match code {
                        "protocol-mismatch" => format!(
                            "install the same vgpu build on both sides (this client: vgpu {VERSION}, protocol {}, wire {:016x})",
                            protocol::PROTOCOL_VERSION,
                            protocol::WIRE_HASH
                        ),
                        "token-missing" => format!(
                            "give the client the server's token: token_file = \"/etc/vgpu/token\" in {}, or VGPU_TOKEN_FILE",
                            short(&cfg.file_path)
                        ),
                        "wrong-token" => format!(
                            "the token {} does not match the server's --token-file: copy the server's token to this machine",
                            cfg.token.as_ref().and_then(|t| t.as_ref().ok()).map(|(_, s)| format!("from {s}")).unwrap_or_default()
                        ),
                        "server-backend-failed" => "see the server's log (journalctl -u vgpu) and its GPU driver".into(),
                        "tls-required" => format!(
                            "write tls:// in place of tcp:// (VGPU_SERVER, or server in {}) and give the client the server's CA\ncertificate (tls_ca = \"/etc/vgpu/ca.pem\", or VGPU_TLS_CA); the token went out in clear text: consider replacing it",
                            short(&cfg.file_path)
                        ),
                        _ => "see the server's log (journalctl -u vgpu)".into(),
                    };
                    let what = match code {
                        "wrong-token" => "refused this client: wrong token",
                        "token-missing" => "requires a token and none is configured",
                        "protocol-mismatch" => "speaks another protocol version",
                        "tls-required" => "is a TLS listener and this client connects without TLS",
                        _ => "refused this client",
                    };
                    self.r.fail(area, code, format!("{addr} {what} ({reason})"), fix);
                }
            }
        }
        Snapshot::merge(parts)
    }

    // ---------------------------------------------------------------- Ollama, services

    fn locate_ollama(&mut self) -> Option<PathBuf> {
        if let Some(d) = &self.o.ollama_dir {
            if d.is_dir() {
                return Some(d.clone());
            }
            self.r.fail(
                "ollama",
                "ollama-dir-missing",
                format!("{} does not exist", short(d)),
                "pass the lib/ollama directory of the install (next to bin/ollama: <prefix>/lib/ollama)",
            );
            return None;
        }
        let found = ollama::find(&self.o.root, self.o.env.get("PATH").map(String::as_str));
        if found.is_none() {
            self.r.ok(
                "ollama",
                "no Ollama install found (PATH, /usr/local/lib/ollama, /usr/lib/ollama); Ollama checks skipped".into(),
            );
        }
        found
    }

    fn service(&mut self, shell_cfg: &ClientConfig, have_ollama: bool) -> ServiceView {
        let mut view = ServiceView { env: self.o.env.clone(), source: "this shell".into(), started: None };
        let mut found = false;
        if let Some(proc_dir) = &self.o.proc_dir {
            for p in procs::find_ollama_serve(proc_dir) {
                let who = format!("ollama serve (pid {})", p.pid);
                match &p.env {
                    Err(e) => self.r.warn(
                        "service",
                        "service-env-unreadable",
                        format!("{who}: cannot read its environment ({e})"),
                        "run the doctor as root (sudo vgpu doctor) to see what the service holds",
                    ),
                    Ok(env) => {
                        self.service_env(&who, env, shell_cfg, p.uid);
                        if !found {
                            view = ServiceView { env: env.clone(), source: who.clone(), started: p.started };
                        }
                        found = true;
                    }
                }
            }
            if !found && have_ollama {
                self.r.ok("service", "no running `ollama serve` found".into());
            }
        }
        if self.o.systemd
            && let Some(unit) = procs::systemd_unit("ollama.service")
        {
            match unit {
                Err(e) => self.r.warn("service", "systemctl-failed", e, "check `systemctl status ollama`"),
                Ok(u) if u.load_state == "not-found" || u.load_state.is_empty() => {}
                Ok(u) => {
                    let drop_ins = if u.drop_in_paths.is_empty() {
                        "no drop-ins".to_string()
                    } else {
                        format!("drop-ins {}", u.drop_in_paths.join(" "))
                    };
                    self.r.ok("service", format!("ollama.service: {} ({drop_ins})", u.active_state));
                    if !found {
                        // Not running: what it will get when started.
                        let passwd = std::fs::read_to_string(self.o.root.join("/etc/passwd")).unwrap_or_default();
                        let uid = if u.user.is_empty() { Some(0) } else { procs::uid_of(&u.user, &passwd) };
                        self.service_env("ollama.service", &u.environment, shell_cfg, uid);
                        view =
                            ServiceView { env: u.environment.clone(), source: "ollama.service".into(), started: None };
                    }
                }
            }
        }
        view
    }

    fn service_env(&mut self, who: &str, env: &Env, shell_cfg: &ClientConfig, uid: Option<u32>) {
        let keys: Vec<String> = env
            .iter()
            .filter(|(k, _)| {
                k.starts_with("VGPU_")
                    || k.starts_with("OLLAMA_")
                    || k.starts_with("GGML_CUDA")
                    || *k == "LD_LIBRARY_PATH"
                    || *k == "CUDA_VISIBLE_DEVICES"
                    || *k == "LD_PRELOAD"
            })
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let summary = if keys.is_empty() { "none of the relevant variables".to_string() } else { keys.join(" ") };
        self.r.ok("service", format!("{who} environment: {summary}"));
        let cfg = config::resolve(env, &self.o.root);
        if cfg.server_source == Source::Default && !self.o.root.join("/run/vgpu/vgpu.sock").exists() {
            self.r.fail(
                "service",
                "service-no-config",
                format!(
                    "{who} has no VGPU_SERVER and there is no {}: its GPU libraries cannot find the server",
                    short(&cfg.file_path)
                ),
                format!(
                    "write {} (server = \"tcp://GPU-HOST:7070\", token_file = ...), or add Environment=VGPU_SERVER=... \nto a drop-in: systemctl edit ollama (see scripts/systemd/ollama-vgpu.conf), then systemctl restart ollama",
                    short(&cfg.file_path)
                ),
            );
        } else {
            self.config("service", &cfg, who);
            if let (Some(uid), Some(tf)) = (uid, &cfg.token_file)
                && let Ok(meta) = std::fs::metadata(self.o.root.join(tf))
                && !procs::may_read(uid, None, &meta)
            {
                self.r.fail(
                    "service",
                    "token-file-unreadable",
                    format!("{who} runs as uid {uid}, which cannot read the token file {}", short(tf)),
                    format!("chown that user {} (keep mode 600)", short(tf)),
                );
            }
            if cfg.server != shell_cfg.server || cfg.token_value() != shell_cfg.token_value() {
                self.server("service", &cfg);
            }
        }
        if let Some(v) = env.get("CUDA_VISIBLE_DEVICES")
            && matches!(v.trim(), "" | "-1" | "none" | "NoDevFiles")
        {
            self.r.warn(
                "service",
                "cuda-visible-devices",
                format!("{who} has CUDA_VISIBLE_DEVICES={v:?}, which hides every GPU"),
                "unset CUDA_VISIBLE_DEVICES for the service (or list the devices to use: 0,1)",
            );
        }
    }

    // ---------------------------------------------------------------- loader

    fn plain_loader(&mut self, ollama: Option<&Path>) {
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
                Some(hit) => self.library(
                    "loader",
                    name,
                    &res,
                    &hit.path,
                    &format!("via {}", hit.via.describe()),
                    hit.via != Via::LdLibraryPath,
                ),
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
            _ => self.r.warn(
                area,
                "lib-not-vgpu",
                format!(
                    "{name} -> {shown} ({via}) is {}: programs linked against it run NVIDIA's runtime over libcuda.so.1, which vgpu does not support yet{later_vgpu}",
                    info.summary()
                ),
                first,
            ),
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

    fn ollama(&mut self, dir: &Path, service: &ServiceView) {
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

    // ---------------------------------------------------------------- discovery

    /// The first of `candidates` that is vgpu's.
    fn pick(&mut self, candidates: Vec<Option<PathBuf>>) -> Option<PathBuf> {
        candidates.into_iter().flatten().find(|p| self.inspect(p).is_vgpu())
    }

    fn discovery(&mut self, snapshot: Option<&Snapshot>, ollama: Option<&Path>, service: &ServiceView) {
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
    fn filters(&mut self, driver: Option<&str>, devices: &[(String, i32, i32, i32, u64)], dirs: &[CudaDir]) {
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
        let json: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
        assert_eq!(json["ok"], false);
        assert!(json["findings"].as_array().unwrap().iter().any(|f| f["code"] == "server-down"));
    }

    #[test]
    fn a_service_without_config_is_named() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("proc/77");
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("cmdline"), b"/usr/local/bin/ollama\0serve\0").unwrap();
        std::fs::write(p.join("environ"), b"OLLAMA_HOST=0.0.0.0\0CUDA_VISIBLE_DEVICES=-1\0").unwrap();
        let mut o = opts(t.path());
        o.proc_dir = Some(t.path().join("proc"));
        o.env.insert("VGPU_SERVER".into(), "unix:/nowhere.sock".into());
        let r = run(&o);
        assert!(r.has("service-no-config"), "{}", r.text());
        assert!(r.has("cuda-visible-devices"), "{}", r.text());
        assert!(!r.has("no-config"), "the shell itself is configured: {}", r.text());
        assert!(r.text().contains("shm:/nowhere.sock would pass copies"), "a unix: client hears of shm: {}", r.text());
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
        let p = t.path().join("proc/78");
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("cmdline"), b"/usr/bin/ollama\0serve\0").unwrap();
        std::fs::write(p.join("environ"), b"VGPU_SERVER=unix:/x.sock\0VGPU_TOKEN_FILE=/etc/vgpu/token\0").unwrap();
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
    fn driver_and_capability_filters() {
        let t = tempfile::tempdir().unwrap();
        for d in ["cuda_v12", "cuda_v13"] {
            std::fs::create_dir(t.path().join(d)).unwrap();
        }
        std::fs::write(t.path().join("cuda_v12/libcudart.so.12.8.90"), b"").unwrap();
        let dirs = ollama::cuda_dirs(t.path());
        let mut d = Doctor {
            o: &opts(t.path()),
            r: Report::new(),
            loader: Loader::new(&Root::new(t.path())),
            infos: HashMap::new(),
        };
        d.filters(Some("560.35.03"), &[("GPU".into(), 6, 1, 0, 1 << 30)], &dirs);
        assert!(d.r.has("driver-too-old"));
        assert!(d.r.findings.iter().any(|f| f.code == "driver-too-old" && f.level == Level::Fail));
        assert!(d.r.findings.iter().any(|f| f.code == "cc-not-in-archs" && f.level == Level::Warn));
        let mut d = Doctor {
            o: &opts(t.path()),
            r: Report::new(),
            loader: Loader::new(&Root::new(t.path())),
            infos: HashMap::new(),
        };
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
