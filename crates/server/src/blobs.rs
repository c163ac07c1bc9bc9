//! Host-to-device bytes kept by content across sessions, so that loading the same model
//! again over a link sends hashes instead of its weights (`htod_cached`, `htod_keep`).
//!
//! The client offers a copy's chunks by their blake3 hashes; the chunks found here are copied
//! from here, the others come with their bytes and are kept by a thread of the worker's own,
//! which hashes them itself: a client can name only bytes it has sent. Files are
//! `<dir>/<first two hex digits>/<hex hash>` in `VGPU_BLOB_DIR`, else `/var/cache/vgpu/blobs`,
//! else `~/.cache/vgpu/blobs`, else `$TMPDIR/vgpu-blobs-<uid>` (mode 0700: they are the
//! clients' data), and are used only when their length is the chunk's and their bytes match
//! their name. `VGPU_BLOB_CACHE_MB` caps the directory (default 32 GiB, at most a quarter of
//! its file system; 0: no cache); past it the writer removes the files least recently used
//! (a hit touches its file, at most every ten minutes). `vgpu serve --blob-dir` and
//! `--blob-cache` set both for the workers.

use crate::cachedir::{candidates, choose_dir, hex, write_atomic};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

/// Bytes waiting for the writer; chunks beyond are not kept (they are sent again next time).
const QUEUE_BYTES: usize = 128 << 20;
/// Buffers kept for reuse once written (a fresh 4 MiB buffer costs its page faults each time).
const SPARE: usize = 16;
const DEFAULT_CAP_MB: u64 = 32 << 10;
/// Smaller chunks than clients offer are not kept: the cap counts bytes, and a client
/// sending tiny ones would fill the file system's inodes instead.
const KEEP_MIN: usize = protocol::BLOB_MIN;

pub struct Blobs {
    dir: Option<PathBuf>,
    cap: u64,
    /// Smaller chunks are not kept ([`KEEP_MIN`]; 0 in unit tests).
    min: usize,
    tx: parking_lot::Mutex<Option<std::sync::mpsc::Sender<Vec<u8>>>>,
    /// Told by the writer when it has written everything and stopped.
    done: parking_lot::Mutex<Option<Receiver<()>>>,
    /// Buffers the writer is done with, and the bytes queued for it.
    spare: Arc<Spare>,
}

#[derive(Default)]
struct Spare {
    buffers: parking_lot::Mutex<Vec<Vec<u8>>>,
    /// Bytes handed to the writer and not yet written.
    queued: std::sync::atomic::AtomicUsize,
    /// Bytes written in files, for pruning.
    written: std::sync::atomic::AtomicU64,
    /// A write failed and said so.
    warned: std::sync::atomic::AtomicBool,
}

/// Bytes of this store that a copy may take from: the file is open and has the chunk's
/// length; [`Found::read_into`] checks its bytes.
pub struct Found {
    file: std::fs::File,
    path: PathBuf,
    hash: [u8; 32],
    pub len: usize,
    /// When it was last used (its mtime).
    used: SystemTime,
}

/// A file used this recently is not touched again (a system call per chunk, thousands of
/// chunks a load of Ollama's 128 KiB pieces): pruning needs no finer order.
const TOUCH_AFTER: Duration = Duration::from_secs(600);

impl Found {
    /// The bytes into `dst` (`len` long), if they still match their name; a file that does
    /// not is removed, so that the next copy of those bytes is kept again.
    pub fn read_into(&self, dst: &mut [u8]) -> bool {
        if dst.len() != self.len || !read_at(&self.file, dst) {
            return false;
        }
        if hash(dst) != self.hash {
            tracing::warn!("blob {} does not match its name; removed", self.path.display());
            let _ = std::fs::remove_file(&self.path);
            return false;
        }
        // Recently used: kept longest when the directory is pruned.
        let now = SystemTime::now();
        if now.duration_since(self.used).is_ok_and(|age| age > TOUCH_AFTER) {
            let _ = self.file.set_modified(now);
        }
        true
    }

    /// The bytes, if they still match their name.
    pub fn read(&self) -> Option<Vec<u8>> {
        let mut v = Vec::new();
        v.try_reserve_exact(self.len).ok()?;
        v.resize(self.len, 0);
        self.read_into(&mut v).then_some(v)
    }
}

