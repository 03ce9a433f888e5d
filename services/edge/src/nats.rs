//! The NATS layer: the connection, the event stream in JetStream and the
//! sampled stream head. Nothing here knows about orgs' buffers or clients.

pub mod connection;
pub mod head;
pub mod stream;
