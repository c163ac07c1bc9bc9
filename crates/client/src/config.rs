use serde::Deserialize;
use std::path::{Path, PathBuf};
use transport::{Address, Timeouts};

pub const DEFAULT_SERVER: &str = "unix:/run/vgpu/vgpu.sock";
pub const CONFIG_FILE: &str = "/etc/vgpu/client.toml";

/// Where the servers are and how to prove who we are.
#[derive(Debug, Clone)]
pub struct Config {
    pub servers: Vec<Address>,
    pub token: Option<String>,
    pub timeouts: Timeouts,
    /// Extra connections for large copies (`VGPU_LANES`, `lanes`; 0: none; 1: one over a
    /// link, where its chunks go coded, else none).
    pub lanes: usize,
    /// A file whose memory this client shares with its (first) server as its segment over
    /// any transport (`VGPU_SHM_FILE`, `shm_file`): in a VM, the shared-memory device the
    /// host set up (see `transport::Segment::open_file`).
    pub shm_file: Option<PathBuf>,
    /// Whether copies are offered to the servers by content (`VGPU_BLOBS` 0/1, `blobs`;
    /// unset: where `blobs::offered_over` says).
    pub blobs: Option<bool>,
    /// Whether repeated copies go in pieces the server keeps (`VGPU_PAGES` 0/1, `pages`;
    /// unset: where `pages::paged_over` says).
    pub pages: Option<bool>,
    /// Whether input rows striped over lanes go coded (`VGPU_CODE` 0/1, `code`; unset: where
    /// `transport::coding::Coding::choose` says).
    pub code: Option<bool>,
    /// Where the settings came from, for messages ("VGPU_SERVER", the file, "default").
    pub source: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    server: Option<String>,
    token: Option<String>,
    token_file: Option<PathBuf>,
    timeout_secs: Option<u64>,
    lanes: Option<usize>,
    tls_ca: Option<PathBuf>,
    tls_name: Option<String>,
    shm_file: Option<PathBuf>,
    blobs: Option<bool>,
    pages: Option<bool>,
    code: Option<bool>,
}

impl Config {
    /// The environment first (`VGPU_SERVER`, `VGPU_TOKEN`, `VGPU_TOKEN_FILE`,
    /// `VGPU_TLS_CA`, `VGPU_TLS_NAME`), then the file named by `VGPU_CONFIG` or
    /// `/etc/vgpu/client.toml` (services under systemd do not see a shell's variables), then
    /// the default unix socket.
    pub fn load() -> Result<Config, String> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let path = env("VGPU_CONFIG").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(CONFIG_FILE));
        let file = if path.exists() { Some(read_file(&path)?) } else { None };
        let f = file.as_ref();
        let (server, source) = match (env("VGPU_SERVER"), f.and_then(|f| f.server.clone())) {
            (Some(s), _) => (s, "VGPU_SERVER".to_string()),
            (None, Some(s)) => (s, path.display().to_string()),
            (None, None) => (DEFAULT_SERVER.to_string(), "default".to_string()),
        };
        let mut servers = server
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.parse::<Address>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{source}: {e}"))?;
        // One CA (and name override) for every tls:// server of the list.
        let tls_ca = env("VGPU_TLS_CA").map(PathBuf::from).or_else(|| f.and_then(|f| f.tls_ca.clone()));
        let tls_name = env("VGPU_TLS_NAME").or_else(|| f.and_then(|f| f.tls_name.clone()));
        for a in &mut servers {
            if let Address::Tls(t) = a {
                t.ca = tls_ca.clone();
                t.name = tls_name.clone();
            }
        }
        let token = match (env("VGPU_TOKEN"), env("VGPU_TOKEN_FILE")) {
            (Some(t), _) => Some(t),
            (None, Some(p)) => Some(read_token(Path::new(&p))?),
            (None, None) => match f {
                Some(File { token: Some(t), .. }) => Some(t.clone()),
                Some(File { token_file: Some(p), .. }) => Some(read_token(p)?),
                _ => None,
            },
        };
        let mut timeouts = Timeouts::default();
        if let Some(s) = env("VGPU_TIMEOUT_SECS").and_then(|s| s.parse().ok()).or(f.and_then(|f| f.timeout_secs)) {
            timeouts.silence = std::time::Duration::from_secs(s);
        }
        let lanes = match env("VGPU_LANES") {
            Some(v) => v.trim().parse().map_err(|_| format!("VGPU_LANES={v}: expected a number of lanes"))?,
            None => f.and_then(|f| f.lanes).unwrap_or_else(transport::lanes::default_lanes),
        };
        let shm_file = env("VGPU_SHM_FILE").map(PathBuf::from).or_else(|| f.and_then(|f| f.shm_file.clone()));
        // A switch: the variable (0 or 1) over the file.
        let switch = |name: &str, file: Option<bool>| match env(name).as_deref().map(str::trim) {
            Some("0") => Ok(Some(false)),
            Some("1") => Ok(Some(true)),
            Some(v) => Err(format!("{name}={v}: expected 0 or 1")),
            None => Ok(file),
        };
        let blobs = switch("VGPU_BLOBS", f.and_then(|f| f.blobs))?;
        let pages = switch("VGPU_PAGES", f.and_then(|f| f.pages))?;
        let code = switch("VGPU_CODE", f.and_then(|f| f.code))?;
        Ok(Config { servers, token, timeouts, lanes, shm_file, blobs, pages, code, source })
    }
}

fn read_file(p: &Path) -> Result<File, String> {
    let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
    toml::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))
}

/// Read a token file, trimming the trailing newline editors add.
pub fn read_token(p: &Path) -> Result<String, String> {
    let t = std::fs::read_to_string(p).map_err(|e| format!("token file {}: {e}", p.display()))?;
    Ok(t.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_is_parsed() {
        let dir = tempfile::tempdir().unwrap();
        let tok = dir.path().join("tok");
        std::fs::write(&tok, "s3cret\n").unwrap();
        let f = dir.path().join("client.toml");
        std::fs::write(&f, format!("server = \"tcp://10.1.2.3:7070\"\ntoken_file = \"{}\"\n", tok.display())).unwrap();
        let parsed = read_file(&f).unwrap();
        assert_eq!(parsed.server.as_deref(), Some("tcp://10.1.2.3:7070"));
        assert_eq!(read_token(parsed.token_file.as_ref().unwrap()).unwrap(), "s3cret");
        std::fs::write(&f, "tls_ca = \"/etc/vgpu/ca.pem\"\ntls_name = \"gpu.example\"\n").unwrap();
        let parsed = read_file(&f).unwrap();
        assert_eq!(parsed.tls_ca.as_deref(), Some(Path::new("/etc/vgpu/ca.pem")));
        assert_eq!(parsed.tls_name.as_deref(), Some("gpu.example"));
        std::fs::write(&f, "shm_file = \"/sys/bus/pci/devices/0000:00:05.0/resource2\"\n").unwrap();
        assert_eq!(
            read_file(&f).unwrap().shm_file.as_deref(),
            Some(Path::new("/sys/bus/pci/devices/0000:00:05.0/resource2"))
        );
        std::fs::write(&f, "blobs = false\npages = true\ncode = false\n").unwrap();
        assert_eq!(read_file(&f).unwrap().blobs, Some(false));
        assert_eq!(read_file(&f).unwrap().pages, Some(true));
        assert_eq!(read_file(&f).unwrap().code, Some(false));
        std::fs::write(&f, "srever = 1\n").unwrap();
        assert!(read_file(&f).is_err(), "unknown keys are reported, not ignored");
    }
}
