//! MessagePack decoding with the same nesting limit as JSON.
//!
//! rmp-serde allows 1024 levels by default; serde_json stops at 128. Input
//! from publishers and clients gets the JSON limit in both encodings, so a
//! deeply nested MessagePack value is an error rather than deep recursion.

use serde::de::DeserializeOwned;

/// Nesting allowed in decoded input (serde_json's recursion limit).
pub const MAX_DEPTH: usize = 128;

/// Decodes `bytes` with at most [`MAX_DEPTH`] levels of nesting.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, rmp_serde::decode::Error> {
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    de.set_max_depth(MAX_DEPTH);
    T::deserialize(&mut de)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> Vec<u8> {
        // `depth` one-element arrays around a 0.
        let mut b = vec![0x91; depth];
        b.push(0x00);
        b
    }

    #[test]
    fn nesting_is_limited_like_json() {
        assert!(from_slice::<serde_json::Value>(&nested(100)).is_ok());
        assert!(from_slice::<serde_json::Value>(&nested(200)).is_err());
        assert!(serde_json::from_str::<serde_json::Value>(&"[".repeat(200)).is_err());
    }
}
