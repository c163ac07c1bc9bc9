//! Ollama's bundled library directory (`lib/ollama`): finding it, and putting vgpu's
//! libraries into its `cuda_vNN` folders.
//!
//! Ollama starts its runners with `LD_LIBRARY_PATH=lib/ollama:lib/ollama/cuda_vNN:$LD_LIBRARY_PATH`
//! and bundles NVIDIA's `libcudart`/`libcublas`/`libcublasLt` there, so those must be
//! replaced in the folder itself; `libcuda.so.1` and `libnvidia-ml.so.1` are not bundled and
//! are added to each folder so that the runners find vgpu's before any system copy. The
//! file a SONAME name resolves to is replaced (keeping `libcudart.so.13 -> libcudart.so.13.0.96`
//! and the versioned file name Ollama reads the runtime version from).

use crate::elf;
use crate::fsops::{self, Action, Manifest, Target};
use crate::root::Root;
use std::path::{Component, Path, PathBuf};

/// The backup directory inside `lib/ollama` (holds the manifest and the originals).
pub const BACKUP_DIR: &str = ".vgpu-backup";

/// One `cuda_vNN` folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CudaDir {
    pub path: PathBuf,
    /// `cuda_v13`
    pub name: String,
    pub major: u32,
}

impl CudaDir {
    /// The libraries vgpu provides for this folder: the runtime of its major, then the
    /// driver-level libraries the runners load by SONAME.
    pub fn libraries(&self) -> Vec<String> {
        let n = self.major;
        vec![
            format!("libcudart.so.{n}"),
            format!("libcublas.so.{n}"),
            format!("libcublasLt.so.{n}"),
            "libcuda.so.1".into(),
            "libnvidia-ml.so.1".into(),
        ]
    }

    pub fn runtime_libraries(&self) -> Vec<String> {
        self.libraries().into_iter().take(3).collect()
    }

    /// The CUDA runtime version Ollama infers from the file names (`libcudart.so.12.8.90`
    /// -> (12, 8)); the folder name's major otherwise.
    pub fn runtime_version(&self) -> (u32, u32) {
        let prefix = format!("libcudart.so.{}.", self.major);
        let mut best = (self.major, 0);
        if let Ok(rd) = std::fs::read_dir(&self.path) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(rest) = name.strip_prefix(&prefix)
                    && let Some(minor) = rest.split('.').next().and_then(|m| m.parse().ok())
                {
                    best = best.max((self.major, minor));
                }
            }
        }
        best
    }
}

/// Candidate `lib/ollama` directories, in the order Ollama itself would be found: next to
/// each `ollama` on `PATH` (symlinks resolved, `<bin>/../lib/ollama`, then `<bin>/lib/ollama`),
/// then `/usr/local/lib/ollama` and `/usr/lib/ollama`.
pub fn candidates(root: &Root, path_env: Option<&str>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in path_env.unwrap_or("").split(':').filter(|d| !d.is_empty()) {
        let exe = root.join(dir).join("ollama");
        if !exe.is_file() {
            continue;
        }
        let exe = std::fs::canonicalize(&exe).unwrap_or(exe);
        if let Some(bin) = exe.parent() {
            if let Some(prefix) = bin.parent() {
                out.push(prefix.join("lib/ollama"));
            }
            out.push(bin.join("lib/ollama"));
        }
    }
    out.push(root.join("/usr/local/lib/ollama"));
    out.push(root.join("/usr/lib/ollama"));
    out.dedup();
    out
}

/// The first candidate that exists.
pub fn find(root: &Root, path_env: Option<&str>) -> Option<PathBuf> {
    candidates(root, path_env).into_iter().find(|p| p.is_dir())
}

