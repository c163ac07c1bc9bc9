//! `vgpu env`: the shell lines for the `LD_LIBRARY_PATH` way of using vgpu.

use crate::config::{self, ClientConfig, Source};
use std::path::Path;

fn quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-:+,=@".contains(&b)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The lines to `eval` in a shell, with the equivalent systemd drop-in as comments.
pub fn lines(lib_dir: &Path, cfg: &ClientConfig) -> String {
    let lib = quote(&lib_dir.display().to_string());
    let mut s = String::new();
    s.push_str("# vgpu: use the GPU of a vgpu server from this shell (eval \"$(vgpu env)\")\n");
    s.push_str(&format!("export LD_LIBRARY_PATH={lib}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}\n"));
    let (server, server_note) = match &cfg.server_source {
        Source::Default => (
            "tcp://GPU-HOST:7070".to_string(),
            format!("   # placeholder: no VGPU_SERVER and no {}", cfg.file_path.display()),
        ),
        src => (cfg.server.clone(), format!("   # from {src}")),
    };
    s.push_str(&format!("export VGPU_SERVER={}{server_note}\n", quote(&server)));
    let mut token_line = None;
    match (&cfg.token_file, &cfg.token) {
        (Some(tf), _) => token_line = Some(format!("VGPU_TOKEN_FILE={}", quote(&tf.display().to_string()))),
        (None, Some(Ok(_))) => {
            s.push_str("# (a token is configured; put it in a file with mode 600 and set VGPU_TOKEN_FILE)\n")
        }
        _ => s.push_str("# export VGPU_TOKEN_FILE=/etc/vgpu/token   # needed for tcp:// and tls:// servers\n"),
    }
    // The CA (and name) for tls:// servers travel with the server address.
    let mut tls_lines = Vec::new();
    if let Some((ca, _)) = &cfg.tls_ca {
        tls_lines.push(format!("VGPU_TLS_CA={}", quote(&ca.display().to_string())));
    }
    if let Some(n) = &cfg.tls_name {
        tls_lines.push(format!("VGPU_TLS_NAME={}", quote(n)));
    }
    for l in token_line.iter().chain(&tls_lines) {
        s.push_str(&format!("export {l}\n"));
    }
    s.push_str("#\n# For a systemd service (services do not see this shell): `systemctl edit ollama` and add\n");
    s.push_str("#   [Service]\n");
    s.push_str(&format!("#   Environment=LD_LIBRARY_PATH={lib}\n"));
    s.push_str(&format!("#   Environment=VGPU_SERVER={}\n", quote(&server)));
    for l in token_line.iter().chain(&tls_lines) {
        s.push_str(&format!("#   Environment={l}\n"));
    }
    s.push_str(&format!(
        "# or put server/token_file in {} (read by every process), see scripts/systemd/ollama-vgpu.conf.\n",
        config::CONFIG_FILE
    ));
    s.push_str(
        "# Ollama puts its bundled lib/ollama/cuda_vNN first on its runners' LD_LIBRARY_PATH, so this\n\
         # mode gives it only libcuda.so.1 and libnvidia-ml.so.1: use `sudo vgpu install ollama` for Ollama.\n",
    );
    // PyTorch and CuPy load NVIDIA's cuBLAS by path; vgpu's sends each call as one message.
    let (blas, lt) = (lib_dir.join("libcublas.so.13"), lib_dir.join("libcublasLt.so.13"));
    s.push_str(&format!(
        "# PyTorch and CuPy bring NVIDIA's cuBLAS, which runs through vgpu's driver kernel by kernel and\n\
         # starts slower (docs/export-tables.md); to run vgpu's, one message a call, preload it:\n\
         #   LD_PRELOAD={} python3 ...\n",
        quote(&format!("{} {}", blas.display(), lt.display()))
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::root::Root;

    #[test]
    fn lines_name_the_library_directory_and_server() {
        let t = tempfile::tempdir().unwrap();
        let mut env = config::Env::new();
        env.insert("VGPU_SERVER".into(), "tcp://gpu:7070".into());
        env.insert("VGPU_TOKEN_FILE".into(), "/etc/vgpu/token".into());
        let cfg = config::resolve(&env, &Root::new(t.path()));
        let s = lines(Path::new("/opt/vgpu/lib"), &cfg);
        assert!(s.contains("export LD_LIBRARY_PATH=/opt/vgpu/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}\n"), "{s}");
        assert!(s.contains("export VGPU_SERVER=tcp://gpu:7070"), "{s}");
        assert!(s.contains("export VGPU_TOKEN_FILE=/etc/vgpu/token"), "{s}");
        assert!(s.contains("#   Environment=LD_LIBRARY_PATH=/opt/vgpu/lib"), "{s}");
        assert!(
            s.contains("#   LD_PRELOAD='/opt/vgpu/lib/libcublas.so.13 /opt/vgpu/lib/libcublasLt.so.13' python3"),
            "{s}"
        );
        assert_eq!(quote("a b"), "'a b'");

        env.insert("VGPU_SERVER".into(), "tls://gpu:7443".into());
        env.insert("VGPU_TLS_CA".into(), "/etc/vgpu/ca.pem".into());
        let s = lines(Path::new("/opt/vgpu/lib"), &config::resolve(&env, &Root::new(t.path())));
        assert!(s.contains("export VGPU_TLS_CA=/etc/vgpu/ca.pem\n"), "{s}");
        assert!(s.contains("#   Environment=VGPU_TLS_CA=/etc/vgpu/ca.pem\n"), "{s}");
    }
}
