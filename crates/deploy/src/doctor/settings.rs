//! The client's configuration as the shims will resolve it: address, token, TLS CA.

use super::{Doctor, short};
use crate::config::{self, ClientConfig, Source};

impl Doctor<'_> {
    pub(super) fn config(&mut self, area: &str, cfg: &ClientConfig, who: &str) -> bool {
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
                // processing pays for the socket's bandwidth (docs/performance.md). Only
                // where the socket is there: a server of this host.
                if let Some(transport::Address::Unix(p)) =
                    servers.iter().find(|a| matches!(a, transport::Address::Unix(_)))
                    && self.o.root.join(p).exists()
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
}
