//! What a client receives: its cursor over the org's events and the filter
//! of what it may see, shared by every transport.

pub mod filter;
pub mod reader;
