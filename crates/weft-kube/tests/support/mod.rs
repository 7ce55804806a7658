//! A fake Kubernetes API server for tests: just enough of the list/watch protocol, with
//! real Kubernetes JSON, for kube-rs' watcher to run against it unmodified.
//!
//! What it speaks:
//! - `GET /api/v1/{plural}` and `GET /apis/{group}/{version}/{plural}` (all namespaces):
//!   a `…List` with `metadata.resourceVersion` and `items`. Like the real server, items
//!   of built-in kinds carry no `apiVersion`/`kind`; custom resources' items do.
//! - the same with `?watch=true&resourceVersion=N`: a chunked stream of
//!   newline-delimited watch events. Events newer than `N` are replayed from the history
//!   first (so nothing is lost between a list and its watch), then live ones follow. A
//!   watch from a resourceVersion older than the last compaction gets an `ERROR` event
//!   with a `410 Expired` `Status`, exactly as etcd-backed API servers answer.
//! - 404 with a `NotFound` `Status` for collections not served (CRDs not installed) and
//!   for any unknown path (logged, to discover what kube-rs asks for).
//! - `PATCH /api/v1/namespaces/{ns}/services/{name}/status` and
//!   `PATCH /api/v1/namespaces/{ns}/pods/{name}` with a JSON merge patch: recorded
//!   ([`FakeApiServer::patches`]), applied to the stored object (a new resourceVersion,
//!   MODIFIED to the watches, the object in the answer), 404 when the object does not
//!   exist, or the status set with [`FakeApiServer::fail_patches`].
//!
//! The test drives it: [`FakeApiServer::apply`], [`FakeApiServer::delete`],
//! [`FakeApiServer::bookmark`], [`FakeApiServer::expire`], [`FakeApiServer::outage`], …
//! Every mutation bumps one global resourceVersion, as etcd does.

#![allow(dead_code)] // each test binary uses a different part of it

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::broadcast;

/// How long any wait in a test may take before the test fails instead of hanging.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// One request the server received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The URL path.
    pub path: String,
    /// The query parameters.
    pub query: HashMap<String, String>,
}

impl Recorded {
    /// Whether this was a watch (not a list).
    pub fn is_watch(&self) -> bool {
        self.query.get("watch").is_some_and(|v| v == "true" || v == "1")
    }

    /// A query parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }
}

/// One PATCH the server received.
#[derive(Debug, Clone)]
pub struct RecordedPatch {
    /// The URL path.
    pub path: String,
    /// The `Content-Type` (`application/merge-patch+json` for a merge patch).
    pub content_type: String,
    /// The patch document.
    pub body: Value,
}

#[derive(Clone, Debug)]
enum WatchMsg {
    /// One newline-terminated watch event.
    Line(String),
    /// End the watch response (the server closing the stream).
    Close,
}

struct Collection {
    api_version: &'static str,
    kind: &'static str,
    /// Items in lists carry apiVersion/kind (custom resources do, built-ins do not).
    typed_items: bool,
    served: bool,
    objects: BTreeMap<String, Value>,
    /// Watch events since the last compaction: (resourceVersion, line).
    history: Vec<(u64, String)>,
    /// Watches from a resourceVersion below this get 410 Gone.
    compacted: u64,
    live: broadcast::Sender<WatchMsg>,
}

struct Inner {
    resource_version: u64,
    collections: HashMap<&'static str, Collection>,
    requests: Vec<Recorded>,
    patches: Vec<RecordedPatch>,
    /// PATCH paths answered with this HTTP status instead of being applied.
    patch_failures: HashMap<String, u16>,
}

