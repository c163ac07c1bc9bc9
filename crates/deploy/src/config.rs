//! The client configuration as the shims will see it, worked out from a given environment
//! and root (so the doctor can judge the environment of a service, not only its own):
//! `VGPU_SERVER`, `VGPU_TOKEN`, `VGPU_TOKEN_FILE`, `VGPU_TLS_CA`, `VGPU_TLS_NAME`,
//! `VGPU_SHM_FILE`, `VGPU_BLOBS`, `VGPU_PAGES`, `VGPU_CODE`, then the file named by `VGPU_CONFIG` or
//! `/etc/vgpu/client.toml` (keys `server`, `token`, `token_file`, `timeout_secs`, `lanes`,
//! `tls_ca`, `tls_name`, `shm_file`, `blobs`, `pages`, `code`), then the default socket. Mirrors
//! `client::Config::load`.

use crate::root::Root;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub type Env = BTreeMap<String, String>;

pub const CONFIG_FILE: &str = "/etc/vgpu/client.toml";
pub const DEFAULT_SERVER: &str = "unix:/run/vgpu/vgpu.sock";

/// This process's environment.
pub fn process_env() -> Env {
    std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect()
}

fn get<'a>(env: &'a Env, k: &str) -> Option<&'a str> {
    env.get(k).map(String::as_str).filter(|v| !v.trim().is_empty())
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub server: Option<String>,
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    pub timeout_secs: Option<u64>,
    pub lanes: Option<usize>,
    pub tls_ca: Option<PathBuf>,
    pub tls_name: Option<String>,
    pub shm_file: Option<PathBuf>,
    pub blobs: Option<bool>,
    pub pages: Option<bool>,
    pub code: Option<bool>,
}

/// Where a setting came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Env(&'static str),
    File(PathBuf),
    Default,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Env(k) => write!(f, "{k}"),
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Default => write!(f, "default"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The config file consulted (inside the root), and whether `VGPU_CONFIG` named it.
    pub file_path: PathBuf,
    pub file_from_env: bool,
    /// `None`: no such file. `Some(Err)`: unreadable or invalid (the shims then refuse to
    /// start a session).
    pub file: Option<Result<FileConfig, String>>,
    /// The server list as written, and where it came from.
    pub server: String,
    pub server_source: Source,
    /// The token, where from; `Err` when a token file cannot be read.
    pub token: Option<Result<(String, Source), String>>,
    /// A token file in play (for the permission check).
    pub token_file: Option<PathBuf>,
    pub timeout_secs: Option<u64>,
    /// The CA file for tls:// servers as written, and where that came from.
    pub tls_ca: Option<(PathBuf, Source)>,
    /// The same file as this process reaches it (inside the root).
    pub tls_ca_host: Option<PathBuf>,
    pub tls_name: Option<String>,
    /// The shared file the client uses as its segment (a VM's shared memory), and where
    /// that came from.
    pub shm_file: Option<(PathBuf, Source)>,
    /// Kept weights on or off by configuration, and where that came from (`VGPU_BLOBS` other
    /// than 0 or 1 counts as unset here; the shims refuse it).
    pub blobs: Option<(bool, Source)>,
    /// Repeated copies in kept pieces on or off by configuration (`VGPU_PAGES`), the same way.
    pub pages: Option<(bool, Source)>,
    /// Coded input rows on or off by configuration (`VGPU_CODE`), the same way.
    pub code: Option<(bool, Source)>,
}

impl ClientConfig {
    /// The servers, tls:// ones carrying the CA and name as the shims would.
    pub fn servers(&self) -> Result<Vec<transport::Address>, String> {
        let mut servers = self
            .server
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.parse::<transport::Address>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{}: {e}", self.server_source))?;
        for a in &mut servers {
            if let transport::Address::Tls(t) = a {
                t.ca = self.tls_ca_host.clone();
                t.name = self.tls_name.clone();
            }
        }
        Ok(servers)
    }

    pub fn token_value(&self) -> &str {
        match &self.token {
            Some(Ok((t, _))) => t,
            _ => "",
        }
    }
}

fn read_token(root: &Root, p: &Path) -> Result<String, String> {
    std::fs::read_to_string(root.join(p))
        .map(|t| t.trim().to_string())
        .map_err(|e| format!("token file {}: {e}", p.display()))
}

