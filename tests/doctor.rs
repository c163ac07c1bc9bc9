//! `vgpu doctor` names each fault specifically: server down, wrong or missing token,
//! protocol mismatch, a cuda_vNN folder without vgpu's runtime (and an Ollama upgrade that
//! removed it), NVIDIA's libcuda.so.1 first on the path, an NVML driver older than 570, no
//! configuration at all. Real `vgpu serve --backend sim` servers, the real shims, fake trees.

mod common;
use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

struct Doc {
    text: String,
    code: Option<i32>,
}

impl Doc {
    /// The finding line carrying `[code]`, which must be there.
    fn line(&self, code: &str) -> &str {
        let tag = format!("[{code}]");
        self.text.lines().find(|l| l.ends_with(&tag)).unwrap_or_else(|| panic!("no {tag} in:\n{}", self.text))
    }

    fn has(&self, code: &str) -> bool {
        self.text.lines().any(|l| l.ends_with(&format!("[{code}]")))
    }

    /// The `fix:` line right under the finding with `code`.
    fn fix(&self, code: &str) -> &str {
        let line = self.line(code);
        let mut it = self.text.lines().skip_while(|l| *l != line);
        it.next();
        let fix = it.next().unwrap_or("");
        assert!(fix.starts_with("     fix: "), "no fix under {code}:\n{}", self.text);
        fix
    }

    fn fails(&self) -> Vec<&str> {
        self.text.lines().filter(|l| l.starts_with("FAIL")).collect()
    }
}

fn doctor(args: &[&str], envs: &[(&str, &str)]) -> Doc {
    let mut a = vec!["doctor"];
    a.extend_from_slice(args);
    let out = vgpu(&a, envs);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    for l in text.lines().skip(1) {
        assert!(
            ["OK   ", "WARN ", "FAIL ", "     fix: ", "          "].iter().any(|p| l.starts_with(p))
                || l.contains("problem")
                || l == "all checks passed",
            "unexpected report line {l:?} in:\n{text}"
        );
    }
    Doc { text, code: out.status.code() }
}

