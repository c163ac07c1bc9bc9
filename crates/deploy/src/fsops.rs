//! Replacing files with vgpu's and putting the originals back, byte for byte.
//!
//! Every change is recorded in a manifest (`manifest.json` in a backup directory) before it
//! is made: what stood at the path before (nothing, a symlink and its target, or a file,
//! kept in the backup directory by a hard link, or a copy with its mode and times where a
//! link is impossible), and the hash and mode of what vgpu put there. New files are written
//! next to their destination and renamed over it, so a running process that has the old
//! library mapped keeps a consistent file. Applying the same set twice changes nothing;
//! reverting restores each original only where vgpu's file is still in place (an upgrade
//! of the application that replaced it wins, and the stale backup is dropped).

use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Component, Path, PathBuf};

pub const MANIFEST: &str = "manifest.json";
const FORMAT: u32 = 1;

/// What stood at a path before vgpu.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Original {
    Absent,
    Symlink {
        target: PathBuf,
    },
    /// A regular file, kept at `backup` (relative to the backup directory).
    File {
        mode: u32,
        size: u64,
        blake3: String,
        backup: PathBuf,
    },
}

/// What vgpu put there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    pub blake3: String,
    pub mode: u32,
    /// The library it was copied from.
    pub source: PathBuf,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative to the base directory.
    pub path: PathBuf,
    /// The library name it serves (`libcudart.so.13`).
    pub library: String,
    pub original: Original,
    pub installed: Installed,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// `ollama` or `system`.
    pub kind: String,
    /// The vgpu version that last wrote it.
    pub vgpu_version: String,
    /// The directory entry paths are relative to.
    pub base: PathBuf,
    /// Directories vgpu created (relative to the base), removed again when empty.
    #[serde(default)]
    pub created_dirs: Vec<PathBuf>,
    pub entries: Vec<Entry>,
}

impl Manifest {
    pub fn load(backup_dir: &Path) -> Result<Option<Manifest>, String> {
        let p = backup_dir.join(MANIFEST);
        match fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| format!("{}: {e}", p.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", p.display())),
        }
    }

    fn save(&self, backup_dir: &Path) -> Result<(), String> {
        let mut text = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        text.push(b'\n');
        write_atomic(&backup_dir.join(MANIFEST), &text, 0o644)
    }

    /// Entries whose installed file is no longer vgpu's (deleted or replaced since).
    pub fn replaced(&self) -> Vec<&Entry> {
        self.entries.iter().filter(|e| !is_installed(&self.base.join(&e.path), e)).collect()
    }
}

/// One file to put in place.
#[derive(Clone, Debug)]
pub struct Target {
    /// Relative to the base directory.
    pub path: PathBuf,
    pub library: String,
    /// The contents are read from here.
    pub source: PathBuf,
    /// Mode of the file when nothing stood there (a replaced file keeps the original's).
    pub mode: u32,
}

/// What was done to one path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Action {
    pub path: PathBuf,
    pub what: &'static str,
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:<10} {}", self.what, self.path.display())
    }
}

fn hash_file(p: &Path) -> Option<String> {
    fs::read(p).ok().map(|b| blake3::hash(&b).to_hex().to_string())
}

fn is_installed(p: &Path, e: &Entry) -> bool {
    fs::symlink_metadata(p).is_ok_and(|m| m.is_file()) && hash_file(p).as_deref() == Some(&e.installed.blake3)
}

/// Write `data` to a temporary file next to `dest`, then rename it over `dest`.
pub fn write_atomic(dest: &Path, data: &[u8], mode: u32) -> Result<(), String> {
    let dir = dest.parent().ok_or_else(|| format!("{}: no parent directory", dest.display()))?;
    let tmp = dir.join(format!(
        ".{}.vgpu-tmp-{}",
        dest.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let res = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        fs::rename(&tmp, dest)
    })();
    res.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        format!("{}: {e}", dest.display())
    })
}

