//! Where the file system starts: `/` for real use, a temporary directory in tests.

use std::path::{Component, Path, PathBuf};

/// A prefix under which absolute paths such as `/etc/ld.so.conf` are looked up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Root(PathBuf);

impl Root {
    pub fn system() -> Root {
        Root(PathBuf::from("/"))
    }

    pub fn new(p: impl Into<PathBuf>) -> Root {
        Root(p.into())
    }

    pub fn is_system(&self) -> bool {
        self.0 == Path::new("/")
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The host path of `p`, an absolute path as seen inside the root.
    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        let rel: PathBuf =
            p.as_ref().components().filter(|c| !matches!(c, Component::RootDir | Component::Prefix(_))).collect();
        self.0.join(rel)
    }

    /// `p`, a host path under the root, as seen inside it (for messages and config files).
    pub fn inside(&self, p: &Path) -> PathBuf {
        if self.is_system() {
            return p.to_path_buf();
        }
        match p.strip_prefix(&self.0) {
            Ok(r) => Path::new("/").join(r),
            Err(_) => p.to_path_buf(),
        }
    }

    /// `p` relative to the root (no leading `/`), as stored in manifests.
    pub fn relative(&self, p: &Path) -> Option<PathBuf> {
        p.strip_prefix(&self.0).ok().map(Path::to_path_buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_and_inside() {
        let r = Root::new("/tmp/x");
        assert_eq!(r.join("/etc/ld.so.conf"), Path::new("/tmp/x/etc/ld.so.conf"));
        assert_eq!(r.inside(Path::new("/tmp/x/usr/lib")), Path::new("/usr/lib"));
        assert_eq!(Root::system().join("/usr/lib"), Path::new("/usr/lib"));
        assert!(Root::system().is_system());
    }
}
