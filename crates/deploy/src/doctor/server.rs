//! The server: a handshake with it, and what its transport will do with a model's bytes.

use super::{Doctor, short};
use crate::VERSION;
use crate::config::ClientConfig;
use crate::handshake::{self, Outcome};
use device_model::Snapshot;

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

impl Doctor<'_> {
    pub(super) fn server(&mut self, area: &str, cfg: &ClientConfig) -> Option<Snapshot> {
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
}
