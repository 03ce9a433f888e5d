//! Running the node: open connections and their limits, control across
//! nodes, kill switches, metrics, logs and traces.

pub(crate) mod connections;
pub(crate) mod control;
pub(crate) mod metrics;
pub(crate) mod switches;
pub mod telemetry;
