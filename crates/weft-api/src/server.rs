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
//! | GET | `/v1/derived/{plural}?namespace=` | projects, networks, interfaces, services, policies, statuses |
//! | GET | `/v1/inputs/{plural}?namespace=` | pods, namespaces, nodes, virtualnetworks … as manifests |

use std::future::Future;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use weft_model::{DerivedKind, InputKind};

use crate::controller::Controller;
use crate::types::{ApplyRequest, ErrorBody};

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

/// The API's routes over a controller.
pub fn router(controller: Arc<Controller>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/apply", post(apply))
        .route("/v1/delete", post(delete))
        .route("/v1/status", get(status))
        .route("/v1/consistency", get(consistency))
        .route("/v1/config", get(config))
        .route("/v1/derived/{plural}", get(derived))
        .route("/v1/inputs/{plural}", get(inputs))
        .layer(axum::extract::DefaultBodyLimit::max(256 * 1024 * 1024))
        .with_state(controller)
}

/// Serves the API on `listener` until `shutdown` completes.
pub async fn serve(
    controller: Arc<Controller>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(controller))
        .with_graceful_shutdown(shutdown)
        .await
}