const PIECE: usize = 1 << 20;

/// blake3 of `bytes`.
fn hash(bytes: &[u8]) -> [u8; 32] {
    match crate::pool() {
        Some(p) if bytes.len() >= PIECE => {
            p.install(|| *blake3::Hasher::new().update_rayon(bytes).finalize().as_bytes())
        }
        _ => *blake3::hash(bytes).as_bytes(),
    }
}

/// `dst.len()` bytes of `file` from its start, a MiB per thread.
fn read_at(file: &std::fs::File, dst: &mut [u8]) -> bool {
    use rayon::prelude::*;
    use std::os::unix::fs::FileExt;
    match crate::pool() {
        Some(p) if dst.len() > PIECE => p.install(|| {
            dst.par_chunks_mut(PIECE).enumerate().all(|(i, c)| file.read_exact_at(c, (i * PIECE) as u64).is_ok())
        }),
        _ => file.read_exact_at(dst, 0).is_ok(),
    }
}

static STORE: OnceLock<Blobs> = OnceLock::new();

/// This worker's store, configured from the environment on first use.
pub fn blobs() -> &'static Blobs {
    STORE.get_or_init(|| {
        let set = std::env::var("VGPU_BLOB_CACHE_MB").ok().and_then(|v| v.parse::<u64>().ok());
        let cap = set.unwrap_or(DEFAULT_CAP_MB) << 20;
        let dir = (cap > 0).then(|| {
            let uid = unsafe { libc::geteuid() };
            let env = std::env::var("VGPU_BLOB_DIR").ok();
            let [primary, tmp] = candidates("blobs", env.as_deref(), &std::env::temp_dir(), uid);
            // A server that cannot write the system's cache keeps them in its user's, before
            // a temporary directory (often memory).
            let home = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
                .map(|c| c.join("vgpu").join("blobs"));
            let dirs: Vec<PathBuf> = [Some(primary), home, Some(tmp)].into_iter().flatten().collect();
            choose_dir(&dirs, uid)
        });
        let dir = dir.flatten();
        // Unless told, at most a quarter of the file system (a small root file system).
        let cap = match (&dir, set) {
            (Some(d), None) => cap.min(fs_size(d) / 4),
            _ => cap,
        };
        Blobs::new(dir, cap)
    })
}

/// The size of the file system holding `dir` (`u64::MAX` if unknown).
fn fs_size(dir: &Path) -> u64 {
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else { return u64::MAX };
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a statvfs to fill.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return u64::MAX;
    }
    (st.f_blocks as u64).saturating_mul(st.f_frsize as u64)
}

impl Blobs {
    pub fn new(dir: Option<PathBuf>, cap: u64) -> Blobs {
        if let Some(d) = &dir {
            let _ = std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700));
            tracing::debug!("blob cache in {} (up to {} MiB)", d.display(), cap >> 20);
        }
        let spare = Arc::new(Spare::default());
        let (tx, done) = (parking_lot::Mutex::new(None), parking_lot::Mutex::new(None));
        Blobs { dir, cap, min: KEEP_MIN, tx, done, spare }
    }

    #[cfg(test)]
    fn keeping_any(dir: Option<PathBuf>, cap: u64) -> Blobs {
        Blobs { min: 0, ..Blobs::new(dir, cap) }
    }

    fn path(dir: &Path, hash: &[u8; 32]) -> PathBuf {
        let name = hex(hash);
        dir.join(&name[..2]).join(name)
    }

    /// The file named `hash`, if it is here and `len` long.
    pub fn find(&self, hash: &[u8; 32], len: usize) -> Option<Found> {
        let path = Self::path(self.dir.as_ref()?, hash);
        let file = std::fs::File::open(&path).ok()?;
        let meta = file.metadata().ok()?;
        let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        (meta.len() == len as u64).then_some(Found { file, path, hash: *hash, len, used })
    }

    /// The bytes named `hash`, if they are here, `len` long and really have that hash.
    #[cfg(test)]
    pub fn get(&self, hash: &[u8; 32], len: usize) -> Option<Vec<u8>> {
        self.find(hash, len)?.read()
    }

    /// Keep a copy of `bytes` for later sessions, unless the writer is behind (they are
    /// then sent again next time).
    pub fn keep(&self, bytes: &[u8]) {
        use std::sync::atomic::Ordering::Relaxed;
        let Some(dir) = &self.dir else { return };
        if bytes.len() < self.min || self.spare.queued.load(Relaxed) + bytes.len() > QUEUE_BYTES {
            return;
        }
        let mut tx = self.tx.lock();
        if tx.is_none() {
            let (t, rx) = std::sync::mpsc::channel();
            let (done_tx, done_rx) = sync_channel(1);
            let (dir, cap, spare) = (dir.clone(), self.cap, self.spare.clone());
            let spawned = std::thread::Builder::new().name("vgpu-blobs".into()).spawn(move || {
                write_all(&dir, cap, rx, &spare);
                let _ = done_tx.send(());
            });
            if spawned.is_err() {
                return;
            }
            *tx = Some(t);
            *self.done.lock() = Some(done_rx);
        }
        let mut buf = self.spare.buffers.lock().pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(bytes);
        self.spare.queued.fetch_add(buf.len(), Relaxed);
        if let Some(t) = tx.as_ref()
            && t.send(buf).is_err()
        {
            // The writer is gone (it could not start a file, say): keep nothing more.
            self.spare.queued.fetch_sub(bytes.len(), Relaxed);
            *tx = None;
        }
    }

    /// Write what is queued, waiting at most `limit` (the worker is about to exit).
    pub fn flush(&self, limit: Duration) {
        self.tx.lock().take();
        if let Some(done) = self.done.lock().take() {
            let _ = done.recv_timeout(limit);
        }
    }
}

