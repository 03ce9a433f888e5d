//! Runs an edge node on a bound listener until `shutdown` resolves, then
//! drains: new connections refused, held polls answered with their cursor,
//! and the process left within the drain timeout.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::auth::{KeyError, Verifier};
use crate::config::{Config, ConfigError, MetricsExporter};
use crate::nats::connection::{self, NatsError};
use crate::nats::elections;
use crate::nats::streams::MappingError;
use crate::node::Node;
use crate::ops::{control, metrics_export, switches};
use crate::transport::{http, serve};

/// Longest pause between looks for idle orgs.
const EVICT_EVERY_MAX: Duration = Duration::from_secs(5);
/// Wait between checks of the partition mapping while NATS cannot answer.
const MAPPING_RETRY: Duration = Duration::from_secs(1);
/// How long probes answered by no stream are retried before the mapping is
/// declared missing (a new replicated stream elects its leader meanwhile).
const NO_STREAM_GRACE: Duration = Duration::from_secs(15);
/// Time granted to flush NATS at exit even when the drain used up its own.
const FINAL_FLUSH: Duration = Duration::from_millis(500);

/// Why a node could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Bad settings.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No token verifier can be built from the JWT settings.
    #[error("invalid configuration: {0}")]
    Key(#[from] KeyError),
    /// The NATS servers' partition mapping disagrees with `HERALD_PARTITIONS`.
    #[error("invalid configuration: {0}")]
    Mapping(#[from] MappingError),
    /// The NATS client could not be set up.
    #[error("nats: {0}")]
    Nats(#[from] NatsError),
}

/// Serves `listener` with `config` until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    config.validate()?;
    let verifier = Verifier::from_config(&config)?;
    let node_id = config.resolved_node_id();
    let (client, losses) = connection::connect(&config, &node_id).await?;
    let node = Node::new(config, node_id, client, losses, verifier);
    let partitions = node.streams.partitions().count();
    tracing::info!(node = %node.node_id, addr = ?listener.local_addr().ok(), stream = %node.config.stream, partitions, "herald-edge starting");
    let metrics_export = export_metrics(&node);

    for heads in node.streams.all() {
        match heads.stream().ensure().await {
            Ok(h) => heads.set(h),
            Err(e) => {
                tracing::warn!(stream = %heads.stream().name(), error = %e, "stream not reachable yet; will keep trying")
            }
        }
    }
    if let Err(e) = node.rooms.store().await {
        tracing::warn!(stream = %node.config.rooms_stream, error = %e, "rooms stream not reachable yet; room requests retry it");
    }
    // A node whose partitions disagree with the servers' mapping would read
    // orgs' events from the wrong streams: it refuses to start, and waits
    // (not ready, not serving) while NATS cannot say.
    let mut shutdown = Box::pin(shutdown);
    let probing_since = tokio::time::Instant::now();
    loop {
        match node.streams.verify_mapping(&node.client).await {
            Ok(()) => break,
            Err(e @ MappingError::Mismatch { .. }) => return Err(e.into()),
            // A stream another node created a moment ago may not answer
            // yet; a missing mapping never will.
            Err(e @ MappingError::NoStream { .. })
                if probing_since.elapsed() >= NO_STREAM_GRACE =>
            {
                return Err(e.into())
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot check the partition mapping yet; retrying")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(MAPPING_RETRY) => {}
            _ = &mut shutdown => return Ok(()),
        }
    }
    for heads in node.streams.all() {
        let heads = Arc::clone(heads);
        let (interval, stop) = (node.config.head_interval, node.draining.clone());
        tokio::spawn(async move { heads.sample(interval, stop).await });
    }
    tokio::spawn(crate::upload::sweep::run(
        Arc::clone(&node.uploads),
        node.publisher.clone(),
        Arc::clone(&node.metrics),
        crate::upload::sweep::period(node.config.upload_expires),
        node.draining.clone(),
    ));
    tokio::spawn(elections::follow(
        node.client.clone(),
        Arc::clone(&node.streams),
        node.draining.clone(),
    ));
    tokio::spawn(control::follow(
        node.client.clone(),
        Arc::clone(&node.connections),
        node.draining.clone(),
    ));
    tokio::spawn(switches::follow(
        Arc::clone(&node.switches),
        node.client.clone(),
        Arc::clone(&node.connections),
        Arc::clone(&node.metrics),
        node.config.head_interval,
        node.draining.clone(),
    ));
    let n = Arc::clone(&node);
    let evict_every =
        (node.config.org_idle_evict / 2).clamp(Duration::from_millis(100), EVICT_EVERY_MAX);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(evict_every) => {}
                _ = n.draining.cancelled() => break,
            }
            let evicted = n.orgs.evict_idle(n.config.org_idle_evict);
            if evicted > 0 {
                tracing::debug!(evicted, "released idle orgs");
            }
        }
    });

    let draining = node.draining.clone();
    let drain_timeout = node.config.drain_timeout;
    let app = http::router(Arc::clone(&node));
    let serving = tokio::spawn(serve::serve(listener, app, Arc::clone(&node)));
    shutdown.await;
    tracing::info!("draining");
    draining.cancel();
    let deadline = tokio::time::Instant::now() + drain_timeout;
    if tokio::time::timeout_at(deadline, serving).await.is_err() {
        tracing::warn!("drain timeout reached; closing remaining connections");
    }
    // Upgraded (WebSocket) and streaming (SSE) connections are not tracked by
    // the HTTP server: wait for them to send their 1012 and go.
    while node.connections.counts() != (0, 0) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node.orgs.shutdown();
    // A flush waits for a server that may be gone: skipped while NATS is
    // away and bounded otherwise, like every wait here, so SIGTERM exits
    // within the drain timeout even without NATS.
    let flush_by = deadline.max(tokio::time::Instant::now() + FINAL_FLUSH);
    if !connection::is_connected(&node.client)
        || tokio::time::timeout_at(flush_by, node.client.flush())
            .await
            .is_err()
    {
        tracing::warn!("NATS not flushed before exit (unreachable)");
    }
    if let Some(provider) = metrics_export {
        // Pushes the last figures; bounded by the exporter's own timeout.
        let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
    }
    tracing::info!("herald-edge stopped");
    Ok(())
}

/// Starts pushing the node's metrics over OTLP when `OTEL_METRICS_EXPORTER`
/// is `otlp`; the provider is kept until the node stops.
fn export_metrics(node: &Arc<Node>) -> Option<opentelemetry_sdk::metrics::SdkMeterProvider> {
    let config = &node.config;
    if config.otel_metrics_exporter != MetricsExporter::Otlp {
        return None;
    }
    let endpoint = config.otlp_endpoint.as_deref()?;
    let n = Arc::clone(node);
    let source: metrics_export::Source = Arc::new(move || n.metrics.samples(&n.gauges()));
    let interval = Duration::from_millis(config.otel_metric_export_interval_ms);
    match metrics_export::start(
        endpoint,
        config.otlp_protocol,
        interval,
        &node.node_id,
        source,
    ) {
        Ok(provider) => {
            tracing::info!(endpoint, ?interval, "metrics export on (OTLP)");
            Some(provider)
        }
        Err(e) => {
            tracing::warn!(endpoint, error = %e, "metrics export off: the OTLP exporter could not be built");
            None
        }
    }
}
