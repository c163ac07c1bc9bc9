//! Module images by content hash, so a second start of the same program uploads nothing.
//!
//! Images live in memory for the session and on disk for every session: one file per
//! image named by its hex blake3 hash, in `VGPU_CACHE_DIR`, else `/var/cache/vgpu/modules`,
//! else (not writable) `$TMPDIR/vgpu-modules-<uid>`. Files are written to a temporary name
//! and renamed, so concurrent workers never see half a file, and are verified against
//! their name when read, so a damaged or planted file is ignored.

use super::{INVALID_VALUE, R};
use crate::cachedir::{candidates, choose_dir, hex, write_atomic};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Images up to this size are also kept in memory (bigger ones are read back from disk).
const MEMORY_MAX: usize = 64 << 20;

/// An image in 8-byte-aligned memory followed by at least one NUL: the driver reads cubins
/// and fatbins as structs, and PTX as a C string. Kept in this form, so that a load by hash
/// copies nothing.
#[derive(Debug)]
pub struct Aligned {
    words: Vec<u64>,
    len: usize,
    /// Or the file in the cache, mapped: its last page's zeros after the image are the NUL.
    map: Option<memmap2::Mmap>,
}

impl PartialEq for Aligned {
    fn eq(&self, other: &Aligned) -> bool {
        self.bytes() == other.bytes()
    }
}

