//! Running the node: open connections and their limits, control across
//! nodes, kill switches, metrics (with the process's own figures), logs and
//! traces.

pub(crate) mod connections;
pub(crate) mod control;
pub(crate) mod metrics;
pub(crate) mod metrics_export;
pub(crate) mod process;
pub(crate) mod switches;
pub mod telemetry;