/// At the session's end: write what this worker was given to keep (bounded by `limit`).
pub fn flush_kept(limit: Duration) {
    if let Some(b) = STORE.get() {
        b.flush(limit);
    }
}

/// The writer: hands each chunk to the pool, which keeps it under its own hash (a file a
/// chunk: Ollama's 128 KiB pieces made one thread fall behind a 10 Gbit/s link), and prunes
/// the directory once more than a sixteenth of its cap has been written since it last
/// looked. Returns once every chunk it took is written.
fn write_all(dir: &Path, cap: u64, rx: Receiver<Vec<u8>>, spare: &Arc<Spare>) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut pruned_at = 0u64;
    for bytes in rx {
        match crate::pool() {
            Some(p) => {
                let (dir, spare) = (dir.to_path_buf(), spare.clone());
                p.spawn(move || keep_one(&dir, bytes, &spare));
            }
            None => keep_one(dir, bytes, spare),
        }
        let written = spare.written.load(Relaxed);
        if written - pruned_at > cap / 16 {
            prune(dir, cap);
            pruned_at = written;
        }
    }
    while spare.queued.load(Relaxed) > 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Write one chunk under its hash (or mark an existing file used) and give its buffer back.
fn keep_one(dir: &Path, bytes: Vec<u8>, spare: &Spare) {
    use std::sync::atomic::Ordering::Relaxed;
    let h = hash(&bytes);
    let path = Blobs::path(dir, &h);
    if path.exists() {
        let _ = std::fs::File::options().append(true).open(&path).and_then(|f| f.set_modified(SystemTime::now()));
    } else {
        let sub = path.parent().unwrap_or(dir);
        let name = hex(&h);
        match std::fs::create_dir_all(sub).and_then(|()| write_atomic(sub, &name, &bytes, false)) {
            Ok(()) => {
                spare.written.fetch_add(bytes.len() as u64, Relaxed);
            }
            // Once: a full disk would otherwise say so for every chunk.
            Err(e) if !spare.warned.swap(true, Relaxed) => {
                tracing::warn!("cannot keep {name} in {}: {e} (further failures not logged)", sub.display())
            }
            Err(_) => {}
        }
    }
    let len = bytes.len();
    {
        let mut buffers = spare.buffers.lock();
        if buffers.len() < SPARE {
            buffers.push(bytes);
        }
    }
    // Last: `flush` waits for this to reach 0.
    spare.queued.fetch_sub(len, Relaxed);
}

