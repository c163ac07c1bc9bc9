//! Which file the dynamic loader picks for a library name, worked out the way glibc's
//! `ld.so` does it, without loading anything: `LD_LIBRARY_PATH`, then `/etc/ld.so.cache`
//! (read directly; the directories of `/etc/ld.so.conf` when there is no cache), then the
//! system directories. Files for another architecture are skipped, as the loader skips
//! them; a file that is not ELF at all stops the search, as it makes the loader fail.

use crate::elf::{self, Origin};
use crate::root::Root;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The loader's built-in directories (Debian/Ubuntu multiarch first, then Fedora/RHEL).
pub const SYSTEM_DIRS: &[&str] =
    &["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"];

/// Where a candidate was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    LdLibraryPath,
    Cache,
    /// A directory of `/etc/ld.so.conf`, used when there is no cache.
    ConfDir,
    SystemDir,
}

impl Via {
    pub fn describe(self) -> &'static str {
        match self {
            Via::LdLibraryPath => "LD_LIBRARY_PATH",
            Via::Cache => "ld.so.cache",
            Via::ConfDir => "ld.so.conf",
            Via::SystemDir => "system directory",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Hit {
    /// Host path (under the root).
    pub path: PathBuf,
    pub via: Via,
}

/// The answer for one name.
#[derive(Clone, Debug, Serialize)]
pub struct Resolution {
    pub name: String,
    /// What the loader opens, if anything.
    pub hit: Option<Hit>,
    /// Further candidates the loader would have found after `hit` (for messages such as
    /// "vgpu's copy comes later").
    pub later: Vec<Hit>,
    /// Files the loader passes over (another architecture).
    pub skipped: Vec<PathBuf>,
    /// Set when `/etc/ld.so.cache` disagrees with the directories it is made from.
    pub stale_cache: Option<String>,
}

/// The loader's configuration under one root.
#[derive(Clone, Debug)]
pub struct Loader {
    root: Root,
    /// Directories of `/etc/ld.so.conf` (inside the root), in order.
    pub conf_dirs: Vec<PathBuf>,
    /// `(name, path inside the root)` of the cache, in the cache's order; `None` without one.
    pub cache: Option<Vec<(String, PathBuf)>>,
    pub cache_error: Option<String>,
}

impl Loader {
    pub fn new(root: &Root) -> Loader {
        let conf_dirs = conf_dirs(root);
        let (cache, cache_error) = match std::fs::read(root.join("/etc/ld.so.cache")) {
            Ok(data) => match parse_cache(&data) {
                Ok(c) => (Some(c), None),
                Err(e) => (None, Some(e)),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, None),
            Err(e) => (None, Some(e.to_string())),
        };
        Loader { root: root.clone(), conf_dirs, cache, cache_error }
    }

    pub fn root(&self) -> &Root {
        &self.root
    }

    /// Every directory the loader may take a library from, besides `LD_LIBRARY_PATH`
    /// (ld.so.conf's, then the system ones), as host paths, existing ones only, each once.
    pub fn dirs(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = Vec::new();
        let mut seen = Vec::new();
        for d in self.conf_dirs.iter().map(PathBuf::as_path).chain(SYSTEM_DIRS.iter().map(Path::new)) {
            let host = self.root.join(d);
            let Ok(canon) = std::fs::canonicalize(&host) else {
                continue;
            };
            if !canon.is_dir() || seen.contains(&canon) {
                continue;
            }
            seen.push(canon);
            out.push(host);
        }
        out
    }

    /// Which file a process with `ld_library_path` gets for `name`.
    pub fn resolve(&self, name: &str, ld_library_path: &str) -> Resolution {
        let mut r =
            Resolution { name: name.to_string(), hit: None, later: Vec::new(), skipped: Vec::new(), stale_cache: None };
        let consider = |path: PathBuf, via: Via, r: &mut Resolution| {
            let Ok(meta) = std::fs::metadata(&path) else {
                return;
            };
            if !meta.is_file() {
                return;
            }
            if elf::inspect(&path).origin == Origin::WrongArch {
                r.skipped.push(path);
                return;
            }
            let hit = Hit { path, via };
            if r.hit.is_none() {
                r.hit = Some(hit);
            } else if !r.later.iter().any(|h| same_file(&h.path, &hit.path))
                && !r.hit.as_ref().is_some_and(|h| same_file(&h.path, &hit.path))
            {
                r.later.push(hit);
            }
        };
        for dir in split_path_list(ld_library_path) {
            // A relative entry is relative to the process's working directory.
            let host = if dir.is_absolute() { self.root.join(&dir) } else { dir };
            consider(host.join(name), Via::LdLibraryPath, &mut r);
        }
        let scanned = self.scan_conf_dirs(name);
        match &self.cache {
            Some(cache) => {
                let cached: Vec<&PathBuf> = cache.iter().filter(|(n, _)| n == name).map(|(_, p)| p).collect();
                for p in &cached {
                    consider(self.root.join(p), Via::Cache, &mut r);
                }
                r.stale_cache = stale(&self.root, name, cached.first().copied(), scanned.first());
            }
            None => {
                for p in &scanned {
                    consider(p.clone(), Via::ConfDir, &mut r);
                }
            }
        }
        for d in SYSTEM_DIRS {
            consider(self.root.join(d).join(name), Via::SystemDir, &mut r);
        }
        r
    }

    /// `name` in the ld.so.conf directories, in order (host paths of existing files).
    fn scan_conf_dirs(&self, name: &str) -> Vec<PathBuf> {
        self.conf_dirs.iter().map(|d| self.root.join(d).join(name)).filter(|p| p.is_file()).collect()
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Why the cache's answer for `name` is out of date, if it is.
fn stale(root: &Root, name: &str, cached: Option<&PathBuf>, scanned: Option<&PathBuf>) -> Option<String> {
    match (cached, scanned) {
        (Some(c), _) if !root.join(c).exists() => {
            Some(format!("ld.so.cache lists {} for {name}, which no longer exists", c.display()))
        }
        (None, Some(s)) => Some(format!("{} is not in ld.so.cache yet", root.inside(s).display())),
        (Some(c), Some(s)) if !same_file(&root.join(c), s) => {
            // The cache maps names through SONAME symlinks; only a different directory counts.
            let cdir = std::fs::canonicalize(root.join(c)).ok().and_then(|p| p.parent().map(Path::to_path_buf));
            let sdir = std::fs::canonicalize(s).ok().and_then(|p| p.parent().map(Path::to_path_buf));
            (cdir != sdir).then(|| {
                format!(
                    "ld.so.cache gives {} for {name}, but {} comes first in ld.so.conf",
                    c.display(),
                    root.inside(s).display()
                )
            })
        }
        _ => None,
    }
}

/// `LD_LIBRARY_PATH`'s directories (`:` or `;` separated; an empty entry is the current
/// directory).
pub fn split_path_list(s: &str) -> Vec<PathBuf> {
    if s.is_empty() {
        return Vec::new();
    }
    s.split([':', ';']).map(|d| PathBuf::from(if d.is_empty() { "." } else { d })).collect()
}

/// The directories of `/etc/ld.so.conf` under `root`, following `include` lines (with
/// `*`/`?` patterns), in order, each once.
pub fn conf_dirs(root: &Root) -> Vec<PathBuf> {
    let mut out = Vec::new();
    read_conf(root, Path::new("/etc/ld.so.conf"), &mut out, 0);
    out
}

fn read_conf(root: &Root, file: &Path, out: &mut Vec<PathBuf>, depth: u32) {
    if depth > 8 {
        return;
    }
    let Ok(text) = std::fs::read_to_string(root.join(file)) else {
        return;
    };
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() || line.starts_with("hwcap ") {
            continue;
        }
        if let Some(pat) = line.strip_prefix("include").filter(|r| r.starts_with([' ', '\t'])) {
            for pat in pat.split_whitespace() {
                let pat = if pat.starts_with('/') {
                    PathBuf::from(pat)
                } else {
                    file.parent().unwrap_or(Path::new("/")).join(pat)
                };
                for f in glob(root, &pat) {
                    read_conf(root, &f, out, depth + 1);
                }
            }
            continue;
        }
        // "dir" or the old "dir=TYPE" form; several may share a line.
        for d in line.split([' ', '\t', ',', ':']).filter(|d| !d.is_empty()) {
            let d = PathBuf::from(d.split('=').next().unwrap_or(d));
            if d.is_absolute() && !out.contains(&d) {
                out.push(d);
            }
        }
    }
}

/// Files matching `pattern` (an absolute path inside `root` whose components may hold
/// `*` and `?`), sorted, as paths inside the root.
pub fn glob(root: &Root, pattern: &Path) -> Vec<PathBuf> {
    let mut found = vec![PathBuf::from("/")];
    for comp in pattern.components().skip(1) {
        let comp = comp.as_os_str().to_string_lossy();
        let mut next = Vec::new();
        for base in &found {
            if comp.contains(['*', '?']) {
                let Ok(rd) = std::fs::read_dir(root.join(base)) else {
                    continue;
                };
                let mut names: Vec<String> =
                    rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
                names.sort();
                next.extend(names.into_iter().filter(|n| wildcard(&comp, n)).map(|n| base.join(n)));
            } else {
                next.push(base.join(&*comp));
            }
        }
        found = next;
    }
    found.into_iter().filter(|p| root.join(p).exists()).collect()
}

/// Shell-style match of `*` and `?` (a leading `.` is not matched by a wildcard).
pub fn wildcard(pat: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    if name.starts_with('.') && !pat.starts_with('.') {
        return false;
    }
    go(pat.as_bytes(), name.as_bytes())
}

const CACHE_MAGIC_NEW: &[u8] = b"glibc-ld.so.cache1.1";
const FLAG_ELF_LIBC6: i32 = 0x0003;
const FLAG_TYPE_MASK: i32 = 0x00ff;
const FLAG_REQUIRED_MASK: i32 = 0xff00;

/// The cache flags of this machine's libraries (`libc6,x86-64`, `libc6,AArch64`).
fn native_cache_flags() -> i32 {
    if cfg!(target_arch = "x86_64") {
        0x0300 | FLAG_ELF_LIBC6
    } else if cfg!(target_arch = "aarch64") {
        0x0a00 | FLAG_ELF_LIBC6
    } else {
        FLAG_ELF_LIBC6
    }
}

/// The `(name, path)` entries of `/etc/ld.so.cache` for this machine, in file order (the
/// loader takes the first match). Only the "glibc-ld.so.cache1.1" format (glibc ≥ 2.3,
/// alone or after the old format) is understood.
pub fn parse_cache(data: &[u8]) -> Result<Vec<(String, PathBuf)>, String> {
    let start = memchr::memmem::find(data, CACHE_MAGIC_NEW).ok_or("ld.so.cache: unknown format")?;
    let d = &data[start..];
    let u32_at = |o: usize| d.get(o..o + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap()));
    let nlibs = u32_at(20).ok_or("ld.so.cache: truncated header")? as usize;
    const HEADER: usize = 48;
    const ENTRY: usize = 24;
    let want = native_cache_flags();
    let string = |off: u32| -> Option<String> {
        let s = d.get(off as usize..)?;
        let end = s.iter().position(|&b| b == 0)?;
        Some(String::from_utf8_lossy(&s[..end]).into_owned())
    };
    let mut out = Vec::new();
    for i in 0..nlibs {
        let o = HEADER + i * ENTRY;
        let (Some(flags), Some(key), Some(value)) = (u32_at(o), u32_at(o + 4), u32_at(o + 8)) else {
            return Err("ld.so.cache: truncated".into());
        };
        let flags = flags as i32;
        if flags & FLAG_TYPE_MASK != FLAG_ELF_LIBC6 || flags & FLAG_REQUIRED_MASK != want & FLAG_REQUIRED_MASK {
            continue;
        }
        if let (Some(k), Some(v)) = (string(key), string(value)) {
            out.push((k, PathBuf::from(v)));
        }
    }
    Ok(out)
}

/// An `/etc/ld.so.cache` of this machine's format listing `entries` (name, path) in order,
/// for tests of what reads it.
#[cfg(test)]
pub(crate) fn cache_bytes(entries: &[(&str, &str)]) -> Vec<u8> {
    const HEADER: usize = 48;
    let mut d = CACHE_MAGIC_NEW.to_vec();
    d.extend((entries.len() as u32).to_le_bytes());
    d.resize(HEADER, 0);
    let mut strings = Vec::new();
    let strings_at = HEADER + entries.len() * 24;
    for (name, path) in entries {
        let key = strings_at + strings.len();
        strings.extend(name.bytes().chain([0]));
        let value = strings_at + strings.len();
        strings.extend(path.bytes().chain([0]));
        for v in [native_cache_flags() as u32, key as u32, value as u32, 0] {
            d.extend(v.to_le_bytes());
        }
        d.extend(0u64.to_le_bytes());
    }
    d.extend(strings);
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn a_cache_reads_back_in_order() {
        let c = cache_bytes(&[("libcuda.so.1", "/usr/lib/a/libcuda.so.1"), ("libm.so.6", "/lib/libm.so.6")]);
        let got = parse_cache(&c).unwrap();
        assert_eq!(
            got,
            [("libcuda.so.1".into(), "/usr/lib/a/libcuda.so.1".into()), ("libm.so.6".into(), "/lib/libm.so.6".into())]
        );
    }

    #[test]
    fn wildcards() {
        assert!(wildcard("*.conf", "libc.conf"));
        assert!(!wildcard("*.conf", "libc.conf~"));
        assert!(!wildcard("*.conf", ".hidden.conf"));
        assert!(wildcard("lib?.so", "libx.so"));
    }

    #[test]
    fn ld_so_conf_with_includes() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::new(t.path());
        fs::create_dir_all(t.path().join("etc/ld.so.conf.d")).unwrap();
        fs::write(t.path().join("etc/ld.so.conf"), "# c\n/opt/first\ninclude /etc/ld.so.conf.d/*.conf\n").unwrap();
        fs::write(t.path().join("etc/ld.so.conf.d/b.conf"), "/usr/lib/b\n").unwrap();
        fs::write(t.path().join("etc/ld.so.conf.d/a.conf"), "/usr/lib/a # trailing\n/opt/first\n").unwrap();
        fs::write(t.path().join("etc/ld.so.conf.d/skip.txt"), "/nope\n").unwrap();
        assert_eq!(
            conf_dirs(&root),
            vec![PathBuf::from("/opt/first"), PathBuf::from("/usr/lib/a"), PathBuf::from("/usr/lib/b")]
        );
    }

    #[test]
    fn ld_library_path_then_conf_dirs_then_system() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::new(t.path());
        let exe = fs::read(std::env::current_exe().unwrap()).unwrap(); // any ELF of this machine
        for d in ["opt/a", "opt/b", "usr/lib64", "etc"] {
            fs::create_dir_all(t.path().join(d)).unwrap();
        }
        fs::write(t.path().join("etc/ld.so.conf"), "/opt/b\n").unwrap();
        fs::write(t.path().join("opt/b/libx.so.1"), &exe).unwrap();
        fs::write(t.path().join("usr/lib64/libx.so.1"), &exe).unwrap();
        let l = Loader::new(&root);
        let r = l.resolve("libx.so.1", "");
        assert_eq!(r.hit.as_ref().unwrap().path, t.path().join("opt/b/libx.so.1"));
        assert_eq!(r.hit.as_ref().unwrap().via, Via::ConfDir);
        assert_eq!(r.later.len(), 1);
        fs::write(t.path().join("opt/a/libx.so.1"), &exe).unwrap();
        let r = l.resolve("libx.so.1", "/nonexistent::/opt/a");
        assert_eq!(r.hit.unwrap().via, Via::LdLibraryPath);
        assert!(l.resolve("liby.so.1", "/opt/a").hit.is_none());
        // Not ELF: the loader stops there (and fails), so it is the hit.
        fs::write(t.path().join("opt/a/libz.so.1"), b"junk").unwrap();
        fs::write(t.path().join("opt/b/libz.so.1"), &exe).unwrap();
        assert_eq!(l.resolve("libz.so.1", "/opt/a").hit.unwrap().path, t.path().join("opt/a/libz.so.1"));
    }