/// `vgpu serve --backend sim` on a free localhost TCP port with a token file. The port is
/// chosen before the server binds it, so another process may take it first: retry until
/// the handshake proves this server answers there.
fn tcp_sim_server(token_file: &Path) -> Server {
    let token = fs::read_to_string(token_file).unwrap().trim().to_string();
    for _ in 0..10 {
        let address = free_tcp_address();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_vgpu"))
            .args(["serve", "--backend", "sim", "--listen", &address, "--token-file", s(token_file)])
            .env("VGPU_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut server = Server { child, address };
        let addr: transport::Address = server.address.parse().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if server.child.try_wait().unwrap().is_some() {
                break; // could not bind: try another port
            }
            let o = deploy::handshake::handshake(
                &addr,
                &token,
                protocol::PROTOCOL_VERSION,
                protocol::WIRE_HASH,
                Duration::from_millis(500),
            );
            if matches!(o, deploy::handshake::Outcome::Accepted { .. }) {
                return server;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        server.stop();
    }
    panic!("no TCP sim server came up");
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Whether this machine has an Ollama of its own the doctor would also look at.
fn machine_has_ollama() -> bool {
    Path::new("/usr/local/lib/ollama").exists() || Path::new("/usr/lib/ollama").exists()
}

#[test]
fn server_down_is_named_in_text_and_json() {
    let t = tempfile::tempdir().unwrap();
    let gone = format!("unix:{}/nobody.sock", t.path().display());
    let absent = t.path().join("absent.toml");
    let env = [("VGPU_SERVER", gone.as_str()), ("VGPU_CONFIG", s(&absent))];
    let d = doctor(&[], &env);
    assert_eq!(d.code, Some(1), "{}", d.text);
    let line = d.line("server-down");
    assert!(line.starts_with("FAIL server:") && line.contains(&gone), "{line}");
    assert!(d.fix("server-down").contains("vgpu serve"), "{}", d.text);
    assert!(!d.has("no-config"), "VGPU_SERVER is set: {}", d.text);
    assert!(d.has("discovery-skipped"));

    let out = vgpu(&["doctor", "--json"], &env);
    assert_eq!(out.status.code(), Some(1));
    let json = String::from_utf8_lossy(&out.stdout);
    assert!(json.contains("\"code\": \"server-down\""), "{json}");
    assert!(json.contains("\"ok\": false"), "{json}");
    let findings = d.text.lines().filter(|l| ["OK ", "WARN", "FAIL"].iter().any(|p| l.starts_with(p))).count();
    assert_eq!(json.matches("\"level\":").count(), findings, "the same findings:\n{json}\n{}", d.text);
}

#[test]
fn no_config_and_no_environment_is_named() {
    let t = tempfile::tempdir().unwrap();
    let absent = t.path().join("client.toml");
    let d = doctor(&[], &[("VGPU_CONFIG", s(&absent))]);
    assert_eq!(d.code, Some(1));
    assert!(d.line("no-config").starts_with("FAIL config:"), "{}", d.text);
    assert!(d.fix("no-config").contains("write "), "{}", d.text);
    assert!(d.text.contains("\n            server = \"tcp://GPU-HOST:7070\"\n"), "{}", d.text);
    assert!(d.has("server-down"), "{}", d.text);
}

#[test]
fn wrong_and_missing_tokens_are_told_from_a_dead_server() {
    let t = tempfile::tempdir().unwrap();
    let tok = t.path().join("token");
    fs::write(&tok, "right-token\n").unwrap();
    fs::set_permissions(&tok, fs::Permissions::from_mode(0o600)).unwrap();
    let server = tcp_sim_server(&tok);
    let addr = server.address.clone();
    let cfg = t.path().join("absent.toml");
    let base = [("VGPU_SERVER", addr.as_str()), ("VGPU_CONFIG", s(&cfg))];

    let d = doctor(&[], &[base[0], base[1], ("VGPU_TOKEN", "wrong-token")]);
    assert!(d.line("wrong-token").starts_with("FAIL server:"), "{}", d.text);
    assert!(!d.has("server-down") && !d.has("token-missing"), "{}", d.text);
    assert_eq!(d.code, Some(1));

    let d = doctor(&[], &base);
    assert!(d.line("token-missing").starts_with("FAIL server:"), "{}", d.text);
    assert!(!d.has("wrong-token"), "{}", d.text);

    let d = doctor(&[], &[base[0], base[1], ("VGPU_TOKEN_FILE", s(&tok))]);
    assert!(d.text.contains(&format!("OK   server: {addr}: vgpu")), "{}", d.text);
    assert!(!d.has("wrong-token") && !d.has("token-missing") && !d.has("server-down"), "{}", d.text);
    // Whether a model's later loads send hashes: not to this host's loopback address.
    let kept = format!("OK   server: {addr}: weights sent as they are (this host's loopback");
    assert!(d.text.contains(&kept), "{}", d.text);
    let rows = format!("OK   server: {addr}: repeated copies sent whole (this host's loopback crosses no link");
    assert!(d.text.contains(&rows), "{}", d.text);
    let coded = format!("OK   server: {addr}: input rows sent as they are (the kernel copies them within this host");
    assert!(d.text.contains(&coded), "{}", d.text);
    let d = doctor(&[], &[base[0], base[1], ("VGPU_TOKEN_FILE", s(&tok)), ("VGPU_BLOBS", "1"), ("VGPU_CODE", "1")]);
    let kept = format!("OK   server: {addr}: weights offered by content, kept by the server (VGPU_BLOBS)");
    assert!(d.text.contains(&kept), "{}", d.text);
    assert!(d.text.contains(&format!("OK   server: {addr}: input rows coded (VGPU_CODE)")), "{}", d.text);
    let file = t.path().join("client.toml");
    fs::write(&file, "blobs = true\npages = true\ncode = false\n").unwrap();
    let d = doctor(&[], &[base[0], ("VGPU_CONFIG", s(&file)), ("VGPU_TOKEN_FILE", s(&tok))]);
    let kept = format!("OK   server: {addr}: weights offered by content, kept by the server ({})", file.display());
    assert!(d.text.contains(&kept), "{}", d.text);
    let rows = format!("OK   server: {addr}: repeated copies in pieces the server keeps ({})", file.display());
    assert!(d.text.contains(&rows), "{}", d.text);
    let coded = format!("OK   server: {addr}: input rows sent as they are ({})", file.display());
    assert!(d.text.contains(&coded), "{}", d.text);
}

#[test]
fn protocol_mismatch_is_named() {
    let t = tempfile::tempdir().unwrap();
    let server = Server::sim(t.path(), &[]);
    let addr: transport::Address = server.address.parse().unwrap();
    let o = deploy::handshake::handshake(
        &addr,
        "",
        protocol::PROTOCOL_VERSION + 1,
        protocol::WIRE_HASH,
        Duration::from_secs(3),
    );
    let deploy::handshake::Outcome::Refused(reason) = o else { panic!("{o:?}") };
    assert_eq!(deploy::handshake::refusal_code(&reason), "protocol-mismatch", "{reason}");
    // And the same build is accepted.
    let o = deploy::handshake::handshake(
        &addr,
        "",
        protocol::PROTOCOL_VERSION,
        protocol::WIRE_HASH,
        Duration::from_secs(3),
    );
    assert!(matches!(o, deploy::handshake::Outcome::Accepted { .. }), "{o:?}");
}

#[test]
fn a_cuda_v13_folder_without_vgpus_runtime_is_named() {
    let t = tempfile::tempdir().unwrap();
    let o = fake_ollama(t.path());
    // A vgpu build with the CUDA 12 runtime only: cuda_v13 keeps NVIDIA's.
    let lib = fake_dist_lib(
        t.path(),
        &["libcuda.so.1", "libnvidia-ml.so.1", "libcudart.so.12", "libcublas.so.12", "libcublasLt.so.12"],
    );
    let out = vgpu(&["install", "ollama", "--ollama-dir", s(&o), "--lib-dir", s(&lib)], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cfg = t.path().join("absent.toml");
    let d = doctor(&["--ollama-dir", s(&o)], &[("VGPU_CONFIG", s(&cfg))]);
    let line = d.line("runtime-missing");
    assert!(line.starts_with("FAIL ollama cuda_v13: cuda_v13 lacks vgpu's runtime"), "{line}");
    assert!(line.contains("libcudart.so.13 -> libcudart.so.13.0.96"), "{line}");
    assert!(d.text.contains("OK   ollama cuda_v12: vgpu's runtime"), "{}", d.text);
    assert_eq!(d.text.matches("[runtime-missing]").count(), 1, "{}", d.text);
    assert!(d.fix("runtime-missing").contains("skipped cuda_v13"), "{}", d.text);
    assert!(d.text.contains("or pin OLLAMA_LLM_LIBRARY"), "{}", d.text);
    assert_eq!(d.code, Some(1));
}

#[test]
fn an_ollama_upgrade_that_removed_vgpu_is_named() {
    let t = tempfile::tempdir().unwrap();
    let o = fake_ollama(t.path());
    let lib = fake_dist_lib(t.path(), &all_names());
    assert!(vgpu(&["install", "ollama", "--ollama-dir", s(&o), "--lib-dir", s(&lib)], &[]).status.success());
    let cfg = t.path().join("absent.toml");
    let d = doctor(&["--ollama-dir", s(&o), "--lib-dir", s(&lib)], &[("VGPU_CONFIG", s(&cfg))]);
    assert!(!d.has("runtime-missing") && !d.has("ollama-upgraded"), "{}", d.text);
    // The upgrade writes NVIDIA's cudart 13 over the versioned file.
    fs::write(o.join("cuda_v13/libcudart.so.13.0.96"), "NVIDIA cudart 13.0.96 (upgraded)").unwrap();
    let d = doctor(&["--ollama-dir", s(&o), "--lib-dir", s(&lib)], &[("VGPU_CONFIG", s(&cfg))]);
    assert!(d.line("ollama-upgraded").contains("cuda_v13/libcudart.so.13.0.96"), "{}", d.text);
    assert!(d.fix("ollama-upgraded").contains("vgpu install ollama"), "{}", d.text);
    assert!(d.line("runtime-missing").starts_with("FAIL ollama cuda_v13:"), "{}", d.text);
}

#[test]
fn nvidias_libcuda_first_on_the_path_is_named_and_never_loaded() {
    let t = tempfile::tempdir().unwrap();
    let lib = lib_dir(t.path());
    let server = Server::sim(t.path(), &[]);
    let nvidia = t.path().join("nvidia");
    let mark = t.path().join("the-fake-nvidia-lib-was-loaded");
    cc_shared(
        &nvidia.join("libcuda.so.1"),
        "libcuda.so.1",
        &format!(
            "#include <stdio.h>\nconst char *vendor = \"NVIDIA Corporation\";\nint cuInit(unsigned f) {{ return 100; }}\n\
             __attribute__((constructor)) static void loaded(void) {{ FILE *f = fopen(\"{}\", \"w\"); if (f) fclose(f); }}\n",
            mark.display()
        ),
    );
    let ld = format!("{}:{}", nvidia.display(), lib.display());
    let cfg = t.path().join("absent.toml");
    let env = [("VGPU_SERVER", server.address.as_str()), ("LD_LIBRARY_PATH", ld.as_str()), ("VGPU_CONFIG", s(&cfg))];
    let d = doctor(&["--lib-dir", s(&lib)], &env);
    let line = d.line("nvidia-libcuda-first");
    assert!(line.starts_with("FAIL loader: libcuda.so.1 -> "), "{line}");
    assert!(line.contains("NVIDIA's"), "{line}");
    assert!(line.contains(&format!("vgpu's {}/libcuda.so.1 comes later", lib.display())), "{line}");
    assert!(d.fix("nvidia-libcuda-first").contains("vgpu install system"), "{}", d.text);
    assert_eq!(d.code, Some(1));
    assert!(!mark.exists(), "the doctor loaded a foreign library");
    // The other libraries are vgpu's, and discovery went through vgpu's own copy.
    assert!(d.text.contains("OK   loader: libnvidia-ml.so.1 -> "), "{}", d.text);
    assert!(d.text.contains(&format!("OK   discovery: CUDA through {}/libcuda.so.1", lib.display())), "{}", d.text);
}

#[test]
fn an_nvml_driver_older_than_570_is_named() {
    let t = tempfile::tempdir().unwrap();
    let lib = lib_dir(t.path());
    let server = Server::sim(t.path(), &["--sim-driver-version", "560.35.03"]);
    let cfg = t.path().join("absent.toml");
    let env = [("VGPU_SERVER", server.address.as_str()), ("LD_LIBRARY_PATH", s(&lib)), ("VGPU_CONFIG", s(&cfg))];
    let d = doctor(&[], &env);
    assert!(d.text.contains("OK   discovery: NVML through"), "{}", d.text);
    assert!(d.text.contains("driver 560.35.03"), "{}", d.text);
    let line = d.line("driver-too-old");
    assert!(line.starts_with("FAIL discovery: NVML driver 560.35.03 (major 560 < 570)"), "{line}");
    assert_eq!(d.code, Some(1));
}

#[test]
fn a_correct_setup_passes() {
    let t = tempfile::tempdir().unwrap();
    let lib = lib_dir(t.path());
    let server = Server::sim(t.path(), &[]);
    let cfg = t.path().join("client.toml");
    fs::write(&cfg, format!("server = \"{}\"\n", server.address)).unwrap();
    let env = [("LD_LIBRARY_PATH", s(&lib)), ("VGPU_CONFIG", s(&cfg))];
    let d = doctor(&["--lib-dir", s(&lib)], &env);
    assert!(d.fails().is_empty(), "{}", d.text);
    assert!(d.text.contains("OK   discovery: CUDA through"), "{}", d.text);
    assert!(d.text.contains("passes Ollama's driver checks"), "{}", d.text);
    if !machine_has_ollama() {
        assert_eq!(d.code, Some(0), "{}", d.text);
    }
}

#[test]
fn ollama_with_vgpus_libraries_installed_passes() {
    let t = tempfile::tempdir().unwrap();
    let o = fake_ollama(t.path());
    let lib = lib_dir(t.path());
    let out = vgpu(&["install", "ollama", "--ollama-dir", s(&o), "--lib-dir", s(&lib)], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let server = Server::sim(t.path(), &[]);
    let cfg = t.path().join("client.toml");
    fs::write(&cfg, format!("server = \"{}\"\n", server.address)).unwrap();
    let d = doctor(&["--ollama-dir", s(&o), "--lib-dir", s(&lib)], &[("VGPU_CONFIG", s(&cfg))]);
    assert!(d.fails().is_empty(), "{}", d.text);
    for dir in ["cuda_v12", "cuda_v13"] {
        assert!(d.text.contains(&format!("OK   ollama {dir}: vgpu's runtime")), "{}", d.text);
        assert!(
            d.text.contains(&format!("OK   ollama {dir}: libcuda.so.1 -> {}/{dir}/libcuda.so.1", o.display())),
            "{}",
            d.text
        );
    }
    assert!(d.text.contains("runtime 12.8 from the file names"), "{}", d.text);
    // Discovery went through the libraries Ollama's newest folder gives its runners.
    assert!(
        d.text.contains(&format!("OK   discovery: NVML through {}/cuda_v13/libnvidia-ml.so.1", o.display())),
        "{}",
        d.text
    );
    assert!(
        d.text.contains(&format!("OK   discovery: CUDA through {}/cuda_v13/libcuda.so.1", o.display())),
        "{}",
        d.text
    );
    let out = vgpu(&["uninstall", "ollama", "--ollama-dir", s(&o)], &[]);
    assert!(out.status.success());
}
