//! The NATS layer: the connection, the event streams in JetStream (one, or
//! one per partition), their sampled heads and their leader elections.
//! Nothing here knows about orgs' buffers or clients.

pub mod connection;
pub mod elections;
pub mod head;
pub mod rooms;
pub mod stream;
pub mod streams;
pub mod uploads;
