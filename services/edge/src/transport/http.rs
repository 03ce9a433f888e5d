//! The HTTP surface: routes, health and readiness, metrics, CORS, the
//! cross-site guard on cookie authentication, body limits and the JSON 404.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, head, post};
use axum::{Json, Router};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use tower::ServiceExt;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tracing::Instrument;

use crate::auth::{check_origin, extract_token, Role};
use crate::error::ApiError;
use crate::node::Node;
use crate::ops::telemetry;
use crate::transport::{admin, client_telemetry, poll, publish, rooms, sse, uploads, ws};

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
        .route(ws::STREAM_PATH, get(ws::stream))
        .route("/v2/realtime/sse", get(sse::sse))
        .route("/v2/realtime/update-services", post(admin::update_services))
        .route("/v2/realtime/disconnect", post(admin::disconnect))
        .route(
            "/v2/realtime/switches",
            get(admin::get_switches).put(admin::put_switches),
        )
        .route("/v2/realtime/publish", post(publish::publish))
        .route(client_telemetry::PATH, post(client_telemetry::report))
        .route(
            "/v2/rooms/{room}/messages",
            get(rooms::messages).post(rooms::post),
        )
        .route("/v2/rooms/{room}/presence", get(rooms::presence))
        .route("/v2/rooms/{room}/stats", get(rooms::stats))
        .route(
            "/v2/uploads",
            post(uploads::create).options(uploads::options),
        )
        .route(
            "/v2/uploads/{id}",
            head(uploads::head)
                .patch(uploads::patch)
                .delete(uploads::delete)
                .post(uploads::method_override)
                .options(uploads::options),
        )
        .route("/v2/uploads/{id}/content", get(uploads::content))
        .route("/v2/realtime/metrics", get(metrics_json))
        .route("/metrics", get(metrics_prometheus))
        .fallback(|| async { ApiError::NotFound })
        .layer(middleware::from_fn_with_state(
            Arc::clone(&node),
            cookie_origin_guard,
        ))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&node),
            count_responses,
        ));
    if node.config.otlp_endpoint.is_some() {
        app = app.layer(middleware::from_fn(trace_requests));
    }
    if !node.config.cors_origins.is_empty() {
        // The routes without the CORS layer, for the OPTIONS requests that
        // are not preflights (below).
        let routes = app.clone().with_state(Arc::clone(&node));
        let origins: Vec<HeaderValue> = node
            .config
            .cors_origins
            .iter()
            .filter_map(|o| o.parse().ok())
            .collect();
        app = app.layer(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(origins))
                .allow_methods([
                    Method::GET,
                    Method::POST,
                    Method::PUT,
                    Method::HEAD,
                    Method::PATCH,
                    Method::DELETE,
                ])
                .allow_headers(
                    [header::AUTHORIZATION, header::CONTENT_TYPE]
                        .into_iter()
                        .chain(uploads::CORS_REQUEST_HEADERS.map(HeaderName::from_static))
                        .collect::<Vec<_>>(),
                )
                .allow_credentials(true)
                .expose_headers(
                    [header::RETRY_AFTER]
                        .into_iter()
                        .chain(uploads::CORS_EXPOSED_HEADERS.map(HeaderName::from_static))
                        .collect::<Vec<_>>(),
                ),
        );
        // tower-http's CORS layer answers every OPTIONS itself, as a
        // preflight; tus discovery (`OPTIONS /v2/uploads`, protocol section
        // 13) would get no `Tus-*` header. One without
        // `Access-Control-Request-Method` is no preflight: it goes to the
        // routes.
        app = app.layer(middleware::from_fn(move |request: Request, next: Next| {
            let routes = routes.clone();
            async move {
                if request.method() == Method::OPTIONS
                    && !request
                        .headers()
                        .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
                {
                    let answer = routes.oneshot(request).await;
                    return answer.unwrap_or_else(|never| match never {});
                }
                next.run(request).await
            }
        }));
    }
    app.with_state(node)
}

/// Runs every request in an HTTP server span (exported only: the layer is
/// added when trace export is on).
async fn trace_requests(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let traceparent = request
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok());
    let span = telemetry::http_span(
        request.method().as_str(),
        &route,
        request.uri().path(),
        traceparent,
    );
    let response = next.run(request).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    response
}

/// Counts every answer by status class (`herald_http_responses_total`): the
/// error rate operators alert on.
async fn count_responses(State(node): State<Arc<Node>>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    node.metrics.count_response(response.status().as_u16());
    response
}

/// Applies [`check_origin`] to every request before its handler (and
/// before its body is read). The stream endpoint checks it itself, so that a
/// refused browser sees close 4003 rather than a failed upgrade.
async fn cookie_origin_guard(
    State(node): State<Arc<Node>>,
    request: Request,
    next: Next,
) -> Response {
    if request.uri().path() != ws::STREAM_PATH {
        if let Err(e) = check_origin(
            &node.config.cors_origins,
            request.headers(),
            request.method(),
            false,
        ) {
            return e.into_response();
        }
    }
    next.run(request).await
}

/// Refuses a body not declared as JSON: an HTML form can POST
/// `text/plain` or form-encoded bodies across sites without a preflight, so
/// JSON endpoints take only `application/json` (415 otherwise).
pub fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let declared = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim)
        .unwrap_or("");
    if declared.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(
            "the body must be sent with Content-Type: application/json".into(),
        ))
    }
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

/// What a caller of the metrics endpoints may see.
enum MetricsView {
    /// Every figure of the node (cluster admin, or `HERALD_METRICS_PUBLIC`).
    Node,
    /// Only what the node counts for this org (an org's admin).
    Org(String),
}

fn authorize_metrics(node: &Node, headers: &HeaderMap) -> Result<MetricsView, ApiError> {
    if node.config.metrics_public {
        return Ok(MetricsView::Node);
    }
    let principal = node.verifier.verify(extract_token(headers, None)?)?;
    if principal.is_cluster_admin() {
        Ok(MetricsView::Node)
    } else if principal.role == Some(Role::Admin) {
        Ok(MetricsView::Org(principal.org))
    } else {
        Err(ApiError::Forbidden("metrics need the admin role".into()))
    }
}

async fn metrics_json(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(match authorize_metrics(&node, &headers)? {
        MetricsView::Node => node.metrics.to_json(&node.node_id, &node.gauges()),
        MetricsView::Org(org) => org_metrics(&node, &org),
    }))
}

/// An org admin's view: the org's own connections, held polls and buffered
/// events on this node; nothing about other orgs or the node as a whole.
fn org_metrics(node: &Node, org: &str) -> serde_json::Value {
    let conns = node.connections.org_counts(org);
    let stats = node.orgs.org_stats(org);
    serde_json::json!({
        "nodeId": node.node_id,
        "orgId": org,
        "connections": {"websocket": conns.websocket, "sse": conns.sse, "longpoll": conns.longpoll},
        "waiters": stats.waiters,
        "buffers": {"events": stats.buffered},
        "active": stats.active > 0,
    })
}

async fn metrics_prometheus(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let MetricsView::Org(_) = authorize_metrics(&node, &headers)? {
        return Err(ApiError::Forbidden(
            "node-wide metrics need an admin token with org '*'; an org admin reads /v2/realtime/metrics"
                .into(),
        ));
    }
    let text = node.metrics.to_prometheus(&node.node_id, &node.gauges());
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}
