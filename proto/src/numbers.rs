//! Lenient number decoding: the TypeScript client sends integers above 2^32 (epoch
//! millis) as float64, so every integer field must accept a whole-valued float too.

use serde::de::{self, Deserializer, Visitor};
use std::fmt;

struct U64Visitor;

impl<'de> Visitor<'de> for U64Visitor {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a non-negative integer (integer or whole-valued float)")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::custom(format!("negative integer {v}")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
        // 2^64 itself is not representable as u64.
        if v.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&v) {
            Ok(v as u64)
        } else {
            Err(E::custom(format!(
                "expected a whole non-negative number, got {v}"
            )))
        }
    }

    fn visit_f32<E: de::Error>(self, v: f32) -> Result<u64, E> {
        self.visit_f64(f64::from(v))
    }
}

/// Deserializes a `u64` from any MsgPack integer or whole-valued float.
pub fn u64_flex<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(U64Visitor)
}

/// Like [`u64_flex`], for an optional field (nil and absent both give `None`).
pub fn opt_u64_flex<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    struct OptVisitor;
    impl<'de> Visitor<'de> for OptVisitor {
        type Value = Option<u64>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an optional non-negative integer")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            u64_flex(d).map(Some)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            U64Visitor.visit_u64(v).map(Some)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            U64Visitor.visit_i64(v).map(Some)
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            U64Visitor.visit_f64(v).map(Some)
        }
        fn visit_f32<E: de::Error>(self, v: f32) -> Result<Self::Value, E> {
            U64Visitor.visit_f64(f64::from(v)).map(Some)
        }
    }
    d.deserialize_any(OptVisitor)
}

/// Deserializes a `u32` (e.g. a Merkle hash) from any integer or whole-valued float.
pub fn u32_flex<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = u64_flex(d)?;
    u32::try_from(v).map_err(|_| de::Error::custom(format!("{v} does not fit in 32 bits")))
}

/// Optional `u32`.
pub fn opt_u32_flex<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    match opt_u64_flex(d)? {
        None => Ok(None),
        Some(v) => u32::try_from(v)
            .map(Some)
            .map_err(|_| de::Error::custom(format!("{v} does not fit in 32 bits"))),
    }
}

/// A `map<str, u32>` whose values may arrive as floats.
pub fn hash_map_flex<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<std::collections::BTreeMap<String, u32>, D::Error> {
    #[derive(serde::Deserialize)]
    struct Flex(#[serde(deserialize_with = "u32_flex")] u32);
    let m: std::collections::BTreeMap<String, Flex> = serde::Deserialize::deserialize(d)?;
    Ok(m.into_iter().map(|(k, v)| (k, v.0)).collect())
}

/// Distinguishes an explicit nil (`Some(None)`) from an absent key (`None`, via `default`).
pub fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

use serde::Deserialize;

/// Default for absent `any` fields: MsgPack nil.
pub fn nil() -> rmpv::Value {
    rmpv::Value::Nil
}