/// The `cuda_vNN` folders of an Ollama install, by name.
pub fn cuda_dirs(ollama: &Path) -> Vec<CudaDir> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(ollama) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(major) = name.strip_prefix("cuda_v").and_then(|m| m.parse().ok()) else {
                continue;
            };
            if e.path().is_dir() {
                out.push(CudaDir { path: e.path(), name, major });
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The file `dir/name` stands for: its symlinks followed while they stay inside `dir` and
/// lead somewhere; otherwise `dir/name` itself (a link to elsewhere, or a dangling one, is
/// replaced rather than what it points at).
pub fn resolve_in_dir(dir: &Path, name: &str) -> PathBuf {
    let mut p = dir.join(name);
    for _ in 0..16 {
        let Ok(md) = std::fs::symlink_metadata(&p) else {
            return p;
        };
        if !md.file_type().is_symlink() {
            return p;
        }
        let Ok(t) = std::fs::read_link(&p) else {
            return p;
        };
        let plain = t.components().count() == 1 && matches!(t.components().next(), Some(Component::Normal(_)));
        let next = dir.join(&t);
        if !plain || std::fs::symlink_metadata(&next).is_err() {
            return p;
        }
        p = next;
    }
    p
}

/// The vgpu library to copy for `name` from `lib_dir`, checked to be one of vgpu's.
fn source(lib_dir: &Path, name: &str) -> Result<PathBuf, String> {
    let p = lib_dir.join(name);
    if !p.exists() {
        return Err(format!("{} is missing", p.display()));
    }
    let info = elf::inspect(&p);
    if !info.is_vgpu() {
        return Err(format!("{} is {}, not a vgpu library", p.display(), info.summary()));
    }
    if info.soname.as_deref().is_some_and(|s| s != name) {
        return Err(format!("{} has SONAME {}, not {name}", p.display(), info.soname.unwrap_or_default()));
    }
    Ok(p)
}

/// What `install` would put where: `(targets, folders skipped with the reason)`.
pub fn plan(ollama: &Path, lib_dir: &Path) -> Result<(Vec<Target>, Vec<String>), String> {
    let dirs = cuda_dirs(ollama);
    if dirs.is_empty() {
        return Err(format!(
            "{} has no cuda_vNN folders (a CPU-only Ollama build, or not lib/ollama)",
            ollama.display()
        ));
    }
    let mut targets: Vec<Target> = Vec::new();
    let mut skipped = Vec::new();
    for d in &dirs {
        let runtime = format!("libcudart.so.{}", d.major);
        if !lib_dir.join(&runtime).exists() {
            skipped.push(format!("{}: vgpu has no {runtime}", d.name));
            continue;
        }
        for name in d.libraries() {
            let src = source(lib_dir, &name)?;
            let dest = resolve_in_dir(&d.path, &name);
            let rel =
                dest.strip_prefix(ollama).map_err(|_| format!("{}: outside {}", dest.display(), ollama.display()))?;
            if targets.iter().any(|t| t.path == rel) {
                return Err(format!("{} would serve two libraries", dest.display()));
            }
            targets.push(Target { path: rel.to_path_buf(), library: name, source: src, mode: 0o755 });
        }
    }
    if targets.is_empty() {
        return Err(format!("nothing to install: {}", skipped.join("; ")));
    }
    Ok((targets, skipped))
}

/// `vgpu install ollama`: returns what was done and the folders skipped.
pub fn install(ollama: &Path, lib_dir: &Path) -> Result<(Vec<Action>, Vec<String>), String> {
    if !ollama.is_dir() {
        return Err(format!("{}: no such directory", ollama.display()));
    }
    let (targets, skipped) = plan(ollama, lib_dir)?;
    let actions = fsops::apply("ollama", ollama, &ollama.join(BACKUP_DIR), &targets, &[])?;
    Ok((actions, skipped))
}

/// `vgpu uninstall ollama`.
pub fn uninstall(ollama: &Path) -> Result<Vec<Action>, String> {
    fsops::revert(&ollama.join(BACKUP_DIR))
}

/// The manifest of a previous `vgpu install ollama`, if any.
pub fn manifest(ollama: &Path) -> Result<Option<Manifest>, String> {
    Manifest::load(&ollama.join(BACKUP_DIR))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn folders_and_runtime_versions() {
        let t = tempfile::tempdir().unwrap();
        let o = t.path();
        for d in ["cuda_v12", "cuda_v13", "vulkan", "cuda_jetpack6", "mlx_cuda_v13"] {
            fs::create_dir(o.join(d)).unwrap();
        }
        fs::write(o.join("cuda_v12/libcudart.so.12.8.90"), b"x").unwrap();
        fs::write(o.join("cuda_v12/libcudart.so.12.4.127"), b"x").unwrap();
        let dirs = cuda_dirs(o);
        assert_eq!(dirs.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), ["cuda_v12", "cuda_v13"]);
        assert_eq!(dirs[0].runtime_version(), (12, 8));
        assert_eq!(dirs[1].runtime_version(), (13, 0));
    }

    #[test]
    fn soname_links_are_followed_inside_the_folder_only() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        fs::write(d.join("libcudart.so.13.0.96"), b"x").unwrap();
        std::os::unix::fs::symlink("libcudart.so.13.0.96", d.join("libcudart.so.13")).unwrap();
        std::os::unix::fs::symlink("/usr/lib/libfoo.so.1", d.join("libfoo.so.1")).unwrap();
        std::os::unix::fs::symlink("gone.so", d.join("libbar.so.1")).unwrap();
        assert_eq!(resolve_in_dir(d, "libcudart.so.13"), d.join("libcudart.so.13.0.96"));
        assert_eq!(resolve_in_dir(d, "libfoo.so.1"), d.join("libfoo.so.1"));
        assert_eq!(resolve_in_dir(d, "libbar.so.1"), d.join("libbar.so.1"));
        assert_eq!(resolve_in_dir(d, "libnew.so.1"), d.join("libnew.so.1"));
    }

    #[test]
    fn ollama_is_found_next_to_its_binary() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::new(t.path());
        fs::create_dir_all(t.path().join("opt/ollama/bin")).unwrap();
        fs::create_dir_all(t.path().join("opt/ollama/lib/ollama")).unwrap();
        fs::create_dir_all(t.path().join("usr/lib/ollama")).unwrap();
        fs::write(t.path().join("opt/ollama/bin/ollama"), b"").unwrap();
        let found = find(&root, Some("/usr/bin:/opt/ollama/bin")).unwrap();
        assert_eq!(fs::canonicalize(found).unwrap(), fs::canonicalize(t.path().join("opt/ollama/lib/ollama")).unwrap());
        assert_eq!(find(&root, None).unwrap(), t.path().join("usr/lib/ollama"));
    }
}
