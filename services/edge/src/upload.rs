//! Uploads on one node (contract section 7): the pure rules of a tus
//! upload and the expiry sweep. The bytes and the record of every upload
//! live in NATS ([`crate::nats::uploads`]), so any node continues any
//! upload; this layer knows nothing of HTTP.
//!
//! - [`digest`]: a SHA-256 whose state can be written down after each
//!   piece and resumed by another node.
//! - [`metadata`]: the `Upload-Metadata` header and its rules.
//! - [`sniff`]: the allowed types and the check of a file's first bytes.
//! - [`completion`]: the object's metadata, the `upload.completed`
//!   event, the record removed: the end of every upload.
//! - [`sweep`]: removes expired unfinished uploads, on every node.

pub mod completion;
pub mod digest;
pub mod metadata;
pub mod sniff;
pub mod sweep;