impl Aligned {
    fn zeroed(len: usize) -> Aligned {
        Aligned { words: vec![0u64; len / 8 + 1], len, map: None }
    }
    pub fn from_bytes(bytes: &[u8]) -> Aligned {
        let mut a = Aligned::zeroed(bytes.len());
        a.bytes_mut().copy_from_slice(bytes);
        a
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: `words` holds at least `len` bytes.
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr().cast::<u8>(), self.len) }
    }
    /// The image's bytes (the NUL after them not included).
    pub fn bytes(&self) -> &[u8] {
        if let Some(m) = &self.map {
            return &m[..];
        }
        // SAFETY: as above.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }
    pub fn as_ptr(&self) -> *const std::ffi::c_void {
        self.bytes().as_ptr().cast()
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
}

/// What a session's loads cost, said when it ends (`VGPU_STATS`).
#[derive(Default, Debug)]
pub struct LoadCost {
    pub loads: u64,
    pub bytes: u64,
    /// Finding, reading and checking images.
    pub cache: std::time::Duration,
    /// The driver's own loading.
    pub driver: std::time::Duration,
}

/// The image cache of one session.
#[derive(Default)]
pub struct ImageCache {
    /// `None` until first needed; then the chosen directory, if any is usable.
    dir: Option<Option<PathBuf>>,
    mem: HashMap<[u8; 32], Rc<Aligned>>,
    pub cost: LoadCost,
}

impl ImageCache {
    pub fn new() -> ImageCache {
        ImageCache::default()
    }

    #[cfg(test)]
    pub fn with_dir(dir: Option<PathBuf>) -> ImageCache {
        ImageCache { dir: Some(dir), ..ImageCache::default() }
    }

    fn dir(&mut self) -> Option<&Path> {
        self.dir
            .get_or_insert_with(|| {
                let uid = unsafe { libc::geteuid() };
                let env = std::env::var("VGPU_CACHE_DIR").ok();
                let d = choose_dir(&candidates("modules", env.as_deref(), &std::env::temp_dir(), uid), uid);
                match &d {
                    Some(d) => tracing::debug!("module cache in {}", d.display()),
                    None => tracing::warn!("no writable module cache directory; images are kept in memory only"),
                }
                d
            })
            .as_deref()
    }

    /// Store an image the client sent: it must match `hash`.
    pub fn put(&mut self, hash: &[u8; 32], image: &[u8]) -> R<Rc<Aligned>> {
        if blake3::hash(image).as_bytes() != hash {
            return Err(INVALID_VALUE);
        }
        let name = hex(hash);
        if let Some(dir) = self.dir()
            && !dir.join(&name).exists()
            && let Err(e) = write_atomic(dir, &name, image, true)
        {
            tracing::warn!("cannot cache module {name} in {}: {e}", dir.display());
        }
        Ok(self.keep(hash, Aligned::from_bytes(image)))
    }

    /// A known image: from memory, else from disk, checked against its name. The file is
    /// mapped (page-aligned, and the rest of its last page is zeros, a NUL after the image),
    /// unless it fills its last page: then it is read into aligned memory with a NUL added.
    /// Mapped, a load by hash copies nothing (on an H200, PyTorch's 4,820 images took the
    /// server 0.24 s to find and check instead of 1.7 s read).
    pub fn get(&mut self, hash: &[u8; 32]) -> Option<Rc<Aligned>> {
        if let Some(i) = self.mem.get(hash) {
            return Some(i.clone());
        }
        let mut file = std::fs::File::open(self.dir()?.join(hex(hash))).ok()?;
        let len = usize::try_from(file.metadata().ok()?.len()).ok()?;
        let image = if len % page_size() != 0 {
            // SAFETY: cache files are written once under a temporary name and renamed, never
            // changed in place.
            let map = unsafe { memmap2::Mmap::map(&file) }.ok()?;
            Aligned { words: Vec::new(), len, map: Some(map) }
        } else {
            let mut image = Aligned::zeroed(len);
            file.read_exact(image.bytes_mut()).ok()?;
            image
        };
        if blake3::hash(image.bytes()).as_bytes() != hash {
            return None;
        }
        Some(self.keep(hash, image))
    }

    fn keep(&mut self, hash: &[u8; 32], image: Aligned) -> Rc<Aligned> {
        let image = Rc::new(image);
        if image.len <= MEMORY_MAX {
            self.mem.insert(*hash, image.clone());
        }
        image
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_roundtrip_through_disk() {
        let t = tempfile::tempdir().unwrap();
        let image = b"\x7fELF fake cubin".to_vec();
        let hash = *blake3::hash(&image).as_bytes();
        let mut c = ImageCache::with_dir(Some(t.path().to_path_buf()));
        assert_eq!(c.get(&hash), None);
        assert_eq!(c.put(&[0; 32], &image), Err(INVALID_VALUE));
        assert_eq!(c.put(&hash, &image).unwrap().bytes(), &image[..]);
        assert_eq!(std::fs::read(t.path().join(hex(&hash))).unwrap(), image);
        // No temporary files are left behind.
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 1);
        // Another session finds it on disk.
        let mut other = ImageCache::with_dir(Some(t.path().to_path_buf()));
        assert_eq!(other.get(&hash).unwrap().bytes(), &image[..]);
        // A file whose content does not match its name is ignored.
        let fake = [7u8; 32];
        std::fs::write(t.path().join(hex(&fake)), b"planted").unwrap();
        assert_eq!(other.get(&fake), None);
        // An image that fills its last page is read, with a NUL after it.
        let whole: Vec<u8> = (0..page_size()).map(|i| (i % 251) as u8 + 1).collect();
        let whole_hash = *blake3::hash(&whole).as_bytes();
        c.put(&whole_hash, &whole).unwrap();
        let read = ImageCache::with_dir(Some(t.path().to_path_buf())).get(&whole_hash).unwrap();
        assert_eq!(read.bytes(), &whole[..]);
        assert_eq!(unsafe { *read.as_ptr().cast::<u8>().add(whole.len()) }, 0);
        // A mapped one has zeros after it too.
        let mapped = ImageCache::with_dir(Some(t.path().to_path_buf())).get(&hash).unwrap();
        assert_eq!(unsafe { *mapped.as_ptr().cast::<u8>().add(image.len()) }, 0);
        // Without a directory, memory still works within the session.
        let mut mem = ImageCache::with_dir(None);
        mem.put(&hash, &image).unwrap();
        assert_eq!(mem.get(&hash).unwrap().bytes(), &image[..]);
    }

    #[test]
    fn aligned_images_end_in_nul() {
        for n in [0usize, 1, 7, 8, 9, 16] {
            let bytes: Vec<u8> = (1..=n as u8).collect();
            let w = Aligned::from_bytes(&bytes);
            assert_eq!(w.as_ptr() as usize % 8, 0);
            let b = unsafe { std::slice::from_raw_parts(w.as_ptr().cast::<u8>(), n + 1) };
            assert_eq!(&b[..n], &bytes[..]);
            assert_eq!(b[n], 0);
        }
    }
}