fn symlink_atomic(target: &Path, dest: &Path) -> Result<(), String> {
    let tmp = dest.with_file_name(format!(
        ".{}.vgpu-tmp-{}",
        dest.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)
        .and_then(|_| fs::rename(&tmp, dest))
        .map_err(|e| format!("{}: {e}", dest.display()))
}

/// Keep the file at `p` as `backup`: a hard link (same inode: same bytes, mode and times),
/// or a copy with the same mode and modification time across file systems.
fn keep(p: &Path, backup: &Path) -> Result<(), String> {
    if let Some(d) = backup.parent() {
        fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let _ = fs::remove_file(backup);
    if fs::hard_link(p, backup).is_ok() {
        return Ok(());
    }
    let meta = fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
    let data = fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
    write_atomic(backup, &data, meta.mode() & 0o7777)?;
    if let Ok(t) = meta.modified() {
        let _ = fs::File::options().write(true).open(backup).and_then(|f| f.set_modified(t));
    }
    Ok(())
}

/// Put the kept file back at `p` (a rename, or a copy across file systems).
fn restore_file(backup: &Path, p: &Path) -> Result<(), String> {
    if fs::rename(backup, p).is_ok() {
        return Ok(());
    }
    let meta = fs::metadata(backup).map_err(|e| format!("{}: {e}", backup.display()))?;
    let data = fs::read(backup).map_err(|e| format!("{}: {e}", backup.display()))?;
    write_atomic(p, &data, meta.mode() & 0o7777)?;
    if let Ok(t) = meta.modified() {
        let _ = fs::File::options().write(true).open(p).and_then(|f| f.set_modified(t));
    }
    let _ = fs::remove_file(backup);
    Ok(())
}

/// Whether files can be created in `dir` (a read-only mount, missing permissions).
pub fn writable(dir: &Path) -> Result<(), String> {
    let probe = dir.join(format!(".vgpu-probe-{}", std::process::id()));
    fs::File::options()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map(|_| {
            let _ = fs::remove_file(&probe);
        })
        .map_err(|e| format!("cannot write in {}: {e}", dir.display()))
}

/// A relative path that stays inside its base (no `..`, not absolute).
fn checked(rel: &Path) -> Result<(), String> {
    if rel.components().all(|c| matches!(c, Component::Normal(_))) {
        Ok(())
    } else {
        Err(format!("{}: not a plain relative path", rel.display()))
    }
}

/// Put every target in place under `base`, recording originals in `backup_dir`.
/// `created_dirs` are directories (relative to `base`) the caller may create; those that
/// did not exist are made and recorded.
pub fn apply(
    kind: &str,
    base: &Path,
    backup_dir: &Path,
    targets: &[Target],
    created_dirs: &[PathBuf],
) -> Result<Vec<Action>, String> {
    let mut m = match Manifest::load(backup_dir)? {
        Some(m) => m,
        None => Manifest {
            format: FORMAT,
            kind: kind.to_string(),
            vgpu_version: crate::VERSION.to_string(),
            base: base.to_path_buf(),
            created_dirs: Vec::new(),
            entries: Vec::new(),
        },
    };
    if m.format != FORMAT {
        return Err(format!("{}: manifest format {} is not {FORMAT}", backup_dir.display(), m.format));
    }
    // Nothing is changed unless every destination can be written.
    for t in targets {
        checked(&t.path)?;
        if let Some(dir) = base.join(&t.path).parent().filter(|d| d.exists()) {
            writable(dir)?;
        }
    }
    let before = m.clone();
    let mut actions = Vec::new();

    for d in created_dirs {
        checked(d)?;
        let mut acc = PathBuf::new();
        for c in d.components() {
            acc.push(c);
            let host = base.join(&acc);
            if !host.exists() {
                fs::create_dir(&host).map_err(|e| format!("{}: {e}", host.display()))?;
                m.created_dirs.push(acc.clone());
                actions.push(Action { path: host, what: "created" });
            }
        }
    }

    // Entries no longer wanted (an upgrade moved a SONAME link elsewhere): put them back.
    let wanted: Vec<&Path> = targets.iter().map(|t| t.path.as_path()).collect();
    let stale: Vec<Entry> = m.entries.iter().filter(|e| !wanted.contains(&e.path.as_path())).cloned().collect();
    for e in stale {
        actions.push(revert_entry(base, backup_dir, &e)?);
        m.entries.retain(|x| x.path != e.path);
    }

    // Plan: read every source and record every original before touching anything.
    struct Step {
        dest: PathBuf,
        data: Vec<u8>,
        mode: u32,
        what: &'static str,
    }
    let mut steps = Vec::new();
    for t in targets {
        checked(&t.path)?;
        let dest = base.join(&t.path);
        let data = fs::read(&t.source).map_err(|e| format!("{}: {e}", t.source.display()))?;
        let hash = blake3::hash(&data).to_hex().to_string();
        if let Some(i) = m.entries.iter().position(|e| e.path == t.path) {
            let e = &mut m.entries[i];
            if is_installed(&dest, e) {
                if e.installed.blake3 != hash {
                    // A new vgpu build: replace ours, keep the original as it was.
                    let mode = fs::metadata(&dest).map(|md| md.mode() & 0o7777).unwrap_or(t.mode);
                    e.installed = Installed { blake3: hash, mode, source: t.source.clone() };
                    steps.push(Step { dest, data, mode, what: "updated" });
                } else {
                    actions.push(Action { path: dest, what: "unchanged" });
                }
                continue;
            }
            // Ours is gone or replaced (the application was upgraded): what stands there
            // now is the original, and the old backup is stale.
            let old = m.entries.remove(i);
            if let Original::File { backup, .. } = &old.original {
                let _ = fs::remove_file(backup_dir.join(backup));
            }
        }
        let (original, mode) = match fs::symlink_metadata(&dest) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Original::Absent, t.mode),
            Err(e) => return Err(format!("{}: {e}", dest.display())),
            Ok(md) if md.file_type().is_symlink() => {
                let target = fs::read_link(&dest).map_err(|e| format!("{}: {e}", dest.display()))?;
                (Original::Symlink { target }, t.mode)
            }
            Ok(md) if md.is_file() => {
                let backup = Path::new("files").join(&t.path);
                keep(&dest, &backup_dir.join(&backup))?;
                let blake3 = hash_file(&dest).unwrap_or_default();
                let mode = md.mode() & 0o7777;
                (Original::File { mode, size: md.len(), blake3, backup }, mode)
            }
            Ok(_) => {
                return Err(format!("{}: not a file or symlink; refusing to replace it", dest.display()));
            }
        };
        let what = match original {
            Original::Absent => "added",
            _ => "replaced",
        };
        m.entries.push(Entry {
            path: t.path.clone(),
            library: t.library.clone(),
            original,
            installed: Installed { blake3: hash, mode, source: t.source.clone() },
        });
        steps.push(Step { dest, data, mode, what });
    }

    if m != before || !backup_dir.join(MANIFEST).exists() {
        m.vgpu_version = crate::VERSION.to_string();
        fs::create_dir_all(backup_dir).map_err(|e| format!("{}: {e}", backup_dir.display()))?;
        m.save(backup_dir)?;
    }
    for s in steps {
        write_atomic(&s.dest, &s.data, s.mode)?;
        actions.push(Action { path: s.dest, what: s.what });
    }
    Ok(actions)
}