pub fn resolve(env: &Env, root: &Root) -> ClientConfig {
    let (file_path, file_from_env) = match get(env, "VGPU_CONFIG") {
        Some(p) => (PathBuf::from(p), true),
        None => (PathBuf::from(CONFIG_FILE), false),
    };
    let host = root.join(&file_path);
    let file = host.exists().then(|| {
        std::fs::read_to_string(&host)
            .map_err(|e| format!("{}: {e}", file_path.display()))
            .and_then(|t| toml::from_str::<FileConfig>(&t).map_err(|e| format!("{}: {e}", file_path.display())))
    });
    let f = file.as_ref().and_then(|r| r.as_ref().ok());
    let (server, server_source) = match (get(env, "VGPU_SERVER"), f.and_then(|f| f.server.clone())) {
        (Some(s), _) => (s.to_string(), Source::Env("VGPU_SERVER")),
        (None, Some(s)) => (s, Source::File(file_path.clone())),
        (None, None) => (DEFAULT_SERVER.to_string(), Source::Default),
    };
    let mut token_file = None;
    let token = match (get(env, "VGPU_TOKEN"), get(env, "VGPU_TOKEN_FILE")) {
        (Some(t), _) => Some(Ok((t.to_string(), Source::Env("VGPU_TOKEN")))),
        (None, Some(p)) => {
            token_file = Some(PathBuf::from(p));
            Some(read_token(root, Path::new(p)).map(|t| (t, Source::Env("VGPU_TOKEN_FILE"))))
        }
        (None, None) => match f {
            Some(FileConfig { token: Some(t), .. }) => Some(Ok((t.clone(), Source::File(file_path.clone())))),
            Some(FileConfig { token_file: Some(p), .. }) => {
                token_file = Some(p.clone());
                Some(read_token(root, p).map(|t| (t, Source::File(p.clone()))))
            }
            _ => None,
        },
    };
    let timeout_secs = get(env, "VGPU_TIMEOUT_SECS").and_then(|s| s.parse().ok()).or(f.and_then(|f| f.timeout_secs));
    let tls_ca = match (get(env, "VGPU_TLS_CA"), f.and_then(|f| f.tls_ca.clone())) {
        (Some(p), _) => Some((PathBuf::from(p), Source::Env("VGPU_TLS_CA"))),
        (None, Some(p)) => Some((p, Source::File(file_path.clone()))),
        (None, None) => None,
    };
    let tls_ca_host = tls_ca.as_ref().map(|(p, _)| root.join(p));
    let tls_name = get(env, "VGPU_TLS_NAME").map(str::to_string).or_else(|| f.and_then(|f| f.tls_name.clone()));
    let shm_file = match (get(env, "VGPU_SHM_FILE"), f.and_then(|f| f.shm_file.clone())) {
        (Some(p), _) => Some((PathBuf::from(p), Source::Env("VGPU_SHM_FILE"))),
        (None, Some(p)) => Some((p, Source::File(file_path.clone()))),
        (None, None) => None,
    };
    // A switch: the variable (0 or 1) over the file.
    let switch = |name: &'static str, file: Option<bool>| match (get(env, name).map(str::trim), file) {
        (Some("0"), _) => Some((false, Source::Env(name))),
        (Some("1"), _) => Some((true, Source::Env(name))),
        (_, Some(b)) => Some((b, Source::File(file_path.clone()))),
        _ => None,
    };
    let blobs = switch("VGPU_BLOBS", f.and_then(|f| f.blobs));
    let pages = switch("VGPU_PAGES", f.and_then(|f| f.pages));
    let code = switch("VGPU_CODE", f.and_then(|f| f.code));
    ClientConfig {
        file_path,
        file_from_env,
        file,
        server,
        server_source,
        token,
        token_file,
        timeout_secs,
        tls_ca,
        tls_ca_host,
        tls_name,
        shm_file,
        blobs,
        pages,
        code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(kv: &[(&str, &str)]) -> Env {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn environment_then_file_then_default() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::new(t.path());
        let c = resolve(&env(&[]), &root);
        assert_eq!(c.server_source, Source::Default);
        assert!(c.file.is_none() && c.token.is_none());
        std::fs::create_dir_all(t.path().join("etc/vgpu")).unwrap();
        std::fs::write(t.path().join("etc/vgpu/tok"), "s3cret\n").unwrap();
        std::fs::write(
            t.path().join("etc/vgpu/client.toml"),
            "server = \"tcp://gpu:7070\"\ntoken_file = \"/etc/vgpu/tok\"\n",
        )
        .unwrap();
        let c = resolve(&env(&[]), &root);
        assert_eq!(c.server, "tcp://gpu:7070");
        assert_eq!(c.token_value(), "s3cret");
        assert_eq!(c.servers().unwrap().len(), 1);
        let c = resolve(&env(&[("VGPU_SERVER", "unix:/x.sock"), ("VGPU_TOKEN", "t")]), &root);
        assert_eq!((c.server.as_str(), c.token_value()), ("unix:/x.sock", "t"));
        // tls:// servers get the CA (as reached inside the root) and the name override.
        std::fs::write(
            t.path().join("etc/vgpu/client.toml"),
            "server = \"tls://gpu:7443\"\ntls_ca = \"/etc/vgpu/ca.pem\"\n",
        )
        .unwrap();
        let c = resolve(&env(&[("VGPU_TLS_NAME", "gpu.example")]), &root);
        let transport::Address::Tls(tls) = &c.servers().unwrap()[0] else { panic!("{:?}", c.servers()) };
        assert_eq!(tls.ca.as_deref(), Some(t.path().join("etc/vgpu/ca.pem").as_path()));
        assert_eq!(tls.server_name(), "gpu.example");
        assert_eq!(c.tls_ca.as_ref().unwrap().1, Source::File("/etc/vgpu/client.toml".into()));
        std::fs::write(t.path().join("etc/vgpu/client.toml"), "shm_file = \"/dev/shm/vm1\"\n").unwrap();
        let c = resolve(&env(&[]), &root);
        assert_eq!(c.shm_file, Some(("/dev/shm/vm1".into(), Source::File("/etc/vgpu/client.toml".into()))));
        let c = resolve(&env(&[("VGPU_SHM_FILE", "/x")]), &root);
        assert_eq!(c.shm_file, Some(("/x".into(), Source::Env("VGPU_SHM_FILE"))));
        std::fs::write(t.path().join("etc/vgpu/client.toml"), "srever = 1\n").unwrap();
        assert!(matches!(resolve(&env(&[]), &root).file, Some(Err(_))));
    }
}
