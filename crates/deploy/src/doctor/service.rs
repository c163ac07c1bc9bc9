//! Where Ollama runs: its install, a running `ollama serve`, `ollama.service`, and the
//! environment its runners will get.

use super::{Doctor, ServiceView, short};
use crate::config::{self, ClientConfig, Env, Source};
use crate::{ollama, procs};
use std::path::PathBuf;

impl Doctor<'_> {
    pub(super) fn locate_ollama(&mut self) -> Option<PathBuf> {
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

    pub(super) fn service(&mut self, shell_cfg: &ClientConfig, have_ollama: bool) -> ServiceView {
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
        // llama.cpp turns graphs off when the variable exists at all, whatever its value.
        // Session 1's drop-in set it; vgpu forwards graphs, which decoding needs to be fast.
        if env.get("GGML_CUDA_DISABLE_GRAPHS").is_some() {
            self.r.warn(
                "service",
                "cuda-graphs-off",
                format!("{who} has GGML_CUDA_DISABLE_GRAPHS set: llama.cpp decodes without CUDA graphs, slower over vgpu"),
                "remove it from the service (systemctl edit ollama; earlier copies of scripts/systemd/ollama-vgpu.conf set it), then systemctl restart ollama",
            );
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
}
