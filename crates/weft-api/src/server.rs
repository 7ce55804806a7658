//! HTTP/JSON API of the controller (axum). Reads are served from memory, writes go
//! through [`Controller::apply`], which stores them durably before answering.
//!
//! | method | path | body / answer |
//! |---|---|---|
//! | GET | `/healthz` | `ok` |
//! | POST | `/v1/apply`, `/v1/delete` | [`ApplyRequest`] → [`ApplyReport`](crate::types::ApplyReport) |
//! | GET | `/v1/status` | [`ControllerStatus`](crate::types::ControllerStatus) |
//! | GET | `/v1/consistency` | [`ConsistencyReport`](crate::types::ConsistencyReport) |
//! | GET | `/v1/config` | the cluster settings in force |
//! | GET | `/v1/derived/{plural}?namespace=` | projects, networks, interfaces, services, floatingips, policies, statuses |
//! | GET | `/v1/inputs/{plural}?namespace=` | pods, namespaces, nodes, virtualnetworks … as manifests |
//! | GET | `/v1/nodes/{node}/state` | the node's [`NodeState`] |
//! | GET | `/v1/nodes/{node}/watch?after=REV` | NDJSON stream of [`NodeWatchLine`]s (agents) |
//! | GET | `/v1/routes/{node}` | the node's tables as text ([`weft_routing::render_routes`]) |
//! | GET | `/v1/bgp/peers` | [`BgpPeersReport`](crate::bgp::BgpPeersReport): the speaker and its peers |
//! | GET | `/v1/bgp/routes?network=` | [`NetworkRoutes`](crate::bgp::NetworkRoutes): a network's local and imported routes |
//!
//! The node watch is how agents get their state (data flow: commit → revision on
//! [`Controller::subscribe_commits`] → recompute the node's state → send it if its
//! content changed). It is plain HTTP/1.1 with a chunked `application/x-ndjson` body,
//! served on TCP and, for agents in other network namespaces, on a Unix socket
//! ([`serve_unix`]).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tokio::sync::watch;
use weft_model::node::NodeState;
use weft_model::{DerivedKind, InputKind};

use crate::controller::Controller;
use crate::types::{ApplyRequest, ErrorBody, NodeWatchLine};

/// Interval of `{"heartbeat":REV}` lines on an idle node watch.
pub const WATCH_HEARTBEAT: Duration = Duration::from_secs(10);

#[derive(Debug, Deserialize)]
struct NamespaceQuery {
    namespace: Option<String>,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(ErrorBody {
            error: message.into(),
        }),
    )
        .into_response()
}

