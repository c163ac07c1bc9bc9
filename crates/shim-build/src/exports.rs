//! The export lists (`crates/abi/exports/<soname>.exports`): one defined dynamic symbol a line,
//! `name@@node` for versioned libraries (plus a bare line with the node's own ABS symbol),
//! `name` for unversioned ones. `#` starts a comment line.

use std::collections::BTreeSet;

/// A parsed export list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportList {
    node: Option<String>,
    node_symbol: bool,
    names: BTreeSet<String>,
}

impl ExportList {
    /// Parse a list for the library `soname`. A versioned list must use the node `soname`
    /// for every name; an unversioned list must have no `@` at all.
    pub fn parse(text: &str, soname: &str) -> Result<Self, String> {
        let mut node: Option<String> = None;
        let mut node_symbol = false;
        let mut versioned_names = 0usize;
        let mut names = BTreeSet::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = |m: String| format!("line {}: {m}: {line:?}", i + 1);
            if line == soname {
                node_symbol = true;
                continue;
            }
            let name = if let Some((name, v)) = line.split_once("@@") {
                if v != soname {
                    return Err(at(format!("version node {v:?} is not the SONAME {soname:?}")));
                }
                node = Some(v.to_owned());
                versioned_names += 1;
                name
            } else if line.contains('@') {
                return Err(at("non-default (@) version: not supported".into()));
            } else {
                line
            };
            if !is_c_identifier(name) {
                return Err(at("not a C identifier".into()));
            }
            if !names.insert(name.to_owned()) {
                return Err(at("duplicate name".into()));
            }
        }
        if names.is_empty() {
            return Err("empty list".into());
        }
        if versioned_names != 0 && versioned_names != names.len() {
            return Err(format!(
                "{} of {} names are versioned: a list is all or nothing",
                versioned_names,
                names.len()
            ));
        }
        if node.is_none() && node_symbol {
            return Err(format!("node symbol {soname:?} listed but no name is versioned"));
        }
        Ok(Self { node, node_symbol, names })
    }

    /// The version node (`Some(soname)`) of a versioned list.
    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    /// Whether names carry `@@node`.
    pub fn versioned(&self) -> bool {
        self.node.is_some()
    }

    /// Whether the list names the node's own ABS symbol.
    pub fn has_node_symbol(&self) -> bool {
        self.node_symbol
    }

    /// The exported names (without versions, without the node symbol), sorted.
    pub fn names(&self) -> &BTreeSet<String> {
        &self.names
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`
pub fn is_c_identifier(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c == b'_' || c.is_ascii_alphabetic())
        && b.all(|c| c == b'_' || c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versioned_list() {
        let l = ExportList::parse("libx.so.13\n# c\nfoo@@libx.so.13\nbar@@libx.so.13\n\n", "libx.so.13").unwrap();
        assert_eq!(l.node(), Some("libx.so.13"));
        assert!(l.has_node_symbol());
        assert_eq!(l.names().iter().collect::<Vec<_>>(), ["bar", "foo"]);
    }

    #[test]
    fn unversioned_list() {
        let l = ExportList::parse("foo\nbar\n", "libx.so.1").unwrap();
        assert!(!l.versioned());
        assert_eq!(l.names().len(), 2);
    }

    #[test]
    fn bad_lists() {
        assert!(ExportList::parse("", "l").is_err());
        assert!(ExportList::parse("foo@@other\n", "libx.so.13").is_err());
        assert!(ExportList::parse("foo@@libx.so.13\nbar\n", "libx.so.13").is_err());
        assert!(ExportList::parse("foo\nfoo\n", "l").is_err());
        assert!(ExportList::parse("foo@libx.so.13\n", "libx.so.13").is_err());
        assert!(ExportList::parse("9foo\n", "l").is_err());
        assert!(ExportList::parse("libx.so.1\nfoo\n", "libx.so.1").is_err());
    }

    #[test]
    fn identifiers() {
        assert!(is_c_identifier("__cudaRegisterFatBinary"));
        assert!(is_c_identifier("cublasSgemm_v2_64"));
        assert!(!is_c_identifier(""));
        assert!(!is_c_identifier("a-b"));
    }
}
