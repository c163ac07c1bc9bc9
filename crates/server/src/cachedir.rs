//! Directories of content-addressed files shared by every session's worker (module images,
//! `crate::blobs`): each file named by the hex blake3 hash of its bytes, written to a
//! temporary name and renamed, so that concurrent workers never see half a file.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

pub fn hex(hash: &[u8; 32]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where files of `kind` go: the configured or system directory (`/var/cache/vgpu/<kind>`),
/// else a per-user temporary one.
pub fn candidates(kind: &str, env: Option<&str>, tmp: &Path, uid: u32) -> [PathBuf; 2] {
    let primary = match env {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => Path::new("/var/cache/vgpu").join(kind),
    };
    [primary, tmp.join(format!("vgpu-{kind}-{uid}"))]
}

/// The first candidate that exists (or can be made), belongs to us or is shared on
/// purpose, and is writable.
pub fn choose_dir(candidates: &[PathBuf], uid: u32) -> Option<PathBuf> {
    candidates.iter().enumerate().find_map(|(i, d)| {
        let fallback = i > 0;
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        if fallback {
            b.mode(0o700);
        }
        b.create(d).ok()?;
        let meta = std::fs::metadata(d).ok()?;
        // In a shared temporary directory, one another user made first is not ours.
        if !meta.is_dir() || (fallback && meta.uid() != uid) {
            return None;
        }
        writable(d).then(|| d.clone())
    })
}

fn writable(d: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(d.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

/// Write `bytes` as `dir/name` atomically (temporary file, then rename).
///
/// `durable`: on the disk before the rename. Files that are checked against their name when
/// read need not be: one a crash left short or empty is then found wrong and dropped, and a
/// synchronous write per file held the writer of kept weights to the disk's flush rate
/// (slower than a 10 Gbit/s link on one H100 host).
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8], durable: bool) -> std::io::Result<()> {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let tmp = dir.join(format!(".{name}.{}.{nanos}.tmp", std::process::id()));
    let r = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        if durable { f.sync_data() } else { Ok(()) }
    });
    let r = r.and_then(|()| std::fs::rename(&tmp, dir.join(name)));
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uid() -> u32 {
        unsafe { libc::geteuid() }
    }

    #[test]
    fn hex_and_candidates() {
        let mut h = [0u8; 32];
        h[0] = 0xab;
        h[31] = 0x01;
        let s = hex(&h);
        assert_eq!(s.len(), 64);
        assert!(s.starts_with("ab00") && s.ends_with("01"));
        let [a, b] = candidates("modules", None, Path::new("/tmp"), 1000);
        assert_eq!(a, PathBuf::from("/var/cache/vgpu/modules"));
        assert_eq!(b, PathBuf::from("/tmp/vgpu-modules-1000"));
        let [a, _] = candidates("modules", Some("/srv/c"), Path::new("/tmp"), 1000);
        assert_eq!(a, PathBuf::from("/srv/c"));
        let [a, _] = candidates("modules", Some(""), Path::new("/tmp"), 1000);
        assert_eq!(a, PathBuf::from("/var/cache/vgpu/modules"));
    }

    #[test]
    fn choose_falls_back_when_not_writable() {
        let t = tempfile::tempdir().unwrap();
        // A regular file where the primary directory should be: unusable.
        let blocked = t.path().join("file");
        std::fs::write(&blocked, b"x").unwrap();
        let fallback = t.path().join("vgpu-modules");
        let got = choose_dir(&[blocked.join("sub"), fallback.clone()], uid());
        assert_eq!(got, Some(fallback.clone()));
        let mode = std::fs::metadata(&fallback).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        // The primary wins when usable.
        let primary = t.path().join("primary");
        assert_eq!(choose_dir(&[primary.clone(), fallback], uid()), Some(primary));
    }
}