    /// A "glibc-ld.so.cache1.1" file with `entries` for this machine.
    fn make_cache(entries: &[(&str, &str)]) -> Vec<u8> {
        let mut strings = Vec::new();
        let base = 48 + 24 * entries.len();
        let mut offs = Vec::new();
        for (k, v) in entries {
            offs.push(((base + strings.len()) as u32, 0u32));
            strings.extend_from_slice(k.as_bytes());
            strings.push(0);
            offs.last_mut().unwrap().1 = (base + strings.len()) as u32;
            strings.extend_from_slice(v.as_bytes());
            strings.push(0);
        }
        let mut d = CACHE_MAGIC_NEW.to_vec();
        d.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        d.extend_from_slice(&(strings.len() as u32).to_le_bytes());
        d.resize(48, 0);
        for (k, v) in offs {
            d.extend_from_slice(&native_cache_flags().to_le_bytes());
            d.extend_from_slice(&k.to_le_bytes());
            d.extend_from_slice(&v.to_le_bytes());
            d.extend_from_slice(&[0; 12]);
        }
        d.extend_from_slice(&strings);
        d
    }

    #[test]
    fn a_stale_cache_is_noticed() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::new(t.path());
        let exe = fs::read(std::env::current_exe().unwrap()).unwrap();
        for d in ["etc", "opt/new", "opt/old"] {
            fs::create_dir_all(t.path().join(d)).unwrap();
        }
        fs::write(t.path().join("etc/ld.so.conf"), "/opt/new\n/opt/old\n").unwrap();
        fs::write(t.path().join("opt/old/libx.so.1"), &exe).unwrap();
        let cache = make_cache(&[("libx.so.1", "/opt/old/libx.so.1")]);
        assert_eq!(parse_cache(&cache).unwrap(), vec![("libx.so.1".to_string(), PathBuf::from("/opt/old/libx.so.1"))]);
        fs::write(t.path().join("etc/ld.so.cache"), &cache).unwrap();
        let r = Loader::new(&root).resolve("libx.so.1", "");
        assert_eq!(r.hit.as_ref().unwrap().via, Via::Cache);
        assert!(r.stale_cache.is_none());
        // A copy dropped into an earlier directory without running ldconfig.
        fs::write(t.path().join("opt/new/libx.so.1"), &exe).unwrap();
        let r = Loader::new(&root).resolve("libx.so.1", "");
        assert_eq!(r.hit.unwrap().path, t.path().join("opt/old/libx.so.1"), "the loader still uses the cache");
        assert!(r.stale_cache.unwrap().contains("/opt/new/libx.so.1 comes first"));
        // Not in the cache at all: the loader does not find it.
        fs::write(t.path().join("opt/new/liby.so.1"), &exe).unwrap();
        let r = Loader::new(&root).resolve("liby.so.1", "");
        assert!(r.hit.is_none());
        assert!(r.stale_cache.unwrap().contains("not in ld.so.cache yet"));
    }

    #[test]
    fn the_real_cache_agrees_with_ldconfig() {
        let Ok(data) = fs::read("/etc/ld.so.cache") else {
            return;
        };
        let entries = parse_cache(&data).unwrap();
        let Ok(out) = std::process::Command::new("ldconfig").arg("-p").output() else {
            return;
        };
        let text = String::from_utf8_lossy(&out.stdout);
        let tag = if cfg!(target_arch = "x86_64") { "x86-64" } else { "AArch64" };
        let from_tool: Vec<(String, PathBuf)> = text
            .lines()
            .filter(|l| l.contains(tag) && !l.contains("hwcap"))
            .filter_map(|l| {
                let (lhs, path) = l.split_once(" => ")?;
                Some((lhs.split_whitespace().next()?.to_string(), PathBuf::from(path.trim())))
            })
            .collect();
        assert!(!entries.is_empty());
        assert_eq!(entries.len(), from_tool.len());
        assert_eq!(entries, from_tool);
    }
}
