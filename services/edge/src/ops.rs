//! Running the node: open connections and their limits, control across
//! nodes, kill switches, metrics, logs and traces.

pub mod connections;
pub mod control;
pub mod metrics;
pub mod switches;
pub mod telemetry;
