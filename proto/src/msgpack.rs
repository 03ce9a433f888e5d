//! MessagePack decoding with the nesting limit `serde_json` applies to JSON.
//!
//! rmp-serde follows up to 1024 levels of arrays and maps by default, one
//! stack frame chain per level; a frame of a few kilobytes then overflows a
//! 2 MiB tokio worker stack and aborts the whole node. Every MessagePack
//! input Herald parses goes through [`from_slice`] instead.

use serde::Deserialize;

/// Deepest nesting of arrays and maps accepted, the same as `serde_json`'s.
pub const MAX_DEPTH: usize = 128;

/// Decodes `bytes` like `rmp_serde::from_slice`, refusing nesting deeper
/// than [`MAX_DEPTH`] with `depth limit exceeded`.
pub fn from_slice<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, rmp_serde::decode::Error> {
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    de.set_max_depth(MAX_DEPTH);
    T::deserialize(&mut de)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> Vec<u8> {
        let mut bytes = vec![0x91; depth];
        bytes.push(0xc0);
        bytes
    }

    #[test]
    fn accepts_what_json_accepts_and_refuses_deeper() {
        // serde_json accepts 127 arrays around a value and refuses 128.
        let json = |d: usize| format!("{}null{}", "[".repeat(d), "]".repeat(d));
        assert!(serde_json::from_str::<serde_json::Value>(&json(127)).is_ok());
        assert!(serde_json::from_str::<serde_json::Value>(&json(128)).is_err());
        assert!(from_slice::<serde_json::Value>(&nested(127)).is_ok());
        let err = from_slice::<serde_json::Value>(&nested(128)).expect_err("128 levels refused");
        assert!(err.to_string().contains("depth"), "{err}");
    }

    #[test]
    fn deep_nesting_is_refused_on_a_worker_sized_stack() {
        // What an edge node's tokio worker has; rmp-serde's default depth
        // overflowed it in a debug build.
        let frame = nested(1000);
        let refused = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || from_slice::<crate::stream::ClientMessage>(&frame).is_err())
            .expect("spawn")
            .join()
            .expect("no panic");
        assert!(refused);
    }
}
