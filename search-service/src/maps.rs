//! The set of maps a replica indexes (`SEARCH_MAPS`) and where a map's index lives.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Which maps are indexed. Every map is searchable with no setup (§2.1); an operator
/// can restrict the set to save memory.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum IndexedMaps {
    /// Every map.
    #[default]
    All,
    /// Only these maps.
    Only(BTreeSet<String>),
}

impl IndexedMaps {
    /// Parses a comma-separated list; blanks are ignored and an empty list means all.
    pub fn parse(list: &str) -> Self {
        let names: BTreeSet<String> = list
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(String::from)
            .collect();
        if names.is_empty() {
            IndexedMaps::All
        } else {
            IndexedMaps::Only(names)
        }
    }

    /// Whether `map` is indexed.
    pub fn contains(&self, map: &str) -> bool {
        match self {
            IndexedMaps::All => true,
            IndexedMaps::Only(names) => names.contains(map),
        }
    }

    /// Whether every map indexed under `self` is also indexed under `other`.
    pub fn is_subset_of(&self, other: &IndexedMaps) -> bool {
        match (self, other) {
            (_, IndexedMaps::All) => true,
            (IndexedMaps::All, IndexedMaps::Only(_)) => false,
            (IndexedMaps::Only(mine), IndexedMaps::Only(theirs)) => mine.is_subset(theirs),
        }
    }
}

/// The folder of `map`'s index under `root`. Map names are arbitrary strings, so every
/// byte outside `[A-Za-z0-9_-]` is percent-escaped: no separators, no `..`, and two
/// different names never share a folder.
pub fn map_folder(root: &Path, map: &str) -> PathBuf {
    let mut name = String::from("map-");
    for byte in map.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-' {
            name.push(char::from(byte));
        } else {
            name.push_str(&format!("%{byte:02X}"));
        }
    }
    root.join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_map_list() {
        assert_eq!(IndexedMaps::parse(""), IndexedMaps::All);
        assert_eq!(IndexedMaps::parse(" , "), IndexedMaps::All);
        let only = IndexedMaps::parse("articles, products,,");
        assert!(only.contains("articles") && only.contains("products"));
        assert!(!only.contains("users"));
        assert!(IndexedMaps::All.contains("anything"));
        assert!(only.is_subset_of(&IndexedMaps::All));
        assert!(!IndexedMaps::All.is_subset_of(&only));
        assert!(IndexedMaps::parse("articles").is_subset_of(&only));
    }

    #[test]
    fn map_folders_are_safe_and_distinct() {
        let root = Path::new("/idx");
        assert_eq!(map_folder(root, "todos"), Path::new("/idx/map-todos"));
        assert_eq!(
            map_folder(root, "../etc"),
            Path::new("/idx/map-%2E%2E%2Fetc")
        );
        assert_ne!(map_folder(root, "a b"), map_folder(root, "a%20b"));
        assert_eq!(map_folder(root, ""), Path::new("/idx/map-"));
    }
}