/// Remove the least recently used files until the directory holds at most nine tenths
/// of `cap`, and temporary files that a killed writer left more than an hour ago.
pub fn prune(dir: &Path, cap: u64) {
    let mut files = Vec::new();
    let mut total = 0u64;
    let now = SystemTime::now();
    let Ok(subs) = std::fs::read_dir(dir) else { return };
    for sub in subs.flatten() {
        let Ok(entries) = std::fs::read_dir(sub.path()) else { continue };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            if e.file_name().as_encoded_bytes().starts_with(b".") {
                if now.duration_since(mtime).is_ok_and(|age| age > Duration::from_secs(3600)) {
                    let _ = std::fs::remove_file(e.path());
                }
                continue;
            }
            total += meta.len();
            files.push((mtime, meta.len(), e.path()));
        }
    }
    if total <= cap {
        return;
    }
    files.sort();
    let goal = cap / 10 * 9;
    for (_, len, path) in files {
        if total <= goal {
            break;
        }
        if std::fs::remove_file(&path).is_ok() {
            total -= len;
        }
    }
}

/// `htod_cached`: the chunks of a `len`-byte copy (`chunk` bytes each, the last shorter)
/// that are here, each handed to `copy` with its offset; which were. `copy` answers false
/// when the file's bytes turned out not to match (a miss, as if absent).
pub fn offer<E>(
    store: &Blobs,
    len: u64,
    chunk: u64,
    hashes: &[[u8; 32]],
    invalid: E,
    mut copy: impl FnMut(u64, &Found) -> Result<bool, E>,
) -> Result<Vec<bool>, E> {
    if chunk == 0 || len.div_ceil(chunk) != hashes.len() as u64 || chunk > protocol::frame::CHUNK as u64 {
        return Err(invalid);
    }
    let mut hit = vec![false; hashes.len()];
    for (i, h) in hashes.iter().enumerate() {
        let at = i as u64 * chunk;
        let n = chunk.min(len - at) as usize;
        if let Some(found) = store.find(h, n) {
            hit[i] = copy(at, &found)?;
        }
    }
    Ok(hit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_for(path: &Path) {
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while !path.exists() && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn kept_bytes_come_back_by_hash_and_length_only() {
        let t = tempfile::tempdir().unwrap();
        let b = Blobs::keeping_any(Some(t.path().to_path_buf()), 1 << 30);
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        let h = *blake3::hash(&data).as_bytes();
        assert_eq!(b.get(&h, data.len()), None);
        b.keep(&data);
        b.flush(Duration::from_secs(10));
        let path = Blobs::path(t.path(), &h);
        assert!(path.exists(), "kept under its hash, fanned out by its first byte");
        assert_eq!(std::fs::metadata(t.path()).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(b.get(&h, data.len()).as_deref(), Some(&data[..]));
        assert_eq!(b.get(&h, data.len() - 1), None, "another length is another chunk");
        // A file whose bytes do not match its name (damaged, or planted) is not used.
        let mut bad = data.clone();
        bad[7] ^= 1;
        std::fs::write(&path, &bad).unwrap();
        assert_eq!(b.get(&h, data.len()), None);
        assert!(!path.exists(), "a damaged file is removed");
        // A chunk of a MiB and more is checked on several threads, with the same result.
        let big: Vec<u8> = (0..3u32 << 20).map(|i| (i * 31 % 241) as u8).collect();
        let hb = *blake3::hash(&big).as_bytes();
        b.keep(&big);
        b.flush(Duration::from_secs(10));
        assert_eq!(hash(&big), hb);
        assert_eq!(b.find(&hb, big.len()).and_then(|f| f.read()).as_deref(), Some(&big[..]));
        // A chunk smaller than a client offers is not kept.
        let real = Blobs::new(Some(t.path().to_path_buf()), 1 << 30);
        let small = &data[..KEEP_MIN - 1];
        real.keep(small);
        real.flush(Duration::from_secs(10));
        assert!(!Blobs::path(t.path(), blake3::hash(small).as_bytes()).exists());
        // Without a directory nothing is kept or found.
        let none = Blobs::keeping_any(None, 1 << 30);
        none.keep(&data);
        none.flush(Duration::from_secs(1));
        assert_eq!(none.get(&h, data.len()), None);
    }

    #[test]
    fn a_second_writer_after_flush_and_duplicates() {
        let t = tempfile::tempdir().unwrap();
        let b = Blobs::keeping_any(Some(t.path().to_path_buf()), 1 << 30);
        b.keep(b"first chunk of bytes");
        b.flush(Duration::from_secs(10));
        b.keep(b"second chunk of bytes");
        b.keep(b"second chunk of bytes");
        b.flush(Duration::from_secs(10));
        let h = *blake3::hash(b"second chunk of bytes").as_bytes();
        wait_for(&Blobs::path(t.path(), &h));
        assert_eq!(b.get(&h, 21).as_deref(), Some(&b"second chunk of bytes"[..]));
        let files: usize =
            std::fs::read_dir(t.path()).unwrap().map(|s| std::fs::read_dir(s.unwrap().path()).unwrap().count()).sum();
        assert_eq!(files, 2, "one file per content, no temporary files left");
    }

    #[test]
    fn prune_removes_the_least_recently_used() {
        let t = tempfile::tempdir().unwrap();
        let b = Blobs::keeping_any(Some(t.path().to_path_buf()), 1 << 30);
        let chunks: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 1000]).collect();
        for c in &chunks {
            b.keep(c);
        }
        b.flush(Duration::from_secs(10));
        let path = |c: &[u8]| Blobs::path(t.path(), blake3::hash(c).as_bytes());
        let old = SystemTime::now() - Duration::from_secs(1000);
        for (i, c) in chunks.iter().enumerate() {
            let f = std::fs::File::options().append(true).open(path(c)).unwrap();
            f.set_modified(old + Duration::from_secs(i as u64)).unwrap();
        }
        // A hit makes chunk 0 the most recently used.
        assert!(b.get(blake3::hash(&chunks[0]).as_bytes(), 1000).is_some());
        let stale = t.path().join("00").join(".x.tmp");
        std::fs::create_dir_all(stale.parent().unwrap()).unwrap();
        std::fs::write(&stale, b"half").unwrap();
        let hours_ago = SystemTime::now() - Duration::from_secs(7200);
        std::fs::File::options().append(true).open(&stale).unwrap().set_modified(hours_ago).unwrap();
        let fresh = t.path().join("00").join(".y.tmp");
        std::fs::write(&fresh, b"being written").unwrap();
        prune(t.path(), 2500);
        let left: Vec<bool> = chunks.iter().map(|c| path(c).exists()).collect();
        assert_eq!(left, [true, false, false, true], "oldest first, down to 9/10 of the cap");
        assert!(!stale.exists(), "an old temporary file is removed");
        assert!(fresh.exists(), "one being written is not");
    }

    #[test]
    fn offer_checks_its_arguments_and_copies_what_it_has() {
        let t = tempfile::tempdir().unwrap();
        let b = Blobs::keeping_any(Some(t.path().to_path_buf()), 1 << 30);
        let h = [[0u8; 32]; 2];
        assert_eq!(offer(&b, 10, 0, &h, 22, |_, _| Ok(true)), Err(22));
        assert_eq!(offer(&b, 10, 4, &h, 22, |_, _| Ok(true)), Err(22), "10 bytes in 4-byte chunks are 3");
        assert_eq!(offer(&b, 1 << 40, 1 << 30, &[[0u8; 32]; 1024], 22, |_, _| Ok(true)), Err(22));
        assert_eq!(offer(&b, 10, 5, &h, 22, |_, _| Ok(true)), Ok(vec![false, false]));
        // A known last chunk, shorter than the others, is copied at its offset.
        b.keep(b"tail!");
        b.flush(Duration::from_secs(10));
        let h = [[0u8; 32], *blake3::hash(b"tail!").as_bytes()];
        let mut got = Vec::new();
        let r = offer(&b, 10, 5, &h, 22, |at, found| {
            got.push((at, found.read().unwrap()));
            Ok(true)
        });
        assert_eq!(r, Ok(vec![false, true]));
        assert_eq!(got, [(5, b"tail!".to_vec())]);
        // The copy's error is the offer's; bytes that turned out wrong are a miss.
        assert_eq!(offer(&b, 10, 5, &h, 22, |_, _| Err(700)), Err(700));
        assert_eq!(offer(&b, 10, 5, &h, 22, |_, _| Ok(false)), Ok(vec![false, false]));
        let fs = fs_size(t.path());
        assert!(fs > 1 << 20 && fs < u64::MAX, "{fs}");
    }
}