/// Put one entry's original back (where vgpu's file is still in place).
fn revert_entry(base: &Path, backup_dir: &Path, e: &Entry) -> Result<Action, String> {
    checked(&e.path)?;
    let p = base.join(&e.path);
    let ours = is_installed(&p, e);
    let what = match (&e.original, ours) {
        (Original::File { backup, .. }, true) => {
            restore_file(&backup_dir.join(backup), &p)?;
            "restored"
        }
        (Original::Symlink { target }, true) => {
            symlink_atomic(target, &p)?;
            "restored"
        }
        (Original::Absent, true) => {
            fs::remove_file(&p).map_err(|err| format!("{}: {err}", p.display()))?;
            "removed"
        }
        (Original::Absent, false) if fs::symlink_metadata(&p).is_err() => "gone",
        (original, false) => {
            if let Original::File { backup, .. } = original {
                let _ = fs::remove_file(backup_dir.join(backup));
            }
            "left" // replaced since install: the newer file stays
        }
    };
    Ok(Action { path: p, what })
}

/// Undo everything recorded in `backup_dir`'s manifest, then remove the backup directory
/// and the directories vgpu created (when empty).
pub fn revert(backup_dir: &Path) -> Result<Vec<Action>, String> {
    let Some(mut m) = Manifest::load(backup_dir)? else {
        return Ok(Vec::new());
    };
    let mut actions = Vec::new();
    while let Some(e) = m.entries.pop() {
        match revert_entry(&m.base, backup_dir, &e) {
            Ok(a) => actions.push(a),
            Err(err) => {
                m.entries.push(e);
                m.save(backup_dir)?;
                return Err(err);
            }
        }
    }
    fs::remove_dir_all(backup_dir).map_err(|e| format!("{}: {e}", backup_dir.display()))?;
    for d in m.created_dirs.iter().rev() {
        let host = m.base.join(d);
        if fs::remove_dir(&host).is_ok() {
            actions.push(Action { path: host, what: "removed" });
        }
    }
    Ok(actions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                let md = fs::symlink_metadata(&p).unwrap();
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                if md.file_type().is_symlink() {
                    out.push(format!("{rel} -> {}", fs::read_link(&p).unwrap().display()));
                } else if md.is_dir() {
                    out.push(format!("{rel}/ {:o}", md.mode() & 0o7777));
                    stack.push(p);
                } else {
                    out.push(format!("{rel} {:o} {}", md.mode() & 0o7777, hash_file(&p).unwrap()));
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn apply_twice_then_revert_restores_everything() {
        let t = tempfile::tempdir().unwrap();
        let base = t.path().join("tree");
        fs::create_dir_all(base.join("d")).unwrap();
        fs::write(base.join("d/real.so.1.2.3"), b"original").unwrap();
        fs::set_permissions(base.join("d/real.so.1.2.3"), fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::symlink("real.so.1.2.3", base.join("d/real.so.1")).unwrap();
        std::os::unix::fs::symlink("/nowhere", base.join("d/link.so.1")).unwrap();
        let src = t.path().join("src");
        fs::write(&src, b"ours").unwrap();
        let before = listing(&base);
        let tg = |p: &str| Target { path: p.into(), library: "x".into(), source: src.clone(), mode: 0o755 };
        let targets = [tg("d/real.so.1.2.3"), tg("d/new.so.1"), tg("d/link.so.1")];
        let bk = base.join(".vgpu-backup");
        let a = apply("test", &base, &bk, &targets, &[]).unwrap();
        assert_eq!(a.iter().map(|a| a.what).collect::<Vec<_>>(), ["replaced", "added", "replaced"]);
        assert_eq!(fs::read(base.join("d/real.so.1")).unwrap(), b"ours");
        let md = fs::metadata(base.join("d/real.so.1.2.3")).unwrap();
        assert_eq!(md.mode() & 0o777, 0o640, "a replaced file keeps its mode");
        let once = listing(&base);
        let a = apply("test", &base, &bk, &targets, &[]).unwrap();
        assert!(a.iter().all(|a| a.what == "unchanged"), "{a:?}");
        assert_eq!(listing(&base), once);
        let m = Manifest::load(&bk).unwrap().unwrap();
        assert!(m.replaced().is_empty());
        revert(&bk).unwrap();
        assert_eq!(listing(&base), before);
    }

    #[test]
    fn an_upgrade_that_replaced_our_file_wins() {
        let t = tempfile::tempdir().unwrap();
        let base = t.path().to_path_buf();
        fs::write(base.join("lib.so"), b"v1").unwrap();
        let src = t.path().join("src");
        fs::write(&src, b"ours").unwrap();
        let bk = base.join(".vgpu-backup");
        let targets = [Target { path: "lib.so".into(), library: "x".into(), source: src, mode: 0o755 }];
        apply("test", &base, &bk, &targets, &[]).unwrap();
        fs::write(base.join("lib.so"), b"v2").unwrap(); // the application's upgrade
        let m = Manifest::load(&bk).unwrap().unwrap();
        assert_eq!(m.replaced().len(), 1);
        // Installing again backs up v2 (not v1) ...
        let a = apply("test", &base, &bk, &targets, &[]).unwrap();
        assert_eq!(a[0].what, "replaced");
        revert(&bk).unwrap();
        // ... so uninstalling gives v2 back.
        assert_eq!(fs::read(base.join("lib.so")).unwrap(), b"v2");
        assert!(!bk.exists());
    }

    #[test]
    fn paths_may_not_escape() {
        let t = tempfile::tempdir().unwrap();
        let targets = [Target { path: "../x".into(), library: "x".into(), source: "/dev/null".into(), mode: 0o644 }];
        assert!(apply("test", t.path(), &t.path().join("b"), &targets, &[]).is_err());
    }
}
