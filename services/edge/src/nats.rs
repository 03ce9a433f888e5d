//! The NATS layer: the connection, the event streams in JetStream (one, or
//! one per partition) and their sampled heads. Nothing here knows about orgs' buffers or clients.

pub mod connection;
pub mod head;
pub mod stream;
pub mod streams;