async fn apply(State(c): State<Arc<Controller>>, Json(req): Json<ApplyRequest>) -> Response {
    match c.apply(req, false).await {
        Ok(report) => Json(report).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn delete(State(c): State<Arc<Controller>>, Json(req): Json<ApplyRequest>) -> Response {
    match c.apply(req, true).await {
        Ok(report) => Json(report).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn status(State(c): State<Arc<Controller>>) -> Response {
    Json(c.status().await).into_response()
}

async fn consistency(State(c): State<Arc<Controller>>) -> Response {
    match c.consistency().await {
        Ok(r) => Json(r).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn config(State(c): State<Arc<Controller>>) -> Response {
    Json(c.config().await).into_response()
}

async fn derived(
    State(c): State<Arc<Controller>>,
    Path(plural): Path<String>,
    Query(q): Query<NamespaceQuery>,
) -> Response {
    let Some(kind) = DerivedKind::from_plural(&plural) else {
        let names: Vec<&str> = DerivedKind::ALL.iter().map(|k| k.plural()).collect();
        return error(
            StatusCode::NOT_FOUND,
            format!("unknown kind {plural:?}; expected one of {}", names.join(", ")),
        );
    };
    Json(c.derived(kind, q.namespace.as_deref()).await).into_response()
}

async fn inputs(
    State(c): State<Arc<Controller>>,
    Path(plural): Path<String>,
    Query(q): Query<NamespaceQuery>,
) -> Response {
    let Some(kind) = InputKind::from_plural(&plural) else {
        let names: Vec<&str> = InputKind::ALL.iter().map(|k| k.plural()).collect();
        return error(
            StatusCode::NOT_FOUND,
            format!("unknown kind {plural:?}; expected one of {}", names.join(", ")),
        );
    };
    Json(c.inputs(kind, q.namespace.as_deref()).await).into_response()
}

async fn node_state(State(c): State<Arc<Controller>>, Path(node): Path<String>) -> Response {
    Json(c.node_state(&node).await).into_response()
}

async fn node_routes(State(c): State<Arc<Controller>>, Path(node): Path<String>) -> Response {
    let text = weft_routing::render_routes(&c.node_state(&node).await);
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}

#[derive(Debug, Deserialize)]
struct WatchQuery {
    after: Option<u64>,
}

/// State of one node watch stream.
struct NodeWatch {
    controller: Arc<Controller>,
    node: String,
    commits: watch::Receiver<u64>,
    closing: watch::Receiver<bool>,
    /// `Some(after)` until the first state has been considered.
    after: Option<u64>,
    /// Content of the last state sent (or that the client already had), revision zeroed.
    last: Option<NodeState>,
    heartbeat: tokio::time::Interval,
    /// Marks the node's agent connected while this stream lives (`weft status`).
    _agent: crate::controller::AgentWatchGuard,
}

fn without_revision(state: &NodeState) -> NodeState {
    NodeState {
        revision: 0,
        ..state.clone()
    }
}

fn ndjson(line: &NodeWatchLine) -> Result<String, Infallible> {
    let mut text = serde_json::to_string(line).unwrap_or_else(|e| {
        // Cannot happen for these types; keep the stream well-formed if it does.
        tracing::error!(error = %e, "could not encode a node watch line");
        String::from("{\"heartbeat\":0}")
    });
    text.push('\n');
    Ok(text)
}

impl NodeWatch {
    /// The next line to send, or `None` when the stream must end (server shutting down).
    async fn next_line(&mut self) -> Option<String> {
        if let Some(after) = self.after.take() {
            let state = self.controller.node_state(&self.node).await;
            self.last = Some(without_revision(&state));
            // A revision below `after` means the client saw another store's history
            // (e.g. a controller restarted on a fresh store): resend as well.
            // Routes imported over BGP change without a new revision: a client that
            // reconnects with the same revision may have missed them, so resend.
            let imported = state.networks.iter().any(|n| {
                n.routes
                    .iter()
                    .any(|r| matches!(r.next_hop, weft_model::node::NextHop::External { .. }))
            });
            if after == 0 || state.revision != after || imported {
                return ndjson(&NodeWatchLine::State(state)).ok();
            }
        }
        loop {
            tokio::select! {
                biased;
                () = async {
                    // Closing, or the controller is gone: either way the stream ends.
                    let _ = self.closing.wait_for(|closing| *closing).await;
                } => return None,
                changed = self.commits.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                    self.commits.borrow_and_update();
                    let state = self.controller.node_state(&self.node).await;
                    let content = without_revision(&state);
                    if self.last.as_ref() != Some(&content) {
                        self.last = Some(content);
                        return ndjson(&NodeWatchLine::State(state)).ok();
                    }
                }
                _ = self.heartbeat.tick() => {
                    let revision = *self.commits.borrow();
                    return ndjson(&NodeWatchLine::Heartbeat { heartbeat: revision }).ok();
                }
            }
        }
    }
}

fn node_watch(controller: Arc<Controller>, node: String, after: u64, heartbeat: Duration) -> Response {
    let mut commits = controller.subscribe_commits();
    // Changes from here on wake the stream; the first state is computed after this.
    commits.borrow_and_update();
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let watch = NodeWatch {
        _agent: controller.agent_watch_started(&node),
        closing: controller.subscribe_closing(),
        controller,
        node,
        commits,
        after: Some(after),
        last: None,
        heartbeat: ticker,
    };
    let lines = futures::stream::unfold(watch, |mut w| async move {
        let line = w.next_line().await?;
        Some((Ok::<_, Infallible>(line), w))
    });
    (
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(lines),
    )
        .into_response()
}

async fn bgp_peers(State(c): State<Arc<Controller>>) -> Response {
    Json(crate::bgp::peers_report(&c).await).into_response()
}

#[derive(Debug, Deserialize)]
struct NetworkQuery {
    network: String,
}

async fn bgp_routes(State(c): State<Arc<Controller>>, Query(q): Query<NetworkQuery>) -> Response {
    match crate::bgp::network_routes(&c, &q.network).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => error(StatusCode::NOT_FOUND, e),
    }
}

async fn explain(
    State(c): State<Arc<Controller>>,
    Query(req): Query<crate::explain::ExplainRequest>,
) -> Response {
    match crate::explain::explain(&c, &req).await {
        Ok(e) => Json(e).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

/// The API's routes over a controller.
pub fn router(controller: Arc<Controller>) -> Router {
    router_with_heartbeat(controller, WATCH_HEARTBEAT)
}

/// [`router`] with another node-watch heartbeat interval (tests use a short one).
pub fn router_with_heartbeat(controller: Arc<Controller>, heartbeat: Duration) -> Router {
    let heartbeat = heartbeat.max(Duration::from_millis(10));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/apply", post(apply))
        .route("/v1/delete", post(delete))
        .route("/v1/status", get(status))
        .route("/v1/explain", get(explain))
        .route("/v1/consistency", get(consistency))
        .route("/v1/config", get(config))
        .route("/v1/derived/{plural}", get(derived))
        .route("/v1/inputs/{plural}", get(inputs))
        .route("/v1/nodes/{node}/state", get(node_state))
        .route(
            "/v1/nodes/{node}/watch",
            get(
                move |State(c): State<Arc<Controller>>,
                      Path(node): Path<String>,
                      Query(q): Query<WatchQuery>| async move {
                    node_watch(c, node, q.after.unwrap_or(0), heartbeat)
                },
            ),
        )
        .route("/v1/routes/{node}", get(node_routes))
        .route("/v1/bgp/peers", get(bgp_peers))
        .route("/v1/bgp/routes", get(bgp_routes))
        .layer(axum::extract::DefaultBodyLimit::max(256 * 1024 * 1024))
        .with_state(controller)
}

/// `shutdown`, then ending the node watch streams so graceful shutdown can finish.
fn closing_streams(
    controller: &Arc<Controller>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> impl Future<Output = ()> + Send + 'static {
    let controller = controller.clone();
    async move {
        shutdown.await;
        controller.close_streams();
    }
}

/// Serves the API on `listener` until `shutdown` completes.
pub async fn serve(
    controller: Arc<Controller>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with_auth(controller, listener, None, shutdown).await
}

/// Serves the API on a Unix socket until `shutdown` completes: the way agents in other
/// network namespaces reach a controller running in the host's (Unix sockets are
/// file-system objects and cross network namespaces).
pub async fn serve_unix(
    controller: Arc<Controller>,
    listener: tokio::net::UnixListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_unix_with_auth(controller, listener, None, shutdown).await
}

/// [`router`] guarded by [`crate::auth::require_token`] when `token` is `Some` (writes and
/// node-state reads need `Authorization: Bearer TOKEN`); plain [`router`] otherwise.
pub fn router_with_auth(controller: Arc<Controller>, token: Option<Arc<str>>) -> Router {
    let router = router(controller);
    match token {
        Some(token) => router.layer(axum::middleware::from_fn_with_state(
            token,
            crate::auth::require_token,
        )),
        None => router,
    }
}

/// [`serve`] with [`router_with_auth`].
pub async fn serve_with_auth(
    controller: Arc<Controller>,
    listener: tokio::net::TcpListener,
    token: Option<Arc<str>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let shutdown = closing_streams(&controller, shutdown);
    axum::serve(listener, router_with_auth(controller, token))
        .with_graceful_shutdown(shutdown)
        .await
}

/// [`serve_unix`] with [`router_with_auth`].
pub async fn serve_unix_with_auth(
    controller: Arc<Controller>,
    listener: tokio::net::UnixListener,
    token: Option<Arc<str>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let shutdown = closing_streams(&controller, shutdown);
    axum::serve(listener, router_with_auth(controller, token))
        .with_graceful_shutdown(shutdown)
        .await
}
