//! The HTTP surface: routes, health and readiness, metrics, CORS, body
//! limits and the JSON 404.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::auth::{extract_token, Role};
use crate::error::ApiError;
use crate::node::Node;
use crate::{control, poll, publish, sse, ws};

/// Builds the node's router.
pub fn router(node: Arc<Node>) -> Router {
    let body_limit = node.config.max_event_bytes + 64 * 1024;
    let mut app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/realtime/poll", get(poll::poll))
        .route(
            "/v1/{service}/realtime/subscribe",
            get(poll::subscribe_alias),
        )
        .route("/v2/realtime/stream", get(ws::stream))
        .route("/v2/realtime/sse", get(sse::sse))
        .route(
            "/v2/realtime/update-services",
            post(control::update_services),
        )
        .route("/v2/realtime/disconnect", post(control::disconnect))
        .route(
            "/v2/realtime/switches",
            get(control::get_switches).put(control::put_switches),
        )
        .route("/v2/realtime/publish", post(publish::publish))
        .route("/v2/realtime/metrics", get(metrics_json))
        .route("/metrics", get(metrics_prometheus))
        .fallback(|| async { ApiError::NotFound })
        .layer(DefaultBodyLimit::max(body_limit));
    if !node.config.cors_origins.is_empty() {
        let origins: Vec<HeaderValue> = node
            .config
            .cors_origins
            .iter()
            .filter_map(|o| o.parse().ok())
            .collect();
        app = app.layer(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(origins))
                .allow_methods([Method::GET, Method::POST, Method::PUT])
                .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
                .allow_credentials(true)
                .expose_headers([header::RETRY_AFTER]),
        );
    }
    app.with_state(node)
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(node): State<Arc<Node>>) -> Response {
    if node.is_ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        ApiError::Unavailable("not connected to NATS or the stream is unreachable".into())
            .into_response()
    }
}

fn authorize_metrics(node: &Node, headers: &HeaderMap) -> Result<(), ApiError> {
    if node.config.metrics_public {
        return Ok(());
    }
    let principal = node.verifier.verify(extract_token(headers, None)?)?;
    if principal.has_role(Role::Admin) {
        Ok(())
    } else {
        Err(ApiError::Forbidden("metrics need the admin role".into()))
    }
}

async fn metrics_json(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorize_metrics(&node, &headers)?;
    Ok(Json(node.metrics.to_json(&node.node_id, node.gauges())))
}

async fn metrics_prometheus(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize_metrics(&node, &headers)?;
    let text = node.metrics.to_prometheus(&node.node_id, node.gauges());
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}
