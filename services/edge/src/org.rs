//! Per-org state on one node: the registry that creates it on a first
//! client, the hub and its feed task, the bounded live queue, the buffer,
//! and decoding of stored and live messages.

pub mod buffer;
pub mod decode;
pub mod hub;
pub mod live;
pub mod registry;
