//! FNV-1a (32-bit) over UTF-16 code units — the client's hash for Merkle paths,
//! entry hashes and partitions (core.md §6.1).

const FNV_OFFSET: u32 = 0x811C_9DC5;
const FNV_PRIME: u32 = 0x0100_0193;

/// FNV-1a of `s` hashed over its UTF-16 code units, exactly as the TypeScript client does.
pub fn fnv1a(s: &str) -> u32 {
    let mut hasher = Fnv1a::new();
    hasher.write_str(s);
    hasher.finish()
}

/// Incremental FNV-1a over UTF-16 code units, so hashed strings need not be concatenated first.
#[derive(Debug, Clone, Copy)]
pub struct Fnv1a(u32);

impl Default for Fnv1a {
    fn default() -> Self {
        Self::new()
    }
}

impl Fnv1a {
    /// A hasher in its initial state.
    pub fn new() -> Self {
        Fnv1a(FNV_OFFSET)
    }

    /// Feeds the UTF-16 code units of `s`.
    pub fn write_str(&mut self, s: &str) {
        for unit in s.encode_utf16() {
            self.0 ^= u32::from(unit);
            self.0 = self.0.wrapping_mul(FNV_PRIME);
        }
    }

    /// The hash so far.
    pub fn finish(self) -> u32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_upstream_test_vectors() {
        let vectors: &[(&str, u32)] = &[
            ("", 2166136261),
            ("a", 3826002220),
            ("hello", 1335831723),
            ("key1", 927623783),
            ("user-1", 4115888500),
            ("key1:100:0:test", 3988528110),
            ("é", 1812687940),
            ("日本", 1610399396),
            ("😀", 3409036472),
            ("user-1:1700000000000:1:node-1", 1214284741),
        ];
        for (input, expected) in vectors {
            assert_eq!(fnv1a(input), *expected, "fnv1a({input:?})");
        }
    }

    #[test]
    fn incremental_hashing_equals_hashing_the_concatenation() {
        let mut h = Fnv1a::new();
        h.write_str("user-1:");
        h.write_str("1700000000000:1:node-1");
        assert_eq!(h.finish(), fnv1a("user-1:1700000000000:1:node-1"));
    }
}
