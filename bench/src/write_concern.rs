//! Write-concern levels (core.md §5.9) and their order.

use std::fmt;

/// Acknowledgement levels, in increasing order: a level implies every lower one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
#[clap(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WriteConcern {
    /// Nothing is awaited.
    FireAndForget,
    /// Received and validated.
    Memory,
    /// Merged into the in-memory state.
    Applied,
    /// Confirmed by backup owners.
    Replicated,
    /// Written to durable storage.
    Persisted,
}

impl WriteConcern {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            WriteConcern::FireAndForget => "FIRE_AND_FORGET",
            WriteConcern::Memory => "MEMORY",
            WriteConcern::Applied => "APPLIED",
            WriteConcern::Replicated => "REPLICATED",
            WriteConcern::Persisted => "PERSISTED",
        }
    }

    /// Parses the wire spelling; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "FIRE_AND_FORGET" => WriteConcern::FireAndForget,
            "MEMORY" => WriteConcern::Memory,
            "APPLIED" => WriteConcern::Applied,
            "REPLICATED" => WriteConcern::Replicated,
            "PERSISTED" => WriteConcern::Persisted,
            _ => return None,
        })
    }
}

impl fmt::Display for WriteConcern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_ordered_and_round_trip() {
        assert!(WriteConcern::Applied < WriteConcern::Persisted);
        assert!(WriteConcern::Memory < WriteConcern::Applied);
        for level in [
            WriteConcern::FireAndForget,
            WriteConcern::Memory,
            WriteConcern::Applied,
            WriteConcern::Replicated,
            WriteConcern::Persisted,
        ] {
            assert_eq!(WriteConcern::parse(level.as_str()), Some(level));
        }
        assert_eq!(WriteConcern::parse("persisted"), None);
    }
}
