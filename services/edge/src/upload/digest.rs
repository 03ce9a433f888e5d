//! A SHA-256 that can stop after any byte and be resumed elsewhere: the
//! running state of an upload's whole-file digest travels in the headers
//! of its last stored piece, so the node that stores the next piece (any
//! node) continues it without reading the file back.
//!
//! The state is the eight chaining words, the length so far and the bytes
//! of the unfinished 64-byte block; [`RunningSha256::encode`] writes it as
//! base64url (at most 138 characters).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
// sha2 0.10's block function takes generic-array 0.14 blocks, which that
// crate now marks deprecated; there is no other way to call it.
#[allow(deprecated)]
use sha2::digest::generic_array::GenericArray;

/// SHA-256's initial chaining words (FIPS 180-4, 5.3.3).
const H0: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];
const BLOCK: usize = 64;

/// SHA-256 over the bytes so far, resumable from its encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningSha256 {
    state: [u32; 8],
    len: u64,
    pending: Vec<u8>,
}

impl Default for RunningSha256 {
    fn default() -> Self {
        Self {
            state: H0,
            len: 0,
            pending: Vec::with_capacity(BLOCK),
        }
    }
}

#[allow(deprecated)]
fn compress(state: &mut [u32; 8], block: &[u8]) {
    sha2::compress256(state, std::slice::from_ref(GenericArray::from_slice(block)));
}

impl RunningSha256 {
    /// The digest of nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was hashed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Hashes `data` after what came before.
    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if !self.pending.is_empty() {
            let take = (BLOCK - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() < BLOCK {
                return;
            }
            compress(&mut self.state, &self.pending);
            self.pending.clear();
        }
        let mut blocks = data.chunks_exact(BLOCK);
        for block in &mut blocks {
            compress(&mut self.state, block);
        }
        self.pending.extend_from_slice(blocks.remainder());
    }

    /// The digest of every byte hashed.
    pub fn finish(&self) -> [u8; 32] {
        let mut state = self.state;
        let mut tail = self.pending.clone();
        tail.push(0x80);
        while tail.len() % BLOCK != BLOCK - 8 {
            tail.push(0);
        }
        tail.extend_from_slice(&(self.len.wrapping_mul(8)).to_be_bytes());
        for block in tail.chunks_exact(BLOCK) {
            compress(&mut state, block);
        }
        let mut out = [0u8; 32];
        for (word, bytes) in state.iter().zip(out.chunks_exact_mut(4)) {
            bytes.copy_from_slice(&word.to_be_bytes());
        }
        out
    }

    /// The state, for a header.
    pub fn encode(&self) -> String {
        let mut raw = Vec::with_capacity(40 + self.pending.len());
        for word in self.state {
            raw.extend_from_slice(&word.to_be_bytes());
        }
        raw.extend_from_slice(&self.len.to_be_bytes());
        raw.extend_from_slice(&self.pending);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// A state written by [`Self::encode`]; `None` if it is not one.
    pub fn decode(text: &str) -> Option<Self> {
        let raw = URL_SAFE_NO_PAD.decode(text).ok()?;
        if raw.len() < 40 || raw.len() >= 40 + BLOCK {
            return None;
        }
        let mut state = [0u32; 8];
        for (word, bytes) in state.iter_mut().zip(raw[..32].chunks_exact(4)) {
            *word = u32::from_be_bytes(bytes.try_into().ok()?);
        }
        let len = u64::from_be_bytes(raw[32..40].try_into().ok()?);
        let pending = raw[40..].to_vec();
        if len % BLOCK as u64 != pending.len() as u64 {
            return None;
        }
        Some(Self {
            state,
            len,
            pending,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn matches_sha256_for_every_length_around_block_edges() {
        for n in [0, 1, 55, 56, 63, 64, 65, 119, 120, 128, 1000, 4096 + 7] {
            let d = data(n);
            let mut h = RunningSha256::new();
            h.update(&d);
            assert_eq!(h.finish()[..], Sha256::digest(&d)[..], "n = {n}");
        }
    }

    #[test]
    fn resumed_from_its_encoding_at_any_split_gives_the_same_digest() {
        let d = data(3000);
        let want = Sha256::digest(&d);
        for split in [0, 1, 63, 64, 65, 100, 1024, 2999, 3000] {
            let mut a = RunningSha256::new();
            a.update(&d[..split]);
            let mut b = RunningSha256::decode(&a.encode()).expect("decodes");
            assert_eq!(a, b);
            // Uneven pieces after the resume.
            for piece in d[split..].chunks(37) {
                b.update(piece);
            }
            assert_eq!(b.finish()[..], want[..], "split {split}");
            assert_eq!(b.len(), 3000);
        }
    }

    #[test]
    fn rejects_what_is_not_a_state() {
        assert!(RunningSha256::decode("").is_none());
        assert!(RunningSha256::decode("!!!").is_none());
        let mut h = RunningSha256::new();
        h.update(b"abc");
        let mut raw = URL_SAFE_NO_PAD.decode(h.encode()).unwrap();
        raw.pop(); // pending no longer matches the length
        assert!(RunningSha256::decode(&URL_SAFE_NO_PAD.encode(raw)).is_none());
    }
}