/// The fake API server; stops when dropped.
pub struct FakeApiServer {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `namespace/name` or `name`: the key of an object in its collection.
fn object_key(object: &Value) -> String {
    let meta = &object["metadata"];
    let name = meta["name"].as_str().unwrap_or_default();
    match meta["namespace"].as_str() {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

fn status_json(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code
    })
}

fn json_response(code: StatusCode, body: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

impl FakeApiServer {
    /// Starts a server on 127.0.0.1 (random port) serving Kubernetes' own kinds; the
    /// NAD and weft's custom resources answer 404 until [`serve`](Self::serve)d.
    pub async fn start() -> Self {
        let mut collections = HashMap::new();
        let mut add = |plural: &'static str, api_version: &'static str, kind: &'static str, custom: bool| {
            let (live, _) = broadcast::channel(256);
            collections.insert(
                plural,
                Collection {
                    api_version,
                    kind,
                    typed_items: custom,
                    served: !custom,
                    objects: BTreeMap::new(),
                    history: Vec::new(),
                    compacted: 0,
                    live,
                },
            );
        };
        add("namespaces", "v1", "Namespace", false);
        add("nodes", "v1", "Node", false);
        add("pods", "v1", "Pod", false);
        add("services", "v1", "Service", false);
        add("endpointslices", "discovery.k8s.io/v1", "EndpointSlice", false);
        add("networkpolicies", "networking.k8s.io/v1", "NetworkPolicy", false);
        add(
            "network-attachment-definitions",
            "k8s.cni.cncf.io/v1",
            "NetworkAttachmentDefinition",
            true,
        );
        add("clusterconfigs", "weft.dev/v1alpha1", "ClusterConfig", true);
        add("virtualnetworks", "weft.dev/v1alpha1", "VirtualNetwork", true);
        add("floatingippools", "weft.dev/v1alpha1", "FloatingIpPool", true);
        let inner = Arc::new(Mutex::new(Inner {
            resource_version: 100,
            collections,
            requests: Vec::new(),
            patches: Vec::new(),
            patch_failures: HashMap::new(),
        }));

        let app = Router::new().fallback(handle).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("fake API server");
        });
        Self { addr, inner, task }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube client pointed at this server.
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url().parse().expect("server URL"));
        kube::Client::try_from(config).expect("kube client")
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes a custom resource's collection answer (as if its CRD were installed).
    pub fn serve(&self, plural: &str) {
        let mut inner = self.lock();
        inner.collection(plural).served = true;
    }

    /// Creates or replaces an object, as `kubectl apply` would: the server stamps
    /// `resourceVersion` (and `uid`, `creationTimestamp` when new) and sends ADDED or
    /// MODIFIED to the watches. Returns the new resourceVersion.
    pub fn apply(&self, plural: &str, object: Value) -> u64 {
        let mut inner = self.lock();
        let rv = inner.bump();
        let collection = inner.collection(plural);
        let mut object = object;
        if let Some(map) = object.as_object_mut() {
            map.insert("apiVersion".into(), collection.api_version.into());
            map.insert("kind".into(), collection.kind.into());
        }
        let key = object_key(&object);
        let meta = &mut object["metadata"];
        meta["resourceVersion"] = rv.to_string().into();
        if meta.get("uid").is_none() {
            meta["uid"] = format!("00000000-0000-0000-0000-{rv:012}").into();
        }
        if meta.get("creationTimestamp").is_none() {
            meta["creationTimestamp"] = "2025-01-01T00:00:00Z".into();
        }
        let kind = if collection.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        collection.objects.insert(key, object.clone());
        collection.emit(rv, &json!({"type": kind, "object": object}));
        rv
    }

    /// Deletes `key` (`namespace/name` or `name`) and sends DELETED with the object's
    /// last state, at a new resourceVersion.
    pub fn delete(&self, plural: &str, key: &str) -> u64 {
        let mut inner = self.lock();
        let rv = inner.bump();
        let collection = inner.collection(plural);
        let mut object = collection
            .objects
            .remove(key)
            .unwrap_or_else(|| panic!("no {plural} {key} to delete"));
        object["metadata"]["resourceVersion"] = rv.to_string().into();
        collection.emit(rv, &json!({"type": "DELETED", "object": object}));
        rv
    }

    /// Sends a BOOKMARK at a new resourceVersion to the open watches of `plural`.
    /// Returns that resourceVersion.
    pub fn bookmark(&self, plural: &str) -> u64 {
        let mut inner = self.lock();
        let rv = inner.bump();
        let collection = inner.collection(plural);
        let event = json!({
            "type": "BOOKMARK",
            "object": {"kind": collection.kind, "apiVersion": collection.api_version,
                       "metadata": {"resourceVersion": rv.to_string()}}
        });
        // Bookmarks are not part of the replayable history.
        let _ = collection.live.send(WatchMsg::Line(format!("{event}\n")));
        rv
    }

    /// Ends the open watch responses of `plural` (as the server does at `timeoutSeconds`).
    pub fn close_watches(&self, plural: &str) {
        let mut inner = self.lock();
        let _ = inner.collection(plural).live.send(WatchMsg::Close);
    }

    /// Compacts `plural`'s history and sends an `ERROR` event with a `410 Expired`
    /// Status on its open watches, then closes them: the watcher must relist.
    pub fn expire(&self, plural: &str) {
        let mut inner = self.lock();
        let rv = inner.resource_version;
        let collection = inner.collection(plural);
        collection.compact(rv);
        let gone = json!({"type": "ERROR", "object": status_json(410, "Expired", "too old resource version: 1 (100)")});
        let _ = collection.live.send(WatchMsg::Line(format!("{gone}\n")));
        let _ = collection.live.send(WatchMsg::Close);
    }

    /// Changes `plural`'s objects without telling anyone, as if they changed while the
    /// watch was down: no watch events, then the history is compacted, so the watcher's
    /// reconnect (from its last resourceVersion) is answered with 410.
    pub fn outage(&self, plural: &str, change: impl FnOnce(&mut BTreeMap<String, Value>)) {
        let mut inner = self.lock();
        let rv = inner.bump();
        let collection = inner.collection(plural);
        let _ = collection.live.send(WatchMsg::Close);
        change(&mut collection.objects);
        collection.compact(rv);
    }

    /// Changes `plural`'s objects without any watch event (a change the watcher is
    /// about to miss); pair with [`expire`](Self::expire).
    pub fn silently(&self, plural: &str, change: impl FnOnce(&mut BTreeMap<String, Value>)) {
        let mut inner = self.lock();
        inner.bump();
        change(&mut inner.collection(plural).objects);
    }

    /// The PATCH requests received so far, in order.
    pub fn patches(&self) -> Vec<RecordedPatch> {
        self.lock().patches.clone()
    }

    /// Answers PATCHes of `path` with `code` (e.g. 403) from now on; recorded all the same.
    pub fn fail_patches(&self, path: &str, code: u16) {
        self.lock().patch_failures.insert(path.to_string(), code);
    }

    /// The stored object `key` (`namespace/name`) of `plural`.
    pub fn object(&self, plural: &str, key: &str) -> Option<Value> {
        self.lock().collection(plural).objects.get(key).cloned()
    }

    /// Everything requested so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// Requests to `plural`'s collection (list or watch).
    pub fn requests_for(&self, plural: &str) -> Vec<Recorded> {
        let suffix = format!("/{plural}");
        self.requests()
            .into_iter()
            .filter(|r| r.path.ends_with(&suffix))
            .collect()
    }

    /// Waits until `count` watches of `plural` have been opened (a watch is recorded
    /// only once it receives live events). Returns them.
    pub async fn wait_for_watches(&self, plural: &str, count: usize) -> Vec<Recorded> {
        let wait = async {
            loop {
                let watches: Vec<Recorded> = self
                    .requests_for(plural)
                    .into_iter()
                    .filter(Recorded::is_watch)
                    .collect();
                if watches.len() >= count {
                    return watches;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(DEADLINE, wait)
            .await
            .unwrap_or_else(|_| panic!("no watch #{count} of {plural}; requests: {:#?}", self.requests()))
    }
}

impl Inner {
    fn bump(&mut self) -> u64 {
        self.resource_version += 1;
        self.resource_version
    }

    fn collection(&mut self, plural: &str) -> &mut Collection {
        self.collections
            .get_mut(plural)
            .unwrap_or_else(|| panic!("no collection {plural}"))
    }
}

impl Collection {
    fn emit(&mut self, rv: u64, event: &Value) {
        let line = format!("{event}\n");
        self.history.push((rv, line.clone()));
        let _ = self.live.send(WatchMsg::Line(line));
    }

    fn compact(&mut self, rv: u64) {
        self.history.clear();
        self.compacted = rv;
    }

    /// A page of the list: `limit` items from `offset`, with a `continue` token (the
    /// next offset) when more remain.
    fn list(&self, resource_version: u64, offset: usize, limit: Option<usize>) -> Value {
        let limit = limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
        let more = self.objects.len().saturating_sub(offset) > limit;
        let items: Vec<Value> = self
            .objects
            .values()
            .skip(offset)
            .take(limit)
            .map(|object| {
                let mut item = object.clone();
                if !self.typed_items
                    && let Some(map) = item.as_object_mut()
                {
                    map.remove("apiVersion");
                    map.remove("kind");
                }
                item
            })
            .collect();
        json!({
            "apiVersion": self.api_version,
            "kind": format!("{}List", self.kind),
            "metadata": if more {
                json!({"resourceVersion": resource_version.to_string(), "continue": (offset + limit).to_string(),
                       "remainingItemCount": self.objects.len() - offset - limit})
            } else {
                json!({"resourceVersion": resource_version.to_string()})
            },
            "items": items,
        })
    }
}

/// `/api/v1/{plural}` or `/apis/{group}/{version}/{plural}` → (apiVersion, plural).
fn parse_path(path: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["api", version, plural] => Some(((*version).to_string(), (*plural).to_string())),
        ["apis", group, version, plural] => Some((format!("{group}/{version}"), (*plural).to_string())),
        _ => None,
    }
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    if let Value::Object(map) = target {
        for (key, value) in patch {
            if value.is_null() {
                map.remove(key);
            } else {
                merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// A PATCH of a Service's status or of a Pod.
fn handle_patch(inner: &Arc<Mutex<Inner>>, path: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    let mut guard = inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let Ok(patch) = serde_json::from_slice::<Value>(body) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &status_json(400, "BadRequest", "patch is not JSON"),
        );
    };
    guard.patches.push(RecordedPatch {
        path: path.to_string(),
        content_type: content_type.clone(),
        body: patch.clone(),
    });
    if let Some(code) = guard.patch_failures.get(path).copied() {
        let reason = if code == 403 { "Forbidden" } else { "InternalError" };
        return json_response(
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &status_json(code, reason, &format!("patch of {path} refused by the test")),
        );
    }
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (plural, key) = match parts.as_slice() {
        ["api", "v1", "namespaces", ns, "services", name, "status"] => ("services", format!("{ns}/{name}")),
        ["api", "v1", "namespaces", ns, "pods", name] => ("pods", format!("{ns}/{name}")),
        _ => {
            return json_response(
                StatusCode::METHOD_NOT_ALLOWED,
                &status_json(405, "MethodNotAllowed", "PATCH not served here"),
            );
        }
    };
    if content_type != "application/merge-patch+json" {
        return json_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &status_json(415, "UnsupportedMediaType", &content_type),
        );
    }
    let rv = guard.bump();
    let collection = guard.collection(plural);
    let Some(object) = collection.objects.get_mut(&key) else {
        return json_response(
            StatusCode::NOT_FOUND,
            &status_json(404, "NotFound", &format!("{plural} \"{key}\" not found")),
        );
    };
    merge_patch(object, &patch);
    object["metadata"]["resourceVersion"] = rv.to_string().into();
    let object = object.clone();
    collection.emit(rv, &json!({"type": "MODIFIED", "object": object}));
    json_response(StatusCode::OK, &object)
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if method == Method::PATCH {
        return handle_patch(&inner, uri.path(), &headers, &body);
    }
    let recorded = Recorded {
        path: uri.path().to_string(),
        query,
    };
    let mut guard = inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    // Recorded and answered under one lock: a recorded watch already receives live events.
    guard.requests.push(recorded.clone());
    let current = guard.resource_version;
    let target = parse_path(&recorded.path);
    let Some(collection) = target.as_ref().and_then(|(api_version, plural)| {
        guard
            .collections
            .get(plural.as_str())
            .filter(|c| c.api_version == api_version.as_str())
    }) else {
        eprintln!("fake apiserver: unknown path {uri}");
        return json_response(
            StatusCode::NOT_FOUND,
            &status_json(404, "NotFound", "unknown path"),
        );
    };
    if !collection.served {
        return json_response(
            StatusCode::NOT_FOUND,
            &status_json(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ),
        );
    }
    if !recorded.is_watch() {
        let limit = recorded.param("limit").and_then(|l| l.parse::<usize>().ok());
        let offset = recorded
            .param("continue")
            .and_then(|c| c.parse::<usize>().ok())
            .unwrap_or(0);
        return json_response(StatusCode::OK, &collection.list(current, offset, limit));
    }

    // A watch. "0" or absent means "from now".
    let from = recorded
        .param("resourceVersion")
        .and_then(|rv| rv.parse::<u64>().ok())
        .unwrap_or(0);
    let from = if from == 0 { current } else { from };
    let (replay, live) = if from < collection.compacted {
        let gone = json!({"type": "ERROR", "object": status_json(410, "Expired",
            &format!("too old resource version: {from} ({})", collection.compacted))});
        (vec![format!("{gone}\n")], None)
    } else {
        let replay = collection
            .history
            .iter()
            .filter(|(rv, _)| *rv > from)
            .map(|(_, l)| l.clone())
            .collect();
        (replay, Some(collection.live.subscribe()))
    };
    drop(guard);

    let replay = futures::stream::iter(replay.into_iter().map(Ok::<String, Infallible>));
    let live = futures::stream::unfold(live, |live| async move {
        let mut receiver = live?;
        match receiver.recv().await {
            Ok(WatchMsg::Line(line)) => Some((Ok::<String, Infallible>(line), Some(receiver))),
            Ok(WatchMsg::Close) | Err(_) => None,
        }
    });
    let body = Body::from_stream(futures::StreamExt::chain(replay, live));
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}
