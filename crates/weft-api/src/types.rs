//! Request and response bodies of the HTTP API (JSON), shared by server and client.

use serde::{Deserialize, Serialize};
use weft_model::derived::ObjectStatus;
use weft_model::node::NodeState;

/// One manifest document to apply or delete.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestDocument {
    /// Where it came from, e.g. `pods.yaml#2` (file and document number), for messages.
    pub source: String,
    /// The object as JSON (converted from YAML by the client).
    pub object: serde_json::Value,
}

/// Body of `POST /v1/apply` and `POST /v1/delete`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApplyRequest {
    /// The documents, in file order.
    pub documents: Vec<ManifestDocument>,
    /// Namespace for namespaced objects that name none (kubectl's `-n`), default `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl ApplyRequest {
    /// A request carrying `objects` as documents named `<source>#<index>`, in order: what
    /// programs (tests, the lab, benchmarks) send when they build objects themselves
    /// rather than read them from files.
    pub fn from_objects(source: &str, objects: impl IntoIterator<Item = serde_json::Value>) -> Self {
        ApplyRequest {
            documents: objects
                .into_iter()
                .enumerate()
                .map(|(i, object)| ManifestDocument {
                    source: format!("{source}#{i}"),
                    object,
                })
                .collect(),
            namespace: None,
        }
    }
}

/// Result for one document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocumentResult {
    /// Where the document came from.
    pub source: String,
    /// `Kind namespace/name`, when the document got that far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// created, configured, unchanged, deleted, not-found, or error.
    pub action: String,
    /// The error, naming object, field and expectation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why the object is not ready yet (waiting for a network, no free address …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<String>,
}

/// Response of apply/delete: one result per document, and the store revision written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApplyReport {
    /// Per-document results, in request order.
    pub results: Vec<DocumentResult>,
    /// Store revision after the write (unchanged if nothing changed).
    pub revision: u64,
}

impl ApplyReport {
    /// Number of documents that failed.
    pub fn errors(&self) -> usize {
        self.results.iter().filter(|r| r.error.is_some()).count()
    }
}

/// Usage of one IPAM pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolUsage {
    /// Pool name.
    pub name: String,
    /// Addresses in use.
    pub in_use: usize,
    /// Addresses that can be allocated in all.
    pub capacity: u128,
}

/// State of one component, with the reason when it is not ready.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentStatus {
    /// Component name (`store`, `translator`, `kubernetes`).
    pub component: String,
    /// `ready`, `degraded`, `waiting`.
    pub state: String,
    /// Why, in words.
    pub reason: String,
}

/// Response of `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControllerStatus {
    /// Every component and its state.
    pub components: Vec<ComponentStatus>,
    /// Store revision.
    pub revision: u64,
    /// Cluster name in force.
    pub cluster_name: String,
    /// Number of inputs per kind.
    pub inputs: Vec<(String, usize)>,
    /// Number of derived objects per kind.
    pub derived: Vec<(String, usize)>,
    /// Objects waiting for something.
    pub pending: Vec<ObjectStatus>,
    /// IPAM pools.
    pub pools: Vec<PoolUsage>,
}

/// Response of `GET /v1/consistency`: the checks that must always hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConsistencyReport {
    /// Addresses stored on interfaces and services.
    pub addresses: usize,
    /// Problems found (empty = consistent).
    pub problems: Vec<String>,
}

/// An error body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
}

/// One line of the node watch stream (`GET /v1/nodes/{node}/watch`, NDJSON: one JSON
/// value per line). Untagged, so a line is either a whole [`NodeState`] or
/// `{"heartbeat":REV}`.
///
/// The server sends a state on connect (unless the client's `after` revision already
/// is the current one), then whenever the node's state changes in content (a commit
/// that leaves it unchanged sends nothing), and a heartbeat every 10 s carrying the
/// latest commit revision, so a client that hears nothing for much longer knows the
/// connection is dead and reconnects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
#[allow(clippy::large_enum_variant)] // nearly every line is a State; boxing buys nothing
pub enum NodeWatchLine {
    /// The node's complete desired state (never a delta).
    State(NodeState),
    /// Keep-alive.
    Heartbeat {
        /// The controller's latest commit revision.
        heartbeat: u64,
    },
}
